// A new backend starts from the required ops: the test backend of
// support/minimal_backend.h has nothing else (every fusion runs as its
// reference composite), and the pipeline fixtures (T5, transformer, VAE,
// without and with PAB) run through it to diffusers' outputs within the CPU
// run's tolerance (test_pipeline_replay.cpp). Its op tests are
// test_backend_ops.cpp's, which registers it too.
#include "backend/backend.h"
#include "io/safetensors.h"
#include "pipeline/replay.h"
#include "support/minimal_backend.h"
#include "support/testing.h"

namespace pab {
namespace {

using testing::close_rel;
using testing::data_path;

const Device kMinimal = register_backend("minimal", testing::create_minimal_backend);

// As test_pipeline_replay.cpp's: fp32 on both sides.
constexpr double kTol = 1e-5;

TEST(MinimalBackend, HasADeviceOfItsOwnAndNoFusion) {
  EXPECT_NE(kMinimal, Device::cpu);
  EXPECT_EQ(device_named("minimal"), kMinimal);
  EXPECT_STREQ(device_name(kMinimal), "minimal");
  for (int i = 0; i < kFusionCount; ++i) EXPECT_FALSE(backend(kMinimal).supports(Fusion(i))) << fusion_name(Fusion(i));
  // Its tensors are its own, copied to and from the host.
  Tensor x = testing::random_tensor({3, 4}, 1);
  Tensor on = x.to(kMinimal);
  EXPECT_EQ(on.device(), kMinimal);
  EXPECT_NE(on.raw(), x.raw());
  EXPECT_TRUE(close_rel(on.to(Device::cpu), x, 0));
  EXPECT_EQ(Tensor::zeros({2}, DType::f32, kMinimal).to_vector(), (std::vector<float>{0, 0}));
}

// An unknown device is refused naming the ones this program has.
TEST(MinimalBackend, UnknownDevicesListTheRegisteredOnes) {
  const std::string e = testing::error_of([] { device_named("tpu"); });
  EXPECT_NE(e.find("unsupported device 'tpu'"), std::string::npos) << e;
  EXPECT_NE(e.find("cpu"), std::string::npos) << e;
  EXPECT_NE(e.find("minimal"), std::string::npos) << e;
}

class MinimalPipeline : public ::testing::TestWithParam<std::string> {};

TEST_P(MinimalPipeline, EveryStageMatchesTheReference) {
  const std::string dir = data_path("fixtures/pipeline/" + GetParam());
  PipelineCase c = load_pipeline_case(dir);
  Backend& be = backend(kMinimal);
  be.set_profiling(true);
  auto out = replay_pipeline_case(c, LoadOptions{kMinimal, DType::f32}, nullptr);
  const OpProfile profile = be.profile();
  be.set_profiling(false);

  Checkpoint ref = Checkpoint::open_file(dir + "/reference.safetensors");
  for (const std::string& name : ref.names()) {
    ASSERT_TRUE(out.count(name)) << "missing output " << name;
    if (ref.entry(name).dtype == DType::i64) continue;  // timesteps: no backend computes them
    EXPECT_TRUE(close_rel(out.at(name), ref.load(name), kTol)) << name;
  }
  // The test can fail: without PAB the PAB reference is not matched.
  EXPECT_FALSE(close_rel(out.at("latents_final_nopab"), ref.load("latents_final_pab"), kTol));
  // It all ran here: the text encoder's, the transformer's and the VAE's ops.
  auto calls = [&](const char* op) {
    auto it = profile.ops.find(op);
    return it == profile.ops.end() ? 0 : it->second.calls;
  };
  for (const char* op : {"embedding", "linear", "attention"}) EXPECT_GT(calls(op), 0) << op;
  EXPECT_GT(calls("conv2d") + calls("conv3d"), 0);
}

INSTANTIATE_TEST_SUITE_P(Cases, MinimalPipeline, ::testing::Values("cogvideox_ddim", "cogvideox_dpm", "latte"));

}  // namespace
}  // namespace pab
