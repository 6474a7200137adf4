// What Open-Sora-Plan's pipeline (pipeline/open_sora_plan_pipeline.cpp) reads
// of its transformers' configs (open_sora_plan.cpp): LatteT2V (v1.1) and
// OpenSoraT2V (v1.2).
#pragma once

#include <string>

#include "io/config.h"

namespace pab {

struct OpenSoraPlanFacts {
  bool v120 = false;  // OpenSoraT2V; else LatteT2V
  int in_channels = 4, out_channels = 4;
  int caption_channels = 0;
  int patch_size = 2;
  int sample_h = 0, sample_w = 0;  // latent size the model was made for (sample_size)
  int latent_frames = 0;           // v1.1: video_length (its temporal positions); v1.2: sample_size_t
};

// The config.json of `class_name` (LatteT2V or OpenSoraT2V), checked as
// loading it checks it; unsupported values fail naming the file and key.
OpenSoraPlanFacts open_sora_plan_facts(const JsonConfig& config, const std::string& class_name);

}  // namespace pab
