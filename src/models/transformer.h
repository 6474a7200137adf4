// The denoising transformer as pipelines and `pab replay` see it. Each model
// family is one file (cogvideox.cpp, latte.cpp, ...) that registers itself
// (TransformerFamily below) by its diffusers `_class_name`.
#pragma once

#include <array>
#include <functional>
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

// What one forward pass holds on the device besides the weights, estimated
// from the config and the input's shape.
struct ForwardFootprint {
  uint64_t activations = 0;                 // bytes live at the pass's peak
  std::array<uint64_t, kSiteKinds> site{};  // bytes one site's output holds, per kind
};

// The input a footprint is asked for: latents [B, ...] in the model's
// layout, the text length, the compute dtype and the device.
struct ForwardShape {
  Shape latents;
  int64_t text_length = 0;
  DType dtype = DType::f32;
  Device device = Device::cpu;
};

class DiffusionTransformer {
 public:
  virtual ~DiffusionTransformer() = default;
  virtual std::string class_name() const = 0;
  virtual LatentLayout layout() const = 0;
  virtual int in_channels() const = 0;
  virtual int out_channels() const = 0;
  // The attention (and MLP) sites this model declares; PAB configures only these.
  virtual SiteLayout site_layout() const = 0;
  std::vector<SiteKind> site_kinds() const { return site_layout().site_kinds(); }
  // One denoising forward pass: [B, ...] with out_channels. The whole pass
  // is the step site, its input the latents; `sites` (null: always compute)
  // decides compute or reuse there and at every block, attention and MLP site.
  Tensor forward(const TransformerInputs& in, const Sites* sites) {
    if (!sites) return forward_pass(in, nullptr);
    return run_site1(sites, {SiteKind::step, 0}, in.latents, [&] { return forward_pass(in, sites); });
  }
  // The pass itself, inside the step site (the model files implement it).
  virtual Tensor forward_pass(const TransformerInputs& in, const Sites* sites) = 0;
  // The learned caption a model stands in for "no prompt" with ([L, D] text
  // embeddings; Open-Sora's y_embedding); undefined where the unconditional
  // branch uses an encoded negative prompt instead.
  virtual Tensor null_text() const { return Tensor(); }
  // Whether forward() splits the video tokens over LoadOptions::comm's ranks
  // (each rank takes the same inputs and returns the whole output).
  virtual bool sequence_parallel() const { return false; }
};

// One forward pass of denoising step `step`, `policy` deciding at its sites
// (null: every site computes).
inline Tensor forward_step(DiffusionTransformer& model, const TransformerInputs& in, CachePolicy* policy,
                           const StepContext& step) {
  if (!policy) return model.forward(in, nullptr);
  const Sites sites(*policy, step);
  return model.forward(in, &sites);
}

class Communicator;

struct LoadOptions {
  Device device = Device::cpu;
  DType dtype = DType::f32;  // compute dtype; weights are converted on load
  // The ranks of a sequence-parallel run (parallel/world.h); null: one rank.
  Communicator* comm = nullptr;
  // With CFG parallelism: this rank and its peer computing the other half of
  // the batch (the other guidance branch); null: every rank computes all.
  Communicator* cfg_comm = nullptr;
  // Checkpoint tensors a model does not load are an error unless this is
  // set; then they are reported through on_warning.
  bool allow_unused_weights = false;
  std::function<void(const std::string&)> on_warning = {};
};

class JsonConfig;
class WeightSource;
class WeightUse;
// After a model loaded through `use`: fails naming the tensors `model` left
// unused, or with allow_unused_weights passes them to on_warning.
void check_weights_used(const WeightUse& use, const std::string& model, const LoadOptions& opts);

// A transformer family as it registers itself, in its own file, by the
// class name its config.json gives (diffusers' `_class_name`, or the first of
// transformers' `architectures`):
//   PAB_REGISTER(TransformerFamily, "LatteTransformer3DModel", {load_latte, latte_site_layout, latte_footprint});
struct TransformerFamily {
  // Builds the model from its config and weights; unsupported config values fail.
  std::function<std::unique_ptr<DiffusionTransformer>(const JsonConfig&, const WeightSource&, const LoadOptions&)> load;
  // The sites and the footprint of one forward pass, from the config alone.
  std::function<SiteLayout(const JsonConfig&)> site_layout;
  std::function<ForwardFootprint(const JsonConfig&, const ForwardShape&)> footprint;
};

// Loads the transformer in `dir` (config.json + weights), choosing the class
// from `_class_name`; unknown classes and unsupported config values are errors.
std::unique_ptr<DiffusionTransformer> load_transformer(const std::string& dir, const LoadOptions& opts = {});

// As above, from a parsed config and any weight source (e.g. generated weights).
std::unique_ptr<DiffusionTransformer> load_transformer(const JsonConfig& config, const WeightSource& weights,
                                                      const LoadOptions& opts);

// The sites of the transformer class `config` names, from the config alone;
// fails like load_transformer for unknown classes and bad config values.
SiteLayout transformer_site_layout(const JsonConfig& config);
// The footprint of one forward pass of the transformer `config` describes.
ForwardFootprint transformer_footprint(const JsonConfig& config, const ForwardShape& shape);

// The class named by `dir`/config.json: diffusers' `_class_name`, or the first
// of transformers' `architectures` (Open-Sora's STDiT3).
std::string transformer_class_name(const std::string& dir);

}  // namespace pab
