// MLP broadcast (VideoSys semantics) and spatial_block ranges: which calls
// compute and which reuse, on a stand-in model with hand-written expectations
// and on Latte, where the PAB run must equal a manual reconstruction.
#include <map>
#include <set>

#include "backend/ops.h"
#include "cache/pab_config.h"
#include "pipeline/replay.h"
#include "support/testing.h"

namespace pab {
namespace {

using nlohmann::ordered_json;
using testing::data_path;

const std::vector<double> kSchedule = {999, 916, 832, 749, 666, 582, 499, 416};

// For each block, the step whose computation each step's call returned.
using Sources = std::vector<std::vector<int>>;

// A stand-in model with `blocks` MLP sites of `kind`; a computed output
// encodes its step and block, so the returned value names its source step.
Sources run_stand_in(const PabConfig& config, SiteKind kind, int blocks, const std::vector<double>& schedule,
                     size_t* kept_after = nullptr) {
  PabPolicy policy(config);
  policy.reset(schedule);
  Sources src(size_t(blocks), std::vector<int>(schedule.size(), -1));
  for (size_t step = 0; step < schedule.size(); ++step) {
    policy.begin_step(int(step), schedule[step]);
    for (int b = 0; b < blocks; ++b) {
      Tensor out = policy.run({kind, b}, [&] { return SiteOutput{Tensor::scalar(float(step * 100 + size_t(b)))}; }).at(0);
      int v = int(out.to_vector()[0]);
      EXPECT_EQ(v % 100, b) << "block " << b << " got another block's output";
      src[size_t(b)][step] = v / 100;
    }
  }
  if (kept_after) *kept_after = policy.cached_bytes();
  return src;
}

PabConfig videosys(const char* json) {
  return parse_pab_config(ordered_json::parse(json), "test");
}

std::vector<int> identity(size_t n) {
  std::vector<int> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = int(i);
  return v;
}

TEST(PabMlpStandIn, ComputeAtConfiguredTimestepReuseForSkipCount) {
  // 832 is step 2: blocks 0 and 2 compute there and reuse at steps 3 and 4.
  PabConfig c = videosys(R"({"mlp_spatial_broadcast_config": {"832": {"block": [0, 2], "skip_count": 2}}})");
  size_t kept = 1;
  Sources s = run_stand_in(c, SiteKind::mlp_spatial, 3, kSchedule, &kept);
  EXPECT_EQ(s[0], (std::vector<int>{0, 1, 2, 2, 2, 5, 6, 7}));
  EXPECT_EQ(s[1], identity(8));
  EXPECT_EQ(s[2], (std::vector<int>{0, 1, 2, 2, 2, 5, 6, 7}));
  EXPECT_EQ(kept, 0u);  // freed after the last reuse
  // The temporal table is separate: the spatial one does not touch temporal sites.
  EXPECT_EQ(run_stand_in(c, SiteKind::mlp_temporal, 3, kSchedule)[0], identity(8));
}

TEST(PabMlpStandIn, SeveralEntries) {
  PabConfig c = videosys(R"({"mlp_temporal_skip_config": {
      "832": {"block": [0, 1], "skip_count": 1},
      "582": {"block": [1], "skip_count": 2}}})");
  Sources s = run_stand_in(c, SiteKind::mlp_temporal, 3, kSchedule);
  EXPECT_EQ(s[0], (std::vector<int>{0, 1, 2, 2, 4, 5, 6, 7}));
  EXPECT_EQ(s[1], (std::vector<int>{0, 1, 2, 2, 4, 5, 5, 5}));
  EXPECT_EQ(s[2], identity(8));
}

// Overlapping entries, as VideoSys keeps outputs by (start timestep, block):
// a block recomputed at a later configured timestep still reuses the earlier
// entry's output inside that entry's range.
TEST(PabMlpStandIn, OverlappingEntriesKeepTheirOwnOutputs) {
  PabConfig c = videosys(R"({"mlp_spatial_broadcast_config": {
      "832": {"block": [0], "skip_count": 2},
      "749": {"block": [0], "skip_count": 2}}})");
  // step 3 (749) computes (its own entry); step 4 (666) lies first in 832's
  // range -> step 2's output; step 5 (582) only in 749's -> step 3's.
  EXPECT_EQ(run_stand_in(c, SiteKind::mlp_spatial, 1, kSchedule)[0], (std::vector<int>{0, 1, 2, 3, 2, 3, 6, 7}));
}

// The first entry (in configuration order) whose range holds a timestep decides.
TEST(PabMlpStandIn, EntryOrderDecides) {
  PabConfig late_first = videosys(R"({"mlp_spatial_broadcast_config": {
      "749": {"block": [1], "skip_count": 1},
      "832": {"block": [0, 1], "skip_count": 2}}})");
  Sources a = run_stand_in(late_first, SiteKind::mlp_spatial, 2, kSchedule);
  // at 749 and 666 the 749 entry decides: block 0 is not listed there, so it computes
  EXPECT_EQ(a[0], identity(8));
  EXPECT_EQ(a[1], (std::vector<int>{0, 1, 2, 3, 3, 5, 6, 7}));

  PabConfig early_first = videosys(R"({"mlp_spatial_broadcast_config": {
      "832": {"block": [0, 1], "skip_count": 2},
      "749": {"block": [1], "skip_count": 1}}})");
  Sources b = run_stand_in(early_first, SiteKind::mlp_spatial, 2, kSchedule);
  EXPECT_EQ(b[0], (std::vector<int>{0, 1, 2, 2, 2, 5, 6, 7}));
  // block 1 computes at 749 (its own entry) yet reuses 832's output at 666
  EXPECT_EQ(b[1], (std::vector<int>{0, 1, 2, 3, 2, 5, 6, 7}));
}

TEST(PabMlpStandIn, IntegerTimestepsAndAbsentEntries) {
  // Fractional timesteps are truncated, both the current one and the
  // schedule's, as the original's Open-Sora sampler passes them.
  std::vector<double> frac = {999.7, 832.9, 749.2, 666.0};
  PabConfig c = videosys(R"({"mlp_spatial_broadcast_config": {
      "832": {"block": [0], "skip_count": 1},
      "123": {"block": [0], "skip_count": 1}}})");
  EXPECT_EQ(run_stand_in(c, SiteKind::mlp_spatial, 1, frac)[0], (std::vector<int>{0, 1, 1, 3}));
  // A timestep the schedule does not reach never computes-and-keeps.
  size_t kept = 1;
  EXPECT_EQ(run_stand_in(videosys(R"({"mlp_spatial_broadcast_config": {"500": {"block": [0], "skip_count": 1}}})"),
                         SiteKind::mlp_spatial, 1, kSchedule, &kept)[0],
            identity(8));
  EXPECT_EQ(kept, 0u);
}

// ---------------------------------------------------------------- Latte

const std::string kLatte = "fixtures/transformer/latte";

// A test policy that counts nothing itself and holds nothing across steps;
// block and step sites compute (or go to `inner`).
class TestPolicy : public CachePolicy {
 public:
  explicit TestPolicy(CachePolicy* inner = nullptr) : inner_(inner) {}
  std::string name() const override { return "test"; }
  std::string describe() const override { return "test"; }
  void reset(std::vector<double> timesteps, int steps) override {
    if (inner_) inner_->reset(std::move(timesteps), steps);
  }
  std::vector<SiteKind> held_kinds() const override { return {}; }
  const CacheStats& stats() const override { return stats_; }
  int step = 0;

 protected:
  CachePolicy* inner_;

 private:
  void on_begin_step(const StepContext& s) override {
    step = s.step;
    if (inner_) inner_->begin_step(s);
  }
  SiteOutput on_site(const SiteCall& call, const SiteCompute& compute) override {
    if (!is_layer_site(call.id.kind)) return inner_ ? inner_->run_call(call, compute) : compute();
    return layer_site(call, compute);
  }
  virtual SiteOutput layer_site(const SiteCall& call, const SiteCompute& compute) = 0;
  CacheStats stats_;
};

// Forwards to `inner` (or computes) and records, per step, kind and block,
// whether the call computed.
class Recorder final : public TestPolicy {
 public:
  explicit Recorder(CachePolicy* inner) : TestPolicy(inner) {}
  std::map<std::tuple<int, int, int>, bool> computed;  // (step, kind, block)

 private:
  SiteOutput layer_site(const SiteCall& call, const SiteCompute& compute) override {
    bool ran = false;
    auto counted = [&] {
      ran = true;
      return compute();
    };
    SiteOutput out = inner_ ? inner_->run_call(call, counted) : counted();
    computed[{step, int(call.id.kind), call.id.block}] = ran;
    return out;
  }
};

// The reconstruction: reuses, at the listed (kind, step, block), the output
// that the site computed at the given earlier step; computes everything else.
class Manual final : public TestPolicy {
 public:
  std::map<std::tuple<int, int, int>, int> reuse_from;  // (kind, step, block) -> source step

 private:
  SiteOutput layer_site(const SiteCall& call, const SiteCompute& compute) override {
    const SiteId id = call.id;
    auto it = reuse_from.find({int(id.kind), step, id.block});
    if (it != reuse_from.end()) return kept_.at({int(id.kind), it->second, id.block});
    SiteOutput out = compute();
    kept_[{int(id.kind), step, id.block}] = out;
    return out;
  }
  std::map<std::tuple<int, int, int>, SiteOutput> kept_;
};

// The case's loop with a policy that is told the schedule and the step.
std::vector<Tensor> replay_with(DiffusionTransformer& model, const ReplayCase& c, CachePolicy& policy) {
  policy.reset(c.timesteps);
  std::vector<Tensor> outs;
  Tensor x = c.latents0;
  for (size_t i = 0; i < c.timesteps.size(); ++i) {
    const StepContext step{int(i), c.timesteps[i], CfgBranch::both};
    policy.begin_step(step);
    TransformerInputs in;
    in.latents = ops::concat({x, x}, 0);
    in.text = c.text;
    in.timestep = c.timesteps[i];
    Tensor out = forward_step(model, in, &policy, step);
    outs.push_back(out);
    Tensor eps = ops::slice(out, 1, 0, model.in_channels());
    Tensor uncond = eps.narrow0(0, 1), cond = eps.narrow0(1, 1);
    Tensor guided = ops::add(uncond, ops::scale(ops::sub(cond, uncond), float(c.guidance)));
    x = ops::sub(x, ops::scale(guided, float(c.step_size)));
  }
  return outs;
}

void expect_equal_runs(const std::vector<Tensor>& a, const std::vector<Tensor>& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(testing::compare(a[i], b[i]).max_abs, 0.0) << what << " step " << i;
}

TEST(PabMlpLatte, BroadcastEqualsManualReconstruction) {
  ReplayCase c = load_replay_case(data_path(kLatte));
  auto model = load_transformer(data_path(kLatte + "/transformer"));
  // steps: 999 916 832 749 666 582 499 ...; 832 = step 2, 666 = step 4
  PabConfig cfg = videosys(R"({"mlp_broadcast": true,
      "mlp_spatial_broadcast_config": {"832": {"block": [0, 2], "skip_count": 2}},
      "mlp_temporal_broadcast_config": {"666": {"block": [1], "skip_count": 1}}})");
  ASSERT_NO_THROW(cfg.validate(model->site_layout()));

  PabPolicy policy(cfg);
  Recorder rec(&policy);
  std::vector<Tensor> pab = replay_with(*model, c, rec);

  // which calls computed
  const int ms = int(SiteKind::mlp_spatial), mt = int(SiteKind::mlp_temporal);
  std::set<std::tuple<int, int, int>> reused = {{3, ms, 0}, {4, ms, 0}, {3, ms, 2}, {4, ms, 2}, {5, mt, 1}};
  int calls = 0;
  for (const auto& [key, ran] : rec.computed) {
    EXPECT_EQ(ran, reused.count(key) == 0)
        << "step " << std::get<0>(key) << " " << site_kind_name(SiteKind(std::get<1>(key))) << " block "
        << std::get<2>(key);
    ++calls;
  }
  EXPECT_EQ(calls, 12 * 3 * 5);  // steps x blocks x (spatial, temporal, cross, two MLPs)
  EXPECT_EQ(policy.stats().total(SiteKind::mlp_spatial).reused, 4);
  EXPECT_EQ(policy.stats().total(SiteKind::mlp_temporal).reused, 1);

  Manual manual;
  manual.reuse_from = {{{ms, 3, 0}, 2}, {{ms, 4, 0}, 2}, {{ms, 3, 2}, 2}, {{ms, 4, 2}, 2}, {{mt, 5, 1}, 4}};
  expect_equal_runs(pab, replay_with(*model, c, manual), "manual");

  // The test can fail: without the broadcast the outputs differ from step 3 on.
  Recorder plain(nullptr);
  std::vector<Tensor> nopab = replay_with(*model, c, plain);
  for (size_t i = 0; i < nopab.size(); ++i) {
    double diff = testing::compare(pab[i], nopab[i]).max_abs;
    if (i < 3) {
      EXPECT_EQ(diff, 0.0) << "step " << i;
    } else {
      EXPECT_GT(diff, 1e-6) << "step " << i;
    }
  }
}

// spatial_block: broadcast only in the listed blocks (VideoSys: [first, last], both included).
TEST(PabMlpLatte, SpatialBlockSpanEqualsManualReconstruction) {
  ReplayCase c = load_replay_case(data_path(kLatte));
  auto model = load_transformer(data_path(kLatte + "/transformer"));
  PabConfig cfg = videosys(R"({"spatial_range": 2, "spatial_threshold": [100, 800], "spatial_block": [1, 2]})");
  EXPECT_EQ(cfg.rule(SiteKind::spatial).blocks, (std::vector<int>{1, 2}));

  PabPolicy policy(cfg);
  Recorder rec(&policy);
  std::vector<Tensor> pab = replay_with(*model, c, rec);
  // In the window (steps 3..10: 749 .. 166) every odd call reuses the previous step's output.
  const int sp = int(SiteKind::spatial);
  Manual manual;
  for (int step : {3, 5, 7, 9})
    for (int b : {1, 2}) manual.reuse_from[{sp, step, b}] = step - 1;
  for (const auto& [key, ran] : rec.computed) {
    auto [step, kind, block] = key;
    EXPECT_EQ(ran, manual.reuse_from.count({kind, step, block}) == 0) << "step " << step << " block " << block;
  }
  EXPECT_EQ(policy.stats().total(SiteKind::spatial).reused, 8);
  expect_equal_runs(pab, replay_with(*model, c, manual), "manual");

  // Without the span every block broadcasts: a different result.
  cfg.rule(SiteKind::spatial).blocks.clear();
  PabPolicy all(cfg);
  Recorder rec_all(&all);
  std::vector<Tensor> every = replay_with(*model, c, rec_all);
  EXPECT_EQ(all.stats().total(SiteKind::spatial).reused, 12);
  EXPECT_GT(testing::compare(every.back(), pab.back()).max_abs, 1e-6);
}

}  // namespace
}  // namespace pab
