// Convolutions through cuDNN (NCHW / NCDHW, cross-correlation, float
// accumulation); algorithms chosen once per shape. The bias is added by a
// broadcasting kernel.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <tuple>

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
  cudnnConvolutionFwdAlgo_t algo{};
  size_t workspace = 0;
  std::vector<int> out_dims;
};

// channels_last: x, w and y are stored N(D)HWC / K(T)RSC (cuDNN's fast
// tensor-core layout); the dims stay in N, C, (D,) H, W order.
ConvPlan& plan_for(CudaBackend& be, const std::vector<int>& xdims, const std::vector<int>& wdims,
                   const std::vector<int>& stride, const std::vector<int>& pad, DType dt, bool channels_last) {
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
  cudnnConvolutionFwdAlgoPerf_t perf[8];
  int found = 0;
  PAB_DNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(be.dnn(), p.x, p.w, p.conv, p.y, 8, &found, perf));
  bool ok = false;
  for (int i = 0; i < found; ++i) {
    if (perf[i].status != CUDNN_STATUS_SUCCESS) continue;
    if (dt == DType::f32 && perf[i].mathType != CUDNN_FMA_MATH && perf[i].mathType != CUDNN_DEFAULT_MATH) continue;
    p.algo = perf[i].algo;
    PAB_DNN_CHECK(cudnnGetConvolutionForwardWorkspaceSize(be.dnn(), p.x, p.w, p.conv, p.y, p.algo, &p.workspace));
    ok = true;
    break;
  }
  if (!ok) fail("cuDNN found no convolution algorithm for input ", xdims.size(), "-d ", dtype_name(dt));
  return cache.emplace(key, p).first->second;
}

// dst[b][p][c] = src[b][c][p]: batched 2D transposes through 32x32 tiles.
// Row tiles and batches beyond the grid's y and z limits (65535) loop: a
// channels-last volume of a whole video has millions of positions.
template <class E>
__global__ void transpose_kernel(const E* src, E* dst, int64_t batch, int64_t rows, int64_t cols) {
  __shared__ E tile[32][33];
  const int64_t c0 = int64_t(blockIdx.x) * 32;
  for (int64_t b = blockIdx.z; b < batch; b += gridDim.z) {
    const E* s = src + b * rows * cols;
    E* d = dst + b * rows * cols;
    for (int64_t r0 = int64_t(blockIdx.y) * 32; r0 < rows; r0 += int64_t(gridDim.y) * 32) {
      for (int i = threadIdx.y; i < 32; i += blockDim.y) {
        const int64_t r = r0 + i, c = c0 + threadIdx.x;
        if (r < rows && c < cols) tile[i][threadIdx.x] = s[r * cols + c];
      }
      __syncthreads();
      for (int i = threadIdx.y; i < 32; i += blockDim.y) {
        const int64_t c = c0 + i, r = r0 + threadIdx.x;
        if (r < rows && c < cols) d[c * rows + r] = tile[threadIdx.x][i];
      }
      __syncthreads();
    }
  }
}

// [B, R, C] -> [B, C, R] for 2- or 4-byte elements.
Tensor transpose_last2(CudaBackend& be, const Tensor& x, int64_t batch, int64_t rows, int64_t cols, const Shape& out) {
  Tensor y = Tensor::empty(out, x.dtype(), Device::cuda);
  if (y.numel() == 0) return y;
  constexpr int64_t kMaxYZ = 65535;
  PAB_ASSERT((cols + 31) / 32 <= INT32_MAX, "transpose: ", cols, " columns");
  dim3 grid(unsigned((cols + 31) / 32), unsigned(std::min((rows + 31) / 32, kMaxYZ)),
            unsigned(std::min(batch, kMaxYZ)));
  if (dtype_size(x.dtype()) == 2) {
    transpose_kernel<uint16_t><<<grid, dim3(32, 8), 0, be.stream()>>>(static_cast<const uint16_t*>(x.raw()),
                                                                    static_cast<uint16_t*>(y.raw()), batch, rows, cols);
  } else {
    transpose_kernel<uint32_t><<<grid, dim3(32, 8), 0, be.stream()>>>(static_cast<const uint32_t*>(x.raw()),
                                                                    static_cast<uint32_t*>(y.raw()), batch, rows, cols);
  }
  PAB_KERNEL_CHECK();
  return y;
}

// A channels-last copy of a weight [O, C, K...] -> [O, K..., C] (made per
// call: weights are small, and a cache keyed by address could outlive them).
Tensor channels_last_weight(CudaBackend& be, const Tensor& w) {
  const int64_t o = w.dim(0), c = w.dim(1), k = w.numel() / std::max<int64_t>(o * c, 1);
  return transpose_last2(be, w, o, c, k, w.shape());
}

Tensor run_conv(CudaBackend& be, const Tensor& x, const Tensor& w, const Tensor* b, const std::vector<int>& stride,
                const std::vector<int>& pad) {
  cuda::check_same(x, w, "conv");
  PAB_ASSERT(x.dim(1) == w.dim(1), "conv: input ", x.desc(), " with weight ", w.desc());
  std::vector<int> xd(x.shape().begin(), x.shape().end()), wd(w.shape().begin(), w.shape().end());
  for (size_t i = 0; i < stride.size(); ++i) {
    PAB_ASSERT(stride[i] >= 1 && pad[i] >= 0, "conv stride/padding");
    PAB_ASSERT(xd[i + 2] + 2 * pad[i] >= wd[i + 2], "conv: kernel ", w.desc(), " larger than padded input ", x.desc());
  }
  if (x.numel() == 0 || w.numel() == 0) {  // cuDNN rejects empty tensors: the result is the bias alone
    Shape os = x.shape();
    os[1] = w.dim(0);
    for (size_t i = 0; i < stride.size(); ++i) os[i + 2] = (xd[i + 2] + 2 * pad[i] - wd[i + 2]) / stride[i] + 1;
    Tensor out = Tensor::zeros(os, x.dtype(), Device::cuda);
    if (b && out.numel() > 0) {
      Shape bs(os.size(), 1);
      bs[1] = w.dim(0);
      out = be.binary(out, b->reshape(bs), Binary::add);
    }
    return out;
  }
  // Half precision runs channels-last: NCHW convolutions leave cuDNN's
  // tensor-core kernels behind layout conversions of its own.
  const bool channels_last = x.dtype() != DType::f32 && !std::getenv("PAB_CONV_NCHW");
  ConvPlan& p = plan_for(be, xd, wd, stride, pad, x.dtype(), channels_last);
  if (channels_last) {
    const int64_t n = x.dim(0), c = x.dim(1), positions = x.numel() / std::max<int64_t>(n * c, 1);
    Tensor xl = transpose_last2(be, x, n, c, positions, x.shape());  // [N, C, P] -> [N, P, C]
    Tensor wl = channels_last_weight(be, w);
    Shape os(p.out_dims.begin(), p.out_dims.end());
    Tensor yl = Tensor::empty(os, x.dtype(), Device::cuda);
    if (yl.numel() == 0) return yl;
    const float one = 1.0f, zero = 0.0f;
    void* ws = p.workspace ? be.workspace(p.workspace) : nullptr;
    PAB_DNN_CHECK(cudnnConvolutionForward(be.dnn(), &one, p.x, xl.raw(), p.w, wl.raw(), p.conv, p.algo, ws,
                                          p.workspace, &zero, p.y, yl.raw()));
    const int64_t oc = os[1], opos = yl.numel() / std::max<int64_t>(os[0] * oc, 1);
    if (b) {
      PAB_ASSERT(b->numel() == oc, "conv bias ", b->desc());
      yl = be.binary(yl.reshape({os[0], opos, oc}), *b, Binary::add);  // bias along the last (channel) axis
    }
    return transpose_last2(be, yl, os[0], opos, oc, os);  // [N, P, O] -> [N, O, P]
  }
  Tensor out = Tensor::empty(Shape(p.out_dims.begin(), p.out_dims.end()), x.dtype(), Device::cuda);
  if (out.numel() == 0) return out;
  const float one = 1.0f, zero = 0.0f;
  void* ws = p.workspace ? be.workspace(p.workspace) : nullptr;
  PAB_DNN_CHECK(cudnnConvolutionForward(be.dnn(), &one, p.x, x.raw(), p.w, w.raw(), p.conv, p.algo, ws, p.workspace,
                                        &zero, p.y, out.raw()));
  if (b) {
    PAB_ASSERT(b->numel() == w.dim(0), "conv bias ", b->desc());
    Shape bs(out.shape().size(), 1);
    bs[1] = w.dim(0);
    out = be.binary(out, b->reshape(bs), Binary::add);
  }
  return out;
}

}  // namespace

Tensor CudaBackend::conv2d(const Tensor& x, const Tensor& w, const Tensor* b, std::array<int, 2> stride,
                           std::array<int, 2> padding) {
  OpScope op_scope(*this, "conv2d");
  PAB_ASSERT(x.rank() == 4 && w.rank() == 4, "conv2d: input ", x.desc(), " weight ", w.desc());
  return run_conv(*this, x, w, b, {stride[0], stride[1]}, {padding[0], padding[1]});
}

Tensor CudaBackend::conv3d(const Tensor& x, const Tensor& w, const Tensor* b, std::array<int, 3> stride,
                           std::array<int, 3> padding) {
  OpScope op_scope(*this, "conv3d");
  PAB_ASSERT(x.rank() == 5 && w.rank() == 5, "conv3d: input ", x.desc(), " weight ", w.desc());
  return run_conv(*this, x, w, b, {stride[0], stride[1], stride[2]}, {padding[0], padding[1], padding[2]});
}

}  // namespace pab
