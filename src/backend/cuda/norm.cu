// Normalisations: layer norm (optionally fused with adaptive modulation and a
// residual add), RMS norm, group norm (optionally with a scale, shift and
// SiLU), softmax. Per-row norms hold a row in registers (a lane group, warp or
// block per row, by row length); group norm is a split reduction (few, very
// large groups).
#include <cub/block/block_reduce.cuh>

#include "backend/cuda/common.cuh"

namespace pab {
namespace cuda {
namespace {

constexpr int kThreads = 256;

struct MaxOp {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
using BlockSum = cub::BlockReduce<float, kThreads>;

__device__ float block_sum(float v, typename BlockSum::TempStorage& tmp, float* shared) {
  float s = BlockSum(tmp).Sum(v);
  if (threadIdx.x == 0) *shared = s;
  __syncthreads();
  float r = *shared;
  __syncthreads();
  return r;
}

// Row norms. Each row is held in registers (kPer values per thread, kThreads
// threads per row: one warp for short rows such as QK norms over a head, a
// block for model-width rows), so x is read once; sums are reduced in double.
struct RowNormArgs {
  int64_t c, tokens, split;
  float eps;
  bool rms;
};

template <int kThreads>
__device__ double row_sum(double v, double* scratch) {
  for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
  if constexpr (kThreads == 32) {
    return v;
  } else {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    double t = 0;
#pragma unroll
    for (int w = 0; w < kThreads / 32; ++w) t += scratch[w];
    __syncthreads();
    return t;
  }
}

// Per row of x [rows, C]: (x - mean) / sqrt(var + eps) [* w + b] [* (1 + scale) + shift]
// with modulation vectors [B, C] chosen by the token's segment (tokens of x [B, S, C]).
template <class T, int kThreads, int kPer>
__global__ void row_norm_kernel(const T* x, const T* w, const T* b, const T* shift_a, const T* scale_a,
                                const T* shift_b, const T* scale_b, T* out, int64_t rows, RowNormArgs a) {
  __shared__ double scratch[kThreads / 32];
  const int rows_per_block = kThreads == 32 ? blockDim.x / 32 : 1;
  const int lane = kThreads == 32 ? threadIdx.x % 32 : threadIdx.x;
  const int64_t row = int64_t(blockIdx.x) * rows_per_block + (kThreads == 32 ? threadIdx.x / 32 : 0);
  if (row >= rows) return;  // whole warps (warp rows) or whole blocks leave together
  const T* xr = x + row * a.c;
  float v[kPer];
  double s = 0;
#pragma unroll
  for (int k = 0; k < kPer; ++k) {
    const int64_t i = lane + int64_t(k) * kThreads;
    v[k] = i < a.c ? to_f<T>(xr[i]) : 0.0f;
    s += v[k];
  }
  float mean = 0.0f;
  if (!a.rms) mean = float(row_sum<kThreads>(s, scratch) / double(a.c));
  double ss = 0;
#pragma unroll
  for (int k = 0; k < kPer; ++k) {
    const int64_t i = lane + int64_t(k) * kThreads;
    const float d = i < a.c ? v[k] - mean : 0.0f;
    ss += double(d) * d;
  }
  const float inv = float(rsqrt(row_sum<kThreads>(ss, scratch) / double(a.c) + double(a.eps)));
  const int64_t batch = row / a.tokens, tok = row - batch * a.tokens;
  const T* shift = tok < a.split ? shift_a : shift_b;
  const T* scale = tok < a.split ? scale_a : scale_b;
  T* orow = out + row * a.c;
#pragma unroll
  for (int k = 0; k < kPer; ++k) {
    const int64_t i = lane + int64_t(k) * kThreads;
    if (i >= a.c) continue;
    float r = (v[k] - mean) * inv;
    if (w) r *= to_f<T>(w[i]);
    if (b) r += to_f<T>(b[i]);
    if (scale) r = r * (1.0f + to_f<T>(scale[batch * a.c + i])) + to_f<T>(shift[batch * a.c + i]);
    orow[i] = from_f<T>(r);
  }
}

// The residual fused before a norm: x is replaced by sum = x + gate * y (gate
// [B, C] by segment as the modulation; null gate: 1), which is also written.
template <class T>
struct Residual {
  const T *y = nullptr, *gate_a = nullptr, *gate_b = nullptr;
  T* sum = nullptr;
};

// The same with 16-byte accesses: G threads per row (G <= 32: several rows
// per block, reduced by shuffles inside the lane group; G = 0: one row per
// block of blockDim threads), each holding kVecs vectors of V elements. A warp
// per row keeps more loads in flight than a block per row and needs no
// barriers: model-width rows (a few hundred vectors) run that way.
template <class T, int G, int kVecs>
__global__ void vec_row_norm_kernel(const T* x, const T* w, const T* b, const T* shift_a, const T* scale_a,
                                    const T* shift_b, const T* scale_b, T* out, int64_t rows, RowNormArgs a,
                                    Residual<T> res) {
  constexpr int V = kVec<T>;
  __shared__ double scratch[32];
  const int group = G > 0 ? G : blockDim.x;
  const int lane = G > 0 ? threadIdx.x % G : threadIdx.x;
  const int64_t row = G > 0 ? int64_t(blockIdx.x) * (blockDim.x / G) + threadIdx.x / G : blockIdx.x;
  const bool live = row < rows;  // a block-wide row never is dead; a lane group may be
  auto reduce = [&](double v) {
    if constexpr (G > 0) {
      for (int off = G / 2; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
      return v;
    } else {
      for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
      const int warp = threadIdx.x / 32, warps = blockDim.x / 32;
      if (threadIdx.x % 32 == 0) scratch[warp] = v;
      __syncthreads();
      double t = 0;
      for (int i = 0; i < warps; ++i) t += scratch[i];
      __syncthreads();
      return t;
    }
  };
  const int64_t nvec = a.c / V;
  const T* xr = x + (live ? row : 0) * a.c;
  const int64_t batch = row / a.tokens, tok = row - batch * a.tokens;
  const T* gate = tok < a.split ? res.gate_a : res.gate_b;
  float v[kVecs][V];
  double s = 0;
#pragma unroll
  for (int k = 0; k < kVecs; ++k) {
    const int64_t j = lane + int64_t(k) * group;
    if (live && j < nvec) {
      Vec<T, V> in = reinterpret_cast<const Vec<T, V>*>(xr)[j];
      if (res.y) {  // the sum, rounded as the separate op would store it
        Vec<T, V> yv = reinterpret_cast<const Vec<T, V>*>(res.y + row * a.c)[j];
        Vec<T, V> gv;
        if (gate) gv = reinterpret_cast<const Vec<T, V>*>(gate + batch * a.c)[j];
#pragma unroll
        for (int e = 0; e < V; ++e) {
          const float g = gate ? to_f<T>(gv.v[e]) : 1.0f;
          in.v[e] = from_f<T>(to_f<T>(in.v[e]) + g * to_f<T>(yv.v[e]));
        }
        reinterpret_cast<Vec<T, V>*>(res.sum + row * a.c)[j] = in;
      }
      float part = 0.0f;
#pragma unroll
      for (int e = 0; e < V; ++e) {
        v[k][e] = to_f<T>(in.v[e]);
        part += v[k][e];
      }
      s += part;
    } else {
#pragma unroll
      for (int e = 0; e < V; ++e) v[k][e] = 0.0f;
    }
  }
  float mean = 0.0f;
  if (!a.rms) mean = float(reduce(s) / double(a.c));
  double ss = 0;
#pragma unroll
  for (int k = 0; k < kVecs; ++k) {
    if (!(live && lane + int64_t(k) * group < nvec)) continue;
    float part = 0.0f;
#pragma unroll
    for (int e = 0; e < V; ++e) part += (v[k][e] - mean) * (v[k][e] - mean);
    ss += part;
  }
  const float inv = float(rsqrt(reduce(ss) / double(a.c) + double(a.eps)));
  if (!live) return;
  const T* shift = tok < a.split ? shift_a : shift_b;
  const T* scale = tok < a.split ? scale_a : scale_b;
#pragma unroll
  for (int k = 0; k < kVecs; ++k) {
    const int64_t j = lane + int64_t(k) * group;
    if (j >= nvec) continue;
    float r[V];
#pragma unroll
    for (int e = 0; e < V; ++e) r[e] = (v[k][e] - mean) * inv;
    auto apply = [&](const T* p, int64_t base, auto op) {
      Vec<T, V> pv = reinterpret_cast<const Vec<T, V>*>(p + base)[j];
#pragma unroll
      for (int e = 0; e < V; ++e) r[e] = op(r[e], to_f<T>(pv.v[e]));
    };
    if (w) apply(w, 0, [](float r0, float p0) { return r0 * p0; });
    if (b) apply(b, 0, [](float r0, float p0) { return r0 + p0; });
    if (scale) {
      apply(scale, batch * a.c, [](float r0, float p0) { return r0 * (1.0f + p0); });
      apply(shift, batch * a.c, [](float r0, float p0) { return r0 + p0; });
    }
    Vec<T, V> o;
#pragma unroll
    for (int e = 0; e < V; ++e) o.v[e] = from_f<T>(r[e]);
    reinterpret_cast<Vec<T, V>*>(out + row * a.c)[j] = o;
  }
}

// Rows too long for registers: re-read x for each pass.
template <class T>
__global__ void long_row_norm_kernel(const T* x, const T* w, const T* b, const T* shift_a, const T* scale_a,
                                     const T* shift_b, const T* scale_b, T* out, RowNormArgs a) {
  __shared__ double scratch[kThreads / 32];
  const int64_t row = blockIdx.x;
  const T* xr = x + row * a.c;
  double s = 0;
  for (int64_t i = threadIdx.x; i < a.c; i += kThreads) s += to_f<T>(xr[i]);
  const double mean = a.rms ? 0.0 : row_sum<kThreads>(s, scratch) / double(a.c);
  double ss = 0;
  for (int64_t i = threadIdx.x; i < a.c; i += kThreads) {
    double d = to_f<T>(xr[i]) - mean;
    ss += d * d;
  }
  const float inv = float(rsqrt(row_sum<kThreads>(ss, scratch) / double(a.c) + double(a.eps)));
  const int64_t batch = row / a.tokens, tok = row - batch * a.tokens;
  const T* shift = tok < a.split ? shift_a : shift_b;
  const T* scale = tok < a.split ? scale_a : scale_b;
  for (int64_t i = threadIdx.x; i < a.c; i += kThreads) {
    float r = float(to_f<T>(xr[i]) - mean) * inv;
    if (w) r *= to_f<T>(w[i]);
    if (b) r += to_f<T>(b[i]);
    if (scale) r = r * (1.0f + to_f<T>(scale[batch * a.c + i])) + to_f<T>(shift[batch * a.c + i]);
    out[row * a.c + i] = from_f<T>(r);
  }
}

// One warp per row of x [B, S, H, D] (one head of one token): layer norm over
// D, then the rotary rotation of tokens >= start. Each lane owns whole pairs
// (x[2p], x[2p+1]), p = lane + 32k.
template <class T, int kPairs>
__global__ void norm_rope_kernel(const T* x, const T* w, const T* b, const float* cs, const float* sn, T* out,
                                 int64_t rows, int64_t s, int64_t h, int64_t d, int64_t start, float eps) {
  const int64_t row = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const T* xr = x + row * d;
  float v[2 * kPairs];
  float sum = 0.0f;
#pragma unroll
  for (int k = 0; k < kPairs; ++k) {
    const int64_t i = 2 * (lane + 32 * k);
    v[2 * k] = i < d ? to_f<T>(xr[i]) : 0.0f;
    v[2 * k + 1] = i < d ? to_f<T>(xr[i + 1]) : 0.0f;
    sum += v[2 * k] + v[2 * k + 1];
  }
  for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  const float mean = sum / float(d);
  float ss = 0.0f;
#pragma unroll
  for (int k = 0; k < kPairs; ++k) {
    const int64_t i = 2 * (lane + 32 * k);
    if (i >= d) continue;
    ss += (v[2 * k] - mean) * (v[2 * k] - mean) + (v[2 * k + 1] - mean) * (v[2 * k + 1] - mean);
  }
  for (int off = 16; off > 0; off /= 2) ss += __shfl_xor_sync(0xffffffffu, ss, off);
  const float inv = rsqrtf(ss / float(d) + eps);
  const int64_t t = (row / h) % s - start;
  T* orow = out + row * d;
#pragma unroll
  for (int k = 0; k < kPairs; ++k) {
    const int64_t i = 2 * (lane + 32 * k);
    if (i >= d) continue;
    float re = (v[2 * k] - mean) * inv, im = (v[2 * k + 1] - mean) * inv;
    if (w) {
      re *= to_f<T>(w[i]);
      im *= to_f<T>(w[i + 1]);
    }
    if (b) {
      re += to_f<T>(b[i]);
      im += to_f<T>(b[i + 1]);
    }
    if (t >= 0) {
      const float c0 = cs[t * d + i], c1 = cs[t * d + i + 1], s0 = sn[t * d + i], s1 = sn[t * d + i + 1];
      const float r = re * c0 - im * s0;
      im = im * c1 + re * s1;
      re = r;
    }
    orow[i] = from_f<T>(re);
    orow[i + 1] = from_f<T>(im);
  }
}

// The same with 16-byte accesses: G lanes per row (D = 8G elements for bf16),
// each lane holding one vector of V elements (V/2 pairs); 32/G rows per warp.
template <class T, int G>
__global__ void vec_norm_rope_kernel(const T* x, const T* w, const T* b, const float* cs, const float* sn, T* out,
                                     int64_t rows, int64_t s, int64_t h, int64_t start, float eps) {
  constexpr int V = kVec<T>;
  constexpr int64_t d = int64_t(G) * V;
  const int64_t row = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / G;
  const int lane = threadIdx.x % G;
  const bool live = row < rows;
  float v[V];
  float sum = 0.0f;
  if (live) {
    Vec<T, V> in = reinterpret_cast<const Vec<T, V>*>(x + row * d)[lane];
#pragma unroll
    for (int e = 0; e < V; ++e) {
      v[e] = to_f<T>(in.v[e]);
      sum += v[e];
    }
  } else {
#pragma unroll
    for (int e = 0; e < V; ++e) v[e] = 0.0f;
  }
  for (int off = G / 2; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  const float mean = sum / float(d);
  float ss = 0.0f;
#pragma unroll
  for (int e = 0; e < V; ++e) ss += (v[e] - mean) * (v[e] - mean);
  for (int off = G / 2; off > 0; off /= 2) ss += __shfl_xor_sync(0xffffffffu, ss, off);
  if (!live) return;
  const float inv = rsqrtf(ss / float(d) + eps);
  const int64_t i0 = int64_t(lane) * V;
#pragma unroll
  for (int e = 0; e < V; ++e) {
    v[e] = (v[e] - mean) * inv;
    if (w) v[e] *= to_f<T>(w[i0 + e]);
    if (b) v[e] += to_f<T>(b[i0 + e]);
  }
  const int64_t t = (row / h) % s - start;
  if (t >= 0) {
    const float* c = cs + t * d + i0;
    const float* sn_ = sn + t * d + i0;
#pragma unroll
    for (int e = 0; e < V; e += 2) {
      const float re = v[e], im = v[e + 1];
      v[e] = re * c[e] - im * sn_[e];
      v[e + 1] = im * c[e + 1] + re * sn_[e + 1];
    }
  }
  Vec<T, V> o;
#pragma unroll
  for (int e = 0; e < V; ++e) o.v[e] = from_f<T>(v[e]);
  reinterpret_cast<Vec<T, V>*>(out + row * d)[lane] = o;
}

// Short rows without modulation (QK norms over a head's D elements) with
// 16-byte accesses: G lanes per row, each holding one vector of V elements;
// each lane group takes kRows rows (a warp's groups take neighbouring rows),
// all loads issued before any arithmetic, statistics in float (two passes
// over registers, shifted). Optional affine w, b [D]; RMS instead of layer norm.
template <class T, int G, int kRows>
__global__ void head_norm_kernel(const T* x, const T* w, const T* b, T* out, int64_t rows, float eps, bool rms) {
  constexpr int V = kVec<T>;
  constexpr int64_t d = int64_t(G) * V;
  constexpr int kGroups = 256 / G;  // lane groups per block
  const int lane = threadIdx.x % G;
  const int64_t first = int64_t(blockIdx.x) * kGroups * kRows + threadIdx.x / G;
  float v[kRows][V];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int64_t row = first + int64_t(r) * kGroups;
    Vec<T, V> in{};
    if (row < rows) in = reinterpret_cast<const Vec<T, V>*>(x + row * d)[lane];
#pragma unroll
    for (int e = 0; e < V; ++e) v[r][e] = to_f<T>(in.v[e]);
  }
  Vec<T, V> wv, bv;
  if (w) wv = reinterpret_cast<const Vec<T, V>*>(w)[lane];
  if (b) bv = reinterpret_cast<const Vec<T, V>*>(b)[lane];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int64_t row = first + int64_t(r) * kGroups;
    float mean = 0.0f;
    if (!rms) {
      // statistics of x - (the row's first element): exact differences, no
      // cancellation for rows far from zero
      const float shift = __shfl_sync(0xffffffffu, v[r][0], threadIdx.x % 32 / G * G);
#pragma unroll
      for (int e = 0; e < V; ++e) {
        v[r][e] -= shift;
        mean += v[r][e];
      }
      for (int off = G / 2; off > 0; off /= 2) mean += __shfl_xor_sync(0xffffffffu, mean, off);
      mean /= float(d);
    }
    float ss = 0.0f;
#pragma unroll
    for (int e = 0; e < V; ++e) ss += (v[r][e] - mean) * (v[r][e] - mean);
    for (int off = G / 2; off > 0; off /= 2) ss += __shfl_xor_sync(0xffffffffu, ss, off);
    if (row >= rows) continue;
    const float inv = rsqrtf(ss / float(d) + eps);
    Vec<T, V> o;
#pragma unroll
    for (int e = 0; e < V; ++e) {
      float y = (v[r][e] - mean) * inv;
      if (w) y *= to_f<T>(wv.v[e]);
      if (b) y += to_f<T>(bv.v[e]);
      o.v[e] = from_f<T>(y);
    }
    reinterpret_cast<Vec<T, V>*>(out + row * d)[lane] = o;
  }
}

template <class T>
__global__ void softmax_kernel(const T* x, T* out, int64_t c) {
  __shared__ typename cub::BlockReduce<float, kThreads>::TempStorage tmp;
  __shared__ float shared;
  const T* xr = x + blockIdx.x * c;
  T* orow = out + blockIdx.x * c;
  float m = -INFINITY;
  for (int64_t i = threadIdx.x; i < c; i += kThreads) m = fmaxf(m, to_f<T>(xr[i]));
  m = cub::BlockReduce<float, kThreads>(tmp).Reduce(m, MaxOp());
  if (threadIdx.x == 0) shared = m;
  __syncthreads();
  m = shared;
  __syncthreads();
  float s = 0.0f;
  for (int64_t i = threadIdx.x; i < c; i += kThreads) s += __expf(to_f<T>(xr[i]) - m);
  float inv = 1.0f / block_sum(s, tmp, &shared);
  for (int64_t i = threadIdx.x; i < c; i += kThreads) orow[i] = from_f<T>(__expf(to_f<T>(xr[i]) - m) * inv);
}

// Group norm, stage 1: per (group, chunk) count, mean and M2 in one pass.
// Each thread sums its values shifted by its first one (no cancellation
// while the values are of the mean's scale), V at a time; the threads'
// moments are merged with Chan's formula.
struct Moments {
  float n = 0, mean = 0, m2 = 0;
};

__device__ Moments merge(Moments a, Moments b) {
  const float n = a.n + b.n;
  if (n == 0) return a;
  const float delta = b.mean - a.mean, fb = b.n / n;
  return {n, a.mean + delta * fb, a.m2 + b.m2 + delta * delta * a.n * fb};
}

__device__ Moments shfl_down(Moments m, int off) {
  return {__shfl_down_sync(0xffffffffu, m.n, off), __shfl_down_sync(0xffffffffu, m.mean, off),
          __shfl_down_sync(0xffffffffu, m.m2, off)};
}

// chunk is a multiple of V, and so is every group's start.
template <class T, int V>
__global__ void group_stats_kernel(const T* x, int64_t group_size, int64_t chunk, float3* partial) {
  __shared__ Moments warps[kThreads / 32];
  const int64_t g = blockIdx.y, k = blockIdx.x;
  const int64_t begin = k * chunk, end = min(group_size, begin + chunk);
  const T* xg = x + g * group_size;
  float shift = 0, s1 = 0, s2 = 0;
  int64_t n = 0;
  for (int64_t i = begin + int64_t(threadIdx.x) * V; i < end; i += int64_t(kThreads) * V) {
    const Vec<T, V> v = *reinterpret_cast<const Vec<T, V>*>(xg + i);
    if (n == 0) shift = to_f<T>(v.v[0]);
#pragma unroll
    for (int j = 0; j < V; ++j) {
      const float d = to_f<T>(v.v[j]) - shift;
      s1 += d;
      s2 += d * d;
    }
    n += V;
  }
  Moments m;
  if (n > 0) m = {float(n), shift + s1 / float(n), fmaxf(s2 - s1 * s1 / float(n), 0.0f)};
  for (int off = 16; off > 0; off /= 2) m = merge(m, shfl_down(m, off));
  if (threadIdx.x % 32 == 0) warps[threadIdx.x / 32] = m;
  __syncthreads();
  if (threadIdx.x == 0) {
    Moments t = warps[0];
    for (int w = 1; w < kThreads / 32; ++w) t = merge(t, warps[w]);
    partial[g * gridDim.x + k] = make_float3(t.n, t.mean, t.m2);
  }
}

// Stage 2: combine the chunks of each group (Chan et al.) into mean and 1/std.
__global__ void group_combine_kernel(const float3* partial, int chunks, float eps, float2* stats) {
  const int64_t g = blockIdx.x;
  if (threadIdx.x != 0) return;
  double n = 0, mean = 0, m2 = 0;
  for (int k = 0; k < chunks; ++k) {
    float3 p = partial[g * chunks + k];
    double nb = p.x, delta = double(p.y) - mean, tot = n + nb;
    if (tot == 0) continue;
    mean += delta * nb / tot;
    m2 += double(p.z) + delta * delta * n * nb / tot;
    n = tot;
  }
  stats[g] = make_float2(float(mean), float(rsqrt(m2 / n + double(eps))));
}

// Stage 3: normalise x [B, C, rows_per_channel, width] a warp per row of
// `width` elements, V at a time, then optionally scale and shift by
// conditioning rows (row r of x takes row r / rep of scale and shift: a
// nearest repeat along the height) and apply the SiLU.
struct GroupApplyArgs {
  int64_t rows, width, c, rows_per_channel, cpg, rep;
};

template <class T, int V, bool kMod, bool kSilu>
__global__ void group_apply_kernel(const T* x, const float2* stats, const T* w, const T* b, const T* scale,
                                   const T* shift, T* out, GroupApplyArgs a) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = int64_t(gridDim.x) * blockDim.x / 32;
  for (int64_t r = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32; r < a.rows; r += warps) {
    const int64_t ch = (r / a.rows_per_channel) % a.c, bi = r / (a.rows_per_channel * a.c);
    const float2 st = stats[bi * (a.c / a.cpg) + ch / a.cpg];
    const float mul = st.y * (w ? to_f<T>(w[ch]) : 1.0f);
    const float add = (b ? to_f<T>(b[ch]) : 0.0f) - st.x * mul;
    const T* xr = x + r * a.width;
    T* orow = out + r * a.width;
    const int64_t mrow = r / a.rep;
    for (int64_t i = int64_t(lane) * V; i < a.width; i += 32 * V) {
      const Vec<T, V> v = *reinterpret_cast<const Vec<T, V>*>(xr + i);
      Vec<T, V> sc, sh, o;
      if constexpr (kMod) {
        sc = *reinterpret_cast<const Vec<T, V>*>(scale + mrow * a.width + i);
        sh = *reinterpret_cast<const Vec<T, V>*>(shift + mrow * a.width + i);
      }
#pragma unroll
      for (int j = 0; j < V; ++j) {
        float y = to_f<T>(v.v[j]) * mul + add;
        if constexpr (kMod) y = y * to_f<T>(sc.v[j]) + to_f<T>(sh.v[j]);
        if constexpr (kSilu) y = y / (1.0f + __expf(-y));
        o.v[j] = from_f<T>(y);
      }
      *reinterpret_cast<Vec<T, V>*>(orow + i) = o;
    }
  }
}

template <class T>
const T* opt_ptr(const Tensor* t) {
  return t ? cptr<T>(*t) : nullptr;
}

}  // namespace
}  // namespace cuda

using namespace cuda;

namespace {
// x [.., C]; optional affine w, b [C]; optional modulation vectors [B, C] for
// the two token segments of x [B, S, C] (split = S: one segment).
// With y, x + gate * y replaces x and is returned in `sum`: fused into the
// vectorised kernels, or as a separate op where they do not run.
Tensor row_norm(CudaBackend& be, const Tensor& x, const Tensor* w, const Tensor* b, const Tensor* shift_a,
                const Tensor* scale_a, const Tensor* shift_b, const Tensor* scale_b, int64_t split, float eps, bool rms,
                const char* op, const Tensor* y = nullptr, const Tensor* gate_a = nullptr,
                const Tensor* gate_b = nullptr, Tensor* sum = nullptr) {
  check_cuda(x, op);
  for (const Tensor* t : {w, b, shift_a, scale_a, shift_b, scale_b})
    if (t) check_same(x, *t, op);
  RowNormArgs a{x.dim(-1), 1, 0, eps, rms};
  const int64_t rows = a.c == 0 ? 0 : x.numel() / a.c;
  if (w) PAB_ASSERT(w->numel() == a.c, op, ": weight ", w->desc(), " for ", x.desc());
  if (b) PAB_ASSERT(b->numel() == a.c, op, ": bias ", b->desc(), " for ", x.desc());
  a.tokens = rows;
  a.split = rows;
  if (scale_a) {
    PAB_ASSERT(x.rank() == 3, op, ": modulation needs x [B, S, C], got ", x.desc());
    for (const Tensor* t : {shift_a, scale_a, shift_b, scale_b})
      PAB_ASSERT(t->numel() == x.dim(0) * a.c, op, ": modulation ", t->desc(), " for ", x.desc());
    a.tokens = x.dim(1);
    a.split = split;
  }
  // 16-byte vectors when every row and vector is aligned (outputs are allocated so)
  const int64_t nvec = a.c * int64_t(dtype_size(x.dtype())) / 16;
  bool vec = a.c * int64_t(dtype_size(x.dtype())) % 16 == 0;
  for (const Tensor* t : {&x, w, b, shift_a, scale_a, shift_b, scale_b, y, gate_a, gate_b})
    vec = vec && (!t || aligned16(t->raw()));
  if (y && !(vec && nvec <= 4096)) {
    *sum = gate_a ? be.gated_add_split(x, *y, split, *gate_a, *gate_b) : be.binary(x, *y, Binary::add);
    return row_norm(be, *sum, w, b, shift_a, scale_a, shift_b, scale_b, split, eps, rms, op);
  }
  Tensor out = Tensor::empty(x.shape(), x.dtype(), be.device());
  if (y) *sum = Tensor::empty(x.shape(), x.dtype(), be.device());
  if (rows == 0) return out;
  dispatch_float(x.dtype(), op, [&]<class T>() {
    auto p = [](const Tensor* t) { return t ? cptr<T>(*t) : nullptr; };
    const T *xp = cptr<T>(x), *wp = p(w), *bp = p(b), *sa = p(shift_a), *ca = p(scale_a), *sb = p(shift_b),
            *cb = p(scale_b);
    T* o = mptr<T>(out);
    auto heads = [&]<int G>() {
      constexpr int kRows = 4, per_block = 256 / G * kRows;
      head_norm_kernel<T, G, kRows>
          <<<unsigned((rows + per_block - 1) / per_block), 256, 0, be.stream()>>>(xp, wp, bp, o, rows, eps, rms);
    };
    const bool plain = vec && !scale_a && !y;
    if (plain && nvec == 4) return heads.template operator()<4>();
    if (plain && nvec == 8) return heads.template operator()<8>();
    if (plain && nvec == 16) return heads.template operator()<16>();
    Residual<T> res;
    if (y) res = {cptr<T>(*y), p(gate_a), p(gate_b), mptr<T>(*sum)};
    auto groups = [&](auto kernel, int g) {
      const int64_t per_block = 256 / g;
      kernel<<<unsigned((rows + per_block - 1) / per_block), 256, 0, be.stream()>>>(xp, wp, bp, sa, ca, sb, cb, o,
                                                                                   rows, a, res);
    };
    auto block = [&](auto kernel, int k) {
      const int threads = int((nvec + k - 1) / k + 31) / 32 * 32;
      kernel<<<unsigned(rows), threads, 0, be.stream()>>>(xp, wp, bp, sa, ca, sb, cb, o, rows, a, res);
    };
    if (vec && nvec <= 1) {
      groups(vec_row_norm_kernel<T, 1, 1>, 1);
    } else if (vec && nvec <= 2) {
      groups(vec_row_norm_kernel<T, 2, 1>, 2);
    } else if (vec && nvec <= 4) {
      groups(vec_row_norm_kernel<T, 4, 1>, 4);
    } else if (vec && nvec <= 8) {
      groups(vec_row_norm_kernel<T, 8, 1>, 8);
    } else if (vec && nvec <= 16) {
      groups(vec_row_norm_kernel<T, 16, 1>, 16);
    } else if (vec && nvec <= 32) {
      groups(vec_row_norm_kernel<T, 32, 1>, 32);
    } else if (vec && nvec <= 64) {  // model-width rows: a warp per row, several vectors per lane
      groups(vec_row_norm_kernel<T, 32, 2>, 32);
    } else if (vec && nvec <= 96) {
      groups(vec_row_norm_kernel<T, 32, 3>, 32);
    } else if (vec && nvec <= 128) {
      groups(vec_row_norm_kernel<T, 32, 4>, 32);
    } else if (vec && nvec <= 160) {
      groups(vec_row_norm_kernel<T, 32, 5>, 32);
    } else if (vec && nvec <= 192) {
      groups(vec_row_norm_kernel<T, 32, 6>, 32);
    } else if (vec && nvec <= 256) {
      groups(vec_row_norm_kernel<T, 32, 8>, 32);
    } else if (vec && nvec <= 512) {
      block(vec_row_norm_kernel<T, 0, 1>, 1);
    } else if (vec && nvec <= 1024) {
      block(vec_row_norm_kernel<T, 0, 2>, 2);
    } else if (vec && nvec <= 4096) {
      block(vec_row_norm_kernel<T, 0, 4>, 4);
    } else if (a.c <= 32 * 8) {
      constexpr int kRowsPerBlock = 8;
      row_norm_kernel<T, 32, 8><<<unsigned((rows + kRowsPerBlock - 1) / kRowsPerBlock), 32 * kRowsPerBlock, 0,
                                  be.stream()>>>(xp, wp, bp, sa, ca, sb, cb, o, rows, a);
    } else if (a.c <= kThreads * 16) {
      row_norm_kernel<T, kThreads, 16><<<unsigned(rows), kThreads, 0, be.stream()>>>(xp, wp, bp, sa, ca, sb, cb, o,
                                                                                    rows, a);
    } else {
      long_row_norm_kernel<T><<<unsigned(rows), kThreads, 0, be.stream()>>>(xp, wp, bp, sa, ca, sb, cb, o, a);
    }
  });
  PAB_KERNEL_CHECK();
  return out;
}
}  // namespace

Tensor CudaBackend::layer_norm(const Tensor& x, const Tensor* w, const Tensor* b, float eps) {
  OpScope op_scope(*this, "layer_norm");
  return row_norm(*this, x, w, b, nullptr, nullptr, nullptr, nullptr, 0, eps, false, "layer_norm");
}

Tensor CudaBackend::norm_modulate(const Tensor& x, const Tensor* w, const Tensor* b, float eps, const Tensor& shift,
                                  const Tensor& scale) {
  OpScope op_scope(*this, "norm_modulate");
  return row_norm(*this, x, w, b, &shift, &scale, &shift, &scale, 0, eps, false, "norm_modulate");
}

Tensor CudaBackend::norm_modulate_split(const Tensor& x, const Tensor* w, const Tensor* b, float eps, int64_t split,
                                        const Tensor& shift_a, const Tensor& scale_a, const Tensor& shift_b,
                                        const Tensor& scale_b) {
  OpScope op_scope(*this, "norm_modulate_split");
  return row_norm(*this, x, w, b, &shift_a, &scale_a, &shift_b, &scale_b, split, eps, false, "norm_modulate_split");
}

std::pair<Tensor, Tensor> CudaBackend::add_norm_modulate_split(const Tensor& x, const Tensor& y, int64_t split,
                                                             const Tensor* gate_a, const Tensor* gate_b,
                                                             const Tensor* w, const Tensor* b, float eps,
                                                             const Tensor& shift_a, const Tensor& scale_a,
                                                             const Tensor& shift_b, const Tensor& scale_b) {
  check_same(x, y, "add_norm_modulate_split");
  PAB_ASSERT(x.shape() == y.shape() && !gate_a == !gate_b, "add_norm_modulate_split: x ", x.desc(), " y ", y.desc());
  for (const Tensor* g : {gate_a, gate_b})
    if (g) {
      check_same(x, *g, "add_norm_modulate_split");
      PAB_ASSERT(g->numel() == x.dim(0) * x.dim(-1), "add_norm_modulate_split: gate ", g->desc(), " for ", x.desc());
    }
  OpScope op_scope(*this, "add_norm_modulate");
  Tensor sum;
  Tensor normed = row_norm(*this, x, w, b, &shift_a, &scale_a, &shift_b, &scale_b, split, eps, false,
                           "add_norm_modulate_split", &y, gate_a, gate_b, &sum);
  return {sum, normed};
}

Tensor CudaBackend::rms_norm(const Tensor& x, const Tensor* w, float eps) {
  OpScope op_scope(*this, "rms_norm");
  return row_norm(*this, x, w, nullptr, nullptr, nullptr, nullptr, nullptr, 0, eps, true, "rms_norm");
}

Tensor CudaBackend::norm_rope(const Tensor& x, const Tensor* w, const Tensor* b, float eps, const Tensor& cos,
                             const Tensor& sin, int64_t start) {
  OpScope op_scope(*this, "norm_rope");
  check_cuda(x, "norm_rope");
  PAB_ASSERT(x.rank() == 4, "norm_rope expects [B, S, H, D], got ", x.desc());
  const int64_t s = x.dim(1), h = x.dim(2), d = x.dim(3);
  if (d % 2 != 0 || d > 256) return Backend::norm_rope(x, w, b, eps, cos, sin, start);
  PAB_ASSERT(start >= 0 && start <= s && cos.numel() == (s - start) * d && sin.numel() == cos.numel(),
             "norm_rope tables ", cos.desc(), " for ", x.desc(), " from token ", start);
  for (const Tensor* t : {w, b})
    if (t) {
      check_same(x, *t, "norm_rope");
      PAB_ASSERT(t->numel() == d, "norm_rope: ", t->desc(), " for head dim ", d);
    }
  Tensor c = cos.dtype() == DType::f32 ? cos : cast(cos, DType::f32);
  Tensor sn = sin.dtype() == DType::f32 ? sin : cast(sin, DType::f32);
  Tensor out = Tensor::empty(x.shape(), x.dtype(), device());
  const int64_t rows = x.numel() / std::max<int64_t>(d, 1);
  if (rows == 0) return out;
  const unsigned blocks = unsigned((rows * 32 + 255) / 256);
  dispatch_float(x.dtype(), "norm_rope", [&]<class T>() {
    auto p = [](const Tensor* t) { return t ? cptr<T>(*t) : nullptr; };
    constexpr int V = kVec<T>;
    const int64_t g = d / V;
    const bool vec = d % V == 0 && (g == 4 || g == 8 || g == 16) && aligned16(x.raw()) && aligned16(out.raw());
    if (vec) {
      auto launch = [&](auto kernel, int64_t lanes) {
        kernel<<<unsigned((rows * lanes + 255) / 256), 256, 0, stream()>>>(
            cptr<T>(x), p(w), p(b), cptr<float>(c), cptr<float>(sn), mptr<T>(out), rows, s, h, start, eps);
      };
      if (g == 4) launch(vec_norm_rope_kernel<T, 4>, 4);
      if (g == 8) launch(vec_norm_rope_kernel<T, 8>, 8);
      if (g == 16) launch(vec_norm_rope_kernel<T, 16>, 16);
      return;
    }
    auto launch = [&](auto kernel) {
      kernel<<<blocks, 256, 0, stream()>>>(cptr<T>(x), p(w), p(b), cptr<float>(c), cptr<float>(sn), mptr<T>(out), rows,
                                           s, h, d, start, eps);
    };
    if (d <= 64) {
      launch(norm_rope_kernel<T, 1>);
    } else if (d <= 128) {
      launch(norm_rope_kernel<T, 2>);
    } else {
      launch(norm_rope_kernel<T, 4>);
    }
  });
  PAB_KERNEL_CHECK();
  return out;
}

Tensor CudaBackend::softmax(const Tensor& x) {
  OpScope op_scope(*this, "softmax");
  check_cuda(x, "softmax");
  const int64_t c = x.dim(-1), rows = x.numel() / std::max<int64_t>(c, 1);
  Tensor out = Tensor::empty(x.shape(), x.dtype(), device());
  if (rows == 0 || c == 0) return out;
  dispatch_float(x.dtype(), "softmax", [&]<class T>() {
    softmax_kernel<T><<<unsigned(rows), kThreads, 0, stream()>>>(cptr<T>(x), mptr<T>(out), c);
  });
  PAB_KERNEL_CHECK();
  return out;
}

namespace {
// Group norm of x [B, C, ...] (rank >= 3 when modulated: rows of the last dim,
// scale and shift [B, C, ..., h, W] with h dividing the height).
Tensor run_group_norm(CudaBackend& be, const Tensor& x, int groups, const Tensor* w, const Tensor* b, float eps,
                      const Tensor* scale, const Tensor* shift, bool silu) {
  check_cuda(x, "group_norm");
  PAB_ASSERT(x.rank() >= 2, "group_norm needs [B, C, ...], got ", x.desc());
  const int64_t bsz = x.dim(0), c = x.dim(1);
  PAB_ASSERT(groups > 0 && c % groups == 0, "group_norm: ", c, " channels in ", groups, " groups");
  for (const Tensor* t : {w, b, scale, shift})
    if (t) check_same(x, *t, "group_norm");
  for (const Tensor* t : {w, b})
    if (t) PAB_ASSERT(t->numel() == c, "group_norm: affine ", t->desc(), " for ", c, " channels");
  const int64_t inner = x.numel() / std::max<int64_t>(bsz * c, 1), cpg = c / groups;
  const int64_t group_size = cpg * inner, n_groups = bsz * groups;
  Tensor out = Tensor::empty(x.shape(), x.dtype(), be.device());
  if (x.numel() == 0) return out;
  GroupApplyArgs a{};
  a.width = x.rank() >= 3 ? x.dim(-1) : 1;
  a.rep = scale ? x.dim(-2) / scale->dim(-2) : 1;
  a.rows = x.numel() / a.width;
  a.c = c;
  a.rows_per_channel = inner / a.width;
  a.cpg = cpg;
  dispatch_float(x.dtype(), "group_norm", [&]<class T>() {
    // The widest vectors that the group and row sizes and the addresses allow.
    auto fits = [&](int v) {
      const size_t bytes = size_t(v) * sizeof(T);
      auto ok = [&](const Tensor* t) { return !t || reinterpret_cast<uintptr_t>(t->raw()) % bytes == 0; };
      return a.width % v == 0 && ok(&x) && ok(&out) && ok(scale) && ok(shift);
    };
    constexpr int kMax = kVec<T>;
    const int v = fits(kMax) ? kMax : fits(kMax / 2) ? kMax / 2 : fits(2) ? 2 : 1;
    // Enough chunks to fill the GPU even with few groups.
    int64_t chunk = std::max<int64_t>(4096, (group_size + 63) / 64);
    chunk = (chunk + kMax - 1) / kMax * kMax;
    const int chunks = int((group_size + chunk - 1) / chunk);
    Tensor partial = Tensor::empty({n_groups, chunks, 3}, DType::f32, be.device());
    Tensor stats = Tensor::empty({n_groups, 2}, DType::f32, be.device());
    const dim3 grid{unsigned(chunks), unsigned(n_groups)};
    auto stats_kernel = group_size % kMax == 0 && aligned16(x.raw()) ? group_stats_kernel<T, kMax>
                                                                      : group_stats_kernel<T, 1>;
    stats_kernel<<<grid, kThreads, 0, be.stream()>>>(cptr<T>(x), group_size, chunk, mptr<float3>(partial));
    group_combine_kernel<<<unsigned(n_groups), 32, 0, be.stream()>>>(cptr<float3>(partial), chunks, eps,
                                                                    mptr<float2>(stats));
    auto launch = [&]<int V>() {
      auto go = [&](auto kernel) {
        kernel<<<blocks_for(a.rows * 32), 256, 0, be.stream()>>>(cptr<T>(x), cptr<float2>(stats), opt_ptr<T>(w),
                                                                  opt_ptr<T>(b), opt_ptr<T>(scale), opt_ptr<T>(shift),
                                                                  mptr<T>(out), a);
      };
      if (!scale)
        go(group_apply_kernel<T, V, false, false>);
      else if (silu)
        go(group_apply_kernel<T, V, true, true>);
      else
        go(group_apply_kernel<T, V, true, false>);
    };
    if constexpr (kMax == 8)
      if (v == 8) launch.template operator()<8>();
    if (v == 4) launch.template operator()<4>();
    if (v == 2) launch.template operator()<2>();
    if (v == 1) launch.template operator()<1>();
  });
  PAB_KERNEL_CHECK();
  return out;
}
}  // namespace

Tensor CudaBackend::group_norm(const Tensor& x, int groups, const Tensor* w, const Tensor* b, float eps) {
  OpScope op_scope(*this, "group_norm");
  return run_group_norm(*this, x, groups, w, b, eps, nullptr, nullptr, false);
}

Tensor CudaBackend::group_norm_scale_shift(const Tensor& x, int groups, const Tensor* w, const Tensor* b, float eps,
                                           const Tensor& scale, const Tensor& shift, bool silu) {
  OpScope op_scope(*this, "group_norm_scale_shift");
  check_group_norm_scale_shift(x, scale, shift);
  return run_group_norm(*this, x, groups, w, b, eps, &scale, &shift, silu);
}

}  // namespace pab
