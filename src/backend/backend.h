// The backend interface: every op a model uses, implemented once per device
// (cpu/ is the reference). Models never call a backend directly; they use the
// free functions in backend/ops.h, which dispatch on the device of the input.
//
// A backend is its directory, a CMake option and one registration by device
// name, register_backend("cuda", factory) (docs/adding-a-backend.md). It
// implements the required ops, the pure virtuals: memory (DeviceMemory's
// alloc, memset_zero, copy and cast), linear, matmul, attention, the norms,
// softmax, elementwise, layout, convolution, rope and embedding. The fusions
// (enum Fusion, at the end of the class) have reference composites of the
// required ops (backend.cpp), so a new backend runs every model once its
// required ops pass tests/test_backend_ops.cpp; it then overrides fusions one
// at a time, each answering true in supports().
//
// Conventions: tensors are contiguous; every op returns a new tensor on the
// device of its inputs; float math ops accept the backend's compute dtypes
// (CPU: f32) and accumulate in f32.
#pragma once

#include <array>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace pab {

enum class Unary : uint8_t { silu, gelu_tanh, gelu_erf, relu, tanh, sigmoid, exp, square };
enum class Binary : uint8_t { add, sub, mul, div };
enum class PadMode : uint8_t { zeros, replicate };

// The fused ops, each a Backend method of the same name whose default is the
// reference composite of required ops (backend.cpp); a backend overriding one
// says so in supports().
enum class Fusion : uint8_t {
  linear_stacked,
  linear_act,
  norm_rope,
  norm_modulate,
  modulate,
  gated_add,
  norm_modulate_split,
  add_norm_modulate_split,
  gated_add_split,
  group_norm_scale_shift,
  conv3d_joined,  // the last: kFusionCount counts up to it
};
inline constexpr int kFusionCount = int(Fusion::conv3d_joined) + 1;
// The method's name ("linear_act"); null for a value past the last fusion.
const char* fusion_name(Fusion f);

struct AttentionArgs {
  float scale = 1.0f;
  // Optional additive bias on the scores, f32 [Bb, H, Sq, Sk] with Bb in {1, B}.
  const Tensor* bias = nullptr;
  // Optional key mask [B, Sk]: keys whose value is 0 are not attended to.
  const Tensor* key_mask = nullptr;
};

struct MemoryStats {
  size_t in_use = 0;    // bytes held by live tensors
  size_t peak = 0;      // the most in use since the last reset_peak_memory()
  size_t reserved = 0;  // bytes obtained from the device (cached included)
};

// Time and arithmetic of the ops, collected while profiling is on.
struct OpProfile {
  double gemm_flop = 0, gemm_seconds = 0;
  double attention_flop = 0, attention_seconds = 0;
  double conv_flop = 0, conv_seconds = 0;
  struct Op {
    int calls = 0;
    double seconds = 0;
    size_t max_in_use = 0;  // device memory in use right after the op, at most
  };
  std::map<std::string, Op> ops;  // every backend op by name
};

class Backend : public DeviceMemory {
 public:
  // `device`: the handle the backend's registration got.
  explicit Backend(Device device) : device_(device) {}
  Device device() const { return device_; }
  virtual std::string device_description() const = 0;
  // Devices of this kind visible to the process.
  virtual int device_count() const { return 1; }
  // The environment variable choosing which devices of this kind a process
  // sees (CUDA_VISIBLE_DEVICES), or null: rank r of a multi-rank run is
  // started with entry r mod count of its list.
  virtual const char* visible_devices_variable() const { return nullptr; }
  // The float dtypes its math ops compute in.
  virtual std::vector<DType> compute_dtypes() const { return {DType::f32}; }
  // Whether it implements `f` natively rather than by the composite: a query
  // for tests and reports, never asked on the path of an op.
  virtual bool supports(Fusion f) const { return false; }

  // --- memory: alloc, memset_zero, copy and cast are DeviceMemory's (core
  // holds tensors on the device through them) ---
  // Waits for queued work (no-op on the CPU).
  virtual void synchronize() {}
  virtual MemoryStats memory_stats() const { return {}; }
  // Bytes a run could still allocate on this device (free device memory plus
  // what the allocator holds unused; the host's available memory for the
  // CPU); nullopt where unknown.
  virtual std::optional<uint64_t> memory_available() const { return std::nullopt; }
  virtual void reset_peak_memory() {}
  // Profiling times each GEMM and attention call (synchronising after each).
  virtual void set_profiling(bool on) {}
  virtual OpProfile profile() const { return {}; }

  // Required ops, from here to embedding (with device_description and
  // DeviceMemory's): pure virtual.

  // --- linear algebra ---
  // x [..., K] . w[N, K]^T + b[N] -> [..., N]
  virtual Tensor linear(const Tensor& x, const Tensor& w, const Tensor* b) = 0;
  // a [Bt, M, K] . b [Bt, K, N] (or b [Bt, N, K] with trans_b) -> [Bt, M, N]
  virtual Tensor matmul(const Tensor& a, const Tensor& b, bool trans_b) = 0;
  // Scaled dot-product attention, heads interleaved in the token layout:
  // q [B, Sq, H, D], k and v [B, Sk, H, D] -> [B, Sq, H, D]. A query row with
  // no key to attend to (every key masked, a bias row of -inf, or Sk == 0)
  // gives zeros, where torch's softmax would give NaN.
  virtual Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionArgs& args) = 0;

  // --- normalisation (weights and biases are optional) ---
  // over the last dimension
  virtual Tensor layer_norm(const Tensor& x, const Tensor* w, const Tensor* b, float eps) = 0;
  virtual Tensor rms_norm(const Tensor& x, const Tensor* w, float eps) = 0;
  // x [B, C, ...], statistics per (batch, group) over C/groups x the rest; affine per channel
  virtual Tensor group_norm(const Tensor& x, int groups, const Tensor* w, const Tensor* b, float eps) = 0;
  // softmax over the last dimension (a row of only -inf gives NaN, as in torch)
  virtual Tensor softmax(const Tensor& x) = 0;

  // --- elementwise ---
  virtual Tensor unary(const Tensor& x, Unary op) = 0;
  // numpy-style broadcasting of a and b
  virtual Tensor binary(const Tensor& a, const Tensor& b, Binary op) = 0;
  // x * mul + add
  virtual Tensor affine(const Tensor& x, float mul, float add) = 0;

  // --- layout ---
  virtual Tensor permute(const Tensor& x, const std::vector<int>& perm) = 0;
  virtual Tensor concat(const std::vector<Tensor>& parts, int dim) = 0;
  virtual Tensor slice(const Tensor& x, int dim, int64_t start, int64_t end) = 0;
  // pads[i] = {before, after} for each dimension of x (missing leading ones: 0)
  virtual Tensor pad(const Tensor& x, const std::vector<std::array<int64_t, 2>>& pads, PadMode mode) = 0;
  // nearest-neighbour upsampling of the trailing scales.size() dimensions by integer factors
  virtual Tensor upsample_nearest(const Tensor& x, const std::vector<int>& scales) = 0;

  // --- convolution (no groups, no dilation) ---
  // x [B, C, H, W], w [O, C, kh, kw], b [O] -> [B, O, H', W']
  virtual Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor* b, std::array<int, 2> stride,
                        std::array<int, 2> padding) = 0;
  // x [B, C, T, H, W], w [O, C, kt, kh, kw], b [O] -> [B, O, T', H', W']
  virtual Tensor conv3d(const Tensor& x, const Tensor& w, const Tensor* b, std::array<int, 3> stride,
                        std::array<int, 3> padding) = 0;

  // --- model helpers ---
  // Rotary embedding on interleaved pairs (x[2i], x[2i+1]) of the last dim,
  // applied to tokens [start, S) only (the others are copied):
  // x [B, S, H, D], cos and sin [S - start, D] -> [B, S, H, D]
  virtual Tensor rope(const Tensor& x, const Tensor& cos, const Tensor& sin, int64_t start) = 0;
  // ids (i64, any shape) rows of table [V, D] -> [..., D]
  virtual Tensor embedding(const Tensor& ids, const Tensor& table) = 0;

  // --- fusions (enum Fusion): defaults compose the required ops above ---
  // Several linear layers of one input: w [G, N, K], b [G, N] -> [G, ..., N]
  // (the q, k and v projections as one batched GEMM).
  virtual Tensor linear_stacked(const Tensor& x, const Tensor& w, const Tensor* b);
  // act(x . w^T + b); act is gelu_tanh, gelu_erf, silu or relu
  virtual Tensor linear_act(const Tensor& x, const Tensor& w, const Tensor* b, Unary act);
  // rope(layer_norm(x, w, b), cos, sin, start) for x [B, S, H, D] (QK norm then rotary positions)
  virtual Tensor norm_rope(const Tensor& x, const Tensor* w, const Tensor* b, float eps, const Tensor& cos,
                           const Tensor& sin, int64_t start);
  // layer_norm(x) * (1 + scale [B, C]) + shift [B, C], with x [B, S, C]
  virtual Tensor norm_modulate(const Tensor& x, const Tensor* w, const Tensor* b, float eps, const Tensor& shift,
                               const Tensor& scale);
  // x [B, S, C] * (1 + scale [B, C]) + shift [B, C]
  virtual Tensor modulate(const Tensor& x, const Tensor& shift, const Tensor& scale);
  // x + gate [B, C] * y, with x and y [B, S, C]
  virtual Tensor gated_add(const Tensor& x, const Tensor& gate, const Tensor& y);
  // Joint sequences of two segments (e.g. text then video tokens) with their
  // own modulation: tokens [0, split) use the *_a vectors, the rest *_b.
  virtual Tensor norm_modulate_split(const Tensor& x, const Tensor* w, const Tensor* b, float eps, int64_t split,
                                     const Tensor& shift_a, const Tensor& scale_a, const Tensor& shift_b,
                                     const Tensor& scale_b);
  // x + gate * y as gated_add_split (null gates: the plain sum x + y) and that
  // sum normed and modulated as by norm_modulate_split: {sum, normed}. One
  // pass where the backend fuses them (the residual add before a block's norm).
  virtual std::pair<Tensor, Tensor> add_norm_modulate_split(const Tensor& x, const Tensor& y, int64_t split,
                                                            const Tensor* gate_a, const Tensor* gate_b,
                                                            const Tensor* w, const Tensor* b, float eps,
                                                            const Tensor& shift_a, const Tensor& scale_a,
                                                            const Tensor& shift_b, const Tensor& scale_b);
  virtual Tensor gated_add_split(const Tensor& x, const Tensor& y, int64_t split, const Tensor& gate_a,
                                 const Tensor& gate_b);
  // silu(group_norm(x) * scale + shift) (or without the silu): x [B, C, ..., H, W],
  // scale and shift [B, C, ..., h, W] with h dividing H, each of their rows
  // serving H / h consecutive rows of x (CogVideoX's VAE: its spatial norms'
  // conditioning, computed at the latents' height).
  virtual Tensor group_norm_scale_shift(const Tensor& x, int groups, const Tensor* w, const Tensor* b, float eps,
                                        const Tensor& scale, const Tensor& shift, bool silu);
  // conv3d of the parts joined along time (dim 2), as a causal convolution
  // sees its cached frames before its input, without the joined copy where
  // the backend can.
  virtual Tensor conv3d_joined(const std::vector<Tensor>& parts, const Tensor& w, const Tensor* b,
                               std::array<int, 3> stride, std::array<int, 3> padding);

 private:
  Device device_;
};

// Fails unless scale and shift fit x as group_norm_scale_shift needs.
void check_group_norm_scale_shift(const Tensor& x, const Tensor& scale, const Tensor& shift);

// Creates the backend of `device` on its first use, or fails clearly where it
// cannot start (no device); the backend lives until the program exits.
using BackendFactory = Backend* (*)(Device device);
// Registers a backend under its device name and returns the device's handle
// (Device::cpu for "cpu", the host; any other name is a new device). Called
// once per backend, from namespace scope in its own file, at start-up; a
// device with two backends is a build error caught there.
Device register_backend(const std::string& name, BackendFactory factory);

// The backend of a device, created on first use; fails with a clear error if
// it was not built or cannot start (no device).
Backend& backend(Device device);
// Whether it was built and starts.
bool backend_available(Device device);

}  // namespace pab
