#include "cache/pab.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "cache/cache_method.h"
#include "cache/pab_config.h"
#include "core/registry.h"

namespace pab {

namespace {
bool contains(const std::vector<int>& v, int x) { return std::find(v.begin(), v.end(), x) != v.end(); }

bool is_mlp(SiteKind k) { return k == SiteKind::mlp_spatial || k == SiteKind::mlp_temporal; }

size_t bytes_of(const SiteOutput& out) {
  size_t n = 0;
  for (const Tensor& t : out) n += t.defined() ? t.nbytes() : 0;
  return n;
}
}  // namespace

bool BroadcastRule::applies_to(int block) const { return blocks.empty() || contains(blocks, block); }

bool PabConfig::any() const {
  for (const auto& r : rules)
    if (r.enabled()) return true;
  return !mlp_spatial.empty() || !mlp_temporal.empty();
}

void PabConfig::validate(const SiteLayout& model, double max_timestep) const {
  auto check_blocks = [&](const std::vector<int>& blocks, SiteKind kind, const std::string& what) {
    const int n = model.blocks(kind);
    for (int b : blocks) {
      if (b < 0) fail(what, ": negative block index ", b);
      if (b >= n)
        fail(what, ": block ", b, " is beyond this model's ", n, " ", site_kind_name(kind), " blocks (0 to ", n - 1,
             ")");
    }
  };
  for (int i = 0; i < 3; ++i) {
    const BroadcastRule& r = rules[size_t(i)];
    const char* name = site_kind_name(SiteKind(i));
    if (r.range < 0) fail("PAB ", name, ": range ", r.range, " must be >= 1");
    if (!r.enabled()) continue;
    if (!(r.lo < r.hi)) fail("PAB ", name, ": timestep window (", r.lo, ", ", r.hi, ") is empty or inverted");
    if (r.lo < 0 || r.hi > max_timestep)
      fail("PAB ", name, ": timestep window (", r.lo, ", ", r.hi, ") is outside [0, ", max_timestep, "]");
    if (model.blocks(SiteKind(i)) == 0)
      fail("PAB ", name, " broadcast is configured but this model has no ", name, " attention");
    check_blocks(r.blocks, SiteKind(i), cat("PAB ", name));
  }
  auto check_mlp = [&](const std::vector<MlpBroadcast>& entries, SiteKind kind) {
    if (entries.empty()) return;
    if (counting != Counting::videosys) fail("PAB MLP broadcast needs the videosys counting rule");
    if (model.blocks(kind) == 0)
      fail("PAB ", site_kind_name(kind), " broadcast is configured but this model has no such MLP");
    for (const MlpBroadcast& e : entries) {
      const std::string what = cat("PAB ", site_kind_name(kind), " at timestep ", e.timestep);
      if (e.skip_count < 1) fail(what, ": skip_count must be >= 1");
      if (e.blocks.empty()) fail(what, ": no blocks listed");
      check_blocks(e.blocks, kind, what);
    }
  };
  check_mlp(mlp_spatial, SiteKind::mlp_spatial);
  check_mlp(mlp_temporal, SiteKind::mlp_temporal);
}

std::string PabConfig::describe() const {
  std::ostringstream os;
  bool first = true;
  for (int i = 0; i < 3; ++i) {
    const BroadcastRule& r = rules[size_t(i)];
    if (!r.enabled()) continue;
    os << (first ? "" : ", ") << site_kind_name(SiteKind(i)) << " " << r.range << " in (" << r.lo << ", " << r.hi << ")";
    first = false;
  }
  if (!mlp_spatial.empty() || !mlp_temporal.empty()) {
    os << (first ? "" : ", ") << "MLP at " << mlp_spatial.size() + mlp_temporal.size() << " timesteps";
    first = false;
  }
  if (first) return "off";
  if (counting == Counting::videosys) os << " [videosys counting]";
  return os.str();
}

// ---------------------------------------------------------------- policy

PabPolicy::PabPolicy(PabConfig config) : config_(std::move(config)) {}

void PabPolicy::reset(std::vector<double> timesteps, int steps) {
  schedule_ = std::move(timesteps);
  count_period_ = steps > 0 ? steps : int(schedule_.size());
  sites_.clear();
  stats_ = CacheStats();
  step_ = -1;
  timestep_ = 0;
}

void PabPolicy::on_begin_step(const StepContext& step) {
  PAB_ASSERT(step.step >= 0, "negative step");
  step_ = step.step;
  timestep_ = step.timestep;
  if (stats_.per_step.size() <= size_t(step_)) stats_.per_step.resize(size_t(step_) + 1);
}

std::vector<SiteKind> PabPolicy::held_kinds() const {
  std::vector<SiteKind> kinds;
  for (int k = 0; k < 3; ++k)
    if (config_.rules[size_t(k)].enabled()) kinds.push_back(SiteKind(k));
  if (!config_.mlp_spatial.empty()) kinds.push_back(SiteKind::mlp_spatial);
  if (!config_.mlp_temporal.empty()) kinds.push_back(SiteKind::mlp_temporal);
  return kinds;
}

bool PabPolicy::in_window(const BroadcastRule& r, double t) const {
  if (config_.counting == Counting::videosys) t = std::trunc(t);
  return r.lo < t && t < r.hi;
}

bool PabPolicy::would_broadcast(SiteKind kind, int block, int count, double t) const {
  const BroadcastRule& r = config_.rule(kind);
  if (!r.enabled() || !r.applies_to(block) || !in_window(r, t)) return false;
  if (config_.counting == Counting::diffusers && count == 0) return false;
  return count % r.range != 0;
}

void PabPolicy::record(SiteId id, bool computed) {
  if (step_ < 0) begin_step(0, timestep_);
  stats_.record({step_, timestep_, CfgBranch::none}, id, computed);
}

size_t PabPolicy::cached_bytes() const {
  size_t n = 0;
  for (const auto& [key, s] : sites_) {
    n += bytes_of(s.cache);
    for (const auto& [t, out] : s.mlp_kept) n += bytes_of(out);
  }
  return n;
}

SiteOutput PabPolicy::on_site(const SiteCall& call, const SiteCompute& compute) {
  const SiteId id = call.id;
  if (!is_layer_site(id.kind)) return compute();
  SiteState& s = sites_[{int(id.kind), id.block}];
  SiteOutput out = is_mlp(id.kind) ? run_mlp(id, s, compute) : run_attention(id, s, compute);
  stats_.peak_cached_bytes = std::max(stats_.peak_cached_bytes, cached_bytes());
  return out;
}

SiteOutput PabPolicy::run_attention(SiteId id, SiteState& s, const SiteCompute& compute) {
  const BroadcastRule& r = config_.rule(id.kind);
  if (!r.enabled() || !r.applies_to(id.block)) {
    record(id, true);
    return compute();
  }
  const int count = s.count;
  const bool broadcast = !s.cache.empty() && would_broadcast(id.kind, id.block, count, timestep_);
  SiteOutput out = broadcast ? s.cache : compute();
  record(id, !broadcast);

  int next = count + 1;
  if (config_.counting == Counting::videosys && count_period_ > 0) next %= count_period_;
  s.count = next;
  // Keep the output only while a later call can reuse it: with a known
  // schedule (one call per step) the next call is at step_ + 1.
  bool keep = true;
  if (!schedule_.empty() && step_ >= 0) {
    size_t ns = size_t(step_) + 1;
    keep = ns < schedule_.size() && would_broadcast(id.kind, id.block, next, schedule_[ns]);
  }
  if (keep) {
    s.cache = out;
  } else {
    s.cache.clear();
  }
  return out;
}

SiteOutput PabPolicy::run_mlp(SiteId id, SiteState& s, const SiteCompute& compute) {
  const auto& entries = id.kind == SiteKind::mlp_spatial ? config_.mlp_spatial : config_.mlp_temporal;
  const int t = int(std::trunc(timestep_));
  std::vector<int> ints;
  for (double v : schedule_) ints.push_back(int(std::trunc(v)));

  // As the original: a configured timestep computes and keeps the output of
  // its listed blocks; otherwise the first entry whose skip range holds t
  // decides whether this block reuses.
  for (const MlpBroadcast& e : entries) {
    if (e.timestep == t && contains(e.blocks, id.block)) {
      SiteOutput out = compute();
      record(id, true);
      // kept only when a later step of the schedule can reuse it
      auto it = std::find(ints.begin(), ints.end(), t);
      if (it != ints.end() && it + 1 != ints.end()) s.mlp_kept[t] = out;
      return out;
    }
  }
  for (const MlpBroadcast& e : entries) {
    auto it = std::find(ints.begin(), ints.end(), e.timestep);
    if (it == ints.end()) continue;
    size_t start = size_t(it - ints.begin());
    size_t last = std::min(start + size_t(e.skip_count), ints.size() - 1);
    bool in_range = false;
    size_t pos = 0;
    for (size_t i = start; i <= last; ++i) {
      if (ints[i] == t) {
        in_range = true;
        pos = i;
        break;
      }
    }
    if (!in_range) continue;
    // The first entry whose range holds t decides, as in the original.
    if (!contains(e.blocks, id.block)) break;
    auto kept = s.mlp_kept.find(e.timestep);
    if (kept == s.mlp_kept.end())
      fail("PAB MLP broadcast: no stored output of timestep ", e.timestep, " for ", site_kind_name(id.kind), " block ",
           id.block, " at timestep ", t);
    SiteOutput out = kept->second;
    record(id, false);
    if (pos == last) s.mlp_kept.erase(kept);
    return out;
  }
  record(id, true);
  return compute();
}

// ---------------------------------------------------------------- registration

namespace {
// --pab / --pab-config: the settings published for the model, off, the short
// form or a file in either dialect, checked against the model's sites.
std::unique_ptr<CachePolicy> make_pab_policy(const CacheChoice& choice, const std::string& model_class,
                                             const SiteLayout& sites, std::string* note) {
  PabConfig config = resolve_pab_choice(choice.preset, choice.file, model_class, note);
  if (!choice.file && (!choice.preset || *choice.preset == "default")) config = fit_published_blocks(config, sites);
  if (!config.any()) return nullptr;
  config.validate(sites);
  return std::make_unique<PabPolicy>(std::move(config));
}
}  // namespace

PAB_REGISTER(CacheMethod, "pab", {make_pab_policy});

}  // namespace pab
