#include "models/random_weights.h"

#include <cmath>
#include <functional>

namespace pab {

namespace {
// splitmix64: a fast, well-mixed hash of (seed, tensor, index).
inline uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
}  // namespace

Tensor RandomWeights::load(const std::string& name, const Shape& expected, DType dtype, Device device) const {
  Tensor t = Tensor::empty(expected);
  float* p = t.f32();
  const int64_t n = t.numel();
  const uint64_t key = mix(seed_ ^ std::hash<std::string>{}(name));
  const bool vector = expected.size() <= 1;
  const bool is_scale = vector && name.size() >= 7 && name.compare(name.size() - 7, 7, ".weight") == 0;
  const int64_t fan_in = vector ? std::max<int64_t>(n, 1) : n / std::max<int64_t>(expected[0], 1);
  const float bound = vector ? 0.02f : float(1.0 / std::sqrt(double(std::max<int64_t>(fan_in, 1))));
#pragma omp parallel for
  for (int64_t i = 0; i < n; ++i) {
    float u = float(mix(key + uint64_t(i)) >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f;  // [-1, 1)
    p[i] = is_scale ? 1.0f + 0.02f * u : bound * u;
  }
  if (dtype != DType::f32) t = t.to(dtype);
  return device == Device::cpu ? t : t.to(device);
}

}  // namespace pab
