// The T5 text encoder (transformers' T5EncoderModel, T5 v1.1 / mT5 style):
// token embedding, pre-norm blocks of self-attention with a shared bucketed
// relative position bias and (gated) feed-forward, a final RMS norm.
// Registered as a TextEncoderEntry under "T5EncoderModel" and, for mT5 (the
// same architecture with a 250k vocabulary; Open-Sora-Plan's encoder), under
// "MT5EncoderModel".
#pragma once

#include <memory>
#include <string>

#include "backend/backend.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "models/text_encoder.h"
#include "models/transformer.h"

namespace pab {

// The transformers config class a T5 encoder class reads its config.json as:
// T5Config for T5EncoderModel, MT5Config for MT5EncoderModel. Their models are
// the same; the classes differ only in the defaults of keys a file leaves out
// (feed_forward_proj: "relu" for T5Config, "gated-gelu" for MT5Config).
enum class T5Variant { t5, mt5 };

// text_encoder/config.json, as transformers' T5Config (or MT5Config) derives it.
struct T5Config {
  int vocab_size = 0;
  int d_model = 0;
  int d_kv = 0;
  int d_ff = 0;
  int num_layers = 0;
  int num_heads = 0;
  int num_buckets = 32;    // relative_attention_num_buckets
  int max_distance = 128;  // relative_attention_max_distance
  float layer_norm_eps = 1e-6f;
  bool gated = false;       // feed_forward_proj "gated-<act>"
  Unary act = Unary::relu;  // the activation named by feed_forward_proj

  // Fails naming the file and key for missing, mistyped or unsupported values.
  static T5Config from_json(const JsonConfig& c, T5Variant variant = T5Variant::t5);
};

class T5Encoder final : public TextEncoder {
 public:
  // Loads `dir`/config.json and the weights (one file or shards with an index);
  // the embedding may be stored as shared.weight, encoder.embed_tokens.weight or both.
  // The config is read as MT5Config where its model_type is "mt5" (as
  // transformers' AutoConfig picks the class), else as T5Config.
  static std::unique_ptr<T5Encoder> load(const std::string& dir, const LoadOptions& opts = {});
  // As above, from a parsed config read as `variant`'s class and any weight
  // source (e.g. generated weights).
  static std::unique_ptr<T5Encoder> load(const JsonConfig& config, const WeightSource& weights, const LoadOptions& opts,
                                         T5Variant variant = T5Variant::t5);

  const T5Config& config() const { return cfg_; }
  // What encode holds besides the weights for one prompt of `length` tokens
  // in `dtype`: the states of a block and the [H, L, L] position bias (f32,
  // on the host and on the device); overflow fails.
  static uint64_t activation_bytes(const T5Config& c, int64_t length, DType dtype);
  Device device() const { return opts_.device; }

  // As TextEncoder::encode; hidden_size is d_model.
  Tensor encode(const Tensor& ids, const Tensor* mask = nullptr) const override;

 private:
  struct Block {
    Tensor norm_attn, q, k, v, o;
    Tensor norm_ff, wi_0, wi_1, wo;  // wi_0 holds `wi` when not gated; wi_1 exists only when gated
  };
  // The additive attention bias [1, H, L, L] of the relative position buckets.
  Tensor position_bias(int64_t length) const;

  T5Config cfg_;
  LoadOptions opts_;
  Tensor embed_;          // [V, D]
  Tensor relative_bias_;  // [num_buckets, H], on the CPU
  std::vector<Block> blocks_;
  Tensor final_norm_;
};

// The bucket of relative position `memory - query` in a bidirectional T5
// encoder (transformers' T5Attention._relative_position_bucket).
int t5_relative_position_bucket(int64_t relative_position, int num_buckets, int max_distance);

}  // namespace pab
