#include "support/naive_ops.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace pab::naive {

namespace {
const double kInf = std::numeric_limits<double>::infinity();

// The trailing `k` entries of a shape as a Shape.
Shape tail(const Shape& s, size_t k) {
  return Shape(s.end() - ptrdiff_t(k), s.end());
}
}  // namespace

Array Array::zeros(const Shape& shape) {
  return Array{shape, std::vector<double>(size_t(shape_numel(shape)), 0.0)};
}

Array Array::from(const Tensor& t) {
  Tensor c = t.device() == Device::cpu ? t : t.to(Device::cpu);
  Array a = zeros(c.shape());
  if (c.dtype() == DType::i64) {
    for (int64_t i = 0; i < c.numel(); ++i) a.v[size_t(i)] = double(c.i64()[i]);
  } else if (c.dtype() == DType::f64) {
    const double* p = static_cast<const double*>(c.raw());
    std::copy(p, p + c.numel(), a.v.begin());
  } else {
    std::vector<float> f(size_t(c.numel()));
    convert_to_f32(c.raw(), c.dtype(), f.data(), f.size());
    std::copy(f.begin(), f.end(), a.v.begin());
  }
  return a;
}

double& Array::at(const std::vector<int64_t>& idx) {
  return v[size_t(ravel(idx, shape))];
}
double Array::at(const std::vector<int64_t>& idx) const {
  return v[size_t(ravel(idx, shape))];
}

std::vector<int64_t> unravel(int64_t flat, const Shape& shape) {
  std::vector<int64_t> idx(shape.size());
  for (size_t i = shape.size(); i-- > 0;) {
    idx[i] = flat % shape[i];
    flat /= shape[i];
  }
  return idx;
}

int64_t ravel(const std::vector<int64_t>& idx, const Shape& shape) {
  int64_t flat = 0;
  for (size_t i = 0; i < shape.size(); ++i) {
    PAB_ASSERT(idx[i] >= 0 && idx[i] < shape[i], "index out of range in the naive reference");
    flat = flat * shape[i] + idx[i];
  }
  return flat;
}

// ---------------------------------------------------------------- linear algebra

Array linear(const Array& x, const Array& w, const Array* b) {
  const int64_t n = w.shape[0], k = w.shape[1];
  Shape os = x.shape;
  os.back() = n;
  Array out = Array::zeros(os);
  const int64_t m = out.numel() / std::max<int64_t>(n, 1);
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t j = 0; j < n; ++j) {
      double s = b ? b->v[size_t(j)] : 0.0;
      for (int64_t i = 0; i < k; ++i) s += x.v[size_t(r * k + i)] * w.v[size_t(j * k + i)];
      out.v[size_t(r * n + j)] = s;
    }
  }
  return out;
}

Array matmul(const Array& a, const Array& b, bool trans_b) {
  const int64_t bt = a.shape[0], m = a.shape[1], k = a.shape[2];
  const int64_t n = trans_b ? b.shape[1] : b.shape[2];
  Array out = Array::zeros({bt, m, n});
  for (int64_t t = 0; t < bt; ++t)
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double s = 0;
        for (int64_t l = 0; l < k; ++l) s += a.at({t, i, l}) * (trans_b ? b.at({t, j, l}) : b.at({t, l, j}));
        out.at({t, i, j}) = s;
      }
  return out;
}

Array attention(const Array& q, const Array& k, const Array& v, double scale, const Array* bias,
                const Array* key_mask) {
  const int64_t bsz = q.shape[0], sq = q.shape[1], heads = q.shape[2], d = q.shape[3], sk = k.shape[1];
  Array out = Array::zeros(q.shape);
  // element (n, s, h, c) of a [B, S, H, D] array
  auto tok = [&](const Array& a, int64_t n, int64_t s, int64_t h, int64_t c) {
    return a.v[size_t(((n * a.shape[1] + s) * heads + h) * d + c)];
  };
  std::vector<double> scores(size_t(sq * sk));
  for (int64_t n = 0; n < bsz; ++n) {
    for (int64_t h = 0; h < heads; ++h) {
      // the full [Sq, Sk] score matrix of this (batch, head)
      for (int64_t i = 0; i < sq; ++i) {
        for (int64_t j = 0; j < sk; ++j) {
          double s = 0;
          for (int64_t c = 0; c < d; ++c) s += tok(q, n, i, h, c) * tok(k, n, j, h, c);
          s *= scale;
          if (bias) s += bias->v[size_t((((bias->shape[0] == 1 ? 0 : n) * heads + h) * sq + i) * sk + j)];
          if (key_mask && key_mask->v[size_t(n * sk + j)] == 0.0) s = -kInf;
          scores[size_t(i * sk + j)] = s;
        }
      }
      for (int64_t i = 0; i < sq; ++i) {
        double* row = scores.data() + i * sk;
        double mx = -kInf;
        for (int64_t j = 0; j < sk; ++j) mx = std::max(mx, row[j]);
        if (mx == -kInf) continue;  // nothing to attend to: zeros
        double sum = 0;
        for (int64_t j = 0; j < sk; ++j) sum += std::exp(row[j] - mx);
        for (int64_t j = 0; j < sk; ++j) row[j] = std::exp(row[j] - mx) / sum;  // probabilities
        for (int64_t c = 0; c < d; ++c) {
          double o = 0;
          for (int64_t j = 0; j < sk; ++j) o += row[j] * tok(v, n, j, h, c);
          out.v[size_t(((n * sq + i) * heads + h) * d + c)] = o;
        }
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------- normalisation

Array layer_norm(const Array& x, const Array* w, const Array* b, double eps) {
  Array out = Array::zeros(x.shape);
  const int64_t c = x.shape.back(), rows = c ? x.numel() / c : 0;
  for (int64_t r = 0; r < rows; ++r) {
    const double* xr = x.v.data() + r * c;
    double mean = 0, var = 0;
    for (int64_t i = 0; i < c; ++i) mean += xr[i] / double(c);
    for (int64_t i = 0; i < c; ++i) var += (xr[i] - mean) * (xr[i] - mean) / double(c);
    for (int64_t i = 0; i < c; ++i) {
      double y = (xr[i] - mean) / std::sqrt(var + eps);
      out.v[size_t(r * c + i)] = y * (w ? w->v[size_t(i)] : 1.0) + (b ? b->v[size_t(i)] : 0.0);
    }
  }
  return out;
}

Array rms_norm(const Array& x, const Array* w, double eps) {
  Array out = Array::zeros(x.shape);
  const int64_t c = x.shape.back(), rows = c ? x.numel() / c : 0;
  for (int64_t r = 0; r < rows; ++r) {
    const double* xr = x.v.data() + r * c;
    double ms = 0;
    for (int64_t i = 0; i < c; ++i) ms += xr[i] * xr[i] / double(c);
    for (int64_t i = 0; i < c; ++i)
      out.v[size_t(r * c + i)] = xr[i] / std::sqrt(ms + eps) * (w ? w->v[size_t(i)] : 1.0);
  }
  return out;
}

Array group_norm(const Array& x, int groups, const Array* w, const Array* b, double eps) {
  Array out = Array::zeros(x.shape);
  const int64_t bsz = x.shape[0], c = x.shape[1], cpg = c / groups;
  for (int64_t n = 0; n < bsz; ++n) {
    for (int g = 0; g < groups; ++g) {
      // every element of (n, channels of group g): collect by multi-index
      std::vector<int64_t> members;
      for (int64_t f = 0; f < x.numel(); ++f) {
        std::vector<int64_t> idx = unravel(f, x.shape);
        if (idx[0] == n && idx[1] / cpg == g) members.push_back(f);
      }
      double mean = 0, var = 0;
      for (int64_t f : members) mean += x.v[size_t(f)] / double(members.size());
      for (int64_t f : members) var += (x.v[size_t(f)] - mean) * (x.v[size_t(f)] - mean) / double(members.size());
      for (int64_t f : members) {
        int64_t ch = unravel(f, x.shape)[1];
        double y = (x.v[size_t(f)] - mean) / std::sqrt(var + eps);
        out.v[size_t(f)] = y * (w ? w->v[size_t(ch)] : 1.0) + (b ? b->v[size_t(ch)] : 0.0);
      }
    }
  }
  return out;
}

Array softmax(const Array& x) {
  Array out = Array::zeros(x.shape);
  const int64_t c = x.shape.back(), rows = c ? x.numel() / c : 0;
  for (int64_t r = 0; r < rows; ++r) {
    const double* xr = x.v.data() + r * c;
    double mx = -kInf, sum = 0;
    for (int64_t i = 0; i < c; ++i) mx = std::max(mx, xr[i]);
    for (int64_t i = 0; i < c; ++i) sum += std::exp(xr[i] - mx);
    for (int64_t i = 0; i < c; ++i) out.v[size_t(r * c + i)] = std::exp(xr[i] - mx) / sum;
  }
  return out;
}

// ---------------------------------------------------------------- elementwise

double unary(double x, Unary op) {
  const double pi = 3.14159265358979323846;
  switch (op) {
    case Unary::silu:
      return x * (1.0 / (1.0 + std::exp(-x)));
    case Unary::gelu_tanh:
      return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / pi) * (x + 0.044715 * std::pow(x, 3))));
    case Unary::gelu_erf:
      return x * 0.5 * (1.0 + std::erf(x / std::sqrt(2.0)));
    case Unary::relu:
      return x > 0 ? x : 0.0;
    case Unary::tanh:
      return std::tanh(x);
    case Unary::sigmoid:
      return 1.0 / (1.0 + std::exp(-x));
    case Unary::exp:
      return std::exp(x);
    case Unary::square:
      return x * x;
  }
  return NAN;
}

Array unary(const Array& x, Unary op) {
  Array out = x;
  for (double& e : out.v) e = unary(e, op);
  return out;
}

Array binary(const Array& a, const Array& b, Binary op) {
  const size_t r = std::max(a.shape.size(), b.shape.size());
  // both shapes left-padded with 1s to rank r
  auto padded = [&](const Shape& s) {
    Shape p(r - s.size(), 1);
    p.insert(p.end(), s.begin(), s.end());
    return p;
  };
  Shape sa = padded(a.shape), sb = padded(b.shape), os(r);
  for (size_t i = 0; i < r; ++i) os[i] = sa[i] == 1 ? sb[i] : sa[i];
  Array out = Array::zeros(os);
  for (int64_t f = 0; f < out.numel(); ++f) {
    std::vector<int64_t> idx = unravel(f, os), ia(r), ib(r);
    for (size_t i = 0; i < r; ++i) {
      ia[i] = sa[i] == 1 ? 0 : idx[i];
      ib[i] = sb[i] == 1 ? 0 : idx[i];
    }
    double x = a.v[size_t(ravel(ia, sa))], y = b.v[size_t(ravel(ib, sb))];
    double z = 0;
    switch (op) {
      case Binary::add:
        z = x + y;
        break;
      case Binary::sub:
        z = x - y;
        break;
      case Binary::mul:
        z = x * y;
        break;
      case Binary::div:
        z = x / y;
        break;
    }
    out.v[size_t(f)] = z;
  }
  return out;
}

Array affine(const Array& x, double mul, double add) {
  Array out = x;
  for (double& e : out.v) e = e * mul + add;
  return out;
}

// ---------------------------------------------------------------- layout

Array permute(const Array& x, const std::vector<int>& perm) {
  Shape os(perm.size());
  for (size_t i = 0; i < perm.size(); ++i) os[i] = x.shape[size_t(perm[i])];
  Array out = Array::zeros(os);
  for (int64_t f = 0; f < out.numel(); ++f) {
    std::vector<int64_t> idx = unravel(f, os), src(perm.size());
    for (size_t i = 0; i < perm.size(); ++i) src[size_t(perm[i])] = idx[i];
    out.v[size_t(f)] = x.at(src);
  }
  return out;
}

Array concat(const std::vector<Array>& parts, int dim) {
  const size_t d = size_t(dim < 0 ? dim + parts[0].rank() : dim);
  Shape os = parts[0].shape;
  os[d] = 0;
  for (const Array& p : parts) os[d] += p.shape[d];
  Array out = Array::zeros(os);
  for (int64_t f = 0; f < out.numel(); ++f) {
    std::vector<int64_t> idx = unravel(f, os);
    // find the part holding position idx[d]
    size_t part = 0;
    while (idx[d] >= parts[part].shape[d]) idx[d] -= parts[part++].shape[d];
    out.v[size_t(f)] = parts[part].at(idx);
  }
  return out;
}

Array slice(const Array& x, int dim, int64_t start, int64_t end) {
  const size_t d = size_t(dim < 0 ? dim + x.rank() : dim);
  Shape os = x.shape;
  os[d] = end - start;
  Array out = Array::zeros(os);
  for (int64_t f = 0; f < out.numel(); ++f) {
    std::vector<int64_t> idx = unravel(f, os);
    idx[d] += start;
    out.v[size_t(f)] = x.at(idx);
  }
  return out;
}

Array pad(const Array& x, const std::vector<std::array<int64_t, 2>>& pads, PadMode mode) {
  const size_t r = x.shape.size(), lead = r - pads.size();
  Shape os = x.shape;
  for (size_t i = 0; i < pads.size(); ++i) os[lead + i] += pads[i][0] + pads[i][1];
  Array out = Array::zeros(os);
  for (int64_t f = 0; f < out.numel(); ++f) {
    std::vector<int64_t> idx = unravel(f, os);
    bool outside = false;
    for (size_t i = 0; i < pads.size(); ++i) {
      int64_t& j = idx[lead + i];
      j -= pads[i][0];
      if (j < 0 || j >= x.shape[lead + i]) {
        outside = true;
        j = j < 0 ? 0 : x.shape[lead + i] - 1;  // replicate: the nearest edge
      }
    }
    out.v[size_t(f)] = outside && mode == PadMode::zeros ? 0.0 : x.at(idx);
  }
  return out;
}

Array upsample_nearest(const Array& x, const std::vector<int>& scales) {
  const size_t lead = x.shape.size() - scales.size();
  Shape os = x.shape;
  for (size_t i = 0; i < scales.size(); ++i) os[lead + i] *= scales[i];
  Array out = Array::zeros(os);
  for (int64_t f = 0; f < out.numel(); ++f) {
    std::vector<int64_t> idx = unravel(f, os);
    for (size_t i = 0; i < scales.size(); ++i) idx[lead + i] /= scales[i];
    out.v[size_t(f)] = x.at(idx);
  }
  return out;
}

// ---------------------------------------------------------------- convolution

Array conv(const Array& x, const Array& w, const Array* b, const std::vector<int>& stride,
           const std::vector<int>& padding) {
  const size_t nd = stride.size();
  const int64_t bsz = x.shape[0], c = x.shape[1], o = w.shape[0];
  const Shape in_sp = tail(x.shape, nd), k_sp = tail(w.shape, nd);
  Shape out_sp(nd);
  for (size_t i = 0; i < nd; ++i) out_sp[i] = (in_sp[i] + 2 * padding[i] - k_sp[i]) / stride[i] + 1;
  Shape os = {bsz, o};
  os.insert(os.end(), out_sp.begin(), out_sp.end());
  Array out = Array::zeros(os);
  for (int64_t f = 0; f < out.numel(); ++f) {
    std::vector<int64_t> idx = unravel(f, os);
    const int64_t n = idx[0], oc = idx[1];
    double s = b ? b->v[size_t(oc)] : 0.0;
    for (int64_t kf = 0; kf < shape_numel(k_sp); ++kf) {
      std::vector<int64_t> kidx = unravel(kf, k_sp);
      std::vector<int64_t> xi = {n, 0};
      bool inside = true;
      for (size_t i = 0; i < nd; ++i) {
        int64_t p = idx[2 + i] * stride[i] - padding[i] + kidx[i];
        inside = inside && p >= 0 && p < in_sp[i];
        xi.push_back(p);
      }
      if (!inside) continue;  // zero padding
      std::vector<int64_t> wi = {oc, 0};
      wi.insert(wi.end(), kidx.begin(), kidx.end());
      for (int64_t ci = 0; ci < c; ++ci) {
        xi[1] = wi[1] = ci;
        s += x.at(xi) * w.at(wi);
      }
    }
    out.v[size_t(f)] = s;
  }
  return out;
}

// ---------------------------------------------------------------- model helpers

Array rope(const Array& x, const Array& cos, const Array& sin) {
  Array out = Array::zeros(x.shape);
  const int64_t d = x.shape[3];
  for (int64_t f = 0; f < x.numel(); ++f) {
    std::vector<int64_t> idx = unravel(f, x.shape);
    const int64_t s = idx[1], i = idx[3];
    std::vector<int64_t> partner = idx;
    partner[3] = i % 2 == 0 ? i + 1 : i - 1;
    const double rotated = i % 2 == 0 ? -x.at(partner) : x.at(partner);
    out.v[size_t(f)] = x.v[size_t(f)] * cos.v[size_t(s * d + i)] + rotated * sin.v[size_t(s * d + i)];
  }
  return out;
}

Array embedding(const Array& ids, const Array& table) {
  const int64_t d = table.shape[1];
  Shape os = ids.shape;
  os.push_back(d);
  Array out = Array::zeros(os);
  for (int64_t f = 0; f < out.numel(); ++f) {
    const int64_t row = int64_t(ids.v[size_t(f / d)]);
    out.v[size_t(f)] = table.at({row, f % d});
  }
  return out;
}

Array modulate(const Array& x, const Array& shift, const Array& scale) {
  Array out = x;
  for (int64_t f = 0; f < x.numel(); ++f) {
    std::vector<int64_t> idx = unravel(f, x.shape);
    const double sh = shift.at({idx[0], idx[2]}), sc = scale.at({idx[0], idx[2]});
    out.v[size_t(f)] = x.v[size_t(f)] * (1.0 + sc) + sh;
  }
  return out;
}

Array gated_add(const Array& x, const Array& gate, const Array& y) {
  Array out = x;
  for (int64_t f = 0; f < x.numel(); ++f) {
    std::vector<int64_t> idx = unravel(f, x.shape);
    out.v[size_t(f)] += gate.at({idx[0], idx[2]}) * y.v[size_t(f)];
  }
  return out;
}

// ---------------------------------------------------------------- 16-bit floats

double decode16(DType dtype, uint16_t bits) {
  // f16: 5 exponent bits (bias 15), 10 mantissa bits; bf16: 8 (bias 127), 7
  const int man_bits = dtype == DType::f16 ? 10 : 7, exp_bits = 15 - man_bits, bias = (1 << (exp_bits - 1)) - 1;
  const int sign = bits >> 15, e = (bits >> man_bits) & ((1 << exp_bits) - 1), m = bits & ((1 << man_bits) - 1);
  double mag;
  if (e == (1 << exp_bits) - 1) {
    mag = m == 0 ? kInf : NAN;
  } else if (e == 0) {
    mag = std::ldexp(double(m), 1 - bias - man_bits);  // subnormal
  } else {
    mag = std::ldexp(1.0 + std::ldexp(double(m), -man_bits), e - bias);
  }
  return sign ? -mag : mag;
}

double round_to(DType dtype, double x) {
  if (std::isnan(x)) return x;
  // all non-negative finite values in increasing order, with their bit patterns
  static std::vector<std::pair<double, uint16_t>> tables[2];
  std::vector<std::pair<double, uint16_t>>& table = tables[dtype == DType::f16 ? 0 : 1];
  if (table.empty()) {
    for (uint32_t bits = 0; bits < 0x8000u; ++bits) {
      double v = decode16(dtype, uint16_t(bits));
      if (std::isfinite(v)) table.push_back({v, uint16_t(bits)});
    }
    std::sort(table.begin(), table.end());
  }
  const double a = std::fabs(x);
  const double top = table.back().first, half_ulp = (top - table[table.size() - 2].first) / 2;
  double r;
  if (a >= top + half_ulp) {  // the largest finite value has an odd last bit, so its tie goes up too
    r = kInf;
  } else if (a >= top) {
    r = top;
  } else {
    auto hi = std::upper_bound(table.begin(), table.end(), std::make_pair(a, uint16_t(0xffff)));
    auto lo = hi - 1;
    const double dl = a - lo->first, dh = hi->first - a;
    r = dl < dh || (dl == dh && (lo->second & 1) == 0) ? lo->first : hi->first;
  }
  return std::signbit(x) ? -r : r;
}

}  // namespace pab::naive
