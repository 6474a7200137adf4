// Weight-holding building blocks shared by the DiT models: each loads its
// tensors from a checkpoint by prefix, checking shapes, and applies itself
// through ops. A missing or misshapen tensor is an error naming the checkpoint.
#pragma once

#include <optional>
#include <string>

#include "backend/ops.h"
#include "io/safetensors.h"
#include "models/transformer.h"

namespace pab {

// Loads tensors of one weight source in the compute dtype on the compute device.
class WeightLoader {
 public:
  WeightLoader(const WeightSource& source, const LoadOptions& opts) : ckpt_(source), opts_(opts) {}
  Tensor get(const std::string& name, const Shape& shape) const { return ckpt_.load(name, shape, opts_.dtype, opts_.device); }
  // Loads `name` if present (with the expected shape), else an undefined tensor.
  Tensor maybe(const std::string& name, const Shape& shape) const {
    return ckpt_.has(name) ? get(name, shape) : Tensor();
  }
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
  int64_t out_features() const { return w.dim(0); }
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
};

// diffusers' FeedForward: net.0 (activation with its projection), net.2 (output).
struct FeedForward {
  enum class Act { gelu, gelu_tanh, geglu, geglu_tanh };
  Linear proj, out;
  Act act = Act::gelu_tanh;
  FeedForward() = default;
  FeedForward(const WeightLoader& wl, const std::string& prefix, int64_t dim, int64_t inner, Act act, bool bias = true);
  Tensor operator()(const Tensor& x) const;
  // Parses a diffusers `activation_fn` value; fails naming `where`.
  static Act parse(const std::string& name, const std::string& where);
};

}  // namespace pab
