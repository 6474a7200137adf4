// LatteTransformer3DModel (diffusers): per layer a spatial block (self
// attention over each frame's patches, cross attention to the projected
// caption, feed-forward) then a temporal block (self attention over each
// patch's frames, feed-forward), both modulated by one adaLN-single timestep
// embedding; learned sigma doubles the output channels.
//
// Sites, each covering what diffusers' Attention module computes
// (projections, attention, output projection):
//   transformer_blocks[i].attn1          -> {spatial, i}
//   transformer_blocks[i].attn2          -> {cross, i}
//   temporal_transformer_blocks[i].attn1 -> {temporal, i}
// and, where VideoSys broadcasts the MLP, {mlp_spatial, i} / {mlp_temporal, i}
// around norm2, modulation, feed-forward and gate (the gated MLP output that
// VideoSys keeps).
//
// The hidden states stay frame-major, [B*F, N, D], in both kinds of block:
// everything but temporal attention is token-wise, and temporal attention
// attends along the frame dimension without regrouping the tokens.
//
// Sequence parallel (LoadOptions::comm with several ranks), as VideoSys'
// dynamic sequence parallelism: each rank holds a contiguous share of the
// frames, which keeps spatial and cross attention local; temporal attention
// trades the frame share for a share of the spatial positions (all-to-all),
// attends over all frames and trades back. Shares that do not divide evenly
// are padded with zeros.
#include <cmath>
#include <optional>

#include "models/latte.h"

#include "core/registry.h"
#include "io/config.h"
#include "models/embeddings.h"
#include "models/layers.h"
#include "parallel/comm.h"

namespace pab {

LatteConfig parse_latte_config(const JsonConfig& j) {
  LatteConfig c;
  c.heads = j.get_or("num_attention_heads", c.heads);
  c.head_dim = j.get_or("attention_head_dim", c.head_dim);
  c.in_channels = j.get<int>("in_channels");
  c.out_channels = j.get_or("out_channels", c.in_channels);
  c.num_layers = j.get_or("num_layers", c.num_layers);
  c.attention_bias = j.get_or("attention_bias", c.attention_bias);
  c.sample_size = j.get_or("sample_size", c.sample_size);
  c.patch_size = j.get<int>("patch_size");
  c.activation = FeedForward::parse(j.get_or<std::string>("activation_fn", "geglu"), j.where());
  c.norm_elementwise_affine = j.get_or("norm_elementwise_affine", c.norm_elementwise_affine);
  c.norm_eps = float(j.get_or("norm_eps", double(c.norm_eps)));
  c.caption_channels = j.get<int>("caption_channels");
  c.video_length = j.get_or("video_length", c.video_length);

  j.require_positive({
      {"num_attention_heads", c.heads},
      {"attention_head_dim", c.head_dim},
      {"in_channels", c.in_channels},
      {"out_channels", c.out_channels},
      {"num_layers", c.num_layers},
      {"sample_size", c.sample_size},
      {"patch_size", c.patch_size},
      {"caption_channels", c.caption_channels},
      {"video_length", c.video_length},
  });
  std::string norm = j.get_or<std::string>("norm_type", "layer_norm");
  if (norm != "ada_norm_single") j.unsupported("norm_type", "Latte is supported with ada_norm_single only");
  if (j.get_or("dropout", 0.0) != 0.0) j.unsupported("dropout", "inference expects 0");
  if (c.inner() % 4 != 0)
    j.unsupported("num_attention_heads", "2D sincos positions need heads x head_dim divisible by 4");
  // The caption is projected to the model width before cross attention, so
  // the keys' input width is the model width.
  std::optional<int> cross = j.get_optional<int>("cross_attention_dim");
  c.cross_attention = cross.has_value();
  if (cross && *cross != c.inner())
    j.unsupported("cross_attention_dim",
                  cat("must equal heads x head_dim = ", c.inner(), " (the caption projection's width) or be null"));
  return c;
}

namespace {



SiteLayout layout_of(const LatteConfig& c) {
  SiteLayout l{{{SiteKind::spatial, c.num_layers}, {SiteKind::temporal, c.num_layers}}};
  if (c.cross_attention) l.kinds.push_back({SiteKind::cross, c.num_layers});
  l.kinds.push_back({SiteKind::mlp_spatial, c.num_layers});
  l.kinds.push_back({SiteKind::mlp_temporal, c.num_layers});
  // Blocks in the order they run: spatial i is block 2i, temporal i 2i + 1.
  l.kinds.push_back({SiteKind::block, 2 * c.num_layers});
  l.kinds.push_back({SiteKind::step, 1});
  return l;
}

// diffusers BasicTransformerBlock with norm_type ada_norm_single.
struct Block {
  Tensor scale_shift_table;  // [6, D]
  LayerNorm norm1, norm2;
  Attention attn1, attn2;  // attn2 only in spatial blocks with cross attention
  bool has_cross = false;
  FeedForward ff;
};

class Latte final : public DiffusionTransformer {
 public:
  Latte(const JsonConfig& j, const WeightSource& ckpt, const LoadOptions& opts) : c_(parse_latte_config(j)), opts_(opts) {
    WeightLoader wl(ckpt, opts);
    const int64_t d = c_.inner();
    const int p = c_.patch_size;
    patch_w_ = wl.get("pos_embed.proj.weight", {d, c_.in_channels, p, p});
    patch_b_ = wl.get("pos_embed.proj.bias", {d});
    for (int i = 0; i < c_.num_layers; ++i) {
      spatial_.push_back(load_block(wl, cat("transformer_blocks.", i), c_.cross_attention));
      temporal_.push_back(load_block(wl, cat("temporal_transformer_blocks.", i), false));
    }
    norm_out_.eps = 1e-6f;  // no affine parameters
    scale_shift_table_ = wl.get("scale_shift_table", {2, d});
    proj_out_ = Linear(wl, "proj_out", d, int64_t(p) * p * c_.out_channels);
    t_linear_1_ = Linear(wl, "adaln_single.emb.timestep_embedder.linear_1", kTimeProjDim, d);
    t_linear_2_ = Linear(wl, "adaln_single.emb.timestep_embedder.linear_2", d, d);
    t_modulation_ = Linear(wl, "adaln_single.linear", d, 6 * d);
    caption_1_ = Linear(wl, "caption_projection.linear_1", c_.caption_channels, d);
    caption_2_ = Linear(wl, "caption_projection.linear_2", d, d);
  }

  std::string class_name() const override { return "LatteTransformer3DModel"; }
  LatentLayout layout() const override { return LatentLayout::bcfhw; }
  int in_channels() const override { return c_.in_channels; }
  int out_channels() const override { return c_.out_channels; }
  bool sequence_parallel() const override { return true; }
  SiteLayout site_layout() const override { return layout_of(c_); }

  Tensor forward_pass(const TransformerInputs& in, const Sites* sites) override {
    const Tensor& x = in.latents;
    if (x.rank() != 5 || x.dim(1) != c_.in_channels)
      fail("Latte: latents must be [B, ", c_.in_channels, ", F, H, W], got ", x.desc());
    const int64_t bsz = x.dim(0), frames = x.dim(2), h = x.dim(3), w = x.dim(4);
    const int p = c_.patch_size;
    if (h % p != 0 || w % p != 0)
      fail("Latte: latent height and width (", h, "x", w, ") must be multiples of the patch size ", p);
    if (in.text.rank() != 3 || in.text.dim(0) != bsz || in.text.dim(2) != c_.caption_channels)
      fail("Latte: text embeddings must be [", bsz, ", L, ", c_.caption_channels, "], got ", in.text.desc());
    const int64_t text_len = in.text.dim(1);
    if (in.text_mask.defined() && in.text_mask.shape() != Shape{bsz, text_len})
      fail("Latte: text mask must be [", bsz, ", ", text_len, "], got ", in.text_mask.desc());
    const int64_t gh = h / p, gw = w / p, n = gh * gw;
    const int64_t d = c_.inner();
    Communicator* comm = parallel();
    const Shard mine = comm ? shard_of(frames, comm->size(), comm->rank()) : Shard{frames, frames, 0, frames};
    const int64_t local = mine.local;  // this rank's frames

    // Patch embedding per frame: [B, C, F, H, W] -> [B*F, C, H, W] -> [B*F, N, D]
    Tensor frames_first = ops::permute(comm ? take_shard(x, 2, mine) : x, {0, 2, 1, 3, 4})
                              .reshape({bsz * local, c_.in_channels, h, w});
    Tensor hs = ops::conv2d(frames_first, patch_w_, &patch_b_, {p, p});  // [B*F, D, gh, gw]
    hs = ops::permute(hs.reshape({bsz * local, d, n}), {0, 2, 1});       // [B*F, N, D]
    hs = ops::add(hs, spatial_positions(gh, gw));

    // adaLN-single: one timestep for the whole batch, so every modulation is
    // [1, D] and broadcasts over all sequences.
    Tensor t_proj = host(timestep_embedding({in.timestep}, kTimeProjDim, true, 0), {1, kTimeProjDim});
    Tensor t_emb = t_linear_2_(ops::silu(t_linear_1_(t_proj)));  // [1, D] (embedded timestep)
    Tensor t_mod = t_modulation_(ops::silu(t_emb)).reshape({6, d});

    Tensor caption = caption_2_(ops::gelu_tanh(caption_1_(in.text)));  // [B, L, D]
    Tensor key_mask;
    if (in.text_mask.defined()) key_mask = in.text_mask.to(DType::f32).to(opts_.device);

    for (int i = 0; i < c_.num_layers; ++i) {
      hs = run_site1(sites, {SiteKind::block, 2 * i}, hs, [&] {
        return block_forward(spatial_[size_t(i)], i, hs, t_mod, &caption, key_mask, sites, /*temporal=*/false,
                             frames);
      });
      if (i == 0 && frames > 1) {
        Tensor pos = take_shard(temporal_positions(frames), 0, mine).reshape({local, 1, d});  // per frame
        hs = ops::add(hs.reshape({bsz, local, n, d}), pos).reshape({bsz * local, n, d});
      }
      hs = run_site1(sites, {SiteKind::block, 2 * i + 1}, hs, [&] {
        return block_forward(temporal_[size_t(i)], i, hs, t_mod, nullptr, Tensor(), sites, /*temporal=*/true, frames);
      });
    }

    auto final_mod = ops::chunk(ops::add(scale_shift_table_, t_emb), 2, 0);  // shift, scale: [1, D]
    hs = norm_modulate(norm_out_, hs, final_mod[0], final_mod[1]);
    Tensor out = proj_out_(hs);  // [B*F, N, p*p*Co]
    if (comm) {
      out = all_gather(*comm, out.reshape({bsz, local, n, out.dim(2)}), 1);
      out = ops::slice(out, 1, 0, frames);
    }
    const int64_t co = c_.out_channels;
    // [B, F, gh, gw, p, p, Co] -> [B, Co, F, gh, p, gw, p]
    out = ops::permute(out.reshape({bsz, frames, gh, gw, p, p, co}), {0, 6, 1, 2, 4, 3, 5});
    return out.reshape({bsz, co, frames, h, w});
  }

 private:
  static constexpr int kTimeProjDim = 256;

  Block load_block(const WeightLoader& wl, const std::string& prefix, bool cross) const {
    const int64_t d = c_.inner();
    Block b;
    b.scale_shift_table = wl.get(prefix + ".scale_shift_table", {6, d});
    b.norm1 = LayerNorm(wl, prefix + ".norm1", d, c_.norm_eps, c_.norm_elementwise_affine);
    b.norm2 = LayerNorm(wl, prefix + ".norm2", d, c_.norm_eps, c_.norm_elementwise_affine);
    b.attn1 = Attention(wl, prefix + ".attn1", d, c_.attention_bias, /*self=*/true);
    b.has_cross = cross;
    if (cross) b.attn2 = Attention(wl, prefix + ".attn2", d, c_.attention_bias, /*self=*/false);
    b.ff = FeedForward(wl, prefix + ".ff", d, 4 * d, c_.activation);
    return b;
  }

  // The modulation is [1, D] for every sequence, so x [S, T, D] is treated as
  // one sequence of S*T tokens: [S, T, D] -> [1, S*T, D].
  static Shape one_sequence(const Tensor& x) { return {1, x.dim(0) * x.dim(1), x.dim(2)}; }
  // norm(x) * (1 + scale [1, D]) + shift [1, D]
  static Tensor norm_modulate(const LayerNorm& norm, const Tensor& x, const Tensor& shift, const Tensor& scale) {
    return norm.modulated(x.reshape(one_sequence(x)), shift, scale).reshape(x.shape());
  }
  // {x + gate [1, D] * y (no gate: x + y), norm(that) * (1 + scale) + shift}
  static std::pair<Tensor, Tensor> add_norm_modulate(const LayerNorm& norm, const Tensor& x, const Tensor& y,
                                                     const Tensor* gate, const Tensor& shift, const Tensor& scale) {
    const Shape one = one_sequence(x);
    auto [sum, normed] =
        norm.add_modulated_split(x.reshape(one), y.reshape(one), one[1], gate, gate, shift, scale, shift, scale);
    return {sum.reshape(x.shape()), normed.reshape(x.shape())};
  }
  // x + gate [1, D] * y
  static Tensor gated_add(const Tensor& x, const Tensor& gate, const Tensor& y) {
    return ops::gated_add(x.reshape(one_sequence(x)), gate, y.reshape(one_sequence(y))).reshape(x.shape());
  }

  Communicator* parallel() const { return opts_.comm && opts_.comm->size() > 1 ? opts_.comm : nullptr; }

  // One spatial or temporal block on hs [B*F, N, D] (this rank's frames).
  Tensor block_forward(const Block& b, int index, Tensor hs, const Tensor& t_mod, const Tensor* caption,
                       const Tensor& key_mask, const Sites* sites, bool temporal, int64_t frames) const {
    // [6, D] -> shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp: [1, D] each
    auto m = ops::chunk(ops::add(b.scale_shift_table, t_mod), 6, 0);
    const SiteKind self_kind = temporal ? SiteKind::temporal : SiteKind::spatial;
    Tensor attn = run_site1(sites, {self_kind, index}, hs, [&] {
      Tensor normed = norm_modulate(b.norm1, hs, m[0], m[1]);
      return temporal ? temporal_attention(b.attn1, normed, frames) : self_attention(b.attn1, normed);
    });
    Tensor residual = attn;  // added before norm2, gated by `gate`
    const Tensor* gate = &m[2];
    if (b.has_cross) {
      hs = gated_add(hs, m[2], attn);
      // ada_norm_single: the cross attention sees the unnormalised, unmodulated states
      residual = run_site1(sites, {SiteKind::cross, index}, hs,
                           [&] { return cross_attention(b.attn2, hs, *caption, key_mask); });
      gate = nullptr;
    }
    // The residual add and norm2 in one pass (norm2's output goes unused when
    // the MLP broadcasts). The MLP site covers modulation, feed-forward and
    // gate (the gated output is what VideoSys' MLP broadcast reuses); it
    // returns the feed-forward output and its gate so that gate and residual fuse.
    std::pair<Tensor, Tensor> added = add_norm_modulate(b.norm2, hs, residual, gate, m[3], m[4]);
    hs = added.first;
    const Tensor& normed = added.second;
    const SiteKind mlp_kind = temporal ? SiteKind::mlp_temporal : SiteKind::mlp_spatial;
    SiteOutput ff = run_site(sites, {mlp_kind, index}, {normed}, [&] { return SiteOutput{b.ff(normed), m[5]}; });
    return gated_add(hs, ff.at(1), ff.at(0));
  }

  Tensor self_attention(const Attention& a, const Tensor& x) const {
    return attend(a, x, {x.dim(0), x.dim(1), c_.heads, c_.head_dim});
  }

  // to_out(attention(q, k, v)) with q, k, v = the projections of x [.., D]
  // viewed as `heads` [B, S, H, Dh]
  Tensor attend(const Attention& a, const Tensor& x, const Shape& heads) const {
    Tensor qkv = a.qkv(x);  // [3, .., D]
    auto part = [&](int i) { return qkv.narrow0(i, 1).reshape(heads); };
    AttentionArgs args;
    args.scale = float(1.0 / std::sqrt(double(c_.head_dim)));
    return a.to_out(ops::attention(part(0), part(1), part(2), args).reshape(x.shape()));
  }

  // x [B*F, N, D] (frame-major) -> self attention over the F frames of each
  // of the N spatial positions, [B*F, N, D], without regrouping the tokens:
  // the projections are token-wise, and attention along the frames of each
  // position is attention over [B, F, N * H, Dh], the positions acting as
  // heads. With several ranks x holds this rank's frames: the exchange
  // brings all frames of a share of the positions.
  Tensor temporal_attention(const Attention& a, const Tensor& x, int64_t frames) const {
    Communicator* comm = parallel();
    const int64_t n = x.dim(1), d = x.dim(2);
    const int64_t bsz = x.dim(0) / (comm ? shard_of(frames, comm->size(), 0).local : frames);
    Tensor seq = x.reshape({bsz, x.dim(0) / bsz, n, d});  // [B, F, N, D]
    if (comm) seq = frames_to_positions(*comm, seq, frames);  // [B, F, N / ranks, D]
    Tensor out = attend(a, seq, {bsz, frames, seq.dim(2) * c_.heads, c_.head_dim});  // [B, F, M, D]
    if (comm) out = positions_to_frames(*comm, out, n);  // [B, F / ranks, N, D]
    return out.reshape(x.shape());
  }

  // x [B*F, N, D] attends to caption [B, L, D]. Every frame of a batch entry
  // sees the same keys, so the frames' queries are attended together:
  // [B*F, N, D] -> [B, F*N, H, Dh]; the caption mask [B, L] applies per entry.
  Tensor cross_attention(const Attention& a, const Tensor& x, const Tensor& caption, const Tensor& key_mask) const {
    const int64_t bsz = caption.dim(0), l = caption.dim(1);
    Tensor q = a.to_q(x).reshape({bsz, x.dim(0) / bsz * x.dim(1), c_.heads, c_.head_dim});
    Tensor k = a.to_k(caption).reshape({bsz, l, c_.heads, c_.head_dim});
    Tensor v = a.to_v(caption).reshape({bsz, l, c_.heads, c_.head_dim});
    AttentionArgs args;
    args.scale = float(1.0 / std::sqrt(double(c_.head_dim)));
    if (key_mask.defined()) args.key_mask = &key_mask;
    Tensor o = ops::attention(q, k, v, args);  // [B, F*N, H, Dh]
    return a.to_out(o.reshape(x.shape()));
  }

  Tensor host(const std::vector<float>& v, const Shape& shape) const {
    return Tensor::from_vector(v, shape).to(opts_.dtype).to(opts_.device);
  }

  // PatchEmbed's 2D sincos table, recomputed when the patch grid differs from
  // the sample size's (as diffusers does): [gh*gw, D]
  Tensor spatial_positions(int64_t gh, int64_t gw) {
    const int64_t key = gh * 1000003 + gw;
    if (!spatial_pos_.defined() || spatial_key_ != key) {
      const int base = c_.sample_size / c_.patch_size;
      spatial_pos_ = sincos_pos_embed_2d(c_.inner(), int(gh), int(gw), base, c_.interpolation_scale())
                         .to(opts_.dtype)
                         .to(opts_.device);
      spatial_key_ = key;
    }
    return spatial_pos_;
  }

  // 1D sincos over frame indices: [F, D]. diffusers builds it once for
  // `video_length` frames (and fails on other counts); its first F rows are these.
  Tensor temporal_positions(int64_t frames) {
    if (!temporal_pos_.defined() || temporal_pos_.dim(0) != frames) {
      std::vector<float> pos(static_cast<size_t>(frames));
      for (int64_t f = 0; f < frames; ++f) pos[size_t(f)] = float(f);
      std::vector<double> e = sincos_1d(c_.inner(), pos);
      temporal_pos_ = host(std::vector<float>(e.begin(), e.end()), {frames, c_.inner()});
    }
    return temporal_pos_;
  }

  LatteConfig c_;
  LoadOptions opts_;
  Tensor patch_w_, patch_b_;
  std::vector<Block> spatial_, temporal_;
  LayerNorm norm_out_;
  Tensor scale_shift_table_;
  Linear proj_out_, t_linear_1_, t_linear_2_, t_modulation_, caption_1_, caption_2_;
  Tensor spatial_pos_, temporal_pos_;
  int64_t spatial_key_ = -1;
};

}  // namespace

SiteLayout latte_site_layout(const JsonConfig& config) {
  return layout_of(parse_latte_config(config));
}

ForwardFootprint latte_footprint(const JsonConfig& config, const ForwardShape& shape) {
  const LatteConfig c = parse_latte_config(config);
  if (shape.latents.size() != 5) fail("Latte: latents must be [B, C, F, H, W], got ", shape_str(shape.latents));
  const int64_t bsz = shape.latents[0], p = c.patch_size, d = c.inner();
  const int64_t tokens = shape_numel({shape.latents[2], shape.latents[3] / p, shape.latents[4] / p});
  const char* what = "Latte activations";
  ForwardFootprint f;
  // Attention holds the states, their norm, the stacked q/k/v, the output,
  // its projection and (on the CPU) regrouped copies of k and v, with the
  // residual and gated states around it: ten [B*F, N, D]; the feed-forward
  // six and a half (the states, attention and cross outputs, the sum and
  // its norm) and its own width. The projected caption [B, L, D] persists.
  const int64_t widths = std::max(10 * d, 13 * d / 2 + feed_forward_width(c.activation, 4 * d, shape.device));
  f.activations = token_bytes(bsz, tokens, widths, shape.dtype, 1, what) +
                  token_bytes(bsz, shape.text_length, 2 * d, shape.dtype, 1, what);
  // Every site's output is [B*F, N, D] (the MLP's with its [1, D] gate).
  for (SiteKind k : layout_of(c).site_kinds()) f.site[size_t(k)] = token_bytes(bsz, tokens, d, shape.dtype, 1, what);
  return f;
}

std::unique_ptr<DiffusionTransformer> load_latte(const JsonConfig& config, const WeightSource& weights,
                                                 const LoadOptions& opts) {
  return std::make_unique<Latte>(config, weights, opts);
}

PAB_REGISTER(TransformerFamily, "LatteTransformer3DModel", {load_latte, latte_site_layout, latte_footprint});

}  // namespace pab
