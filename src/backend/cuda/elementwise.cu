// Elementwise ops: activations, broadcasting arithmetic, affine, and the
// fused adaptive modulation and gated residual of DiT blocks.
#include "backend/cuda/common.cuh"

namespace pab {
namespace cuda {
namespace {

template <Unary op>
__device__ __forceinline__ float apply_unary(float v) {
  if constexpr (op == Unary::silu) return v / (1.0f + __expf(-v));
  if constexpr (op == Unary::gelu_tanh) return 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
  if constexpr (op == Unary::gelu_erf) return 0.5f * v * (1.0f + erff(v * 0.7071067811865476f));
  if constexpr (op == Unary::relu) return fmaxf(v, 0.0f);
  if constexpr (op == Unary::tanh) return tanhf(v);
  if constexpr (op == Unary::sigmoid) return 1.0f / (1.0f + __expf(-v));
  if constexpr (op == Unary::exp) return __expf(v);
  if constexpr (op == Unary::square) return v * v;
  return v;
}

template <class T, Unary op>
__global__ void unary_kernel(const T* x, T* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = from_f<T>(apply_unary<op>(to_f<T>(x[i])));
}

template <class T>
void launch_unary(const T* x, T* out, int64_t n, Unary op, cudaStream_t s) {
  unsigned g = blocks_for(n);
  switch (op) {
    case Unary::silu: unary_kernel<T, Unary::silu><<<g, 256, 0, s>>>(x, out, n); break;
    case Unary::gelu_tanh: unary_kernel<T, Unary::gelu_tanh><<<g, 256, 0, s>>>(x, out, n); break;
    case Unary::gelu_erf: unary_kernel<T, Unary::gelu_erf><<<g, 256, 0, s>>>(x, out, n); break;
    case Unary::relu: unary_kernel<T, Unary::relu><<<g, 256, 0, s>>>(x, out, n); break;
    case Unary::tanh: unary_kernel<T, Unary::tanh><<<g, 256, 0, s>>>(x, out, n); break;
    case Unary::sigmoid: unary_kernel<T, Unary::sigmoid><<<g, 256, 0, s>>>(x, out, n); break;
    case Unary::exp: unary_kernel<T, Unary::exp><<<g, 256, 0, s>>>(x, out, n); break;
    case Unary::square: unary_kernel<T, Unary::square><<<g, 256, 0, s>>>(x, out, n); break;
  }
}

__device__ __forceinline__ float apply_binary(Binary op, float a, float b) {
  switch (op) {
    case Binary::add: return a + b;
    case Binary::sub: return a - b;
    case Binary::mul: return a * b;
    default: return a / b;
  }
}

// out [dims] = a op b, with a and b strides aligned to out's dims (0 = broadcast).
template <class T>
__global__ void binary_kernel(const T* a, const T* b, T* out, Dims d, Dims sb, Binary op, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t rem = i, oa = 0, ob = 0;
    for (int k = d.rank - 1; k >= 0; --k) {
      int64_t idx = rem % d.size[k];
      rem /= d.size[k];
      oa += idx * d.stride[k];
      ob += idx * sb.stride[k];
    }
    out[i] = from_f<T>(apply_binary(op, to_f<T>(a[oa]), to_f<T>(b[ob])));
  }
}

template <class T>
__global__ void same_shape_kernel(const T* a, const T* b, T* out, Binary op, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = from_f<T>(apply_binary(op, to_f<T>(a[i]), to_f<T>(b[i])));
}

template <class T>
__global__ void affine_kernel(const T* x, T* out, float mul, float add, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = from_f<T>(to_f<T>(x[i]) * mul + add);
}

// x [B, S, C]: out = x * (1 + scale[b, c]) + shift[b, c]
template <class T>
__global__ void modulate_kernel(const T* x, const T* shift, const T* scale, T* out, int64_t s, int64_t c, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t ch = i % c, b = i / (s * c);
    float v = to_f<T>(x[i]) * (1.0f + to_f<T>(scale[b * c + ch])) + to_f<T>(shift[b * c + ch]);
    out[i] = from_f<T>(v);
  }
}

// x, y [B, S, C]: out = x + gate[b, c] * y
template <class T>
__global__ void gated_add_kernel(const T* x, const T* gate, const T* y, T* out, int64_t s, int64_t c, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t ch = i % c, b = i / (s * c);
    out[i] = from_f<T>(to_f<T>(x[i]) + to_f<T>(gate[b * c + ch]) * to_f<T>(y[i]));
  }
}

}  // namespace
}  // namespace cuda

using namespace cuda;

Tensor CudaBackend::unary(const Tensor& x, Unary op) {
  check_cuda(x, "unary");
  Tensor out = Tensor::empty(x.shape(), x.dtype(), Device::cuda);
  if (x.numel() == 0) return out;
  dispatch_float(x.dtype(), "unary", [&]<class T>() { launch_unary<T>(cptr<T>(x), mptr<T>(out), x.numel(), op, stream()); });
  PAB_KERNEL_CHECK();
  return out;
}

Tensor CudaBackend::binary(const Tensor& a, const Tensor& b, Binary op) {
  check_same(a, b, "binary");
  int r = std::max(a.rank(), b.rank());
  PAB_ASSERT(r <= kMaxDims, "binary: rank ", r, " above ", kMaxDims);
  Shape os(static_cast<size_t>(r), 1);
  Dims da, db;
  da.rank = db.rank = r;
  auto aligned = [&](const Tensor& t, Dims& d) {
    int off = r - t.rank();
    int64_t st = 1;
    for (int i = t.rank() - 1; i >= 0; --i) {
      d.stride[i + off] = t.shape()[size_t(i)] == 1 ? 0 : st;
      st *= t.shape()[size_t(i)];
    }
  };
  for (int i = 0; i < r; ++i) {
    int64_t x = i - (r - a.rank()) >= 0 ? a.shape()[size_t(i - (r - a.rank()))] : 1;
    int64_t y = i - (r - b.rank()) >= 0 ? b.shape()[size_t(i - (r - b.rank()))] : 1;
    PAB_ASSERT(x == y || x == 1 || y == 1, "cannot broadcast ", a.desc(), " with ", b.desc());
    os[size_t(i)] = x == 1 ? y : x;
    da.size[i] = db.size[i] = os[size_t(i)];
  }
  aligned(a, da);
  aligned(b, db);
  Tensor out = Tensor::empty(os, a.dtype(), Device::cuda);
  int64_t n = out.numel();
  if (n == 0) return out;
  dispatch_float(a.dtype(), "binary", [&]<class T>() {
    if (a.shape() == b.shape()) {
      same_shape_kernel<T><<<blocks_for(n), 256, 0, stream()>>>(cptr<T>(a), cptr<T>(b), mptr<T>(out), op, n);
    } else {
      binary_kernel<T><<<blocks_for(n), 256, 0, stream()>>>(cptr<T>(a), cptr<T>(b), mptr<T>(out), da, db, op, n);
    }
  });
  PAB_KERNEL_CHECK();
  return out;
}

Tensor CudaBackend::affine(const Tensor& x, float mul, float add) {
  check_cuda(x, "affine");
  Tensor out = Tensor::empty(x.shape(), x.dtype(), Device::cuda);
  int64_t n = x.numel();
  if (n == 0) return out;
  dispatch_float(x.dtype(), "affine", [&]<class T>() {
    affine_kernel<T><<<blocks_for(n), 256, 0, stream()>>>(cptr<T>(x), mptr<T>(out), mul, add, n);
  });
  PAB_KERNEL_CHECK();
  return out;
}

Tensor CudaBackend::modulate(const Tensor& x, const Tensor& shift, const Tensor& scale) {
  check_same(x, shift, "modulate");
  check_same(x, scale, "modulate");
  PAB_ASSERT(x.rank() == 3 && shift.numel() == x.dim(0) * x.dim(2) && scale.numel() == shift.numel(),
             "modulate: x ", x.desc(), " shift ", shift.desc(), " scale ", scale.desc());
  Tensor out = Tensor::empty(x.shape(), x.dtype(), Device::cuda);
  int64_t n = x.numel();
  if (n == 0) return out;
  dispatch_float(x.dtype(), "modulate", [&]<class T>() {
    modulate_kernel<T><<<blocks_for(n), 256, 0, stream()>>>(cptr<T>(x), cptr<T>(shift), cptr<T>(scale), mptr<T>(out),
                                                            x.dim(1), x.dim(2), n);
  });
  PAB_KERNEL_CHECK();
  return out;
}

Tensor CudaBackend::gated_add(const Tensor& x, const Tensor& gate, const Tensor& y) {
  check_same(x, gate, "gated_add");
  check_same(x, y, "gated_add");
  PAB_ASSERT(x.rank() == 3 && x.shape() == y.shape() && gate.numel() == x.dim(0) * x.dim(2),
             "gated_add: x ", x.desc(), " gate ", gate.desc(), " y ", y.desc());
  Tensor out = Tensor::empty(x.shape(), x.dtype(), Device::cuda);
  int64_t n = x.numel();
  if (n == 0) return out;
  dispatch_float(x.dtype(), "gated_add", [&]<class T>() {
    gated_add_kernel<T><<<blocks_for(n), 256, 0, stream()>>>(cptr<T>(x), cptr<T>(gate), cptr<T>(y), mptr<T>(out),
                                                             x.dim(1), x.dim(2), n);
  });
  PAB_KERNEL_CHECK();
  return out;
}

}  // namespace pab
