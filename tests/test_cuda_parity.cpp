// The transformer fixtures on the CUDA backend: f32 to the CPU tolerance, and
// bf16 within 2x of the error diffusers' own bf16 run shows (docs/performance.md, "Targets").
// Skipped where no CUDA device starts.
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "io/safetensors.h"
#include "parallel/world.h"
#include "pipeline/replay.h"
#include "support/backend_testing.h"

namespace pab {
namespace {

using testing::data_path;
using testing::rel_l2;

class CudaParity : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    const std::optional<Device> d = testing::started_device("cuda");
    if (!d) GTEST_SKIP() << "no CUDA device";
    cuda_ = *d;
  }
  Device cuda_;
};

TEST_P(CudaParity, F32EveryStep) {
  const std::string dir = data_path("fixtures/transformer/" + GetParam());
  ReplayCase c = load_replay_case(dir);
  auto out = replay_case(c, LoadOptions{cuda_, DType::f32}, nullptr);
  testing::expect_reference(out, dir + "/reference.safetensors", 1e-5);
  Checkpoint ref = Checkpoint::open_file(dir + "/reference.safetensors");
  EXPECT_FALSE(testing::close_rel(out.at("latents_final_nopab"), ref.load("latents_final_pab"), 1e-5));
}

TEST_P(CudaParity, Bf16WithinTwiceDiffusersBf16Error) {
  const std::string dir = data_path("fixtures/transformer/" + GetParam());
  std::ifstream f(data_path("bf16_baselines.json"));
  nlohmann::json base = nlohmann::json::parse(f).at(GetParam());
  ReplayCase c = load_replay_case(dir);
  auto out = replay_case(c, LoadOptions{cuda_, DType::bf16}, nullptr);
  Checkpoint ref = Checkpoint::open_file(dir + "/reference.safetensors");
  for (const char* key : {"nopab", "pab"}) {
    std::string name = std::string("latents_final_") + key;
    double err = rel_l2(out.at(name), ref.load(name));
    double bound = 2.0 * base.at(std::string("rel_l2_final_") + key).get<double>();
    EXPECT_LE(err, bound) << name;
    std::printf("%s %s: bf16 relative L2 %.3e (diffusers bf16 %.3e)\n", GetParam().c_str(), key, err, bound / 2);
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, CudaParity,
                         ::testing::Values("cogvideox_2b_style", "cogvideox_2b_style_small_input", "cogvideox_5b_style",
                                           "cogvideox_1_5_style", "latte"));

// Sequence parallel on CUDA through `pab replay --gpus 2`: over NCCL where two
// GPUs are visible, else with both ranks on one GPU through host memory (the
// partitioning is the same; only the transport differs). Same tolerances.
class CudaSequenceParallel : public CudaParity {};

TEST_P(CudaSequenceParallel, F32AndBf16) {
  const std::string dir = data_path("fixtures/transformer/" + GetParam());
  const std::string comm = backend(cuda_).device_count() >= 2 ? "nccl" : "host";
  std::ifstream f(data_path("bf16_baselines.json"));
  nlohmann::json base = nlohmann::json::parse(f).at(GetParam());
  Checkpoint ref = Checkpoint::open_file(dir + "/reference.safetensors");
  for (const std::string flags : {"--dtype f32", "--dtype bf16", "--dtype bf16 --cfg-parallel"}) {
    const std::string out = ::testing::TempDir() + "/cuda_sp_" + GetParam() + ".safetensors";
    std::string log;
    ASSERT_EQ(testing::run_command(testing::pab_binary() + " replay " + dir + " -o " + out + " --device cuda " + flags +
                                       " --gpus 2 --comm " + comm,
                                   &log),
              0)
        << log;
    Checkpoint got = Checkpoint::open_file(out);
    for (const char* key : {"nopab", "pab"}) {
      std::string name = std::string("latents_final_") + key;
      if (flags == "--dtype f32") {
        EXPECT_TRUE(testing::close_rel(got.load(name), ref.load(name), 1e-5)) << name;
      } else {
        EXPECT_LE(rel_l2(got.load(name), ref.load(name)), 2.0 * base.at(std::string("rel_l2_final_") + key).get<double>())
            << name;
      }
    }
    std::printf("%s --gpus 2 --comm %s %s: checked\n", GetParam().c_str(), comm.c_str(), flags.c_str());
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, CudaSequenceParallel, ::testing::Values("cogvideox_5b_style", "latte"));

// The NCCL calls themselves on one GPU (a world of one rank: grouped
// send/recv to itself, all-gather, split), where pab is built with NCCL.
TEST(Nccl, CollectivesOnOneGpu) {
  const std::optional<Device> cuda = testing::started_device("cuda");
  if (!cuda) GTEST_SKIP() << "no CUDA device";
  std::unique_ptr<Communicator> comm;
  try {
    comm = nccl_communicator(0, 1, new_nccl_id());
  } catch (const Error& e) {
    GTEST_SKIP() << e.what();
  }
  Tensor x = testing::random_tensor({4, 6, 8}, 3).to(DType::bf16).to(*cuda);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), *cuda);
  comm->all_to_all(x.raw(), y.raw(), x.nbytes(), *cuda);
  EXPECT_TRUE(testing::close_rel(y, x, 0));
  Tensor z = Tensor::empty(x.shape(), x.dtype(), *cuda);
  comm->all_gather(x.raw(), z.raw(), x.nbytes(), *cuda);
  EXPECT_TRUE(testing::close_rel(z, x, 0));
  std::unique_ptr<Communicator> sub = comm->split(0, 0);
  EXPECT_EQ(sub->size(), 1);
  sub->all_gather(x.raw(), z.raw(), x.nbytes(), *cuda);
  EXPECT_TRUE(testing::close_rel(z, x, 0));
  EXPECT_EQ(comm->stats().all_to_all, 1);
}

}  // namespace
}  // namespace pab
