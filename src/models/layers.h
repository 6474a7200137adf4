// Weight-holding building blocks shared by the DiT models: each loads its
// tensors from a checkpoint by prefix, checking shapes, and applies itself
// through ops. A missing or misshapen tensor is an error naming the checkpoint.
#pragma once

#include <optional>
#include <string>

#include "backend/ops.h"
#include "io/safetensors.h"
#include "models/embeddings.h"
#include "models/transformer.h"

namespace pab {

// Loads tensors of one weight source in the compute dtype on the compute device.
class WeightLoader {
 public:
  WeightLoader(const WeightSource& source, const LoadOptions& opts) : ckpt_(source), opts_(opts) {}
  Tensor get(const std::string& name, const Shape& shape) const { return ckpt_.load(name, shape, opts_.dtype, opts_.device); }
  bool has(const std::string& name) const { return ckpt_.has(name); }
  const LoadOptions& options() const { return opts_; }
  const WeightSource& source() const { return ckpt_; }

 private:
  const WeightSource& ckpt_;
  LoadOptions opts_;
};

struct Linear {
  Tensor w, b;  // w [out, in], b [out] or undefined
  Linear() = default;
  Linear(const WeightLoader& wl, const std::string& prefix, int64_t in, int64_t out, bool bias = true);
  Tensor operator()(const Tensor& x) const { return ops::linear(x, w, b.defined() ? &b : nullptr); }
};

// Linear layers of the same shape applied to one input (q, k and v
// projections), their weights stacked so that they run as one batched GEMM:
// w [G, out, in], b [G, out]. The layers keep views of the stacked weights.
struct StackedLinear {
  Tensor w, b;
  StackedLinear() = default;
  // All layers with a bias or none.
  explicit StackedLinear(const std::vector<Linear*>& layers);
  // One output per layer: [G, ..., out]
  Tensor operator()(const Tensor& x) const { return ops::linear_stacked(x, w, b.defined() ? &b : nullptr); }
};

// diffusers' Attention module's projections: to_q, to_k, to_v, to_out.0 (square, dim x dim).
struct Attention {
  Linear to_q, to_k, to_v, to_out;
  StackedLinear qkv;  // with `stack`: to_q, to_k, to_v as one GEMM (self attention)
  Attention() = default;
  Attention(const WeightLoader& wl, const std::string& prefix, int64_t dim, bool bias, bool stack)
      : to_q(wl, prefix + ".to_q", dim, dim, bias),
        to_k(wl, prefix + ".to_k", dim, dim, bias),
        to_v(wl, prefix + ".to_v", dim, dim, bias),
        to_out(wl, prefix + ".to_out.0", dim, dim, true) {
    if (stack) qkv = StackedLinear({&to_q, &to_k, &to_v});
  }
};

struct LayerNorm {
  Tensor w, b;  // undefined when not elementwise-affine
  float eps = 1e-5f;
  LayerNorm() = default;
  LayerNorm(const WeightLoader& wl, const std::string& prefix, int64_t dim, float eps, bool affine = true,
            bool bias = true);
  Tensor operator()(const Tensor& x) const {
    return ops::layer_norm(x, w.defined() ? &w : nullptr, b.defined() ? &b : nullptr, eps);
  }
  // (*this)(x) * (1 + scale [B, C]) + shift [B, C] for x [B, S, C]
  Tensor modulated(const Tensor& x, const Tensor& shift, const Tensor& scale) const {
    return ops::norm_modulate(x, w.defined() ? &w : nullptr, b.defined() ? &b : nullptr, eps, shift, scale);
  }
  // rope((*this)(x)) over x [B, S, H, D], rotating tokens >= start
  Tensor with_rope(const Tensor& x, const RopeTables& rope, int64_t start) const {
    return ops::norm_rope(x, w.defined() ? &w : nullptr, b.defined() ? &b : nullptr, eps, rope.cos, rope.sin, start);
  }
  // x + gate * y (gates [B, C] per segment as below; none: x + y) and that
  // sum through modulated_split: {sum, normed}, in one pass where the backend
  // fuses the residual add with the norm.
  std::pair<Tensor, Tensor> add_modulated_split(const Tensor& x, const Tensor& y, int64_t split, const Tensor* gate_a,
                                                const Tensor* gate_b, const Tensor& shift_a, const Tensor& scale_a,
                                                const Tensor& shift_b, const Tensor& scale_b) const {
    return ops::add_norm_modulate_split(x, y, split, gate_a, gate_b, w.defined() ? &w : nullptr,
                                        b.defined() ? &b : nullptr, eps, shift_a, scale_a, shift_b, scale_b);
  }
  // As modulated, with tokens [0, split) modulated by the *_a vectors and the rest by *_b.
  Tensor modulated_split(const Tensor& x, int64_t split, const Tensor& shift_a, const Tensor& scale_a,
                         const Tensor& shift_b, const Tensor& scale_b) const {
    return ops::norm_modulate_split(x, w.defined() ? &w : nullptr, b.defined() ? &b : nullptr, eps, split, shift_a,
                                    scale_a, shift_b, scale_b);
  }
};

// diffusers' FeedForward: net.0 (activation with its projection), net.2 (output).
struct FeedForward {
  // diffusers' activation_fn: gelu, gelu-approximate, geglu, geglu-approximate
  // (which diffusers maps to ApproximateGELU, the sigmoid form, ungated)
  enum class Act { gelu, gelu_tanh, geglu, gelu_sigmoid };
  Linear proj, out;
  Act act = Act::gelu_tanh;
  FeedForward() = default;
  FeedForward(const WeightLoader& wl, const std::string& prefix, int64_t dim, int64_t inner, Act act, bool bias = true);
  Tensor operator()(const Tensor& x) const;
  // Parses a diffusers `activation_fn` value; fails naming `where`.
  static Act parse(const std::string& name, const std::string& where);
};

// Memory estimates of the DiT families (their *_footprint functions): the
// bytes of `count` tensors [batch, tokens, width] in `dtype`, with overflow
// checked (a size beyond 64 bits fails naming `what`).
uint64_t token_bytes(int64_t batch, int64_t tokens, int64_t width, DType dtype, int64_t count, const char* what);
// The feed-forward's own live width at its peak for a hidden width `inner`:
// the projection's output and its activation (one tensor on the GPU, whose
// GEMM applies the GELU, two on the CPU), more where gated.
int64_t feed_forward_width(FeedForward::Act act, int64_t inner, Device device);

}  // namespace pab
