// Attention: cuDNN's fused SDPA operation (the unified SDPA_FWD node of the
// graph API, cuDNN >= 9.13.1) for bf16/f16 without bias or mask, and a
// straightforward online-softmax kernel for everything else (f32 parity runs,
// T5's position bias, key masks). Plans are built once per shape.
#include <map>
#include <tuple>

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

void fallback_attention(CudaBackend& be, const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out,
                        const AttentionArgs& args) {
  const int64_t bsz = q.dim(0), sq = q.dim(1), heads = q.dim(2), d = q.dim(3), sk = k.dim(1);
  Tensor bias, mask;
  int64_t bias_b = 0;
  if (args.bias) {
    bias = args.bias->dtype() == DType::f32 ? *args.bias : be.cast(*args.bias, DType::f32);
    cuda::check_cuda(bias, "attention bias");
    bias_b = bias.dim(0);
  }
  if (args.key_mask) {
    mask = args.key_mask->dtype() == DType::f32 ? *args.key_mask : be.cast(*args.key_mask, DType::f32);
    cuda::check_cuda(mask, "attention mask");
  }
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

// Builds an execution plan for q [b, sq, h, d], k and v [b, sk, h, d] (token-major layout).
cudnnStatus_t build_sdpa(cudnnHandle_t handle, cudnnDataType_t type, int64_t b, int64_t h, int64_t sq, int64_t sk,
                         int64_t d, SdpaPlan* out) {
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
    last = cudnnBackendFinalize(plan);
    if (last == CUDNN_STATUS_SUCCESS) {
      int64_t ws = 0, n = 0;
      cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &n, &ws);
      out->plan = plan;
      out->workspace = ws;
      return CUDNN_STATUS_SUCCESS;
    }
    cudnnBackendDestroyDescriptor(plan);
  }
  return last;
}

// Runs the cuDNN plan for this shape; false when cuDNN cannot (the caller falls back).
bool cudnn_attention(CudaBackend& be, const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out, float scale) {
  static std::map<std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int>, SdpaPlan> plans;
  static bool reported = false;
  const int64_t b = q.dim(0), sq = q.dim(1), h = q.dim(2), d = q.dim(3), sk = k.dim(1);
  auto key = std::make_tuple(b, h, sq, sk, d, int(q.dtype()));
  auto it = plans.find(key);
  if (it == plans.end()) {
    SdpaPlan p;
    cudnnStatus_t st = build_sdpa(be.dnn(), q.dtype() == DType::bf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_HALF, b, h,
                                  sq, sk, d, &p);
    if (st != CUDNN_STATUS_SUCCESS && !reported && std::getenv("PAB_VERBOSE")) {
      reported = true;
      fprintf(stderr, "pab: cuDNN SDPA unavailable for [%ld, %ld, %ld, %ld]: %s; using the fallback kernel\n", long(b),
              long(sq), long(h), long(d), cudnnGetErrorString(st));
    }
    it = plans.emplace(key, p).first;
  }
  const SdpaPlan& p = it->second;
  if (!p.plan) return false;
  void* ws = p.workspace > 0 ? be.workspace(size_t(p.workspace)) : nullptr;
  float scale_value = scale;
  void* ptrs[5] = {q.raw(), k.raw(), v.raw(), out.raw(), &scale_value};
  int64_t uids[5] = {kQ, kK, kV, kO, kScale};
  Desc pack(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
  cudnnBackendSetAttribute(pack.d, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, 5, ptrs);
  cudnnBackendSetAttribute(pack.d, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, 5, uids);
  cudnnBackendSetAttribute(pack.d, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &ws);
  if (cudnnBackendFinalize(pack.d) != CUDNN_STATUS_SUCCESS) fail("cuDNN: cannot finalize the SDPA variant pack");
  cudnnStatus_t st = cudnnBackendExecute(be.dnn(), p.plan, pack.d);
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
  Tensor out = Tensor::empty(q.shape(), q.dtype(), Device::cuda);
  if (out.numel() == 0 || k.dim(1) == 0) {
    if (out.numel()) memset_zero(out.raw(), out.nbytes());
    return out;
  }
  const double flop = 4.0 * double(q.dim(0)) * double(q.dim(2)) * double(q.dim(1)) * double(k.dim(1)) * double(q.dim(3));
  const bool plain = !args.bias && !args.key_mask && q.dtype() != DType::f32 && q.dim(3) % 8 == 0 &&
                     q.dim(3) <= 256 && !std::getenv("PAB_NO_CUDNN_ATTENTION");
  timed(true, flop, [&] {
    if (!(plain && cudnn_attention(*this, q, k, v, out, args.scale))) fallback_attention(*this, q, k, v, out, args);
  });
  return out;
}

}  // namespace pab
