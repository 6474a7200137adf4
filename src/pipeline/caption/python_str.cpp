// The Python standard library functions of the prompt cleaner (see caption_parts.h):
// str.lower and str.strip, urllib.parse.unquote_plus, html.unescape and NFC normalization,
// and the entity tables that html.unescape, BeautifulSoup and ftfy share.
#include <algorithm>
#include <iterator>
#include <optional>

#include "core/error.h"
#include "core/utf8.h"
#include "pipeline/caption/caption_parts.h"
#include "pipeline/prompt_text.h"

namespace pab::caption {

namespace {

struct CodeRange {
  uint32_t first, last;
};
struct ClassRange {
  uint32_t first, last;
  uint8_t value;
};
struct Decomposition {
  uint32_t cp;
  uint16_t offset;
  uint8_t length;
};
struct Composition {
  uint32_t first, second, composite;
};
struct Entity {
  const char* name;  // without ';'
  uint8_t legacy;    // also a name without ';'
  uint32_t cp[2];
};
struct UpperEntity {
  const char* name;
  uint32_t cp[3];
};
struct CharRef {
  uint32_t number, cp;
};

#include "pipeline/caption/html_entity_table.inc"
#include "pipeline/caption/nfc_table.inc"

template <size_t N>
bool in_ranges(const CodeRange (&table)[N], uint32_t c) {
  const CodeRange* it = std::upper_bound(std::begin(table), std::end(table), c,
                                         [](uint32_t v, const CodeRange& r) { return v < r.first; });
  return it != std::begin(table) && c <= (it - 1)->last;
}

// Compares a Text (code points) with an ASCII C string.
int compare_name(const Text& a, const char* b) {
  size_t i = 0;
  for (; i < a.size() && b[i]; ++i) {
    if (a[i] != char32_t(uint8_t(b[i]))) return a[i] < char32_t(uint8_t(b[i])) ? -1 : 1;
  }
  if (i < a.size()) return 1;
  return b[i] ? -1 : 0;
}

template <size_t N>
Text padded(const uint32_t (&cp)[N]) {
  Text t;
  for (uint32_t c : cp)
    if (c) t += char32_t(c);
  return t;
}

}  // namespace

Text decode(const std::string& utf8, const std::string& what) {
  Text out;
  out.reserve(utf8.size());
  for (size_t pos = 0, len = 0; pos < utf8.size(); pos += len) {
    const int32_t cp = decode_utf8(utf8, pos, &len);
    if (cp < 0) fail(what, " is not valid UTF-8 (byte ", pos, ")");
    out += char32_t(cp);
  }
  return out;
}

std::string encode(const Text& text) {
  std::string out;
  out.reserve(text.size());
  for (char32_t c : text) append_utf8(&out, uint32_t(c));
  return out;
}

Text python_lower(const Text& text) {
  return decode(pab::python_lower(encode(text)), "lowered text");
}

Text python_strip(const Text& text) {
  size_t begin = 0, end = text.size();
  while (begin < end && pyre::is_space(text[begin])) ++begin;
  while (end > begin && pyre::is_space(text[end - 1])) --end;
  return text.substr(begin, end - begin);
}

// ---------------------------------------------------------------- entities

std::optional<Text> html5_entity(const Text& name, bool semicolon) {
  const Entity* it = std::lower_bound(std::begin(kHtml5Entities), std::end(kHtml5Entities), name,
                                      [](const Entity& e, const Text& n) { return compare_name(n, e.name) > 0; });
  if (it == std::end(kHtml5Entities) || compare_name(name, it->name) != 0) return std::nullopt;
  if (!semicolon && !it->legacy) return std::nullopt;
  return padded(it->cp);
}

std::optional<Text> ftfy_upper_entity(const Text& name) {
  const UpperEntity* it =
      std::lower_bound(std::begin(kFtfyUpperEntities), std::end(kFtfyUpperEntities), name,
                       [](const UpperEntity& e, const Text& n) { return compare_name(n, e.name) > 0; });
  if (it == std::end(kFtfyUpperEntities) || compare_name(name, it->name) != 0) return std::nullopt;
  return padded(it->cp);
}

char32_t soup_charref(uint64_t number) {
  if (number == 0 || number > 0x10FFFF || (number >= 0xD800 && number <= 0xDFFF)) return 0xFFFD;
  for (const CharRef& r : kSoupC1Charrefs)
    if (r.number == number) return char32_t(r.cp);
  return char32_t(number);
}

// ---------------------------------------------------------------- urllib.parse.unquote_plus

namespace {

// bytes.decode("utf-8", "replace") as CPython decodes: each maximal invalid subsequence (a
// valid lead byte with the continuation bytes that fit, or one byte) becomes U+FFFD.
void decode_utf8_replace(const std::string& bytes, Text* out) {
  size_t i = 0;
  while (i < bytes.size()) {
    const uint8_t b = uint8_t(bytes[i]);
    if (b < 0x80) {
      *out += char32_t(b);
      ++i;
      continue;
    }
    int need = 0;
    uint8_t lo = 0x80, hi = 0xBF;  // the range of the first continuation byte
    uint32_t cp = 0;
    if (b >= 0xC2 && b <= 0xDF) {
      need = 1, cp = b & 0x1F;
    } else if (b >= 0xE0 && b <= 0xEF) {
      need = 2, cp = b & 0x0F;
      if (b == 0xE0) lo = 0xA0;
      if (b == 0xED) hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
      need = 3, cp = b & 0x07;
      if (b == 0xF0) lo = 0x90;
      if (b == 0xF4) hi = 0x8F;
    }
    size_t j = i + 1;
    int got = 0;
    while (got < need && j < bytes.size()) {
      const uint8_t c = uint8_t(bytes[j]);
      const uint8_t l = got == 0 ? lo : 0x80, h = got == 0 ? hi : 0xBF;
      if (c < l || c > h) break;
      cp = (cp << 6) | (c & 0x3F);
      ++got, ++j;
    }
    if (need > 0 && got == need) {
      *out += char32_t(cp);
    } else {
      *out += char32_t(0xFFFD);
    }
    i = j;
  }
}

}  // namespace

Text unquote_plus(const Text& text) {
  Text s = text;
  std::replace(s.begin(), s.end(), char32_t('+'), char32_t(' '));
  if (s.find(U'%') == Text::npos) return s;
  // unquote works on the runs of ASCII: each run's %XX become bytes, the run is decoded as UTF-8.
  Text out;
  size_t i = 0;
  while (i < s.size()) {
    if (s[i] >= 0x80) {
      out += s[i++];
      continue;
    }
    size_t j = i;
    while (j < s.size() && s[j] < 0x80) ++j;
    std::string bytes;
    for (size_t k = i; k < j; ++k) {
      const auto hex = [&](size_t at) -> int {
        if (at >= j) return -1;
        const char32_t c = s[at];
        if (c >= '0' && c <= '9') return int(c - '0');
        if (c >= 'a' && c <= 'f') return int(c - 'a' + 10);
        if (c >= 'A' && c <= 'F') return int(c - 'A' + 10);
        return -1;
      };
      if (s[k] == '%' && hex(k + 1) >= 0 && hex(k + 2) >= 0) {
        bytes += char(hex(k + 1) * 16 + hex(k + 2));
        k += 2;
      } else {
        bytes += char(s[k]);
      }
    }
    decode_utf8_replace(bytes, &out);
    i = j;
  }
  return out;
}

// ---------------------------------------------------------------- html.unescape

namespace {

Text replace_charref(const Text& s) {  // s: the reference without its '&'
  if (s[0] == '#') {
    const bool hex = s.size() > 1 && (s[1] == 'x' || s[1] == 'X');
    uint64_t num = 0;
    for (size_t i = hex ? 2 : 1; i < s.size() && s[i] != ';'; ++i) {
      const char32_t c = s[i];
      const uint64_t d = c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
      num = std::min<uint64_t>(num * (hex ? 16 : 10) + d, 0x110000);  // beyond U+10FFFF is all the same
    }
    for (const CharRef& r : kHtmlInvalidCharrefs)
      if (r.number == num) return Text(1, char32_t(r.cp));
    if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF) return Text(1, char32_t(0xFFFD));
    if (in_ranges(kHtmlInvalidCodepoints, uint32_t(num))) return Text();
    return Text(1, char32_t(num));
  }
  const bool semicolon = s.back() == ';';
  if (auto v = html5_entity(semicolon ? s.substr(0, s.size() - 1) : s, semicolon)) return *v;
  // The longest name that is one without a ';' (legacy), at least two characters.
  for (size_t x = s.size() - 1; x > 1; --x) {
    if (auto v = html5_entity(s.substr(0, x), false)) return *v + s.substr(x);
  }
  return U"&" + s;
}

}  // namespace

Text html_unescape(const Text& text) {
  if (text.find(U'&') == Text::npos) return text;
  static const pyre::Regex charref(kHtmlCharrefPattern);
  return charref.sub(text, [](const Text& t, const pyre::Match& m) { return replace_charref(m.group(t, 1)); });
}

// ---------------------------------------------------------------- NFC

namespace {

constexpr uint32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr uint32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

uint8_t combining_class(char32_t c) {
  const ClassRange* it = std::upper_bound(std::begin(kCombiningClasses), std::end(kCombiningClasses), uint32_t(c),
                                          [](uint32_t v, const ClassRange& r) { return v < r.first; });
  if (it == std::begin(kCombiningClasses) || c > (it - 1)->last) return 0;
  return (it - 1)->value;
}

void decompose(char32_t c, Text* out) {
  if (c >= kSBase && c < kSBase + kSCount) {
    const uint32_t s = c - kSBase;
    *out += char32_t(kLBase + s / kNCount);
    *out += char32_t(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount) *out += char32_t(kTBase + s % kTCount);
    return;
  }
  const Decomposition* it = std::lower_bound(std::begin(kDecompositions), std::end(kDecompositions), uint32_t(c),
                                             [](const Decomposition& d, uint32_t v) { return d.cp < v; });
  if (it == std::end(kDecompositions) || it->cp != c) {
    *out += c;
    return;
  }
  for (size_t k = 0; k < it->length; ++k) *out += char32_t(kDecompositionData[it->offset + k]);
}

// The primary composite of (a, b), or 0.
char32_t compose(char32_t a, char32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return char32_t(kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount);
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase && b < kTBase + kTCount)
    return char32_t(a + (b - kTBase));
  const Composition* it =
      std::lower_bound(std::begin(kCompositions), std::end(kCompositions), std::pair<uint32_t, uint32_t>(a, b),
                       [](const Composition& c, const std::pair<uint32_t, uint32_t>& v) {
                         return c.first < v.first || (c.first == v.first && c.second < v.second);
                       });
  if (it == std::end(kCompositions) || it->first != a || it->second != b) return 0;
  return char32_t(it->composite);
}

}  // namespace

Text nfc(const Text& text) {
  Text d;
  d.reserve(text.size());
  for (char32_t c : text) decompose(c, &d);
  // Canonical order: each run of non-starters stably sorted by combining class.
  for (size_t i = 0; i < d.size();) {
    if (combining_class(d[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < d.size() && combining_class(d[j]) != 0) ++j;
    std::stable_sort(d.begin() + ptrdiff_t(i), d.begin() + ptrdiff_t(j),
                     [](char32_t a, char32_t b) { return combining_class(a) < combining_class(b); });
    i = j;
  }
  // Composition: a character joins the last starter unless something between blocks it (a
  // character left between them of a class zero or not below its own).
  Text out;
  out.reserve(d.size());
  size_t starter = Text::npos;
  int last_class = -1;
  for (char32_t c : d) {
    const int cls = combining_class(c);
    if (starter != Text::npos) {
      const bool adjacent = starter + 1 == out.size();
      if (adjacent || (last_class != 0 && last_class < cls)) {
        if (const char32_t comp = compose(out[starter], c)) {
          out[starter] = comp;
          continue;
        }
      }
    }
    if (cls == 0) starter = out.size();
    last_class = cls;
    out += c;
  }
  return out;
}

}  // namespace pab::caption
