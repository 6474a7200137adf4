// `pab replay`: runs the denoising loop a fixture case describes (case.json,
// inputs.safetensors, transformer/), without and with PAB, and returns the
// tensors under the reference's names.
#pragma once

#include <map>
#include <optional>
#include <string>

#include "cache/pab.h"
#include "models/transformer.h"

namespace pab {

struct ReplayCase {
  std::string dir;
  std::string model;             // case.json "model"
  std::vector<double> timesteps;
  double guidance = 1, step_size = 0;
  bool cond_first = false;       // batch order of the CFG pair
  double fps = 0, height_px = 0, width_px = 0;
  Tensor latents0, text;
  PabConfig pab;
};

// Reads case.json and inputs.safetensors of `dir`.
ReplayCase load_replay_case(const std::string& dir);

struct ReplayRun {
  std::vector<Tensor> outputs;  // model output of each step (both batch entries)
  Tensor latents;               // after the last step
  PabStats stats;
};

// One pass of the case's loop with `sites` deciding at each attention site
// (null: every site computes): a PabPolicy, or any runner the loop tells the
// schedule and steps (calibration). `stats` is filled when it is a PabPolicy.
ReplayRun run_replay(DiffusionTransformer& model, const ReplayCase& c, SteppedSiteRunner* sites);

// Both passes, keyed as the reference: out_nopab_{i}, out_pab_{i},
// latents_final_nopab, latents_final_pab (f32, on the CPU).
// `stats` (optional) gets what PAB did in the PAB pass.
std::map<std::string, Tensor> replay_case(const ReplayCase& c, const LoadOptions& opts, std::string* summary,
                                          PabStats* stats = nullptr);

}  // namespace pab
