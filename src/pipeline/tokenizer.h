// The T5 tokenizer of the CogVideoX and Latte pipelines, and mT5's
// (Open-Sora-Plan), producing the ids transformers' T5Tokenizer (tokenizers
// backend, transformers 5) gives:
// special tokens written in the text are kept whole, the SentencePiece
// charsmap normalizes grapheme cluster by cluster (the HF Precompiled
// normalizer), words split on Unicode whitespace get a leading U+2581, a
// unigram Viterbi segments each word, and `</s>` ends the sequence.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace pab {

// One prompt as the pipelines call the tokenizer (padding="max_length",
// truncation=True, add_special_tokens=True), plus the untruncated ids they
// compare against to warn about truncation.
struct TokenizedText {
  std::vector<int64_t> ids;              // max_length ids: tokens, </s>, then pad ids
  std::vector<int64_t> mask;             // max_length: 1 for tokens and </s>, 0 for padding
  std::vector<int64_t> ids_untruncated;  // every token and </s>, no padding
  int64_t num_dropped = 0;               // tokens removed by truncation (0 if it fitted)
};

class T5Tokenizer {
 public:
  // Reads `dir`/spiece.model (else `dir`/tokenizer.json) and
  // `dir`/tokenizer_config.json (optional: extra_ids, eos/pad/unk token names,
  // additional_special_tokens or extra_special_tokens, added_tokens_decoder).
  // A missing or corrupt model is an error naming the file.
  static std::unique_ptr<T5Tokenizer> load(const std::string& dir);
  ~T5Tokenizer();

  // The token ids of `text` (UTF-8) followed by </s>, untruncated.
  std::vector<int64_t> encode(const std::string& text) const;
  // encode, truncated to max_length (keeping </s> last) and padded to it.
  TokenizedText tokenize(const std::string& text, int64_t max_length) const;
  // Text of `ids` for messages (pieces joined, U+2581 as a space).
  std::string decode(const std::vector<int64_t>& ids) const;

  int64_t eos_id() const;
  int64_t pad_id() const;
  int64_t vocab_size() const;  // pieces of the model plus extra ids

  struct Impl;

 private:
  explicit T5Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Rows of equal length as an i64 CPU tensor [rows, length].
Tensor token_tensor(const std::vector<std::vector<int64_t>>& rows);

}  // namespace pab
