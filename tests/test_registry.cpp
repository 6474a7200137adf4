// Every registered class has reference data that a test uses, as llama.cpp
// checks its architectures: walks each registry and looks for a fixture in
// tests/data whose configuration names the class, in a folder that some
// tests/test_*.cpp names. A registration without its fixture test fails here.

#include <filesystem>
#include <fstream>
#include <map>
#include <gtest/gtest-spi.h>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "cache/cache_method.h"
#include "core/registry.h"
#include "models/text_encoder.h"
#include "models/transformer.h"
#include "models/vae.h"
#include "pipeline/video_pipeline.h"
#include "support/testing.h"

namespace pab {
namespace {

namespace fs = std::filesystem;

// Class name -> the folders (relative to tests/data) whose JSON files name it:
// `_class_name`, transformers' `architectures`, and the classes a
// model_index.json gives its components.
std::map<std::string, std::set<std::string>> fixture_classes() {
  std::map<std::string, std::set<std::string>> out;
  const fs::path data = testing::data_path("");
  for (const auto& entry : fs::recursive_directory_iterator(data)) {
    if (!entry.is_regular_file() || entry.path().extension() != ".json") continue;
    std::ifstream f(entry.path());
    nlohmann::json j = nlohmann::json::parse(f, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object()) continue;
    const std::string folder = fs::relative(entry.path().parent_path(), data).generic_string();
    auto add = [&](const nlohmann::json& v) {
      if (v.is_string()) out[v.get<std::string>()].insert(folder);
    };
    if (j.contains("_class_name")) add(j["_class_name"]);
    if (j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty())
      add(j["architectures"][0]);
    for (const auto& [key, v] : j.items())
      if (v.is_array() && v.size() == 2 && v[1].is_string()) add(v[1]);
  }
  return out;
}

// The text of every test source.
std::string test_sources() {
  std::string all;
  for (const auto& entry : fs::directory_iterator(fs::canonical(testing::data_path("")).parent_path())) {
    const std::string name = entry.path().filename().string();
    if (!name.starts_with("test_") || entry.path().extension() != ".cpp") continue;
    std::ifstream f(entry.path());
    std::stringstream ss;
    ss << f.rdbuf();
    all += ss.str();
  }
  return all;
}

// Whether a test names `folder` or one of the folders above it (a test that
// walks a folder of cases names the folder).
bool used_by_a_test(const std::string& folder, const std::string& sources) {
  for (fs::path p = folder; !p.empty() && p != "."; p = p.parent_path()) {
    std::string quoted(1, '"');
    quoted.append(p.generic_string());
    if (sources.find(quoted) != std::string::npos) return true;
  }
  return false;
}

template <class Entry>
void expect_fixtures(const char* what) {
  static const auto classes = fixture_classes();
  static const std::string sources = test_sources();
  const auto names = Registry<Entry>::get().names();
  EXPECT_FALSE(names.empty()) << "no " << what << " registered";
  for (const std::string& name : names) {
    auto it = classes.find(name);
    if (it == classes.end()) {
      ADD_FAILURE() << what << " '" << name << "' is registered but no fixture in tests/data names it";
      continue;
    }
    bool used = false;
    for (const std::string& folder : it->second) used = used || used_by_a_test(folder, sources);
    EXPECT_TRUE(used) << what << " '" << name << "': no test uses its fixtures (" << *it->second.begin() << ")";
  }
}

TEST(Registry, EveryTransformerFamilyHasAFixtureTest) { expect_fixtures<TransformerFamily>("transformer"); }
TEST(Registry, EveryPipelineHasAFixtureTest) { expect_fixtures<PipelineEntry>("pipeline"); }
TEST(Registry, EveryVaeHasAFixtureTest) { expect_fixtures<VaeEntry>("VAE"); }
TEST(Registry, EveryTextEncoderHasAFixtureTest) { expect_fixtures<TextEncoderEntry>("text encoder"); }

// Cache methods: a replay case configures each in its case.json under the method's name.
TEST(Registry, EveryCacheMethodHasAReplayCase) {
  for (const std::string& method : Registry<CacheMethod>::get().names()) {
    bool found = false;
    for (const auto& entry : fs::recursive_directory_iterator(testing::data_path(""))) {
      if (entry.path().filename() != "case.json") continue;
      std::ifstream f(entry.path());
      nlohmann::json j = nlohmann::json::parse(f, nullptr, false);
      found = found || (j.is_object() && j.contains(method));
    }
    EXPECT_TRUE(found) << "cache method '" << method << "' has no case.json configuring it";
  }
}

// The check itself can fail: a class no fixture names is reported.
TEST(Registry, AClassWithoutFixtureIsFound) {
  struct Unlisted {
    int x;
  };
  Registry<Unlisted>::get().add("NoSuchTransformer3DModel", Unlisted{1});
  EXPECT_NONFATAL_FAILURE(expect_fixtures<Unlisted>("test class"), "no fixture in tests/data names it");
}

// A name registered twice stops the program at start-up.
TEST(Registry, ANameRegisteredTwiceIsRefused) {
  struct Twice {
    int x;
  };
  Registry<Twice>::get().add("A", Twice{1});
  EXPECT_THROW(Registry<Twice>::get().add("A", Twice{2}), Error);
  try {
    Registry<Twice>::get().at("B", "thing");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "unsupported thing 'B' (supported: A)");
  }
}

}  // namespace
}  // namespace pab
