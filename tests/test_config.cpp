// JSON config access: typed values, diffusers defaults for missing optional
// keys, and one-line errors naming the file and key.
#include <nlohmann/json.hpp>

#include "io/config.h"
#include "support/io_testing.h"
#include "support/testing.h"

namespace pab {
namespace {

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

JsonConfig config(const std::string& text) {
  return JsonConfig(json::parse(text), "cfg.json");
}

TEST(Config, TypedValues) {
  JsonConfig c = config(R"({"n": 4, "f": 4.0, "x": 0.5, "s": "v_prediction", "b": true, "v": [1, 2], "vs": ["a"],
                            "vd": [1, 2.5], "big": 5000000000, "nul": null})");
  EXPECT_EQ(c.get<int>("n"), 4);
  EXPECT_EQ(c.get<int>("f"), 4);  // 4.0 is an integer
  EXPECT_EQ(c.get<int64_t>("big"), 5000000000);
  EXPECT_DOUBLE_EQ(c.get<double>("x"), 0.5);
  EXPECT_FLOAT_EQ(c.get<float>("n"), 4.0f);
  EXPECT_EQ(c.get<std::string>("s"), "v_prediction");
  EXPECT_TRUE(c.get<bool>("b"));
  EXPECT_EQ(c.get<std::vector<int>>("v"), (std::vector<int>{1, 2}));
  EXPECT_EQ(c.get<std::vector<int64_t>>("v"), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(c.get<std::vector<double>>("vd"), (std::vector<double>{1, 2.5}));
  EXPECT_EQ(c.get<std::vector<std::string>>("vs"), (std::vector<std::string>{"a"}));
}

TEST(Config, OptionalValuesTakeTheDefault) {
  JsonConfig c = config(R"({"present": 7, "nul": null})");
  EXPECT_EQ(c.get_or<int>("present", 1), 7);
  EXPECT_EQ(c.get_or<int>("absent", 3), 3);
  EXPECT_EQ(c.get_or<int>("nul", 5), 5);  // null means "use the default", as diffusers does
  EXPECT_FALSE(c.get_optional<int>("absent").has_value());
  EXPECT_FALSE(c.has("nul"));
  EXPECT_EQ(*c.get_optional<int>("present"), 7);
}

TEST(Config, ErrorsNameTheFileAndKey) {
  JsonConfig c = config(R"({"n": 4.5, "s": 3, "big": 5000000000, "neg": -1, "huge": 1e300, "v": [1, "x"],
                            "b": 1, "deep": [[[[[[1]]]]]], "long": ")" +
                        std::string(500, 'x') + R"("})");
  EXPECT_TRUE(fails_with([&] { c.get<int>("missing"); }, "cfg.json: missing required key 'missing'"));
  EXPECT_TRUE(fails_with([&] { c.get<int>("n"); }, "cfg.json: key 'n': expected an integer in range, got number 4.5"));
  EXPECT_TRUE(fails_with([&] { c.get<std::string>("s"); }, "key 's': expected a string, got integer 3"));
  EXPECT_TRUE(fails_with([&] { c.get<int>("big"); }, "key 'big': expected an integer in range"));
  EXPECT_TRUE(fails_with([&] { c.get<unsigned>("neg"); }, "key 'neg': expected an integer in range"));
  EXPECT_TRUE(fails_with([&] { c.get<int64_t>("huge"); }, "key 'huge': expected an integer in range"));
  EXPECT_TRUE(fails_with([&] { c.get<float>("huge"); }, "key 'huge': expected a number in range"));
  EXPECT_TRUE(fails_with([&] { c.get<std::vector<int>>("v"); }, "key 'v': expected an array of integers"));
  EXPECT_TRUE(fails_with([&] { c.get<bool>("b"); }, "key 'b': expected a boolean, got integer 1"));
  EXPECT_TRUE(fails_with([&] { c.get<int>("deep"); }, "got array [[[[...]]]]"));
  EXPECT_TRUE(fails_with([&] { c.get<int>("long"); }, "xxx..."));
  EXPECT_TRUE(fails_with([&] { c.unsupported("n", "only integers"); }, "cfg.json: key 'n' = 4.5: only integers"));
  EXPECT_TRUE(fails_with([&] { c.unsupported("zz", "required"); }, "key 'zz' = (missing): required"));
}

TEST(Config, LoadErrors) {
  testing::TempDir tmp;
  EXPECT_TRUE(fails_with([&] { JsonConfig::load(tmp / "none.json"); }, tmp / "none.json: cannot open"));
  EXPECT_TRUE(fails_with([&] { JsonConfig::load(tmp.path()); }, tmp.path() + ": is a directory"));
  testing::write_bytes(tmp / "bad.json", "{\n  \"a\": 1,\n  \"b\": tru\n}");
  EXPECT_TRUE(fails_with([&] { JsonConfig::load(tmp / "bad.json"); },
                         tmp / "bad.json: not valid JSON (line 3, column 11: syntax error while parsing value"));
  testing::write_bytes(tmp / "array.json", "[1]");
  EXPECT_TRUE(fails_with([&] { JsonConfig::load(tmp / "array.json"); },
                         tmp / "array.json: expected a JSON object at the top level, got array"));
  testing::write_bytes(tmp / "ok.json", R"({"_class_name": "X"})");
  EXPECT_EQ(JsonConfig::load(tmp / "ok.json").get<std::string>("_class_name"), "X");
}

TEST(Config, MessagesStayOnePrintableLine) {
  // Control characters and invalid UTF-8 in the input never reach the message raw.
  EXPECT_TRUE(fails_with([] { parse_json("x.json", "{\"a\":\n\x01\xff}"); }, "x.json: not valid JSON (line 2"));
  json weird = json::parse(R"({"k\nk": "v\u0001"})");
  std::string b = json_brief(weird);
  EXPECT_EQ(b.find('\n'), std::string::npos);
  EXPECT_EQ(b.find('\x01'), std::string::npos);
  EXPECT_EQ(json_brief(json::parse("[1,2,3]")), "[1, 2, 3]");
  EXPECT_EQ(json_brief(json(std::string(100, 'a')), 10).size(), 13u);
}

}  // namespace
}  // namespace pab
