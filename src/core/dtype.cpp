#include "core/dtype.h"

#include <cmath>
#include <limits>

#include "core/error.h"

namespace pab {

namespace {
struct DTypeInfo {
  DType type;
  const char* name;
  size_t size;
};
constexpr DTypeInfo kInfos[] = {
    {DType::f32, "F32", 4},  {DType::f16, "F16", 2}, {DType::bf16, "BF16", 2}, {DType::f64, "F64", 8},
    {DType::i64, "I64", 8},  {DType::i32, "I32", 4}, {DType::i16, "I16", 2},   {DType::i8, "I8", 1},
    {DType::u8, "U8", 1},    {DType::boolean, "BOOL", 1},
    {DType::u16, "U16", 2},  {DType::u32, "U32", 4}, {DType::u64, "U64", 8},
    {DType::f8_e4m3, "F8_E4M3", 1}, {DType::f8_e5m2, "F8_E5M2", 1}, {DType::f8_e8m0, "F8_E8M0", 1},
};
// The table is indexed by the enum value.
static_assert(sizeof(kInfos) / sizeof(kInfos[0]) == size_t(DType::f8_e8m0) + 1);
}  // namespace

size_t dtype_size(DType t) { return kInfos[size_t(t)].size; }
const char* dtype_name(DType t) { return kInfos[size_t(t)].name; }

bool parse_dtype(std::string_view s, DType* out) {
  for (const auto& info : kInfos) {
    if (s == info.name) {
      *out = info.type;
      return true;
    }
  }
  return false;
}

bool is_float(DType t) {
  switch (t) {
    case DType::f32:
    case DType::f16:
    case DType::bf16:
    case DType::f64:
    case DType::f8_e4m3:
    case DType::f8_e5m2:
    case DType::f8_e8m0: return true;
    default: return false;
  }
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  uint32_t u;
  if (exp == 0) {
    if (man == 0) {
      u = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do {
        e++;
        man <<= 1;
      } while ((man & 0x400u) == 0);
      u = sign | (uint32_t(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | (man << 13);
  } else {
    u = sign | ((exp + 127 - 15) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t f32_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return uint16_t(sign | 0x7e00u);  // NaN
  if (abs >= 0x47800000u) return uint16_t(sign | 0x7c00u);  // overflow -> inf
  if (abs < 0x38800000u) {  // below the smallest normal half: subnormal or zero
    if (abs < 0x33000000u) return uint16_t(sign);
    // value / 2^-24 = mantissa (with implicit bit) * 2^(e - 126), rounded to nearest even
    uint32_t e = abs >> 23;
    uint32_t man = (abs & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - e;
    uint32_t r = man >> shift;
    uint32_t rem = man & ((1u << shift) - 1);
    uint32_t halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (r & 1))) r++;
    return uint16_t(sign | r);
  }
  uint32_t r = ((abs - 0x38000000u) >> 13);
  uint32_t rem = abs & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1))) r++;
  return uint16_t(sign | r);
}

float f8_e4m3_to_f32(uint8_t b) {
  uint32_t sign = uint32_t(b & 0x80u) << 24;
  uint32_t exp = (b >> 3) & 0xfu;
  uint32_t man = b & 0x7u;
  if (exp == 0xf && man == 0x7) return std::numeric_limits<float>::quiet_NaN();
  float mag;
  if (exp == 0) {
    mag = std::ldexp(float(man), -9);  // subnormal: man/8 * 2^(1-7)
  } else {
    uint32_t u = ((exp + 127 - 7) << 23) | (man << 20);
    std::memcpy(&mag, &u, 4);
  }
  return sign ? -mag : mag;
}

float f8_e5m2_to_f32(uint8_t b) { return f16_to_f32(uint16_t(uint16_t(b) << 8)); }

float f8_e8m0_to_f32(uint8_t b) {
  if (b == 0xff) return std::numeric_limits<float>::quiet_NaN();
  uint32_t u = b == 0 ? 0x00400000u : uint32_t(b) << 23;  // 2^-127 is an f32 subnormal
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Checkpoint data need not be aligned for its type (safetensors does not require
// it), so elements are read with memcpy.
template <class T>
static T load_unaligned(const void* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

template <class T, class F>
static void convert_each(const void* src, float* dst, size_t n, F f) {
  const char* s = static_cast<const char*>(src);
  for (size_t i = 0; i < n; ++i) dst[i] = f(load_unaligned<T>(s + i * sizeof(T)));
}

template <class T>
static void widen(const void* src, float* dst, size_t n) {
  convert_each<T>(src, dst, n, [](T v) { return float(v); });
}

void convert_to_f32(const void* src, DType from, float* dst, size_t n) {
  if (n == 0) return;  // the pointers of empty tensors may be null
  switch (from) {
    case DType::f32: std::memcpy(dst, src, n * 4); return;
    case DType::f16: convert_each<uint16_t>(src, dst, n, f16_to_f32); return;
    case DType::bf16: convert_each<uint16_t>(src, dst, n, bf16_to_f32); return;
    case DType::f64: widen<double>(src, dst, n); return;
    case DType::i64: widen<int64_t>(src, dst, n); return;
    case DType::i32: widen<int32_t>(src, dst, n); return;
    case DType::i16: widen<int16_t>(src, dst, n); return;
    case DType::i8: widen<int8_t>(src, dst, n); return;
    case DType::u8:
    case DType::boolean: widen<uint8_t>(src, dst, n); return;
    case DType::u16: widen<uint16_t>(src, dst, n); return;
    case DType::u32: widen<uint32_t>(src, dst, n); return;
    case DType::u64: widen<uint64_t>(src, dst, n); return;
    case DType::f8_e4m3: convert_each<uint8_t>(src, dst, n, f8_e4m3_to_f32); return;
    case DType::f8_e5m2: convert_each<uint8_t>(src, dst, n, f8_e5m2_to_f32); return;
    case DType::f8_e8m0: convert_each<uint8_t>(src, dst, n, f8_e8m0_to_f32); return;
  }
  PAB_ASSERT(false, "unhandled dtype");
}

void convert_from_f32(const float* src, void* dst, DType to, size_t n) {
  if (n == 0) return;  // the pointers of empty tensors may be null
  switch (to) {
    case DType::f32: std::memcpy(dst, src, n * 4); return;
    case DType::f16: {
      uint16_t* d = static_cast<uint16_t*>(dst);
      for (size_t i = 0; i < n; ++i) d[i] = f32_to_f16(src[i]);
      return;
    }
    case DType::bf16: {
      uint16_t* d = static_cast<uint16_t*>(dst);
      for (size_t i = 0; i < n; ++i) d[i] = f32_to_bf16(src[i]);
      return;
    }
    default: break;
  }
  fail("cannot convert f32 to ", dtype_name(to));
}

}  // namespace pab
