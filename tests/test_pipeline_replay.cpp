// The three pipeline fixtures (CogVideoX with DDIM, CogVideoX with DPM and
// dynamic CFG, Latte) through pab replay's pipeline path: prompt embeddings,
// timesteps, the latents after every step, the final latents and the decoded
// frames, without and with PAB. Also: the per-step guidance scales, and the
// PAB policy reset after every generation, errors included.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "models/random_weights.h"
#include "pipeline/replay.h"
#include "support/testing.h"

namespace pab {
namespace {

namespace fs = std::filesystem;
using testing::close_rel;
using testing::compare;
using testing::data_path;

// fp32 on both sides: the implementations differ in summation order and libm
// rounding. Measured: embeddings <= 5e-7, latents <= 1e-6, frames <= 2.1e-6 of
// the largest magnitude; 1e-5 leaves room for other CPUs' OpenBLAS kernels.
constexpr double kTol = 1e-5;

std::string case_dir(const std::string& name) {
  return data_path("fixtures/pipeline/" + name);
}

class PipelineReplay : public ::testing::TestWithParam<std::string> {};

TEST_P(PipelineReplay, EveryStageWithoutAndWithPab) {
  PipelineCase c = load_pipeline_case(case_dir(GetParam()));
  std::string summary;
  auto out = replay_pipeline_case(c, LoadOptions{}, &summary);
  Checkpoint ref = Checkpoint::open_file(case_dir(GetParam()) + "/reference.safetensors");

  std::map<std::string, double> worst;  // by stage
  for (const std::string& name : ref.names()) {
    ASSERT_TRUE(out.count(name)) << "missing output " << name;
    Tensor expected = ref.load(name, ref.entry(name).dtype);
    if (expected.dtype() == DType::i64) {
      ASSERT_EQ(out.at(name).shape(), expected.shape()) << name;
      EXPECT_EQ(std::vector<int64_t>(out.at(name).i64(), out.at(name).i64() + out.at(name).numel()),
                std::vector<int64_t>(expected.i64(), expected.i64() + expected.numel()))
          << name;
      continue;
    }
    EXPECT_TRUE(close_rel(out.at(name), expected, kTol)) << name;
    std::string stage = name.starts_with("latents_step_") ? "latents_step_*" : name;
    worst[stage] = std::max(worst[stage], compare(out.at(name), expected).rel());
  }
  EXPECT_EQ(out.size(), ref.size()) << "outputs the reference does not have";
  std::printf("%s: %s\n", GetParam().c_str(), summary.c_str());
  for (const auto& [stage, rel] : worst) std::printf("  %-24s max rel %.3g\n", stage.c_str(), rel);

  // The test can fail: without PAB the PAB references are not matched, at
  // every stage after the first broadcast.
  EXPECT_FALSE(close_rel(out.at("latents_final_nopab"), ref.load("latents_final_pab"), kTol));
  EXPECT_FALSE(close_rel(out.at("frames_nopab"), ref.load("frames_pab"), kTol));
  EXPECT_FALSE(close_rel(out.at("prompt_embeds"), ref.load("negative_prompt_embeds"), kTol));
}

INSTANTIATE_TEST_SUITE_P(Cases, PipelineReplay, ::testing::Values("cogvideox_ddim", "cogvideox_dpm", "latte"));

// The guidance scale at each step as diffusers used it (recorded by
// dev/fixtures/make_scheduler_cases.py): constant, or CogVideoX's dynamic CFG.
TEST(PipelineGuidance, PerStepScalesMatchDiffusers) {
  for (const std::string name : {"cogvideox_ddim", "cogvideox_dpm", "latte"}) {
    PipelineCase c = load_pipeline_case(case_dir(name));
    auto pipe = VideoPipeline::open(case_dir(name) + "/model", LoadOptions{});
    VideoPlan plan = pipe->plan(c.request);
    std::vector<double> scales;
    ReplayNoise given({c.latents}), noise(c.noise);
    PromptEmbeddings embeds = pipe->encode_prompt(plan);
    pipe->denoise(plan, embeds, pipe->initial_latents(plan, given), nullptr, &noise,
                  [&](const StepReport& r) { scales.push_back(r.guidance); });
    Tensor expected = Checkpoint::open_file(data_path("schedulers/pipeline_" + name + ".safetensors"))
                          .load("guidance_scales", DType::f64);
    ASSERT_EQ(int64_t(scales.size()), expected.numel()) << name;
    const double* e = static_cast<const double*>(expected.raw());
    for (size_t i = 0; i < scales.size(); ++i) EXPECT_NEAR(scales[i], e[i], 1e-12) << name << " step " << i;
    // Can fail: dynamic CFG does change the scale from step to step.
    if (c.request.dynamic_cfg) {
      EXPECT_GT(std::abs(scales[1] - scales[0]), 1.0) << name;
    }
  }
}

// The policy forgets its caches and counts after a generation, and also when
// the loop fails part-way (here: the recorded noise runs out at step 3).
TEST(PipelinePab, PolicyIsResetAfterSuccessAndFailure) {
  PipelineCase c = load_pipeline_case(case_dir("cogvideox_dpm"));
  auto pipe = VideoPipeline::open(case_dir("cogvideox_dpm") + "/model", LoadOptions{});
  VideoPlan plan = pipe->plan(c.request);
  PromptEmbeddings embeds = pipe->encode_prompt(plan);
  PabPolicy policy(c.pab);

  ReplayNoise given({c.latents}), noise(c.noise);
  size_t cached_during = 0;
  DenoiseResult ok =
      pipe->denoise(plan, embeds, pipe->initial_latents(plan, given), &policy, &noise,
                    [&](const StepReport&) { cached_during = std::max(cached_during, policy.cached_bytes()); });
  EXPECT_GT(cached_during, 0u);
  EXPECT_GT(ok.stats.total().reused, 0);
  EXPECT_EQ(policy.cached_bytes(), 0u);
  EXPECT_TRUE(policy.stats().per_step.empty());

  ReplayNoise given2({c.latents});
  ReplayNoise short_noise(std::vector<Tensor>(c.noise.begin(), c.noise.begin() + 4));
  int steps_done = 0;
  EXPECT_THROW(pipe->denoise(plan, embeds, pipe->initial_latents(plan, given2), &policy, &short_noise,
                             [&](const StepReport&) { ++steps_done; }),
               Error);
  EXPECT_GT(steps_done, 1);
  EXPECT_EQ(policy.cached_bytes(), 0u);
  EXPECT_TRUE(policy.stats().per_step.empty());
}

// `pab replay` on a pipeline case writes the reference's names.
TEST(PipelineReplayCli, WritesEveryReferenceTensor) {
  const std::string out =
      (fs::temp_directory_path() / ("pab_replay_" + std::to_string(::getpid()) + ".safetensors")).string();
  std::string log;
  ASSERT_EQ(testing::run_command(testing::pab_binary() + " replay " + case_dir("latte") + " -o " + out, &log), 0)
      << log;
  EXPECT_NE(log.find("LattePipeline"), std::string::npos) << log;
  Checkpoint written = Checkpoint::open_file(out);
  Checkpoint ref = Checkpoint::open_file(case_dir("latte") + "/reference.safetensors");
  for (const std::string& name : ref.names()) EXPECT_TRUE(written.has(name)) << name;
  EXPECT_TRUE(close_rel(written.load("frames_pab"), ref.load("frames_pab"), kTol));
  fs::remove(out);
}

// CogVideoX 1.5 (temporal patches of 2): 9 frames make 3 latent frames, padded
// to 4 for the transformer; the padding frame is dropped before decoding. (No
// diffusers reference exists for this; shapes and the frame count are checked.)
TEST(PipelineShapes, CogVideoX15PadsLatentFramesToItsTemporalPatch) {
  PipelineParts parts = read_pipeline_folder(case_dir("cogvideox_ddim") + "/model");
  const std::string t15 = data_path("fixtures/transformer/cogvideox_1_5_style/transformer");
  parts.transformer = {JsonConfig::load(t15 + "/config.json"), std::make_shared<Checkpoint>(Checkpoint::open_dir(t15))};
  nlohmann::json t5 = parts.text_encoder->config.json();
  t5["d_model"] = 48;  // the 1.5 fixture's text_embed_dim
  parts.text_encoder = ComponentSource{JsonConfig(t5, "t5 with d_model 48"), std::make_shared<RandomWeights>(3)};
  auto pipe = VideoPipeline::create(parts, LoadOptions{});
  VideoRequest r;
  r.prompt = "a cat";
  r.steps = 2;
  r.height = 32;
  r.width = 48;
  VideoPlan plan = pipe->plan(r);
  EXPECT_EQ(plan.latents, (Shape{1, 4, 8, 4, 6}));
  EXPECT_EQ(plan.padding_frames, 1);
  EXPECT_EQ(plan.frames, 9);
  GeneratedVideo v = generate_video(*pipe, plan, 0, nullptr, TilingChoice::off);
  EXPECT_EQ(v.frames.shape(), (Shape{9, 3, 32, 48}));
}

TEST(PipelineCase, UnsupportedCallArgumentsAreErrors) {
  const fs::path dir = fs::temp_directory_path() / ("pab_case_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  auto error_for = [&](const nlohmann::json& call) {
    nlohmann::json j = nlohmann::json::parse(read_file(case_dir("latte") + "/case.json"));
    for (const auto& [k, v] : call.items()) j["call"][k] = v;
    std::ofstream(dir / "case.json") << j.dump();
    fs::copy_file(case_dir("latte") + "/inputs.safetensors", dir / "inputs.safetensors",
                  fs::copy_options::overwrite_existing);
    try {
      load_pipeline_case(dir.string());
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(error_for({{"clean_caption", true}}).find("clean_caption"), std::string::npos);
  EXPECT_NE(error_for({{"num_images_per_prompt", 2}}).find("num_images_per_prompt"), std::string::npos);
  EXPECT_EQ(error_for({}), "");
  fs::remove_all(dir);
}

}  // namespace
}  // namespace pab
