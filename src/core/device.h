// Devices: where a tensor's memory lives. A device is a small handle that the
// registration of its backend assigns, by device name ("cpu", "cuda": see
// backend/backend.h); the host, "cpu", is always there as Device::cpu. Core
// reaches a device's memory only through the DeviceMemory registered for it,
// so it knows no backend; it keeps the host's memory itself, which makes host
// tensors work in any program that links core.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace pab {

class DeviceMemory;
class Storage;
class Tensor;

// The most devices one program registers (the host included).
constexpr int kMaxDevices = 16;

class Device {
 public:
  static const Device cpu;  // the host

  constexpr Device() = default;  // the host
  // 0 for the host, then the others in the order they registered (which
  // varies between builds: a handle means nothing outside its process).
  constexpr int index() const { return index_; }
  friend constexpr bool operator==(Device, Device) = default;

 private:
  friend class DeviceTable;  // assigns the handles
  explicit constexpr Device(uint8_t index) : index_(index) {}
  uint8_t index_ = 0;
};
inline constexpr Device Device::cpu{};

// What core needs of a device to hold tensors there (Tensor::empty, zeros,
// to, clone); a backend provides it for its device.
class DeviceMemory {
 public:
  virtual ~DeviceMemory() = default;
  // A block of `bytes` on the device; fails clearly when out of memory.
  virtual std::shared_ptr<Storage> alloc(size_t bytes) = 0;
  virtual void memset_zero(void* data, size_t bytes) = 0;
  // Copies between this device and the host (or within this device).
  virtual void copy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) = 0;
  // x, on this device, converted to `dtype` in a new tensor on this device.
  virtual Tensor cast(const Tensor& x, DType dtype) = 0;
};

// The host's memory: 64-byte aligned blocks, counted for the CPU backend's
// memory statistics.
class HostMemory final : public DeviceMemory {
 public:
  std::shared_ptr<Storage> alloc(size_t bytes) override;
  void memset_zero(void* data, size_t bytes) override;
  void copy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) override;
  Tensor cast(const Tensor& x, DType dtype) override;

  // Bytes of live blocks (sizes as allocated), and the most since reset_peak().
  size_t in_use() const { return size_t(in_use_.load()); }
  size_t peak() const { return size_t(peak_.load()); }
  void reset_peak() { peak_.store(in_use_.load()); }

 private:
  void count(int64_t bytes);
  std::atomic<int64_t> in_use_{0}, peak_{0};
};
HostMemory& host_memory();

// Adds the device `name` and returns its handle; `memory` gives the device's
// memory, starting the device on first use (and failing clearly where it
// cannot). Called by backend registrations at start-up; a name registered
// twice, or the host's "cpu", is a build error caught there.
Device register_device(const std::string& name, DeviceMemory& (*memory)(Device));
// The device registered under `name`, if any.
std::optional<Device> find_device(const std::string& name);
// The same, or fails: "unsupported device 'x' (this build supports: cpu, cuda)".
Device device_named(const std::string& name);
const char* device_name(Device d);
// Every registered device, the host first.
std::vector<Device> devices();

// The memory of `d`, starting the device on first use.
DeviceMemory& device_memory(Device d);
// Copies bytes between any two devices (through the host between two others).
void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes);

}  // namespace pab
