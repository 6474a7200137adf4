// Latte parity with the diffusers fixture (spatial, temporal and cross
// attention, learned sigma): every step's output without and with PAB, the
// final latents, loading errors and input checks.

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "backend/ops.h"
#include "io/safetensors.h"
#include "models/layers.h"
#include "models/random_weights.h"
#include "pipeline/replay.h"
#include "support/io_testing.h"
#include "support/testing.h"

namespace pab {
namespace {

namespace fs = std::filesystem;
using testing::close_rel;
using testing::data_path;

// fp32 against fp32: the implementations differ only in summation order and
// libm rounding; measured max error is ~2e-6 of the largest magnitude.
constexpr double kTol = 1e-5;

const std::string kCase = "fixtures/transformer/latte";

TEST(LatteParity, EveryStepWithoutAndWithPab) {
  const std::string dir = data_path(kCase);
  ReplayCase c = load_replay_case(dir);
  std::string summary;
  auto out = replay_case(c, LoadOptions{}, &summary);
  Checkpoint ref = Checkpoint::open_file(dir + "/reference.safetensors");
  const testing::ReferenceCheck check = testing::expect_reference(out, dir + "/reference.safetensors", kTol);
  EXPECT_EQ(check.compared, int(2 * c.timesteps.size() + 2));
  const double worst = check.worst;
  // learned sigma: 2 x 4 output channels on axis 1
  EXPECT_EQ(out.at("out_pab_0").shape(), (Shape{2, 8, 4, 8, 8}));
  RecordProperty("max_rel_error", std::to_string(worst));
  std::cout << "Latte max error relative to the largest magnitude: " << worst << "\n" << summary << "\n";

  // The test can fail: the run without PAB must not pass for the PAB reference.
  EXPECT_FALSE(close_rel(out.at("latents_final_nopab"), ref.load("latents_final_pab"), kTol));
  int differing_steps = 0;
  for (size_t i = 0; i < c.timesteps.size(); ++i) {
    std::string k = std::to_string(i);
    if (!close_rel(out.at("out_nopab_" + k), ref.load("out_pab_" + k), kTol)) ++differing_steps;
  }
  EXPECT_GT(differing_steps, 0);
}

// Every attention kind broadcasts in this case, so dropping any one of them
// from the PAB configuration must break parity with the PAB reference.
TEST(LatteParity, EachAttentionKindMatters) {
  const std::string dir = data_path(kCase);
  ReplayCase c = load_replay_case(dir);
  Checkpoint ref = Checkpoint::open_file(dir + "/reference.safetensors");
  auto model = load_transformer(dir + "/transformer");
  for (SiteKind k : {SiteKind::spatial, SiteKind::temporal, SiteKind::cross}) {
    ReplayCase partial = c;
    partial.pab.rule(k).range = 0;
    PabPolicy policy(partial.pab);
    ReplayRun run = run_replay(*model, partial, &policy);
    EXPECT_FALSE(close_rel(run.latents, ref.load("latents_final_pab"), kTol)) << site_kind_name(k);
    EXPECT_EQ(run.stats.total(k).reused, 0);
  }
}

// diffusers' FeedForward activations, against a direct evaluation of their
// definitions: gelu (erf), gelu-approximate (tanh), geglu (erf on the gate
// half), geglu-approximate (ApproximateGELU: x * sigmoid(1.702 x), ungated).
TEST(FeedForwardActivations, MatchTheirDefinitions) {
  const int64_t dim = 6, inner = 8;
  Tensor x = testing::random_tensor({2, 3, dim}, 5);
  RandomWeights weights(11);
  WeightLoader wl(weights, LoadOptions{});
  for (const char* name : {"gelu", "gelu-approximate", "geglu", "geglu-approximate"}) {
    FeedForward ff(wl, "ff", dim, inner, FeedForward::parse(name, "test"));
    const bool gated = std::string(name) == "geglu";
    ASSERT_EQ(ff.proj.w.dim(0), gated ? 2 * inner : inner) << name;
    std::vector<float> h = ops::linear(x, ff.proj.w, ff.proj.b).to_vector();
    const int64_t width = ff.proj.w.dim(0), rows = x.numel() / dim;
    std::vector<float> act(size_t(rows * inner));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < inner; ++j) {
        const double v = h[size_t(r * width + j)];
        double a = 0;
        if (std::string(name) == "gelu") a = 0.5 * v * (1 + std::erf(v / std::sqrt(2.0)));
        if (std::string(name) == "gelu-approximate")
          a = 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
        if (gated) {
          const double g = h[size_t(r * width + inner + j)];
          a = v * 0.5 * g * (1 + std::erf(g / std::sqrt(2.0)));
        }
        if (std::string(name) == "geglu-approximate") a = v / (1 + std::exp(-1.702 * v));
        act[size_t(r * inner + j)] = float(a);
      }
    Tensor expected = ops::linear(Tensor::from_vector(act, {2, 3, inner}), ff.out.w, ff.out.b);
    EXPECT_TRUE(close_rel(ff(x), expected, 1e-5)) << name;
  }
}

TEST(LatteForward, TextMaskHidesPaddedTokens) {
  auto model = load_transformer(data_path(kCase + "/transformer"));
  Checkpoint in = Checkpoint::open_file(data_path(kCase + "/inputs.safetensors"));
  Tensor x = in.load("latents0");
  TransformerInputs full;
  full.latents = ops::concat({x, x}, 0);
  full.text = in.load("encoder_hidden_states");  // [2, 10, 24]
  full.timestep = 500;
  // Masking the last 4 tokens equals dropping them (as LattePipeline's
  // mask_feature does for a single prompt).
  TransformerInputs masked = full;
  std::vector<float> mask(20, 1.0f);
  for (int i = 6; i < 10; ++i) mask[size_t(i)] = mask[size_t(10 + i)] = 0.0f;
  masked.text_mask = Tensor::from_vector(mask, {2, 10});
  TransformerInputs dropped = full;
  dropped.text = ops::slice(full.text, 1, 0, 6);
  Tensor a = model->forward(masked, nullptr), b = model->forward(dropped, nullptr), f = model->forward(full, nullptr);
  EXPECT_TRUE(close_rel(a, b, 1e-6));
  EXPECT_FALSE(close_rel(a, f, 1e-4));
}

// Against diffusers (dev/fixtures/latte_other_sizes.py): a 6x10 latent where the
// sample size is 8x8 (2D positions recomputed) and a single frame (no temporal positions).
TEST(LatteForward, OtherSizesMatchDiffusers) {
  auto model = load_transformer(data_path(kCase + "/transformer"));
  Checkpoint ref = Checkpoint::open_file(data_path("latte_other_sizes/reference.safetensors"));
  for (const std::string name : {"wide", "single_frame"}) {
    TransformerInputs in;
    in.latents = ref.load(name + "_latents");
    in.text = ref.load(name + "_text");
    in.timestep = double(ref.load(name + "_timestep", DType::i64).i64()[0]);
    Tensor out = model->forward(in, nullptr);
    EXPECT_TRUE(close_rel(out, ref.load(name + "_output"), kTol)) << name;
    // can fail: the same input at another timestep does not match
    in.timestep += 1;
    EXPECT_FALSE(close_rel(model->forward(in, nullptr), ref.load(name + "_output"), kTol)) << name;
  }
  // Frame counts other than video_length (which diffusers' fixed table rejects)
  // take the first rows of the same sincos table.
  TransformerInputs in;
  in.text = testing::random_tensor({1, 5, 24}, 1);
  in.timestep = 300;
  in.latents = testing::random_tensor({1, 4, 2, 6, 10}, 2);
  Tensor out = model->forward(in, nullptr);
  EXPECT_EQ(out.shape(), (Shape{1, 8, 2, 6, 10}));
  for (float v : out.to_vector()) ASSERT_TRUE(std::isfinite(v));
}

TEST(LatteForward, RejectsBadInputShapes) {
  auto model = load_transformer(data_path(kCase + "/transformer"));
  TransformerInputs in;
  in.text = Tensor::zeros({2, 10, 24});
  in.latents = Tensor::zeros({2, 4, 4, 7, 8});  // odd height
  EXPECT_THROW(model->forward(in, nullptr), Error);
  in.latents = Tensor::zeros({2, 3, 4, 8, 8});  // wrong channels
  EXPECT_THROW(model->forward(in, nullptr), Error);
  in.latents = Tensor::zeros({2, 4, 4, 8, 8});
  in.text = Tensor::zeros({2, 10, 32});  // caption width differs from caption_channels
  EXPECT_THROW(model->forward(in, nullptr), Error);
  in.text = Tensor::zeros({2, 10, 24});
  in.text_mask = Tensor::zeros({2, 9});
  EXPECT_THROW(model->forward(in, nullptr), Error);
}

// A copy of the fixture transformer with an edited config.json (null erases the key).
std::string edited_copy(const std::string& key, const nlohmann::json& value) {
  static testing::TempDir scratch;  // removed at exit
  fs::path tmp = scratch / key;
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  fs::path src = data_path(kCase + "/transformer");
  fs::copy(src / "diffusion_pytorch_model.safetensors", tmp / "diffusion_pytorch_model.safetensors");
  std::ifstream in(src / "config.json");
  nlohmann::json j = nlohmann::json::parse(in);
  if (value.is_null()) {
    j.erase(key);
  } else {
    j[key] = value;
  }
  std::ofstream(tmp / "config.json") << j.dump(1);
  return tmp.string();
}

std::string load_error(const std::string& dir) {
  try {
    load_transformer(dir);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(LatteLoad, UnsupportedConfigValuesAreClearErrors) {
  for (auto [key, value] : std::vector<std::pair<std::string, nlohmann::json>>{
           {"norm_type", "layer_norm"},
           {"activation_fn", "swiglu"},
           {"cross_attention_dim", 48},
           {"num_layers", "three"},
           {"patch_size", nullptr},
           {"caption_channels", nullptr},
           {"dropout", 0.1},
       }) {
    std::string e = load_error(edited_copy(key, value));
    EXPECT_NE(e.find(key), std::string::npos) << key << ": " << e;
    EXPECT_NE(e.find("config.json"), std::string::npos) << e;
  }
  // A config asking for more layers than the weights hold names the missing tensor.
  std::string missing = load_error(edited_copy("num_layers", 4));
  EXPECT_NE(missing.find("transformer_blocks.3"), std::string::npos) << missing;
  // A shape that disagrees with the config names the tensor.
  std::string shape = load_error(edited_copy("caption_channels", 7));
  EXPECT_NE(shape.find("caption_projection.linear_1.weight"), std::string::npos) << shape;
  // Without cross attention the weights' attn2 tensors are unused: an error
  // naming them, or with allow_unused_weights a warning, and the model has no cross sites.
  const std::string no_cross = edited_copy("cross_attention_dim", nullptr);
  std::string unused = load_error(no_cross);
  EXPECT_NE(unused.find("24 tensors that LatteTransformer3DModel does not use"), std::string::npos) << unused;
  EXPECT_NE(unused.find("transformer_blocks.0.attn2."), std::string::npos) << unused;
  LoadOptions allow;
  allow.allow_unused_weights = true;
  std::vector<std::string> warnings;
  allow.on_warning = [&](const std::string& w) { warnings.push_back(w); };
  auto model = load_transformer(no_cross, allow);
  auto kinds = model->site_kinds();
  EXPECT_EQ(std::count(kinds.begin(), kinds.end(), SiteKind::cross), 0);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("attn2"), std::string::npos) << warnings[0];
}

}  // namespace
}  // namespace pab
