// Host-side (CPU, f32) positional and timestep embeddings shared by the
// models, computed with the arithmetic diffusers uses (float32 or float64
// where it does) so that results match the reference closely.
#pragma once

#include <string>
#include <vector>

#include "core/tensor.h"

namespace pab {

// diffusers get_timestep_embedding: [N, dim] row-major.
std::vector<float> timestep_embedding(const std::vector<double>& t, int dim, bool flip_sin_to_cos,
                                      double downscale_freq_shift, double scale = 1, double max_period = 10000);

// diffusers get_1d_sincos_pos_embed_from_grid (float64 frequencies): [M, dim],
// sin half then cos half.
std::vector<double> sincos_1d(int dim, const std::vector<float>& pos);

// diffusers get_3d_sincos_pos_embed (CogVideoX): [frames * grid_h * grid_w, embed_dim],
// temporal quarter first, then the spatial part.
Tensor sincos_pos_embed_3d(int embed_dim, int grid_h, int grid_w, int frames, double spatial_interp,
                           double temporal_interp);

// diffusers get_2d_sincos_pos_embed: [grid_h * grid_w, embed_dim].
Tensor sincos_pos_embed_2d(int embed_dim, int grid_h, int grid_w, double base_size, double interpolation_scale);

struct RopeTables {
  Tensor cos, sin;  // [S, D], each frequency repeated for the (2i, 2i+1) pair
};

// diffusers get_1d_rotary_pos_embed(use_real=True, repeat_interleave_real=True), float32 frequencies.
RopeTables rotary_pos_embed_1d(int dim, const std::vector<float>& pos, double theta = 10000);

// diffusers get_3d_rotary_pos_embed as CogVideoX's pipelines call it:
// grid_type "linspace" (1.0: crop region of the grid within base_h x base_w) or
// "slice" (1.5: positions 0.. of a max_h x max_w table). [frames * grid_h * grid_w, head_dim]
RopeTables rotary_pos_embed_3d(int head_dim, int grid_h, int grid_w, int frames, int base_h, int base_w,
                               const std::string& grid_type, int max_h = 0, int max_w = 0, double theta = 10000);

// torch.linspace in float32 (values from both ends, as torch computes them).
std::vector<float> linspace_f32(double start, double end, int64_t steps);

}  // namespace pab
