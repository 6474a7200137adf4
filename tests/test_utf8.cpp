// The shared UTF-8 decoder and encoder (core/utf8.h) against encodings
// written out from RFC 3629, and a round trip over every scalar value.
#include <gtest/gtest.h>

#include <string>

#include "core/utf8.h"

namespace pab {
namespace {

TEST(Utf8, DecodesEachLength) {
  const struct {
    std::string bytes;
    int32_t cp;
  } cases[] = {{"A", 0x41},
               {"\x7F", 0x7F},
               {"\xC3\xA9", 0xE9},
               {"\xDF\xBF", 0x7FF},
               {"\xE2\x82\xAC", 0x20AC},
               {"\xEF\xBF\xBF", 0xFFFF},
               {"\xF0\x9F\x98\x80", 0x1F600},
               {"\xF4\x8F\xBF\xBF", 0x10FFFF}};
  for (const auto& c : cases) {
    size_t len = 0;
    EXPECT_EQ(decode_utf8("x" + c.bytes + "y", 1, &len), c.cp) << c.bytes;
    EXPECT_EQ(len, c.bytes.size()) << c.bytes;
  }
}

TEST(Utf8, RejectsMalformedSequences) {
  const std::string bad[] = {
      "\x80",              // a continuation byte alone
      "\xC3",              // truncated
      "\xE2\x82",          // truncated
      "\xC3\x28",          // second byte not a continuation
      "\xC0\x80",          // overlong NUL
      "\xE0\x80\xAF",      // overlong '/'
      "\xF0\x8F\xBF\xBF",  // overlong U+FFFF
      "\xED\xA0\x80",      // surrogate U+D800
      "\xED\xBF\xBF",      // surrogate U+DFFF
      "\xF4\x90\x80\x80",  // U+110000
      "\xF8\x88\x80\x80",  // a five-byte lead
      "\xFF",
  };
  for (const std::string& b : bad) {
    size_t len = 99;
    EXPECT_EQ(decode_utf8(b, 0, &len), -1) << testing::PrintToString(b);
    EXPECT_EQ(len, 99u);
  }
}

TEST(Utf8, RoundTripsEveryScalarValue) {
  int failures = 0;
  for (uint32_t cp = 0; cp <= 0x10FFFF; ++cp) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;
    std::string s;
    append_utf8(&s, cp);
    size_t len = 0;
    const size_t expected_len = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    failures += s.size() != expected_len || decode_utf8(s, 0, &len) != int32_t(cp) || len != expected_len;
  }
  EXPECT_EQ(failures, 0);
}

}  // namespace
}  // namespace pab
