// The CPU reference backend: fp32, OpenMP threads, OpenBLAS for GEMM.
#pragma once

#include "backend/backend.h"

namespace pab {

// Its memory is the host's (core/device.h), its fusions the composites.
class CpuBackend final : public Backend {
 public:
  CpuBackend() : Backend(Device::cpu) {}
  std::string device_description() const override;

  std::shared_ptr<Storage> alloc(size_t bytes) override;
  MemoryStats memory_stats() const override;
  void reset_peak_memory() override;
  std::optional<uint64_t> memory_available() const override;
  void memset_zero(void* data, size_t bytes) override;
  Tensor cast(const Tensor& x, DType dtype) override;
  void copy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) override;

  Tensor linear(const Tensor& x, const Tensor& w, const Tensor* b) override;
  Tensor matmul(const Tensor& a, const Tensor& b, bool trans_b) override;
  Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionArgs& args) override;

  Tensor layer_norm(const Tensor& x, const Tensor* w, const Tensor* b, float eps) override;
  Tensor rms_norm(const Tensor& x, const Tensor* w, float eps) override;
  Tensor group_norm(const Tensor& x, int groups, const Tensor* w, const Tensor* b, float eps) override;
  Tensor softmax(const Tensor& x) override;

  Tensor unary(const Tensor& x, Unary op) override;
  Tensor binary(const Tensor& a, const Tensor& b, Binary op) override;
  Tensor affine(const Tensor& x, float mul, float add) override;

  Tensor permute(const Tensor& x, const std::vector<int>& perm) override;
  Tensor concat(const std::vector<Tensor>& parts, int dim) override;
  Tensor slice(const Tensor& x, int dim, int64_t start, int64_t end) override;
  Tensor pad(const Tensor& x, const std::vector<std::array<int64_t, 2>>& pads, PadMode mode) override;
  Tensor upsample_nearest(const Tensor& x, const std::vector<int>& scales) override;

  Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor* b, std::array<int, 2> stride,
                std::array<int, 2> padding) override;
  Tensor conv3d(const Tensor& x, const Tensor& w, const Tensor* b, std::array<int, 3> stride,
                std::array<int, 3> padding) override;

  Tensor rope(const Tensor& x, const Tensor& cos, const Tensor& sin, int64_t start) override;
  Tensor embedding(const Tensor& ids, const Tensor& table) override;
};

}  // namespace pab
