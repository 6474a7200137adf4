// Host-side (CPU, f32 results) timestep and positional embeddings shared by
// the models: diffusers' get_timestep_embedding, the sin-cos position tables
// and the rotary tables. Each follows diffusers' arithmetic, including the
// dtype of every intermediate (float32 where torch computes in float32,
// float64 where numpy or torch use float64), so that tables match the
// reference to about one f32 rounding.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace pab {

// get_timestep_embedding: [N, dim] row-major. Frequencies
// exp(-ln(max_period) i / (dim/2 - downscale_freq_shift)), arguments
// scale * t * freq; sin half then cos half (cos first with flip_sin_to_cos);
// an odd dim gets a zero last column.
std::vector<float> timestep_embedding(const std::vector<double>& t, int dim, bool flip_sin_to_cos,
                                      double downscale_freq_shift, double scale = 1, double max_period = 10000);

// get_1d_sincos_pos_embed_from_grid (float64): [M, dim], sin(pos * omega)
// then cos(pos * omega), omega_i = 10000^(-i / (dim/2)). dim must be even.
std::vector<double> sincos_1d(int dim, const std::vector<float>& pos);

// get_2d_sincos_pos_embed: [grid_h * grid_w, embed_dim], token h * grid_w + w.
// Positions arange(n) / (n / base_size) / interpolation_scale (float32); the
// first half of a row encodes the column w, the second the row h.
Tensor sincos_pos_embed_2d(int embed_dim, int grid_h, int grid_w, double base_size, double interpolation_scale);

// get_3d_sincos_pos_embed as CogVideoXPatchEmbed uses it:
// [frames * grid_h * grid_w, embed_dim], token (f * grid_h + h) * grid_w + w.
// A row is [temporal (D/4) | column w (3D/8) | row h (3D/8)], positions
// arange / interpolation scale (float32). embed_dim must be a multiple of 16.
Tensor sincos_pos_embed_3d(int embed_dim, int grid_h, int grid_w, int frames, double spatial_interp,
                           double temporal_interp);

// Rotary tables for backend rope(): cos and sin, [S, D].
struct RopeTables {
  Tensor cos, sin;
};

// How get_1d_rotary_pos_embed lays out its result.
enum class RopeLayout : uint8_t {
  interleaved,  // use_real, repeat_interleave_real: [S, D], each frequency twice in a row (CogVideoX, Flux)
  halves,       // use_real, not repeat_interleave_real: [S, D], all frequencies then all again
  complex,      // not use_real: [S, D/2], the real (cos) and imaginary (sin) parts of freqs_cis
};

// get_1d_rotary_pos_embed(dim, pos, theta, use_real, ...): frequencies
// theta^(-2i/dim) / linear_factor with theta scaled by ntk_factor, computed in
// float32 (freqs_dtype=torch.float32, the default) or float64 (freqs_f64).
RopeTables rotary_pos_embed_1d(int dim, const std::vector<float>& pos, double theta = 10000,
                               RopeLayout layout = RopeLayout::interleaved, bool freqs_f64 = false,
                               double linear_factor = 1, double ntk_factor = 1);

// get_3d_rotary_pos_embed(use_real=True) as CogVideoX's pipelines call it:
// [frames * grid_h * grid_w, head_dim], a row [temporal (D/4) | h (3D/8) | w (3D/8)].
//   "linspace" (CogVideoX 1.0): positions spread over the crop region that
//     get_resize_crop_region_for_grid gives for the grid within base_h x base_w
//     (sample size / patch size);
//   "slice" (CogVideoX 1.5): positions 0, 1, ... of a max_h x max_w table
//     (0: base_h x base_w, as the pipeline passes); frames = latent frames / patch_size_t.
RopeTables rotary_pos_embed_3d(int head_dim, int grid_h, int grid_w, int frames, int base_h, int base_w,
                               const std::string& grid_type, int max_h = 0, int max_w = 0, double theta = 10000);

// torch.linspace(start, end, steps, dtype=torch.float32), value for value.
std::vector<float> linspace_f32(double start, double end, int64_t steps);

}  // namespace pab
