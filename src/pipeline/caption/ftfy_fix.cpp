// ftfy.fix_text with its default TextFixerConfig (see caption_parts.h): the text in segments
// that end at each newline; each segment fixed until it no longer changes by unescape_html
// (until a segment holds '<'), fix_encoding, fix_c1_controls, fix_latin_ligatures,
// fix_character_width, uncurl_quotes, fix_line_breaks, fix_surrogates, remove_terminal_escapes,
// remove_control_chars and NFC, in that order. fix_encoding leaves text alone that is ASCII or
// that its badness heuristic does not flag; flagged text is refused here, not re-decoded.
#include <algorithm>
#include <cstdio>
#include <iterator>

#include "core/error.h"
#include "pipeline/caption/caption_parts.h"

namespace pab::caption {

namespace {

struct CodeRange {
  uint32_t first, last;
};
struct CharMapping {
  uint32_t cp;
  uint32_t to[3];
};

#include "pipeline/caption/ftfy_table.inc"

// TextFixerConfig.max_decode_length.
constexpr size_t kMaxDecodeLength = 1000000;

int flags(bool verbose) {
  return verbose ? pyre::kVerbose : 0;
}

struct Patterns {
  pyre::Regex badness{kBadnessPattern, flags(kBadnessPatternVerbose)};
  pyre::Regex html_entity{kHtmlEntityPattern, flags(kHtmlEntityPatternVerbose)};
  pyre::Regex terminal_escape{kTerminalEscapePattern, flags(kTerminalEscapePatternVerbose)};
  pyre::Regex single_quote{kSingleQuotePattern, flags(kSingleQuotePatternVerbose)};
  pyre::Regex double_quote{kDoubleQuotePattern, flags(kDoubleQuotePatternVerbose)};
};

const Patterns& patterns() {
  static const Patterns p;
  return p;
}

template <size_t N>
Text translate(const Text& text, const CharMapping (&table)[N]) {
  Text out;
  out.reserve(text.size());
  for (char32_t c : text) {
    const CharMapping* it = std::lower_bound(std::begin(table), std::end(table), uint32_t(c),
                                             [](const CharMapping& m, uint32_t v) { return m.cp < v; });
    if (it == std::end(table) || it->cp != c) {
      out += c;
      continue;
    }
    for (uint32_t t : it->to)
      if (t) out += char32_t(t);
  }
  return out;
}

// fixes.unescape_html: HTML5 entities that end in ';' (and ftfy's upper-case ones), numeric
// references that html.unescape resolves without leaving a ';'.
Text unescape_html(const Text& text) {
  return patterns().html_entity.sub(text, [](const Text& t, const pyre::Match& m) {
    const Text ref = m.group(t, 0);
    const Text name = ref.substr(1, ref.size() - 2);
    if (auto v = html5_entity(name, true)) return *v;
    if (auto v = ftfy_upper_entity(name)) return *v;
    if (ref.size() > 1 && ref[1] == '#') {
      const Text u = html_unescape(ref);
      return u.find(U';') != Text::npos ? ref : u;
    }
    return ref;
  });
}

// `text` for a one-line message: controls, C1 controls and line separators as \uXXXX.
std::string printable(const Text& text) {
  std::string out;
  for (char32_t c : text) {
    if (c < 0x20 || (c >= 0x7F && c <= 0x9F) || c == 0x2028 || c == 0x2029) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", unsigned(c));
      out += buf;
    } else {
      out += encode(Text(1, c));
    }
  }
  return out;
}

// fix_encoding (fix_encoding_and_explain's loop of _fix_encoding_one_step_and_explain), as far as
// text without mojibake goes: ASCII text, and text that is_bad() does not flag, stay as they are.
Text fix_encoding(const Text& text) {
  if (text.empty() || std::all_of(text.begin(), text.end(), [](char32_t c) { return c < 0x80; })) return text;
  pyre::Match m;
  if (patterns().badness.search(text, 0, &m)) {
    fail("prompt text looks like mojibake to ftfy (its badness heuristic matches \"", printable(m.group(text, 0)),
         "\" in it), and pab does not reproduce ftfy's re-decoding of such text");
  }
  return text;
}

Text fix_line_breaks(const Text& text) {
  Text out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    const char32_t c = text[i];
    if (c == '\r') {
      if (i + 1 < text.size() && text[i + 1] == '\n') ++i;
      out += U'\n';
    } else if (c == 0x2028 || c == 0x2029 || c == 0x85) {
      out += U'\n';
    } else {
      out += c;
    }
  }
  return out;
}

Text remove_control_chars(const Text& text) {
  Text out;
  out.reserve(text.size());
  for (char32_t c : text) {
    const CodeRange* it = std::upper_bound(std::begin(kControlChars), std::end(kControlChars), uint32_t(c),
                                           [](uint32_t v, const CodeRange& r) { return v < r.first; });
    if (it != std::begin(kControlChars) && c <= (it - 1)->last) continue;
    out += c;
  }
  return out;
}

Text fix_segment(Text text, bool unescape) {
  const Patterns& p = patterns();
  for (;;) {
    const Text orig = text;
    if (unescape) text = unescape_html(text);
    text = fix_encoding(text);
    // fix_c1_controls has nothing to do: a C1 control is mojibake to fix_encoding, refused above.
    PAB_ASSERT(std::none_of(text.begin(), text.end(), [](char32_t c) { return c >= 0x80 && c <= 0x9F; }));
    text = translate(text, kLatinLigatures);
    text = translate(text, kCharacterWidth);
    text = p.single_quote.sub(p.double_quote.sub(text, U"\""), U"'");
    text = fix_line_breaks(text);
    // fix_surrogates has nothing to do: valid UTF-8 holds no surrogates, and no step makes one.
    text = p.terminal_escape.sub(text, U"");
    text = remove_control_chars(text);
    text = nfc(text);
    if (text == orig) return text;
  }
}

}  // namespace

Text ftfy_fix_text(const Text& text) {
  Text out;
  // unescape_html="auto": off from the first segment that holds a '<' on.
  bool unescape = true;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t newline = text.find(U'\n', pos);
    size_t brk = newline == Text::npos ? text.size() : newline + 1;
    if (brk - pos > kMaxDecodeLength) brk = pos + kMaxDecodeLength;
    const Text segment = text.substr(pos, brk - pos);
    if (unescape && segment.find(U'<') != Text::npos) unescape = false;
    out += fix_segment(segment, unescape);
    pos = brk;
  }
  return out;
}

}  // namespace pab::caption
