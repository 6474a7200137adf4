// Every algorithm cuBLASLt's heuristic offers for the benchmark workloads'
// GEMM shapes (bf16, bias or bias+GELU epilogue, the layout pab uses), each
// timed back to back: how far the first offer, the best of the first 16
// (what pab times) and the best of all are from each other. The workspace is
// twice pab's 32 MiB, so that none is left out for want of it.
//   nvcc -O2 -arch=sm_90a -o gemm_candidates dev/device/gemm_candidates.cu -lcublasLt
#include <cublasLt.h>
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#define CHECK(call)                                                              \
  do {                                                                           \
    const int status_ = int(call);                                               \
    if (status_ != 0) {                                                          \
      std::fprintf(stderr, "%s failed (%d) at line %d\n", #call, status_, __LINE__); \
      std::exit(1);                                                              \
    }                                                                            \
  } while (0)

// Values in [-1, 1) from a hash of the index.
__global__ void fill(__nv_bfloat16* p, size_t n, unsigned seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    unsigned h = unsigned(i) * 2654435761u ^ seed;
    h ^= h >> 13;
    h *= 0x5bd1e995u;
    h ^= h >> 15;
    p[i] = __float2bfloat16((h & 0xffff) / 32768.0f - 1.0f);
  }
}

struct Shape {
  long m, n, k;
  bool gelu;
  const char* name;
};

int main() {
  const std::vector<Shape> shapes = {
      {32768, 1152, 1152, false, "latte out"},  {32768, 3456, 1152, false, "latte qkv"},
      {32768, 4608, 1152, true, "latte ff1+gelu"}, {32768, 1152, 4608, false, "latte ff2"},
      {35552, 1920, 1920, false, "2b out"},     {35552, 5760, 1920, false, "2b qkv"},
      {35552, 7680, 1920, true, "2b ff1+gelu"},   {35552, 1920, 7680, false, "2b ff2"},
  };
  cublasLtHandle_t lt;
  CHECK(cublasLtCreate(&lt));
  size_t ws_bytes = 64u << 20;
  void* ws;
  CHECK(cudaMalloc(&ws, ws_bytes));
  cudaEvent_t start, stop;
  CHECK(cudaEventCreate(&start));
  CHECK(cudaEventCreate(&stop));
  const cudaDataType_t t = CUDA_R_16BF;
  for (const Shape& s : shapes) {
    __nv_bfloat16 *x, *w, *out, *bias;
    CHECK(cudaMalloc(&x, s.m * s.k * 2));
    CHECK(cudaMalloc(&w, s.n * s.k * 2));
    CHECK(cudaMalloc(&out, s.m * s.n * 2));
    CHECK(cudaMalloc(&bias, s.n * 2));
    fill<<<1024, 256>>>(x, s.m * s.k, 1);
    fill<<<1024, 256>>>(w, s.n * s.k, 2);
    fill<<<64, 256>>>(bias, s.n, 3);
    // Row-major out [M, N] = x [M, K] . W^T as column-major out^T = (W^T)^T x^T.
    cublasLtMatmulDesc_t desc;
    CHECK(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    const cublasLtEpilogue_t epi = s.gelu ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_BIAS;
    CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
    CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &t, sizeof t));
    CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    cublasLtMatrixLayout_t a, b, c;
    CHECK(cublasLtMatrixLayoutCreate(&a, t, s.k, s.n, s.k));
    CHECK(cublasLtMatrixLayoutCreate(&b, t, s.k, s.m, s.k));
    CHECK(cublasLtMatrixLayoutCreate(&c, t, s.n, s.m, s.n));
    cublasLtMatmulPreference_t pref;
    CHECK(cublasLtMatmulPreferenceCreate(&pref));
    CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes,
                                               sizeof ws_bytes));
    std::vector<cublasLtMatmulHeuristicResult_t> offers(256);
    int found = 0;
    CHECK(cublasLtMatmulAlgoGetHeuristic(lt, desc, a, b, c, c, pref, int(offers.size()), offers.data(), &found));
    const float one = 1, zero = 0;
    const double flop = 2.0 * s.m * s.n * s.k;
    std::vector<float> ms(size_t(found), INFINITY);
    for (int i = 0; i < found; ++i) {
      auto run = [&] {
        return cublasLtMatmul(lt, desc, &one, w, a, x, b, &zero, out, c, out, c, &offers[i].algo, ws, ws_bytes, nullptr);
      };
      if (run() != CUBLAS_STATUS_SUCCESS) continue;
      for (int j = 0; j < 3; ++j) run();
      CHECK(cudaEventRecord(start));
      for (int j = 0; j < 20; ++j) run();
      CHECK(cudaEventRecord(stop));
      CHECK(cudaEventSynchronize(stop));
      CHECK(cudaEventElapsedTime(&ms[i], start, stop));
      ms[i] /= 20;
    }
    const int best = int(std::min_element(ms.begin(), ms.end()) - ms.begin());
    const float best16 = *std::min_element(ms.begin(), ms.begin() + std::min(found, 16));
    std::printf("%-15s %ldx%ldx%ld: %d offered; first %.0f TFLOP/s, best of 16 %.0f, best of all %.0f (offer %d)\n",
                s.name, s.m, s.n, s.k, found, flop / ms[0] / 1e9, flop / best16 / 1e9, flop / ms[size_t(best)] / 1e9,
                best);
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatrixLayoutDestroy(a);
    cublasLtMatrixLayoutDestroy(b);
    cublasLtMatrixLayoutDestroy(c);
    cublasLtMatmulDescDestroy(desc);
    cudaFree(x);
    cudaFree(w);
    cudaFree(out);
    cudaFree(bias);
  }
  return 0;
}
