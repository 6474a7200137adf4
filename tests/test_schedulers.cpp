// Schedulers against diffusers: timesteps (fixtures and many step counts),
// noise tables, single steps for each class and config variant (reference data
// made by dev/fixtures/make_scheduler_cases.py), whole denoising chains of the
// pipeline fixtures with their recorded model outputs and noise, whole
// schedules of PNDMScheduler and EulerAncestralDiscreteScheduler
// (dev/fixtures/make_pndm_euler_cases.py), and config errors.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <set>

#include "backend/ops.h"
#include "core/registry.h"
#include "io/safetensors.h"
#include "pipeline/schedulers/ddpm.h"
#include "support/testing.h"

namespace pab {
namespace {

using testing::close_rel;
using testing::compare;
using testing::data_path;
using testing::error_of;

// Steps are elementwise f32 arithmetic with coefficients computed as diffusers
// computes them, so they agree to a few f32 roundings.
constexpr double kStepTol = 1e-6;

// An i64 tensor's values as the interface holds timesteps.
std::vector<double> as_f64(const Tensor& t) {
  return std::vector<double>(t.i64(), t.i64() + t.numel());
}

struct Case {
  std::unique_ptr<SafetensorsFile> file;
  JsonConfig config{nlohmann::json::object(), ""};
  int steps = 0;
  double eta = 0;

  bool has(const std::string& k) const { return file->find(k) != nullptr; }
  Tensor f32(const std::string& k) const {
    const TensorEntry* e = file->find(k);
    PAB_ASSERT(e, file->path(), ": no tensor ", k);
    return file->load(*e, DType::f32);
  }
  Tensor raw(const std::string& k) const { return file->load(*file->find(k), file->find(k)->dtype); }
};

Case load_case(const std::string& name) {
  Case c;
  c.file = SafetensorsFile::open(data_path("schedulers/" + name + ".safetensors"));
  const auto& meta = c.file->metadata();
  c.config = JsonConfig(nlohmann::json::parse(meta.at("config")), c.file->path());
  c.steps = std::stoi(meta.at("num_inference_steps"));
  c.eta = std::stod(meta.at("eta"));
  return c;
}

const std::vector<std::string> kStepCases = {
    "cogvideox_ddim",
    "cogvideox_dpm",
    "latte_ddim",
    "cogvideox_ddim_eps_leading",
    "cogvideox_ddim_sample_linspace_cos",
    "cogvideox_dpm_eps_linear_leading",
    "cogvideox_dpm_sample_linspace",
    "ddim_vpred_zero_snr_trailing",
    "ddim_sample_clip_eta",
    "ddim_eps_clip_eta1",
    "ddim_thresholding",
    "ddim_defaults",
    "cogvideox_ddim_defaults",
    "cogvideox_dpm_defaults",
};

// One step of the case's scheduler at timestep t on the inputs recorded for step k.
StepOutput run_step(Scheduler& s, const Case& c, int k, int64_t t, ReplayNoise* noise) {
  Tensor mo = c.f32(cat("model_output_", k)), x = c.f32(cat("sample_", k));
  if (auto* dpm = dynamic_cast<CogVideoXDpmScheduler*>(&s)) {
    Tensor old;
    std::optional<int64_t> back;
    if (c.has(cat("old_pred_original_sample_", k))) {
      old = c.f32(cat("old_pred_original_sample_", k));
      back = int64_t(s.timesteps()[size_t(k - 1)]);
    }
    return dpm->step_at(t, back, mo, old.defined() ? &old : nullptr, x, noise);
  }
  if (auto* cog = dynamic_cast<CogVideoXDdimScheduler*>(&s)) return cog->step_at(t, mo, x);
  StepOptions opts;
  opts.eta = c.eta;
  opts.noise = noise;
  return dynamic_cast<DdimScheduler&>(s).step_at(t, mo, x, opts);
}

ReplayNoise recorded_noise(const Case& c, int k) {
  std::vector<Tensor> draws;
  for (int j = 0; c.has(cat("noise_", k, "_", j)); ++j) draws.push_back(c.f32(cat("noise_", k, "_", j)));
  return ReplayNoise(std::move(draws), cat(c.file->path(), ": noise of step ", k));
}

class SchedulerStep : public ::testing::TestWithParam<std::string> {};

TEST_P(SchedulerStep, MatchesDiffusers) {
  Case c = load_case(GetParam());
  auto s = make_scheduler(c.config);
  s->set_timesteps(c.steps);
  ASSERT_EQ(s->timesteps(), as_f64(c.raw("timesteps")));
  const auto& ddpm = dynamic_cast<const DdpmScheduler&>(*s);

  // The noise table holds what diffusers holds (f32 or f64), bit for bit except
  // where torch's f32 sqrt (not correctly rounded) feeds the zero-SNR rescale:
  // values in [0, 1], compared absolutely.
  Tensor table = c.raw("alphas_cumprod");
  ASSERT_EQ(table.numel(), int64_t(ddpm.alphas_cumprod().size()));
  double table_err = 0;
  const double* ref = static_cast<const double*>(table.raw());
  for (int64_t t = 0; t < table.numel(); ++t)
    table_err = std::max(table_err, std::fabs(ddpm.alphas_cumprod()[size_t(t)] - ref[t]));
  EXPECT_LE(table_err, 1e-6) << "alphas_cumprod";

  double worst = 0;
  int neighbour_mismatches = 0;
  for (int k = 0; k < c.steps; ++k) {
    const auto t = int64_t(s->timesteps()[size_t(k)]);
    ReplayNoise noise = recorded_noise(c, k);
    StepOutput out = run_step(*s, c, k, t, &noise);
    EXPECT_EQ(noise.drawn(), noise.size()) << "step " << k << ": noise draws";
    Tensor prev = c.f32(cat("prev_sample_", k)), x0 = c.f32(cat("pred_original_sample_", k));
    EXPECT_TRUE(close_rel(out.prev_sample, prev, kStepTol)) << GetParam() << " step " << k << " prev_sample";
    EXPECT_TRUE(close_rel(out.pred_original_sample, x0, kStepTol)) << GetParam() << " step " << k << " x0";
    worst = std::max({worst, compare(out.prev_sample, prev).rel(), compare(out.pred_original_sample, x0).rel()});

    // Can fail: the same inputs stepped from the neighbouring timestep miss the reference.
    const auto other = int64_t(s->timesteps()[size_t(k + 1 < c.steps ? k + 1 : k - 1)]);
    // (a step to t < 0 draws once where the others draw twice: repeat the last draw)
    ReplayNoise recorded = recorded_noise(c, k);
    std::vector<Tensor> draws;
    for (size_t j = 0; j < recorded.size(); ++j) draws.push_back(recorded.next(c.f32(cat("sample_", k)).shape()));
    if (!draws.empty()) draws.push_back(draws.back());
    ReplayNoise again(draws);
    if (!close_rel(run_step(*s, c, k, other, &again).prev_sample, prev, kStepTol)) ++neighbour_mismatches;
  }
  EXPECT_EQ(neighbour_mismatches, c.steps);
  std::printf("%-36s %s, %d steps: max rel diff %.3g, table %.3g\n", GetParam().c_str(), s->class_name(), c.steps,
              worst, table_err);
}

INSTANTIATE_TEST_SUITE_P(Cases, SchedulerStep, ::testing::ValuesIn(kStepCases),
                         [](const auto& info) { return info.param; });

// set_timesteps against diffusers for every spacing and many step counts,
// including those where diffusers produces a timestep outside the table.
TEST(SchedulerTimesteps, MatchDiffusersForManyStepCounts) {
  auto file = SafetensorsFile::open(data_path("schedulers/timesteps.safetensors"));
  int checked = 0, rejected = 0;
  for (const auto& [name, entry] : file->entries()) {
    // <spacing>_o<offset>_n<n>
    const size_t o = name.find("_o"), n = name.find("_n");
    const std::string spacing = name.substr(0, o);
    const int offset = std::stoi(name.substr(o + 2, n - o - 2)), steps = std::stoi(name.substr(n + 2));
    JsonConfig json({{"_class_name", "DDIMScheduler"}, {"timestep_spacing", spacing}, {"steps_offset", offset}}, name);
    DdimScheduler s(DdimConfig::from_json(json));
    std::vector<double> expected = as_f64(file->load(entry, DType::i64));
    const bool outside = std::any_of(expected.begin(), expected.end(), [](double t) { return t < 0 || t >= 1000; });
    if (outside) {
      EXPECT_THROW(s.set_timesteps(steps), Error) << name;
      ++rejected;
    } else {
      s.set_timesteps(steps);
      EXPECT_EQ(s.timesteps(), expected) << name;
      ++checked;
    }
  }
  EXPECT_GT(checked, 300);
  EXPECT_GT(rejected, 3);  // trailing 61, 103, 121, 122 give -1; leading 1000 with offset 1 gives 1000
  std::printf("timesteps: %d schedules equal to diffusers, %d rejected as diffusers leaves the table\n", checked,
              rejected);
}

const std::vector<std::string> kPipelines = {"cogvideox_ddim", "cogvideox_dpm", "latte"};

int case_steps(const std::string& dir) {
  std::ifstream in(dir + "/case.json");
  return nlohmann::json::parse(in).at("call").at("num_inference_steps").get<int>();
}

TEST(SchedulerTimesteps, MatchPipelineFixtures) {
  for (const std::string& name : kPipelines) {
    const std::string dir = data_path("fixtures/pipeline/" + name);
    auto s = load_scheduler(dir + "/model/scheduler/scheduler_config.json");
    s->set_timesteps(case_steps(dir));
    auto ref = SafetensorsFile::open(dir + "/reference.safetensors");
    EXPECT_EQ(s->timesteps(), as_f64(ref->load(*ref->find("timesteps"), DType::i64))) << name;
  }
}

// The fixture pipelines' denoising chains: the scheduler fed the model outputs
// diffusers fed it (recorded by re-running the fixture pipeline) and, for the
// DPM, the fixture's recorded noise reproduces the fixture's latents.
TEST(SchedulerChain, ReproducesPipelineFixtures) {
  // The re-run's latents differ from the fixture's by up to 1.2e-6 (another
  // torch build), and chaining 12 steps adds a little.
  constexpr double kFixtureTol = 1e-5;
  for (const std::string& name : kPipelines) {
    const std::string dir = data_path("fixtures/pipeline/" + name);
    auto inputs = Checkpoint::open_file(dir + "/inputs.safetensors");
    auto ref = Checkpoint::open_file(dir + "/reference.safetensors");
    auto rec = Checkpoint::open_file(data_path("schedulers/pipeline_" + name + ".safetensors"));
    auto s = load_scheduler(dir + "/model/scheduler/scheduler_config.json");
    const int n = case_steps(dir);

    auto run = [&](bool rotate_draws) {
      std::vector<Tensor> draws;
      for (int j = 0; inputs.has(cat("noise_", j)); ++j) draws.push_back(inputs.load(cat("noise_", j)));
      if (rotate_draws) std::rotate(draws.begin(), draws.begin() + 1, draws.end());
      ReplayNoise noise(draws, dir + "/inputs.safetensors");
      StepOptions opts;
      opts.noise = &noise;
      s->set_timesteps(n);
      std::vector<Tensor> latents;
      Tensor x = inputs.load("latents");
      for (int i = 0; i < n; ++i) {
        x = s->step(i, rec.load(cat("model_output_", i)), s->scale_model_input(x, i), opts).prev_sample;
        latents.push_back(x);
      }
      EXPECT_EQ(noise.drawn(), noise.size()) << name << ": every recorded draw used";
      return latents;
    };

    std::vector<Tensor> latents = run(false);
    double vs_rerun = 0, vs_fixture = 0;
    for (int i = 0; i < n; ++i) {
      EXPECT_TRUE(close_rel(latents[i], rec.load(cat("latents_", i)), kStepTol)) << name << " step " << i;
      EXPECT_TRUE(close_rel(latents[i], ref.load(cat("latents_step_", i, "_nopab")), kFixtureTol))
          << name << " step " << i;
      vs_rerun = std::max(vs_rerun, compare(latents[i], rec.load(cat("latents_", i))).rel());
      vs_fixture = std::max(vs_fixture, compare(latents[i], ref.load(cat("latents_step_", i, "_nopab"))).rel());
    }
    // Can fail: the PAB run's latents (a neighbouring reference) do not match.
    EXPECT_FALSE(close_rel(latents.back(), ref.load("latents_final_pab"), kFixtureTol)) << name;
    if (inputs.has("noise_0")) {
      // Can fail: the draws one place off (as if the discarded first-order draw were skipped) miss the fixture.
      std::vector<Tensor> shifted = run(true);
      EXPECT_FALSE(close_rel(shifted[1], ref.load("latents_step_1_nopab"), kFixtureTol)) << name;
    }
    std::printf("%-16s %s: max rel diff vs diffusers re-run %.3g, vs fixture %.3g\n", name.c_str(), s->class_name(),
                vs_rerun, vs_fixture);
  }
}

// ---------------------------------------------------------------- whole schedules

// PNDMScheduler and EulerAncestralDiscreteScheduler (Open-Sora-Plan v1.1 and
// v1.2) over whole schedules (dev/fixtures/make_pndm_euler_cases.py): every
// step is given the reference's own sample (its previous output), so PNDM's
// history is diffusers' own, and Euler ancestral's noise is either the
// recorded draw or drawn from the case's seed as the pipeline's generator.
struct ScheduleCase {
  std::string name;
  nlohmann::json config;
  int steps = 0;
  uint64_t seed = 0;
};

struct ScheduleFile {
  std::unique_ptr<SafetensorsFile> file;
  std::vector<ScheduleCase> cases;

  explicit ScheduleFile(const std::string& name) : file(SafetensorsFile::open(data_path("schedulers/" + name))) {
    for (const auto& c : nlohmann::json::parse(file->metadata().at("cases")))
      cases.push_back({c.at("name"), c.at("config"), c.at("steps"), c.at("seed")});
  }
  bool has(const std::string& key) const { return file->find(key) != nullptr; }
  Tensor f32(const std::string& key) const {
    const TensorEntry* e = file->find(key);
    PAB_ASSERT(e, file->path(), ": no tensor ", key);
    return file->load(*e, DType::f32);
  }
  std::vector<double> f64(const std::string& key) const {
    Tensor t = file->load(*file->find(key), DType::f64);
    const auto* p = static_cast<const double*>(t.raw());
    return std::vector<double>(p, p + t.numel());
  }
};

std::unique_ptr<Scheduler> build(const nlohmann::json& config, const std::string& where) {
  return make_scheduler(JsonConfig(config, where));
}

// The case's steps by `s` (already set): scale_model_input, step (prev_sample
// and, where recorded, x_0), with the recorded noise or `seeded`. Counts the
// steps where an output misses the reference by more than kStepTol of the
// larger of its own and the sample's largest value: the step's rounding
// scales with the sample, and the step can cancel most of it. (Euler
// ancestral at zero terminal SNR: x_0 = x - sigma * eps is 1/13 of x in the
// first steps, and torch's vectorised square root of the table, not
// correctly rounded at a few entries as ours is, puts sigma an ulp off: x_0
// moved by 2.1e-6 of its own largest value, 1.6e-7 of the sample's.)
struct ScheduleRun {
  int steps = 0, mismatched = 0;
  double worst = 0;
};
ScheduleRun run_schedule(Scheduler& s, const ScheduleFile& f, const ScheduleCase& c, NoiseSource* seeded = nullptr) {
  ScheduleRun r;
  const std::string p = c.name + ".";
  Tensor sample = f.f32(p + "sample_0");
  r.steps = int(s.timesteps().size());
  for (int k = 0; k < r.steps; ++k) {
    ReplayNoise recorded(
        f.has(cat(p, "noise_", k)) ? std::vector<Tensor>{f.f32(cat(p, "noise_", k))} : std::vector<Tensor>{},
        cat(c.name, " step ", k));
    StepOptions opts;
    opts.noise = seeded ? seeded : &recorded;
    struct Output {
      Tensor got, want;
      double floor = 0;  // the error is relative to at least this
    };
    std::vector<Output> outputs;
    const Tensor scaled = s.scale_model_input(sample, k);
    outputs.push_back({scaled, f.has(cat(p, "scaled_input_", k)) ? f.f32(cat(p, "scaled_input_", k)) : sample});
    const StepOutput out = s.step(k, f.f32(cat(p, "model_output_", k)), sample, opts);
    const double sample_max = compare(sample, sample).max_ref;
    outputs.push_back({out.prev_sample, f.f32(cat(p, "prev_sample_", k)), sample_max});
    if (f.has(cat(p, "pred_original_sample_", k)))
      outputs.push_back({out.pred_original_sample, f.f32(cat(p, "pred_original_sample_", k)), sample_max});
    bool ok = true;
    for (const Output& o : outputs) {
      const testing::Diff d = compare(o.got, o.want);
      const double err = d.max_abs / std::max({d.max_ref, o.floor, 1e-30});
      ok = ok && err <= kStepTol;
      r.worst = std::max(r.worst, err);
    }
    if (!ok) ++r.mismatched;
    if (!seeded) {
      EXPECT_EQ(recorded.drawn(), recorded.size()) << "step " << k << ": noise draws";
    }
    sample = f.f32(cat(p, "prev_sample_", k));
  }
  return r;
}

// The config with the other prediction type (epsilon <-> v_prediction).
nlohmann::json other_prediction(nlohmann::json config) {
  config["prediction_type"] = config.value("prediction_type", "epsilon") == "epsilon" ? "v_prediction" : "epsilon";
  return config;
}

void check_schedules(const std::string& file_name, const char* cls, std::initializer_list<int> required_steps) {
  ScheduleFile f(file_name);
  ASSERT_GT(f.cases.size(), 10u);
  std::set<int> step_counts;
  for (const ScheduleCase& c : f.cases) {
    SCOPED_TRACE(c.name);
    ASSERT_EQ(c.config.at("_class_name"), cls);
    step_counts.insert(c.steps);
    auto s = build(c.config, file_name + ": " + c.name);
    s->set_timesteps(c.steps);
    EXPECT_EQ(s->num_inference_steps(), c.steps);
    ASSERT_EQ(s->timesteps(), f.f64(c.name + ".timesteps")) << "timesteps";

    // Euler ancestral's sigmas: torch's vectorised f32 square root of the
    // table (not correctly rounded, ours is) can be an ulp off, and the
    // interpolation carries that over; PNDM has none.
    double sigma_err = 0;
    if (f.has(c.name + ".sigmas")) {
      const std::vector<double> ref = f.f64(c.name + ".sigmas");
      ASSERT_EQ(s->sigmas().size(), ref.size());
      for (size_t k = 0; k < ref.size(); ++k) {
        const double err = std::fabs(s->sigmas()[k] - ref[k]);
        EXPECT_LE(err, 1e-6 * ref[k]) << "sigma " << k;
        if (ref[k] > 0) sigma_err = std::max(sigma_err, err / ref[k]);
      }
    } else {
      EXPECT_TRUE(s->sigmas().empty());
    }
    const double init = f.f64(c.name + ".init_noise_sigma").at(0);
    EXPECT_LE(std::fabs(s->init_noise_sigma() - init), 1e-6 * init) << "init_noise_sigma";

    const ScheduleRun run = run_schedule(*s, f, c);
    EXPECT_EQ(run.mismatched, 0) << "of " << run.steps << " steps, worst rel diff " << run.worst;

    // Can fail: step 0 of a longer schedule misses the reference (2n + 1
    // steps, or the next count the spacing and table can run).
    auto longer = build(c.config, c.name);
    int more = 0;
    for (int m : {2 * c.steps + 1, 2 * c.steps + 2, c.steps + 1, c.steps + 2}) {
      if (error_of([&] { longer->set_timesteps(m); }).empty()) {
        more = m;
        break;
      }
    }
    ASSERT_GT(more, 0) << "no longer schedule runs";
    ReplayNoise noise(f.has(c.name + ".noise_0") ? std::vector<Tensor>{f.f32(c.name + ".noise_0")}
                                                 : std::vector<Tensor>{});
    StepOptions opts;
    opts.noise = &noise;
    const Tensor first =
        longer->step(0, f.f32(c.name + ".model_output_0"), f.f32(c.name + ".sample_0"), opts).prev_sample;
    // (a first step that does not move, as PNDM's Runge-Kutta half steps of
    // length 0 with num_train_timesteps // n < 2, gives its sample whatever the schedule)
    if (compare(f.f32(c.name + ".prev_sample_0"), f.f32(c.name + ".sample_0")).max_abs > 0) {
      EXPECT_FALSE(close_rel(first, f.f32(c.name + ".prev_sample_0"), kStepTol)) << "the schedule of " << more;
    }
    // Can fail: the other prediction type misses the steps. (Not every PNDM
    // step: one that does not move gives its start whatever the prediction,
    // as the last from t = 0 to the final alpha, alphas_cumprod[0] without
    // set_alpha_to_one, and the zero-length half steps above.)
    auto other = build(other_prediction(c.config), c.name + " (other prediction type)");
    other->set_timesteps(c.steps);
    const ScheduleRun wrong = run_schedule(*other, f, c);
    EXPECT_GT(wrong.mismatched, wrong.steps * 3 / 4) << "the other prediction type";

    std::printf(
        "%-30s %3d steps, %3d evaluations: max rel diff %.3g, sigmas %.3g; other prediction type: %d/%d "
        "steps missed\n",
        c.name.c_str(), c.steps, run.steps, run.worst, sigma_err, wrong.mismatched, wrong.steps);
  }
  for (int n : required_steps) EXPECT_TRUE(step_counts.count(n)) << n << " steps";
}

TEST(Pndm, MatchesDiffusersOverWholeSchedules) {
  check_schedules("pndm.safetensors", "PNDMScheduler", {1, 2, 3, 4, 7, 150});
}

TEST(EulerAncestral, MatchesDiffusersOverWholeSchedules) {
  check_schedules("euler_ancestral_discrete.safetensors", "EulerAncestralDiscreteScheduler", {1, 2, 3, 7, 100});
}

// The pipeline's generator: the seed's first draw times init_noise_sigma is
// the initial latents, and each step's draw is the next of the same stream.
TEST(EulerAncestral, SeededNoiseReproducesThePipelineGenerator) {
  ScheduleFile f("euler_ancestral_discrete.safetensors");
  for (const ScheduleCase& c : f.cases) {
    SCOPED_TRACE(c.name);
    auto s = build(c.config, c.name);
    s->set_timesteps(c.steps);
    TorchNoise generator(c.seed);
    std::vector<Tensor> draws;
    FunctionNoise recording([&](const Shape& shape) { return draws.emplace_back(generator.next(shape)); });
    const Tensor sample_0 = f.f32(c.name + ".sample_0");
    const Tensor latents = ops::scale(recording.next(sample_0.shape()), s->init_noise_sigma());
    EXPECT_EQ(compare(latents, sample_0).max_abs, 0) << "initial latents";
    const ScheduleRun run = run_schedule(*s, f, c, &recording);
    EXPECT_EQ(run.mismatched, 0) << "worst rel diff " << run.worst;
    ASSERT_EQ(draws.size(), size_t(c.steps) + 1);
    for (int k = 0; k < c.steps; ++k)
      EXPECT_EQ(compare(draws[size_t(k) + 1], f.f32(cat(c.name, ".noise_", k))).max_abs, 0) << "draw of step " << k;
    // Can fail: a stream without the initial latents' draw misses (one step's sigma_up is 0).
    if (c.steps > 1) {
      TorchNoise skipped(c.seed);
      EXPECT_GT(run_schedule(*s, f, c, &skipped).mismatched, 0) << "noise one draw early";
    }
  }
}

// PNDM's history is per run: a second run repeats the first, and steps run in order.
TEST(Pndm, SetTimestepsResetsTheHistory) {
  ScheduleFile f("pndm.safetensors");
  for (const char* name : {"defaults_n7", "sd_plms_n7"}) {
    const ScheduleCase& c =
        *std::find_if(f.cases.begin(), f.cases.end(), [&](const ScheduleCase& x) { return x.name == name; });
    auto s = build(c.config, c.name);
    for (int run = 0; run < 2; ++run) {
      s->set_timesteps(c.steps);
      EXPECT_EQ(run_schedule(*s, f, c).mismatched, 0) << name << " run " << run;
    }
    s->set_timesteps(c.steps);
    EXPECT_NE(
        error_of([&] { s->step(1, f.f32(c.name + ".model_output_1"), f.f32(c.name + ".sample_0")); }).find("in order"),
        std::string::npos);
  }
}

// Step counts diffusers fails for or runs out of its table: named, with the file.
TEST(SchedulerScheduleErrors, PndmAndEulerAncestral) {
  const std::string where = "dir/scheduler_config.json";
  struct Bad {
    nlohmann::json config;
    int steps;
    std::string says;
  };
  const nlohmann::json pndm = {{"_class_name", "PNDMScheduler"}},
                       euler = {{"_class_name", "EulerAncestralDiscreteScheduler"}};
  auto with = [](nlohmann::json j, const std::string& key, nlohmann::json v) {
    j[key] = std::move(v);
    return j;
  };
  const std::vector<Bad> bad = {
      {pndm, 3, "at least 4"},
      {pndm, 1, "skip_prk_steps"},
      {with(pndm, "timestep_spacing", "trailing"), 61, "timestep -1"},
      {with(with(pndm, "skip_prk_steps", true), "steps_offset", 1), 1000, "timestep 1000"},
      {pndm, 1001, "num_train_timesteps"},
      {with(euler, "timestep_spacing", "trailing"), 61, "62 timesteps"},
      {with(euler, "timestep_spacing", "leading"), 1001, "more than once"},
  };
  for (const Bad& b : bad) {
    auto s = build(b.config, where);
    const std::string msg = error_of([&] { s->set_timesteps(b.steps); });
    EXPECT_NE(msg.find(where), std::string::npos) << b.config.dump() << " n=" << b.steps << ": " << msg;
    EXPECT_NE(msg.find(b.says), std::string::npos) << b.config.dump() << " n=" << b.steps << ": " << msg;
  }
  // What does run: PLMS alone from one step, and more linspace steps than training timesteps.
  EXPECT_NO_THROW(build(with(pndm, "skip_prk_steps", true), where)->set_timesteps(1));
  EXPECT_NO_THROW(build(euler, where)->set_timesteps(1500));

  // Euler ancestral steps are stochastic: every one needs a noise source.
  Tensor x = testing::random_tensor({1, 2, 3}, 1);
  auto e = build(euler, where);
  EXPECT_NE(error_of([&] { e->scale_model_input(x, 0); }).find("before set_timesteps"), std::string::npos);
  e->set_timesteps(4);
  EXPECT_NE(error_of([&] { e->step(3, x, x); }).find("noise source"), std::string::npos);
  EXPECT_THROW(e->step(0, x, testing::random_tensor({1, 2, 4}, 2)), Error);  // shapes differ
}

// ---------------------------------------------------------------- errors

std::unique_ptr<Scheduler> parse(nlohmann::json j) {
  return make_scheduler(JsonConfig(std::move(j), "dir/scheduler_config.json"));
}

TEST(SchedulerConfigErrors, NameFileAndKey) {
  struct Bad {
    nlohmann::json json;
    std::string key;
  };
  const std::vector<Bad> bad = {
      {{{"_class_name", "EulerDiscreteScheduler"}}, "_class_name"},
      {{{"beta_schedule", "linear"}}, "_class_name"},
      {{{"_class_name", "DDIMScheduler"}, {"beta_schedule", "exponential"}}, "beta_schedule"},
      {{{"_class_name", "CogVideoXDPMScheduler"}, {"timestep_spacing", "karras"}}, "timestep_spacing"},
      {{{"_class_name", "CogVideoXDDIMScheduler"}, {"prediction_type", "flow"}}, "prediction_type"},
      {{{"_class_name", "DDIMScheduler"}, {"trained_betas", {0.1, 0.2}}}, "trained_betas"},
      {{{"_class_name", "DDIMScheduler"}, {"beta_start", "small"}}, "beta_start"},
      {{{"_class_name", "DDIMScheduler"}, {"clip_sample", 1}}, "clip_sample"},
      {{{"_class_name", "PNDMScheduler"}, {"prediction_type", "sample"}}, "prediction_type"},
      {{{"_class_name", "PNDMScheduler"}, {"rescale_betas_zero_snr", true}}, "rescale_betas_zero_snr"},
      {{{"_class_name", "PNDMScheduler"}, {"skip_prk_steps", "yes"}}, "skip_prk_steps"},
      {{{"_class_name", "PNDMScheduler"}, {"set_alpha_to_one", 1}}, "set_alpha_to_one"},
      {{{"_class_name", "PNDMScheduler"}, {"timestep_spacing", "karras"}}, "timestep_spacing"},
      {{{"_class_name", "PNDMScheduler"}, {"beta_schedule", "exp"}}, "beta_schedule"},
      {{{"_class_name", "PNDMScheduler"}, {"num_train_timesteps", 1}}, "num_train_timesteps"},
      {{{"_class_name", "EulerAncestralDiscreteScheduler"}, {"prediction_type", "sample"}}, "prediction_type"},
      {{{"_class_name", "EulerAncestralDiscreteScheduler"}, {"timestep_spacing", "uniform"}}, "timestep_spacing"},
      {{{"_class_name", "EulerAncestralDiscreteScheduler"}, {"beta_schedule", "cosine"}}, "beta_schedule"},
      {{{"_class_name", "EulerAncestralDiscreteScheduler"}, {"trained_betas", {0.1}}}, "trained_betas"},
      {{{"_class_name", "EulerAncestralDiscreteScheduler"}, {"rescale_betas_zero_snr", "on"}},
       "rescale_betas_zero_snr"},
      {{{"_class_name", "EulerAncestralDiscreteScheduler"}, {"steps_offset", 0.5}}, "steps_offset"},
  };
  for (const Bad& b : bad) {
    std::string msg = error_of([&] { parse(b.json); });
    EXPECT_NE(msg.find("dir/scheduler_config.json"), std::string::npos) << msg;
    EXPECT_NE(msg.find("'" + b.key + "'"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
  EXPECT_NE(error_of([] { load_scheduler("/nonexistent/scheduler_config.json"); }).find("/nonexistent"),
            std::string::npos);
}

TEST(SchedulerConfigErrors, MissingKeysTakeDiffusersDefaults) {
  DdimConfig ddim = DdimConfig::from_json(JsonConfig({{"_class_name", "DDIMScheduler"}}, "ddim"));
  EXPECT_EQ(ddim.beta_schedule, BetaSchedule::linear);
  EXPECT_TRUE(ddim.clip_sample);
  EXPECT_EQ(ddim.timestep_spacing, TimestepSpacing::leading);
  CogVideoXSchedulerConfig cog = CogVideoXSchedulerConfig::from_json(
      JsonConfig({{"_class_name", "CogVideoXDPMScheduler"}, {"trained_betas", nullptr}}, "cog"));
  EXPECT_EQ(cog.beta_schedule, BetaSchedule::scaled_linear);
  EXPECT_EQ(cog.snr_shift_scale, 3.0);
  EXPECT_TRUE(cog.trained_betas.empty());
  // The numbers behind these defaults are checked against diffusers by the *_defaults step cases.
}

TEST(SchedulerStepErrors, AreClear) {
  Tensor x = testing::random_tensor({1, 2, 3}, 1), y = testing::random_tensor({1, 2, 3}, 2);
  auto dpm = parse({{"_class_name", "CogVideoXDPMScheduler"}});
  EXPECT_THROW(dpm->step(0, x, y), Error);  // before set_timesteps
  dpm->set_timesteps(4);
  EXPECT_NE(error_of([&] { dpm->step(0, x, y); }).find("noise source"), std::string::npos);
  EXPECT_THROW(dpm->step(0, x, testing::random_tensor({1, 2, 4}, 3)), Error);  // shapes differ
  EXPECT_THROW(dpm->set_timesteps(0), Error);
  EXPECT_THROW(dpm->set_timesteps(1001), Error);

  ReplayNoise one({testing::random_tensor({1, 2, 3}, 4)});
  StepOptions opts;
  opts.noise = &one;
  dpm->set_timesteps(4);
  dpm->step(0, x, y, opts);
  EXPECT_NE(error_of([&] { dpm->step(1, x, y, opts); }).find("only 1 were recorded"), std::string::npos);

  auto ddim = parse({{"_class_name", "DDIMScheduler"}});
  ddim->set_timesteps(4);
  StepOptions stochastic;
  stochastic.eta = 0.5;
  EXPECT_NE(error_of([&] { ddim->step(0, x, y, stochastic); }).find("noise source"), std::string::npos);
}

}  // namespace
}  // namespace pab
