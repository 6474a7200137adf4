// Where stochastic steps get their Gaussian noise: an interface, a replay of
// recorded draws (to match a reference run), and an adapter for any generator.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "pipeline/rng.h"

namespace pab {

// A stream of standard-normal tensors; each call is one draw, in order.
class NoiseSource {
 public:
  virtual ~NoiseSource() = default;
  // The next draw, f32 of exactly `shape` (any device).
  virtual Tensor next(const Shape& shape) = 0;
};

// Hands out recorded draws in order (e.g. a fixture's noise_0, noise_1, ...).
// Fails when asked for more draws than recorded or for another shape.
class ReplayNoise : public NoiseSource {
 public:
  ReplayNoise(std::vector<Tensor> draws, std::string where = "replayed noise")
      : draws_(std::move(draws)), where_(std::move(where)) {}
  Tensor next(const Shape& shape) override;
  size_t drawn() const { return next_; }
  size_t size() const { return draws_.size(); }

 private:
  std::vector<Tensor> draws_;
  std::string where_;
  size_t next_ = 0;
};

// Successive torch.randn draws of one seeded CPU generator, as diffusers'
// randn_tensor makes them with generator=torch.Generator("cpu").manual_seed(seed):
// the initial latents, then every noise draw of a stochastic scheduler.
class TorchNoise : public NoiseSource {
 public:
  explicit TorchNoise(uint64_t seed, TorchNormalKernel kernel = TorchNormalKernel::avx2) : generator_(seed, kernel) {}
  Tensor next(const Shape& shape) override;  // f32 on the CPU

 private:
  TorchGenerator generator_;
};

// Adapts a callable (e.g. a seeded torch-compatible generator's randn).
class FunctionNoise : public NoiseSource {
 public:
  explicit FunctionNoise(std::function<Tensor(const Shape&)> fn) : fn_(std::move(fn)) {}
  Tensor next(const Shape& shape) override { return fn_(shape); }

 private:
  std::function<Tensor(const Shape&)> fn_;
};

}  // namespace pab
