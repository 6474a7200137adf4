// Shared helpers of the CUDA backend: error checks, dtype dispatch, element
// conversions, launch geometry.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "backend/cuda/cuda_backend.h"
#include "core/error.h"

#define PAB_CUDA_CHECK(expr)                                                                          \
  do {                                                                                                \
    cudaError_t pab_err_ = (expr);                                                                    \
    if (pab_err_ != cudaSuccess)                                                                      \
      ::pab::fail("CUDA error '", cudaGetErrorString(pab_err_), "' in ", #expr, " at ", __FILE__, ":", \
                  __LINE__);                                                                          \
  } while (0)

#define PAB_KERNEL_CHECK() PAB_CUDA_CHECK(cudaGetLastError())

namespace pab::cuda {

// Element conversions, accumulating in float.
template <class T>
__device__ __forceinline__ float to_f(T v);
template <>
__device__ __forceinline__ float to_f<float>(float v) { return v; }
template <>
__device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <>
__device__ __forceinline__ float to_f<__half>(__half v) { return __half2float(v); }

template <class T>
__device__ __forceinline__ T from_f(float v);
template <>
__device__ __forceinline__ float from_f<float>(float v) { return v; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16(v); }
template <>
__device__ __forceinline__ __half from_f<__half>(float v) { return __float2half(v); }

// Blocks for a grid-stride loop over n elements.
inline unsigned blocks_for(int64_t n, int threads = 256) {
  int64_t b = (n + threads - 1) / threads;
  return unsigned(b < 1 ? 1 : (b > 65535 * 32 ? 65535 * 32 : b));
}

// Calls f.template operator()<T>() with T the C++ type of a float dtype.
template <class F>
void dispatch_float(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::f32: f.template operator()<float>(); return;
    case DType::bf16: f.template operator()<__nv_bfloat16>(); return;
    case DType::f16: f.template operator()<__half>(); return;
    default: fail(op, ": the CUDA backend computes in f32, bf16 or f16, got ", dtype_name(t));
  }
}

inline void check_cuda(const Tensor& x, const char* op) {
  if (x.device() != cuda_device()) fail(op, ": expected a CUDA tensor, got ", x.desc());
}

inline void check_same(const Tensor& a, const Tensor& b, const char* op) {
  check_cuda(a, op);
  check_cuda(b, op);
  if (a.dtype() != b.dtype()) fail(op, ": dtype mismatch ", a.desc(), " vs ", b.desc());
}

// Up to 8 dimensions passed by value to kernels.
constexpr int kMaxDims = 8;
struct Dims {
  int rank = 0;
  int64_t size[kMaxDims] = {};
  int64_t stride[kMaxDims] = {};
};

// Vectors of N elements moved as one access (16 bytes for N = kVec<T>).
template <class T, int N>
struct alignas(sizeof(T) * N) Vec {
  T v[N];
};
template <class T>
constexpr int kVec = 16 / sizeof(T);

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

template <class T>
const T* cptr(const Tensor& t) {
  return static_cast<const T*>(t.raw());
}
template <class T>
T* mptr(const Tensor& t) {
  return static_cast<T*>(t.raw());
}

}  // namespace pab::cuda
