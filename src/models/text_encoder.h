// The text encoder as pipelines see it: each encoder class is its own file
// (t5.cpp) that registers a TextEncoderEntry by the class model_index.json
// names for it (transformers' `architectures[0]`).
#pragma once

#include <functional>
#include <memory>

#include "core/tensor.h"
#include "models/transformer.h"  // LoadOptions

namespace pab {

// A loaded encoder.
class TextEncoder {
 public:
  virtual ~TextEncoder() = default;
  // ids: i64 [B, L]; mask: optional [B, L] (i64 or f32, 0 = a padding key
  // not attended to). Returns last_hidden_state [B, L, hidden_size] on the
  // load device.
  virtual Tensor encode(const Tensor& ids, const Tensor* mask = nullptr) const = 0;
};

// What a pipeline and the memory estimate read of an encoder from its config
// alone, before any weight is loaded.
class TextEncoderFacts {
 public:
  virtual ~TextEncoderFacts() = default;
  virtual int hidden_size() const = 0;  // the width of the states encode returns
  virtual int vocab_size() const = 0;   // token ids are below it
  // What encode holds besides the weights for one prompt of `length` tokens
  // in `dtype`, its output excluded; overflow fails.
  virtual uint64_t activation_bytes(int64_t length, DType dtype) const = 0;
};

// A text encoder class as it registers itself, in its own file, by the class
// model_index.json names (transformers' `architectures[0]` in its config.json):
//   PAB_REGISTER(TextEncoderEntry, "T5EncoderModel", {t5_facts, load_t5});
struct TextEncoderEntry {
  // Reads the config; unsupported values fail naming the file and key.
  std::function<std::unique_ptr<const TextEncoderFacts>(const JsonConfig&)> facts;
  // Builds the encoder from its config and weights.
  std::function<std::unique_ptr<TextEncoder>(const JsonConfig&, const WeightSource&, const LoadOptions&)> load;
};

}  // namespace pab
