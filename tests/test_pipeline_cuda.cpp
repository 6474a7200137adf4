// The pipeline fixtures on the CUDA backend: f32 against the fp32 reference,
// and bf16 within 2x of the error diffusers' own bf16 pipeline run shows
// (tests/data/pipeline_bf16_baselines.json, dev/fixtures/pipeline_bf16_baselines.py).
// Also a seeded generation on the GPU equals the CPU's start. Skipped where no
// CUDA device starts.
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "io/safetensors.h"
#include "pipeline/replay.h"
#include "support/backend_testing.h"

namespace pab {
namespace {

using testing::data_path;
using testing::rel_l2;

// cuDNN's convolutions and attention and cuBLAS's GEMMs sum in other orders
// than the CPU; the VAE's deep convolution stack compounds that in the frames.
// (Set without a GPU run: the CPU path measures <= 2.1e-6.)
constexpr double kF32Tol = 1e-4;

class PipelineCuda : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    const std::optional<Device> d = testing::started_device("cuda");
    if (!d) GTEST_SKIP() << "no CUDA device";
    cuda_ = *d;
  }
  std::string dir() const { return data_path("fixtures/pipeline/" + GetParam()); }
  Device cuda_;
};

TEST_P(PipelineCuda, F32EveryStage) {
  PipelineCase c = load_pipeline_case(dir());
  auto out = replay_pipeline_case(c, LoadOptions{cuda_, DType::f32}, nullptr);
  Checkpoint ref = Checkpoint::open_file(dir() + "/reference.safetensors");
  for (const std::string& name : ref.names()) {
    if (ref.entry(name).dtype == DType::i64) continue;  // timesteps: the CPU test checks them
    EXPECT_TRUE(testing::close_rel(out.at(name), ref.load(name), kF32Tol)) << name;
  }
  EXPECT_FALSE(testing::close_rel(out.at("latents_final_nopab"), ref.load("latents_final_pab"), kF32Tol));
}

TEST_P(PipelineCuda, Bf16WithinTwiceDiffusersBf16Error) {
  std::ifstream f(data_path("pipeline_bf16_baselines.json"));
  nlohmann::json base = nlohmann::json::parse(f).at(GetParam());
  PipelineCase c = load_pipeline_case(dir());
  auto out = replay_pipeline_case(c, LoadOptions{cuda_, DType::bf16}, nullptr);
  Checkpoint ref = Checkpoint::open_file(dir() + "/reference.safetensors");
  for (const char* key : {"nopab", "pab"}) {
    for (const std::string stage : {"latents_final_", "frames_"}) {
      const std::string name = stage + key;
      const double err = rel_l2(out.at(name), ref.load(name));
      const double bound = 2.0 * base.at("rel_l2_" + name).get<double>();
      EXPECT_LE(err, bound) << name;
      std::printf("%s %s: bf16 relative L2 %.3e (diffusers bf16 %.3e)\n", GetParam().c_str(), name.c_str(), err,
                  bound / 2);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, PipelineCuda, ::testing::Values("cogvideox_ddim", "cogvideox_dpm", "latte"));

TEST(PipelineCudaSeeded, SameStartAsTheCpu) {
  const std::optional<Device> cuda = testing::started_device("cuda");
  if (!cuda) GTEST_SKIP() << "no CUDA device";
  const std::string model = data_path("fixtures/pipeline/cogvideox_dpm/model");
  VideoRequest r;
  r.prompt = "a panda";
  r.steps = 3;
  r.max_sequence_length = 16;
  auto cpu = VideoPipeline::open(model, LoadOptions{});
  auto gpu = VideoPipeline::open(model, LoadOptions{*cuda, DType::bf16});
  VideoPlan plan = cpu->plan(r);
  GeneratedVideo a = generate_video(*cpu, plan, 5, nullptr, TilingChoice::off);
  GeneratedVideo b = generate_video(*gpu, plan, 5, nullptr, TilingChoice::off);
  // The initial latents are the same draws, rounded to bf16 as diffusers keeps CogVideoX's latents.
  EXPECT_TRUE(testing::close_rel(b.initial_latents, a.initial_latents, 1e-2));
  EXPECT_LT(rel_l2(b.frames, a.frames), 0.05);
}

}  // namespace
}  // namespace pab
