#include "pipeline/replay.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <set>

#include "backend/ops.h"
#include "cache/pab_config.h"
#include "io/config.h"
#include "io/safetensors.h"

namespace pab {

namespace fs = std::filesystem;

ReplayCase load_replay_case(const std::string& dir) {
  ReplayCase c;
  c.dir = dir;
  JsonConfig cj = JsonConfig::load((fs::path(dir) / "case.json").string());
  c.model = cj.get<std::string>("model");
  c.timesteps = cj.get<std::vector<double>>("timesteps");
  if (c.timesteps.empty()) fail(cj.where(), ": key 'timesteps': empty schedule");
  c.guidance = cj.get<double>("guidance");
  c.step_size = cj.get<double>("step_size");
  std::string order = cj.get_or<std::string>("cfg_batch", "uncond first");
  c.cond_first = order.rfind("cond", 0) == 0 && order.rfind("uncond", 0) != 0;
  c.fps = cj.get_or<double>("fps", 0);
  c.height_px = cj.get_or<double>("height_px", 0);
  c.width_px = cj.get_or<double>("width_px", 0);
  if (!cj.has("pab")) fail(cj.where(), ": missing required key 'pab'");
  c.pab = parse_pab_config(cj.json().at("pab"), cj.where() + " (pab)");

  Checkpoint inputs = Checkpoint::open_file((fs::path(dir) / "inputs.safetensors").string());
  c.latents0 = inputs.load("latents0");
  c.text = inputs.load("encoder_hidden_states");
  if (cj.has("latents_shape")) {
    Shape s = cj.get<std::vector<int64_t>>("latents_shape");
    if (s != c.latents0.shape())
      fail(cj.where(), ": latents_shape ", shape_str(s), " does not match latents0 ", c.latents0.desc());
  }
  // The original Open-Sora and Open-Sora-Plan code takes captions as [B, 1, L, D].
  if (c.text.rank() == 4 && c.text.dim(1) == 1) c.text = c.text.reshape({c.text.dim(0), c.text.dim(2), c.text.dim(3)});
  if (c.text.rank() != 3 || c.text.dim(0) != 2)
    fail(inputs.where(), ": encoder_hidden_states must be [2, L, D] or [2, 1, L, D] (the CFG pair), got ",
         c.text.desc());
  return c;
}

ReplayRun run_replay(DiffusionTransformer& model, const ReplayCase& c, CachePolicy* policy) {
  const int channel_axis = model.layout() == LatentLayout::bfchw ? 2 : 1;
  const int cin = model.in_channels();
  if (c.latents0.rank() != 5 || c.latents0.dim(channel_axis) != cin)
    fail(c.dir, ": latents0 ", c.latents0.desc(), " do not have ", cin, " channels on axis ", channel_axis,
         " as ", model.class_name(), " expects");
  if (policy) policy->reset(c.timesteps);

  ReplayRun run;
  Tensor x = c.latents0;
  Tensor text = c.text;
  for (size_t i = 0; i < c.timesteps.size(); ++i) {
    const StepContext step{int(i), c.timesteps[i], CfgBranch::both};
    if (policy) policy->begin_step(step);
    TransformerInputs in;
    in.latents = ops::concat({x, x}, 0);
    in.text = text;
    in.timestep = c.timesteps[i];
    in.fps = c.fps;
    in.height_px = c.height_px;
    in.width_px = c.width_px;
    Tensor out = forward_step(model, in, policy, step);
    run.outputs.push_back(out);
    // keep the first C_in channels (learned sigma models output 2 x C_in)
    Tensor eps = ops::slice(out, channel_axis, 0, cin);
    Tensor uncond = eps.narrow0(c.cond_first ? 1 : 0, 1);
    Tensor cond = eps.narrow0(c.cond_first ? 0 : 1, 1);
    Tensor guided = ops::add(uncond, ops::scale(ops::sub(cond, uncond), float(c.guidance)));
    x = ops::sub(x, ops::scale(guided, float(c.step_size)));
  }
  run.latents = x;
  if (policy) run.stats = policy->stats();
  return run;
}

std::map<std::string, Tensor> replay_case(const ReplayCase& c0, const LoadOptions& opts, std::string* summary,
                                          CacheStats* stats) {
  auto model = load_transformer((fs::path(c0.dir) / "transformer").string(), opts);
  c0.pab.validate(model->site_layout());
  ReplayCase c = c0;
  c.latents0 = c0.latents0.to(opts.device).to(opts.dtype);
  c.text = c0.text.to(opts.device).to(opts.dtype);

  std::map<std::string, Tensor> out;
  auto to_host = [](const Tensor& t) { return t.to(DType::f32).to(Device::cpu); };
  ReplayRun plain = run_replay(*model, c, nullptr);
  PabPolicy policy(c.pab);
  ReplayRun pab = run_replay(*model, c, &policy);
  for (size_t i = 0; i < plain.outputs.size(); ++i) {
    out["out_nopab_" + std::to_string(i)] = to_host(plain.outputs[i]);
    out["out_pab_" + std::to_string(i)] = to_host(pab.outputs[i]);
  }
  out["latents_final_nopab"] = to_host(plain.latents);
  out["latents_final_pab"] = to_host(pab.latents);
  if (stats) *stats = pab.stats;
  if (summary) *summary = cat(model->class_name(), ", ", c.timesteps.size(), " steps, PAB ", c.pab.describe(), ": ",
                              pab.stats.summary());
  return out;
}

bool is_pipeline_case(const std::string& dir) {
  const fs::path path = fs::path(dir) / "case.json";
  std::error_code ec;
  return fs::is_regular_file(path, ec) && JsonConfig::load(path.string()).has("pipeline");
}

PipelineCase load_pipeline_case(const std::string& dir) {
  PipelineCase c;
  c.dir = dir;
  JsonConfig cj = JsonConfig::load((fs::path(dir) / "case.json").string());
  c.pipeline = cj.get<std::string>("pipeline");
  if (!cj.has("call") || !cj.json().at("call").is_object()) fail(cj.where(), ": key 'call': expected an object");
  JsonConfig call(cj.json().at("call"), cj.where() + " (call)");
  static const std::set<std::string> kKnown = {"prompt",
                                               "negative_prompt",
                                               "height",
                                               "width",
                                               "num_frames",
                                               "video_length",
                                               "num_inference_steps",
                                               "guidance_scale",
                                               "max_sequence_length",
                                               "use_dynamic_cfg",
                                               "mask_feature",
                                               "clean_caption",
                                               "enable_temporal_attentions",
                                               "eta"};
  for (const auto& [key, value] : call.json().items())
    if (!kKnown.count(key)) fail(call.where(), ": key '", key, "' is not a supported pipeline argument");
  VideoRequest& r = c.request;
  r.prompt = call.get<std::string>("prompt");
  r.negative_prompt = call.get_or<std::string>("negative_prompt", "");
  r.height = call.get_optional<int>("height");
  r.width = call.get_optional<int>("width");
  r.frames = call.get_optional<int>(c.pipeline == "LattePipeline" ? "video_length" : "num_frames");
  r.steps = call.get_optional<int>("num_inference_steps");
  r.guidance = call.get_optional<double>("guidance_scale");
  r.max_sequence_length = call.get_optional<int>("max_sequence_length");
  r.dynamic_cfg = call.get_or("use_dynamic_cfg", false);
  r.mask_feature = call.get_or("mask_feature", true);
  r.eta = call.get_or("eta", 0.0);
  if (call.get_or("clean_caption", false))
    call.unsupported("clean_caption", "caption cleaning (ftfy, BeautifulSoup) is not implemented; pass false");
  if (!call.get_or("enable_temporal_attentions", true))
    call.unsupported("enable_temporal_attentions", "the transformers always run their temporal attention");
  if (!cj.has("pab")) fail(cj.where(), ": missing required key 'pab'");
  c.pab = parse_pab_config(cj.json().at("pab"), cj.where() + " (pab)");

  Checkpoint inputs = Checkpoint::open_file((fs::path(dir) / "inputs.safetensors").string());
  c.latents = inputs.load("latents");
  for (int i = 0; inputs.has(cat("noise_", i)); ++i) c.noise.push_back(inputs.load(cat("noise_", i)));
  if (cj.has("latents_shape")) {
    Shape s = cj.get<std::vector<int64_t>>("latents_shape");
    if (s != c.latents.shape())
      fail(cj.where(), ": latents_shape ", shape_str(s), " does not match the inputs' latents ", c.latents.desc());
  }
  return c;
}

std::map<std::string, Tensor> replay_pipeline_case(const PipelineCase& c, const LoadOptions& opts,
                                                   std::string* summary) {
  auto pipe = VideoPipeline::open((fs::path(c.dir) / "model").string(), opts);
  if (pipe->class_name() != c.pipeline)
    fail(c.dir, ": case.json names ", c.pipeline, " but model/model_index.json names ", pipe->class_name());
  VideoPlan plan = pipe->plan(c.request);
  if (plan.latents != c.latents.shape())
    fail(c.dir, ": the inputs' latents ", c.latents.desc(), " do not have the shape the call makes, ",
         shape_str(plan.latents));

  auto to_host = [](const Tensor& t) { return t.to(DType::f32).to(Device::cpu); };
  std::map<std::string, Tensor> out;
  PromptEmbeddings embeds = pipe->encode_prompt(plan);
  pipe->release_text_encoder();
  out["prompt_embeds"] = to_host(embeds.prompt);
  if (embeds.negative.defined()) out["negative_prompt_embeds"] = to_host(embeds.negative);

  PabPolicy policy(c.pab);
  std::string stats;
  for (const char* tag : {"nopab", "pab"}) {
    const bool with_pab = std::string(tag) == "pab";
    // prepare_latents with latents passed in: the given tensor times init_noise_sigma.
    ReplayNoise given({c.latents}, c.dir + "/inputs.safetensors (latents)");
    Tensor latents = pipe->initial_latents(plan, given);
    ReplayNoise noise(c.noise, c.dir + "/inputs.safetensors");
    auto record = [&](const StepReport& r) { out[cat("latents_step_", r.step, "_", tag)] = to_host(*r.latents); };
    DenoiseResult run = pipe->denoise(plan, embeds, latents, with_pab ? &policy : nullptr, &noise, record);
    out[cat("latents_final_", tag)] = to_host(run.latents);
    out[cat("frames_", tag)] = pipe->decode(plan, run.latents, TilingChoice::off);
    if (!out.count("timesteps")) {
      // i64 as diffusers holds DDPM timesteps; f64 when a schedule has fractional ones.
      const bool integral =
          std::all_of(run.timesteps.begin(), run.timesteps.end(), [](double t) { return t == std::trunc(t); });
      Tensor t = Tensor::empty({int64_t(run.timesteps.size())}, integral ? DType::i64 : DType::f64);
      for (size_t i = 0; i < run.timesteps.size(); ++i) {
        if (integral)
          t.i64()[i] = int64_t(run.timesteps[i]);
        else
          static_cast<double*>(t.raw())[i] = run.timesteps[i];
      }
      out["timesteps"] = t;
    }
    if (with_pab) stats = run.stats.summary();
  }
  if (summary)
    *summary = cat(pipe->class_name(), " (", pipe->transformer_class(), "), ", plan.describe(), ", PAB ",
                   c.pab.describe(), ": ", stats);
  return out;
}

}  // namespace pab
