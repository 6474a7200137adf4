// Deterministic mutation fuzzing of the readers, built with AddressSanitizer
// and UBSan: valid safetensors files, shard indexes, config.json and
// model_index.json are mutated thousands of times (bit flips, truncation,
// splicing, header-length changes, JSON token edits) and the readers must only
// ever succeed or throw pab::Error with a one-line message naming the input;
// any other exception, an internal assertion, or a memory error fails. The
// prompt cleaner (clean_caption, a parser of user text) is fuzzed the same way.
//
// The mutations come from a fixed-seed std::mt19937_64, whose output the C++
// standard fixes, so every run sees the same inputs. A failing input is saved
// as fuzz_failure_<test>_<iteration> in the working directory.
// PAB_FUZZ_SCALE (default 1) multiplies the iteration counts.
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>

#include "io/config.h"
#include "io/inspect.h"
#include "io/model_folder.h"
#include "io/safetensors.h"
#include "pipeline/prompt_text.h"
#include "pipeline/tokenizer.h"
#include "support/io_testing.h"
#include "support/testing.h"

namespace pab {
namespace {

int iterations(int base) {
  const char* s = std::getenv("PAB_FUZZ_SCALE");
  double scale = s ? std::atof(s) : 1.0;
  return std::max(1, int(base * scale));
}

// ---------------------------------------------------------------- mutations

// Valid JSON values that stress the readers' checks.
// clang-format off
const char* const kValues[] = {
    "0", "-1", "1", "2", "7", "8", "255", "4294967296", "9223372036854775807", "-9223372036854775808",
    "18446744073709551615", "18446744073709551616", "1e308", "-0", "0.5", "4.0", "-1e-400", "null", "true",
    "false", "[]", "{}", "[0]", "[1, 2]", "[0, 0]", "[4294967296, 4294967296]", "\"\"", "\"F32\"", "\"F16\"",
    "\"BF16\"", "\"I64\"", "\"U64\"", "\"F8_E4M3\"", "\"F8_E8M0\"", "\"F4\"", "\"BOOL\"", "\"__metadata__\"",
    "\"dtype\"", "\"shape\"", "\"data_offsets\"", "\"weight_map\"", "\"_class_name\"", "\"architectures\"",
    "\"model.safetensors\"", "\"..\"", "\"a/b\"", "\"\\u0000\"", "[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]",
    "{\"a\":{\"b\":{\"c\":{\"d\":[{}]}}}}", "[\"diffusers\", \"AutoencoderKL\"]", "[null, null]",
};
// clang-format on
// Text that breaks the syntax.
const char* const kJunk[] = {",", ":", "{", "}", "[", "]", "\"", "1e999", "\"\\ud800\"", "\"\xff\xfe\"", "tru", "--1"};

struct Span {
  size_t begin, end;
};

// The tokens of JSON-ish text: strings, numbers, literals and punctuation.
std::vector<Span> tokenize(const std::string& s, size_t from, size_t to) {
  std::vector<Span> out;
  size_t i = from;
  while (i < to) {
    char c = s[i];
    if (c == '"') {
      size_t j = i + 1;
      while (j < to && s[j] != '"') j += s[j] == '\\' ? 2 : 1;
      j = std::min(j + 1, to);
      out.push_back({i, j});
      i = j;
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      size_t j = i + 1;
      while (j < to && (std::isdigit(static_cast<unsigned char>(s[j])) || std::strchr(".eE+-", s[j]))) ++j;
      out.push_back({i, j});
      i = j;
    } else if (std::isalpha(static_cast<unsigned char>(c))) {
      size_t j = i + 1;
      while (j < to && std::isalpha(static_cast<unsigned char>(s[j]))) ++j;
      out.push_back({i, j});
      i = j;
    } else if (std::strchr("{}[],:", c)) {
      out.push_back({i, i + 1});
      ++i;
    } else {
      ++i;
    }
  }
  return out;
}

class Mutator {
 public:
  explicit Mutator(uint64_t seed) : rng_(seed) {}

  size_t below(size_t n) { return n == 0 ? 0 : size_t(rng_() % n); }
  bool chance(int percent) { return below(100) < size_t(percent); }

  // Edits one JSON token of s within [from, to); most edits keep the JSON valid
  // so that they reach the checks behind the parser.
  void edit_token(std::string* s, size_t from, size_t to) {
    std::vector<Span> toks = tokenize(*s, from, to);
    std::vector<Span> values;
    for (const Span& t : toks)
      if (!std::strchr("{}[],:", (*s)[t.begin])) values.push_back(t);
    if (values.empty()) {
      s->insert(from + below(to - from + 1), kJunk[below(std::size(kJunk))]);
      return;
    }
    Span t = values[below(values.size())];
    std::string text = s->substr(t.begin, t.end - t.begin);
    size_t op = below(10);
    if (op < 4) {  // an interesting value
      s->replace(t.begin, t.end - t.begin, kValues[below(std::size(kValues))]);
    } else if (op < 6) {  // another value of the same text (offsets, names, dtypes swapped)
      Span o = values[below(values.size())];
      s->replace(t.begin, t.end - t.begin, s->substr(o.begin, o.end - o.begin));
    } else if (op < 7) {  // a number nudged
      if (!(std::isdigit(static_cast<unsigned char>(text[0])) || text[0] == '-')) return;
      // Modular arithmetic: the mutator itself must not overflow.
      uint64_t v = uint64_t(std::strtoll(text.c_str(), nullptr, 10));
      uint64_t deltas[] = {1, ~0ull, 2, 4, 8, ~7ull, 1000, v};
      s->replace(t.begin, t.end - t.begin, std::to_string(int64_t(v + deltas[below(std::size(deltas))])));
    } else {  // syntax damage: a token deleted, duplicated, or junk inserted
      Span any = toks[below(toks.size())];
      if (op == 7) s->erase(any.begin, any.end - any.begin);
      if (op == 8) s->insert(any.end, s->substr(any.begin, any.end - any.begin));
      if (op == 9) s->insert(any.begin, kJunk[below(std::size(kJunk))]);
    }
  }

  // Binary damage for a protobuf file (spiece.model): bytes flipped, set to
  // the values that end varints and lengths, spans cut, repeated or moved.
  std::string mutate_binary(std::string s, const std::vector<std::string>& corpus) {
    const int n = 1 + int(below(4));
    for (int i = 0; i < n && !s.empty(); ++i) {
      const size_t at = below(s.size());
      switch (below(7)) {
        case 0:
          s[at] = char(uint8_t(s[at]) ^ uint8_t(1u << below(8)));
          break;
        case 1: {
          const uint8_t values[] = {0x00, 0x01, 0x7f, 0x80, 0xff, 0x0a, 0x12, 0x1a, 0x22, 0x08};
          s[at] = char(values[below(std::size(values))]);
          break;
        }
        case 2:
          s.resize(at);
          break;
        case 3:
          s.erase(at, std::min<size_t>(s.size() - at, 1 + below(16)));
          break;
        case 4:
          s.insert(at, s.substr(below(s.size()), 1 + below(32)));
          break;
        case 5:  // a run of continuation bytes: a varint that never ends
          s.insert(at, std::string(1 + below(12), char(0xff)));
          break;
        default: {  // a piece of another file
          const std::string& o = corpus[below(corpus.size())];
          s.insert(at, o.substr(below(o.size()), 1 + below(64)));
        }
      }
    }
    return s;
  }

  // A prompt damaged for the prompt cleaner: pieces of markup, references, escapes and
  // multi-byte characters inserted, spans deleted or repeated, bytes damaged.
  std::string mutate_prompt(const std::string& in, const std::vector<std::string>& corpus) {
    // clang-format off
    static const char* const kPieces[] = {
        "<", ">", "</", "<!", "<![", "<![CDATA[", "]]>", "<!--", "-->", "<?", "<b>", "</b>", "<br>", "<script>",
        "</script>", "<pre>", "<rt>", "&", "&#", "&#x", "&amp", "&amp;", "&#65;", "&#0;", "&notin", ";", "%", "%C3",
        "%A9", "%E2%80", "%ED%A0%80", "+", "@", "#", "http://", "www.", ".com", "\\n", "\n", "\r", "\t", "\xC2\x85",
        "\xC3\xA9", "\xE2\x82\xAC", "\xCC\x81", "\xE4\xB8\xAD", "\xF0\x9F\x90\xA2", "\xEF\xBC\xA1", "\xE2\x80\x94",
        "\xE2\x80\x9C", "\xC2\xA0", "\xE3\x80\x80", "\xEF\xAC\x81", "\x1B[31m", "'", "\"", "-", "_", ".", ",", ":",
        "1920x1080", "123456", "jc6640", "free shipping", "page 3"};
    // clang-format on
    std::string s = in;
    const int edits = 1 + int(below(4));
    for (int e = 0; e < edits; ++e) {
      const size_t op = below(10);
      const size_t at = below(s.size() + 1);
      if (op < 5) {
        s.insert(at, kPieces[below(std::size(kPieces))]);
      } else if (op < 6 && !s.empty()) {
        s.erase(at, below(8));
      } else if (op < 7 && at < s.size()) {
        s.insert(at, s.substr(at, below(32)));
      } else if (op < 8) {
        const std::string& o = corpus[below(corpus.size())];
        s.insert(at, o.substr(0, below(o.size() + 1)));
      } else if (op < 9 && chance(30)) {
        edit_bytes(&s, corpus);  // mostly leaves invalid UTF-8
      }
    }
    return s.substr(0, 4096);
  }

  // Byte-level damage anywhere in s.
  void edit_bytes(std::string* s, const std::vector<std::string>& corpus) {
    if (s->empty()) {
      s->push_back(char(below(256)));
      return;
    }
    switch (below(6)) {
      case 0: {  // bit flips
        int n = 1 + int(below(4));
        for (int i = 0; i < n; ++i) (*s)[below(s->size())] ^= char(1u << below(8));
        break;
      }
      case 1: {  // an interesting byte
        const char bytes[] = {'\0', '\xff', '\x7f', '\x80', '"', '{', '}', '[', ']', ',', ':', '\\', '\n', '9'};
        (*s)[below(s->size())] = bytes[below(sizeof bytes)];
        break;
      }
      case 2:  // truncation
        s->resize(below(s->size()));
        break;
      case 3: {  // a range removed
        size_t at = below(s->size());
        s->erase(at, 1 + below(std::min<size_t>(64, s->size() - at)));
        break;
      }
      case 4: {  // random bytes inserted
        std::string junk(1 + below(16), '\0');
        for (char& c : junk) c = char(below(256));
        s->insert(below(s->size() + 1), junk);
        break;
      }
      default: {  // a splice from another input
        const std::string& o = corpus[below(corpus.size())];
        if (o.empty()) break;
        size_t from = below(o.size()), len = 1 + below(std::min<size_t>(256, o.size() - from));
        size_t at = below(s->size());
        s->replace(at, std::min(len, s->size() - at), o.substr(from, len));
        break;
      }
    }
  }

  std::string mutate_json(std::string s, const std::vector<std::string>& corpus) {
    int n = 1 + int(below(3));
    for (int i = 0; i < n; ++i) {
      if (chance(70))
        edit_token(&s, 0, s.size());
      else
        edit_bytes(&s, corpus);
    }
    return s;
  }

  std::string mutate_safetensors(std::string s, const std::vector<std::string>& corpus) {
    int n = 1 + int(below(3));
    for (int i = 0; i < n; ++i) {
      uint64_t hlen = 0;
      for (int b = 0; b < 8 && size_t(b) < s.size(); ++b) hlen |= uint64_t(uint8_t(s[size_t(b)])) << (8 * b);
      bool header_ok = s.size() >= 8 && hlen <= s.size() - 8;
      int what = int(below(10));
      if (what < 5 && header_ok) {
        // A JSON edit of the header; usually the length field follows, so the edit
        // reaches the checks behind the length check.
        std::string header = s.substr(8, size_t(hlen)), data = s.substr(8 + size_t(hlen));
        edit_token(&header, 0, header.size());
        uint64_t len = chance(85) ? header.size() : hlen;
        s = testing::safetensors_bytes(header, data);
        for (int b = 0; b < 8; ++b) s[size_t(b)] = char((len >> (8 * b)) & 0xff);
      } else if (what < 7 && s.size() >= 8) {
        // The length field changed.
        uint64_t choices[] = {hlen + 1,
                              hlen - 1,
                              hlen + 8,
                              hlen - 8,
                              0,
                              ~0ull,
                              uint64_t(s.size()),
                              uint64_t(s.size()) - 8,
                              100'000'001ull,
                              hlen ^ (1ull << below(64))};
        uint64_t len = choices[below(std::size(choices))];
        for (int b = 0; b < 8; ++b) s[size_t(b)] = char((len >> (8 * b)) & 0xff);
      } else if (what < 8 && header_ok) {
        // Bit flips inside the header.
        size_t at = 8 + below(size_t(hlen));
        s[at] ^= char(1u << below(8));
      } else {
        edit_bytes(&s, corpus);
      }
    }
    return s;
  }

 private:
  std::mt19937_64 rng_;
};

// ---------------------------------------------------------------- checks

// Runs f on one input: success or pab::Error with a one-line message naming
// `name` pass; anything else fails the test and saves the input.
class Harness {
 public:
  explicit Harness(std::string test) : test_(std::move(test)) {}

  void run(int iteration, const std::string& input, const std::string& name, const std::function<void()>& f) {
    std::string problem;
    try {
      f();
      ++ok_;
    } catch (const Error& e) {
      ++rejected_;
      std::string m = e.what();
      if (m.find('\n') != std::string::npos) problem = "message spans lines: " + m;
      if (m.find("internal error") != std::string::npos) problem = "an internal assertion fired: " + m;
      if (m.find(name) == std::string::npos) problem = "message does not name " + name + ": " + m;
    } catch (const std::exception& e) {
      problem = cat("a non-pab exception escaped: ", e.what());
    }
    if (problem.empty()) return;
    std::string saved = cat("fuzz_failure_", test_, "_", iteration);
    std::ofstream(saved, std::ios::binary).write(input.data(), std::streamsize(input.size()));
    ADD_FAILURE() << test_ << " iteration " << iteration << ": " << problem << " (input saved as " << saved << ")";
  }

  // Both outcomes must occur, or the mutations are not reaching the checks.
  void expect_both_outcomes() const {
    EXPECT_GT(ok_, 0) << test_ << ": no mutated input was accepted";
    EXPECT_GT(rejected_, 0) << test_ << ": no mutated input was rejected";
    std::printf("%s: %d accepted, %d rejected\n", test_.c_str(), ok_, rejected_);
  }

 private:
  std::string test_;
  int ok_ = 0, rejected_ = 0;
};

// Reads every tensor the way loaders do, so that any bad offset is touched.
void read_all(const SafetensorsFile& f) {
  for (const auto& [name, e] : f.entries()) {
    Tensor t = f.load(e, DType::f32);
    if (is_float(e.dtype)) f.load(e, DType::bf16);
    volatile float sink = t.numel() ? t.f32()[t.numel() - 1] : 0.0f;
    (void)sink;
  }
}

std::vector<std::string> safetensors_corpus(const testing::TempDir& tmp) {
  // A small file with every dtype, written by our writer from the reference values.
  Checkpoint ref = Checkpoint::open_file(testing::data_path("io/dtypes.safetensors"));
  std::map<std::string, Tensor> small;
  for (const std::string& name : ref.names()) {
    if (!name.starts_with("x_")) continue;
    Tensor t = ref.load(name, ref.entry(name).dtype);
    int64_t n = std::min<int64_t>(t.numel(), 5);
    small[name] = t.reshape({-1}).narrow0(0, n).clone();
  }
  write_safetensors(tmp / "small.safetensors", small, {{"format", "pt"}});
  return {
      testing::read_bytes(tmp / "small.safetensors"),
      testing::read_bytes(testing::data_path("fixtures/pipeline/cogvideox_ddim/inputs.safetensors")),
      testing::read_bytes(testing::data_path("fixtures/transformer/latte/inputs.safetensors")),
      testing::read_bytes(testing::data_path("fixtures/components/t5/reference.safetensors")),
  };
}

// ---------------------------------------------------------------- tests

TEST(FuzzIo, SafetensorsImages) {
  testing::TempDir tmp;
  const std::vector<std::string> corpus = safetensors_corpus(tmp);
  Mutator mut(1);
  Harness h("safetensors_images");
  const int n = iterations(20000);
  for (int i = 0; i < n; ++i) {
    std::string input = mut.mutate_safetensors(corpus[size_t(i) % corpus.size()], corpus);
    // An exact-size heap copy, so that ASan sees any read past the end.
    std::unique_ptr<uint8_t[]> bytes(new uint8_t[std::max<size_t>(input.size(), 1)]);
    std::memcpy(bytes.get(), input.data(), input.size());
    h.run(i, input, "image", [&] {
      std::map<std::string, TensorEntry> entries;
      SafetensorsFile::validate("image", bytes.get(), input.size(), &entries);
      uint64_t hlen = 0;
      for (int b = 0; b < 8; ++b) hlen |= uint64_t(bytes[size_t(b)]) << (8 * b);
      const uint8_t* data = bytes.get() + 8 + hlen;
      for (const auto& [name, e] : entries) {
        std::vector<float> out(size_t(shape_numel(e.shape)));
        convert_to_f32(data + e.begin, e.dtype, out.data(), out.size());
      }
    });
  }
  h.expect_both_outcomes();
}

TEST(FuzzIo, SafetensorsFiles) {
  testing::TempDir tmp;
  const std::vector<std::string> corpus = safetensors_corpus(tmp);
  Mutator mut(2);
  Harness h("safetensors_files");
  const int n = iterations(1000);
  const std::string path = tmp / "mutated.safetensors";
  for (int i = 0; i < n; ++i) {
    std::string input = mut.mutate_safetensors(corpus[size_t(i) % corpus.size()], corpus);
    testing::write_bytes(path, input);
    h.run(i, input, path, [&] { read_all(*SafetensorsFile::open(path)); });
  }
  h.expect_both_outcomes();
}

TEST(FuzzIo, ShardedCheckpoints) {
  testing::TempDir tmp;
  const std::string index = testing::write_sharded(
      testing::data_path("fixtures/components/t5/text_encoder/model.safetensors"), tmp.path(), 3, "model");
  const std::string original = testing::read_bytes(index);
  const std::string shard = tmp / "model-00002-of-00003.safetensors";
  const std::string shard_bytes = testing::read_bytes(shard);
  const std::vector<std::string> corpus = {original, shard_bytes.substr(0, 2000)};
  Mutator mut(3);
  Harness h("sharded_checkpoints");
  const int n = iterations(2000);
  for (int i = 0; i < n; ++i) {
    // Mostly the index; sometimes one shard instead.
    bool shard_case = mut.chance(15);
    std::string input = shard_case ? mut.mutate_safetensors(shard_bytes, corpus) : mut.mutate_json(original, corpus);
    testing::write_bytes(shard_case ? shard : index, input);
    h.run(i, input, tmp.path(), [&] {
      Checkpoint ck = Checkpoint::open_dir(tmp.path());
      for (const std::string& name : ck.names()) ck.load(name);
    });
    testing::write_bytes(shard_case ? shard : index, shard_case ? shard_bytes : original);
  }
  h.expect_both_outcomes();
}

TEST(FuzzIo, ConfigJson) {
  std::vector<std::string> corpus;
  for (const char* f :
       {"fixtures/pipeline/cogvideox_ddim/model/transformer/config.json",
        "fixtures/pipeline/latte/model/vae/config.json",
        "fixtures/pipeline/cogvideox_dpm/model/scheduler/scheduler_config.json",
        "fixtures/components/t5/text_encoder/config.json", "fixtures/videosys/open_sora/transformer/config.json",
        "fixtures/pipeline/latte/model/model_index.json"})
    corpus.push_back(testing::read_bytes(testing::data_path(f)));
  testing::TempDir tmp;
  const std::string path = tmp / "config.json";
  Mutator mut(4);
  Harness h("config_json");
  const int n = iterations(4000);
  for (int i = 0; i < n; ++i) {
    std::string input = mut.mutate_json(corpus[size_t(i) % corpus.size()], corpus);
    testing::write_bytes(path, input);
    h.run(i, input, path, [&] {
      JsonConfig c = JsonConfig::load(path);
      // Every key read as every type: each read succeeds or fails cleanly.
      for (auto it = c.json().begin(); it != c.json().end(); ++it) {
        const std::string& k = it.key();
        json_brief(it.value());
        auto attempt = [&](auto f) {
          try {
            f();
          } catch (const Error& e) {
            if (std::string(e.what()).find(path) == std::string::npos) throw;
          }
        };
        attempt([&] { c.get<int>(k); });
        attempt([&] { c.get<int64_t>(k); });
        attempt([&] { c.get<unsigned>(k); });
        attempt([&] { c.get<float>(k); });
        attempt([&] { c.get<double>(k); });
        attempt([&] { c.get<bool>(k); });
        attempt([&] { c.get<std::string>(k); });
        attempt([&] { c.get<std::vector<int>>(k); });
        attempt([&] { c.get<std::vector<double>>(k); });
        attempt([&] { c.get<std::vector<std::string>>(k); });
        attempt([&] { c.get_or<int>(k, 1); });
        attempt([&] { c.unsupported(k, "fuzz"); });
      }
      config_class_name(c);
    });
  }
  h.expect_both_outcomes();
}

// Open-Sora's prompt cleaning: every damaged prompt is cleaned (to valid UTF-8) or refused with
// a message that names the prompt text.
TEST(FuzzIo, PromptCleaning) {
  const auto cases = nlohmann::json::parse(std::ifstream(testing::data_path("prompt_text/clean_caption.json")));
  std::vector<std::string> corpus;
  for (const auto& t : cases["texts"]) corpus.push_back(t.get<std::string>());
  Mutator mut(6);
  Harness h("prompt_cleaning");
  const int n = iterations(3000);
  for (int i = 0; i < n; ++i) {
    const std::string input = mut.mutate_prompt(corpus[size_t(i) % corpus.size()], corpus);
    h.run(i, input, "prompt text", [&] {
      const std::string one = clean_caption(input);
      check_prompt_utf8(one, "cleaned prompt text");
      check_prompt_utf8(open_sora_text_preprocessing(input), "cleaned prompt text");
    });
  }
  h.expect_both_outcomes();
}

// spiece.model, read by pab's own protobuf reader: every damaged model loads
// (and tokenizes) or is refused with a message naming the file.
TEST(FuzzIo, SentencePieceModels) {
  testing::TempDir tmp;
  const std::vector<std::string> corpus = {
      testing::read_bytes(testing::data_path("fixtures/components/tokenizer/spiece.model")),
      testing::read_bytes(testing::data_path("fixtures/components/mt5/tokenizer/spiece.model")),
  };
  Mutator mut(7);
  Harness h("spiece_model");
  const std::string path = tmp / "spiece.model";
  const int n = iterations(1500);
  for (int i = 0; i < n; ++i) {
    const std::string input = mut.mutate_binary(corpus[size_t(i) % corpus.size()], corpus);
    std::ofstream(path, std::ios::binary | std::ios::trunc).write(input.data(), std::streamsize(input.size()));
    h.run(i, input, path, [&] {
      auto tok = T5Tokenizer::load(tmp.path());
      tok->tokenize("A panda, dressed in a small red jacket — café 東京 123!", 40);
    });
  }
  h.expect_both_outcomes();
}

TEST(FuzzIo, InspectPipelineFolder) {
  testing::TempDir tmp;
  const std::string dir = tmp / "model";
  testing::copy_tree(testing::data_path("fixtures/pipeline/cogvideox_ddim/model"), dir);
  const std::vector<std::string> files = {"model_index.json",
                                          "transformer/config.json",
                                          "vae/config.json",
                                          "scheduler/scheduler_config.json",
                                          "tokenizer/tokenizer_config.json",
                                          "text_encoder/config.json"};
  std::vector<std::string> corpus;
  for (const auto& f : files) corpus.push_back(testing::read_bytes(dir + "/" + f));
  Mutator mut(5);
  Harness h("inspect_pipeline_folder");
  const int n = iterations(800);
  for (int i = 0; i < n; ++i) {
    size_t which = size_t(i) % files.size();
    std::string input = mut.mutate_json(corpus[which], corpus);
    const std::string path = dir + "/" + files[which];
    testing::write_bytes(path, input);
    h.run(i, input, dir, [&] { inspect_report(dir); });
    testing::write_bytes(path, corpus[which]);
  }
  h.expect_both_outcomes();
}

}  // namespace
}  // namespace pab
