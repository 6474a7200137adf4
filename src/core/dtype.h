// Element types of tensors and their conversions.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace pab {

enum class DType : uint8_t {
  f32, f16, bf16, f64, i64, i32, i16, i8, u8, boolean,
  // Storage-only types (read from checkpoints and converted on load):
  u16, u32, u64,
  f8_e4m3,  // safetensors F8_E4M3 = torch.float8_e4m3fn: bias 7, no infinities, NaN = S.1111.111
  f8_e5m2,  // safetensors F8_E5M2 = torch.float8_e5m2: the top byte of an IEEE half
  f8_e8m0,  // safetensors F8_E8M0 = torch.float8_e8m0fnu: a power of two 2^(e-127), 0xff = NaN
};

size_t dtype_size(DType t);
const char* dtype_name(DType t);  // safetensors spelling: "F32", "BF16", ...
// Parses a safetensors dtype string; returns false for unknown ones.
bool parse_dtype(std::string_view s, DType* out);
bool is_float(DType t);

inline float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round to nearest even, NaN kept quiet.
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
float f8_e4m3_to_f32(uint8_t b);
float f8_e5m2_to_f32(uint8_t b);
float f8_e8m0_to_f32(uint8_t b);

// Converts n elements of type `from` at src to f32 at dst (every dtype).
void convert_to_f32(const void* src, DType from, float* dst, size_t n);
// Converts n f32 values to type `to` (f32, f16, bf16).
void convert_from_f32(const float* src, void* dst, DType to, size_t n);

}  // namespace pab
