// LatteTransformer3DModel's configuration, as the model (latte.cpp) and its
// pipeline (pipeline/latte_pipeline.cpp) read it.
#pragma once

#include <algorithm>

#include "io/config.h"
#include "models/layers.h"

namespace pab {

struct LatteConfig {
  int heads = 16, head_dim = 88;
  int in_channels = 4, out_channels = 4;
  int num_layers = 1;
  bool cross_attention = true;  // cross_attention_dim set
  bool attention_bias = false;
  int sample_size = 64, patch_size = 2;
  FeedForward::Act activation = FeedForward::Act::geglu;
  bool norm_elementwise_affine = true;
  float norm_eps = 1e-5f;
  int caption_channels = 0;
  int video_length = 16;  // frames the temporal positions cover

  int64_t inner() const { return int64_t(heads) * head_dim; }
  // diffusers: max(sample_size // 64, 1)
  double interpolation_scale() const { return std::max(sample_size / 64, 1); }
};

// The config.json values, with diffusers' defaults for missing keys;
// unsupported values fail naming the file and key.
LatteConfig parse_latte_config(const JsonConfig& j);

}  // namespace pab
