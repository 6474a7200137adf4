// Open-Sora 1.2's VAE (VideoSys 4cce477, autoencoder_kl_open_sora.py,
// VideoAutoencoderPipeline), decoding only: latents are de-normalised per
// channel (z * scale + shift), cut into chunks of micro_z_frame_size latent
// frames (5 for micro_frame_size 17), each chunk decoded on its own by the
// temporal VAE (VAE_Temporal_SD: causal 3D convolutions, zero-padded in front
// in time, 2x temporal depth-to-space upsampling) to its frames in the 2D
// VAE's latent space, and every frame then decoded by the 2D VAE (an SD-style
// AutoencoderKL, divided by 0.18215 whatever its config says, as the
// original hard-codes it).
//
// The checkpoint (hpcai-tech/OpenSora-VAE-v1.2: config.json with
// `architectures: ["VideoAutoencoderPipeline"]` + model.safetensors) holds
// the 2D VAE under spatial_vae.module.* and the temporal VAE under
// temporal_vae.*. Its config does not describe either architecture: the
// original builds VAE_Temporal_SD and PixArt-Sigma's SDXL VAE whatever it
// says. pab does the same, and reads two optional keys that describe other
// sizes (the tiny test models): `vae_temporal` may hold VAE_Temporal's
// arguments (filters, num_res_blocks, channel_multipliers,
// temporal_downsample, num_groups, in_out_channels, latent_embed_dim,
// embed_dim) and `vae_2d.config` an AutoencoderKL config.json; absent keys
// take the original's values. Every weight's shape is checked on load.
#include <algorithm>
#include <cmath>

#include "backend/ops.h"
#include "core/registry.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "models/layers.h"
#include "models/vae.h"
#include "models/vae_kl.h"

namespace pab {

namespace {

constexpr const char* kClass = "VideoAutoencoderPipeline";
constexpr float kGroupNormEps = 1e-5f;  // nn.GroupNorm's default
constexpr double kSpatialScaling = 0.18215;
constexpr const char* kSpatialPrefix = "spatial_vae.module.";
constexpr const char* kTemporalPrefix = "temporal_vae.";

// PixArt-Sigma's SDXL VAE (PixArt-alpha/pixart_sigma_sdxlvae_T5_diffusers,
// vae/config.json): what VideoAutoencoderKL loads as the 2D VAE.
nlohmann::json sdxl_vae_config() {
  return {{"_class_name", "AutoencoderKL"},
          {"act_fn", "silu"},
          {"block_out_channels", {128, 256, 512, 512}},
          {"in_channels", 3},
          {"latent_channels", 4},
          {"layers_per_block", 2},
          {"norm_num_groups", 32},
          {"out_channels", 3},
          {"up_block_types", {"UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"}}};
}

struct TemporalConfig {
  int in_out_channels = 4, latent_embed_dim = 4, embed_dim = 4;
  int filters = 128, num_res_blocks = 4, num_groups = 32;
  std::vector<int> channel_multipliers = {1, 2, 2, 4};
  std::vector<bool> temporal_downsample = {false, true, true};

  // Frames per latent frame: 2 for every temporal downsampling.
  int time_factor() const {
    int f = 1;
    for (bool d : temporal_downsample) f *= d ? 2 : 1;
    return f;
  }
  // VAE_Temporal.get_latent_size in time: padded in front to a multiple of time_factor.
  int64_t latent_frames(int64_t frames) const { return (frames + time_factor() - 1) / time_factor(); }
};

struct OpenSoraVaeConfig {
  std::string where;
  TemporalConfig temporal;
  JsonConfig spatial{nlohmann::json::object(), ""};
  int64_t micro_frame_size = 0;                     // 0: the whole video at once (micro_frame_size null)
  std::vector<float> scale, shift;                  // per latent channel (a single value repeated)
  bool single_scale = false, single_shift = false;  // given as one number

  int64_t micro_latent_frames() const { return temporal.latent_frames(micro_frame_size); }
  // VideoAutoencoderPipeline.get_latent_size in time.
  int64_t latent_frames(int64_t frames) const {
    if (micro_frame_size == 0) return temporal.latent_frames(frames);
    const int64_t rest = frames % micro_frame_size;
    return frames / micro_frame_size * micro_latent_frames() + (rest > 0 ? temporal.latent_frames(rest) : 0);
  }
};

std::vector<float> channel_values(const JsonConfig& j, const char* key, float fallback, int channels) {
  std::vector<float> v(size_t(channels), fallback);
  if (!j.has(key)) return v;
  const nlohmann::json& x = j.json().at(key);
  if (x.is_number()) {
    std::fill(v.begin(), v.end(), j.get<float>(key));
  } else {
    std::vector<double> d = j.get<std::vector<double>>(key);
    if (d.size() != size_t(channels)) j.unsupported(key, cat("expected one value per latent channel (", channels, ")"));
    for (size_t i = 0; i < d.size(); ++i) v[i] = float(d[i]);
  }
  for (float f : v)
    if (!std::isfinite(f)) j.unsupported(key, "expected finite numbers");
  return v;
}

OpenSoraVaeConfig parse_config(const JsonConfig& j) {
  OpenSoraVaeConfig c;
  c.where = j.where();
  const std::string what = cat(j.where(), ": ");
  auto sub = [&](const char* key) {
    if (!j.has(key)) return JsonConfig(nlohmann::json::object(), cat(j.where(), " (", key, ")"));
    if (!j.json().at(key).is_object()) j.unsupported(key, "expected an object");
    return JsonConfig(j.json().at(key), cat(j.where(), " (", key, ")"));
  };
  const JsonConfig t = sub("vae_temporal");
  if (t.get_or<std::string>("type", "VAE_Temporal_SD") != "VAE_Temporal_SD")
    t.unsupported("type", "expected VAE_Temporal_SD");
  if (t.has("from_pretrained"))
    t.unsupported("from_pretrained",
                  "the temporal VAE's weights are read from this folder's checkpoint; expected null");
  TemporalConfig& tc = c.temporal;
  tc.in_out_channels = int(t.get_size("in_out_channels", tc.in_out_channels));
  tc.latent_embed_dim = int(t.get_size("latent_embed_dim", tc.latent_embed_dim));
  tc.embed_dim = int(t.get_size("embed_dim", tc.embed_dim));
  tc.filters = int(t.get_size("filters", tc.filters));
  tc.num_res_blocks = int(t.get_size("num_res_blocks", tc.num_res_blocks));
  tc.num_groups = int(t.get_size("num_groups", tc.num_groups));
  tc.channel_multipliers = t.get_or("channel_multipliers", tc.channel_multipliers);
  if (tc.channel_multipliers.empty() || tc.channel_multipliers.size() > 8)
    t.unsupported("channel_multipliers", "expected 1 to 8 blocks");
  for (int m : tc.channel_multipliers) {
    t.require_positive({{"channel_multipliers", m}});
    if (int64_t(m) * tc.filters > JsonConfig::kMaxConfigSize)
      t.unsupported("channel_multipliers", "filters x multiplier is too large");
    if (m * tc.filters % tc.num_groups != 0)
      t.unsupported("num_groups", cat("must divide every block's channels (", m * tc.filters, " is not a multiple)"));
  }
  if (t.has("temporal_downsample")) {
    const nlohmann::json& d = t.json().at("temporal_downsample");
    if (!d.is_array()) t.unsupported("temporal_downsample", "expected an array of booleans");
    tc.temporal_downsample.clear();
    for (const auto& b : d) {
      if (!b.is_boolean()) t.unsupported("temporal_downsample", "expected an array of booleans");
      tc.temporal_downsample.push_back(b.get<bool>());
    }
  }
  if (tc.temporal_downsample.size() + 1 != tc.channel_multipliers.size())
    t.unsupported("temporal_downsample", "expected one entry fewer than channel_multipliers");
  if (t.get_or<std::string>("activation_fn", "swish") != "swish")
    t.unsupported("activation_fn", "only swish is supported");

  const JsonConfig s = sub("vae_2d");
  if (s.get_or<std::string>("type", "VideoAutoencoderKL") != "VideoAutoencoderKL")
    s.unsupported("type", "expected VideoAutoencoderKL");
  nlohmann::json spatial = sdxl_vae_config();
  if (s.has("config")) {
    if (!s.json().at("config").is_object()) s.unsupported("config", "expected an AutoencoderKL config object");
    spatial = s.json().at("config");
  }
  spatial["scaling_factor"] = kSpatialScaling;  // VideoAutoencoderKL divides by 0.18215 whatever the config says
  c.spatial = JsonConfig(std::move(spatial), cat(j.where(), " (vae_2d)"));
  const KlVaeConfig kl = KlVae::config_from_json(c.spatial);
  if (kl.latent_channels != tc.in_out_channels)
    c.spatial.unsupported("latent_channels",
                          cat("the temporal VAE decodes ", tc.in_out_channels, " channels (in_out_channels)"));

  if (j.get_or<bool>("cal_loss", false)) j.unsupported("cal_loss", "decoding returns frames only; expected false");
  c.micro_frame_size = j.has("micro_frame_size") ? j.get_size("micro_frame_size", 17) : 0;
  c.scale = channel_values(j, "scale", 1.0f, tc.embed_dim);
  c.shift = channel_values(j, "shift", 0.0f, tc.embed_dim);
  c.single_scale = !j.has("scale") || j.json().at("scale").is_number();
  c.single_shift = !j.has("shift") || j.json().at("shift").is_number();
  for (float f : c.scale)
    if (f == 0.0f) j.unsupported("scale", "expected non-zero values");
  return c;
}

// ---------------------------------------------------------------- the temporal decoder

struct CausalConv {
  Tensor w, b;  // b undefined without bias
  int kt = 1, kh = 1, kw = 1;
};

struct ResBlock {
  Tensor norm1_w, norm1_b, norm2_w, norm2_b;
  CausalConv conv1, conv2;
  bool has_shortcut = false;
  CausalConv shortcut;  // 1x1x1, no bias
};

// CausalConv3d with stride 1: kt - 1 zero frames in front, the spatial
// kernel's half on each side.
Tensor causal_conv(const CausalConv& c, const Tensor& x) {
  std::vector<Tensor> parts;
  if (c.kt > 1) {
    Shape pad = x.shape();
    pad[2] = c.kt - 1;
    parts.push_back(Tensor::zeros(pad, x.dtype(), x.device()));
  }
  parts.push_back(x);
  return ops::conv3d_joined(parts, c.w, c.b.defined() ? &c.b : nullptr, {1, 1, 1}, {0, c.kh / 2, c.kw / 2});
}

struct TemporalDecoder {
  int groups = 32;
  CausalConv post_quant, conv1, conv_out;
  std::vector<ResBlock> res_blocks;
  std::vector<std::vector<ResBlock>> block_res_blocks;  // by block index i (the forward runs i from the last)
  std::vector<bool> upsample;                           // conv_blocks[i - 1] for block i > 0
  std::vector<CausalConv> conv_blocks;
  Tensor norm_w, norm_b;

  Tensor resblock(const ResBlock& r, const Tensor& x) const {
    Tensor h = ops::silu(ops::group_norm(x, groups, &r.norm1_w, &r.norm1_b, kGroupNormEps));
    h = causal_conv(r.conv1, h);
    h = ops::silu(ops::group_norm(h, groups, &r.norm2_w, &r.norm2_b, kGroupNormEps));
    h = causal_conv(r.conv2, h);
    return ops::add(h, r.has_shortcut ? causal_conv(r.shortcut, x) : x);
  }

  // VAE_Temporal.decode without its trim: z [B, embed_dim, T, h, w] -> [B, C, T * time_factor, h, w].
  Tensor forward(const Tensor& z) const {
    Tensor x = causal_conv(conv1, causal_conv(post_quant, z));
    for (const ResBlock& r : res_blocks) x = resblock(r, x);
    for (size_t i = block_res_blocks.size(); i-- > 0;) {
      for (const ResBlock& r : block_res_blocks[i]) x = resblock(r, x);
      if (i > 0 && upsample[i - 1]) {
        x = causal_conv(conv_blocks[i - 1], x);  // [B, C * 2, T, h, w]
        const int64_t b = x.dim(0), c = x.dim(1) / 2, t = x.dim(2), h = x.dim(3), w = x.dim(4);
        // "B (C ts) T H W -> B C (T ts) H W"
        x = ops::permute(x.reshape({b, c, 2, t, h, w}), {0, 1, 3, 2, 4, 5}).reshape({b, c, t * 2, h, w});
      }
    }
    x = ops::silu(ops::group_norm(x, groups, &norm_w, &norm_b, kGroupNormEps));
    return causal_conv(conv_out, x);
  }
};

struct TemporalLoader {
  const WeightSource& w;
  const LoadOptions& opts;

  Tensor get(const std::string& name, const Shape& shape) const { return w.load(name, shape, opts.dtype, opts.device); }
  CausalConv conv(const std::string& name, int64_t in, int64_t out, int k, bool bias) const {
    CausalConv c;
    c.kt = c.kh = c.kw = k;
    c.w = get(name + ".conv.weight", {out, in, k, k, k});
    if (bias) c.b = get(name + ".conv.bias", {out});
    return c;
  }
  ResBlock resblock(const std::string& name, int64_t in, int64_t out) const {
    ResBlock r;
    r.norm1_w = get(name + ".norm1.weight", {in});
    r.norm1_b = get(name + ".norm1.bias", {in});
    r.conv1 = conv(name + ".conv1", in, out, 3, false);
    r.norm2_w = get(name + ".norm2.weight", {out});
    r.norm2_b = get(name + ".norm2.bias", {out});
    r.conv2 = conv(name + ".conv2", out, out, 3, false);
    if (in != out) {
      r.has_shortcut = true;
      r.shortcut = conv(name + ".conv3", in, out, 1, false);
    }
    return r;
  }
};

TemporalDecoder load_temporal(const TemporalConfig& c, const WeightSource& w, const LoadOptions& opts) {
  TemporalLoader l{w, opts};
  TemporalDecoder d;
  d.groups = c.num_groups;
  const auto& mult = c.channel_multipliers;
  const size_t blocks = mult.size();
  d.post_quant = l.conv("post_quant_conv", c.embed_dim, c.latent_embed_dim, 1, true);
  int64_t channels = int64_t(c.filters) * mult.back();
  d.conv1 = l.conv("decoder.conv1", c.latent_embed_dim, channels, 3, true);
  for (int j = 0; j < c.num_res_blocks; ++j)
    d.res_blocks.push_back(l.resblock(cat("decoder.res_blocks.", j), channels, channels));
  d.block_res_blocks.resize(blocks);
  d.conv_blocks.resize(blocks - 1);
  d.upsample.assign(blocks - 1, false);
  for (size_t i = blocks; i-- > 0;) {
    const int64_t out = int64_t(c.filters) * mult[i];
    for (int j = 0; j < c.num_res_blocks; ++j) {
      d.block_res_blocks[i].push_back(l.resblock(cat("decoder.block_res_blocks.", i, ".", j), channels, out));
      channels = out;
    }
    if (i > 0 && c.temporal_downsample[i - 1]) {
      d.upsample[i - 1] = true;
      d.conv_blocks[i - 1] = l.conv(cat("decoder.conv_blocks.", i - 1), channels, channels * 2, 3, true);
    }
  }
  d.norm_w = l.get("decoder.norm1.weight", {channels});
  d.norm_b = l.get("decoder.norm1.bias", {channels});
  d.conv_out = l.conv("decoder.conv_out", channels, c.in_out_channels, 3, true);
  return d;
}

// ---------------------------------------------------------------- the VAE

class OpenSoraVae final : public VideoVae {
 public:
  OpenSoraVae(OpenSoraVaeConfig c, const WeightSource& source, const LoadOptions& opts)
      : c_(std::move(c)), opts_(opts) {
    WeightUse use(source);
    // Decoding loads neither encoder.
    for (const char* part : {kSpatialPrefix, kTemporalPrefix})
      for (const char* enc : {"encoder.", "quant_conv."}) use.not_needed(cat(part, enc));
    spatial_ = KlVae::load(c_.spatial, PrefixedWeights(use, kSpatialPrefix), opts);
    temporal_ = load_temporal(c_.temporal, PrefixedWeights(use, kTemporalPrefix), opts);
    // The normalisation buffers are in the checkpoint too, shaped as the
    // constructor makes them ([1, C, 1, 1, 1], or [] from a single number);
    // loading the state dict makes them win over the config's values.
    for (auto [name, values, single] :
         {std::tuple{"scale", &c_.scale, c_.single_scale}, {"shift", &c_.shift, c_.single_shift}}) {
      if (!source.has(name)) continue;
      const Shape shape = single ? Shape{} : Shape{1, int64_t(values->size()), 1, 1, 1};
      Tensor t = use.load(name, shape, DType::f32, Device::cpu);
      for (size_t i = 0; i < values->size(); ++i) (*values)[i] = t.f32()[single ? 0 : i];
    }
    check_weights_used(use, kClass, opts);
  }

  Tensor decode_video(const Tensor& latents, const VaeDecodeOptions& o) const override {
    if (o.tiled) fail(kClass, " decodes whole frames: it has no tiled decoding");
    const int64_t channels = c_.temporal.embed_dim;
    if (!latents.defined() || latents.rank() != 5 || latents.dim(1) != channels || latents.numel() == 0)
      fail(kClass, ": expected latents [B, ", channels, ", F, h, w], got ",
           latents.defined() ? latents.desc() : "an undefined tensor");
    const int64_t latent_frames = latents.dim(2);
    int64_t frames = o.frames;
    if (frames == 0) frames = max_frames(c_, latent_frames);
    if (frames < 1 || c_.latent_frames(frames) != latent_frames)
      fail(kClass, ": ", frames, " frames do not make ", latent_frames, " latent frames (",
           c_.latent_frames(std::max<int64_t>(frames, 1)), " do)");
    Tensor z = latents;
    if (z.device() != opts_.device) z = z.to(opts_.device);
    if (z.dtype() != opts_.dtype) z = z.to(opts_.dtype);
    // z * scale + shift, per channel, in the latents' dtype.
    Shape per_channel = {1, channels, 1, 1, 1};
    Tensor scale = Tensor::from_vector(c_.scale, per_channel).to(opts_.dtype).to(opts_.device);
    Tensor shift = Tensor::from_vector(c_.shift, per_channel).to(opts_.dtype).to(opts_.device);
    z = ops::add(ops::mul(z, scale), shift);

    const int64_t chunk = c_.micro_frame_size > 0 ? c_.micro_latent_frames() : latent_frames;
    const int64_t frames_per_chunk = c_.micro_frame_size > 0 ? c_.micro_frame_size : frames;
    std::vector<Tensor> parts;
    for (int64_t i = 0; i < latent_frames; i += chunk) {
      const int64_t n = std::min(frames_per_chunk, frames);
      frames -= frames_per_chunk;
      Tensor x = temporal_.forward(ops::slice(z, 2, i, std::min(latent_frames, i + chunk)));
      const int64_t padding = x.dim(2) - n;  // the frames the encoder padded in front
      parts.push_back(ops::slice(x, 2, padding, x.dim(2)));
    }
    z = Tensor();
    Tensor x = parts.size() == 1 ? parts[0] : ops::concat(parts, 2);  // [B, C, F, h, w]
    parts.clear();
    return spatial_->decode_latents(x, kSpatialChunk);  // [B, 3, F, H, W]
  }

  // Frames when each chunk's latent frames are all real ones.
  static int64_t max_frames(const OpenSoraVaeConfig& c, int64_t latent_frames) {
    const int64_t f = c.temporal.time_factor();
    if (c.micro_frame_size == 0) return latent_frames * f;
    const int64_t chunk = c.micro_latent_frames(), rest = latent_frames % chunk;
    return latent_frames / chunk * c.micro_frame_size + std::min(rest * f, c.micro_frame_size);
  }

  // VideoAutoencoderKL's micro_batch_size (tiling_size): frames through the 2D VAE at once.
  static constexpr int64_t kSpatialChunk = 4;

 private:
  OpenSoraVaeConfig c_;
  LoadOptions opts_;
  std::unique_ptr<KlVae> spatial_;
  TemporalDecoder temporal_;
};

class OpenSoraVaeFacts final : public VaeFacts {
 public:
  explicit OpenSoraVaeFacts(OpenSoraVaeConfig c) : c_(std::move(c)), kl_(KlVae::config_from_json(c_.spatial)) {}
  VaeKind kind() const override { return VaeKind::chunked_video; }
  int latent_channels() const override { return c_.temporal.embed_dim; }
  int spatial_factor() const override { return kl_.spatial_factor(); }
  int temporal_factor() const override { return c_.temporal.time_factor(); }
  int64_t decoded_frames(int64_t latent_frames) const override { return OpenSoraVae::max_frames(c_, latent_frames); }
  int64_t latent_frames(int64_t frames) const override { return c_.latent_frames(frames); }
  uint64_t decode_bytes(int64_t latent_frames, int64_t height, int64_t width, const VaeDecodeOptions& o, DType dtype,
                        Device device) const override {
    const char* what = "Open-Sora VAE decode";
    const int64_t frames = o.frames > 0 ? o.frames : decoded_frames(latent_frames);
    const int64_t s = kl_.spatial_factor(), h = height / s, w = width / s;
    // The temporal VAE: one chunk's decoded frames at the latent size in its
    // widest channel count, six such activations (twelve on a GPU); the 2D
    // VAE's latents of the whole video; one micro-batch through the 2D VAE;
    // the frames.
    const int64_t chunk_frames =
        c_.micro_frame_size > 0 ? c_.micro_latent_frames() * c_.temporal.time_factor() : frames;
    int widest = 0;
    for (int m : c_.temporal.channel_multipliers) widest = std::max(widest, m * c_.temporal.filters);
    const int64_t copies = device == Device::cpu ? 6 : 12;
    return token_bytes(copies * chunk_frames, h * w, widest, dtype, 1, what) +
           token_bytes(frames, h * w, c_.temporal.in_out_channels, dtype, 2, what) +
           kl_.decode_bytes(std::min<int64_t>(frames, OpenSoraVae::kSpatialChunk), h * s, w * s, dtype, device) +
           token_bytes(frames, h * s * w * s, kl_.out_channels, dtype, 2, what);
  }
  uint64_t weight_bytes(const WeightSource& weights, DType dtype) const override {
    std::vector<std::string> skip;
    for (const char* part : {kSpatialPrefix, kTemporalPrefix})
      for (const char* enc : {"encoder.", "quant_conv."}) skip.push_back(cat(part, enc));
    return weights.bytes_as(dtype, skip);
  }

 private:
  OpenSoraVaeConfig c_;
  KlVaeConfig kl_;
};

std::unique_ptr<const VaeFacts> open_sora_vae_facts(const JsonConfig& config) {
  return std::make_unique<OpenSoraVaeFacts>(parse_config(config));
}

std::unique_ptr<VideoVae> load_open_sora_vae(const JsonConfig& config, const WeightSource& weights,
                                             const LoadOptions& opts) {
  return std::make_unique<OpenSoraVae>(parse_config(config), weights, opts);
}

}  // namespace

PAB_REGISTER(VaeEntry, kClass, {open_sora_vae_facts, load_open_sora_vae});

}  // namespace pab
