// `pab inspect`, run as a command: every fixture model folder is described,
// and corrupted copies fail with exactly one line naming the file.
#include <filesystem>
#include <nlohmann/json.hpp>

#include "io/inspect.h"
#include "support/io_testing.h"
#include "support/testing.h"

namespace pab {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

struct CommandResult {
  int rc;
  std::string out;
};

CommandResult inspect(const std::string& dir) {
  CommandResult r;
  r.rc = testing::run_command(cat("'", testing::pab_binary(), "' inspect '", dir, "'"), &r.out);
  return r;
}

// The parameter count of every tensor in the checkpoints under `rel`, from the
// manifest the reference library wrote.
uint64_t manifest_parameters(const std::string& rel) {
  static const json manifest = json::parse(testing::read_bytes(testing::data_path("io/fixture_manifest.json")));
  uint64_t n = 0;
  for (auto f = manifest.begin(); f != manifest.end(); ++f) {
    if (!f.key().starts_with(rel + "/") || !f.key().ends_with("model.safetensors")) continue;
    for (const auto& t : f.value()) {
      uint64_t numel = 1;
      for (const auto& d : t["shape"]) numel *= d.get<uint64_t>();
      n += numel;
    }
  }
  return n;
}

TEST(Inspect, HumanCounts) {
  EXPECT_EQ(human_count(0), "0");
  EXPECT_EQ(human_count(999), "999");
  EXPECT_EQ(human_count(1000), "1.00K");
  EXPECT_EQ(human_count(52800), "52.8K");
  EXPECT_EQ(human_count(392371), "392K");
  EXPECT_EQ(human_count(999999), "1.00M");
  EXPECT_EQ(human_count(1690000000), "1.69B");
  EXPECT_EQ(human_count(4'760'000'000'000ull), "4.76T");
}

TEST(Inspect, EveryFixturePipeline) {
  for (const char* name : {"cogvideox_ddim", "cogvideox_dpm", "latte"}) {
    SCOPED_TRACE(name);
    std::string dir = testing::data_path(cat("fixtures/pipeline/", name, "/model"));
    CommandResult r = inspect(dir);
    ASSERT_EQ(r.rc, 0) << r.out;
    json index = json::parse(testing::read_bytes(dir + "/model_index.json"));
    EXPECT_NE(r.out.find("pipeline " + index["_class_name"].get<std::string>()), std::string::npos) << r.out;
    for (auto it = index.begin(); it != index.end(); ++it) {
      if (!it.value().is_array()) continue;
      std::string line =
          cat(it.key(), ": ", it.value()[1].get<std::string>(), " (", it.value()[0].get<std::string>(), ")");
      EXPECT_NE(r.out.find(line), std::string::npos) << line << "\n" << r.out;
    }
    // The total agrees with the reference library's view of the weights.
    uint64_t params = manifest_parameters(cat("pipeline/", name, "/model"));
    EXPECT_GT(params, 100000u);
    EXPECT_NE(r.out.find(cat("parameters (", params, ") in 3 weight files")), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("files: spiece.model"), std::string::npos);
    EXPECT_NE(r.out.find("num_train_timesteps=1000"), std::string::npos);
  }
}

TEST(Inspect, EveryFixtureComponentFolder) {
  struct Expect {
    std::string dir;
    std::string text;  // expected in the report
  };
  std::vector<Expect> cases = {
      {"fixtures/components/t5/text_encoder", "text_encoder: T5EncoderModel (transformers)"},
      {"fixtures/components/vae_kl/vae", "vae: AutoencoderKL (diffusers)"},
      {"fixtures/components/vae_cogvideox/vae", "vae: AutoencoderKLCogVideoX (diffusers)"},
      {"fixtures/components/tokenizer", "files: case.json, reference.safetensors, spiece.model"},
      {"fixtures/videosys/open_sora/transformer", "transformer: STDiT3 (transformers)"},
      {"fixtures/videosys/open_sora_mlp/transformer", "transformer: STDiT3 (transformers)"},
      {"fixtures/videosys/open_sora_plan_v110/transformer", "transformer: LatteT2V (diffusers)"},
      {"fixtures/videosys/open_sora_plan_v120/transformer", "transformer: OpenSoraT2V (diffusers)"},
  };
  for (const auto& entry : fs::directory_iterator(testing::data_path("fixtures/transformer"))) {
    std::string name = entry.path().filename().string();
    bool latte = name == "latte";
    cases.push_back({"fixtures/transformer/" + name + "/transformer",
                     latte ? "transformer: LatteTransformer3DModel (diffusers)"
                           : "transformer: CogVideoXTransformer3DModel (diffusers)"});
  }
  EXPECT_EQ(cases.size(), 13u);
  for (const auto& c : cases) {
    SCOPED_TRACE(c.dir);
    CommandResult r = inspect(testing::data_path(c.dir));
    ASSERT_EQ(r.rc, 0) << r.out;
    EXPECT_NE(r.out.find(c.text), std::string::npos) << r.out;
    if (c.dir.ends_with("tokenizer")) continue;
    uint64_t params = manifest_parameters(c.dir.substr(std::string("fixtures/").size()));
    EXPECT_NE(r.out.find(human_count(params) + " parameters, dtypes F32 x "), std::string::npos) << params << "\n"
                                                                                                 << r.out;
  }
}

TEST(Inspect, ShardedComponent) {
  testing::TempDir tmp;
  std::string src = testing::data_path("fixtures/transformer/latte/transformer");
  fs::copy_file(src + "/config.json", tmp / "config.json");
  testing::write_sharded(src + "/diffusion_pytorch_model.safetensors", tmp.path(), 3);
  CommandResult r = inspect(tmp.path());
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("weights: 3 shards via diffusion_pytorch_model.safetensors.index.json, 117 tensors, "
                       "108K parameters, dtypes F32 x 117"),
            std::string::npos)
      << r.out;
}

// A copy of the Latte pipeline to break in one way per test.
class InspectCorrupt : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = tmp_ / "model";
    testing::copy_tree(testing::data_path("fixtures/pipeline/latte/model"), dir_);
    ASSERT_EQ(inspect(dir_).rc, 0);
  }
  // pab inspect fails cleanly: status 1 (no signal), exactly one line, naming `file`.
  ::testing::AssertionResult fails_naming(const std::string& file, const std::string& what) {
    CommandResult r = inspect(dir_);
    if (r.rc != 1) return ::testing::AssertionFailure() << "exit status " << r.rc << ": " << r.out;
    if (r.out.empty() || r.out.back() != '\n' || r.out.find('\n') != r.out.size() - 1)
      return ::testing::AssertionFailure() << "not exactly one line: " << r.out;
    if (!r.out.starts_with("pab: error: ")) return ::testing::AssertionFailure() << r.out;
    if (r.out.find(file) == std::string::npos)
      return ::testing::AssertionFailure() << "does not name " << file << ": " << r.out;
    if (r.out.find(what) == std::string::npos)
      return ::testing::AssertionFailure() << "lacks '" << what << "': " << r.out;
    return ::testing::AssertionSuccess();
  }
  std::string weights(const std::string& component) const {
    return dir_ + "/" + component +
           (component == "text_encoder" ? "/model.safetensors" : "/diffusion_pytorch_model.safetensors");
  }
  testing::TempDir tmp_;
  std::string dir_;
};

TEST_F(InspectCorrupt, TruncatedWeights) {
  std::string w = weights("transformer");
  std::string bytes = testing::read_bytes(w);
  testing::write_bytes(w, bytes.substr(0, bytes.size() - 1000));
  EXPECT_TRUE(fails_naming(w, "truncated"));
  testing::write_bytes(w, bytes.substr(0, 100));
  EXPECT_TRUE(fails_naming(w, "truncated"));
  testing::write_bytes(w, "");
  EXPECT_TRUE(fails_naming(w, "too short"));
}

TEST_F(InspectCorrupt, HeaderLengthLies) {
  std::string w = weights("vae");
  std::string bytes = testing::read_bytes(w);
  bytes[0] = char(bytes[0] + 3);
  testing::write_bytes(w, bytes);
  EXPECT_TRUE(fails_naming(w, "not valid JSON"));
  bytes[6] = 1;
  testing::write_bytes(w, bytes);
  EXPECT_TRUE(fails_naming(w, "exceeds"));
}

TEST_F(InspectCorrupt, LyingHeader) {
  std::string w = weights("text_encoder");
  std::string bytes = testing::read_bytes(w);
  size_t at = bytes.find("\"F32\"");
  ASSERT_NE(at, std::string::npos);
  std::string lying = bytes;
  lying[at + 1] = 'X';
  testing::write_bytes(w, lying);
  EXPECT_TRUE(fails_naming(w, "unknown dtype \"X32\""));
  at = bytes.find("\"shape\":[");
  ASSERT_NE(at, std::string::npos);
  lying = bytes;
  lying[at + 9] = '9';  // the first dimension of the first tensor gains a leading 9
  testing::write_bytes(w, lying);
  EXPECT_TRUE(fails_naming(w, "bytes for shape"));
}

TEST_F(InspectCorrupt, BrokenConfigJson) {
  std::string c = dir_ + "/vae/config.json";
  std::string text = testing::read_bytes(c);
  testing::write_bytes(c, text.substr(0, text.size() / 2));
  EXPECT_TRUE(fails_naming(c, "not valid JSON (line"));
  testing::write_bytes(c, "[]");
  EXPECT_TRUE(fails_naming(c, "expected a JSON object"));
  testing::write_bytes(c, "{\"in_channels\": 3}");
  EXPECT_TRUE(fails_naming(c, "missing required key '_class_name'"));
  std::string s = dir_ + "/scheduler/scheduler_config.json";
  testing::write_bytes(c, text);
  testing::write_bytes(s, "{\"_class_name\": \"DDIMScheduler\", \"beta_start\": 0.0001,}");
  EXPECT_TRUE(fails_naming(s, "not valid JSON"));
  std::string t = dir_ + "/tokenizer/tokenizer_config.json";
  testing::write_bytes(
      s, testing::read_bytes(testing::data_path("fixtures/pipeline/latte/model/scheduler/scheduler_config.json")));
  testing::write_bytes(t, "{\"tokenizer_class\": ");
  EXPECT_TRUE(fails_naming(t, "not valid JSON"));
}

TEST_F(InspectCorrupt, BrokenModelIndex) {
  std::string idx = dir_ + "/model_index.json";
  testing::write_bytes(idx, "{\"_class_name\": \"LattePipeline\", \"vae\": [\"diffusers\"");
  EXPECT_TRUE(fails_naming(idx, "not valid JSON"));
  testing::write_bytes(idx, "{\"vae\": [\"diffusers\", \"AutoencoderKL\"]}");
  EXPECT_TRUE(fails_naming(idx, "missing required key '_class_name'"));
}

TEST_F(InspectCorrupt, MissingShard) {
  std::string t = dir_ + "/transformer";
  std::string index = testing::write_sharded(weights("transformer"), t, 3);
  fs::remove(weights("transformer"));
  ASSERT_EQ(inspect(dir_).rc, 0);
  fs::remove(t + "/diffusion_pytorch_model-00002-of-00003.safetensors");
  EXPECT_TRUE(fails_naming(index, "shard diffusion_pytorch_model-00002-of-00003.safetensors"));
}

TEST_F(InspectCorrupt, MissingComponentFolderOrWeights) {
  fs::remove(weights("vae"));
  EXPECT_TRUE(fails_naming(dir_ + "/vae", "no diffusion_pytorch_model.safetensors"));
  fs::remove_all(dir_ + "/vae");
  EXPECT_TRUE(fails_naming(dir_ + "/model_index.json", "folder " + dir_ + "/vae is missing"));
  EXPECT_EQ(inspect(tmp_ / "absent").rc, 1);
}

TEST_F(InspectCorrupt, UnknownClassIsReported) {
  std::string c = dir_ + "/transformer/config.json";
  json j = json::parse(testing::read_bytes(c));
  j["_class_name"] = "MysteryTransformer";
  testing::write_bytes(c, j.dump());
  CommandResult r = inspect(dir_);
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("transformer: MysteryTransformer (model_index.json says LatteTransformer3DModel)"),
            std::string::npos)
      << r.out;
}

}  // namespace
}  // namespace pab
