// Elementwise ops: activations, broadcasting arithmetic, affine, casts, and
// the fused adaptive modulation and gated residuals of DiT blocks. The hot
// kernels move 16 bytes per access and do one index division per vector.
#include "backend/cuda/common.cuh"

namespace pab {
namespace cuda {
namespace {

template <Unary op>
__device__ __forceinline__ float apply_unary(float v) {
  // gelu forms without cancellation for negative inputs (as the CPU backend)
  if constexpr (op == Unary::silu) return v / (1.0f + expf(-v));
  if constexpr (op == Unary::gelu_tanh) return v / (1.0f + expf(-2.0f * 0.7978845608028654f * (v + 0.044715f * v * v * v)));
  if constexpr (op == Unary::gelu_erf) return 0.5f * v * erfcf(-v * 0.7071067811865476f);
  if constexpr (op == Unary::relu) return fmaxf(v, 0.0f);
  if constexpr (op == Unary::tanh) return tanhf(v);
  if constexpr (op == Unary::sigmoid) return 1.0f / (1.0f + expf(-v));
  if constexpr (op == Unary::exp) return expf(v);
  if constexpr (op == Unary::square) return v * v;
  return v;
}

// out[i] = f(i, inputs...) over n elements, V per thread when the caller says
// the arrays are 16-byte aligned and n % V == 0.
template <class T, int V, class F>
__global__ void map_kernel(T* out, int64_t n, F f) {
  const int64_t nv = n / V;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < nv; i += int64_t(gridDim.x) * blockDim.x) {
    Vec<T, V> o;
#pragma unroll
    for (int k = 0; k < V; ++k) o.v[k] = from_f<T>(f(i * V + k));
    reinterpret_cast<Vec<T, V>*>(out)[i] = o;
  }
}

__device__ __forceinline__ float apply_binary(Binary op, float x, float y) {
  switch (op) {
    case Binary::add: return x + y;
    case Binary::sub: return x - y;
    case Binary::mul: return x * y;
    default: return x / y;
  }
}

template <class T, Unary kOp>
struct UnaryF {
  const T* x;
  __device__ float operator()(int64_t i) const { return apply_unary<kOp>(to_f<T>(x[i])); }
};

template <class T>
struct SameShapeF {
  const T *a, *b;
  Binary op;
  __device__ float operator()(int64_t i) const { return apply_binary(op, to_f<T>(a[i]), to_f<T>(b[i])); }
};

template <class T>
struct BroadcastF {
  const T *a, *b;
  Binary op;
  Dims d, da, db;
  __device__ float operator()(int64_t i) const {
    int64_t rem = i, oa = 0, ob = 0;
    for (int k = d.rank - 1; k >= 0; --k) {
      const int64_t idx = rem % d.size[k];
      rem /= d.size[k];
      oa += idx * da.stride[k];
      ob += idx * db.stride[k];
    }
    return apply_binary(op, to_f<T>(a[oa]), to_f<T>(b[ob]));
  }
};

// b repeats along the leading dimensions of a: out[i] = a[i] op b[i % nb]
// (or b op a when swapped).
template <class T>
struct SuffixF {
  const T *a, *b;
  int64_t nb;
  Binary op;
  bool swapped;
  __device__ float operator()(int64_t i) const {
    const float x = to_f<T>(a[i]), y = to_f<T>(b[i % nb]);
    return swapped ? apply_binary(op, y, x) : apply_binary(op, x, y);
  }
};

template <class T>
struct AffineF {
  const T* x;
  float mul, add;
  __device__ float operator()(int64_t i) const { return to_f<T>(x[i]) * mul + add; }
};

template <class T, class F>
void launch_map(T* out, int64_t n, bool vector_ok, cudaStream_t s, F f) {
  constexpr int V = kVec<T>;
  if (vector_ok && n % V == 0 && aligned16(out)) {
    map_kernel<T, V><<<blocks_for(n / V), 256, 0, s>>>(out, n, f);
  } else {
    map_kernel<T, 1><<<blocks_for(n), 256, 0, s>>>(out, n, f);
  }
}

// Reads V consecutive elements as one access when possible.
template <class T, int V>
__device__ __forceinline__ void load(const T* p, int64_t i, float (&dst)[V]) {
  Vec<T, V> v = *reinterpret_cast<const Vec<T, V>*>(p + i);
#pragma unroll
  for (int k = 0; k < V; ++k) dst[k] = to_f<T>(v.v[k]);
}

template <class T, int V>
__device__ __forceinline__ void store(T* p, int64_t i, const float (&src)[V]) {
  Vec<T, V> v;
#pragma unroll
  for (int k = 0; k < V; ++k) v.v[k] = from_f<T>(src[k]);
  *reinterpret_cast<Vec<T, V>*>(p + i) = v;
}

// Token-wise modulation and gating of x [B, S, C] by per-batch vectors [B, C];
// tokens before `split` use the first set (a), the others the second (b).
//   kModulate: out = x * (1 + scale) + shift      (p0 = shift, p1 = scale)
//   kGate:     out = x + gate * y                 (p0 = gate)
enum class Mod { kModulate, kGate };

template <class T, int V, Mod kMode>
__global__ void token_mod_kernel(const T* x, const T* y, const T* a0, const T* a1, const T* b0, const T* b1, T* out,
                                 int64_t s, int64_t c, int64_t split, int64_t n) {
  const int64_t nv = n / V;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < nv; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t e = i * V, row = e / c, ch = e - row * c, batch = row / s, tok = row - batch * s;
    const bool first = tok < split;
    const int64_t pi = batch * c + ch;
    float xv[V], p0[V], r[V];
    load<T, V>(x, e, xv);
    load<T, V>(first ? a0 : b0, pi, p0);
    if constexpr (kMode == Mod::kModulate) {
      float p1[V];
      load<T, V>(first ? a1 : b1, pi, p1);
#pragma unroll
      for (int k = 0; k < V; ++k) r[k] = xv[k] * (1.0f + p1[k]) + p0[k];
    } else {
      float yv[V];
      load<T, V>(y, e, yv);
#pragma unroll
      for (int k = 0; k < V; ++k) r[k] = xv[k] + p0[k] * yv[k];
    }
    store<T, V>(out, e, r);
  }
}

template <class T, Mod kMode>
void launch_token_mod(const Tensor& x, const Tensor* y, const Tensor& a0, const Tensor* a1, const Tensor& b0,
                      const Tensor* b1, Tensor& out, int64_t split, cudaStream_t st) {
  const int64_t s = x.dim(1), c = x.dim(2), n = x.numel();
  const T* yp = y ? cptr<T>(*y) : nullptr;
  const T* a1p = a1 ? cptr<T>(*a1) : nullptr;
  const T* b1p = b1 ? cptr<T>(*b1) : nullptr;
  constexpr int V = kVec<T>;
  bool vec = c % V == 0 && aligned16(x.raw()) && aligned16(out.raw()) && aligned16(a0.raw()) && aligned16(b0.raw()) &&
             (!y || aligned16(y->raw())) && (!a1 || aligned16(a1->raw())) && (!b1 || aligned16(b1->raw()));
  if (vec) {
    token_mod_kernel<T, V, kMode><<<blocks_for(n / V), 256, 0, st>>>(cptr<T>(x), yp, cptr<T>(a0), a1p, cptr<T>(b0),
                                                                     b1p, mptr<T>(out), s, c, split, n);
  } else {
    token_mod_kernel<T, 1, kMode><<<blocks_for(n), 256, 0, st>>>(cptr<T>(x), yp, cptr<T>(a0), a1p, cptr<T>(b0), b1p,
                                                                 mptr<T>(out), s, c, split, n);
  }
  PAB_KERNEL_CHECK();
}

}  // namespace
}  // namespace cuda

using namespace cuda;

Tensor CudaBackend::unary(const Tensor& x, Unary op) {
  OpScope op_scope(*this, "unary");
  check_cuda(x, "unary");
  Tensor out = Tensor::empty(x.shape(), x.dtype(), device());
  const int64_t n = x.numel();
  if (n == 0) return out;
  dispatch_float(x.dtype(), "unary", [&]<class T>() {
    const T* xp = cptr<T>(x);
    T* op_ = mptr<T>(out);
    const bool vec = aligned16(xp);
    switch (op) {
      case Unary::silu: launch_map<T>(op_, n, vec, stream(), UnaryF<T, Unary::silu>{xp}); break;
      case Unary::gelu_tanh: launch_map<T>(op_, n, vec, stream(), UnaryF<T, Unary::gelu_tanh>{xp}); break;
      case Unary::gelu_erf: launch_map<T>(op_, n, vec, stream(), UnaryF<T, Unary::gelu_erf>{xp}); break;
      case Unary::relu: launch_map<T>(op_, n, vec, stream(), UnaryF<T, Unary::relu>{xp}); break;
      case Unary::tanh: launch_map<T>(op_, n, vec, stream(), UnaryF<T, Unary::tanh>{xp}); break;
      case Unary::sigmoid: launch_map<T>(op_, n, vec, stream(), UnaryF<T, Unary::sigmoid>{xp}); break;
      case Unary::exp: launch_map<T>(op_, n, vec, stream(), UnaryF<T, Unary::exp>{xp}); break;
      case Unary::square: launch_map<T>(op_, n, vec, stream(), UnaryF<T, Unary::square>{xp}); break;
    }
  });
  PAB_KERNEL_CHECK();
  return out;
}

Tensor CudaBackend::binary(const Tensor& a, const Tensor& b, Binary op) {
  OpScope op_scope(*this, "binary");
  check_same(a, b, "binary");
  const int r = std::max(a.rank(), b.rank());
  PAB_ASSERT(r <= kMaxDims, "binary: rank ", r, " above ", kMaxDims);
  Shape os(static_cast<size_t>(r), 1);
  Dims d, da, db;
  d.rank = r;
  for (int i = 0; i < r; ++i) {
    int64_t x = i - (r - a.rank()) >= 0 ? a.shape()[size_t(i - (r - a.rank()))] : 1;
    int64_t y = i - (r - b.rank()) >= 0 ? b.shape()[size_t(i - (r - b.rank()))] : 1;
    PAB_ASSERT(x == y || x == 1 || y == 1, "cannot broadcast ", a.desc(), " with ", b.desc());
    os[size_t(i)] = d.size[i] = x == 1 ? y : x;
  }
  auto aligned = [&](const Tensor& t, Dims& s) {
    const int off = r - t.rank();
    int64_t st = 1;
    for (int i = t.rank() - 1; i >= 0; --i) {
      s.stride[i + off] = t.shape()[size_t(i)] == 1 ? 0 : st;
      st *= t.shape()[size_t(i)];
    }
  };
  aligned(a, da);
  aligned(b, db);
  Tensor out = Tensor::empty(os, a.dtype(), device());
  const int64_t n = out.numel();
  if (n == 0) return out;
  const bool same = a.shape() == b.shape();
  // Is `small` the trailing dims of `big` (after leading ones)?
  auto suffix_of = [&os](const Tensor& small, const Tensor& big) {
    int k = small.rank();
    while (k > 0 && small.shape()[size_t(small.rank() - k)] == 1) --k;
    if (k > big.rank()) return false;
    for (int i = 1; i <= k; ++i)
      if (small.shape()[size_t(small.rank() - i)] != big.shape()[size_t(big.rank() - i)]) return false;
    return big.shape() == os;
  };
  const bool b_suffix = !same && suffix_of(b, a), a_suffix = !same && !b_suffix && suffix_of(a, b);
  dispatch_float(a.dtype(), "binary", [&]<class T>() {
    const T* ap = cptr<T>(a);
    const T* bp = cptr<T>(b);
    if (same) {
      launch_map<T>(mptr<T>(out), n, aligned16(ap) && aligned16(bp), stream(), SameShapeF<T>{ap, bp, op});
    } else if (b_suffix || a_suffix) {
      const T* big = b_suffix ? ap : bp;
      const T* small = b_suffix ? bp : ap;
      const int64_t nb = b_suffix ? b.numel() : a.numel();
      launch_map<T>(mptr<T>(out), n, aligned16(big) && nb % kVec<T> == 0, stream(),
                    SuffixF<T>{big, small, nb, op, a_suffix});
    } else {
      launch_map<T>(mptr<T>(out), n, false, stream(), BroadcastF<T>{ap, bp, op, d, da, db});
    }
  });
  PAB_KERNEL_CHECK();
  return out;
}

Tensor CudaBackend::affine(const Tensor& x, float mul, float add) {
  OpScope op_scope(*this, "affine");
  check_cuda(x, "affine");
  Tensor out = Tensor::empty(x.shape(), x.dtype(), device());
  if (x.numel() == 0) return out;
  dispatch_float(x.dtype(), "affine", [&]<class T>() {
    const T* xp = cptr<T>(x);
    launch_map<T>(mptr<T>(out), x.numel(), aligned16(xp), stream(), AffineF<T>{xp, mul, add});
  });
  PAB_KERNEL_CHECK();
  return out;
}

namespace {
void check_mod(const Tensor& x, const Tensor& p, const char* op) {
  check_same(x, p, op);
  PAB_ASSERT(x.rank() == 3 && p.numel() == x.dim(0) * x.dim(2), op, ": x ", x.desc(), " with ", p.desc());
}
}  // namespace

Tensor CudaBackend::modulate(const Tensor& x, const Tensor& shift, const Tensor& scale) {
  OpScope op_scope(*this, "modulate");
  check_mod(x, shift, "modulate");
  check_mod(x, scale, "modulate");
  Tensor out = Tensor::empty(x.shape(), x.dtype(), device());
  if (x.numel() == 0) return out;
  dispatch_float(x.dtype(), "modulate", [&]<class T>() {
    launch_token_mod<T, Mod::kModulate>(x, nullptr, shift, &scale, shift, &scale, out, 0, stream());
  });
  return out;
}

Tensor CudaBackend::gated_add(const Tensor& x, const Tensor& gate, const Tensor& y) {
  OpScope op_scope(*this, "gated_add");
  check_mod(x, gate, "gated_add");
  check_same(x, y, "gated_add");
  PAB_ASSERT(x.shape() == y.shape(), "gated_add: x ", x.desc(), " y ", y.desc());
  Tensor out = Tensor::empty(x.shape(), x.dtype(), device());
  if (x.numel() == 0) return out;
  dispatch_float(x.dtype(), "gated_add", [&]<class T>() {
    launch_token_mod<T, Mod::kGate>(x, &y, gate, nullptr, gate, nullptr, out, 0, stream());
  });
  return out;
}

Tensor CudaBackend::gated_add_split(const Tensor& x, const Tensor& y, int64_t split, const Tensor& gate_a,
                                    const Tensor& gate_b) {
  OpScope op_scope(*this, "gated_add_split");
  check_mod(x, gate_a, "gated_add_split");
  check_mod(x, gate_b, "gated_add_split");
  check_same(x, y, "gated_add_split");
  PAB_ASSERT(x.shape() == y.shape(), "gated_add_split: x ", x.desc(), " y ", y.desc());
  Tensor out = Tensor::empty(x.shape(), x.dtype(), device());
  if (x.numel() == 0) return out;
  dispatch_float(x.dtype(), "gated_add_split", [&]<class T>() {
    launch_token_mod<T, Mod::kGate>(x, &y, gate_a, nullptr, gate_b, nullptr, out, split, stream());
  });
  return out;
}

}  // namespace pab
