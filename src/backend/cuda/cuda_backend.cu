// CUDA backend core: device start-up, the caching allocator, copies and casts.
//
// The allocator keeps freed blocks in size buckets and hands them out again,
// so after the first denoising step no cudaMalloc happens: it plays the role
// of a preallocated activation arena. All work runs on one stream, so a block
// freed by the host can be reused by the next kernel without synchronising.
#include <algorithm>

#include "backend/cuda/common.cuh"

namespace pab {

namespace {

#define PAB_CUBLAS_CHECK(expr)                                                              \
  do {                                                                                      \
    cublasStatus_t pab_st_ = (expr);                                                        \
    if (pab_st_ != CUBLAS_STATUS_SUCCESS) fail("cuBLAS error ", int(pab_st_), " in ", #expr); \
  } while (0)

// Rounds sizes so that blocks of similar sizes are interchangeable, wasting
// at most 64 KiB a block (weights come in many sizes).
size_t bucket_of(size_t bytes) {
  if (bytes <= (1u << 20)) return (std::max<size_t>(bytes, 1) + 511) / 512 * 512;
  return (bytes + (64u << 10) - 1) / (64u << 10) * (64u << 10);
}

Backend* create_cuda_backend(Device device) {
  static CudaBackend* instance = new CudaBackend(device);  // lives until exit: tensors may outlive main
  return instance;
}

}  // namespace

Device cuda_device() {
  // Registered on the first call, which start-up makes (below) unless
  // another file's start-up (NCCL's) needs the handle first.
  static const Device device = register_backend("cuda", create_cuda_backend);
  return device;
}

namespace {
[[maybe_unused]] const Device registered = cuda_device();
}  // namespace

CudaBackend& cuda_backend() {
  return static_cast<CudaBackend&>(backend(cuda_device()));
}

CudaBackend::CudaBackend(Device device) : Backend(device) {
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0)
    fail("no CUDA device is available", e != cudaSuccess ? cat(" (", cudaGetErrorString(e), ")") : std::string());
  PAB_CUDA_CHECK(cudaSetDevice(0));
  PAB_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  PAB_CUBLAS_CHECK(cublasLtCreate(&lt_));
  PAB_CUBLAS_CHECK(cublasCreate(&blas_));
  PAB_CUBLAS_CHECK(cublasSetStream(blas_, stream_));
  PAB_CUBLAS_CHECK(cublasSetMathMode(blas_, CUBLAS_DEFAULT_MATH));
  cudnnStatus_t st = cudnnCreate(&dnn_);
  if (st != CUDNN_STATUS_SUCCESS) fail("cuDNN could not start: ", cudnnGetErrorString(st));
  cudnnSetStream(dnn_, stream_);
  PAB_CUDA_CHECK(cudaEventCreate(&ev_start_));
  PAB_CUDA_CHECK(cudaEventCreate(&ev_stop_));
  PAB_CUDA_CHECK(cudaEventCreate(&tune_start_));
  PAB_CUDA_CHECK(cudaEventCreate(&tune_stop_));
}

int CudaBackend::device_count() const {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

std::string CudaBackend::device_description() const {
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  int rt = 0, drv = 0;
  cudaRuntimeGetVersion(&rt);
  cudaDriverGetVersion(&drv);
  return cat(prop.name, " (", prop.multiProcessorCount, " SMs, ", prop.totalGlobalMem >> 30, " GiB), CUDA runtime ", rt,
             ", driver ", drv, ", cuDNN ", cudnnGetVersion(), ", cuBLASLt ", cublasLtGetVersion());
}

CudaBackend::~CudaBackend() = default;  // never destroyed (see create_cuda_backend)

std::shared_ptr<Storage> CudaBackend::alloc(size_t bytes) {
  size_t bucket = bucket_of(bytes);
  void* p = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = free_.find(bucket);
    if (it != free_.end()) {
      p = it->second;
      free_.erase(it);
    }
  }
  if (p == nullptr) {
    cudaError_t e = cudaMalloc(&p, bucket);
    if (e != cudaSuccess) {
      // Give the cached blocks back to the driver and try once more.
      (void)cudaGetLastError();
      synchronize();
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& [size, q] : free_) {
        cudaFree(q);
        reserved_ -= size;
      }
      free_.clear();
      e = cudaMalloc(&p, bucket);
      if (e != cudaSuccess) {
        (void)cudaGetLastError();
        fail("out of GPU memory allocating ", bytes, " bytes (", in_use_ >> 20, " MiB in use)");
      }
    }
    std::lock_guard<std::mutex> lock(mu_);
    reserved_ += bucket;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    in_use_ += bucket;
    peak_ = std::max(peak_, in_use_);
  }
  return std::make_shared<Storage>(p, bytes, device(), [this, bucket](void* q) { release(q, bucket); });
}

void CudaBackend::release(void* p, size_t bucket) {
  std::lock_guard<std::mutex> lock(mu_);
  in_use_ -= bucket;
  free_.emplace(bucket, p);
}

MemoryStats CudaBackend::memory_stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return {in_use_, peak_, reserved_};
}

std::optional<uint64_t> CudaBackend::memory_available() const {
  size_t free = 0, total = 0;
  PAB_CUDA_CHECK(cudaMemGetInfo(&free, &total));
  std::lock_guard<std::mutex> lock(mu_);
  return uint64_t(free) + (reserved_ - in_use_);  // cached buffers are reused before cudaMalloc
}

void CudaBackend::reset_peak_memory() {
  std::lock_guard<std::mutex> lock(mu_);
  peak_ = in_use_;
}

void* CudaBackend::workspace(size_t bytes) {
  if (!workspace_ || workspace_->bytes() < bytes) workspace_ = alloc(std::max<size_t>(bytes, 32u << 20));
  return workspace_->data();
}

void CudaBackend::memset_zero(void* data, size_t bytes) { PAB_CUDA_CHECK(cudaMemsetAsync(data, 0, bytes, stream_)); }

void CudaBackend::copy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) {
  if (bytes == 0) return;
  cudaMemcpyKind kind = dst_device == device()
                            ? (src_device == device() ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                            : cudaMemcpyDeviceToHost;
  PAB_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, kind, stream_));
  // Host memory may be reused as soon as we return.
  if (kind != cudaMemcpyDeviceToDevice) synchronize();
}

void CudaBackend::synchronize() { PAB_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

namespace cuda {
namespace {
template <class S, class D>
__global__ void cast_kernel(const S* in, D* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = from_f<D>(to_f<S>(in[i]));
}
__global__ void i64_to_f32(const int64_t* in, float* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = float(in[i]);
}
}  // namespace
}  // namespace cuda

Tensor CudaBackend::cast(const Tensor& x, DType dtype) {
  OpScope op_scope(*this, "cast");
  using namespace cuda;
  check_cuda(x, "cast");
  Tensor out = Tensor::empty(x.shape(), dtype, device());
  int64_t n = x.numel();
  if (n == 0) return out;
  if (x.dtype() == dtype) {
    copy(out.raw(), device(), x.raw(), device(), x.nbytes());
    return out;
  }
  if (x.dtype() == DType::i64 && dtype == DType::f32) {
    i64_to_f32<<<blocks_for(n), 256, 0, stream_>>>(cptr<int64_t>(x), mptr<float>(out), n);
    PAB_KERNEL_CHECK();
    return out;
  }
  dispatch_float(x.dtype(), "cast", [&]<class S>() {
    dispatch_float(dtype, "cast", [&]<class D>() {
      cast_kernel<S, D><<<blocks_for(n), 256, 0, stream_>>>(cptr<S>(x), mptr<D>(out), n);
    });
  });
  PAB_KERNEL_CHECK();
  return out;
}

}  // namespace pab
