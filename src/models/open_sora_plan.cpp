// Open-Sora-Plan as the original PAB code (VideoSys) runs it, diffusers layout:
//  - v1.1, LatteT2V: per layer a spatial block (self attention over each
//    frame's patches with 2D rotary positions, cross attention to the
//    projected caption, feed-forward) then a temporal block (self attention
//    over each patch's frames with 1D rotary positions, feed-forward); 2D
//    sin-cos positions on the patches and 1D sin-cos on the frames.
//  - v1.2, OpenSoraT2V: blocks of full 3D self attention over every patch of
//    every frame with 3D rotary positions, cross attention and feed-forward.
// Both modulate every block from one adaLN-single timestep embedding and
// predict sigma (out_channels = 2 x in_channels in the published models).
//
// The rotary embeddings rotate pairs (x[j], x[j + P/2]) of each segment of P
// channels ("rotate_half"); the loader reorders the rows of to_q and to_k so
// that those pairs sit side by side, the layout the rope op rotates. Queries
// and keys are reordered alike, so attention scores are unchanged.
//
// Sites, each covering what the original broadcasts:
//   v1.1 transformer_blocks[i] norm1, modulation, attn1, gate          -> {spatial, i}
//   v1.1 temporal_transformer_blocks[i] norm1, modulation, attn1, gate -> {temporal, i}
//   v1.1 transformer_blocks[i].attn2                                   -> {cross, i}
//   v1.1 blocks[i] norm, modulation, feed-forward, gate                -> {mlp_spatial, i} / {mlp_temporal, i}
//   v1.2 transformer_blocks[i] norm1, modulation, attn1 (gate applied after) -> {spatial, i}
//   v1.2 transformer_blocks[i].attn2                                         -> {cross, i}
// v1.1 keeps the gated attention output (a broadcast step skips the norm,
// modulation and gate); v1.2 keeps it before the gate, as the original does.
//
// Sequence parallel (LoadOptions::comm with several ranks), as the other
// models split: v1.1 as Latte (each rank a contiguous share of the frames;
// temporal attention trades it for a share of the patch positions and back,
// all-to-all), v1.2 as CogVideoX (each rank a contiguous share of the video
// tokens; full attention trades tokens for heads, Ulysses). Shares that do not
// divide evenly are padded; the output is gathered once per pass. A
// broadcast attention site exchanges nothing.
#include "models/open_sora_plan.h"

#include <cmath>

#include "core/registry.h"
#include "io/config.h"
#include "models/embeddings.h"
#include "models/layers.h"
#include "parallel/comm.h"

namespace pab {

namespace {

constexpr int kTimeProjDim = 256;

struct PlanConfig {
  int heads = 16, head_dim = 88;
  int in_channels = 4, out_channels = 4;
  int num_layers = 1;
  int patch_size = 2;
  int caption_channels = 0;
  bool attention_bias = false;
  FeedForward::Act activation = FeedForward::Act::geglu;
  bool norm_elementwise_affine = true;
  float norm_eps = 1e-5f;
  int sample_h = 64, sample_w = 64;
  bool use_rope = false;
  // v1.1
  int video_length = 16;
  double interpolation_1d = 1;  // frames' sin-cos positions and 1D rotary scaling
  int interpolation_2d = 1;     // 2D sin-cos positions and 2D rotary scaling
  // v1.2 (rotary scales of t, h, w)
  double interpolation_t = 1, interpolation_h = 1, interpolation_w = 1;

  int64_t inner() const { return int64_t(heads) * head_dim; }
};

// What both versions read the same way.
PlanConfig parse_common(const JsonConfig& j) {
  PlanConfig c;
  c.heads = j.get_or("num_attention_heads", c.heads);
  c.head_dim = j.get_or("attention_head_dim", c.head_dim);
  c.in_channels = j.get<int>("in_channels");
  c.out_channels = j.get_or("out_channels", c.in_channels);
  c.num_layers = j.get_or("num_layers", c.num_layers);
  c.patch_size = j.get<int>("patch_size");
  c.caption_channels = j.get<int>("caption_channels");
  c.attention_bias = j.get_or("attention_bias", c.attention_bias);
  const std::string act = j.get_or<std::string>("activation_fn", "geglu");
  // The original builds diffusers' ApproximateGELU (x * sigmoid(1.702 x)) for geglu-approximate.
  if (act == "geglu-approximate") j.unsupported("activation_fn", "supported: gelu, gelu-approximate, geglu");
  c.activation = FeedForward::parse(act, j.where());
  c.norm_elementwise_affine = j.get_or("norm_elementwise_affine", c.norm_elementwise_affine);
  c.norm_eps = float(j.get_or("norm_eps", double(c.norm_eps)));
  c.use_rope = j.get_or("use_rope", c.use_rope);
  if (j.has("sample_size") && j.json().at("sample_size").is_number()) {
    c.sample_h = c.sample_w = j.get<int>("sample_size");
  } else {
    std::vector<int> s = j.get<std::vector<int>>("sample_size");
    if (s.size() != 2) j.unsupported("sample_size", "expected [height, width] or one number");
    c.sample_h = s[0];
    c.sample_w = s[1];
  }

  j.require_positive({
      {"num_attention_heads", c.heads},
      {"attention_head_dim", c.head_dim},
      {"in_channels", c.in_channels},
      {"out_channels", c.out_channels},
      {"num_layers", c.num_layers},
      {"patch_size", c.patch_size},
      {"caption_channels", c.caption_channels},
      {"sample_size", std::min(c.sample_h, c.sample_w)},
  });
  if (j.get_or<std::string>("norm_type", "layer_norm") != "ada_norm_single")
    j.unsupported("norm_type", "only ada_norm_single is supported");
  if (j.get_or("patch_size_t", 1) != 1) j.unsupported("patch_size_t", "only 1 is supported (2D patches)");
  if (j.get_or("dropout", 0.0) != 0.0) j.unsupported("dropout", "inference expects 0");
  if (j.get_or("only_cross_attention", false)) j.unsupported("only_cross_attention", "must be false");
  if (j.get_or("double_self_attention", false)) j.unsupported("double_self_attention", "must be false");
  if (j.get_or<std::string>("attention_type", "default") != "default")
    j.unsupported("attention_type", "only default is supported");
  if (j.has("num_vector_embeds")) j.unsupported("num_vector_embeds", "discrete inputs are not supported");
  // The caption is projected to the model width before cross attention.
  if (j.get<int>("cross_attention_dim") != c.inner())
    j.unsupported("cross_attention_dim", cat("must equal heads x head_dim = ", c.inner()));
  return c;
}

// v1.1: spatial blocks with cross attention, temporal blocks without.
SiteLayout v110_layout(const PlanConfig& c) {
  return {{{SiteKind::spatial, c.num_layers},
           {SiteKind::temporal, c.num_layers},
           {SiteKind::cross, c.num_layers},
           {SiteKind::mlp_spatial, c.num_layers},
           {SiteKind::mlp_temporal, c.num_layers},
           {SiteKind::block, 2 * c.num_layers},  // in the order they run: spatial i is 2i, temporal i 2i + 1
           {SiteKind::step, 1}}};
}
// v1.2: full attention over every frame's patches, then cross attention.
SiteLayout v120_layout(const PlanConfig& c) {
  return {{{SiteKind::spatial, c.num_layers},
           {SiteKind::cross, c.num_layers},
           {SiteKind::block, c.num_layers},
           {SiteKind::step, 1}}};
}

// Both versions' blocks hold what Latte's do: ten [B*F, N, D] around
// attention (v1.2's rotary q and k one more), four and the feed-forward's
// width around it; the projected caption persists.
ForwardFootprint plan_footprint(const PlanConfig& c, const SiteLayout& layout, const ForwardShape& shape,
                                const char* what) {
  if (shape.latents.size() != 5) fail(what, ": latents must be [B, C, F, H, W], got ", shape_str(shape.latents));
  const int64_t bsz = shape.latents[0], p = c.patch_size, d = c.inner();
  const int64_t tokens = shape_numel({shape.latents[2], shape.latents[3] / p, shape.latents[4] / p});
  const int64_t attention = layout.blocks(SiteKind::temporal) > 0 ? 10 : 11;
  const int64_t widths = std::max(attention * d, 4 * d + feed_forward_width(c.activation, 4 * d, shape.device));
  ForwardFootprint f;
  f.activations = token_bytes(bsz, tokens, widths, shape.dtype, 1, what) +
                  token_bytes(bsz, shape.text_length, 2 * d, shape.dtype, 1, what);
  for (SiteKind k : layout.site_kinds()) f.site[size_t(k)] = token_bytes(bsz, tokens, d, shape.dtype, 1, what);
  return f;
}

PlanConfig parse_v110(const JsonConfig& j) {
  PlanConfig c = parse_common(j);
  c.video_length = j.get_or("video_length", c.video_length);
  j.require_positive({{"video_length", c.video_length}});
  // LatteT2V: video_length // 16 ((video_length - 1) // 16 when odd) unless given, at least 1
  const int l = c.video_length;
  c.interpolation_1d = j.get_or("interpolation_scale_1d", double(l % 2 == 1 ? (l - 1) / 16 : l / 16));
  c.interpolation_1d = std::max(c.interpolation_1d, 1.0);
  c.interpolation_2d = std::max(c.sample_h / 64, 1);
  if (c.inner() % 4 != 0)
    j.unsupported("num_attention_heads", "2D sin-cos positions need heads x head_dim divisible by 4");
  if (j.get_or("compress_kv_factor", 1) != 1) j.unsupported("compress_kv_factor", "only 1 is supported");
  if (c.use_rope) {
    if (j.get_or<std::string>("rope_scaling_type", "linear") != "linear")
      j.unsupported("rope_scaling_type", "only linear is supported");
    if (c.head_dim % 4 != 0) j.unsupported("attention_head_dim", "2D rotary positions need a multiple of 4");
  }
  return c;
}

PlanConfig parse_v120(const JsonConfig& j) {
  PlanConfig c = parse_common(j);
  const int t = j.get<int>("sample_size_t");
  j.require_positive({{"sample_size_t", t}});
  // OpenSoraT2V's defaults when a scale is not given
  c.interpolation_t = j.get_or("interpolation_scale_t", t % 2 == 1 ? double((t - 1) / 16 + 1) : t / 16.0);
  c.interpolation_h = j.get_or("interpolation_scale_h", c.sample_h / 30.0);
  c.interpolation_w = j.get_or("interpolation_scale_w", c.sample_w / 40.0);
  for (auto [key, v] :
       {std::pair{"interpolation_scale_t", c.interpolation_t}, std::pair{"interpolation_scale_h", c.interpolation_h},
        std::pair{"interpolation_scale_w", c.interpolation_w}})
    if (!(v > 0)) j.unsupported(key, "must be positive");
  if (!c.use_rope) j.unsupported("use_rope", "only the rotary variant (Open-Sora-Plan 1.2 checkpoints) is supported");
  if (j.has("downsampler")) j.unsupported("downsampler", "only null is supported");
  if (c.head_dim % 6 != 0) j.unsupported("attention_head_dim", "3D rotary positions need a multiple of 6");
  return c;
}

// Reorders the output rows of a query or key projection within each head:
// each of `parts` segments of P = head_dim / parts channels goes from
// (x[0..P/2), x[P/2..P)) to pairs (x[j], x[j + P/2]) side by side.
Linear rotary_pairs_adjacent(Linear l, int heads, int head_dim, int parts) {
  const int64_t half = head_dim / parts / 2;
  auto reorder = [&](const Tensor& t) {
    const int64_t rest = t.numel() / (int64_t(heads) * head_dim);
    // [H, parts, 2, half, rest] -> [H, parts, half, 2, rest]
    return ops::permute(t.reshape({heads, parts, 2, half, rest}), {0, 1, 3, 2, 4}).reshape(t.shape());
  };
  l.w = reorder(l.w);
  if (l.b.defined()) l.b = reorder(l.b);
  return l;
}

// 1 / 10000^(arange(0, dim, 2) / dim) in float32, as the original's RoPE classes.
std::vector<float> rotary_inv_freq(int dim) {
  std::vector<float> f(static_cast<size_t>(dim / 2));
  for (int i = 0; i < dim / 2; ++i) f[size_t(i)] = 1.0f / float(std::pow(10000.0, double(float(2 * i) / float(dim))));
  return f;
}

// Writes the rotation of position `pos` into columns [offset, offset + 2 * inv_freq.size())
// of rows `cos` and `sin`, pairs adjacent.
void rotary_into(float* cos, float* sin, int64_t offset, float pos, const std::vector<float>& inv_freq) {
  for (size_t i = 0; i < inv_freq.size(); ++i) {
    const double a = double(pos * inv_freq[i]);
    cos[offset + 2 * int64_t(i)] = cos[offset + 2 * int64_t(i) + 1] = float(std::cos(a));
    sin[offset + 2 * int64_t(i)] = sin[offset + 2 * int64_t(i) + 1] = float(std::sin(a));
  }
}

// What both versions share: adaLN-single, the caption projection, the
// output layer and the attention helpers.
class PlanBase : public DiffusionTransformer {
 public:
  PlanBase(PlanConfig c, const WeightSource& ckpt, const LoadOptions& opts) : c_(c), opts_(opts) {
    WeightLoader wl(ckpt, opts);
    const int64_t d = c_.inner();
    const int p = c_.patch_size;
    patch_w_ = wl.get("pos_embed.proj.weight", {d, c_.in_channels, p, p});
    patch_b_ = wl.get("pos_embed.proj.bias", {d});
    t_linear_1_ = Linear(wl, "adaln_single.emb.timestep_embedder.linear_1", kTimeProjDim, d);
    t_linear_2_ = Linear(wl, "adaln_single.emb.timestep_embedder.linear_2", d, d);
    t_modulation_ = Linear(wl, "adaln_single.linear", d, 6 * d);
    caption_1_ = Linear(wl, "caption_projection.linear_1", c_.caption_channels, d);
    caption_2_ = Linear(wl, "caption_projection.linear_2", d, d);
    // The learned null caption of PixArt's CaptionProjection serves caption
    // dropout in training; the original's sampling encodes a negative prompt.
    ckpt.not_needed("caption_projection.y_embedding");
    scale_shift_table_ = wl.get("scale_shift_table", {2, d});
    proj_out_ = Linear(wl, "proj_out", d, int64_t(p) * p * c_.out_channels);
  }

  LatentLayout layout() const override { return LatentLayout::bcfhw; }
  int in_channels() const override { return c_.in_channels; }
  int out_channels() const override { return c_.out_channels; }
  bool sequence_parallel() const override { return true; }

 protected:
  struct Prepared {
    int64_t bsz, frames, gh, gw;
    Shard frames_shard;  // this rank's frames (all of them on one rank)
    Tensor tokens;       // [B*F, gh*gw, D], F this rank's frames
    Tensor t_emb;        // [1, D] embedded timestep
    Tensor t_mod;        // [6, D] block modulation
    Tensor caption;      // [B, L, D]
    Tensor key_mask;     // [B, L] or undefined
  };

  // Checks the inputs, embeds the patches of every frame (with
  // `shard_frames` and several ranks, of this rank's frames), the timestep
  // and the caption.
  Prepared prepare(const TransformerInputs& in, bool shard_frames) const {
    const std::string name = class_name();
    const Tensor& x = in.latents;
    if (x.rank() != 5 || x.dim(1) != c_.in_channels)
      fail(name, ": latents must be [B, ", c_.in_channels, ", F, H, W], got ", x.desc());
    Prepared r;
    r.bsz = x.dim(0);
    r.frames = x.dim(2);
    const int64_t h = x.dim(3), w = x.dim(4);
    const int p = c_.patch_size;
    if (h % p != 0 || w % p != 0)
      fail(name, ": latent height and width (", h, "x", w, ") must be multiples of the patch size ", p);
    if (in.text.rank() != 3 || in.text.dim(0) != r.bsz || in.text.dim(2) != c_.caption_channels)
      fail(name, ": text embeddings must be [", r.bsz, ", L, ", c_.caption_channels, "], got ", in.text.desc());
    if (in.text_mask.defined() && in.text_mask.shape() != Shape{r.bsz, in.text.dim(1)})
      fail(name, ": text mask must be [", r.bsz, ", ", in.text.dim(1), "], got ", in.text_mask.desc());
    r.gh = h / p;
    r.gw = w / p;
    const int64_t d = c_.inner();
    Communicator* comm = shard_frames ? parallel() : nullptr;
    r.frames_shard = comm ? shard_of(r.frames, comm->size(), comm->rank()) : Shard{r.frames, r.frames, 0, r.frames};
    const int64_t local = r.frames_shard.local;
    // [B, C, F, H, W] -> [B*F, C, H, W] -> [B*F, D, gh, gw] -> [B*F, gh*gw, D]
    Tensor frames_first = ops::permute(comm ? take_shard(x, 2, r.frames_shard) : x, {0, 2, 1, 3, 4})
                              .reshape({r.bsz * local, c_.in_channels, h, w});
    Tensor t = ops::conv2d(frames_first, patch_w_, &patch_b_, {p, p});
    r.tokens = ops::permute(t.reshape({r.bsz * local, d, r.gh * r.gw}), {0, 2, 1});

    // One timestep for the whole batch, so every modulation is [1, D].
    Tensor t_proj = host(timestep_embedding({in.timestep}, kTimeProjDim, true, 0), {1, kTimeProjDim});
    r.t_emb = t_linear_2_(ops::silu(t_linear_1_(t_proj)));
    r.t_mod = t_modulation_(ops::silu(r.t_emb)).reshape({6, d});
    r.caption = caption_2_(ops::gelu_tanh(caption_1_(in.text)));
    if (in.text_mask.defined()) r.key_mask = in.text_mask.to(DType::f32).to(opts_.device);
    return r;
  }

  // The output layer on tokens [B, T, D] in frame-major order (T: this
  // rank's share of the F*gh*gw tokens, all of them on one rank) -> [B, Co,
  // F, H, W], every rank's share gathered.
  Tensor finish(const Prepared& r, const Tensor& tokens) const {
    auto m = ops::chunk(ops::add(scale_shift_table_, r.t_emb), 2, 0);  // shift, scale: [1, D]
    Tensor hs = ops::norm_modulate(one_sequence(tokens), nullptr, nullptr, 1e-6f, m[0], m[1]);
    Tensor out = proj_out_(hs).reshape({r.bsz, tokens.dim(1), -1});  // [B, T, p*p*Co]
    if (Communicator* comm = parallel()) out = ops::slice(all_gather(*comm, out, 1), 1, 0, r.frames * r.gh * r.gw);
    const int64_t p = c_.patch_size, co = c_.out_channels;
    // [B, F, gh, gw, p, p, Co] -> [B, Co, F, gh, p, gw, p]
    out = ops::permute(out.reshape({r.bsz, r.frames, r.gh, r.gw, p, p, co}), {0, 6, 1, 2, 4, 3, 5});
    return out.reshape({r.bsz, co, r.frames, r.gh * p, r.gw * p});
  }

  // x [S, T, D] treated as one sequence of S*T tokens: [1, S*T, D].
  static Tensor one_sequence(const Tensor& x) { return x.reshape({1, x.dim(0) * x.dim(1), x.dim(2)}); }
  static Tensor norm_modulate(const LayerNorm& norm, const Tensor& x, const Tensor& shift, const Tensor& scale) {
    return norm.modulated(one_sequence(x), shift, scale).reshape(x.shape());
  }
  static Tensor gated(const Tensor& gate, const Tensor& y) { return ops::mul(y, gate.reshape({1, 1, y.dim(-1)})); }

  // x [S, T, D]: self attention over T, rotary positions [T, Dh] when given.
  Tensor self_attention(const Attention& a, const Tensor& x, const RopeTables* rope) const {
    return attend(a, x, {x.dim(0), x.dim(1), c_.heads, c_.head_dim}, rope);
  }
  // Self attention of x [..., D] viewed as `heads` [S, T, H, Dh] (over T),
  // rotary positions [T, Dh] when given; the output has x's shape.
  Tensor attend(const Attention& a, const Tensor& x, const Shape& heads, const RopeTables* rope) const {
    Tensor q = a.to_q(x).reshape(heads), k = a.to_k(x).reshape(heads);
    if (rope) {
      q = ops::rope(q, rope->cos, rope->sin);
      k = ops::rope(k, rope->cos, rope->sin);
    }
    AttentionArgs args;
    args.scale = float(1.0 / std::sqrt(double(c_.head_dim)));
    return a.to_out(ops::attention(q, k, a.to_v(x).reshape(heads), args).reshape(x.shape()));
  }

  // x [B*F, N, D] attends to caption [B, L, D]: every frame of an entry sees
  // the same keys, so its frames' queries are attended together:
  // [B*F, N, D] -> [B, F*N, H, Dh]; the caption mask [B, L] applies per entry.
  Tensor cross_attention(const Attention& a, const Tensor& x, const Prepared& r) const {
    const int64_t l = r.caption.dim(1);
    Tensor q = a.to_q(x).reshape({r.bsz, x.numel() / (r.bsz * c_.inner()), c_.heads, c_.head_dim});
    Tensor k = a.to_k(r.caption).reshape({r.bsz, l, c_.heads, c_.head_dim});
    Tensor v = a.to_v(r.caption).reshape({r.bsz, l, c_.heads, c_.head_dim});
    AttentionArgs args;
    args.scale = float(1.0 / std::sqrt(double(c_.head_dim)));
    if (r.key_mask.defined()) args.key_mask = &r.key_mask;
    return a.to_out(ops::attention(q, k, v, args).reshape(x.shape()));
  }

  Tensor host(const std::vector<float>& v, const Shape& shape) const {
    return Tensor::from_vector(v, shape).to(opts_.dtype).to(opts_.device);
  }
  // Rotary tables stay f32: they are applied in float.
  RopeTables rope_tables(const std::vector<float>& cos, const std::vector<float>& sin, int64_t rows) const {
    const int64_t dh = c_.head_dim;
    return {Tensor::from_vector(cos, {rows, dh}).to(opts_.device),
            Tensor::from_vector(sin, {rows, dh}).to(opts_.device)};
  }

  Communicator* parallel() const { return opts_.comm && opts_.comm->size() > 1 ? opts_.comm : nullptr; }

  PlanConfig c_;
  LoadOptions opts_;

 private:
  Tensor patch_w_, patch_b_;
  Linear t_linear_1_, t_linear_2_, t_modulation_, caption_1_, caption_2_, proj_out_;
  Tensor scale_shift_table_;
};

// ---------------------------------------------------------------- v1.1

class LatteT2V final : public PlanBase {
 public:
  LatteT2V(const JsonConfig& j, const WeightSource& ckpt, const LoadOptions& opts)
      : PlanBase(parse_v110(j), ckpt, opts) {
    WeightLoader wl(ckpt, opts);
    for (int i = 0; i < c_.num_layers; ++i) {
      spatial_.push_back(load_block(wl, cat("transformer_blocks.", i), false));
      temporal_.push_back(load_block(wl, cat("temporal_transformer_blocks.", i), true));
    }
  }

  std::string class_name() const override { return "LatteT2V"; }
  SiteLayout site_layout() const override { return v110_layout(c_); }

  // The states stay [B*F, N, D] (this rank's frames) throughout: the temporal
  // blocks' norms, modulation and feed-forward are token-wise, and their
  // attention runs over the frames of each position without regrouping.
  Tensor forward_pass(const TransformerInputs& in, const Sites* sites) override {
    Prepared r = prepare(in, /*shard_frames=*/true);
    const int64_t n = r.gh * r.gw, d = c_.inner(), bsz = r.bsz, local = r.frames_shard.local;
    Tensor hs = ops::add(r.tokens, spatial_positions(r.gh, r.gw));  // [B*F, N, D]
    RopeTables rope_2d, rope_1d;
    if (c_.use_rope) {
      rope_2d = spatial_rope(r.gh, r.gw);
      rope_1d = temporal_rope(r.frames);
    }
    for (int i = 0; i < c_.num_layers; ++i) {
      hs = run_site1(sites, {SiteKind::block, 2 * i}, hs, [&] {
        return block_forward(spatial_[size_t(i)], i, false, hs, r, c_.use_rope ? &rope_2d : nullptr, sites);
      });
      if (i == 0) {  // per frame, this rank's rows
        const Tensor pos = take_shard(temporal_positions(r.frames), 0, r.frames_shard).reshape({local, 1, d});
        hs = ops::add(hs.reshape({bsz, local, n, d}), pos).reshape({bsz * local, n, d});
      }
      hs = run_site1(sites, {SiteKind::block, 2 * i + 1}, hs, [&] {
        return block_forward(temporal_[size_t(i)], i, true, hs, r, c_.use_rope ? &rope_1d : nullptr, sites);
      });
    }
    return finish(r, hs.reshape({bsz, local * n, d}));
  }

 private:
  // BasicTransformerBlock (spatial) or BasicTransformerBlock_ (temporal)
  struct Block {
    Tensor scale_shift_table;  // [6, D]
    LayerNorm norm1, norm_ff;  // norm_ff: norm2 (spatial) or norm3 (temporal)
    Attention attn1, attn2;    // attn2: spatial blocks only
    FeedForward ff;
  };

  Block load_block(const WeightLoader& wl, const std::string& prefix, bool temporal) const {
    const int64_t d = c_.inner();
    Block b;
    b.scale_shift_table = wl.get(prefix + ".scale_shift_table", {6, d});
    b.norm1 = LayerNorm(wl, prefix + ".norm1", d, c_.norm_eps, c_.norm_elementwise_affine);
    b.norm_ff = LayerNorm(wl, prefix + (temporal ? ".norm3" : ".norm2"), d, c_.norm_eps, c_.norm_elementwise_affine);
    b.attn1 = Attention(wl, prefix + ".attn1", d, c_.attention_bias, /*stack=*/false);
    if (c_.use_rope) {
      // spatial: head dim halves rotated by row then column; temporal: one segment
      b.attn1.to_q = rotary_pairs_adjacent(b.attn1.to_q, c_.heads, c_.head_dim, temporal ? 1 : 2);
      b.attn1.to_k = rotary_pairs_adjacent(b.attn1.to_k, c_.heads, c_.head_dim, temporal ? 1 : 2);
    }
    if (!temporal) b.attn2 = Attention(wl, prefix + ".attn2", d, c_.attention_bias, /*stack=*/false);
    b.ff = FeedForward(wl, prefix + ".ff", d, 4 * d, c_.activation);
    return b;
  }

  // One block on hs [B*F, N, D]: spatial blocks attend over each frame's
  // patches, temporal ones over each patch position's frames.
  Tensor block_forward(const Block& b, int index, bool temporal, Tensor hs, const Prepared& r, const RopeTables* rope,
                       const Sites* sites) const {
    // [6, D] -> shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp: [1, D] each
    auto m = ops::chunk(ops::add(b.scale_shift_table, r.t_mod), 6, 0);
    Tensor attn = run_site1(sites, {temporal ? SiteKind::temporal : SiteKind::spatial, index}, hs, [&] {
      const Tensor x = norm_modulate(b.norm1, hs, m[0], m[1]);
      return gated(m[2], temporal ? temporal_attention(b.attn1, x, r, rope) : self_attention(b.attn1, x, rope));
    });
    hs = ops::add(hs, attn);
    if (!temporal) {
      // ada_norm_single: the cross attention sees the unnormalised, unmodulated states
      hs =
          ops::add(hs, run_site1(sites, {SiteKind::cross, index}, hs, [&] { return cross_attention(b.attn2, hs, r); }));
    }
    Tensor ff = run_site1(sites, {temporal ? SiteKind::mlp_temporal : SiteKind::mlp_spatial, index}, hs,
                          [&] { return gated(m[5], b.ff(norm_modulate(b.norm_ff, hs, m[3], m[4]))); });
    return ops::add(hs, ff);
  }

  // x [B*F, N, D] (frame-major, this rank's frames) -> self attention over
  // all F frames of each of the N positions, the positions acting as heads:
  // [B, F, N * H, Dh], 1D rotary positions [F, Dh] by frame. With several
  // ranks the exchange brings all frames of a share of the positions, and back.
  Tensor temporal_attention(const Attention& a, const Tensor& x, const Prepared& r, const RopeTables* rope) const {
    Communicator* comm = parallel();
    const int64_t n = x.dim(1), d = x.dim(2);
    Tensor seq = x.reshape({r.bsz, x.dim(0) / r.bsz, n, d});    // [B, F, N, D]
    if (comm) seq = frames_to_positions(*comm, seq, r.frames);  // [B, F, N / ranks, D]
    Tensor out = attend(a, seq, {r.bsz, r.frames, seq.dim(2) * c_.heads, c_.head_dim}, rope);
    if (comm) out = positions_to_frames(*comm, out, n);  // [B, F / ranks, N, D]
    return out.reshape(x.shape());
  }

  // PatchEmbed's 2D sin-cos table for the patch grid: [gh*gw, D] (base size:
  // the sample height in patches).
  Tensor spatial_positions(int64_t gh, int64_t gw) {
    if (!spatial_pos_.defined() || spatial_grid_ != std::pair{gh, gw}) {
      spatial_pos_ = sincos_pos_embed_2d(c_.inner(), int(gh), int(gw), c_.sample_h / c_.patch_size, c_.interpolation_2d)
                         .to(opts_.dtype)
                         .to(opts_.device);
      spatial_grid_ = {gh, gw};
    }
    return spatial_pos_;
  }

  // 1D sin-cos over frame / interpolation_scale_1d: [F, D]. The original
  // builds it for video_length frames (and fails on other counts); its
  // first F rows are these.
  Tensor temporal_positions(int64_t frames) {
    if (!temporal_pos_.defined() || temporal_pos_.dim(0) != frames) {
      std::vector<float> pos(static_cast<size_t>(frames));
      for (int64_t f = 0; f < frames; ++f) pos[size_t(f)] = float(f) / float(c_.interpolation_1d);
      std::vector<double> e = sincos_1d(c_.inner(), pos);
      temporal_pos_ = host(std::vector<float>(e.begin(), e.end()), {frames, c_.inner()});
    }
    return temporal_pos_;
  }

  // LinearScalingRoPE*: integer positions int(pos / factor).
  static float scaled_position(int64_t pos, double factor) { return float(int64_t(float(pos) / float(factor))); }

  // RoPE2D over the patch grid: [gh*gw, Dh], the first half of the head
  // rotated by the row, the second by the column.
  RopeTables spatial_rope(int64_t gh, int64_t gw) const {
    const int64_t dh = c_.head_dim;
    const std::vector<float> inv = rotary_inv_freq(c_.head_dim / 2);
    std::vector<float> cos(static_cast<size_t>(gh * gw * dh)), sin(cos.size());
    for (int64_t y = 0; y < gh; ++y) {
      for (int64_t x = 0; x < gw; ++x) {
        const int64_t row = (y * gw + x) * dh;
        rotary_into(cos.data() + row, sin.data() + row, 0, scaled_position(y, c_.interpolation_2d), inv);
        rotary_into(cos.data() + row, sin.data() + row, dh / 2, scaled_position(x, c_.interpolation_2d), inv);
      }
    }
    return rope_tables(cos, sin, gh * gw);
  }

  // RoPE1D over frames: [F, Dh].
  RopeTables temporal_rope(int64_t frames) const {
    const int64_t dh = c_.head_dim;
    const std::vector<float> inv = rotary_inv_freq(c_.head_dim);
    std::vector<float> cos(static_cast<size_t>(frames * dh)), sin(cos.size());
    for (int64_t f = 0; f < frames; ++f)
      rotary_into(cos.data() + f * dh, sin.data() + f * dh, 0, scaled_position(f, c_.interpolation_1d), inv);
    return rope_tables(cos, sin, frames);
  }

  std::vector<Block> spatial_, temporal_;
  Tensor spatial_pos_, temporal_pos_;
  std::pair<int64_t, int64_t> spatial_grid_{-1, -1};
};

// ---------------------------------------------------------------- v1.2

class OpenSoraT2V final : public PlanBase {
 public:
  OpenSoraT2V(const JsonConfig& j, const WeightSource& ckpt, const LoadOptions& opts)
      : PlanBase(parse_v120(j), ckpt, opts) {
    WeightLoader wl(ckpt, opts);
    const int64_t d = c_.inner();
    for (int i = 0; i < c_.num_layers; ++i) {
      const std::string prefix = cat("transformer_blocks.", i);
      Block b;
      b.scale_shift_table = wl.get(prefix + ".scale_shift_table", {6, d});
      b.norm1 = LayerNorm(wl, prefix + ".norm1", d, c_.norm_eps, c_.norm_elementwise_affine);
      b.norm2 = LayerNorm(wl, prefix + ".norm2", d, c_.norm_eps, c_.norm_elementwise_affine);
      b.attn1 = Attention(wl, prefix + ".attn1", d, c_.attention_bias, /*stack=*/false);
      // the head dim in thirds, rotated by frame, row and column
      b.attn1.to_q = rotary_pairs_adjacent(b.attn1.to_q, c_.heads, c_.head_dim, 3);
      b.attn1.to_k = rotary_pairs_adjacent(b.attn1.to_k, c_.heads, c_.head_dim, 3);
      b.attn2 = Attention(wl, prefix + ".attn2", d, c_.attention_bias, /*stack=*/false);
      b.ff = FeedForward(wl, prefix + ".ff", d, 4 * d, c_.activation);
      blocks_.push_back(std::move(b));
    }
  }

  std::string class_name() const override { return "OpenSoraT2V"; }
  SiteLayout site_layout() const override { return v120_layout(c_); }

  Tensor forward_pass(const TransformerInputs& in, const Sites* sites) override {
    Prepared r = prepare(in, /*shard_frames=*/false);
    const int64_t d = c_.inner(), tokens = r.frames * r.gh * r.gw;
    Tensor hs = r.tokens.reshape({r.bsz, tokens, d});  // [B, F*N, D]
    RopeTables rope = rope_3d(r.frames, r.gh, r.gw);
    if (Communicator* comm = parallel()) {  // this rank's tokens
      const Shard mine = shard_of(tokens, comm->size(), comm->rank());
      hs = take_shard(hs, 1, mine);
      rope = {take_shard(rope.cos, 0, mine), take_shard(rope.sin, 0, mine)};
    }
    for (int i = 0; i < c_.num_layers; ++i) {
      hs = run_site1(sites, {SiteKind::block, i}, hs, [&] {
        const Block& b = blocks_[size_t(i)];
        // [6, D] -> shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp: [1, D] each
        auto m = ops::chunk(ops::add(b.scale_shift_table, r.t_mod), 6, 0);
        Tensor attn = run_site1(sites, {SiteKind::spatial, i}, hs, [&] {
          const Tensor x = norm_modulate(b.norm1, hs, m[0], m[1]);
          return parallel() ? ulysses_attention(b.attn1, x, tokens, rope) : self_attention(b.attn1, x, &rope);
        });
        Tensor x = ops::gated_add(one_sequence(hs), m[2], one_sequence(attn)).reshape(hs.shape());
        x = ops::add(x, run_site1(sites, {SiteKind::cross, i}, x, [&] { return cross_attention(b.attn2, x, r); }));
        Tensor ff = b.ff(norm_modulate(b.norm2, x, m[3], m[4]));
        return ops::gated_add(one_sequence(x), m[5], one_sequence(ff)).reshape(x.shape());
      });
    }
    return finish(r, hs);
  }

 private:
  struct Block {
    Tensor scale_shift_table;  // [6, D]
    LayerNorm norm1, norm2;
    Attention attn1, attn2;
    FeedForward ff;
  };

  // x [B, S, D], this rank's S of the n video tokens -> their self attention
  // over all n (Ulysses): one all-to-all trades q, k and v of its tokens for
  // those of every token for a share of the heads (padded to a multiple of
  // the ranks), the padding tokens are dropped, a second all-to-all returns
  // each rank its tokens with every head.
  Tensor ulysses_attention(const Attention& a, const Tensor& x, int64_t n, const RopeTables& rope) const {
    Communicator& comm = *parallel();
    const int ranks = comm.size();
    const int64_t bsz = x.dim(0), s = x.dim(1), dh = c_.head_dim;
    const int64_t heads = (c_.heads + ranks - 1) / ranks * ranks;
    const Shape by_head = {bsz, s, c_.heads, dh};
    Tensor q = ops::rope(a.to_q(x).reshape(by_head), rope.cos, rope.sin);
    Tensor k = ops::rope(a.to_k(x).reshape(by_head), rope.cos, rope.sin);
    auto stacked = [&](const Tensor& t) { return pad_to(t, 2, heads).reshape({bsz, s, 1, heads, dh}); };
    // [B, S, 3, H, Dh] -> [B, ranks * S, 3, H / ranks, Dh]
    Tensor all = all_to_all(comm, ops::concat({stacked(q), stacked(k), stacked(a.to_v(x).reshape(by_head))}, 2), 3, 1);
    std::vector<Tensor> parts;
    for (int r = 0; r < ranks; ++r) {
      const int64_t valid = shard_of(n, ranks, r).valid;
      if (valid > 0) parts.push_back(ops::slice(all, 1, r * s, r * s + valid));
    }
    Tensor joint = ops::concat(parts, 1);  // [B, n, 3, H / ranks, Dh]
    const Shape one = {bsz, n, heads / ranks, dh};
    AttentionArgs args;
    args.scale = float(1.0 / std::sqrt(double(dh)));
    Tensor o = ops::attention(ops::slice(joint, 2, 0, 1).reshape(one), ops::slice(joint, 2, 1, 2).reshape(one),
                              ops::slice(joint, 2, 2, 3).reshape(one), args);  // [B, n, H / ranks, Dh]
    parts.clear();
    for (int r = 0; r < ranks; ++r) parts.push_back(take_shard(o, 1, shard_of(n, ranks, r)));
    Tensor back = all_to_all(comm, ops::concat(parts, 1), 1, 2);  // [B, S, H, Dh]
    if (heads != c_.heads) back = ops::slice(back, 2, 0, c_.heads);
    return a.to_out(back.reshape(x.shape()));
  }

  // RoPE3D: [F*gh*gw, Dh], a row [frame (Dh/3) | row (Dh/3) | column (Dh/3)],
  // positions arange(n) / interpolation scale. The original caches each
  // axis' table by (Dh/3, length) only, so an axis as long as an earlier one
  // (in the order frame, row, column) takes that axis' table and scale; so does this.
  RopeTables rope_3d(int64_t frames, int64_t gh, int64_t gw) const {
    const int64_t dh = c_.head_dim, third = dh / 3;
    const std::vector<float> inv = rotary_inv_freq(int(third));
    const int64_t len[3] = {frames, gh, gw};
    double scale[3] = {c_.interpolation_t, c_.interpolation_h, c_.interpolation_w};
    for (int a = 1; a < 3; ++a)
      for (int e = 0; e < a; ++e)
        if (len[e] == len[a]) {
          scale[a] = scale[e];
          break;
        }
    std::vector<float> cos(static_cast<size_t>(frames * gh * gw * dh)), sin(cos.size());
    for (int64_t tok = 0; tok < frames * gh * gw; ++tok) {
      const int64_t pos[3] = {tok / (gh * gw), tok / gw % gh, tok % gw};
      for (int a = 0; a < 3; ++a)
        rotary_into(cos.data() + tok * dh, sin.data() + tok * dh, a * third, float(pos[a]) / float(scale[a]), inv);
    }
    return rope_tables(cos, sin, frames * gh * gw);
  }

  std::vector<Block> blocks_;
};

}  // namespace

OpenSoraPlanFacts open_sora_plan_facts(const JsonConfig& config, const std::string& class_name) {
  PAB_ASSERT(class_name == "LatteT2V" || class_name == "OpenSoraT2V", "not an Open-Sora-Plan class: ", class_name);
  OpenSoraPlanFacts f;
  f.v120 = class_name == "OpenSoraT2V";
  const PlanConfig c = f.v120 ? parse_v120(config) : parse_v110(config);
  f.in_channels = c.in_channels;
  f.out_channels = c.out_channels;
  f.caption_channels = c.caption_channels;
  f.patch_size = c.patch_size;
  f.sample_h = c.sample_h;
  f.sample_w = c.sample_w;
  f.latent_frames = f.v120 ? config.get<int>("sample_size_t") : c.video_length;
  return f;
}

SiteLayout open_sora_plan_v110_site_layout(const JsonConfig& config) {
  return v110_layout(parse_v110(config));
}
SiteLayout open_sora_plan_v120_site_layout(const JsonConfig& config) {
  return v120_layout(parse_v120(config));
}
ForwardFootprint open_sora_plan_v110_footprint(const JsonConfig& config, const ForwardShape& shape) {
  const PlanConfig c = parse_v110(config);
  return plan_footprint(c, v110_layout(c), shape, "LatteT2V activations");
}
ForwardFootprint open_sora_plan_v120_footprint(const JsonConfig& config, const ForwardShape& shape) {
  const PlanConfig c = parse_v120(config);
  return plan_footprint(c, v120_layout(c), shape, "OpenSoraT2V activations");
}

std::unique_ptr<DiffusionTransformer> load_open_sora_plan_v110(const JsonConfig& config, const WeightSource& weights,
                                                               const LoadOptions& opts) {
  return std::make_unique<LatteT2V>(config, weights, opts);
}

std::unique_ptr<DiffusionTransformer> load_open_sora_plan_v120(const JsonConfig& config, const WeightSource& weights,
                                                               const LoadOptions& opts) {
  return std::make_unique<OpenSoraT2V>(config, weights, opts);
}

PAB_REGISTER(TransformerFamily, "LatteT2V",
             {load_open_sora_plan_v110, open_sora_plan_v110_site_layout, open_sora_plan_v110_footprint});
PAB_REGISTER(TransformerFamily, "OpenSoraT2V",
             {load_open_sora_plan_v120, open_sora_plan_v120_site_layout, open_sora_plan_v120_footprint});

}  // namespace pab
