// Writing PAB configurations (the short form and YAML in both dialects): the
// text expected by hand, each read back by the parsers to the same rules, and
// clear errors for what a form cannot say.
#include <filesystem>
#include <fstream>

#include "cache/pab_config.h"
#include "support/testing.h"

namespace pab {
namespace {

namespace fs = std::filesystem;

PabConfig three_kinds(Counting counting) {
  PabConfig c;
  c.counting = counting;
  c.rule(SiteKind::spatial) = BroadcastRule{2, 100, 800, {}};
  c.rule(SiteKind::temporal) = BroadcastRule{3, 124.5, 374, {}};
  c.rule(SiteKind::cross) = BroadcastRule{6, 0, 1000, {}};
  return c;
}

// Compares every rule field and the MLP tables.
void expect_same(const PabConfig& a, const PabConfig& b) {
  EXPECT_EQ(a.counting, b.counting);
  for (int k = 0; k < 3; ++k) {
    EXPECT_EQ(a.rules[size_t(k)].range, b.rules[size_t(k)].range) << k;
    if (!a.rules[size_t(k)].enabled()) continue;
    EXPECT_EQ(a.rules[size_t(k)].lo, b.rules[size_t(k)].lo) << k;
    EXPECT_EQ(a.rules[size_t(k)].hi, b.rules[size_t(k)].hi) << k;
    EXPECT_EQ(a.rules[size_t(k)].blocks, b.rules[size_t(k)].blocks) << k;
  }
  ASSERT_EQ(a.mlp_spatial.size(), b.mlp_spatial.size());
  for (size_t i = 0; i < a.mlp_spatial.size(); ++i) {
    EXPECT_EQ(a.mlp_spatial[i].timestep, b.mlp_spatial[i].timestep);
    EXPECT_EQ(a.mlp_spatial[i].skip_count, b.mlp_spatial[i].skip_count);
    EXPECT_EQ(a.mlp_spatial[i].blocks, b.mlp_spatial[i].blocks);
  }
  EXPECT_EQ(a.mlp_temporal.size(), b.mlp_temporal.size());
}

PabConfig read_yaml(const std::string& text) {
  fs::path p = fs::temp_directory_path() / ("pab_test_format_" + std::to_string(::getpid()) + ".yaml");
  std::ofstream(p) << text;
  PabConfig c = load_pab_config_file(p.string());
  fs::remove(p);
  return c;
}

TEST(PabConfigFormat, ShortForm) {
  const PabConfig c = three_kinds(Counting::diffusers);
  EXPECT_EQ(format_pab_short_form(c), "spatial=2@100-800,temporal=3@124.5-374,cross=6@0-1000");
  expect_same(parse_pab_short_form(format_pab_short_form(c)), c);
  EXPECT_EQ(format_pab_short_form(PabConfig{}), "off");
  EXPECT_FALSE(resolve_pab_choice("off", std::nullopt, "LatteTransformer3DModel").any());
}

TEST(PabConfigFormat, DiffusersYaml) {
  const PabConfig c = three_kinds(Counting::diffusers);
  const std::string text = format_pab_yaml(c, PabDialect::diffusers);
  EXPECT_NE(text.find("spatial_attention_block_skip_range: 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("temporal_attention_timestep_skip_range: [124.5, 374]\n"), std::string::npos) << text;
  expect_same(read_yaml(text), c);
}

TEST(PabConfigFormat, VideosysYaml) {
  PabConfig c = three_kinds(Counting::videosys);
  c.rule(SiteKind::temporal) = BroadcastRule{};
  c.rule(SiteKind::spatial).blocks = {3, 4, 5};
  c.mlp_spatial = {MlpBroadcast{720, 2, {0, 1}}, MlpBroadcast{640, 1, {2}}};
  const std::string text = format_pab_yaml(c, PabDialect::videosys);
  EXPECT_NE(text.find("spatial_range: 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("temporal_broadcast: false\n"), std::string::npos) << text;
  EXPECT_NE(text.find("spatial_block: [3, 5]\n"), std::string::npos) << text;
  EXPECT_NE(text.find("  720: {block: [0, 1], skip_count: 2}\n"), std::string::npos) << text;
  expect_same(read_yaml(text), c);
  // Nothing on is a valid VideoSys file.
  EXPECT_FALSE(read_yaml(format_pab_yaml(PabConfig{}, PabDialect::videosys)).any());
}

TEST(PabConfigFormat, WhatAFormCannotSay) {
  PabConfig blocks = three_kinds(Counting::diffusers);
  blocks.rule(SiteKind::spatial).blocks = {0, 2};
  EXPECT_THROW(format_pab_short_form(blocks), Error);
  EXPECT_THROW(format_pab_yaml(blocks, PabDialect::diffusers), Error);
  EXPECT_THROW(format_pab_yaml(blocks, PabDialect::videosys), Error);  // not one span
  PabConfig cross_blocks = three_kinds(Counting::videosys);
  cross_blocks.rule(SiteKind::cross).blocks = {1};
  EXPECT_THROW(format_pab_yaml(cross_blocks, PabDialect::videosys), Error);
  PabConfig mlp;
  mlp.counting = Counting::videosys;
  mlp.mlp_temporal = {MlpBroadcast{500, 1, {0}}};
  EXPECT_THROW(format_pab_short_form(mlp), Error);
  EXPECT_THROW(format_pab_yaml(mlp, PabDialect::diffusers), Error);
  // diffusers reads a file without ranges as "spatial every 2nd call": off cannot be written
  EXPECT_THROW(format_pab_yaml(PabConfig{}, PabDialect::diffusers), Error);
}

}  // namespace
}  // namespace pab
