// Diffusers folders: model_index.json of the fixture pipelines, single
// component folders, and malformed or incomplete folders.
#include <filesystem>
#include <nlohmann/json.hpp>

#include "io/model_folder.h"
#include "support/io_testing.h"
#include "support/testing.h"

namespace pab {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

::testing::AssertionResult fails_with(const std::function<void()>& f, const std::string& what) {
  try {
    f();
  } catch (const Error& e) {
    std::string m = e.what();
    if (m.find(what) == std::string::npos)
      return ::testing::AssertionFailure() << "message lacks '" << what << "': " << m;
    if (m.find('\n') != std::string::npos) return ::testing::AssertionFailure() << "message spans lines: " << m;
    return ::testing::AssertionSuccess();
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw a non-pab exception: " << e.what();
  }
  return ::testing::AssertionFailure() << "did not throw";
}

TEST(ModelFolder, FixturePipelines) {
  struct Expect {
    const char* dir;
    const char* pipeline;
    const char* transformer;
    const char* scheduler;
    const char* vae;
  };
  for (const Expect& e : {
           Expect{"cogvideox_ddim", "CogVideoXPipeline", "CogVideoXTransformer3DModel", "CogVideoXDDIMScheduler",
                  "AutoencoderKLCogVideoX"},
           Expect{"cogvideox_dpm", "CogVideoXPipeline", "CogVideoXTransformer3DModel", "CogVideoXDPMScheduler",
                  "AutoencoderKLCogVideoX"},
           Expect{"latte", "LattePipeline", "LatteTransformer3DModel", "DDIMScheduler", "AutoencoderKL"},
       }) {
    SCOPED_TRACE(e.dir);
    std::string dir = testing::data_path(cat("fixtures/pipeline/", e.dir, "/model"));
    ModelFolder m = open_model_folder(dir);
    EXPECT_TRUE(m.is_pipeline());
    EXPECT_EQ(m.index_path, dir + "/model_index.json");
    EXPECT_EQ(m.pipeline_class, e.pipeline);
    EXPECT_EQ(m.diffusers_version, "0.40.0.dev0");
    ASSERT_EQ(m.components.size(), 5u);
    std::vector<std::string> names;
    for (const auto& c : m.components) names.push_back(c.name);
    EXPECT_EQ(names, (std::vector<std::string>{"scheduler", "text_encoder", "tokenizer", "transformer", "vae"}));
    EXPECT_EQ(m.component("transformer").class_name, e.transformer);
    EXPECT_EQ(m.component("transformer").library, "diffusers");
    EXPECT_EQ(m.component("transformer").dir, dir + "/transformer");
    EXPECT_EQ(m.component("scheduler").class_name, e.scheduler);
    EXPECT_EQ(m.component("vae").class_name, e.vae);
    EXPECT_EQ(m.component("text_encoder").library, "transformers");
    EXPECT_EQ(m.component("tokenizer").class_name, "T5Tokenizer");
    EXPECT_EQ(component_kind(m.component("transformer").dir), ComponentKind::model);
    EXPECT_EQ(component_kind(m.component("scheduler").dir), ComponentKind::scheduler);
    EXPECT_EQ(component_kind(m.component("tokenizer").dir), ComponentKind::tokenizer);
    EXPECT_EQ(component_config_path(m.component("scheduler").dir), dir + "/scheduler/scheduler_config.json");
    EXPECT_EQ(m.find("safety_checker"), nullptr);
    EXPECT_TRUE(fails_with([&] { m.component("unet"); }, dir + "/model_index.json: no component 'unet'"));
  }
}

TEST(ModelFolder, SingleComponentFolders) {
  struct Expect {
    const char* dir;
    const char* name;
    const char* cls;
  };
  for (const Expect& e : {
           Expect{"fixtures/transformer/cogvideox_5b_style/transformer", "transformer", "CogVideoXTransformer3DModel"},
           Expect{"fixtures/components/vae_kl/vae/", "vae", "AutoencoderKL"},
           Expect{"fixtures/components/t5/text_encoder", "text_encoder", "T5EncoderModel"},
           Expect{"fixtures/videosys/open_sora/transformer", "transformer", "STDiT3"},
           Expect{"fixtures/videosys/open_sora_plan_v120/transformer", "transformer", "OpenSoraT2V"},
       }) {
    SCOPED_TRACE(e.dir);
    ModelFolder m = open_model_folder(testing::data_path(e.dir));
    EXPECT_FALSE(m.is_pipeline());
    ASSERT_EQ(m.components.size(), 1u);
    EXPECT_EQ(m.components[0].name, e.name);
    EXPECT_EQ(m.components[0].dir, testing::data_path(e.dir));
    EXPECT_EQ(component_kind(m.components[0].dir), ComponentKind::model);
    EXPECT_EQ(config_class_name(JsonConfig::load(component_config_path(m.components[0].dir))), e.cls);
  }
  ModelFolder tok = open_model_folder(testing::data_path("fixtures/components/tokenizer"));
  EXPECT_EQ(component_kind(tok.components[0].dir), ComponentKind::tokenizer);
  EXPECT_EQ(component_config_path(tok.components[0].dir), "");
}

TEST(ModelFolder, ConfigClassName) {
  auto cls = [](const char* text) { return config_class_name(JsonConfig(json::parse(text), "c.json")); };
  EXPECT_EQ(cls(R"({"_class_name": "A", "architectures": ["B"]})"), "A");
  EXPECT_EQ(cls(R"({"architectures": ["B"], "model_type": "t5"})"), "B");
  EXPECT_EQ(cls(R"({"model_type": "t5"})"), "t5");
  EXPECT_TRUE(fails_with([&] { cls(R"({"d_model": 3})"); }, "c.json: missing required key '_class_name'"));
  EXPECT_TRUE(fails_with([&] { cls(R"({"_class_name": 3})"); }, "c.json: key '_class_name': expected a string"));
}

class BrokenPipeline : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = tmp_ / "model";
    testing::copy_tree(testing::data_path("fixtures/pipeline/latte/model"), dir_);
    index_ = dir_ + "/model_index.json";
  }
  json index() { return json::parse(testing::read_bytes(index_)); }
  void rewrite(const json& j) { testing::write_bytes(index_, j.dump(2)); }
  testing::TempDir tmp_;
  std::string dir_, index_;
};

TEST_F(BrokenPipeline, MissingComponentFolder) {
  fs::remove_all(dir_ + "/vae");
  EXPECT_TRUE(
      fails_with([&] { open_model_folder(dir_); },
                 index_ + ": key 'vae': the diffusers AutoencoderKL component's folder " + dir_ + "/vae is missing"));
}

TEST_F(BrokenPipeline, OptionalSlotsAndOptionsAreSkipped) {
  json j = index();
  j["safety_checker"] = {nullptr, nullptr};
  j["requires_safety_checker"] = false;
  j["_name_or_path"] = "somewhere";
  rewrite(j);
  ModelFolder m = open_model_folder(dir_);
  EXPECT_EQ(m.components.size(), 5u);
  EXPECT_EQ(m.find("safety_checker"), nullptr);
}

TEST_F(BrokenPipeline, MalformedIndex) {
  const json original = index();
  json j = original;
  j.erase("_class_name");
  rewrite(j);
  EXPECT_TRUE(fails_with([&] { open_model_folder(dir_); }, index_ + ": missing required key '_class_name'"));

  j = original;
  j["vae"] = {"diffusers"};
  rewrite(j);
  EXPECT_TRUE(fails_with([&] { open_model_folder(dir_); },
                         index_ + ": key 'vae': expected [library, class], got [\"diffusers\"]"));

  j["vae"] = {"diffusers", 3};
  rewrite(j);
  EXPECT_TRUE(fails_with([&] { open_model_folder(dir_); }, index_ + ": key 'vae': expected [library, class]"));

  j = original;
  j["../vae"] = {"diffusers", "AutoencoderKL"};
  rewrite(j);
  EXPECT_TRUE(fails_with([&] { open_model_folder(dir_); }, "key '../vae': not a valid component folder name"));

  rewrite(json{{"_class_name", "LattePipeline"}});
  EXPECT_TRUE(fails_with([&] { open_model_folder(dir_); }, index_ + ": lists no components"));

  testing::write_bytes(index_, "{\"_class_name\": \"LattePipeline\",");
  EXPECT_TRUE(fails_with([&] { open_model_folder(dir_); }, index_ + ": not valid JSON (line 1, column 33"));
}

TEST_F(BrokenPipeline, NotAModelFolder) {
  EXPECT_TRUE(fails_with([&] { open_model_folder(tmp_ / "absent"); }, tmp_ / "absent: no such folder"));
  fs::create_directory(tmp_ / "empty");
  EXPECT_TRUE(fails_with([&] { open_model_folder(tmp_ / "empty"); }, tmp_ / "empty: not a model folder"));
}

}  // namespace
}  // namespace pab
