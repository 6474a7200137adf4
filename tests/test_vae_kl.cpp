// KlVae against diffusers' AutoencoderKL: the component fixture, a larger
// batch (tests/data/vae/kl_cases, made by dev/fixtures/vae_references.py),
// LattePipeline's frame-by-frame decode_latents, old attention weight names,
// and errors.
#include <filesystem>
#include <fstream>

#include "backend/ops.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "models/vae_kl.h"
#include "support/testing.h"

namespace pab {
namespace {

// fp32 on both sides; about 15 convolutions, group norms and one attention
// deep, where summation order moves results by a few 1e-7 of the largest magnitude.
constexpr double kTol = 1e-5;

using testing::data_path;

std::string fixture(const std::string& rel) {
  return data_path("fixtures/components/vae_kl/" + rel);
}

const KlVae& fixture_vae() {
  static std::unique_ptr<KlVae> vae = KlVae::load(fixture("vae"));
  return *vae;
}

TEST(KlVae, MatchesFixture) {
  Checkpoint ref = Checkpoint::open_file(fixture("reference.safetensors"));
  Tensor z = ref.load("z"), sample = ref.load("sample");
  Tensor out = fixture_vae().decode(z);
  EXPECT_TRUE(testing::close_rel(out, sample, kTol));
  std::printf("fixture: z %s -> %s, rel err %.2e\n", shape_str(z.shape()).c_str(), shape_str(out.shape()).c_str(),
              testing::compare(out, sample).rel());

  // The test can fail: one latent value moved by 1e-2 changes the decode well beyond the tolerance.
  Tensor moved = z.clone();
  moved.f32()[z.numel() / 2] += 0.01f;
  EXPECT_FALSE(testing::close_rel(fixture_vae().decode(moved), sample, kTol));
}

TEST(KlVae, MatchesLargerBatch) {
  Checkpoint ref = Checkpoint::open_file(data_path("vae/kl_cases/reference.safetensors"));
  Tensor out = fixture_vae().decode(ref.load("z_batch_5"));
  EXPECT_TRUE(testing::close_rel(out, ref.load("sample_batch_5"), kTol));
  std::printf("batch_5: rel err %.2e\n", testing::compare(out, ref.load("sample_batch_5")).rel());
}

TEST(KlVae, DecodeLatentsMatchesLattePipelineFrames) {
  // LattePipeline: frames = (decode(latents / scaling) / 2 + 0.5).clamp(0, 1), F x C x H x W.
  std::string dir = data_path("fixtures/pipeline/latte/");
  auto vae = KlVae::load(dir + "model/vae");
  Checkpoint ref = Checkpoint::open_file(dir + "reference.safetensors");
  Tensor latents = ref.load("latents_final_nopab");  // [1, C, F, h, w]
  Tensor video = vae->decode_latents(latents);       // [1, C', F, H, W]
  Tensor frames = ops::permute(video.reshape({video.dim(1), video.dim(2), video.dim(3), video.dim(4)}),
                               {1, 0, 2, 3});  // [F, C', H, W]
  float* p = frames.f32();
  for (int64_t i = 0; i < frames.numel(); ++i) p[i] = std::clamp(p[i] / 2.0f + 0.5f, 0.0f, 1.0f);
  EXPECT_TRUE(testing::close_rel(frames, ref.load("frames_nopab"), kTol));
  EXPECT_FALSE(testing::close_rel(frames, ref.load("frames_pab"), kTol));

  // Chunking only bounds memory: every chunk size gives the same frames up to
  // GEMM blocking (which follows the batch size).
  for (int64_t chunk : {1, 3}) EXPECT_TRUE(testing::close_rel(vae->decode_latents(latents, chunk), video, 1e-6));
}

TEST(KlVae, AcceptsOldAttentionNames) {
  // Checkpoints from before diffusers 0.14 name the projections query/key/value/proj_attn.
  Checkpoint ckpt = Checkpoint::open_dir(fixture("vae"));
  std::map<std::string, Tensor> renamed;
  const std::vector<std::pair<std::string, std::string>> names = {
      {"to_q", "query"}, {"to_k", "key"}, {"to_v", "value"}, {"to_out.0", "proj_attn"}};
  for (const std::string& n : ckpt.names()) {
    std::string m = n;
    for (const auto& [now, old] : names) {
      std::string from = "attentions.0." + now + ".";
      if (size_t at = m.find(from); at != std::string::npos) m.replace(at, from.size(), "attentions.0." + old + ".");
    }
    renamed[m] = ckpt.load(n);
  }
  ASSERT_TRUE(renamed.count("decoder.mid_block.attentions.0.proj_attn.weight"));
  std::string dir = (std::filesystem::temp_directory_path() / "pab_vae_kl_old_names").string();
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(fixture("vae/config.json"), dir + "/config.json",
                             std::filesystem::copy_options::overwrite_existing);
  write_safetensors(dir + "/diffusion_pytorch_model.safetensors", renamed);
  auto vae = KlVae::load(dir);
  Checkpoint ref = Checkpoint::open_file(fixture("reference.safetensors"));
  EXPECT_TRUE(testing::close_rel(vae->decode(ref.load("z")), ref.load("sample"), kTol));
  std::filesystem::remove_all(dir);
}

TEST(KlVae, RejectsBadLatents) {
  const KlVae& vae = fixture_vae();
  EXPECT_THROW(vae.decode(Tensor::zeros({1, 4, 8})), Error);                // rank 3
  EXPECT_THROW(vae.decode(Tensor::zeros({1, 8, 8, 8})), Error);             // 8 channels, model has 4
  EXPECT_THROW(vae.decode(Tensor::zeros({0, 4, 8, 8})), Error);             // empty
  EXPECT_THROW(vae.decode_latents(Tensor::zeros({1, 2, 4, 8, 8})), Error);  // [B, F, C, ...] layout
  EXPECT_THROW(vae.decode_latents(Tensor::zeros({1, 4, 2, 8, 8}), 0), Error);
  try {
    vae.decode(Tensor::zeros({1, 8, 8, 8}));
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[N, 4, H, W]"), std::string::npos) << e.what();
  }
}

TEST(KlVae, RejectsUnsupportedConfig) {
  auto expect_error = [](const std::string& key, const nlohmann::json& value) {
    nlohmann::json j = JsonConfig::load(fixture("vae/config.json")).json();
    j[key] = value;
    std::string dir = (std::filesystem::temp_directory_path() / ("pab_vae_kl_" + key)).string();
    std::filesystem::create_directories(dir);
    std::ofstream(dir + "/config.json") << j.dump();
    try {
      KlVae::load(dir);
      ADD_FAILURE() << key << " = " << value.dump() << " was accepted";
    } catch (const Error& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find("config.json"), std::string::npos) << msg;
      EXPECT_NE(msg.find("'" + key + "'"), std::string::npos) << msg;
    }
    std::filesystem::remove_all(dir);
  };
  expect_error("up_block_types", nlohmann::json::array({"UpDecoderBlock2D", "AttnUpDecoderBlock2D"}));
  expect_error("act_fn", "gelu");
  expect_error("norm_num_groups", 3);
  expect_error("_class_name", "AutoencoderKLCogVideoX");
  expect_error("block_out_channels", nlohmann::json::array());
}

}  // namespace
}  // namespace pab
