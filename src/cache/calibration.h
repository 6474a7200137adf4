// Calibrating Pyramid Attention Broadcast for a model and a prompt: how much
// every attention site's output changes from one step to the next in a full
// generation (the U-shaped curves the method rests on), what each kind of site
// costs, and the PAB configuration that reaches a target speed-up with the
// smallest predicted deviation.
//
// Cost model: `fraction[k]` is the share of the denoising loop's wall clock
// spent inside the compute functions of kind k's sites (what a broadcast
// skips). Broadcasting b of kind k's n calls saves fraction[k] * b / n of the
// loop, so a configuration's count-based speed-up is
//   1 / (1 - sum_k fraction[k] * broadcast[k] / calls[k]).
//
// Deviation proxy: a call at step i that reuses the output its site computed
// at step j < i is off by |o_i - o_j| <= sum_{m=j+1..i} |o_m - o_{m-1}|
// (triangle inequality). Relative to the output's size, that bound is the sum
// of the recorded relative changes of steps j+1..i. The predicted deviation of
// a configuration is the mean of this bound over all site calls (0 for a call
// that computes): the average relative error PAB puts into a site's output.
// Unlike summing only the change at each broadcast step, it charges the
// second and later reuses of one output for the drift they carry.
#pragma once

#include <array>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "cache/pab.h"
#include "core/tensor.h"

namespace pab {

// One call of a site as ChangeRecorder saw it.
struct RecordedCall {
  SiteId site{SiteKind::spatial, 0};
  int step = 0;
  double timestep = 0;
  // |out - prev| / |prev| (L2 over all the site's output tensors), prev being
  // the same site's output at the previous step; NaN at the first step.
  double change = std::numeric_limits<double>::quiet_NaN();
  double seconds = 0;    // wall clock of the computation, the device synchronised; 0 when reused
  bool computed = true;  // false when the wrapped runner reused an output
};

// A policy that records every attention and MLP site call: the relative L2
// change of its output against the same site's output at the previous step,
// and the time its computation took. It computes every site itself, or lets a
// wrapped policy (e.g. a PabPolicy) decide and passes the schedule and steps
// on to it; block and step sites go to the wrapped policy unrecorded. When a
// site runs more than once per step (guidance branches as separate passes),
// its n-th call of a step is compared with its n-th call of the previous one.
class ChangeRecorder final : public CachePolicy {
 public:
  // `device`: where the model computes, synchronised around each timed call.
  explicit ChangeRecorder(Device device = Device::cpu, CachePolicy* inner = nullptr);

  std::string name() const override { return "change recorder"; }
  std::string describe() const override { return inner_ ? "recording " + inner_->describe() : "recording"; }
  // Forgets the previous outputs (freeing them); keeps the calls recorded. A
  // non-empty schedule is kept as the run's.
  void reset(std::vector<double> timesteps = {}, int steps = 0) override;
  std::vector<SiteKind> held_kinds() const override;
  const CacheStats& stats() const override;

  // Forgets the recorded calls as well.
  void clear();
  const std::vector<RecordedCall>& calls() const { return calls_; }
  const std::vector<double>& schedule() const { return schedule_; }
  // Time spent measuring changes: part of the loop's wall clock that a run
  // without the recorder does not spend.
  double overhead_seconds() const { return overhead_; }

 private:
  void on_begin_step(const StepContext& step) override;
  SiteOutput on_site(const SiteCall& call, const SiteCompute& compute) override;

  Device device_;
  CachePolicy* inner_;
  CacheStats no_stats_;
  std::vector<double> schedule_;
  int step_ = -1;
  double timestep_ = 0;
  // (kind, block, n-th call within the step) -> the output of the previous step
  std::map<std::array<int, 3>, SiteOutput> previous_, current_;
  std::map<std::pair<int, int>, int> calls_this_step_;
  std::vector<RecordedCall> calls_;
  double overhead_ = 0;
};

// The recorded changes by kind, block and step.
struct ChangeTable {
  std::vector<double> timesteps;  // of each step
  struct Kind {
    SiteKind kind = SiteKind::spatial;
    // [block][step]: mean change of the block's calls at the step; NaN where none was measured
    std::vector<std::vector<double>> change;
    int blocks() const { return int(change.size()); }
    // Mean over blocks per step (NaN where no block was measured).
    std::vector<double> curve() const;
  };
  std::vector<Kind> kinds;  // the kinds that ran, in SiteKind order
  const Kind* find(SiteKind k) const;
  int steps() const { return int(timesteps.size()); }
};
// Arranges `calls` over the schedule `timesteps` (one entry per step).
ChangeTable tabulate_changes(const std::vector<RecordedCall>& calls, const std::vector<double>& timesteps);

// Writes every call as a CSV row: kind,block,step,timestep,rel_l2_change,compute_seconds
// (an empty change at the first step), atomically.
void write_change_csv(const std::string& path, const std::vector<RecordedCall>& calls);

struct CostModel {
  std::array<double, kSiteKinds> fraction{};  // share of the loop's time in each kind's sites
  std::string source;                         // how the fractions were obtained
  // The count-based speed-up of what `stats` records (see the file comment).
  double speedup(const CacheStats& stats) const;
};
// Fractions from the timed calls of a recorded run whose loop took
// `loop_seconds` on the wall clock, the recorder's own overhead excluded.
CostModel measure_cost(const std::vector<RecordedCall>& calls, double loop_seconds, double overhead_seconds,
                       std::string source);

// What a configuration is predicted to do on the calibrated schedule and sites.
struct PabPrediction {
  PabConfig config;
  CacheStats stats;        // the decisions PabPolicy makes, one call per site and step
  double speedup = 1;    // cost.speedup(stats)
  double deviation = 0;  // mean bound on a site output's relative error (file comment)
};
PabPrediction predict_pab(const PabConfig& config, const ChangeTable& table, const CostModel& cost);

struct ProposalOptions {
  double target_speedup = 1;  // the predicted speed-up to reach (count-based)
  Counting counting = Counting::diffusers;
  int max_range = 8;           // ranges 2..max_range are tried per kind
  double max_timestep = 1000;  // windows lie in [0, max_timestep]
};

struct Proposal {
  bool reached = false;  // the target is reachable
  // Reached: the configuration with the smallest predicted deviation among
  // those reaching the target. Otherwise: the one with the largest speed-up.
  PabPrediction best;
  int candidates = 0;  // (kind, range, window) choices compared
};
// Chooses, for each attention kind of the table (spatial, temporal, cross),
// off or a range 2..max_range with a timestep window covering a contiguous
// run of the schedule's timesteps, minimising the predicted deviation subject
// to the predicted speed-up >= target. Both are sums over kinds, so each
// kind's choices are reduced to those no other choice beats on both, and the
// kinds' reduced lists are combined exactly.
Proposal propose_pab(const ChangeTable& table, const CostModel& cost, const ProposalOptions& opts);

}  // namespace pab
