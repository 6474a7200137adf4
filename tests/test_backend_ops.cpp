// Every backend op against a naive double-precision reference
// (support/naive_ops.h), on every backend of the build, as ggml's
// test-backend-ops does: inputs are made on the CPU, moved to the device in
// the case's compute dtype, and the outputs brought back and compared with the
// tolerance of that dtype (support/backend_testing.h states them). Each fusion
// is also compared with its reference composite (Backend's default) on the
// same backend. A new backend runs these tests unchanged once it registers
// itself; the minimal test backend (support/minimal_backend.h: the required
// ops only) runs them here too.
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <set>
#include <tuple>

#include "backend/ops.h"
#include "support/backend_testing.h"
#include "support/minimal_backend.h"

namespace pab {
namespace {

using naive::Array;
using testing::BackendCase;
using testing::expect_close;

::testing::Environment* const kSummary = ::testing::AddGlobalTestEnvironment(testing::error_summary_environment());
[[maybe_unused]] const Device kMinimal = register_backend("minimal", testing::create_minimal_backend);

int64_t pick(std::mt19937& rng, int64_t lo, int64_t hi) {
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
}

Shape random_shape(std::mt19937& rng, int rank, int64_t lo, int64_t hi) {
  Shape s(static_cast<size_t>(rank));
  for (int64_t& d : s) d = pick(rng, lo, hi);
  return s;
}

// i64 tensor on the CPU
Tensor ids_tensor(const std::vector<int64_t>& values, const Shape& shape) {
  Tensor t = Tensor::empty(shape, DType::i64);
  std::copy(values.begin(), values.end(), t.i64());
  return t;
}

class BackendOps : public ::testing::TestWithParam<BackendCase> {
 protected:
  void SetUp() override { testing::set_current_case(GetParam()); }

  DType dtype() const { return GetParam().dtype; }
  double tol() const { return testing::math_tolerance(dtype()); }
  // An input on the case's device (float inputs in its compute dtype)...
  Tensor dev(const Tensor& x) const { return testing::to_case(x, GetParam()); }
  // ...and the reference's copy of the very values the device got.
  Array ref(const Tensor& x) const { return Array::from(testing::quantize(x, dtype())); }
  // Inputs that the interface keeps in f32 whatever the compute dtype (attention bias and key mask).
  Tensor dev_f32(const Tensor& x) const { return testing::to_device(x, GetParam()); }
  // Uniform random values, a fresh seed per call.
  Tensor rand(const Shape& s, float lo = -1.0f, float hi = 1.0f) { return testing::random_tensor(s, seed_++, lo, hi); }

  // The case's backend, whose composites the fusions are compared with:
  // be().Backend::linear_act(...) is the default, composed of the backend's
  // own ops (required ones, and fusions a composite builds on).
  Backend& be() const { return backend(GetParam().device); }
  // A composite's input: the very values the device got, on the device in f32,
  // so that the composite's own rounding is f32's whatever the case's dtype.
  Tensor comp(const Tensor& x) const { return testing::to_device(testing::quantize(x, dtype()), GetParam()); }
  // A fusion's output against its composite's. Where the backend has no
  // fusion of its own, in f32, the composite is what ran: equal, exactly
  // (which also catches a fusion that supports() does not own to). Else the
  // case's tolerance, plus f32's for the composite.
  // `scale` widens a 16-bit tolerance where the op's rounding error scales
  // with an intermediate larger than its output (see LinearAct).
  void expect_composite(Fusion f, const Tensor& out, const Tensor& composite, const std::string& what = "",
                        double scale = 1.0) {
    const double t =
        !be().supports(f) && dtype() == DType::f32 ? 0.0 : scale * tol() + testing::math_tolerance(DType::f32);
    expect_close(out, Array::from(composite), t, cat(fusion_name(f), what, " vs composite"));
  }

 private:
  uint32_t seed_ = 1;
};

// ---------------------------------------------------------------- linear algebra

TEST_P(BackendOps, Linear) {
  std::mt19937 rng(11);
  // (x shape, N): edge shapes (K = 0 must give the bias alone), then random ones
  std::vector<std::pair<Shape, int64_t>> cases = {{{1, 1}, 1}, {{2, 3, 17}, 5}, {{4, 8}, 1},
                                                  {{0, 8}, 3}, {{3, 0}, 4},     {{2, 5, 300}, 70}};
  for (int i = 0; i < 3; ++i) cases.push_back({random_shape(rng, int(pick(rng, 1, 3)), 1, 40), pick(rng, 1, 64)});
  for (const auto& [xs, n] : cases) {
    for (bool with_bias : {false, true}) {
      SCOPED_TRACE(cat("x ", shape_str(xs), " N ", n, with_bias ? " with bias" : ""));
      Tensor x = rand(xs), w = rand({n, xs.back()}), b = rand({n});
      Tensor bd = dev(b);
      Array rb = ref(b);
      Tensor out = ops::linear(dev(x), dev(w), with_bias ? &bd : nullptr);
      expect_close(out, naive::linear(ref(x), ref(w), with_bias ? &rb : nullptr), tol(), "linear");
    }
  }
}

// Stacked weights [G, N, K] applied to one input: one batched GEMM on the GPU
// (its strides: the weights and outputs advance, the input does not).
TEST_P(BackendOps, LinearStacked) {
  const std::vector<std::tuple<Shape, int64_t, int64_t>> cases = {
      {{2, 3, 17}, 3, 5}, {{4, 8}, 2, 1}, {{3, 0}, 3, 4}, {{0, 8}, 3, 3}, {{2, 5, 300}, 3, 70}, {{64, 256}, 3, 128}};
  for (const auto& [xs, g, n] : cases) {
    for (bool with_bias : {false, true}) {
      SCOPED_TRACE(cat("x ", shape_str(xs), " G ", g, " N ", n, with_bias ? " with bias" : ""));
      Tensor x = rand(xs), w = rand({g, n, xs.back()}), b = rand({g, n});
      Tensor bd = dev(b);
      Tensor out = ops::linear_stacked(dev(x), dev(w), with_bias ? &bd : nullptr);
      std::vector<Array> parts;
      for (int64_t i = 0; i < g; ++i) {
        Array bi = ref(b.narrow0(i, 1).reshape({n}));
        Array y = naive::linear(ref(x), ref(w.narrow0(i, 1).reshape({n, xs.back()})), with_bias ? &bi : nullptr);
        y.shape.insert(y.shape.begin(), 1);
        parts.push_back(y);
      }
      expect_close(out, naive::concat(parts, 0), tol(), "linear_stacked");
      Tensor bc = comp(b);
      expect_composite(Fusion::linear_stacked, out,
                       be().Backend::linear_stacked(comp(x), comp(w), with_bias ? &bc : nullptr));
    }
  }
  EXPECT_THROW(ops::linear_stacked(dev(rand({2, 8})), dev(rand({3, 4, 7})), nullptr), Error);
}

// A linear layer and its activation (the feed-forward's first half): each
// activation a model uses, with the GEMM's edge shapes.
TEST_P(BackendOps, LinearAct) {
  const std::pair<Unary, const char*> kActs[] = {
      {Unary::gelu_tanh, "gelu_tanh"}, {Unary::gelu_erf, "gelu_erf"}, {Unary::silu, "silu"}, {Unary::relu, "relu"}};
  const std::vector<std::pair<Shape, int64_t>> cases = {{{1, 1}, 1}, {{2, 3, 17}, 5},   {{3, 0}, 4},
                                                        {{0, 8}, 3}, {{2, 5, 300}, 70}, {{64, 256}, 512}};
  for (const auto& [act, name] : kActs) {
    for (const auto& [xs, n] : cases) {
      for (bool with_bias : {false, true}) {
        SCOPED_TRACE(cat(name, " x ", shape_str(xs), " N ", n, with_bias ? " with bias" : ""));
        Tensor x = rand(xs, -2, 2), w = rand({n, xs.back()}), b = rand({n});
        Tensor bd = dev(b), bc = comp(b);
        Array rb = ref(b);
        Tensor out = ops::linear_act(dev(x), dev(w), with_bias ? &bd : nullptr, act);
        const Array pre = naive::linear(ref(x), ref(w), with_bias ? &rb : nullptr);
        const Array expected = naive::unary(pre, act);
        // A 16-bit GEMM rounds its output before the activation (cuBLASLt's
        // bf16 GELU epilogue too), an error of the order of |x . w + b|; the
        // activation can be much smaller than its input (gelu(-0.25) = -0.10),
        // so the tolerance is relative to the larger of the two magnitudes.
        double scale = 1.0;
        if (dtype() != DType::f32) {
          double pre_mag = 0, out_mag = 0;
          for (double v : pre.v) pre_mag = std::max(pre_mag, std::fabs(v));
          for (double v : expected.v) out_mag = std::max(out_mag, std::fabs(v));
          if (out_mag > 0) scale = std::max(1.0, pre_mag / out_mag);
        }
        expect_close(out, expected, scale * tol(), cat("linear_act ", name));
        expect_composite(Fusion::linear_act, out,
                         be().Backend::linear_act(comp(x), comp(w), with_bias ? &bc : nullptr, act), cat(" ", name),
                         scale);
      }
    }
  }
}

TEST_P(BackendOps, Matmul) {
  std::mt19937 rng(12);
  // (batch, M, K, N)
  std::vector<std::array<int64_t, 4>> cases = {{1, 1, 1, 1}, {3, 17, 33, 9}, {2, 64, 128, 48},
                                               {2, 0, 4, 3}, {2, 3, 0, 5},   {1, 5, 7, 0}};
  for (int i = 0; i < 3; ++i) cases.push_back({pick(rng, 1, 4), pick(rng, 1, 50), pick(rng, 1, 200), pick(rng, 1, 50)});
  for (const auto& [bt, m, k, n] : cases) {
    for (bool trans_b : {false, true}) {
      SCOPED_TRACE(cat("batch ", bt, " M ", m, " K ", k, " N ", n, trans_b ? " trans_b" : ""));
      Tensor a = rand({bt, m, k}), b = trans_b ? rand({bt, n, k}) : rand({bt, k, n});
      Tensor out = ops::matmul(dev(a), dev(b), trans_b);
      expect_close(out, naive::matmul(ref(a), ref(b), trans_b), tol(), "matmul");
    }
  }
}

struct AttentionCase {
  int64_t b, sq, sk, h, d;
  int bias_batch;  // 0: no bias; 1 or b: bias [bias_batch, H, Sq, Sk]
  bool mask;       // a key mask with about a third of the keys masked
};

TEST_P(BackendOps, Attention) {
  std::mt19937 rng(13);
  // block sizes of the CPU backend: 32 queries x 256 keys; sequences cross them without being multiples
  std::vector<AttentionCase> cases = {
      {1, 1, 1, 1, 16, 0, false},   {2, 33, 47, 3, 16, 2, true},   {1, 300, 300, 2, 64, 0, false},
      {2, 70, 513, 2, 72, 1, true}, {1, 257, 31, 1, 72, 1, false}, {2, 32, 256, 2, 16, 2, true},
      {1, 5, 700, 1, 64, 0, true},  {2, 0, 5, 2, 16, 2, true},     {0, 3, 4, 2, 16, 0, false},
      // short sequences (the CUDA backend's tensor-core kernel: Latte's temporal attention, spatial positions
      // as heads): one or two chunks of 16 keys, partly filled query tiles, every head dim it takes
      {5, 16, 16, 16, 72, 0, false}, {3, 7, 20, 4, 64, 0, false},  {2, 32, 1, 3, 128, 0, false},
      {2, 16, 16, 300, 32, 0, false}, {1, 9, 9, 5, 88, 0, false},  {1, 17, 32, 2, 72, 0, false},
      // key-masked attention to a caption (the same kernel, online softmax over chunks of 16 keys)
      {2, 40, 120, 3, 72, 0, true},   {1, 20, 1000, 2, 16, 0, true}, {2, 3, 17, 2, 128, 0, true},
  };
  for (int i = 0; i < 3; ++i) {
    int64_t b = pick(rng, 1, 2);
    cases.push_back({b, pick(rng, 1, 100), pick(rng, 1, 400), pick(rng, 1, 3), std::array{16, 64, 72}[pick(rng, 0, 2)],
                     int(pick(rng, 0, 1) ? b : 0), pick(rng, 0, 1) == 1});
  }
  for (const AttentionCase& c : cases) {
    SCOPED_TRACE(cat("B ", c.b, " Sq ", c.sq, " Sk ", c.sk, " H ", c.h, " D ", c.d, " bias batch ", c.bias_batch,
                     c.mask ? " masked" : ""));
    Tensor q = rand({c.b, c.sq, c.h, c.d}, -2, 2), k = rand({c.b, c.sk, c.h, c.d}, -2, 2),
           v = rand({c.b, c.sk, c.h, c.d});
    Tensor bias = rand({std::max(c.bias_batch, 1), c.h, c.sq, c.sk}, -3, 3);
    std::vector<float> keep(size_t(c.b * c.sk));
    for (float& m : keep) m = pick(rng, 0, 2) ? 1.0f : 0.0f;
    Tensor mask = Tensor::from_vector(keep, {c.b, c.sk});
    Tensor bias_d = dev_f32(bias), mask_d = dev_f32(mask);
    AttentionArgs args;
    args.scale = float(1.0 / std::sqrt(double(c.d)));
    args.bias = c.bias_batch ? &bias_d : nullptr;
    args.key_mask = c.mask ? &mask_d : nullptr;
    Tensor out = ops::attention(dev(q), dev(k), dev(v), args);
    Array rbias = Array::from(bias), rmask = Array::from(mask);
    const Array* pb = c.bias_batch ? &rbias : nullptr;
    const Array* pm = c.mask ? &rmask : nullptr;
    expect_close(out, naive::attention(ref(q), ref(k), ref(v), args.scale, pb, pm), tol(), "attention");
    // the comparison notices a dropped mask or bias
    // (semantic checks need a non-empty output)
    if (c.mask && c.sk > 2 && out.numel() > 0) {
      EXPECT_GT(testing::rel_error(out, naive::attention(ref(q), ref(k), ref(v), args.scale, pb, nullptr)), 10 * tol());
    }
    if (c.bias_batch && out.numel() > 0) {
      EXPECT_GT(testing::rel_error(out, naive::attention(ref(q), ref(k), ref(v), args.scale, nullptr, pm)), 10 * tol());
    }
  }
}

// A query row with nothing to attend to gives zeros (not NaN): every key of a
// batch entry masked, a row of -inf bias, or no keys at all.
TEST_P(BackendOps, AttentionWithNothingToAttendGivesZeros) {
  const int64_t b = 2, sq = 40, sk = 300, h = 2, d = 16;
  Tensor q = rand({b, sq, h, d}), k = rand({b, sk, h, d}), v = rand({b, sk, h, d});
  std::vector<float> keep(size_t(b * sk), 1.0f);
  std::fill(keep.begin() + sk, keep.end(), 0.0f);  // batch entry 1: every key masked
  Tensor mask = Tensor::from_vector(keep, {b, sk});
  Tensor bias = Tensor::zeros({1, h, sq, sk});
  std::fill_n(bias.f32() + 5 * sk, sk, -INFINITY);  // head 0, query 5: every key -inf
  Tensor mask_d = dev_f32(mask), bias_d = dev_f32(bias);
  AttentionArgs args;
  args.scale = 0.25f;
  args.key_mask = &mask_d;
  args.bias = &bias_d;
  Tensor out = ops::attention(dev(q), dev(k), dev(v), args);
  Array rmask = Array::from(mask), rbias = Array::from(bias);
  Array expected = naive::attention(ref(q), ref(k), ref(v), args.scale, &rbias, &rmask);
  expect_close(out, expected, tol(), "attention");
  Array got = Array::from(out);
  for (int64_t f = 0; f < got.numel(); ++f) {
    std::vector<int64_t> idx = naive::unravel(f, got.shape);
    if (idx[0] == 1 || (idx[1] == 5 && idx[2] == 0)) {
      ASSERT_EQ(got.v[size_t(f)], 0.0) << "at " << f;
    }
  }

  // The mask alone (the masked short-key kernel on the GPU): entry 1 sees no key.
  AttentionArgs mask_only;
  mask_only.scale = 0.25f;
  Tensor k_short = rand({b, 40, h, d}), v_short = rand({b, 40, h, d});
  std::vector<float> keep_short(size_t(b * 40), 1.0f);
  std::fill(keep_short.begin() + 40, keep_short.end(), 0.0f);
  keep_short[3] = 0.0f;
  Tensor mask_short = Tensor::from_vector(keep_short, {b, 40}), mask_short_d = dev_f32(mask_short);
  mask_only.key_mask = &mask_short_d;
  Tensor masked = ops::attention(dev(q), dev(k_short), dev(v_short), mask_only);
  Array rmask_short = Array::from(mask_short);
  expect_close(masked, naive::attention(ref(q), ref(k_short), ref(v_short), 0.25, nullptr, &rmask_short), tol(),
               "masked attention");
  Array got_masked = Array::from(masked);
  for (int64_t f = got_masked.numel() / 2; f < got_masked.numel(); ++f) ASSERT_EQ(got_masked.v[size_t(f)], 0.0);

  Tensor none = rand({b, 0, h, d});
  Tensor empty_keys = ops::attention(dev(q), dev(none), dev(none), AttentionArgs{});
  expect_close(empty_keys, Array::zeros(q.shape()), 0.0, "attention");
}

// Scores around +-1e4 must not overflow the exponentials. Integer q and k
// make every score exact in f32, so the comparison isolates the softmax's
// stability from the rounding of the scores.
TEST_P(BackendOps, AttentionLargeLogits) {
  std::mt19937 rng(14);
  for (auto [sq, sk] : {std::pair<int64_t, int64_t>{40, 300}, {3, 600}}) {
    const int64_t b = 1, h = 2, d = 16;
    auto ints = [&](const Shape& s, int lim) {
      std::vector<float> v(size_t(shape_numel(s)));
      for (float& e : v) e = float(pick(rng, -lim, lim));
      return Tensor::from_vector(v, s);
    };
    Tensor q = ints({b, sq, h, d}, 30), k = ints({b, sk, h, d}, 30), v = rand({b, sk, h, d});
    AttentionArgs args;  // scale 1: scores are dot products of up to 16 * 900 = 14400
    Tensor out = ops::attention(dev(q), dev(k), dev(v), args);
    expect_close(out, naive::attention(ref(q), ref(k), ref(v), 1.0, nullptr, nullptr), tol(), "attention large logits");
  }
}

// ---------------------------------------------------------------- normalisation

TEST_P(BackendOps, LayerNorm) {
  std::mt19937 rng(21);
  // also head-sized rows of 16 to 128 elements (4 to 16 vectors: the QK-norm kernel), rows not filling a block
  std::vector<Shape> shapes = {{1, 1},      {3, 5, 17},  {2, 1000},  {4, 0},    {0, 8},
                               {2, 1, 1, 3}, {5, 37, 64}, {3, 11, 32}, {131, 128}, {7, 16}};
  for (int i = 0; i < 3; ++i) shapes.push_back(random_shape(rng, int(pick(rng, 1, 4)), 1, 30));
  for (const Shape& s : shapes) {
    for (int affine = 0; affine < 3; ++affine) {  // none, weight only, weight and bias
      SCOPED_TRACE(cat(shape_str(s), " affine ", affine));
      Tensor x = rand(s, -3, 3), w = rand({s.back()}, 0.5, 1.5), b = rand({s.back()});
      Tensor wd = dev(w), bd = dev(b);
      Array rw = ref(w), rb = ref(b);
      const float eps = affine == 1 ? 1e-6f : 1e-5f;
      Tensor out = ops::layer_norm(dev(x), affine ? &wd : nullptr, affine == 2 ? &bd : nullptr, eps);
      expect_close(out, naive::layer_norm(ref(x), affine ? &rw : nullptr, affine == 2 ? &rb : nullptr, eps), tol(),
                   "layer_norm");
    }
  }
  // long rows far from zero: a one-pass variance in f32 would cancel catastrophically
  // (f32 only: bf16 and f16 round these inputs to a handful of values, leaving no signal)
  if (GetParam().dtype != DType::f32) return;
  for (const Shape& s : {Shape{2, 50000}, Shape{300, 64}}) {
    Tensor x = rand(s, 999, 1001);
    expect_close(ops::layer_norm(dev(x), nullptr, nullptr, 1e-6f), naive::layer_norm(ref(x), nullptr, nullptr, 1e-6),
                 tol(), "layer_norm");
  }
}

TEST_P(BackendOps, RmsNorm) {
  std::mt19937 rng(22);
  std::vector<Shape> shapes = {{1, 1}, {3, 5, 17}, {2, 4096}, {4, 0}, {0, 8}, {5, 37, 64}, {3, 11, 32}, {7, 16}};
  for (int i = 0; i < 3; ++i) shapes.push_back(random_shape(rng, int(pick(rng, 1, 4)), 1, 30));
  for (const Shape& s : shapes) {
    for (bool affine : {false, true}) {
      SCOPED_TRACE(cat(shape_str(s), affine ? " affine" : ""));
      Tensor x = rand(s, -3, 3), w = rand({s.back()}, 0.5, 1.5);
      Tensor wd = dev(w);
      Array rw = ref(w);
      Tensor out = ops::rms_norm(dev(x), affine ? &wd : nullptr, 1e-6f);
      expect_close(out, naive::rms_norm(ref(x), affine ? &rw : nullptr, 1e-6), tol(), "rms_norm");
    }
  }
  Tensor x = rand({2, 50000}, 999, 1001);
  expect_close(ops::rms_norm(dev(x), nullptr, 1e-6f), naive::rms_norm(ref(x), nullptr, 1e-6), tol(), "rms_norm");
}

TEST_P(BackendOps, GroupNorm) {
  // (shape [B, C, ...], groups): ranks 2 to 5, one group, a group per channel, and in between
  std::vector<std::pair<Shape, int>> cases = {
      {{3, 4}, 2},           {{2, 6, 5}, 1},         {{2, 6, 5}, 3},       {{2, 6, 5}, 6},      {{2, 8, 4, 3}, 4},
      {{1, 12, 3, 4, 5}, 3}, {{2, 32, 2, 3, 3}, 32}, {{1, 4, 1, 1, 1}, 2}, {{2, 16, 9, 11}, 8}, {{0, 4, 3}, 2},
      // rows as wide as the kernels' vectors (8, 4, 2 elements), and groups split into chunks
      {{2, 16, 3, 8, 24}, 8}, {{1, 4, 2, 6, 90}, 2}, {{1, 8, 2, 64, 64}, 4},
  };
  for (const auto& [s, groups] : cases) {
    for (bool affine : {false, true}) {
      SCOPED_TRACE(cat(shape_str(s), " groups ", groups, affine ? " affine" : ""));
      Tensor x = rand(s, -2, 3), w = rand({s[1]}, 0.5, 1.5), b = rand({s[1]});
      Tensor wd = dev(w), bd = dev(b);
      Array rw = ref(w), rb = ref(b);
      Tensor out = ops::group_norm(dev(x), groups, affine ? &wd : nullptr, affine ? &bd : nullptr, 1e-6f);
      expect_close(out, naive::group_norm(ref(x), groups, affine ? &rw : nullptr, affine ? &rb : nullptr, 1e-6), tol(),
                   "group_norm");
      // statistics over a different grouping do not match (told apart in the
      // small cases: large groups of random values have much the same statistics)
      if (groups > 1 && out.numel() > 0 && out.numel() <= 4096) {
        Array one_group = naive::group_norm(ref(x), 1, affine ? &rw : nullptr, affine ? &rb : nullptr, 1e-6);
        // 3x: at bf16's tolerance a 10x margin exceeds the whole effect of the grouping
        EXPECT_GT(testing::rel_error(out, one_group), 3 * tol());
      }
    }
  }
}

TEST_P(BackendOps, Softmax) {
  std::mt19937 rng(23);
  std::vector<Shape> shapes = {{1, 1}, {3, 7}, {2, 3, 300}, {0, 5}, {4, 0}, {1, 70000}};
  for (int i = 0; i < 3; ++i) shapes.push_back(random_shape(rng, int(pick(rng, 1, 3)), 1, 50));
  for (const Shape& s : shapes) {
    SCOPED_TRACE(shape_str(s));
    Tensor x = rand(s, -5, 5);
    expect_close(ops::softmax(dev(x)), naive::softmax(ref(x)), tol(), "softmax");
  }
  // -inf entries (additive masking) get probability 0; a row of only -inf is NaN, as in torch
  Tensor masked = Tensor::from_vector({1, -INFINITY, 2, -INFINITY, -INFINITY, -INFINITY}, {2, 3});
  Tensor out = ops::softmax(dev(masked)).to(Device::cpu).to(DType::f32);
  expect_close(out.narrow0(0, 1), naive::softmax(naive::slice(ref(masked), 0, 0, 1)), tol(), "softmax");
  for (int i = 3; i < 6; ++i) EXPECT_TRUE(std::isnan(out.f32()[i]));
  // logits around +-1e4 (differences within a row stay exact in f32)
  for (float centre : {1e4f, -1e4f}) {
    Tensor x = rand({3, 1000}, centre - 20, centre + 20);
    expect_close(ops::softmax(dev(x)), naive::softmax(ref(x)), tol(), "softmax large logits");
  }
}

// ---------------------------------------------------------------- elementwise

TEST_P(BackendOps, Unary) {
  const std::pair<Unary, const char*> kOps[] = {
      {Unary::silu, "silu"}, {Unary::gelu_tanh, "gelu_tanh"}, {Unary::gelu_erf, "gelu_erf"}, {Unary::relu, "relu"},
      {Unary::tanh, "tanh"}, {Unary::sigmoid, "sigmoid"},     {Unary::exp, "exp"},           {Unary::square, "square"},
  };
  for (const auto& [op, name] : kOps) {
    for (const Shape& s : {Shape{1}, Shape{3, 5}, Shape{4099}, Shape{2, 0, 3}}) {
      SCOPED_TRACE(cat(name, " ", shape_str(s)));
      Tensor x = rand(s, -6, 6);
      expect_close(ops::unary(dev(x), op), naive::unary(ref(x), op), tol(), cat("unary ", name));
    }
    // saturating ranges: no NaN from exp overflow (exp itself stays within f32's range)
    std::vector<float> wide = {-1e4f, -100, -30, -5, -1e-3f, 0, 1e-3f, 5, 30, 100, 1e4f};
    if (op == Unary::exp) wide = {-100, -80, -30, -5, -1e-3f, 0, 1e-3f, 5, 30, 80};
    if (GetParam().dtype == DType::f16) {
      // f16 tops out at 65504: keep the inputs whose exact result it can hold
      std::vector<float> fits;
      for (float v : wide)
        if (std::fabs(naive::unary(ref(Tensor::from_vector({v}, {1})), op).v[0]) < 6e4) fits.push_back(v);
      wide = fits;
    }
    Tensor x = Tensor::from_vector(wide, {int64_t(wide.size())});
    Tensor out = ops::unary(dev(x), op);
    for (float e : out.to(Device::cpu).to_vector()) EXPECT_FALSE(std::isnan(e)) << name;
    expect_close(out, naive::unary(ref(x), op), tol(), cat("unary ", name));
  }
  // gelu_tanh is the tanh approximation: the exact erf form differs from it by up to ~1e-3 of the value,
  // which only the f32 tolerance can see
  if (GetParam().dtype != DType::f32) return;
  Tensor x = rand({1000}, -4, 4);
  EXPECT_GT(testing::rel_error(ops::unary(dev(x), Unary::gelu_tanh), naive::unary(ref(x), Unary::gelu_erf)),
            10 * tol());
}

TEST_P(BackendOps, BinaryBroadcasting) {
  const std::pair<Binary, const char*> kOps[] = {
      {Binary::add, "add"}, {Binary::sub, "sub"}, {Binary::mul, "mul"}, {Binary::div, "div"}};
  const std::vector<std::pair<Shape, Shape>> patterns = {
      {{3, 4, 5}, {3, 4, 5}},        // same shape
      {{3, 4, 5}, {1}},              // scalar
      {{1}, {3, 4, 5}},              // scalar first
      {{3, 4, 5}, {5}},              // row
      {{3, 4, 5}, {3, 4, 1}},        // column
      {{3, 4, 5}, {3, 1, 5}},        // middle dim
      {{2, 1, 4, 1}, {1, 3, 1, 5}},  // both broadcast, alternating
      {{2, 3, 4, 5}, {4, 5}},        // rank mismatch
      {{4, 1}, {2, 3, 4, 5}},        // rank mismatch, broadcast last dim
      {{1, 1}, {1, 1}},              // all size 1
      {{0, 5}, {5}},                 // empty
      {{7, 4099}, {1, 4099}},        // long rows
  };
  for (const auto& [op, name] : kOps) {
    for (const auto& [sa, sb] : patterns) {
      SCOPED_TRACE(cat(name, " ", shape_str(sa), " with ", shape_str(sb)));
      Tensor a = rand(sa, -2, 2);
      Tensor b = rand(sb, 0.5, 2);  // away from 0 for div
      expect_close(ops::on(dev(a)).binary(dev(a), dev(b), op), naive::binary(ref(a), ref(b), op), tol(),
                   cat("binary ", name));
    }
  }
}

TEST_P(BackendOps, Affine) {
  for (const Shape& s : {Shape{1}, Shape{3, 4}, Shape{4099}, Shape{0, 3}}) {
    for (auto [m, a] : {std::pair<float, float>{2.5f, -1.0f}, {0.0f, 3.0f}, {1.0f, 0.0f}, {-0.3f, 0.7f}}) {
      SCOPED_TRACE(cat(shape_str(s), " * ", m, " + ", a));
      Tensor x = rand(s, -2, 2);
      expect_close(ops::affine(dev(x), m, a), naive::affine(ref(x), m, a), tol(), "affine");
    }
  }
}

TEST_P(BackendOps, ModulateAndGatedAdd) {
  for (auto [b, s, c] : {std::array<int64_t, 3>{1, 1, 1}, {2, 7, 16}, {3, 33, 48}, {2, 0, 8}}) {
    SCOPED_TRACE(cat("B ", b, " S ", s, " C ", c));
    Tensor x = rand({b, s, c}), y = rand({b, s, c}), shift = rand({b, c}), scale = rand({b, c}), gate = rand({b, c});
    Tensor modulated = ops::modulate(dev(x), dev(shift), dev(scale));
    expect_close(modulated, naive::modulate(ref(x), ref(shift), ref(scale)), tol(), "modulate");
    expect_composite(Fusion::modulate, modulated, be().Backend::modulate(comp(x), comp(shift), comp(scale)));
    Tensor gated = ops::gated_add(dev(x), dev(gate), dev(y));
    expect_close(gated, naive::gated_add(ref(x), ref(gate), ref(y)), tol(), "gated_add");
    expect_composite(Fusion::gated_add, gated, be().Backend::gated_add(comp(x), comp(gate), comp(y)));
  }
}

// The adaLN of a block: layer norm, then shift and scale per batch entry.
// Widths as in AddNormModulateSplit (the CUDA row kernels' and one left to
// the unfused ops).
TEST_P(BackendOps, NormModulate) {
  const std::vector<std::array<int64_t, 3>> cases = {{1, 1, 1},    {2, 7, 16}, {2, 5, 1152}, {1, 3, 1920},
                                                     {2, 4, 3072}, {3, 9, 36}, {2, 4, 13},   {2, 0, 8}};
  for (auto [b, s, c] : cases) {
    for (int affine = 0; affine < 3; ++affine) {  // none, weight only, weight and bias
      SCOPED_TRACE(cat("B ", b, " S ", s, " C ", c, " affine ", affine));
      Tensor x = rand({b, s, c}, -2, 2), w = rand({c}, 0.5, 1.5), bias = rand({c});
      Tensor shift = rand({b, c}), scale = rand({b, c});
      Tensor wd = dev(w), bd = dev(bias), wc = comp(w), bc = comp(bias);
      Array rw = ref(w), rb = ref(bias);
      Tensor out = ops::norm_modulate(dev(x), affine ? &wd : nullptr, affine == 2 ? &bd : nullptr, 1e-6f, dev(shift),
                                      dev(scale));
      Array normed = naive::layer_norm(ref(x), affine ? &rw : nullptr, affine == 2 ? &rb : nullptr, 1e-6);
      expect_close(out, naive::modulate(normed, ref(shift), ref(scale)), tol(), "norm_modulate");
      expect_composite(Fusion::norm_modulate, out,
                       be().Backend::norm_modulate(comp(x), affine ? &wc : nullptr, affine == 2 ? &bc : nullptr, 1e-6f,
                                                   comp(shift), comp(scale)));
    }
  }
}

TEST_P(BackendOps, GroupNormScaleShift) {
  // x [B, C, T, H, W] against conditioning [B, C, T, h, W]; groups
  struct Case {
    Shape x;
    int64_t h;
    int groups;
  };
  for (const Case& c : {Case{{1, 4, 1, 2, 8}, 1, 2}, Case{{2, 8, 3, 6, 16}, 3, 4}, Case{{1, 6, 2, 4, 5}, 2, 3},
                        Case{{1, 8, 2, 32, 90}, 8, 4}, Case{{2, 4, 1, 4, 4}, 4, 1}, Case{{0, 4, 1, 2, 2}, 1, 2}}) {
    for (bool silu : {false, true}) {
      SCOPED_TRACE(cat(shape_str(c.x), " h ", c.h, " groups ", c.groups, silu ? " silu" : ""));
      Shape cs = c.x;
      cs[3] = c.h;
      Tensor x = rand(c.x, -2, 3), w = rand({c.x[1]}, 0.5, 1.5), b = rand({c.x[1]});
      Tensor scale = rand(cs, 0.5, 1.5), shift = rand(cs);
      Tensor wd = dev(w), bd = dev(b);
      Array rw = ref(w), rb = ref(b);
      // the reference: x's rows grouped by the conditioning row they take
      const int64_t rows = c.x[0] * c.x[1] * c.x[2] * c.h;
      auto reshaped = [](Array a, const Shape& s) {
        a.shape = s;
        return a;
      };
      Array want = reshaped(naive::group_norm(ref(x), c.groups, &rw, &rb, 1e-6), {rows, c.x[3] / c.h, c.x[4]});
      want = naive::binary(naive::binary(want, reshaped(ref(scale), {rows, 1, c.x[4]}), Binary::mul),
                           reshaped(ref(shift), {rows, 1, c.x[4]}), Binary::add);
      if (silu) want = naive::unary(want, Unary::silu);
      Tensor out = ops::group_norm_scale_shift(dev(x), c.groups, &wd, &bd, 1e-6f, dev(scale), dev(shift), silu);
      expect_close(out, reshaped(want, c.x), tol(), "group_norm_scale_shift");
      Tensor wc = comp(w), bc = comp(b);
      expect_composite(
          Fusion::group_norm_scale_shift, out,
          be().Backend::group_norm_scale_shift(comp(x), c.groups, &wc, &bc, 1e-6f, comp(scale), comp(shift), silu));
    }
  }
  Tensor x = rand({1, 4, 1, 4, 4}), cond = rand({1, 4, 1, 3, 4});  // 3 does not divide 4
  EXPECT_THROW(ops::group_norm_scale_shift(dev(x), 2, nullptr, nullptr, 1e-6f, dev(cond), dev(cond), true), Error);
}

// ---------------------------------------------------------------- layout (exact)

TEST_P(BackendOps, Permute) {
  std::mt19937 rng(31);
  for (int rank = 1; rank <= 6; ++rank) {
    std::vector<int> identity(static_cast<size_t>(rank));
    std::iota(identity.begin(), identity.end(), 0);
    std::vector<int> reversed(identity.rbegin(), identity.rend()), shuffled = identity;
    std::shuffle(shuffled.begin(), shuffled.end(), rng);
    for (const std::vector<int>& perm : {identity, reversed, shuffled}) {
      Shape s = random_shape(rng, rank, 1, rank > 4 ? 4 : 7);
      SCOPED_TRACE(cat(shape_str(s), " perm ", shape_str(Shape(perm.begin(), perm.end()))));
      Tensor x = rand(s);
      expect_close(ops::permute(dev(x), perm), naive::permute(ref(x), perm), 0.0, "permute");
      // 8-byte elements: ids beyond f32's exact integers
      std::vector<int64_t> ids(size_t(shape_numel(s)));
      for (int64_t& e : ids) e = (int64_t(1) << 40) + pick(rng, -1000000, 1000000);
      Tensor xi = ids_tensor(ids, s);
      expect_close(ops::permute(testing::to_device(xi, GetParam()), perm), naive::permute(Array::from(xi), perm), 0.0,
                   "permute i64");
    }
  }
  Tensor x = rand({3, 0, 4});
  expect_close(ops::permute(dev(x), {2, 0, 1}), naive::permute(ref(x), {2, 0, 1}), 0.0, "permute");
  // a different permutation of the same shape does not match
  Tensor y = rand({4, 4, 4});
  EXPECT_GT(testing::rel_error(ops::permute(dev(y), {1, 0, 2}), naive::permute(ref(y), {2, 1, 0})), 0.1);
}

TEST_P(BackendOps, Concat) {
  std::mt19937 rng(32);
  for (int rank = 1; rank <= 4; ++rank) {
    for (int dim = -1; dim < rank; ++dim) {
      const size_t d = size_t(dim < 0 ? dim + rank : dim);
      Shape base = random_shape(rng, rank, 1, 5);
      std::vector<Tensor> parts, dparts;
      std::vector<Array> rparts;
      for (int64_t len : {pick(rng, 1, 4), int64_t(0), pick(rng, 1, 4)}) {  // 3 parts, one empty
        Shape s = base;
        s[d] = len;
        Tensor p = rand(s);
        parts.push_back(p);
        dparts.push_back(dev(p));
        rparts.push_back(ref(p));
      }
      SCOPED_TRACE(cat(shape_str(base), " along ", dim));
      expect_close(ops::concat(dparts, dim), naive::concat(rparts, dim), 0.0, "concat");
    }
  }
}

TEST_P(BackendOps, Slice) {
  std::mt19937 rng(33);
  for (int rank = 1; rank <= 4; ++rank) {
    Shape s = random_shape(rng, rank, 2, 6);
    Tensor x = rand(s);
    for (int d = 0; d < rank; ++d) {
      const int64_t n = s[size_t(d)];
      for (auto [start, end] : {std::pair<int64_t, int64_t>{0, n}, {1, n - 1}, {n - 1, n}, {2, 2}, {0, 1}}) {
        SCOPED_TRACE(cat(shape_str(s), " dim ", d, " [", start, ", ", end, ")"));
        expect_close(ops::slice(dev(x), d, start, end), naive::slice(ref(x), d, start, end), 0.0, "slice");
      }
    }
    expect_close(ops::slice(dev(x), -1, 0, 1), naive::slice(ref(x), rank - 1, 0, 1), 0.0, "slice");
  }
}

TEST_P(BackendOps, Chunk) {
  Tensor x = rand({4, 6, 9});
  for (auto [n, dim] : {std::pair<int, int>{1, 0}, {2, 0}, {4, 0}, {2, 1}, {3, 1}, {6, 1}, {3, 2}, {9, -1}}) {
    SCOPED_TRACE(cat(n, " chunks along ", dim));
    std::vector<Tensor> chunks = ops::chunk(dev(x), n, dim);
    ASSERT_EQ(chunks.size(), size_t(n));
    const int64_t step = x.dim(dim) / n;
    for (int i = 0; i < n; ++i)
      expect_close(chunks[size_t(i)], naive::slice(ref(x), dim, i * step, (i + 1) * step), 0.0, "chunk");
  }
  EXPECT_THROW(ops::chunk(dev(x), 2, 2), Error);  // 9 does not split in 2
}

TEST_P(BackendOps, Pad) {
  using Pads = std::vector<std::array<int64_t, 2>>;
  const std::vector<std::pair<Shape, Pads>> cases = {
      {{3, 5}, {{2, 1}}},                           // last dim
      {{2, 3, 4, 5}, {{1, 0}, {0, 2}}},             // two trailing dims, one-sided
      {{1, 4, 6, 7}, {{1, 1}, {2, 0}, {0, 3}}},     // three trailing dims
      {{2, 2}, {{5, 4}}},                           // padding wider than the dim
      {{3, 1, 2}, {{1, 2}, {2, 2}, {0, 1}}},        // every dim, size-1 dims
      {{2, 3, 4}, {{0, 0}}},                        // nothing
      {{1, 2, 3, 4, 5}, {{1, 0}, {0, 1}, {2, 2}}},  // rank 5 (conv3d causal padding)
  };
  for (const auto& [s, pads] : cases) {
    for (PadMode mode : {PadMode::zeros, PadMode::replicate}) {
      SCOPED_TRACE(cat(shape_str(s), " over ", pads.size(), " dims", mode == PadMode::zeros ? " zeros" : " replicate"));
      Tensor x = rand(s);
      expect_close(ops::pad(dev(x), pads, mode), naive::pad(ref(x), pads, mode), 0.0, "pad");
    }
  }
  // zero padding of an empty dimension
  Tensor x = rand({2, 0, 3});
  expect_close(ops::pad(dev(x), {{1, 1}, {0, 0}}, PadMode::zeros), naive::pad(ref(x), {{1, 1}, {0, 0}}, PadMode::zeros),
               0.0, "pad");
  EXPECT_THROW(ops::pad(dev(x), {{1, 1}, {0, 0}}, PadMode::replicate), Error);
}

TEST_P(BackendOps, UpsampleNearest) {
  const std::vector<std::pair<Shape, std::vector<int>>> cases = {
      {{3}, {4}},
      {{2, 3, 4}, {2}},
      {{2, 3, 4, 5}, {2, 3}},
      {{1, 2, 3, 4, 5}, {1, 2, 2}},
      {{1, 2, 3, 4, 5}, {3, 1, 2}},
      {{2, 1, 1}, {1, 1}},
      {{2, 0, 3}, {2, 2}},
  };
  for (const auto& [s, scales] : cases) {
    SCOPED_TRACE(cat(shape_str(s), " by ", shape_str(Shape(scales.begin(), scales.end()))));
    Tensor x = rand(s);
    expect_close(ops::upsample_nearest(dev(x), scales), naive::upsample_nearest(ref(x), scales), 0.0, "upsample");
  }
}

TEST_P(BackendOps, Embedding) {
  std::mt19937 rng(34);
  for (auto [v, d] : {std::pair<int64_t, int64_t>{10, 4}, {1, 7}, {50, 33}}) {
    Tensor table = rand({v, d});
    for (const Shape& s : {Shape{5}, Shape{2, 3}, Shape{1, 1, 4}, Shape{0}}) {
      SCOPED_TRACE(cat("table ", v, "x", d, " ids ", shape_str(s)));
      std::vector<int64_t> ids(size_t(shape_numel(s)));
      for (int64_t& e : ids) e = pick(rng, 0, v - 1);
      Tensor t = ids_tensor(ids, s);
      expect_close(ops::embedding(testing::to_device(t, GetParam()), dev(table)),
                   naive::embedding(Array::from(t), ref(table)), 0.0, "embedding");
    }
    for (int64_t bad : {v, int64_t(-1)}) {
      Tensor t = ids_tensor({0, bad}, {2});
      EXPECT_THROW(ops::embedding(testing::to_device(t, GetParam()), dev(table)), Error) << "id " << bad;
    }
  }
}

// ---------------------------------------------------------------- convolution

struct ConvCase {
  Shape x;  // [B, C, (T,) H, W]
  int64_t out_channels;
  std::vector<int> kernel, stride, padding;
};

TEST_P(BackendOps, Conv2d) {
  const std::vector<ConvCase> cases = {
      {{2, 3, 7, 9}, 4, {3, 3}, {1, 1}, {1, 1}},    {{2, 3, 7, 9}, 4, {3, 3}, {2, 2}, {1, 1}},
      {{1, 2, 5, 5}, 3, {1, 1}, {1, 1}, {0, 0}},    {{2, 4, 9, 11}, 5, {3, 3}, {2, 2}, {2, 2}},
      {{1, 1, 3, 3}, 1, {3, 3}, {1, 1}, {0, 0}},    {{2, 3, 8, 6}, 2, {1, 1}, {2, 2}, {0, 0}},
      {{2, 5, 6, 7}, 3, {3, 3}, {1, 2}, {2, 0}},    {{2, 3, 5, 8}, 4, {3, 1}, {1, 1}, {1, 0}},
      {{1, 16, 12, 10}, 8, {2, 2}, {2, 2}, {0, 0}},                                             // patch embedding
      {{0, 3, 5, 5}, 2, {3, 3}, {1, 1}, {1, 1}},    {{2, 0, 5, 5}, 2, {3, 3}, {1, 1}, {1, 1}},  // empty
  };
  for (const ConvCase& c : cases) {
    for (bool with_bias : {false, true}) {
      SCOPED_TRACE(cat("x ", shape_str(c.x), " O ", c.out_channels, " k ", c.kernel[0], "x", c.kernel[1], " s ",
                       c.stride[0], ",", c.stride[1], " p ", c.padding[0], ",", c.padding[1]));
      Tensor x = rand(c.x), w = rand({c.out_channels, c.x[1], c.kernel[0], c.kernel[1]}), b = rand({c.out_channels});
      Tensor bd = dev(b);
      Array rb = ref(b);
      Tensor out = ops::conv2d(dev(x), dev(w), with_bias ? &bd : nullptr, {c.stride[0], c.stride[1]},
                               {c.padding[0], c.padding[1]});
      expect_close(out, naive::conv(ref(x), ref(w), with_bias ? &rb : nullptr, c.stride, c.padding), tol(), "conv2d");
    }
  }
  // the kernel does not fit: an error, not one output computed from padding
  Tensor x = rand({1, 1, 2, 2}), w = rand({1, 1, 3, 3});
  EXPECT_THROW(ops::conv2d(dev(x), dev(w), nullptr, {2, 2}, {0, 0}), Error);
}

TEST_P(BackendOps, Conv3d) {
  const std::vector<ConvCase> cases = {
      {{2, 3, 5, 7, 9}, 4, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}}, {{2, 3, 5, 7, 9}, 4, {3, 3, 3}, {2, 2, 2}, {1, 1, 1}},
      {{1, 2, 3, 5, 5}, 3, {1, 1, 1}, {1, 1, 1}, {0, 0, 0}}, {{2, 4, 4, 9, 7}, 2, {3, 3, 3}, {1, 2, 2}, {0, 2, 1}},
      {{1, 2, 3, 4, 4}, 3, {3, 1, 3}, {2, 1, 1}, {2, 0, 1}}, {{2, 3, 1, 6, 5}, 2, {1, 3, 3}, {1, 1, 2}, {0, 1, 1}},
  };
  for (const ConvCase& c : cases) {
    for (bool with_bias : {false, true}) {
      SCOPED_TRACE(cat("x ", shape_str(c.x), " O ", c.out_channels, " k ",
                       shape_str(Shape(c.kernel.begin(), c.kernel.end())), " s ",
                       shape_str(Shape(c.stride.begin(), c.stride.end())), " p ",
                       shape_str(Shape(c.padding.begin(), c.padding.end()))));
      Tensor x = rand(c.x), b = rand({c.out_channels});
      Tensor w = rand({c.out_channels, c.x[1], c.kernel[0], c.kernel[1], c.kernel[2]});
      Tensor bd = dev(b);
      Array rb = ref(b);
      Tensor out = ops::conv3d(dev(x), dev(w), with_bias ? &bd : nullptr, {c.stride[0], c.stride[1], c.stride[2]},
                               {c.padding[0], c.padding[1], c.padding[2]});
      expect_close(out, naive::conv(ref(x), ref(w), with_bias ? &rb : nullptr, c.stride, c.padding), tol(), "conv3d");
    }
  }
  Tensor x = rand({1, 1, 2, 4, 4}), w = rand({1, 1, 3, 3, 3});
  EXPECT_THROW(ops::conv3d(dev(x), dev(w), nullptr, {1, 1, 1}, {0, 0, 0}), Error);
}

TEST_P(BackendOps, Conv3dJoined) {
  // parts' frame counts (joined along time), channels, height, width: odd and even
  // sizes (the CUDA transposes move 8 or 2 elements at a time where every size allows)
  struct Case {
    std::vector<int64_t> frames;
    int64_t c, h, w;
  };
  for (const Case& c : {Case{{2, 3}, 3, 5, 6}, Case{{1, 1, 2}, 4, 4, 4}, Case{{2, 1}, 2, 3, 3}, Case{{4}, 3, 2, 4},
                        Case{{1, 1, 1, 1}, 2, 4, 2}, Case{{2, 2}, 8, 4, 4}, Case{{2, 3}, 16, 2, 8}}) {
    SCOPED_TRACE(cat("frames ", shape_str(Shape(c.frames.begin(), c.frames.end())), " C ", c.c, " ", c.h, "x", c.w));
    std::vector<Tensor> parts, dparts, cparts;
    for (int64_t f : c.frames) {
      parts.push_back(rand({2, c.c, f, c.h, c.w}));
      dparts.push_back(dev(parts.back()));
      cparts.push_back(comp(parts.back()));
    }
    Tensor joined = ops::concat(parts, 2), w = rand({8, c.c, 3, 3, 3}), b = rand({8});
    Tensor bd = dev(b), bc = comp(b);
    Array rb = ref(b);
    Tensor out = ops::conv3d_joined(dparts, dev(w), &bd, {1, 1, 1}, {0, 1, 1});
    expect_close(out, naive::conv(ref(joined), ref(w), &rb, {1, 1, 1}, {0, 1, 1}), tol(), "conv3d_joined");
    expect_composite(Fusion::conv3d_joined, out,
                     be().Backend::conv3d_joined(cparts, comp(w), &bc, {1, 1, 1}, {0, 1, 1}));
  }
  // parts that differ in anything but their frame count do not join
  std::vector<Tensor> bad = {dev(rand({1, 2, 2, 4, 4})), dev(rand({1, 2, 2, 4, 5}))};
  EXPECT_THROW(ops::conv3d_joined(bad, dev(rand({1, 2, 3, 3, 3})), nullptr, {1, 1, 1}, {0, 1, 1}), Error);
}

// ---------------------------------------------------------------- model helpers

TEST_P(BackendOps, Rope) {
  for (auto [b, s, h, d] :
       {std::array<int64_t, 4>{1, 1, 1, 2}, {2, 7, 3, 16}, {1, 33, 2, 64}, {2, 5, 4, 72}, {2, 0, 2, 16}}) {
    SCOPED_TRACE(cat("B ", b, " S ", s, " H ", h, " D ", d));
    Tensor x = rand({b, s, h, d}), cos = rand({s, d}), sin = rand({s, d});
    Tensor out = ops::rope(dev(x), dev(cos), dev(sin));
    expect_close(out, naive::rope(ref(x), ref(cos), ref(sin)), tol(), "rope");
    // the opposite rotation does not match
    Array neg_sin = naive::affine(ref(sin), -1, 0);
    if (out.numel() > 0) {
      EXPECT_GT(testing::rel_error(out, naive::rope(ref(x), ref(cos), neg_sin)), 10 * tol());
    }
  }
}

// The fused ops of joint sequences and of QK norm + rotary positions, against
// the naive ops composed on the segments.
TEST_P(BackendOps, RopeFromStart) {
  for (auto [s, start, d] : {std::array<int64_t, 3>{9, 4, 16}, {5, 0, 8}, {6, 6, 16}}) {
    SCOPED_TRACE(cat("S ", s, " start ", start, " D ", d));
    Tensor x = rand({2, s, 3, d}), cos = rand({s - start, d}), sin = rand({s - start, d});
    Array rx = ref(x);
    Array want = naive::concat({naive::slice(rx, 1, 0, start), naive::rope(naive::slice(rx, 1, start, s), ref(cos), ref(sin))}, 1);
    expect_close(ops::rope(dev(x), dev(cos), dev(sin), start), want, tol(), "rope from start");
  }
}

TEST_P(BackendOps, NormRope) {
  for (auto [s, start, d] : {std::array<int64_t, 3>{9, 4, 16}, {7, 0, 64}, {5, 2, 72}, {4, 4, 128}}) {
    for (bool affine : {false, true}) {
      SCOPED_TRACE(cat("S ", s, " start ", start, " D ", d, affine ? " affine" : ""));
      Tensor x = rand({2, s, 3, d}, -2, 2), w = rand({d}, 0.5, 1.5), b = rand({d});
      Tensor cos = rand({s - start, d}), sin = rand({s - start, d});
      Array rw = ref(w), rb = ref(b);
      Array normed = naive::layer_norm(ref(x), affine ? &rw : nullptr, affine ? &rb : nullptr, 1e-6);
      Array want = naive::concat(
          {naive::slice(normed, 1, 0, start), naive::rope(naive::slice(normed, 1, start, s), ref(cos), ref(sin))}, 1);
      Tensor dw = dev(w), db = dev(b), wc = comp(w), bc = comp(b);
      Tensor out = ops::norm_rope(dev(x), affine ? &dw : nullptr, affine ? &db : nullptr, 1e-6f, dev(cos), dev(sin), start);
      expect_close(out, want, tol(), "norm_rope");
      expect_composite(Fusion::norm_rope, out,
                       be().Backend::norm_rope(comp(x), affine ? &wc : nullptr, affine ? &bc : nullptr, 1e-6f,
                                               comp(cos), comp(sin), start));
    }
  }
}

TEST_P(BackendOps, SplitModulationAndGate) {
  for (auto [s, split, c] : {std::array<int64_t, 3>{7, 3, 24}, {5, 0, 16}, {6, 6, 8}, {9, 4, 1920}}) {
    SCOPED_TRACE(cat("S ", s, " split ", split, " C ", c));
    Tensor x = rand({2, s, c}, -2, 2), y = rand({2, s, c}), w = rand({c}, 0.5, 1.5), b = rand({c});
    Tensor sa = rand({2, c}), ca = rand({2, c}), sb = rand({2, c}), cb = rand({2, c});
    Array rw = ref(w), rb = ref(b);
    Array normed = naive::layer_norm(ref(x), &rw, &rb, 1e-5);
    Array want = naive::concat({naive::modulate(naive::slice(normed, 1, 0, split), ref(sa), ref(ca)),
                                naive::modulate(naive::slice(normed, 1, split, s), ref(sb), ref(cb))},
                               1);
    Tensor dw = dev(w), db = dev(b), wc = comp(w), bc = comp(b);
    Tensor normed_out = ops::norm_modulate_split(dev(x), &dw, &db, 1e-5f, split, dev(sa), dev(ca), dev(sb), dev(cb));
    expect_close(normed_out, want, tol(), "norm_modulate_split");
    expect_composite(
        Fusion::norm_modulate_split, normed_out,
        be().Backend::norm_modulate_split(comp(x), &wc, &bc, 1e-5f, split, comp(sa), comp(ca), comp(sb), comp(cb)));
    Array rx = ref(x), ry = ref(y);
    Array gated = naive::concat({naive::gated_add(naive::slice(rx, 1, 0, split), ref(sa), naive::slice(ry, 1, 0, split)),
                                 naive::gated_add(naive::slice(rx, 1, split, s), ref(sb), naive::slice(ry, 1, split, s))},
                                1);
    Tensor gated_out = ops::gated_add_split(dev(x), dev(y), split, dev(sa), dev(sb));
    expect_close(gated_out, gated, tol(), "gated_add_split");
    expect_composite(Fusion::gated_add_split, gated_out,
                     be().Backend::gated_add_split(comp(x), comp(y), split, comp(sa), comp(sb)));
  }
}

// The residual add fused with the next norm: {x + gate * y, norm_modulate_split
// of that sum}. Widths cover the CUDA backend's warp-per-row kernels (1152:
// Latte, 1920: CogVideoX-2b), a block-per-row width, and one it leaves to the
// unfused ops (not a multiple of the vector width).
TEST_P(BackendOps, AddNormModulateSplit) {
  for (auto [s, split, c] : {std::array<int64_t, 3>{7, 3, 1152}, {5, 5, 1920}, {6, 0, 3072}, {9, 4, 36}, {4, 2, 13}}) {
    for (bool gated : {true, false}) {
      SCOPED_TRACE(cat("S ", s, " split ", split, " C ", c, gated ? " gated" : ""));
      Tensor x = rand({2, s, c}, -2, 2), y = rand({2, s, c}), w = rand({c}, 0.5, 1.5), b = rand({c});
      Tensor ga = rand({2, c}), gb = rand({2, c});
      Tensor sa = rand({2, c}), ca = rand({2, c}), sb = rand({2, c}), cb = rand({2, c});
      Tensor dw = dev(w), db = dev(b), dga = dev(ga), dgb = dev(gb);
      auto [sum, normed] = ops::add_norm_modulate_split(dev(x), dev(y), split, gated ? &dga : nullptr,
                                                        gated ? &dgb : nullptr, &dw, &db, 1e-5f, dev(sa), dev(ca),
                                                        dev(sb), dev(cb));
      Array rx = ref(x), ry = ref(y);
      Array want_sum = naive::binary(rx, ry, Binary::add);
      if (gated) {
        want_sum = naive::concat(
            {naive::gated_add(naive::slice(rx, 1, 0, split), ref(ga), naive::slice(ry, 1, 0, split)),
             naive::gated_add(naive::slice(rx, 1, split, s), ref(gb), naive::slice(ry, 1, split, s))},
            1);
        // the comparison notices a dropped gate
        EXPECT_GT(testing::rel_error(sum, naive::binary(rx, ry, Binary::add)), 10 * tol());
      }
      expect_close(sum, want_sum, tol(), "residual sum");
      // The norm applies to the sum as stored (rounded to the dtype), itself checked above.
      Array rw = ref(w), rb = ref(b);
      Array n = naive::layer_norm(Array::from(sum), &rw, &rb, 1e-5);
      Array want = naive::concat({naive::modulate(naive::slice(n, 1, 0, split), ref(sa), ref(ca)),
                                  naive::modulate(naive::slice(n, 1, split, s), ref(sb), ref(cb))},
                                 1);
      expect_close(normed, want, tol(), "normed sum");
      // The composite: its sum from the same inputs; its norm, like the
      // reference's, of the sum as stored (the composite norms the sum it
      // made with norm_modulate_split).
      Tensor wc = comp(w), bc = comp(b), gac = comp(ga), gbc = comp(gb);
      Tensor csum =
          be().Backend::add_norm_modulate_split(comp(x), comp(y), split, gated ? &gac : nullptr, gated ? &gbc : nullptr,
                                                &wc, &bc, 1e-5f, comp(sa), comp(ca), comp(sb), comp(cb))
              .first;
      expect_composite(Fusion::add_norm_modulate_split, sum, csum, " sum");
      Tensor cnormed =
          be().norm_modulate_split(sum.to(DType::f32), &wc, &bc, 1e-5f, split, comp(sa), comp(ca), comp(sb), comp(cb));
      expect_composite(Fusion::add_norm_modulate_split, normed, cnormed, " normed");
    }
  }
}

// The fusions by enum: each has its own name, the walk reaches the last one,
// and the backend answers supports() for each. Whether its answers match
// what it overrides, the fusion tests above check: a fusion it says it has no
// kernel for must equal the composite exactly in f32.
TEST_P(BackendOps, EveryFusionIsNamedAndAnswered) {
  std::set<std::string> names;
  int native = 0;
  for (int i = 0; i < kFusionCount; ++i) {
    const char* name = fusion_name(Fusion(i));
    ASSERT_NE(name, nullptr) << "fusion " << i << " has no name";
    EXPECT_TRUE(names.insert(name).second) << name << " named twice";
    native += be().supports(Fusion(i));
  }
  // Past the last fusion there is no name: kFusionCount counts them all.
  EXPECT_EQ(fusion_name(Fusion(kFusionCount)), nullptr);
  RecordProperty("native_fusions", native);
}

// ---------------------------------------------------------------- dtypes and copies

// f32 -> f16/bf16 on the device against the nearest value found by search,
// over random bit patterns (every magnitude) and the edges of each format.
TEST_P(BackendOps, CastFromF32) {
  std::mt19937 rng(41);
  std::vector<float> values = {0.0f,     -0.0f,    1.0f,      -2.5f,          1e-8f,         6e-5f,       5.96e-8f,
                               2.98e-8f, 65504.0f, 65519.0f,  65520.0f,       70000.0f,      1e30f,       3.4e38f,
                               -3.4e38f, INFINITY, -INFINITY, 1.00048828125f, 1.0009765625f, 1.00390625f, 1.005859375f};
  while (values.size() < 20000) {
    uint32_t bits = uint32_t(rng());
    float f;
    std::memcpy(&f, &bits, 4);
    if (!std::isnan(f)) values.push_back(f);
  }
  Tensor x = Tensor::from_vector(values, {int64_t(values.size())});
  for (DType to : {DType::f16, DType::bf16}) {
    SCOPED_TRACE(dtype_name(to));
    Tensor out = testing::to_device(x, GetParam()).to(to);
    EXPECT_EQ(out.dtype(), to);
    Array expected = Array::from(x);
    for (double& e : expected.v) e = naive::round_to(to, e);
    expect_close(out.to(Device::cpu), expected, 0.0, cat("cast F32 to ", dtype_name(to)));
    // NaN stays NaN
    Tensor nan = testing::to_device(Tensor::from_vector({NAN, -NAN}, {2}), GetParam()).to(to);
    for (float e : nan.to_vector()) EXPECT_TRUE(std::isnan(e));
  }
}

// f16/bf16 -> f32 (exact) and -> the other 16-bit format, for every bit pattern.
TEST_P(BackendOps, CastFrom16Bit) {
  for (DType from : {DType::f16, DType::bf16}) {
    SCOPED_TRACE(dtype_name(from));
    std::vector<uint16_t> patterns;
    for (uint32_t bits = 0; bits < 0x10000u; ++bits)
      if (!std::isnan(naive::decode16(from, uint16_t(bits)))) patterns.push_back(uint16_t(bits));
    Tensor x = Tensor::empty({int64_t(patterns.size())}, from);
    std::memcpy(x.raw(), patterns.data(), patterns.size() * 2);
    Array decoded = Array::zeros(x.shape());
    for (size_t i = 0; i < patterns.size(); ++i) decoded.v[i] = naive::decode16(from, patterns[i]);
    Tensor xd = testing::to_device(x, GetParam());
    expect_close(xd.to(DType::f32).to(Device::cpu), decoded, 0.0, cat("cast ", dtype_name(from), " to F32"));
    const DType other = from == DType::f16 ? DType::bf16 : DType::f16;
    Array expected = decoded;
    for (double& e : expected.v) e = naive::round_to(other, e);
    expect_close(xd.to(other).to(Device::cpu), expected, 0.0,
                 cat("cast ", dtype_name(from), " to ", dtype_name(other)));
  }
}

TEST_P(BackendOps, ToAndClone) {
  Tensor x = rand({3, 4, 5});
  const Array expected = ref(x);
  Tensor xd = x.to(GetParam().device).to(dtype());
  EXPECT_EQ(xd.device(), GetParam().device);
  EXPECT_EQ(xd.dtype(), dtype());
  // there and back is exact, for floats and integers
  expect_close(xd.to(Device::cpu), expected, 0.0, "to");
  Tensor ids = ids_tensor({1, -2, int64_t(1) << 50}, {3});
  expect_close(ids.to(GetParam().device).to(Device::cpu), Array::from(ids), 0.0, "to i64");
  // a clone of a view copies only the view
  expect_close(xd.narrow0(1, 2).clone(), naive::slice(expected, 0, 1, 3), 0.0, "clone of a view");
  // a clone is a copy on the same device, independent of the original
  Tensor c = xd.clone();
  EXPECT_EQ(c.device(), xd.device());
  EXPECT_NE(c.raw(), xd.raw());
  Tensor zeros = Tensor::zeros(xd.shape(), xd.dtype(), xd.device());
  copy_bytes(xd.raw(), xd.device(), zeros.raw(), zeros.device(), xd.nbytes());  // overwrite the original
  expect_close(c, expected, 0.0, "clone");
  expect_close(xd, Array::zeros(x.shape()), 0.0, "zeros");
  // empty tensors
  Tensor e = rand({0, 3});
  EXPECT_EQ(dev(e).clone().to(Device::cpu).shape(), (Shape{0, 3}));
}

// ---------------------------------------------------------------- errors

TEST_P(BackendOps, BadShapesFail) {
  Tensor a = dev(rand({3, 4})), b = dev(rand({5}));
  EXPECT_THROW(ops::add(a, b), Error);
  EXPECT_THROW(ops::linear(a, dev(rand({2, 5}))), Error);
  EXPECT_THROW(ops::matmul(dev(rand({2, 3, 4})), dev(rand({2, 5, 6}))), Error);
  EXPECT_THROW(ops::permute(a, {0, 0}), Error);
  EXPECT_THROW(ops::permute(a, {0}), Error);
  EXPECT_THROW(ops::concat({a, dev(rand({3, 5}))}, 0), Error);
  EXPECT_THROW(ops::slice(a, 1, 2, 5), Error);
  EXPECT_THROW(ops::slice(a, 1, 3, 2), Error);
  EXPECT_THROW(ops::group_norm(dev(rand({2, 6, 4})), 4, nullptr, nullptr, 1e-6f), Error);
  EXPECT_THROW(ops::upsample_nearest(a, {0}), Error);
  EXPECT_THROW(ops::rope(dev(rand({1, 3, 2, 5})), dev(rand({3, 5})), dev(rand({3, 5}))), Error);
  Tensor q = dev(rand({1, 4, 2, 8}));
  Tensor bias = dev_f32(rand({1, 2, 4, 5}));
  AttentionArgs args;
  args.bias = &bias;
  EXPECT_THROW(ops::attention(q, q, q, args), Error);
}

std::string case_label(const ::testing::TestParamInfo<BackendCase>& info) {
  return testing::case_name(info.param);
}

INSTANTIATE_TEST_SUITE_P(Backends, BackendOps, ::testing::ValuesIn(testing::backend_cases()), case_label);

}  // namespace
}  // namespace pab
