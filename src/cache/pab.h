// Pyramid Attention Broadcast: a CachePolicy that computes an attention site
// only every `range`-th call inside a timestep window and otherwise returns
// (broadcasts) the site's last output.
//
// Two counting rules:
//  - diffusers (PyramidAttentionBroadcastHook): each site counts its own calls
//    from 0; it computes when the count is 0, when the current timestep is
//    outside the open window (lo, hi), or when count % range == 0.
//  - videosys (the original code): the timestep is truncated to an integer,
//    each site broadcasts when count % range != 0 and lo < int(t) < hi, and its
//    count wraps at the number of steps.
// MLP broadcast (videosys only): at the listed integer timesteps the listed
// blocks compute and keep their MLP output, which the next `skip_count` calls
// reuse.
//
// The caller tells the policy the schedule, then the step and timestep before
// each forward pass, and resets it before every generation. The policy frees
// a cached output as soon as the schedule shows that no later call reuses it.
#pragma once

#include <array>
#include <map>
#include <optional>
#include <set>
#include <vector>

#include "cache/site.h"

namespace pab {

struct BroadcastRule {
  int range = 0;            // compute every range-th call; 0 = never broadcast
  double lo = 100, hi = 800;  // open timestep window
  std::vector<int> blocks;  // empty = every block; otherwise broadcast only in these
  bool enabled() const { return range > 0; }
  bool applies_to(int block) const;
};

// videosys MLP broadcast entry: at integer timestep `timestep` the listed
// blocks compute and keep their MLP output; the next `skip_count` steps of the
// schedule reuse it.
struct MlpBroadcast {
  int timestep = 0;
  int skip_count = 0;
  std::vector<int> blocks;
};

enum class Counting : uint8_t { diffusers, videosys };

struct PabConfig {
  Counting counting = Counting::diffusers;
  std::array<BroadcastRule, 3> rules;  // indexed by SiteKind spatial, temporal, cross
  // videosys MLP broadcast, in the configured order (the first matching entry wins)
  std::vector<MlpBroadcast> mlp_spatial, mlp_temporal;

  BroadcastRule& rule(SiteKind k) { return rules[size_t(k)]; }
  const BroadcastRule& rule(SiteKind k) const { return rules[size_t(k)]; }
  bool any() const;
  // Checks ranges and windows (0 <= lo < hi <= max_timestep), that every
  // configured kind is one of the model's and every listed block one of its
  // blocks of that kind; fails with a one-line message.
  void validate(const SiteLayout& model, double max_timestep = 1000) const;
  std::string describe() const;  // "spatial 2 in (100, 800), cross 6 in (100, 900)"
};

class PabPolicy final : public CachePolicy {
 public:
  explicit PabPolicy(PabConfig config);

  const PabConfig& config() const { return config_; }
  std::string name() const override { return "pab"; }
  std::string describe() const override { return config_.describe(); }
  // Forgets every cached output, count and statistic; `timesteps` is the
  // schedule about to run (one forward pass per entry), used to free caches
  // early. An empty schedule keeps each cache until the next reset. VideoSys
  // counts calls modulo `steps` (its update_steps(num_inference_steps)), or
  // the schedule's length when 0.
  void reset(std::vector<double> timesteps = {}, int steps = 0) override;
  // The kinds it broadcasts.
  std::vector<SiteKind> held_kinds() const override;

  const CacheStats& stats() const override { return stats_; }
  size_t cached_bytes() const;

 private:
  struct SiteState {
    int count = 0;        // calls so far (diffusers) or wrapped counter (videosys)
    SiteOutput cache;     // empty when nothing can be reused
    // videosys MLP: outputs kept by the timestep of the entry that computed
    // them (overlapping entries each reuse their own, as the original does)
    std::map<int, SiteOutput> mlp_kept;
  };
  // Attention and MLP sites only; block and step sites always compute.
  SiteOutput on_site(const SiteCall& call, const SiteCompute& compute) override;
  void on_begin_step(const StepContext& step) override;
  bool in_window(const BroadcastRule& r, double t) const;
  bool would_broadcast(SiteKind kind, int block, int count, double t) const;
  SiteOutput run_attention(SiteId id, SiteState& s, const SiteCompute& compute);
  SiteOutput run_mlp(SiteId id, SiteState& s, const SiteCompute& compute);
  void record(SiteId id, bool computed);

  PabConfig config_;
  std::vector<double> schedule_;
  int count_period_ = 0;  // VideoSys counting's modulus; 0: none
  int step_ = -1;
  double timestep_ = 0;
  std::map<std::pair<int, int>, SiteState> sites_;  // (kind, block)
  CacheStats stats_;
};

}  // namespace pab
