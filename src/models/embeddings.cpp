// Timestep and positional embeddings, reproducing diffusers' dtypes step by
// step. Where torch computes in float32 the steps below are float operations
// in the same order; sin, cos, exp and pow are evaluated in double and rounded
// once (torch's vectorised float versions are within an ulp of that).
#include "models/embeddings.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <tuple>

#include "core/error.h"

namespace pab {

namespace {

float sin_f32(float x) {
  return float(std::sin(double(x)));
}
float cos_f32(float x) {
  return float(std::cos(double(x)));
}

// arange(n, dtype=float32) / divisor: a float32 tensor divided by a Python
// scalar divides in float32
std::vector<float> arange_over(int n, double divisor) {
  std::vector<float> v(static_cast<size_t>(std::max(n, 0)));
  for (int i = 0; i < n; ++i) v[size_t(i)] = float(i) / float(divisor);
  return v;
}

// get_resize_crop_region_for_grid((grid_h, grid_w), base_w, base_h): the
// region {top, left, bottom, right} the grid covers once its aspect ratio is
// fitted inside the base grid. Python's round() rounds halves to even, as
// nearbyint does in the default rounding mode.
std::array<int, 4> crop_region(int grid_h, int grid_w, int base_h, int base_w) {
  int resize_h, resize_w;
  if (double(grid_h) / grid_w > double(base_h) / base_w) {
    resize_h = base_h;
    resize_w = int(std::nearbyint(double(base_h) / grid_h * grid_w));
  } else {
    resize_w = base_w;
    resize_h = int(std::nearbyint(double(base_w) / grid_w * grid_h));
  }
  const int top = int(std::nearbyint((base_h - resize_h) / 2.0));
  const int left = int(std::nearbyint((base_w - resize_w) / 2.0));
  return {top, left, top + resize_h, left + resize_w};
}

// linspace(start, stop * (n - 1) / n, n): n points from start, stopping short
// of `stop` (the Python expression multiplies integers, then divides in double)
std::vector<float> grid_positions(int start, int stop, int n) {
  return linspace_f32(start, double(int64_t(stop) * (n - 1)) / n, n);
}

}  // namespace

std::vector<float> timestep_embedding(const std::vector<double>& t, int dim, bool flip_sin_to_cos,
                                      double downscale_freq_shift, double scale, double max_period) {
  if (dim < 2) fail("timestep embedding: dim ", dim, " must be at least 2");
  const int half = dim / 2;
  if (double(half) == downscale_freq_shift)
    fail("timestep embedding: dim/2 = ", half, " equals the frequency shift (division by zero)");
  // exponent = (-ln(max_period) * arange(half)) / (half - shift), every step in float32
  const float neg_log_period = float(-std::log(max_period));
  const float denominator = float(half - downscale_freq_shift);
  std::vector<float> freq(static_cast<size_t>(half));
  for (int i = 0; i < half; ++i) freq[size_t(i)] = float(std::exp(double(neg_log_period * float(i) / denominator)));
  std::vector<float> out(t.size() * size_t(dim), 0.0f);
  for (size_t n = 0; n < t.size(); ++n) {
    float* row = out.data() + n * size_t(dim);
    for (int i = 0; i < half; ++i) {
      const float arg = float(scale) * (float(t[n]) * freq[size_t(i)]);
      row[size_t(flip_sin_to_cos ? half + i : i)] = sin_f32(arg);
      row[size_t(flip_sin_to_cos ? i : half + i)] = cos_f32(arg);
    }
  }
  return out;
}

std::vector<double> sincos_1d(int dim, const std::vector<float>& pos) {
  if (dim % 2 != 0) fail("sin-cos embedding: dim ", dim, " must be even");
  const int half = dim / 2;
  std::vector<double> omega(static_cast<size_t>(half));
  for (int i = 0; i < half; ++i) omega[size_t(i)] = 1.0 / std::pow(10000.0, double(i) / (dim / 2.0));
  std::vector<double> out(pos.size() * size_t(dim));
  for (size_t m = 0; m < pos.size(); ++m) {
    double* row = out.data() + m * size_t(dim);
    for (int i = 0; i < half; ++i) {
      const double a = double(pos[m]) * omega[size_t(i)];
      row[i] = std::sin(a);
      row[half + i] = std::cos(a);
    }
  }
  return out;
}

namespace {
// The [grid_h * grid_w, dim] 2D table into rows of `out` (stride `row_stride`):
// the column position's 1D embedding, then the row position's.
void sincos_2d_into(int dim, const std::vector<float>& h_pos, const std::vector<float>& w_pos, float* out,
                    int64_t row_stride) {
  const int half = dim / 2;
  const std::vector<double> by_w = sincos_1d(half, w_pos), by_h = sincos_1d(half, h_pos);
  for (size_t h = 0; h < h_pos.size(); ++h) {
    for (size_t w = 0; w < w_pos.size(); ++w) {
      float* row = out + int64_t(h * w_pos.size() + w) * row_stride;
      for (int i = 0; i < half; ++i) {
        row[i] = float(by_w[w * size_t(half) + size_t(i)]);
        row[half + i] = float(by_h[h * size_t(half) + size_t(i)]);
      }
    }
  }
}
}  // namespace

Tensor sincos_pos_embed_2d(int embed_dim, int grid_h, int grid_w, double base_size, double interpolation_scale) {
  if (embed_dim % 4 != 0) fail("2D sin-cos positions: embedding dim ", embed_dim, " must be a multiple of 4");
  // arange(n) / (n / base_size) / interpolation_scale: the quotient n / base_size
  // is a Python float, each division a float32 tensor op
  auto positions = [&](int n) {
    std::vector<float> v = arange_over(n, double(n) / base_size);
    for (float& p : v) p = p / float(interpolation_scale);
    return v;
  };
  Tensor out = Tensor::empty({int64_t(grid_h) * grid_w, embed_dim});
  sincos_2d_into(embed_dim, positions(grid_h), positions(grid_w), out.f32(), embed_dim);
  return out;
}

Tensor sincos_pos_embed_3d(int embed_dim, int grid_h, int grid_w, int frames, double spatial_interp,
                           double temporal_interp) {
  if (embed_dim % 16 != 0) fail("3D sin-cos positions: embedding dim ", embed_dim, " must be a multiple of 16");
  const int dim_t = embed_dim / 4, dim_s = embed_dim - dim_t;
  const int64_t hw = int64_t(grid_h) * grid_w;
  const std::vector<double> temporal = sincos_1d(dim_t, arange_over(frames, temporal_interp));
  Tensor out = Tensor::empty({int64_t(frames) * hw, embed_dim});
  float* o = out.f32();
  // spatial part of frame 0, copied to the other frames
  sincos_2d_into(dim_s, arange_over(grid_h, spatial_interp), arange_over(grid_w, spatial_interp), o + dim_t, embed_dim);
  for (int f = 0; f < frames; ++f) {
    for (int64_t p = 0; p < hw; ++p) {
      float* row = o + (f * hw + p) * embed_dim;
      for (int i = 0; i < dim_t; ++i) row[i] = float(temporal[size_t(f) * size_t(dim_t) + size_t(i)]);
      if (f > 0) std::copy_n(o + p * embed_dim + dim_t, dim_s, row + dim_t);
    }
  }
  return out;
}

std::vector<float> linspace_f32(double start, double end, int64_t steps) {
  PAB_ASSERT(steps >= 0, "linspace with ", steps, " steps");
  std::vector<float> v(static_cast<size_t>(steps));
  if (steps == 1) v[0] = float(start);
  if (steps <= 1) return v;
  // torch's CPU kernel: float step, the first half counted from start and the
  // second from end; its compiler contracts `a + step * i` into an FMA
  const float s = float(start), e = float(end);
  const float step = (e - s) / float(steps - 1);
  const int64_t halfway = steps / 2;
  for (int64_t i = 0; i < steps; ++i)
    v[size_t(i)] = i < halfway ? std::fma(step, float(i), s) : std::fma(-step, float(steps - i - 1), e);
  return v;
}

RopeTables rotary_pos_embed_1d(int dim, const std::vector<float>& pos, double theta, RopeLayout layout, bool freqs_f64,
                               double linear_factor, double ntk_factor) {
  if (dim % 2 != 0) fail("rotary embedding: dim ", dim, " must be even");
  const int half = dim / 2;
  const double base = theta * ntk_factor;
  // 1 / base^(arange(0, dim, 2) / dim) / linear_factor in the frequency dtype
  std::vector<double> freq(static_cast<size_t>(half));
  for (int i = 0; i < half; ++i) {
    if (freqs_f64) {
      freq[size_t(i)] = 1.0 / std::pow(base, double(2 * i) / dim) / linear_factor;
    } else {
      const float p = float(std::pow(double(float(base)), double(float(2 * i) / float(dim))));
      freq[size_t(i)] = 1.0f / p / float(linear_factor);
    }
  }
  const int64_t s = int64_t(pos.size()), width = layout == RopeLayout::complex ? half : dim;
  RopeTables out{Tensor::empty({s, width}), Tensor::empty({s, width})};
  float* c = out.cos.f32();
  float* sn = out.sin.f32();
  for (int64_t m = 0; m < s; ++m) {
    for (int i = 0; i < half; ++i) {
      // outer(pos, freqs): float32 positions promoted to float64 frequencies, or a float32 product
      float cv, sv;
      if (freqs_f64) {
        const double a = double(pos[size_t(m)]) * freq[size_t(i)];
        cv = float(std::cos(a));
        sv = float(std::sin(a));
      } else {
        const float a = pos[size_t(m)] * float(freq[size_t(i)]);
        cv = cos_f32(a);
        sv = sin_f32(a);
      }
      float* cr = c + m * width;
      float* sr = sn + m * width;
      switch (layout) {
        case RopeLayout::interleaved:
          cr[2 * i] = cr[2 * i + 1] = cv;
          sr[2 * i] = sr[2 * i + 1] = sv;
          break;
        case RopeLayout::halves:
          cr[i] = cr[half + i] = cv;
          sr[i] = sr[half + i] = sv;
          break;
        case RopeLayout::complex:
          cr[i] = cv;
          sr[i] = sv;
          break;
      }
    }
  }
  return out;
}

RopeTables rotary_pos_embed_3d(int head_dim, int grid_h, int grid_w, int frames, int base_h, int base_w,
                               const std::string& grid_type, int max_h, int max_w, double theta) {
  const int dim_t = head_dim / 4, dim_h = head_dim / 8 * 3, dim_w = dim_h;
  if (head_dim % 16 != 0)
    fail("3D rotary positions: head dim ", head_dim, " must be a multiple of 16 (D/4 and 3D/8 even)");
  if (grid_h < 1 || grid_w < 1 || frames < 1)
    fail("3D rotary positions: empty grid ", frames, "x", grid_h, "x", grid_w);
  std::vector<float> pos_t, pos_h, pos_w;
  if (grid_type == "linspace") {
    const std::array<int, 4> crop = crop_region(grid_h, grid_w, base_h, base_w);
    pos_h = grid_positions(crop[0], crop[2], grid_h);
    pos_w = grid_positions(crop[1], crop[3], grid_w);
    pos_t = grid_positions(0, frames, frames);
  } else if (grid_type == "slice") {
    if (max_h == 0) max_h = base_h;
    if (max_w == 0) max_w = base_w;
    if (grid_h > max_h || grid_w > max_w)
      fail("3D rotary positions: the ", grid_h, "x", grid_w, " patch grid exceeds the ", max_h, "x", max_w,
           " table (sample size / patch size)");
    pos_h = arange_over(grid_h, 1);
    pos_w = arange_over(grid_w, 1);
    pos_t = arange_over(frames, 1);
  } else {
    fail("3D rotary positions: grid type '", grid_type, "' (expected linspace or slice)");
  }
  const RopeTables by_t = rotary_pos_embed_1d(dim_t, pos_t, theta), by_h = rotary_pos_embed_1d(dim_h, pos_h, theta),
                   by_w = rotary_pos_embed_1d(dim_w, pos_w, theta);
  const int64_t tokens = int64_t(frames) * grid_h * grid_w;
  RopeTables out{Tensor::empty({tokens, head_dim}), Tensor::empty({tokens, head_dim})};
  for (int64_t tok = 0; tok < tokens; ++tok) {
    const int64_t f = tok / (int64_t(grid_h) * grid_w), h = tok / grid_w % grid_h, w = tok % grid_w;
    for (auto [dst, t, hh, ww] : {std::tuple{out.cos.f32(), by_t.cos.f32(), by_h.cos.f32(), by_w.cos.f32()},
                                  std::tuple{out.sin.f32(), by_t.sin.f32(), by_h.sin.f32(), by_w.sin.f32()}}) {
      float* row = dst + tok * head_dim;
      std::copy_n(t + f * dim_t, dim_t, row);
      std::copy_n(hh + h * dim_h, dim_h, row + dim_t);
      std::copy_n(ww + w * dim_w, dim_w, row + dim_t + dim_h);
    }
  }
  return out;
}

}  // namespace pab
