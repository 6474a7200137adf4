// Maps diffusers `_class_name` values (transformers' `architectures[0]` for
// STDiT3) to the model files that implement them.
#include <filesystem>
#include <functional>
#include <map>

#include "io/config.h"
#include "io/safetensors.h"
#include "models/transformer.h"
#include "parallel/comm.h"

namespace pab {

// Defined in the model files.
std::unique_ptr<DiffusionTransformer> load_cogvideox(const JsonConfig& config, const WeightSource& weights,
                                                     const LoadOptions& opts);
std::unique_ptr<DiffusionTransformer> load_latte(const JsonConfig& config, const WeightSource& weights,
                                                 const LoadOptions& opts);
std::unique_ptr<DiffusionTransformer> load_open_sora(const JsonConfig& config, const WeightSource& weights,
                                                     const LoadOptions& opts);
std::unique_ptr<DiffusionTransformer> load_open_sora_plan_v110(const JsonConfig& config, const WeightSource& weights,
                                                               const LoadOptions& opts);
std::unique_ptr<DiffusionTransformer> load_open_sora_plan_v120(const JsonConfig& config, const WeightSource& weights,
                                                               const LoadOptions& opts);

namespace {
using Loader = std::function<std::unique_ptr<DiffusionTransformer>(const JsonConfig&, const WeightSource&,
                                                                   const LoadOptions&)>;
const std::map<std::string, Loader>& loaders() {
  static const std::map<std::string, Loader> m = {
      {"CogVideoXTransformer3DModel", load_cogvideox},
      {"LatteTransformer3DModel", load_latte},
      {"STDiT3", load_open_sora},
      {"LatteT2V", load_open_sora_plan_v110},
      {"OpenSoraT2V", load_open_sora_plan_v120},
  };
  return m;
}

std::string class_name_of(const JsonConfig& config) {
  if (!config.has("_class_name") && config.has("architectures")) {
    auto names = config.get<std::vector<std::string>>("architectures");
    if (names.empty()) config.unsupported("architectures", "names no class");
    return names[0];
  }
  return config.get<std::string>("_class_name");
}
}  // namespace

std::string transformer_class_name(const std::string& dir) {
  return class_name_of(JsonConfig::load((std::filesystem::path(dir) / "config.json").string()));
}

std::unique_ptr<DiffusionTransformer> load_transformer(const JsonConfig& config, const WeightSource& weights,
                                                      const LoadOptions& opts) {
  std::string cls = class_name_of(config);
  auto it = loaders().find(cls);
  if (it == loaders().end()) {
    std::string known;
    for (const auto& [name, l] : loaders()) known += (known.empty() ? "" : ", ") + name;
    fail(config.where(), ": key '_class_name': unsupported transformer class '", cls, "' (supported: ", known, ")");
  }
  auto model = it->second(config, weights, opts);
  if (opts.comm && opts.comm->size() > 1 && !model->sequence_parallel())
    fail(cls, " does not run sequence-parallel yet (--gpus ", opts.comm->size(),
         "); CogVideoX and Latte do, other models run on one GPU");
  return model;
}

std::unique_ptr<DiffusionTransformer> load_transformer(const std::string& dir, const LoadOptions& opts) {
  JsonConfig config = JsonConfig::load((std::filesystem::path(dir) / "config.json").string());
  class_name_of(config);  // a config error is reported before the weights are opened
  Checkpoint weights = Checkpoint::open_dir(dir);
  return load_transformer(config, weights, opts);
}

}  // namespace pab
