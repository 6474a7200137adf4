// The pieces of PixArt's / Open-Sora's prompt cleaning (clean_caption, prompt_text.h), each
// the Python function it is named after, on Python strs (one char32_t per code point). The
// cleaner is them in order; tests check each against its reference on its own.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "pipeline/caption/python_re.h"
#include "pipeline/prompt_text.h"

namespace pab::caption {

using pyre::Text;

// The code points of UTF-8 text; fails with "<what> is not valid UTF-8 (byte N)".
Text decode(const std::string& utf8, const std::string& what);
std::string encode(const Text& text);

// str.lower() and str.strip().
Text python_lower(const Text& text);
Text python_strip(const Text& text);

// urllib.parse.unquote_plus(text): '+' is a space, %XX sequences are UTF-8 bytes (what does not
// decode becomes U+FFFD as errors="replace" decides).
Text unquote_plus(const Text& text);

// html.unescape(text): named references of HTML5 (the longest name that fits when no ';'
// follows), numeric references with the HTML5 replacements.
Text html_unescape(const Text& text);

// unicodedata.normalize("NFC", text), with the Unicode version of the Python that made the
// tables (nfc_table.inc).
Text nfc(const Text& text);

// BeautifulSoup(text, features="html.parser").text: what Python's html.parser and
// BeautifulSoup's tree builder keep of the text (character data, references decoded as
// BeautifulSoup decodes them, CDATA sections; not tags, comments, declarations, processing
// instructions, nor the insides of script, style, template, rt and rp). Fails where
// BeautifulSoup raises ParserRejectedMarkup (a "<![" marked section that html.parser rejects).
Text soup_text(const Text& text);

// ftfy.fix_text(text) with its default configuration. Fails on text in which ftfy's badness
// heuristic sees mojibake, whose repair (re-decoding in other encodings) this does not do.
Text ftfy_fix_text(const Text& text);

// The entity tables the pieces share (html_entity_table.inc):
// html.entities.html5[name + ";"] with `semicolon`, else html5[name] (a legacy name).
std::optional<Text> html5_entity(const Text& name, bool semicolon);
// ftfy.chardata.HTML_ENTITIES["&" + name + ";"] for the upper-case names it adds to html5's.
std::optional<Text> ftfy_upper_entity(const Text& name);
// UnicodeDammit.numeric_character_reference(number)[0] (BeautifulSoup's numeric references).
char32_t soup_charref(uint64_t number);

// One _clean_caption pass (pab::clean_caption on UTF-8).
Text clean_caption(const Text& text, CaptionStyle style);

// A re.sub step of _clean_caption: its pattern and replacement as Python holds them.
struct CaptionSub {
  std::u32string_view pattern, repl;
};
// The re.sub steps of clean_caption in its order (the one after the hyphen count included), for
// the test that compares them with the reference's source.
std::vector<CaptionSub> clean_caption_subs();

}  // namespace pab::caption
