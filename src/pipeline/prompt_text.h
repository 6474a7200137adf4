// Prompt text preprocessing that pipelines apply before tokenizing, with
// Python's string semantics.
#pragma once

#include <cstdint>
#include <string>

namespace pab {

// Python's text.lower().strip() on UTF-8 text: full Unicode lowercasing
// (U+0130 becomes "i" + U+0307, capital sigma becomes final sigma at the end
// of a word) and removal of leading and trailing whitespace as str.isspace()
// defines it. LattePipeline applies this to every prompt when clean_caption
// is False. Invalid UTF-8 is an error.
std::string python_lower_strip(const std::string& text);
// Python's text.lower() alone (as above, nothing stripped).
std::string python_lower(const std::string& text);

// The prompt cleaning of PixArt-alpha, carried by Open-Sora and diffusers' PixArt, Latte and IF
// pipelines: one pass of _clean_caption (VideoSys 4cce477, pipeline_open_sora.py) on UTF-8
// text, exactly as Python runs it: urllib.parse.unquote_plus, strip().lower(), its re.sub
// steps with Python's re semantics (Unicode \w, \d, \s, \b), BeautifulSoup's html.parser
// .text, ftfy.fix_text and html.unescape (CPython 3.11.7, Unicode 14.0.0, beautifulsoup4
// 4.15.0, ftfy 6.3.1; the tables in caption/ are generated from them).
//
// Fails with a one-line pab::Error, where the reference would differ or fail, on:
// - invalid UTF-8 (check_prompt_utf8's message);
// - text in which ftfy's badness heuristic sees mojibake at the point fix_text runs (for
//   instance a C1 control character, or "Ã©"-like pairs): ftfy would try to re-decode it in
//   another encoding, which pab does not reproduce;
// - a "<![" marked section that html.parser rejects (BeautifulSoup raises
//   ParserRejectedMarkup there, so the reference fails too).
//
// The copies differ in one step: Open-Sora's strips the text after ftfy and html.unescape
// (its _basic_clean); DeepFloyd IF's original, which diffusers and Open-Sora-Plan carry, does
// not (a leading space left there keeps the anchored patterns after it from matching).
enum class CaptionStyle : uint8_t { open_sora, deepfloyd_if };
std::string clean_caption(const std::string& utf8, CaptionStyle style = CaptionStyle::open_sora);
// Open-Sora 1.2's text_preprocessing(text) as the original PAB code runs it before tokenizing:
// clean_caption(clean_caption(text)).
std::string open_sora_text_preprocessing(const std::string& utf8);
// Open-Sora-Plan's _text_preprocessing(text, clean_caption=True) (VideoSys 4cce477,
// pipeline_open_sora_plan.py): two passes of the DeepFloyd IF style.
std::string open_sora_plan_text_preprocessing(const std::string& utf8);

// Fails with "<what> is not valid UTF-8 (byte N)" unless `text` is valid UTF-8.
void check_prompt_utf8(const std::string& text, const std::string& what);
// Whether `text` (valid UTF-8) holds nothing but whitespace, as str.isspace()
// defines it, or nothing at all.
bool is_blank(const std::string& text);

}  // namespace pab
