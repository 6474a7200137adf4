// Attention sites: the places where a model lets a cache policy decide
// whether to compute or to reuse an earlier output. Models mark each site with
// its kind and block and never know which policy (if any) is running.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace pab {

enum class SiteKind : uint8_t { spatial, temporal, cross, mlp_spatial, mlp_temporal };
constexpr int kSiteKinds = 5;
const char* site_kind_name(SiteKind k);  // "spatial", "temporal", "cross", "mlp_spatial", "mlp_temporal"
bool parse_site_kind(const std::string& s, SiteKind* out);

struct SiteId {
  SiteKind kind;
  int block;  // index of the block within the model's blocks of this kind
};

// The sites a model has: each kind with its number of blocks (a kind's
// blocks are numbered 0 .. blocks - 1), known from the model's config alone.
struct SiteLayout {
  std::vector<std::pair<SiteKind, int>> kinds;
  std::vector<SiteKind> site_kinds() const;
  int blocks(SiteKind kind) const;  // 0 where the model has no such site
};

// What a site produces: one or more tensors (CogVideoX's joint attention
// returns the video and the text stream).
using SiteOutput = std::vector<Tensor>;
using SiteCompute = std::function<SiteOutput()>;

// Decides, per call, whether a site computes or reuses.
class SiteRunner {
 public:
  virtual ~SiteRunner() = default;
  virtual SiteOutput run(SiteId id, const SiteCompute& compute) = 0;
};

// A SiteRunner that the denoising loop tells the schedule before a generation
// and the step and timestep before each forward pass (PAB, calibration).
class SteppedSiteRunner : public SiteRunner {
 public:
  // Called before a generation with the schedule about to run (one forward
  // pass per entry) and again, with no schedule, when it ends on any path so
  // that the runner can release what it holds.
  virtual void reset(std::vector<double> timesteps = {}) = 0;
  // Called before the forward pass of step `step` at `timestep`.
  virtual void begin_step(int step, double timestep) = 0;
};

// Runs a site through `runner`, or computes directly when runner is null.
inline SiteOutput run_site(SiteRunner* runner, SiteId id, const SiteCompute& compute) {
  return runner ? runner->run(id, compute) : compute();
}
inline Tensor run_site1(SiteRunner* runner, SiteId id, const std::function<Tensor()>& compute) {
  return run_site(runner, id, [&] { return SiteOutput{compute()}; }).at(0);
}

}  // namespace pab
