// Convolutions through cuDNN (NCHW / NCDHW, cross-correlation, float
// accumulation); algorithms chosen once per shape. The bias is added by a
// broadcasting kernel.
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

std::vector<int> contiguous_strides(const std::vector<int>& dims) {
  std::vector<int> s(dims.size(), 1);
  for (int i = int(dims.size()) - 2; i >= 0; --i) s[size_t(i)] = s[size_t(i) + 1] * dims[size_t(i) + 1];
  return s;
}

ConvPlan& plan_for(CudaBackend& be, const std::vector<int>& xdims, const std::vector<int>& wdims,
                   const std::vector<int>& stride, const std::vector<int>& pad, DType dt) {
  static std::map<std::tuple<std::vector<int>, std::vector<int>, std::vector<int>, std::vector<int>, int>, ConvPlan>
      cache;
  auto key = std::make_tuple(xdims, wdims, stride, pad, int(dt));
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  ConvPlan p;
  const int nd = int(xdims.size());
  const cudnnDataType_t t = dnn_type(dt);
  PAB_DNN_CHECK(cudnnCreateTensorDescriptor(&p.x));
  PAB_DNN_CHECK(cudnnSetTensorNdDescriptor(p.x, t, nd, xdims.data(), contiguous_strides(xdims).data()));
  PAB_DNN_CHECK(cudnnCreateFilterDescriptor(&p.w));
  PAB_DNN_CHECK(cudnnSetFilterNdDescriptor(p.w, t, CUDNN_TENSOR_NCHW, nd, wdims.data()));
  PAB_DNN_CHECK(cudnnCreateConvolutionDescriptor(&p.conv));
  std::vector<int> dil(stride.size(), 1);
  PAB_DNN_CHECK(cudnnSetConvolutionNdDescriptor(p.conv, int(stride.size()), pad.data(), stride.data(), dil.data(),
                                                CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
  // f32 stays exact (no TF32); half types use the tensor cores.
  PAB_DNN_CHECK(cudnnSetConvolutionMathType(p.conv, dt == DType::f32 ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH));
  p.out_dims.resize(size_t(nd));
  PAB_DNN_CHECK(cudnnGetConvolutionNdForwardOutputDim(p.conv, p.x, p.w, nd, p.out_dims.data()));
  PAB_DNN_CHECK(cudnnCreateTensorDescriptor(&p.y));
  PAB_DNN_CHECK(cudnnSetTensorNdDescriptor(p.y, t, nd, p.out_dims.data(), contiguous_strides(p.out_dims).data()));
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

Tensor run_conv(CudaBackend& be, const Tensor& x, const Tensor& w, const Tensor* b, const std::vector<int>& stride,
                const std::vector<int>& pad) {
  cuda::check_same(x, w, "conv");
  PAB_ASSERT(x.dim(1) == w.dim(1), "conv: input ", x.desc(), " with weight ", w.desc());
  std::vector<int> xd(x.shape().begin(), x.shape().end()), wd(w.shape().begin(), w.shape().end());
  for (size_t i = 0; i < stride.size(); ++i) {
    PAB_ASSERT(stride[i] >= 1 && pad[i] >= 0, "conv stride/padding");
    PAB_ASSERT(xd[i + 2] + 2 * pad[i] >= wd[i + 2], "conv: kernel ", w.desc(), " larger than padded input ", x.desc());
  }
  ConvPlan& p = plan_for(be, xd, wd, stride, pad, x.dtype());
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
  PAB_ASSERT(x.rank() == 4 && w.rank() == 4, "conv2d: input ", x.desc(), " weight ", w.desc());
  return run_conv(*this, x, w, b, {stride[0], stride[1]}, {padding[0], padding[1]});
}

Tensor CudaBackend::conv3d(const Tensor& x, const Tensor& w, const Tensor* b, std::array<int, 3> stride,
                           std::array<int, 3> padding) {
  PAB_ASSERT(x.rank() == 5 && w.rank() == 5, "conv3d: input ", x.desc(), " weight ", w.desc());
  return run_conv(*this, x, w, b, {stride[0], stride[1], stride[2]}, {padding[0], padding[1], padding[2]});
}

}  // namespace pab
