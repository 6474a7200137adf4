#include "pipeline/bench.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iomanip>
#include <sstream>

#include "backend/ops.h"
#include "cache/pab_config.h"
#include "core/dtype.h"
#include "core/registry.h"
#include "io/config.h"
#include "io/model_folder.h"
#include "models/random_weights.h"
#include "parallel/comm.h"
#include "pipeline/noise.h"
#include "pipeline/schedulers/scheduler.h"

namespace pab {

namespace {

// ", 4 ranks (NCCL)" for a parallel run: what the timings were taken on.
std::string ranks_note(const LoadOptions& load) {
  const int sp = load.comm ? load.comm->size() : 1, cfg = load.cfg_comm ? load.cfg_comm->size() : 1;
  if (sp * cfg == 1) return "";
  const Communicator& c = sp > 1 ? *load.comm : *load.cfg_comm;
  return cat(", ", sp * cfg, " ranks (", cfg > 1 ? "CFG-parallel, " : "", c.description(), ")");
}

// CogVideoX-2b's scheduler_config.json (5b's differs in class and snr_shift_scale only).
nlohmann::json cogvideox_scheduler(bool big) {
  return {{"_class_name", big ? "CogVideoXDPMScheduler" : "CogVideoXDDIMScheduler"},
          {"beta_end", 0.012},
          {"beta_schedule", "scaled_linear"},
          {"beta_start", 0.00085},
          {"clip_sample", false},
          {"num_train_timesteps", 1000},
          {"prediction_type", "v_prediction"},
          {"rescale_betas_zero_snr", true},
          {"set_alpha_to_one", true},
          {"snr_shift_scale", big ? 1.0 : 3.0},
          {"steps_offset", 0},
          {"timestep_spacing", "trailing"}};
}

// The keys the PixArt-style video transformers (Latte, Open-Sora-Plan) share
// in their published configs (adaLN-single blocks, 4 latent channels with
// learned sigma, T5-XXL-wide captions, 2x2 patches), merged into `own`.
nlohmann::json pixart_block_config(nlohmann::json own) {
  own.update({{"in_channels", 4},
              {"out_channels", 8},
              {"caption_channels", 4096},
              {"patch_size", 2},
              {"norm_type", "ada_norm_single"},
              {"activation_fn", "gelu-approximate"},
              {"attention_bias", true},
              {"norm_elementwise_affine", false},
              {"norm_eps", 1e-6},
              {"num_embeds_ada_norm", 1000}});
  return own;
}

// The timesteps the workload's scheduler gives for `steps` steps.
std::vector<double> scheduler_timesteps(const nlohmann::json& config, const std::string& workload, int steps,
                                        const TimestepOptions& options = {}) {
  auto s = make_scheduler(JsonConfig(config, "workload " + workload + " (scheduler)"));
  s->set_timesteps(steps, options);
  return s->timesteps();
}

BroadcastRule rule(int range) {
  return BroadcastRule{range, 100, 800, {}};
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

std::vector<std::string> bench_workload_names() {
  return {"cogvideox-2b", "cogvideox-5b", "latte-1", "open-sora-1.2", "open-sora-plan-1.1", "open-sora-plan-1.2"};
}

BenchWorkload bench_workload(const std::string& name, int steps) {
  BenchWorkload w;
  w.name = name;
  if (name == "cogvideox-2b" || name == "cogvideox-5b") {
    const bool big = name == "cogvideox-5b";
    // diffusers CogVideoXTransformer3DModel defaults; 5b: 42 layers, 48 heads, rotary positions
    w.config = {{"_class_name", "CogVideoXTransformer3DModel"},
                {"num_attention_heads", big ? 48 : 30},
                {"attention_head_dim", 64},
                {"num_layers", big ? 42 : 30},
                {"use_rotary_positional_embeddings", big}};
    w.latents = {2, 13, 16, 60, 90};
    w.text = {2, 226, 4096};
    w.scheduler = cogvideox_scheduler(big);
    w.pab.rule(SiteKind::spatial) = rule(2);
  } else if (name == "latte-1") {
    w.config = pixart_block_config({{"_class_name", "LatteTransformer3DModel"},
                                    {"num_layers", 28},
                                    {"num_attention_heads", 16},
                                    {"attention_head_dim", 72},
                                    {"cross_attention_dim", 1152},
                                    {"sample_size", 64},
                                    {"video_length", 16}});
    w.latents = {2, 4, 16, 64, 64};
    w.text = {2, 120, 4096};
    // Latte-1's DDIMScheduler: "leading" spacing with steps_offset 1 (981, 961, ..., 1 for 50 steps)
    w.scheduler = {{"_class_name", "DDIMScheduler"},
                   {"beta_schedule", "linear"},
                   {"beta_start", 0.0001},
                   {"beta_end", 0.02},
                   {"clip_sample", false},
                   {"prediction_type", "epsilon"},
                   {"steps_offset", 1},
                   {"timestep_spacing", "leading"}};
    w.pab.rule(SiteKind::spatial) = rule(2);
    w.pab.rule(SiteKind::temporal) = rule(3);
    w.pab.rule(SiteKind::cross) = rule(6);
  } else if (name == "open-sora-1.2") {
    // hpcai-tech/OpenSora-STDiT-v3 (STDiT3-XL/2) at VideoSys's defaults: 480p 9:16 (480x854), 2s
    // (51 frames: 15 latent frames of 60x106), fps 24, T5's 300 tokens, RFlow with its timestep
    // shift; the PAB paper's single-GPU Open-Sora runs use 30 steps (pab bench --steps 30).
    w.config = {{"architectures", {"STDiT3"}},
                {"hidden_size", 1152},
                {"depth", 28},
                {"num_heads", 16},
                {"caption_channels", 4096},
                {"model_max_length", 300},
                {"in_channels", 4},
                {"pred_sigma", true},
                {"qk_norm", true},
                {"patch_size", {1, 2, 2}},
                {"input_sq_size", 512},
                {"mlp_ratio", 4.0}};
    w.latents = {2, 4, 15, 60, 106};
    w.text = {2, 300, 4096};
    w.scheduler = {{"_class_name", "RFlowScheduler"}, {"use_timestep_transform", true}};
    w.pab = default_pab_config("STDiT3");
    w.fps = 24;
    w.height_px = 480;
    w.width_px = 854;
    w.conditional_first = true;
    w.guidance = 7;
    w.step_size = 1.0 / double(steps);
    TimestepOptions t;
    t.height = 480;
    t.width = 854;
    t.frames = 51;
    t.size_dtype = DType::bf16;  // the PAB decisions as VideoSys makes them in bf16
    w.timesteps = scheduler_timesteps(w.scheduler, name, steps, t);
    for (double& ts : w.timesteps) ts = bf16_to_f32(f32_to_bf16(float(ts)));
    return w;
  } else if (name == "open-sora-plan-1.1") {
    // LanguageBind/Open-Sora-Plan-v1.1.0/65x512x512 (LatteT2V-XL/122: 28 layers of 16 heads of 72) at
    // VideoSys's defaults: 65 frames of 512x512 (17 latent frames of 64x64), T5's prompt cut to its
    // tokens, guidance 7.5, PNDM's 150 steps (159 evaluations: pab bench --steps 150), the
    // published PAB with its MLP broadcast.
    w.config = pixart_block_config({{"_class_name", "LatteT2V"},
                                    {"num_layers", 28},
                                    {"num_attention_heads", 16},
                                    {"attention_head_dim", 72},
                                    {"cross_attention_dim", 1152},
                                    {"sample_size", {64, 64}},
                                    {"video_length", 17}});
    w.latents = {2, 4, 17, 64, 64};
    w.text = {2, 20, 4096};  // a prompt of 20 tokens: the embeddings are cut to it
    w.scheduler = {{"_class_name", "PNDMScheduler"}};
    w.pab = default_pab_config("LatteT2V");
    w.guidance = 7.5;
  } else if (name == "open-sora-plan-1.2") {
    // LanguageBind/Open-Sora-Plan-v1.2.0/29x480p (OpenSoraT2V-ROPE-L-122: 32 layers of 24 heads of 96)
    // at VideoSys's defaults: 29 frames of 480x640 (8 latent frames of 60x80), mT5's 512 tokens,
    // guidance 7.5, EulerAncestralDiscreteScheduler's 100 steps (pab bench --steps 100).
    w.config = pixart_block_config({{"_class_name", "OpenSoraT2V"},
                                    {"num_layers", 32},
                                    {"num_attention_heads", 24},
                                    {"attention_head_dim", 96},
                                    {"cross_attention_dim", 2304},
                                    {"sample_size", {60, 80}},
                                    {"sample_size_t", 8},
                                    {"patch_size_t", 1},
                                    {"use_rope", true}});
    w.latents = {2, 4, 8, 60, 80};
    w.text = {2, 512, 4096};
    w.scheduler = {{"_class_name", "EulerAncestralDiscreteScheduler"}};
    w.pab = default_pab_config("OpenSoraT2V");
    w.guidance = 7.5;
  } else {
    std::string names;
    for (const auto& n : bench_workload_names()) names += (names.empty() ? "" : ", ") + n;
    fail("unknown workload '", name, "' (expected one of ", names, ")");
  }
  w.timesteps = scheduler_timesteps(w.scheduler, name, steps);
  return w;
}

namespace {

// The fixtures' loop: batched CFG pair in, guided update of the latents.
BenchRun run_loop(DiffusionTransformer& model, const BenchWorkload& w, const Tensor& latents0, const Tensor& text,
                  PabPolicy* policy, Backend& be) {
  const int channel_axis = model.layout() == LatentLayout::bfchw ? 2 : 1;
  const int cin = model.in_channels();
  Tensor x = latents0.narrow0(0, 1);
  auto step = [&](size_t i) {
    const StepContext ctx{int(i), w.timesteps[i], CfgBranch::both, w.conditional_first};
    if (policy) policy->begin_step(ctx);
    TransformerInputs in;
    in.latents = ops::concat({x, x}, 0);
    in.text = text;
    in.timestep = w.timesteps[i];
    in.fps = w.fps;
    in.height_px = w.height_px;
    in.width_px = w.width_px;
    Tensor eps = ops::slice(forward_step(model, in, policy, ctx), channel_axis, 0, cin);
    Tensor uncond = eps.narrow0(w.conditional_first ? 1 : 0, 1), cond = eps.narrow0(w.conditional_first ? 0 : 1, 1);
    x = ops::sub(
        x, ops::scale(ops::add(uncond, ops::scale(ops::sub(cond, uncond), float(w.guidance))), float(w.step_size)));
  };

  BenchRun run;
  run.pab = policy != nullptr;
  // Warm-up forward (plans, algorithms, allocator), then the timed loop.
  if (policy) policy->reset(w.timesteps);
  step(0);
  be.synchronize();
  x = latents0.narrow0(0, 1);
  if (policy) policy->reset(w.timesteps);
  be.reset_peak_memory();
  auto t0 = std::chrono::steady_clock::now();
  for (size_t i = 0; i < w.timesteps.size(); ++i) {
    auto ts = std::chrono::steady_clock::now();
    step(i);
    be.synchronize();
    run.step_seconds.push_back(seconds_since(ts));
  }
  run.total_seconds = seconds_since(t0);
  run.peak_bytes = be.memory_stats().peak;
  if (policy) run.stats = policy->stats();
  return run;
}

}  // namespace

BenchReport run_bench(const BenchOptions& opts) {
  BenchWorkload w = bench_workload(opts.workload, opts.steps);
  Backend& be = backend(opts.load.device);
  JsonConfig config(w.config, "workload " + w.name);
  RandomWeights weights(0x5eed, "generated weights for " + w.name);
  auto model = load_transformer(config, weights, opts.load);
  w.pab.validate(model->site_layout());
  // Inputs as torch.randn draws them, N(0, 1): the same loops on inputs of
  // about 1e-3 (weight-like draws) ran 2-5% faster on an H100 (less power).
  TorchNoise inputs(42);
  Tensor latents = inputs.next(w.latents).to(opts.load.dtype).to(opts.load.device);
  Tensor text = inputs.next(w.text).to(opts.load.dtype).to(opts.load.device);

  BenchReport r;
  be.synchronize();
  r.weights_bytes = be.memory_stats().in_use;
  r.workload = w.name;
  r.device = be.device_description() + ranks_note(opts.load);
  r.steps = int(w.timesteps.size());
  auto estimate = [&](const PabConfig& cache) {
    return size_t(denoise_memory(config, r.weights_bytes, {w.latents, w.text[1], opts.load.dtype, opts.load.device},
                                 PabPolicy(cache).held_kinds())
                      .total());
  };
  r.runs.push_back(run_loop(*model, w, latents, text, nullptr, be));
  r.runs.back().estimate_bytes = estimate(PabConfig{});
  if (opts.pab) {
    PabPolicy policy(w.pab);
    r.runs.push_back(run_loop(*model, w, latents, text, &policy, be));
    r.runs.back().estimate_bytes = estimate(w.pab);
  }
  if (opts.profile) {
    // One profiled forward without PAB: achieved rates of GEMMs and attention.
    be.set_profiling(true);
    TransformerInputs in;
    in.latents = latents;
    in.text = text;
    in.timestep = w.timesteps[0];
    in.fps = w.fps;
    in.height_px = w.height_px;
    in.width_px = w.width_px;
    model->forward(in, nullptr);
    be.synchronize();
    be.set_profiling(false);
    r.runs[0].profile = be.profile();
  }
  return r;
}

std::string bench_text(const BenchReport& r) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(2);
  os << r.workload << " on " << r.device << ", " << r.steps << " steps, CFG batch 2, weights "
     << double(r.weights_bytes) / double(1 << 30) << " GiB\n";
  for (const BenchRun& run : r.runs) {
    os << (run.pab ? "  PAB:    " : "  no PAB: ") << run.total_seconds << " s total, " << std::setprecision(3)
       << run.total_seconds / std::max<size_t>(run.step_seconds.size(), 1) << " s/step, peak " << std::setprecision(2)
       << double(run.peak_bytes) / double(1 << 30) << " GiB (estimated " << double(run.estimate_bytes) / double(1 << 30)
       << ")";
    if (run.pab) os << "\n          " << run.stats.summary();
    os << "\n";
  }
  if (r.runs.size() == 2)
    os << "  PAB speed-up: " << std::setprecision(3) << r.runs[0].total_seconds / r.runs[1].total_seconds << "x\n";
  const OpProfile& p = r.runs[0].profile;
  if (p.gemm_seconds > 0)
    os << "  one step without PAB: GEMMs " << std::setprecision(1) << p.gemm_flop / p.gemm_seconds / 1e12
       << " TFLOP/s (" << std::setprecision(3) << p.gemm_seconds << " s), attention " << std::setprecision(1)
       << p.attention_flop / std::max(p.attention_seconds, 1e-12) / 1e12 << " TFLOP/s (" << std::setprecision(3)
       << p.attention_seconds << " s)\n";
  if (!p.ops.empty()) {
    std::vector<std::pair<double, std::string>> by_time;
    double total = 0;
    for (const auto& [name, op] : p.ops) {
      by_time.emplace_back(op.seconds, name);
      total += op.seconds;
    }
    std::sort(by_time.rbegin(), by_time.rend());
    os << "  op time in that step (" << std::setprecision(3) << total << " s):";
    for (const auto& [t, name] : by_time) os << " " << name << " " << std::setprecision(1) << 100 * t / total << "%";
    os << "\n";
  }
  return os.str();
}

std::string bench_json(const BenchReport& r) {
  nlohmann::json j;
  j["workload"] = r.workload;
  j["device"] = r.device;
  j["steps"] = r.steps;
  j["weights_gib"] = double(r.weights_bytes) / double(1 << 30);
  for (const BenchRun& run : r.runs) {
    nlohmann::json k;
    k["total_s"] = run.total_seconds;
    k["per_step_s"] = run.step_seconds;
    k["peak_gib"] = double(run.peak_bytes) / double(1 << 30);
    k["estimate_gib"] = double(run.estimate_bytes) / double(1 << 30);
    if (run.pab) {
      for (int kind = 0; kind < kSiteKinds; ++kind) {
        auto c = run.stats.total(SiteKind(kind));
        if (c.computed + c.reused)
          k["sites"][site_kind_name(SiteKind(kind))] = {{"computed", c.computed}, {"broadcast", c.reused}};
      }
    }
    j[run.pab ? "pab" : "no_pab"] = k;
  }
  if (r.runs.size() == 2) j["pab_speedup"] = r.runs[0].total_seconds / r.runs[1].total_seconds;
  const OpProfile& p = r.runs[0].profile;
  if (p.gemm_seconds > 0) {
    j["profile_one_step"] = {{"gemm_tflops", p.gemm_flop / p.gemm_seconds / 1e12},
                             {"gemm_s", p.gemm_seconds},
                             {"attention_tflops", p.attention_flop / std::max(p.attention_seconds, 1e-12) / 1e12},
                             {"attention_s", p.attention_seconds}};
    for (const auto& [name, op] : p.ops)
      j["profile_one_step"]["ops"][name] = {
          {"calls", op.calls}, {"seconds", op.seconds}, {"max_in_use_gib", double(op.max_in_use) / double(1 << 30)}};
  }
  return j.dump(1);
}

// ---------------------------------------------------------------- whole pipeline

std::vector<std::string> pipeline_bench_workload_names() {
  return {"cogvideox-2b-pipeline"};
}

PipelineBenchWorkload pipeline_bench_workload(const std::string& name, int steps) {
  if (name != "cogvideox-2b-pipeline") {
    std::string names;
    for (const auto& n : pipeline_bench_workload_names()) names += (names.empty() ? "" : ", ") + n;
    fail("unknown pipeline workload '", name, "' (expected one of ", names, ")");
  }
  PipelineBenchWorkload w;
  w.name = name;
  w.transformer = bench_workload("cogvideox-2b", steps).config;
  // T5 v1.1 XXL, the encoder CogVideoX uses
  w.text_encoder = {{"architectures", nlohmann::json::array({"T5EncoderModel"})},
                    {"model_type", "t5"},
                    {"vocab_size", 32128},
                    {"d_model", 4096},
                    {"d_kv", 64},
                    {"d_ff", 10240},
                    {"num_layers", 24},
                    {"num_heads", 64},
                    {"relative_attention_num_buckets", 32},
                    {"relative_attention_max_distance", 128},
                    {"layer_norm_epsilon", 1e-6},
                    {"feed_forward_proj", "gated-gelu"}};
  // AutoencoderKLCogVideoX as CogVideoX-2b configures it (diffusers' defaults)
  w.vae = {{"_class_name", "AutoencoderKLCogVideoX"},
           {"in_channels", 3},
           {"out_channels", 3},
           {"block_out_channels", {128, 256, 256, 512}},
           {"latent_channels", 16},
           {"layers_per_block", 3},
           {"act_fn", "silu"},
           {"norm_eps", 1e-6},
           {"norm_num_groups", 32},
           {"temporal_compression_ratio", 4},
           {"sample_height", 480},
           {"sample_width", 720},
           {"scaling_factor", 1.15258426},
           {"use_post_quant_conv", false}};
  w.scheduler = cogvideox_scheduler(false);
  w.request.frames = 49;
  w.request.height = 480;
  w.request.width = 720;
  w.request.steps = steps;
  w.request.guidance = 6.0;
  w.request.max_sequence_length = 226;
  w.tiling = TilingChoice::on;
  w.pab.rule(SiteKind::spatial) = rule(2);
  return w;
}

namespace {

// One prompt as fixed token ids: `tokens` ids, </s> (1), then padding (0).
Tensor token_row(int tokens, int length, int vocab) {
  std::vector<int64_t> row(size_t(length), 0);
  for (int i = 0; i < tokens && i < length - 1; ++i) row[size_t(i)] = 100 + (37 * i) % std::max(vocab - 100, 1);
  row[size_t(std::min(tokens, length - 1))] = 1;
  return token_tensor({row});
}

PipelineBenchRun run_pipeline_once(const PipelineBenchWorkload& w, const LoadOptions& load, PabPolicy* policy,
                                   PipelineBenchReport* report) {
  using clock = std::chrono::steady_clock;
  Backend& be = backend(load.device);
  auto seconds = [&](clock::time_point t0) {
    be.synchronize();
    return seconds_since(t0);
  };
  auto generated = [&](uint64_t seed, const std::string& what) {
    return std::make_shared<RandomWeights>(seed, "generated weights for " + w.name + "'s " + what);
  };
  PipelineParts parts;
  parts.pipeline_class = w.pipeline_class;
  parts.where = "workload " + w.name;
  parts.transformer = {JsonConfig(w.transformer, parts.where + " (transformer)"), generated(0x5eed, "transformer")};
  parts.vae = {JsonConfig(w.vae, parts.where + " (vae)"), generated(0x5eed + 2, "VAE")};
  parts.scheduler = JsonConfig(w.scheduler, parts.where + " (scheduler)");
  auto pipe = VideoPipeline::create(std::move(parts), load);
  const VideoPlan plan = pipe->plan(w.request);
  report->plan = plan;
  report->tiled = pipe->tiles(plan, w.tiling);

  PipelineBenchRun run;
  run.pab = policy != nullptr;
  // The estimate without weights (generated weights have no header to read
  // them from): each phase's weights are added as loaded.
  const MemoryEstimate estimate =
      pipe->estimate_memory(plan, policy ? policy->held_kinds() : std::vector<SiteKind>{}, w.tiling);
  auto estimated = [&](const std::string& phase, size_t weights) {
    for (const MemoryEstimate::Phase& p : estimate.phases)
      if (p.name == phase) return size_t(p.total()) + weights;
    return weights;
  };
  // Text: the encoder loaded, one warm-up encode, then the pipeline's encodes timed; freed after.
  auto t0 = clock::now();
  const JsonConfig text_config(w.text_encoder, "workload " + w.name + " (text_encoder)");
  const TextEncoderEntry& text_class =
      Registry<TextEncoderEntry>::get().at(config_class_name(text_config), "text encoder class");
  const auto text_facts = text_class.facts(text_config);
  auto encoder = text_class.load(text_config, *generated(0x5eed + 1, "text encoder"), load);
  const Tensor prompt_ids = token_row(w.prompt_tokens, plan.text_length, text_facts->vocab_size());
  const Tensor negative_ids = token_row(0, plan.text_length, text_facts->vocab_size());
  encoder->encode(negative_ids);
  run.load_seconds += seconds(t0);
  be.reset_peak_memory();
  run.text_estimate = text_memory(*text_facts, be.memory_stats().in_use, plan.text_length, load.dtype).total();
  t0 = clock::now();
  PromptEmbeddings embeds;
  embeds.prompt = encoder->encode(prompt_ids);
  if (plan.cfg) embeds.negative = encoder->encode(negative_ids);
  run.text_seconds = seconds(t0);
  encoder.reset();
  run.text_peak = be.memory_stats().peak;

  // Denoising: the transformer loaded and warmed up by one forward pass, then the loop timed.
  t0 = clock::now();
  DiffusionTransformer& model = pipe->transformer();
  TorchNoise noise(0);
  Tensor latents = pipe->initial_latents(plan, noise);
  {
    TransformerInputs in;
    in.latents = ops::concat({latents, latents}, 0).to(load.dtype);
    in.text = ops::concat({embeds.negative.defined() ? embeds.negative : embeds.prompt, embeds.prompt}, 0);
    in.timestep = 999;
    model.forward(in, nullptr);
  }
  run.load_seconds += seconds(t0);
  be.reset_peak_memory();
  run.denoise_estimate = estimated("denoise", be.memory_stats().in_use);
  t0 = clock::now();
  DenoiseResult denoised = pipe->denoise(plan, embeds, latents, policy, &noise);
  run.denoise_seconds = seconds(t0);
  run.stats = denoised.stats;
  pipe->release_transformer();
  embeds = PromptEmbeddings();
  run.denoise_peak = be.memory_stats().peak;

  // Decoding.
  t0 = clock::now();
  pipe->load_vae();
  run.load_seconds += seconds(t0);
  be.reset_peak_memory();
  run.decode_estimate = estimated("decode", be.memory_stats().in_use);
  t0 = clock::now();
  Tensor frames = pipe->decode(plan, denoised.latents, w.tiling);
  run.decode_seconds = seconds(t0);
  run.decode_peak = be.memory_stats().peak;
  if (std::getenv("PAB_PROFILE_DECODE")) {
    // A second, profiled decode: where the VAE's time goes, op by op.
    be.set_profiling(true);
    pipe->decode(plan, denoised.latents, w.tiling);
    be.set_profiling(false);
    std::vector<std::pair<double, std::string>> ops;
    for (const auto& [name, op] : be.profile().ops) ops.emplace_back(op.seconds, cat(name, " (", op.calls, " calls)"));
    std::sort(ops.rbegin(), ops.rend());
    for (const auto& [t, name] : ops) std::fprintf(stderr, "decode op %-40s %.4f s\n", name.c_str(), t);
    const OpProfile& p = be.profile();
    if (p.conv_seconds > 0)
      std::fprintf(stderr, "decode convolutions: %.1f TFLOP in %.3f s, %.1f TFLOP/s\n", p.conv_flop * 1e-12,
                   p.conv_seconds, p.conv_flop / p.conv_seconds * 1e-12);
  }
  pipe->release_vae();

  run.total_seconds = run.text_seconds + run.denoise_seconds + run.decode_seconds;
  run.peak = std::max({run.text_peak, run.denoise_peak, run.decode_peak});
  return run;
}

double gib(size_t bytes) {
  return double(bytes) / double(1 << 30);
}

}  // namespace

PipelineBenchReport run_pipeline_bench(const PipelineBenchWorkload& w, const LoadOptions& load, bool pab) {
  PipelineBenchReport r;
  r.workload = w.name;
  r.device = backend(load.device).device_description() + ranks_note(load);
  r.runs.push_back(run_pipeline_once(w, load, nullptr, &r));
  if (pab) {
    PabPolicy policy(w.pab);
    r.runs.push_back(run_pipeline_once(w, load, &policy, &r));
  }
  return r;
}

std::string pipeline_bench_text(const PipelineBenchReport& r) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(2);
  os << r.workload << " on " << r.device << ": " << r.plan.describe() << ", VAE " << (r.tiled ? "tiled" : "untiled")
     << "\n";
  for (const PipelineBenchRun& run : r.runs) {
    os << (run.pab ? "  PAB:    " : "  no PAB: ") << "T5 encode " << run.text_seconds << " s, denoise "
       << run.denoise_seconds << " s, VAE decode " << run.decode_seconds << " s, total " << run.total_seconds
       << " s; peak " << gib(run.peak) << " GiB (text " << gib(run.text_peak) << ", denoise " << gib(run.denoise_peak)
       << ", decode " << gib(run.decode_peak) << "; estimated " << gib(run.text_estimate) << ", "
       << gib(run.denoise_estimate) << ", " << gib(run.decode_estimate) << ")\n";
    if (run.pab) os << "          " << run.stats.summary() << "\n";
  }
  if (r.runs.size() == 2)
    os << "  PAB speed-up of the whole pipeline: " << std::setprecision(3)
       << r.runs[0].total_seconds / r.runs[1].total_seconds << "x\n";
  os << "  (making and loading the generated weights, not timed: " << std::setprecision(1) << r.runs[0].load_seconds
     << " s a run)\n";
  return os.str();
}

std::string pipeline_bench_json(const PipelineBenchReport& r) {
  nlohmann::json j;
  j["workload"] = r.workload;
  j["device"] = r.device;
  j["plan"] = r.plan.describe();
  j["vae_tiled"] = r.tiled;
  for (const PipelineBenchRun& run : r.runs) {
    nlohmann::json k = {{"t5_encode_s", run.text_seconds},
                        {"denoise_s", run.denoise_seconds},
                        {"vae_decode_s", run.decode_seconds},
                        {"total_s", run.total_seconds},
                        {"peak_gib", gib(run.peak)},
                        {"text_peak_gib", gib(run.text_peak)},
                        {"denoise_peak_gib", gib(run.denoise_peak)},
                        {"decode_peak_gib", gib(run.decode_peak)},
                        {"text_estimate_gib", gib(run.text_estimate)},
                        {"denoise_estimate_gib", gib(run.denoise_estimate)},
                        {"decode_estimate_gib", gib(run.decode_estimate)},
                        {"load_s", run.load_seconds}};
    if (run.pab) k["pab"] = run.stats.summary();
    j[run.pab ? "pab" : "no_pab"] = k;
  }
  if (r.runs.size() == 2) j["pab_speedup"] = r.runs[0].total_seconds / r.runs[1].total_seconds;
  return j.dump(1);
}

}  // namespace pab
