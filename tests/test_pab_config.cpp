// PAB configuration: the diffusers and VideoSys dialects (current and older
// names) give the same schedule and the same Latte replay; YAML and JSON
// files; the --pab short form; per-model defaults; errors for unknown keys,
// mixed dialects and contradictions; and `pab replay --pab` overriding a case.

#include <filesystem>
#include <fstream>

#include "cache/pab_config.h"
#include "io/safetensors.h"
#include "pipeline/replay.h"
#include "support/io_testing.h"
#include "support/testing.h"

namespace pab {
namespace {

namespace fs = std::filesystem;
using nlohmann::ordered_json;
using testing::close_rel;
using testing::data_path;

const std::string kLatte = "fixtures/transformer/latte";

// Files of this test run, removed at exit.
const testing::TempDir& scratch() {
  static testing::TempDir dir;
  return dir;
}

std::string temp_file(const std::string& name, const std::string& text) {
  fs::path p = scratch() / name;
  std::ofstream(p) << text;
  return p.string();
}

// The schedule a configuration describes (everything but the counting rule).
void expect_same_schedule(const PabConfig& a, const PabConfig& b, const std::string& what) {
  for (int k = 0; k < 3; ++k) {
    const BroadcastRule &x = a.rules[size_t(k)], &y = b.rules[size_t(k)];
    EXPECT_EQ(x.range, y.range) << what << ": " << site_kind_name(SiteKind(k));
    if (!x.enabled()) continue;
    EXPECT_EQ(x.lo, y.lo) << what;
    EXPECT_EQ(x.hi, y.hi) << what;
    EXPECT_EQ(x.blocks, y.blocks) << what;
  }
  auto same_mlp = [&](const std::vector<MlpBroadcast>& p, const std::vector<MlpBroadcast>& q) {
    ASSERT_EQ(p.size(), q.size()) << what;
    for (size_t i = 0; i < p.size(); ++i) {
      EXPECT_EQ(p[i].timestep, q[i].timestep) << what;
      EXPECT_EQ(p[i].skip_count, q[i].skip_count) << what;
      EXPECT_EQ(p[i].blocks, q[i].blocks) << what;
    }
  };
  same_mlp(a.mlp_spatial, b.mlp_spatial);
  same_mlp(a.mlp_temporal, b.mlp_temporal);
}

std::string parse_error(const ordered_json& j) {
  try {
    parse_pab_config(j, "test.yaml");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::string short_error(const std::string& s) {
  try {
    parse_pab_short_form(s);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// The Latte case's configuration in each spelling.
const char* kDiffusersJson = R"({
  "spatial_attention_block_skip_range": 2, "spatial_attention_timestep_skip_range": [100, 800],
  "temporal_attention_block_skip_range": 3, "temporal_attention_timestep_skip_range": [100, 800],
  "cross_attention_block_skip_range": 5, "cross_attention_timestep_skip_range": [100, 900],
  "spatial_attention_block_identifiers": ["^transformer_blocks"]
})";
const char* kDiffusersYaml = R"(# diffusers PyramidAttentionBroadcastConfig names
spatial_attention_block_skip_range: 2
spatial_attention_timestep_skip_range: [100, 800]
temporal_attention_block_skip_range: 3
temporal_attention_timestep_skip_range: [100, 800]
cross_attention_block_skip_range: 5
cross_attention_timestep_skip_range: [100, 900]
)";
const char* kVideoSysYaml = R"(# VideoSys PABConfig names
spatial_broadcast: True
spatial_threshold: [100, 800]
spatial_range: 2
temporal_broadcast: True
temporal_threshold: [100, 800]
temporal_range: 3
cross_broadcast: True
cross_threshold: [100, 900]
cross_range: 5
)";
const char* kVideoSysJson = R"({"spatial_broadcast": true, "spatial_threshold": [100, 800], "spatial_range": 2,
  "temporal_broadcast": true, "temporal_threshold": [100, 800], "temporal_range": 3,
  "cross_broadcast": true, "cross_threshold": [100, 900], "cross_range": 5})";
// the older OpenDiT/VideoSys names (spatial_skip, spatial_gap, spatial_block)
const char* kVideoSysOldYaml = R"(spatial_skip: true
spatial_threshold: [100, 800]
spatial_gap: 2
spatial_block: [0, 28]
temporal_skip: true
temporal_threshold: [100, 800]
temporal_gap: 3
cross_skip: true
cross_threshold: [100, 900]
cross_gap: 5
diffusion_skip: false
)";

TEST(PabConfigDialects, EverySpellingGivesTheSameSchedule) {
  ReplayCase c = load_replay_case(data_path(kLatte));
  const PabConfig& ref = c.pab;  // the case.json (diffusers) configuration
  EXPECT_EQ(ref.counting, Counting::diffusers);
  struct Spelling {
    std::string name, text;
    Counting counting;
  };
  for (const Spelling& s :
       {Spelling{"d.json", kDiffusersJson, Counting::diffusers},
        Spelling{"d.yaml", kDiffusersYaml, Counting::diffusers}, Spelling{"v.yaml", kVideoSysYaml, Counting::videosys},
        Spelling{"v.json", kVideoSysJson, Counting::videosys}}) {
    PabConfig p = load_pab_config_file(temp_file(s.name, s.text));
    expect_same_schedule(p, ref, s.name);
    EXPECT_EQ(p.counting, s.counting) << s.name;
  }
  // The older names: the same, with spatial broadcast limited to blocks 0..28.
  PabConfig old = load_pab_config_file(temp_file("old.yaml", kVideoSysOldYaml));
  EXPECT_EQ(old.rule(SiteKind::spatial).blocks.size(), 29u);
  EXPECT_EQ(old.rule(SiteKind::spatial).blocks.back(), 28);
  old.rule(SiteKind::spatial).blocks.clear();
  expect_same_schedule(old, ref, "old.yaml");
  // The short form
  expect_same_schedule(parse_pab_short_form("spatial=2@100-800, temporal=3@100-800, cross=5@100-900"), ref, "short");
  // A range alone turns a kind on; the diffusers window default is (100, 800).
  PabConfig brief =
      parse_pab_config(ordered_json::parse(R"({"spatial_range": 2, "spatial_threshold": [100, 800]})"), "t");
  expect_same_schedule(brief, parse_pab_short_form("spatial=2"), "spatial_range alone");
}

// Both dialects drive the Latte replay to exactly the same outputs (and the
// PAB reference): the timesteps are integers, where the counting rules agree.
TEST(PabConfigDialects, SameLatteReplayResults) {
  ReplayCase c = load_replay_case(data_path(kLatte));
  auto model = load_transformer(data_path(kLatte + "/transformer"));
  Checkpoint ref = Checkpoint::open_file(data_path(kLatte + "/reference.safetensors"));
  auto run = [&](const PabConfig& cfg) {
    PabPolicy policy(cfg);
    return run_replay(*model, c, &policy);
  };
  ReplayRun diffusers = run(c.pab);
  EXPECT_TRUE(close_rel(diffusers.latents, ref.load("latents_final_pab"), 1e-5));
  for (const char* name : {"v.yaml", "old.yaml"}) {
    PabConfig cfg =
        load_pab_config_file(temp_file(name, name == std::string("v.yaml") ? kVideoSysYaml : kVideoSysOldYaml));
    ReplayRun r = run(cfg);
    for (size_t i = 0; i < r.outputs.size(); ++i)
      EXPECT_EQ(testing::compare(r.outputs[i], diffusers.outputs[i]).max_abs, 0.0) << name << " step " << i;
    for (int k = 0; k < 3; ++k)
      EXPECT_EQ(r.stats.total(SiteKind(k)).reused, diffusers.stats.total(SiteKind(k)).reused) << name;
  }
}

TEST(PabConfigFiles, MlpTablesKeepTheirOrderAndTypes) {
  const char* yaml = R"(mlp_skip: True
mlp_spatial_skip_config: {
832: {'block': [0, 1, 2], 'skip_count': 2},
499: {'block': [1], 'skip_count': 1},
}
mlp_temporal_skip_config:
  749:
    block: [2]
    skip_count: 3
)";
  PabConfig y = load_pab_config_file(temp_file("mlp.yaml", yaml));
  EXPECT_EQ(y.counting, Counting::videosys);
  ASSERT_EQ(y.mlp_spatial.size(), 2u);
  EXPECT_EQ(y.mlp_spatial[0].timestep, 832);  // file order, not sorted
  EXPECT_EQ(y.mlp_spatial[0].blocks, (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(y.mlp_spatial[1].timestep, 499);
  EXPECT_EQ(y.mlp_spatial[1].skip_count, 1);
  ASSERT_EQ(y.mlp_temporal.size(), 1u);
  EXPECT_EQ(y.mlp_temporal[0].skip_count, 3);
  EXPECT_FALSE(y.rule(SiteKind::spatial).enabled());
  const char* json = R"({"mlp_broadcast": true,
    "mlp_spatial_broadcast_config": {"832": {"block": [0, 1, 2], "skip_count": 2}, "499": {"block": [1], "skip_count": 1}},
    "mlp_temporal_broadcast_config": {"749": {"block": [2], "skip_count": 3}}})";
  expect_same_schedule(load_pab_config_file(temp_file("mlp.json", json)), y, "mlp.json");
}

TEST(PabConfigErrors, UnknownKeysAndMixedDialects) {
  std::string e = parse_error(ordered_json::parse(R"({"spatial_range": 2, "spatial_treshold": [100, 800]})"));
  EXPECT_NE(e.find("test.yaml"), std::string::npos) << e;
  EXPECT_NE(e.find("unknown PAB key 'spatial_treshold'"), std::string::npos) << e;
  e = parse_error(ordered_json::parse(R"({"spatial_attention_block_skip_range": 2, "temporal_range": 3})"));
  EXPECT_NE(e.find("spatial_attention_block_skip_range"), std::string::npos) << e;
  EXPECT_NE(e.find("temporal_range"), std::string::npos) << e;
  EXPECT_NE(e.find("one dialect"), std::string::npos) << e;
  EXPECT_NE(parse_error(ordered_json::object()).find("no PAB settings"), std::string::npos);
  EXPECT_NE(parse_error(ordered_json::array()).find("map"), std::string::npos);
  // in the MLP entries too
  e = parse_error(ordered_json::parse(R"({"mlp_spatial_broadcast_config": {"700": {"block": [0], "skip": 2}}})"));
  EXPECT_NE(e.find("unknown field 'skip'"), std::string::npos) << e;
  // files name themselves
  std::string bad = temp_file("bad.yaml", "spatial_range: [2\n");
  try {
    load_pab_config_file(bad);
    ADD_FAILURE() << "no error";
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find(bad), std::string::npos) << err.what();
  }
}

TEST(PabConfigErrors, ContradictionsAndBadValues) {
  struct Case {
    const char* json;
    const char* expect;  // part of the message
  };
  for (const Case& c : {
           // a switched-off kind with settings
           Case{R"({"spatial_broadcast": false, "spatial_range": 2, "spatial_threshold": [100, 800]})",
                "'spatial_broadcast' is false but 'spatial_range' is set"},
           Case{R"({"cross_skip": false, "cross_threshold": [100, 800]})", "'cross_skip' is false"},
           Case{R"({"spatial_threshold": [100, 800]})", "no spatial_range"},
           // a switched-on kind without its settings
           Case{R"({"temporal_broadcast": true, "temporal_threshold": [100, 800]})", "temporal_range is missing"},
           Case{R"({"temporal_broadcast": true, "temporal_range": 3})", "temporal_threshold"},
           // two names for one setting
           Case{R"({"spatial_range": 2, "spatial_gap": 3, "spatial_threshold": [100, 800]})", "name the same setting"},
           Case{R"({"mlp_broadcast": true, "mlp_skip": true})", "name the same setting"},
           // windows and ranges
           Case{R"({"spatial_range": 2, "spatial_threshold": [800, 100]})", "empty or inverted"},
           Case{R"({"spatial_attention_block_skip_range": 2, "spatial_attention_timestep_skip_range": [800, 800]})",
                "empty or inverted"},
           Case{R"({"spatial_range": 0, "spatial_threshold": [100, 800]})", "range must be >= 1"},
           Case{R"({"cross_attention_block_skip_range": -1})", "range must be >= 1"},
           Case{R"({"spatial_range": 1.5, "spatial_threshold": [100, 800]})", "an integer"},
           Case{R"({"spatial_range": 2, "spatial_threshold": 700})", "single threshold"},
           Case{R"({"spatial_range": 2, "spatial_threshold": [100, 800], "spatial_block": [5, 2]})", "block span"},
           Case{R"({"spatial_broadcast": "yes", "spatial_range": 2})", "true or false"},
           // MLP broadcast
           Case{R"({"mlp_broadcast": false, "mlp_spatial_broadcast_config": {"700": {"block": [0], "skip_count": 1}}})",
                "'mlp_broadcast' is false"},
           Case{R"({"mlp_broadcast": true})", "neither"},
           Case{R"({"mlp_spatial_broadcast_config": {"700": {"block": [0], "skip_count": 0}}})", "must be >= 1"},
           Case{R"({"mlp_spatial_broadcast_config": {"7x": {"block": [0], "skip_count": 1}}})", "integer timestep"},
           Case{R"({"mlp_spatial_broadcast_config": {"700": {"block": [], "skip_count": 1}}})", "non-empty"},
           Case{R"({"mlp_spatial_broadcast_config": {"700": {"skip_count": 1}}})", "needs both"},
           // not PAB
           Case{R"({"spatial_range": 2, "spatial_threshold": [100, 800], "diffusion_skip": true})",
                "timestep respacing"},
       }) {
    std::string e = parse_error(ordered_json::parse(c.json));
    EXPECT_NE(e.find(c.expect), std::string::npos) << c.json << " -> " << (e.empty() ? "(no error)" : e);
  }
}

TEST(PabConfigShortForm, ParsesAndRejects) {
  PabConfig p = parse_pab_short_form("spatial=2@100-800,temporal=3@100-800,cross=6@100-900");
  EXPECT_EQ(p.counting, Counting::diffusers);
  EXPECT_EQ(p.rule(SiteKind::cross).range, 6);
  EXPECT_EQ(p.rule(SiteKind::cross).hi, 900);
  EXPECT_EQ(p.rule(SiteKind::temporal).lo, 100);
  PabConfig q = parse_pab_short_form("cross=4@50.5-950");
  EXPECT_EQ(q.rule(SiteKind::cross).lo, 50.5);
  EXPECT_FALSE(q.rule(SiteKind::spatial).enabled());
  for (const char* bad : {"spatial", "spatial=", "spatial=x", "spatial=2@", "spatial=2@800", "spatial=2@a-b",
                          "mlp_spatial=2", "blocks=2", "spatial=2,,cross=3", ""})
    EXPECT_NE(short_error(bad).find("is not kind=range"), std::string::npos) << bad << " -> " << short_error(bad);
  EXPECT_NE(short_error("spatial=2,spatial=3").find("twice"), std::string::npos);
  EXPECT_NE(short_error("spatial=0").find(">= 1"), std::string::npos);
  EXPECT_NE(short_error("spatial=2@800-100").find("inverted"), std::string::npos);
}

TEST(PabConfigDefaults, PublishedSettingsPerModel) {
  PabConfig latte = default_pab_config("LatteTransformer3DModel");
  EXPECT_EQ(latte.counting, Counting::videosys);
  expect_same_schedule(latte, parse_pab_short_form("spatial=2@100-800,temporal=3@100-800,cross=6@100-800"), "latte");
  expect_same_schedule(default_pab_config("CogVideoXTransformer3DModel"), parse_pab_short_form("spatial=2@100-850"),
                       "cogvideox");
  // Open-Sora's default adds OpenSoraPABConfig's MLP broadcast.
  PabConfig open_sora = parse_pab_short_form("spatial=2@450-930,temporal=4@450-930,cross=6@450-930");
  for (int t : {676, 788, 864}) {
    open_sora.mlp_spatial.push_back({t, 2, {0, 1, 2, 3, 4}});
    open_sora.mlp_temporal.push_back({t, 2, {0, 1, 2, 3, 4}});
  }
  expect_same_schedule(default_pab_config("STDiT3"), open_sora, "open-sora");
  expect_same_schedule(default_pab_config("OpenSoraT2V"), parse_pab_short_form("spatial=2@100-850,cross=6@100-850"),
                       "open-sora-plan 1.2");
  try {
    default_pab_config("UNet2DModel");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("UNet2DModel"), std::string::npos) << e.what();
  }
  // the command line's choice
  expect_same_schedule(resolve_pab_choice("default", std::nullopt, "LatteTransformer3DModel"), latte,
                       "resolve default");
  EXPECT_FALSE(resolve_pab_choice("off", std::nullopt, "LatteTransformer3DModel").any());
  EXPECT_THROW(resolve_pab_choice("off", "x.yaml", "LatteTransformer3DModel"), Error);
  // every default fits its model
  auto model = load_transformer(data_path(kLatte + "/transformer"));
  EXPECT_NO_THROW(latte.validate(model->site_layout()));
}

// ---------------------------------------------------------------- CLI

struct CliRun {
  int rc;
  std::string output;
  std::map<std::string, Tensor> tensors;
};

CliRun replay_cli(const std::string& args, const std::string& name) {
  fs::path out = scratch() / (name + ".safetensors");
  CliRun r;
  r.rc = testing::run_command(
      testing::pab_binary() + " replay " + data_path(kLatte) + " -o " + out.string() + " " + args, &r.output);
  if (r.rc == 0) {
    Checkpoint ck = Checkpoint::open_file(out.string());
    for (const std::string& n : ck.names()) r.tensors[n] = ck.load(n);
  }
  return r;
}

TEST(PabConfigCli, ReplayOverridesTheCaseConfiguration) {
  Checkpoint ref = Checkpoint::open_file(data_path(kLatte + "/reference.safetensors"));
  // off: the PAB run equals the run without PAB and misses the PAB reference
  CliRun off = replay_cli("--pab off", "off");
  ASSERT_EQ(off.rc, 0) << off.output;
  EXPECT_NE(off.output.find("PAB off"), std::string::npos) << off.output;
  EXPECT_EQ(testing::compare(off.tensors.at("latents_final_pab"), off.tensors.at("latents_final_nopab")).max_abs, 0.0);
  EXPECT_FALSE(close_rel(off.tensors.at("latents_final_pab"), ref.load("latents_final_pab"), 1e-5));
  // a short form that differs from the case's
  CliRun spatial = replay_cli("--pab spatial=2@100-800", "spatial");
  ASSERT_EQ(spatial.rc, 0) << spatial.output;
  EXPECT_NE(spatial.output.find("PAB spatial 2 in (100, 800):"), std::string::npos) << spatial.output;
  EXPECT_FALSE(close_rel(spatial.tensors.at("latents_final_pab"), ref.load("latents_final_pab"), 1e-5));
  // the case's settings in VideoSys names from a file reproduce the reference
  CliRun file = replay_cli("--pab-config " + temp_file("cli.yaml", kVideoSysYaml), "file");
  ASSERT_EQ(file.rc, 0) << file.output;
  EXPECT_NE(file.output.find("[videosys counting]"), std::string::npos) << file.output;
  for (size_t i = 0; i < 12; ++i) {
    std::string k = "out_pab_" + std::to_string(i);
    EXPECT_TRUE(close_rel(file.tensors.at(k), ref.load(k), 1e-5)) << k;
  }
  // errors
  CliRun both = replay_cli("--pab off --pab-config " + temp_file("cli.yaml", kVideoSysYaml), "both");
  EXPECT_NE(both.rc, 0);
  EXPECT_NE(both.output.find("excludes"), std::string::npos) << both.output;
  CliRun bad = replay_cli("--pab spatial=two", "bad");
  EXPECT_NE(bad.rc, 0);
  EXPECT_NE(bad.output.find("pab: error: --pab 'spatial=two'"), std::string::npos) << bad.output;
  CliRun kind = replay_cli(
      "--pab-config " +
          temp_file(
              "window.json",
              R"({"spatial_attention_block_skip_range": 2, "spatial_attention_timestep_skip_range": [100, 1200]})"),
      "window");
  EXPECT_NE(kind.rc, 0);
  EXPECT_NE(kind.output.find("outside [0, 1000]"), std::string::npos) << kind.output;
}

}  // namespace
}  // namespace pab
