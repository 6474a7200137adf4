// CPU backend: GEMM-based ops (linear, matmul, attention, convolution).
// Attention is block-wise with an online softmax, so no S x S score matrix is
// ever materialised; GEMMs inside OpenMP regions run single-threaded
// (OpenBLAS, OpenMP build).
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "backend/cpu/cpu_backend.h"

namespace pab {

namespace {
void check_f32(const Tensor& x, const char* op) {
  if (x.dtype() != DType::f32 || x.device() != Device::cpu)
    fail(op, ": the CPU backend computes in f32, got ", x.desc());
}

void add_bias_rows(float* out, const float* bias, int64_t rows, int64_t n) {
#pragma omp parallel for if (rows > 16)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < n; ++i) out[r * n + i] += bias[i];
}
}  // namespace

Tensor CpuBackend::linear(const Tensor& x, const Tensor& w, const Tensor* b) {
  check_f32(x, "linear");
  check_f32(w, "linear");
  PAB_ASSERT(w.rank() == 2 && x.dim(-1) == w.dim(1), "linear: ", x.desc(), " by weight ", w.desc());
  // rows from the leading dims: numel / K would be 0 when K == 0
  int64_t k = w.dim(1), n = w.dim(0), m = shape_numel(Shape(x.shape().begin(), x.shape().end() - 1));
  Shape os = x.shape();
  os.back() = n;
  Tensor out = Tensor::empty(os);
  if (m == 0 || n == 0) return out;
  if (k == 0) {
    std::fill(out.f32(), out.f32() + out.numel(), 0.0f);
  } else {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(m), int(n), int(k), 1.0f, x.f32(), int(k), w.f32(),
                int(k), 0.0f, out.f32(), int(n));
  }
  if (b) {
    check_f32(*b, "linear bias");
    PAB_ASSERT(b->numel() == n, "linear bias ", b->desc(), " for ", n, " outputs");
    add_bias_rows(out.f32(), b->f32(), m, n);
  }
  return out;
}

Tensor CpuBackend::matmul(const Tensor& a, const Tensor& b, bool trans_b) {
  check_f32(a, "matmul");
  check_f32(b, "matmul");
  PAB_ASSERT(a.rank() == 3 && b.rank() == 3 && a.dim(0) == b.dim(0), "matmul: ", a.desc(), " by ", b.desc());
  int64_t bt = a.dim(0), m = a.dim(1), k = a.dim(2);
  int64_t n = trans_b ? b.dim(1) : b.dim(2);
  PAB_ASSERT((trans_b ? b.dim(2) : b.dim(1)) == k, "matmul: ", a.desc(), " by ", b.desc());
  Tensor out = Tensor::zeros({bt, m, n});
  // BLAS rejects leading dimensions of 0
  if (m == 0 || n == 0 || k == 0) return out;
  for (int64_t i = 0; i < bt; ++i) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, int(m), int(n), int(k), 1.0f,
                a.f32() + i * m * k, int(k), b.f32() + i * k * n, trans_b ? int(k) : int(n), 0.0f,
                out.f32() + i * m * n, int(n));
  }
  return out;
}

Tensor CpuBackend::attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionArgs& args) {
  check_f32(q, "attention");
  check_f32(k, "attention");
  check_f32(v, "attention");
  PAB_ASSERT(q.rank() == 4 && k.rank() == 4 && v.rank() == 4, "attention expects [B, S, H, D]");
  const int64_t bsz = q.dim(0), sq = q.dim(1), heads = q.dim(2), d = q.dim(3);
  const int64_t sk = k.dim(1);
  PAB_ASSERT(k.dim(0) == bsz && v.dim(0) == bsz && k.dim(2) == heads && v.dim(2) == heads && k.dim(3) == d &&
                 v.dim(3) == d && v.dim(1) == sk,
             "attention: q ", q.desc(), ", k ", k.desc(), ", v ", v.desc());
  const float* bias = nullptr;
  int64_t bias_batch = 0;
  if (args.bias) {
    check_f32(*args.bias, "attention bias");
    const Tensor& bt = *args.bias;
    PAB_ASSERT(bt.rank() == 4 && (bt.dim(0) == 1 || bt.dim(0) == bsz) && bt.dim(1) == heads && bt.dim(2) == sq &&
                   bt.dim(3) == sk,
               "attention bias ", bt.desc());
    bias = bt.f32();
    bias_batch = bt.dim(0);
  }
  const float* mask = nullptr;
  if (args.key_mask) {
    check_f32(*args.key_mask, "attention key mask");
    PAB_ASSERT(args.key_mask->numel() == bsz * sk, "attention key mask ", args.key_mask->desc());
    mask = args.key_mask->f32();
  }

  // A query row with no key to attend to (Sk == 0 or every key masked) gets zeros.
  if (q.numel() == 0 || sk == 0) return Tensor::zeros(q.shape());
  // [B, S, H, D] -> [B, H, S, D] so that each head's keys and values are contiguous
  Tensor kh = permute(k, {0, 2, 1, 3});
  Tensor vh = permute(v, {0, 2, 1, 3});
  Tensor out = Tensor::empty(q.shape());
  constexpr int64_t kBq = 32, kBk = 256;
  const int64_t q_blocks = (sq + kBq - 1) / kBq;
  const float* qp = q.f32();
  float* op = out.f32();
  const float scale = args.scale;

#pragma omp parallel
  {
    std::vector<float> qb(size_t(kBq * d)), sc(size_t(kBq * kBk)), acc(size_t(kBq * d));
    std::vector<float> mrow(kBq), lrow(kBq);
#pragma omp for collapse(3) schedule(dynamic)
    for (int64_t n = 0; n < bsz; ++n) {
      for (int64_t h = 0; h < heads; ++h) {
        for (int64_t qi = 0; qi < q_blocks; ++qi) {
          const int64_t q0 = qi * kBq, nq = std::min(kBq, sq - q0);
          for (int64_t r = 0; r < nq; ++r) {
            const float* src = qp + ((n * sq + q0 + r) * heads + h) * d;
            for (int64_t i = 0; i < d; ++i) qb[size_t(r * d + i)] = src[i] * scale;
          }
          std::fill(acc.begin(), acc.end(), 0.0f);
          std::fill(mrow.begin(), mrow.end(), -INFINITY);
          std::fill(lrow.begin(), lrow.end(), 0.0f);
          const float* kbase = kh.f32() + (n * heads + h) * sk * d;
          const float* vbase = vh.f32() + (n * heads + h) * sk * d;
          for (int64_t k0 = 0; k0 < sk; k0 += kBk) {
            const int64_t nk = std::min(kBk, sk - k0);
            // scores [nq, nk] = qb [nq, d] . k [nk, d]^T
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(nq), int(nk), int(d), 1.0f, qb.data(), int(d),
                        kbase + k0 * d, int(d), 0.0f, sc.data(), int(kBk));
            for (int64_t r = 0; r < nq; ++r) {
              float* s = sc.data() + r * kBk;
              if (bias) {
                const float* br =
                    bias + (((bias_batch == 1 ? 0 : n) * heads + h) * sq + q0 + r) * sk + k0;
                for (int64_t j = 0; j < nk; ++j) s[j] += br[j];
              }
              if (mask) {
                for (int64_t j = 0; j < nk; ++j)
                  if (mask[n * sk + k0 + j] == 0.0f) s[j] = -INFINITY;
              }
              float m_new = mrow[size_t(r)];
              for (int64_t j = 0; j < nk; ++j) m_new = std::max(m_new, s[j]);
              if (m_new == -INFINITY) {  // every key so far masked
                for (int64_t j = 0; j < nk; ++j) s[j] = 0.0f;
                continue;
              }
              float correction = std::exp(mrow[size_t(r)] - m_new);
              float sum = 0.0f;
              for (int64_t j = 0; j < nk; ++j) {
                s[j] = std::exp(s[j] - m_new);
                sum += s[j];
              }
              lrow[size_t(r)] = lrow[size_t(r)] * correction + sum;
              mrow[size_t(r)] = m_new;
              float* a = acc.data() + r * d;
              for (int64_t i = 0; i < d; ++i) a[i] *= correction;
            }
            // acc [nq, d] += p [nq, nk] . v [nk, d]
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(nq), int(d), int(nk), 1.0f, sc.data(),
                        int(kBk), vbase + k0 * d, int(d), 1.0f, acc.data(), int(d));
          }
          for (int64_t r = 0; r < nq; ++r) {
            float inv = lrow[size_t(r)] > 0.0f ? 1.0f / lrow[size_t(r)] : 0.0f;
            float* dst = op + ((n * sq + q0 + r) * heads + h) * d;
            for (int64_t i = 0; i < d; ++i) dst[i] = acc[size_t(r * d + i)] * inv;
          }
        }
      }
    }
  }
  return out;
}

namespace {

// 3D convolution by im2col over chunks of output positions, so the column
// buffer stays bounded whatever the input size.
Tensor conv_nd(const Tensor& x, const Tensor& w, const Tensor* b, std::array<int, 3> stride,
               std::array<int, 3> padding) {
  // x [B, C, T, H, W], w [O, C, kt, kh, kw]
  const int64_t bsz = x.dim(0), c = x.dim(1), t = x.dim(2), h = x.dim(3), wd = x.dim(4);
  const int64_t o = w.dim(0), kt = w.dim(2), kh = w.dim(3), kw = w.dim(4);
  PAB_ASSERT(w.dim(1) == c, "conv: input ", x.desc(), " with weight ", w.desc());
  for (int i = 0; i < 3; ++i) PAB_ASSERT(stride[size_t(i)] >= 1 && padding[size_t(i)] >= 0, "conv stride/padding");
  // checked before dividing: C++ division truncates a negative extent towards 0, giving one bogus output
  PAB_ASSERT(t + 2 * padding[0] >= kt && h + 2 * padding[1] >= kh && wd + 2 * padding[2] >= kw, "conv: kernel ",
             w.desc(), " larger than padded input ", x.desc());
  const int64_t to = (t + 2 * padding[0] - kt) / stride[0] + 1;
  const int64_t ho = (h + 2 * padding[1] - kh) / stride[1] + 1;
  const int64_t wo = (wd + 2 * padding[2] - kw) / stride[2] + 1;
  if (b) PAB_ASSERT(b->numel() == o, "conv bias ", b->desc());
  const int64_t kk = c * kt * kh * kw, positions = to * ho * wo;
  if (kk == 0 || o == 0 || bsz == 0) {  // nothing to multiply: the bias alone (BLAS rejects empty operands)
    Tensor out = Tensor::zeros({bsz, o, to, ho, wo});
    for (int64_t n = 0; b && n < bsz; ++n)
      for (int64_t oc = 0; oc < o; ++oc)
        std::fill_n(out.f32() + (n * o + oc) * positions, positions, b->f32()[oc]);
    return out;
  }
  Tensor out = Tensor::empty({bsz, o, to, ho, wo});
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(positions, (int64_t(16) << 20) / std::max<int64_t>(kk, 1)));
  std::vector<float> col(size_t(kk * chunk));
  const float* xp = x.f32();
  float* op = out.f32();
  for (int64_t n = 0; n < bsz; ++n) {
    const float* xn = xp + n * c * t * h * wd;
    float* on = op + n * o * positions;
    for (int64_t p0 = 0; p0 < positions; p0 += chunk) {
      const int64_t np = std::min(chunk, positions - p0);
#pragma omp parallel for
      for (int64_t row = 0; row < kk; ++row) {
        int64_t ci = row / (kt * kh * kw), rem = row % (kt * kh * kw);
        int64_t dt = rem / (kh * kw), dh = (rem / kw) % kh, dw = rem % kw;
        float* cr = col.data() + row * np;
        // One output row (fixed ot, oh) at a time: its inputs are one input
        // row, copied as a block when the stride is 1.
        int64_t ot = p0 / (ho * wo), oh = (p0 / wo) % ho, ow0 = p0 % wo;
        for (int64_t j = 0; j < np;) {
          const int64_t run = std::min(wo - ow0, np - j);
          const int64_t it = ot * stride[0] - padding[0] + dt;
          const int64_t ih = oh * stride[1] - padding[1] + dh;
          float* dst = cr + j;
          if (it < 0 || it >= t || ih < 0 || ih >= h) {
            std::fill_n(dst, run, 0.0f);
          } else {
            const float* src = xn + ((ci * t + it) * h + ih) * wd;
            if (stride[2] == 1) {
              const int64_t shift = ow0 - padding[2] + dw;  // iw = k + shift
              const int64_t lo = std::clamp<int64_t>(-shift, 0, run);
              const int64_t hi = std::clamp<int64_t>(wd - shift, lo, run);
              std::fill(dst, dst + lo, 0.0f);
              std::copy(src + lo + shift, src + hi + shift, dst + lo);
              std::fill(dst + hi, dst + run, 0.0f);
            } else {
              for (int64_t k = 0; k < run; ++k) {
                const int64_t iw = (ow0 + k) * stride[2] - padding[2] + dw;
                dst[k] = iw >= 0 && iw < wd ? src[iw] : 0.0f;
              }
            }
          }
          j += run;
          ow0 = 0;
          if (++oh == ho) {
            oh = 0;
            ++ot;
          }
        }
      }
      // out [O, np] (row stride = positions) = w [O, kk] . col [kk, np]
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(o), int(np), int(kk), 1.0f, w.f32(), int(kk),
                  col.data(), int(np), 0.0f, on + p0, int(positions));
    }
    if (b) {
      const float* bp = b->f32();
#pragma omp parallel for
      for (int64_t oc = 0; oc < o; ++oc)
        for (int64_t p = 0; p < positions; ++p) on[oc * positions + p] += bp[oc];
    }
  }
  return out;
}

}  // namespace

Tensor CpuBackend::conv2d(const Tensor& x, const Tensor& w, const Tensor* b, std::array<int, 2> stride,
                          std::array<int, 2> padding) {
  check_f32(x, "conv2d");
  check_f32(w, "conv2d");
  PAB_ASSERT(x.rank() == 4 && w.rank() == 4, "conv2d: input ", x.desc(), " weight ", w.desc());
  Tensor x5 = x.reshape({x.dim(0), x.dim(1), 1, x.dim(2), x.dim(3)});
  Tensor w5 = w.reshape({w.dim(0), w.dim(1), 1, w.dim(2), w.dim(3)});
  Tensor out = conv_nd(x5, w5, b, {1, stride[0], stride[1]}, {0, padding[0], padding[1]});
  return out.reshape({out.dim(0), out.dim(1), out.dim(3), out.dim(4)});
}

Tensor CpuBackend::conv3d(const Tensor& x, const Tensor& w, const Tensor* b, std::array<int, 3> stride,
                          std::array<int, 3> padding) {
  check_f32(x, "conv3d");
  check_f32(w, "conv3d");
  PAB_ASSERT(x.rank() == 5 && w.rank() == 5, "conv3d: input ", x.desc(), " weight ", w.desc());
  return conv_nd(x, w, b, stride, padding);
}

}  // namespace pab
