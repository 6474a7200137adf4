#include "models/layers.h"

namespace pab {

Linear::Linear(const WeightLoader& wl, const std::string& prefix, int64_t in, int64_t out, bool bias) {
  w = wl.get(prefix + ".weight", {out, in});
  if (bias) b = wl.get(prefix + ".bias", {out});
}

StackedLinear::StackedLinear(const std::vector<Linear*>& layers) {
  PAB_ASSERT(!layers.empty(), "StackedLinear of no layers");
  const Shape shape = layers[0]->w.shape();
  const bool bias = layers[0]->b.defined();
  std::vector<Tensor> ws, bs;
  for (const Linear* l : layers) {
    PAB_ASSERT(l->w.shape() == shape && l->b.defined() == bias, "StackedLinear: layers differ (", l->w.desc(), ")");
    ws.push_back(l->w.reshape({1, shape[0], shape[1]}));
    if (bias) bs.push_back(l->b.reshape({1, shape[0]}));
  }
  w = ops::concat(ws, 0);
  if (bias) b = ops::concat(bs, 0);
  for (size_t i = 0; i < layers.size(); ++i) {
    layers[i]->w = w.narrow0(int64_t(i), 1).reshape(shape);
    if (bias) layers[i]->b = b.narrow0(int64_t(i), 1).reshape({shape[0]});
  }
}

LayerNorm::LayerNorm(const WeightLoader& wl, const std::string& prefix, int64_t dim, float eps_, bool affine,
                     bool bias)
    : eps(eps_) {
  if (affine) {
    w = wl.get(prefix + ".weight", {dim});
    if (bias) b = wl.get(prefix + ".bias", {dim});
  }
}

FeedForward::FeedForward(const WeightLoader& wl, const std::string& prefix, int64_t dim, int64_t inner, Act a,
                         bool bias)
    : act(a) {
  bool gated = a == Act::geglu;
  proj = Linear(wl, prefix + ".net.0.proj", dim, gated ? 2 * inner : inner, bias);
  out = Linear(wl, prefix + ".net.2", inner, dim, bias);
}

Tensor FeedForward::operator()(const Tensor& x) const {
  const Tensor* bias = proj.b.defined() ? &proj.b : nullptr;
  Tensor h;
  switch (act) {
    case Act::gelu: h = ops::linear_act(x, proj.w, bias, Unary::gelu_erf); break;
    case Act::gelu_tanh: h = ops::linear_act(x, proj.w, bias, Unary::gelu_tanh); break;
    case Act::geglu: {
      h = proj(x);
      auto parts = ops::chunk(h, 2, -1);  // hidden, gate
      h = ops::mul(parts[0], ops::gelu_erf(parts[1]));
      break;
    }
    case Act::gelu_sigmoid:  // diffusers' ApproximateGELU: x * sigmoid(1.702 x), no gate
      h = proj(x);
      h = ops::mul(h, ops::unary(ops::scale(h, 1.702f), Unary::sigmoid));
      break;
  }
  return out(h);
}

FeedForward::Act FeedForward::parse(const std::string& name, const std::string& where) {
  if (name == "gelu") return Act::gelu;
  if (name == "gelu-approximate") return Act::gelu_tanh;
  if (name == "geglu") return Act::geglu;
  if (name == "geglu-approximate") return Act::gelu_sigmoid;
  fail(where, ": key 'activation_fn': unsupported activation '", name,
       "' (supported: gelu, gelu-approximate, geglu, geglu-approximate)");
}

uint64_t token_bytes(int64_t batch, int64_t tokens, int64_t width, DType dtype, int64_t count, const char* what) {
  uint64_t n = 1;
  for (int64_t f : {batch, tokens, width, count, int64_t(dtype_size(dtype))}) {
    if (f < 0) fail(what, ": a negative size");
    if (__builtin_mul_overflow(n, uint64_t(f), &n)) fail(what, ": a size beyond 2^64 bytes");
  }
  return n;
}

int64_t feed_forward_width(FeedForward::Act act, int64_t inner, Device device) {
  switch (act) {
    case FeedForward::Act::geglu:
      return 4 * inner;  // hidden and gate (2 x inner), the activated gate, their product
    case FeedForward::Act::gelu_sigmoid:
      return 3 * inner;  // projection, scaled copy, sigmoid
    case FeedForward::Act::gelu:
    case FeedForward::Act::gelu_tanh:
      break;
  }
  return device == Device::cpu ? 2 * inner : inner;
}

}  // namespace pab
