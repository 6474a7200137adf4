// PAB policy semantics: which calls compute and which broadcast, per counting
// rule; reset; cache release; validation. Expected patterns are derived by
// hand from the counting rules of docs/pab-config.md (diffusers) and VideoSys' pab_mgr.py.
#include <map>

#include "backend/ops.h"
#include "cache/pab.h"
#include "pipeline/replay.h"
#include "support/testing.h"

namespace pab {
namespace {

using testing::data_path;

const std::vector<double> kSchedule = {999, 899, 799, 699, 599, 499, 399, 299, 199, 99};

PabConfig spatial(int range, double lo, double hi, Counting counting = Counting::diffusers) {
  PabConfig c;
  c.counting = counting;
  c.rule(SiteKind::spatial) = BroadcastRule{range, lo, hi, {}};
  return c;
}

// Drives `policy` over `schedule` with `blocks` sites of `kind` per step; each
// computed output holds (step * 100 + block). Returns, per block, a string of
// C (computed) / B (broadcast), and checks that a broadcast returns the last
// computed output of that site.
std::map<int, std::string> drive(PabPolicy& policy, const std::vector<double>& schedule, SiteKind kind, int blocks,
                                 bool reset = true) {
  if (reset) policy.reset(schedule);
  std::map<int, std::string> pattern;
  std::map<int, float> last;
  for (size_t i = 0; i < schedule.size(); ++i) {
    policy.begin_step(int(i), schedule[i]);
    for (int b = 0; b < blocks; ++b) {
      bool computed = false;
      float value = float(i * 100 + size_t(b));
      SiteOutput out = policy.run({kind, b}, [&] {
        computed = true;
        return SiteOutput{Tensor::from_vector({value}, {1})};
      });
      pattern[b] += computed ? 'C' : 'B';
      float got = out.at(0).f32()[0];
      EXPECT_EQ(got, computed ? value : last[b]) << "step " << i << " block " << b;
      last[b] = got;
    }
  }
  return pattern;
}

TEST(PabPolicy, DiffusersRuleRange2) {
  PabPolicy p(spatial(2, 100, 800));
  // counts 0..9: 0 computes; 899 is outside (100, 800); then even counts compute; 99 is outside.
  auto pat = drive(p, kSchedule, SiteKind::spatial, 3);
  for (int b = 0; b < 3; ++b) EXPECT_EQ(pat[b], "CCCBCBCBCC");
  EXPECT_EQ(p.stats().total(SiteKind::spatial).computed, 21);
  EXPECT_EQ(p.stats().total(SiteKind::spatial).reused, 9);
  EXPECT_EQ(p.stats().per_step[3][size_t(SiteKind::spatial)].reused, 3);
}

TEST(PabPolicy, DiffusersRuleRange3WiderWindow) {
  PabPolicy p(spatial(3, 100, 900));
  // 999 outside; 899 inside with count 1; counts 3 and 6 compute; 99 outside.
  EXPECT_EQ(drive(p, kSchedule, SiteKind::spatial, 1)[0], "CBBCBBCBBC");
}

TEST(PabPolicy, WindowIsOpen) {
  PabPolicy p(spatial(2, 800, 900));
  // only 899 lies strictly inside (800, 900); its count is 1 -> broadcast; 799 < 800 computes
  EXPECT_EQ(drive(p, {999, 899, 800, 799}, SiteKind::spatial, 1)[0], "CBCC");
}

TEST(PabPolicy, KindsCountIndependentlyAndOthersAlwaysCompute) {
  PabConfig c = spatial(2, 100, 800);
  c.rule(SiteKind::cross) = BroadcastRule{3, 100, 800, {}};
  PabPolicy p(c);
  p.reset(kSchedule);
  std::string s, x, t;
  for (size_t i = 0; i < kSchedule.size(); ++i) {
    p.begin_step(int(i), kSchedule[i]);
    for (auto [kind, str] : {std::pair{SiteKind::spatial, &s}, {SiteKind::cross, &x}, {SiteKind::temporal, &t}}) {
      bool computed = false;
      p.run({kind, 0}, [&] {
        computed = true;
        return SiteOutput{Tensor::scalar(1)};
      });
      *str += computed ? 'C' : 'B';
    }
  }
  EXPECT_EQ(s, "CCCBCBCBCC");
  EXPECT_EQ(x, "CCBCBBCBBC");  // counts 3 and 6 compute
  EXPECT_EQ(t, "CCCCCCCCCC");  // no temporal rule configured
}

TEST(PabPolicy, BlockRestriction) {
  PabConfig c = spatial(2, 100, 800);
  c.rule(SiteKind::spatial).blocks = {1};
  PabPolicy p(c);
  auto pat = drive(p, kSchedule, SiteKind::spatial, 2);
  EXPECT_EQ(pat[0], "CCCCCCCCCC");
  EXPECT_EQ(pat[1], "CCCBCBCBCC");
}

TEST(PabPolicy, VideosysTruncatesTimesteps) {
  // 100.5: inside (100, 800) for diffusers, int(100.5) = 100 is not for VideoSys.
  const std::vector<double> sched = {999, 700.5, 600.2, 100.5};
  PabPolicy d(spatial(2, 100, 800));
  EXPECT_EQ(drive(d, sched, SiteKind::spatial, 1)[0], "CBCB");
  PabPolicy v(spatial(2, 100, 800, Counting::videosys));
  EXPECT_EQ(drive(v, sched, SiteKind::spatial, 1)[0], "CBCC");
}

TEST(PabPolicy, VideosysCountsWrapAtTheNumberOfSteps) {
  const std::vector<double> sched = {700, 600, 500};
  PabPolicy v(spatial(2, 100, 800, Counting::videosys));
  EXPECT_EQ(drive(v, sched, SiteKind::spatial, 1)[0], "CBC");
  // Without a reset the wrapped count starts again at 0.
  EXPECT_EQ(drive(v, sched, SiteKind::spatial, 1, /*reset=*/false)[0], "CBC");
  // A reset gives the first pattern back (diffusers counting).
  PabPolicy d(spatial(2, 100, 800));
  EXPECT_EQ(drive(d, sched, SiteKind::spatial, 1)[0], "CBC");
  EXPECT_EQ(drive(d, sched, SiteKind::spatial, 1)[0], "CBC");
}

TEST(PabPolicy, CachesAreFreedWhenNoLaterStepReuses) {
  PabPolicy p(spatial(2, 100, 800));
  p.reset(kSchedule);
  std::vector<size_t> held;
  for (size_t i = 0; i < kSchedule.size(); ++i) {
    p.begin_step(int(i), kSchedule[i]);
    for (int b = 0; b < 2; ++b) p.run({SiteKind::spatial, b}, [] { return SiteOutput{Tensor::zeros({256})}; });
    held.push_back(p.cached_bytes());
  }
  // Kept only after steps whose next step broadcasts: pattern CCCBCBCBCC ->
  // steps 2, 4, 6 hold (next is B); 3, 5, 7 broadcast and the next computes.
  const size_t two = 2 * 256 * sizeof(float);
  EXPECT_EQ(held, (std::vector<size_t>{0, 0, two, 0, two, 0, two, 0, 0, 0}));
  EXPECT_EQ(p.stats().peak_cached_bytes, two);

  // Without a schedule the policy cannot know and keeps the last output.
  PabPolicy q(spatial(2, 100, 800));
  q.reset();
  for (size_t i = 0; i < kSchedule.size(); ++i) {
    q.begin_step(int(i), kSchedule[i]);
    q.run({SiteKind::spatial, 0}, [] { return SiteOutput{Tensor::zeros({256})}; });
  }
  EXPECT_EQ(q.cached_bytes(), 256 * sizeof(float));
}

TEST(PabConfig, ValidationErrors) {
  const SiteLayout cog{{{SiteKind::spatial, 30}}};
  EXPECT_NO_THROW(spatial(2, 100, 800).validate(cog));
  EXPECT_THROW(spatial(-1, 100, 800).validate(cog), Error);
  EXPECT_THROW(spatial(2, 800, 100).validate(cog), Error);
  EXPECT_THROW(spatial(2, 500, 500).validate(cog), Error);
  EXPECT_THROW(spatial(2, -5, 800).validate(cog), Error);
  EXPECT_THROW(spatial(2, 100, 1200).validate(cog), Error);
  PabConfig t;
  t.rule(SiteKind::temporal) = BroadcastRule{3, 100, 800, {}};
  try {
    t.validate(cog);
    FAIL() << "temporal broadcast accepted for a model without temporal attention";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("temporal"), std::string::npos);
  }
}

// On the real model: reset between generations, and an empty window.
class PabOnCogVideoX : public ::testing::Test {
 protected:
  void SetUp() override {
    c_ = load_replay_case(data_path("fixtures/transformer/cogvideox_2b_style"));
    model_ = load_transformer(c_.dir + "/transformer");
  }
  ReplayCase c_;
  std::unique_ptr<DiffusionTransformer> model_;
};

TEST_F(PabOnCogVideoX, ResetBetweenGenerationsGivesIdenticalResults) {
  PabPolicy p(c_.pab);
  ReplayRun a = run_replay(*model_, c_, &p);
  ReplayRun b = run_replay(*model_, c_, &p);  // run_replay resets the policy
  EXPECT_EQ(testing::compare(a.latents, b.latents).max_abs, 0.0);
  EXPECT_EQ(a.stats.summary(), b.stats.summary());
  EXPECT_GT(a.stats.total(SiteKind::spatial).reused, 0);
}

TEST_F(PabOnCogVideoX, EmptyWindowEqualsNoPab) {
  PabPolicy p(spatial(2, 900, 950));  // no step of the schedule lies in (900, 950)
  ReplayRun with = run_replay(*model_, c_, &p);
  ReplayRun without = run_replay(*model_, c_, nullptr);
  EXPECT_EQ(testing::compare(with.latents, without.latents).max_abs, 0.0);
  EXPECT_EQ(with.stats.total(SiteKind::spatial).reused, 0);
  // and a window that does hold steps changes the result
  PabPolicy q(spatial(2, 100, 800));
  EXPECT_GT(testing::compare(run_replay(*model_, c_, &q).latents, without.latents).max_abs, 0.0);
}

}  // namespace
}  // namespace pab
