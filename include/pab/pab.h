// The pab C++ API: everything the `pab` command does, as functions that
// report failure through Status (no exception escapes).
#pragma once

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

}  // namespace pab
