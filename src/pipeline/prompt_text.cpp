// Python-compatible lowercasing and stripping (see prompt_text.h), from
// tables generated out of Python's own str.lower() (case_table.inc).
#include "pipeline/prompt_text.h"

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <vector>

#include "core/error.h"

namespace pab {

namespace {

struct LowerRange {
  uint32_t first, last;
  int32_t stride, delta;
};
struct CodeRange {
  uint32_t first, last;
};

#include "pipeline/case_table.inc"

template <class Range, size_t N>
const Range* find_range(const Range (&table)[N], uint32_t cp) {
  const Range* it =
      std::upper_bound(std::begin(table), std::end(table), cp, [](uint32_t c, const Range& r) { return c < r.first; });
  if (it == std::begin(table) || cp > (it - 1)->last) return nullptr;
  return it - 1;
}

bool is_cased(uint32_t cp) {
  return find_range(kCasedRanges, cp) != nullptr;
}
bool is_case_ignorable(uint32_t cp) {
  return find_range(kCaseIgnorableRanges, cp) != nullptr;
}

uint32_t lower_simple(uint32_t cp) {
  const LowerRange* r = find_range(kLowerRanges, cp);
  if (!r || (cp - r->first) % uint32_t(r->stride) != 0) return cp;
  return uint32_t(int64_t(cp) + r->delta);
}

// Python's str.isspace() (Py_UNICODE_ISSPACE), which str.strip() uses.
bool is_python_space(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

std::vector<uint32_t> decode(const std::string& s, const std::string& what = "prompt text") {
  std::vector<uint32_t> out;
  for (size_t pos = 0; pos < s.size();) {
    const uint8_t b0 = uint8_t(s[pos]);
    const size_t n = b0 < 0x80 ? 1 : (b0 >> 5) == 0x6 ? 2 : (b0 >> 4) == 0xE ? 3 : (b0 >> 3) == 0x1E ? 4 : 0;
    bool ok = n > 0 && pos + n <= s.size();
    uint32_t cp = n == 1 ? b0 : n == 2 ? (b0 & 0x1F) : n == 3 ? (b0 & 0x0F) : (b0 & 0x07);
    for (size_t i = 1; ok && i < n; ++i) {
      ok = (uint8_t(s[pos + i]) & 0xC0) == 0x80;
      cp = (cp << 6) | (uint8_t(s[pos + i]) & 0x3F);
    }
    static constexpr uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (!ok || cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      fail(what, " is not valid UTF-8 (byte ", pos, ")");
    out.push_back(cp);
    pos += n;
  }
  return out;
}

void append_utf8(std::string* out, uint32_t cp) {
  if (cp < 0x80) {
    *out += char(cp);
  } else if (cp < 0x800) {
    *out += char(0xC0 | (cp >> 6));
    *out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    *out += char(0xE0 | (cp >> 12));
    *out += char(0x80 | ((cp >> 6) & 0x3F));
    *out += char(0x80 | (cp & 0x3F));
  } else {
    *out += char(0xF0 | (cp >> 18));
    *out += char(0x80 | ((cp >> 12) & 0x3F));
    *out += char(0x80 | ((cp >> 6) & 0x3F));
    *out += char(0x80 | (cp & 0x3F));
  }
}

// Capital sigma is final when a cased letter precedes it and none follows
// (case-ignorable code points skipped on both sides), as CPython decides.
bool final_sigma(const std::vector<uint32_t>& cps, size_t i) {
  size_t j = i;
  while (j > 0 && is_case_ignorable(cps[j - 1])) --j;
  if (j == 0 || !is_cased(cps[j - 1])) return false;
  size_t k = i + 1;
  while (k < cps.size() && is_case_ignorable(cps[k])) ++k;
  return k == cps.size() || !is_cased(cps[k]);
}

}  // namespace

void check_prompt_utf8(const std::string& text, const std::string& what) {
  decode(text, what);
}

bool is_blank(const std::string& text) {
  const std::vector<uint32_t> cps = decode(text);
  return std::all_of(cps.begin(), cps.end(), is_python_space);
}

std::string python_lower_strip(const std::string& text) {
  const std::vector<uint32_t> cps = decode(text);
  size_t begin = 0, end = cps.size();
  // Lowering never turns a non-space into a space or back, so strip first.
  while (begin < end && is_python_space(cps[begin])) ++begin;
  while (end > begin && is_python_space(cps[end - 1])) --end;
  std::string out;
  out.reserve(text.size());
  for (size_t i = begin; i < end; ++i) {
    const uint32_t cp = cps[i];
    if (cp == 0x130) {
      append_utf8(&out, 'i');
      append_utf8(&out, 0x307);
    } else if (cp == 0x3A3) {
      append_utf8(&out, final_sigma(cps, i) ? 0x3C2 : 0x3C3);
    } else {
      append_utf8(&out, lower_simple(cp));
    }
  }
  return out;
}

}  // namespace pab
