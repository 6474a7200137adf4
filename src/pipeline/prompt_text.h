// Prompt text preprocessing that pipelines apply before tokenizing, with
// Python's string semantics.
#pragma once

#include <string>

namespace pab {

// Python's text.lower().strip() on UTF-8 text: full Unicode lowercasing
// (U+0130 becomes "i" + U+0307, capital sigma becomes final sigma at the end
// of a word) and removal of leading and trailing whitespace as str.isspace()
// defines it. LattePipeline applies this to every prompt when clean_caption
// is False. Invalid UTF-8 is an error.
std::string python_lower_strip(const std::string& text);

// Fails with "<what> is not valid UTF-8 (byte N)" unless `text` is valid UTF-8.
void check_prompt_utf8(const std::string& text, const std::string& what);
// Whether `text` (valid UTF-8) holds nothing but whitespace, as str.isspace()
// defines it, or nothing at all.
bool is_blank(const std::string& text);

}  // namespace pab
