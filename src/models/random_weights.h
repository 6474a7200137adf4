// Generated weights for benchmarking real architectures without their
// checkpoints: every tensor a model asks for exists, with values drawn like
// PyTorch's default initialisation (uniform within +-1/sqrt(fan_in) for
// matrices and kernels, ones for norm scales, small biases).
#pragma once

#include <string>

#include "io/safetensors.h"

namespace pab {

class RandomWeights final : public WeightSource {
 public:
  explicit RandomWeights(uint64_t seed, std::string label = "generated weights")
      : seed_(seed), where_(std::move(label)) {}
  bool has(const std::string&) const override { return true; }
  Tensor load(const std::string& name, const Shape& expected, DType dtype, Device device) const override;
  const std::string& where() const override { return where_; }

 private:
  uint64_t seed_;
  std::string where_;
};

}  // namespace pab
