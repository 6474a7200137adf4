// Attention: cuDNN's fused SDPA operation (the unified SDPA_FWD node of the
// graph API, cuDNN >= 9.13.1) for bf16/f16 without bias or mask, and a
// straightforward online-softmax kernel for everything else (f32 parity runs,
// T5's position bias, key masks). Plans are built once per shape.
#include <map>
#include <tuple>
#include <type_traits>

#include "backend/cuda/common.cuh"

namespace pab {

namespace {

// ------------------------------------------------------------ fallback kernel

constexpr int kWarps = 4;

// One warp per query row: q, k, v, o [B, S, H, D]; bias f32 [Bb, H, Sq, Sk];
// mask f32 [B, Sk] (0 = masked).
template <class T, int kPer>
__global__ void attention_rows(const T* q, const T* k, const T* v, T* o, const float* bias, int64_t bias_b,
                               const float* mask, int64_t bsz, int64_t sq, int64_t sk, int64_t heads, int64_t d,
                               float scale) {
  extern __shared__ float qs[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row = int64_t(blockIdx.x) * kWarps + warp;  // over B * H * Sq
  if (row >= bsz * heads * sq) return;
  const int64_t qi = row % sq, h = (row / sq) % heads, b = row / (sq * heads);
  float* qrow = qs + warp * d;
  const T* qp = q + ((b * sq + qi) * heads + h) * d;
  for (int64_t i = lane; i < d; i += 32) qrow[i] = cuda::to_f<T>(qp[i]) * scale;
  __syncwarp();
  float m = -INFINITY, l = 0.0f, acc[kPer];
  for (int i = 0; i < kPer; ++i) acc[i] = 0.0f;
  for (int64_t k0 = 0; k0 < sk; k0 += 32) {
    const int64_t j = k0 + lane;
    float s = -INFINITY;
    if (j < sk && (!mask || mask[b * sk + j] != 0.0f)) {
      const T* kp = k + ((b * sk + j) * heads + h) * d;
      float dot = 0.0f;
      for (int64_t i = 0; i < d; ++i) dot += qrow[i] * cuda::to_f<T>(kp[i]);
      s = dot;
      if (bias) s += bias[(((bias_b == 1 ? 0 : b) * heads + h) * sq + qi) * sk + j];
    }
    float mx = s;
    for (int off = 16; off > 0; off /= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
    const float m_new = fmaxf(m, mx);
    if (m_new == -INFINITY) continue;  // all keys so far masked
    const float p = s == -INFINITY ? 0.0f : __expf(s - m_new);
    float ps = p;
    for (int off = 16; off > 0; off /= 2) ps += __shfl_xor_sync(0xffffffffu, ps, off);
    const float corr = __expf(m - m_new);
    l = l * corr + ps;
    m = m_new;
    for (int i = 0; i < kPer; ++i) acc[i] *= corr;
    const int64_t n = sk - k0 < 32 ? sk - k0 : 32;
    for (int jj = 0; jj < n; ++jj) {
      const float pj = __shfl_sync(0xffffffffu, p, jj);
      if (pj == 0.0f) continue;
      const T* vp = v + ((b * sk + k0 + jj) * heads + h) * d;
      for (int i = 0; i < kPer; ++i) {
        int64_t dd = lane + 32 * i;
        if (dd < d) acc[i] += pj * cuda::to_f<T>(vp[dd]);
      }
    }
  }
  T* op = o + ((b * sq + qi) * heads + h) * d;
  const float inv = l > 0.0f ? 1.0f / l : 0.0f;
  for (int i = 0; i < kPer; ++i) {
    int64_t dd = lane + 32 * i;
    if (dd < d) op[dd] = cuda::from_f<T>(acc[i] * inv);
  }
}

// An optional bias or mask as the kernels read it: f32 on the device (undefined when absent).
Tensor f32_input(CudaBackend& be, const Tensor* t, const char* what) {
  if (!t) return Tensor();
  Tensor r = t->dtype() == DType::f32 ? *t : be.cast(*t, DType::f32);
  cuda::check_cuda(r, what);
  return r;
}

void fallback_attention(CudaBackend& be, const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out,
                        const AttentionArgs& args) {
  const int64_t bsz = q.dim(0), sq = q.dim(1), heads = q.dim(2), d = q.dim(3), sk = k.dim(1);
  const Tensor bias = f32_input(be, args.bias, "attention bias"), mask = f32_input(be, args.key_mask, "attention mask");
  const int64_t bias_b = bias.defined() ? bias.dim(0) : 0;
  PAB_ASSERT(d <= 256, "attention head dim ", d, " above 256");
  const int64_t rows = bsz * heads * sq;
  const unsigned grid = unsigned((rows + kWarps - 1) / kWarps);
  const size_t smem = size_t(kWarps * d) * sizeof(float);
  const float* bp = bias.defined() ? cuda::cptr<float>(bias) : nullptr;
  const float* mp = mask.defined() ? cuda::cptr<float>(mask) : nullptr;
  cuda::dispatch_float(q.dtype(), "attention", [&]<class T>() {
    auto launch = [&](auto kernel) {
      kernel<<<grid, kWarps * 32, smem, be.stream()>>>(cuda::cptr<T>(q), cuda::cptr<T>(k), cuda::cptr<T>(v),
                                                       cuda::mptr<T>(out), bp, bias_b, mp, bsz, sq, sk, heads, d,
                                                       args.scale);
    };
    if (d <= 32) {
      launch(attention_rows<T, 1>);
    } else if (d <= 64) {
      launch(attention_rows<T, 2>);
    } else if (d <= 128) {
      launch(attention_rows<T, 4>);
    } else {
      launch(attention_rows<T, 8>);
    }
  });
  PAB_KERNEL_CHECK();
}

// ------------------------------------------------------------ short sequences

// Attention to few keys: short sequences (Sk <= 32: Latte's temporal
// attention, thousands of 16-frame sequences, where the fused library kernels
// spend their time on set-up) and key-masked attention to a caption. One warp
// per (entry, head, 16 queries) on the tensor cores: S = Q K^T in m16n8k16
// tiles with the operands loaded as pairs straight from global memory, an
// online softmax over chunks of 16 keys in the accumulator registers (a row
// spread over the four lanes of a quad), P reused as the A operand of O = P V
// (in the compute dtype, as fused attention kernels do), O stored as pairs.
// Latte attends along the frames of each spatial position by treating
// positions as heads: [B, F, N * H, D], rows of N * H * D elements.
constexpr int kShortMax = 32;

struct ShortGeom {
  int64_t batch, heads;
  int sq, sk;
};

template <class T>
__device__ uint32_t pack2(float lo, float hi) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    __nv_bfloat162 p = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&p);
  } else {
    __half2 p = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&p);
  }
}

// d += a . b for a 16x16 A (row-major) and a 16x8 B (column-major) fragment
template <class T>
__device__ void mma16816(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // bf16 and f16 tensor-core MMAs need sm_80 (the build targets sm_90)
#else
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
#endif
}

// kChunks > 0: exactly that many chunks of 16 keys (unrolled: up to 32 keys);
// 0: as many as Sk needs.
template <class T, int kD, int kChunks>
__global__ void short_attention(const T* q, const T* k, const T* v, T* o, const float* mask, ShortGeom g,
                                float scale) {
  constexpr int kDimChunks = (kD + 15) / 16;  // of the head dim, for S = Q K^T
  const int lane = threadIdx.x % 32;
  const int64_t w = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int qtiles = (g.sq + 15) / 16;
  const int qt = int(w % qtiles);
  const int64_t h = (w / qtiles) % g.heads, b = w / qtiles / g.heads;
  if (b >= g.batch) return;
  const int64_t row = g.heads * kD;  // elements between tokens
  const T* qb = q + b * g.sq * row + h * kD;
  const T* kb = k + b * g.sk * row + h * kD;
  const uint16_t* vb = reinterpret_cast<const uint16_t*>(v + b * g.sk * row + h * kD);
  const float* mb = mask ? mask + b * g.sk : nullptr;
  const int quad = lane / 4, c = (lane % 4) * 2;  // fragment row and column pair
  const int r0 = qt * 16 + quad, r1 = r0 + 8;
  auto pair = [&](const T* base, int r, int rows, int col) -> uint32_t {
    return r < rows && col < kD ? *reinterpret_cast<const uint32_t*>(base + r * row + col) : 0u;
  };
  auto elem = [&](int key, int col) -> uint32_t { return key < g.sk ? vb[key * row + col] : 0u; };
  uint32_t qa[kDimChunks][4];
#pragma unroll
  for (int kc = 0; kc < kDimChunks; ++kc) {
    const int col = kc * 16 + c;
    qa[kc][0] = pair(qb, r0, g.sq, col);
    qa[kc][1] = pair(qb, r1, g.sq, col);
    qa[kc][2] = pair(qb, r0, g.sq, col + 8);
    qa[kc][3] = pair(qb, r1, g.sq, col + 8);
  }

  // Online softmax over chunks of 16 keys. Rows r0 (s[t][0..1]) and r1
  // (s[t][2..3]) at keys k0 + t * 8 + c + {0, 1}; a row without a key to
  // attend to so far keeps m = -inf, p = 0.
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;
  float acc[kD / 8][4] = {};
  const int chunks = kChunks > 0 ? kChunks : (g.sk + 15) / 16;
#pragma unroll
  for (int ci = 0; ci < chunks; ++ci) {
    const int k0 = ci * 16;
    float s[2][4] = {};
#pragma unroll
    for (int kc = 0; kc < kDimChunks; ++kc) {
      const int col = kc * 16 + c;
#pragma unroll
      for (int t = 0; t < 2; ++t) {
        const int key = k0 + t * 8 + quad;
        mma16816<T>(s[t], qa[kc], pair(kb, key, g.sk, col), pair(kb, key, g.sk, col + 8));
      }
    }
    float n0 = m0, n1 = m1;
#pragma unroll
    for (int t = 0; t < 2; ++t)
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int key = k0 + t * 8 + c + i;
        const bool live = key < g.sk && (!mb || mb[key] != 0.0f);
        s[t][i] = live ? s[t][i] * scale : -INFINITY;
        s[t][2 + i] = live ? s[t][2 + i] * scale : -INFINITY;
        n0 = fmaxf(n0, s[t][i]);
        n1 = fmaxf(n1, s[t][2 + i]);
      }
    for (int x = 1; x < 4; x *= 2) {
      n0 = fmaxf(n0, __shfl_xor_sync(0xffffffffu, n0, x));
      n1 = fmaxf(n1, __shfl_xor_sync(0xffffffffu, n1, x));
    }
    const float c0 = n0 == -INFINITY ? 1.0f : __expf(m0 - n0), c1 = n1 == -INFINITY ? 1.0f : __expf(m1 - n1);
    m0 = n0;
    m1 = n1;
    l0 *= c0;
    l1 *= c1;
#pragma unroll
    for (int t = 0; t < 2; ++t)
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        s[t][i] = m0 == -INFINITY ? 0.0f : __expf(s[t][i] - m0);
        s[t][2 + i] = m1 == -INFINITY ? 0.0f : __expf(s[t][2 + i] - m1);
        l0 += s[t][i];
        l1 += s[t][2 + i];
      }
    const uint32_t a[4] = {pack2<T>(s[0][0], s[0][1]), pack2<T>(s[0][2], s[0][3]), pack2<T>(s[1][0], s[1][1]),
                           pack2<T>(s[1][2], s[1][3])};
    const int key = k0 + c;
#pragma unroll
    for (int t = 0; t < kD / 8; ++t) {
      acc[t][0] *= c0;
      acc[t][1] *= c0;
      acc[t][2] *= c1;
      acc[t][3] *= c1;
      const int col = t * 8 + quad;
      mma16816<T>(acc[t], a, elem(key, col) | elem(key + 1, col) << 16, elem(key + 8, col) | elem(key + 9, col) << 16);
    }
  }
  for (int x = 1; x < 4; x *= 2) {
    l0 += __shfl_xor_sync(0xffffffffu, l0, x);
    l1 += __shfl_xor_sync(0xffffffffu, l1, x);
  }
  const float inv0 = l0 > 0.0f ? 1.0f / l0 : 0.0f, inv1 = l1 > 0.0f ? 1.0f / l1 : 0.0f;
  T* ob = o + b * g.sq * row + h * kD;
#pragma unroll
  for (int t = 0; t < kD / 8; ++t) {
    const int col = t * 8 + c;
    if (r0 < g.sq) *reinterpret_cast<uint32_t*>(ob + r0 * row + col) = pack2<T>(acc[t][0] * inv0, acc[t][1] * inv0);
    if (r1 < g.sq) *reinterpret_cast<uint32_t*>(ob + r1 * row + col) = pack2<T>(acc[t][2] * inv1, acc[t][3] * inv1);
  }
}

// Whether our kernel takes this call: up to 32 keys (where the library's
// set-up dominates), or key-masked attention to up to 1024 keys (which cuDNN's
// plain SDPA here does not take: Latte's and Open-Sora's captions).
constexpr int64_t kMaskedMax = 1024;

bool short_attention_fits(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionArgs& args) {
  const int64_t sk = k.dim(1), d = q.dim(3);
  if (q.dtype() == DType::f32 || args.bias || sk == 0 || sk > (args.key_mask ? kMaskedMax : kShortMax)) return false;
  if (d != 16 && d != 32 && d != 64 && d != 72 && d != 88 && d != 128) return false;
  for (const Tensor* t : {&q, &k, &v})  // pairs are loaded as 32-bit words (the output is allocated aligned)
    if (reinterpret_cast<uintptr_t>(t->raw()) % 4 != 0) return false;
  return true;
}

void run_short_attention(CudaBackend& be, const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out,
                         const AttentionArgs& args) {
  const Tensor mask = f32_input(be, args.key_mask, "attention mask");
  const int64_t heads = q.dim(2), d = q.dim(3);
  const ShortGeom g{q.dim(0), heads, int(q.dim(1)), int(k.dim(1))};
  const int64_t warps = g.batch * heads * ((g.sq + 15) / 16);
  constexpr int kWarpsPerBlock = 4;
  const unsigned blocks = unsigned((warps + kWarpsPerBlock - 1) / kWarpsPerBlock);
  const float* mp = mask.defined() ? cuda::cptr<float>(mask) : nullptr;
  cuda::dispatch_float(q.dtype(), "attention", [&]<class T>() {
    if constexpr (!std::is_same_v<T, float>) {
      auto launch = [&]<int kD>() {
        auto kernel = g.sk <= 16 ? short_attention<T, kD, 1>
                      : g.sk <= 32 ? short_attention<T, kD, 2>
                                   : short_attention<T, kD, 0>;
        kernel<<<blocks, 32 * kWarpsPerBlock, 0, be.stream()>>>(cuda::cptr<T>(q), cuda::cptr<T>(k), cuda::cptr<T>(v),
                                                                cuda::mptr<T>(out), mp, g, args.scale);
      };
      switch (d) {
        case 16: launch.template operator()<16>(); break;
        case 32: launch.template operator()<32>(); break;
        case 64: launch.template operator()<64>(); break;
        case 72: launch.template operator()<72>(); break;
        case 88: launch.template operator()<88>(); break;
        default: launch.template operator()<128>(); break;
      }
    }
  });
  PAB_KERNEL_CHECK();
}

// ------------------------------------------------------------ cuDNN SDPA

#define PAB_DNN_TRY(expr)                              \
  do {                                                 \
    cudnnStatus_t pab_st_ = (expr);                    \
    if (pab_st_ != CUDNN_STATUS_SUCCESS) return pab_st_; \
  } while (0)

struct Desc {
  cudnnBackendDescriptor_t d = nullptr;
  explicit Desc(cudnnBackendDescriptorType_t t) { cudnnBackendCreateDescriptor(t, &d); }
  ~Desc() {
    if (d) cudnnBackendDestroyDescriptor(d);
  }
  Desc(const Desc&) = delete;
  Desc& operator=(const Desc&) = delete;
};

cudnnStatus_t make_tensor(Desc& t, int64_t uid, cudnnDataType_t type, const int64_t dims[4], const int64_t strides[4],
                          bool by_value) {
  int64_t align = by_value ? 4 : 16;
  PAB_DNN_TRY(cudnnBackendSetAttribute(t.d, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type));
  PAB_DNN_TRY(cudnnBackendSetAttribute(t.d, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims));
  PAB_DNN_TRY(cudnnBackendSetAttribute(t.d, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides));
  PAB_DNN_TRY(cudnnBackendSetAttribute(t.d, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid));
  PAB_DNN_TRY(cudnnBackendSetAttribute(t.d, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align));
  if (by_value) {
    bool yes = true;
    PAB_DNN_TRY(cudnnBackendSetAttribute(t.d, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &yes));
  }
  return cudnnBackendFinalize(t.d);
}

enum Uid : int64_t { kQ = 1, kK = 2, kV = 3, kO = 4, kScale = 5 };

struct SdpaPlan {
  cudnnBackendDescriptor_t plan = nullptr;  // null: cuDNN cannot run this shape
  int64_t workspace = 0;
};

cudnnStatus_t execute(CudaBackend& be, const SdpaPlan& p, const void* q, const void* k, const void* v, void* out,
                      float scale);

// Builds the execution plans cuDNN's heuristic offers for q [b, sq, h, d],
// k and v [b, sk, h, d] (token-major layout).
cudnnStatus_t build_sdpa(cudnnHandle_t handle, cudnnDataType_t type, int64_t b, int64_t h, int64_t sq, int64_t sk,
                         int64_t d, std::vector<SdpaPlan>* out) {
  const int64_t qdims[4] = {b, h, sq, d}, kdims[4] = {b, h, sk, d};
  const int64_t qstr[4] = {sq * h * d, d, h * d, 1}, kstr[4] = {sk * h * d, d, h * d, 1};
  const int64_t one[4] = {1, 1, 1, 1};
  Desc tq(CUDNN_BACKEND_TENSOR_DESCRIPTOR), tk(CUDNN_BACKEND_TENSOR_DESCRIPTOR), tv(CUDNN_BACKEND_TENSOR_DESCRIPTOR),
      to(CUDNN_BACKEND_TENSOR_DESCRIPTOR), ts(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
  PAB_DNN_TRY(make_tensor(tq, kQ, type, qdims, qstr, false));
  PAB_DNN_TRY(make_tensor(tk, kK, type, kdims, kstr, false));
  PAB_DNN_TRY(make_tensor(tv, kV, type, kdims, kstr, false));
  PAB_DNN_TRY(make_tensor(to, kO, type, qdims, qstr, false));
  PAB_DNN_TRY(make_tensor(ts, kScale, CUDNN_DATA_FLOAT, one, one, true));

  Desc op(CUDNN_BACKEND_OPERATION_SDPA_FWD_DESCRIPTOR);
  PAB_DNN_TRY(cudnnBackendSetAttribute(op.d, CUDNN_ATTR_OPERATION_SDPA_FWD_QDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &tq.d));
  PAB_DNN_TRY(cudnnBackendSetAttribute(op.d, CUDNN_ATTR_OPERATION_SDPA_FWD_KDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &tk.d));
  PAB_DNN_TRY(cudnnBackendSetAttribute(op.d, CUDNN_ATTR_OPERATION_SDPA_FWD_VDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &tv.d));
  PAB_DNN_TRY(cudnnBackendSetAttribute(op.d, CUDNN_ATTR_OPERATION_SDPA_FWD_ODESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &to.d));
  PAB_DNN_TRY(
      cudnnBackendSetAttribute(op.d, CUDNN_ATTR_OPERATION_SDPA_FWD_SCALEDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &ts.d));
  PAB_DNN_TRY(cudnnBackendFinalize(op.d));

  Desc graph(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
  PAB_DNN_TRY(cudnnBackendSetAttribute(graph.d, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &op.d));
  PAB_DNN_TRY(cudnnBackendSetAttribute(graph.d, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle));
  PAB_DNN_TRY(cudnnBackendFinalize(graph.d));

  Desc heur(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
  cudnnBackendHeurMode_t mode = CUDNN_HEUR_MODE_A;
  PAB_DNN_TRY(cudnnBackendSetAttribute(heur.d, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                                       &graph.d));
  PAB_DNN_TRY(cudnnBackendSetAttribute(heur.d, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode));
  PAB_DNN_TRY(cudnnBackendFinalize(heur.d));
  constexpr int kMaxConfigs = 8;
  std::vector<std::unique_ptr<Desc>> configs;
  cudnnBackendDescriptor_t raw[kMaxConfigs];
  for (int i = 0; i < kMaxConfigs; ++i) {
    configs.push_back(std::make_unique<Desc>(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR));
    raw[i] = configs.back()->d;
  }
  int64_t found = 0;
  PAB_DNN_TRY(cudnnBackendGetAttribute(heur.d, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                       kMaxConfigs, &found, raw));
  cudnnStatus_t last = CUDNN_STATUS_NOT_SUPPORTED;
  for (int64_t i = 0; i < found; ++i) {
    cudnnBackendDescriptor_t plan;
    cudnnBackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &plan);
    cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle);
    cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &raw[i]);
    cudnnStatus_t st = cudnnBackendFinalize(plan);
    if (st == CUDNN_STATUS_SUCCESS) {
      int64_t ws = 0, n = 0;
      cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &n, &ws);
      out->push_back({plan, ws});
    } else {
      last = st;
      cudnnBackendDestroyDescriptor(plan);
    }
  }
  return out->empty() ? last : CUDNN_STATUS_SUCCESS;
}

// The cuDNN plan for this shape, built on first use; when cuDNN offers
// several and the call is large enough to matter, each is timed once on the
// call's own operands and the fastest kept. plan null when cuDNN cannot run it.
const SdpaPlan& sdpa_plan(CudaBackend& be, const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out,
                          float scale) {
  static std::map<std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int>, SdpaPlan> plans;
  static bool reported = false;
  const int64_t b = q.dim(0), sq = q.dim(1), h = q.dim(2), d = q.dim(3), sk = k.dim(1);
  auto key = std::make_tuple(b, h, sq, sk, d, int(q.dtype()));
  auto it = plans.find(key);
  if (it != plans.end()) return it->second;
  std::vector<SdpaPlan> candidates;
  cudnnStatus_t st = build_sdpa(be.dnn(), q.dtype() == DType::bf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_HALF, b, h, sq,
                                sk, d, &candidates);
  if (st != CUDNN_STATUS_SUCCESS && !reported && std::getenv("PAB_VERBOSE")) {
    reported = true;
    fprintf(stderr, "pab: cuDNN SDPA unavailable for [%ld, %ld, %ld, %ld]: %s; using another kernel\n", long(b),
            long(sq), long(h), long(d), cudnnGetErrorString(st));
  }
  SdpaPlan best;
  const double flop = 4.0 * double(b) * double(h) * double(sq) * double(sk) * double(d);
  if (candidates.size() == 1 || (candidates.size() > 1 && flop < 1e10)) {
    best = candidates[0];
  } else if (candidates.size() > 1) {
    float best_ms = INFINITY;
    for (const SdpaPlan& c : candidates) {
      float total = 0;
      bool ok = true;
      for (int rep = 0; rep < 3 && ok; ++rep) {
        const float ms =
            be.time_ms([&] { ok = execute(be, c, q.raw(), k.raw(), v.raw(), out.raw(), scale) == CUDNN_STATUS_SUCCESS; });
        if (rep > 0) total += ms;  // the first run warms up
      }
      if (ok && total < best_ms) {
        best_ms = total;
        best = c;
      }
    }
  }
  for (const SdpaPlan& c : candidates)
    if (c.plan != best.plan) cudnnBackendDestroyDescriptor(c.plan);
  return plans.emplace(key, best).first->second;
}

cudnnStatus_t execute(CudaBackend& be, const SdpaPlan& p, const void* q, const void* k, const void* v, void* out,
                      float scale) {
  void* ws = p.workspace > 0 ? be.workspace(size_t(p.workspace)) : nullptr;
  float scale_value = scale;
  void* ptrs[5] = {const_cast<void*>(q), const_cast<void*>(k), const_cast<void*>(v), out, &scale_value};
  int64_t uids[5] = {kQ, kK, kV, kO, kScale};
  Desc pack(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
  cudnnBackendSetAttribute(pack.d, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, 5, ptrs);
  cudnnBackendSetAttribute(pack.d, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, 5, uids);
  cudnnBackendSetAttribute(pack.d, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &ws);
  cudnnStatus_t st = cudnnBackendFinalize(pack.d);
  if (st != CUDNN_STATUS_SUCCESS) return st;
  return cudnnBackendExecute(be.dnn(), p.plan, pack.d);
}

// Runs cuDNN's SDPA; false when cuDNN cannot run this shape (the caller falls back).
bool cudnn_attention(CudaBackend& be, const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out, float scale) {
  const SdpaPlan& p = sdpa_plan(be, q, k, v, out, scale);
  if (!p.plan) return false;
  cudnnStatus_t st = execute(be, p, q.raw(), k.raw(), v.raw(), out.raw(), scale);
  if (st != CUDNN_STATUS_SUCCESS) fail("cuDNN SDPA failed: ", cudnnGetErrorString(st));
  return true;
}

}  // namespace

Tensor CudaBackend::attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionArgs& args) {
  cuda::check_same(q, k, "attention");
  cuda::check_same(q, v, "attention");
  PAB_ASSERT(q.rank() == 4 && k.rank() == 4 && v.rank() == 4, "attention expects [B, S, H, D]");
  PAB_ASSERT(k.dim(0) == q.dim(0) && v.dim(0) == q.dim(0) && k.dim(2) == q.dim(2) && v.dim(2) == q.dim(2) &&
                 k.dim(3) == q.dim(3) && v.dim(3) == q.dim(3) && v.dim(1) == k.dim(1),
             "attention: q ", q.desc(), ", k ", k.desc(), ", v ", v.desc());
  if (args.bias) {
    const Tensor& bt = *args.bias;
    PAB_ASSERT(bt.rank() == 4 && (bt.dim(0) == 1 || bt.dim(0) == q.dim(0)) && bt.dim(1) == q.dim(2) &&
                   bt.dim(2) == q.dim(1) && bt.dim(3) == k.dim(1),
               "attention bias ", bt.desc());
  }
  if (args.key_mask) PAB_ASSERT(args.key_mask->numel() == q.dim(0) * k.dim(1), "attention key mask ", args.key_mask->desc());
  Tensor out = Tensor::empty(q.shape(), q.dtype(), device());
  if (out.numel() == 0 || k.dim(1) == 0) {
    if (out.numel()) memset_zero(out.raw(), out.nbytes());
    return out;
  }
  const double flop = 4.0 * double(q.dim(0)) * double(q.dim(2)) * double(q.dim(1)) * double(k.dim(1)) * double(q.dim(3));
  const bool plain =
      !args.bias && !args.key_mask && q.dtype() != DType::f32 && q.dim(3) % 8 == 0 && q.dim(3) <= 256;
  const bool short_seq = !std::getenv("PAB_NO_SHORT_ATTENTION") && short_attention_fits(q, k, v, args);
  const bool cudnn = !short_seq && plain && sdpa_plan(*this, q, k, v, out, args.scale).plan != nullptr;
  OpScope scope(*this, short_seq ? "attention (short)" : cudnn ? "attention (cuDNN)" : "attention (fallback)", flop,
                Work::attention);
  if (scope.verbose()) scope.describe(cat("q ", shape_str(q.shape()), " k ", shape_str(k.shape())));
  if (short_seq) {
    run_short_attention(*this, q, k, v, out, args);
  } else if (!(cudnn && cudnn_attention(*this, q, k, v, out, args.scale))) {
    fallback_attention(*this, q, k, v, out, args);
  }
  return out;
}

}  // namespace pab
