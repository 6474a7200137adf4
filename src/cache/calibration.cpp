#include "cache/calibration.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <numeric>
#include <tuple>

#include "backend/ops.h"
#include "io/atomic_file.h"

namespace pab {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

bool is_attention(SiteKind k) {
  return k == SiteKind::spatial || k == SiteKind::temporal || k == SiteKind::cross;
}

// Sum of squares of an f32 tensor on its own device: a [1, 1, N] x [1, 1, N]^T
// product, so that only one number crosses to the host.
double sum_squares(const Tensor& x) {
  if (x.numel() == 0) return 0;
  Tensor flat = x.reshape({1, 1, x.numel()});  // [1, 1, N]
  return double(ops::matmul(flat, flat, /*trans_b=*/true).to_vector().at(0));
}

// |out - prev| / |prev| over all tensors of the two outputs.
double relative_change(const SiteOutput& out, const SiteOutput& prev) {
  PAB_ASSERT(out.size() == prev.size(), "a site returned ", out.size(), " tensors after ", prev.size());
  double diff = 0, ref = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    if (!out[i].defined()) continue;
    PAB_ASSERT(out[i].shape() == prev[i].shape(), "a site's output changed shape: ", out[i].desc(), " after ",
               prev[i].desc());
    Tensor a = out[i].dtype() == DType::f32 ? out[i] : out[i].to(DType::f32);
    Tensor b = prev[i].dtype() == DType::f32 ? prev[i] : prev[i].to(DType::f32);
    diff += sum_squares(ops::sub(a, b));
    ref += sum_squares(b);
  }
  if (ref == 0) return diff == 0 ? 0 : std::numeric_limits<double>::infinity();
  return std::sqrt(diff / ref);
}

}  // namespace

// ---------------------------------------------------------------- recorder

ChangeRecorder::ChangeRecorder(Device device, CachePolicy* inner) : device_(device), inner_(inner) {}

std::vector<SiteKind> ChangeRecorder::held_kinds() const {
  return inner_ ? inner_->held_kinds() : std::vector<SiteKind>{};
}

const CacheStats& ChangeRecorder::stats() const { return inner_ ? inner_->stats() : no_stats_; }

void ChangeRecorder::reset(std::vector<double> timesteps, int steps) {
  if (!timesteps.empty()) schedule_ = timesteps;
  previous_.clear();
  current_.clear();
  calls_this_step_.clear();
  step_ = -1;
  if (inner_) inner_->reset(std::move(timesteps), steps);
}

void ChangeRecorder::on_begin_step(const StepContext& step) {
  PAB_ASSERT(step.step >= 0, "negative step");
  // The outputs of the step just finished become the ones to compare with.
  for (auto& [key, out] : current_) previous_[key] = std::move(out);
  current_.clear();
  calls_this_step_.clear();
  step_ = step.step;
  timestep_ = step.timestep;
  if (inner_) inner_->begin_step(step);
}

void ChangeRecorder::clear() {
  reset();
  calls_.clear();
  schedule_.clear();
  overhead_ = 0;
}

SiteOutput ChangeRecorder::on_site(const SiteCall& site, const SiteCompute& compute) {
  PAB_ASSERT(step_ >= 0, "ChangeRecorder: begin_step was not called before a site ran");
  const SiteId id = site.id;
  if (!is_layer_site(id.kind)) return inner_ ? inner_->run_call(site, compute) : compute();
  Backend& be = backend(device_);
  RecordedCall call;
  call.site = id;
  call.step = step_;
  call.timestep = timestep_;
  call.computed = false;
  auto timed = [&]() -> SiteOutput {
    be.synchronize();
    auto t0 = Clock::now();
    SiteOutput out = compute();
    be.synchronize();
    call.seconds = seconds_since(t0);
    call.computed = true;
    return out;
  };
  SiteOutput out = inner_ ? inner_->run_call(site, timed) : timed();

  auto t0 = Clock::now();
  const int nth = calls_this_step_[{int(id.kind), id.block}]++;
  const std::array<int, 3> key = {int(id.kind), id.block, nth};
  if (auto prev = previous_.find(key); prev != previous_.end()) {
    call.change = relative_change(out, prev->second);
    previous_.erase(prev);  // frees it once the step's output replaces it
  }
  current_[key] = out;
  overhead_ += seconds_since(t0);
  calls_.push_back(call);
  return out;
}

// ---------------------------------------------------------------- table

std::vector<double> ChangeTable::Kind::curve() const {
  const size_t steps = change.empty() ? 0 : change[0].size();
  std::vector<double> mean(steps, std::numeric_limits<double>::quiet_NaN());
  for (size_t s = 0; s < steps; ++s) {
    double sum = 0;
    int n = 0;
    for (const auto& block : change) {
      if (std::isnan(block[s])) continue;
      sum += block[s];
      ++n;
    }
    if (n) mean[s] = sum / n;
  }
  return mean;
}

const ChangeTable::Kind* ChangeTable::find(SiteKind k) const {
  for (const Kind& kind : kinds)
    if (kind.kind == k) return &kind;
  return nullptr;
}

ChangeTable tabulate_changes(const std::vector<RecordedCall>& calls, const std::vector<double>& timesteps) {
  ChangeTable t;
  t.timesteps = timesteps;
  const size_t steps = timesteps.size();
  std::array<int, kSiteKinds> blocks{};
  for (const RecordedCall& c : calls) {
    if (c.step < 0 || size_t(c.step) >= steps)
      fail("calibration: a site ran at step ", c.step, " of a ", steps, "-step schedule");
    blocks[size_t(c.site.kind)] = std::max(blocks[size_t(c.site.kind)], c.site.block + 1);
  }
  std::array<std::vector<std::vector<std::pair<double, int>>>, kSiteKinds> sums;
  for (int k = 0; k < kSiteKinds; ++k)
    sums[size_t(k)].assign(size_t(blocks[size_t(k)]), std::vector<std::pair<double, int>>(steps, {0.0, 0}));
  for (const RecordedCall& c : calls) {
    if (std::isnan(c.change)) continue;
    auto& cell = sums[size_t(c.site.kind)][size_t(c.site.block)][size_t(c.step)];
    cell.first += c.change;
    cell.second += 1;
  }
  for (int k = 0; k < kSiteKinds; ++k) {
    if (blocks[size_t(k)] == 0) continue;
    ChangeTable::Kind kind;
    kind.kind = SiteKind(k);
    for (const auto& block : sums[size_t(k)]) {
      std::vector<double> row(steps, std::numeric_limits<double>::quiet_NaN());
      for (size_t s = 0; s < steps; ++s)
        if (block[s].second) row[s] = block[s].first / block[s].second;
      kind.change.push_back(std::move(row));
    }
    t.kinds.push_back(std::move(kind));
  }
  return t;
}

void write_change_csv(const std::string& path, const std::vector<RecordedCall>& calls) {
  std::vector<const RecordedCall*> rows;
  for (const RecordedCall& c : calls) rows.push_back(&c);
  std::stable_sort(rows.begin(), rows.end(), [](const RecordedCall* a, const RecordedCall* b) {
    return std::tuple(int(a->site.kind), a->site.block, a->step) <
           std::tuple(int(b->site.kind), b->site.block, b->step);
  });
  AtomicFile file(path);
  {
    std::ofstream os(file.temp_path());
    os.precision(9);
    os << "kind,block,step,timestep,rel_l2_change,compute_seconds\n";
    for (const RecordedCall* c : rows) {
      os << site_kind_name(c->site.kind) << "," << c->site.block << "," << c->step << "," << c->timestep << ",";
      if (!std::isnan(c->change)) os << c->change;
      os << "," << c->seconds << "\n";
    }
    if (!os.flush()) fail(path, ": cannot write");
  }
  file.commit();
}

// ---------------------------------------------------------------- cost

double CostModel::speedup(const CacheStats& stats) const {
  double saved = 0;
  for (int k = 0; k < kSiteKinds; ++k) {
    CacheStats::Counts c = stats.total(SiteKind(k));
    if (c.computed + c.reused > 0) saved += fraction[size_t(k)] * c.reused / (c.computed + c.reused);
  }
  return 1 / (1 - saved);
}

CostModel measure_cost(const std::vector<RecordedCall>& calls, double loop_seconds, double overhead_seconds,
                       std::string source) {
  CostModel m;
  m.source = std::move(source);
  const double loop = loop_seconds - overhead_seconds;
  if (!(loop > 0)) fail("calibration: the loop took no measurable time (", loop_seconds, " s)");
  for (const RecordedCall& c : calls) m.fraction[size_t(c.site.kind)] += c.seconds / loop;
  // Timer resolution and synchronisation can push the sum past what a loop
  // holds; the sites never take more than the whole loop.
  double total = std::accumulate(m.fraction.begin(), m.fraction.end(), 0.0);
  if (total > 1)
    for (double& f : m.fraction) f /= total;
  return m;
}

// ---------------------------------------------------------------- prediction

namespace {

// Runs `config` over the table's schedule and sites with nothing computed.
CacheStats dry_run(const PabConfig& config, const ChangeTable& table) {
  PabPolicy policy(config);
  policy.reset(table.timesteps);
  const SiteCompute nothing = [] { return SiteOutput{Tensor()}; };
  for (int s = 0; s < table.steps(); ++s) {
    policy.begin_step(s, table.timesteps[size_t(s)]);
    for (const ChangeTable::Kind& kind : table.kinds)
      for (int b = 0; b < kind.blocks(); ++b) policy.run({kind.kind, b}, nothing);
  }
  return policy.stats();
}

// Sum over the broadcast decisions of the bound on their relative error: the
// changes of the steps since the site last computed.
double deviation_sum(const CacheStats& stats, const ChangeTable& table) {
  std::map<std::pair<int, int>, int> last_computed;
  double sum = 0;
  for (const CacheStats::Decision& d : stats.decisions) {
    const std::pair<int, int> key = {int(d.site.kind), d.site.block};
    if (d.computed) {
      last_computed[key] = d.step;
      continue;
    }
    const ChangeTable::Kind* kind = table.find(d.site.kind);
    auto last = last_computed.find(key);
    PAB_ASSERT(kind && last != last_computed.end(), "a broadcast without an earlier computation");
    for (int m = last->second + 1; m <= d.step; ++m) {
      double c = kind->change[size_t(d.site.block)][size_t(m)];
      if (!std::isnan(c)) sum += c;
    }
  }
  return sum;
}

int total_calls(const ChangeTable& table) {
  int n = 0;
  for (const ChangeTable::Kind& k : table.kinds) n += k.blocks() * table.steps();
  return n;
}

}  // namespace

PabPrediction predict_pab(const PabConfig& config, const ChangeTable& table, const CostModel& cost) {
  PabPrediction p;
  p.config = config;
  p.stats = dry_run(config, table);
  p.speedup = cost.speedup(p.stats);
  const int calls = total_calls(table);
  p.deviation = calls ? deviation_sum(p.stats, table) / calls : 0;
  return p;
}

// ---------------------------------------------------------------- proposal

namespace {

// A number in [a, b) (lower window bound: includes b, excludes a) or in (a, b]
// (upper bound: includes a, excludes b), preferring the midpoint's integer.
double cut_below(double a, double b) {
  double m = std::floor((a + b) / 2);
  return (m >= a && m < b) ? m : a;
}
double cut_above(double a, double b) {
  double m = std::ceil((a + b) / 2);
  return (m > a && m <= b) ? m : b;
}

// Windows (lo, hi) holding each contiguous run of the schedule's distinct
// timesteps (as the counting rule sees them).
std::vector<std::pair<double, double>> candidate_windows(const std::vector<double>& timesteps, Counting counting,
                                                         double max_timestep) {
  std::vector<double> u;
  for (double t : timesteps) u.push_back(counting == Counting::videosys ? std::trunc(t) : t);
  std::sort(u.begin(), u.end());
  u.erase(std::unique(u.begin(), u.end()), u.end());
  std::vector<std::pair<double, double>> out;
  const size_t n = u.size();
  for (size_t p = 0; p < n; ++p) {
    if (p == 0 && !(u[0] > 0)) continue;
    const double lo = p == 0 ? 0 : cut_below(u[p - 1], u[p]);
    for (size_t q = p; q < n; ++q) {
      if (q + 1 == n && !(u[q] < max_timestep)) continue;
      const double hi = q + 1 == n ? max_timestep : cut_above(u[q], u[q + 1]);
      if (lo >= 0 && lo < hi && hi <= max_timestep) out.push_back({lo, hi});
    }
  }
  return out;
}

struct Choice {
  double saved = 0, deviation = 0;  // deviation as a sum over calls (divided at the end)
  BroadcastRule rule;               // disabled: off
};

// Keeps the choices no other beats on both saved time and deviation.
template <class T, class Saved, class Dev>
std::vector<T> frontier(std::vector<T> v, Saved saved, Dev dev) {
  std::sort(v.begin(), v.end(),
            [&](const T& a, const T& b) { return saved(a) != saved(b) ? saved(a) > saved(b) : dev(a) < dev(b); });
  std::vector<T> out;
  for (T& x : v)
    if (out.empty() || dev(x) < dev(out.back())) out.push_back(std::move(x));
  return out;
}

}  // namespace

Proposal propose_pab(const ChangeTable& table, const CostModel& cost, const ProposalOptions& opts) {
  if (!(opts.target_speedup > 0)) fail("calibration: the target speed-up must be > 0, got ", opts.target_speedup);
  if (opts.max_range < 2) fail("calibration: the largest range must be >= 2, got ", opts.max_range);
  Proposal result;
  const auto windows = candidate_windows(table.timesteps, opts.counting, opts.max_timestep);

  // Each kind's choices, judged on a table of that kind alone: sites of other
  // kinds change neither its decisions nor its deviation.
  struct Combined {
    double saved = 0, deviation = 0;
    std::vector<BroadcastRule> rules;
  };
  std::vector<Combined> combined = {Combined{}};
  std::vector<SiteKind> kinds;
  for (const ChangeTable::Kind& kind : table.kinds) {
    if (!is_attention(kind.kind)) continue;
    kinds.push_back(kind.kind);
    // A rule without a block list treats every block alike: one site whose
    // change is the sum over the blocks gives the same counts and deviation sum.
    ChangeTable alone;
    alone.timesteps = table.timesteps;
    ChangeTable::Kind merged;
    merged.kind = kind.kind;
    merged.change.assign(1, std::vector<double>(size_t(table.steps()), 0.0));
    for (const auto& block : kind.change)
      for (size_t s = 0; s < block.size(); ++s)
        if (!std::isnan(block[s])) merged.change[0][s] += block[s];
    alone.kinds = {merged};
    std::vector<Choice> choices = {Choice{}};
    for (int range = 2; range <= opts.max_range; ++range) {
      for (const auto& [lo, hi] : windows) {
        PabConfig c;
        c.counting = opts.counting;
        c.rule(kind.kind) = BroadcastRule{range, lo, hi, {}};
        CacheStats stats = dry_run(c, alone);
        CacheStats::Counts n = stats.total(kind.kind);
        if (n.reused == 0) continue;
        Choice ch;
        ch.saved = cost.fraction[size_t(kind.kind)] * n.reused / (n.computed + n.reused);
        ch.deviation = deviation_sum(stats, alone);
        ch.rule = c.rule(kind.kind);
        choices.push_back(ch);
        ++result.candidates;
      }
    }
    choices = frontier(
        std::move(choices), [](const Choice& c) { return c.saved; }, [](const Choice& c) { return c.deviation; });
    std::vector<Combined> next;
    for (const Combined& a : combined) {
      for (const Choice& b : choices) {
        Combined c = a;
        c.saved += b.saved;
        c.deviation += b.deviation;
        c.rules.push_back(b.rule);
        next.push_back(std::move(c));
      }
    }
    combined = frontier(
        std::move(next), [](const Combined& c) { return c.saved; }, [](const Combined& c) { return c.deviation; });
  }

  // The frontier runs from the most saved (largest deviation) down to nothing
  // saved: the last entry that still reaches the target deviates least.
  const double needed = 1 - 1 / opts.target_speedup;
  const Combined* pick = &combined.front();
  for (const Combined& c : combined) {
    if (c.saved < needed - 1e-12) break;
    pick = &c;
    result.reached = true;
  }
  PabConfig config;
  config.counting = opts.counting;
  for (size_t i = 0; i < kinds.size(); ++i) config.rule(kinds[i]) = pick->rules[i];
  result.best = predict_pab(config, table, cost);
  return result;
}

}  // namespace pab
