// PAB calibration: the change recorder against hand-computed changes, the
// deviation bound and cost model by hand, the proposal against a brute-force
// search, and a whole calibration of the Latte fixture case (every site and
// step in the CSV, a valid proposal whose predicted count-based speed-up is
// what the policy then does), with its plots decoded.
#include <png.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "cache/calibration.h"
#include "cache/pab_config.h"
#include "pipeline/calibrate.h"
#include "pipeline/pab_report.h"
#include "support/testing.h"

namespace pab {
namespace {

namespace fs = std::filesystem;
using testing::data_path;

const double kNaN = std::numeric_limits<double>::quiet_NaN();

std::string latte_case() {
  return data_path("fixtures/transformer/latte");
}

fs::path temp_dir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("pab_test_calibration_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

// A fixed cost model, so that proposals do not depend on the machine's timing.
CostModel fixed_cost() {
  CostModel c;
  c.fraction[size_t(SiteKind::spatial)] = 0.2;
  c.fraction[size_t(SiteKind::temporal)] = 0.15;
  c.fraction[size_t(SiteKind::cross)] = 0.1;
  c.source = "fixed for the test";
  return c;
}

// ---------------------------------------------------------------- recorder

// A site whose output at step s is the constant vector (s + 1): its change
// from step s-1 is |1| / |s| = 1 / s exactly (any length).
SiteOutput constant_output(int step) {
  return {Tensor::from_vector(std::vector<float>(6, float(step + 1)), {2, 3})};
}

TEST(ChangeRecorder, RecordsRelativeChangeFromThePreviousStep) {
  ChangeRecorder rec;
  const std::vector<double> schedule = {900, 600, 300, 100};
  rec.reset(schedule);
  for (int s = 0; s < 4; ++s) {
    rec.begin_step(s, schedule[size_t(s)]);
    for (int b = 0; b < 2; ++b) rec.run({SiteKind::spatial, b}, [&] { return constant_output(s + b); });
  }
  ASSERT_EQ(rec.calls().size(), 8u);
  for (const RecordedCall& c : rec.calls()) {
    EXPECT_EQ(c.timestep, schedule[size_t(c.step)]);
    EXPECT_TRUE(c.computed);
    EXPECT_GE(c.seconds, 0);
    if (c.step == 0) {
      EXPECT_TRUE(std::isnan(c.change));
    } else {
      // block b's output at step s is (s + b + 1): change 1 / (s + b)
      EXPECT_NEAR(c.change, 1.0 / (c.step + c.site.block), 1e-7) << c.step << " " << c.site.block;
    }
  }
  EXPECT_EQ(rec.schedule(), schedule);
  // reset (as a loop does on exit) forgets the outputs, not the measurements
  rec.reset();
  EXPECT_EQ(rec.calls().size(), 8u);
  EXPECT_EQ(rec.schedule(), schedule);
  rec.clear();
  EXPECT_TRUE(rec.calls().empty());
}

TEST(ChangeRecorder, SeveralCallsPerStepCompareWithTheirOwnPrevious) {
  // Guidance as two passes: the n-th call of a step against the n-th call of the previous.
  ChangeRecorder rec;
  rec.reset({2, 1});
  for (int s = 0; s < 2; ++s) {
    rec.begin_step(s, 2 - s);
    rec.run({SiteKind::cross, 0}, [&] { return constant_output(10 * s); });        // 1 then 11
    rec.run({SiteKind::cross, 0}, [&] { return constant_output(100 + 10 * s); });  // 101 then 111
  }
  ASSERT_EQ(rec.calls().size(), 4u);
  EXPECT_NEAR(rec.calls()[2].change, 10.0 / 1.0, 1e-6);
  EXPECT_NEAR(rec.calls()[3].change, 10.0 / 101.0, 1e-7);
}

TEST(ChangeRecorder, WrapsAPolicy) {
  PabConfig config;
  config.rule(SiteKind::spatial) = BroadcastRule{2, 0, 1000, {}};
  PabPolicy policy(config);
  ChangeRecorder rec(Device::cpu, &policy);
  const std::vector<double> schedule = {900, 700, 500, 300};
  rec.reset(schedule);
  int computed = 0;
  for (int s = 0; s < 4; ++s) {
    rec.begin_step(s, schedule[size_t(s)]);
    rec.run({SiteKind::spatial, 0}, [&] {
      ++computed;
      return constant_output(s);
    });
  }
  // diffusers counting, range 2: C B C B; a broadcast repeats the output (change 0)
  EXPECT_EQ(computed, 2);
  EXPECT_EQ(policy.stats().total(SiteKind::spatial).reused, 2);
  const auto& calls = rec.calls();
  EXPECT_TRUE(calls[0].computed && !calls[1].computed && calls[2].computed && !calls[3].computed);
  EXPECT_EQ(calls[1].change, 0);
  EXPECT_EQ(calls[1].seconds, 0);
  EXPECT_NEAR(calls[2].change, 2.0, 1e-7);  // output 3 after the reused 1
  EXPECT_EQ(calls[3].change, 0);
}

// ---------------------------------------------------------------- model

// One kind, one block, changes given per step.
ChangeTable one_site_table(const std::vector<double>& timesteps, const std::vector<double>& changes) {
  ChangeTable t;
  t.timesteps = timesteps;
  ChangeTable::Kind k;
  k.kind = SiteKind::spatial;
  k.change = {changes};
  t.kinds = {k};
  return t;
}

TEST(Calibration, DeviationIsTheChainBoundOverBroadcasts) {
  const double a = 0.1, b = 0.02, c = 0.3, d = 0.05;
  ChangeTable t = one_site_table({900, 700, 500, 300, 100}, {kNaN, a, b, c, d});
  PabConfig config;
  config.rule(SiteKind::spatial) = BroadcastRule{3, 0, 1000, {}};
  // diffusers counting, range 3: C B B C B. Reuses: step 1 carries a, step 2 a + b, step 4 d.
  PabPrediction p = predict_pab(config, t, fixed_cost());
  EXPECT_NEAR(p.deviation, (a + (a + b) + d) / 5, 1e-15);
  // 3 of 5 spatial calls broadcast at a spatial cost of 0.2 of the loop
  EXPECT_NEAR(p.speedup, 1 / (1 - 0.2 * 3 / 5), 1e-12);
  EXPECT_EQ(p.stats.decisions.size(), 5u);
}

TEST(Calibration, CostModelSpeedupByHand) {
  CacheStats s;
  s.per_step.resize(1);
  s.per_step[0][size_t(SiteKind::spatial)] = {6, 4};  // 40% broadcast
  s.per_step[0][size_t(SiteKind::cross)] = {2, 8};    // 80% broadcast
  s.per_step[0][size_t(SiteKind::mlp_spatial)] = {10, 0};
  EXPECT_NEAR(fixed_cost().speedup(s), 1 / (1 - 0.2 * 0.4 - 0.1 * 0.8), 1e-12);
  // measured fractions: 1 s of spatial and 0.5 s of cross in a 4 s loop of which 0.5 s was overhead
  std::vector<RecordedCall> calls(3);
  calls[0].seconds = 0.6;
  calls[1].seconds = 0.4;
  calls[2].site.kind = SiteKind::cross;
  calls[2].seconds = 0.5;
  CostModel m = measure_cost(calls, 4.0, 0.5, "test");
  EXPECT_NEAR(m.fraction[size_t(SiteKind::spatial)], 1.0 / 3.5, 1e-12);
  EXPECT_NEAR(m.fraction[size_t(SiteKind::cross)], 0.5 / 3.5, 1e-12);
}

// A synthetic U-shaped table: two kinds, two blocks, eight steps.
ChangeTable u_table() {
  ChangeTable t;
  t.timesteps = {990, 860, 730, 600, 470, 340, 210, 80};
  const std::vector<double> u = {kNaN, 0.30, 0.12, 0.05, 0.04, 0.06, 0.15, 0.35};
  for (SiteKind kind : {SiteKind::spatial, SiteKind::cross}) {
    ChangeTable::Kind k;
    k.kind = kind;
    for (int b = 0; b < 2; ++b) {
      std::vector<double> row = u;
      for (size_t s = 1; s < row.size(); ++s) row[s] *= (kind == SiteKind::cross ? 0.3 : 1.0) * (1 + 0.1 * b);
      k.change.push_back(row);
    }
    t.kinds.push_back(k);
  }
  return t;
}

TEST(Calibration, ProposalIsTheBruteForceOptimum) {
  const ChangeTable t = u_table();
  const CostModel cost = fixed_cost();
  // Every window over contiguous steps (by their bounds) for every range, both kinds together.
  std::vector<BroadcastRule> rules = {BroadcastRule{}};
  const std::vector<double> cuts = {0, 20, 100, 200, 300, 400, 500, 700, 800, 900, 1000};
  for (int range = 2; range <= 4; ++range)
    for (size_t i = 0; i < cuts.size(); ++i)
      for (size_t j = i + 1; j < cuts.size(); ++j) rules.push_back(BroadcastRule{range, cuts[i], cuts[j], {}});
  std::vector<std::pair<double, double>> predicted;  // (speed-up, deviation) of every pair
  for (const BroadcastRule& s : rules) {
    for (const BroadcastRule& c : rules) {
      PabConfig config;
      config.rule(SiteKind::spatial) = s;
      config.rule(SiteKind::cross) = c;
      PabPrediction p = predict_pab(config, t, cost);
      predicted.push_back({p.speedup, p.deviation});
    }
  }
  for (double target : {1.02, 1.05, 1.1, 1.2}) {
    double best = INFINITY;
    for (const auto& [speedup, deviation] : predicted)
      if (speedup >= target - 1e-12) best = std::min(best, deviation);
    ProposalOptions opts;
    opts.target_speedup = target;
    opts.max_range = 4;
    Proposal prop = propose_pab(t, cost, opts);
    ASSERT_TRUE(prop.reached) << target;
    EXPECT_GE(prop.best.speedup, target - 1e-12);
    // The cuts separate every pair of neighbouring timesteps, so the brute
    // force sees every choice the proposer has.
    EXPECT_NEAR(prop.best.deviation, best, 1e-12) << "target " << target << ": " << prop.best.config.describe();
    EXPECT_NO_THROW(prop.best.config.validate(SiteLayout{{{SiteKind::spatial, 2}, {SiteKind::cross, 2}}}));
  }
}

TEST(Calibration, ProposalForARealSizedModel) {
  // 50 steps, three kinds of 30 blocks with U-shaped changes: the search stays quick.
  ChangeTable t;
  for (int s = 0; s < 50; ++s) t.timesteps.push_back(999 - 20.0 * s);
  for (SiteKind kind : {SiteKind::spatial, SiteKind::temporal, SiteKind::cross}) {
    ChangeTable::Kind k;
    k.kind = kind;
    for (int b = 0; b < 30; ++b) {
      std::vector<double> row = {kNaN};
      for (int s = 1; s < 50; ++s)
        row.push_back(0.02 + 0.3 * std::pow((s - 25) / 25.0, 2) * (1 + 0.01 * b + int(kind)));
      k.change.push_back(row);
    }
    t.kinds.push_back(k);
  }
  ProposalOptions opts;
  opts.target_speedup = 1.25;
  Proposal prop = propose_pab(t, fixed_cost(), opts);
  ASSERT_TRUE(prop.reached);
  EXPECT_GE(prop.best.speedup, 1.25 - 1e-12);
  EXPECT_EQ(prop.best.stats.total().computed + prop.best.stats.total().reused, 3 * 30 * 50);
  // the windows keep out of the steep ends of the U
  for (SiteKind kind : {SiteKind::spatial, SiteKind::temporal, SiteKind::cross}) {
    const BroadcastRule& r = prop.best.config.rule(kind);
    if (!r.enabled()) continue;
    EXPECT_GT(r.lo, 0) << site_kind_name(kind);
    EXPECT_LT(r.hi, 1000) << site_kind_name(kind);
  }
}

TEST(Calibration, UnreachableTargetGivesTheFastestChoice) {
  const ChangeTable t = u_table();
  ProposalOptions opts;
  opts.target_speedup = 3;  // the sites hold 30% of the loop: at most 1 / 0.7
  opts.max_range = 4;
  Proposal prop = propose_pab(t, fixed_cost(), opts);
  EXPECT_FALSE(prop.reached);
  EXPECT_LT(prop.best.speedup, 1 / 0.7);
  // nothing predicts more: range 4 over the whole schedule broadcasts 6 of 8 calls of each kind
  EXPECT_NEAR(prop.best.speedup, 1 / (1 - 0.3 * 6 / 8), 1e-12);
  // a target of 1 needs nothing
  opts.target_speedup = 1;
  EXPECT_FALSE(propose_pab(t, fixed_cost(), opts).best.config.any());
}

// ---------------------------------------------------------------- Latte fixture

struct PngImage {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;
};
PngImage read_png(const std::string& path) {
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  PngImage out;
  if (!png_image_begin_read_from_file(&image, path.c_str())) return out;
  image.format = PNG_FORMAT_RGB;
  out.rgb.resize(PNG_IMAGE_SIZE(image));
  if (!png_image_finish_read(&image, nullptr, out.rgb.data(), 0, nullptr)) return {};
  out.width = int(image.width);
  out.height = int(image.height);
  return out;
}
// Pixels within `tol` of a colour (0..1 components).
int count_colour(const PngImage& img, double r, double g, double b, int tol = 3) {
  int n = 0;
  for (size_t i = 0; i + 2 < img.rgb.size(); i += 3)
    if (std::abs(img.rgb[i] - int(std::lround(r * 255))) <= tol &&
        std::abs(img.rgb[i + 1] - int(std::lround(g * 255))) <= tol &&
        std::abs(img.rgb[i + 2] - int(std::lround(b * 255))) <= tol)
      ++n;
  return n;
}

class LatteCalibration : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    gen_ = new Generation(replay_generation(latte_case(), {}));
    CalibrationOptions opts;
    opts.target_speedup = 1.12;
    opts.cost = fixed_cost();
    opts.verify = true;
    result_ = new CalibrationResult(run_calibration(*gen_, opts));
  }
  static void TearDownTestSuite() {
    delete result_;
    delete gen_;
  }
  static Generation* gen_;
  static CalibrationResult* result_;
};
Generation* LatteCalibration::gen_ = nullptr;
CalibrationResult* LatteCalibration::result_ = nullptr;

TEST_F(LatteCalibration, CsvHasEverySiteAndStep) {
  const CalibrationResult& r = *result_;
  ASSERT_EQ(r.steps, 12);
  fs::path dir = temp_dir("csv");
  write_change_csv((dir / "changes.csv").string(), r.calls);
  std::ifstream in(dir / "changes.csv");
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, "kind,block,step,timestep,rel_l2_change,compute_seconds");
  std::set<std::tuple<std::string, int, int>> seen;
  int rows = 0;
  while (std::getline(in, line)) {
    ++rows;
    std::stringstream ss(line);
    std::string kind, block, step, t, change, secs;
    std::getline(ss, kind, ',');
    std::getline(ss, block, ',');
    std::getline(ss, step, ',');
    std::getline(ss, t, ',');
    std::getline(ss, change, ',');
    std::getline(ss, secs, ',');
    seen.insert({kind, std::stoi(block), std::stoi(step)});
    if (step == "0") {
      EXPECT_TRUE(change.empty()) << line;
    } else {
      EXPECT_GT(std::stod(change), 0) << line;  // random weights: every output moves
    }
  }
  // Latte: 3 blocks of spatial, temporal and cross attention and of both MLPs
  const std::set<std::string> kinds = {"spatial", "temporal", "cross", "mlp_spatial", "mlp_temporal"};
  EXPECT_EQ(rows, 5 * 3 * 12);
  for (const std::string& k : kinds)
    for (int b = 0; b < 3; ++b)
      for (int s = 0; s < 12; ++s) EXPECT_TRUE(seen.count({k, b, s})) << k << " " << b << " " << s;
  fs::remove_all(dir);
}

TEST_F(LatteCalibration, CurvesAreMeansOverBlocks) {
  const ChangeTable& t = result_->table;
  const ChangeTable::Kind* spatial = t.find(SiteKind::spatial);
  ASSERT_NE(spatial, nullptr);
  ASSERT_EQ(spatial->blocks(), 3);
  std::vector<double> curve = spatial->curve();
  EXPECT_TRUE(std::isnan(curve[0]));
  for (int s = 1; s < 12; ++s)
    EXPECT_NEAR(curve[size_t(s)],
                (spatial->change[0][size_t(s)] + spatial->change[1][size_t(s)] + spatial->change[2][size_t(s)]) / 3,
                1e-15);
}

TEST_F(LatteCalibration, ProposalIsValidAndDoesWhatItPredicts) {
  const CalibrationResult& r = *result_;
  ASSERT_TRUE(r.proposal.reached);
  const PabConfig& config = r.proposal.best.config;
  EXPECT_NO_THROW(config.validate(gen_->sites));
  EXPECT_TRUE(config.any());
  EXPECT_GE(r.proposal.best.speedup, 1.12 - 1e-12);
  ASSERT_TRUE(r.verify.has_value());
  const MeasuredRun& m = r.verify->proposal;
  // The model calls each site once per step: the policy decides exactly as predicted.
  EXPECT_DOUBLE_EQ(m.count_speedup, r.proposal.best.speedup);
  ASSERT_EQ(m.stats.per_step.size(), r.proposal.best.stats.per_step.size());
  for (size_t s = 0; s < m.stats.per_step.size(); ++s)
    for (int k = 0; k < kSiteKinds; ++k) {
      EXPECT_EQ(m.stats.per_step[s][size_t(k)].computed, r.proposal.best.stats.per_step[s][size_t(k)].computed);
      EXPECT_EQ(m.stats.per_step[s][size_t(k)].reused, r.proposal.best.stats.per_step[s][size_t(k)].reused);
    }
  // Broadcasting changes the result a little, as the fixture's own PAB run does (2e-3).
  EXPECT_GT(m.latents_rel_l2, 0);
  EXPECT_LT(m.latents_rel_l2, 0.05);
  // Printable in both dialects, and each reads back to the same rules.
  PabConfig short_form = parse_pab_short_form(format_pab_short_form(config));
  EXPECT_EQ(short_form.describe(), config.describe());
  // The published settings are compared, and measured, too.
  ASSERT_FALSE(r.references.empty());
  EXPECT_EQ(r.references[0].first, "published (--pab default)");
  ASSERT_EQ(r.verify->references.size(), r.references.size());
  for (size_t i = 0; i < r.references.size(); ++i)
    EXPECT_DOUBLE_EQ(r.verify->references[i].count_speedup, r.references[i].second.speedup);
}

TEST_F(LatteCalibration, CaseConfigMatchesTheFixturesOwnDeviation) {
  // The fixture's PAB run differs from its full run by 1.765e-3 (case.json,
  // relative L2 of the final latents): verify measures the same run.
  int found = 0;
  for (const MeasuredRun& m : result_->verify->references) {
    if (m.label != "case.json pab") continue;
    ++found;
    EXPECT_NEAR(m.latents_rel_l2, 0.001765211345627904, 2e-6);
  }
  EXPECT_EQ(found, 1);
}

TEST_F(LatteCalibration, PlotsAreReadableImages) {
  const CalibrationResult& r = *result_;
  fs::path dir = temp_dir("plots");
  std::vector<std::string> written = write_calibration_files(r, dir.string());
  ASSERT_EQ(written.size(), 4u);
  for (const std::string& w : written) EXPECT_TRUE(fs::is_regular_file(w)) << w;

  PngImage curves = read_png((dir / "curves.png").string());
  EXPECT_EQ(curves.width, 1120);
  EXPECT_EQ(curves.height, 600);
  // the lines in each kind's colour (spatial blue, temporal orange, cross green)
  EXPECT_GT(count_colour(curves, 0.12, 0.47, 0.71), 100);
  EXPECT_GT(count_colour(curves, 1.00, 0.50, 0.05), 100);
  EXPECT_GT(count_colour(curves, 0.17, 0.63, 0.17), 100);
  // dark text (titles, ticks, labels)
  EXPECT_GT(count_colour(curves, 0.15, 0.15, 0.15, 40), 500);

  PngImage map = read_png((dir / "proposal_map.png").string());
  EXPECT_EQ(map.width, 960);
  // the map's height as write_broadcast_map reports it, for the same stats
  EXPECT_EQ(map.height, write_broadcast_map((dir / "again.png").string(), r.verify->proposal.stats, "again"));
  const int computed_px = count_colour(map, 0.16, 0.33, 0.55), broadcast_px = count_colour(map, 0.98, 0.73, 0.35);
  EXPECT_GT(computed_px, 1000);
  EXPECT_GT(broadcast_px, 1000);
  // areas in proportion to the calls (attention kinds only; MLPs do not broadcast here)
  int computed = 0, broadcast = 0;
  for (SiteKind k : {SiteKind::spatial, SiteKind::temporal, SiteKind::cross}) {
    computed += r.verify->proposal.stats.total(k).computed;
    broadcast += r.verify->proposal.stats.total(k).reused;
  }
  EXPECT_NEAR(double(broadcast_px) / (computed_px + broadcast_px), double(broadcast) / (computed + broadcast), 0.08);

  std::ifstream yaml(dir / "proposal.yaml");
  std::stringstream text;
  text << yaml.rdbuf();
  EXPECT_NE(text.str().find("spatial_attention_block_skip_range"), std::string::npos);
  EXPECT_EQ(load_pab_config_file((dir / "proposal.yaml").string()).describe(), r.proposal.best.config.describe());
  fs::remove_all(dir);
}

TEST_F(LatteCalibration, JsonReport) {
  nlohmann::json j = calibration_json(*result_);
  EXPECT_EQ(j["steps"], 12);
  EXPECT_EQ(j["kinds"]["spatial"]["blocks"], 3);
  EXPECT_EQ(j["kinds"]["spatial"]["mean_change"].size(), 12u);
  EXPECT_TRUE(j["kinds"]["spatial"]["mean_change"][0].is_null());
  EXPECT_TRUE(j["proposal"]["reached"].get<bool>());
  EXPECT_EQ(j["proposal"]["short_form"], format_pab_short_form(result_->proposal.best.config));
  EXPECT_DOUBLE_EQ(j["verify"]["proposal"]["count_speedup"].get<double>(), result_->proposal.best.speedup);
}

// ---------------------------------------------------------------- command line

TEST(CalibrateCommand, WritesFilesAndReportsJson) {
  fs::path dir = temp_dir("cli");
  std::string out;
  int rc = testing::run_command(testing::pab_binary() + " calibrate --case " + latte_case() + " -o " +
                                    (dir / "out").string() + " --target-speedup 1.05 --json",
                                &out);
  ASSERT_EQ(rc, 0) << out;
  nlohmann::json j = nlohmann::json::parse(out);
  EXPECT_TRUE(j["proposal"]["reached"].get<bool>());
  EXPECT_GE(j["proposal"]["speedup"].get<double>(), 1.05 - 1e-12);
  EXPECT_EQ(j["written"].size(), 4u);
  for (const char* f : {"changes.csv", "curves.png", "proposal.yaml", "proposal_map.png"})
    EXPECT_TRUE(fs::is_regular_file(dir / "out" / f)) << f;
  // measured costs: the cost fractions are those of a real loop
  double total = 0;
  for (const auto& [kind, v] : j["kinds"].items()) total += v["cost_fraction"].get<double>();
  EXPECT_GT(total, 0.05);
  EXPECT_LE(total, 1.0 + 1e-9);
  fs::remove_all(dir);
}

TEST(CalibrateCommand, ClearErrors) {
  fs::path dir = temp_dir("cli_err");
  std::string out;
  const std::string pab = testing::pab_binary();
  // out of reach: still writes the files and prints the report, exits 1
  EXPECT_NE(testing::run_command(
                pab + " calibrate --case " + latte_case() + " -o " + dir.string() + " --target-speedup 50", &out),
            0);
  EXPECT_NE(out.find("out of reach"), std::string::npos) << out;
  EXPECT_TRUE(fs::is_regular_file(dir / "curves.png"));
  EXPECT_NE(testing::run_command(pab + " calibrate -o " + dir.string(), &out), 0);
  EXPECT_NE(out.find("--case"), std::string::npos) << out;
  EXPECT_NE(testing::run_command(pab + " calibrate --case " + latte_case() + " --target-speedup 0.5", &out), 0);
  EXPECT_NE(out.find(">= 1"), std::string::npos) << out;
  EXPECT_NE(testing::run_command(pab + " calibrate --model /nonexistent -o " + dir.string(), &out), 0);
  EXPECT_NE(out.find("--prompt"), std::string::npos) << out;
  fs::remove_all(dir);
}

TEST(ReplayCommand, PabReportDrawsTheBroadcastMap) {
  fs::path dir = temp_dir("replay");
  std::string out;
  int rc = testing::run_command(testing::pab_binary() + " replay " + latte_case() + " -o " +
                                    (dir / "out.safetensors").string() + " --pab-report " + (dir / "map.png").string(),
                                &out);
  ASSERT_EQ(rc, 0) << out;
  PngImage map = read_png((dir / "map.png").string());
  EXPECT_EQ(map.width, 960);
  EXPECT_GT(map.height, 300);
  EXPECT_GT(count_colour(map, 0.98, 0.73, 0.35), 1000);  // the case's PAB broadcasts
  fs::remove_all(dir);
}

}  // namespace
}  // namespace pab
