// The cache contract (cache/site.h) as a method that no model knows of sees
// it: every site of every fixture transformer, with its kind, block, step,
// timestep, CFG branch and input; block and step sites that a policy can
// reuse whole; cache methods chosen by name.

#include <map>
#include <set>
#include <tuple>

#include "backend/ops.h"
#include "cache/cache_method.h"
#include "cache/pab.h"
#include "pipeline/replay.h"
#include "support/testing.h"

namespace pab {
namespace {

using testing::data_path;

// Records every call; reuses, at the steps listed in `reuse_at`, the output
// the same (kind, block) site computed at the previous step.
class Probe final : public CachePolicy {
 public:
  struct Call {
    SiteCall call;
    Shape input;   // the first input tensor's shape (empty without input)
    Shape output;  // the first output tensor's shape
    bool computed = true;
  };
  std::vector<Call> calls;
  std::set<std::pair<int, SiteKind>> reuse_at;  // (step, kind): every such site reuses
  int steps_begun = 0;

  std::string name() const override { return "probe"; }
  std::string describe() const override { return "probe"; }
  void reset(std::vector<double>, int) override { kept_.clear(); }
  std::vector<SiteKind> held_kinds() const override { return {}; }
  const CacheStats& stats() const override { return stats_; }

 private:
  void on_begin_step(const StepContext&) override { ++steps_begun; }
  SiteOutput on_site(const SiteCall& call, const SiteCompute& compute) override {
    // Recorded in the order the calls begin (an outer site before its inner ones).
    const size_t at = calls.size();
    calls.push_back({call, {}, {}, true});
    if (!call.input->empty() && call.input->at(0).defined()) calls[at].input = call.input->at(0).shape();
    const std::pair<int, int> key{int(call.id.kind), call.id.block};
    SiteOutput out;
    if (reuse_at.count({call.step.step, call.id.kind}) && kept_.count(key)) {
      out = kept_.at(key);
      calls[at].computed = false;
    } else {
      out = compute();
      kept_[key] = out;
    }
    calls[at].output = out.at(0).shape();
    return out;
  }
  std::map<std::pair<int, int>, SiteOutput> kept_;
  CacheStats stats_;
};

const char* kCases[] = {"fixtures/transformer/latte", "fixtures/transformer/cogvideox_2b_style",
                        "fixtures/videosys/open_sora", "fixtures/videosys/open_sora_plan_v110",
                        "fixtures/videosys/open_sora_plan_v120"};

// Each case's loop, two steps, with a probe.
struct Probed {
  ReplayCase c;
  std::unique_ptr<DiffusionTransformer> model;
  ReplayRun run;
};
Probed probe_case(const std::string& rel, Probe& probe, int steps = 2) {
  Probed p{load_replay_case(data_path(rel)), nullptr, {}};
  p.c.timesteps.resize(size_t(steps));
  p.model = load_transformer(data_path(rel + "/transformer"));
  p.run = run_replay(*p.model, p.c, &probe);
  return p;
}

class EverySite : public ::testing::TestWithParam<const char*> {};

TEST_P(EverySite, KindBlockStepTimestepBranchAndInputReachThePolicy) {
  Probe probe;
  Probed p = probe_case(GetParam(), probe);
  const SiteLayout layout = p.model->site_layout();
  ASSERT_EQ(layout.blocks(SiteKind::step), 1);
  ASSERT_GT(layout.blocks(SiteKind::block), 0);
  EXPECT_EQ(probe.steps_begun, 2);

  // Per step: one step site first (its input the batched latents), then each
  // kind's blocks exactly once, all with the step's context.
  std::map<std::pair<int, SiteKind>, std::set<int>> seen;
  for (const Probe::Call& c : probe.calls) {
    const int step = c.call.step.step;
    ASSERT_TRUE(step == 0 || step == 1);
    EXPECT_EQ(c.call.step.timestep, p.c.timesteps[size_t(step)]);
    EXPECT_EQ(c.call.step.branch, CfgBranch::both);
    EXPECT_FALSE(c.input.empty()) << site_kind_name(c.call.id.kind) << " has no input";
    const bool first_time = seen[std::pair{step, c.call.id.kind}].insert(c.call.id.block).second;
    EXPECT_TRUE(first_time)
        << site_kind_name(c.call.id.kind) << " block " << c.call.id.block << " ran twice in step " << step;
  }
  for (int step : {0, 1})
    for (const auto& [kind, blocks] : layout.kinds) {
      std::set<int> want;
      for (int b = 0; b < blocks; ++b) want.insert(b);
      const std::set<int>& got = seen[std::pair{step, kind}];
      EXPECT_EQ(got, want) << site_kind_name(kind) << " at step " << step;
    }

  Shape batched = p.c.latents0.shape();
  batched[0] = 2;
  const Probe::Call& first = probe.calls.front();
  EXPECT_EQ(first.call.id.kind, SiteKind::step);
  EXPECT_EQ(first.input, batched);
  // The step site's output is the model's; a block site's output has its input's shape.
  EXPECT_EQ(first.output, p.run.outputs[0].shape());
  for (const Probe::Call& c : probe.calls) {
    if (c.call.id.kind != SiteKind::block) continue;
    EXPECT_EQ(c.output, c.input) << "block " << c.call.id.block;
  }
}

// A step site reused whole skips every site inside it, and the pass returns
// the reused output; the same for block sites, whose inner sites are skipped.
TEST_P(EverySite, AReusedOuterSiteSkipsTheSitesInside) {
  Probe probe;
  probe.reuse_at = {{1, SiteKind::step}};
  Probed p = probe_case(GetParam(), probe);
  EXPECT_EQ(testing::compare(p.run.outputs[1], p.run.outputs[0]).max_abs, 0.0);
  int inner_at_1 = 0;
  for (const Probe::Call& c : probe.calls) inner_at_1 += c.call.step.step == 1;
  EXPECT_EQ(inner_at_1, 1) << "only the step site runs at step 1";

  Probe blocks;
  blocks.reuse_at = {{1, SiteKind::block}};
  Probed q = probe_case(GetParam(), blocks);
  for (const Probe::Call& c : blocks.calls) {
    if (c.call.step.step != 1) continue;
    EXPECT_TRUE(c.call.id.kind == SiteKind::step || c.call.id.kind == SiteKind::block);
  }
  // The test can fail: the second pass differs from the first when it computes.
  Probe none;
  Probed r = probe_case(GetParam(), none);
  EXPECT_GT(testing::compare(r.run.outputs[1], r.run.outputs[0]).max_abs, 0.0);
}

INSTANTIATE_TEST_SUITE_P(Cases, EverySite, ::testing::ValuesIn(kCases));

// PAB on the contract: block and step sites always compute and are not counted.
TEST(CacheContract, PabLeavesBlockAndStepSitesAlone) {
  const std::string rel = "fixtures/transformer/latte";
  ReplayCase c = load_replay_case(data_path(rel));
  auto model = load_transformer(data_path(rel + "/transformer"));
  PabPolicy pab(c.pab);
  ReplayRun run = run_replay(*model, c, &pab);
  EXPECT_GT(run.stats.total().reused, 0);
  EXPECT_EQ(run.stats.total(SiteKind::block).computed + run.stats.total(SiteKind::block).reused, 0);
  EXPECT_EQ(run.stats.total(SiteKind::step).computed + run.stats.total(SiteKind::step).reused, 0);
  EXPECT_EQ(pab.held_kinds(), (std::vector<SiteKind>{SiteKind::spatial, SiteKind::temporal, SiteKind::cross}));
}

TEST(CacheMethods, ChosenByNameAndCheckedAgainstTheSites) {
  const SiteLayout latte{{{SiteKind::spatial, 3},
                          {SiteKind::temporal, 3},
                          {SiteKind::cross, 3},
                          {SiteKind::block, 6},
                          {SiteKind::step, 1}}};
  const SiteLayout no_cross{{{SiteKind::spatial, 3}, {SiteKind::block, 3}, {SiteKind::step, 1}}};
  CacheChoice choice;
  std::string note;
  auto pab = make_cache_policy(choice, "LatteTransformer3DModel", latte, &note);
  ASSERT_TRUE(pab);
  EXPECT_EQ(pab->name(), "pab");
  EXPECT_TRUE(note.empty()) << note;

  // A model without published settings: off, with a one-line note naming it.
  EXPECT_FALSE(make_cache_policy(choice, "SomeNewTransformer", latte, &note));
  EXPECT_NE(note.find("SomeNewTransformer"), std::string::npos) << note;
  EXPECT_EQ(note.find('\n'), std::string::npos);
  // ... but a given setting is checked against the sites, before any work.
  choice.preset = "cross=2@100-800";
  try {
    make_cache_policy(choice, "SomeNewTransformer", no_cross);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cross"), std::string::npos) << e.what();
  }
  choice.preset = "off";
  EXPECT_FALSE(make_cache_policy(choice, "LatteTransformer3DModel", latte));

  choice.method = "teacache";
  try {
    make_cache_policy(choice, "LatteTransformer3DModel", latte);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unsupported cache method 'teacache' (supported: pab"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace pab
