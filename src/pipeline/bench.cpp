#include "pipeline/bench.h"

#include <chrono>
#include <cmath>
#include <iomanip>
#include <sstream>

#include "backend/ops.h"
#include "io/config.h"
#include "models/random_weights.h"

namespace pab {

namespace {

std::vector<double> trailing(int steps) {  // DDIM "trailing": 999, 979, ... for 50 steps
  std::vector<double> t;
  double ratio = 1000.0 / steps;
  for (int i = 0; i < steps; ++i) t.push_back(std::round(1000.0 - i * ratio) - 1);
  return t;
}

std::vector<double> leading(int steps, int offset) {  // DDIM "leading" + steps_offset: 981, 961, ..., 1
  std::vector<double> t;
  int ratio = 1000 / steps;
  for (int i = steps - 1; i >= 0; --i) t.push_back(double(i * ratio + offset));
  return t;
}

BroadcastRule rule(int range) { return BroadcastRule{range, 100, 800, {}}; }

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

std::vector<std::string> bench_workload_names() { return {"cogvideox-2b", "cogvideox-5b", "latte-1"}; }

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
    w.timesteps = trailing(steps);
    w.pab.rule(SiteKind::spatial) = rule(2);
  } else if (name == "latte-1") {
    w.config = {{"_class_name", "LatteTransformer3DModel"},
                {"num_layers", 28},
                {"num_attention_heads", 16},
                {"attention_head_dim", 72},
                {"in_channels", 4},
                {"out_channels", 8},
                {"cross_attention_dim", 1152},
                {"caption_channels", 4096},
                {"sample_size", 64},
                {"patch_size", 2},
                {"video_length", 16},
                {"norm_type", "ada_norm_single"},
                {"activation_fn", "gelu-approximate"},
                {"attention_bias", true},
                {"norm_elementwise_affine", false},
                {"norm_eps", 1e-6},
                {"num_embeds_ada_norm", 1000}};
    w.latents = {2, 4, 16, 64, 64};
    w.text = {2, 120, 4096};
    w.timesteps = leading(steps, 1);
    w.pab.rule(SiteKind::spatial) = rule(2);
    w.pab.rule(SiteKind::temporal) = rule(3);
    w.pab.rule(SiteKind::cross) = rule(6);
  } else {
    std::string names;
    for (const auto& n : bench_workload_names()) names += (names.empty() ? "" : ", ") + n;
    fail("unknown workload '", name, "' (expected one of ", names, ")");
  }
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
    if (policy) policy->begin_step(int(i), w.timesteps[i]);
    TransformerInputs in;
    in.latents = ops::concat({x, x}, 0);
    in.text = text;
    in.timestep = w.timesteps[i];
    Tensor eps = ops::slice(model.forward(in, policy), channel_axis, 0, cin);
    Tensor uncond = eps.narrow0(0, 1), cond = eps.narrow0(1, 1);
    x = ops::sub(x, ops::scale(ops::add(uncond, ops::scale(ops::sub(cond, uncond), 6.0f)), 0.02f));
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
  w.pab.validate(model->site_kinds());
  RandomWeights inputs(42, "bench inputs");
  Tensor latents = inputs.load("latents", w.latents, opts.load.dtype, opts.load.device);
  Tensor text = inputs.load("text", w.text, opts.load.dtype, opts.load.device);

  BenchReport r;
  r.workload = w.name;
  r.device = be.device_description();
  r.steps = int(w.timesteps.size());
  r.runs.push_back(run_loop(*model, w, latents, text, nullptr, be));
  if (opts.pab) {
    PabPolicy policy(w.pab);
    r.runs.push_back(run_loop(*model, w, latents, text, &policy, be));
  }
  if (opts.profile) {
    // One profiled forward without PAB: achieved rates of GEMMs and attention.
    be.set_profiling(true);
    TransformerInputs in;
    in.latents = latents;
    in.text = text;
    in.timestep = w.timesteps[0];
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
  os << r.workload << " on " << r.device << ", " << r.steps << " steps, CFG batch 2\n";
  for (const BenchRun& run : r.runs) {
    os << (run.pab ? "  PAB:    " : "  no PAB: ") << run.total_seconds << " s total, "
       << std::setprecision(3) << run.total_seconds / std::max<size_t>(run.step_seconds.size(), 1) << " s/step, peak "
       << std::setprecision(2) << double(run.peak_bytes) / double(1 << 30) << " GiB";
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
  return os.str();
}

std::string bench_json(const BenchReport& r) {
  nlohmann::json j;
  j["workload"] = r.workload;
  j["device"] = r.device;
  j["steps"] = r.steps;
  for (const BenchRun& run : r.runs) {
    nlohmann::json k;
    k["total_s"] = run.total_seconds;
    k["per_step_s"] = run.step_seconds;
    k["peak_gib"] = double(run.peak_bytes) / double(1 << 30);
    if (run.pab) {
      for (int kind = 0; kind < kSiteKinds; ++kind) {
        auto c = run.stats.total(SiteKind(kind));
        if (c.computed + c.broadcast)
          k["sites"][site_kind_name(SiteKind(kind))] = {{"computed", c.computed}, {"broadcast", c.broadcast}};
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
  }
  return j.dump(1);
}

}  // namespace pab
