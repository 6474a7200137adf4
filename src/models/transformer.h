// The denoising transformer as pipelines and `pab replay` see it. Each model
// family is one file (cogvideox.cpp, latte.cpp, ...) registered in
// models/registry.cpp by its diffusers `_class_name`.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "cache/site.h"
#include "core/tensor.h"

namespace pab {

// Where the channel axis of the latents is.
enum class LatentLayout : uint8_t {
  bfchw,  // CogVideoX: [B, F, C, H, W]
  bcfhw,  // Latte, Open-Sora: [B, C, F, H, W]
};

struct TransformerInputs {
  Tensor latents;        // [B, ...] in the model's layout
  Tensor text;           // [B, L, D] encoder hidden states
  Tensor text_mask;      // optional [B, L], 1 = real token
  double timestep = 0;   // the same for every batch entry
  // Optional conditioning some models take (Open-Sora: fps, height, width in pixels).
  double fps = 0, height_px = 0, width_px = 0;
};

class DiffusionTransformer {
 public:
  virtual ~DiffusionTransformer() = default;
  virtual std::string class_name() const = 0;
  virtual LatentLayout layout() const = 0;
  virtual int in_channels() const = 0;
  virtual int out_channels() const = 0;
  // The attention (and MLP) site kinds this model declares; PAB configures only these.
  virtual std::vector<SiteKind> site_kinds() const = 0;
  // One denoising forward pass; `sites` decides compute or reuse at each
  // attention site (null: always compute). Returns [B, ...] with out_channels.
  virtual Tensor forward(const TransformerInputs& in, SiteRunner* sites) = 0;
  // The learned caption a model stands in for "no prompt" with ([L, D] text
  // embeddings; Open-Sora's y_embedding); undefined where the unconditional
  // branch uses an encoded negative prompt instead.
  virtual Tensor null_text() const { return Tensor(); }
  // Whether forward() splits the video tokens over LoadOptions::comm's ranks
  // (each rank takes the same inputs and returns the whole output).
  virtual bool sequence_parallel() const { return false; }
};

class Communicator;

struct LoadOptions {
  Device device = Device::cpu;
  DType dtype = DType::f32;  // compute dtype; weights are converted on load
  // The ranks of a sequence-parallel run (parallel/world.h); null: one rank.
  Communicator* comm = nullptr;
  // With CFG parallelism: this rank and its peer computing the other half of
  // the batch (the other guidance branch); null: every rank computes all.
  Communicator* cfg_comm = nullptr;
};

// Loads the transformer in `dir` (config.json + weights), choosing the class
// from `_class_name`; unknown classes and unsupported config values are errors.
std::unique_ptr<DiffusionTransformer> load_transformer(const std::string& dir, const LoadOptions& opts = {});

class JsonConfig;
class WeightSource;
// As above, from a parsed config and any weight source (e.g. generated weights).
std::unique_ptr<DiffusionTransformer> load_transformer(const JsonConfig& config, const WeightSource& weights,
                                                      const LoadOptions& opts);

// The class named by `dir`/config.json: diffusers' `_class_name`, or the first
// of transformers' `architectures` (Open-Sora's STDiT3).
std::string transformer_class_name(const std::string& dir);

}  // namespace pab
