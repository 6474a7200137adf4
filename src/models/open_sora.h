// STDiT3's configuration (Open-Sora 1.2), as the model (open_sora.cpp) and its
// pipeline (pipeline/open_sora_pipeline.cpp) read it.
#pragma once

#include <array>

#include "io/config.h"

namespace pab {

struct StDiT3Config {
  int hidden = 1152, depth = 28, heads = 16;
  int in_channels = 4, out_channels = 8;  // out: twice in with pred_sigma
  std::array<int, 3> patch = {1, 2, 2};   // t, h, w
  int mlp_hidden = 4608;
  int caption_channels = 4096, max_text_len = 300;  // max_text_len: model_max_length, y_embedding's rows
  bool qk_norm = true;
  double input_sq_size = 512;

  int head_dim() const { return hidden / heads; }
};

// The config.json values (STDiT3Config's defaults for missing keys);
// unsupported values fail naming the file and key.
StDiT3Config parse_stdit3_config(const JsonConfig& j);

}  // namespace pab
