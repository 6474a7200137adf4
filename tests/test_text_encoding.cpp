// Tokenizer + T5 encoder together reproduce the prompt embeddings of the
// pipeline fixtures: CogVideoX (padded to max_sequence_length, no mask) and
// Latte (120 tokens encoded with the attention mask, then cut to the prompt's
// token count, mask_feature=True).
#include <fstream>
#include <nlohmann/json.hpp>

#include "backend/ops.h"
#include "io/safetensors.h"
#include "models/t5.h"
#include "pipeline/tokenizer.h"
#include "support/testing.h"

namespace pab {
namespace {

const double kTol = 1e-5;

struct Fixture {
  std::unique_ptr<T5Tokenizer> tokenizer;
  std::unique_ptr<T5Encoder> encoder;
  nlohmann::json call;
  Checkpoint reference;
};

Fixture load(const std::string& name) {
  const std::string dir = testing::data_path("fixtures/pipeline/" + name);
  return {T5Tokenizer::load(dir + "/model/tokenizer"), T5Encoder::load(dir + "/model/text_encoder"),
          nlohmann::json::parse(std::ifstream(dir + "/case.json"))["call"],
          Checkpoint::open_file(dir + "/reference.safetensors")};
}

// CogVideoXPipeline._get_t5_prompt_embeds
Tensor cogvideox_embeds(const Fixture& f, const std::string& prompt) {
  TokenizedText t = f.tokenizer->tokenize(prompt, f.call["max_sequence_length"].get<int64_t>());
  return f.encoder->encode(token_tensor({t.ids}));
}

TEST(TextEncoding, CogVideoXPromptEmbeds) {
  for (const char* name : {"cogvideox_ddim", "cogvideox_dpm"}) {
    Fixture f = load(name);
    Tensor prompt = cogvideox_embeds(f, f.call["prompt"].get<std::string>());
    Tensor negative = cogvideox_embeds(f, f.call["negative_prompt"].get<std::string>());
    EXPECT_TRUE(testing::close_rel(prompt, f.reference.load("prompt_embeds"), kTol)) << name;
    EXPECT_TRUE(testing::close_rel(negative, f.reference.load("negative_prompt_embeds"), kTol)) << name;
    // The test can fail: the two references are not interchangeable.
    EXPECT_FALSE(testing::close_rel(prompt, f.reference.load("negative_prompt_embeds"), 1e-3)) << name;
  }
}

TEST(TextEncoding, CogVideoXPromptIsTruncated) {
  Fixture f = load("cogvideox_ddim");
  TokenizedText t = f.tokenizer->tokenize(f.call["prompt"].get<std::string>(), 16);
  EXPECT_EQ(t.num_dropped, int64_t(t.ids_untruncated.size()) - 16);
  EXPECT_GT(t.num_dropped, 0);
  EXPECT_EQ(t.ids.back(), f.tokenizer->eos_id());
}

TEST(TextEncoding, LatteMaskedPromptEmbeds) {
  Fixture f = load("latte");
  ASSERT_TRUE(f.call["mask_feature"].get<bool>());
  ASSERT_FALSE(f.call["clean_caption"].get<bool>());
  const int64_t max_length = 120;  // LattePipeline.encode_prompt
  // The prompt is already lower case without surrounding spaces, so the
  // pipeline's text.lower().strip() leaves it unchanged.
  auto encode = [&](const std::string& text, bool with_mask) {
    TokenizedText t = f.tokenizer->tokenize(text, max_length);
    Tensor mask = token_tensor({t.mask});
    int64_t kept = 0;
    for (int64_t m : t.mask) kept += m;
    return std::pair{f.encoder->encode(token_tensor({t.ids}), with_mask ? &mask : nullptr), kept};
  };
  auto [prompt, keep] = encode(f.call["prompt"].get<std::string>(), true);
  auto [negative, negative_kept] = encode(f.call["negative_prompt"].get<std::string>(), true);
  Tensor expected = f.reference.load("prompt_embeds");
  ASSERT_EQ(keep, expected.dim(1));
  EXPECT_TRUE(testing::close_rel(ops::slice(prompt, 1, 0, keep), expected, kTol));
  // The negative prompt is cut to the prompt's token count, not its own.
  EXPECT_TRUE(testing::close_rel(ops::slice(negative, 1, 0, keep), f.reference.load("negative_prompt_embeds"), kTol));
  EXPECT_LT(negative_kept, keep);
  // The test can fail: without the mask the padding keys change the result.
  auto [unmasked, unused] = encode(f.call["prompt"].get<std::string>(), false);
  EXPECT_FALSE(testing::close_rel(ops::slice(unmasked, 1, 0, keep), expected, 1e-3));
}

}  // namespace
}  // namespace pab
