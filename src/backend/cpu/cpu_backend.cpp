// CPU backend: its registration, memory (the host's), elementwise,
// normalisation and layout ops. Linear algebra and convolution live in
// cpu_linalg.cpp.
#include "backend/cpu/cpu_backend.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

namespace pab {

namespace {

void check_f32(const Tensor& x, const char* op) {
  if (x.dtype() != DType::f32 || x.device() != Device::cpu)
    fail(op, ": the CPU backend computes in f32, got ", x.desc());
}

int norm_dim(int dim, int rank) {
  int d = dim < 0 ? dim + rank : dim;
  PAB_ASSERT(d >= 0 && d < rank, "dimension ", dim, " of rank ", rank);
  return d;
}

// Row-major strides of a shape.
Shape strides_of(const Shape& s) {
  Shape st(s.size(), 1);
  for (int i = int(s.size()) - 2; i >= 0; --i) st[size_t(i)] = st[size_t(i) + 1] * s[size_t(i) + 1];
  return st;
}

Backend* create_cpu_backend(Device device) {
  static CpuBackend instance;
  return &instance;
}

[[maybe_unused]] const Device registered = register_backend("cpu", create_cpu_backend);

}  // namespace

std::string CpuBackend::device_description() const {
  return cat("CPU, ", omp_get_max_threads(), " threads");
}

std::shared_ptr<Storage> CpuBackend::alloc(size_t bytes) {
  return host_memory().alloc(bytes);
}

MemoryStats CpuBackend::memory_stats() const {
  const size_t in_use = host_memory().in_use();
  return {in_use, host_memory().peak(), in_use};
}

void CpuBackend::reset_peak_memory() {
  host_memory().reset_peak();
}

std::optional<uint64_t> CpuBackend::memory_available() const {
  // MemAvailable: what the kernel could give without swapping.
  std::optional<uint64_t> available;
  if (std::FILE* f = std::fopen("/proc/meminfo", "r")) {
    char line[256];
    unsigned long long kib = 0;
    while (std::fgets(line, sizeof line, f))
      if (std::sscanf(line, "MemAvailable: %llu kB", &kib) == 1) available = uint64_t(kib) * 1024;
    std::fclose(f);
  }
  // A container's cgroup (v2) may allow less than the host has.
  auto read_u64 = [](const char* path) -> std::optional<uint64_t> {
    std::FILE* f = std::fopen(path, "r");
    if (!f) return std::nullopt;
    unsigned long long v = 0;
    const bool ok = std::fscanf(f, "%llu", &v) == 1;  // "max" reads as no number
    std::fclose(f);
    return ok ? std::optional<uint64_t>(v) : std::nullopt;
  };
  const auto limit = read_u64("/sys/fs/cgroup/memory.max"), used = read_u64("/sys/fs/cgroup/memory.current");
  if (limit && used) {
    const uint64_t room = *limit > *used ? *limit - *used : 0;
    available = available ? std::min(*available, room) : room;
  }
  return available;
}

void CpuBackend::memset_zero(void* data, size_t bytes) {
  host_memory().memset_zero(data, bytes);
}

void CpuBackend::copy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) {
  host_memory().copy(dst, dst_device, src, src_device, bytes);
}

Tensor CpuBackend::cast(const Tensor& x, DType dtype) {
  return host_memory().cast(x, dtype);
}

// ---------------------------------------------------------------- normalisation

Tensor CpuBackend::layer_norm(const Tensor& x, const Tensor* w, const Tensor* b, float eps) {
  check_f32(x, "layer_norm");
  int64_t c = x.dim(-1), rows = x.numel() / std::max<int64_t>(c, 1);
  if (w) PAB_ASSERT(w->numel() == c, "layer_norm weight ", w->desc(), " for ", x.desc());
  if (b) PAB_ASSERT(b->numel() == c, "layer_norm bias ", b->desc(), " for ", x.desc());
  Tensor out = Tensor::empty(x.shape());
  const float* xp = x.f32();
  float* op = out.f32();
  const float* wp = w ? w->f32() : nullptr;
  const float* bp = b ? b->f32() : nullptr;
#pragma omp parallel for
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = xp + r * c;
    float* orow = op + r * c;
    double mean = 0;
    for (int64_t i = 0; i < c; ++i) mean += xr[i];
    mean /= double(c);
    double var = 0;
    for (int64_t i = 0; i < c; ++i) var += (xr[i] - mean) * (xr[i] - mean);
    var /= double(c);
    float inv = float(1.0 / std::sqrt(var + double(eps)));
    for (int64_t i = 0; i < c; ++i) {
      float v = float(xr[i] - mean) * inv;
      if (wp) v *= wp[i];
      if (bp) v += bp[i];
      orow[i] = v;
    }
  }
  return out;
}

Tensor CpuBackend::rms_norm(const Tensor& x, const Tensor* w, float eps) {
  check_f32(x, "rms_norm");
  int64_t c = x.dim(-1), rows = x.numel() / std::max<int64_t>(c, 1);
  if (w) PAB_ASSERT(w->numel() == c, "rms_norm weight ", w->desc(), " for ", x.desc());
  Tensor out = Tensor::empty(x.shape());
  const float* xp = x.f32();
  float* op = out.f32();
  const float* wp = w ? w->f32() : nullptr;
#pragma omp parallel for
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = xp + r * c;
    double ss = 0;
    for (int64_t i = 0; i < c; ++i) ss += double(xr[i]) * xr[i];
    float inv = float(1.0 / std::sqrt(ss / double(c) + double(eps)));
    for (int64_t i = 0; i < c; ++i) op[r * c + i] = xr[i] * inv * (wp ? wp[i] : 1.0f);
  }
  return out;
}

Tensor CpuBackend::group_norm(const Tensor& x, int groups, const Tensor* w, const Tensor* b, float eps) {
  check_f32(x, "group_norm");
  PAB_ASSERT(x.rank() >= 2, "group_norm needs [B, C, ...], got ", x.desc());
  int64_t bsz = x.dim(0), c = x.dim(1);
  PAB_ASSERT(groups > 0 && c % groups == 0, "group_norm: ", c, " channels in ", groups, " groups");
  int64_t inner = x.numel() / std::max<int64_t>(bsz * c, 1);
  int64_t cpg = c / groups, group_size = cpg * inner;
  Tensor out = Tensor::empty(x.shape());
  const float* xp = x.f32();
  float* op = out.f32();
  const float* wp = w ? w->f32() : nullptr;
  const float* bp = b ? b->f32() : nullptr;
#pragma omp parallel for collapse(2)
  for (int64_t n = 0; n < bsz; ++n) {
    for (int64_t g = 0; g < groups; ++g) {
      const float* xg = xp + (n * c + g * cpg) * inner;
      float* og = op + (n * c + g * cpg) * inner;
      double mean = 0;
      for (int64_t i = 0; i < group_size; ++i) mean += xg[i];
      mean /= double(group_size);
      double var = 0;
      for (int64_t i = 0; i < group_size; ++i) var += (xg[i] - mean) * (xg[i] - mean);
      var /= double(group_size);
      float inv = float(1.0 / std::sqrt(var + double(eps)));
      for (int64_t ch = 0; ch < cpg; ++ch) {
        int64_t cc = g * cpg + ch;
        float sw = wp ? wp[cc] : 1.0f, sb = bp ? bp[cc] : 0.0f;
        for (int64_t i = 0; i < inner; ++i) {
          int64_t k = ch * inner + i;
          og[k] = float(xg[k] - mean) * inv * sw + sb;
        }
      }
    }
  }
  return out;
}

Tensor CpuBackend::softmax(const Tensor& x) {
  check_f32(x, "softmax");
  int64_t c = x.dim(-1), rows = x.numel() / std::max<int64_t>(c, 1);
  Tensor out = Tensor::empty(x.shape());
  const float* xp = x.f32();
  float* op = out.f32();
#pragma omp parallel for
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = xp + r * c;
    float* orow = op + r * c;
    float m = -INFINITY;
    for (int64_t i = 0; i < c; ++i) m = std::max(m, xr[i]);
    double s = 0;
    for (int64_t i = 0; i < c; ++i) {
      orow[i] = std::exp(xr[i] - m);
      s += orow[i];
    }
    float inv = float(1.0 / s);
    for (int64_t i = 0; i < c; ++i) orow[i] *= inv;
  }
  return out;
}

// ---------------------------------------------------------------- elementwise

Tensor CpuBackend::unary(const Tensor& x, Unary op) {
  check_f32(x, "unary");
  Tensor out = Tensor::empty(x.shape());
  const float* xp = x.f32();
  float* o = out.f32();
  int64_t n = x.numel();
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
  constexpr float kInvSqrt2 = 0.7071067811865476f;
  switch (op) {
    case Unary::silu:
#pragma omp parallel for
      for (int64_t i = 0; i < n; ++i) o[i] = xp[i] / (1.0f + std::exp(-xp[i]));
      break;
    // Both GELUs in forms without the cancellation of 1 + tanh(u) or 1 + erf(u)
    // for negative inputs: 0.5 (1 + tanh(u)) = 1 / (1 + exp(-2u)), 1 + erf(-z) = erfc(z).
    case Unary::gelu_tanh:
#pragma omp parallel for
      for (int64_t i = 0; i < n; ++i) {
        float v = xp[i];
        o[i] = v / (1.0f + std::exp(-2.0f * kSqrt2OverPi * (v + 0.044715f * v * v * v)));
      }
      break;
    case Unary::gelu_erf:
#pragma omp parallel for
      for (int64_t i = 0; i < n; ++i) o[i] = 0.5f * xp[i] * std::erfc(-xp[i] * kInvSqrt2);
      break;
    case Unary::relu:
#pragma omp parallel for
      for (int64_t i = 0; i < n; ++i) o[i] = std::max(xp[i], 0.0f);
      break;
    case Unary::tanh:
#pragma omp parallel for
      for (int64_t i = 0; i < n; ++i) o[i] = std::tanh(xp[i]);
      break;
    case Unary::sigmoid:
#pragma omp parallel for
      for (int64_t i = 0; i < n; ++i) o[i] = 1.0f / (1.0f + std::exp(-xp[i]));
      break;
    case Unary::exp:
#pragma omp parallel for
      for (int64_t i = 0; i < n; ++i) o[i] = std::exp(xp[i]);
      break;
    case Unary::square:
#pragma omp parallel for
      for (int64_t i = 0; i < n; ++i) o[i] = xp[i] * xp[i];
      break;
  }
  return out;
}

namespace {
template <class F>
void broadcast_loop(const Tensor& a, const Tensor& b, Tensor& out, F f) {
  const Shape& os = out.shape();
  int r = int(os.size());
  // strides of a and b aligned to the output's rank, 0 where broadcast
  auto aligned = [&](const Tensor& t) {
    Shape st(size_t(r), 0);
    Shape ts = strides_of(t.shape());
    int off = r - t.rank();
    for (int i = 0; i < t.rank(); ++i) st[size_t(i + off)] = t.shape()[size_t(i)] == 1 ? 0 : ts[size_t(i)];
    return st;
  };
  Shape sa = aligned(a), sb = aligned(b);
  int64_t inner = r ? os[size_t(r - 1)] : 1;
  int64_t rows = out.numel() / std::max<int64_t>(inner, 1);
  int64_t ia = r ? sa[size_t(r - 1)] : 0, ib = r ? sb[size_t(r - 1)] : 0;
  const float* ap = a.f32();
  const float* bp = b.f32();
  float* op = out.f32();
#pragma omp parallel for if (rows > 16)
  for (int64_t row = 0; row < rows; ++row) {
    int64_t rem = row, oa = 0, ob = 0;
    for (int d = r - 2; d >= 0; --d) {
      int64_t idx = rem % os[size_t(d)];
      rem /= os[size_t(d)];
      oa += idx * sa[size_t(d)];
      ob += idx * sb[size_t(d)];
    }
    const float* ar = ap + oa;
    const float* br = bp + ob;
    float* orow = op + row * inner;
    for (int64_t i = 0; i < inner; ++i) orow[i] = f(ar[i * ia], br[i * ib]);
  }
}
}  // namespace

Tensor CpuBackend::binary(const Tensor& a, const Tensor& b, Binary op) {
  check_f32(a, "binary");
  check_f32(b, "binary");
  int r = std::max(a.rank(), b.rank());
  Shape os(size_t(r), 1);
  for (int i = 0; i < r; ++i) {
    int64_t da = i - (r - a.rank()) >= 0 ? a.shape()[size_t(i - (r - a.rank()))] : 1;
    int64_t db = i - (r - b.rank()) >= 0 ? b.shape()[size_t(i - (r - b.rank()))] : 1;
    PAB_ASSERT(da == db || da == 1 || db == 1, "cannot broadcast ", a.desc(), " with ", b.desc());
    os[size_t(i)] = da == 1 ? db : da;
  }
  Tensor out = Tensor::empty(os);
  switch (op) {
    case Binary::add: broadcast_loop(a, b, out, [](float x, float y) { return x + y; }); break;
    case Binary::sub: broadcast_loop(a, b, out, [](float x, float y) { return x - y; }); break;
    case Binary::mul: broadcast_loop(a, b, out, [](float x, float y) { return x * y; }); break;
    case Binary::div: broadcast_loop(a, b, out, [](float x, float y) { return x / y; }); break;
  }
  return out;
}

Tensor CpuBackend::affine(const Tensor& x, float mul, float add) {
  check_f32(x, "affine");
  Tensor out = Tensor::empty(x.shape());
  const float* xp = x.f32();
  float* o = out.f32();
  int64_t n = x.numel();
#pragma omp parallel for if (n > 4096)
  for (int64_t i = 0; i < n; ++i) o[i] = xp[i] * mul + add;
  return out;
}

// ---------------------------------------------------------------- layout

namespace {
// Gathers rows of `inner` elements of type T (any dtype of that size: bits are copied, never converted).
template <class T>
void permute_rows(const void* src_raw, void* dst_raw, const Shape& os, const Shape& src_strides) {
  const int r = int(os.size());
  const int64_t inner = r ? os[size_t(r - 1)] : 1;
  const int64_t inner_stride = r ? src_strides[size_t(r - 1)] : 1;
  const int64_t rows = shape_numel(os) / inner;
  const T* src = static_cast<const T*>(src_raw);
  T* dst = static_cast<T*>(dst_raw);
#pragma omp parallel for if (rows > 16)
  for (int64_t row = 0; row < rows; ++row) {
    int64_t rem = row, off = 0;
    for (int d = r - 2; d >= 0; --d) {
      off += (rem % os[size_t(d)]) * src_strides[size_t(d)];
      rem /= os[size_t(d)];
    }
    T* o = dst + row * inner;
    const T* s = src + off;
    if (inner_stride == 1) {
      std::memcpy(o, s, size_t(inner) * sizeof(T));
    } else {
      for (int64_t i = 0; i < inner; ++i) o[i] = s[i * inner_stride];
    }
  }
}
}  // namespace

Tensor CpuBackend::permute(const Tensor& x, const std::vector<int>& perm) {
  int r = x.rank();
  PAB_ASSERT(int(perm.size()) == r, "permute of ", x.desc(), " with ", perm.size(), " axes");
  Shape in_strides = strides_of(x.shape());
  Shape os(static_cast<size_t>(r)), src_strides(static_cast<size_t>(r));
  std::vector<bool> seen(size_t(r), false);
  for (int i = 0; i < r; ++i) {
    int p = perm[size_t(i)];
    PAB_ASSERT(p >= 0 && p < r && !seen[size_t(p)], "invalid permutation for ", x.desc());
    seen[size_t(p)] = true;
    os[size_t(i)] = x.shape()[size_t(p)];
    src_strides[size_t(i)] = in_strides[size_t(p)];
  }
  Tensor out = Tensor::empty(os, x.dtype());
  if (out.numel() == 0) return out;
  switch (dtype_size(x.dtype())) {
    case 1: permute_rows<uint8_t>(x.raw(), out.raw(), os, src_strides); break;
    case 2: permute_rows<uint16_t>(x.raw(), out.raw(), os, src_strides); break;
    case 4: permute_rows<uint32_t>(x.raw(), out.raw(), os, src_strides); break;
    case 8: permute_rows<uint64_t>(x.raw(), out.raw(), os, src_strides); break;
    default: PAB_ASSERT(false, "permute of ", x.desc());
  }
  return out;
}

Tensor CpuBackend::concat(const std::vector<Tensor>& parts, int dim) {
  PAB_ASSERT(!parts.empty());
  const Tensor& first = parts[0];
  int d = norm_dim(dim, first.rank());
  Shape os = first.shape();
  os[size_t(d)] = 0;
  for (const Tensor& p : parts) {
    PAB_ASSERT(p.rank() == first.rank() && p.dtype() == first.dtype(), "concat of ", first.desc(), " and ", p.desc());
    for (int i = 0; i < p.rank(); ++i)
      PAB_ASSERT(i == d || p.shape()[size_t(i)] == first.shape()[size_t(i)], "concat of ", first.desc(), " and ",
                 p.desc(), " along ", d);
    os[size_t(d)] += p.shape()[size_t(d)];
  }
  Tensor out = Tensor::empty(os, first.dtype());
  size_t es = dtype_size(first.dtype());
  int64_t outer = 1;
  for (int i = 0; i < d; ++i) outer *= os[size_t(i)];
  int64_t inner = 1;
  for (int i = d + 1; i < int(os.size()); ++i) inner *= os[size_t(i)];
  size_t out_row = size_t(os[size_t(d)] * inner) * es;
  char* dst = static_cast<char*>(out.raw());
  size_t col = 0;
  for (const Tensor& p : parts) {
    size_t prow = size_t(p.shape()[size_t(d)] * inner) * es;
    const char* src = static_cast<const char*>(p.raw());
    for (int64_t o = 0; o < outer; ++o) std::memcpy(dst + size_t(o) * out_row + col, src + size_t(o) * prow, prow);
    col += prow;
  }
  return out;
}

Tensor CpuBackend::slice(const Tensor& x, int dim, int64_t start, int64_t end) {
  int d = norm_dim(dim, x.rank());
  int64_t size = x.shape()[size_t(d)];
  PAB_ASSERT(0 <= start && start <= end && end <= size, "slice [", start, ", ", end, ") of ", x.desc(), " along ", d);
  Shape os = x.shape();
  os[size_t(d)] = end - start;
  Tensor out = Tensor::empty(os, x.dtype());
  size_t es = dtype_size(x.dtype());
  int64_t outer = 1;
  for (int i = 0; i < d; ++i) outer *= os[size_t(i)];
  int64_t inner = 1;
  for (int i = d + 1; i < x.rank(); ++i) inner *= os[size_t(i)];
  size_t in_row = size_t(size * inner) * es, out_row = size_t((end - start) * inner) * es;
  const char* src = static_cast<const char*>(x.raw()) + size_t(start * inner) * es;
  char* dst = static_cast<char*>(out.raw());
  for (int64_t o = 0; o < outer; ++o) std::memcpy(dst + size_t(o) * out_row, src + size_t(o) * in_row, out_row);
  return out;
}

Tensor CpuBackend::pad(const Tensor& x, const std::vector<std::array<int64_t, 2>>& pads, PadMode mode) {
  check_f32(x, "pad");
  int r = x.rank();
  PAB_ASSERT(r >= 1 && int(pads.size()) <= r, "pad with ", pads.size(), " dims for ", x.desc());
  std::vector<std::array<int64_t, 2>> p(size_t(r), {0, 0});
  for (size_t i = 0; i < pads.size(); ++i) p[size_t(r) - pads.size() + i] = pads[i];
  Shape os = x.shape();
  for (int i = 0; i < r; ++i) {
    PAB_ASSERT(p[size_t(i)][0] >= 0 && p[size_t(i)][1] >= 0, "negative padding");
    os[size_t(i)] += p[size_t(i)][0] + p[size_t(i)][1];
    PAB_ASSERT(mode == PadMode::zeros || x.shape()[size_t(i)] > 0 || os[size_t(i)] == 0,
               "replicate padding of an empty dimension of ", x.desc());
  }
  Tensor out = Tensor::empty(os);
  if (out.numel() == 0) return out;
  Shape st = strides_of(x.shape());
  int64_t inner = os[size_t(r - 1)];
  int64_t rows = out.numel() / std::max<int64_t>(inner, 1);
  const float* src = x.f32();
  float* dst = out.f32();
  int64_t w = x.shape()[size_t(r - 1)], pl = p[size_t(r - 1)][0];
#pragma omp parallel for if (rows > 16)
  for (int64_t row = 0; row < rows; ++row) {
    int64_t rem = row, off = 0;
    bool zero = false;
    for (int d = r - 2; d >= 0; --d) {
      int64_t idx = rem % os[size_t(d)] - p[size_t(d)][0];
      rem /= os[size_t(d)];
      int64_t n = x.shape()[size_t(d)];
      if (idx < 0 || idx >= n) {
        // zeros mode may pad an empty dimension, where clamping has no valid range
        if (mode == PadMode::zeros) {
          zero = true;
          break;
        }
        idx = std::clamp<int64_t>(idx, 0, n - 1);
      }
      off += idx * st[size_t(d)];
    }
    float* o = dst + row * inner;
    if (zero) {
      std::fill(o, o + inner, 0.0f);
      continue;
    }
    for (int64_t i = 0; i < inner; ++i) {
      int64_t j = i - pl;
      if (j >= 0 && j < w) {
        o[i] = src[off + j];
      } else {
        o[i] = mode == PadMode::zeros ? 0.0f : src[off + std::clamp<int64_t>(j, 0, w - 1)];
      }
    }
  }
  return out;
}

Tensor CpuBackend::upsample_nearest(const Tensor& x, const std::vector<int>& scales) {
  check_f32(x, "upsample_nearest");
  int r = x.rank(), k = int(scales.size());
  PAB_ASSERT(k >= 1 && k <= r, "upsample of ", x.desc(), " in ", k, " dims");
  Shape os = x.shape();
  for (int i = 0; i < k; ++i) {
    PAB_ASSERT(scales[size_t(i)] >= 1, "upsample factor must be >= 1");
    os[size_t(r - k + i)] *= scales[size_t(i)];
  }
  Tensor out = Tensor::empty(os);
  Shape st = strides_of(x.shape());
  int64_t inner = os[size_t(r - 1)];
  int64_t rows = out.numel() / std::max<int64_t>(inner, 1);
  int last_scale = scales[size_t(k - 1)];
  const float* src = x.f32();
  float* dst = out.f32();
#pragma omp parallel for if (rows > 16)
  for (int64_t row = 0; row < rows; ++row) {
    int64_t rem = row, off = 0;
    for (int d = r - 2; d >= 0; --d) {
      int64_t idx = rem % os[size_t(d)];
      rem /= os[size_t(d)];
      int si = d - (r - k);
      if (si >= 0) idx /= scales[size_t(si)];
      off += idx * st[size_t(d)];
    }
    float* o = dst + row * inner;
    for (int64_t i = 0; i < inner; ++i) o[i] = src[off + i / last_scale];
  }
  return out;
}

// ---------------------------------------------------------------- model helpers

Tensor CpuBackend::rope(const Tensor& x, const Tensor& cos, const Tensor& sin, int64_t start) {
  check_f32(x, "rope");
  PAB_ASSERT(x.rank() == 4, "rope expects [B, S, H, D], got ", x.desc());
  int64_t bsz = x.dim(0), s = x.dim(1), h = x.dim(2), d = x.dim(3);
  PAB_ASSERT(start >= 0 && start <= s, "rope start ", start, " for ", x.desc());
  const int64_t rotated = s - start;
  PAB_ASSERT(d % 2 == 0 && cos.numel() == rotated * d && sin.numel() == rotated * d, "rope tables ", cos.desc(),
             " for ", x.desc(), " from token ", start);
  Tensor out = Tensor::empty(x.shape());
  const float* xp = x.f32();
  const float* cp = cos.f32();
  const float* sp = sin.f32();
  float* o = out.f32();
#pragma omp parallel for collapse(2)
  for (int64_t n = 0; n < bsz; ++n) {
    for (int64_t t = 0; t < s; ++t) {
      const float* xr = xp + (n * s + t) * h * d;
      float* orow = o + (n * s + t) * h * d;
      if (t < start) {
        std::copy_n(xr, h * d, orow);
        continue;
      }
      const float* c = cp + (t - start) * d;
      const float* sn = sp + (t - start) * d;
      for (int64_t hh = 0; hh < h; ++hh) {
        for (int64_t i = 0; i < d; i += 2) {
          float re = xr[hh * d + i], im = xr[hh * d + i + 1];
          orow[hh * d + i] = re * c[i] - im * sn[i];
          orow[hh * d + i + 1] = im * c[i + 1] + re * sn[i + 1];
        }
      }
    }
  }
  return out;
}

Tensor CpuBackend::embedding(const Tensor& ids, const Tensor& table) {
  check_f32(table, "embedding");
  PAB_ASSERT(ids.dtype() == DType::i64 && table.rank() == 2, "embedding of ", ids.desc(), " in ", table.desc());
  int64_t v = table.dim(0), d = table.dim(1);
  Shape os = ids.shape();
  os.push_back(d);
  Tensor out = Tensor::empty(os);
  const int64_t* ip = ids.i64();
  for (int64_t i = 0; i < ids.numel(); ++i) {
    if (ip[i] < 0 || ip[i] >= v) fail("token id ", ip[i], " outside the vocabulary of ", v);
    std::memcpy(out.f32() + i * d, table.f32() + ip[i] * d, size_t(d) * 4);
  }
  return out;
}

}  // namespace pab
