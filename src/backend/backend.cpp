#include "backend/backend.h"

#include <cstring>
#include <string>

namespace pab {

namespace {
struct Slot {
  Backend* instance = nullptr;
  BackendFactory factory = nullptr;
  std::string error;  // why the factory failed, if it did
};
Slot& slot(Device d) {
  static std::array<Slot, kMaxDevices> slots;  // by device handle
  return slots[size_t(d.index())];
}
DeviceMemory& memory_of(Device d) {
  return backend(d);
}
}  // namespace

const char* fusion_name(Fusion f) {
  switch (f) {
    case Fusion::linear_stacked:
      return "linear_stacked";
    case Fusion::linear_act:
      return "linear_act";
    case Fusion::norm_rope:
      return "norm_rope";
    case Fusion::norm_modulate:
      return "norm_modulate";
    case Fusion::modulate:
      return "modulate";
    case Fusion::gated_add:
      return "gated_add";
    case Fusion::norm_modulate_split:
      return "norm_modulate_split";
    case Fusion::add_norm_modulate_split:
      return "add_norm_modulate_split";
    case Fusion::gated_add_split:
      return "gated_add_split";
    case Fusion::group_norm_scale_shift:
      return "group_norm_scale_shift";
    case Fusion::conv3d_joined:
      return "conv3d_joined";
  }
  return nullptr;
}

Device register_backend(const std::string& name, BackendFactory factory) {
  // The host is core's device from the start; any other name is a new one.
  const std::optional<Device> known = find_device(name);
  const Device d = known ? *known : register_device(name, memory_of);
  PAB_ASSERT(factory && !slot(d).factory, "backend registered twice: '", name, "'");
  slot(d).factory = factory;
  return d;
}

Backend& backend(Device device) {
  Slot& s = slot(device);
  if (s.instance) return *s.instance;
  if (!s.factory) fail("the ", device_name(device), " backend is not available in this build");
  if (!s.error.empty()) fail(s.error);
  try {
    s.instance = s.factory(device);
  } catch (const Error& e) {
    s.error = e.what();
    throw;
  }
  return *s.instance;
}

bool backend_available(Device device) {
  try {
    backend(device);
    return true;
  } catch (const Error&) {
    return false;
  }
}

Tensor Backend::linear_stacked(const Tensor& x, const Tensor& w, const Tensor* b) {
  PAB_ASSERT(w.rank() == 3 && (!b || b->numel() == w.dim(0) * w.dim(1)), "linear_stacked: weights ", w.desc(),
             b ? cat(", bias ", b->desc()) : std::string());
  const int64_t g = w.dim(0), n = w.dim(1), k = w.dim(2);
  std::vector<Tensor> outs;
  for (int64_t i = 0; i < g; ++i) {
    Tensor bi = b ? b->reshape({g, n}).narrow0(i, 1).reshape({n}) : Tensor();
    Tensor y = linear(x, w.narrow0(i, 1).reshape({n, k}), b ? &bi : nullptr);
    Shape s = y.shape();
    s.insert(s.begin(), 1);
    outs.push_back(y.reshape(s));
  }
  return concat(outs, 0);
}

Tensor Backend::linear_act(const Tensor& x, const Tensor& w, const Tensor* b, Unary act) {
  return unary(linear(x, w, b), act);
}

Tensor Backend::norm_rope(const Tensor& x, const Tensor* w, const Tensor* b, float eps, const Tensor& cos,
                          const Tensor& sin, int64_t start) {
  return rope(layer_norm(x, w, b, eps), cos, sin, start);
}

Tensor Backend::norm_modulate(const Tensor& x, const Tensor* w, const Tensor* b, float eps, const Tensor& shift,
                              const Tensor& scale) {
  return modulate(layer_norm(x, w, b, eps), shift, scale);
}

Tensor Backend::norm_modulate_split(const Tensor& x, const Tensor* w, const Tensor* b, float eps, int64_t split,
                                    const Tensor& shift_a, const Tensor& scale_a, const Tensor& shift_b,
                                    const Tensor& scale_b) {
  Tensor first = norm_modulate(slice(x, 1, 0, split), w, b, eps, shift_a, scale_a);
  Tensor second = norm_modulate(slice(x, 1, split, x.dim(1)), w, b, eps, shift_b, scale_b);
  return concat({first, second}, 1);
}

std::pair<Tensor, Tensor> Backend::add_norm_modulate_split(const Tensor& x, const Tensor& y, int64_t split,
                                                         const Tensor* gate_a, const Tensor* gate_b, const Tensor* w,
                                                         const Tensor* b, float eps, const Tensor& shift_a,
                                                         const Tensor& scale_a, const Tensor& shift_b,
                                                         const Tensor& scale_b) {
  PAB_ASSERT(!gate_a == !gate_b, "add_norm_modulate_split: give both gates or none");
  Tensor sum = gate_a ? gated_add_split(x, y, split, *gate_a, *gate_b) : binary(x, y, Binary::add);
  Tensor normed = norm_modulate_split(sum, w, b, eps, split, shift_a, scale_a, shift_b, scale_b);
  return {sum, normed};
}

Tensor Backend::gated_add_split(const Tensor& x, const Tensor& y, int64_t split, const Tensor& gate_a,
                                const Tensor& gate_b) {
  const int64_t s = x.dim(1);
  Tensor first = gated_add(slice(x, 1, 0, split), gate_a, slice(y, 1, 0, split));
  Tensor second = gated_add(slice(x, 1, split, s), gate_b, slice(y, 1, split, s));
  return concat({first, second}, 1);
}

Tensor Backend::modulate(const Tensor& x, const Tensor& shift, const Tensor& scale) {
  // [B, C] -> [B, 1, C] to broadcast over tokens
  Shape s = {x.dim(0), 1, x.dim(-1)};
  Tensor one_plus = affine(scale.reshape(s), 1.0f, 1.0f);
  return binary(binary(x, one_plus, Binary::mul), shift.reshape(s), Binary::add);
}

Tensor Backend::conv3d_joined(const std::vector<Tensor>& parts, const Tensor& w, const Tensor* b,
                              std::array<int, 3> stride, std::array<int, 3> padding) {
  PAB_ASSERT(!parts.empty(), "conv3d_joined: no input");
  return conv3d(parts.size() == 1 ? parts[0] : concat(parts, 2), w, b, stride, padding);
}

void check_group_norm_scale_shift(const Tensor& x, const Tensor& scale, const Tensor& shift) {
  bool ok = x.rank() >= 3 && scale.rank() == x.rank() && shift.shape() == scale.shape();
  for (int i = 0; ok && i < x.rank(); ++i)
    ok = i == x.rank() - 2 ? scale.dim(i) > 0 && x.dim(i) % scale.dim(i) == 0 : scale.dim(i) == x.dim(i);
  PAB_ASSERT(ok, "group_norm_scale_shift: x ", x.desc(), " scale ", scale.desc(), " shift ", shift.desc());
}

Tensor Backend::group_norm_scale_shift(const Tensor& x, int groups, const Tensor* w, const Tensor* b, float eps,
                                       const Tensor& scale, const Tensor& shift, bool silu) {
  check_group_norm_scale_shift(x, scale, shift);
  // x as [conditioning rows, H / h, W] against conditioning [rows, 1, W].
  const int64_t height = x.dim(-2), width = x.dim(-1), h = scale.dim(-2);
  const int64_t rows = height * width == 0 ? 0 : x.numel() / (height * width) * h;
  const Shape xs = {rows, height / h, width}, cs = {rows, 1, width};
  Tensor out = group_norm(x, groups, w, b, eps).reshape(xs);
  out = binary(binary(out, scale.reshape(cs), Binary::mul), shift.reshape(cs), Binary::add);
  return (silu ? unary(out, Unary::silu) : out).reshape(x.shape());
}

Tensor Backend::gated_add(const Tensor& x, const Tensor& gate, const Tensor& y) {
  Shape s = {y.dim(0), 1, y.dim(-1)};
  return binary(x, binary(y, gate.reshape(s), Binary::mul), Binary::add);
}

}  // namespace pab
