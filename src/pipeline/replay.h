// `pab replay`: runs what a fixture case describes, without and with PAB, and
// returns the tensors under the reference's names. Two kinds of case:
//  - a transformer's denoising loop (case.json "model", inputs.safetensors,
//    transformer/);
//  - a whole text-to-video pipeline (case.json "pipeline" and "call", the
//    pipeline folder model/, inputs.safetensors with the initial latents and
//    any recorded scheduler noise).
#pragma once

#include <map>
#include <optional>
#include <string>

#include "cache/pab.h"
#include "models/transformer.h"
#include "pipeline/video_pipeline.h"

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
  CacheStats stats;
};

// One pass of the case's loop with `policy` deciding at each site (null:
// every site computes); `stats` is what the policy did.
ReplayRun run_replay(DiffusionTransformer& model, const ReplayCase& c, CachePolicy* policy);

// Both passes, keyed as the reference: out_nopab_{i}, out_pab_{i},
// latents_final_nopab, latents_final_pab (f32, on the CPU).
// `stats` (optional) gets what PAB did in the PAB pass.
std::map<std::string, Tensor> replay_case(const ReplayCase& c, const LoadOptions& opts, std::string* summary,
                                          CacheStats* stats = nullptr);

// Whether case.json in `dir` describes a whole pipeline ("pipeline" key).
bool is_pipeline_case(const std::string& dir);

struct PipelineCase {
  std::string dir;
  std::string pipeline;       // case.json "pipeline", the class model_index.json must name
  VideoRequest request;       // from case.json "call"
  Tensor latents;             // inputs "latents": the initial latents
  std::vector<Tensor> noise;  // inputs "noise_0", "noise_1", ...: the stochastic scheduler's draws
  PabConfig pab;
};

// Reads case.json and inputs.safetensors of `dir`; unknown or unsupported
// call arguments are errors naming the key.
PipelineCase load_pipeline_case(const std::string& dir);

// The pipeline in `dir`/model run from the case's latents and noise, without
// and with PAB (the prompt encoded once), keyed as the reference:
// prompt_embeds, negative_prompt_embeds, timesteps (i64; f64 for a schedule with fractional ones),
// latents_step_{i}_{nopab|pab}, latents_final_{nopab|pab}, frames_{nopab|pab}
// (f32 on the CPU; frames F x C x H x W in [0, 1]).
std::map<std::string, Tensor> replay_pipeline_case(const PipelineCase& c, const LoadOptions& opts,
                                                   std::string* summary);

}  // namespace pab
