// Naive reference implementations of the backend ops: plain loops over
// multi-indices in double precision, written from the op definitions (not from
// the backend code) so that the op tests compare two independent computations.
#pragma once

#include <array>
#include <vector>

#include "backend/backend.h"

namespace pab::naive {

// A dense row-major array of doubles (the reference's tensor).
struct Array {
  Shape shape;
  std::vector<double> v;

  static Array zeros(const Shape& shape);
  // Any dtype (float or integer) on any device; integers up to 2^53 are exact.
  static Array from(const Tensor& t);
  int64_t numel() const { return int64_t(v.size()); }
  int rank() const { return int(shape.size()); }
  double& at(const std::vector<int64_t>& idx);
  double at(const std::vector<int64_t>& idx) const;
};

// Multi-index of a flat row-major position, and back.
std::vector<int64_t> unravel(int64_t flat, const Shape& shape);
int64_t ravel(const std::vector<int64_t>& idx, const Shape& shape);

Array linear(const Array& x, const Array& w, const Array* b);
Array matmul(const Array& a, const Array& b, bool trans_b);
// Materialises the whole [Sq, Sk] score matrix of every (batch, head). A query
// row with no attendable key gives zeros (the backend contract).
Array attention(const Array& q, const Array& k, const Array& v, double scale, const Array* bias, const Array* key_mask);

Array layer_norm(const Array& x, const Array* w, const Array* b, double eps);
Array rms_norm(const Array& x, const Array* w, double eps);
Array group_norm(const Array& x, int groups, const Array* w, const Array* b, double eps);
Array softmax(const Array& x);

double unary(double x, Unary op);
Array unary(const Array& x, Unary op);
Array binary(const Array& a, const Array& b, Binary op);
Array affine(const Array& x, double mul, double add);

Array permute(const Array& x, const std::vector<int>& perm);
Array concat(const std::vector<Array>& parts, int dim);
Array slice(const Array& x, int dim, int64_t start, int64_t end);
Array pad(const Array& x, const std::vector<std::array<int64_t, 2>>& pads, PadMode mode);
Array upsample_nearest(const Array& x, const std::vector<int>& scales);

// Cross-correlation (as torch's convNd) over the trailing stride.size() dims:
// x [B, C, ...], w [O, C, ...kernel], b [O].
Array conv(const Array& x, const Array& w, const Array* b, const std::vector<int>& stride,
           const std::vector<int>& padding);

// x [B, S, H, D]; cos, sin [S, D]: x * cos + rotate_pairs(x) * sin, where
// rotate_pairs maps each pair (a, b) to (-b, a).
Array rope(const Array& x, const Array& cos, const Array& sin);
Array embedding(const Array& ids, const Array& table);
// x [B, S, C]; shift, scale, gate [B, C]
Array modulate(const Array& x, const Array& shift, const Array& scale);
Array gated_add(const Array& x, const Array& gate, const Array& y);

// Nearest value of the 16-bit float format (f16 or bf16) to x, ties to an even
// last bit, found by searching the table of all 65536 decoded bit patterns;
// values beyond the largest finite one round to infinity past its half-ulp.
double round_to(DType dtype, double x);
// The value of a 16-bit pattern, decoded from the format's definition.
double decode16(DType dtype, uint16_t bits);

}  // namespace pab::naive
