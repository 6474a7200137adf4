// The CUDA backend: one stream, a caching allocator, cuBLASLt and cuDNN
// handles. Op implementations are spread over the .cu files of this folder,
// one family per file.
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "backend/backend.h"

namespace pab {

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(Device device);
  ~CudaBackend() override;
  std::vector<DType> compute_dtypes() const override { return {DType::f32, DType::bf16, DType::f16}; }
  // A kernel for every fusion (shapes a kernel does not take still go
  // through the composite inside the override).
  bool supports(Fusion f) const override { return true; }
  const char* visible_devices_variable() const override { return "CUDA_VISIBLE_DEVICES"; }

  std::shared_ptr<Storage> alloc(size_t bytes) override;
  void memset_zero(void* data, size_t bytes) override;
  Tensor cast(const Tensor& x, DType dtype) override;
  void copy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) override;
  void synchronize() override;
  MemoryStats memory_stats() const override;
  std::optional<uint64_t> memory_available() const override;
  void reset_peak_memory() override;
  std::string device_description() const override;
  int device_count() const override;
  void set_profiling(bool on) override {
    profiling_ = on;
    if (on) profile_ = {};
  }
  OpProfile profile() const override { return profile_; }

  // What an op's arithmetic counts towards in the profile's totals.
  enum class Work { gemm, attention, conv };

  // While profiling, times one op (the outermost of nested ones) by name and
  // adds its arithmetic (GEMMs, attention, convolutions) to the totals.
  class OpScope {
   public:
    OpScope(CudaBackend& be, const char* name, double flop = 0, Work work = Work::gemm)
        : be_(be), name_(name), flop_(flop), work_(work), active_(be.profiling_ && be.op_depth_ == 0) {
      ++be_.op_depth_;
      if (active_) cudaEventRecord(be_.ev_start_, be_.stream_);
    }
    ~OpScope() {
      --be_.op_depth_;
      if (!active_) return;
      cudaEventRecord(be_.ev_stop_, be_.stream_);
      cudaEventSynchronize(be_.ev_stop_);
      float ms = 0;
      cudaEventElapsedTime(&ms, be_.ev_start_, be_.ev_stop_);
      OpProfile& p = be_.profile_;
      OpProfile::Op& op = p.ops[name_];
      op.calls++;
      op.seconds += ms * 1e-3;
      op.max_in_use = std::max(op.max_in_use, be_.in_use_);
      if (flop_ > 0) {
        auto [total, secs] = work_ == Work::gemm        ? std::tie(p.gemm_flop, p.gemm_seconds)
                             : work_ == Work::attention ? std::tie(p.attention_flop, p.attention_seconds)
                                                        : std::tie(p.conv_flop, p.conv_seconds);
        total += flop_;
        secs += ms * 1e-3;
        if (!detail_.empty() && std::getenv("PAB_VERBOSE"))
          std::fprintf(stderr, "%s %s: %.3f ms, %.1f TFLOP/s\n", name_, detail_.c_str(), ms, flop_ / ms * 1e-9);
      }
    }
    // What PAB_VERBOSE prints with the op's time (its shapes), when profiled.
    bool verbose() const { return active_ && std::getenv("PAB_VERBOSE"); }
    void describe(std::string detail) { detail_ = std::move(detail); }

   private:
    CudaBackend& be_;
    const char* name_;
    double flop_;
    Work work_;
    bool active_;
    std::string detail_;
  };

  Tensor linear(const Tensor& x, const Tensor& w, const Tensor* b) override;
  Tensor linear_stacked(const Tensor& x, const Tensor& w, const Tensor* b) override;
  Tensor linear_act(const Tensor& x, const Tensor& w, const Tensor* b, Unary act) override;
  Tensor matmul(const Tensor& a, const Tensor& b, bool trans_b) override;
  Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionArgs& args) override;

  Tensor layer_norm(const Tensor& x, const Tensor* w, const Tensor* b, float eps) override;
  Tensor norm_modulate(const Tensor& x, const Tensor* w, const Tensor* b, float eps, const Tensor& shift,
                       const Tensor& scale) override;
  Tensor rms_norm(const Tensor& x, const Tensor* w, float eps) override;
  Tensor norm_rope(const Tensor& x, const Tensor* w, const Tensor* b, float eps, const Tensor& cos, const Tensor& sin,
                   int64_t start) override;
  Tensor group_norm(const Tensor& x, int groups, const Tensor* w, const Tensor* b, float eps) override;
  Tensor softmax(const Tensor& x) override;

  Tensor unary(const Tensor& x, Unary op) override;
  Tensor binary(const Tensor& a, const Tensor& b, Binary op) override;
  Tensor affine(const Tensor& x, float mul, float add) override;
  Tensor modulate(const Tensor& x, const Tensor& shift, const Tensor& scale) override;
  Tensor gated_add(const Tensor& x, const Tensor& gate, const Tensor& y) override;
  Tensor group_norm_scale_shift(const Tensor& x, int groups, const Tensor* w, const Tensor* b, float eps,
                                const Tensor& scale, const Tensor& shift, bool silu) override;
  std::pair<Tensor, Tensor> add_norm_modulate_split(const Tensor& x, const Tensor& y, int64_t split,
                                                    const Tensor* gate_a, const Tensor* gate_b, const Tensor* w,
                                                    const Tensor* b, float eps, const Tensor& shift_a,
                                                    const Tensor& scale_a, const Tensor& shift_b,
                                                    const Tensor& scale_b) override;
  Tensor norm_modulate_split(const Tensor& x, const Tensor* w, const Tensor* b, float eps, int64_t split,
                             const Tensor& shift_a, const Tensor& scale_a, const Tensor& shift_b,
                             const Tensor& scale_b) override;
  Tensor gated_add_split(const Tensor& x, const Tensor& y, int64_t split, const Tensor& gate_a,
                         const Tensor& gate_b) override;

  Tensor permute(const Tensor& x, const std::vector<int>& perm) override;
  Tensor concat(const std::vector<Tensor>& parts, int dim) override;
  Tensor slice(const Tensor& x, int dim, int64_t start, int64_t end) override;
  Tensor pad(const Tensor& x, const std::vector<std::array<int64_t, 2>>& pads, PadMode mode) override;
  Tensor upsample_nearest(const Tensor& x, const std::vector<int>& scales) override;

  Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor* b, std::array<int, 2> stride,
                std::array<int, 2> padding) override;
  Tensor conv3d(const Tensor& x, const Tensor& w, const Tensor* b, std::array<int, 3> stride,
                std::array<int, 3> padding) override;
  Tensor conv3d_joined(const std::vector<Tensor>& parts, const Tensor& w, const Tensor* b, std::array<int, 3> stride,
                       std::array<int, 3> padding) override;

  Tensor rope(const Tensor& x, const Tensor& cos, const Tensor& sin, int64_t start) override;
  Tensor embedding(const Tensor& ids, const Tensor& table) override;

  // --- internals shared by the .cu files ---
  cudaStream_t stream() const { return stream_; }
  // Milliseconds the work `run` queues takes on the stream (the autotuners of
  // GEMM, attention and convolution algorithms; their own events, so a
  // profiled op around them keeps its timing).
  template <class F>
  float time_ms(F&& run) {
    cudaEventRecord(tune_start_, stream_);
    run();
    cudaEventRecord(tune_stop_, stream_);
    cudaEventSynchronize(tune_stop_);
    float ms = 0;
    cudaEventElapsedTime(&ms, tune_start_, tune_stop_);
    return ms;
  }
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
  int op_depth_ = 0;
  OpProfile profile_;
  cudaEvent_t ev_start_ = nullptr, ev_stop_ = nullptr, tune_start_ = nullptr, tune_stop_ = nullptr;

  mutable std::mutex mu_;
  std::multimap<size_t, void*> free_;  // bucket size -> cached blocks
  size_t in_use_ = 0, peak_ = 0, reserved_ = 0;
};

// The device the CUDA backend registered as ("cuda").
Device cuda_device();
// The registered CUDA backend (fails if no device is usable).
CudaBackend& cuda_backend();

}  // namespace pab
