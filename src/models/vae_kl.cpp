// AutoencoderKL decoding (see vae_kl.h), following diffusers' vae.py Decoder:
// conv_in, a mid block (resnet, single-head self-attention, resnet), up
// blocks of resnets with nearest 2x upsampling + 3x3 convolution, group norm,
// SiLU and conv_out.
#include "models/vae_kl.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>

#include "backend/ops.h"
#include "core/registry.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "models/layers.h"

namespace pab {

namespace {

// diffusers builds every decoder norm with this eps (resnet_eps, conv_norm_out).
constexpr float kNormEps = 1e-6f;

struct Conv {
  Tensor w, b;
};

struct Resnet {
  Tensor norm1_w, norm1_b, norm2_w, norm2_b;
  Conv conv1, conv2;
  bool has_shortcut = false;  // 1x1 convolution when channels change
  Conv shortcut;
};

struct MidAttention {
  Tensor gn_w, gn_b;
  Conv q, k, v, out;  // linear layers
};

struct UpBlock {
  std::vector<Resnet> resnets;
  bool upsample = false;
  Conv up_conv;
};

Tensor conv3x3(const Tensor& x, const Conv& c) {
  return ops::conv2d(x, c.w, &c.b, {1, 1}, {1, 1});
}

// ResnetBlock2D without time embedding (output_scale_factor 1).
Tensor resnet_forward(const Resnet& r, const Tensor& x, int groups) {
  Tensor h = ops::silu(ops::group_norm(x, groups, &r.norm1_w, &r.norm1_b, kNormEps));
  h = conv3x3(h, r.conv1);
  h = ops::silu(ops::group_norm(h, groups, &r.norm2_w, &r.norm2_b, kNormEps));
  h = conv3x3(h, r.conv2);
  if (r.has_shortcut) return ops::add(ops::conv2d(x, r.shortcut.w, &r.shortcut.b), h);
  return ops::add(x, h);
}

// The mid block's Attention: group norm, one head over the H * W positions,
// output projection, residual.
Tensor attention_forward(const MidAttention& a, const Tensor& x, int groups) {
  const int64_t n = x.dim(0), c = x.dim(1), hw = x.dim(2) * x.dim(3);
  Tensor h = ops::group_norm(x, groups, &a.gn_w, &a.gn_b, kNormEps);
  h = ops::permute(h.reshape({n, c, hw}), {0, 2, 1});  // [N, HW, C]
  Tensor q = ops::linear(h, a.q.w, a.q.b).reshape({n, hw, 1, c});
  Tensor k = ops::linear(h, a.k.w, a.k.b).reshape({n, hw, 1, c});
  Tensor v = ops::linear(h, a.v.w, a.v.b).reshape({n, hw, 1, c});
  h = Tensor();
  AttentionArgs args;
  args.scale = float(1.0 / std::sqrt(double(c)));  // SDPA's default 1 / sqrt(head dim)
  Tensor o = ops::attention(q, k, v, args).reshape({n, hw, c});
  o = ops::linear(o, a.out.w, a.out.b);
  o = ops::permute(o, {0, 2, 1}).reshape(x.shape());  // [N, C, H, W]
  return ops::add(o, x);
}

struct Loader {
  const WeightSource& ckpt;
  const LoadOptions& opts;

  Tensor get(const std::string& name, const Shape& shape) const {
    return ckpt.load(name, shape, opts.dtype, opts.device);
  }
  Conv conv(const std::string& name, const Shape& w_shape) const {
    return {get(name + ".weight", w_shape), get(name + ".bias", {w_shape[0]})};
  }
  // Attention projections saved under their current name or the pre-0.14
  // attention block's name (diffusers renames them on load).
  Conv linear(const std::string& block, const std::string& name, const std::string& old_name, int64_t c) const {
    bool current = ckpt.has(block + "." + name + ".weight");
    return conv(block + "." + (current || !ckpt.has(block + "." + old_name + ".weight") ? name : old_name), {c, c});
  }
};

}  // namespace

struct KlVae::Decoder {
  bool has_post_quant = false;
  Conv post_quant;
  Conv conv_in;
  Resnet mid0, mid1;
  bool has_attention = false;
  MidAttention attention;
  std::vector<UpBlock> up;
  Tensor norm_out_w, norm_out_b;
  Conv conv_out;
  int groups = 32;

  static Resnet resnet(const Loader& l, const std::string& name, int64_t in, int64_t out) {
    Resnet r;
    r.norm1_w = l.get(name + ".norm1.weight", {in});
    r.norm1_b = l.get(name + ".norm1.bias", {in});
    r.conv1 = l.conv(name + ".conv1", {out, in, 3, 3});
    r.norm2_w = l.get(name + ".norm2.weight", {out});
    r.norm2_b = l.get(name + ".norm2.bias", {out});
    r.conv2 = l.conv(name + ".conv2", {out, out, 3, 3});
    if (in != out) {
      r.has_shortcut = true;
      r.shortcut = l.conv(name + ".conv_shortcut", {out, in, 1, 1});
    }
    return r;
  }

  Tensor forward(Tensor z) const {
    if (has_post_quant) z = ops::conv2d(z, post_quant.w, &post_quant.b);
    Tensor h = conv3x3(z, conv_in);
    z = Tensor();
    h = resnet_forward(mid0, h, groups);
    if (has_attention) h = attention_forward(attention, h, groups);
    h = resnet_forward(mid1, h, groups);
    for (const UpBlock& u : up) {
      for (const Resnet& r : u.resnets) h = resnet_forward(r, h, groups);
      if (u.upsample) h = conv3x3(ops::upsample_nearest(h, {2, 2}), u.up_conv);
    }
    h = ops::silu(ops::group_norm(h, groups, &norm_out_w, &norm_out_b, kNormEps));
    return conv3x3(h, conv_out);
  }
};

KlVae::~KlVae() = default;

namespace {

KlVaeConfig parse_config(const JsonConfig& c) {
  KlVaeConfig cfg;
  std::string cls = c.get_or<std::string>("_class_name", "AutoencoderKL");
  if (cls != "AutoencoderKL") c.unsupported("_class_name", "expected AutoencoderKL");
  std::string act = c.get_or<std::string>("act_fn", "silu");
  if (act != "silu" && act != "swish") c.unsupported("act_fn", "only silu (swish) is supported");

  cfg.block_out_channels = c.get_or<std::vector<int>>("block_out_channels", cfg.block_out_channels);
  // Each block but the last doubles the size: eight blocks already upsample 128x.
  if (cfg.block_out_channels.empty() || cfg.block_out_channels.size() > 8)
    c.unsupported("block_out_channels", "expected 1 to 8 blocks");
  cfg.norm_num_groups = c.get_or<int>("norm_num_groups", cfg.norm_num_groups);
  c.require_positive({{"norm_num_groups", cfg.norm_num_groups}});
  for (int ch : cfg.block_out_channels) {
    c.require_positive({{"block_out_channels", ch}});
    if (ch % cfg.norm_num_groups != 0)
      c.unsupported("norm_num_groups", cat("must divide every block_out_channels entry (", ch, " does not)"));
  }
  auto up_types = c.get_or<std::vector<std::string>>(
      "up_block_types", std::vector<std::string>(cfg.block_out_channels.size(), "UpDecoderBlock2D"));
  if (up_types.size() != cfg.block_out_channels.size())
    c.unsupported("up_block_types", "expected one entry per block_out_channels entry");
  for (const std::string& t : up_types)
    if (t != "UpDecoderBlock2D") c.unsupported("up_block_types", "only UpDecoderBlock2D is supported");

  cfg.latent_channels = c.get_or<int>("latent_channels", cfg.latent_channels);
  cfg.out_channels = c.get_or<int>("out_channels", cfg.out_channels);
  cfg.layers_per_block = c.get_or<int>("layers_per_block", cfg.layers_per_block);
  c.require_positive({{"latent_channels", cfg.latent_channels}, {"out_channels", cfg.out_channels}});
  if (cfg.layers_per_block < 0 || cfg.layers_per_block > 64)
    c.unsupported("layers_per_block", "expected 0 to 64 resnets per block");
  cfg.mid_block_add_attention = c.get_or<bool>("mid_block_add_attention", true);
  cfg.use_post_quant_conv = c.get_or<bool>("use_post_quant_conv", true);
  cfg.scaling_factor = c.get_or<double>("scaling_factor", cfg.scaling_factor);
  if (!(cfg.scaling_factor > 0)) c.unsupported("scaling_factor", "expected a positive number");
  return cfg;
}

}  // namespace

KlVaeConfig KlVae::config_from_json(const JsonConfig& json) {
  return parse_config(json);
}

std::unique_ptr<KlVae> KlVae::load(const std::string& dir, const LoadOptions& opts) {
  JsonConfig json = JsonConfig::load((std::filesystem::path(dir) / "config.json").string());
  parse_config(json);  // a config error is reported before the weights are opened
  return load(json, Checkpoint::open_dir(dir), opts);
}

uint64_t KlVaeConfig::decode_bytes(int64_t images, int64_t height, int64_t width, DType dtype, Device device) const {
  // Six activations of the images at full resolution in the widest channel
  // count there (resnet input, norm, convolution output, the upsampled copy;
  // twelve on the GPU, whose convolutions also hold channels-last copies),
  // and the decoded images.
  const char* what = "VAE decode";
  const int64_t copies = device == Device::cpu ? 6 : 12;
  return token_bytes(copies * images, height * width, block_out_channels.front(), dtype, 1, what) +
         token_bytes(images, height * width, out_channels, dtype, 1, what);
}

std::unique_ptr<KlVae> KlVae::load(const JsonConfig& json, const WeightSource& source, const LoadOptions& opts) {
  // Only the decoder runs: the encoder and its quantisation conv stay unloaded.
  WeightUse weights(source);
  weights.not_needed("encoder.");
  weights.not_needed("quant_conv.");
  std::unique_ptr<KlVae> vae(new KlVae());
  vae->config_ = parse_config(json);
  vae->opts_ = opts;
  const KlVaeConfig& cfg = vae->config_;

  Loader l{weights, opts};
  auto d = std::make_unique<Decoder>();
  d->groups = cfg.norm_num_groups;
  const int64_t lc = cfg.latent_channels;
  std::vector<int64_t> rev(cfg.block_out_channels.rbegin(), cfg.block_out_channels.rend());
  if (cfg.use_post_quant_conv) {
    d->has_post_quant = true;
    d->post_quant = l.conv("post_quant_conv", {lc, lc, 1, 1});
  }
  d->conv_in = l.conv("decoder.conv_in", {rev[0], lc, 3, 3});
  d->mid0 = Decoder::resnet(l, "decoder.mid_block.resnets.0", rev[0], rev[0]);
  d->mid1 = Decoder::resnet(l, "decoder.mid_block.resnets.1", rev[0], rev[0]);
  if (cfg.mid_block_add_attention) {
    d->has_attention = true;
    const std::string a = "decoder.mid_block.attentions.0";
    d->attention.gn_w = l.get(a + ".group_norm.weight", {rev[0]});
    d->attention.gn_b = l.get(a + ".group_norm.bias", {rev[0]});
    d->attention.q = l.linear(a, "to_q", "query", rev[0]);
    d->attention.k = l.linear(a, "to_k", "key", rev[0]);
    d->attention.v = l.linear(a, "to_v", "value", rev[0]);
    d->attention.out = l.linear(a, "to_out.0", "proj_attn", rev[0]);
  }
  int64_t channels = rev[0];
  for (size_t i = 0; i < rev.size(); ++i) {
    UpBlock u;
    std::string name = cat("decoder.up_blocks.", i);
    for (int j = 0; j <= cfg.layers_per_block; ++j) {
      int64_t in = j == 0 ? channels : rev[i];
      u.resnets.push_back(Decoder::resnet(l, cat(name, ".resnets.", j), in, rev[i]));
    }
    channels = rev[i];
    u.upsample = i + 1 < rev.size();
    if (u.upsample) u.up_conv = l.conv(name + ".upsamplers.0.conv", {channels, channels, 3, 3});
    d->up.push_back(std::move(u));
  }
  d->norm_out_w = l.get("decoder.conv_norm_out.weight", {channels});
  d->norm_out_b = l.get("decoder.conv_norm_out.bias", {channels});
  d->conv_out = l.conv("decoder.conv_out", {cfg.out_channels, channels, 3, 3});
  vae->decoder_ = std::move(d);
  check_weights_used(weights, "AutoencoderKL (decoder)", opts);
  return vae;
}

Tensor KlVae::decode(const Tensor& z_in) const {
  if (!z_in.defined() || z_in.rank() != 4 || z_in.dim(1) != config_.latent_channels)
    fail("KlVae::decode: expected z [N, ", config_.latent_channels, ", H, W], got ",
         z_in.defined() ? z_in.desc() : "an undefined tensor");
  if (z_in.numel() == 0) fail("KlVae::decode: empty z ", z_in.desc());
  Tensor z = z_in;
  if (z.device() != opts_.device) z = z.to(opts_.device);
  if (z.dtype() != opts_.dtype) z = z.to(opts_.dtype);
  return decoder_->forward(z);
}

Tensor KlVae::decode_latents(const Tensor& latents, int64_t decode_chunk_size) const {
  if (!latents.defined() || latents.rank() != 5 || latents.dim(1) != config_.latent_channels)
    fail("KlVae::decode_latents: expected latents [B, ", config_.latent_channels, ", F, H, W], got ",
         latents.defined() ? latents.desc() : "an undefined tensor");
  if (decode_chunk_size <= 0)
    fail("KlVae::decode_latents: decode_chunk_size must be positive, got ", decode_chunk_size);
  const int64_t b = latents.dim(0), c = latents.dim(1), f = latents.dim(2), h = latents.dim(3), w = latents.dim(4);
  Tensor z = ops::permute(latents, {0, 2, 1, 3, 4}).reshape({b * f, c, h, w});  // [B*F, C, H, W]
  // `1 / scaling_factor * latents`: the reciprocal in double, rounded to f32, then one multiply
  z = ops::scale(z, float(1.0 / config_.scaling_factor));
  std::vector<Tensor> parts;
  for (int64_t i = 0; i < b * f; i += decode_chunk_size)
    parts.push_back(decode(ops::slice(z, 0, i, std::min(b * f, i + decode_chunk_size))));
  Tensor frames = parts.size() == 1 ? parts[0] : ops::concat(parts, 0);  // [B*F, C', H', W']
  frames = frames.reshape({b, f, frames.dim(1), frames.dim(2), frames.dim(3)});
  return ops::permute(frames, {0, 2, 1, 3, 4});  // [B, C', F, H', W']
}

Tensor KlVae::decode_video(const Tensor& latents, const VaeDecodeOptions& o) const {
  if (o.tiled) fail("AutoencoderKL decodes whole images: it has no tiled decoding");
  return decode_latents(latents, o.chunk_frames > 0 ? o.chunk_frames : std::numeric_limits<int64_t>::max());
}

namespace {

class KlVaeFacts final : public VaeFacts {
 public:
  explicit KlVaeFacts(KlVaeConfig c) : c_(std::move(c)) {}
  VaeKind kind() const override { return VaeKind::image; }
  int latent_channels() const override { return c_.latent_channels; }
  int spatial_factor() const override { return c_.spatial_factor(); }
  int temporal_factor() const override { return 1; }
  int64_t decoded_frames(int64_t latent_frames) const override { return latent_frames; }
  // A chunk of images at a time, and the whole video decode_latents joins them into.
  uint64_t decode_bytes(int64_t latent_frames, int64_t height, int64_t width, const VaeDecodeOptions& o, DType dtype,
                        Device device) const override {
    const int64_t chunk = o.chunk_frames > 0 ? std::min(latent_frames, o.chunk_frames) : latent_frames;
    return c_.decode_bytes(chunk, height, width, dtype, device) +
           token_bytes(latent_frames, height * width, c_.out_channels, dtype, 1, "VAE decode");
  }

 private:
  KlVaeConfig c_;
};

std::unique_ptr<const VaeFacts> kl_vae_facts(const JsonConfig& config) {
  return std::make_unique<KlVaeFacts>(KlVae::config_from_json(config));
}

std::unique_ptr<VideoVae> load_kl_vae(const JsonConfig& config, const WeightSource& weights, const LoadOptions& opts) {
  return KlVae::load(config, weights, opts);
}

}  // namespace

PAB_REGISTER(VaeEntry, "AutoencoderKL", {kl_vae_facts, load_kl_vae});

}  // namespace pab
