// CogVideoXTransformer3DModel's configuration, as the model (cogvideox.cpp)
// and its pipeline (pipeline/cogvideox_pipeline.cpp) read it.
#pragma once

#include "io/config.h"
#include "models/layers.h"

namespace pab {

struct CogVideoXConfig {
  int heads = 30, head_dim = 64;
  int in_channels = 16, out_channels = 16;
  bool flip_sin_to_cos = true;
  double freq_shift = 0;
  int time_embed_dim = 512;
  int ofs_embed_dim = 0;  // 0: none
  int text_embed_dim = 4096;
  int num_layers = 30;
  bool attention_bias = true;
  int sample_width = 90, sample_height = 60, sample_frames = 49;
  int patch_size = 2, patch_size_t = 0;  // 0: no temporal patches
  int temporal_compression_ratio = 4;
  int max_text_seq_length = 226;
  FeedForward::Act activation = FeedForward::Act::gelu_tanh;
  bool norm_elementwise_affine = true;
  float norm_eps = 1e-5f;
  double spatial_interpolation_scale = 1.875, temporal_interpolation_scale = 1.0;
  bool rotary = false, learned_positions = false;
  bool patch_bias = true;

  int64_t inner() const { return int64_t(heads) * head_dim; }
};

// The config.json values, with diffusers' defaults for missing keys;
// unsupported values fail naming the file and key.
CogVideoXConfig parse_cogvideox_config(const JsonConfig& j);

}  // namespace pab
