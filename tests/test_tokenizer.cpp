// T5 tokenizer parity with transformers' T5Tokenizer: the shared tokenizer
// fixture (padding and truncation to 226 as the pipelines call it) and
// tests/data/tokenizer_cases (normalisation corner cases and random strings,
// for a folder with tokenizer.json and for spiece.model alone with extra ids).
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>

#include "io/safetensors.h"
#include "pipeline/tokenizer.h"
#include "support/testing.h"

namespace pab {
namespace {

namespace fs = std::filesystem;

nlohmann::json read_json(const std::string& path) {
  return nlohmann::json::parse(std::ifstream(path));
}

std::vector<int64_t> ids_of(const Tensor& t) {
  return std::vector<int64_t>(t.i64(), t.i64() + t.numel());
}

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name) {
    path = fs::temp_directory_path() / cat("pab_test_tokenizer_", name, "_", ::getpid());
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

TEST(Tokenizer, MatchesTransformersPaddedAndTruncated) {
  const std::string dir = testing::data_path("fixtures/components/tokenizer");
  auto tok = T5Tokenizer::load(dir);
  nlohmann::json c = read_json(dir + "/case.json");
  Checkpoint ref = Checkpoint::open_file(dir + "/reference.safetensors");
  const int64_t max_length = c["max_length"].get<int64_t>();
  const auto& prompts = c["prompts"];
  int64_t truncated = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    TokenizedText t = tok->tokenize(prompts[i].get<std::string>(), max_length);
    const std::vector<int64_t> untruncated = ids_of(ref.load(cat("ids_untruncated_", i), DType::i64));
    EXPECT_EQ(t.ids, ids_of(ref.load(cat("ids_", i), DType::i64))) << "prompt " << i;
    EXPECT_EQ(t.mask, ids_of(ref.load(cat("mask_", i), DType::i64))) << "prompt " << i;
    EXPECT_EQ(t.ids_untruncated, untruncated) << "prompt " << i;
    EXPECT_EQ(t.num_dropped, std::max<int64_t>(0, int64_t(untruncated.size()) - max_length)) << "prompt " << i;
    truncated += t.num_dropped > 0;
  }
  EXPECT_EQ(truncated, 1);  // the long prompt
  // The test can fail: a neighbouring prompt's reference does not match.
  EXPECT_NE(tok->encode(prompts[0].get<std::string>()), ids_of(ref.load("ids_untruncated_3", DType::i64)));
}

TEST(Tokenizer, NormalisationCornerCasesMatchTransformers) {
  nlohmann::json c = read_json(testing::data_path("tokenizer_cases/cases.json"));
  auto with_json = T5Tokenizer::load(testing::data_path(c["json_folder"].get<std::string>()));
  TempDir spm_dir("spm");
  fs::copy_file(testing::data_path(c["json_folder"].get<std::string>()) + "/spiece.model",
                spm_dir.path / "spiece.model");
  std::ofstream(spm_dir.path / "tokenizer_config.json") << c["spm_config"].dump();
  auto spm_only = T5Tokenizer::load(spm_dir.path.string());
  EXPECT_EQ(spm_only->vocab_size(), with_json->vocab_size() + 3);

  const auto& prompts = c["prompts"];
  int mismatches = 0, differing = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const std::string p = prompts[i].get<std::string>();
    const auto a = with_json->encode(p), b = spm_only->encode(p);
    const auto ra = c["ids_json"][i].get<std::vector<int64_t>>(), rb = c["ids_spm"][i].get<std::vector<int64_t>>();
    EXPECT_EQ(a, ra) << "prompt " << i << ": " << c["prompts"][i].dump();
    EXPECT_EQ(b, rb) << "prompt " << i << " (spiece.model only): " << c["prompts"][i].dump();
    mismatches += (a != ra) + (b != rb);
    differing += ra != rb;
  }
  EXPECT_EQ(mismatches, 0) << "of " << 2 * prompts.size();
  EXPECT_GT(differing, 5);  // the sentinel tokens tell the two folders apart

  const auto& m9 = c["max_length_9"];
  for (size_t k = 0; k < m9["prompt_index"].size(); ++k) {
    TokenizedText t = with_json->tokenize(prompts[m9["prompt_index"][k].get<size_t>()].get<std::string>(), 9);
    EXPECT_EQ(t.ids, m9["ids"][k].get<std::vector<int64_t>>());
    EXPECT_EQ(t.mask, m9["mask"][k].get<std::vector<int64_t>>());
  }
}

// A folder as transformers 5 saves it (tokenizer.json and
// tokenizer_config.json, no spiece.model) gives the ids of the SentencePiece
// model: every corner case of tokenizer_cases and the shared fixture's prompts.
TEST(Tokenizer, TokenizerJsonAloneGivesTheIdsOfSpieceModel) {
  nlohmann::json c = read_json(testing::data_path("tokenizer_cases/cases.json"));
  const fs::path source = testing::data_path(c["json_folder"].get<std::string>());
  TempDir dir("json_only");
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) fs::copy_file(source / f, dir.path / f);
  auto json_only = T5Tokenizer::load(dir.path.string());
  auto with_spm = T5Tokenizer::load(source.string());
  EXPECT_EQ(json_only->vocab_size(), with_spm->vocab_size());
  EXPECT_EQ(json_only->eos_id(), with_spm->eos_id());
  EXPECT_EQ(json_only->pad_id(), with_spm->pad_id());
  int mismatches = 0;
  const auto& prompts = c["prompts"];
  for (size_t i = 0; i < prompts.size(); ++i) {
    const auto ids = json_only->encode(prompts[i].get<std::string>());
    EXPECT_EQ(ids, c["ids_json"][i].get<std::vector<int64_t>>()) << "prompt " << i << ": " << prompts[i].dump();
    mismatches += ids != c["ids_json"][i].get<std::vector<int64_t>>();
  }
  EXPECT_EQ(mismatches, 0) << "of " << prompts.size();

  const std::string fixture = testing::data_path("fixtures/components/tokenizer");
  nlohmann::json f = read_json(fixture + "/case.json");
  Checkpoint ref = Checkpoint::open_file(fixture + "/reference.safetensors");
  for (size_t i = 0; i < f["prompts"].size(); ++i) {
    TokenizedText t = json_only->tokenize(f["prompts"][i].get<std::string>(), f["max_length"].get<int64_t>());
    EXPECT_EQ(t.ids, ids_of(ref.load(cat("ids_", i), DType::i64))) << "prompt " << i;
    EXPECT_EQ(t.ids_untruncated, ids_of(ref.load(cat("ids_untruncated_", i), DType::i64))) << "prompt " << i;
  }
}

// tokenizer.json layouts that tokenize differently are refused naming the part.
TEST(Tokenizer, OtherTokenizerJsonLayoutsAreRefused) {
  nlohmann::json c = read_json(testing::data_path("tokenizer_cases/cases.json"));
  const fs::path source = fs::path(testing::data_path(c["json_folder"].get<std::string>())) / "tokenizer.json";
  const nlohmann::json good = read_json(source.string());
  TempDir dir("json_layouts");
  auto error_with = [&](const std::function<void(nlohmann::json&)>& edit) -> std::string {
    nlohmann::json j = good;
    edit(j);
    std::ofstream(dir.path / "tokenizer.json") << j.dump();
    try {
      T5Tokenizer::load(dir.path.string());
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_EQ(error_with([](nlohmann::json&) {}), "");  // can pass
  EXPECT_NE(error_with([](nlohmann::json& j) { j["model"]["type"] = "BPE"; }).find("tokenizer.json: model {"),
            std::string::npos);
  EXPECT_NE(error_with([](nlohmann::json& j) { j["model"]["byte_fallback"] = true; }).find("byte_fallback"),
            std::string::npos);
  EXPECT_NE(error_with([](nlohmann::json& j) {
              j["pre_tokenizer"] = {{"type", "Whitespace"}};
            }).find("pre_tokenizer"),
            std::string::npos);
  EXPECT_NE(error_with([](nlohmann::json& j) {
              j["normalizer"] = {{"type", "Lowercase"}};
            }).find("normalizer"),
            std::string::npos);
  EXPECT_NE(error_with([](nlohmann::json& j) { j["normalizer"]["precompiled_charsmap"] = "***"; }).find("base64"),
            std::string::npos);
  EXPECT_NE(error_with([](nlohmann::json& j) { j["model"]["unk_id"] = 100000; }).find("unk_id"), std::string::npos);
  EXPECT_NE(error_with([](nlohmann::json& j) { j["model"]["vocab"][5] = 3; }).find("vocab entry"), std::string::npos);
  // The collapse of repeated spaces beside Precompiled, as older converters wrote it, tokenizes the same.
  const std::string with_replace = error_with([](nlohmann::json& j) {
    j["normalizer"] = {
        {"type", "Sequence"},
        {"normalizers", {j["normalizer"], {{"type", "Replace"}, {"pattern", {{"Regex", " {2,}"}}}, {"content", " "}}}}};
  });
  EXPECT_EQ(with_replace, "");
}

// Random damage to tokenizer.json (bytes flipped, cut, inserted; values of
// the wrong type) gives a tokenizer or an Error, never a crash (the sanitizer
// lane runs this too).
TEST(Tokenizer, DamagedTokenizerJsonIsAnErrorNotACrash) {
  nlohmann::json c = read_json(testing::data_path("tokenizer_cases/cases.json"));
  const fs::path source = fs::path(testing::data_path(c["json_folder"].get<std::string>())) / "tokenizer.json";
  std::string good;
  {
    std::ifstream in(source, std::ios::binary);
    good.assign(std::istreambuf_iterator<char>(in), {});
  }
  TempDir dir("json_damage");
  std::mt19937 rng(17);
  int loaded = 0, refused = 0;
  for (int i = 0; i < 120; ++i) {
    std::string bytes = good;
    const size_t at = rng() % bytes.size();
    switch (i % 4) {
      case 0:
        bytes[at] = char(rng());
        break;
      case 1:
        bytes.resize(at);
        break;
      case 2:
        bytes.insert(at, std::string(1 + rng() % 8, char(rng())));
        break;
      case 3: {  // a value of another type in a place that matters
        nlohmann::json j = nlohmann::json::parse(good);
        const char* keys[] = {"model", "normalizer", "pre_tokenizer", "added_tokens"};
        const nlohmann::json values[] = {nullptr, 7, "x", nlohmann::json::array({1, 2}), nlohmann::json::object()};
        j[keys[rng() % 4]] = values[rng() % 5];
        bytes = j.dump();
        break;
      }
    }
    std::ofstream(dir.path / "tokenizer.json", std::ios::binary) << bytes;
    try {
      T5Tokenizer::load(dir.path.string())->encode("a red circle moves to the right");
      ++loaded;
    } catch (const Error&) {
      ++refused;
    }
  }
  EXPECT_EQ(loaded + refused, 120);
  EXPECT_GT(refused, 40);
}

TEST(Tokenizer, Errors) {
  auto expect_error = [](const std::function<void()>& f, const std::string& needle) {
    try {
      f();
      ADD_FAILURE() << "no error, expected one naming " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  TempDir dir("errors");
  expect_error([&] { T5Tokenizer::load(dir.path.string()); }, "no spiece.model or tokenizer.json");
  std::ofstream(dir.path / "spiece.model") << "this is not a protobuf";
  expect_error([&] { T5Tokenizer::load(dir.path.string()); }, "spiece.model");
  // A truncated model.
  const std::string good = testing::data_path("fixtures/components/tokenizer/spiece.model");
  std::string bytes;
  {
    std::ifstream in(good, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  std::ofstream(dir.path / "spiece.model", std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  expect_error([&] { T5Tokenizer::load(dir.path.string()); }, "spiece.model");
  std::ofstream(dir.path / "spiece.model", std::ios::binary) << bytes;
  std::ofstream(dir.path / "tokenizer_config.json") << R"({"eos_token": "<eos_missing>"})";
  expect_error([&] { T5Tokenizer::load(dir.path.string()); }, "eos_token");
  std::ofstream(dir.path / "tokenizer_config.json") << R"({"extra_ids": "many"})";
  expect_error([&] { T5Tokenizer::load(dir.path.string()); }, "extra_ids");

  auto tok = T5Tokenizer::load(testing::data_path("fixtures/components/tokenizer"));
  expect_error([&] { tok->encode("bad \xC3\x28 utf-8"); }, "UTF-8");
  expect_error([&] { tok->encode("surrogate \xED\xA0\x80"); }, "UTF-8");
  expect_error([&] { tok->tokenize("x", 0); }, "max_length");
}

TEST(Tokenizer, DecodeForMessages) {
  auto tok = T5Tokenizer::load(testing::data_path("fixtures/components/tokenizer"));
  EXPECT_EQ(tok->decode(tok->encode("dance monkey")), "dance monkey</s>");
  EXPECT_EQ(tok->decode({}), "");
  Tensor t = token_tensor({{1, 2, 3}, {4, 5, 6}});
  EXPECT_EQ(t.shape(), (Shape{2, 3}));
  EXPECT_EQ(t.i64()[4], 5);
  EXPECT_THROW(token_tensor({{1, 2}, {3}}), Error);
}

}  // namespace
}  // namespace pab
