// GEMMs through cuBLASLt: linear layers with the bias (and GELU) fused into
// the epilogue, and batched matrix products. Algorithms are chosen once per
// shape by cuBLASLt's heuristic and cached.
#include <cmath>
#include <cstdlib>
#include <map>
#include <tuple>

#include "backend/cuda/common.cuh"

namespace pab {

namespace {

#define PAB_LT_CHECK(expr)                                                                    \
  do {                                                                                        \
    cublasStatus_t pab_st_ = (expr);                                                          \
    if (pab_st_ != CUBLAS_STATUS_SUCCESS) fail("cuBLASLt error ", int(pab_st_), " in ", #expr); \
  } while (0)

constexpr size_t kWorkspace = 32u << 20;

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::f32: return CUDA_R_32F;
    case DType::bf16: return CUDA_R_16BF;
    case DType::f16: return CUDA_R_16F;
    default: fail("GEMM: unsupported dtype ", dtype_name(t));
  }
}

int alignment_of(const void* p) {
  uintptr_t v = reinterpret_cast<uintptr_t>(p);
  int a = 256;
  while (a > 1 && v % a != 0) a /= 2;
  return a;
}

// One cached GEMM configuration: out^T [N, M] = W [N, K] . x^T [K, M] in
// cuBLASLt's column-major terms (row-major out [M, N] = x [M, K] . W^T).
struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
};

using Key = std::tuple<int64_t, int64_t, int64_t, int, int, int, int, int, int>;

// Picks the algorithm: cuBLASLt's heuristic proposes up to kCandidates, and
// for GEMMs large enough to matter each is timed once on the call's own
// operands (writing the output, which the real call overwrites).
constexpr int kCandidates = 16;

// `batch` > 1: that many weights [N, K] and biases [N] one after the other
// applied to the same x, outputs [batch, M, N].
Plan& plan_for(CudaBackend& be, int64_t m, int64_t n, int64_t k, int batch, DType dt, cublasLtEpilogue_t epi,
               int align_x, int align_w, int align_o, const void* x, const void* w, void* out, const void* bias) {
  static std::map<Key, Plan> cache;
  Key key{m, n, k, int(dt), int(epi), align_x, align_w, align_o, batch};
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  Plan p;
  cudaDataType_t t = cuda_type(dt);
  PAB_LT_CHECK(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  PAB_LT_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
  PAB_LT_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
  PAB_LT_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
  if (epi != CUBLASLT_EPILOGUE_DEFAULT) {
    PAB_LT_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &t, sizeof t));
  }
  PAB_LT_CHECK(cublasLtMatrixLayoutCreate(&p.a, t, uint64_t(k), uint64_t(n), k));  // W^T stored [K, N]
  PAB_LT_CHECK(cublasLtMatrixLayoutCreate(&p.b, t, uint64_t(k), uint64_t(m), k));  // x^T stored [K, M]
  PAB_LT_CHECK(cublasLtMatrixLayoutCreate(&p.c, t, uint64_t(n), uint64_t(m), n));  // out^T [N, M]
  if (batch > 1) {
    const int32_t count = batch;
    const int64_t w_stride = n * k, x_stride = 0, out_stride = m * n;
    for (auto [layout, stride] : {std::pair{p.a, w_stride}, {p.b, x_stride}, {p.c, out_stride}}) {
      PAB_LT_CHECK(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof count));
      PAB_LT_CHECK(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride,
                                                    sizeof stride));
    }
    if (epi != CUBLASLT_EPILOGUE_DEFAULT) {
      const int64_t bias_stride = n;
      PAB_LT_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE, &bias_stride,
                                                  sizeof bias_stride));
    }
  }
  cublasLtMatmulPreference_t pref;
  PAB_LT_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  size_t ws = kWorkspace;
  PAB_LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
  uint32_t ax = uint32_t(align_x), aw = uint32_t(align_w), ao = uint32_t(align_o);
  PAB_LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &aw, sizeof aw));
  PAB_LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ax, sizeof ax));
  PAB_LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ao, sizeof ao));
  PAB_LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ao, sizeof ao));
  cublasLtMatmulHeuristicResult_t results[kCandidates] = {};
  int found = 0;
  PAB_LT_CHECK(
      cublasLtMatmulAlgoGetHeuristic(be.lt(), p.desc, p.a, p.b, p.c, p.c, pref, kCandidates, results, &found));
  cublasLtMatmulPreferenceDestroy(pref);
  if (found == 0) fail("cuBLASLt found no algorithm for a ", m, "x", n, "x", k, " ", dtype_name(dt), " GEMM");
  p.algo = results[0].algo;
  const double flop = 2.0 * double(batch) * double(m) * double(n) * double(k);
  if (found > 1 && flop > 2e10 && dt != DType::f32 && !std::getenv("PAB_NO_GEMM_TUNING")) {
    if (bias) PAB_LT_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    const float one = 1.0f, zero = 0.0f;
    void* ws = be.workspace(kWorkspace);
    float best = INFINITY;
    for (int i = 0; i < found; ++i) {
      if (results[i].state != CUBLAS_STATUS_SUCCESS) continue;
      float total = 0;
      bool ok = true;
      for (int rep = 0; rep < 3 && ok; ++rep) {
        const float ms = be.time_ms([&] {
          ok = cublasLtMatmul(be.lt(), p.desc, &one, w, p.a, x, p.b, &zero, out, p.c, out, p.c, &results[i].algo, ws,
                              kWorkspace, be.stream()) == CUBLAS_STATUS_SUCCESS;
        });
        if (rep > 0) total += ms;  // the first run warms up
      }
      if (ok && total < best) {
        best = total;
        p.algo = results[i].algo;
      }
    }
    (void)cudaGetLastError();
  }
  return cache.emplace(key, p).first->second;
}

// w [N, K] (b [N]), or stacked [G, N, K] (b [G, N]) for outputs [G, ..., N].
Tensor run_linear(CudaBackend& be, const Tensor& x, const Tensor& w, const Tensor* bias, cublasLtEpilogue_t epi,
                  bool stacked = false) {
  cuda::check_same(x, w, "linear");
  PAB_ASSERT(w.rank() == (stacked ? 3 : 2) && x.dim(-1) == w.dim(-1), stacked ? "linear_stacked: " : "linear: ",
             x.desc(), " by weight ", w.desc());
  const int batch = stacked ? int(w.dim(0)) : 1;
  const int64_t k = w.dim(-1), n = w.dim(-2), m = shape_numel(Shape(x.shape().begin(), x.shape().end() - 1));
  Shape os = x.shape();
  os.back() = n;
  if (stacked) os.insert(os.begin(), batch);
  Tensor out = Tensor::empty(os, x.dtype(), be.device());
  if (bias) {
    cuda::check_same(x, *bias, "linear bias");
    PAB_ASSERT(bias->numel() == batch * n, "linear bias ", bias->desc(), " for ", n, " outputs");
  }
  if (m == 0 || n == 0 || batch == 0) return out;
  if (k == 0) {  // an empty product: the bias alone (cuBLASLt leaves the output undefined)
    be.memset_zero(out.raw(), out.nbytes());
    if (bias) {
      Shape bs(os.size(), 1);  // [N] or [G, 1.., N]
      bs.back() = n;
      if (stacked) bs.front() = batch;
      out = be.binary(out, bias->reshape(bs), Binary::add);
    }
    if (epi == CUBLASLT_EPILOGUE_GELU_BIAS) out = be.unary(out, Unary::gelu_tanh);
    return out;
  }
  if (!bias && epi == CUBLASLT_EPILOGUE_BIAS) {
    epi = CUBLASLT_EPILOGUE_DEFAULT;
  } else if (!bias && epi == CUBLASLT_EPILOGUE_GELU_BIAS) {
    epi = CUBLASLT_EPILOGUE_GELU;
  }
  Plan& p = plan_for(be, m, n, k, batch, x.dtype(), epi, alignment_of(x.raw()), alignment_of(w.raw()),
                     alignment_of(out.raw()), x.raw(), w.raw(), out.raw(), bias ? bias->raw() : nullptr);
  if (bias) {
    const void* bp = bias->raw();
    PAB_LT_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp, sizeof bp));
  }
  const float one = 1.0f, zero = 0.0f;
  void* ws = be.workspace(kWorkspace);
  CudaBackend::OpScope scope(be, epi == CUBLASLT_EPILOGUE_GELU_BIAS || epi == CUBLASLT_EPILOGUE_GELU ? "linear+gelu" : "linear",
                             2.0 * double(batch) * double(m) * double(n) * double(k));
  if (scope.verbose()) scope.describe(cat(batch > 1 ? cat(batch, " x ") : "", m, "x", n, "x", k));
  PAB_LT_CHECK(cublasLtMatmul(be.lt(), p.desc, &one, w.raw(), p.a, x.raw(), p.b, &zero, out.raw(), p.c, out.raw(), p.c,
                              &p.algo, ws, kWorkspace, be.stream()));
  return out;
}

}  // namespace

Tensor CudaBackend::linear(const Tensor& x, const Tensor& w, const Tensor* b) {
  return run_linear(*this, x, w, b, CUBLASLT_EPILOGUE_BIAS);
}

Tensor CudaBackend::linear_stacked(const Tensor& x, const Tensor& w, const Tensor* b) {
  return run_linear(*this, x, w, b, CUBLASLT_EPILOGUE_BIAS, /*stacked=*/true);
}

Tensor CudaBackend::linear_act(const Tensor& x, const Tensor& w, const Tensor* b, Unary act) {
  // cuBLASLt's GELU epilogue is the tanh approximation.
  if (act == Unary::gelu_tanh) return run_linear(*this, x, w, b, CUBLASLT_EPILOGUE_GELU_BIAS);
  return unary(linear(x, w, b), act);
}

Tensor CudaBackend::matmul(const Tensor& a, const Tensor& b, bool trans_b) {
  cuda::check_same(a, b, "matmul");
  PAB_ASSERT(a.rank() == 3 && b.rank() == 3 && a.dim(0) == b.dim(0), "matmul: ", a.desc(), " by ", b.desc());
  const int64_t bt = a.dim(0), m = a.dim(1), k = a.dim(2);
  const int64_t n = trans_b ? b.dim(1) : b.dim(2);
  PAB_ASSERT((trans_b ? b.dim(2) : b.dim(1)) == k, "matmul: ", a.desc(), " by ", b.desc());
  Tensor out = Tensor::empty({bt, m, n}, a.dtype(), device());
  if (out.numel() == 0) return out;
  if (k == 0) {
    memset_zero(out.raw(), out.nbytes());
    return out;
  }
  cudaDataType_t t = cuda_type(a.dtype());
  const float one = 1.0f, zero = 0.0f;
  // Column-major: out^T [N, M] = op(b)^T . a^T
  OpScope scope(*this, "matmul", 2.0 * double(bt) * double(m) * double(n) * double(k));
  cublasStatus_t st = cublasGemmStridedBatchedEx(
      blas(), trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N, int(n), int(m), int(k), &one, b.raw(), t,
      trans_b ? int(k) : int(n), k * n, a.raw(), t, int(k), m * k, &zero, out.raw(), t, int(n), m * n, int(bt),
      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  if (st != CUBLAS_STATUS_SUCCESS) fail("cuBLAS batched GEMM failed (", int(st), ")");
  return out;
}

}  // namespace pab
