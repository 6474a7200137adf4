// The CUDA backend: one stream, a caching allocator, cuBLASLt and cuDNN
// handles. Op implementations are spread over the .cu files of this folder,
// one family per file.
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <map>
#include <mutex>
#include <vector>

#include "backend/backend.h"

namespace pab {

class CudaBackend final : public Backend {
 public:
  CudaBackend();
  ~CudaBackend() override;
  Device device() const override { return Device::cuda; }

  std::shared_ptr<Storage> alloc(size_t bytes) override;
  void memset_zero(void* data, size_t bytes) override;
  Tensor cast(const Tensor& x, DType dtype) override;
  void copy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) override;
  void synchronize() override;
  MemoryStats memory_stats() const override;
  void reset_peak_memory() override;
  std::string device_description() const override;
  void set_profiling(bool on) override { profiling_ = on; }
  OpProfile profile() const override { return profile_; }
  // Times `f` into the profile when profiling is on.
  template <class F>
  void timed(bool attention, double flop, F&& f) {
    if (!profiling_) return f();
    cudaEventRecord(ev_start_, stream_);
    f();
    cudaEventRecord(ev_stop_, stream_);
    cudaEventSynchronize(ev_stop_);
    float ms = 0;
    cudaEventElapsedTime(&ms, ev_start_, ev_stop_);
    (attention ? profile_.attention_flop : profile_.gemm_flop) += flop;
    (attention ? profile_.attention_seconds : profile_.gemm_seconds) += ms * 1e-3;
  }

  Tensor linear(const Tensor& x, const Tensor& w, const Tensor* b) override;
  Tensor linear_act(const Tensor& x, const Tensor& w, const Tensor* b, Unary act) override;
  Tensor matmul(const Tensor& a, const Tensor& b, bool trans_b) override;
  Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionArgs& args) override;

  Tensor layer_norm(const Tensor& x, const Tensor* w, const Tensor* b, float eps) override;
  Tensor norm_modulate(const Tensor& x, const Tensor* w, const Tensor* b, float eps, const Tensor& shift,
                       const Tensor& scale) override;
  Tensor rms_norm(const Tensor& x, const Tensor* w, float eps) override;
  Tensor group_norm(const Tensor& x, int groups, const Tensor* w, const Tensor* b, float eps) override;
  Tensor softmax(const Tensor& x) override;

  Tensor unary(const Tensor& x, Unary op) override;
  Tensor binary(const Tensor& a, const Tensor& b, Binary op) override;
  Tensor affine(const Tensor& x, float mul, float add) override;
  Tensor modulate(const Tensor& x, const Tensor& shift, const Tensor& scale) override;
  Tensor gated_add(const Tensor& x, const Tensor& gate, const Tensor& y) override;

  Tensor permute(const Tensor& x, const std::vector<int>& perm) override;
  Tensor concat(const std::vector<Tensor>& parts, int dim) override;
  Tensor slice(const Tensor& x, int dim, int64_t start, int64_t end) override;
  Tensor pad(const Tensor& x, const std::vector<std::array<int64_t, 2>>& pads, PadMode mode) override;
  Tensor upsample_nearest(const Tensor& x, const std::vector<int>& scales) override;

  Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor* b, std::array<int, 2> stride,
                std::array<int, 2> padding) override;
  Tensor conv3d(const Tensor& x, const Tensor& w, const Tensor* b, std::array<int, 3> stride,
                std::array<int, 3> padding) override;

  Tensor rope(const Tensor& x, const Tensor& cos, const Tensor& sin) override;
  Tensor embedding(const Tensor& ids, const Tensor& table) override;

  // --- internals shared by the .cu files ---
  cudaStream_t stream() const { return stream_; }
  cublasLtHandle_t lt() const { return lt_; }
  cublasHandle_t blas() const { return blas_; }
  cudnnHandle_t dnn() const { return dnn_; }
  // Scratch memory for libraries (grows, never shrinks while in use).
  void* workspace(size_t bytes);
  // Returns a block to the cache (called by Storage deleters).
  void release(void* p, size_t bucket);

 private:
  cudaStream_t stream_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  cudnnHandle_t dnn_ = nullptr;
  std::shared_ptr<Storage> workspace_;
  bool profiling_ = false;
  OpProfile profile_;
  cudaEvent_t ev_start_ = nullptr, ev_stop_ = nullptr;

  mutable std::mutex mu_;
  std::multimap<size_t, void*> free_;  // bucket size -> cached blocks
  size_t in_use_ = 0, peak_ = 0, reserved_ = 0;
};

// The registered CUDA backend (fails if no device is usable).
CudaBackend& cuda_backend();

}  // namespace pab
