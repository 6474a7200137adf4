#include "models/embeddings.h"

#include <cmath>

#include "core/error.h"

namespace pab {

std::vector<float> timestep_embedding(const std::vector<double>& t, int dim, bool flip_sin_to_cos,
                                      double downscale_freq_shift, double scale, double max_period) {
  PAB_ASSERT(dim >= 2, "timestep embedding of dim ", dim);
  const int half = dim / 2;
  // float32 throughout, as torch computes it
  std::vector<float> freq(static_cast<size_t>(half));
  const float log_period = float(-std::log(max_period));
  const float denom = float(half - downscale_freq_shift);
  for (int i = 0; i < half; ++i) freq[size_t(i)] = std::exp(log_period * float(i) / denom);
  std::vector<float> out(t.size() * size_t(dim), 0.0f);
  for (size_t n = 0; n < t.size(); ++n) {
    float* row = out.data() + n * size_t(dim);
    for (int i = 0; i < half; ++i) {
      float arg = float(scale) * (float(t[n]) * freq[size_t(i)]);
      float s = std::sin(arg), c = std::cos(arg);
      row[flip_sin_to_cos ? half + i : i] = s;
      row[flip_sin_to_cos ? i : half + i] = c;
    }
  }
  return out;
}

std::vector<double> sincos_1d(int dim, const std::vector<float>& pos) {
  PAB_ASSERT(dim % 2 == 0, "sincos embedding dim ", dim, " must be even");
  const int half = dim / 2;
  std::vector<double> omega(static_cast<size_t>(half));
  for (int i = 0; i < half; ++i) omega[size_t(i)] = 1.0 / std::pow(10000.0, double(i) / (dim / 2.0));
  std::vector<double> out(pos.size() * size_t(dim));
  for (size_t m = 0; m < pos.size(); ++m) {
    for (int i = 0; i < half; ++i) {
      double a = double(pos[m]) * omega[size_t(i)];
      out[m * size_t(dim) + size_t(i)] = std::sin(a);
      out[m * size_t(dim) + size_t(half + i)] = std::cos(a);
    }
  }
  return out;
}

namespace {
// 2D sincos over a grid of float32 positions: per token (row h, column w)
// the first half encodes the column coordinate, the second the row (diffusers' meshgrid "xy").
void sincos_2d_into(int dim, const std::vector<float>& hs, const std::vector<float>& ws, float* out, int stride,
                    int offset) {
  const int half = dim / 2;
  std::vector<double> ew = sincos_1d(half, ws), eh = sincos_1d(half, hs);
  for (size_t h = 0; h < hs.size(); ++h) {
    for (size_t w = 0; w < ws.size(); ++w) {
      float* row = out + (h * ws.size() + w) * size_t(stride) + size_t(offset);
      for (int i = 0; i < half; ++i) {
        row[i] = float(ew[w * size_t(half) + size_t(i)]);
        row[half + i] = float(eh[h * size_t(half) + size_t(i)]);
      }
    }
  }
}

std::vector<float> scaled_arange(int n, double divisor) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) v[size_t(i)] = float(i) / float(divisor);
  return v;
}
}  // namespace

Tensor sincos_pos_embed_3d(int embed_dim, int grid_h, int grid_w, int frames, double spatial_interp,
                           double temporal_interp) {
  if (embed_dim % 16 != 0) fail("3D sincos positions need an embedding dim divisible by 16, got ", embed_dim);
  const int dim_s = 3 * embed_dim / 4, dim_t = embed_dim / 4;
  const int64_t hw = int64_t(grid_h) * grid_w;
  std::vector<float> spatial(size_t(hw * dim_s));
  sincos_2d_into(dim_s, scaled_arange(grid_h, spatial_interp), scaled_arange(grid_w, spatial_interp), spatial.data(),
                 dim_s, 0);
  std::vector<double> temporal = sincos_1d(dim_t, scaled_arange(frames, temporal_interp));
  Tensor out = Tensor::empty({int64_t(frames) * hw, embed_dim});
  float* o = out.f32();
  for (int f = 0; f < frames; ++f) {
    for (int64_t p = 0; p < hw; ++p) {
      float* row = o + (f * hw + p) * embed_dim;
      for (int i = 0; i < dim_t; ++i) row[i] = float(temporal[size_t(f) * size_t(dim_t) + size_t(i)]);
      std::copy_n(spatial.data() + p * dim_s, dim_s, row + dim_t);
    }
  }
  return out;
}

Tensor sincos_pos_embed_2d(int embed_dim, int grid_h, int grid_w, double base_size, double interpolation_scale) {
  if (embed_dim % 4 != 0) fail("2D sincos positions need an embedding dim divisible by 4, got ", embed_dim);
  // diffusers: arange(n) / (n / base_size) / interpolation_scale, in float32
  auto grid = [&](int n) {
    std::vector<float> v(static_cast<size_t>(n));
    float a = float(n) / float(base_size);
    for (int i = 0; i < n; ++i) v[size_t(i)] = float(i) / a / float(interpolation_scale);
    return v;
  };
  Tensor out = Tensor::empty({int64_t(grid_h) * grid_w, embed_dim});
  sincos_2d_into(embed_dim, grid(grid_h), grid(grid_w), out.f32(), embed_dim, 0);
  return out;
}

std::vector<float> linspace_f32(double start, double end, int64_t steps) {
  std::vector<float> v(size_t(std::max<int64_t>(steps, 0)));
  if (steps == 1) v[0] = float(start);
  if (steps <= 1) return v;
  const float s = float(start), e = float(end);
  const float step = (e - s) / float(steps - 1);
  const int64_t halfway = steps / 2;
  for (int64_t i = 0; i < steps; ++i) v[size_t(i)] = i < halfway ? s + step * float(i) : e - step * float(steps - i - 1);
  return v;
}

RopeTables rotary_pos_embed_1d(int dim, const std::vector<float>& pos, double theta) {
  PAB_ASSERT(dim % 2 == 0, "rotary dim ", dim, " must be even");
  const int half = dim / 2;
  std::vector<float> freq(static_cast<size_t>(half));
  for (int i = 0; i < half; ++i) freq[size_t(i)] = 1.0f / std::pow(float(theta), float(2 * i) / float(dim));
  RopeTables t{Tensor::empty({int64_t(pos.size()), dim}), Tensor::empty({int64_t(pos.size()), dim})};
  for (size_t m = 0; m < pos.size(); ++m) {
    for (int i = 0; i < half; ++i) {
      float a = pos[m] * freq[size_t(i)];
      float c = std::cos(a), s = std::sin(a);
      t.cos.f32()[m * size_t(dim) + size_t(2 * i)] = t.cos.f32()[m * size_t(dim) + size_t(2 * i + 1)] = c;
      t.sin.f32()[m * size_t(dim) + size_t(2 * i)] = t.sin.f32()[m * size_t(dim) + size_t(2 * i + 1)] = s;
    }
  }
  return t;
}

RopeTables rotary_pos_embed_3d(int head_dim, int grid_h, int grid_w, int frames, int base_h, int base_w,
                               const std::string& grid_type, int max_h, int max_w, double theta) {
  std::vector<float> gt, gh, gw;
  if (grid_type == "linspace") {
    // diffusers get_resize_crop_region_for_grid((grid_h, grid_w), base_w, base_h)
    double r = double(grid_h) / grid_w;
    int rh, rw;
    if (r > double(base_h) / base_w) {
      rh = base_h;
      rw = int(std::nearbyint(double(base_h) / grid_h * grid_w));
    } else {
      rw = base_w;
      rh = int(std::nearbyint(double(base_w) / grid_w * grid_h));
    }
    int top = int(std::nearbyint((base_h - rh) / 2.0)), left = int(std::nearbyint((base_w - rw) / 2.0));
    gh = linspace_f32(top, double(top + rh) * (grid_h - 1) / grid_h, grid_h);
    gw = linspace_f32(left, double(left + rw) * (grid_w - 1) / grid_w, grid_w);
    gt = linspace_f32(0, double(frames) * (frames - 1) / frames, frames);
  } else if (grid_type == "slice") {
    if (grid_h > max_h || grid_w > max_w)
      fail("rotary positions: a ", grid_h, "x", grid_w, " patch grid exceeds the model's ", max_h, "x", max_w,
           " (sample size / patch size)");
    gh = linspace_f32(0, grid_h - 1, grid_h);
    gw = linspace_f32(0, grid_w - 1, grid_w);
    gt = linspace_f32(0, frames - 1, frames);
  } else {
    fail("rotary positions: unknown grid type '", grid_type, "'");
  }
  const int dim_t = head_dim / 4, dim_h = head_dim / 8 * 3, dim_w = head_dim / 8 * 3;
  RopeTables rt = rotary_pos_embed_1d(dim_t, gt, theta), rh = rotary_pos_embed_1d(dim_h, gh, theta),
             rw = rotary_pos_embed_1d(dim_w, gw, theta);
  const int d = dim_t + dim_h + dim_w;
  const int64_t n = int64_t(frames) * grid_h * grid_w;
  RopeTables out{Tensor::empty({n, d}), Tensor::empty({n, d})};
  for (int f = 0; f < frames; ++f)
    for (int h = 0; h < grid_h; ++h)
      for (int w = 0; w < grid_w; ++w) {
        int64_t tok = (int64_t(f) * grid_h + h) * grid_w + w;
        for (int which = 0; which < 2; ++which) {
          const Tensor& a = which ? rt.sin : rt.cos;
          const Tensor& b = which ? rh.sin : rh.cos;
          const Tensor& c = which ? rw.sin : rw.cos;
          float* row = (which ? out.sin : out.cos).f32() + tok * d;
          std::copy_n(a.f32() + int64_t(f) * dim_t, dim_t, row);
          std::copy_n(b.f32() + int64_t(h) * dim_h, dim_h, row + dim_t);
          std::copy_n(c.f32() + int64_t(w) * dim_w, dim_w, row + dim_t + dim_h);
        }
      }
  return out;
}

}  // namespace pab
