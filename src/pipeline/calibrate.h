// `pab calibrate`: runs one full generation with a ChangeRecorder at every
// attention site, measures what the sites cost, proposes the PAB
// configuration that reaches a target speed-up with the smallest predicted
// deviation (cache/calibration.h), and optionally verifies it by running it.
//
// A generation is anything that runs the denoising loop with a given site
// runner (GenerationFn): a transformer fixture case (replay_generation, here)
// or the text-to-video pipeline (pipeline_generation, calibrate_generate.cpp).
#pragma once

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "cache/calibration.h"
#include "io/video_metrics.h"
#include "models/transformer.h"

namespace pab {

// What one generation gives back.
struct GenerationOutput {
  Tensor latents;  // after the last step (any device and float dtype)
  Tensor frames;   // decoded [F, C, H, W] f32 in [0, 1] on the CPU; undefined when the run does not decode
  std::vector<double> timesteps;  // the schedule that ran
  double loop_seconds = 0;        // wall clock of the denoising loop, the device synchronised at its end
  CacheStats stats;               // what the policy did
};
// Runs one whole generation; the policy (null: every site computes) is reset
// with the schedule and told each step.
using GenerationFn = std::function<GenerationOutput(CachePolicy* policy)>;

struct Generation {
  std::string description;      // e.g. "LatteTransformer3DModel, case tests/.../latte"
  std::string model_class;      // the transformer's class (for the published PAB settings)
  SiteLayout sites;             // the model's sites
  Device device = Device::cpu;
  GenerationFn run;
  // Configurations to predict alongside the proposal (e.g. a case's own),
  // with a label; the published settings for model_class are added to them.
  std::vector<std::pair<std::string, PabConfig>> known_configs;
};

// A transformer fixture case (case.json, inputs.safetensors, transformer/):
// its loop as run_replay runs it, without decoding.
Generation replay_generation(const std::string& case_dir, const LoadOptions& opts);

// The text-to-video pipeline's generation (calibrate_generate.cpp).
struct PipelineGenerationRequest {
  std::string model_dir, prompt, negative_prompt;
  std::optional<int> steps;  // default: the pipeline's
  uint64_t seed = 42;
  std::optional<uint64_t> max_memory;  // checked against the estimate before any weight is loaded
};
Generation pipeline_generation(const PipelineGenerationRequest& request, const LoadOptions& opts);

struct CalibrationOptions {
  // The speed-up to reach; unset: the predicted speed-up of the settings
  // published for the model (--pab default), so that the proposal is what
  // calibration improves over them.
  std::optional<double> target_speedup;
  Counting counting = Counting::diffusers;
  int max_range = 8;
  bool verify = false;            // run without PAB, with the proposal and with each reference
  std::optional<CostModel> cost;  // instead of the measured one (tests)
};

// One configuration run for real and compared with the full run.
struct MeasuredRun {
  std::string label;
  PabConfig config;
  CacheStats stats;             // what the policy did
  double count_speedup = 1;   // the cost model applied to `stats`
  double seconds = 0;         // loop wall clock
  double latents_rel_l2 = 0;  // |PAB - full| / |full| of the final latents
  double latents_max_abs = 0;
  std::optional<VideoComparison> frames;  // decoded frames against the full run's (data range 1)
};

struct VerifyReport {
  double plain_seconds = 0;  // loop wall clock without any runner
  MeasuredRun proposal;
  std::vector<MeasuredRun> references;  // the same for each reference configuration
  double wall_speedup(const MeasuredRun& run) const { return run.seconds > 0 ? plain_seconds / run.seconds : 0; }
};

struct CalibrationResult {
  std::string description;
  int steps = 0;
  std::vector<RecordedCall> calls;
  ChangeTable table;
  CostModel cost;
  double loop_seconds = 0, overhead_seconds = 0;  // of the recorded run
  double target_speedup = 1;
  std::string target_source;  // where the target came from
  Proposal proposal;
  // Other configurations predicted on the same curves, for comparison.
  std::vector<std::pair<std::string, PabPrediction>> references;
  std::optional<VerifyReport> verify;
};

CalibrationResult run_calibration(const Generation& gen, const CalibrationOptions& opts);

// Writes changes.csv, curves.png, proposal_map.png (the proposal's predicted
// decisions; the measured ones after --verify) and proposal.yaml (in the
// dialect of the proposal's counting rule) into `dir` (created if missing);
// returns the paths written.
std::vector<std::string> write_calibration_files(const CalibrationResult& r, const std::string& dir);

std::string calibration_text(const CalibrationResult& r);
nlohmann::json calibration_json(const CalibrationResult& r);

}  // namespace pab
