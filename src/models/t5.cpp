// The T5 text encoder (see t5.h). Semantics follow transformers' modeling_t5:
// no scaling of the attention scores (the relative bias is learned with that
// in mind), RMS norms without mean subtraction, the position bias computed
// from the first block's table and shared by every block.
#include "models/t5.h"

#include <cmath>
#include <filesystem>

#include "backend/ops.h"
#include "core/registry.h"
#include "io/safetensors.h"
#include "models/layers.h"

namespace pab {

namespace {

// feed_forward_proj's activation names, as transformers' ACT2FN spells them.
bool activation_from_name(const std::string& name, Unary* act) {
  if (name == "relu")
    *act = Unary::relu;
  else if (name == "gelu")
    *act = Unary::gelu_erf;
  else if (name == "gelu_new" || name == "gelu_pytorch_tanh" || name == "gelu_fast")
    *act = Unary::gelu_tanh;
  else if (name == "silu" || name == "swish")
    *act = Unary::silu;
  else
    return false;
  return true;
}

// The transformers class of each variant, for messages.
const char* t5_class_name(T5Variant variant) {
  return variant == T5Variant::mt5 ? "MT5EncoderModel" : "T5EncoderModel";
}

}  // namespace

T5Config T5Config::from_json(const JsonConfig& c, T5Variant variant) {
  T5Config t;
  auto positive = [&](const char* key, int value) {
    c.require_positive({{key, value}});
    return value;
  };
  const std::string model_type = c.get_or<std::string>("model_type", "t5");
  if (model_type != "t5" && model_type != "mt5") c.unsupported("model_type", "expected a T5 encoder ('t5' or 'mt5')");
  if (c.get_or<bool>("is_decoder", false)) c.unsupported("is_decoder", "only the encoder is supported");
  t.vocab_size = positive("vocab_size", c.get<int>("vocab_size"));
  t.d_model = positive("d_model", c.get<int>("d_model"));
  t.d_kv = positive("d_kv", c.get<int>("d_kv"));
  t.d_ff = positive("d_ff", c.get<int>("d_ff"));
  t.num_layers = positive("num_layers", c.get<int>("num_layers"));
  t.num_heads = positive("num_heads", c.get<int>("num_heads"));
  t.num_buckets = positive("relative_attention_num_buckets", c.get_or<int>("relative_attention_num_buckets", 32));
  if (t.num_buckets < 4) c.unsupported("relative_attention_num_buckets", "expected at least 4 buckets");
  t.max_distance = c.get_or<int>("relative_attention_max_distance", 128);
  if (t.max_distance <= t.num_buckets / 4)
    c.unsupported("relative_attention_max_distance", "expected more than a quarter of the number of buckets");
  t.layer_norm_eps = float(c.get_or<double>("layer_norm_epsilon", 1e-6));
  if (!(t.layer_norm_eps > 0)) c.unsupported("layer_norm_epsilon", "expected a positive number");

  // transformers derives the activation and gating from feed_forward_proj alone
  // (dense_act_fn and is_gated_act in the file are overwritten).
  const std::string proj =
      c.get_or<std::string>("feed_forward_proj", variant == T5Variant::mt5 ? "gated-gelu" : "relu");
  std::string act_name = proj;
  if (proj.rfind("gated-", 0) == 0) {
    t.gated = true;
    act_name = proj.substr(6);
  }
  if (proj == "gated-gelu") act_name = "gelu_new";  // T5 v1.1's historical name for the tanh approximation
  if (act_name.find('-') != std::string::npos || !activation_from_name(act_name, &t.act))
    c.unsupported("feed_forward_proj",
                  "expected '<act>' or 'gated-<act>' with act relu, gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, "
                  "silu or swish");
  return t;
}

int t5_relative_position_bucket(int64_t relative_position, int num_buckets, int max_distance) {
  // Bidirectional: half of the buckets for keys after the query.
  const int half = num_buckets / 2;
  int bucket = relative_position > 0 ? half : 0;
  const int64_t distance = relative_position < 0 ? -relative_position : relative_position;
  const int max_exact = half / 2;
  if (distance < max_exact) return bucket + int(distance);
  // Logarithmic buckets beyond max_exact, saturating at max_distance.
  const double scaled =
      std::log(double(distance) / max_exact) / std::log(double(max_distance) / max_exact) * double(half - max_exact);
  return bucket + std::min(max_exact + int(int64_t(scaled)), half - 1);
}

std::unique_ptr<T5Encoder> T5Encoder::load(const std::string& dir, const LoadOptions& opts) {
  JsonConfig config = JsonConfig::load((std::filesystem::path(dir) / "config.json").string());
  const T5Variant variant = config.get_or<std::string>("model_type", "t5") == "mt5" ? T5Variant::mt5 : T5Variant::t5;
  T5Config::from_json(config, variant);  // a config error is reported before the weights are opened
  return load(config, Checkpoint::open_dir(dir), opts, variant);
}

std::unique_ptr<T5Encoder> T5Encoder::load(const JsonConfig& config, const WeightSource& source,
                                           const LoadOptions& opts, T5Variant variant) {
  WeightUse ck(source);
  auto enc = std::unique_ptr<T5Encoder>(new T5Encoder());
  enc->cfg_ = T5Config::from_json(config, variant);
  enc->opts_ = opts;
  const T5Config& c = enc->cfg_;
  auto load = [&](const std::string& name, const Shape& shape) {
    return ck.load(name, shape, opts.dtype, opts.device);
  };

  const char* embed_name = ck.has("shared.weight")                 ? "shared.weight"
                           : ck.has("encoder.embed_tokens.weight") ? "encoder.embed_tokens.weight"
                                                                   : nullptr;
  if (!embed_name) fail(ck.where(), ": missing the token embedding ('shared.weight' or 'encoder.embed_tokens.weight')");
  enc->embed_ = load(embed_name, {c.vocab_size, c.d_model});
  ck.not_needed("encoder.embed_tokens.weight");  // the tied copy of shared.weight, where both are stored
  enc->relative_bias_ = ck.load("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                                {c.num_buckets, c.num_heads}, DType::f32, Device::cpu);

  const int64_t inner = int64_t(c.num_heads) * c.d_kv;
  for (int i = 0; i < c.num_layers; ++i) {
    const std::string attn = cat("encoder.block.", i, ".layer.0.");
    const std::string ff = cat("encoder.block.", i, ".layer.1.");
    Block b;
    b.norm_attn = load(attn + "layer_norm.weight", {c.d_model});
    b.q = load(attn + "SelfAttention.q.weight", {inner, c.d_model});
    b.k = load(attn + "SelfAttention.k.weight", {inner, c.d_model});
    b.v = load(attn + "SelfAttention.v.weight", {inner, c.d_model});
    b.o = load(attn + "SelfAttention.o.weight", {c.d_model, inner});
    b.norm_ff = load(ff + "layer_norm.weight", {c.d_model});
    if (c.gated) {
      b.wi_0 = load(ff + "DenseReluDense.wi_0.weight", {c.d_ff, c.d_model});
      b.wi_1 = load(ff + "DenseReluDense.wi_1.weight", {c.d_ff, c.d_model});
    } else {
      b.wi_0 = load(ff + "DenseReluDense.wi.weight", {c.d_ff, c.d_model});
    }
    b.wo = load(ff + "DenseReluDense.wo.weight", {c.d_model, c.d_ff});
    enc->blocks_.push_back(std::move(b));
  }
  // (A checkpoint only: generated weights have every name and list none.)
  if (!ck.names().empty() && ck.has(cat("encoder.block.", c.num_layers, ".layer.0.layer_norm.weight")))
    fail(ck.where(), ": holds more encoder blocks than num_layers = ", c.num_layers, " in config.json");
  enc->final_norm_ = load("encoder.final_layer_norm.weight", {c.d_model});
  check_weights_used(ck, t5_class_name(variant), opts);
  return enc;
}

uint64_t T5Encoder::activation_bytes(const T5Config& c, int64_t length, DType dtype) {
  const char* what = "T5 encoder activations";
  const int64_t inner = int64_t(c.num_heads) * c.d_kv;
  // Attention: the states, their norm and output, q, k, v and the attention's
  // output, and the copies of k and v it regroups; the feed-forward: the
  // states and norm, its projections, activation and product.
  const int64_t width = std::max(3 * int64_t(c.d_model) + 6 * inner, 3 * int64_t(c.d_model) + 4 * int64_t(c.d_ff));
  return token_bytes(1, length, width, dtype, 1, what) +
         token_bytes(int64_t(c.num_heads), length, length, DType::f32, 2, what);
}

Tensor T5Encoder::position_bias(int64_t length) const {
  const int64_t heads = cfg_.num_heads;
  Tensor bias = Tensor::empty({1, heads, length, length});
  const float* table = relative_bias_.f32();  // [num_buckets, H]
  float* out = bias.f32();
  for (int64_t q = 0; q < length; ++q) {
    for (int64_t k = 0; k < length; ++k) {
      const int bucket = t5_relative_position_bucket(k - q, cfg_.num_buckets, cfg_.max_distance);
      for (int64_t h = 0; h < heads; ++h) out[(h * length + q) * length + k] = table[bucket * heads + h];
    }
  }
  return opts_.device == Device::cpu ? bias : bias.to(opts_.device);
}

Tensor T5Encoder::encode(const Tensor& ids, const Tensor* mask) const {
  if (ids.dtype() != DType::i64 || ids.rank() != 2 || ids.numel() == 0)
    fail("T5 encoder: expected token ids i64 [batch, length], got ", ids.desc());
  const int64_t batch = ids.dim(0), length = ids.dim(1);
  const int64_t heads = cfg_.num_heads, d_kv = cfg_.d_kv;

  Tensor key_mask;
  if (mask) {
    if (mask->shape() != ids.shape())
      fail("T5 encoder: attention mask ", mask->desc(), " does not match the ids ", ids.desc());
    key_mask = mask->to(Device::cpu).to(DType::f32);
    if (opts_.device != Device::cpu) key_mask = key_mask.to(opts_.device);
  }
  const Tensor bias = position_bias(length);
  AttentionArgs args;
  args.scale = 1.0f;
  args.bias = &bias;
  args.key_mask = mask ? &key_mask : nullptr;

  Tensor h = ops::embedding(ids.device() == embed_.device() ? ids : ids.to(embed_.device()), embed_);  // [B, L, D]
  for (const Block& b : blocks_) {
    Tensor n = ops::rms_norm(h, &b.norm_attn, cfg_.layer_norm_eps);
    Tensor q = ops::linear(n, b.q).reshape({batch, length, heads, d_kv});  // [B, L, H, Dkv]
    Tensor k = ops::linear(n, b.k).reshape({batch, length, heads, d_kv});
    Tensor v = ops::linear(n, b.v).reshape({batch, length, heads, d_kv});
    Tensor a = ops::attention(q, k, v, args).reshape({batch, length, heads * d_kv});  // [B, L, H*Dkv]
    h = ops::add(h, ops::linear(a, b.o));

    n = ops::rms_norm(h, &b.norm_ff, cfg_.layer_norm_eps);
    Tensor f = ops::unary(ops::linear(n, b.wi_0), cfg_.act);  // [B, L, d_ff]
    if (cfg_.gated) f = ops::mul(f, ops::linear(n, b.wi_1));
    h = ops::add(h, ops::linear(f, b.wo));
  }
  return ops::rms_norm(h, &final_norm_, cfg_.layer_norm_eps);
}

namespace {

class T5Facts final : public TextEncoderFacts {
 public:
  explicit T5Facts(const T5Config& c) : c_(c) {}
  int hidden_size() const override { return c_.d_model; }
  int vocab_size() const override { return c_.vocab_size; }
  uint64_t activation_bytes(int64_t length, DType dtype) const override {
    return T5Encoder::activation_bytes(c_, length, dtype);
  }

 private:
  T5Config c_;
};

std::unique_ptr<const TextEncoderFacts> t5_facts(const JsonConfig& config) {
  return std::make_unique<T5Facts>(T5Config::from_json(config, T5Variant::t5));
}

std::unique_ptr<const TextEncoderFacts> mt5_facts(const JsonConfig& config) {
  return std::make_unique<T5Facts>(T5Config::from_json(config, T5Variant::mt5));
}

std::unique_ptr<TextEncoder> load_t5(const JsonConfig& config, const WeightSource& weights, const LoadOptions& opts) {
  return T5Encoder::load(config, weights, opts, T5Variant::t5);
}

std::unique_ptr<TextEncoder> load_mt5(const JsonConfig& config, const WeightSource& weights, const LoadOptions& opts) {
  return T5Encoder::load(config, weights, opts, T5Variant::mt5);
}

}  // namespace

PAB_REGISTER(TextEncoderEntry, "T5EncoderModel", {t5_facts, load_t5});
PAB_REGISTER(TextEncoderEntry, "MT5EncoderModel", {mt5_facts, load_mt5});

}  // namespace pab
