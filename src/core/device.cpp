#include "core/device.h"

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>

#include "core/tensor.h"

namespace pab {

// Every device by handle: filled by registrations before main runs, read-only after.
class DeviceTable {
 public:
  static DeviceTable& get() {
    static DeviceTable t;
    return t;
  }

  Device add(const std::string& name, DeviceMemory& (*memory)(Device)) {
    PAB_ASSERT(!name.empty() && !find_device(name), "device registered twice: '", name, "'");
    PAB_ASSERT(count_ < kMaxDevices, "more than ", kMaxDevices, " devices registered");
    entries_[size_t(count_)] = {name, memory};
    return Device(uint8_t(count_++));
  }
  std::vector<Device> all() const {
    std::vector<Device> out;
    for (int i = 0; i < count_; ++i) out.push_back(Device(uint8_t(i)));
    return out;
  }
  const std::string& name(Device d) const { return entries_[size_t(d.index())].name; }
  DeviceMemory& memory(Device d) const { return entries_[size_t(d.index())].memory(d); }

 private:
  DeviceTable() {
    entries_[0] = {"cpu", [](Device) -> DeviceMemory& { return host_memory(); }};
  }

  struct Entry {
    std::string name;
    DeviceMemory& (*memory)(Device) = nullptr;
  };
  std::array<Entry, kMaxDevices> entries_;
  int count_ = 1;  // the host's is there from the start
};

namespace {

std::string device_list() {
  std::string s;
  for (Device d : devices()) s += cat(s.empty() ? "" : ", ", device_name(d));
  return s;
}

}  // namespace

HostMemory& host_memory() {
  static HostMemory instance;
  return instance;
}

std::shared_ptr<Storage> HostMemory::alloc(size_t bytes) {
  size_t rounded = (std::max<size_t>(bytes, 1) + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded);
  if (p == nullptr) fail("out of host memory allocating ", bytes, " bytes");
  count(int64_t(rounded));
  return std::make_shared<Storage>(p, bytes, Device::cpu, [this, rounded](void* q) {
    std::free(q);
    count(-int64_t(rounded));
  });
}

void HostMemory::count(int64_t bytes) {
  const int64_t now = in_use_.fetch_add(bytes, std::memory_order_relaxed) + bytes;
  int64_t peak = peak_.load(std::memory_order_relaxed);
  while (now > peak && !peak_.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
}

void HostMemory::memset_zero(void* data, size_t bytes) {
  std::memset(data, 0, bytes);
}

void HostMemory::copy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) {
  PAB_ASSERT(dst_device == Device::cpu && src_device == Device::cpu);
  std::memcpy(dst, src, bytes);
}

Tensor HostMemory::cast(const Tensor& x, DType dtype) {
  if (x.dtype() == dtype) return x.clone();
  Tensor out = Tensor::empty(x.shape(), dtype);
  size_t n = size_t(x.numel());
  if (dtype == DType::f32) {
    convert_to_f32(x.raw(), x.dtype(), out.f32(), n);
  } else if (x.dtype() == DType::f32) {
    convert_from_f32(x.f32(), out.raw(), dtype, n);
  } else {
    std::vector<float> tmp(n);
    convert_to_f32(x.raw(), x.dtype(), tmp.data(), n);
    convert_from_f32(tmp.data(), out.raw(), dtype, n);
  }
  return out;
}

Device register_device(const std::string& name, DeviceMemory& (*memory)(Device)) {
  return DeviceTable::get().add(name, memory);
}

std::optional<Device> find_device(const std::string& name) {
  for (Device d : devices())
    if (name == device_name(d)) return d;
  return std::nullopt;
}

Device device_named(const std::string& name) {
  if (std::optional<Device> d = find_device(name)) return *d;
  fail("unsupported device '", name, "' (this build supports: ", device_list(), ")");
}

const char* device_name(Device d) {
  return DeviceTable::get().name(d).c_str();
}

std::vector<Device> devices() {
  return DeviceTable::get().all();
}

DeviceMemory& device_memory(Device d) {
  return DeviceTable::get().memory(d);
}

void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) {
  if (dst_device == Device::cpu || src_device == Device::cpu || dst_device == src_device) {
    device_memory(dst_device == Device::cpu ? src_device : dst_device).copy(dst, dst_device, src, src_device, bytes);
    return;
  }
  std::vector<char> host(bytes);
  device_memory(src_device).copy(host.data(), Device::cpu, src, src_device, bytes);
  device_memory(dst_device).copy(dst, dst_device, host.data(), Device::cpu, bytes);
}

}  // namespace pab
