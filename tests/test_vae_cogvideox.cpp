// CogVideoXVae against diffusers' AutoencoderKLCogVideoX: the component
// fixture, extra frame counts and tiled decodes (tests/data/vae, made by
// dev/fixtures/vae_references.py), the pipeline's decode_latents, and errors.
#include <cmath>
#include <filesystem>
#include <fstream>

#include "backend/ops.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "models/vae_cogvideox.h"
#include "support/testing.h"

namespace pab {
namespace {

// fp32 on both sides; the decoder is ~40 convolutions deep with group norms
// over up to 16 x 17 x 48 x 64 values, where summation order alone moves
// results by a few 1e-7 of the largest magnitude.
constexpr double kTol = 1e-5;

using testing::data_path;

std::string fixture(const std::string& rel) {
  return data_path("fixtures/components/vae_cogvideox/" + rel);
}

const CogVideoXVae& fixture_vae() {
  static std::unique_ptr<CogVideoXVae> vae = CogVideoXVae::load(fixture("vae"));
  return *vae;
}

CogVideoXDecodeOptions tiling_of(const nlohmann::json& t) {
  CogVideoXDecodeOptions o;
  if (t.is_null()) return o;
  o.tiled = true;
  o.tile_sample_min_height = t.value("tile_sample_min_height", 0);
  o.tile_sample_min_width = t.value("tile_sample_min_width", 0);
  o.tile_overlap_factor_height = t.value("tile_overlap_factor_height", 0.0);
  o.tile_overlap_factor_width = t.value("tile_overlap_factor_width", 0.0);
  return o;
}

// Decodes every case of tests/data/vae/<folder> and compares with diffusers.
void check_cases(const CogVideoXVae& vae, const std::string& folder) {
  JsonConfig cases = JsonConfig::load(data_path("vae/" + folder + "/case.json"));
  Checkpoint ref = Checkpoint::open_file(data_path("vae/" + folder + "/reference.safetensors"));
  for (const auto& [name, c] : cases.json().at("cases").items()) {
    SCOPED_TRACE(folder + "/" + name);
    Tensor z = ref.load("z_" + name);
    Tensor sample = ref.load("sample_" + name);
    Tensor out = vae.decode(z, tiling_of(c.at("tiling")));
    EXPECT_TRUE(testing::close_rel(out, sample, kTol));
    std::printf("%s/%s: z %s -> %s, rel err %.2e\n", folder.c_str(), name.c_str(), shape_str(z.shape()).c_str(),
                shape_str(out.shape()).c_str(), testing::compare(out, sample).rel());
  }
}

TEST(CogVideoXVae, ConfigValues) {
  const CogVideoXVaeConfig& c = fixture_vae().config();
  EXPECT_EQ(c.latent_channels, 8);
  EXPECT_EQ(c.block_out_channels.size(), 4u);
  EXPECT_EQ(c.temporal_compress_level, 2);
  EXPECT_EQ(c.spatial_factor(), 8);
  EXPECT_DOUBLE_EQ(fixture_vae().scaling_factor(), 1.15258426);
  // 4 latent frames per 4k + 1 pixel frames; the first batch of an odd count has 3
  EXPECT_EQ(fixture_vae().decoded_frames(1), 1);
  EXPECT_EQ(fixture_vae().decoded_frames(4), 16);
  EXPECT_EQ(fixture_vae().decoded_frames(5), 17);
  EXPECT_EQ(fixture_vae().decoded_frames(13), 49);
}

TEST(CogVideoXVae, MatchesFixture) {
  Checkpoint ref = Checkpoint::open_file(fixture("reference.safetensors"));
  Tensor z = ref.load("z"), sample = ref.load("sample");
  Tensor out = fixture_vae().decode(z);
  ASSERT_EQ(out.shape(), sample.shape());
  EXPECT_EQ(out.dim(2), fixture_vae().decoded_frames(z.dim(2)));
  EXPECT_TRUE(testing::close_rel(out, sample, kTol));
  std::printf("fixture: z %s -> %s, rel err %.2e\n", shape_str(z.shape()).c_str(), shape_str(out.shape()).c_str(),
              testing::compare(out, sample).rel());

  // The test can fail: one latent value moved by 1e-2 changes the decode well beyond the tolerance.
  Tensor moved = z.clone();
  moved.f32()[z.numel() / 2] += 0.01f;
  EXPECT_FALSE(testing::close_rel(fixture_vae().decode(moved), sample, kTol));
}

TEST(CogVideoXVae, MatchesFrameCountsAndTiledDecodes) {
  check_cases(fixture_vae(), "cogvideox_cases");
}

TEST(CogVideoXVae, MatchesModelWithChannelChanges) {
  auto vae = CogVideoXVae::load(data_path("vae/cogvideox_channels/vae"));
  EXPECT_TRUE(vae->config().use_post_quant_conv);
  check_cases(*vae, "cogvideox_channels");
}

TEST(CogVideoXVae, TiledDiffersFromUntiledAndFromOtherTiles) {
  // The tiled references are not the untiled decode (so the tiled test checks tiling).
  Checkpoint ref = Checkpoint::open_file(data_path("vae/cogvideox_cases/reference.safetensors"));
  Tensor untiled = fixture_vae().decode(ref.load("z_tiled_small"));
  EXPECT_FALSE(testing::close_rel(untiled, ref.load("sample_tiled_small"), kTol));
  CogVideoXDecodeOptions o;
  o.tiled = true;
  o.tile_sample_min_height = o.tile_sample_min_width = 32;
  o.tile_overlap_factor_height = o.tile_overlap_factor_width = 0.2;  // reference used 0.25
  EXPECT_FALSE(
      testing::close_rel(fixture_vae().decode(ref.load("z_tiled_small"), o), ref.load("sample_tiled_small"), kTol));
}

TEST(CogVideoXVae, DecodeLatentsMatchesPipelineFrames) {
  // CogVideoXPipeline: frames = (decode(latents / scaling) / 2 + 0.5).clamp(0, 1), F x C x H x W.
  std::string dir = data_path("fixtures/pipeline/cogvideox_ddim/");
  auto vae = CogVideoXVae::load(dir + "model/vae");
  Checkpoint ref = Checkpoint::open_file(dir + "reference.safetensors");
  Tensor video = vae->decode_latents(ref.load("latents_final_nopab"));  // [1, C, F, H, W]
  Tensor frames = ops::permute(video.reshape({video.dim(1), video.dim(2), video.dim(3), video.dim(4)}),
                               {1, 0, 2, 3});  // [F, C, H, W]
  float* p = frames.f32();
  for (int64_t i = 0; i < frames.numel(); ++i) p[i] = std::clamp(p[i] / 2.0f + 0.5f, 0.0f, 1.0f);
  EXPECT_TRUE(testing::close_rel(frames, ref.load("frames_nopab"), kTol));
  EXPECT_FALSE(testing::close_rel(frames, ref.load("frames_pab"), kTol));
}

TEST(CogVideoXVae, RejectsBadLatents) {
  const CogVideoXVae& vae = fixture_vae();
  EXPECT_THROW(vae.decode(Tensor::zeros({1, 8, 2, 6})), Error);             // rank 4
  EXPECT_THROW(vae.decode(Tensor::zeros({1, 4, 2, 6, 8})), Error);          // 4 channels, model has 8
  EXPECT_THROW(vae.decode(Tensor::zeros({1, 8, 0, 6, 8})), Error);          // no frames
  EXPECT_THROW(vae.decode_latents(Tensor::zeros({1, 8, 2, 6, 8})), Error);  // channels on axis 1, not 2
  try {
    vae.decode(Tensor::zeros({1, 4, 2, 6, 8}));
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[B, 8, F, H, W]"), std::string::npos) << e.what();
  }
  CogVideoXDecodeOptions o;
  o.tiled = true;
  o.tile_sample_min_height = o.tile_sample_min_width = 8;  // one latent per tile: no stride left
  EXPECT_THROW(vae.decode(Tensor::zeros({1, 8, 1, 6, 8}), o), Error);
}

// Writes the fixture config with `key` replaced by `value` into a fresh folder.
std::string config_with(const std::string& key, const nlohmann::json& value) {
  JsonConfig base = JsonConfig::load(fixture("vae/config.json"));
  nlohmann::json j = base.json();
  j[key] = value;
  std::string dir = (std::filesystem::temp_directory_path() / ("pab_vae_cogvideox_" + key)).string();
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/config.json") << j.dump();
  return dir;
}

TEST(CogVideoXVae, RejectsUnsupportedConfig) {
  auto expect_error = [](const std::string& key, const nlohmann::json& value) {
    std::string dir = config_with(key, value);
    try {
      CogVideoXVae::load(dir);
      ADD_FAILURE() << key << " = " << value.dump() << " was accepted";
    } catch (const Error& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find("config.json"), std::string::npos) << msg;
      EXPECT_NE(msg.find("'" + key + "'"), std::string::npos) << msg;
    }
    std::filesystem::remove_all(dir);
  };
  expect_error("temporal_compression_ratio", 3);
  expect_error("temporal_compression_ratio", 16);  // more than the 3 upsamplers can double
  expect_error("up_block_types", nlohmann::json::array({"CogVideoXUpBlock3D"}));
  expect_error("act_fn", "gelu");
  expect_error("norm_num_groups", 5);
  expect_error("use_post_quant_conv", true);  // latent_channels 8 != out_channels 3
  expect_error("_class_name", "AutoencoderKL");
  expect_error("latent_channels", "eight");
}

}  // namespace
}  // namespace pab
