// python_lower_strip against Python's text.lower().strip() (tests/data/prompt_text).
#include <fstream>
#include <nlohmann/json.hpp>

#include "pipeline/prompt_text.h"
#include "support/testing.h"

namespace pab {
namespace {

TEST(PromptText, MatchesPythonLowerStrip) {
  auto c = nlohmann::json::parse(std::ifstream(testing::data_path("prompt_text/cases.json")));
  const auto& texts = c["texts"];
  int mismatches = 0, changed = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    const std::string in = texts[i].get<std::string>(), expected = c["expected"][i].get<std::string>();
    const std::string out = python_lower_strip(in);
    EXPECT_EQ(out, expected) << "text " << i << ": " << texts[i].dump();
    mismatches += out != expected;
    changed += in != expected;
  }
  EXPECT_EQ(mismatches, 0);
  EXPECT_GT(changed, int(texts.size()) / 2);  // the cases do exercise lowering and stripping
}

TEST(PromptText, RejectsInvalidUtf8) {
  EXPECT_THROW(python_lower_strip("A\xFF"), Error);
}

}  // namespace
}  // namespace pab
