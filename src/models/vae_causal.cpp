// Open-Sora-Plan's CausalVAEModel decoding (see vae_causal.h), module by
// module as VideoSys' autoencoder_kl_open_sora_plan_v110.py and _v120.py
// define them; functions take activations by value so that each buffer is
// freed as soon as the next one exists.
#include "models/vae_causal.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "backend/ops.h"
#include "core/registry.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "models/layers.h"

namespace pab {

namespace {

// Normalize() in both versions: GroupNorm(32 groups, eps 1e-6) whatever the config.
constexpr int kGroups = 32;
constexpr float kNormEps = 1e-6f;
// The decoder's conv_out always makes RGB.
constexpr int64_t kOutChannels = 3;

struct Conv {
  Tensor w, b;
};

// CausalConv3d: time kernel kt > 1 sees kt - 1 copies of the first frame in
// front of the video (no cache: the whole video, or time chunk, at once);
// height and width are zero padded.
struct CausalConv {
  Conv conv;
  int kt = 1, pad_h = 0, pad_w = 0;
};

struct Norm {
  Tensor w, b;
};

struct Resnet {
  Norm norm1, norm2;
  CausalConv conv1, conv2;
  bool has_shortcut = false;  // nin_shortcut, a 1x1x1 convolution, when channels change
  Conv shortcut;
};

struct MidAttention {
  Norm norm;
  Conv q, k, v, proj_out;  // 1x1x1 convolutions, stored as linear layers [C, C]
};

struct UpLevel {
  std::vector<Resnet> resnets;
  CausalSpatialUp spatial = CausalSpatialUp::none;
  CausalConv spatial_conv;
  CausalTimeUp time = CausalTimeUp::none;
  CausalConv time_conv;
  Tensor alpha, one_minus_alpha;  // sigmoid(mix_factor) and 1 - it, [1]
};

// ---------------------------------------------------------------- building blocks

Tensor causal_conv(const CausalConv& c, const Tensor& x) {
  if (c.kt == 1) return ops::conv3d(x, c.conv.w, &c.conv.b, {1, 1, 1}, {0, c.pad_h, c.pad_w});
  std::vector<Tensor> parts(size_t(c.kt - 1), ops::slice(x, 2, 0, 1));
  parts.push_back(x);
  return ops::conv3d_joined(parts, c.conv.w, &c.conv.b, {1, 1, 1}, {0, c.pad_h, c.pad_w});
}

Tensor norm_silu(const Norm& n, const Tensor& x) {
  return ops::silu(ops::group_norm(x, kGroups, &n.w, &n.b, kNormEps));
}

// ResnetBlock3D (dropout is inactive at inference).
Tensor resnet_forward(const Resnet& r, Tensor x) {
  Tensor h = causal_conv(r.conv1, norm_silu(r.norm1, x));
  h = causal_conv(r.conv2, norm_silu(r.norm2, h));
  if (r.has_shortcut) x = ops::conv3d(x, r.shortcut.w, &r.shortcut.b);
  return ops::add(x, h);
}

// AttnBlock3DFix: one head over the h * w positions of each frame.
Tensor attention_forward(const MidAttention& a, const Tensor& x) {
  const int64_t b = x.dim(0), c = x.dim(1), t = x.dim(2), hw = x.dim(3) * x.dim(4);
  Tensor h = ops::group_norm(x, kGroups, &a.norm.w, &a.norm.b, kNormEps);
  h = ops::permute(h, {0, 2, 3, 4, 1}).reshape({b * t, hw, c});  // [B*T, HW, C]
  Tensor q = ops::linear(h, a.q.w, a.q.b).reshape({b * t, hw, 1, c});
  Tensor k = ops::linear(h, a.k.w, a.k.b).reshape({b * t, hw, 1, c});
  Tensor v = ops::linear(h, a.v.w, a.v.b).reshape({b * t, hw, 1, c});
  h = Tensor();
  AttentionArgs args;
  args.scale = float(std::pow(double(c), -0.5));  // int(c) ** (-0.5)
  Tensor o = ops::attention(q, k, v, args).reshape({b * t, hw, c});
  q = k = v = Tensor();
  o = ops::linear(o, a.proj_out.w, a.proj_out.b);
  o = ops::permute(o.reshape({b, t, x.dim(3), x.dim(4), c}), {0, 4, 1, 2, 3});  // [B, C, T, H, W]
  return ops::add(x, o);
}

// One axis of F.interpolate(mode="trilinear", scale 2, align_corners=False),
// along `dim`: output 2i is 0.25 x[i-1] + 0.75 x[i] (x[0] itself at i = 0,
// where the source index clamps to 0), output 2i+1 is 0.75 x[i] + 0.25 x[i+1]
// (x[n] clamped to x[n-1]); the products are summed in PyTorch's order.
Tensor double_linear(const Tensor& x, int dim) {
  const Shape& s = x.shape();
  int64_t pre = 1, post = 1;
  for (int i = 0; i < dim; ++i) pre *= s[size_t(i)];
  for (int i = dim + 1; i < x.rank(); ++i) post *= s[size_t(i)];
  const int64_t n = s[size_t(dim)];
  Tensor v = x.reshape({pre, n, post});
  auto mix = [](const Tensor& a, float wa, const Tensor& b, float wb) {
    return ops::add(ops::scale(a, wa), ops::scale(b, wb));
  };
  Tensor first = ops::slice(v, 1, 0, 1), last = ops::slice(v, 1, n - 1, n);
  Tensor even = first, odd = mix(last, 0.75f, last, 0.25f);
  if (n > 1) {
    Tensor lo = ops::slice(v, 1, 0, n - 1), hi = ops::slice(v, 1, 1, n);
    even = ops::concat({first, mix(lo, 0.25f, hi, 0.75f)}, 1);
    odd = ops::concat({mix(lo, 0.75f, hi, 0.25f), odd}, 1);
  }
  // [pre, n, 2, post]: each even output before its odd one
  Tensor out = ops::concat({even.reshape({pre, n, 1, post}), odd.reshape({pre, n, 1, post})}, 2);
  Shape doubled = s;
  doubled[size_t(dim)] *= 2;
  return out.reshape(doubled);
}

// Trilinear interpolation of x [B, C, T, H, W] by 2 in space, and in time
// where `time`: axis by axis, width innermost as PyTorch nests its weights.
Tensor trilinear_up(Tensor x, bool space, bool time) {
  if (space) {
    x = double_linear(x, 4);
    x = double_linear(x, 3);
  }
  if (time) x = double_linear(x, 2);
  return x;
}

// The first frame alone, upsampled in space only (where `space`); the others
// together in time (and space); joined along time. One frame: space only.
Tensor upsample_keeping_first(Tensor x, bool space) {
  const int64_t t = x.dim(2);
  if (t == 1) return trilinear_up(std::move(x), space, false);
  Tensor first = trilinear_up(ops::slice(x, 2, 0, 1), space, false);
  Tensor rest = trilinear_up(ops::slice(x, 2, 1, t), space, true);
  x = Tensor();
  return ops::concat({first, rest}, 2);
}

Tensor up_level_forward(const UpLevel& u, Tensor h) {
  for (const Resnet& r : u.resnets) h = resnet_forward(r, std::move(h));
  switch (u.spatial) {
    case CausalSpatialUp::none:
      break;
    case CausalSpatialUp::nearest:
      h = causal_conv(u.spatial_conv, ops::upsample_nearest(h, {1, 2, 2}));
      break;
    case CausalSpatialUp::trilinear_t:
      h = causal_conv(u.spatial_conv, upsample_keeping_first(std::move(h), /*space=*/true));
      break;
  }
  switch (u.time) {
    case CausalTimeUp::none:
      break;
    case CausalTimeUp::linear:
      h = upsample_keeping_first(std::move(h), /*space=*/false);
      break;
    case CausalTimeUp::linear_res: {
      h = upsample_keeping_first(std::move(h), /*space=*/false);
      // alpha * x + (1 - alpha) * conv(x)
      Tensor c = ops::mul(causal_conv(u.time_conv, h), u.one_minus_alpha);
      h = ops::add(ops::mul(h, u.alpha), c);
      break;
    }
  }
  return h;
}

// ---------------------------------------------------------------- tile blending

// Rows (dim 3) or columns (dim 4) y of CausalVAEModel's blend_v / blend_h take
// (1 - y / extent) of the tile before and y / extent of this one, the Python
// scalars rounded to f32 as PyTorch multiplies a float tensor by them.
std::pair<Tensor, Tensor> blend_weights(int64_t extent, int dim, const Tensor& like) {
  std::vector<float> wa(static_cast<size_t>(extent)), wb(static_cast<size_t>(extent));
  for (int64_t y = 0; y < extent; ++y) {
    const double frac = double(y) / double(extent);
    wa[size_t(y)] = float(1.0 - frac);
    wb[size_t(y)] = float(frac);
  }
  const Shape shape = dim == 3 ? Shape{extent, 1} : Shape{extent};
  auto place = [&](const std::vector<float>& v) {
    Tensor t = Tensor::from_vector(v, shape);
    if (like.dtype() != DType::f32) t = t.to(like.dtype());
    if (like.device() != Device::cpu) t = t.to(like.device());
    return t;
  };
  return {place(wa), place(wb)};
}

// The last `extent` rows or columns of tile a blended into the first ones of b.
Tensor blend(const Tensor& a, const Tensor& b, int64_t extent, int dim) {
  extent = std::min({a.dim(dim), b.dim(dim), extent});
  if (extent <= 0) return b;
  auto [wa, wb] = blend_weights(extent, dim, b);
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
  Norm norm(const std::string& name, int64_t c) const { return {get(name + ".weight", {c}), get(name + ".bias", {c})}; }
  // A CausalConv3d module (its nn.Conv3d is `.conv`) of kernel kt x k x k, spatial padding k / 2.
  CausalConv causal(const std::string& name, int64_t in, int64_t out, int kt, int k) const {
    CausalConv c;
    c.conv = conv(name + ".conv", {out, in, kt, k, k});
    c.kt = kt;
    c.pad_h = c.pad_w = k / 2;
    return c;
  }
  Resnet resnet(const std::string& name, int64_t in, int64_t out) const {
    Resnet r;
    r.norm1 = norm(name + ".norm1", in);
    r.conv1 = causal(name + ".conv1", in, out, 3, 3);
    r.norm2 = norm(name + ".norm2", out);
    r.conv2 = causal(name + ".conv2", out, out, 3, 3);
    if (in != out) {
      r.has_shortcut = true;
      r.shortcut = conv(name + ".nin_shortcut.conv", {out, in, 1, 1, 1});
    }
    return r;
  }
  MidAttention attention(const std::string& name, int64_t c) const {
    MidAttention a;
    a.norm = norm(name + ".norm", c);
    using Part = std::pair<Conv*, const char*>;
    for (auto [part, conv_name] : {Part{&a.q, "q"}, Part{&a.k, "k"}, Part{&a.v, "v"}, Part{&a.proj_out, "proj_out"}}) {
      *part = conv(name + "." + conv_name + ".conv", {c, c, 1, 1, 1});
      part->w = part->w.reshape({c, c});
    }
    return a;
  }
};

}  // namespace

struct CausalVae::Decoder {
  bool has_post_quant = false;
  Conv post_quant;
  CausalConv conv_in;
  Resnet mid1, mid2;
  MidAttention mid_attn;
  std::vector<UpLevel> up;  // in the order they run: level n-1 first
  Norm norm_out;
  CausalConv conv_out;

  // Decoder.forward after post_quant_conv.
  Tensor forward(const Tensor& z) const {
    Tensor h = causal_conv(conv_in, z);
    h = resnet_forward(mid1, std::move(h));
    h = attention_forward(mid_attn, h);
    h = resnet_forward(mid2, std::move(h));
    for (const UpLevel& u : up) h = up_level_forward(u, std::move(h));
    return causal_conv(conv_out, norm_silu(norm_out, h));
  }
  Tensor post_quant_then_forward(Tensor z) const {
    if (has_post_quant) z = ops::conv3d(z, post_quant.w, &post_quant.b);
    return forward(z);
  }
};

CausalVae::~CausalVae() = default;

namespace {

constexpr const char* kV12Only = "Spatial2xTime2x3DUpsample";

CausalVaeConfig parse_config(const JsonConfig& c) {
  CausalVaeConfig cfg;
  std::string cls = c.get_or<std::string>("_class_name", "CausalVAEModel");
  if (cls != "CausalVAEModel") c.unsupported("_class_name", "expected CausalVAEModel");

  // The class defaults where a key is missing (save_config writes every one).
  const std::vector<std::string> spatial_default = {"", "SpatialUpsample2x", "SpatialUpsample2x", "SpatialUpsample2x"};
  const std::vector<std::string> temporal_default = {"", "", "TimeUpsample2x", "TimeUpsample2x"};
  auto spatial = c.get_or<std::vector<std::string>>("decoder_spatial_upsample", spatial_default);
  auto temporal = c.get_or<std::vector<std::string>>("decoder_temporal_upsample", temporal_default);
  const bool v12 = c.has("use_quant_layer") || std::find(spatial.begin(), spatial.end(), kV12Only) != spatial.end();
  cfg.version = v12 ? CausalVaeVersion::v120 : CausalVaeVersion::v110;
  const char* version = v12 ? "v1.2" : "v1.1";

  cfg.hidden_size = int(c.get_size("hidden_size", cfg.hidden_size));
  cfg.hidden_size_mult = c.get_or<std::vector<int>>("hidden_size_mult", cfg.hidden_size_mult);
  // Each level but the last may double the size: eight levels already upsample 128x.
  if (cfg.hidden_size_mult.empty() || cfg.hidden_size_mult.size() > 8)
    c.unsupported("hidden_size_mult", "expected 1 to 8 levels");
  for (int m : cfg.hidden_size_mult) {
    c.require_positive({{"hidden_size_mult", m}});
    const int64_t ch = int64_t(cfg.hidden_size) * m;
    if (ch > JsonConfig::kMaxConfigSize) c.unsupported("hidden_size_mult", cat("a level of ", ch, " channels"));
    if (ch % kGroups != 0)
      c.unsupported("hidden_size", cat("hidden_size * hidden_size_mult must be a multiple of the ", kGroups,
                                       " norm groups (", cfg.hidden_size, " * ", m, " is not)"));
  }
  const size_t levels = cfg.hidden_size_mult.size();
  cfg.z_channels = int(c.get_size("z_channels", cfg.z_channels));
  cfg.embed_dim = int(c.get_size("embed_dim", cfg.embed_dim));
  cfg.num_res_blocks = c.get_or<int>("num_res_blocks", cfg.num_res_blocks);
  if (cfg.num_res_blocks < 0 || cfg.num_res_blocks > 64)
    c.unsupported("num_res_blocks", "expected 0 to 64 (each up level has num_res_blocks + 1 resnets)");
  cfg.use_quant_layer = c.get_or<bool>("use_quant_layer", true);
  if (cfg.use_quant_layer && c.get_or<std::string>("q_conv", "CausalConv3d") != "CausalConv3d")
    c.unsupported("q_conv", "only CausalConv3d is supported");
  // VideoSys ignores out_channels (v1.1.0's config has it, = 3); the decoder always makes 3.
  if (c.has("out_channels") && c.get<int>("out_channels") != kOutChannels)
    c.unsupported("out_channels", "CausalVAEModel always decodes 3 channels");

  for (const char* key : {"decoder_conv_in", "decoder_conv_out"})
    if (c.get_or<std::string>(key, "CausalConv3d") != "CausalConv3d")
      c.unsupported(key, "only CausalConv3d is supported");
  if (c.get_or<std::string>("decoder_mid_resnet", "ResnetBlock3D") != "ResnetBlock3D")
    c.unsupported("decoder_mid_resnet", "only ResnetBlock3D is supported");
  auto resnets =
      c.get_or<std::vector<std::string>>("decoder_resnet_blocks", std::vector<std::string>(4, "ResnetBlock3D"));
  if (resnets.size() != levels) c.unsupported("decoder_resnet_blocks", "expected one entry per hidden_size_mult entry");
  for (const std::string& r : resnets)
    if (r != "ResnetBlock3D") c.unsupported("decoder_resnet_blocks", "only ResnetBlock3D is supported");
  // Both classes default to AttnBlock3D (v1.1's old attention, which mixes
  // time into channels; v1.2 does not define it); the releases use AttnBlock3DFix.
  if (c.get_or<std::string>("decoder_attention", "AttnBlock3D") != "AttnBlock3DFix")
    c.unsupported("decoder_attention", "only AttnBlock3DFix is supported");

  if (spatial.size() != levels)
    c.unsupported("decoder_spatial_upsample", "expected one entry per hidden_size_mult entry");
  if (temporal.size() != levels)
    c.unsupported("decoder_temporal_upsample", "expected one entry per hidden_size_mult entry");
  for (size_t i = 0; i < levels; ++i) {
    if (spatial[i].empty()) {
      cfg.spatial_up.push_back(CausalSpatialUp::none);
    } else if (spatial[i] == "SpatialUpsample2x") {
      cfg.spatial_up.push_back(CausalSpatialUp::nearest);
    } else if (spatial[i] == kV12Only) {
      cfg.spatial_up.push_back(CausalSpatialUp::trilinear_t);
    } else {
      c.unsupported("decoder_spatial_upsample",
                    cat("'", spatial[i], "': expected \"\", SpatialUpsample2x or Spatial2xTime2x3DUpsample"));
    }
    if (temporal[i].empty()) {
      cfg.time_up.push_back(CausalTimeUp::none);
    } else if (v12 && (temporal[i] == "TimeUpsample2x" || temporal[i] == "TimeUpsampleRes2x")) {
      c.unsupported("decoder_temporal_upsample",
                    cat("'", temporal[i], "' is a v1.1 block, and this is a v1.2 config (it has use_quant_layer or ",
                        kV12Only, "), whose class has no temporal upsampler"));
    } else if (temporal[i] == "TimeUpsample2x") {
      cfg.time_up.push_back(CausalTimeUp::linear);
    } else if (temporal[i] == "TimeUpsampleRes2x") {
      cfg.time_up.push_back(CausalTimeUp::linear_res);
    } else {
      c.unsupported("decoder_temporal_upsample",
                    cat("'", temporal[i], "': expected \"\", TimeUpsample2x or TimeUpsampleRes2x (", version, ")"));
    }
  }

  // The decoder puts an attention block after each resnet of a level whose
  // resolution (counted from `resolution` / 2^(levels - 1), doubling after each
  // spatial upsampler) is in attn_resolutions; the releases have none.
  auto attn = c.get_or<std::vector<int64_t>>("attn_resolutions", {});
  int64_t res = c.get_size("resolution", 256) >> (levels - 1);
  for (size_t n = levels; n-- > 0;) {
    if (std::find(attn.begin(), attn.end(), res) != attn.end())
      c.unsupported("attn_resolutions",
                    cat("attention inside the decoder's up levels (resolution ", res, ") is not supported"));
    if (cfg.spatial_up[n] != CausalSpatialUp::none) res *= 2;
  }
  return cfg;
}

}  // namespace

int CausalVaeConfig::spatial_factor() const {
  int f = 1;
  for (CausalSpatialUp s : spatial_up) f *= s == CausalSpatialUp::none ? 1 : 2;
  return f;
}

int CausalVaeConfig::temporal_factor() const {
  int f = 1;
  for (CausalSpatialUp s : spatial_up) f *= s == CausalSpatialUp::trilinear_t ? 2 : 1;
  for (CausalTimeUp t : time_up) f *= t == CausalTimeUp::none ? 1 : 2;
  return f;
}

int64_t CausalVaeConfig::decoded_frames(int64_t latent_frames) const {
  return latent_frames < 1 ? 0 : (latent_frames - 1) * temporal_factor() + 1;
}

uint64_t CausalVaeConfig::decode_bytes(int64_t latent_frames, int64_t height, int64_t width, bool tiled, DType dtype,
                                       Device device) const {
  const char* what = "CausalVAEModel decode";
  const CausalVaeTiling tiles;
  const int64_t s = spatial_factor();
  // One decoder pass: over a tile (and a time chunk) where tiled.
  int64_t t = latent_frames, h = (height + s - 1) / s, w = (width + s - 1) / s;
  if (tiled) {
    t = std::min(t, tiles.tile_latent_min_size_t);
    h = std::min(h, tiles.tile_latent_min_size);
    w = std::min(w, tiles.tile_latent_min_size);
  }
  // The bytes of the largest activation of the pass, walking the levels as they run.
  int64_t channels = int64_t(hidden_size) * hidden_size_mult.back();
  uint64_t largest = 0;
  auto note = [&](int64_t c) { largest = std::max(largest, token_bytes(c, t, h * w, dtype, 1, what)); };
  note(channels);
  for (size_t n = hidden_size_mult.size(); n-- > 0;) {
    // a level's first resnet holds its input and output widths
    note(std::max<int64_t>(channels, int64_t(hidden_size) * hidden_size_mult[n]));
    channels = int64_t(hidden_size) * hidden_size_mult[n];
    if (spatial_up[n] != CausalSpatialUp::none) h *= 2, w *= 2;
    if (spatial_up[n] == CausalSpatialUp::trilinear_t || time_up[n] != CausalTimeUp::none) t = t > 1 ? 2 * t - 1 : t;
    note(channels);
  }
  // Six such activations at once (a resnet's input, norm, activation,
  // convolution output and sum; an interpolation's halves and their join),
  // twelve on the GPU, whose convolutions also hold channels-last copies. The
  // decoded video once, three times where tiled (the decoded tiles, the time
  // chunks, joined).
  const uint64_t copies = device == Device::cpu ? 6 : 12;
  uint64_t total = 0;
  if (__builtin_mul_overflow(largest, copies, &total)) fail(what, ": a size beyond 2^64 bytes");
  const uint64_t video =
      token_bytes(decoded_frames(latent_frames), height * width, kOutChannels, dtype, tiled ? 3 : 1, what);
  if (__builtin_add_overflow(total, video, &total)) fail(what, ": a size beyond 2^64 bytes");
  return total;
}

CausalVaeConfig CausalVae::config_from_json(const JsonConfig& json) {
  return parse_config(json);
}

std::unique_ptr<CausalVae> CausalVae::load(const std::string& dir, const LoadOptions& opts) {
  JsonConfig json = JsonConfig::load((std::filesystem::path(dir) / "config.json").string());
  parse_config(json);  // a config error is reported before the weights are opened
  return load(json, Checkpoint::open_dir(dir), opts);
}

std::unique_ptr<CausalVae> CausalVae::load(const JsonConfig& json, const WeightSource& source,
                                           const LoadOptions& opts) {
  // Only the decoder runs: the encoder and its quantisation conv stay unloaded.
  WeightUse weights(source);
  weights.not_needed("encoder.");
  weights.not_needed("quant_conv.");
  std::unique_ptr<CausalVae> vae(new CausalVae());
  vae->config_ = parse_config(json);
  vae->opts_ = opts;
  const CausalVaeConfig& cfg = vae->config_;

  Loader l{weights, opts};
  auto d = std::make_unique<Decoder>();
  const int64_t z = cfg.z_channels;
  if (cfg.use_quant_layer) {
    d->has_post_quant = true;
    d->post_quant = l.conv("post_quant_conv.conv", {z, cfg.embed_dim, 1, 1, 1});
  }
  const size_t levels = cfg.hidden_size_mult.size();
  int64_t channels = int64_t(cfg.hidden_size) * cfg.hidden_size_mult.back();
  d->conv_in = l.causal("decoder.conv_in", z, channels, 3, 3);
  d->mid1 = l.resnet("decoder.mid.block_1", channels, channels);
  d->mid_attn = l.attention("decoder.mid.attn_1", channels);
  d->mid2 = l.resnet("decoder.mid.block_2", channels, channels);
  for (size_t n = levels; n-- > 0;) {  // decoder.up[n] runs n-th from the end
    const std::string name = cat("decoder.up.", n);
    const int64_t out = int64_t(cfg.hidden_size) * cfg.hidden_size_mult[n];
    UpLevel u;
    for (int j = 0; j <= cfg.num_res_blocks; ++j) {
      u.resnets.push_back(l.resnet(cat(name, ".block.", j), channels, out));
      channels = out;
    }
    u.spatial = cfg.spatial_up[n];
    if (u.spatial == CausalSpatialUp::nearest) u.spatial_conv = l.causal(name + ".upsample.conv", out, out, 1, 3);
    if (u.spatial == CausalSpatialUp::trilinear_t) u.spatial_conv = l.causal(name + ".upsample.conv", out, out, 3, 3);
    u.time = cfg.time_up[n];
    if (u.time == CausalTimeUp::linear_res) {
      u.time_conv = l.causal(name + ".time_upsample.conv", out, out, 3, 3);
      u.alpha = ops::unary(l.get(name + ".time_upsample.mix_factor", {1}), Unary::sigmoid);
      u.one_minus_alpha = ops::affine(u.alpha, -1.0f, 1.0f);
    }
    d->up.push_back(std::move(u));
  }
  d->norm_out = l.norm("decoder.norm_out", channels);
  d->conv_out = l.causal("decoder.conv_out", channels, kOutChannels, 3, 3);
  vae->decoder_ = std::move(d);
  check_weights_used(weights, "CausalVAEModel (decoder)", opts);
  return vae;
}

Tensor CausalVae::decode_untiled(const Tensor& z) const {
  return decoder_->post_quant_then_forward(z);
}

// CausalVAEModel.tiled_decode: time chunks of tile_latent_min_size_t latent
// frames starting every tile_latent_min_size_t - 1 (so each overlaps the one
// before by a frame), a last shorter chunk to the end where they fall short;
// each chunk tiled in space, and every chunk but the first drops its first
// decoded frame (the overlapping latent frame's).
Tensor CausalVae::decode_tiled(const Tensor& z, const CausalVaeTiling& o) const {
  const int64_t t = z.dim(2), step = o.tile_latent_min_size_t - 1;
  std::vector<int64_t> starts;
  for (int64_t i = 0; i < t; i += step) starts.push_back(i);
  std::vector<std::pair<int64_t, int64_t>> chunks;
  if (starts.size() == 1) {
    chunks.push_back({0, t});
  } else {
    for (size_t i = 0; i + 1 < starts.size(); ++i) chunks.push_back({starts[i], starts[i + 1] + 1});
    if (chunks.back().second < t) chunks.push_back({starts.back(), t});
  }
  std::vector<Tensor> parts;
  for (size_t i = 0; i < chunks.size(); ++i) {
    Tensor dec = decode_tiled_2d(ops::slice(z, 2, chunks[i].first, chunks[i].second), o);
    if (i > 0) dec = ops::slice(dec, 2, 1, dec.dim(2));
    parts.push_back(std::move(dec));
  }
  return parts.size() == 1 ? parts[0] : ops::concat(parts, 2);
}

// CausalVAEModel.tiled_decode2d: square tiles of tile_latent_min_size latents
// every overlap_size, each decoded, blended with the (blended) tiles above and
// to its left and cropped to row_limit pixels. The original decodes every tile
// first; blending row by row gives the same values holding one row of tiles.
Tensor CausalVae::decode_tiled_2d(const Tensor& z, const CausalVaeTiling& o) const {
  const int64_t height = z.dim(3), width = z.dim(4), size = o.tile_latent_min_size;
  const int64_t overlap = int64_t(double(size) * (1 - o.tile_overlap_factor));
  const int64_t blend_extent = int64_t(double(o.tile_sample_min_size) * o.tile_overlap_factor);
  const int64_t limit = o.tile_sample_min_size - blend_extent;
  std::vector<Tensor> above, strips;
  for (int64_t i = 0; i < height; i += overlap) {
    std::vector<Tensor> row, crops;
    for (int64_t j = 0; j < width; j += overlap) {
      Tensor tile = ops::slice(ops::slice(z, 3, i, std::min(height, i + size)), 4, j, std::min(width, j + size));
      tile = decode_untiled(tile);
      if (i > 0) tile = blend(above[row.size()], tile, blend_extent, 3);
      if (j > 0) tile = blend(row.back(), tile, blend_extent, 4);
      crops.push_back(
          ops::slice(ops::slice(tile, 3, 0, std::min(limit, tile.dim(3))), 4, 0, std::min(limit, tile.dim(4))));
      row.push_back(std::move(tile));
    }
    strips.push_back(crops.size() == 1 ? crops[0] : ops::concat(crops, 4));
    above = std::move(row);
  }
  return strips.size() == 1 ? strips[0] : ops::concat(strips, 3);
}

Tensor CausalVae::decode(const Tensor& z_in, const CausalVaeDecodeOptions& opts) const {
  if (!z_in.defined() || z_in.rank() != 5 || z_in.dim(1) != config_.latent_channels())
    fail("CausalVae::decode: expected z [B, ", config_.latent_channels(), ", F, H, W], got ",
         z_in.defined() ? z_in.desc() : "an undefined tensor");
  if (z_in.numel() == 0) fail("CausalVae::decode: empty z ", z_in.desc());
  Tensor z = z_in;
  if (z.device() != opts_.device) z = z.to(opts_.device);
  if (z.dtype() != opts_.dtype) z = z.to(opts_.dtype);
  if (!opts.tiled) return decode_untiled(z);

  const CausalVaeTiling& t = opts.tiles;
  // Python's range() and slicing would fail or wrap on these.
  const int64_t overlap = int64_t(double(t.tile_latent_min_size) * (1 - t.tile_overlap_factor));
  const int64_t limit = t.tile_sample_min_size - int64_t(double(t.tile_sample_min_size) * t.tile_overlap_factor);
  if (t.tile_latent_min_size_t < 2 || overlap <= 0 || limit <= 0 || !(t.tile_overlap_factor >= 0))
    fail("CausalVae::decode: tiles of ", t.tile_latent_min_size, " latents (", t.tile_sample_min_size, " pixels) and ",
         t.tile_latent_min_size_t, " latent frames with overlap ", t.tile_overlap_factor,
         " leave no stride between tiles (", overlap, " latents, ", limit,
         " pixels kept) or chunks (at least 2 frames)");
  if (z.dim(4) > t.tile_latent_min_size || z.dim(3) > t.tile_latent_min_size || z.dim(2) > t.tile_latent_min_size_t)
    return decode_tiled(z, t);
  return decode_untiled(z);
}

Tensor CausalVae::decode_video(const Tensor& latents, const VaeDecodeOptions& o) const {
  if (!latents.defined() || latents.rank() != 5 || latents.dim(1) != config_.latent_channels())
    fail("CausalVae::decode_video: expected latents [B, ", config_.latent_channels(), ", F, H, W], got ",
         latents.defined() ? latents.desc() : "an undefined tensor");
  Tensor z = latents;
  if (z.device() != opts_.device) z = z.to(opts_.device);
  if (z.dtype() != opts_.dtype) z = z.to(opts_.dtype);
  if (z.dtype() == DType::f32) {
    // `x / 0.18215`: PyTorch's CPU divides by the f32 scalar
    Tensor scale = Tensor::scalar(float(kLatentScale));
    if (scale.device() != z.device()) scale = scale.to(z.device());
    z = ops::div(z, scale);
  } else {
    // in 16 bits its CUDA kernel multiplies by the f32 reciprocal
    z = ops::scale(z, 1.0f / float(kLatentScale));
  }
  CausalVaeDecodeOptions d;
  d.tiled = o.tiled;
  return decode(z, d);
}

namespace {

class CausalVaeFacts final : public VaeFacts {
 public:
  explicit CausalVaeFacts(CausalVaeConfig c) : c_(std::move(c)) {}
  VaeKind kind() const override { return VaeKind::causal_video; }
  int latent_channels() const override { return c_.latent_channels(); }
  int spatial_factor() const override { return c_.spatial_factor(); }
  int temporal_factor() const override { return c_.temporal_factor(); }
  int64_t decoded_frames(int64_t latent_frames) const override { return c_.decoded_frames(latent_frames); }
  uint64_t decode_bytes(int64_t latent_frames, int64_t height, int64_t width, const VaeDecodeOptions& o, DType dtype,
                        Device device) const override {
    return c_.decode_bytes(latent_frames, height, width, o.tiled, dtype, device);
  }

 private:
  CausalVaeConfig c_;
};

std::unique_ptr<const VaeFacts> causal_vae_facts(const JsonConfig& config) {
  return std::make_unique<CausalVaeFacts>(CausalVae::config_from_json(config));
}

std::unique_ptr<VideoVae> load_causal_vae(const JsonConfig& config, const WeightSource& weights,
                                          const LoadOptions& opts) {
  return CausalVae::load(config, weights, opts);
}

}  // namespace

PAB_REGISTER(VaeEntry, "CausalVAEModel", {causal_vae_facts, load_causal_vae});

}  // namespace pab
