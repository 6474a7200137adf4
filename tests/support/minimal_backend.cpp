#include "support/minimal_backend.h"

#include <cstring>

namespace pab::testing {

namespace {

class MinimalBackend final : public Backend {
 public:
  using Backend::Backend;

  std::string device_description() const override { return "the required ops on the CPU reference (a test backend)"; }
  void set_profiling(bool on) override {
    profiling_ = on;
    if (on) profile_ = {};
  }
  OpProfile profile() const override { return profile_; }

  std::shared_ptr<Storage> alloc(size_t bytes) override {
    std::shared_ptr<Storage> block = host_memory().alloc(bytes);
    void* data = block->data();
    return std::make_shared<Storage>(data, bytes, device(), [block](void*) {});  // freed with the block
  }
  void memset_zero(void* data, size_t bytes) override { std::memset(data, 0, bytes); }
  void copy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) override {
    std::memcpy(dst, src, bytes);  // host memory on both sides
  }
  Tensor cast(const Tensor& x, DType dtype) override { return mine(cpu("cast").cast(host(x), dtype)); }

  Tensor linear(const Tensor& x, const Tensor& w, const Tensor* b) override {
    return mine(cpu("linear").linear(host(x), host(w), host(b).get()));
  }
  Tensor matmul(const Tensor& a, const Tensor& b, bool trans_b) override {
    return mine(cpu("matmul").matmul(host(a), host(b), trans_b));
  }
  Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionArgs& args) override {
    const Optional bias = host(args.bias), key_mask = host(args.key_mask);
    AttentionArgs on_host = args;
    on_host.bias = bias.get();
    on_host.key_mask = key_mask.get();
    return mine(cpu("attention").attention(host(q), host(k), host(v), on_host));
  }

  Tensor layer_norm(const Tensor& x, const Tensor* w, const Tensor* b, float eps) override {
    return mine(cpu("layer_norm").layer_norm(host(x), host(w).get(), host(b).get(), eps));
  }
  Tensor rms_norm(const Tensor& x, const Tensor* w, float eps) override {
    return mine(cpu("rms_norm").rms_norm(host(x), host(w).get(), eps));
  }
  Tensor group_norm(const Tensor& x, int groups, const Tensor* w, const Tensor* b, float eps) override {
    return mine(cpu("group_norm").group_norm(host(x), groups, host(w).get(), host(b).get(), eps));
  }
  Tensor softmax(const Tensor& x) override { return mine(cpu("softmax").softmax(host(x))); }

  Tensor unary(const Tensor& x, Unary op) override { return mine(cpu("unary").unary(host(x), op)); }
  Tensor binary(const Tensor& a, const Tensor& b, Binary op) override {
    return mine(cpu("binary").binary(host(a), host(b), op));
  }
  Tensor affine(const Tensor& x, float mul, float add) override {
    return mine(cpu("affine").affine(host(x), mul, add));
  }

  Tensor permute(const Tensor& x, const std::vector<int>& perm) override {
    return mine(cpu("permute").permute(host(x), perm));
  }
  Tensor concat(const std::vector<Tensor>& parts, int dim) override {
    std::vector<Tensor> on_host;
    for (const Tensor& p : parts) on_host.push_back(host(p));
    return mine(cpu("concat").concat(on_host, dim));
  }
  Tensor slice(const Tensor& x, int dim, int64_t start, int64_t end) override {
    return mine(cpu("slice").slice(host(x), dim, start, end));
  }
  Tensor pad(const Tensor& x, const std::vector<std::array<int64_t, 2>>& pads, PadMode mode) override {
    return mine(cpu("pad").pad(host(x), pads, mode));
  }
  Tensor upsample_nearest(const Tensor& x, const std::vector<int>& scales) override {
    return mine(cpu("upsample_nearest").upsample_nearest(host(x), scales));
  }

  Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor* b, std::array<int, 2> stride,
                std::array<int, 2> padding) override {
    return mine(cpu("conv2d").conv2d(host(x), host(w), host(b).get(), stride, padding));
  }
  Tensor conv3d(const Tensor& x, const Tensor& w, const Tensor* b, std::array<int, 3> stride,
                std::array<int, 3> padding) override {
    return mine(cpu("conv3d").conv3d(host(x), host(w), host(b).get(), stride, padding));
  }

  Tensor rope(const Tensor& x, const Tensor& cos, const Tensor& sin, int64_t start) override {
    return mine(cpu("rope").rope(host(x), host(cos), host(sin), start));
  }
  Tensor embedding(const Tensor& ids, const Tensor& table) override {
    return mine(cpu("embedding").embedding(host(ids), host(table)));
  }

 private:
  // A host view of an optional input, alive as long as the call.
  struct Optional {
    Tensor t;
    const Tensor* get() const { return t.defined() ? &t : nullptr; }
  };

  // The CPU reference, for the op `name` (counted while profiling).
  Backend& cpu(const char* name) {
    if (profiling_) ++profile_.ops[name].calls;
    return backend(Device::cpu);
  }
  // The bytes of `t` as a tensor on `device`, keeping `t`'s storage alive.
  static Tensor view_on(const Tensor& t, Device device) {
    return Tensor(std::make_shared<Storage>(t.raw(), t.nbytes(), device, [t](void*) {}), 0, t.shape(), t.dtype());
  }
  Tensor host(const Tensor& t) const {
    if (t.device() != device()) fail("the minimal backend got a tensor of another device: ", t.desc());
    return view_on(t, Device::cpu);
  }
  Optional host(const Tensor* t) const { return {t ? host(*t) : Tensor()}; }
  Tensor mine(const Tensor& t) const { return view_on(t, device()); }

  bool profiling_ = false;
  OpProfile profile_;
};

}  // namespace

Backend* create_minimal_backend(Device device) {
  static MinimalBackend instance(device);
  return &instance;
}

}  // namespace pab::testing
