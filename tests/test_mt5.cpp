// mT5 (Open-Sora-Plan v1.2's text encoder) against transformers, on the
// components/mt5 fixture (dev/fixtures/make_mt5_cases.py): MT5EncoderModel's
// last_hidden_state with and without the attention mask, through the
// registered class; the T5 tokenizer over an mT5-layout SentencePiece model
// (sentinels as user-defined pieces, extra_ids 0) from spiece.model and from
// tokenizer.json, padded and truncated to 300 and 512; the config read as
// MT5Config; config errors; an mT5 encoder inside a pipeline folder and its
// memory estimate.
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "core/registry.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "models/t5.h"
#include "models/text_encoder.h"
#include "pipeline/memory_plan.h"
#include "pipeline/tokenizer.h"
#include "pipeline/video_pipeline.h"
#include "support/io_testing.h"
#include "support/testing.h"

namespace pab {
namespace {

namespace fs = std::filesystem;
using testing::error_of;

// fp32 on the CPU against transformers' fp32: a few units in the last place
// through 3 blocks (measured below 1e-6), relative to the output's largest magnitude.
const double kTol = 1e-5;

std::string mt5_dir(const std::string& rel = "") {
  return testing::data_path("fixtures/components/mt5" + (rel.empty() ? "" : "/" + rel));
}

nlohmann::json read_json(const std::string& path) {
  return nlohmann::json::parse(std::ifstream(path));
}

std::vector<int64_t> ids_of(const Tensor& t) {
  return std::vector<int64_t>(t.i64(), t.i64() + t.numel());
}

const TextEncoderEntry& entry(const std::string& cls) {
  return Registry<TextEncoderEntry>::get().at(cls, "text encoder class");
}

JsonConfig encoder_config() {
  return JsonConfig::load(mt5_dir("text_encoder/config.json"));
}

// The fixture encoder as a pipeline builds it: the registered class, its config and shards.
std::unique_ptr<TextEncoder> load_registered(const JsonConfig& config, const std::string& cls = "MT5EncoderModel") {
  const Checkpoint weights = Checkpoint::open_dir(mt5_dir("text_encoder"));
  return entry(cls).load(config, weights, LoadOptions{});
}

TEST(MT5, EncoderMatchesTransformersWithAndWithoutMask) {
  const JsonConfig config = encoder_config();
  const auto facts = entry("MT5EncoderModel").facts(config);
  const nlohmann::json c = read_json(mt5_dir("case.json"));
  EXPECT_EQ(facts->hidden_size(), 32);
  EXPECT_EQ(facts->vocab_size(), c["vocab_size"].get<int>());
  auto enc = load_registered(config);

  Checkpoint ref = Checkpoint::open_file(mt5_dir("reference.safetensors"));
  const Tensor ids = ref.load("input_ids", DType::i64);  // [4, 24]
  const Tensor mask = ref.load("attention_mask", DType::i64);
  const Tensor masked = ref.load("masked"), unmasked = ref.load("unmasked");  // [4, 24, 32]
  const Tensor out_masked = enc->encode(ids, &mask), out_unmasked = enc->encode(ids);
  EXPECT_TRUE(testing::close_rel(out_masked, masked, kTol));
  EXPECT_TRUE(testing::close_rel(out_unmasked, unmasked, kTol));
  std::printf("relative error: masked %.3g, unmasked %.3g\n", testing::compare(out_masked, masked).rel(),
              testing::compare(out_unmasked, unmasked).rel());

  // The test can fail: the padding changes every position, so each run misses the other's reference.
  EXPECT_FALSE(testing::close_rel(out_unmasked, masked, 1e-3));
  EXPECT_FALSE(testing::close_rel(out_masked, unmasked, 1e-3));
}

// pab's tokenizer gives the encoder prompts' ids and mask, and the two together the reference states.
TEST(MT5, TokenizerAndEncoderTogether) {
  auto tok = T5Tokenizer::load(mt5_dir("tokenizer"));
  auto enc = load_registered(encoder_config());
  const nlohmann::json c = read_json(mt5_dir("case.json"));
  Checkpoint ref = Checkpoint::open_file(mt5_dir("reference.safetensors"));
  const int64_t length = c["max_length"].get<int64_t>();
  std::vector<std::vector<int64_t>> ids, masks;
  for (const auto& p : c["encoder_prompts"]) {
    TokenizedText t = tok->tokenize(p.get<std::string>(), length);
    ids.push_back(t.ids);
    masks.push_back(t.mask);
  }
  const Tensor id_tensor = token_tensor(ids), mask_tensor = token_tensor(masks);
  EXPECT_EQ(ids_of(id_tensor), ids_of(ref.load("input_ids", DType::i64)));
  EXPECT_EQ(ids_of(mask_tensor), ids_of(ref.load("attention_mask", DType::i64)));
  EXPECT_TRUE(testing::close_rel(enc->encode(id_tensor, &mask_tensor), ref.load("masked"), kTol));
}

// Every tokenizer prompt (many scripts, special tokens in the text, the empty
// prompt, one of exactly 300 tokens, one past 512) untruncated and padded and
// truncated to each length, from spiece.model with mT5's configs and from the
// tokenizer.json transformers saves for it.
TEST(MT5, TokenizerMatchesTransformers) {
  const nlohmann::json c = read_json(mt5_dir("tokenizer_cases.json"));
  const nlohmann::json info = read_json(mt5_dir("case.json"));
  const auto facts = entry("MT5EncoderModel").facts(encoder_config());
  const auto& prompts = c["prompts"];
  for (const auto& [name, folder] : {std::pair{"spm", "tokenizer"}, {"json", "tokenizer_fast"}}) {
    SCOPED_TRACE(name);
    auto tok = T5Tokenizer::load(mt5_dir(folder));
    EXPECT_EQ(tok->vocab_size(), info["tokenizer_pieces"].get<int64_t>());  // extra_ids 0: the sentinels are pieces
    EXPECT_LT(tok->vocab_size(), facts->vocab_size());                      // the embedding has spare rows, as mT5's
    EXPECT_EQ(tok->pad_id(), 0);
    EXPECT_EQ(tok->eos_id(), 1);
    int mismatches = 0;
    for (size_t i = 0; i < prompts.size(); ++i) {
      const std::string p = prompts[i].get<std::string>();
      const auto expected = c[cat("ids_", name)][i].get<std::vector<int64_t>>();
      const auto ids = tok->encode(p);
      EXPECT_EQ(ids, expected) << "prompt " << i << ": " << prompts[i].dump();
      mismatches += ids != expected;
      for (const auto& l : c["lengths"]) {
        const int64_t length = l.get<int64_t>();
        TokenizedText t = tok->tokenize(p, length);
        EXPECT_EQ(t.ids, c[cat("ids_", name, "_", length)][i].get<std::vector<int64_t>>()) << i << " at " << length;
        EXPECT_EQ(t.mask, c[cat("mask_", name, "_", length)][i].get<std::vector<int64_t>>()) << i << " at " << length;
        EXPECT_EQ(t.num_dropped, std::max<int64_t>(0, int64_t(expected.size()) - length)) << i << " at " << length;
      }
    }
    EXPECT_EQ(mismatches, 0) << "of " << prompts.size();
    // The cases reach both edges: one prompt fills 300 exactly, one is cut at 512.
    EXPECT_EQ(tok->tokenize(prompts[prompts.size() - 2].get<std::string>(), 300).num_dropped, 0);
    EXPECT_GT(tok->tokenize(prompts.back().get<std::string>(), 512).num_dropped, 0);
    // The test can fail: a neighbouring prompt's reference does not match.
    EXPECT_NE(tok->encode(prompts[1].get<std::string>()), c[cat("ids_", name)][2].get<std::vector<int64_t>>());
  }
}

// mT5's tokenizer_config.json says "additional_special_tokens": null, and so
// its sentinels ("\u2581<extra_id_N>", user-defined pieces) are unigram
// pieces; under a config without that key transformers makes them added
// tokens, cut out of the text first, and under one that lists some, those.
TEST(MT5, SentinelsFollowTheTokenizerConfig) {
  const nlohmann::json c = read_json(mt5_dir("tokenizer_cases.json"));
  const auto& prompts = c["prompts"];
  for (const auto& [name, config] : c["other_configs"].items()) {
    SCOPED_TRACE(name);
    testing::TempDir dir;
    fs::copy_file(mt5_dir("tokenizer/spiece.model"), dir / "spiece.model");
    std::ofstream(dir / "tokenizer_config.json") << config.dump();
    auto tok = T5Tokenizer::load(dir.path());
    int differing = 0;
    for (size_t i = 0; i < prompts.size(); ++i) {
      const auto expected = c["ids_" + name][i].get<std::vector<int64_t>>();
      EXPECT_EQ(tok->encode(prompts[i].get<std::string>()), expected) << "prompt " << i << ": " << prompts[i].dump();
      differing += expected != c["ids_spm"][i].get<std::vector<int64_t>>();
    }
    EXPECT_GT(differing, 0);  // the test can fail: each config tokenizes the sentinels its own way
  }
}

// spiece.model is read without the sentencepiece library (whose Load takes
// seconds on 250k pieces); what that refused is still refused, naming the file.
TEST(MT5, BrokenSpieceModelsAreRefused) {
  const std::string good = testing::read_bytes(mt5_dir("tokenizer/spiece.model"));
  testing::TempDir dir;
  auto error_with = [&](const std::string& bytes) {
    testing::write_bytes(dir / "spiece.model", bytes);
    return error_of([&] { T5Tokenizer::load(dir.path()); });
  };
  // A piece appended as ModelProto field 1: {piece (1): "</s>", score (2): 0.0f, type (3): 1}.
  const std::string duplicate = std::string("\x0a\x0d\x0a\x04</s>\x15\x00\x00\x00\x00\x18\x01", 15);
  EXPECT_NE(error_with(good + duplicate).find("piece '</s>' at ids 1 and 1100"), std::string::npos);
  EXPECT_NE(error_with(good + std::string("\x0a\x00", 2)).find("piece 1100 is empty"), std::string::npos);
  EXPECT_NE(error_with(good.substr(0, good.size() - 3)).find("malformed protobuf"), std::string::npos);
  const std::string message = error_with(good + duplicate);
  EXPECT_NE(message.find(dir / "spiece.model"), std::string::npos) << message;
  EXPECT_EQ(error_with(good), "");  // can pass
}

// The config is read as the registered class reads it: MT5Config's
// feed_forward_proj defaults to gated-gelu, T5Config's to relu.
TEST(MT5, ConfigReadAsMT5Config) {
  nlohmann::json j = encoder_config().json();
  j.erase("feed_forward_proj");
  j.erase("dense_act_fn");
  j.erase("is_gated_act");
  const JsonConfig config(j, mt5_dir("text_encoder/config.json"));
  const T5Config mt5 = T5Config::from_json(config, T5Variant::mt5);
  EXPECT_TRUE(mt5.gated);
  EXPECT_EQ(mt5.act, Unary::gelu_tanh);
  EXPECT_EQ(mt5.num_buckets, 16);
  EXPECT_EQ(mt5.max_distance, 24);
  Checkpoint ref = Checkpoint::open_file(mt5_dir("reference.safetensors"));
  EXPECT_TRUE(testing::close_rel(load_registered(config)->encode(ref.load("input_ids", DType::i64)),
                                 ref.load("unmasked"), kTol));
  // T5EncoderModel reads the same file as relu, whose weights this checkpoint lacks.
  EXPECT_FALSE(T5Config::from_json(config).gated);
  EXPECT_NE(error_of([&] { load_registered(config, "T5EncoderModel"); }).find("DenseReluDense.wi.weight"),
            std::string::npos);
  // Loading the folder picks MT5Config by its model_type, as transformers' AutoConfig does.
  EXPECT_TRUE(T5Encoder::load(mt5_dir("text_encoder"))->config().gated);
}

TEST(MT5, ConfigErrorsNameFileAndKey) {
  const nlohmann::json good = encoder_config().json();
  testing::TempDir dir;
  for (const char* f : {"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                        "model-00003-of-00003.safetensors", "model.safetensors.index.json"})
    fs::copy_file(mt5_dir(cat("text_encoder/", f)), dir / f);
  auto error_with = [&](const std::function<void(nlohmann::json&)>& edit) {
    nlohmann::json j = good;
    edit(j);
    std::ofstream(dir / "config.json") << j.dump();
    const JsonConfig config = JsonConfig::load(dir / "config.json");
    return error_of([&] {
      entry("MT5EncoderModel").facts(config);
      entry("MT5EncoderModel").load(config, Checkpoint::open_dir(dir.path()), LoadOptions{});
    });
  };
  struct Case {
    std::function<void(nlohmann::json&)> edit;
    std::vector<std::string> needles;
  };
  const std::string config_file = dir / "config.json", index = dir / "model.safetensors.index.json";
  for (const Case& k : std::vector<Case>{
           {[](nlohmann::json& j) { j["model_type"] = "umt5"; }, {config_file, "model_type"}},
           {[](nlohmann::json& j) { j["is_decoder"] = true; }, {config_file, "is_decoder"}},
           {[](nlohmann::json& j) { j["feed_forward_proj"] = "gated-gelu-new"; }, {config_file, "feed_forward_proj"}},
           {[](nlohmann::json& j) { j["feed_forward_proj"] = "gated-tanh"; }, {config_file, "feed_forward_proj"}},
           {[](nlohmann::json& j) { j.erase("d_kv"); }, {config_file, "d_kv"}},
           {[](nlohmann::json& j) { j["num_heads"] = 0; }, {config_file, "num_heads"}},
           {[](nlohmann::json& j) { j["vocab_size"] = "250112"; }, {config_file, "vocab_size"}},
           {[](nlohmann::json& j) { j["relative_attention_num_buckets"] = 2; },
            {config_file, "relative_attention_num_buckets"}},
           {[](nlohmann::json& j) { j["vocab_size"] = 250112; }, {index, "shared.weight"}},
           {[](nlohmann::json& j) { j["num_layers"] = 4; }, {index, "encoder.block.3."}},
           {[](nlohmann::json& j) { j["num_layers"] = 2; }, {index, "more encoder blocks than num_layers"}},
       }) {
    const std::string message = error_with(k.edit);
    for (const std::string& needle : k.needles) EXPECT_NE(message.find(needle), std::string::npos) << message;
  }
  EXPECT_EQ(error_with([](nlohmann::json&) {}), "");  // the unedited config loads
}

// Latte's fixture pipeline with the mT5 encoder and tokenizer in place of its
// T5 ones (both 32 wide): the folder is read, a prompt encoded, and the text
// phase's estimate counts the weights transformers counts (the embedding once)
// and covers the peak the CPU backend measured.
TEST(MT5, PipelineFolderWithAnMT5Encoder) {
  testing::TempDir dir;
  const std::string model = dir / "model";
  testing::copy_tree(testing::data_path("fixtures/pipeline/latte/model"), model);
  for (const char* part : {"text_encoder", "tokenizer"}) {
    fs::remove_all(model + "/" + part);
    testing::copy_tree(mt5_dir(part), model + "/" + part);
  }
  nlohmann::json index = read_json(model + "/model_index.json");
  index["text_encoder"] = {"transformers", "MT5EncoderModel"};
  std::ofstream(model + "/model_index.json") << index.dump(1);

  auto pipe = VideoPipeline::open(model, LoadOptions{});
  VideoRequest req;
  req.prompt = "Кошка бежит по зелёному полю, 一只小猫在绿色的草地上奔跑";
  req.steps = 2;
  req.frames = 2;
  req.height = 64;
  req.width = 64;
  const VideoPlan plan = pipe->plan(req);
  const MemoryEstimate e = pipe->estimate_memory(plan, {}, TilingChoice::automatic);
  const uint64_t parameters = read_json(mt5_dir("case.json"))["num_parameters"].get<uint64_t>();
  EXPECT_EQ(e.part("text encoder", "weights"), parameters * 4);

  Backend& cpu = backend(Device::cpu);
  const uint64_t base = cpu.memory_stats().in_use;
  cpu.reset_peak_memory();
  PromptEmbeddings embeds = pipe->encode_prompt(plan);
  const uint64_t measured = cpu.memory_stats().peak - base;
  uint64_t estimated = 0;
  for (const auto& p : e.phases)
    if (p.name == "text encoder") estimated = p.total();
  std::printf("text encoder: estimated %s, measured %s\n", format_bytes(estimated).c_str(),
              format_bytes(measured).c_str());
  EXPECT_GE(estimated, measured);
  EXPECT_EQ(embeds.prompt.dim(embeds.prompt.rank() - 1), 32);
}

}  // namespace
}  // namespace pab
