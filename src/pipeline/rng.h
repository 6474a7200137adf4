// Seeded Gaussian noise bit-identical to PyTorch's CPU generator:
// torch.randn(shape, generator=torch.Generator('cpu').manual_seed(seed), dtype=torch.float32),
// including the generator state carried across successive draws.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <vector>

namespace pab {

// PyTorch's CPU normal kernel for float32 tensors of 16 or more elements exists
// in two variants whose results differ in the last bits: the AVX2 one (x86 CPUs
// whose best ATen capability is AVX2, which is what the fixtures were made
// with) and the scalar one (AVX-512 and non-x86 CPUs, or ATEN_CPU_CAPABILITY=default).
// Tensors of fewer than 16 elements use one path everywhere.
enum class TorchNormalKernel : uint8_t { avx2, scalar };

// torch.Generator('cpu').manual_seed(seed): an mt19937 engine plus the cached
// second Box-Muller value of the double-precision normal sampler.
class TorchGenerator {
 public:
  explicit TorchGenerator(uint64_t seed, TorchNormalKernel kernel = TorchNormalKernel::avx2);

  // torch.randn(shape, generator=this, dtype=torch.float32), row-major;
  // successive calls match successive torch.randn calls on one generator.
  std::vector<float> randn(const std::vector<int64_t>& shape);

  uint32_t random() { return engine_(); }  // CPUGeneratorImpl::random
  uint64_t random64();                     // CPUGeneratorImpl::random64

 private:
  float uniform_f32();   // at::uniform_real_distribution<float>(0, 1)
  double uniform_f64();  // at::uniform_real_distribution<double>(0, 1)
  double normal_f64();   // at::normal_distribution<double>(0, 1)
  void normal_fill_16(float* data) const;

  std::mt19937 engine_;  // at::mt19937 is the standard mt19937 seeded with the low 32 bits
  std::optional<double> next_normal_;
  TorchNormalKernel kernel_;
};

// torch.randn(shape, generator=torch.Generator('cpu').manual_seed(seed), dtype=torch.float32)
std::vector<float> torch_randn(const std::vector<int64_t>& shape, uint64_t seed,
                               TorchNormalKernel kernel = TorchNormalKernel::avx2);

}  // namespace pab
