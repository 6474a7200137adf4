// Open-Sora 1.2 from prompt to frames against the original (VideoSys
// 4cce477, tests/data/open_sora made by dev/fixtures/make_open_sora_pipeline.py):
// the VAE's decode at several frame counts, the prompt's tokens and
// embeddings, the seeded initial latents, the latents after every step and
// the frames without PAB, with the published defaults and with a PAB window
// over the schedule plus MLP broadcast; `pab assemble` and its refusals; the
// named sizes and lengths; bad requests.
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "backend/ops.h"
#include "cache/cache_method.h"
#include "cache/pab.h"
#include "cache/pab_config.h"
#include "core/registry.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "pipeline/assemble.h"
#include "pipeline/rng.h"
#include "pipeline/video_pipeline.h"
#include "support/backend_testing.h"
#include "support/io_testing.h"
#include "support/testing.h"

namespace pab {
namespace {

namespace fs = std::filesystem;
using testing::close_rel;
using testing::compare;
using testing::data_path;

// fp32 on both sides, errors relative to the largest magnitude. Latents and
// prompt embeddings: measured up to 1.7e-6. Decoded frames: up to 1.1e-5
// (the VAE alone, from given latents, up to 8e-6): the tiny VAE normalises
// groups of 2 channels, which magnifies summation-order differences, so
// frames get 3e-5. PAB moves the final latents by 9e-2 (the defaults) and
// 2e-1 (the wide window) of theirs, so a run that ignored PAB fails by far.
constexpr double kTol = 1e-5;
constexpr double kFramesTol = 3e-5;

std::string dir() {
  return data_path("open_sora");
}
const Checkpoint& reference() {
  static Checkpoint c = Checkpoint::open_file(dir() + "/reference.safetensors");
  return c;
}
const nlohmann::json& case_json() {
  static nlohmann::json j = nlohmann::json::parse(std::ifstream(dir() + "/case.json"));
  return j;
}

// The hub-layout folders, assembled as a user would.
std::string assembled(const testing::TempDir& tmp) {
  AssembleInput in;
  in.recipe = "open-sora-1.2";
  in.folders = {
      {"transformer", dir() + "/transformer"}, {"vae", dir() + "/vae"}, {"text_encoder", dir() + "/text_encoder"}};
  in.output = tmp / "open-sora";
  assemble_pipeline(in);
  return in.output;
}

std::unique_ptr<VideoVae> load_vae(const LoadOptions& opts = {}) {
  const JsonConfig config = JsonConfig::load(dir() + "/vae/config.json");
  const VaeEntry& e = Registry<VaeEntry>::get().at("VideoAutoencoderPipeline", "VAE");
  static Checkpoint weights = Checkpoint::open_dir(dir() + "/vae");
  return e.load(config, weights, opts);
}

TEST(OpenSoraVae, DecodesAsTheOriginalAtEachFrameCount) {
  auto vae = load_vae();
  const auto facts = Registry<VaeEntry>::get()
                         .at("VideoAutoencoderPipeline", "VAE")
                         .facts(JsonConfig::load(dir() + "/vae/config.json"));
  for (int frames : {1, 4, 17, 19, 34, 40}) {
    SCOPED_TRACE(frames);
    const Tensor z = reference().load(cat("vae_z_", frames));
    EXPECT_EQ(facts->latent_frames(frames), z.dim(2));
    VaeDecodeOptions o;
    o.frames = frames;
    const Tensor x = vae->decode_video(z, o);
    const Tensor want = reference().load(cat("vae_frames_", frames));
    EXPECT_TRUE(close_rel(x, want, kFramesTol));
    std::cout << frames << " frames: max error " << compare(x, want).rel() << " of the largest magnitude\n";
  }
  // The test can fail: one frame fewer decodes other frames (its chunk pads one more in front).
  VaeDecodeOptions o;
  o.frames = 18;
  const Tensor x = vae->decode_video(reference().load("vae_z_19"), o);
  ASSERT_EQ(x.dim(2), 18);
  EXPECT_FALSE(
      close_rel(ops::slice(x, 2, 17, 18), ops::slice(reference().load("vae_frames_19"), 2, 17, 18), kFramesTol));
}

TEST(OpenSoraVae, RefusesFrameCountsTheLatentsCannotHold) {
  auto vae = load_vae();
  VaeDecodeOptions o;
  o.frames = 40;  // 12 latent frames, not 6
  EXPECT_NE(testing::error_of([&] {
              vae->decode_video(reference().load("vae_z_19"), o);
            }).find("40 frames do not make 6 latent frames"),
            std::string::npos);
  o.tiled = true;
  o.frames = 19;
  EXPECT_NE(testing::error_of([&] { vae->decode_video(reference().load("vae_z_19"), o); }).find("no tiled decoding"),
            std::string::npos);
}

TEST(OpenSoraVae, ConfigErrorsNameTheKey) {
  nlohmann::json base = nlohmann::json::parse(std::ifstream(dir() + "/vae/config.json"));
  const VaeEntry& e = Registry<VaeEntry>::get().at("VideoAutoencoderPipeline", "VAE");
  auto error = [&](const char* key, nlohmann::json value, const char* sub = nullptr) {
    nlohmann::json j = base;
    if (sub)
      j[sub][key] = value;
    else
      j[key] = value;
    return testing::error_of([&] { e.facts(JsonConfig(j, "vae/config.json")); });
  };
  EXPECT_NE(error("scale", {1, 2}).find("'scale'"), std::string::npos);
  EXPECT_NE(error("cal_loss", true).find("'cal_loss'"), std::string::npos);
  EXPECT_NE(error("num_groups", 3, "vae_temporal").find("'num_groups'"), std::string::npos);
  EXPECT_NE(error("temporal_downsample", {true}, "vae_temporal").find("'temporal_downsample'"), std::string::npos);
  EXPECT_NE(error("type", "VAE_Temporal_Other", "vae_temporal").find("VAE_Temporal_SD"), std::string::npos);
  // Weights of another size than the config says fail naming the tensor.
  nlohmann::json wide = base;
  wide["vae_temporal"]["filters"] = 8;
  Checkpoint weights = Checkpoint::open_dir(dir() + "/vae");
  EXPECT_NE(testing::error_of([&] { e.load(JsonConfig(wide, "vae/config.json"), weights, {}); }).find("temporal_vae."),
            std::string::npos);
}

// The pipeline's steps for one run of the reference.
struct RunResult {
  std::vector<Tensor> latents;  // after each step
  Tensor final_latents, frames;
  CacheStats stats;
};

RunResult generate(VideoPipeline& pipe, const VideoPlan& plan, CachePolicy* cache) {
  RunResult run;
  GenerationEvents events;
  events.on_step = [&](const StepReport& s) { run.latents.push_back(s.latents->to(Device::cpu)); };
  GeneratedVideo v =
      generate_video(pipe, plan, case_json()["seed"].get<uint64_t>(), cache, TilingChoice::automatic, events);
  run.final_latents = v.final_latents;
  run.frames = v.frames;
  run.stats = v.stats;
  return run;
}

VideoRequest fixture_request() {
  const nlohmann::json& c = case_json();
  VideoRequest r;
  r.prompt = c["prompt"].get<std::string>();
  r.height = c["height"].get<int>();
  r.width = c["width"].get<int>();
  r.frames = c["frames"].get<int>();
  r.steps = c["steps"].get<int>();
  r.guidance = c["guidance"].get<double>();
  return r;
}

std::unique_ptr<CachePolicy> policy_for(const std::string& run, const VideoPipeline& pipe) {
  if (run == "nopab") return nullptr;
  if (run == "pab_default") return make_cache_policy({}, pipe.transformer_class(), pipe.transformer_sites());
  return std::make_unique<PabPolicy>(parse_pab_config(case_json()[run], "case.json " + run));
}

class OpenSoraRun : public ::testing::TestWithParam<std::string> {};

TEST_P(OpenSoraRun, EveryStepAndTheFramesMatchTheOriginal) {
  testing::TempDir tmp;
  auto pipe = VideoPipeline::open(assembled(tmp), LoadOptions{});
  const VideoPlan plan = pipe->plan(fixture_request());
  EXPECT_EQ(plan.latents, reference().load("latents0").shape());
  auto cache = policy_for(GetParam(), *pipe);
  const RunResult run = generate(*pipe, plan, cache.get());
  const Checkpoint& ref = reference();
  double worst = 0;
  ASSERT_EQ(run.latents.size(), size_t(plan.steps));
  for (int i = 0; i < plan.steps; ++i) {
    const Tensor want = ref.load(cat("latents_step_", i, "_", GetParam()));
    EXPECT_TRUE(close_rel(run.latents[size_t(i)], want, kTol)) << "step " << i;
    worst = std::max(worst, compare(run.latents[size_t(i)], want).rel());
  }
  const Tensor frames = ref.load("frames_" + GetParam());
  EXPECT_TRUE(close_rel(run.frames, frames, kFramesTol));
  std::cout << GetParam() << ": max error of the latents " << worst << ", of the frames "
            << compare(run.frames, frames).rel() << " of the largest magnitude\n";
  if (GetParam() != "nopab") {
    // The test can fail: without PAB the PAB reference is not reached.
    EXPECT_FALSE(close_rel(ref.load("latents_final_nopab"), ref.load("latents_final_" + GetParam()), kTol));
    EXPECT_GT(run.stats.total().reused, 0);
  }
}

INSTANTIATE_TEST_SUITE_P(Runs, OpenSoraRun, ::testing::Values("nopab", "pab_default", "pab"));

// The same runs on the CUDA backend in f32, as tests/test_pipeline_cuda.cpp
// holds the other pipelines (cuDNN and cuBLAS sum in other orders). Skipped
// where no CUDA device starts.
constexpr double kCudaF32Tol = 1e-4;

TEST_P(OpenSoraRun, OnCudaInF32) {
  const std::optional<Device> cuda = testing::started_device("cuda");
  if (!cuda) GTEST_SKIP() << "no CUDA device";
  testing::TempDir tmp;
  auto pipe = VideoPipeline::open(assembled(tmp), LoadOptions{*cuda, DType::f32});
  const VideoPlan plan = pipe->plan(fixture_request());
  auto cache = policy_for(GetParam(), *pipe);
  const RunResult run = generate(*pipe, plan, cache.get());
  ASSERT_EQ(run.latents.size(), size_t(plan.steps));
  for (int i = 0; i < plan.steps; ++i)
    EXPECT_TRUE(
        close_rel(run.latents[size_t(i)], reference().load(cat("latents_step_", i, "_", GetParam())), kCudaF32Tol))
        << "step " << i;
  EXPECT_TRUE(close_rel(run.frames, reference().load("frames_" + GetParam()), kCudaF32Tol));
}

TEST(OpenSoraPipeline, SeededNoisePromptAndScheduleAreTheOriginals) {
  testing::TempDir tmp;
  auto pipe = VideoPipeline::open(assembled(tmp), LoadOptions{});
  const VideoPlan plan = pipe->plan(fixture_request());
  TorchNoise noise(case_json()["seed"].get<uint64_t>());
  EXPECT_TRUE(close_rel(pipe->initial_latents(plan, noise), reference().load("latents0"), 0));
  const PromptEmbeddings e = pipe->encode_prompt(plan);
  EXPECT_TRUE(close_rel(e.prompt, reference().load("prompt_embeds"), kTol));
  EXPECT_TRUE(close_rel(e.mask, reference().load("prompt_mask").to(DType::f32), 0));
  EXPECT_FALSE(e.negative.defined());  // the null caption stands in
  pipe->scheduler().set_timesteps(plan.steps, [&] {
    TimestepOptions t;
    t.height = plan.condition_height;
    t.width = plan.condition_width;
    t.frames = plan.frames;
    return t;
  }());
  const std::vector<double> ts = pipe->scheduler().timesteps();
  const std::vector<float> want = reference().load("timesteps_nopab").to_vector();
  ASSERT_EQ(ts.size(), want.size());
  for (size_t i = 0; i < ts.size(); ++i) EXPECT_EQ(float(ts[i]), want[i]) << i;
}

TEST(OpenSoraPipeline, NamedSizesAndLengthsAreTheOriginals) {
  testing::TempDir tmp;
  auto pipe = VideoPipeline::open(assembled(tmp), LoadOptions{});
  VideoRequest r;
  r.prompt = "a cat";
  VideoPlan p = pipe->plan(r);  // generate's defaults: 480p 9:16, 51 frames, the scheduler's 30 steps and guidance 7
  EXPECT_EQ(p.condition_height, 480);
  EXPECT_EQ(p.condition_width, 854);
  EXPECT_EQ(p.width, 848);  // 854 // 8 latent columns
  EXPECT_EQ(p.frames, 51);
  EXPECT_EQ(p.latents, (Shape{1, 4, 15, 60, 106}));
  EXPECT_EQ(p.steps, 30);
  EXPECT_EQ(p.guidance, 7.0);
  // Open-Sora writes ratios as height:width, so 16:9 is portrait.
  r.resolution = "720p";
  r.aspect_ratio = "16:9";
  r.duration = "4s";
  p = pipe->plan(r);
  EXPECT_EQ(p.condition_height, 1280);
  EXPECT_EQ(p.condition_width, 720);
  EXPECT_EQ(p.frames, 102);
  EXPECT_EQ(p.latents[2], 30);
  r.resolution = "144p";
  r.aspect_ratio = "1:1";
  r.duration.reset();
  r.frames = 20;  // 17 -> 5, 3 more -> 1
  p = pipe->plan(r);
  EXPECT_EQ(p.condition_height, 192);
  EXPECT_EQ(p.latents[2], 6);
}

TEST(OpenSoraPipeline, BadRequestsAreRefusedBeforeAnyWork) {
  testing::TempDir tmp;
  auto pipe = VideoPipeline::open(assembled(tmp), LoadOptions{});
  auto error = [&](const std::function<void(VideoRequest&)>& edit) {
    VideoRequest r;
    r.prompt = "a cat";
    edit(r);
    return testing::error_of([&] { pipe->plan(r); });
  };
  EXPECT_NE(error([](VideoRequest& r) { r.resolution = "1080p"; }).find("144p, 240p, 360p, 480p, 720p"),
            std::string::npos);
  EXPECT_NE(error([](VideoRequest& r) { r.aspect_ratio = "5:4"; }).find("9:16"), std::string::npos);
  EXPECT_NE(error([](VideoRequest& r) { r.duration = "3s"; }).find("2s"), std::string::npos);
  EXPECT_NE(error([](VideoRequest& r) { r.duration = "2s", r.frames = 51; }).find("either"), std::string::npos);
  EXPECT_NE(error([](VideoRequest& r) { r.resolution = "480p", r.height = 480; }).find("either"), std::string::npos);
  EXPECT_NE(error([](VideoRequest& r) { r.height = 7; }).find("height 7"), std::string::npos);
  EXPECT_NE(error([](VideoRequest& r) { r.negative_prompt = "blurry"; }).find("null caption"), std::string::npos);
  EXPECT_NE(error([](VideoRequest& r) { r.prompt = "a cat {\"reference_path\": \"x.png\"}"; }).find("reference"),
            std::string::npos);
  EXPECT_NE(error([](VideoRequest& r) { r.max_sequence_length = 226; }).find("300"), std::string::npos);
  EXPECT_NE(error([](VideoRequest& r) { r.dynamic_cfg = true; }).find("dynamic CFG"), std::string::npos);
}

TEST(OpenSoraAssemble, RefusesWrongAndPickledComponents) {
  testing::TempDir tmp;
  auto error = [&](std::map<std::string, std::string> folders, std::string out = "") {
    AssembleInput in;
    in.recipe = "open-sora-1.2";
    in.folders = {
        {"transformer", dir() + "/transformer"}, {"vae", dir() + "/vae"}, {"text_encoder", dir() + "/text_encoder"}};
    for (auto& [k, v] : folders) in.folders[k] = v;
    in.output = out.empty() ? tmp / "out" : out;
    return testing::error_of([&] { assemble_pipeline(in); });
  };
  // A VAE where the transformer belongs, a T5 where the VAE belongs.
  EXPECT_NE(error({{"transformer", dir() + "/vae"}}).find("is a STDiT3"), std::string::npos);
  EXPECT_NE(error({{"vae", dir() + "/text_encoder"}}).find("VideoAutoencoderPipeline"), std::string::npos);
  EXPECT_NE(error({{"vae", tmp / "missing"}}).find("missing"), std::string::npos);
  // PyTorch pickles: refused with the command that converts them.
  fs::create_directories(tmp / "pickled");
  fs::copy_file(dir() + "/text_encoder/config.json", tmp / "pickled/config.json");
  std::ofstream(tmp / "pickled/pytorch_model.bin") << "not read";
  const std::string pickled = error({{"text_encoder", tmp / "pickled"}});
  EXPECT_NE(pickled.find("PyTorch pickles"), std::string::npos) << pickled;
  EXPECT_NE(pickled.find("from transformers import T5EncoderModel"), std::string::npos) << pickled;
  // An existing folder that pab did not write is left alone.
  fs::create_directories(tmp / "mine");
  std::ofstream(tmp / "mine/notes.txt") << "mine";
  EXPECT_NE(error({}, tmp / "mine").find("not a folder pab assembled"), std::string::npos);
  EXPECT_TRUE(fs::exists(tmp / "mine/notes.txt"));
  // Nothing was written by the refused runs; an assembly may be redone in place.
  EXPECT_FALSE(fs::exists(tmp / "out"));
  EXPECT_EQ(error({}), "");
  EXPECT_EQ(error({}), "");
  EXPECT_EQ(error({{"unknown", dir()}}).find("no such component") != std::string::npos, true);
}

TEST(OpenSoraPab, PublishedDefaultsIncludeMlpBroadcastFittedToTheModel) {
  const PabConfig full = default_pab_config("STDiT3");
  ASSERT_EQ(full.mlp_spatial.size(), 3u);
  EXPECT_EQ(full.mlp_spatial[0].timestep, 676);
  EXPECT_EQ(full.mlp_temporal[2].timestep, 864);
  EXPECT_EQ(full.mlp_spatial[1].blocks, (std::vector<int>{0, 1, 2, 3, 4}));
  // The fixture model has 2 blocks: it keeps blocks 0 and 1 of each entry.
  testing::TempDir tmp;
  auto pipe = VideoPipeline::open(assembled(tmp), LoadOptions{});
  const PabConfig fitted = fit_published_blocks(full, pipe->transformer_sites());
  EXPECT_EQ(fitted.mlp_temporal[0].blocks, (std::vector<int>{0, 1}));
  fitted.validate(pipe->transformer_sites());
}

}  // namespace
}  // namespace pab
