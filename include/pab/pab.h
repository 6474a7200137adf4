// The pab C++ API: everything the `pab` command does, as functions that
// report failure through Status (no exception escapes).
#pragma once

#include <cstdint>
#include <string>

namespace pab {

struct Status {
  bool ok = true;
  std::string message;  // one line naming what failed and where
  static Status success() { return {}; }
  static Status error(std::string m) { return {false, std::move(m)}; }
};

// Where heavy work runs.
struct ComputeOptions {
  std::string device = "cpu";  // "cpu" or "cuda"
  std::string dtype = "f32";   // "f32", "bf16" or "f16" (the CPU computes in f32 only)
};

// Describes each component of a diffusers model folder (or a single component
// folder): class, key config values, tensor and parameter counts, dtypes.
Status inspect_model(const std::string& dir, std::string* report);

// PAB settings that replace a case's or a pipeline's own; both empty keeps them.
struct PabOptions {
  // --pab: "default" (the settings published with the original method for the
  // model), "off", or the short form "spatial=2@100-800,temporal=3@100-800,cross=6@100-900"
  std::string preset;
  // --pab-config: a YAML or JSON file in the diffusers or the VideoSys dialect
  std::string file;
  bool any() const { return !preset.empty() || !file.empty(); }
};

struct ReplayOptions {
  std::string case_dir;  // holds case.json, inputs.safetensors, transformer/
  std::string output;    // .safetensors to write
  ComputeOptions compute;
  PabOptions pab;        // replaces the case's `pab` for the PAB run
  std::string pab_report;  // PNG of the PAB run's broadcast map (--pab-report); empty: none
};
// Runs the case's denoising loop without and with PAB and writes the outputs
// under the reference's names; `summary` gets one line on what ran.
Status replay(const ReplayOptions& opts, std::string* summary);

struct BenchRequest {
  std::string workload;  // cogvideox-2b, cogvideox-5b or latte-1
  bool pab = false;      // also run with PAB and report the speed-up
  int steps = 50;
  bool json = false;
  ComputeOptions compute{"cuda", "bf16"};
};
// Times the workload's denoising loop; `report` gets text or JSON.
Status bench(const BenchRequest& request, std::string* report);

// pab calibrate: runs a full generation, measures how much every attention
// site's output changes from step to step and what the sites cost, and
// proposes the PAB settings with the smallest predicted deviation that reach
// the target speed-up (docs/calibration.md). Give case_dir, or model_dir and prompt.
struct CalibrateOptions {
  std::string case_dir;           // --case: a transformer fixture case (case.json, inputs, transformer/)
  std::string model_dir, prompt;  // --model, --prompt: a pipeline folder and a prompt
  std::string negative_prompt;
  int steps = 0;  // pipeline steps; 0: the pipeline's default
  uint64_t seed = 42;
  double target_speedup = 0;               // 0: the predicted speed-up of the settings published for the model
  std::string counting = "diffusers";      // the proposal's counting rule: diffusers or videosys
  int max_range = 8;                       // the largest range tried
  bool verify = false;                     // run the proposal and report measured speed-up and quality
  std::string output_dir = "calibration";  // changes.csv, curves.png, proposal.yaml, proposal_map.png
  bool json = false;
  ComputeOptions compute;
};
// `report` gets text or JSON, also when the target is out of reach (then the
// status is an error saying so, after the files are written).
Status calibrate(const CalibrateOptions& opts, std::string* report);

// pab compare A B: PSNR, SSIM and absolute errors between two videos (video
// files or folders of frame_NNNN.png), per frame and overall, in 8-bit levels.
struct CompareOptions {
  std::string a, b;
  bool json = false;
};
Status compare_videos(const CompareOptions& opts, std::string* report);

}  // namespace pab
