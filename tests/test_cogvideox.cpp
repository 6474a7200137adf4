// CogVideoX parity with the diffusers fixtures: every step's output without
// and with PAB, and the final latents, for the four transformer cases.
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "models/embeddings.h"
#include "pipeline/replay.h"
#include "support/io_testing.h"
#include "support/testing.h"

namespace pab {
namespace {

namespace fs = std::filesystem;
using testing::close_rel;
using testing::data_path;

// fp32 against fp32: the implementations differ only in summation order and
// libm rounding; measured max error is ~6e-7 of the largest magnitude.
constexpr double kTol = 1e-5;

class CogVideoXParity : public ::testing::TestWithParam<std::string> {};

TEST_P(CogVideoXParity, EveryStepWithoutAndWithPab) {
  const std::string dir = data_path("fixtures/transformer/" + GetParam());
  ReplayCase c = load_replay_case(dir);
  std::string summary;
  auto out = replay_case(c, LoadOptions{}, &summary);
  EXPECT_EQ(testing::expect_reference(out, dir + "/reference.safetensors", kTol).compared,
            int(2 * c.timesteps.size() + 2));
  Checkpoint ref = Checkpoint::open_file(dir + "/reference.safetensors");

  // The test can fail: the run without PAB must not pass for the PAB reference.
  Tensor pab_ref = ref.load("latents_final_pab");
  EXPECT_FALSE(close_rel(out.at("latents_final_nopab"), pab_ref, kTol));
  int differing_steps = 0;
  for (size_t i = 0; i < c.timesteps.size(); ++i) {
    std::string k = std::to_string(i);
    if (!close_rel(out.at("out_nopab_" + k), ref.load("out_pab_" + k), kTol)) ++differing_steps;
  }
  EXPECT_GT(differing_steps, 0);
}

INSTANTIATE_TEST_SUITE_P(Cases, CogVideoXParity,
                         ::testing::Values("cogvideox_2b_style", "cogvideox_2b_style_small_input", "cogvideox_5b_style",
                                           "cogvideox_1_5_style"));

// The rotary tables we compute equal what the reference pipeline passed.
TEST(CogVideoXRope, MatchesFixtureTables) {
  struct Case {
    const char* name;
    int frames, grid_h, grid_w, base_h, base_w;
    const char* type;
  };
  // grid = latent size / patch 2; base = sample size / patch; 1.5: frames / patch_t 2
  for (Case k : {Case{"cogvideox_5b_style", 3, 6, 8, 6, 8, "linspace"},
                 Case{"cogvideox_1_5_style", 2, 6, 8, 6, 8, "slice"}}) {
    Checkpoint in = Checkpoint::open_file(data_path(std::string("fixtures/transformer/") + k.name + "/inputs.safetensors"));
    RopeTables t = rotary_pos_embed_3d(16, k.grid_h, k.grid_w, k.frames, k.base_h, k.base_w, k.type, k.base_h, k.base_w);
    EXPECT_TRUE(close_rel(t.cos, in.load("rope_cos"), 1e-6)) << k.name;
    EXPECT_TRUE(close_rel(t.sin, in.load("rope_sin"), 1e-6)) << k.name;
  }
}

// A copy of a fixture transformer with an edited config.json.
std::string edited_copy(const std::string& case_name, const std::string& key, const nlohmann::json& value) {
  static testing::TempDir scratch;  // removed at exit
  fs::path tmp = scratch / key;
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  fs::path src = data_path("fixtures/transformer/" + case_name + "/transformer");
  fs::copy(src / "diffusion_pytorch_model.safetensors", tmp / "diffusion_pytorch_model.safetensors");
  std::ifstream in(src / "config.json");
  nlohmann::json j = nlohmann::json::parse(in);
  if (value.is_null() && key != "ofs_embed_dim") {
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

TEST(CogVideoXLoad, UnsupportedConfigValuesAreClearErrors) {
  EXPECT_NE(load_error(edited_copy("cogvideox_2b_style", "activation_fn", "swiglu")).find("activation_fn"),
            std::string::npos);
  EXPECT_NE(load_error(edited_copy("cogvideox_2b_style", "timestep_activation_fn", "mish")).find("timestep_activation_fn"),
            std::string::npos);
  EXPECT_NE(load_error(edited_copy("cogvideox_2b_style", "patch_size_t", 2)).find("patch_size_t"), std::string::npos);
  EXPECT_NE(load_error(edited_copy("cogvideox_2b_style", "num_layers", "four")).find("num_layers"), std::string::npos);
  // A config asking for more layers than the weights hold names the missing tensor.
  std::string missing = load_error(edited_copy("cogvideox_2b_style", "num_layers", 5));
  EXPECT_NE(missing.find("transformer_blocks.4"), std::string::npos) << missing;
  // A shape that disagrees with the config names the tensor and both shapes.
  std::string shape = load_error(edited_copy("cogvideox_2b_style", "text_embed_dim", 7));
  EXPECT_NE(shape.find("patch_embed.text_proj.weight"), std::string::npos) << shape;
  EXPECT_NE(load_error(edited_copy("cogvideox_2b_style", "_class_name", "NoSuchModel")).find("NoSuchModel"),
            std::string::npos);
}

TEST(CogVideoXForward, RejectsBadInputShapes) {
  auto model = load_transformer(data_path("fixtures/transformer/cogvideox_2b_style/transformer"));
  TransformerInputs in;
  in.text = Tensor::zeros({2, 12, 48});
  in.latents = Tensor::zeros({2, 3, 8, 11, 16});  // odd height
  EXPECT_THROW(model->forward(in, nullptr), Error);
  in.latents = Tensor::zeros({2, 3, 5, 12, 16});  // wrong channels
  EXPECT_THROW(model->forward(in, nullptr), Error);
  in.latents = Tensor::zeros({2, 3, 8, 12, 16});
  in.text = Tensor::zeros({2, 10, 48});  // text length differs from the positional table
  EXPECT_THROW(model->forward(in, nullptr), Error);
}

}  // namespace
}  // namespace pab
