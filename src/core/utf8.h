// UTF-8 decoding and encoding, one code point at a time: the one decoder that
// the prompt preprocessing and the tokenizer share.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace pab {

// The code point that starts at s[pos] (pos < s.size()), its byte length in
// *len; -1, *len untouched, if the bytes there are not valid UTF-8: a stray
// continuation byte, a truncated, overlong or surrogate sequence, or a code
// point beyond U+10FFFF.
int32_t decode_utf8(std::string_view s, size_t pos, size_t* len);

// Appends the UTF-8 encoding of `cp` (at most U+10FFFF).
void append_utf8(std::string* out, uint32_t cp);

}  // namespace pab
