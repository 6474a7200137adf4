// Layout ops (permute, concat, slice, pad, nearest upsampling) and the
// gather-style model helpers (rotary embedding, token embedding).
#include "backend/cuda/common.cuh"

namespace pab {
namespace cuda {
namespace {

// Copies elements of `es` bytes: out[i] = in[src offset of i under `d`].
template <class E>
__global__ void gather_kernel(const E* in, E* out, Dims d, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t rem = i, off = 0;
    for (int k = d.rank - 1; k >= 0; --k) {
      off += (rem % d.size[k]) * d.stride[k];
      rem /= d.size[k];
    }
    out[i] = in[off];
  }
}

void launch_gather(const void* in, void* out, const Dims& d, int64_t n, size_t es, cudaStream_t s) {
  switch (es) {
    case 1: gather_kernel<uint8_t><<<blocks_for(n), 256, 0, s>>>((const uint8_t*)in, (uint8_t*)out, d, n); break;
    case 2: gather_kernel<uint16_t><<<blocks_for(n), 256, 0, s>>>((const uint16_t*)in, (uint16_t*)out, d, n); break;
    case 4: gather_kernel<uint32_t><<<blocks_for(n), 256, 0, s>>>((const uint32_t*)in, (uint32_t*)out, d, n); break;
    case 8: gather_kernel<uint64_t><<<blocks_for(n), 256, 0, s>>>((const uint64_t*)in, (uint64_t*)out, d, n); break;
    default: PAB_ASSERT(false, "element size ", es);
  }
  PAB_KERNEL_CHECK();
}

// Permutes that keep the last dimension: whole rows move, 16 bytes at a time.
// d describes the output rows (all dims but the last) with source row strides.
__global__ void row_gather_kernel(const uint4* in, uint4* out, Dims d, int64_t rows, int64_t row_vecs) {
  const int64_t warp = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  const int64_t warps = int64_t(gridDim.x) * blockDim.x / 32;
  for (int64_t r = warp; r < rows; r += warps) {
    int64_t rem = r, src = 0;
    for (int k = d.rank - 1; k >= 0; --k) {
      src += (rem % d.size[k]) * d.stride[k];
      rem /= d.size[k];
    }
    const uint4* ip = in + src * row_vecs;
    uint4* op = out + r * row_vecs;
    for (int64_t i = lane; i < row_vecs; i += 32) op[i] = ip[i];
  }
}

// Output dims -> source index per dim: pad (zeros / replicate) and nearest
// upsampling (by `scale`).
struct PadDims {
  int rank = 0;
  int64_t out[kMaxDims] = {}, in[kMaxDims] = {}, before[kMaxDims] = {}, scale[kMaxDims] = {};
};

template <class T>
__global__ void pad_kernel(const T* x, T* out, PadDims d, bool replicate, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t rem = i, off = 0, stride = 1;
    bool zero = false;
    for (int k = d.rank - 1; k >= 0; --k) {
      int64_t idx = rem % d.out[k] - d.before[k];
      rem /= d.out[k];
      if (idx < 0 || idx >= d.in[k]) {
        zero = !replicate;
        idx = idx < 0 ? 0 : d.in[k] - 1;
      }
      off += idx * stride;
      stride *= d.in[k];
    }
    out[i] = zero ? from_f<T>(0.0f) : x[off];
  }
}

// Nearest upsampling, a warp per output row: the source row found once, each
// of its elements written `sw` times (SW = 2: as one pair; SW = 0: sw at run
// time).
template <class T, int SW>
__global__ void upsample_rows_kernel(const T* x, T* out, PadDims d, int64_t rows, int sw) {
  const int lane = threadIdx.x % 32, last = d.rank - 1;
  const int64_t iw = d.in[last], ow = d.out[last];
  const int64_t warps = int64_t(gridDim.x) * blockDim.x / 32;
  for (int64_t r = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32; r < rows; r += warps) {
    int64_t rem = r, src = 0, stride = iw;
    for (int k = last - 1; k >= 0; --k) {
      src += (rem % d.out[k]) / d.scale[k] * stride;
      rem /= d.out[k];
      stride *= d.in[k];
    }
    const T* xr = x + src;
    T* orow = out + r * ow;
    for (int64_t j = lane; j < iw; j += 32) {
      const T v = xr[j];
      if constexpr (SW == 2) {
        *reinterpret_cast<Vec<T, 2>*>(orow + 2 * j) = Vec<T, 2>{{v, v}};
      } else {
        for (int k = 0; k < sw; ++k) orow[j * sw + k] = v;
      }
    }
  }
}

// x [B, S, H, D] with float cos/sin [S - start, D] on interleaved pairs of tokens >= start.
template <class T>
__global__ void rope_kernel(const T* x, const float* cs, const float* sn, T* out, int64_t s, int64_t h, int64_t d,
                            int64_t start, int64_t pairs) {
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < pairs; p += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = p * 2;
    const int64_t j = i % d, t = (i / (h * d)) % s - start;
    const float re = to_f<T>(x[i]), im = to_f<T>(x[i + 1]);
    if (t < 0) {
      out[i] = x[i];
      out[i + 1] = x[i + 1];
      continue;
    }
    out[i] = from_f<T>(re * cs[t * d + j] - im * sn[t * d + j]);
    out[i + 1] = from_f<T>(im * cs[t * d + j + 1] + re * sn[t * d + j + 1]);
  }
}

template <class T>
__global__ void embedding_kernel(const int64_t* ids, const T* table, T* out, int64_t d, int64_t n, int64_t v,
                                 int* bad) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t id = ids[i / d];
    if (id < 0 || id >= v) {
      *bad = 1;
      out[i] = from_f<T>(0.0f);
    } else {
      out[i] = table[id * d + i % d];
    }
  }
}

}  // namespace
}  // namespace cuda

using namespace cuda;

Tensor CudaBackend::permute(const Tensor& x, const std::vector<int>& perm) {
  OpScope op_scope(*this, "permute");
  check_cuda(x, "permute");
  const int r = x.rank();
  PAB_ASSERT(int(perm.size()) == r && r <= kMaxDims, "permute of ", x.desc(), " with ", perm.size(), " axes");
  Shape in_strides(static_cast<size_t>(r), 1);
  for (int i = r - 2; i >= 0; --i) in_strides[size_t(i)] = in_strides[size_t(i) + 1] * x.shape()[size_t(i) + 1];
  Dims d;
  d.rank = r;
  Shape os(static_cast<size_t>(r));
  std::vector<bool> seen(static_cast<size_t>(r), false);
  for (int i = 0; i < r; ++i) {
    int p = perm[size_t(i)];
    PAB_ASSERT(p >= 0 && p < r && !seen[size_t(p)], "invalid permutation");
    seen[size_t(p)] = true;
    os[size_t(i)] = d.size[i] = x.shape()[size_t(p)];
    d.stride[i] = in_strides[size_t(p)];
  }
  Tensor out = Tensor::empty(os, x.dtype(), device());
  if (out.numel() == 0) return out;
  const size_t row_bytes = size_t(x.shape().back()) * dtype_size(x.dtype());
  if (r >= 2 && perm.back() == r - 1 && row_bytes % 16 == 0 && aligned16(x.raw()) && aligned16(out.raw())) {
    Dims rows_d;  // output rows with source strides counted in rows
    rows_d.rank = r - 1;
    for (int i = 0; i < r - 1; ++i) {
      rows_d.size[i] = d.size[i];
      rows_d.stride[i] = d.stride[i] / x.shape().back();
    }
    const int64_t rows = out.numel() / x.shape().back();
    const unsigned blocks = unsigned(std::min<int64_t>((rows + 7) / 8, 65535 * 16));
    row_gather_kernel<<<blocks, 256, 0, stream()>>>(static_cast<const uint4*>(x.raw()), static_cast<uint4*>(out.raw()),
                                                    rows_d, rows, int64_t(row_bytes / 16));
    PAB_KERNEL_CHECK();
    return out;
  }
  launch_gather(x.raw(), out.raw(), d, out.numel(), dtype_size(x.dtype()), stream());
  return out;
}

Tensor CudaBackend::concat(const std::vector<Tensor>& parts, int dim) {
  OpScope op_scope(*this, "concat");
  PAB_ASSERT(!parts.empty());
  const Tensor& first = parts[0];
  const int r = first.rank();
  const int d = dim < 0 ? dim + r : dim;
  PAB_ASSERT(d >= 0 && d < r, "concat along ", dim, " of ", first.desc());
  Shape os = first.shape();
  os[size_t(d)] = 0;
  for (const Tensor& p : parts) {
    check_same(first, p, "concat");
    PAB_ASSERT(p.rank() == r, "concat of ", first.desc(), " and ", p.desc());
    for (int i = 0; i < r; ++i)
      PAB_ASSERT(i == d || p.shape()[size_t(i)] == first.shape()[size_t(i)], "concat of ", first.desc(), " and ",
                 p.desc(), " along ", d);
    os[size_t(d)] += p.shape()[size_t(d)];
  }
  Tensor out = Tensor::empty(os, first.dtype(), device());
  const size_t es = dtype_size(first.dtype());
  int64_t outer = 1, inner = 1;
  for (int i = 0; i < d; ++i) outer *= os[size_t(i)];
  for (int i = d + 1; i < r; ++i) inner *= os[size_t(i)];
  const size_t out_row = size_t(os[size_t(d)] * inner) * es;
  size_t col = 0;
  for (const Tensor& p : parts) {
    size_t prow = size_t(p.shape()[size_t(d)] * inner) * es;
    if (prow > 0 && outer > 0)
      PAB_CUDA_CHECK(cudaMemcpy2DAsync(static_cast<char*>(out.raw()) + col, out_row, p.raw(), prow, prow,
                                       size_t(outer), cudaMemcpyDeviceToDevice, stream()));
    col += prow;
  }
  return out;
}

Tensor CudaBackend::slice(const Tensor& x, int dim, int64_t start, int64_t end) {
  OpScope op_scope(*this, "slice");
  check_cuda(x, "slice");
  const int r = x.rank();
  const int d = dim < 0 ? dim + r : dim;
  PAB_ASSERT(d >= 0 && d < r, "slice along ", dim, " of ", x.desc());
  const int64_t size = x.shape()[size_t(d)];
  PAB_ASSERT(0 <= start && start <= end && end <= size, "slice [", start, ", ", end, ") of ", x.desc());
  Shape os = x.shape();
  os[size_t(d)] = end - start;
  Tensor out = Tensor::empty(os, x.dtype(), device());
  const size_t es = dtype_size(x.dtype());
  int64_t outer = 1, inner = 1;
  for (int i = 0; i < d; ++i) outer *= os[size_t(i)];
  for (int i = d + 1; i < r; ++i) inner *= os[size_t(i)];
  const size_t in_row = size_t(size * inner) * es, out_row = size_t((end - start) * inner) * es;
  if (out_row > 0 && outer > 0)
    PAB_CUDA_CHECK(cudaMemcpy2DAsync(out.raw(), out_row, static_cast<const char*>(x.raw()) + size_t(start * inner) * es,
                                     in_row, out_row, size_t(outer), cudaMemcpyDeviceToDevice, stream()));
  return out;
}

Tensor CudaBackend::pad(const Tensor& x, const std::vector<std::array<int64_t, 2>>& pads, PadMode mode) {
  OpScope op_scope(*this, "pad");
  check_cuda(x, "pad");
  const int r = x.rank();
  PAB_ASSERT(r >= 1 && int(pads.size()) <= r && r <= kMaxDims, "pad with ", pads.size(), " dims for ", x.desc());
  PadDims d;
  d.rank = r;
  Shape os = x.shape();
  for (int i = 0; i < r; ++i) {
    int j = i - (r - int(pads.size()));
    std::array<int64_t, 2> p = j >= 0 ? pads[size_t(j)] : std::array<int64_t, 2>{0, 0};
    PAB_ASSERT(p[0] >= 0 && p[1] >= 0, "negative padding");
    PAB_ASSERT(mode == PadMode::zeros || x.shape()[size_t(i)] > 0 || (p[0] == 0 && p[1] == 0),
               "replicate padding of an empty dimension");
    d.in[i] = x.shape()[size_t(i)];
    d.before[i] = p[0];
    os[size_t(i)] += p[0] + p[1];
    d.out[i] = os[size_t(i)];
  }
  Tensor out = Tensor::empty(os, x.dtype(), device());
  if (out.numel() == 0) return out;
  dispatch_float(x.dtype(), "pad", [&]<class T>() {
    pad_kernel<T><<<blocks_for(out.numel()), 256, 0, stream()>>>(cptr<T>(x), mptr<T>(out), d,
                                                                 mode == PadMode::replicate, out.numel());
  });
  PAB_KERNEL_CHECK();
  return out;
}

Tensor CudaBackend::upsample_nearest(const Tensor& x, const std::vector<int>& scales) {
  OpScope op_scope(*this, "upsample_nearest");
  check_cuda(x, "upsample_nearest");
  const int r = x.rank(), k = int(scales.size());
  PAB_ASSERT(k >= 1 && k <= r && r <= kMaxDims, "upsample of ", x.desc(), " in ", k, " dims");
  PadDims d;
  d.rank = r;
  Shape os = x.shape();
  for (int i = 0; i < r; ++i) {
    int j = i - (r - k);
    int s = j >= 0 ? scales[size_t(j)] : 1;
    PAB_ASSERT(s >= 1, "upsample factor must be >= 1");
    d.in[i] = x.shape()[size_t(i)];
    d.scale[i] = s;
    os[size_t(i)] *= s;
    d.out[i] = os[size_t(i)];
  }
  Tensor out = Tensor::empty(os, x.dtype(), device());
  if (out.numel() == 0) return out;
  const int sw = int(d.scale[r - 1]);
  const int64_t rows = out.numel() / os[size_t(r - 1)];
  dispatch_float(x.dtype(), "upsample_nearest", [&]<class T>() {
    auto kernel = sw == 2 ? upsample_rows_kernel<T, 2> : upsample_rows_kernel<T, 0>;
    kernel<<<blocks_for(rows * 32), 256, 0, stream()>>>(cptr<T>(x), mptr<T>(out), d, rows, sw);
  });
  PAB_KERNEL_CHECK();
  return out;
}

Tensor CudaBackend::rope(const Tensor& x, const Tensor& cos, const Tensor& sin, int64_t start) {
  OpScope op_scope(*this, "rope");
  check_cuda(x, "rope");
  PAB_ASSERT(x.rank() == 4, "rope expects [B, S, H, D], got ", x.desc());
  const int64_t s = x.dim(1), h = x.dim(2), d = x.dim(3);
  PAB_ASSERT(start >= 0 && start <= s, "rope start ", start, " for ", x.desc());
  PAB_ASSERT(d % 2 == 0 && cos.numel() == (s - start) * d && sin.numel() == (s - start) * d, "rope tables ",
             cos.desc(), " for ", x.desc(), " from token ", start);
  // The tables stay in float (as the reference applies them in float32).
  Tensor c = cos.dtype() == DType::f32 ? cos : cast(cos, DType::f32);
  Tensor sn = sin.dtype() == DType::f32 ? sin : cast(sin, DType::f32);
  check_cuda(c, "rope");
  check_cuda(sn, "rope");
  Tensor out = Tensor::empty(x.shape(), x.dtype(), device());
  const int64_t pairs = x.numel() / 2;
  if (pairs == 0) return out;
  dispatch_float(x.dtype(), "rope", [&]<class T>() {
    rope_kernel<T><<<blocks_for(pairs), 256, 0, stream()>>>(cptr<T>(x), cptr<float>(c), cptr<float>(sn), mptr<T>(out),
                                                            s, h, d, start, pairs);
  });
  PAB_KERNEL_CHECK();
  return out;
}

Tensor CudaBackend::embedding(const Tensor& ids, const Tensor& table) {
  OpScope op_scope(*this, "embedding");
  check_cuda(table, "embedding");
  PAB_ASSERT(ids.dtype() == DType::i64 && table.rank() == 2, "embedding of ", ids.desc(), " in ", table.desc());
  Tensor dev_ids = ids.device() == device() ? ids : ids.to(device());
  const int64_t v = table.dim(0), d = table.dim(1);
  Shape os = ids.shape();
  os.push_back(d);
  Tensor out = Tensor::empty(os, table.dtype(), device());
  if (out.numel() == 0) return out;
  Tensor bad = Tensor::zeros({1}, DType::i32, device());
  dispatch_float(table.dtype(), "embedding", [&]<class T>() {
    embedding_kernel<T><<<blocks_for(out.numel()), 256, 0, stream()>>>(cptr<int64_t>(dev_ids), cptr<T>(table),
                                                                       mptr<T>(out), d, out.numel(), v,
                                                                       mptr<int>(bad));
  });
  PAB_KERNEL_CHECK();
  int flag = 0;
  copy(&flag, Device::cpu, bad.raw(), device(), sizeof(int));
  if (flag) fail("token id outside the vocabulary of ", v);
  return out;
}

}  // namespace pab
