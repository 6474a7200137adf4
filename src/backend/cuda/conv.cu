// Convolutions through cuDNN (NCHW / NCDHW, cross-correlation, float
// accumulation); algorithms timed once per shape. Half precision runs
// channels-last, the bias added by the transpose back.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <tuple>
#include <vector>

#include "backend/cuda/common.cuh"

namespace pab {

namespace {

#define PAB_DNN_CHECK(expr)                                                                   \
  do {                                                                                        \
    cudnnStatus_t pab_st_ = (expr);                                                           \
    if (pab_st_ != CUDNN_STATUS_SUCCESS) fail("cuDNN error '", cudnnGetErrorString(pab_st_), "' in ", #expr); \
  } while (0)

cudnnDataType_t dnn_type(DType t) {
  switch (t) {
    case DType::f32: return CUDNN_DATA_FLOAT;
    case DType::bf16: return CUDNN_DATA_BFLOAT16;
    case DType::f16: return CUDNN_DATA_HALF;
    default: fail("conv: unsupported dtype ", dtype_name(t));
  }
}

struct ConvPlan {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  bool chosen = false;  // algo and workspace are set by the first call
  cudnnConvolutionFwdAlgo_t algo{};
  size_t workspace = 0;
  std::vector<int> out_dims;
};

// channels_last: x, w and y are stored N(D)HWC / K(T)RSC (cuDNN's fast
// tensor-core layout); the dims stay in N, C, (D,) H, W order.
ConvPlan& plan_for(const std::vector<int>& xdims, const std::vector<int>& wdims, const std::vector<int>& stride,
                   const std::vector<int>& pad, DType dt, bool channels_last) {
  static std::map<std::tuple<std::vector<int>, std::vector<int>, std::vector<int>, std::vector<int>, int, bool>,
                  ConvPlan>
      cache;
  auto key = std::make_tuple(xdims, wdims, stride, pad, int(dt), channels_last);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  ConvPlan p;
  const int nd = int(xdims.size());
  const cudnnDataType_t t = dnn_type(dt);
  PAB_DNN_CHECK(cudnnCreateTensorDescriptor(&p.x));
  const cudnnTensorFormat_t fmt = channels_last ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW;
  PAB_DNN_CHECK(cudnnSetTensorNdDescriptorEx(p.x, fmt, t, nd, xdims.data()));
  PAB_DNN_CHECK(cudnnCreateFilterDescriptor(&p.w));
  PAB_DNN_CHECK(cudnnSetFilterNdDescriptor(p.w, t, fmt, nd, wdims.data()));
  PAB_DNN_CHECK(cudnnCreateConvolutionDescriptor(&p.conv));
  std::vector<int> dil(stride.size(), 1);
  PAB_DNN_CHECK(cudnnSetConvolutionNdDescriptor(p.conv, int(stride.size()), pad.data(), stride.data(), dil.data(),
                                                CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
  // f32 stays exact (no TF32); half types use the tensor cores.
  PAB_DNN_CHECK(cudnnSetConvolutionMathType(p.conv, dt == DType::f32 ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH));
  p.out_dims.resize(size_t(nd));
  PAB_DNN_CHECK(cudnnGetConvolutionNdForwardOutputDim(p.conv, p.x, p.w, nd, p.out_dims.data()));
  PAB_DNN_CHECK(cudnnCreateTensorDescriptor(&p.y));
  PAB_DNN_CHECK(cudnnSetTensorNdDescriptorEx(p.y, fmt, t, nd, p.out_dims.data()));
  return cache.emplace(key, p).first->second;
}

bool usable(const cudnnConvolutionFwdAlgoPerf_t& perf, DType dt) {
  if (perf.status != CUDNN_STATUS_SUCCESS) return false;
  return dt != DType::f32 || perf.mathType == CUDNN_FMA_MATH || perf.mathType == CUDNN_DEFAULT_MATH;
}

// The algorithm, chosen on the first call: the fastest of the first few of
// cuDNN's heuristic's choices, timed on these very buffers (y is
// overwritten). The heuristic's first choices decoded CogVideoX's 480x720
// video 0.1 s slower; timing every algorithm (cudnnFind) cost a first decode
// 0.3 s more than these few.
void choose_algo(CudaBackend& be, ConvPlan& p, DType dt, const void* x, const void* w, void* y, double flop) {
  if (p.chosen) return;
  constexpr int kCandidates = 3;
  constexpr size_t kMaxWorkspace = size_t(256) << 20;
  cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
  int found = 0;
  PAB_DNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(be.dnn(), p.x, p.w, p.conv, p.y,
                                                       CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &found, perf));
  std::vector<cudnnConvolutionFwdAlgoPerf_t> candidates;
  for (int i = 0; i < found && int(candidates.size()) < kCandidates; ++i)
    if (usable(perf[i], dt) && perf[i].memory <= kMaxWorkspace) candidates.push_back(perf[i]);
  if (candidates.empty())
    fail("cuDNN found no convolution algorithm for a ", p.out_dims.size(), "-d ", dtype_name(dt), " input");
  p.algo = candidates[0].algo;
  if (candidates.size() > 1 && flop > 1e10) {  // small convolutions: not worth timing
    size_t most = 0;
    for (const auto& c : candidates) most = std::max(most, c.memory);
    Tensor ws = Tensor::empty({int64_t(std::max<size_t>(most, 1))}, DType::u8, be.device());
    float best_ms = INFINITY;
    const float one = 1.0f, zero = 0.0f;
    for (const auto& c : candidates) {
      float ms = 0;
      for (int rep = 0; rep < 2; ++rep)  // the first run warms up
        ms = be.time_ms([&] {
          PAB_DNN_CHECK(cudnnConvolutionForward(be.dnn(), &one, p.x, x, p.w, w, p.conv, c.algo, ws.raw(), c.memory,
                                                &zero, p.y, y));
        });
      if (ms < best_ms) {
        best_ms = ms;
        p.algo = c.algo;
      }
    }
  }
  PAB_DNN_CHECK(cudnnGetConvolutionForwardWorkspaceSize(be.dnn(), p.x, p.w, p.conv, p.y, p.algo, &p.workspace));
  p.chosen = true;
}

// The source of a transpose: [B, R, C] as up to kMaxParts pieces side by
// side along C (a convolution's input joined along time, which is C here).
constexpr int kMaxParts = 4;
struct Source {
  const void* part[kMaxParts] = {};
  int64_t start[kMaxParts + 1] = {};  // first column of each piece; start[n] = C
  int n = 0;
  // Static indices only: a dynamically indexed kernel parameter would be
  // copied to local memory.
  template <class T>
  __device__ const T* at(int64_t b, int64_t rows, int64_t r, int64_t c) const {
    const void* p = part[0];
    int64_t s0 = 0, s1 = start[1];
#pragma unroll
    for (int k = 1; k < kMaxParts; ++k)
      if (k < n && c >= start[k]) {
        p = part[k];
        s0 = start[k];
        s1 = start[k + 1];
      }
    return static_cast<const T*>(p) + (b * rows + r) * (s1 - s0) + (c - s0);
  }
};

// dst[b][c][r] = src[b][r][c] (+ bias[c]): batched 2D transposes through
// 32x32 tiles. Row tiles and batches beyond the grid's y and z limits (65535)
// loop: a channels-last volume of a whole video has millions of positions.
template <class T>
__global__ void transpose_kernel(Source src, T* dst, const T* bias, int64_t batch, int64_t rows, int64_t cols) {
  __shared__ T tile[32][33];
  const int64_t c0 = int64_t(blockIdx.x) * 32;
  for (int64_t b = blockIdx.z; b < batch; b += gridDim.z) {
    T* d = dst + b * rows * cols;
    for (int64_t r0 = int64_t(blockIdx.y) * 32; r0 < rows; r0 += int64_t(gridDim.y) * 32) {
      for (int i = threadIdx.y; i < 32; i += blockDim.y) {
        const int64_t r = r0 + i, c = c0 + threadIdx.x;
        if (r < rows && c < cols) tile[i][threadIdx.x] = *src.at<T>(b, rows, r, c);
      }
      __syncthreads();
      for (int i = threadIdx.y; i < 32; i += blockDim.y) {
        const int64_t c = c0 + i, r = r0 + threadIdx.x;
        if (r < rows && c < cols)
          d[c * rows + r] =
              bias ? cuda::from_f<T>(cuda::to_f(tile[threadIdx.x][i]) + cuda::to_f(bias[c])) : tile[threadIdx.x][i];
      }
      __syncthreads();
    }
  }
}

// The same for 2-byte elements with even R and even piece widths: 64x64
// tiles, moved as pairs of elements.
template <class T>
__global__ void transpose_pairs_kernel(Source src, T* dst, const T* bias, int64_t batch, int64_t rows, int64_t cols) {
  constexpr int kRowsPerThread = 8;  // 64 rows over blockDim.y = 8
  __shared__ T tile[64][66];
  using Pair = cuda::Vec<T, 2>;
  const int64_t c0 = int64_t(blockIdx.x) * 64;
  const int tx = threadIdx.x;
  for (int64_t b = blockIdx.z; b < batch; b += gridDim.z) {
    T* d = dst + b * rows * cols;
    for (int64_t r0 = int64_t(blockIdx.y) * 64; r0 < rows; r0 += int64_t(gridDim.y) * 64) {
      // All of a thread's 8 loads are issued before any is stored: enough
      // bytes in flight to keep the memory busy.
      Pair v[kRowsPerThread];
#pragma unroll
      for (int k = 0; k < kRowsPerThread; ++k) {
        const int64_t r = r0 + threadIdx.y + 8 * k, c = c0 + 2 * tx;
        if (r < rows && c < cols) v[k] = *reinterpret_cast<const Pair*>(src.at<T>(b, rows, r, c));
      }
#pragma unroll
      for (int k = 0; k < kRowsPerThread; ++k) *reinterpret_cast<Pair*>(&tile[threadIdx.y + 8 * k][2 * tx]) = v[k];
      __syncthreads();
#pragma unroll
      for (int k = 0; k < kRowsPerThread; ++k) {
        const int i = threadIdx.y + 8 * k;
        const int64_t c = c0 + i, r = r0 + 2 * tx;
        if (r < rows && c < cols) {
          Pair o{{tile[2 * tx][i], tile[2 * tx + 1][i]}};
          if (bias) {
            const float add = cuda::to_f(bias[c]);
            for (T& e : o.v) e = cuda::from_f<T>(cuda::to_f(e) + add);
          }
          *reinterpret_cast<Pair*>(d + c * rows + r) = o;
        }
      }
      __syncthreads();
    }
  }
}

// [B, R, C] (src) -> y [B, C, R], adding bias [C] (of y's dtype) when given.
void transpose_last2(CudaBackend& be, const Source& src, Tensor& y, int64_t batch, int64_t rows, int64_t cols,
                     const Tensor* bias = nullptr) {
  if (y.numel() == 0) return;
  constexpr int64_t kMaxYZ = 65535;
  PAB_ASSERT((cols + 31) / 32 <= INT32_MAX, "transpose: ", cols, " columns");
  // Pairs of 2-byte elements where every size and address allows.
  bool pairs = rows % 2 == 0 && reinterpret_cast<uintptr_t>(y.raw()) % 4 == 0;
  for (int k = 0; k < src.n; ++k)
    pairs = pairs && (src.start[k + 1] - src.start[k]) % 2 == 0 && reinterpret_cast<uintptr_t>(src.part[k]) % 4 == 0;
  cuda::dispatch_float(y.dtype(), "conv layout", [&]<class T>() {
    const int tile = sizeof(T) == 2 && pairs ? 64 : 32;
    dim3 grid(unsigned((cols + tile - 1) / tile), unsigned(std::min((rows + tile - 1) / tile, kMaxYZ)),
              unsigned(std::min(batch, kMaxYZ)));
    auto kernel = tile == 64 ? transpose_pairs_kernel<T> : transpose_kernel<T>;
    kernel<<<grid, dim3(32, 8), 0, be.stream()>>>(src, static_cast<T*>(y.raw()),
                                                  bias ? static_cast<const T*>(bias->raw()) : nullptr, batch, rows,
                                                  cols);
  });
  PAB_KERNEL_CHECK();
}

// The pieces [B, R, C_i] of a transpose's source; each one's width C_i
// follows from its size and B * R.
Source pieces(const std::vector<Tensor>& parts, int64_t batch_rows) {
  Source s;
  for (const Tensor& part : parts) {
    s.part[s.n] = part.raw();
    s.start[s.n + 1] = s.start[s.n] + part.numel() / std::max<int64_t>(batch_rows, 1);
    ++s.n;
  }
  return s;
}

// A channels-last copy of a weight [O, C, K...] -> [O, K..., C] (made per
// call: weights are small, and a cache keyed by address could outlive them).
Tensor channels_last_weight(CudaBackend& be, const Tensor& w) {
  const int64_t o = w.dim(0), c = w.dim(1), k = w.numel() / std::max<int64_t>(o * c, 1);
  Tensor wl = Tensor::empty(w.shape(), w.dtype(), be.device());
  transpose_last2(be, pieces({w}, o * c), wl, o, c, k);
  return wl;
}

// The convolution of the parts joined along dim 2 (one part: the input itself).
Tensor run_conv(CudaBackend& be, const char* name, const std::vector<Tensor>& parts, const Tensor& w,
                const Tensor* b, const std::vector<int>& stride, const std::vector<int>& pad) {
  PAB_ASSERT(!parts.empty() && int(parts.size()) <= kMaxParts, "conv: ", parts.size(), " input parts");
  const Tensor& first = parts[0];
  Shape xs = first.shape();
  for (size_t i = 1; i < parts.size(); ++i) {
    const Tensor& p = parts[i];
    cuda::check_same(first, p, "conv");
    bool same = p.rank() == first.rank();
    for (int d = 0; same && d < p.rank(); ++d) same = d == 2 || p.dim(d) == first.dim(d);
    PAB_ASSERT(same, "conv: input parts ", first.desc(), " and ", p.desc(), " do not join along time");
    xs[2] += p.dim(2);
  }
  cuda::check_same(first, w, "conv");
  PAB_ASSERT(xs[1] == w.dim(1), "conv: input ", shape_str(xs), " with weight ", w.desc());
  std::vector<int> xd(xs.begin(), xs.end()), wd(w.shape().begin(), w.shape().end());
  for (size_t i = 0; i < stride.size(); ++i) {
    PAB_ASSERT(stride[i] >= 1 && pad[i] >= 0, "conv stride/padding");
    PAB_ASSERT(xd[i + 2] + 2 * pad[i] >= wd[i + 2], "conv: kernel ", w.desc(), " larger than padded input ",
               shape_str(xs));
  }
  if (b) {
    cuda::check_same(first, *b, "conv bias");
    PAB_ASSERT(b->numel() == w.dim(0), "conv bias ", b->desc(), " for weight ", w.desc());
  }
  const int64_t xnumel = shape_numel(xs);
  if (xnumel == 0 || w.numel() == 0) {  // cuDNN rejects empty tensors: the result is the bias alone
    Shape os = xs;
    os[1] = w.dim(0);
    for (size_t i = 0; i < stride.size(); ++i) os[i + 2] = (xd[i + 2] + 2 * pad[i] - wd[i + 2]) / stride[i] + 1;
    Tensor out = Tensor::zeros(os, first.dtype(), be.device());
    if (b && out.numel() > 0) {
      Shape bs(os.size(), 1);
      bs[1] = w.dim(0);
      out = be.binary(out, b->reshape(bs), Binary::add);
    }
    return out;
  }
  // Half precision runs channels-last: NCHW convolutions leave cuDNN's
  // tensor-core kernels behind layout conversions of its own. The parts are
  // joined by the transpose that makes the channels-last copy.
  const bool channels_last = first.dtype() != DType::f32;
  ConvPlan& p = plan_for(xd, wd, stride, pad, first.dtype(), channels_last);
  const Shape os(p.out_dims.begin(), p.out_dims.end());
  Tensor xin, win = w;
  if (channels_last) {
    CudaBackend::OpScope scope(be, "conv layout");
    const int64_t n = xs[0], c = xs[1], positions = xnumel / std::max<int64_t>(n * c, 1);
    xin = Tensor::empty(xs, first.dtype(), be.device());
    transpose_last2(be, pieces(parts, n * c), xin, n, c, positions);  // [N, C, P] -> [N, P, C]
    win = channels_last_weight(be, w);
  } else {
    xin = parts.size() == 1 ? first : be.concat(parts, 2);
  }
  Tensor y = Tensor::empty(os, first.dtype(), be.device());
  if (y.numel() == 0) return y;
  const double flop = 2.0 * double(y.numel()) * double(w.numel() / w.dim(0));
  choose_algo(be, p, first.dtype(), xin.raw(), win.raw(), y.raw(), flop);
  {
    CudaBackend::OpScope scope(be, name, flop, CudaBackend::Work::conv);
    if (scope.verbose()) scope.describe(cat("x ", shape_str(xs), " w ", shape_str(w.shape())));
    const float one = 1.0f, zero = 0.0f;
    void* ws = p.workspace ? be.workspace(p.workspace) : nullptr;
    PAB_DNN_CHECK(cudnnConvolutionForward(be.dnn(), &one, p.x, xin.raw(), p.w, win.raw(), p.conv, p.algo, ws,
                                          p.workspace, &zero, p.y, y.raw()));
  }
  if (channels_last) {  // [N, P, O] -> [N, O, P], adding the bias on the way
    CudaBackend::OpScope scope(be, "conv layout");
    const int64_t oc = os[1], opos = y.numel() / std::max<int64_t>(os[0] * oc, 1);
    Tensor out = Tensor::empty(os, y.dtype(), be.device());
    transpose_last2(be, pieces({y}, os[0] * opos), out, os[0], opos, oc, b);
    return out;
  }
  if (b) {
    CudaBackend::OpScope scope(be, "conv bias");
    Shape bs(os.size(), 1);
    bs[1] = w.dim(0);
    y = be.binary(y, b->reshape(bs), Binary::add);
  }
  return y;
}

}  // namespace

Tensor CudaBackend::conv2d(const Tensor& x, const Tensor& w, const Tensor* b, std::array<int, 2> stride,
                           std::array<int, 2> padding) {
  PAB_ASSERT(x.rank() == 4 && w.rank() == 4, "conv2d: input ", x.desc(), " weight ", w.desc());
  return run_conv(*this, "conv2d", {x}, w, b, {stride[0], stride[1]}, {padding[0], padding[1]});
}

Tensor CudaBackend::conv3d(const Tensor& x, const Tensor& w, const Tensor* b, std::array<int, 3> stride,
                           std::array<int, 3> padding) {
  PAB_ASSERT(x.rank() == 5 && w.rank() == 5, "conv3d: input ", x.desc(), " weight ", w.desc());
  return run_conv(*this, "conv3d", {x}, w, b, {stride[0], stride[1], stride[2]}, {padding[0], padding[1], padding[2]});
}

Tensor CudaBackend::conv3d_joined(const std::vector<Tensor>& parts, const Tensor& w, const Tensor* b,
                                  std::array<int, 3> stride, std::array<int, 3> padding) {
  for (const Tensor& p : parts) PAB_ASSERT(p.rank() == 5, "conv3d: input part ", p.desc());
  PAB_ASSERT(w.rank() == 5, "conv3d: weight ", w.desc());
  if (parts.size() > size_t(kMaxParts)) return Backend::conv3d_joined(parts, w, b, stride, padding);
  return run_conv(*this, "conv3d", parts, w, b, {stride[0], stride[1], stride[2]},
                  {padding[0], padding[1], padding[2]});
}

}  // namespace pab
