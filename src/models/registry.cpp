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

// Defined in the model files: each family's loader, its sites and the
// footprint of one forward pass, from the config alone.
#define PAB_TRANSFORMER_FAMILY(name)                                                                       \
  std::unique_ptr<DiffusionTransformer> load_##name(const JsonConfig& config, const WeightSource& weights, \
                                                    const LoadOptions& opts);                              \
  SiteLayout name##_site_layout(const JsonConfig& config);                                                 \
  ForwardFootprint name##_footprint(const JsonConfig& config, const ForwardShape& shape);
PAB_TRANSFORMER_FAMILY(cogvideox)
PAB_TRANSFORMER_FAMILY(latte)
PAB_TRANSFORMER_FAMILY(open_sora)
PAB_TRANSFORMER_FAMILY(open_sora_plan_v110)
PAB_TRANSFORMER_FAMILY(open_sora_plan_v120)
#undef PAB_TRANSFORMER_FAMILY

namespace {
struct Family {
  std::function<std::unique_ptr<DiffusionTransformer>(const JsonConfig&, const WeightSource&, const LoadOptions&)> load;
  std::function<SiteLayout(const JsonConfig&)> site_layout;
  std::function<ForwardFootprint(const JsonConfig&, const ForwardShape&)> footprint;
};
const std::map<std::string, Family>& families() {
  static const std::map<std::string, Family> m = {
      {"CogVideoXTransformer3DModel", {load_cogvideox, cogvideox_site_layout, cogvideox_footprint}},
      {"LatteTransformer3DModel", {load_latte, latte_site_layout, latte_footprint}},
      {"STDiT3", {load_open_sora, open_sora_site_layout, open_sora_footprint}},
      {"LatteT2V", {load_open_sora_plan_v110, open_sora_plan_v110_site_layout, open_sora_plan_v110_footprint}},
      {"OpenSoraT2V", {load_open_sora_plan_v120, open_sora_plan_v120_site_layout, open_sora_plan_v120_footprint}},
  };
  return m;
}

// CFG parallelism: each rank of the pair runs its half of the batch (its
// guidance branch) and the halves are gathered, in pair order.
class CfgParallel final : public DiffusionTransformer {
 public:
  CfgParallel(std::unique_ptr<DiffusionTransformer> inner, Communicator& pair)
      : inner_(std::move(inner)), pair_(pair) {}
  std::string class_name() const override { return inner_->class_name(); }
  LatentLayout layout() const override { return inner_->layout(); }
  int in_channels() const override { return inner_->in_channels(); }
  int out_channels() const override { return inner_->out_channels(); }
  SiteLayout site_layout() const override { return inner_->site_layout(); }
  Tensor null_text() const override { return inner_->null_text(); }
  bool sequence_parallel() const override { return inner_->sequence_parallel(); }

  Tensor forward(const TransformerInputs& in, SiteRunner* sites) override {
    const int64_t bsz = in.latents.dim(0), parts = pair_.size();
    if (bsz % parts != 0)
      fail("--cfg-parallel: a batch of ", bsz, " does not split over ", parts,
           " guidance branches (is classifier-free guidance on?)");
    const int64_t n = bsz / parts, from = n * pair_.rank();
    auto half = [&](const Tensor& t) { return t.defined() ? t.narrow0(from, n) : t; };
    TransformerInputs mine = in;
    mine.latents = half(in.latents);
    mine.text = half(in.text);
    mine.text_mask = half(in.text_mask);
    return all_gather(pair_, inner_->forward(mine, sites), 0);
  }

 private:
  std::unique_ptr<DiffusionTransformer> inner_;
  Communicator& pair_;
};

std::string class_name_of(const JsonConfig& config) {
  if (!config.has("_class_name") && config.has("architectures")) {
    auto names = config.get<std::vector<std::string>>("architectures");
    if (names.empty()) config.unsupported("architectures", "names no class");
    return names[0];
  }
  return config.get<std::string>("_class_name");
}

const Family& family_of(const JsonConfig& config) {
  const std::string cls = class_name_of(config);
  auto it = families().find(cls);
  if (it == families().end()) {
    std::string known;
    for (const auto& [name, f] : families()) known += (known.empty() ? "" : ", ") + name;
    fail(config.where(), ": key '_class_name': unsupported transformer class '", cls, "' (supported: ", known, ")");
  }
  return it->second;
}
}  // namespace

void check_weights_used(const WeightUse& use, const std::string& model, const LoadOptions& opts) {
  const std::string warning = use.check_all_used(model, opts.allow_unused_weights);
  if (!warning.empty() && opts.on_warning) opts.on_warning(warning);
}

SiteLayout transformer_site_layout(const JsonConfig& config) {
  return family_of(config).site_layout(config);
}

ForwardFootprint transformer_footprint(const JsonConfig& config, const ForwardShape& shape) {
  return family_of(config).footprint(config, shape);
}

std::string transformer_class_name(const std::string& dir) {
  return class_name_of(JsonConfig::load((std::filesystem::path(dir) / "config.json").string()));
}

std::unique_ptr<DiffusionTransformer> load_transformer(const JsonConfig& config, const WeightSource& weights,
                                                      const LoadOptions& opts) {
  const std::string cls = class_name_of(config);
  WeightUse use(weights);
  auto model = family_of(config).load(config, use, opts);
  check_weights_used(use, cls, opts);
  if (opts.comm && opts.comm->size() > 1 && !model->sequence_parallel())
    fail(cls, " does not run sequence-parallel yet (--gpus ", opts.comm->size(),
         "); CogVideoX, Latte and Open-Sora do, other models run on one GPU");
  if (opts.cfg_comm && opts.cfg_comm->size() > 1) model = std::make_unique<CfgParallel>(std::move(model), *opts.cfg_comm);
  return model;
}

std::unique_ptr<DiffusionTransformer> load_transformer(const std::string& dir, const LoadOptions& opts) {
  JsonConfig config = JsonConfig::load((std::filesystem::path(dir) / "config.json").string());
  class_name_of(config);  // a config error is reported before the weights are opened
  Checkpoint weights = Checkpoint::open_dir(dir);
  return load_transformer(config, weights, opts);
}

}  // namespace pab
