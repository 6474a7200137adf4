// PyTorch-compatible seeded Gaussian noise (see rng.h). Bit-exactness needs
// every float operation rounded where PyTorch's build rounds it. The AVX2
// kernel's log and sincos are the Cephes polynomials of ATen's avx_mathfun.h,
// evaluated here lane by lane with the same constants and order; PyTorch's GCC
// build contracts those intrinsics' multiply-then-add pairs into FMAs, so the
// same pairs are written as std::fma below (verified bit-exact on 8M samples per
// kernel). Everything else must stay unfused: this file is compiled with
// -ffp-contract=off (CMakeLists.txt).
#include "pipeline/rng.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <numbers>

#include "core/error.h"

namespace pab {

namespace {

float bits_to_float(uint32_t u) {
  return std::bit_cast<float>(u);
}
uint32_t float_to_bits(float f) {
  return std::bit_cast<uint32_t>(f);
}
// An AVX compare yields all-ones or all-zeros lanes; `x & mask` keeps x or gives +0.
float keep_if(bool keep, float x) {
  return keep ? x : 0.0f;
}

// The constants are double literals narrowed to float, as avx_mathfun.h stores them.
constexpr float kSqrtHalf = float(0.707106781186547524);
constexpr float kLogP[9] = {float(7.0376836292E-2),  float(-1.1514610310E-1), float(1.1676998740E-1),
                            float(-1.2420140846E-1), float(+1.4249322787E-1), float(-1.6668057665E-1),
                            float(+2.0000714765E-1), float(-2.4999993993E-1), float(+3.3333331174E-1)};
constexpr float kLogQ1 = float(-2.12194440e-4);
constexpr float kLogQ2 = float(0.693359375);
constexpr float kMinusDp1 = float(-0.78515625);
constexpr float kMinusDp2 = float(-2.4187564849853515625e-4);
constexpr float kMinusDp3 = float(-3.77489497744594108e-8);
constexpr float kSinP[3] = {float(-1.9515295891E-4), float(8.3321608736E-3), float(-1.6666654611E-1)};
constexpr float kCosP[3] = {float(2.443315711809948E-005), float(-1.388731625493765E-003),
                            float(4.166664568298827E-002)};
constexpr float kFourOverPi = float(1.27323954473516);
constexpr float kTwoPiF = float(2.0f * std::numbers::pi);

// log256_ps for one lane, for x in (0, 1] (no NaN handling needed there).
float avx_log(float x) {
  x = std::max(x, bits_to_float(0x00800000u));
  int32_t exponent = int32_t(float_to_bits(x) >> 23);
  x = bits_to_float((float_to_bits(x) & ~0x7f800000u) | float_to_bits(0.5f));
  float e = float(exponent - 0x7f);
  e = e + 1.0f;
  const bool below = x < kSqrtHalf;
  float tmp = keep_if(below, x);
  x = x - 1.0f;
  e = e - keep_if(below, 1.0f);
  x = x + tmp;
  const float z = x * x;
  float y = kLogP[0];
  for (int i = 1; i < 9; ++i) y = std::fma(y, x, kLogP[i]);
  y = y * x;
  y = std::fma(y, z, e * kLogQ1);
  y = std::fma(-z, 0.5f, y);
  x = x + y;
  x = std::fma(e, kLogQ2, x);
  return x;
}

// sincos256_ps for one lane.
void avx_sincos(float x, float* s, float* c) {
  uint32_t sign_sin = float_to_bits(x) & 0x80000000u;
  x = bits_to_float(float_to_bits(x) & 0x7fffffffu);
  float y = x * kFourOverPi;
  int32_t j = int32_t(y);  // cvttps: truncation
  j = (j + 1) & ~1;
  y = float(j);
  const uint32_t swap_sign_sin = uint32_t(j & 4) << 29;
  const bool first_poly_for_cos = (j & 2) == 0;
  x = std::fma(y, kMinusDp1, x);
  x = std::fma(y, kMinusDp2, x);
  x = std::fma(y, kMinusDp3, x);
  const uint32_t sign_cos = uint32_t(~(j - 2) & 4) << 29;
  sign_sin ^= swap_sign_sin;

  const float z = x * x;
  float yc = std::fma(kCosP[0], z, kCosP[1]);
  yc = std::fma(yc, z, kCosP[2]);
  yc = yc * z;
  yc = std::fma(yc, z, -(z * 0.5f));
  yc = yc + 1.0f;

  float ys = std::fma(kSinP[0], z, kSinP[1]);
  ys = std::fma(ys, z, kSinP[2]);
  ys = ys * z;
  ys = std::fma(ys, x, x);

  const float ysin2 = keep_if(first_poly_for_cos, ys);
  const float ysin1 = keep_if(!first_poly_for_cos, yc);
  ys = ys - ysin2;
  yc = yc - ysin1;
  *s = bits_to_float(float_to_bits(ysin1 + ysin2) ^ sign_sin);
  *c = bits_to_float(float_to_bits(yc + ys) ^ sign_cos);
}

}  // namespace

TorchGenerator::TorchGenerator(uint64_t seed, TorchNormalKernel kernel)
    : engine_(uint32_t(seed & 0xffffffffu)), kernel_(kernel) {}

uint64_t TorchGenerator::random64() {
  const uint64_t hi = engine_();
  const uint64_t lo = engine_();
  return (hi << 32) | lo;
}

float TorchGenerator::uniform_f32() {
  // The low 24 bits scaled to [0, 1).
  return float(random() & ((1u << 24) - 1)) * (1.0f / float(1u << 24));
}

double TorchGenerator::uniform_f64() {
  return double(random64() & ((uint64_t(1) << 53) - 1)) * (1.0 / double(uint64_t(1) << 53));
}

double TorchGenerator::normal_f64() {
  const double mean = 0.0, stdv = 1.0;
  if (next_normal_) {
    const double cached = *next_normal_;
    next_normal_.reset();
    return cached * stdv + mean;
  }
  const double u1 = uniform_f64();
  const double u2 = uniform_f64();
  const double r = std::sqrt(-2.0 * std::log1p(-u2));
  const double theta = 2.0 * std::numbers::pi * u1;
  next_normal_ = r * std::sin(theta);
  return r * std::cos(theta) * stdv + mean;
}

// Box-Muller on 16 uniforms in place: data[j] and data[j + 8] become the pair
// made from u1 = 1 - data[j] and u2 = data[j + 8].
void TorchGenerator::normal_fill_16(float* data) const {
  const float mean = 0.0f, stdv = 1.0f;
  for (int j = 0; j < 8; ++j) {
    const float u1 = 1.0f - data[j];
    const float u2 = data[j + 8];
    if (kernel_ == TorchNormalKernel::avx2) {
      const float radius = std::sqrt(-2.0f * avx_log(u1));
      const float theta = kTwoPiF * u2;
      float sin_theta, cos_theta;
      avx_sincos(theta, &sin_theta, &cos_theta);
      data[j] = std::fma(radius * cos_theta, stdv, mean);
      data[j + 8] = std::fma(radius * sin_theta, stdv, mean);
    } else {
      const float radius = std::sqrt(-2.0f * std::log(u1));
      const float theta = float(double(2.0f * std::numbers::pi) * double(u2));
      data[j] = std::fma(radius * std::cos(theta), stdv, mean);
      data[j + 8] = std::fma(radius * std::sin(theta), stdv, mean);
    }
  }
}

std::vector<float> TorchGenerator::randn(const std::vector<int64_t>& shape) {
  int64_t size = 1;
  for (int64_t d : shape) {
    if (d < 0) fail("randn: negative dimension ", d, " in the requested shape");
    size *= d;
  }
  std::vector<float> out(size_t(size), 0.0f);
  if (size >= 16) {
    // All uniforms first, then Box-Muller in blocks of 16; a ragged tail is
    // redrawn as the last 16 elements, overwriting the overlap.
    for (auto& v : out) v = uniform_f32();
    for (int64_t i = 0; i + 16 <= size; i += 16) normal_fill_16(out.data() + i);
    if (size % 16 != 0) {
      float* tail = out.data() + size - 16;
      for (int i = 0; i < 16; ++i) tail[i] = uniform_f32();
      normal_fill_16(tail);
    }
  } else {
    for (auto& v : out) v = float(normal_f64());
  }
  return out;
}

std::vector<float> torch_randn(const std::vector<int64_t>& shape, uint64_t seed, TorchNormalKernel kernel) {
  return TorchGenerator(seed, kernel).randn(shape);
}

}  // namespace pab
