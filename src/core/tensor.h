// Tensor: a dense, contiguous, row-major array of one dtype on one device.
// Tensors share their storage; reshape and narrow are views, every op returns
// a new tensor. Shapes are written outermost first, e.g. [B, S, C].
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"

namespace pab {

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);  // "[2, 3, 4]"
int64_t shape_numel(const Shape& s);    // fails for a negative dimension or overflow

// A block of memory on one device, released by its deleter.
class Storage {
 public:
  Storage(void* data, size_t bytes, Device device, std::function<void(void*)> deleter)
      : data_(data), bytes_(bytes), device_(device), deleter_(std::move(deleter)) {}
  ~Storage() {
    if (deleter_) deleter_(data_);
  }
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

 private:
  void* data_;
  size_t bytes_;
  Device device_;
  std::function<void(void*)> deleter_;
};

class Tensor {
 public:
  Tensor() = default;
  Tensor(std::shared_ptr<Storage> storage, size_t offset_bytes, Shape shape, DType dtype);

  // Uninitialised tensor on `device` (allocated by that device's memory).
  static Tensor empty(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu);
  static Tensor zeros(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu);
  // CPU f32 tensor holding a copy of `values` (size must equal the shape's numel).
  static Tensor from_vector(const std::vector<float>& values, const Shape& shape);
  static Tensor scalar(float value) { return from_vector({value}, {1}); }

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int rank() const { return int(shape_.size()); }
  int64_t dim(int i) const;  // negative i counts from the end
  int64_t numel() const { return shape_numel(shape_); }
  DType dtype() const { return dtype_; }
  Device device() const { return storage_->device(); }
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype_); }

  void* raw() const { return static_cast<char*>(storage_->data()) + offset_; }
  // Typed pointer to CPU data; asserts the dtype.
  float* f32() const;
  int64_t* i64() const;

  // Views sharing storage.
  Tensor reshape(const Shape& shape) const;  // one dimension may be -1
  Tensor narrow0(int64_t start, int64_t length) const;  // rows [start, start+length) of dim 0

  // Copies: to another device and/or dtype (no-op copy avoided only by callers).
  Tensor to(Device device) const;
  Tensor to(DType dtype) const;
  Tensor clone() const;
  // CPU f32 copy of the data as a vector (any device, float dtype).
  std::vector<float> to_vector() const;

  std::string desc() const;  // "f32[2, 3] on cpu"

 private:
  std::shared_ptr<Storage> storage_;
  size_t offset_ = 0;
  Shape shape_;
  DType dtype_ = DType::f32;
};

}  // namespace pab
