// Normalisations: layer norm (optionally fused with adaptive modulation), RMS
// norm, group norm, softmax. Statistics in float; one block per row for the
// per-row norms, a split reduction for group norm (few, very large groups).
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

// Per row of x [rows, C]: (x - mean) / sqrt(var + eps) [* w + b] [* (1 + scale) + shift],
// modulation rows indexed by row / tokens (x [B, tokens, C]).
template <class T, bool kRms>
__global__ void row_norm_kernel(const T* x, const T* w, const T* b, const T* shift, const T* scale, T* out,
                                int64_t c, int64_t tokens, float eps) {
  __shared__ typename BlockSum::TempStorage tmp;
  __shared__ float shared;
  const int64_t row = blockIdx.x;
  const T* xr = x + row * c;
  T* orow = out + row * c;
  float mean = 0.0f;
  if (!kRms) {
    float s = 0.0f;
    for (int64_t i = threadIdx.x; i < c; i += kThreads) s += to_f<T>(xr[i]);
    mean = block_sum(s, tmp, &shared) / float(c);
  }
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < c; i += kThreads) {
    float d = to_f<T>(xr[i]) - mean;
    ss += d * d;
  }
  float inv = rsqrtf(block_sum(ss, tmp, &shared) / float(c) + eps);
  const int64_t bi = row / tokens;
  for (int64_t i = threadIdx.x; i < c; i += kThreads) {
    float v = (to_f<T>(xr[i]) - mean) * inv;
    if (w) v *= to_f<T>(w[i]);
    if (b) v += to_f<T>(b[i]);
    if (scale) v = v * (1.0f + to_f<T>(scale[bi * c + i])) + to_f<T>(shift[bi * c + i]);
    orow[i] = from_f<T>(v);
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

// Group norm, stage 1: per (group, chunk) count, mean and M2 (two passes over the chunk).
template <class T>
__global__ void group_stats_kernel(const T* x, int64_t group_size, int64_t chunk, float3* partial) {
  __shared__ typename BlockSum::TempStorage tmp;
  __shared__ float shared;
  const int64_t g = blockIdx.y, k = blockIdx.x;
  const int64_t begin = k * chunk, end = min(group_size, begin + chunk);
  const T* xg = x + g * group_size;
  float s = 0.0f;
  for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) s += to_f<T>(xg[i]);
  const float n = float(end - begin);
  const float mean = block_sum(s, tmp, &shared) / n;
  float m2 = 0.0f;
  for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
    float d = to_f<T>(xg[i]) - mean;
    m2 += d * d;
  }
  m2 = block_sum(m2, tmp, &shared);
  if (threadIdx.x == 0) partial[g * gridDim.x + k] = make_float3(n, mean, m2);
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

// Stage 3: normalise; x [B, C, inner], groups of C / G channels.
template <class T>
__global__ void group_apply_kernel(const T* x, const float2* stats, const T* w, const T* b, T* out, int64_t c,
                                   int64_t inner, int64_t cpg, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t ch = (i / inner) % c, bi = i / (inner * c);
    float2 st = stats[bi * (c / cpg) + ch / cpg];
    float v = (to_f<T>(x[i]) - st.x) * st.y;
    if (w) v *= to_f<T>(w[ch]);
    if (b) v += to_f<T>(b[ch]);
    out[i] = from_f<T>(v);
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
Tensor row_norm(CudaBackend& be, const Tensor& x, const Tensor* w, const Tensor* b, const Tensor* shift,
                const Tensor* scale, float eps, bool rms, const char* op) {
  check_cuda(x, op);
  for (const Tensor* t : {w, b, shift, scale})
    if (t) check_same(x, *t, op);
  const int64_t c = x.dim(-1), rows = x.numel() / std::max<int64_t>(c, 1);
  if (w) PAB_ASSERT(w->numel() == c, op, ": weight ", w->desc(), " for ", x.desc());
  if (b) PAB_ASSERT(b->numel() == c, op, ": bias ", b->desc(), " for ", x.desc());
  int64_t tokens = rows;
  if (scale) {
    PAB_ASSERT(x.rank() == 3 && scale->numel() == x.dim(0) * c && shift->numel() == scale->numel(), op, ": x ",
               x.desc(), " shift ", shift->desc(), " scale ", scale->desc());
    tokens = x.dim(1);
  }
  Tensor out = Tensor::empty(x.shape(), x.dtype(), Device::cuda);
  if (rows == 0 || c == 0) return out;
  dispatch_float(x.dtype(), op, [&]<class T>() {
    auto kernel = rms ? row_norm_kernel<T, true> : row_norm_kernel<T, false>;
    kernel<<<unsigned(rows), kThreads, 0, be.stream()>>>(cptr<T>(x), opt_ptr<T>(w), opt_ptr<T>(b), opt_ptr<T>(shift),
                                                         opt_ptr<T>(scale), mptr<T>(out), c, tokens, eps);
  });
  PAB_KERNEL_CHECK();
  return out;
}
}  // namespace

Tensor CudaBackend::layer_norm(const Tensor& x, const Tensor* w, const Tensor* b, float eps) {
  return row_norm(*this, x, w, b, nullptr, nullptr, eps, false, "layer_norm");
}

Tensor CudaBackend::norm_modulate(const Tensor& x, const Tensor* w, const Tensor* b, float eps, const Tensor& shift,
                                  const Tensor& scale) {
  return row_norm(*this, x, w, b, &shift, &scale, eps, false, "norm_modulate");
}

Tensor CudaBackend::rms_norm(const Tensor& x, const Tensor* w, float eps) {
  return row_norm(*this, x, w, nullptr, nullptr, nullptr, eps, true, "rms_norm");
}

Tensor CudaBackend::softmax(const Tensor& x) {
  check_cuda(x, "softmax");
  const int64_t c = x.dim(-1), rows = x.numel() / std::max<int64_t>(c, 1);
  Tensor out = Tensor::empty(x.shape(), x.dtype(), Device::cuda);
  if (rows == 0 || c == 0) return out;
  dispatch_float(x.dtype(), "softmax", [&]<class T>() {
    softmax_kernel<T><<<unsigned(rows), kThreads, 0, stream()>>>(cptr<T>(x), mptr<T>(out), c);
  });
  PAB_KERNEL_CHECK();
  return out;
}

Tensor CudaBackend::group_norm(const Tensor& x, int groups, const Tensor* w, const Tensor* b, float eps) {
  check_cuda(x, "group_norm");
  PAB_ASSERT(x.rank() >= 2, "group_norm needs [B, C, ...], got ", x.desc());
  const int64_t bsz = x.dim(0), c = x.dim(1);
  PAB_ASSERT(groups > 0 && c % groups == 0, "group_norm: ", c, " channels in ", groups, " groups");
  for (const Tensor* t : {w, b})
    if (t) check_same(x, *t, "group_norm");
  const int64_t inner = x.numel() / std::max<int64_t>(bsz * c, 1), cpg = c / groups;
  const int64_t group_size = cpg * inner, n_groups = bsz * groups;
  Tensor out = Tensor::empty(x.shape(), x.dtype(), Device::cuda);
  if (x.numel() == 0) return out;
  // Enough chunks to fill the GPU even with few groups.
  const int64_t chunk = std::max<int64_t>(4096, (group_size + 63) / 64);
  const int chunks = int((group_size + chunk - 1) / chunk);
  Tensor partial = Tensor::empty({n_groups, chunks, 3}, DType::f32, Device::cuda);
  Tensor stats = Tensor::empty({n_groups, 2}, DType::f32, Device::cuda);
  dispatch_float(x.dtype(), "group_norm", [&]<class T>() {
    group_stats_kernel<T><<<dim3(unsigned(chunks), unsigned(n_groups)), kThreads, 0, stream()>>>(
        cptr<T>(x), group_size, chunk, mptr<float3>(partial));
    group_combine_kernel<<<unsigned(n_groups), 32, 0, stream()>>>(cptr<float3>(partial), chunks, eps,
                                                                 mptr<float2>(stats));
    group_apply_kernel<T><<<blocks_for(x.numel()), 256, 0, stream()>>>(
        cptr<T>(x), cptr<float2>(stats), opt_ptr<T>(w), opt_ptr<T>(b), mptr<T>(out), c, inner, cpg, x.numel());
  });
  PAB_KERNEL_CHECK();
  return out;
}

}  // namespace pab
