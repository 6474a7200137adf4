// The cache contract: the places where a model lets a cache policy decide
// whether to compute or to reuse. Models mark each site with its kind, block
// and input and never know which policy (if any) runs; a cache method (PAB,
// or FirstBlockCache-, TeaCache-style methods) is one CachePolicy in its own
// file, registered by name (cache/cache_method.h).
//
// Sites nest: a step site (the whole forward pass) holds every block site (a
// whole transformer block), which holds its attention and MLP sites. A policy
// that reuses an outer site's output skips every site inside it.
#pragma once

#include <array>
#include <functional>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace pab {

enum class SiteKind : uint8_t { spatial, temporal, cross, mlp_spatial, mlp_temporal, block, step };
constexpr int kSiteKinds = 7;
// "spatial", "temporal", "cross", "mlp_spatial", "mlp_temporal", "block", "step"
const char* site_kind_name(SiteKind k);
bool parse_site_kind(const std::string& s, SiteKind* out);
// The attention and MLP kinds: the sites inside a block (what PAB broadcasts).
constexpr bool is_layer_site(SiteKind k) {
  return k <= SiteKind::mlp_temporal;
}

struct SiteId {
  SiteKind kind;
  int block;  // index of the block within the model's blocks of this kind (0 for the step site)
};

// The sites a model has: each kind with its number of blocks (a kind's
// blocks are numbered 0 .. blocks - 1), known from the model's config alone.
// `block` counts the transformer's blocks in the order they run; every model
// has one `step` site.
struct SiteLayout {
  std::vector<std::pair<SiteKind, int>> kinds;
  std::vector<SiteKind> site_kinds() const;
  // The attention and MLP kinds only.
  std::vector<SiteKind> layer_kinds() const;
  int blocks(SiteKind kind) const;  // 0 where the model has no such site
};

// Which classifier-free-guidance branches a forward pass's batch holds.
enum class CfgBranch : uint8_t {
  none,           // no CFG: the conditional branch alone
  both,           // batched CFG: both branches, in the pipeline's order (StepContext::conditional_first)
  unconditional,  // one branch of a CFG-parallel pair
  conditional,
};

// The denoising step a forward pass belongs to.
struct StepContext {
  int step = 0;
  double timestep = 0;
  CfgBranch branch = CfgBranch::none;
  bool conditional_first = false;  // with `both`: the batch is (conditional, unconditional), as Open-Sora's
};

// What a site produces, and what it takes: one or more tensors (CogVideoX's
// joint attention returns the video and the text stream).
using SiteOutput = std::vector<Tensor>;
using SiteCompute = std::function<SiteOutput()>;

// One call of a site, as a policy sees it.
struct SiteCall {
  SiteId id;
  StepContext step;
  const SiteOutput* input;  // the site's input (never null; may be empty)
};

// What a policy did: per step and kind, calls computed and reused, and every
// call's decision in call order (for the broadcast map).
struct CacheStats {
  struct Counts {
    int computed = 0;
    int reused = 0;
  };
  struct Decision {
    int step = 0;
    double timestep = 0;
    SiteId site{SiteKind::spatial, 0};
    bool computed = true;
  };
  std::vector<std::array<Counts, kSiteKinds>> per_step;
  std::vector<Decision> decisions;
  Counts total(SiteKind k) const;
  Counts total() const;
  size_t peak_cached_bytes = 0;
  // Counts one call at `step` (growing per_step) and its decision.
  void record(const StepContext& step, SiteId id, bool computed);
  // One line, e.g. "spatial: 120 computed, 60 reused; ..." (PAB says "broadcast").
  std::string summary(const char* reused = "reused") const;
};

// A cache method's state through generations: decides, per site call,
// whether to compute or to return an earlier output. Implementations define
// the private virtuals; callers use the public functions.
class CachePolicy {
 public:
  virtual ~CachePolicy() = default;
  virtual std::string name() const = 0;      // the method's registered name, e.g. "pab"
  virtual std::string describe() const = 0;  // its settings in one line
  // Before a generation with the schedule about to run (one forward pass per
  // entry), and again with none when it ends on any path, so that the policy
  // releases what it holds. `steps`: the step count the run was asked for,
  // where the schedule has more entries (PNDM's warm-up evaluations); 0: one
  // step per entry.
  virtual void reset(std::vector<double> timesteps = {}, int steps = 0) = 0;
  // The site kinds whose outputs it keeps across steps (for the memory estimate).
  virtual std::vector<SiteKind> held_kinds() const = 0;
  virtual const CacheStats& stats() const = 0;

  // Before the forward pass of a step.
  void begin_step(const StepContext& step) {
    step_ = step;
    on_begin_step(step);
  }
  void begin_step(int step, double timestep) { begin_step(StepContext{step, timestep, CfgBranch::none}); }
  // One site call: compute() or an earlier output of the same shape.
  SiteOutput run_call(const SiteCall& call, const SiteCompute& compute) { return on_site(call, compute); }
  // A site call without input, in the step last begun.
  SiteOutput run(SiteId id, const SiteCompute& compute) {
    const SiteOutput none;
    return on_site(SiteCall{id, step_, &none}, compute);
  }

 private:
  virtual void on_begin_step(const StepContext& step) = 0;
  virtual SiteOutput on_site(const SiteCall& call, const SiteCompute& compute) = 0;
  StepContext step_;
};

// What a model's forward pass is given: the policy and the step the pass
// belongs to. Null where nothing caches: every site computes.
class Sites {
 public:
  Sites(CachePolicy& policy, StepContext step) : policy_(&policy), step_(step) {}
  SiteOutput run(SiteId id, const SiteOutput& input, const SiteCompute& compute) const {
    return policy_->run_call(SiteCall{id, step_, &input}, compute);
  }
  const StepContext& step() const { return step_; }
  // The same sites for a pass over one CFG branch of the batch.
  Sites for_branch(CfgBranch branch) const {
    Sites s = *this;
    s.step_.branch = branch;
    return s;
  }

 private:
  CachePolicy* policy_;
  StepContext step_;
};

// Runs a site through `sites`, or computes directly when sites is null.
inline SiteOutput run_site(const Sites* sites, SiteId id, const SiteOutput& input, const SiteCompute& compute) {
  return sites ? sites->run(id, input, compute) : compute();
}
inline Tensor run_site1(const Sites* sites, SiteId id, const Tensor& input, const std::function<Tensor()>& compute) {
  if (!sites) return compute();
  return sites->run(id, SiteOutput{input}, [&] { return SiteOutput{compute()}; }).at(0);
}

}  // namespace pab
