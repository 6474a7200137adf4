// CausalVae against Open-Sora-Plan's CausalVAEModel as VideoSys 4cce477 runs
// it, v1.2 and v1.1: tiny random models decoding 1, 3 and 4 latent frames,
// tiled with small tiles and with the pipeline's tiles (tests/data/vae/causal_v120
// and causal_v110, made by dev/fixtures/make_causal_vae_cases.py); how the
// version is told from the config; config, weight and latent errors.
#include <filesystem>
#include <fstream>

#include "backend/ops.h"
#include "core/registry.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "models/vae_causal.h"
#include "support/backend_testing.h"
#include "support/testing.h"

namespace pab {
namespace {

// fp32 on both sides; the decoders are ~20 convolutions deep with group
// norms and trilinear interpolations, where summation order alone moves
// results by a few 1e-7 of the largest magnitude.
constexpr double kTol = 1e-5;

using testing::data_path;

std::string folder(const std::string& version) {
  return data_path("vae/causal_" + version);
}

// Each loaded once; a static made by the load is destroyed before the host
// memory its tensors came from (a map made empty before it would outlive it).
const CausalVae& fixture_vae(const std::string& version) {
  if (version == "v120") {
    static std::unique_ptr<CausalVae> v120 = CausalVae::load(folder("v120") + "/vae");
    return *v120;
  }
  static std::unique_ptr<CausalVae> v110 = CausalVae::load(folder("v110") + "/vae");
  return *v110;
}

CausalVaeDecodeOptions tiling_of(const nlohmann::json& t) {
  CausalVaeDecodeOptions o;
  if (t.is_null()) return o;
  o.tiled = true;
  o.tiles.tile_sample_min_size = t.at("tile_sample_min_size").get<int64_t>();
  o.tiles.tile_latent_min_size = t.at("tile_latent_min_size").get<int64_t>();
  o.tiles.tile_latent_min_size_t = t.at("tile_latent_min_size_t").get<int64_t>();
  o.tiles.tile_overlap_factor = t.at("tile_overlap_factor").get<double>();
  return o;
}

std::string temp_dir(const std::string& name) {
  std::string dir = (std::filesystem::temp_directory_path() / ("pab_vae_causal_" + name)).string();
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// A folder with the fixture's weights and its config edited by `edits`.
std::string folder_with(const std::string& version, const nlohmann::json& edits, const std::string& name) {
  nlohmann::json j = JsonConfig::load(folder(version) + "/vae/config.json").json();
  j.update(edits);
  std::string dir = temp_dir(name);
  std::ofstream(dir + "/config.json") << j.dump();
  std::filesystem::copy_file(folder(version) + "/vae/diffusion_pytorch_model.safetensors",
                             dir + "/diffusion_pytorch_model.safetensors");
  return dir;
}

// Decodes every case of tests/data/vae/causal_<version> with decode_video
// (the pipeline's scaling), its tile settings and its config edits, and
// compares with VideoSys; every case must also fail for latents moved by 1e-2
// at one position (so that each comparison can fail).
void check_cases(const std::string& version) {
  JsonConfig cases = JsonConfig::load(folder(version) + "/case.json");
  ASSERT_DOUBLE_EQ(cases.json().at("scale").get<double>(), CausalVae::kLatentScale);
  Checkpoint ref = Checkpoint::open_file(folder(version) + "/reference.safetensors");
  for (const auto& [name, c] : cases.json().at("cases").items()) {
    SCOPED_TRACE(version + "/" + name);
    std::unique_ptr<CausalVae> edited;
    const CausalVae* vae = &fixture_vae(version);
    if (!c.at("config").empty()) {
      LoadOptions opts;
      opts.allow_unused_weights = true;  // e.g. post_quant_conv without use_quant_layer
      std::string dir = folder_with(version, c.at("config"), version + "_" + name);
      edited = CausalVae::load(dir, opts);
      std::filesystem::remove_all(dir);
      vae = edited.get();
    }
    Tensor z = ref.load("z_" + name);
    Tensor sample = ref.load("sample_" + name);
    // decode_video divides by the latent scale; decode() takes what the original's decode takes.
    Tensor out = vae->decode(ops::div(z, Tensor::scalar(float(CausalVae::kLatentScale))), tiling_of(c.at("tiling")));
    ASSERT_EQ(out.shape(), sample.shape());
    EXPECT_EQ(out.dim(2), vae->config().decoded_frames(z.dim(2)));
    EXPECT_TRUE(testing::close_rel(out, sample, kTol));
    std::printf("%s/%s: z %s -> %s, rel err %.2e\n", version.c_str(), name.c_str(), shape_str(z.shape()).c_str(),
                shape_str(out.shape()).c_str(), testing::compare(out, sample).rel());
    if (c.at("tiling").is_null()) {
      EXPECT_TRUE(testing::close_rel(vae->decode_video(z, {}), sample, kTol));
    }

    Tensor moved = z.clone();
    moved.f32()[z.numel() / 2] += 0.01f;
    Tensor off =
        vae->decode(ops::div(moved, Tensor::scalar(float(CausalVae::kLatentScale))), tiling_of(c.at("tiling")));
    EXPECT_FALSE(testing::close_rel(off, sample, kTol));
  }
}

TEST(CausalVae, TellsTheVersionsApartFromTheConfig) {
  const CausalVaeConfig& v12 = fixture_vae("v120").config();
  EXPECT_EQ(v12.version, CausalVaeVersion::v120);
  EXPECT_EQ(v12.latent_channels(), 4);
  EXPECT_EQ(v12.spatial_factor(), 4);
  EXPECT_EQ(v12.temporal_factor(), 2);
  EXPECT_TRUE(v12.use_quant_layer);
  const CausalVaeConfig& v11 = fixture_vae("v110").config();
  EXPECT_EQ(v11.version, CausalVaeVersion::v110);
  EXPECT_EQ(v11.spatial_factor(), 2);
  EXPECT_EQ(v11.temporal_factor(), 4);  // TimeUpsample2x and TimeUpsampleRes2x

  // Without use_quant_layer a config is v1.2 when it uses a v1.2-only block.
  nlohmann::json j = JsonConfig::load(folder("v120") + "/vae/config.json").json();
  j.erase("use_quant_layer");
  EXPECT_EQ(CausalVae::config_from_json(JsonConfig(j, "v120 without use_quant_layer")).version, CausalVaeVersion::v120);
  // With use_quant_layer, v1.1's blocks are refused (test RejectsUnsupportedConfig); without it, v1.1.
  j["decoder_spatial_upsample"] = {"", "SpatialUpsample2x", "SpatialUpsample2x"};
  EXPECT_EQ(CausalVae::config_from_json(JsonConfig(j, "edited")).version, CausalVaeVersion::v110);

  // The release's sizes: 4x8x8, 29 frames of 8 latent frames, 93 of 24.
  auto release = [](const std::string& version, bool v12) {
    nlohmann::json r = JsonConfig::load(folder(version) + "/vae/config.json").json();
    r["hidden_size"] = 128;
    r["hidden_size_mult"] = {1, 2, 4, 4};
    r["decoder_resnet_blocks"] = std::vector<std::string>(4, "ResnetBlock3D");
    if (v12) {
      r["decoder_spatial_upsample"] = {"", "SpatialUpsample2x", "Spatial2xTime2x3DUpsample",
                                       "Spatial2xTime2x3DUpsample"};
      r["decoder_temporal_upsample"] = {"", "", "", ""};
    } else {
      r["decoder_spatial_upsample"] = {"", "SpatialUpsample2x", "SpatialUpsample2x", "SpatialUpsample2x"};
      r["decoder_temporal_upsample"] = {"", "", "TimeUpsampleRes2x", "TimeUpsampleRes2x"};
    }
    return CausalVae::config_from_json(JsonConfig(r, version + " release sizes"));
  };
  for (bool v12_release : {true, false}) {
    CausalVaeConfig c = release(v12_release ? "v120" : "v110", v12_release);
    EXPECT_EQ(c.spatial_factor(), 8);
    EXPECT_EQ(c.temporal_factor(), 4);
    EXPECT_EQ(c.decoded_frames(1), 1);
    EXPECT_EQ(c.decoded_frames(8), 29);
    EXPECT_EQ(c.decoded_frames(17), 65);
    EXPECT_EQ(c.decoded_frames(24), 93);
    // tiling bounds the decoder's activations: 93 frames of 480 x 640 pixels
    EXPECT_LT(c.decode_bytes(24, 480, 640, true, DType::bf16, Device::cpu),
              c.decode_bytes(24, 480, 640, false, DType::bf16, Device::cpu) / 3);
  }
}

TEST(CausalVae, MatchesV120) {
  check_cases("v120");
}

TEST(CausalVae, MatchesV110) {
  check_cases("v110");
}

TEST(CausalVae, PipelineTilingIsTheDefaultTiledDecode) {
  // decode_video's `tiled` is VideoSys' pipeline setting (tiles of 64 latents, chunks of 8 latent frames).
  for (const std::string version : {"v120", "v110"}) {
    SCOPED_TRACE(version);
    Checkpoint ref = Checkpoint::open_file(folder(version) + "/reference.safetensors");
    Tensor z = ref.load("z_tiled_pipeline"), sample = ref.load("sample_tiled_pipeline");
    VaeDecodeOptions tiled;
    tiled.tiled = true;
    EXPECT_TRUE(testing::close_rel(fixture_vae(version).decode_video(z, tiled), sample, kTol));
    // The time chunks change the result (so this checks tiling), and so does the latent scale.
    EXPECT_FALSE(testing::close_rel(fixture_vae(version).decode_video(z, {}), sample, kTol));
    CausalVaeDecodeOptions o;
    o.tiled = true;
    EXPECT_FALSE(testing::close_rel(fixture_vae(version).decode(z, o), sample, kTol));
  }
}

TEST(CausalVae, TiledReferencesNeedTheirTiles) {
  // The small-tile references are neither the untiled decode nor the decode with other tiles.
  for (const std::string version : {"v120", "v110"}) {
    SCOPED_TRACE(version);
    const CausalVae& vae = fixture_vae(version);
    Checkpoint ref = Checkpoint::open_file(folder(version) + "/reference.safetensors");
    JsonConfig cases = JsonConfig::load(folder(version) + "/case.json");
    for (const std::string name : {"tiled_small", "tiled_spatial"}) {
      Tensor z = ops::div(ref.load("z_" + name), Tensor::scalar(float(CausalVae::kLatentScale)));
      Tensor sample = ref.load("sample_" + name);
      CausalVaeDecodeOptions o = tiling_of(cases.json().at("cases").at(name).at("tiling"));
      EXPECT_FALSE(testing::close_rel(vae.decode(z), sample, kTol)) << name;
      o.tiles.tile_overlap_factor = 0.5;  // blend 2x as wide
      EXPECT_FALSE(testing::close_rel(vae.decode(z, o), sample, kTol)) << name;
    }
  }
}

// The cases on the CUDA backend, skipped where none starts: f32 to the CPU's
// tolerance; bf16 (for which there is no reference run) within 5e-2 relative
// L2, a bound to catch a broken kernel, several times bf16's rounding through
// ~20 convolutions.
TEST(CausalVae, OnCuda) {
  const std::optional<Device> cuda = testing::started_device("cuda");
  if (!cuda) GTEST_SKIP() << "no CUDA device";
  for (const std::string version : {"v120", "v110"}) {
    JsonConfig cases = JsonConfig::load(folder(version) + "/case.json");
    Checkpoint ref = Checkpoint::open_file(folder(version) + "/reference.safetensors");
    for (DType dtype : {DType::f32, DType::bf16}) {
      auto vae = CausalVae::load(folder(version) + "/vae", LoadOptions{*cuda, dtype});
      for (const std::string name : {"frames_1", "frames_3", "tiled_small", "tiled_pipeline"}) {
        SCOPED_TRACE(version + "/" + name + (dtype == DType::f32 ? " f32" : " bf16"));
        const nlohmann::json& tiling = cases.json().at("cases").at(name).at("tiling");
        Tensor z = ops::div(ref.load("z_" + name), Tensor::scalar(float(CausalVae::kLatentScale)));
        Tensor out = vae->decode(z, tiling_of(tiling)).to(Device::cpu).to(DType::f32);
        Tensor sample = ref.load("sample_" + name);
        if (dtype == DType::f32) {
          EXPECT_TRUE(testing::close_rel(out, sample, kTol));
        } else {
          EXPECT_LE(testing::rel_l2(out, sample), 5e-2);
        }
        std::printf("cuda %s/%s %s: rel err %.2e, rel L2 %.2e\n", version.c_str(), name.c_str(),
                    dtype == DType::f32 ? "f32" : "bf16", testing::compare(out, sample).rel(),
                    testing::rel_l2(out, sample));
      }
    }
  }
}

TEST(CausalVae, RegistersAsTheCausalVideoVae) {
  const VaeEntry& entry = Registry<VaeEntry>::get().at("CausalVAEModel", "VAE");
  for (const std::string version : {"v120", "v110"}) {
    SCOPED_TRACE(version);
    JsonConfig config = JsonConfig::load(folder(version) + "/vae/config.json");
    auto facts = entry.facts(config);
    EXPECT_EQ(facts->kind(), VaeKind::causal_video);
    EXPECT_EQ(facts->latent_channels(), 4);
    EXPECT_EQ(facts->decoded_frames(3), fixture_vae(version).config().decoded_frames(3));
    EXPECT_GT(facts->decode_bytes(3, 64, 64, {}, DType::f32, Device::cpu), uint64_t(3 * 64 * 64 * 3 * 4));
    // The weights decoding loads: not the encoder's, not quant_conv's.
    Checkpoint ckpt = Checkpoint::open_dir(folder(version) + "/vae");
    uint64_t decoder = 0;
    for (const std::string& n : ckpt.names())
      if (n.starts_with("decoder.") || n.starts_with("post_quant_conv."))
        decoder += uint64_t(shape_numel(ckpt.entry(n).shape)) * 4;
    EXPECT_EQ(facts->weight_bytes(ckpt, DType::f32), decoder);
    auto vae = entry.load(config, ckpt, {});
    Checkpoint ref = Checkpoint::open_file(folder(version) + "/reference.safetensors");
    EXPECT_TRUE(testing::close_rel(vae->decode_video(ref.load("z_frames_3"), {}), ref.load("sample_frames_3"), kTol));
  }
}

TEST(CausalVae, RejectsUnsupportedConfig) {
  auto expect_error = [](const std::string& version, const std::string& key, const nlohmann::json& value) {
    std::string dir = folder_with(version, {{key, value}}, "config_" + key);
    try {
      CausalVae::load(dir);
      ADD_FAILURE() << version << ": " << key << " = " << value.dump() << " was accepted";
    } catch (const Error& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find("config.json"), std::string::npos) << msg;
      EXPECT_NE(msg.find("'" + key + "'"), std::string::npos) << msg;
    }
    std::filesystem::remove_all(dir);
  };
  using J = nlohmann::json;
  expect_error("v120", "decoder_attention", "AttnBlock3D");  // v1.1's old attention; v1.2 has none
  expect_error("v110", "decoder_attention", "AttnBlock3D");
  // a v1.1 block in a v1.2 config (it has use_quant_layer)
  expect_error("v120", "decoder_temporal_upsample", J::array({"", "TimeUpsampleRes2x", ""}));
  expect_error("v110", "decoder_temporal_upsample", J::array({"", "TimeUpsampleResAdv2x"}));
  expect_error("v110", "decoder_temporal_upsample", J::array({""}));  // one entry per level
  expect_error("v110", "decoder_spatial_upsample", J::array({"", "Upsample"}));
  expect_error("v120", "decoder_resnet_blocks", J::array({"ResnetBlock2D", "ResnetBlock3D", "ResnetBlock3D"}));
  expect_error("v120", "decoder_mid_resnet", "ResnetBlock3D_GC");
  expect_error("v120", "decoder_conv_in", "Conv2d");
  expect_error("v110", "decoder_conv_out", "Conv2d");
  expect_error("v120", "hidden_size", 48);  // not a multiple of the 32 norm groups
  expect_error("v120", "hidden_size_mult", J::array());
  // Levels run at resolution 256 / 4 = 64, then 128 (after Spatial2xTime2x3DUpsample), then 256.
  expect_error("v120", "attn_resolutions", J::array({128}));
  expect_error("v120", "q_conv", "Conv2d");
  expect_error("v110", "num_res_blocks", -1);
  expect_error("v110", "out_channels", 4);
  expect_error("v120", "use_quant_layer", "yes");
  expect_error("v110", "z_channels", "four");
  expect_error("v110", "_class_name", "AutoencoderKL");
  expect_error("v120", "attn_resolutions", J::array({64}));
  std::string dir = folder_with("v120", {{"attn_resolutions", J::array({512})}}, "attn_ok");  // no level's
  EXPECT_NO_THROW(CausalVae::load(dir));
  std::filesystem::remove_all(dir);
}

TEST(CausalVae, RejectsWrongWeights) {
  Checkpoint ckpt = Checkpoint::open_dir(folder("v120") + "/vae");
  auto write_with = [&](const std::string& name, const std::function<void(std::map<std::string, Tensor>&)>& edit) {
    std::map<std::string, Tensor> tensors;
    for (const std::string& n : ckpt.names()) tensors[n] = ckpt.load(n);
    edit(tensors);
    std::string dir = temp_dir(name);
    std::filesystem::copy_file(folder("v120") + "/vae/config.json", dir + "/config.json");
    write_safetensors(dir + "/diffusion_pytorch_model.safetensors", tensors);
    return dir;
  };
  const std::string shortcut = "decoder.up.0.block.0.nin_shortcut.conv.weight";
  ASSERT_TRUE(ckpt.has(shortcut));  // the 32 -> 64 channel level
  std::string dir = write_with("wrong_shape", [&](auto& t) { t[shortcut] = Tensor::zeros({64, 32, 1, 1}); });
  std::string msg = testing::error_of([&] { CausalVae::load(dir); });
  EXPECT_NE(msg.find(shortcut), std::string::npos) << msg;
  std::filesystem::remove_all(dir);

  dir = write_with("missing", [&](auto& t) { t.erase("decoder.up.2.upsample.conv.conv.bias"); });
  msg = testing::error_of([&] { CausalVae::load(dir); });
  EXPECT_NE(msg.find("decoder.up.2.upsample.conv.conv.bias"), std::string::npos) << msg;
  std::filesystem::remove_all(dir);

  // A decoder tensor the model does not load is an error (the encoder's are not).
  dir = write_with("unused", [&](auto& t) { t["decoder.up.0.attn.0.norm.weight"] = Tensor::zeros({64}); });
  msg = testing::error_of([&] { CausalVae::load(dir); });
  EXPECT_NE(msg.find("decoder.up.0.attn.0.norm.weight"), std::string::npos) << msg;
  std::filesystem::remove_all(dir);
}

TEST(CausalVae, RejectsBadLatentsAndTiles) {
  const CausalVae& vae = fixture_vae("v120");
  EXPECT_THROW(vae.decode(Tensor::zeros({1, 4, 2, 6})), Error);               // rank 4
  EXPECT_THROW(vae.decode(Tensor::zeros({1, 8, 2, 6, 8})), Error);            // 8 channels, model has 4
  EXPECT_THROW(vae.decode(Tensor::zeros({1, 4, 0, 6, 8})), Error);            // no frames
  EXPECT_THROW(vae.decode_video(Tensor::zeros({1, 2, 4, 6, 8}), {}), Error);  // [B, F, C, ...] layout
  std::string msg = testing::error_of([&] { vae.decode(Tensor::zeros({1, 8, 2, 6, 8})); });
  EXPECT_NE(msg.find("[B, 4, F, H, W]"), std::string::npos) << msg;
  CausalVaeDecodeOptions o;
  o.tiled = true;
  o.tiles.tile_latent_min_size = 1;  // int(1 * 0.75) = 0: no stride
  EXPECT_THROW(vae.decode(Tensor::zeros({1, 4, 1, 6, 8}), o), Error);
  o = {};
  o.tiled = true;
  o.tiles.tile_latent_min_size_t = 1;  // chunks of one frame cannot overlap by one
  EXPECT_THROW(vae.decode(Tensor::zeros({1, 4, 3, 2, 2}), o), Error);
}

}  // namespace
}  // namespace pab
