// Python-compatible lowercasing and stripping (see prompt_text.h), from
// tables generated out of Python's own str.lower() (case_table.inc).
#include "pipeline/prompt_text.h"

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <vector>

#include "core/error.h"
#include "core/utf8.h"

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
  for (size_t pos = 0, len = 0; pos < s.size(); pos += len) {
    const int32_t cp = decode_utf8(s, pos, &len);
    if (cp < 0) fail(what, " is not valid UTF-8 (byte ", pos, ")");
    out.push_back(uint32_t(cp));
  }
  return out;
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

namespace {

// cps[begin, end) lowered; the final sigma looks at the whole of cps.
std::string lower_range(const std::vector<uint32_t>& cps, size_t begin, size_t end, size_t size_hint) {
  std::string out;
  out.reserve(size_hint);
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

}  // namespace

std::string python_lower_strip(const std::string& text) {
  const std::vector<uint32_t> cps = decode(text);
  size_t begin = 0, end = cps.size();
  // Lowering never turns a non-space into a space or back, so strip first.
  while (begin < end && is_python_space(cps[begin])) ++begin;
  while (end > begin && is_python_space(cps[end - 1])) --end;
  return lower_range(cps, begin, end, text.size());
}

std::string python_lower(const std::string& text) {
  const std::vector<uint32_t> cps = decode(text);
  return lower_range(cps, 0, cps.size(), text.size());
}

}  // namespace pab
