// The ops models compose: thin functions dispatching to the backend of the
// input's device (see backend/backend.h for the shapes each op accepts).
#pragma once

#include "backend/backend.h"

namespace pab::ops {

inline Backend& on(const Tensor& x) { return backend(x.device()); }

inline Tensor linear(const Tensor& x, const Tensor& w, const Tensor* b = nullptr) { return on(x).linear(x, w, b); }
inline Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b) { return on(x).linear(x, w, b.defined() ? &b : nullptr); }
inline Tensor linear_stacked(const Tensor& x, const Tensor& w, const Tensor* b) { return on(x).linear_stacked(x, w, b); }
inline Tensor linear_act(const Tensor& x, const Tensor& w, const Tensor* b, Unary act) {
  return on(x).linear_act(x, w, b, act);
}
inline Tensor norm_modulate(const Tensor& x, const Tensor* w, const Tensor* b, float eps, const Tensor& shift,
                            const Tensor& scale) {
  return on(x).norm_modulate(x, w, b, eps, shift, scale);
}
inline Tensor norm_rope(const Tensor& x, const Tensor* w, const Tensor* b, float eps, const Tensor& cos,
                        const Tensor& sin, int64_t start = 0) {
  return on(x).norm_rope(x, w, b, eps, cos, sin, start);
}
inline Tensor matmul(const Tensor& a, const Tensor& b, bool trans_b = false) { return on(a).matmul(a, b, trans_b); }
inline Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionArgs& args) {
  return on(q).attention(q, k, v, args);
}

inline Tensor layer_norm(const Tensor& x, const Tensor* w, const Tensor* b, float eps) {
  return on(x).layer_norm(x, w, b, eps);
}
inline Tensor rms_norm(const Tensor& x, const Tensor* w, float eps) { return on(x).rms_norm(x, w, eps); }
inline Tensor group_norm(const Tensor& x, int groups, const Tensor* w, const Tensor* b, float eps) {
  return on(x).group_norm(x, groups, w, b, eps);
}
inline Tensor softmax(const Tensor& x) { return on(x).softmax(x); }

inline Tensor unary(const Tensor& x, Unary op) { return on(x).unary(x, op); }
inline Tensor silu(const Tensor& x) { return on(x).unary(x, Unary::silu); }
inline Tensor gelu_tanh(const Tensor& x) { return on(x).unary(x, Unary::gelu_tanh); }
inline Tensor gelu_erf(const Tensor& x) { return on(x).unary(x, Unary::gelu_erf); }
inline Tensor add(const Tensor& a, const Tensor& b) { return on(a).binary(a, b, Binary::add); }
inline Tensor sub(const Tensor& a, const Tensor& b) { return on(a).binary(a, b, Binary::sub); }
inline Tensor mul(const Tensor& a, const Tensor& b) { return on(a).binary(a, b, Binary::mul); }
inline Tensor div(const Tensor& a, const Tensor& b) { return on(a).binary(a, b, Binary::div); }
inline Tensor affine(const Tensor& x, float mul, float add) { return on(x).affine(x, mul, add); }
inline Tensor scale(const Tensor& x, float s) { return on(x).affine(x, s, 0.0f); }

inline Tensor permute(const Tensor& x, const std::vector<int>& perm) { return on(x).permute(x, perm); }
inline Tensor concat(const std::vector<Tensor>& parts, int dim) { return on(parts.at(0)).concat(parts, dim); }
inline Tensor slice(const Tensor& x, int dim, int64_t start, int64_t end) { return on(x).slice(x, dim, start, end); }
inline Tensor pad(const Tensor& x, const std::vector<std::array<int64_t, 2>>& pads, PadMode mode = PadMode::zeros) {
  return on(x).pad(x, pads, mode);
}
inline Tensor upsample_nearest(const Tensor& x, const std::vector<int>& scales) {
  return on(x).upsample_nearest(x, scales);
}

inline Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor* b, std::array<int, 2> stride = {1, 1},
                     std::array<int, 2> padding = {0, 0}) {
  return on(x).conv2d(x, w, b, stride, padding);
}
inline Tensor conv3d(const Tensor& x, const Tensor& w, const Tensor* b, std::array<int, 3> stride = {1, 1, 1},
                     std::array<int, 3> padding = {0, 0, 0}) {
  return on(x).conv3d(x, w, b, stride, padding);
}

inline Tensor conv3d_joined(const std::vector<Tensor>& parts, const Tensor& w, const Tensor* b,
                            std::array<int, 3> stride = {1, 1, 1}, std::array<int, 3> padding = {0, 0, 0}) {
  PAB_ASSERT(!parts.empty(), "conv3d_joined: no input");
  return on(parts[0]).conv3d_joined(parts, w, b, stride, padding);
}

inline Tensor rope(const Tensor& x, const Tensor& cos, const Tensor& sin, int64_t start = 0) {
  return on(x).rope(x, cos, sin, start);
}
inline Tensor embedding(const Tensor& ids, const Tensor& table) { return on(table).embedding(ids, table); }
inline Tensor modulate(const Tensor& x, const Tensor& shift, const Tensor& scale) {
  return on(x).modulate(x, shift, scale);
}
inline Tensor gated_add(const Tensor& x, const Tensor& gate, const Tensor& y) { return on(x).gated_add(x, gate, y); }
inline Tensor group_norm_scale_shift(const Tensor& x, int groups, const Tensor* w, const Tensor* b, float eps,
                                     const Tensor& scale, const Tensor& shift, bool silu) {
  return on(x).group_norm_scale_shift(x, groups, w, b, eps, scale, shift, silu);
}
inline Tensor norm_modulate_split(const Tensor& x, const Tensor* w, const Tensor* b, float eps, int64_t split,
                                  const Tensor& shift_a, const Tensor& scale_a, const Tensor& shift_b,
                                  const Tensor& scale_b) {
  return on(x).norm_modulate_split(x, w, b, eps, split, shift_a, scale_a, shift_b, scale_b);
}
inline std::pair<Tensor, Tensor> add_norm_modulate_split(const Tensor& x, const Tensor& y, int64_t split,
                                                        const Tensor* gate_a, const Tensor* gate_b, const Tensor* w,
                                                        const Tensor* b, float eps, const Tensor& shift_a,
                                                        const Tensor& scale_a, const Tensor& shift_b,
                                                        const Tensor& scale_b) {
  return on(x).add_norm_modulate_split(x, y, split, gate_a, gate_b, w, b, eps, shift_a, scale_a, shift_b, scale_b);
}
inline Tensor gated_add_split(const Tensor& x, const Tensor& y, int64_t split, const Tensor& gate_a,
                              const Tensor& gate_b) {
  return on(x).gated_add_split(x, y, split, gate_a, gate_b);
}

// Splits x along `dim` into `n` equal chunks (views of x along dimension 0, else copies).
std::vector<Tensor> chunk(const Tensor& x, int n, int dim);

}  // namespace pab::ops
