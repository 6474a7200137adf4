// The transformer families by class name (diffusers' `_class_name`,
// transformers' `architectures[0]` for STDiT3): each model file registers its
// own TransformerFamily; this file looks them up and wraps CFG parallelism.
#include "core/registry.h"

#include <filesystem>

#include "io/config.h"
#include "io/safetensors.h"
#include "models/transformer.h"
#include "parallel/comm.h"

namespace pab {

namespace {
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

  Tensor forward_pass(const TransformerInputs& in, const Sites* sites) override {
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
    // This rank's branch: the first half of the pair's batch is the unconditional one unless the pipeline puts
    // the conditional one first.
    if (!sites) return all_gather(pair_, inner_->forward_pass(mine, nullptr), 0);
    const bool first = pair_.rank() == 0, cond_first = sites->step().conditional_first;
    const Sites branch = sites->for_branch(
        parts == 2 ? (first != cond_first ? CfgBranch::unconditional : CfgBranch::conditional) : sites->step().branch);
    return all_gather(pair_, inner_->forward_pass(mine, &branch), 0);
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

const TransformerFamily& family_of(const JsonConfig& config) {
  const std::string cls = class_name_of(config);
  const auto& families = Registry<TransformerFamily>::get();
  if (const TransformerFamily* f = families.find(cls)) return *f;
  fail(config.where(), ": key '_class_name': unsupported transformer class '", cls, "' (supported: ", families.list(),
       ")");
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
    fail(cls, " does not run sequence-parallel yet (--gpus ", opts.comm->size(), "); it runs on one GPU");
  if (opts.cfg_comm && opts.cfg_comm->size() > 1)
    model = std::make_unique<CfgParallel>(std::move(model), *opts.cfg_comm);
  return model;
}

std::unique_ptr<DiffusionTransformer> load_transformer(const std::string& dir, const LoadOptions& opts) {
  JsonConfig config = JsonConfig::load((std::filesystem::path(dir) / "config.json").string());
  class_name_of(config);  // a config error is reported before the weights are opened
  Checkpoint weights = Checkpoint::open_dir(dir);
  return load_transformer(config, weights, opts);
}

}  // namespace pab
