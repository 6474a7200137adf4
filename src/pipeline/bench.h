// `pab bench`: the benchmark workloads of docs/performance.md — the transformer's 50-step denoising
// loop with batched CFG on generated weights of the real architectures —
// timed without and with PAB; and the whole text-to-video pipeline
// (cogvideox-2b-pipeline: T5-XXL, the transformer, the 3D VAE).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "cache/pab.h"
#include "models/transformer.h"
#include "pipeline/video_pipeline.h"

namespace pab {

struct BenchWorkload {
  std::string name;
  nlohmann::json config;        // diffusers config.json of the transformer
  Shape latents;                // [2, ...] in the model's layout (CFG batch)
  Shape text;                   // [2, L, D]
  nlohmann::json scheduler;     // the model's scheduler_config.json
  std::vector<double> timesteps;  // the scheduler's for the workload's step count
  PabConfig pab;
  // What the loop gives the model besides latents, text and timestep, and
  // its guided update, as the model's pipeline does.
  double fps = 0, height_px = 0, width_px = 0;  // Open-Sora's conditioning
  bool conditional_first = false;               // CFG batch order
  double guidance = 6, step_size = 0.02;        // x -= step_size * guided (a fixed step: the schedule's math is not timed)
};

// The named workload (cogvideox-2b, cogvideox-5b, latte-1, open-sora-1.2) with `steps` steps.
BenchWorkload bench_workload(const std::string& name, int steps = 50);
std::vector<std::string> bench_workload_names();

struct BenchRun {
  bool pab = false;
  double total_seconds = 0;
  std::vector<double> step_seconds;
  size_t peak_bytes = 0;      // device memory in use at the peak of the loop
  size_t estimate_bytes = 0;  // what the memory estimate said before the loop (weights as loaded)
  CacheStats stats;
  OpProfile profile;  // from one extra profiled step
};

struct BenchReport {
  std::string workload, device;
  int steps = 0;
  size_t weights_bytes = 0;  // device memory held by the model and inputs before the loop
  std::vector<BenchRun> runs;  // without PAB, then with PAB if asked
};

struct BenchOptions {
  std::string workload;
  bool pab = false;  // also run with PAB and report the speed-up
  int steps = 50;
  LoadOptions load;
  bool profile = true;
};

BenchReport run_bench(const BenchOptions& opts);
std::string bench_text(const BenchReport& r);
std::string bench_json(const BenchReport& r);

// ---------------------------------------------------------------- whole pipeline

// A pipeline built from configs with generated weights; the prompts are fixed
// token rows (ids only set the shapes' cost).
struct PipelineBenchWorkload {
  std::string name;
  std::string pipeline_class = "CogVideoXPipeline";
  nlohmann::json transformer, text_encoder, vae, scheduler;  // config.json / scheduler_config.json
  VideoRequest request;                                      // size, frames, steps, guidance, text length
  int prompt_tokens = 24;                                    // tokens of the prompt row before </s> and padding
  TilingChoice tiling = TilingChoice::on;
  PabConfig pab;
};

// cogvideox-2b-pipeline: CogVideoX-2b (transformer, T5-XXL, AutoencoderKLCogVideoX
// as diffusers configures them), 49 frames 480x720, `steps` steps, CFG 6, VAE
// tiled, PAB spatial 2 in (100, 800).
PipelineBenchWorkload pipeline_bench_workload(const std::string& name, int steps = 50);
std::vector<std::string> pipeline_bench_workload_names();

struct PipelineBenchRun {
  bool pab = false;
  // Phases as `pab generate` runs them, each with the device synchronised;
  // total is their sum (making the weights is not timed).
  double text_seconds = 0, denoise_seconds = 0, decode_seconds = 0, total_seconds = 0;
  double load_seconds = 0;  // generating and moving the weights, all three components
  // Device memory in use at the peak of each phase (weights included), and overall.
  size_t text_peak = 0, denoise_peak = 0, decode_peak = 0, peak = 0;
  // What the memory estimate said of each phase (the weights as loaded: generated weights have no header).
  size_t text_estimate = 0, denoise_estimate = 0, decode_estimate = 0;
  CacheStats stats;
};

struct PipelineBenchReport {
  std::string workload, device;
  VideoPlan plan;
  bool tiled = false;
  std::vector<PipelineBenchRun> runs;  // without PAB, then with PAB if asked
};

// Runs the workload once without PAB and, if `pab`, once with; each run loads
// the text encoder, encodes, frees it, then the transformer, then the VAE, as
// generate_video holds them.
PipelineBenchReport run_pipeline_bench(const PipelineBenchWorkload& w, const LoadOptions& load, bool pab);
std::string pipeline_bench_text(const PipelineBenchReport& r);
std::string pipeline_bench_json(const PipelineBenchReport& r);

}  // namespace pab
