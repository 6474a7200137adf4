// AutoencoderKLCogVideoX decoding (see vae_cogvideox.h). Follows diffusers'
// autoencoder_kl_cogvideox.py module by module; functions take activations by
// value so that callers can move them in and each buffer is freed as soon as
// the next one exists.
#include "models/vae_cogvideox.h"

#include <algorithm>
#include <filesystem>

#include "backend/ops.h"
#include "core/registry.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "models/layers.h"

namespace pab {

namespace {

// diffusers processes latents in batches of this many frames (num_latent_frames_batch_size).
constexpr int64_t kLatentFramesPerBatch = 2;
// CogVideoXSpatialNorm3D builds its GroupNorm with this eps whatever the config's norm_eps.
constexpr float kNormEps = 1e-6f;

struct Conv {
  Tensor w, b;
};

// CogVideoXCausalConv3d: time kernel kt > 1 sees kt - 1 frames before its input:
// the previous frame batch's last frames (the cache) or, for the first batch,
// copies of the first frame. Height and width are zero padded.
struct CausalConv {
  Conv conv;
  int kt = 1, pad_h = 0, pad_w = 0;
  int cache_slot = -1;  // index into the per-decode cache when kt > 1
};

// CogVideoXSpatialNorm3D: group norm of f, scaled and shifted by 1x1x1
// convolutions of the latents zq resized (nearest) to f's size.
struct SpatialNorm {
  Tensor gn_w, gn_b;
  Conv conv_y, conv_b;
};

struct Resnet {
  SpatialNorm norm1, norm2;
  CausalConv conv1, conv2;
  bool has_shortcut = false;  // 1x1x1 convolution when channels change
  Conv shortcut;
};

struct UpBlock {
  std::vector<Resnet> resnets;
  bool upsample = false;
  bool compress_time = false;
  Conv up_conv;  // the 2D 3x3 convolution, stored as [O, C, 1, 3, 3]
};

using ConvCache = std::vector<Tensor>;

// ---------------------------------------------------------------- building blocks

Tensor causal_conv(const CausalConv& c, const Tensor& x, ConvCache& cache) {
  std::vector<Tensor> parts;
  if (c.kt > 1) {
    Tensor& cached = cache[size_t(c.cache_slot)];
    if (cached.defined()) {
      parts.push_back(cached);
    } else {  // the first batch sees copies of its first frame
      parts.assign(size_t(c.kt - 1), ops::slice(x, 2, 0, 1));
    }
  }
  parts.push_back(x);
  Tensor out = ops::conv3d_joined(parts, c.conv.w, &c.conv.b, {1, 1, 1}, {0, c.pad_h, c.pad_w});
  if (c.kt > 1) {  // the last kt - 1 frames seen, for the next batch
    const int64_t keep = c.kt - 1, t = x.dim(2);
    cache[size_t(c.cache_slot)] =
        t >= keep ? ops::slice(x, 2, t - keep, t) : ops::slice(ops::concat(parts, 2), 2, t, t + keep);
  }
  return out;
}

// Nearest resize of t [B, C, T, H, W] by the integer factors that take it to (t_out, h_out, w_out).
Tensor resize_nearest(const Tensor& t, int64_t t_out, int64_t h_out, int64_t w_out) {
  int64_t ti = t.dim(2), hi = t.dim(3), wi = t.dim(4);
  // The decoder only ever doubles sizes, so the factors are integers (and
  // nearest with an integer factor is a repeat).
  PAB_ASSERT(ti > 0 && t_out % ti == 0 && h_out % hi == 0 && w_out % wi == 0, "resize ", t.desc(), " to ", t_out, "x",
             h_out, "x", w_out);
  int st = int(t_out / ti), sh = int(h_out / hi), sw = int(w_out / wi);
  if (st == 1 && sh == 1 && sw == 1) return t;
  return ops::upsample_nearest(t, {st, sh, sw});
}

// F.interpolate(zq, size=f.shape[-3:]) with CogVideoX's split of an odd frame
// count into the first frame and the rest; f_shape is [B, C, T, H, W].
Tensor resize_like(const Tensor& t, const Shape& f_shape) {
  int64_t tf = f_shape[2], h = f_shape[3], w = f_shape[4];
  if (tf > 1 && tf % 2 == 1) {
    PAB_ASSERT(t.dim(2) > 1, "spatial norm: ", t.desc(), " for features ", shape_str(f_shape));
    Tensor first = resize_nearest(ops::slice(t, 2, 0, 1), 1, h, w);
    Tensor rest = resize_nearest(ops::slice(t, 2, 1, t.dim(2)), tf - 1, h, w);
    return ops::concat({first, rest}, 2);
  }
  return resize_nearest(t, tf, h, w);
}

// SpatialNorm3D followed by the SiLU that every use applies.
Tensor spatial_norm_silu(const SpatialNorm& n, const Tensor& f, const Tensor& zq, int groups) {
  // The 1x1x1 convolutions commute with the nearest resize, so they run at the
  // latents' resolution and only their results are resized.
  Tensor y = ops::conv3d(zq, n.conv_y.w, &n.conv_y.b);
  Tensor b = ops::conv3d(zq, n.conv_b.w, &n.conv_b.b);
  // Resize time and width only; the height repeat happens in the fused norm,
  // scale, shift and SiLU (no full-size copy of y and b).
  const Shape narrow = {f.dim(0), f.dim(1), f.dim(2), zq.dim(3), f.dim(4)};
  return ops::group_norm_scale_shift(f, groups, &n.gn_w, &n.gn_b, kNormEps, resize_like(y, narrow),
                                     resize_like(b, narrow), /*silu=*/true);
}

Tensor resnet_forward(const Resnet& r, const Tensor& x, const Tensor& zq, int groups, ConvCache& cache) {
  Tensor h = spatial_norm_silu(r.norm1, x, zq, groups);
  h = causal_conv(r.conv1, h, cache);
  h = spatial_norm_silu(r.norm2, h, zq, groups);
  h = causal_conv(r.conv2, h, cache);
  if (r.has_shortcut) return ops::add(h, ops::conv3d(x, r.shortcut.w, &r.shortcut.b));
  return ops::add(h, x);
}

// CogVideoXUpsample3D: nearest 2x in space, and in time where compress_time
// is set (an odd frame count keeps its first frame single), then a 3x3
// convolution per frame.
Tensor upsample_forward(const UpBlock& u, Tensor x) {
  int64_t t = x.dim(2);
  if (u.compress_time && t > 1 && t % 2 == 1) {
    Tensor first = ops::upsample_nearest(ops::slice(x, 2, 0, 1), {1, 2, 2});
    Tensor rest = ops::upsample_nearest(ops::slice(x, 2, 1, t), {2, 2, 2});
    x = Tensor();  // freed before the concatenation allocates
    x = ops::concat({first, rest}, 2);
  } else if (u.compress_time && t > 1) {
    x = ops::upsample_nearest(x, {2, 2, 2});
  } else {
    x = ops::upsample_nearest(x, {1, 2, 2});
  }
  return ops::conv3d(x, u.up_conv.w, &u.up_conv.b, {1, 1, 1}, {0, 1, 1});
}

// ---------------------------------------------------------------- tile blending

// Weights of diffusers' blend_v / blend_h: row y of the blend takes
// (1 - y / extent) of the previous tile and y / extent of this one, each
// rounded to f32 as PyTorch does with Python scalars.
std::pair<Tensor, Tensor> blend_weights(int64_t extent, const Shape& shape, const Tensor& like) {
  std::vector<float> wa(static_cast<size_t>(extent)), wb(static_cast<size_t>(extent));
  for (int64_t y = 0; y < extent; ++y) {
    double frac = double(y) / double(extent);
    wa[size_t(y)] = float(1.0 - frac);
    wb[size_t(y)] = float(frac);
  }
  auto place = [&](const std::vector<float>& v) {
    Tensor t = Tensor::from_vector(v, shape);
    if (like.dtype() != DType::f32) t = t.to(like.dtype());
    if (like.device() != Device::cpu) t = t.to(like.device());
    return t;
  };
  return {place(wa), place(wb)};
}

// Blends the last `extent` rows (dim 3) or columns (dim 4) of tile a into the
// first ones of tile b.
Tensor blend(const Tensor& a, const Tensor& b, int64_t extent, int dim) {
  extent = std::min({a.dim(dim), b.dim(dim), extent});
  if (extent <= 0) return b;
  Shape wshape = dim == 3 ? Shape{extent, 1} : Shape{extent};
  auto [wa, wb] = blend_weights(extent, wshape, b);
  Tensor mixed = ops::add(ops::mul(ops::slice(a, dim, a.dim(dim) - extent, a.dim(dim)), wa),
                          ops::mul(ops::slice(b, dim, 0, extent), wb));
  if (extent == b.dim(dim)) return mixed;
  return ops::concat({mixed, ops::slice(b, dim, extent, b.dim(dim))}, dim);
}

// ---------------------------------------------------------------- loading

struct Loader {
  const WeightSource& ckpt;
  const LoadOptions& opts;

  Tensor get(const std::string& name, const Shape& shape) const {
    return ckpt.load(name, shape, opts.dtype, opts.device);
  }
  Conv conv(const std::string& name, const Shape& w_shape) const {
    return {get(name + ".weight", w_shape), get(name + ".bias", {w_shape[0]})};
  }
};

}  // namespace

struct CogVideoXVae::Decoder {
  bool has_post_quant = false;
  Conv post_quant;
  CausalConv conv_in;
  std::vector<Resnet> mid;
  std::vector<UpBlock> up;
  SpatialNorm norm_out;
  CausalConv conv_out;
  int groups = 32;
  int cache_slots = 0;

  CausalConv causal(const Loader& l, const std::string& name, int64_t in, int64_t out) {
    CausalConv c;
    c.conv = l.conv(name + ".conv", {out, in, 3, 3, 3});
    c.kt = 3;
    c.pad_h = c.pad_w = 1;
    c.cache_slot = cache_slots++;
    return c;
  }
  SpatialNorm norm(const Loader& l, const std::string& name, int64_t f, int64_t zq) {
    SpatialNorm n;
    n.gn_w = l.get(name + ".norm_layer.weight", {f});
    n.gn_b = l.get(name + ".norm_layer.bias", {f});
    n.conv_y = l.conv(name + ".conv_y.conv", {f, zq, 1, 1, 1});
    n.conv_b = l.conv(name + ".conv_b.conv", {f, zq, 1, 1, 1});
    return n;
  }
  Resnet resnet(const Loader& l, const std::string& name, int64_t in, int64_t out, int64_t zq) {
    Resnet r;
    r.norm1 = norm(l, name + ".norm1", in, zq);
    r.conv1 = causal(l, name + ".conv1", in, out);
    r.norm2 = norm(l, name + ".norm2", out, zq);
    r.conv2 = causal(l, name + ".conv2", out, out);
    if (in != out) {
      r.has_shortcut = true;
      r.shortcut = l.conv(name + ".conv_shortcut", {out, in, 1, 1, 1});
    }
    return r;
  }

  // One frame batch through CogVideoXDecoder3D; z is also the spatial norms' zq.
  Tensor forward(const Tensor& z, ConvCache& cache) const {
    Tensor h = causal_conv(conv_in, z, cache);
    for (const Resnet& r : mid) h = resnet_forward(r, h, z, groups, cache);
    for (const UpBlock& u : up) {
      for (const Resnet& r : u.resnets) h = resnet_forward(r, h, z, groups, cache);
      if (u.upsample) h = upsample_forward(u, std::move(h));
    }
    h = spatial_norm_silu(norm_out, h, z, groups);
    return causal_conv(conv_out, h, cache);
  }
};

CogVideoXVae::~CogVideoXVae() = default;

namespace {

CogVideoXVaeConfig parse_config(const JsonConfig& c) {
  CogVideoXVaeConfig cfg;
  std::string cls = c.get_or<std::string>("_class_name", "AutoencoderKLCogVideoX");
  if (cls != "AutoencoderKLCogVideoX") c.unsupported("_class_name", "expected AutoencoderKLCogVideoX");
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
      "up_block_types", std::vector<std::string>(cfg.block_out_channels.size(), "CogVideoXUpBlock3D"));
  if (up_types.size() != cfg.block_out_channels.size())
    c.unsupported("up_block_types", "expected one entry per block_out_channels entry");
  for (const std::string& t : up_types)
    if (t != "CogVideoXUpBlock3D") c.unsupported("up_block_types", "only CogVideoXUpBlock3D is supported");

  cfg.latent_channels = c.get_or<int>("latent_channels", cfg.latent_channels);
  cfg.out_channels = c.get_or<int>("out_channels", cfg.out_channels);
  cfg.layers_per_block = c.get_or<int>("layers_per_block", cfg.layers_per_block);
  c.require_positive({{"latent_channels", cfg.latent_channels}, {"out_channels", cfg.out_channels}});
  if (cfg.layers_per_block < 0 || cfg.layers_per_block > 64)
    c.unsupported("layers_per_block", "expected 0 to 64 resnets per block");

  double ratio = c.get_or<double>("temporal_compression_ratio", 4.0);
  int level = 0;
  while ((1 << level) < ratio && level < 30) ++level;
  if (double(1 << level) != ratio || level > int(cfg.block_out_channels.size()) - 1)
    c.unsupported("temporal_compression_ratio",
                  cat("expected a power of two up to 2^", cfg.block_out_channels.size() - 1, " (one per upsampler)"));
  cfg.temporal_compress_level = level;

  cfg.sample_height = c.get_or<int>("sample_height", cfg.sample_height);
  cfg.sample_width = c.get_or<int>("sample_width", cfg.sample_width);
  c.require_positive({{"sample_height", cfg.sample_height}, {"sample_width", cfg.sample_width}});
  cfg.scaling_factor = c.get_or<double>("scaling_factor", cfg.scaling_factor);
  if (!(cfg.scaling_factor > 0)) c.unsupported("scaling_factor", "expected a positive number");
  cfg.use_post_quant_conv = c.get_or<bool>("use_post_quant_conv", false);
  // diffusers builds post_quant_conv with out_channels on both sides, so it can
  // only run when the latents have that many channels.
  if (cfg.use_post_quant_conv && cfg.out_channels != cfg.latent_channels)
    c.unsupported("use_post_quant_conv", "needs latent_channels == out_channels (diffusers sizes it by out_channels)");
  return cfg;
}

}  // namespace

CogVideoXVaeConfig CogVideoXVae::config_from_json(const JsonConfig& json) {
  return parse_config(json);
}

std::unique_ptr<CogVideoXVae> CogVideoXVae::load(const std::string& dir, const LoadOptions& opts) {
  JsonConfig json = JsonConfig::load((std::filesystem::path(dir) / "config.json").string());
  parse_config(json);  // a config error is reported before the weights are opened
  return load(json, Checkpoint::open_dir(dir), opts);
}

std::unique_ptr<CogVideoXVae> CogVideoXVae::load(const JsonConfig& json, const WeightSource& source,
                                                 const LoadOptions& opts) {
  // Only the decoder runs: the encoder and its quantisation conv stay unloaded.
  WeightUse weights(source);
  weights.not_needed("encoder.");
  weights.not_needed("quant_conv.");
  std::unique_ptr<CogVideoXVae> vae(new CogVideoXVae());
  vae->config_ = parse_config(json);
  vae->opts_ = opts;
  const CogVideoXVaeConfig& cfg = vae->config_;

  Loader l{weights, opts};
  auto d = std::make_unique<Decoder>();
  d->groups = cfg.norm_num_groups;
  const int64_t zq = cfg.latent_channels;
  std::vector<int64_t> rev(cfg.block_out_channels.rbegin(), cfg.block_out_channels.rend());
  if (cfg.use_post_quant_conv) {
    d->has_post_quant = true;
    d->post_quant = l.conv("post_quant_conv", {zq, zq, 1, 1, 1});
  }
  d->conv_in = d->causal(l, "decoder.conv_in", zq, rev[0]);
  for (int i = 0; i < 2; ++i) d->mid.push_back(d->resnet(l, cat("decoder.mid_block.resnets.", i), rev[0], rev[0], zq));
  int64_t channels = rev[0];
  for (size_t i = 0; i < rev.size(); ++i) {
    UpBlock u;
    std::string name = cat("decoder.up_blocks.", i);
    for (int j = 0; j <= cfg.layers_per_block; ++j) {
      int64_t in = j == 0 ? channels : rev[i];
      u.resnets.push_back(d->resnet(l, cat(name, ".resnets.", j), in, rev[i], zq));
    }
    channels = rev[i];
    u.upsample = i + 1 < rev.size();
    u.compress_time = int(i) < cfg.temporal_compress_level;
    if (u.upsample) {
      u.up_conv = l.conv(name + ".upsamplers.0.conv", {channels, channels, 3, 3});
      u.up_conv.w = u.up_conv.w.reshape({channels, channels, 1, 3, 3});  // a per-frame 2D convolution
    }
    d->up.push_back(std::move(u));
  }
  d->norm_out = d->norm(l, "decoder.norm_out", channels, zq);
  d->conv_out = d->causal(l, "decoder.conv_out", channels, cfg.out_channels);
  vae->decoder_ = std::move(d);
  check_weights_used(weights, "AutoencoderKLCogVideoX (decoder)", opts);
  return vae;
}

int64_t CogVideoXVae::decoded_frames(int64_t latent_frames) const {
  return config_.decoded_frames(latent_frames);
}

int64_t CogVideoXVaeConfig::decoded_frames(int64_t latent_frames) const {
  auto through_decoder = [&](int64_t n) {
    for (int i = 0; i < temporal_compress_level; ++i) n = n > 1 ? 2 * n - (n % 2) : n;
    return n;
  };
  int64_t batches = std::max<int64_t>(latent_frames / kLatentFramesPerBatch, 1);
  int64_t first = std::min(latent_frames, kLatentFramesPerBatch + latent_frames % kLatentFramesPerBatch);
  return through_decoder(first) + (batches - 1) * through_decoder(kLatentFramesPerBatch);
}

uint64_t CogVideoXVaeConfig::decode_bytes(int64_t latent_frames, int64_t height, int64_t width, bool tiled, DType dtype,
                                          Device device) const {
  const char* what = "CogVideoX VAE decode";
  // A frame batch's decoded frames at full resolution in the widest channel
  // count there, six such activations at once (resnet input, norm,
  // convolution output, the causal caches; twelve on the GPU, whose
  // convolutions also hold channels-last copies); a tile where tiled. The
  // decoded video is held twice (its frame batches, joined).
  const int64_t batch_frames = decoded_frames(std::min<int64_t>(latent_frames, kLatentFramesPerBatch + 1));
  const int64_t h = tiled ? std::min<int64_t>(height, sample_height / 2) : height;
  const int64_t w = tiled ? std::min<int64_t>(width, sample_width / 2) : width;
  const int64_t frames = decoded_frames(latent_frames);
  const int64_t copies = device == Device::cpu ? 6 : 12;
  return token_bytes(copies * batch_frames, h * w, block_out_channels.front(), dtype, 1, what) +
         token_bytes(2 * frames, height * width, out_channels, dtype, tiled ? 2 : 1, what);
}

// AutoencoderKLCogVideoX._decode without tiling: frame batches, each seeing
// the previous one through the convolution cache.
Tensor CogVideoXVae::decode_untiled(const Tensor& z) const {
  const int64_t frames = z.dim(2);
  const int64_t batches = std::max<int64_t>(frames / kLatentFramesPerBatch, 1);
  const int64_t rem = frames % kLatentFramesPerBatch;
  ConvCache cache(size_t(decoder_->cache_slots));
  std::vector<Tensor> parts;
  for (int64_t i = 0; i < batches; ++i) {
    int64_t start = kLatentFramesPerBatch * i + (i == 0 ? 0 : rem);
    int64_t end = std::min(frames, kLatentFramesPerBatch * (i + 1) + rem);
    Tensor zi = ops::slice(z, 2, start, end);
    if (decoder_->has_post_quant) zi = ops::conv3d(zi, decoder_->post_quant.w, &decoder_->post_quant.b);
    parts.push_back(decoder_->forward(zi, cache));
  }
  return parts.size() == 1 ? parts[0] : ops::concat(parts, 2);
}

// AutoencoderKLCogVideoX.tiled_decode. diffusers decodes every tile, then
// blends each (in place) with the already blended tile above and to its left
// and crops it; blending row by row gives the same values while holding only
// the previous row of tiles.
Tensor CogVideoXVae::decode_tiled(const Tensor& z, const CogVideoXDecodeOptions& o) const {
  const int64_t height = z.dim(3), width = z.dim(4);
  const int64_t sample_h = o.tile_sample_min_height, sample_w = o.tile_sample_min_width;
  const double factor_h = o.tile_overlap_factor_height, factor_w = o.tile_overlap_factor_width;
  const int64_t latent_h = int64_t(double(sample_h) / config_.spatial_factor());
  const int64_t latent_w = int64_t(double(sample_w) / config_.spatial_factor());
  const int64_t overlap_h = int64_t(double(latent_h) * (1 - factor_h));
  const int64_t overlap_w = int64_t(double(latent_w) * (1 - factor_w));
  const int64_t blend_h = int64_t(double(sample_h) * factor_h);
  const int64_t blend_w = int64_t(double(sample_w) * factor_w);
  const int64_t limit_h = sample_h - blend_h, limit_w = sample_w - blend_w;
  if (overlap_h <= 0 || overlap_w <= 0 || limit_h <= 0 || limit_w <= 0)
    fail("CogVideoXVae::decode: tiles of ", sample_h, "x", sample_w, " pixels with overlap factors ", factor_h, ", ",
         factor_w, " leave no stride between tiles (", overlap_h, "x", overlap_w, " latents)");

  std::vector<Tensor> above, strips;
  for (int64_t i = 0; i < height; i += overlap_h) {
    std::vector<Tensor> row, crops;
    for (int64_t j = 0; j < width; j += overlap_w) {
      Tensor tile =
          ops::slice(ops::slice(z, 3, i, std::min(height, i + latent_h)), 4, j, std::min(width, j + latent_w));
      tile = decode_untiled(tile);
      if (i > 0) tile = blend(above[row.size()], tile, blend_h, 3);
      if (j > 0) tile = blend(row.back(), tile, blend_w, 4);
      crops.push_back(
          ops::slice(ops::slice(tile, 3, 0, std::min(limit_h, tile.dim(3))), 4, 0, std::min(limit_w, tile.dim(4))));
      row.push_back(std::move(tile));
    }
    strips.push_back(crops.size() == 1 ? crops[0] : ops::concat(crops, 4));
    above = std::move(row);
  }
  return strips.size() == 1 ? strips[0] : ops::concat(strips, 3);
}

Tensor CogVideoXVae::decode(const Tensor& z_in, const CogVideoXDecodeOptions& opts) const {
  if (!z_in.defined() || z_in.rank() != 5 || z_in.dim(1) != config_.latent_channels)
    fail("CogVideoXVae::decode: expected z [B, ", config_.latent_channels, ", F, H, W], got ",
         z_in.defined() ? z_in.desc() : "an undefined tensor");
  if (z_in.numel() == 0) fail("CogVideoXVae::decode: empty z ", z_in.desc());
  Tensor z = z_in;
  if (z.device() != opts_.device) z = z.to(opts_.device);
  if (z.dtype() != opts_.dtype) z = z.to(opts_.dtype);

  if (opts.tiled) {
    CogVideoXDecodeOptions o = opts;
    // enable_tiling(x) keeps the default where x is 0 or None
    if (o.tile_sample_min_height == 0) o.tile_sample_min_height = config_.sample_height / 2;
    if (o.tile_sample_min_width == 0) o.tile_sample_min_width = config_.sample_width / 2;
    if (o.tile_overlap_factor_height == 0) o.tile_overlap_factor_height = 1.0 / 6.0;
    if (o.tile_overlap_factor_width == 0) o.tile_overlap_factor_width = 1.0 / 5.0;
    if (o.tile_sample_min_height < 0 || o.tile_sample_min_width < 0)
      fail("CogVideoXVae::decode: negative tile size ", o.tile_sample_min_height, "x", o.tile_sample_min_width);
    int64_t latent_h = int64_t(double(o.tile_sample_min_height) / config_.spatial_factor());
    int64_t latent_w = int64_t(double(o.tile_sample_min_width) / config_.spatial_factor());
    if (z.dim(4) > latent_w || z.dim(3) > latent_h) return decode_tiled(z, o);
  }
  return decode_untiled(z);
}

Tensor CogVideoXVae::decode_latents(const Tensor& latents, const CogVideoXDecodeOptions& opts) const {
  if (!latents.defined() || latents.rank() != 5 || latents.dim(2) != config_.latent_channels)
    fail("CogVideoXVae::decode_latents: expected latents [B, F, ", config_.latent_channels, ", H, W], got ",
         latents.defined() ? latents.desc() : "an undefined tensor");
  return decode_scaled(ops::permute(latents, {0, 2, 1, 3, 4}), opts);  // [B, C, F, H, W]
}

Tensor CogVideoXVae::decode_video(const Tensor& latents, const VaeDecodeOptions& o) const {
  if (!latents.defined() || latents.rank() != 5 || latents.dim(1) != config_.latent_channels)
    fail("CogVideoXVae::decode_video: expected latents [B, ", config_.latent_channels, ", F, H, W], got ",
         latents.defined() ? latents.desc() : "an undefined tensor");
  CogVideoXDecodeOptions tiles;
  tiles.tiled = o.tiled;
  return decode_scaled(latents, tiles);
}

Tensor CogVideoXVae::decode_scaled(Tensor z, const CogVideoXDecodeOptions& opts) const {
  // `1 / scaling_factor * latents`: the reciprocal in double, rounded to f32, then one multiply
  z = ops::scale(z, float(1.0 / config_.scaling_factor));
  return decode(z, opts);
}

namespace {

class CogVideoXVaeFacts final : public VaeFacts {
 public:
  explicit CogVideoXVaeFacts(CogVideoXVaeConfig c) : c_(std::move(c)) {}
  VaeKind kind() const override { return VaeKind::causal_video; }
  int latent_channels() const override { return c_.latent_channels; }
  int spatial_factor() const override { return c_.spatial_factor(); }
  int temporal_factor() const override { return 1 << c_.temporal_compress_level; }
  int64_t decoded_frames(int64_t latent_frames) const override { return c_.decoded_frames(latent_frames); }
  uint64_t decode_bytes(int64_t latent_frames, int64_t height, int64_t width, const VaeDecodeOptions& o, DType dtype,
                        Device device) const override {
    return c_.decode_bytes(latent_frames, height, width, o.tiled, dtype, device);
  }

 private:
  CogVideoXVaeConfig c_;
};

std::unique_ptr<const VaeFacts> cogvideox_vae_facts(const JsonConfig& config) {
  return std::make_unique<CogVideoXVaeFacts>(CogVideoXVae::config_from_json(config));
}

std::unique_ptr<VideoVae> load_cogvideox_vae(const JsonConfig& config, const WeightSource& weights,
                                             const LoadOptions& opts) {
  return CogVideoXVae::load(config, weights, opts);
}

}  // namespace

PAB_REGISTER(VaeEntry, "AutoencoderKLCogVideoX", {cogvideox_vae_facts, load_cogvideox_vae});

}  // namespace pab
