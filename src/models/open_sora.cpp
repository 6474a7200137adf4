// STDiT3 (Open-Sora 1.2) as the original PAB code (VideoSys) runs it: per
// layer a spatial block (self attention over each frame's patches) then a
// temporal block (self attention over each patch's frames, 1D rotary
// positions with the checkpoint's frequencies), each with QK RMS norm, cross
// attention to the projected caption and an MLP, modulated from a shared
// adaLN-single table by the timestep and fps embeddings. Positions are 2D
// sin-cos scaled by the video resolution; learned sigma doubles the output
// channels. Weights use the transformers layout (config.json with
// `architectures: ["STDiT3"]`, model.safetensors).
//
// Sites, each covering what the original broadcasts:
//   spatial_blocks[i] norm1, modulation, attention, gate  -> {spatial, i}
//   temporal_blocks[i] the same                            -> {temporal, i}
//   spatial_blocks[i].cross_attn                          -> {cross, 2i}
//   temporal_blocks[i].cross_attn                         -> {cross, 2i + 1}
//   blocks[i] norm2, modulation, MLP, gate                 -> {mlp_spatial, i} / {mlp_temporal, i}
// The spatial and temporal sites return the gated attention output, so a
// broadcast step skips the norm, modulation and gate as well (the original
// keeps `gate * attention`). Cross blocks are numbered in call order because
// both blocks of a layer have their own cross attention and call counter.
//
// Sequence parallel (LoadOptions::comm with several ranks) as Latte's: each
// rank holds a share of the patched frames; temporal attention trades it for
// a share of the spatial positions and back (see models/latte.cpp).
#include <cmath>

#include "core/registry.h"
#include "io/config.h"
#include "models/embeddings.h"
#include "models/layers.h"
#include "models/open_sora.h"
#include "parallel/comm.h"

namespace pab {

StDiT3Config parse_stdit3_config(const JsonConfig& j) {
  StDiT3Config c;
  c.hidden = j.get_or("hidden_size", c.hidden);
  c.depth = j.get_or("depth", c.depth);
  c.heads = j.get_or("num_heads", c.heads);
  c.in_channels = j.get_or("in_channels", c.in_channels);
  const bool pred_sigma = j.get_or("pred_sigma", true);
  c.out_channels = pred_sigma ? 2 * c.in_channels : c.in_channels;
  c.caption_channels = j.get_or("caption_channels", c.caption_channels);
  c.max_text_len = j.get_or("model_max_length", c.max_text_len);
  c.qk_norm = j.get_or("qk_norm", c.qk_norm);
  c.input_sq_size = j.get_or("input_sq_size", c.input_sq_size);
  const double mlp_ratio = j.get_or("mlp_ratio", 4.0);

  j.require_positive({
      {"hidden_size", c.hidden},
      {"depth", c.depth},
      {"num_heads", c.heads},
      {"in_channels", c.in_channels},
      {"caption_channels", c.caption_channels},
      {"model_max_length", c.max_text_len},
  });
  if (j.has("patch_size")) {
    std::vector<int> p = j.get<std::vector<int>>("patch_size");
    if (p.size() != 3 || p[0] < 1 || p[1] < 1 || p[2] < 1)
      j.unsupported("patch_size", "expected [t, h, w] with every entry >= 1");
    c.patch = {p[0], p[1], p[2]};
  }
  if (!(mlp_ratio > 0) || !(mlp_ratio * c.hidden >= 1)) j.unsupported("mlp_ratio", "must be positive");
  c.mlp_hidden = int(c.hidden * mlp_ratio);  // int(hidden_size * mlp_ratio), as timm's Mlp is built
  if (!(c.input_sq_size > 0)) j.unsupported("input_sq_size", "must be positive");
  if (c.hidden % c.heads != 0) j.unsupported("num_heads", cat("must divide hidden_size ", c.hidden));
  if (c.head_dim() % 2 != 0) j.unsupported("num_heads", "rotary positions need an even head size");
  if (c.hidden % 4 != 0) j.unsupported("hidden_size", "2D sin-cos positions need a multiple of 4");
  // The caption is then already embedded and its lengths are passed as the mask.
  if (j.get_or("skip_y_embedder", false)) j.unsupported("skip_y_embedder", "pre-embedded captions are not supported");
  return c;
}

namespace {

// Cross attention runs in spatial and temporal blocks alike: block i's are
// cross sites 2i (spatial) and 2i + 1 (temporal), as VideoSys counts them.
SiteLayout layout_of(const StDiT3Config& c) {
  return {{{SiteKind::spatial, c.depth},
           {SiteKind::temporal, c.depth},
           {SiteKind::cross, 2 * c.depth},
           {SiteKind::mlp_spatial, c.depth},
           {SiteKind::mlp_temporal, c.depth},
           {SiteKind::block, 2 * c.depth},  // in the order they run: spatial i is 2i, temporal i 2i + 1
           {SiteKind::step, 1}}};
}

struct SelfAttention {  // OpenSoraAttention: qkv, q_norm, k_norm (RMS), proj
  Linear q, k, v, proj;
  Tensor q_norm, k_norm;  // [Dh], undefined without QK norm
};

struct CrossAttention {  // OpenSoraMultiHeadCrossAttention: q_linear, kv_linear, proj
  Linear q, k, v, proj;
};

// STDiT3Block
struct Block {
  Tensor scale_shift_table;  // [6, D]
  SelfAttention attn;
  CrossAttention cross;
  Linear fc1, fc2;  // timm Mlp with tanh GELU
};

// Rows [index * n, (index + 1) * n) of a stacked projection: qkv and kv_linear
// keep q, k, v one after another along the output axis.
Linear rows_of(const Linear& fused, int index, int64_t n) {
  Linear l;
  l.w = ops::slice(fused.w, 0, index * n, (index + 1) * n);
  if (fused.b.defined()) l.b = ops::slice(fused.b, 0, index * n, (index + 1) * n);
  return l;
}

class StDiT3 final : public DiffusionTransformer {
 public:
  StDiT3(const JsonConfig& j, const WeightSource& ckpt, const LoadOptions& opts) : c_(parse_stdit3_config(j)), opts_(opts) {
    WeightLoader wl(ckpt, opts);
    const int64_t d = c_.hidden;
    const auto [pt, ph, pw] = c_.patch;
    patch_w_ = wl.get("x_embedder.proj.weight", {d, c_.in_channels, pt, ph, pw});
    patch_b_ = wl.get("x_embedder.proj.bias", {d});
    t_1_ = Linear(wl, "t_embedder.mlp.0", kFreqDim, d);
    t_2_ = Linear(wl, "t_embedder.mlp.2", d, d);
    fps_1_ = Linear(wl, "fps_embedder.mlp.0", kFreqDim, d);
    fps_2_ = Linear(wl, "fps_embedder.mlp.2", d, d);
    t_block_ = Linear(wl, "t_block.1", d, 6 * d);
    y_1_ = Linear(wl, "y_embedder.y_proj.fc1", c_.caption_channels, d);
    y_2_ = Linear(wl, "y_embedder.y_proj.fc2", d, d);
    null_text_ = wl.get("y_embedder.y_embedding", {c_.max_text_len, c_.caption_channels});
    // RotaryEmbedding keeps its frequencies as a parameter; without it, its
    // initial values theta^(-2i/dim).
    const int64_t dh = c_.head_dim();
    if (wl.has("rope.freqs")) {
      rope_freqs_ = wl.get("rope.freqs", {dh / 2}).to(DType::f32).to_vector();
    } else {
      for (int64_t i = 0; i < dh / 2; ++i)
        rope_freqs_.push_back(float(1.0 / std::pow(10000.0, double(2 * i) / double(dh))));
    }
    for (int i = 0; i < c_.depth; ++i) {
      spatial_.push_back(load_block(wl, cat("spatial_blocks.", i)));
      temporal_.push_back(load_block(wl, cat("temporal_blocks.", i)));
    }
    final_table_ = wl.get("final_layer.scale_shift_table", {2, d});
    final_linear_ = Linear(wl, "final_layer.linear", d, int64_t(pt) * ph * pw * c_.out_channels);
  }

  std::string class_name() const override { return "STDiT3"; }
  LatentLayout layout() const override { return LatentLayout::bcfhw; }
  int in_channels() const override { return c_.in_channels; }
  int out_channels() const override { return c_.out_channels; }
  bool sequence_parallel() const override { return true; }
  SiteLayout site_layout() const override { return layout_of(c_); }
  Tensor null_text() const override { return null_text_; }

  Tensor forward_pass(const TransformerInputs& in, const Sites* sites) override {
    const Tensor& x = in.latents;
    if (x.rank() != 5 || x.dim(1) != c_.in_channels)
      fail("STDiT3: latents must be [B, ", c_.in_channels, ", F, H, W], got ", x.desc());
    const int64_t bsz = x.dim(0), frames = x.dim(2), h = x.dim(3), w = x.dim(4);
    if (in.text.rank() != 3 || in.text.dim(0) != bsz || in.text.dim(2) != c_.caption_channels)
      fail("STDiT3: text embeddings must be [", bsz, ", L, ", c_.caption_channels, "], got ", in.text.desc());
    const int64_t text_len = in.text.dim(1);
    if (in.text_mask.defined() && in.text_mask.shape() != Shape{bsz, text_len})
      fail("STDiT3: text mask must be [", bsz, ", ", text_len, "], got ", in.text_mask.desc());
    if (!(in.height_px > 0 && in.width_px > 0))
      fail("STDiT3: the video height and width in pixels are needed (they scale the positions), got ", in.height_px,
           "x", in.width_px);
    if (!(in.fps > 0)) fail("STDiT3: the frame rate is needed (the model is conditioned on it), got ", in.fps);
    const auto [pt, ph, pw] = c_.patch;
    const int64_t d = c_.hidden;

    // Patch embedding, zero-padding each axis up to a multiple of the patch:
    // [B, C, F, H, W] -> [B, D, T, gh, gw] -> [B, T*gh*gw, D]
    auto up = [](int64_t n, int p) { return (n + p - 1) / p * p; };
    Tensor padded = x;
    if (up(frames, pt) != frames || up(h, ph) != h || up(w, pw) != w)
      padded = ops::pad(x, {{0, 0}, {0, 0}, {0, up(frames, pt) - frames}, {0, up(h, ph) - h}, {0, up(w, pw) - w}});
    Tensor hs = ops::conv3d(padded, patch_w_, &patch_b_, {pt, ph, pw});
    const int64_t nt = hs.dim(2), gh = hs.dim(3), gw = hs.dim(4), s = gh * gw, n = nt * s;
    hs = ops::permute(hs.reshape({bsz, d, n}), {0, 2, 1});  // [B, N, D]
    const double scale = std::sqrt(in.height_px * in.width_px) / c_.input_sq_size;
    hs = ops::add(hs.reshape({bsz, nt, s, d}), positions(gh, gw, scale));  // [B, T, S, D]
    // With several ranks each keeps its share of the (patched) frames.
    Communicator* comm = parallel();
    const Shard mine = comm ? shard_of(nt, comm->size(), comm->rank()) : Shard{nt, nt, 0, nt};
    if (comm) hs = take_shard(hs, 1, mine);
    hs = hs.reshape({bsz, mine.local * s, d});

    // Timestep and fps embeddings: one value for the whole batch, so every
    // modulation vector is [1, D].
    Tensor t_emb = t_2_(ops::silu(t_1_(host(timestep_embedding({in.timestep}, kFreqDim, true, 0), {1, kFreqDim}))));
    Tensor fps_emb = fps_2_(ops::silu(fps_1_(host(timestep_embedding({in.fps}, kFreqDim, true, 0), {1, kFreqDim}))));
    Tensor t = ops::add(t_emb, fps_emb);                    // [1, D]
    Tensor t_mod = t_block_(ops::silu(t)).reshape({6, d});  // [6, D]
    Tensor caption = y_2_(ops::gelu_tanh(y_1_(in.text)));   // [B, L, D]
    Tensor key_mask;
    if (in.text_mask.defined()) key_mask = in.text_mask.to(DType::f32).to(opts_.device);
    const RopeTables rope = temporal_rope(nt);

    const Geometry g{bsz, mine.local, s, nt};
    for (int i = 0; i < c_.depth; ++i) {
      hs = run_site1(sites, {SiteKind::block, 2 * i}, hs, [&] {
        return block_forward(spatial_[size_t(i)], i, false, hs, t_mod, caption, key_mask, rope, g, sites);
      });
      hs = run_site1(sites, {SiteKind::block, 2 * i + 1}, hs, [&] {
        return block_forward(temporal_[size_t(i)], i, true, hs, t_mod, caption, key_mask, rope, g, sites);
      });
    }

    auto final_mod = ops::chunk(ops::add(final_table_, t), 2, 0);  // shift, scale: [1, D]
    hs = ops::norm_modulate(one_sequence(hs), nullptr, nullptr, kNormEps, final_mod[0], final_mod[1])
             .reshape(hs.shape());
    Tensor out = final_linear_(hs);  // [B, N, pt*ph*pw*Co]
    if (comm) {
      const int64_t k = out.dim(2);
      out = ops::slice(all_gather(*comm, out.reshape({bsz, mine.local, s * k}), 1), 1, 0, nt).reshape({bsz, n, k});
    }
    const int64_t co = c_.out_channels;
    // [B, T, gh, gw, pt, ph, pw, Co] -> [B, Co, T, pt, gh, ph, gw, pw]
    out = ops::permute(out.reshape({bsz, nt, gh, gw, pt, ph, pw, co}), {0, 7, 1, 4, 2, 5, 3, 6});
    out = out.reshape({bsz, co, nt * pt, gh * ph, gw * pw});
    if (nt * pt != frames) out = ops::slice(out, 2, 0, frames);
    if (gh * ph != h) out = ops::slice(out, 3, 0, h);
    if (gw * pw != w) out = ops::slice(out, 4, 0, w);
    return out;
  }

 private:
  static constexpr int kFreqDim = 256;
  static constexpr float kNormEps = 1e-6f;

  struct Geometry {
    int64_t batch, frames, patches;  // tokens [B, frames * patches, D], frame-major (this rank's frames)
    int64_t all_frames;              // over all ranks
  };

  Communicator* parallel() const { return opts_.comm && opts_.comm->size() > 1 ? opts_.comm : nullptr; }

  Block load_block(const WeightLoader& wl, const std::string& prefix) const {
    const int64_t d = c_.hidden, dh = c_.head_dim();
    Block b;
    b.scale_shift_table = wl.get(prefix + ".scale_shift_table", {6, d});
    Linear qkv(wl, prefix + ".attn.qkv", d, 3 * d);
    b.attn.q = rows_of(qkv, 0, d);
    b.attn.k = rows_of(qkv, 1, d);
    b.attn.v = rows_of(qkv, 2, d);
    b.attn.proj = Linear(wl, prefix + ".attn.proj", d, d);
    if (c_.qk_norm) {
      b.attn.q_norm = wl.get(prefix + ".attn.q_norm.weight", {dh});
      b.attn.k_norm = wl.get(prefix + ".attn.k_norm.weight", {dh});
    }
    b.cross.q = Linear(wl, prefix + ".cross_attn.q_linear", d, d);
    Linear kv(wl, prefix + ".cross_attn.kv_linear", d, 2 * d);
    b.cross.k = rows_of(kv, 0, d);
    b.cross.v = rows_of(kv, 1, d);
    b.cross.proj = Linear(wl, prefix + ".cross_attn.proj", d, d);
    b.fc1 = Linear(wl, prefix + ".mlp.fc1", d, c_.mlp_hidden);
    b.fc2 = Linear(wl, prefix + ".mlp.fc2", c_.mlp_hidden, d);
    return b;
  }

  // The modulation is [1, D] for every batch entry, so x [B, N, D] is
  // treated as one sequence: [B, N, D] -> [1, B*N, D].
  static Tensor one_sequence(const Tensor& x) { return x.reshape({1, x.dim(0) * x.dim(1), x.dim(2)}); }
  static Tensor gated(const Tensor& gate, const Tensor& y) { return ops::mul(y, gate.reshape({1, 1, y.dim(-1)})); }

  Tensor block_forward(const Block& b, int index, bool temporal, Tensor hs, const Tensor& t_mod, const Tensor& caption,
                       const Tensor& key_mask, const RopeTables& rope, const Geometry& g, const Sites* sites) const {
    // [6, D] -> shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp: [1, D] each
    auto m = ops::chunk(ops::add(b.scale_shift_table, t_mod), 6, 0);
    const int64_t d = c_.hidden;
    Tensor attn = run_site1(sites, {temporal ? SiteKind::temporal : SiteKind::spatial, index}, hs, [&] {
      Tensor normed = ops::norm_modulate(one_sequence(hs), nullptr, nullptr, kNormEps, m[0], m[1]);
      Tensor o;
      if (temporal) {
        // [B, T, S, D]; with several ranks all frames of a share of the positions
        Tensor grid = normed.reshape({g.batch, g.frames, g.patches, d});
        if (Communicator* comm = parallel()) grid = frames_to_positions(*comm, grid, g.all_frames);
        const int64_t t = grid.dim(1), m = grid.dim(2);
        // [B, T, S, D] -> [B, S, T, D] -> [B*S, T, D]
        Tensor seqs = ops::permute(grid, {0, 2, 1, 3});
        o = self_attention(b.attn, seqs.reshape({g.batch * m, t, d}), &rope);
        // [B*S, T, D] -> [B, S, T, D] -> [B, T, S, D]
        o = ops::permute(o.reshape({g.batch, m, t, d}), {0, 2, 1, 3});
        if (Communicator* comm = parallel()) o = positions_to_frames(*comm, o, g.patches);
      } else {
        o = self_attention(b.attn, normed.reshape({g.batch * g.frames, g.patches, d}), nullptr);  // [B*T, S, D]
      }
      return gated(m[2], o.reshape(hs.shape()));
    });
    hs = ops::add(hs, attn);

    Tensor cross = run_site1(sites, {SiteKind::cross, 2 * index + (temporal ? 1 : 0)}, hs,
                             [&] { return cross_attention(b.cross, hs, caption, key_mask); });
    hs = ops::add(hs, cross);

    Tensor mlp = run_site1(sites, {temporal ? SiteKind::mlp_temporal : SiteKind::mlp_spatial, index}, hs, [&] {
      Tensor normed = ops::norm_modulate(one_sequence(hs), nullptr, nullptr, kNormEps, m[3], m[4]).reshape(hs.shape());
      Tensor act = ops::linear_act(normed, b.fc1.w, &b.fc1.b, Unary::gelu_tanh);
      return gated(m[5], b.fc2(act));
    });
    return ops::add(hs, mlp);
  }

  // x [S, T, D]: RMS-normalised queries and keys per head, rotary positions
  // over T when `rope` is given.
  Tensor self_attention(const SelfAttention& a, const Tensor& x, const RopeTables* rope) const {
    const Shape heads = {x.dim(0), x.dim(1), c_.heads, c_.head_dim()};
    Tensor q = a.q(x).reshape(heads), k = a.k(x).reshape(heads), v = a.v(x).reshape(heads);
    if (a.q_norm.defined()) {
      q = ops::rms_norm(q, &a.q_norm, kNormEps);
      k = ops::rms_norm(k, &a.k_norm, kNormEps);
    }
    if (rope) {
      q = ops::rope(q, rope->cos, rope->sin);
      k = ops::rope(k, rope->cos, rope->sin);
    }
    AttentionArgs args;
    args.scale = float(1.0 / std::sqrt(double(c_.head_dim())));
    return a.proj(ops::attention(q, k, v, args).reshape(x.shape()));
  }

  // Every token of a batch entry attends to that entry's caption:
  // hs [B, N, D], caption [B, L, D], key mask [B, L].
  Tensor cross_attention(const CrossAttention& a, const Tensor& hs, const Tensor& caption,
                         const Tensor& key_mask) const {
    const int64_t bsz = hs.dim(0), l = caption.dim(1);
    Tensor q = a.q(hs).reshape({bsz, hs.dim(1), c_.heads, c_.head_dim()});
    Tensor k = a.k(caption).reshape({bsz, l, c_.heads, c_.head_dim()});
    Tensor v = a.v(caption).reshape({bsz, l, c_.heads, c_.head_dim()});
    AttentionArgs args;
    args.scale = float(1.0 / std::sqrt(double(c_.head_dim())));
    if (key_mask.defined()) args.key_mask = &key_mask;
    return a.proj(ops::attention(q, k, v, args).reshape(hs.shape()));
  }

  Tensor host(const std::vector<float>& v, const Shape& shape) const {
    return Tensor::from_vector(v, shape).to(opts_.dtype).to(opts_.device);
  }

  // OpenSoraPositionEmbedding2D: [gh*gw, D], token r*gw + c. Positions
  // arange(n) / scale * (base_size / n) in float32 with base_size =
  // round(sqrt(gh*gw)); the first half of a row encodes the column c, the
  // second the row r (its meshgrid puts w first), each as sin then cos of
  // position x 10000^(-2i/(D/2)).
  Tensor positions(int64_t gh, int64_t gw, double scale) {
    const double base = std::nearbyint(std::sqrt(double(gh * gw)));
    if (pos_.defined() && pos_key_ == std::array<double, 3>{double(gh), double(gw), scale}) return pos_;
    const int64_t d = c_.hidden, half = d / 2, quarter = d / 4;
    std::vector<float> inv_freq(static_cast<size_t>(quarter));
    for (int64_t i = 0; i < quarter; ++i)
      inv_freq[size_t(i)] = 1.0f / float(std::pow(10000.0, double(float(2 * i) / float(half))));
    auto grid = [&](int64_t n) {
      std::vector<float> g(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) g[size_t(i)] = float(i) / float(scale) * float(base / double(n));
      return g;
    };
    const std::vector<float> rows = grid(gh), cols = grid(gw);
    std::vector<float> table(static_cast<size_t>(gh * gw * d));
    for (int64_t r = 0; r < gh; ++r) {
      for (int64_t c = 0; c < gw; ++c) {
        float* row = table.data() + (r * gw + c) * d;
        for (int64_t i = 0; i < quarter; ++i) {
          const float a = cols[size_t(c)] * inv_freq[size_t(i)], b = rows[size_t(r)] * inv_freq[size_t(i)];
          row[i] = float(std::sin(double(a)));
          row[quarter + i] = float(std::cos(double(a)));
          row[half + i] = float(std::sin(double(b)));
          row[half + quarter + i] = float(std::cos(double(b)));
        }
      }
    }
    pos_ = host(table, {gh * gw, d});
    pos_key_ = {double(gh), double(gw), scale};
    return pos_;
  }

  // rotary_embedding_torch over frame indices: angle t * freqs[i] on the
  // interleaved pair (2i, 2i+1); [T, Dh].
  RopeTables temporal_rope(int64_t frames) {
    if (rope_.cos.defined() && rope_.cos.dim(0) == frames) return rope_;
    const int64_t dh = c_.head_dim();
    std::vector<float> cos(static_cast<size_t>(frames * dh)), sin(cos.size());
    for (int64_t t = 0; t < frames; ++t) {
      for (int64_t i = 0; i < dh / 2; ++i) {
        const double a = double(float(t) * rope_freqs_[size_t(i)]);
        const size_t at = size_t(t * dh + 2 * i);
        cos[at] = cos[at + 1] = float(std::cos(a));
        sin[at] = sin[at + 1] = float(std::sin(a));
      }
    }
    // f32: applied in float
    rope_ = {Tensor::from_vector(cos, {frames, dh}).to(opts_.device),
             Tensor::from_vector(sin, {frames, dh}).to(opts_.device)};
    return rope_;
  }

  StDiT3Config c_;
  LoadOptions opts_;
  Tensor patch_w_, patch_b_;
  Linear t_1_, t_2_, fps_1_, fps_2_, t_block_, y_1_, y_2_, final_linear_;
  Tensor null_text_, final_table_;
  std::vector<float> rope_freqs_;
  std::vector<Block> spatial_, temporal_;
  Tensor pos_;
  std::array<double, 3> pos_key_{};
  RopeTables rope_;
};

}  // namespace

SiteLayout open_sora_site_layout(const JsonConfig& config) {
  return layout_of(parse_stdit3_config(config));
}

ForwardFootprint open_sora_footprint(const JsonConfig& config, const ForwardShape& shape) {
  const StDiT3Config c = parse_stdit3_config(config);
  if (shape.latents.size() != 5) fail("STDiT3: latents must be [B, C, F, H, W], got ", shape_str(shape.latents));
  const int64_t bsz = shape.latents[0], d = c.hidden;
  const int64_t tokens =
      shape_numel({shape.latents[2] / c.patch[0], shape.latents[3] / c.patch[1], shape.latents[4] / c.patch[2]});
  const char* what = "STDiT3 activations";
  ForwardFootprint f;
  // As Latte's blocks: ten [B, T*S, D] around attention, four and the MLP's
  // hidden width around the MLP; the projected caption persists.
  const int64_t widths = std::max<int64_t>(10 * d, 4 * d + c.mlp_hidden);
  f.activations = token_bytes(bsz, tokens, widths, shape.dtype, 1, what) +
                  token_bytes(bsz, shape.text_length, 2 * d, shape.dtype, 1, what);
  for (SiteKind k : layout_of(c).site_kinds()) f.site[size_t(k)] = token_bytes(bsz, tokens, d, shape.dtype, 1, what);
  return f;
}

std::unique_ptr<DiffusionTransformer> load_open_sora(const JsonConfig& config, const WeightSource& weights,
                                                     const LoadOptions& opts) {
  return std::make_unique<StDiT3>(config, weights, opts);
}

PAB_REGISTER(TransformerFamily, "STDiT3", {load_open_sora, open_sora_site_layout, open_sora_footprint});

}  // namespace pab
