// PixArt's / Open-Sora's _clean_caption and text_preprocessing (see prompt_text.h): the steps
// of the reference in its order, each one a piece of caption/ (Python's re, urllib, html,
// BeautifulSoup, ftfy) on the text as a Python str.
#include <string>
#include <vector>

#include "pipeline/caption/caption_parts.h"
#include "pipeline/prompt_text.h"

namespace pab {

namespace caption {

namespace {

enum class StepKind {
  kSub,         // re.sub(pattern, repl, caption)
  kSoup,        // BeautifulSoup(caption, features="html.parser").text
  kHyphens,     // if len(re.findall(pattern, caption)) > 3: caption = re.sub(pattern, repl, caption)
  kBasicClean,  // _basic_clean: ftfy.fix_text, html.unescape twice, strip
};

struct Step {
  StepKind kind;
  std::u32string_view pattern = {}, repl = {};
};

// The patterns as Python holds them (after its string literals are read), in _clean_caption's order.
// clang-format off
const Step kSteps[] = {
    {StepKind::kSub, U"<person>", U"person"},
    // urls:
    {StepKind::kSub, UR"re(\b((?:https?:(?:\/{1,3}|[a-zA-Z0-9%])|[a-zA-Z0-9.\-]+[.](?:com|co|ru|net|org|edu|gov|it)[\w/-]*\b\/?(?!@))))re", U""},
    {StepKind::kSub, UR"re(\b((?:www:(?:\/{1,3}|[a-zA-Z0-9%])|[a-zA-Z0-9.\-]+[.](?:com|co|ru|net|org|edu|gov|it)[\w/-]*\b\/?(?!@))))re", U""},
    {StepKind::kSoup},
    // @<nickname>
    {StepKind::kSub, UR"re(@[\w\d]+\b)re", U""},
    // CJK strokes, katakana phonetic extensions, enclosed CJK, CJK compatibility, CJK unified
    // ideographs extension A, Yijing hexagrams, CJK unified ideographs
    {StepKind::kSub, UR"re([\u31c0-\u31ef]+)re", U""},
    {StepKind::kSub, UR"re([\u31f0-\u31ff]+)re", U""},
    {StepKind::kSub, UR"re([\u3200-\u32ff]+)re", U""},
    {StepKind::kSub, UR"re([\u3300-\u33ff]+)re", U""},
    {StepKind::kSub, UR"re([\u3400-\u4dbf]+)re", U""},
    {StepKind::kSub, UR"re([\u4dc0-\u4dff]+)re", U""},
    {StepKind::kSub, UR"re([\u4e00-\u9fff]+)re", U""},
    // every kind of dash to "-"
    {StepKind::kSub, UR"re([\u002D\u058A\u05BE\u1400\u1806\u2010-\u2015\u2E17\u2E1A\u2E3A\u2E3B\u2E40\u301C\u3030\u30A0\uFE31\uFE32\uFE58\uFE63\uFF0D]+)re", U"-"},
    // quotes to one standard
    {StepKind::kSub, U"[`´«»“”¨]", U"\""},
    {StepKind::kSub, U"[‘’]", U"'"},
    // &quot; and &amp
    {StepKind::kSub, UR"re(&quot;?)re", U""},
    {StepKind::kSub, UR"re(&amp)re", U""},
    // ip addresses
    {StepKind::kSub, UR"re(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})re", U" "},
    // article ids
    {StepKind::kSub, UR"re(\d:\d\d\s+$)re", U""},
    // a literal \n
    {StepKind::kSub, UR"re(\\n)re", U" "},
    // "#123", "#12345..", "123456.."
    {StepKind::kSub, UR"re(#\d{1,3}\b)re", U""},
    {StepKind::kSub, UR"re(#\d{5,}\b)re", U""},
    {StepKind::kSub, UR"re(\b\d{6,}\b)re", U""},
    // filenames
    {StepKind::kSub, UR"re([\S]+\.(?:png|jpg|jpeg|bmp|webp|eps|pdf|apk|mp4))re", U""},
    {StepKind::kSub, UR"re([\"\']{2,})re", U"\""},
    {StepKind::kSub, UR"re([\.]{2,})re", U" "},
    // BAD_PUNCT_REGEX
    {StepKind::kSub, UR"re([#®•©™&@·º½¾¿¡§~\)\(\]\[\}\{\|\\/\*]{1,})re", U" "},
    {StepKind::kSub, UR"re(\s+\.\s+)re", U" "},
    // this-is-my-cute-cat / this_is_my_cute_cat
    {StepKind::kHyphens, UR"re((?:\-|\_))re", U" "},
    {StepKind::kBasicClean},
    {StepKind::kSub, UR"re(\b[a-zA-Z]{1,3}\d{3,15}\b)re", U""},
    {StepKind::kSub, UR"re(\b[a-zA-Z]+\d+[a-zA-Z]+\b)re", U""},
    {StepKind::kSub, UR"re(\b\d+[a-zA-Z]+\d+\b)re", U""},
    {StepKind::kSub, UR"re((worldwide\s+)?(free\s+)?shipping)re", U""},
    {StepKind::kSub, UR"re((free\s)?download(\sfree)?)re", U""},
    {StepKind::kSub, UR"re(\bclick\b\s(?:for|on)\s\w+)re", U""},
    {StepKind::kSub, UR"re(\b(?:png|jpg|jpeg|bmp|webp|eps|pdf|apk|mp4)(\simage[s]?)?)re", U""},
    {StepKind::kSub, UR"re(\bpage\s+\d+\b)re", U""},
    {StepKind::kSub, UR"re(\b\d*[a-zA-Z]+\d+[a-zA-Z]+\d+[a-zA-Z\d]*\b)re", U" "},
    {StepKind::kSub, UR"re(\b\d+\.?\d*[xх×]\d+\.?\d*\b)re", U""},
    {StepKind::kSub, UR"re(\b\s+\:\s+)re", UR"re(: )re"},
    {StepKind::kSub, UR"re((\D[,\./])\b)re", UR"re(\1 )re"},
    {StepKind::kSub, UR"re(\s+)re", U" "},
    {StepKind::kSub, UR"re(^[\"\']([\w\W]+)[\"\']$)re", UR"re(\1)re"},
    {StepKind::kSub, UR"re(^[\'\_,\-\:;])re", U""},
    {StepKind::kSub, UR"re([\'\_,\-\:\-\+]$)re", U""},
    {StepKind::kSub, UR"re(^\.\S+$)re", U""},
};
// clang-format on
constexpr size_t kStepCount = std::size(kSteps);

const std::vector<pyre::Regex>& compiled() {
  static const std::vector<pyre::Regex> regexes = [] {
    std::vector<pyre::Regex> r;
    r.reserve(kStepCount);
    for (const Step& s : kSteps) r.emplace_back(s.pattern.empty() ? U"" : s.pattern);
    return r;
  }();
  return regexes;
}

Text basic_clean(const Text& text, CaptionStyle style) {
  Text t = html_unescape(html_unescape(ftfy_fix_text(text)));
  return style == CaptionStyle::open_sora ? python_strip(t) : t;
}

}  // namespace

std::vector<CaptionSub> clean_caption_subs() {
  std::vector<CaptionSub> out;
  for (const Step& s : kSteps)
    if (s.kind == StepKind::kSub || s.kind == StepKind::kHyphens) out.push_back({s.pattern, s.repl});
  return out;
}

Text clean_caption(const Text& input, CaptionStyle style) {
  Text caption = unquote_plus(input);
  caption = decode(python_lower_strip(encode(caption)), "prompt text");
  const std::vector<pyre::Regex>& regexes = compiled();
  for (size_t i = 0; i < kStepCount; ++i) {
    const Step& s = kSteps[i];
    switch (s.kind) {
      case StepKind::kSub:
        caption = regexes[i].sub(caption, s.repl);
        break;
      case StepKind::kSoup:
        caption = soup_text(caption);
        break;
      case StepKind::kHyphens:
        if (regexes[i].count(caption) > 3) caption = regexes[i].sub(caption, s.repl);
        break;
      case StepKind::kBasicClean:
        caption = basic_clean(caption, style);
        break;
    }
  }
  return python_strip(caption);
}

}  // namespace caption

std::string clean_caption(const std::string& utf8, CaptionStyle style) {
  return caption::encode(caption::clean_caption(caption::decode(utf8, "prompt text"), style));
}

namespace {

std::string two_passes(const std::string& utf8, CaptionStyle style) {
  const caption::Text text = caption::decode(utf8, "prompt text");
  return caption::encode(caption::clean_caption(caption::clean_caption(text, style), style));
}

}  // namespace

std::string open_sora_text_preprocessing(const std::string& utf8) {
  return two_passes(utf8, CaptionStyle::open_sora);
}

std::string open_sora_plan_text_preprocessing(const std::string& utf8) {
  return two_passes(utf8, CaptionStyle::deepfloyd_if);
}

}  // namespace pab
