// python_lower_strip against Python's text.lower().strip(), and clean_caption /
// open_sora_text_preprocessing and their pieces against VideoSys's _clean_caption and the Python
// functions it calls (tests/data/prompt_text, made by dev/fixtures/make_prompt_text_cases.py and
// make_clean_caption_cases.py). Text either matches exactly or is refused; nothing is close.
#include <fstream>
#include <nlohmann/json.hpp>

#include "pipeline/caption/caption_parts.h"
#include "pipeline/prompt_text.h"
#include "support/testing.h"

namespace pab {
namespace {

using testing::error_of;

nlohmann::json load(const std::string& rel) {
  return nlohmann::json::parse(std::ifstream(testing::data_path(rel)));
}

TEST(PromptText, MatchesPythonLowerStrip) {
  auto c = load("prompt_text/cases.json");
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

// ---------------------------------------------------------------- clean_caption

struct Outcome {
  int matched = 0, refused = 0;
};

// Runs `fn` over the cases: each output equals the reference's, or, where `refused_key` names a
// reason, fn refuses with a message that says it.
Outcome check_cases(const nlohmann::json& c, const char* expected_key, const char* refused_key,
                    const std::function<std::string(const std::string&)>& fn) {
  Outcome o;
  const auto& texts = c["texts"];
  for (size_t i = 0; i < texts.size(); ++i) {
    const std::string in = texts[i].get<std::string>();
    const auto& why = c[refused_key][i];
    if (!why.is_null()) {
      const std::string err = error_of([&] { fn(in); });
      const std::string expect = why == "mojibake" ? "mojibake" : "ParserRejectedMarkup";
      EXPECT_NE(err.find(expect), std::string::npos) << "text " << i << ": " << texts[i].dump() << ": " << err;
      o.refused += err.find(expect) != std::string::npos;
      continue;
    }
    std::string out;
    const std::string err = error_of([&] { out = fn(in); });
    const std::string expected = c[expected_key][i].get<std::string>();
    EXPECT_EQ(err, "") << "text " << i << ": " << texts[i].dump();
    EXPECT_EQ(out, expected) << "text " << i << ": " << texts[i].dump();
    o.matched += err.empty() && out == expected;
  }
  return o;
}

TEST(CleanCaption, OnePassMatchesReference) {
  const auto c = load("prompt_text/clean_caption.json");
  const Outcome o = check_cases(c, "one_pass", "refused_one_pass", [](const std::string& t) { return clean_caption(t); });
  const size_t n = c["texts"].size();
  EXPECT_EQ(size_t(o.matched + o.refused), n);
  EXPECT_GE(o.matched, int(n) - 12);  // 626 cases: a few are the refused classes' own triggers
  EXPECT_GE(o.refused, 4);
}

TEST(CleanCaption, TextPreprocessingMatchesReference) {
  const auto c = load("prompt_text/clean_caption.json");
  const Outcome o = check_cases(c, "two_pass", "refused_two_pass", open_sora_text_preprocessing);
  const size_t n = c["texts"].size();
  EXPECT_EQ(size_t(o.matched + o.refused), n);
  EXPECT_GE(o.matched, int(n) - 12);
  EXPECT_GE(o.refused, 4);
}

// The cases tell the passes apart, and the cleaning does change text: a cleaner that did one
// pass, or nothing, would fail the tests above.
TEST(CleanCaption, CasesCanFail) {
  const auto c = load("prompt_text/clean_caption.json");
  int passes_differ = 0, changed = 0, caught = 0;
  for (size_t i = 0; i < c["texts"].size(); ++i) {
    if (!c["refused_two_pass"][i].is_null()) continue;
    const std::string in = c["texts"][i], one = c["one_pass"][i], two = c["two_pass"][i];
    passes_differ += one != two;
    changed += in != two;
    if (one != two) caught += open_sora_text_preprocessing(in) != one;
  }
  EXPECT_GE(passes_differ, 20);
  EXPECT_EQ(caught, passes_differ);
  EXPECT_GT(changed, int(c["texts"].size()) / 2);
  // A mutated expectation is caught.
  const std::string in = c["texts"][0], two = c["two_pass"][0];
  EXPECT_EQ(open_sora_text_preprocessing(in), two);
  EXPECT_NE(open_sora_text_preprocessing(in), two + " ");
}

// diffusers' LattePipeline._clean_caption (DeepFloyd IF's, which Open-Sora-Plan carries too)
// differs from Open-Sora's: its _basic_clean step does not strip. The DeepFloyd style matches
// it on every case, and the cases do tell the two apart.
TEST(CleanCaption, DeepFloydStyleMatchesDiffusers) {
  const auto c = load("prompt_text/clean_caption.json");
  int differ = 0, compared = 0;
  for (size_t i = 0; i < c["texts"].size(); ++i) {
    if (!c["refused_one_pass"][i].is_null()) continue;
    const std::string in = c["texts"][i], latte = c["latte"][i];
    EXPECT_EQ(clean_caption(in, CaptionStyle::deepfloyd_if), latte) << i << ": " << in;
    differ += latte != c["one_pass"][i];
    ++compared;
  }
  EXPECT_GT(compared, int(c["texts"].size()) / 2);
  EXPECT_GE(differ, 5);
}

// The re.sub steps are the reference's own patterns and replacements, in its order (read from
// its source by the generator).
TEST(CleanCaption, StepsAreTheReferences) {
  const auto c = load("prompt_text/clean_caption.json");
  const std::vector<caption::CaptionSub> subs = caption::clean_caption_subs();
  ASSERT_EQ(subs.size(), c["subs"].size());
  for (size_t i = 0; i < subs.size(); ++i) {
    EXPECT_EQ(caption::encode(caption::Text(subs[i].pattern)), c["subs"][i]["pattern"].get<std::string>()) << i;
    EXPECT_EQ(caption::encode(caption::Text(subs[i].repl)), c["subs"][i]["repl"].get<std::string>()) << i;
  }
}

TEST(CleanCaption, Refusals) {
  EXPECT_NE(error_of([] { clean_caption("a\xC3(b"); }).find("not valid UTF-8"), std::string::npos);
  EXPECT_NE(error_of([] { open_sora_text_preprocessing("\xED\xA0\x80"); }).find("not valid UTF-8"), std::string::npos);
  // A C1 control character and an accented letter before a currency sign are what ftfy's
  // badness heuristic flags, and would try to re-decode.
  EXPECT_NE(error_of([] { clean_caption("x \xC2\x85 y"); }).find("mojibake"), std::string::npos);
  EXPECT_NE(error_of([] { clean_caption("caf\xC3\xA9\xE2\x82\xAC"); }).find("mojibake"), std::string::npos);
  // The message stays on one line when what the heuristic matched holds a control character.
  const std::string m = error_of([] { caption::ftfy_fix_text(caption::decode("x\r\xC3\x89\xE2\x82\xAC", "text")); });
  EXPECT_NE(m.find("mojibake"), std::string::npos) << m;
  EXPECT_NE(m.find("\\u000d"), std::string::npos) << m;
  EXPECT_EQ(m.find_first_of("\r\n"), std::string::npos) << m;
  EXPECT_NE(error_of([] { clean_caption("a <![foo[b]]> c"); }).find("ParserRejectedMarkup"), std::string::npos);
  // What they are not: ordinary accented text and markup pass.
  EXPECT_EQ(clean_caption("Caf\xC3\xA9 <b>noir</b>"), "caf\xC3\xA9 noir");
}

// ---------------------------------------------------------------- the pieces

using caption::decode;
using caption::encode;
using caption::Text;

// Each input's output through fn equals the reference's (null outputs: the input unchanged).
int check_part(const nlohmann::json& inputs, const nlohmann::json& outputs, const std::function<Text(const Text&)>& fn,
               const std::string& what) {
  int mismatches = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const std::string in = inputs[i];
    const std::string expected = outputs[i].is_null() ? in : outputs[i].get<std::string>();
    const std::string out = encode(fn(decode(in, "input")));
    EXPECT_EQ(out, expected) << what << " " << i << ": " << inputs[i].dump();
    mismatches += out != expected;
  }
  return mismatches;
}

TEST(CaptionParts, UnquotePlus) {
  const auto p = load("prompt_text/caption_parts.json")["unquote_plus"];
  EXPECT_EQ(check_part(p["inputs"], p["outputs"], caption::unquote_plus, "unquote_plus"), 0);
}

TEST(CaptionParts, HtmlUnescape) {
  const auto p = load("prompt_text/caption_parts.json")["html_unescape"];
  EXPECT_EQ(check_part(p["inputs"], p["outputs"], caption::html_unescape, "html.unescape"), 0);
}

TEST(CaptionParts, Nfc) {
  const auto p = load("prompt_text/caption_parts.json")["nfc"];
  EXPECT_EQ(check_part(p["inputs"], p["outputs"], caption::nfc, "NFC"), 0);
}

TEST(CaptionParts, SoupText) {
  const auto p = load("prompt_text/caption_parts.json")["soup_text"];
  int rejected = 0;
  for (size_t i = 0; i < p["inputs"].size(); ++i) {
    const std::string in = p["inputs"][i];
    if (p["rejected"][i]) {
      EXPECT_NE(error_of([&] { caption::soup_text(decode(in, "input")); }).find("ParserRejectedMarkup"),
                std::string::npos)
          << i << ": " << p["inputs"][i].dump();
      ++rejected;
      continue;
    }
    EXPECT_EQ(encode(caption::soup_text(decode(in, "input"))), p["outputs"][i].get<std::string>())
        << i << ": " << p["inputs"][i].dump();
  }
  EXPECT_GT(rejected, 0);
}

TEST(CaptionParts, FixText) {
  const auto p = load("prompt_text/caption_parts.json")["fix_text"];
  for (size_t i = 0; i < p["inputs"].size(); ++i) {
    const std::string in = p["inputs"][i];
    if (p["mojibake"][i]) {
      EXPECT_NE(error_of([&] { caption::ftfy_fix_text(decode(in, "input")); }).find("mojibake"), std::string::npos)
          << i << ": " << p["inputs"][i].dump();
      continue;
    }
    EXPECT_EQ(encode(caption::ftfy_fix_text(decode(in, "input"))), p["outputs"][i].get<std::string>())
        << i << ": " << p["inputs"][i].dump();
  }
}

// Python's re.sub of every pattern of _clean_caption, on its own.
TEST(CaptionParts, EveryPatternAsPythonRe) {
  const auto p = load("prompt_text/caption_parts.json")["subs"];
  int changed = 0;
  for (const auto& s : p["patterns"]) {
    const pyre::Regex re(decode(s["pattern"], "pattern"));
    const Text repl = decode(s["repl"], "repl");
    EXPECT_EQ(
        check_part(
            p["inputs"], s["outputs"], [&](const Text& t) { return re.sub(t, repl); }, s["pattern"].get<std::string>()),
        0);
    for (const auto& o : s["outputs"]) changed += !o.is_null();
  }
  EXPECT_GT(changed, 500);
}

// The matcher on patterns beyond the cleaner's (empty matches, lazy repeats, lookarounds, anchors,
// the flags), so that it is Python's re and not only right for the patterns at hand.
TEST(CaptionParts, MatcherAsPythonRe) {
  const auto p = load("prompt_text/caption_parts.json")["regex"];
  for (const auto& s : p["patterns"]) {
    const int flags = s["flags"] == "verbose" ? pyre::kVerbose : s["flags"] == "ignorecase" ? pyre::kIgnoreCase : 0;
    const pyre::Regex re(decode(s["pattern"], "pattern"), flags);
    const Text repl = decode(s["repl"], "repl");
    EXPECT_EQ(
        check_part(
            p["inputs"], s["outputs"], [&](const Text& t) { return re.sub(t, repl); }, s["pattern"].get<std::string>()),
        0);
  }
}

}  // namespace
}  // namespace pab
