// Open-Sora 1.2 (STDiT3) and Open-Sora-Plan v1.1 (LatteT2V) / v1.2
// (OpenSoraT2V) against the original PAB implementation (VideoSys): every
// step's output of the fixture loops without and with PAB, the final latents,
// single forward passes on other inputs and configurations
// (dev/fixtures/videosys_other_inputs.py), the published PAB defaults,
// loading errors and input checks.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "backend/ops.h"
#include "cache/pab_config.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "pipeline/replay.h"
#include "support/backend_testing.h"

namespace pab {
namespace {

namespace fs = std::filesystem;
using testing::close_rel;
using testing::compare;
using testing::data_path;

// fp32 against fp32: the implementations differ in summation order and libm
// rounding; the largest error measured is 2.2e-6 of the largest magnitude
// (STDiT3), below 1e-6 for Open-Sora-Plan. PAB itself moves the final latents
// by 7e-4 (v1.2) to 5e-2 of theirs.
constexpr double kTol = 1e-5;

const char* const kCases[] = {
    "fixtures/videosys/open_sora",
    "fixtures/videosys/open_sora_mlp",
    "fixtures/videosys/open_sora_plan_v110",
    "fixtures/videosys/open_sora_plan_v120",
    "videosys_other_inputs/open_sora_plan_v110_mlp",
};

class VideoSysParity : public ::testing::TestWithParam<const char*> {};

TEST_P(VideoSysParity, EveryStepWithoutAndWithPab) {
  const std::string dir = data_path(GetParam());
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
  std::cout << GetParam() << ": max error relative to the largest magnitude " << worst << "\n" << summary << "\n";

  // The test can fail: the run without PAB must not pass for the PAB reference.
  EXPECT_FALSE(close_rel(out.at("latents_final_nopab"), ref.load("latents_final_pab"), kTol));
  int differing_steps = 0;
  for (size_t i = 0; i < c.timesteps.size(); ++i) {
    std::string k = std::to_string(i);
    if (!close_rel(out.at("out_nopab_" + k), ref.load("out_pab_" + k), kTol)) ++differing_steps;
  }
  EXPECT_GT(differing_steps, 0);
}

// Every kind the case broadcasts matters: without it the PAB reference is
// not reached, and that kind never broadcasts.
TEST_P(VideoSysParity, EachBroadcastKindMatters) {
  const std::string dir = data_path(GetParam());
  ReplayCase c = load_replay_case(dir);
  Checkpoint ref = Checkpoint::open_file(dir + "/reference.safetensors");
  auto model = load_transformer(dir + "/transformer");
  std::vector<SiteKind> kinds;
  for (SiteKind k : {SiteKind::spatial, SiteKind::temporal, SiteKind::cross})
    if (c.pab.rule(k).enabled()) kinds.push_back(k);
  if (!c.pab.mlp_spatial.empty()) kinds.push_back(SiteKind::mlp_spatial);
  if (!c.pab.mlp_temporal.empty()) kinds.push_back(SiteKind::mlp_temporal);
  for (SiteKind k : kinds) {
    ReplayCase partial = c;
    if (k == SiteKind::mlp_spatial) {
      partial.pab.mlp_spatial.clear();
    } else if (k == SiteKind::mlp_temporal) {
      partial.pab.mlp_temporal.clear();
    } else {
      partial.pab.rule(k).range = 0;
    }
    PabPolicy policy(partial.pab);
    ReplayRun run = run_replay(*model, partial, &policy);
    EXPECT_FALSE(close_rel(run.latents, ref.load("latents_final_pab"), kTol)) << site_kind_name(k);
    EXPECT_EQ(run.stats.total(k).reused, 0) << site_kind_name(k);
  }
  // and the full configuration broadcasts every one of them
  PabPolicy policy(c.pab);
  ReplayRun run = run_replay(*model, c, &policy);
  for (SiteKind k : kinds) EXPECT_GT(run.stats.total(k).reused, 0) << site_kind_name(k);
}

INSTANTIATE_TEST_SUITE_P(Cases, VideoSysParity, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<const char*>& info) {
                           return fs::path(info.param).filename().string();
                         });

// The CUDA backend (skipped where no CUDA device starts): f32 to the CPU
// tolerance; bf16 is reported against the f32 reference (the original has
// no bf16 run to compare with) and only bounded loosely.
TEST_P(VideoSysParity, CudaF32EveryStepAndBf16) {
  const std::optional<Device> cuda = testing::started_device("cuda");
  if (!cuda) GTEST_SKIP() << "no CUDA device";
  const std::string dir = data_path(GetParam());
  ReplayCase c = load_replay_case(dir);
  Checkpoint ref = Checkpoint::open_file(dir + "/reference.safetensors");
  auto out = replay_case(c, LoadOptions{*cuda, DType::f32}, nullptr);
  const double worst = testing::expect_reference(out, dir + "/reference.safetensors", kTol).worst;
  EXPECT_FALSE(close_rel(out.at("latents_final_nopab"), ref.load("latents_final_pab"), kTol));
  auto bf16 = replay_case(c, LoadOptions{*cuda, DType::bf16}, nullptr);
  const double bf16_err = compare(bf16.at("latents_final_pab"), ref.load("latents_final_pab")).rel();
  EXPECT_LT(bf16_err, 0.1);
  std::printf("%s on CUDA: f32 max error %.2e, bf16 final latents (PAB) %.2e of the largest magnitude\n", GetParam(),
              worst, bf16_err);
}

// `--pab default` is what the original publishes for these models: their
// cases use exactly those settings (attention only), so the defaults
// reproduce the PAB references.
// The fixtures' PAB runs are the published settings' attention broadcast;
// Open-Sora's default adds its MLP broadcast, whose timesteps (676, 788,
// 864) the open_sora fixture's schedule holds: that run is in
// videosys_other_inputs (open_sora_default_*).
TEST(VideoSysDefaults, DefaultPabReproducesThePublishedRuns) {
  for (const char* name : {"open_sora", "open_sora_plan_v110", "open_sora_plan_v120"}) {
    const std::string dir = data_path(std::string("fixtures/videosys/") + name);
    ReplayCase c = load_replay_case(dir);
    auto model = load_transformer(dir + "/transformer");
    c.pab = fit_published_blocks(default_pab_config(model->class_name()), model->site_layout());
    EXPECT_EQ(c.pab.counting, Counting::videosys);
    c.pab.validate(model->site_layout());
    const bool mlp = !c.pab.mlp_spatial.empty();
    EXPECT_EQ(mlp, std::string(name) != "open_sora_plan_v120");
    if (std::string(name) == "open_sora_plan_v110") {
      // This case's schedule holds the published MLP entry 666, which its
      // attention-only reference leaves out: the whole default is matched in
      // test_open_sora_plan_pipeline.cpp (OpenSoraPlanRun, pab_default).
      PabPolicy with_mlp(c.pab);
      const Tensor full = run_replay(*model, c, &with_mlp).latents;
      c.pab.mlp_spatial.clear();
      c.pab.mlp_temporal.clear();
      PabPolicy attention(c.pab);
      const Tensor want = Checkpoint::open_file(dir + "/reference.safetensors").load("latents_final_pab");
      EXPECT_TRUE(close_rel(run_replay(*model, c, &attention).latents, want, kTol));
      EXPECT_FALSE(close_rel(full, want, kTol));
      continue;
    }
    PabPolicy policy(c.pab);
    ReplayRun run = run_replay(*model, c, &policy);
    if (mlp) {
      Checkpoint ref = Checkpoint::open_file(data_path("videosys_other_inputs/reference.safetensors"));
      EXPECT_TRUE(close_rel(run.latents, ref.load("open_sora_default_latents_final"), kTol)) << name;
      for (size_t i = 0; i < c.timesteps.size(); ++i)
        EXPECT_TRUE(close_rel(run.outputs.at(i), ref.load(cat("open_sora_default_out_", i)), kTol)) << name << " " << i;
      // The test can fail: without the MLP broadcast the default is not reached.
      EXPECT_FALSE(close_rel(Checkpoint::open_file(dir + "/reference.safetensors").load("latents_final_pab"),
                             ref.load("open_sora_default_latents_final"), kTol));
    } else {
      Checkpoint ref = Checkpoint::open_file(dir + "/reference.safetensors");
      EXPECT_TRUE(close_rel(run.latents, ref.load("latents_final_pab"), kTol)) << name;
    }
  }
  EXPECT_EQ(default_pab_config("STDiT3").describe(),
            "spatial 2 in (450, 930), temporal 4 in (450, 930), cross 6 in (450, 930), MLP at 6 timesteps "
            "[videosys counting]");
  EXPECT_EQ(default_pab_config("LatteT2V").describe(),
            "spatial 2 in (100, 850), temporal 4 in (100, 850), cross 6 in (100, 850), MLP at 28 timesteps "
            "[videosys counting]");
  EXPECT_EQ(default_pab_config("OpenSoraT2V").describe(),
            "spatial 2 in (100, 850), cross 6 in (100, 850) [videosys counting]");
}

// The original runs Open-Sora's unconditional branch on the model's learned
// caption (y_embedding); the fixture's second batch entry is exactly that.
TEST(OpenSora, NullTextIsTheLearnedCaption) {
  auto model = load_transformer(data_path("fixtures/videosys/open_sora/transformer"));
  Checkpoint in = Checkpoint::open_file(data_path("fixtures/videosys/open_sora/inputs.safetensors"));
  Tensor text = in.load("encoder_hidden_states");  // [2, 1, 12, 32]
  Tensor null_entry = ops::slice(text, 0, 1, 2).reshape({12, 32});
  ASSERT_TRUE(model->null_text().defined());
  EXPECT_TRUE(close_rel(model->null_text(), null_entry, 0));
  EXPECT_FALSE(close_rel(model->null_text(), ops::slice(text, 0, 0, 1).reshape({12, 32}), kTol));
  // Open-Sora-Plan's pipelines encode a negative prompt instead.
  EXPECT_FALSE(load_transformer(data_path("fixtures/videosys/open_sora_plan_v110/transformer"))->null_text().defined());
}

// ---------------------------------------------------------------- other inputs

// The fixture transformer of `model_case` with the JSON edits `edits` applied to its config.
std::unique_ptr<DiffusionTransformer> load_edited(const std::string& model_case, const nlohmann::json& edits) {
  const std::string dir = data_path("fixtures/videosys/" + model_case + "/transformer");
  nlohmann::json j = nlohmann::json::parse(std::ifstream(dir + "/config.json"));
  for (auto it = edits.begin(); it != edits.end(); ++it) {
    if (it.value().is_null()) {
      j.erase(it.key());
    } else {
      j[it.key()] = it.value();
    }
  }
  Checkpoint weights = Checkpoint::open_dir(dir);
  return load_transformer(JsonConfig(j, dir + "/config.json (edited)"), weights, LoadOptions{});
}

std::string load_error(const std::string& model_case, const nlohmann::json& edits) {
  try {
    load_edited(model_case, edits);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

struct OtherInput {
  const char* name;
  const char* model_case;
};

// Single forward passes against the original on inputs and configurations
// the fixture loops do not reach; each also fails at a neighbouring input.
TEST(VideoSysForward, OtherInputsMatchTheOriginal) {
  const std::string file = data_path("videosys_other_inputs/reference.safetensors");
  Checkpoint ref = Checkpoint::open_file(file);
  auto meta = SafetensorsFile::open(file)->metadata();
  for (const OtherInput& c :
       {OtherInput{"stdit3_odd", "open_sora"}, OtherInput{"stdit3_single_frame", "open_sora"},
        OtherInput{"v110_scaled", "open_sora_plan_v110"}, OtherInput{"v120_scaled", "open_sora_plan_v120"},
        OtherInput{"v120_scaled_4f", "open_sora_plan_v120"}}) {
    const std::string n = c.name;
    auto model = load_edited(c.model_case, nlohmann::json::parse(meta.at(n + "_config")));
    auto scalar = [&](const std::string& key) { return double(ref.load(n + "_" + key).to_vector()[0]); };
    TransformerInputs in;
    in.latents = ref.load(n + "_latents");
    in.text = ref.load(n + "_text");
    in.text_mask = ref.load(n + "_mask");
    in.timestep = scalar("timestep");
    if (c.model_case == std::string("open_sora")) {
      in.fps = scalar("fps");
      in.height_px = scalar("height");
      in.width_px = scalar("width");
    }
    const Tensor expected = ref.load(n + "_output");
    Tensor out = model->forward(in, nullptr);
    EXPECT_TRUE(close_rel(out, expected, kTol)) << n;
    std::cout << n << ": max error relative to the largest magnitude " << compare(out, expected).rel() << "\n";

    TransformerInputs other = in;
    other.timestep += 1;
    EXPECT_FALSE(close_rel(model->forward(other, nullptr), expected, kTol)) << n << " at another timestep";
    bool masked = false;
    for (float v : in.text_mask.to_vector()) masked = masked || v == 0;
    if (masked) {
      other = in;
      other.text_mask = Tensor();
      EXPECT_FALSE(close_rel(model->forward(other, nullptr), expected, kTol)) << n << " without its text mask";
    }
  }
}

// The conditioning STDiT3 takes besides the timestep changes its output.
TEST(OpenSoraForward, FpsAndResolutionCondition) {
  Checkpoint ref = Checkpoint::open_file(data_path("videosys_other_inputs/reference.safetensors"));
  auto model = load_transformer(data_path("fixtures/videosys/open_sora/transformer"));
  TransformerInputs in;
  in.latents = ref.load("stdit3_single_frame_latents");
  in.text = ref.load("stdit3_single_frame_text");
  in.timestep = 300;
  in.fps = 24;
  in.height_px = in.width_px = 64;
  const Tensor base = model->forward(in, nullptr);
  EXPECT_TRUE(close_rel(base, ref.load("stdit3_single_frame_output"), kTol));
  TransformerInputs fps = in, size = in;
  fps.fps = 12;
  size.height_px = 128;
  EXPECT_FALSE(close_rel(model->forward(fps, nullptr), base, kTol));
  EXPECT_FALSE(close_rel(model->forward(size, nullptr), base, kTol));
}

TEST(OpenSoraForward, RejectsMissingConditioningAndBadShapes) {
  auto model = load_transformer(data_path("fixtures/videosys/open_sora/transformer"));
  TransformerInputs in;
  in.latents = Tensor::zeros({2, 4, 2, 8, 8});
  in.text = Tensor::zeros({2, 12, 32});
  in.timestep = 500;
  in.fps = 24;
  in.height_px = in.width_px = 64;
  EXPECT_NO_THROW(model->forward(in, nullptr));
  for (auto edit : std::vector<std::function<void(TransformerInputs&)>>{
           [](TransformerInputs& i) { i.fps = 0; },
           [](TransformerInputs& i) { i.height_px = 0; },
           [](TransformerInputs& i) {
             i.latents = Tensor::zeros({2, 3, 2, 8, 8});
           },
           [](TransformerInputs& i) {
             i.text = Tensor::zeros({2, 12, 16});
           },
           [](TransformerInputs& i) {
             i.text_mask = Tensor::zeros({2, 11});
           },
       }) {
    TransformerInputs bad = in;
    edit(bad);
    EXPECT_THROW(model->forward(bad, nullptr), Error);
  }
  auto plan = load_transformer(data_path("fixtures/videosys/open_sora_plan_v120/transformer"));
  TransformerInputs odd;
  odd.latents = Tensor::zeros({2, 4, 2, 7, 8});  // not a multiple of the patch
  odd.text = Tensor::zeros({2, 10, 24});
  EXPECT_THROW(plan->forward(odd, nullptr), Error);
}

// ---------------------------------------------------------------- loading

TEST(VideoSysLoad, UnsupportedConfigValuesAreClearErrors) {
  struct Edit {
    const char* model_case;
    std::string key;  // the key the message must name
    nlohmann::json edits;
  };
  for (const Edit& e : std::vector<Edit>{
           {"open_sora", "patch_size", {{"patch_size", {1, 2}}}},
           {"open_sora", "num_heads", {{"num_heads", 5}}},
           {"open_sora", "hidden_size", {{"hidden_size", "wide"}}},
           {"open_sora", "skip_y_embedder", {{"skip_y_embedder", true}}},
           {"open_sora", "mlp_ratio", {{"mlp_ratio", -1}}},
           {"open_sora_plan_v110", "norm_type", {{"norm_type", "layer_norm"}}},
           {"open_sora_plan_v110", "compress_kv_factor", {{"compress_kv_factor", 2}}},
           {"open_sora_plan_v110", "rope_scaling_type", {{"rope_scaling_type", "dynamic"}}},
           {"open_sora_plan_v110", "activation_fn", {{"activation_fn", "geglu-approximate"}}},
           {"open_sora_plan_v110", "patch_size_t", {{"patch_size_t", 2}}},
           {"open_sora_plan_v110", "cross_attention_dim", {{"cross_attention_dim", 16}}},
           {"open_sora_plan_v110", "sample_size", {{"sample_size", {8, 8, 8}}}},
           {"open_sora_plan_v120", "use_rope", {{"use_rope", false}}},
           {"open_sora_plan_v120", "downsampler", {{"downsampler", "k333_s222"}}},
           {"open_sora_plan_v120", "attention_head_dim", {{"attention_head_dim", 20}, {"cross_attention_dim", 40}}},
           {"open_sora_plan_v120", "interpolation_scale_t", {{"interpolation_scale_t", 0}}},
           {"open_sora_plan_v120", "sample_size_t", {{"sample_size_t", nullptr}}},
       }) {
    std::string err = load_error(e.model_case, e.edits);
    EXPECT_NE(err.find("'" + e.key + "'"), std::string::npos) << e.model_case << " " << e.key << ": " << err;
    EXPECT_NE(err.find("config.json"), std::string::npos) << err;
  }
  // A config asking for more blocks than the weights hold names the missing tensor.
  EXPECT_NE(load_error("open_sora", {{"depth", 4}}).find("spatial_blocks.3"), std::string::npos);
  EXPECT_NE(load_error("open_sora_plan_v110", {{"num_layers", 4}}).find("transformer_blocks.3"), std::string::npos);
  // A shape that disagrees with the config names the tensor.
  EXPECT_NE(load_error("open_sora", {{"caption_channels", 7}}).find("y_embedder.y_proj.fc1.weight"), std::string::npos);
  // Settings the original reads only in training are accepted.
  EXPECT_EQ(load_error("open_sora", {{"drop_path", 0.1}, {"class_dropout_prob", 0.5}, {"enable_flash_attn", true}}),
            "");
}

TEST(VideoSysLoad, ClassesAndSiteKinds) {
  auto os = load_transformer(data_path("fixtures/videosys/open_sora/transformer"));
  auto v110 = load_transformer(data_path("fixtures/videosys/open_sora_plan_v110/transformer"));
  auto v120 = load_transformer(data_path("fixtures/videosys/open_sora_plan_v120/transformer"));
  EXPECT_EQ(transformer_class_name(data_path("fixtures/videosys/open_sora/transformer")), "STDiT3");
  EXPECT_EQ(os->class_name(), "STDiT3");
  EXPECT_EQ(v110->class_name(), "LatteT2V");
  EXPECT_EQ(v120->class_name(), "OpenSoraT2V");
  EXPECT_EQ(os->out_channels(), 8);
  EXPECT_EQ(v120->site_layout().layer_kinds(), (std::vector<SiteKind>{SiteKind::spatial, SiteKind::cross}));
  EXPECT_EQ(v120->site_layout().blocks(SiteKind::block), 3);
  EXPECT_EQ(v110->site_layout().blocks(SiteKind::block), 2 * v110->site_layout().blocks(SiteKind::spatial));
  // The original has no temporal attention or MLP broadcast in v1.2: such settings are refused.
  PabConfig temporal = fit_published_blocks(default_pab_config("LatteT2V"), v110->site_layout());
  EXPECT_THROW(temporal.validate(v120->site_layout()), Error);
  EXPECT_NO_THROW(temporal.validate(v110->site_layout()));
}

}  // namespace
}  // namespace pab
