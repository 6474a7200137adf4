// Python's `re` on str, for the patterns the prompt cleaner runs: a backtracking matcher that
// tries alternatives and repetitions in the order CPython's sre does, so that match, search, sub
// and findall find what Python finds, with Python's Unicode \w, \d, \s and \b.
//
// The syntax is the part of Python's that those patterns use: literals and escapes (\xHH,
// \uHHHH, \UHHHHHHHH, \n and the like, escaped punctuation), classes with ranges, negation and
// \d \D \w \W \s \S, '.', ^ $ \A \Z \b \B, groups (capturing and (?:...)), lookahead and
// fixed-width lookbehind, | and the greedy and lazy quantifiers * + ? {m} {m,} {,n} {m,n};
// flags VERBOSE and IGNORECASE (ASCII letters only). Anything else (backreferences, named
// groups, possessive quantifiers, a quantifier over something that can match empty) is a
// programming error (PAB_ASSERT): patterns are the program's, never the user's.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace pab::pyre {

// A Python str: one element per code point.
using Text = std::u32string;

enum Flags : int { kVerbose = 1, kIgnoreCase = 2 };

// Python's character classes on str (re's \w, \d, \s; str.isspace() is \s).
bool is_word(char32_t c);
bool is_digit(char32_t c);
bool is_space(char32_t c);

struct Match {
  size_t begin = 0, end = 0;
  // [2 * k, 2 * k + 1]: where group k (0: the whole match) begins and ends; -1 if it took no part.
  std::vector<ptrdiff_t> spans;
  bool matched(size_t group) const { return spans[2 * group] >= 0; }
  Text group(const Text& text, size_t k) const;
};

class Regex {
 public:
  explicit Regex(std::u32string_view pattern, int flags = 0);

  // pattern.match(text, pos): a match that begins at pos.
  bool match(const Text& text, size_t pos, Match* m = nullptr) const;
  // pattern.search(text, pos): the first match that begins at pos or later.
  bool search(const Text& text, size_t pos = 0, Match* m = nullptr) const;
  // pattern.sub(repl, text), repl a template: literal text and \1 ... \9.
  Text sub(const Text& text, std::u32string_view repl) const;
  // pattern.sub(fn, text).
  Text sub(const Text& text, const std::function<Text(const Text&, const Match&)>& fn) const;
  // len(pattern.findall(text)).
  size_t count(const Text& text) const;

  size_t groups() const { return groups_; }

  struct Node;
  // A character class: ranges (sorted, disjoint once parsed) and categories, possibly negated.
  struct CharSet {
    std::vector<std::pair<char32_t, char32_t>> ranges;
    uint8_t categories = 0;  // kCategory* bits
    bool negate = false;
    uint64_t ascii[2] = {0, 0};  // contains() of U+0000..U+007F, once parsed
    bool contains(char32_t c) const { return c < 128 ? (ascii[c >> 6] >> (c & 63)) & 1 : contains_slow(c); }
    bool contains_slow(char32_t c) const;
  };
  struct Inst {
    enum Op : uint8_t {
      kLiteral,
      kSet,
      kAny,
      kRepeatOne,
      kSplit,
      kJmp,
      kSave,
      kBegin,
      kEnd,
      kEndString,
      kBoundary,
      kNotBoundary,
      kLook,
      kMatch
    };
    Op op;
    bool ignore_case = false;  // kLiteral
    bool negate = false;       // kLook
    bool behind = false;       // kLook
    char32_t c = 0;            // kLiteral
    int32_t x = 0, y = 0;      // kSplit: preferred, other; kJmp: x; kSave: slot x; kSet: set x; kLook: body x,
                               // continue at y, width (lookbehind) c; kRepeatOne: min x, max y, the
                               // one-character body at the next pc
  };
  struct Backtrack {
    enum Kind : uint8_t { kChoice, kRestore, kRepeat } kind;
    int32_t pc;    // kChoice: where to go on; kRestore: the capture slot; kRepeat: the kRepeatOne
    size_t pos;    // kChoice: the position; kRestore: the earlier value + 1; kRepeat: where it began
    size_t count;  // kRepeat: the characters it takes next time
  };

 private:
  struct Scratch {
    std::vector<ptrdiff_t> caps;
    std::vector<Backtrack> stack;
  };
  bool char_matches(const Inst& in, char32_t c) const;
  bool run(const Text& text, size_t start, bool must_advance, Match* m, Scratch* scratch) const;
  bool run_at(const Text& text, size_t pc, size_t pos, size_t start, bool must_advance, std::vector<ptrdiff_t>* caps,
              size_t* end, std::vector<Backtrack>* stack) const;
  bool search_from(const Text& text, size_t pos, bool must_advance, Match* m) const;

  std::vector<Inst> prog_;
  std::vector<CharSet> sets_;
  size_t groups_ = 0;
  bool anchored_ = false;  // begins with ^ or \A: a search tries the first position only
  int32_t first_ = -1;     // the one-character instruction every match begins with, if any
};

}  // namespace pab::pyre
