#include "pipeline/replay.h"

#include <filesystem>

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
  if (c.text.rank() != 3 || c.text.dim(0) != 2)
    fail(inputs.where(), ": encoder_hidden_states must be [2, L, D] (the CFG pair), got ", c.text.desc());
  return c;
}

ReplayRun run_replay(DiffusionTransformer& model, const ReplayCase& c, SteppedSiteRunner* sites) {
  const int channel_axis = model.layout() == LatentLayout::bfchw ? 2 : 1;
  const int cin = model.in_channels();
  if (c.latents0.rank() != 5 || c.latents0.dim(channel_axis) != cin)
    fail(c.dir, ": latents0 ", c.latents0.desc(), " do not have ", cin, " channels on axis ", channel_axis,
         " as ", model.class_name(), " expects");
  if (sites) sites->reset(c.timesteps);

  ReplayRun run;
  Tensor x = c.latents0;
  Tensor text = c.text;
  for (size_t i = 0; i < c.timesteps.size(); ++i) {
    if (sites) sites->begin_step(int(i), c.timesteps[i]);
    TransformerInputs in;
    in.latents = ops::concat({x, x}, 0);
    in.text = text;
    in.timestep = c.timesteps[i];
    in.fps = c.fps;
    in.height_px = c.height_px;
    in.width_px = c.width_px;
    Tensor out = model.forward(in, sites);
    run.outputs.push_back(out);
    // keep the first C_in channels (learned sigma models output 2 x C_in)
    Tensor eps = ops::slice(out, channel_axis, 0, cin);
    Tensor uncond = eps.narrow0(c.cond_first ? 1 : 0, 1);
    Tensor cond = eps.narrow0(c.cond_first ? 0 : 1, 1);
    Tensor guided = ops::add(uncond, ops::scale(ops::sub(cond, uncond), float(c.guidance)));
    x = ops::sub(x, ops::scale(guided, float(c.step_size)));
  }
  run.latents = x;
  if (auto* policy = dynamic_cast<PabPolicy*>(sites)) run.stats = policy->stats();
  return run;
}

std::map<std::string, Tensor> replay_case(const ReplayCase& c0, const LoadOptions& opts, std::string* summary,
                                          PabStats* stats) {
  auto model = load_transformer((fs::path(c0.dir) / "transformer").string(), opts);
  c0.pab.validate(model->site_kinds());
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

}  // namespace pab
