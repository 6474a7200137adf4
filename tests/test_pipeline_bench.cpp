// The whole-pipeline benchmark: the cogvideox-2b-pipeline workload's configs
// describe CogVideoX-2b (checked without running it: it needs a GPU), and the
// benchmark's code path runs end to end on the CPU with the tiny fixture
// configs and generated weights.
#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>

#include "models/random_weights.h"
#include "models/t5.h"
#include "models/vae_cogvideox.h"
#include "pipeline/bench.h"
#include "support/testing.h"

namespace pab {
namespace {

nlohmann::json read_json(const std::string& rel) {
  std::ifstream in(testing::data_path(rel));
  return nlohmann::json::parse(in);
}

TEST(PipelineBench, CogVideoX2bWorkloadDescribesTheRealModel) {
  PipelineBenchWorkload w = pipeline_bench_workload("cogvideox-2b-pipeline", 50);
  T5Config t5 = T5Config::from_json(JsonConfig(w.text_encoder, "t5"));
  EXPECT_EQ(t5.d_model, 4096);
  EXPECT_EQ(t5.num_layers, 24);
  EXPECT_EQ(t5.num_heads, 64);
  EXPECT_EQ(t5.d_ff, 10240);
  EXPECT_EQ(t5.vocab_size, 32128);
  EXPECT_TRUE(t5.gated);
  EXPECT_EQ(t5.act, Unary::gelu_tanh);
  CogVideoXVaeConfig vae = CogVideoXVae::config_from_json(JsonConfig(w.vae, "vae"));
  EXPECT_EQ(vae.spatial_factor(), 8);
  EXPECT_EQ(vae.decoded_frames(13), 49);

  PipelineParts parts;
  parts.pipeline_class = w.pipeline_class;
  parts.transformer = {JsonConfig(w.transformer, "transformer"), std::make_shared<RandomWeights>(1)};
  parts.vae = {JsonConfig(w.vae, "vae"), std::make_shared<RandomWeights>(2)};
  parts.scheduler = JsonConfig(w.scheduler, "scheduler");
  auto pipe = VideoPipeline::create(parts, LoadOptions{});  // configs only: no weights are made here
  VideoPlan plan = pipe->plan(w.request);
  EXPECT_EQ(plan.latents, (Shape{1, 13, 16, 60, 90}));
  EXPECT_EQ(plan.text_length, 226);
  EXPECT_TRUE(pipe->tiles(plan, w.tiling));
  // The automatic choice decodes 480x720 untiled in half precision only.
  EXPECT_TRUE(pipe->tiles(plan, TilingChoice::automatic));
  LoadOptions half;
  half.dtype = DType::bf16;
  auto bf16 = VideoPipeline::create(parts, half);
  EXPECT_FALSE(bf16->tiles(bf16->plan(w.request), TilingChoice::automatic));
  EXPECT_TRUE(bf16->tiles(bf16->plan(w.request), TilingChoice::on));
  VideoRequest larger = w.request;
  larger.height = 768;
  larger.width = 1360;
  EXPECT_TRUE(bf16->tiles(bf16->plan(larger), TilingChoice::automatic));
  pipe->scheduler().set_timesteps(plan.steps);
  EXPECT_EQ(pipe->scheduler().timesteps().front(), 999);
  EXPECT_EQ(pipe->scheduler().timesteps().back(), 19);
  EXPECT_THROW(pipeline_bench_workload("cogvideox-5b-pipeline"), Error);
}

// Open-Sora 1.2 at VideoSys's defaults: its 30-step shifted schedule in bf16
// holds the published MLP broadcast's keys, so the default PAB uses it.
TEST(PipelineBench, OpenSoraWorkloadIsVideoSysDefaultRun) {
  const BenchWorkload w = bench_workload("open-sora-1.2", 30);
  EXPECT_EQ(w.latents, (Shape{2, 4, 15, 60, 106}));
  ASSERT_EQ(w.timesteps.size(), 30u);
  std::vector<int> ints;
  for (double t : w.timesteps) ints.push_back(int(t));
  // int(t.to(bf16)) of RFLOW's timesteps for 480x854, 51 frames (VideoSys in bf16)
  EXPECT_EQ(
      std::vector<int>(ints.begin(), ints.begin() + 18),
      (std::vector<int>{1000, 992, 984, 976, 968, 960, 952, 940, 932, 920, 908, 892, 880, 864, 848, 828, 808, 788}));
  EXPECT_EQ(w.pab.mlp_spatial.size(), 3u);
  w.pab.validate(transformer_site_layout(JsonConfig(w.config, "open-sora-1.2")));
  EXPECT_TRUE(w.conditional_first);
  EXPECT_EQ(w.fps, 24);
}

// Open-Sora-Plan v1.2 at VideoSys's defaults (29x480p, 100 Euler ancestral
// steps) with OpenSoraPlanV120PABConfig's spatial and cross broadcast.
TEST(PipelineBench, OpenSoraPlanWorkloadIsVideoSysDefaultRun) {
  const BenchWorkload w = bench_workload("open-sora-plan-1.2", 100);
  EXPECT_EQ(w.latents, (Shape{2, 4, 8, 60, 80}));
  EXPECT_EQ(w.text, (Shape{2, 512, 4096}));
  ASSERT_EQ(w.timesteps.size(), 100u);
  // EulerAncestralDiscreteScheduler's linspace spacing: 999 down to 0
  EXPECT_EQ(w.timesteps.front(), 999);
  EXPECT_EQ(w.timesteps.back(), 0);
  EXPECT_NEAR(w.timesteps[1], 999 - 999.0 / 99, 1e-4);
  EXPECT_EQ(w.pab.rule(SiteKind::spatial).range, 2);
  EXPECT_EQ(w.pab.rule(SiteKind::cross).range, 6);
  EXPECT_FALSE(w.pab.rule(SiteKind::temporal).enabled());
  w.pab.validate(transformer_site_layout(JsonConfig(w.config, "open-sora-plan-1.2")));
  EXPECT_FALSE(w.conditional_first);
  EXPECT_EQ(w.guidance, 7.5);
}

// Open-Sora-Plan v1.1 at VideoSys's defaults: PNDM's 150 steps are 159
// evaluations, and its published MLP broadcast keys (738 ... 426, every 24)
// are timesteps of that schedule (multiples of 1000 // 150 = 6).
TEST(PipelineBench, OpenSoraPlanV110WorkloadHoldsItsMlpKeys) {
  const BenchWorkload w = bench_workload("open-sora-plan-1.1", 150);
  EXPECT_EQ(w.latents, (Shape{2, 4, 17, 64, 64}));
  ASSERT_EQ(w.timesteps.size(), 159u);
  ASSERT_EQ(w.pab.mlp_spatial.size(), 14u);
  for (const MlpBroadcast& e : w.pab.mlp_spatial)
    EXPECT_NE(std::find(w.timesteps.begin(), w.timesteps.end(), double(e.timestep)), w.timesteps.end()) << e.timestep;
  w.pab.validate(transformer_site_layout(JsonConfig(w.config, "open-sora-plan-1.1")));
}

TEST(PipelineBench, RunsOnTinyConfigs) {
  const std::string model = "fixtures/pipeline/cogvideox_ddim/model/";
  PipelineBenchWorkload w;
  w.name = "tiny";
  w.transformer = read_json(model + "transformer/config.json");
  w.text_encoder = read_json(model + "text_encoder/config.json");
  w.vae = read_json(model + "vae/config.json");
  w.scheduler = read_json(model + "scheduler/scheduler_config.json");
  w.request.steps = 2;
  w.request.guidance = 6;
  w.pab.rule(SiteKind::spatial) = BroadcastRule{2, 100, 800, {}};
  PipelineBenchReport r = run_pipeline_bench(w, LoadOptions{}, true);
  ASSERT_EQ(r.runs.size(), 2u);
  EXPECT_EQ(r.plan.latents, (Shape{1, 3, 8, 4, 6}));
  for (const PipelineBenchRun& run : r.runs) {
    EXPECT_GT(run.denoise_seconds, 0);
    EXPECT_GT(run.decode_seconds, 0);
    EXPECT_NEAR(run.total_seconds, run.text_seconds + run.denoise_seconds + run.decode_seconds, 1e-12);
  }
  // Trailing timesteps 999, 499: the second step is inside (100, 800), every block broadcasts.
  EXPECT_EQ(r.runs[1].stats.total(SiteKind::spatial).reused, 3);
  std::string text = pipeline_bench_text(r);
  EXPECT_NE(text.find("T5 encode"), std::string::npos) << text;
  EXPECT_NE(text.find("PAB speed-up"), std::string::npos) << text;
  nlohmann::json j = nlohmann::json::parse(pipeline_bench_json(r));
  EXPECT_TRUE(j["pab"].contains("vae_decode_s"));
}

}  // namespace
}  // namespace pab
