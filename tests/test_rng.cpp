// TorchGenerator against torch.randn: the shared rng fixture (one draw per
// fresh generator) and tests/data/rng_sequences (successive draws on one
// generator, both normal-kernel variants), compared bit for bit.
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "pipeline/rng.h"
#include "support/testing.h"

namespace pab {
namespace {

// Number of elements whose bits differ (all of them if the sizes differ).
int64_t bit_mismatches(const std::vector<float>& a, const Tensor& ref) {
  std::vector<float> r = ref.to_vector();
  if (a.size() != r.size()) return int64_t(std::max(a.size(), r.size()));
  int64_t n = 0;
  for (size_t i = 0; i < a.size(); ++i) n += std::memcmp(&a[i], &r[i], sizeof(float)) != 0;
  return n;
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream f(path);
  return nlohmann::json::parse(f);
}

TEST(Rng, MatchesTorchRandnFixture) {
  const std::string dir = testing::data_path("fixtures/components/rng");
  Checkpoint ref = Checkpoint::open_file(dir + "/reference.safetensors");
  nlohmann::json c = read_json(dir + "/case.json");
  int cases = 0;
  for (const auto& [name, shape_json] : c["shapes"].items()) {
    std::vector<int64_t> shape = shape_json.get<std::vector<int64_t>>();
    for (uint64_t seed : c["seeds"].get<std::vector<uint64_t>>()) {
      Tensor expected = ref.load(cat("randn_", name, "_seed", seed));
      EXPECT_EQ(bit_mismatches(torch_randn(shape, seed), expected), 0) << name << " seed " << seed;
      ++cases;
    }
  }
  EXPECT_EQ(cases, 10);
}

TEST(Rng, OtherSeedOrKernelDoesNotMatch) {
  const std::string dir = testing::data_path("fixtures/components/rng");
  Checkpoint ref = Checkpoint::open_file(dir + "/reference.safetensors");
  const std::vector<int64_t> shape = {1, 13, 16, 6, 8};
  Tensor seed42 = ref.load("randn_latent_cog_seed42");
  EXPECT_EQ(bit_mismatches(torch_randn(shape, 0), seed42), seed42.numel());
  EXPECT_EQ(bit_mismatches(torch_randn(shape, 42 + (uint64_t(1) << 32)), seed42), 0) << "torch seeds with 32 bits";
  // The scalar kernel rounds differently on some elements, but agrees to ~1e-6.
  std::vector<float> scalar = torch_randn(shape, 42, TorchNormalKernel::scalar);
  EXPECT_GT(bit_mismatches(scalar, seed42), 100);
  EXPECT_TRUE(testing::close_rel(Tensor::from_vector(scalar, shape), seed42, 2e-6));
  // Below 16 elements both variants take the same double-precision path.
  EXPECT_EQ(bit_mismatches(torch_randn({7}, 0, TorchNormalKernel::scalar), ref.load("randn_n7_seed0")), 0);
}

TEST(Rng, SuccessiveDrawsMatchOneTorchGenerator) {
  const std::string dir = testing::data_path("rng_sequences");
  Checkpoint ref = Checkpoint::open_file(dir + "/reference.safetensors");
  nlohmann::json c = read_json(dir + "/case.json");
  for (auto [variant, kernel] : {std::pair{"avx2", TorchNormalKernel::avx2}, {"scalar", TorchNormalKernel::scalar}}) {
    TorchGenerator gen(c["seed"].get<uint64_t>(), kernel);
    size_t i = 0;
    for (const auto& shape : c["shapes"]) {
      Tensor expected = ref.load(cat(variant, "_", i));
      EXPECT_EQ(bit_mismatches(gen.randn(shape.get<std::vector<int64_t>>()), expected), 0) << variant << " draw " << i;
      ++i;
    }
  }
  // A fresh generator per draw loses the state: the second draw no longer matches.
  EXPECT_GT(bit_mismatches(torch_randn({3}, c["seed"].get<uint64_t>()), ref.load("avx2_1")), 0);
}

TEST(Rng, EmptyAndInvalidShapes) {
  EXPECT_TRUE(torch_randn({0, 4}, 1).empty());
  EXPECT_EQ(torch_randn({}, 1).size(), 1u);
  EXPECT_THROW(torch_randn({2, -1}, 1), Error);
}

}  // namespace
}  // namespace pab
