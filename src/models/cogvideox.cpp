// CogVideoXTransformer3DModel (diffusers): CogVideoX 1.0 (2b: sincos
// positions; 5b: rotary), CogVideoX 1.5 (temporal patches, rotary "slice"
// grid), learned positional embeddings and ofs conditioning (image-to-video).
//
// Each block's joint text+video attention is one attention site {spatial, i}
// covering what diffusers' attn1 module computes: projections, QK norm,
// rotary embedding, attention and output projection.
//
// Sequence parallel (LoadOptions::comm with several ranks): each rank holds
// the text tokens and a contiguous share of the video tokens, and runs every
// token-wise layer on them alone. Attention trades tokens for heads
// (Ulysses): one all-to-all brings q, k and v of the whole sequence for a
// share of the heads, a second returns the output; a broadcast step of PAB
// skips both with the compute. Heads are padded with zeros up to a multiple
// of the rank count (30 heads run on 4 ranks).
#include <cmath>

#include "models/cogvideox.h"

#include "core/registry.h"
#include "io/config.h"
#include "models/embeddings.h"
#include "models/layers.h"
#include "parallel/comm.h"

namespace pab {

CogVideoXConfig parse_cogvideox_config(const JsonConfig& j) {
  CogVideoXConfig c;
  c.heads = j.get_or("num_attention_heads", c.heads);
  c.head_dim = j.get_or("attention_head_dim", c.head_dim);
  c.in_channels = j.get_or("in_channels", c.in_channels);
  c.out_channels = j.get_or("out_channels", c.out_channels);
  c.flip_sin_to_cos = j.get_or("flip_sin_to_cos", c.flip_sin_to_cos);
  c.freq_shift = j.get_or("freq_shift", c.freq_shift);
  c.time_embed_dim = j.get_or("time_embed_dim", c.time_embed_dim);
  c.ofs_embed_dim = j.get_or("ofs_embed_dim", 0);
  c.text_embed_dim = j.get_or("text_embed_dim", c.text_embed_dim);
  c.num_layers = j.get_or("num_layers", c.num_layers);
  c.attention_bias = j.get_or("attention_bias", c.attention_bias);
  c.sample_width = j.get_or("sample_width", c.sample_width);
  c.sample_height = j.get_or("sample_height", c.sample_height);
  c.sample_frames = j.get_or("sample_frames", c.sample_frames);
  c.patch_size = j.get_or("patch_size", c.patch_size);
  c.patch_size_t = j.get_or("patch_size_t", 0);
  c.temporal_compression_ratio = j.get_or("temporal_compression_ratio", c.temporal_compression_ratio);
  c.max_text_seq_length = j.get_or("max_text_seq_length", c.max_text_seq_length);
  c.activation = FeedForward::parse(j.get_or<std::string>("activation_fn", "gelu-approximate"), j.where());
  c.norm_elementwise_affine = j.get_or("norm_elementwise_affine", c.norm_elementwise_affine);
  c.norm_eps = float(j.get_or("norm_eps", double(c.norm_eps)));
  c.spatial_interpolation_scale = j.get_or("spatial_interpolation_scale", c.spatial_interpolation_scale);
  c.temporal_interpolation_scale = j.get_or("temporal_interpolation_scale", c.temporal_interpolation_scale);
  c.rotary = j.get_or("use_rotary_positional_embeddings", false);
  c.learned_positions = j.get_or("use_learned_positional_embeddings", false);
  c.patch_bias = j.get_or("patch_bias", true);

  j.require_positive({
      {"num_attention_heads", c.heads},
      {"attention_head_dim", c.head_dim},
      {"in_channels", c.in_channels},
      {"out_channels", c.out_channels},
      {"time_embed_dim", c.time_embed_dim},
      {"text_embed_dim", c.text_embed_dim},
      {"num_layers", c.num_layers},
      {"patch_size", c.patch_size},
      {"temporal_compression_ratio", c.temporal_compression_ratio},
      {"sample_height", c.sample_height},
      {"sample_width", c.sample_width},
      {"sample_frames", c.sample_frames},
      {"max_text_seq_length", c.max_text_seq_length},
  });
  if (c.patch_size_t < 0) j.unsupported("patch_size_t", "must be >= 1 or null");
  if (c.ofs_embed_dim < 0) j.unsupported("ofs_embed_dim", "must be >= 1 or null");
  if (c.head_dim % 2 != 0) j.unsupported("attention_head_dim", "must be even");
  std::string act = j.get_or<std::string>("timestep_activation_fn", "silu");
  if (act != "silu") j.unsupported("timestep_activation_fn", "only silu is supported");
  if (j.get_or("dropout", 0.0) != 0.0) j.unsupported("dropout", "inference expects 0");
  if (!c.rotary && c.learned_positions)
    j.unsupported("use_learned_positional_embeddings", "learned positions need use_rotary_positional_embeddings");
  if (!c.rotary && c.inner() % 16 != 0)
    j.unsupported("num_attention_heads", "sincos positions need heads x head_dim divisible by 16");
  if (c.patch_size_t > 0 && !c.rotary)
    j.unsupported("patch_size_t", "temporal patches need use_rotary_positional_embeddings");
  if (c.rotary && c.head_dim % 8 != 0) j.unsupported("attention_head_dim", "rotary embeddings need a multiple of 8");
  return c;
}

namespace {



SiteLayout layout_of(const CogVideoXConfig& c) {
  return {{{SiteKind::spatial, c.num_layers}, {SiteKind::block, c.num_layers}, {SiteKind::step, 1}}};
}

struct TimestepMlp {  // diffusers TimestepEmbedding: linear_1, SiLU, linear_2
  Linear l1, l2;
  TimestepMlp() = default;
  TimestepMlp(const WeightLoader& wl, const std::string& prefix, int in, int out)
      : l1(wl, prefix + ".linear_1", in, out), l2(wl, prefix + ".linear_2", out, out) {}
  Tensor operator()(const Tensor& x) const { return l2(ops::silu(l1(x))); }
};

struct Block {
  LayerNorm norm1, norm2;
  Linear to_q, to_k, to_v, to_out;
  StackedLinear qkv;  // to_q, to_k, to_v as one GEMM
  LayerNorm norm_q, norm_k;
  FeedForward ff;
};

class CogVideoX final : public DiffusionTransformer {
 public:
  CogVideoX(const JsonConfig& j, const WeightSource& ckpt, const LoadOptions& opts) : c_(parse_cogvideox_config(j)), opts_(opts) {
    WeightLoader wl(ckpt, opts);
    const int64_t d = c_.inner();
    const int p = c_.patch_size;
    if (c_.patch_size_t == 0) {
      patch_w_ = wl.get("patch_embed.proj.weight", {d, c_.in_channels, p, p}).reshape({d, int64_t(c_.in_channels) * p * p});
      if (c_.patch_bias) patch_b_ = wl.get("patch_embed.proj.bias", {d});
    } else {
      int64_t k = int64_t(c_.in_channels) * p * p * c_.patch_size_t;
      patch_w_ = wl.get("patch_embed.proj.weight", {d, k});
      // diffusers builds this projection as nn.Linear, which always has a bias
      patch_b_ = wl.get("patch_embed.proj.bias", {d});
    }
    text_proj_ = Linear(wl, "patch_embed.text_proj", c_.text_embed_dim, d);
    if (c_.learned_positions) {
      int64_t patches = int64_t(c_.sample_height / p) * (c_.sample_width / p) *
                        ((c_.sample_frames - 1) / c_.temporal_compression_ratio + 1);
      learned_pos_ = wl.get("patch_embed.pos_embedding", {1, c_.max_text_seq_length + patches, d});
    }
    time_embedding_ = TimestepMlp(wl, "time_embedding", int(d), c_.time_embed_dim);
    if (c_.ofs_embed_dim > 0) ofs_embedding_ = TimestepMlp(wl, "ofs_embedding", c_.ofs_embed_dim, c_.ofs_embed_dim);

    // Every block's two adaptive-norm projections of the same timestep
    // embedding, stacked into one matrix: one GEMM per forward pass.
    std::vector<Linear> mod_parts;
    for (int i = 0; i < c_.num_layers; ++i) {
      std::string pre = cat("transformer_blocks.", i, ".");
      Block b;
      mod_parts.push_back(Linear(wl, pre + "norm1.linear", c_.time_embed_dim, 6 * d));
      b.norm1 = LayerNorm(wl, pre + "norm1.norm", d, c_.norm_eps, c_.norm_elementwise_affine);
      mod_parts.push_back(Linear(wl, pre + "norm2.linear", c_.time_embed_dim, 6 * d));
      b.norm2 = LayerNorm(wl, pre + "norm2.norm", d, c_.norm_eps, c_.norm_elementwise_affine);
      b.to_q = Linear(wl, pre + "attn1.to_q", d, d, c_.attention_bias);
      b.to_k = Linear(wl, pre + "attn1.to_k", d, d, c_.attention_bias);
      b.to_v = Linear(wl, pre + "attn1.to_v", d, d, c_.attention_bias);
      b.qkv = StackedLinear({&b.to_q, &b.to_k, &b.to_v});
      b.to_out = Linear(wl, pre + "attn1.to_out.0", d, d, true);
      b.norm_q = LayerNorm(wl, pre + "attn1.norm_q", c_.head_dim, 1e-6f);
      b.norm_k = LayerNorm(wl, pre + "attn1.norm_k", c_.head_dim, 1e-6f);
      b.ff = FeedForward(wl, pre + "ff", d, 4 * d, c_.activation);
      blocks_.push_back(std::move(b));
    }
    std::vector<Tensor> ws, bs;
    for (const Linear& l : mod_parts) {
      ws.push_back(l.w);
      bs.push_back(l.b);
    }
    modulation_ = Linear();
    modulation_.w = ops::concat(ws, 0);  // [L * 12 * D, T]
    modulation_.b = ops::concat(bs, 0);  // [L * 12 * D]
    mod_parts.clear();
    norm_final_ = LayerNorm(wl, "norm_final", d, c_.norm_eps, c_.norm_elementwise_affine);
    norm_out_linear_ = Linear(wl, "norm_out.linear", c_.time_embed_dim, 2 * d);
    norm_out_ = LayerNorm(wl, "norm_out.norm", d, c_.norm_eps, c_.norm_elementwise_affine);
    int64_t patch_vol = int64_t(p) * p * std::max(1, c_.patch_size_t);
    proj_out_ = Linear(wl, "proj_out", d, patch_vol * c_.out_channels);
  }

  std::string class_name() const override { return "CogVideoXTransformer3DModel"; }
  LatentLayout layout() const override { return LatentLayout::bfchw; }
  int in_channels() const override { return c_.in_channels; }
  int out_channels() const override { return c_.out_channels; }
  SiteLayout site_layout() const override { return layout_of(c_); }
  bool sequence_parallel() const override { return true; }

  Tensor forward_pass(const TransformerInputs& in, const Sites* sites) override {
    const Tensor& x = in.latents;
    if (x.rank() != 5 || x.dim(2) != c_.in_channels)
      fail("CogVideoX: latents must be [B, F, ", c_.in_channels, ", H, W], got ", x.desc());
    const int64_t bsz = x.dim(0), frames = x.dim(1), h = x.dim(3), w = x.dim(4);
    const int p = c_.patch_size, pt = std::max(1, c_.patch_size_t);
    if (h % p != 0 || w % p != 0)
      fail("CogVideoX: latent height and width (", h, "x", w, ") must be multiples of the patch size ", p);
    if (frames % pt != 0)
      fail("CogVideoX: ", frames, " latent frames are not a multiple of the temporal patch size ", pt);
    if (in.text.rank() != 3 || in.text.dim(0) != bsz || in.text.dim(2) != c_.text_embed_dim)
      fail("CogVideoX: text embeddings must be [", bsz, ", L, ", c_.text_embed_dim, "], got ", in.text.desc());
    const int64_t text_len = in.text.dim(1);
    const int64_t gh = h / p, gw = w / p, gf = frames / pt;
    const int64_t d = c_.inner();

    // Timestep (and ofs) conditioning: [B, time_embed_dim]
    Tensor emb = time_embedding_(host_embedding(timestep_embedding(std::vector<double>(size_t(bsz), in.timestep),
                                                                   int(d), c_.flip_sin_to_cos, c_.freq_shift),
                                                {bsz, d}));
    if (c_.ofs_embed_dim > 0) {
      // The image-to-video pipelines pass ofs = 2.0.
      Tensor ofs = host_embedding(timestep_embedding(std::vector<double>(size_t(bsz), 2.0), c_.ofs_embed_dim,
                                                     c_.flip_sin_to_cos, c_.freq_shift),
                                  {bsz, c_.ofs_embed_dim});
      emb = ops::add(emb, ofs_embedding_(ofs));
    }
    Tensor emb_act = ops::silu(emb);

    // Patch embedding
    Tensor patches;
    if (c_.patch_size_t == 0) {
      // [B, F, C, gh, p, gw, p] -> [B, F, gh, gw, C, p, p]
      patches = ops::permute(x.reshape({bsz, frames, c_.in_channels, gh, p, gw, p}), {0, 1, 3, 5, 2, 4, 6});
    } else {
      // [B, gf, pt, C, gh, p, gw, p] -> [B, gf, gh, gw, C, pt, p, p]
      patches = ops::permute(x.reshape({bsz, gf, pt, c_.in_channels, gh, p, gw, p}), {0, 1, 4, 6, 3, 2, 5, 7});
    }
    Tensor video = ops::linear(patches.reshape({bsz, gf * gh * gw, -1}), patch_w_,
                               patch_b_.defined() ? &patch_b_ : nullptr);  // [B, N, D]
    Tensor text = text_proj_(in.text);                                      // [B, L, D]
    add_positions(text, video, text_len, gh, gw, frames);

    RopeTables rope;
    if (c_.rotary) rope = rotary_tables(gh, gw, gf);
    const int64_t n_video = video.dim(1);
    if (Communicator* comm = parallel()) {
      Shard mine = shard_of(n_video, comm->size(), comm->rank());
      video = take_shard(video, 1, mine);
      if (rope.cos.defined()) rope = {take_shard(rope.cos, 0, mine), take_shard(rope.sin, 0, mine)};
    }

    // Text and video tokens travel as one joint sequence [B, L + N, D]; the
    // two parts differ only in their modulation vectors.
    Tensor hidden = ops::concat({text, video}, 1);
    // All blocks' modulation vectors: [B, L * 12 * D] -> [L * 12, B, D], each a [B, D] view
    Tensor mods = ops::permute(modulation_(emb_act).reshape({bsz, int64_t(c_.num_layers) * 12, d}), {1, 0, 2});
    auto mod = [&](int block, int k) { return mods.narrow0(int64_t(block) * 12 + k, 1).reshape({bsz, d}); };
    for (int i = 0; i < c_.num_layers; ++i) {
      hidden = run_site1(sites, {SiteKind::block, i}, hidden, [&] {
        const Block& b = blocks_[size_t(i)];
        // norm1: shift, scale, gate (video), enc_shift, enc_scale, enc_gate (text); norm2 likewise
        std::vector<Tensor> m1, m2;
        for (int k = 0; k < 6; ++k) {
          m1.push_back(mod(i, k));
          m2.push_back(mod(i, 6 + k));
        }
        // The norm is part of the site: a broadcast step skips it too.
        Tensor attn = run_site1(sites, {SiteKind::spatial, i}, hidden, [&] {
          return attention(b, b.norm1.modulated_split(hidden, text_len, m1[3], m1[4], m1[0], m1[1]), text_len,
                           n_video, rope);
        });
        auto [sum, normed] =
            b.norm2.add_modulated_split(hidden, attn, text_len, &m1[5], &m1[2], m2[3], m2[4], m2[0], m2[1]);
        return ops::gated_add_split(sum, b.ff(normed), text_len, m2[5], m2[2]);
      });
    }
    video = ops::slice(hidden, 1, text_len, hidden.dim(1));

    video = norm_final_(video);
    auto mo = ops::chunk(norm_out_linear_(emb_act), 2, 1);  // shift, scale
    video = norm_out_.modulated(video, mo[0], mo[1]);
    Tensor out = proj_out_(video);  // [B, N, pt * p * p * C_out]
    if (Communicator* comm = parallel()) out = ops::slice(all_gather(*comm, out, 1), 1, 0, n_video);
    const int64_t co = c_.out_channels;
    if (c_.patch_size_t == 0) {
      // [B, F, gh, gw, C, p, p] -> [B, F, C, gh, p, gw, p]
      out = ops::permute(out.reshape({bsz, frames, gh, gw, co, p, p}), {0, 1, 4, 2, 5, 3, 6});
    } else {
      // [B, gf, gh, gw, C, pt, p, p] -> [B, gf, pt, C, gh, p, gw, p]
      out = ops::permute(out.reshape({bsz, gf, gh, gw, co, pt, p, p}), {0, 1, 5, 4, 2, 6, 3, 7});
    }
    return out.reshape({bsz, frames, co, h, w});
  }

 private:
  Tensor host_embedding(const std::vector<float>& v, const Shape& shape) const {
    return Tensor::from_vector(v, shape).to(opts_.dtype).to(opts_.device);
  }

  // Adds sincos or learned positions (diffusers' CogVideoXPatchEmbed).
  void add_positions(Tensor& text, Tensor& video, int64_t text_len, int64_t gh, int64_t gw, int64_t frames) {
    if (c_.rotary && !c_.learned_positions) return;
    const int p = c_.patch_size;
    const int64_t pixel_frames = (frames - 1) * c_.temporal_compression_ratio + 1;
    const bool at_sample_size = gh * p == c_.sample_height && gw * p == c_.sample_width;
    if (c_.learned_positions && !at_sample_size)
      fail("CogVideoX: learned positional embeddings only support the sample size ", c_.sample_height, "x",
           c_.sample_width, " (latent), got ", gh * p, "x", gw * p);
    if (text_len != c_.max_text_seq_length)
      fail("CogVideoX: positional embeddings expect ", c_.max_text_seq_length, " text tokens (max_text_seq_length), got ",
           text_len);
    if (c_.learned_positions && pixel_frames == c_.sample_frames) {
      Tensor pos = learned_pos_;  // [1, L + N, D]
      if (pos.dim(1) != text_len + video.dim(1))
        fail("CogVideoX: learned positional embedding covers ", pos.dim(1) - text_len, " patches, input has ",
             video.dim(1));
      text = ops::add(text, ops::slice(pos, 1, 0, text_len));
      video = ops::add(video, ops::slice(pos, 1, text_len, pos.dim(1)));
      return;
    }
    // Sincos positions for this input size; the text part of the joint table is zero.
    const int64_t key = (gh * 100000 + gw) * 100000 + frames;
    if (!pos_cache_.defined() || pos_key_ != key) {
      pos_cache_ = sincos_pos_embed_3d(c_.inner(), int(gh), int(gw), int(frames), c_.spatial_interpolation_scale,
                                       c_.temporal_interpolation_scale)
                       .to(opts_.dtype)
                       .to(opts_.device);  // [F*gh*gw, D]
      pos_key_ = key;
    }
    video = ops::add(video, pos_cache_);
  }

  RopeTables rotary_tables(int64_t gh, int64_t gw, int64_t gf) {
    const int64_t key = (gh * 100000 + gw) * 100000 + gf;
    if (!rope_cache_.cos.defined() || rope_key_ != key) {
      const int p = c_.patch_size;
      const int base_h = c_.sample_height / p, base_w = c_.sample_width / p;
      RopeTables t = c_.patch_size_t == 0
                         ? rotary_pos_embed_3d(c_.head_dim, int(gh), int(gw), int(gf), base_h, base_w, "linspace")
                         : rotary_pos_embed_3d(c_.head_dim, int(gh), int(gw), int(gf), base_h, base_w, "slice", base_h,
                                               base_w);
      rope_cache_ = {t.cos.to(opts_.device), t.sin.to(opts_.device)};  // f32: applied in float
      rope_key_ = key;
    }
    return rope_cache_;
  }

  Communicator* parallel() const { return opts_.comm && opts_.comm->size() > 1 ? opts_.comm : nullptr; }

  // diffusers' attn1 over the joint sequence [B, L + N, D] (rotary positions
  // on the video tokens only); returns [B, L + N, D]. With several ranks the
  // tokens are the text and this rank's share of the N video tokens.
  Tensor attention(const Block& b, const Tensor& tokens, int64_t text_len, int64_t n_video,
                   const RopeTables& rope) const {
    const int64_t bsz = tokens.dim(0), s = tokens.dim(1);
    const Shape heads = {bsz, s, c_.heads, c_.head_dim};
    Tensor qkv = b.qkv(tokens);  // [3, B, S, D]
    Tensor q = qkv.narrow0(0, 1).reshape(heads);  // [B, S, H, Dh]
    Tensor k = qkv.narrow0(1, 1).reshape(heads);
    Tensor v = qkv.narrow0(2, 1).reshape(heads);
    if (rope.cos.defined()) {
      q = b.norm_q.with_rope(q, rope, text_len);
      k = b.norm_k.with_rope(k, rope, text_len);
    } else {
      q = b.norm_q(q);
      k = b.norm_k(k);
    }
    AttentionArgs args;
    args.scale = float(1.0 / std::sqrt(double(c_.head_dim)));
    Tensor o = parallel() ? ulysses_attention(q, k, v, text_len, n_video, args) : ops::attention(q, k, v, args);
    return b.to_out(o.reshape({bsz, s, c_.inner()}));  // [B, S, D]
  }

  // q, k, v [B, L + n, H, Dh] with this rank's n video tokens -> the
  // attention output for them, computed over all ranks' tokens.
  Tensor ulysses_attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t text_len, int64_t n_video,
                           const AttentionArgs& args) const {
    Communicator& comm = *opts_.comm;
    const int ranks = comm.size();
    const int64_t bsz = q.dim(0), s = q.dim(1), dh = c_.head_dim;
    const int64_t heads = (c_.heads + ranks - 1) / ranks * ranks, local_heads = heads / ranks;
    // q, k and v in one exchange: [B, S, 3, H, Dh] -> [B, ranks * S, 3, H / ranks, Dh],
    // the sequence being [text, video of rank 0, text, video of rank 1, ...]
    auto stacked = [&](const Tensor& t) { return pad_to(t, 2, heads).reshape({bsz, s, 1, heads, dh}); };
    Tensor all = all_to_all(comm, ops::concat({stacked(q), stacked(k), stacked(v)}, 2), 3, 1);
    std::vector<Tensor> parts = {ops::slice(all, 1, 0, text_len)};
    for (int r = 0; r < ranks; ++r) {
      const int64_t from = r * s + text_len, valid = shard_of(n_video, ranks, r).valid;
      if (valid > 0) parts.push_back(ops::slice(all, 1, from, from + valid));
    }
    Tensor joint = ops::concat(parts, 1);  // [B, L + N, 3, H / ranks, Dh]
    const Shape one = {bsz, text_len + n_video, local_heads, dh};
    Tensor o = ops::attention(ops::slice(joint, 2, 0, 1).reshape(one), ops::slice(joint, 2, 1, 2).reshape(one),
                              ops::slice(joint, 2, 2, 3).reshape(one), args);
    // Back: each rank gets [text, its video tokens] with every rank's heads.
    Tensor text_o = ops::slice(o, 1, 0, text_len), video_o = ops::slice(o, 1, text_len, text_len + n_video);
    parts.clear();
    for (int r = 0; r < ranks; ++r) {
      parts.push_back(text_o);
      parts.push_back(take_shard(video_o, 1, shard_of(n_video, ranks, r)));
    }
    Tensor back = all_to_all(comm, ops::concat(parts, 1), 1, 2);  // [B, S, H, Dh]
    return heads == c_.heads ? back : ops::slice(back, 2, 0, c_.heads);
  }

  CogVideoXConfig c_;
  LoadOptions opts_;
  Tensor patch_w_, patch_b_, learned_pos_;
  Linear text_proj_;
  TimestepMlp time_embedding_, ofs_embedding_;
  std::vector<Block> blocks_;
  LayerNorm norm_final_, norm_out_;
  Linear norm_out_linear_, proj_out_;
  Linear modulation_;  // every block's norm1 and norm2 projections, stacked
  Tensor pos_cache_;
  int64_t pos_key_ = -1;
  RopeTables rope_cache_;
  int64_t rope_key_ = -1;
};

}  // namespace

SiteLayout cogvideox_site_layout(const JsonConfig& config) {
  return layout_of(parse_cogvideox_config(config));
}

ForwardFootprint cogvideox_footprint(const JsonConfig& config, const ForwardShape& shape) {
  const CogVideoXConfig c = parse_cogvideox_config(config);
  if (shape.latents.size() != 5) fail("CogVideoX: latents must be [B, F, C, H, W], got ", shape_str(shape.latents));
  const int64_t bsz = shape.latents[0], p = c.patch_size, pt = std::max(1, c.patch_size_t);
  const int64_t video = shape_numel({shape.latents[1] / pt, shape.latents[3] / p, shape.latents[4] / p});
  const int64_t tokens = shape.text_length + video, d = c.inner();
  const char* what = "CogVideoX activations";
  ForwardFootprint f;
  // Inside a block, attention holds the joint states, their norm, the stacked
  // q/k/v, q and k after norm and rotary, the attention's output and its
  // projection, and (on the CPU) regrouped copies of k and v: eleven
  // [B, L + N, D]; the feed-forward at most five and its own width. The
  // positions (sincos [N, D] or rotary cos/sin [N, Dh] in f32) persist.
  const int64_t widths = std::max(11 * d, 5 * d + feed_forward_width(c.activation, 4 * d, shape.device));
  f.activations = token_bytes(bsz, tokens, widths, shape.dtype, 1, what);
  f.activations += c.rotary ? token_bytes(1, video, 2 * c.head_dim, DType::f32, 1, what)
                            : token_bytes(1, video, d, shape.dtype, 1, what);
  f.site[size_t(SiteKind::spatial)] = token_bytes(bsz, tokens, d, shape.dtype, 1, what);
  return f;
}

std::unique_ptr<DiffusionTransformer> load_cogvideox(const JsonConfig& config, const WeightSource& weights,
                                                     const LoadOptions& opts) {
  return std::make_unique<CogVideoX>(config, weights, opts);
}

PAB_REGISTER(TransformerFamily, "CogVideoXTransformer3DModel", {load_cogvideox, cogvideox_site_layout, cogvideox_footprint});

}  // namespace pab
