// T5 tokenization (see tokenizer.h). The steps and their quirks are those of
// transformers 5's T5Tokenizer on the HF tokenizers library, not those of the
// sentencepiece library's own Encode (which normalizes by longest match over
// the whole text and ignores special tokens written in it):
//  1. added tokens (</s>, <pad>, <unk>, <extra_id_N>, ...) are cut out of the
//     raw text, leftmost-longest;
//  2. each remaining segment is normalized by the charsmap of spiece.model
//     one extended grapheme cluster at a time: a cluster shorter than 6 bytes
//     that starts with a charsmap key is replaced as a whole by the mapping of
//     its SHORTEST such key (later code points of the cluster are dropped);
//     other clusters are mapped code point by code point;
//  3. the text is split on Unicode White_Space, each word gets a leading U+2581;
//  4. each word is segmented by a unigram Viterbi over all vocabulary pieces
//     (ties keep the first candidate), unknown code points score
//     min_score - 10 and consecutive unknowns fuse into one <unk>;
//  5. </s> is appended.
#include "pipeline/tokenizer.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string_view>
#include <unordered_map>

#include "core/utf8.h"
#include "io/atomic_file.h"
#include "io/config.h"

namespace pab {

namespace {

namespace fs = std::filesystem;

constexpr std::string_view kMetaspace = "\xE2\x96\x81";  // U+2581, SentencePiece's word marker
constexpr int64_t kUnkId = 2;                            // transformers' T5Tokenizer fixes the unigram unk id
constexpr double kUnkPenalty = 10.0;

// ------------------------------------------------------------------ UTF-8

// Byte length of the (valid) UTF-8 sequence whose lead byte is `b`.
size_t utf8_length(char b) {
  const uint8_t u = uint8_t(b);
  return u < 0x80 ? 1 : u < 0xE0 ? 2 : u < 0xF0 ? 3 : 4;
}

void check_utf8(std::string_view text, const char* what) {
  for (size_t pos = 0, len = 0; pos < text.size(); pos += len)
    if (decode_utf8(text, pos, &len) < 0) fail("T5 tokenizer: ", what, " is not valid UTF-8 (byte ", pos, ")");
}

// ------------------------------------------------------------------ Unicode properties

// The White_Space property (Rust's char::is_whitespace, regex \s).
bool is_white_space(int32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

enum class Gcb : uint8_t {  // Grapheme_Cluster_Break, in the table's order
  other,
  cr,
  lf,
  control,
  extend,
  zwj,
  regional_indicator,
  prepend,
  spacing_mark,
  l,
  v,
  t,
  lv,
  lvt
};
enum class Incb : uint8_t { none, linker, consonant, extend };  // Indic_Conjunct_Break

struct GraphemeProps {
  Gcb gcb = Gcb::other;
  bool pictographic = false;  // Extended_Pictographic
  Incb incb = Incb::none;
};

struct PropRange {
  uint32_t first, last;
  uint8_t props;
};

constexpr PropRange kGraphemeTable[] = {
#include "pipeline/grapheme_table.inc"
};

GraphemeProps grapheme_props(int32_t cp) {
  if (cp >= 0xAC00 && cp <= 0xD7A3) return {(cp - 0xAC00) % 28 == 0 ? Gcb::lv : Gcb::lvt, false, Incb::none};
  const auto* end = std::end(kGraphemeTable);
  const auto* it = std::upper_bound(std::begin(kGraphemeTable), end, uint32_t(cp),
                                    [](uint32_t c, const PropRange& r) { return c < r.first; });
  if (it == std::begin(kGraphemeTable) || uint32_t(cp) > (it - 1)->last) return {};
  const uint8_t p = (it - 1)->props;
  return {Gcb(p & 0x0F), (p & 0x10) != 0, Incb((p >> 5) & 0x03)};
}

bool is_control_break(Gcb g) {
  return g == Gcb::cr || g == Gcb::lf || g == Gcb::control;
}

enum class PictState { none, pict, pict_zwj };     // ExtPict Extend* [ZWJ] just before
enum class ConjState { none, consonant, linked };  // InCB Consonant [Extend Linker]* just before

// Whether no cluster boundary falls between `prev` and `cur` (UAX #29, GB3-GB13).
bool same_cluster(const GraphemeProps& prev, const GraphemeProps& cur, PictState pict, ConjState conj, int ri_run) {
  const Gcb p = prev.gcb, c = cur.gcb;
  if (p == Gcb::cr && c == Gcb::lf) return true;                                                  // GB3
  if (is_control_break(p) || is_control_break(c)) return false;                                   // GB4, GB5
  if (p == Gcb::l && (c == Gcb::l || c == Gcb::v || c == Gcb::lv || c == Gcb::lvt)) return true;  // GB6
  if ((p == Gcb::lv || p == Gcb::v) && (c == Gcb::v || c == Gcb::t)) return true;                 // GB7
  if ((p == Gcb::lvt || p == Gcb::t) && c == Gcb::t) return true;                                 // GB8
  if (c == Gcb::extend || c == Gcb::zwj || c == Gcb::spacing_mark) return true;                   // GB9, GB9a
  if (p == Gcb::prepend) return true;                                                             // GB9b
  if (conj == ConjState::linked && cur.incb == Incb::consonant) return true;                      // GB9c
  if (pict == PictState::pict_zwj && cur.pictographic) return true;                               // GB11
  return p == Gcb::regional_indicator && c == Gcb::regional_indicator && ri_run % 2 == 1;         // GB12, GB13
}

// Splits valid UTF-8 text into extended grapheme clusters.
std::vector<std::string_view> grapheme_clusters(std::string_view s) {
  std::vector<std::string_view> out;
  PictState pict = PictState::none;
  ConjState conj = ConjState::none;
  int ri_run = 0;  // regional indicators just before
  GraphemeProps prev;
  size_t start = 0;
  for (size_t pos = 0, len = 0; pos < s.size(); pos += len) {
    const GraphemeProps cur = grapheme_props(decode_utf8(s, pos, &len));
    if (pos > 0 && !same_cluster(prev, cur, pict, conj, ri_run)) {
      out.push_back(s.substr(start, pos - start));
      start = pos;
    }
    if (cur.pictographic)
      pict = PictState::pict;
    else if (pict == PictState::pict && cur.gcb == Gcb::extend)
      pict = PictState::pict;
    else if (pict == PictState::pict && cur.gcb == Gcb::zwj)
      pict = PictState::pict_zwj;
    else
      pict = PictState::none;
    if (cur.incb == Incb::consonant)
      conj = ConjState::consonant;
    else if (conj != ConjState::none && cur.incb == Incb::linker)
      conj = ConjState::linked;
    else if (conj == ConjState::none || cur.incb != Incb::extend)
      conj = ConjState::none;
    ri_run = cur.gcb == Gcb::regional_indicator ? ri_run + 1 : 0;
    prev = cur;
  }
  if (start < s.size()) out.push_back(s.substr(start));
  return out;
}

// ------------------------------------------------------------------ charsmap normalizer

// SentencePiece's precompiled_charsmap: a darts-clone double-array trie of
// byte strings whose values index NUL-terminated replacements.
class Charsmap {
 public:
  Charsmap() = default;
  Charsmap(std::string_view blob, const std::string& where) {
    if (blob.empty()) return;  // no normalization
    auto corrupt = [&](const char* why) { fail(where, ": precompiled_charsmap is corrupt (", why, ")"); };
    if (blob.size() < 4) corrupt("shorter than its header");
    const uint32_t trie_bytes = uint32_t(uint8_t(blob[0])) | uint32_t(uint8_t(blob[1])) << 8 |
                                uint32_t(uint8_t(blob[2])) << 16 | uint32_t(uint8_t(blob[3])) << 24;
    if (trie_bytes % 4 != 0 || trie_bytes == 0 || trie_bytes > blob.size() - 4) corrupt("bad trie size");
    units_.resize(trie_bytes / 4);
    for (size_t i = 0; i < units_.size(); ++i) {
      const char* p = blob.data() + 4 + 4 * i;
      units_[i] = uint32_t(uint8_t(p[0])) | uint32_t(uint8_t(p[1])) << 8 | uint32_t(uint8_t(p[2])) << 16 |
                  uint32_t(uint8_t(p[3])) << 24;
    }
    replacements_ = std::string(blob.substr(4 + trie_bytes));
    for (size_t pos = 0, len = 0; pos < replacements_.size(); pos += len)
      if (replacements_[pos] == '\0')
        len = 1;
      else if (decode_utf8(replacements_, pos, &len) < 0)
        corrupt("replacements are not UTF-8");
  }

  // The HF Precompiled normalizer (see the file comment, step 2).
  std::string normalize(std::string_view text) const {
    if (units_.empty()) return std::string(text);
    std::string out;
    out.reserve(text.size());
    for (std::string_view cluster : grapheme_clusters(text)) {
      if (cluster.size() < 6) {
        if (auto r = transform(cluster)) {
          out += *r;
          continue;
        }
      }
      for (size_t pos = 0; pos < cluster.size();) {
        const std::string_view c = cluster.substr(pos, utf8_length(cluster[pos]));
        const auto r = transform(c);
        out += r ? *r : c;
        pos += c.size();
      }
    }
    return out;
  }

 private:
  static bool has_leaf(uint32_t u) { return (u >> 8) & 1; }
  static uint32_t value(uint32_t u) { return u & ((1u << 31) - 1); }
  static uint32_t label(uint32_t u) { return u & ((1u << 31) | 0xFF); }
  static uint32_t offset(uint32_t u) { return (u >> 10) << ((u & (1u << 9)) >> 6); }

  // The replacement of the shortest key that is a prefix of `chunk`.
  std::optional<std::string_view> transform(std::string_view chunk) const {
    size_t node = offset(units_[0]);
    for (char ch : chunk) {
      const uint8_t c = uint8_t(ch);
      if (c == 0) break;
      node ^= c;
      if (node >= units_.size() || label(units_[node]) != c) return std::nullopt;
      const bool leaf = has_leaf(units_[node]);
      node ^= offset(units_[node]);
      if (leaf) {
        if (node >= units_.size()) return std::nullopt;
        const size_t begin = value(units_[node]);
        if (begin >= replacements_.size()) return std::string_view();
        const size_t end = replacements_.find('\0', begin);
        return std::string_view(replacements_).substr(begin, end == std::string::npos ? end : end - begin);
      }
    }
    return std::nullopt;
  }

  std::vector<uint32_t> units_;
  std::string replacements_;
};

// ------------------------------------------------------------------ spiece.model

// What the tokenizer reads of spiece.model's serialized ModelProto. It is read
// here rather than through the sentencepiece library, whose Load also builds
// the tries of its own encoder: 3 s for a 250k-piece model such as mT5's.
struct SpieceModel {
  std::vector<std::string> pieces;
  std::vector<double> scores;
  std::vector<int> types;  // SentencePiece.Type (1 normal, 2 unknown, 3 control, 4 user defined, ...)
  std::string charsmap;
};

class ProtoReader {
 public:
  ProtoReader(std::string_view data, const std::string& where) : data_(data), where_(where) {}
  bool done() const { return pos_ >= data_.size(); }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (done()) corrupt();
      const uint8_t b = uint8_t(data_[pos_++]);
      v |= uint64_t(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
    corrupt();
  }
  // Reads a field key; returns the field number and sets the wire type.
  uint32_t key(int* wire) {
    const uint64_t k = varint();
    *wire = int(k & 7);
    return uint32_t(k >> 3);
  }
  uint32_t fixed32() {
    if (4 > data_.size() - pos_) corrupt();
    const auto* p = reinterpret_cast<const uint8_t*>(data_.data() + pos_);
    pos_ += 4;
    return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
  }
  std::string_view bytes() {
    const uint64_t n = varint();
    if (n > data_.size() - pos_) corrupt();
    std::string_view v = data_.substr(pos_, n);
    pos_ += n;
    return v;
  }
  void skip(int wire) {
    if (wire == 0)
      varint();
    else if (wire == 1)
      advance(8);
    else if (wire == 2)
      bytes();
    else if (wire == 5)
      advance(4);
    else
      corrupt();
  }

 private:
  void advance(size_t n) {
    if (n > data_.size() - pos_) corrupt();
    pos_ += n;
  }
  [[noreturn]] void corrupt() const { fail(where_, ": not a valid SentencePiece model (malformed protobuf)"); }
  std::string_view data_;
  size_t pos_ = 0;
  const std::string& where_;
};

SpieceModel read_spiece_model(std::string_view model, const std::string& where) {
  SpieceModel m;
  ProtoReader r(model, where);
  while (!r.done()) {
    int wire = 0;
    const uint32_t field = r.key(&wire);
    if (field == 1 && wire == 2) {  // ModelProto.pieces: piece (1), score (2), type (3)
      ProtoReader piece(r.bytes(), where);
      std::string text;
      float score = 0;
      int type = 1;
      while (!piece.done()) {
        int w = 0;
        const uint32_t f = piece.key(&w);
        if (f == 1 && w == 2) {
          text = std::string(piece.bytes());
        } else if (f == 2 && w == 5) {
          const uint32_t bits = piece.fixed32();
          std::memcpy(&score, &bits, sizeof score);
        } else if (f == 3 && w == 0) {
          type = int(piece.varint());
        } else {
          piece.skip(w);
        }
      }
      m.pieces.push_back(std::move(text));
      m.scores.push_back(double(score));
      m.types.push_back(type);
    } else if (field == 3 && wire == 2) {  // ModelProto.normalizer_spec
      ProtoReader spec(r.bytes(), where);
      while (!spec.done()) {
        int w = 0;
        if (spec.key(&w) == 2 && w == 2)
          m.charsmap = std::string(spec.bytes());
        else
          spec.skip(w);
      }
    } else {
      r.skip(wire);
    }
  }
  return m;
}

// A token name in tokenizer_config.json: a string or an AddedToken object.
std::string token_name(const JsonConfig& c, const std::string& key, const std::string& fallback) {
  if (!c.has(key)) return fallback;
  const nlohmann::json& v = c.json().at(key);
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v.at("content").is_string()) return v.at("content").get<std::string>();
  c.unsupported(key, "expected a token string or an object with 'content'");
}

}  // namespace

// ------------------------------------------------------------------ the tokenizer

struct T5Tokenizer::Impl {
  struct AddedToken {
    std::string content;
    int64_t id = 0;
    bool lstrip = false, rstrip = false, normalized = false;
  };
  // A piece of the text: either an added token's id or text still to tokenize.
  struct Split {
    std::string_view text;
    int64_t id = -1;
  };

  std::string where;                // spiece.model or tokenizer.json, for messages
  std::vector<std::string> pieces;  // id -> piece (model pieces, then extra ids)
  std::vector<double> scores;
  std::unordered_map<std::string_view, int64_t> piece_ids;  // views into `pieces`
  size_t max_piece_bytes = 0;
  double unk_score = 0;
  Charsmap charsmap;
  std::vector<AddedToken> added;
  std::unordered_map<int64_t, std::string> added_text;  // ids beyond the vocabulary, for decode
  int64_t eos = 1, pad = 0, unk = kUnkId;

  int64_t id_of(std::string_view piece) const {
    auto it = piece_ids.find(piece);
    return it == piece_ids.end() ? -1 : it->second;
  }

  // Cuts the added tokens of the requested kind out of `text` (leftmost-longest,
  // honouring lstrip/rstrip), as the HF AddedVocabulary does.
  std::vector<Split> split_added(std::string_view text, bool normalized) const {
    std::vector<Split> out;
    size_t start_offset = 0, search = 0;
    while (search < text.size()) {
      const AddedToken* best = nullptr;
      size_t best_pos = text.size();
      for (const AddedToken& t : added) {
        if (t.normalized != normalized || t.content.empty()) continue;
        const size_t p = text.find(t.content, search);
        if (p == std::string_view::npos) continue;
        if (p < best_pos || (p == best_pos && t.content.size() > best->content.size())) {
          best = &t;
          best_pos = p;
        }
      }
      if (!best) break;
      size_t start = best_pos, stop = best_pos + best->content.size();
      search = stop;
      if (best->lstrip) {
        size_t s = start;
        while (s > 0) {
          size_t b = s - 1;
          while (b > 0 && (uint8_t(text[b]) & 0xC0) == 0x80) --b;
          size_t len = 0;
          if (!is_white_space(decode_utf8(text, b, &len))) break;
          s = b;
        }
        start = std::max(s, start_offset);
      }
      if (best->rstrip) {
        size_t len = 0;
        while (stop < text.size() && is_white_space(decode_utf8(text, stop, &len))) stop += len;
      }
      if (start_offset < start) out.push_back({text.substr(start_offset, start - start_offset), -1});
      out.push_back({text.substr(start, stop - start), best->id});
      start_offset = stop;
    }
    if (start_offset < text.size()) out.push_back({text.substr(start_offset), -1});
    return out;
  }

  // Unigram Viterbi over one pre-tokenized word (HF Unigram::encode_optimized).
  void encode_word(std::string_view word, std::vector<int64_t>* ids) const {
    struct Node {
      double score = 0;
      int64_t id = -1;
      size_t start = std::string::npos;
    };
    const size_t n = word.size();
    std::vector<Node> best(n + 1);
    for (size_t start = 0; start < n;) {
      const double base = best[start].score;
      const size_t char_len = utf8_length(word[start]);
      bool has_single = false;
      auto offer = [&](size_t end, double score, int64_t id) {
        Node& target = best[end];
        if (target.start == std::string::npos || base + score > target.score) target = {base + score, id, start};
      };
      for (size_t len = 1; len <= std::min(max_piece_bytes, n - start); ++len) {
        const int64_t id = id_of(word.substr(start, len));
        if (id < 0) continue;
        offer(start + len, scores[size_t(id)], id);
        if (len == char_len) has_single = true;
      }
      if (!has_single) offer(start + char_len, unk_score, unk);
      start += char_len;
    }
    // Back from the end; runs of unknowns become one token.
    std::vector<std::string_view> tokens;
    size_t unk_begin = std::string::npos, unk_end = 0;
    auto flush_unk = [&] {
      if (unk_begin != std::string::npos) tokens.push_back(word.substr(unk_begin, unk_end - unk_begin));
      unk_begin = std::string::npos;
    };
    for (size_t end = n; end > 0;) {
      const Node& node = best[end];
      if (node.id == unk) {
        if (unk_begin == std::string::npos) unk_end = end;
        unk_begin = node.start;
      } else {
        flush_unk();
        tokens.push_back(word.substr(node.start, end - node.start));
      }
      end = node.start;
    }
    flush_unk();
    for (auto it = tokens.rbegin(); it != tokens.rend(); ++it) {
      const int64_t id = id_of(*it);
      ids->push_back(id >= 0 ? id : unk);
    }
  }

  // Whitespace split, U+2581 prefix and split, then the unigram model.
  void encode_normalized(std::string_view text, std::vector<int64_t>* ids) const {
    size_t pos = 0;
    while (pos < text.size()) {
      size_t len = 0;
      if (is_white_space(decode_utf8(text, pos, &len))) {
        pos += len;
        continue;
      }
      size_t end = pos;
      while (end < text.size() && !is_white_space(decode_utf8(text, end, &len))) end += len;
      std::string word(text.substr(pos, end - pos));
      if (word.rfind(kMetaspace, 0) != 0) word.insert(0, kMetaspace);
      // Each U+2581 starts a new piece.
      for (size_t piece = 0; piece < word.size();) {
        size_t next = word.find(kMetaspace, piece + kMetaspace.size());
        if (next == std::string::npos) next = word.size();
        encode_word(std::string_view(word).substr(piece, next - piece), ids);
        piece = next;
      }
      pos = end;
    }
  }

  std::vector<int64_t> encode(const std::string& text) const {
    check_utf8(text, "the text");
    std::vector<int64_t> ids;
    for (const Split& raw : split_added(text, false)) {
      if (raw.id >= 0) {
        ids.push_back(raw.id);
        continue;
      }
      const std::string normalized = charsmap.normalize(raw.text);
      for (const Split& s : split_added(normalized, true)) {
        if (s.id >= 0)
          ids.push_back(s.id);
        else
          encode_normalized(s.text, &ids);
      }
    }
    ids.push_back(eos);
    return ids;
  }
};

T5Tokenizer::T5Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
T5Tokenizer::~T5Tokenizer() = default;

namespace {

// What a tokenizer file holds: the unigram vocabulary, the unknown piece, the
// normalizer's charsmap and the tokens it declares added (beside the special
// ones every T5 tokenizer has).
struct Vocabulary {
  std::vector<std::string> pieces;
  std::vector<double> scores;
  int64_t unk = kUnkId;
  std::string charsmap;
  std::vector<T5Tokenizer::Impl::AddedToken> added;
  bool holds_extra_ids = false;  // tokenizer.json lists the sentinels; spiece.model leaves them to extra_ids
};

Vocabulary read_spiece(const std::string& path) {
  SpieceModel m = read_spiece_model(read_file(path), path);
  const size_t size = m.pieces.size();
  if (size <= size_t(kUnkId)) fail(path, ": not a valid SentencePiece model (", size, " pieces)");
  for (size_t i = 0; i < size; ++i)  // as the sentencepiece library (and duplicates: T5Tokenizer::load)
    if (m.pieces[i].empty()) fail(path, ": not a valid SentencePiece model (piece ", i, " is empty)");
  Vocabulary v;
  v.charsmap = std::move(m.charsmap);
  // Control and user-defined pieces are cut out of the text whole (where the
  // tokenizer's config leaves them special tokens; see T5Tokenizer::load).
  for (size_t i = 0; i < size; ++i)
    if (m.types[i] == 3 || m.types[i] == 4) v.added.push_back({m.pieces[i], int64_t(i)});
  v.pieces = std::move(m.pieces);
  v.scores = std::move(m.scores);
  return v;
}

// RFC 4648 base64, as tokenizers stores the charsmap; fails naming `where`.
std::string base64_decode(std::string_view text, const std::string& where) {
  std::string out;
  uint32_t bits = 0;
  int count = 0;
  for (char c : text) {
    int v = c >= 'A' && c <= 'Z'   ? c - 'A'
            : c >= 'a' && c <= 'z' ? c - 'a' + 26
            : c >= '0' && c <= '9' ? c - '0' + 52
            : c == '+'             ? 62
            : c == '/'             ? 63
            : c == '='             ? -2
                                   : -1;
    if (v == -2) break;
    if (v < 0) fail(where, ": precompiled_charsmap is not base64");
    bits = (bits << 6) | uint32_t(v);
    if ((count += 6) >= 8) {
      count -= 8;
      out.push_back(char((bits >> count) & 0xFF));
    }
  }
  return out;
}

// tokenizer.json's model.vocab, its [piece, score] pairs, is most of the file
// (250k pairs for mT5, where a DOM of them takes half a second to build and
// free): this reads them straight into vectors and the rest of the file into
// a DOM, the vocabulary left an empty array there. Anything else in the
// vocabulary, or invalid JSON, stops it (sax_parse returns false) and the
// plain parse reports what is wrong.
class VocabStreamingReader final : public nlohmann::json_sax<nlohmann::json> {
 public:
  nlohmann::json root;
  std::vector<std::string> pieces;
  std::vector<double> scores;
  bool streamed = false;  // root.model.vocab was read into pieces and scores

  bool null() override { return !in_vocab() && add(nullptr); }
  bool boolean(bool b) override { return !in_vocab() && add(b); }
  bool number_integer(number_integer_t n) override { return in_vocab() ? score(double(n)) : add(n); }
  bool number_unsigned(number_unsigned_t n) override { return in_vocab() ? score(double(n)) : add(n); }
  bool number_float(number_float_t n, const string_t&) override { return in_vocab() ? score(n) : add(n); }
  bool binary(binary_t&) override { return false; }
  bool string(string_t& text) override {
    if (!in_vocab()) return add(std::move(text));
    if (entry_ != Entry::piece) return false;
    pieces.push_back(std::move(text));
    entry_ = Entry::score;
    return true;
  }
  bool key(string_t& k) override {
    key_ = std::move(k);
    return true;
  }
  bool start_object(std::size_t) override { return !in_vocab() && open(nlohmann::json::object()); }
  bool end_object() override {
    stack_.pop_back();
    keys_.pop_back();
    return true;
  }
  bool start_array(std::size_t) override {
    if (in_vocab()) {
      if (entry_ != Entry::none) return false;
      entry_ = Entry::piece;
      return true;
    }
    // root.model.vocab: an empty array in the DOM, its entries in the vectors.
    if (stack_.size() == 2 && keys_[1] == "model" && stack_[1]->is_object() && key_ == "vocab") {
      add(nlohmann::json::array());
      pieces.clear();
      scores.clear();
      streamed = vocab_ = true;
      return true;
    }
    return open(nlohmann::json::array());
  }
  bool end_array() override {
    if (!in_vocab()) {
      stack_.pop_back();
      keys_.pop_back();
    } else if (entry_ == Entry::end) {
      entry_ = Entry::none;
    } else if (entry_ == Entry::none) {
      vocab_ = false;
    } else {
      return false;
    }
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override { return false; }

 private:
  enum class Entry { none, piece, score, end };  // what comes next in a vocabulary entry

  bool in_vocab() const { return vocab_; }
  bool score(double value) {
    if (entry_ != Entry::score) return false;
    scores.push_back(value);
    entry_ = Entry::end;
    return true;
  }
  // Places a value in the innermost container (or as the root); returns it.
  nlohmann::json* place(nlohmann::json&& value) {
    if (stack_.empty()) {
      root = std::move(value);
      return &root;
    }
    nlohmann::json& parent = *stack_.back();
    if (parent.is_array()) {
      parent.push_back(std::move(value));
      return &parent.back();
    }
    // A second "model" replaces the first, as in the DOM: so does its vocabulary.
    if (stack_.size() == 1 && key_ == "model") streamed = false;
    nlohmann::json& slot = parent[key_];
    slot = std::move(value);
    return &slot;
  }
  bool add(nlohmann::json&& value) {
    place(std::move(value));
    return true;
  }
  bool open(nlohmann::json&& container) {
    const std::string k = stack_.empty() || stack_.back()->is_array() ? "" : key_;
    stack_.push_back(place(std::move(container)));
    keys_.push_back(k);
    return true;
  }

  std::vector<nlohmann::json*> stack_;  // the open containers, outermost first
  std::vector<std::string> keys_;       // the key each was placed under ("" in an array)
  std::string key_;                     // the last object key read
  bool vocab_ = false;
  Entry entry_ = Entry::none;
};

// tokenizer.json as transformers 5 writes a T5 tokenizer: a Unigram model,
// the Precompiled normalizer (alone or followed by the collapse of repeated
// spaces, which the whitespace split makes moot), WhitespaceSplit then
// Metaspace, and </s> appended. Other layouts tokenize differently and are
// refused naming the part.
Vocabulary read_tokenizer_json(const std::string& path) {
  Vocabulary v;
  VocabStreamingReader reader;
  const bool streamed = nlohmann::json::sax_parse(read_file(path), &reader) && reader.root.is_object() &&
                        reader.streamed && reader.pieces.size() > size_t(kUnkId) &&
                        reader.pieces.size() == reader.scores.size();
  if (streamed) {
    v.pieces = std::move(reader.pieces);
    v.scores = std::move(reader.scores);
  }
  const JsonConfig j = streamed ? JsonConfig(std::move(reader.root), path) : JsonConfig::load(path);
  const nlohmann::json& root = j.json();
  auto bad = [&](const std::string& what, const nlohmann::json& v) -> void {
    fail(path, ": ", what, " ", json_brief(v),
         " is not the T5 layout pab reads (a Unigram model, the Precompiled "
         "normalizer, WhitespaceSplit then Metaspace); an spiece.model beside it is read instead");
  };
  const nlohmann::json& model = root.value("model", nlohmann::json());
  if (!model.is_object() || model.value("type", "") != "Unigram") bad("model", model);
  if (model.value("byte_fallback", false)) bad("model.byte_fallback", model.at("byte_fallback"));
  if (!streamed) {
    const nlohmann::json& vocab = model.value("vocab", nlohmann::json());
    if (!vocab.is_array() || vocab.size() <= size_t(kUnkId)) bad("model.vocab", vocab);
    for (const nlohmann::json& e : vocab) {
      if (!e.is_array() || e.size() != 2 || !e[0].is_string() || !e[1].is_number()) bad("a model.vocab entry", e);
      v.pieces.push_back(e[0].get<std::string>());
      v.scores.push_back(e[1].get<double>());
    }
  }
  const nlohmann::json& unk = model.value("unk_id", nlohmann::json());
  if (!unk.is_number_unsigned() || unk.get<uint64_t>() >= v.pieces.size()) bad("model.unk_id", unk);
  v.unk = int64_t(unk.get<uint64_t>());

  // The normalizer: Precompiled, possibly in a Sequence with Replace(" {2,}", " ").
  auto precompiled = [&](const nlohmann::json& n) {
    const nlohmann::json& map = n.value("precompiled_charsmap", nlohmann::json());
    if (map.is_null()) return;
    if (!map.is_string()) bad("normalizer.precompiled_charsmap", map);
    v.charsmap = base64_decode(map.get<std::string>(), path);
  };
  const nlohmann::json& norm = root.value("normalizer", nlohmann::json());
  if (norm.is_object() && norm.value("type", "") == "Precompiled") {
    precompiled(norm);
  } else if (norm.is_object() && norm.value("type", "") == "Sequence" &&
             norm.value("normalizers", nlohmann::json()).is_array()) {
    bool seen = false;
    for (const nlohmann::json& n : norm.at("normalizers")) {
      const std::string type = n.is_object() ? n.value("type", "") : "";
      const bool collapse = type == "Replace" && n.value("content", "") == " " && n.contains("pattern") &&
                            n.at("pattern").value("Regex", "") == " {2,}";
      if (type == "Precompiled" && !seen) {
        precompiled(n);
        seen = true;
      } else if (!collapse) {
        bad("normalizer", n);
      }
    }
  } else if (!norm.is_null()) {
    bad("normalizer", norm);
  }

  const nlohmann::json& pre = root.value("pre_tokenizer", nlohmann::json());
  const nlohmann::json& steps = pre.is_object() ? pre.value("pretokenizers", nlohmann::json()) : nlohmann::json();
  const bool layout = pre.is_object() && pre.value("type", "") == "Sequence" && steps.is_array() && steps.size() == 2 &&
                      steps[0].is_object() && steps[0].value("type", "") == "WhitespaceSplit" && steps[1].is_object() &&
                      steps[1].value("type", "") == "Metaspace" &&
                      steps[1].value("replacement", "") == std::string(kMetaspace) &&
                      steps[1].value("prepend_scheme", "") == "always" && steps[1].value("split", false);
  if (!layout) bad("pre_tokenizer", pre);

  const nlohmann::json& added = root.value("added_tokens", nlohmann::json::array());
  if (!added.is_array()) bad("added_tokens", added);
  for (const nlohmann::json& t : added) {
    if (!t.is_object() || !t.value("id", nlohmann::json()).is_number_unsigned() ||
        !t.value("content", nlohmann::json()).is_string())
      bad("an added_tokens entry", t);
    if (t.value("single_word", false)) bad("an added_tokens entry with single_word", t);
    v.added.push_back({t.at("content").get<std::string>(), int64_t(t.at("id").get<uint64_t>()),
                       t.value("lstrip", false), t.value("rstrip", false), t.value("normalized", false)});
  }
  v.holds_extra_ids = true;
  return v;
}

}  // namespace

std::unique_ptr<T5Tokenizer> T5Tokenizer::load(const std::string& dir) {
  auto m = std::make_unique<Impl>();
  std::error_code ec;
  const fs::path spiece = fs::path(dir) / "spiece.model", json = fs::path(dir) / "tokenizer.json";
  Vocabulary v;
  if (fs::is_regular_file(spiece, ec)) {
    m->where = spiece.string();
    v = read_spiece(m->where);
  } else if (fs::is_regular_file(json, ec)) {
    m->where = json.string();
    v = read_tokenizer_json(m->where);
  } else {
    fail(dir, ": no spiece.model or tokenizer.json (the T5 tokenizer needs its vocabulary from one of them)");
  }
  m->charsmap = Charsmap(v.charsmap, m->where);
  m->unk = v.unk;
  m->pieces = std::move(v.pieces);
  m->scores = std::move(v.scores);
  const int64_t size = int64_t(m->pieces.size());
  const bool spiece_source = !v.holds_extra_ids;

  std::optional<JsonConfig> cfg;
  const fs::path cfg_path = fs::path(dir) / "tokenizer_config.json";
  if (fs::exists(cfg_path, ec)) cfg = JsonConfig::load(cfg_path.string());
  // The sentinels <extra_id_{N-1}> ... <extra_id_0> follow the model's
  // pieces; tokenizer.json lists them in its vocabulary already.
  const int extra_ids = v.holds_extra_ids ? 0 : cfg ? cfg->get_or<int>("extra_ids", 100) : 100;
  if (extra_ids < 0 || extra_ids > JsonConfig::kMaxConfigSize)
    cfg->unsupported("extra_ids", "expected a count from 0 to 16777216");
  for (int i = extra_ids - 1; i >= 0; --i) {
    m->pieces.push_back(cat("<extra_id_", i, ">"));
    m->scores.push_back(0.0);
  }
  double min_score = m->scores.front();
  m->piece_ids.reserve(m->pieces.size());
  for (size_t id = 0; id < m->pieces.size(); ++id) {
    const auto [it, fresh] = m->piece_ids.try_emplace(std::string_view(m->pieces[id]), int64_t(id));
    if (!fresh) {
      // The sentencepiece library refuses such a model; a later sentinel or
      // tokenizer.json entry replaces the earlier, as in HF tokenizers.
      if (spiece_source && id < size_t(size))
        fail(m->where, ": not a valid SentencePiece model (piece '", m->pieces[id], "' at ids ", it->second, " and ",
             id, ")");
      it->second = int64_t(id);
    }
    m->max_piece_bytes = std::max(m->max_piece_bytes, m->pieces[id].size());
    min_score = std::min(min_score, m->scores[id]);
  }
  m->unk_score = min_score - kUnkPenalty;

  // Added tokens: those the file declares, the named special tokens, the
  // sentinels, then those tokenizer_config.json lists and declares.
  auto add = [&](const Impl::AddedToken& token) {
    for (auto& t : m->added)
      if (t.content == token.content) return;
    m->added.push_back(token);
    if (token.id >= int64_t(m->pieces.size())) m->added_text[token.id] = token.content;
  };
  // transformers 5 makes spiece.model's control and user-defined pieces
  // added tokens only where tokenizer_config.json has neither key below
  // (even null): mT5's says "additional_special_tokens": null, so its
  // sentinels "\u2581<extra_id_N>" stay pieces of the unigram model. The
  // tokens it lists instead are those of extra_special_tokens where that is
  // not empty, else those of additional_special_tokens.
  const char* specials_key = nullptr;
  if (cfg) {
    const nlohmann::json& extra = cfg->json().value("extra_special_tokens", nlohmann::json());
    if ((extra.is_array() || extra.is_object()) && !extra.empty())
      specials_key = "extra_special_tokens";
    else if (cfg->json().contains("additional_special_tokens"))
      specials_key = "additional_special_tokens";
    else if (cfg->json().contains("extra_special_tokens"))
      specials_key = "extra_special_tokens";
  }
  if (v.holds_extra_ids || !specials_key) {
    for (Impl::AddedToken t : v.added) {
      if (t.normalized) t.content = m->charsmap.normalize(t.content);
      add(t);
    }
  }
  std::string names[3] = {"</s>", "<pad>", "<unk>"};
  const char* keys[3] = {"eos_token", "pad_token", "unk_token"};
  for (int k = 0; k < 3; ++k) {
    if (cfg) names[k] = token_name(*cfg, keys[k], names[k]);
    const int64_t id = m->id_of(names[k]);
    if (id < 0) {
      if (cfg) cfg->unsupported(keys[k], "not a piece of " + m->where);
      fail(m->where, ": has no piece '", names[k], "'");
    }
    add({names[k], id});
  }
  m->eos = m->id_of(names[0]);
  m->pad = m->id_of(names[1]);
  for (int i = 0; i < extra_ids; ++i) add({cat("<extra_id_", i, ">"), size + extra_ids - 1 - i});
  if (specials_key) {
    // A list of tokens, or (extra_special_tokens) an object naming model-specific ones.
    const nlohmann::json& list = cfg->json().at(specials_key);
    if (!list.is_null() && !list.is_array() && !list.is_object())
      cfg->unsupported(specials_key, "expected a list of tokens or null");
    for (const nlohmann::json& t : list) {
      const nlohmann::json& content = t.is_object() && t.contains("content") ? t.at("content") : t;
      if (!content.is_string()) cfg->unsupported(specials_key, "expected token strings or objects with 'content'");
      const std::string token = content.get<std::string>();
      if (std::any_of(m->added.begin(), m->added.end(), [&](const Impl::AddedToken& a) { return a.content == token; }))
        continue;
      const int64_t id = m->id_of(token);
      if (id < 0)
        cfg->unsupported(specials_key, cat("'", token, "' is neither a piece nor an added token of ", m->where));
      add({token, id});
    }
  }
  if (cfg && cfg->has("added_tokens_decoder")) {
    const nlohmann::json& decoder = cfg->json().at("added_tokens_decoder");
    if (!decoder.is_object()) cfg->unsupported("added_tokens_decoder", "expected an object of id -> token");
    for (auto it = decoder.begin(); it != decoder.end(); ++it) {
      const nlohmann::json& t = it.value();
      int64_t id = -1;
      try {
        id = std::stoll(it.key());
      } catch (const std::exception&) {
      }
      if (id < 0 || !t.is_object() || !t.contains("content") || !t.at("content").is_string())
        cfg->unsupported("added_tokens_decoder", "entry '" + it.key() + "' is not id -> {content, ...}");
      if (t.value("single_word", false))
        cfg->unsupported("added_tokens_decoder", "entry '" + it.key() + "' has single_word = true (not supported)");
      Impl::AddedToken token{t.at("content").get<std::string>(), id, t.value("lstrip", false), t.value("rstrip", false),
                             t.value("normalized", false)};
      if (token.normalized) token.content = m->charsmap.normalize(token.content);
      auto same = std::find_if(m->added.begin(), m->added.end(),
                               [&](const Impl::AddedToken& a) { return a.content == token.content; });
      if (same != m->added.end())
        *same = token;
      else
        m->added.push_back(token);
      if (id >= int64_t(m->pieces.size())) m->added_text[id] = token.content;
    }
  }
  return std::unique_ptr<T5Tokenizer>(new T5Tokenizer(std::move(m)));
}

std::vector<int64_t> T5Tokenizer::encode(const std::string& text) const {
  return impl_->encode(text);
}

TokenizedText T5Tokenizer::tokenize(const std::string& text, int64_t max_length) const {
  if (max_length < 1) fail("T5 tokenizer: max_length must be at least 1 (room for </s>), got ", max_length);
  TokenizedText t;
  t.ids_untruncated = encode(text);
  const int64_t content = int64_t(t.ids_untruncated.size()) - 1;
  const int64_t kept = std::min(content, max_length - 1);
  t.num_dropped = content - kept;
  t.ids.assign(t.ids_untruncated.begin(), t.ids_untruncated.begin() + kept);
  t.ids.push_back(impl_->eos);
  t.mask.assign(t.ids.size(), 1);
  t.ids.resize(size_t(max_length), impl_->pad);
  t.mask.resize(size_t(max_length), 0);
  return t;
}

std::string T5Tokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string out;
  for (int64_t id : ids) {
    if (id >= 0 && id < int64_t(impl_->pieces.size()))
      out += impl_->pieces[size_t(id)];
    else if (auto it = impl_->added_text.find(id); it != impl_->added_text.end())
      out += it->second;
    else
      out += "<unk>";
  }
  std::string text;
  for (size_t pos = 0; pos < out.size();) {
    if (out.compare(pos, kMetaspace.size(), kMetaspace) == 0) {
      if (pos > 0) text += ' ';
      pos += kMetaspace.size();
    } else {
      text += out[pos++];
    }
  }
  return text;
}

int64_t T5Tokenizer::eos_id() const {
  return impl_->eos;
}
int64_t T5Tokenizer::pad_id() const {
  return impl_->pad;
}
int64_t T5Tokenizer::vocab_size() const {
  return int64_t(impl_->pieces.size());
}

Tensor token_tensor(const std::vector<std::vector<int64_t>>& rows) {
  if (rows.empty()) fail("token_tensor: no rows");
  const size_t length = rows.front().size();
  Tensor t = Tensor::empty({int64_t(rows.size()), int64_t(length)}, DType::i64);
  for (size_t r = 0; r < rows.size(); ++r) {
    if (rows[r].size() != length) fail("token_tensor: row ", r, " has ", rows[r].size(), " ids, expected ", length);
    std::copy(rows[r].begin(), rows[r].end(), t.i64() + r * length);
  }
  return t;
}

}  // namespace pab
