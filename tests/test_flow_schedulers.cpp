// The flow-matching schedulers against their references over whole schedules:
// FlowMatchEulerDiscreteScheduler and UniPCMultistepScheduler (Wan) against
// diffusers, RFlowScheduler (Open-Sora 1.2) against VideoSys's RFLOW.sample.
// Reference data: dev/fixtures/make_flow_scheduler_cases.py. Each step is given
// the reference's own sample (its previous output) and model output, so a
// multistep scheduler's history is the reference's; every schedule's
// timesteps and sigmas are compared exactly. Also: config and option errors,
// and every registered scheduler class has reference cases.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <set>

#include "core/registry.h"
#include "io/safetensors.h"
#include "pipeline/schedulers/scheduler.h"
#include "support/testing.h"

namespace pab {
namespace {

using testing::close_rel;
using testing::compare;
using testing::data_path;

// Steps are a few f32 operations with coefficients computed as the reference
// computes them; UniPC's logs, expm1 and 2x2 solves can differ from torch's by
// an ulp, which moves its results by up to ~1e-6.
constexpr double kTol = 1e-5;

struct FlowCase {
  std::string name;
  nlohmann::json config;
  int steps = 0;
  TimestepOptions options;
};

TimestepOptions options_of(const nlohmann::json& o) {
  TimestepOptions t;
  if (o.contains("mu")) t.mu = o.at("mu").get<double>();
  t.height = o.value("height", 0);
  t.width = o.value("width", 0);
  t.frames = o.value("frames", 0);
  const std::string dtype = o.value("size_dtype", "F32");
  PAB_ASSERT(parse_dtype(dtype, &t.size_dtype), "size_dtype ", dtype);
  return t;
}

struct CaseFile {
  std::unique_ptr<SafetensorsFile> file;
  std::vector<FlowCase> cases;

  explicit CaseFile(const std::string& name) : file(SafetensorsFile::open(data_path("schedulers/" + name))) {
    for (const auto& c : nlohmann::json::parse(file->metadata().at("cases")))
      cases.push_back({c.at("name"), c.at("config"), c.at("steps"), options_of(c.at("options"))});
  }
  bool has(const std::string& key) const { return file->find(key) != nullptr; }
  Tensor f32(const std::string& key) const {
    const TensorEntry* e = file->find(key);
    PAB_ASSERT(e, file->path(), ": no tensor ", key);
    return file->load(*e, DType::f32);
  }
  std::vector<double> f64(const std::string& key) const {
    const TensorEntry* e = file->find(key);
    PAB_ASSERT(e, file->path(), ": no tensor ", key);
    Tensor t = file->load(*e, DType::f64);
    const auto* p = static_cast<const double*>(t.raw());
    return std::vector<double>(p, p + t.numel());
  }
};

using testing::error_of;

std::unique_ptr<Scheduler> build(const nlohmann::json& config, const std::string& where) {
  return make_scheduler(JsonConfig(config, where));
}

// The case's steps by `s` (already set), each on the reference's inputs;
// returns how many steps missed the reference and the largest relative error.
struct Run {
  int mismatched = 0;
  double worst = 0;
};
Run run_steps(Scheduler& s, const CaseFile& f, const FlowCase& c) {
  Run r;
  Tensor sample = f.f32(c.name + ".sample_0");
  for (int k = 0; k < c.steps; ++k) {
    const std::string p = cat(c.name, ".");
    ReplayNoise noise(
        f.has(cat(p, "noise_", k)) ? std::vector<Tensor>{f.f32(cat(p, "noise_", k))} : std::vector<Tensor>{},
        cat(c.name, " step ", k));
    StepOptions opts;
    opts.noise = &noise;
    const Tensor expected = f.f32(cat(p, "prev_sample_", k));
    const Tensor got = s.step(k, f.f32(cat(p, "model_output_", k)), s.scale_model_input(sample, k), opts).prev_sample;
    if (!close_rel(got, expected, kTol)) ++r.mismatched;
    r.worst = std::max(r.worst, compare(got, expected).rel());
    sample = expected;  // the reference's own, for the next step
  }
  return r;
}

// The config with its shift moved (a wrong shift must not pass), or null where
// the case has none that matters.
std::optional<std::pair<nlohmann::json, TimestepOptions>> wrong_shift(const FlowCase& c) {
  nlohmann::json config = c.config;
  TimestepOptions options = c.options;
  if (c.steps < 2) return std::nullopt;  // one step goes from the top to the end whatever the shift
  if (options.mu) {
    *options.mu += 0.25;
  } else if (config.value("_class_name", "") == "RFlowScheduler") {
    if (!config.value("use_timestep_transform", false)) return std::nullopt;
    options.height += 64;
  } else if (config.value("_class_name", "") == "UniPCMultistepScheduler" && !config.value("use_flow_sigmas", false)) {
    return std::nullopt;  // the DDPM table's sigmas have no shift
  } else {
    const char* key = config.value("_class_name", "") == "UniPCMultistepScheduler" ? "flow_shift" : "shift";
    config[key] = config.value(key, 1.0) + 0.25;
  }
  return std::pair{config, options};
}

void check_file(const std::string& file_name, const char* cls, bool has_sigmas) {
  CaseFile f(file_name);
  ASSERT_GT(f.cases.size(), 5u);
  std::set<int> step_counts;
  for (const FlowCase& c : f.cases) {
    SCOPED_TRACE(c.name);
    ASSERT_EQ(c.config.at("_class_name"), cls);
    step_counts.insert(c.steps);
    auto s = build(c.config, file_name + ": " + c.name);
    s->set_timesteps(c.steps, c.options);
    ASSERT_EQ(s->timesteps(), f.f64(c.name + ".timesteps")) << "timesteps";
    const bool ddpm_table =
        c.config.at("_class_name") == "UniPCMultistepScheduler" && !c.config.value("use_flow_sigmas", false);
    if (ddpm_table) {
      // sqrt((1 - a) / a) of the DDPM table: torch's vectorised f32 sqrt is not correctly rounded (off by an
      // ulp for about one table entry in six), ours is; the zero-SNR rescale takes two more square roots.
      const std::vector<double> ref = f.f64(c.name + ".sigmas");
      ASSERT_EQ(s->sigmas().size(), ref.size());
      for (size_t k = 0; k < ref.size(); ++k)
        EXPECT_LE(std::fabs(s->sigmas()[k] - ref[k]), 1e-6 * ref[k]) << "sigma " << k;
    } else if (has_sigmas) {
      EXPECT_EQ(s->sigmas(), f.f64(c.name + ".sigmas")) << "sigmas";
    } else {
      EXPECT_TRUE(s->sigmas().empty());
    }
    EXPECT_EQ(s->init_noise_sigma(), 1.0f);
    const Run run = run_steps(*s, f, c);
    EXPECT_EQ(run.mismatched, 0) << "of " << c.steps << " steps, worst rel diff " << run.worst;

    // Can fail: step 0 under a longer schedule misses the reference (2n + 1 steps: n + 1 can share the
    // first two timesteps with n, as linspace spacing does for 50 and 51).
    auto longer = build(c.config, c.name);
    longer->set_timesteps(2 * c.steps + 1, c.options);
    ReplayNoise noise(f.has(c.name + ".noise_0") ? std::vector<Tensor>{f.f32(c.name + ".noise_0")}
                                                 : std::vector<Tensor>{});
    StepOptions opts;
    opts.noise = &noise;
    const Tensor first =
        longer->step(0, f.f32(c.name + ".model_output_0"), f.f32(c.name + ".sample_0"), opts).prev_sample;
    EXPECT_FALSE(close_rel(first, f.f32(c.name + ".prev_sample_0"), kTol)) << "the schedule of " << 2 * c.steps + 1;
    // Can fail: a wrong shift misses the reference.
    std::string shifted = "-";
    if (auto wrong = wrong_shift(c)) {
      auto w = build(wrong->first, c.name + " (shift moved)");
      w->set_timesteps(c.steps, wrong->second);
      const Run r = run_steps(*w, f, c);
      EXPECT_GT(r.mismatched, 0) << "a wrong shift passed";
      shifted = cat(r.mismatched, "/", c.steps, " steps missed");
    }
    std::printf("%-32s %3d steps: max rel diff %.3g; wrong shift: %s\n", c.name.c_str(), c.steps, run.worst,
                shifted.c_str());
  }
  // The schedule edges: one step, two, and a long schedule.
  for (int n : {1, 2, 50}) EXPECT_TRUE(step_counts.count(n)) << n << " steps";
}

TEST(FlowMatchEuler, MatchesDiffusersOverWholeSchedules) {
  check_file("flow_match_euler.safetensors", "FlowMatchEulerDiscreteScheduler", true);
}

TEST(UniPcMultistep, MatchesDiffusersOverWholeSchedules) {
  check_file("unipc_multistep.safetensors", "UniPCMultistepScheduler", true);
}

TEST(RFlow, MatchesVideoSysOverWholeSchedules) {
  check_file("rflow.safetensors", "RFlowScheduler", false);
}

// Multistep state is per run: a second run of the same scheduler repeats the first.
TEST(UniPcMultistep, SetTimestepsResetsTheHistory) {
  CaseFile f("unipc_multistep.safetensors");
  const FlowCase& c =
      *std::find_if(f.cases.begin(), f.cases.end(), [](const FlowCase& x) { return x.name == "wan_n50"; });
  auto s = build(c.config, c.name);
  for (int run = 0; run < 2; ++run) {
    s->set_timesteps(c.steps, c.options);
    EXPECT_EQ(run_steps(*s, f, c).mismatched, 0) << "run " << run;
  }
  s->set_timesteps(c.steps);
  EXPECT_NE(
      error_of([&] { s->step(1, f.f32(c.name + ".model_output_1"), f.f32(c.name + ".sample_0")); }).find("in order"),
      std::string::npos);
}

// ---------------------------------------------------------------- errors

TEST(FlowSchedulerErrors, UnsupportedValuesNameFileAndKey) {
  const nlohmann::json wan = CaseFile("unipc_multistep.safetensors").cases.front().config;
  const nlohmann::json euler = {{"_class_name", "FlowMatchEulerDiscreteScheduler"}};
  const nlohmann::json rflow = {{"_class_name", "RFlowScheduler"}};
  auto with = [](nlohmann::json j, const std::string& key, nlohmann::json v) {
    j[key] = std::move(v);
    return j;
  };
  const std::vector<std::pair<nlohmann::json, std::string>> bad = {
      {with(euler, "use_karras_sigmas", true), "use_karras_sigmas"},
      {with(euler, "use_exponential_sigmas", true), "use_exponential_sigmas"},
      {with(euler, "use_beta_sigmas", true), "use_beta_sigmas"},
      {with(euler, "time_shift_type", "quadratic"), "time_shift_type"},
      {with(euler, "shift", -1.0), "shift"},
      {with(euler, "shift_terminal", 1.5), "shift_terminal"},
      {with(euler, "stochastic_sampling", "yes"), "stochastic_sampling"},
      {with(wan, "use_flow_sigmas", false), "prediction_type"},  // flow_prediction on the DDPM table
      {with(with(with(wan, "use_flow_sigmas", false), "prediction_type", "epsilon"), "shift_terminal", 0.1),
       "shift_terminal"},
      {with(with(with(wan, "use_flow_sigmas", false), "prediction_type", "epsilon"), "beta_schedule", "cosine"),
       "beta_schedule"},
      {with(wan, "use_karras_sigmas", true), "use_karras_sigmas"},
      {with(wan, "thresholding", true), "thresholding"},
      {with(wan, "solver_p", {{"_class_name", "DDIMScheduler"}}), "solver_p"},
      {with(wan, "predict_x0", false), "predict_x0"},
      {with(wan, "final_sigmas_type", "one"), "final_sigmas_type"},
      {with(wan, "solver_type", "bh3"), "solver_type"},
      {with(wan, "solver_order", 0), "solver_order"},
      {with(wan, "prediction_type", "flow"), "prediction_type"},
      // diffusers' last step is NaN or inf with these
      {with(wan, "solver_type", "bh1"), "solver_type"},
      {with(with(wan, "prediction_type", "epsilon"), "predict_x0", false), "predict_x0"},
      {with(wan, "lower_order_final", false), "lower_order_final"},
      {with(with(with(wan, "lower_order_final", false), "solver_order", 3), "final_sigmas_type", "sigma_min"),
       "lower_order_final"},
      {with(rflow, "transform_scale", 2.0), "transform_scale"},
      {with(rflow, "sample_method", "normal"), "sample_method"},
      {with(with(rflow, "sample_method", "logit-normal"), "use_discrete_timesteps", true), "sample_method"},
      {with(rflow, "num_timesteps", 0), "num_timesteps"},
  };
  for (const auto& [json, key] : bad) {
    const std::string msg = error_of([&] { build(json, "dir/scheduler_config.json"); });
    EXPECT_NE(msg.find("dir/scheduler_config.json"), std::string::npos) << json.dump() << ": " << msg;
    EXPECT_NE(msg.find("'" + key + "'"), std::string::npos) << json.dump() << ": " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

TEST(FlowSchedulerErrors, MissingOptionsAreNamed) {
  // use_dynamic_shifting without mu.
  for (const char* cls : {"FlowMatchEulerDiscreteScheduler", "UniPCMultistepScheduler"}) {
    auto s = build({{"_class_name", cls},
                    {"use_flow_sigmas", true},
                    {"prediction_type", "flow_prediction"},
                    {"use_dynamic_shifting", true}},
                   "dir/scheduler_config.json");
    const std::string msg = error_of([&] { s->set_timesteps(10); });
    EXPECT_NE(msg.find("dir/scheduler_config.json"), std::string::npos) << msg;
    EXPECT_NE(msg.find("mu"), std::string::npos) << msg;
    TimestepOptions mu;
    mu.mu = 1.0;
    EXPECT_NO_THROW(s->set_timesteps(10, mu));
  }
  // The timestep transform without the video's size, and with sizes f16 cannot hold.
  auto r = build({{"_class_name", "RFlowScheduler"}, {"use_timestep_transform", true}}, "dir/rflow.json");
  EXPECT_NE(error_of([&] { r->set_timesteps(30); }).find("height, width and frame count"), std::string::npos);
  TimestepOptions size;
  size.height = 720;
  size.width = 1280;
  size.frames = 51;
  EXPECT_NO_THROW(r->set_timesteps(30, size));
  size.size_dtype = DType::f16;
  EXPECT_NE(error_of([&] { r->set_timesteps(30, size); }).find("F16"), std::string::npos);
  size.size_dtype = DType::i64;
  EXPECT_NE(error_of([&] { r->set_timesteps(30, size); }).find("dtype"), std::string::npos);
  // Steps before set_timesteps, and out of range.
  Tensor x = testing::random_tensor({1, 2, 3}, 1);
  for (const char* cls : {"FlowMatchEulerDiscreteScheduler", "RFlowScheduler"}) {
    auto s = build({{"_class_name", cls}}, "dir/scheduler_config.json");
    EXPECT_NE(error_of([&] { s->step(0, x, x); }).find("before set_timesteps"), std::string::npos) << cls;
    EXPECT_THROW(s->set_timesteps(0), Error) << cls;
    s->set_timesteps(3);
    EXPECT_THROW(s->step(0, x, testing::random_tensor({1, 2, 4}, 2)), Error) << cls;  // shapes differ
  }
  // A stochastic step needs a noise source.
  auto stochastic = build({{"_class_name", "FlowMatchEulerDiscreteScheduler"}, {"stochastic_sampling", true}}, "d");
  stochastic->set_timesteps(4);
  EXPECT_NE(error_of([&] { stochastic->step(0, x, x); }).find("noise source"), std::string::npos);
}

TEST(SchedulerRegistry, UnknownClassListsTheRegisteredOnes) {
  const std::string msg = error_of([] { build({{"_class_name", "EulerDiscreteScheduler"}}, "dir/s.json"); });
  EXPECT_NE(msg.find("dir/s.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'_class_name'"), std::string::npos) << msg;
  for (const std::string& name : scheduler_class_names()) EXPECT_NE(msg.find(name), std::string::npos) << msg;
}

// Every registered class has reference cases in tests/data/schedulers (a
// class added without them fails here).
TEST(SchedulerRegistry, EveryRegisteredClassHasReferenceCases) {
  std::set<std::string> covered;
  for (const auto& entry : std::filesystem::directory_iterator(data_path("schedulers"))) {
    auto file = SafetensorsFile::open(entry.path().string());
    const auto& meta = file->metadata();
    if (meta.count("config")) covered.insert(nlohmann::json::parse(meta.at("config")).at("_class_name"));
    if (meta.count("cases"))
      for (const auto& c : nlohmann::json::parse(meta.at("cases"))) covered.insert(c.at("config").at("_class_name"));
  }
  const std::vector<std::string> registered = scheduler_class_names();
  EXPECT_GE(registered.size(), 6u);  // the six of today, linked whole
  for (const std::string& name : registered) EXPECT_TRUE(covered.count(name)) << name << " has no reference cases";
}

}  // namespace
}  // namespace pab
