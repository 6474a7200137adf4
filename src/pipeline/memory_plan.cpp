#include "pipeline/memory_plan.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>

#include "backend/backend.h"

namespace pab {

uint64_t MemoryEstimate::Phase::total() const {
  uint64_t sum = 0;
  for (const Part& p : parts) sum = add_bytes(sum, p.bytes, name.c_str());
  return sum;
}

uint64_t MemoryEstimate::part(const std::string& phase, const std::string& what) const {
  for (const Phase& p : phases)
    if (p.name == phase)
      for (const Part& part : p.parts)
        if (part.what == what) return part.bytes;
  return 0;
}

const MemoryEstimate::Phase& MemoryEstimate::peak_phase() const {
  PAB_ASSERT(!phases.empty(), "a memory estimate without phases");
  const Phase* best = &phases.front();
  for (const Phase& p : phases)
    if (p.total() > best->total()) best = &p;
  return *best;
}

std::string MemoryEstimate::describe(const Phase& p) {
  std::string parts;
  for (const Part& part : p.parts)
    if (part.bytes > 0) parts += cat(parts.empty() ? "" : ", ", part.what, " ", format_bytes(part.bytes));
  return cat(p.name, ": ", format_bytes(p.total()), parts.empty() ? "" : " (" + parts + ")");
}

MemoryLimit memory_limit(Device device, std::optional<uint64_t> max_memory) {
  MemoryLimit limit;
  if (std::optional<uint64_t> free = backend(device).memory_available()) {
    limit.bytes = *free;
    limit.what = device == Device::cpu ? "the host's available memory" : "the GPU's free memory";
  } else {
    limit.bytes = UINT64_MAX;
    limit.what = "no known limit";
  }
  if (max_memory && *max_memory < limit.bytes) {
    limit.bytes = *max_memory;
    limit.what = "--max-memory";
  }
  return limit;
}

void check_memory(const MemoryEstimate& estimate, const MemoryLimit& limit) {
  if (estimate.phases.empty() || estimate.peak() <= limit.bytes) return;
  fail("this run needs about ", format_bytes(estimate.peak()), " (", MemoryEstimate::describe(estimate.peak_phase()),
       "), more than the ", format_bytes(limit.bytes), " of ", limit.what,
       "; ask for fewer frames, a smaller size or PAB off, or use a device with more memory");
}

uint64_t add_bytes(uint64_t a, uint64_t b, const char* what) {
  uint64_t sum = 0;
  if (__builtin_add_overflow(a, b, &sum)) fail(what, ": a size beyond 2^64 bytes");
  return sum;
}

uint64_t element_bytes(int64_t n, DType dtype, const char* what) {
  if (n < 0) fail(what, ": a negative size (", n, " elements)");
  uint64_t bytes = 0;
  if (__builtin_mul_overflow(uint64_t(n), uint64_t(dtype_size(dtype)), &bytes))
    fail(what, ": a size beyond 2^64 bytes");
  return bytes;
}

std::string format_bytes(uint64_t bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = double(bytes);
  int unit = 0;
  while (v >= 1024 && unit < 6) {
    v /= 1024;
    ++unit;
  }
  char buf[32];
  if (unit == 0)
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
  else
    std::snprintf(buf, sizeof buf, v < 10 ? "%.2f %s" : v < 100 ? "%.1f %s" : "%.0f %s", v, kUnits[unit]);
  return buf;
}

uint64_t parse_memory_size(const std::string& text, const std::string& what) {
  auto bad = [&]() -> uint64_t {
    fail(what, what.empty() ? "" : " ", "'", text,
         "': expected a size such as 24G, 512M or 1.5T (K, M, G, T: powers of 1024), above 0");
  };
  const char* begin = text.data();
  const char* end = begin + text.size();
  double value = 0;
  auto [num_end, ec] = std::from_chars(begin, end, value);
  if (ec != std::errc() || num_end == begin || !std::isfinite(value) || value <= 0) return bad();
  std::string unit(num_end, end);
  if (unit.starts_with(' ')) unit.erase(0, 1);  // "24 GB"
  for (char& c : unit) c = char(std::toupper(static_cast<unsigned char>(c)));
  if (unit.ends_with("IB"))
    unit.resize(unit.size() - 2);
  else if (unit.size() > 1 && unit.back() == 'B')
    unit.pop_back();
  double scale = 1;
  if (unit.empty() || unit == "B")
    scale = 1;
  else if (unit == "K")
    scale = 0x1p10;
  else if (unit == "M")
    scale = 0x1p20;
  else if (unit == "G")
    scale = 0x1p30;
  else if (unit == "T")
    scale = 0x1p40;
  else
    return bad();
  const double bytes = std::floor(value * scale);
  if (!(bytes >= 1) || bytes >= 0x1p64) return bad();
  return uint64_t(bytes);
}

}  // namespace pab
