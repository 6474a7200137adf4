// `pab bench`: the ANCHORS.md workloads — the transformer's 50-step denoising
// loop with batched CFG on generated weights of the real architectures —
// timed without and with PAB.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "cache/pab.h"
#include "models/transformer.h"

namespace pab {

struct BenchWorkload {
  std::string name;
  nlohmann::json config;        // diffusers config.json of the transformer
  Shape latents;                // [2, ...] in the model's layout (CFG batch)
  Shape text;                   // [2, L, D]
  std::vector<double> timesteps;
  PabConfig pab;
};

// The named workload (cogvideox-2b, cogvideox-5b, latte-1) with `steps` steps.
BenchWorkload bench_workload(const std::string& name, int steps = 50);
std::vector<std::string> bench_workload_names();

struct BenchRun {
  bool pab = false;
  double total_seconds = 0;
  std::vector<double> step_seconds;
  size_t peak_bytes = 0;  // device memory in use at the peak of the loop
  PabStats stats;
  OpProfile profile;  // from one extra profiled step
};

struct BenchReport {
  std::string workload, device;
  int steps = 0;
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

}  // namespace pab
