#include "core/tensor.h"

#include <sstream>

namespace pab {

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << "]";
  return os.str();
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) {
    if (d < 0) fail("shape ", shape_str(s), ": a negative dimension");
    if (__builtin_mul_overflow(n, d, &n)) fail("shape ", shape_str(s), ": more than 2^63 elements");
  }
  return n;
}

Tensor::Tensor(std::shared_ptr<Storage> storage, size_t offset_bytes, Shape shape, DType dtype)
    : storage_(std::move(storage)), offset_(offset_bytes), shape_(std::move(shape)), dtype_(dtype) {
  PAB_ASSERT(storage_ != nullptr);
  for (int64_t d : shape_) PAB_ASSERT(d >= 0, "negative dimension in ", shape_str(shape_));
  PAB_ASSERT(offset_ + nbytes() <= storage_->bytes(), "view out of storage bounds");
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  size_t bytes = 0;
  if (__builtin_mul_overflow(size_t(shape_numel(shape)), dtype_size(dtype), &bytes))
    fail("shape ", shape_str(shape), " of ", dtype_name(dtype), ": more than 2^64 bytes");
  return Tensor(device_memory(device).alloc(bytes), 0, shape, dtype);
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  device_memory(device).memset_zero(t.raw(), t.nbytes());
  return t;
}

Tensor Tensor::from_vector(const std::vector<float>& values, const Shape& shape) {
  PAB_ASSERT(int64_t(values.size()) == shape_numel(shape), "from_vector: ", values.size(), " values for shape ",
             shape_str(shape));
  Tensor t = empty(shape);
  std::copy(values.begin(), values.end(), t.f32());
  return t;
}

int64_t Tensor::dim(int i) const {
  int r = rank();
  if (i < 0) i += r;
  PAB_ASSERT(i >= 0 && i < r, "dim ", i, " of a rank-", r, " tensor");
  return shape_[size_t(i)];
}

float* Tensor::f32() const {
  PAB_ASSERT(dtype_ == DType::f32 && device() == Device::cpu, "expected cpu f32, got ", desc());
  return static_cast<float*>(raw());
}

int64_t* Tensor::i64() const {
  PAB_ASSERT(dtype_ == DType::i64 && device() == Device::cpu, "expected cpu i64, got ", desc());
  return static_cast<int64_t*>(raw());
}

Tensor Tensor::reshape(const Shape& shape) const {
  Shape s = shape;
  int64_t known = 1;
  int infer = -1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      PAB_ASSERT(infer < 0, "reshape with two -1");
      infer = int(i);
    } else {
      known *= s[i];
    }
  }
  if (infer >= 0) {
    PAB_ASSERT(known > 0 && numel() % known == 0, "reshape ", shape_str(shape_), " to ", shape_str(shape));
    s[size_t(infer)] = numel() / known;
  }
  PAB_ASSERT(shape_numel(s) == numel(), "reshape ", shape_str(shape_), " to ", shape_str(shape));
  return Tensor(storage_, offset_, s, dtype_);
}

Tensor Tensor::narrow0(int64_t start, int64_t length) const {
  PAB_ASSERT(rank() >= 1 && start >= 0 && length >= 0 && start + length <= shape_[0], "narrow0(", start, ", ",
             length, ") of ", shape_str(shape_));
  Shape s = shape_;
  s[0] = length;
  size_t row = size_t(numel() / std::max<int64_t>(shape_[0], 1)) * dtype_size(dtype_);
  return Tensor(storage_, offset_ + size_t(start) * row, s, dtype_);
}

Tensor Tensor::to(Device device) const {
  Tensor out = empty(shape_, dtype_, device);
  copy_bytes(out.raw(), out.device(), raw(), this->device(), nbytes());
  return out;
}

Tensor Tensor::to(DType dtype) const {
  return device_memory(device()).cast(*this, dtype);
}

Tensor Tensor::clone() const { return to(device()); }

std::vector<float> Tensor::to_vector() const {
  Tensor c = device() == Device::cpu ? *this : to(Device::cpu);
  std::vector<float> v(size_t(c.numel()));
  convert_to_f32(c.raw(), c.dtype(), v.data(), v.size());
  return v;
}

std::string Tensor::desc() const {
  if (!defined()) return "undefined tensor";
  return cat(dtype_name(dtype_), shape_str(shape_), " on ", device_name(device()));
}

}  // namespace pab
