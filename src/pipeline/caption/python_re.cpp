// Python `re` semantics for the prompt cleaner's patterns (see python_re.h). The pattern is
// parsed as CPython's re/_parser.py parses it, into a tree, compiled to a program of a
// backtracking machine whose choice points are tried in sre's order (the preferred branch of a
// greedy repeat is one more iteration), with an explicit stack so that long texts need no deep
// recursion.
#include "pipeline/caption/python_re.h"

#include <algorithm>
#include <array>
#include <iterator>
#include <limits>
#include <memory>

#include "core/error.h"

namespace pab::pyre {

namespace {

struct CodeRange {
  uint32_t first, last;
};
struct IgnoreCaseExtra {
  uint32_t letter, cp;
};

#include "pipeline/caption/unicode_class_table.inc"

template <size_t N>
bool in_ranges(const CodeRange (&table)[N], char32_t c) {
  const CodeRange* it = std::upper_bound(std::begin(table), std::end(table), uint32_t(c),
                                         [](uint32_t v, const CodeRange& r) { return v < r.first; });
  return it != std::begin(table) && c <= (it - 1)->last;
}

enum Category : uint8_t {
  kWord = 1,
  kNotWord = 2,
  kDigit = 4,
  kNotDigit = 8,
  kSpace = 16,
  kNotSpace = 32,
};

constexpr int kInfinite = std::numeric_limits<int>::max();

bool ascii_letter(char32_t c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
bool ascii_digit(char32_t c) {
  return c >= '0' && c <= '9';
}
int hex_value(char32_t c) {
  if (ascii_digit(c)) return int(c - '0');
  if (c >= 'a' && c <= 'f') return int(c - 'a' + 10);
  if (c >= 'A' && c <= 'F') return int(c - 'A' + 10);
  return -1;
}

// Whether c matches the ASCII letter `letter` under re.IGNORECASE.
bool ignore_case_equal(char32_t letter, char32_t c) {
  const char32_t lower = letter | 0x20;
  if (c == lower || c == (lower & ~char32_t(0x20))) return true;
  for (const IgnoreCaseExtra& e : kIgnoreCaseExtras)
    if (e.letter == lower && e.cp == c) return true;
  return false;
}

}  // namespace

namespace {

// The three classes of U+0000..U+007F, looked up from the tables once (bits 1, 2, 4).
const std::array<uint8_t, 128>& ascii_classes() {
  static const std::array<uint8_t, 128> table = [] {
    std::array<uint8_t, 128> t{};
    for (char32_t c = 0; c < 128; ++c)
      t[c] = uint8_t(in_ranges(kWordRanges, c) | in_ranges(kDigitRanges, c) << 1 | in_ranges(kSpaceRanges, c) << 2);
    return t;
  }();
  return table;
}

}  // namespace

bool is_word(char32_t c) {
  return c < 128 ? ascii_classes()[c] & 1 : in_ranges(kWordRanges, c);
}
bool is_digit(char32_t c) {
  return c < 128 ? ascii_classes()[c] & 2 : in_ranges(kDigitRanges, c);
}
bool is_space(char32_t c) {
  return c < 128 ? ascii_classes()[c] & 4 : in_ranges(kSpaceRanges, c);
}

Text Match::group(const Text& text, size_t k) const {
  if (spans[2 * k] < 0) return Text();
  return text.substr(size_t(spans[2 * k]), size_t(spans[2 * k + 1] - spans[2 * k]));
}

bool Regex::CharSet::contains_slow(char32_t c) const {
  const auto it = std::upper_bound(ranges.begin(), ranges.end(), c,
                                   [](char32_t v, const std::pair<char32_t, char32_t>& r) { return v < r.first; });
  bool in = it != ranges.begin() && c <= (it - 1)->second;
  if (!in && categories) {
    in = ((categories & kWord) && is_word(c)) || ((categories & kNotWord) && !is_word(c)) ||
         ((categories & kDigit) && is_digit(c)) || ((categories & kNotDigit) && !is_digit(c)) ||
         ((categories & kSpace) && is_space(c)) || ((categories & kNotSpace) && !is_space(c));
  }
  return in != negate;
}

// ---------------------------------------------------------------- the tree

struct Regex::Node {
  enum Kind { kLiteral, kSet, kAny, kBegin, kEnd, kEndString, kBoundary, kNotBoundary, kGroup, kLook, kRepeat };
  Kind kind;
  char32_t c = 0;                       // kLiteral
  int set = -1;                         // kSet
  int capture = -1;                     // kGroup: group number, -1 for (?:...)
  bool negate = false, behind = false;  // kLook
  int min = 1, max = 1;                 // kRepeat
  bool greedy = true;                   // kRepeat
  std::vector<std::vector<Node>> alts;  // kGroup, kLook: the alternatives; kRepeat: alts[0][0] is repeated
};

namespace {

using Node = Regex::Node;
using Seq = std::vector<Node>;

class Parser {
 public:
  Parser(std::u32string_view p, int flags, std::vector<Regex::CharSet>* sets)
      : p_(p), verbose_(flags & kVerbose), ignore_case_(flags & kIgnoreCase), sets_(sets) {}

  std::vector<Seq> parse(size_t* groups) {
    std::vector<Seq> alts = alternation();
    PAB_ASSERT(i_ == p_.size(), "unbalanced parenthesis in pattern at ", i_);
    *groups = groups_;
    return alts;
  }

 private:
  bool at_end() const { return i_ >= p_.size(); }
  char32_t peek() const { return at_end() ? 0 : p_[i_]; }
  char32_t get() {
    PAB_ASSERT(!at_end(), "pattern ends early");
    return p_[i_++];
  }
  bool eat(char32_t c) {
    if (!at_end() && p_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }

  // re/_parser.py skips whitespace and # comments before every item in VERBOSE mode.
  void skip_verbose() {
    if (!verbose_) return;
    while (!at_end()) {
      const char32_t c = p_[i_];
      if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f') {
        ++i_;
      } else if (c == '#') {
        while (!at_end() && p_[i_] != '\n') ++i_;
      } else {
        break;
      }
    }
  }

  std::vector<Seq> alternation() {
    std::vector<Seq> alts;
    alts.push_back(sequence());
    while (eat('|')) alts.push_back(sequence());
    return alts;
  }

  Seq sequence() {
    Seq seq;
    for (;;) {
      skip_verbose();
      if (at_end() || peek() == '|' || peek() == ')') return seq;
      const char32_t c = peek();
      if (c == '*' || c == '+' || c == '?' || c == '{') {
        const size_t here = i_;
        int min = 0, max = kInfinite;
        if (!quantifier(&min, &max)) {
          i_ = here + 1;  // a '{' that does not make a quantifier is itself
          seq.push_back(literal('{'));
          continue;
        }
        PAB_ASSERT(!seq.empty(), "nothing to repeat in pattern at ", here);
        PAB_ASSERT(seq.back().kind != Node::kRepeat, "multiple repeat in pattern at ", here);
        PAB_ASSERT(!(seq.back().kind >= Node::kBegin && seq.back().kind <= Node::kNotBoundary),
                   "repeat of an assertion at ", here);
        PAB_ASSERT(peek() != '+', "possessive quantifiers are not supported");
        Node r;
        r.kind = Node::kRepeat;
        r.min = min;
        r.max = max;
        r.greedy = !eat('?');
        r.alts.push_back({std::move(seq.back())});
        seq.back() = std::move(r);
        continue;
      }
      seq.push_back(atom());
    }
  }

  bool quantifier(int* min, int* max) {
    const char32_t c = get();
    if (c == '*') return (*min = 0, *max = kInfinite, true);
    if (c == '+') return (*min = 1, *max = kInfinite, true);
    if (c == '?') return (*min = 0, *max = 1, true);
    if (peek() == '}') return false;
    std::u32string lo, hi;
    while (ascii_digit(peek())) lo += get();
    if (eat(',')) {
      while (ascii_digit(peek())) hi += get();
    } else {
      hi = lo;
    }
    if (!eat('}')) return false;
    const auto number = [](const std::u32string& s, int dflt) {
      if (s.empty()) return dflt;
      int v = 0;
      for (char32_t d : s) v = v * 10 + int(d - '0');
      return v;
    };
    *min = number(lo, 0);
    *max = number(hi, kInfinite);
    PAB_ASSERT(*min <= *max, "min repeat greater than max repeat");
    return true;
  }

  Node literal(char32_t c) {
    Node n;
    n.kind = Node::kLiteral;
    n.c = c;
    PAB_ASSERT(!ignore_case_ || !(c > 0x7F) || !is_word(c), "IGNORECASE is supported for ASCII only");
    return n;
  }
  Node simple(Node::Kind kind) {
    Node n;
    n.kind = kind;
    return n;
  }
  Node set_node(Regex::CharSet set) {
    PAB_ASSERT(!ignore_case_ || set.ranges.empty(), "IGNORECASE classes are supported for \\d \\w \\s only");
    for (char32_t c = 0; c < 128; ++c)
      if (set.contains_slow(c)) set.ascii[c >> 6] |= uint64_t(1) << (c & 63);
    Node n;
    n.kind = Node::kSet;
    n.set = int(sets_->size());
    sets_->push_back(std::move(set));
    return n;
  }

  Node atom() {
    const char32_t c = get();
    switch (c) {
      case '.':
        return simple(Node::kAny);
      case '^':
        return simple(Node::kBegin);
      case '$':
        return simple(Node::kEnd);
      case '[':
        return set_node(char_class());
      case '(':
        return group();
      case '\\':
        return escape();
      default:
        return literal(c);
    }
  }

  Node group() {
    Node n;
    n.kind = Node::kGroup;
    if (eat('?')) {
      const char32_t c = get();
      if (c == ':') {
      } else if (c == '=' || c == '!') {
        n.kind = Node::kLook;
        n.negate = c == '!';
      } else if (c == '<' && (peek() == '=' || peek() == '!')) {
        n.kind = Node::kLook;
        n.behind = true;
        n.negate = get() == '!';
      } else {
        PAB_ASSERT(false, "unsupported group (?", std::string(1, char(c)), " in pattern");
      }
    } else {
      n.capture = int(++groups_);
    }
    n.alts = alternation();
    PAB_ASSERT(eat(')'), "missing ) in pattern");
    return n;
  }

  // A code point escape after the backslash (x, u, U, or one of the ESCAPES letters); -1 if none.
  int64_t code_escape(char32_t c) {
    int digits = c == 'x' ? 2 : c == 'u' ? 4 : c == 'U' ? 8 : 0;
    if (digits) {
      int64_t v = 0;
      for (int k = 0; k < digits; ++k) {
        const int h = hex_value(get());
        PAB_ASSERT(h >= 0, "incomplete escape in pattern");
        v = v * 16 + h;
      }
      PAB_ASSERT(v <= 0x10FFFF, "escape beyond U+10FFFF in pattern");
      return v;
    }
    switch (c) {
      case 'a':
        return 7;
      case 'f':
        return 12;
      case 'n':
        return 10;
      case 'r':
        return 13;
      case 't':
        return 9;
      case 'v':
        return 11;
      case '\\':
        return '\\';
      default:
        return -1;
    }
  }

  uint8_t category(char32_t c) {
    switch (c) {
      case 'd':
        return kDigit;
      case 'D':
        return kNotDigit;
      case 'w':
        return kWord;
      case 'W':
        return kNotWord;
      case 's':
        return kSpace;
      case 'S':
        return kNotSpace;
      default:
        return 0;
    }
  }

  Node escape() {
    const char32_t c = get();
    if (const uint8_t cat = category(c)) {
      Regex::CharSet s;
      s.categories = cat;
      return set_node(std::move(s));
    }
    if (c == 'b') return simple(Node::kBoundary);
    if (c == 'B') return simple(Node::kNotBoundary);
    if (c == 'A') return simple(Node::kBegin);
    if (c == 'Z') return simple(Node::kEndString);
    const int64_t v = code_escape(c);
    if (v >= 0) return literal(char32_t(v));
    PAB_ASSERT(!ascii_letter(c) && !ascii_digit(c), "unsupported escape \\", std::string(1, char(c)), " in pattern");
    return literal(c);
  }

  // One class item after its first character `c`: a code point, or -1 after adding a category.
  int64_t class_item(char32_t c, Regex::CharSet* set) {
    if (c != '\\') return c;
    const char32_t e = get();
    if (const uint8_t cat = category(e)) {
      set->categories |= cat;
      return -1;
    }
    if (e == 'b') return 8;  // backspace inside a class
    const int64_t v = code_escape(e);
    if (v >= 0) return v;
    PAB_ASSERT(!ascii_letter(e) && !ascii_digit(e), "unsupported class escape \\", std::string(1, char(e)));
    return e;
  }

  Regex::CharSet char_class() {
    Regex::CharSet set;
    set.negate = eat('^');
    bool any = false;
    for (;;) {
      const char32_t c = get();
      if (c == ']' && any) break;
      any = true;
      const int64_t lo = class_item(c, &set);
      if (eat('-')) {
        const char32_t d = get();
        if (d == ']') {
          if (lo >= 0) set.ranges.push_back({char32_t(lo), char32_t(lo)});
          set.ranges.push_back({'-', '-'});
          break;
        }
        const int64_t hi = class_item(d, &set);
        PAB_ASSERT(lo >= 0 && hi >= 0 && hi >= lo, "bad character range in pattern");
        set.ranges.push_back({char32_t(lo), char32_t(hi)});
      } else if (lo >= 0) {
        set.ranges.push_back({char32_t(lo), char32_t(lo)});
      }
    }
    // Sorted and merged, for a binary search.
    std::sort(set.ranges.begin(), set.ranges.end());
    std::vector<std::pair<char32_t, char32_t>> merged;
    for (const auto& r : set.ranges) {
      if (!merged.empty() && r.first <= merged.back().second + 1)
        merged.back().second = std::max(merged.back().second, r.second);
      else
        merged.push_back(r);
    }
    set.ranges = std::move(merged);
    return set;
  }

  std::u32string_view p_;
  size_t i_ = 0;
  bool verbose_, ignore_case_;
  std::vector<Regex::CharSet>* sets_;
  size_t groups_ = 0;
};

bool nullable(const Seq& seq);
bool nullable(const Node& n) {
  switch (n.kind) {
    case Node::kLiteral:
    case Node::kSet:
    case Node::kAny:
      return false;
    case Node::kGroup:
      return std::any_of(n.alts.begin(), n.alts.end(), [](const Seq& s) { return nullable(s); });
    case Node::kRepeat:
      return n.min == 0 || nullable(n.alts[0][0]);
    default:
      return true;  // assertions
  }
}
bool nullable(const Seq& seq) {
  return std::all_of(seq.begin(), seq.end(), [](const Node& n) { return nullable(n); });
}

// The fixed number of code points a lookbehind's body matches (Python allows no other).
int width(const Seq& seq);
int width(const Node& n) {
  switch (n.kind) {
    case Node::kLiteral:
    case Node::kSet:
    case Node::kAny:
      return 1;
    case Node::kGroup: {
      const int w = width(n.alts[0]);
      for (const Seq& s : n.alts) PAB_ASSERT(width(s) == w, "look-behind requires fixed-width pattern");
      return w;
    }
    case Node::kRepeat:
      PAB_ASSERT(n.min == n.max, "look-behind requires fixed-width pattern");
      return n.min * width(n.alts[0][0]);
    default:
      return 0;
  }
}
int width(const Seq& seq) {
  int w = 0;
  for (const Node& n : seq) w += width(n);
  return w;
}

bool has_capture(const Seq& seq) {
  for (const Node& n : seq) {
    if (n.kind == Node::kGroup && n.capture >= 0) return true;
    for (const Seq& s : n.alts)
      if (has_capture(s)) return true;
  }
  return false;
}

class Compiler {
 public:
  explicit Compiler(std::vector<Regex::Inst>* prog) : prog_(prog) {}

  void alternation(const std::vector<Seq>& alts) {
    std::vector<size_t> jumps;
    for (size_t a = 0; a < alts.size(); ++a) {
      size_t split = 0;
      if (a + 1 < alts.size()) split = emit(Regex::Inst::kSplit);
      sequence(alts[a]);
      if (a + 1 < alts.size()) {
        jumps.push_back(emit(Regex::Inst::kJmp));
        at(split).x = int32_t(split + 1);
        at(split).y = here();
      }
    }
    for (size_t j : jumps) at(j).x = here();
  }

  void sequence(const Seq& seq) {
    for (const Node& n : seq) node(n);
  }

 private:
  Regex::Inst& at(size_t pc) { return (*prog_)[pc]; }
  int32_t here() const { return int32_t(prog_->size()); }
  size_t emit(Regex::Inst::Op op) {
    Regex::Inst inst;
    inst.op = op;
    prog_->push_back(inst);
    return prog_->size() - 1;
  }

  void node(const Node& n) {
    using I = Regex::Inst;
    switch (n.kind) {
      case Node::kLiteral: {
        const size_t pc = emit(I::kLiteral);
        at(pc).c = n.c;
        at(pc).ignore_case = ignore_case_ && ascii_letter(n.c);
        return;
      }
      case Node::kSet:
        at(emit(I::kSet)).x = n.set;
        return;
      case Node::kAny:
        emit(I::kAny);
        return;
      case Node::kBegin:
        emit(I::kBegin);
        return;
      case Node::kEnd:
        emit(I::kEnd);
        return;
      case Node::kEndString:
        emit(I::kEndString);
        return;
      case Node::kBoundary:
        emit(I::kBoundary);
        return;
      case Node::kNotBoundary:
        emit(I::kNotBoundary);
        return;
      case Node::kGroup:
        if (n.capture >= 0) at(emit(I::kSave)).x = 2 * n.capture;
        alternation(n.alts);
        if (n.capture >= 0) at(emit(I::kSave)).x = 2 * n.capture + 1;
        return;
      case Node::kLook: {
        PAB_ASSERT(!std::any_of(n.alts.begin(), n.alts.end(), [](const Seq& s) { return has_capture(s); }),
                   "groups inside lookarounds are not supported");
        const size_t pc = emit(I::kLook);
        at(pc).negate = n.negate;
        at(pc).behind = n.behind;
        if (n.behind) {
          Node g;
          g.kind = Node::kGroup;
          g.alts = n.alts;
          at(pc).c = char32_t(width(g));
        }
        at(pc).x = int32_t(pc + 1);
        alternation(n.alts);
        emit(I::kMatch);
        at(pc).y = here();
        return;
      }
      case Node::kRepeat: {
        const Node& body = n.alts[0][0];
        // sre stops repeating where an iteration matched empty; an optional needs no such rule.
        PAB_ASSERT(n.max <= 1 || !nullable(body), "a repeat of something that can match empty is not supported");
        if (n.greedy && (body.kind == Node::kLiteral || body.kind == Node::kSet || body.kind == Node::kAny)) {
          // One character at a time, greedy: sre's REPEAT_ONE, the body at pc + 1.
          const size_t pc = emit(I::kRepeatOne);
          at(pc).x = n.min;
          at(pc).y = n.max;
          node(body);
          return;
        }
        for (int k = 0; k < n.min; ++k) node(body);
        if (n.max == kInfinite) {
          // loop: split body, out; body; jmp loop
          const size_t loop = emit(I::kSplit);
          node(body);
          at(emit(I::kJmp)).x = int32_t(loop);
          branch(loop, int32_t(loop + 1), here(), n.greedy);
        } else {
          std::vector<size_t> splits;
          for (int k = n.min; k < n.max; ++k) {
            splits.push_back(emit(I::kSplit));
            node(body);
          }
          for (size_t s : splits) branch(s, int32_t(s + 1), here(), n.greedy);
        }
        return;
      }
    }
  }

  // A split that prefers `more` (one more iteration) when greedy, `out` when lazy.
  void branch(size_t pc, int32_t more, int32_t out, bool greedy) {
    at(pc).x = greedy ? more : out;
    at(pc).y = greedy ? out : more;
  }

 public:
  bool ignore_case_ = false;

 private:
  std::vector<Regex::Inst>* prog_;
};

}  // namespace

Regex::Regex(std::u32string_view pattern, int flags) {
  Parser parser(pattern, flags, &sets_);
  const std::vector<Seq> alts = parser.parse(&groups_);
  Compiler compiler(&prog_);
  compiler.ignore_case_ = flags & kIgnoreCase;
  compiler.alternation(alts);
  Inst end;
  end.op = Inst::kMatch;
  prog_.push_back(end);
  anchored_ = alts.size() == 1 && !alts[0].empty() && alts[0][0].kind == Node::kBegin;
  // The first instruction past the group saves, if it must take a character.
  size_t pc = 0;
  while (prog_[pc].op == Inst::kSave) ++pc;
  const Inst::Op op = prog_[pc].op;
  if (op == Inst::kLiteral || op == Inst::kSet || op == Inst::kAny) first_ = int32_t(pc);
  if (op == Inst::kRepeatOne && prog_[pc].x >= 1) first_ = int32_t(pc + 1);
}

// Whether the one-character instruction `in` matches c.
bool Regex::char_matches(const Inst& in, char32_t c) const {
  switch (in.op) {
    case Inst::kLiteral:
      return in.ignore_case ? ignore_case_equal(in.c, c) : c == in.c;
    case Inst::kSet:
      return sets_[size_t(in.x)].contains(c);
    case Inst::kAny:
      return c != '\n';
    default:
      PAB_ASSERT(false, "not a one-character instruction");
  }
}

// One attempt from `pc` at `pos`: true, the end in *end, if the program reaches kMatch. The
// stack holds choice points, the capture values to restore when backtracking past a kSave, and
// the counts a kRepeatOne may still give back.
bool Regex::run_at(const Text& text, size_t pc, size_t pos, size_t start, bool must_advance,
                   std::vector<ptrdiff_t>* caps, size_t* end, std::vector<Backtrack>* stack) const {
  stack->clear();
  const size_t n = text.size();
  for (;;) {
    bool ok = true;
    const Inst& in = prog_[pc];
    switch (in.op) {
      case Inst::kLiteral:
      case Inst::kSet:
      case Inst::kAny:
        ok = pos < n && char_matches(in, text[pos]);
        if (ok) ++pos, ++pc;
        break;
      case Inst::kRepeatOne: {
        const Inst& body = prog_[pc + 1];
        const size_t max = in.y == kInfinite ? n - pos : std::min(n - pos, size_t(in.y));
        size_t count = 0;
        while (count < max && char_matches(body, text[pos + count])) ++count;
        ok = count >= size_t(in.x);
        if (ok) {
          if (count > size_t(in.x)) stack->push_back({Backtrack::kRepeat, int32_t(pc), pos, count - 1});
          pos += count;
          pc += 2;
        }
        break;
      }
      case Inst::kSplit:
        stack->push_back({Backtrack::kChoice, in.y, pos, 0});
        pc = size_t(in.x);
        break;
      case Inst::kJmp:
        pc = size_t(in.x);
        break;
      case Inst::kSave:
        if (caps) {
          stack->push_back({Backtrack::kRestore, in.x, size_t((*caps)[size_t(in.x)] + 1), 0});
          (*caps)[size_t(in.x)] = ptrdiff_t(pos);
        }
        ++pc;
        break;
      case Inst::kBegin:
        ok = pos == 0;
        ++pc;
        break;
      case Inst::kEnd:  // Python's $: at the end, or before a newline that ends the text
        ok = pos == n || (pos + 1 == n && text[pos] == '\n');
        ++pc;
        break;
      case Inst::kEndString:
        ok = pos == n;
        ++pc;
        break;
      case Inst::kBoundary:
      case Inst::kNotBoundary: {
        // sre: never at all in an empty text.
        const bool before = pos > 0 && is_word(text[pos - 1]);
        const bool after = pos < n && is_word(text[pos]);
        ok = n > 0 && ((before != after) == (in.op == Inst::kBoundary));
        ++pc;
        break;
      }
      case Inst::kLook: {
        bool found = false;
        size_t sub_end = 0;
        std::vector<Backtrack> sub_stack;
        if (!in.behind) {
          found = run_at(text, size_t(in.x), pos, pos, false, nullptr, &sub_end, &sub_stack);
        } else if (pos >= size_t(in.c)) {
          found = run_at(text, size_t(in.x), pos - size_t(in.c), pos, false, nullptr, &sub_end, &sub_stack);
        }
        ok = found != in.negate;
        pc = size_t(in.y);
        break;
      }
      case Inst::kMatch:
        if (!(must_advance && pos == start)) {
          *end = pos;
          return true;
        }
        ok = false;
        break;
    }
    if (ok) continue;
    // Backtrack to the latest choice point, restoring captures on the way.
    for (;;) {
      if (stack->empty()) return false;
      Backtrack& e = stack->back();
      if (e.kind == Backtrack::kRestore) {
        (*caps)[size_t(e.pc)] = ptrdiff_t(e.pos) - 1;
        stack->pop_back();
        continue;
      }
      if (e.kind == Backtrack::kChoice) {
        pc = size_t(e.pc);
        pos = e.pos;
        stack->pop_back();
        break;
      }
      // A kRepeatOne gives back one more character (as far as its minimum); when a
      // one-character instruction follows, only where that instruction can match (sre's
      // REPEAT_ONE does the same for a literal).
      const Inst& rep = prog_[size_t(e.pc)];
      const Inst& next = prog_[size_t(e.pc) + 2];
      const bool one_char = next.op == Inst::kLiteral || next.op == Inst::kSet || next.op == Inst::kAny;
      size_t count = e.count;
      if (one_char) {
        while (count > size_t(rep.x) && (e.pos + count >= n || !char_matches(next, text[e.pos + count]))) --count;
        if (e.pos + count >= n || !char_matches(next, text[e.pos + count])) {
          stack->pop_back();  // not even the minimum is followed by what must follow
          continue;
        }
      }
      pc = size_t(e.pc) + 2;
      pos = e.pos + count;
      if (count > size_t(rep.x))
        e.count = count - 1;
      else
        stack->pop_back();
      break;
    }
  }
}

bool Regex::run(const Text& text, size_t start, bool must_advance, Match* m, Scratch* scratch) const {
  std::vector<ptrdiff_t>& caps = scratch->caps;
  caps.assign(2 * (groups_ + 1), -1);
  size_t end = 0;
  if (!run_at(text, 0, start, start, must_advance, &caps, &end, &scratch->stack)) return false;
  if (m) {
    m->begin = start;
    m->end = end;
    caps[0] = ptrdiff_t(start);
    caps[1] = ptrdiff_t(end);
    m->spans = caps;
  }
  return true;
}

bool Regex::match(const Text& text, size_t pos, Match* m) const {
  Scratch scratch;
  return pos <= text.size() && run(text, pos, false, m, &scratch);
}

bool Regex::search_from(const Text& text, size_t pos, bool must_advance, Match* m) const {
  Scratch scratch;
  for (size_t start = pos; start <= text.size(); ++start) {
    // A match must begin with a character the first instruction takes (when it takes one).
    if (first_ >= 0 && (start == text.size() || !char_matches(prog_[size_t(first_)], text[start]))) continue;
    if (run(text, start, must_advance && start == pos, m, &scratch)) return true;
    if (anchored_) return false;
  }
  return false;
}

bool Regex::search(const Text& text, size_t pos, Match* m) const {
  return search_from(text, pos, false, m);
}

Text Regex::sub(const Text& text, const std::function<Text(const Text&, const Match&)>& fn) const {
  // As CPython's pattern_subx: after an empty match the next one must not be empty at the same place.
  Text out;
  size_t last = 0, pos = 0;
  bool must_advance = false;
  Match m;
  while (pos <= text.size() && search_from(text, pos, must_advance, &m)) {
    out.append(text, last, m.begin - last);
    out += fn(text, m);
    last = m.end;
    must_advance = m.end == m.begin;
    pos = m.end;
  }
  out.append(text, last, Text::npos);
  return out;
}

Text Regex::sub(const Text& text, std::u32string_view repl) const {
  // The template: literal pieces and group numbers (-1 - k for group k).
  std::vector<std::pair<Text, int>> pieces;
  Text lit;
  for (size_t i = 0; i < repl.size(); ++i) {
    if (repl[i] != '\\') {
      lit += repl[i];
      continue;
    }
    PAB_ASSERT(i + 1 < repl.size() && ascii_digit(repl[i + 1]) && repl[i + 1] != '0' &&
                   (i + 2 >= repl.size() || !ascii_digit(repl[i + 2])),
               "only \\1 ... \\9 are supported in a replacement");
    const int k = int(repl[++i] - '0');
    PAB_ASSERT(size_t(k) <= groups_, "invalid group reference ", k);
    pieces.push_back({lit, k});
    lit.clear();
  }
  pieces.push_back({lit, 0});
  return sub(text, [&](const Text& t, const Match& m) {
    Text r;
    for (const auto& [piece, k] : pieces) {
      r += piece;
      if (k > 0) r += m.group(t, size_t(k));
    }
    return r;
  });
}

size_t Regex::count(const Text& text) const {
  size_t count = 0;
  sub(text, [&](const Text&, const Match&) {
    ++count;
    return Text();
  });
  return count;
}

}  // namespace pab::pyre
