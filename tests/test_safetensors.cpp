// safetensors reading and writing: every dtype against values torch gives
// (tests/data/io, made by dev/fixtures/make_io_reference.py), the fixture
// checkpoints against a manifest the reference library wrote, sharded
// checkpoints, and every class of corrupt input.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>

#include "io/safetensors.h"
#include "support/io_testing.h"
#include "support/testing.h"

namespace pab {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using testing::TempDir;

const std::string kDtypes = testing::data_path("io/dtypes.safetensors");

struct DtypeCase {
  const char* name;
  DType dtype;
};
constexpr DtypeCase kAllDtypes[] = {
    {"F32", DType::f32}, {"F16", DType::f16},         {"BF16", DType::bf16},       {"F64", DType::f64},
    {"I64", DType::i64}, {"I32", DType::i32},         {"I16", DType::i16},         {"I8", DType::i8},
    {"U8", DType::u8},   {"BOOL", DType::boolean},    {"U16", DType::u16},         {"U32", DType::u32},
    {"U64", DType::u64}, {"F8_E4M3", DType::f8_e4m3}, {"F8_E5M2", DType::f8_e5m2}, {"F8_E8M0", DType::f8_e8m0},
};

// Number of positions where a and b differ, NaN matching NaN.
size_t mismatches(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return std::max(a.size(), b.size());
  size_t n = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    bool same = (std::isnan(a[i]) && std::isnan(b[i])) || a[i] == b[i];
    n += same ? 0 : 1;
  }
  return n;
}

std::string raw_bytes(const Tensor& t) {
  return std::string(static_cast<const char*>(t.raw()), t.nbytes());
}

// Runs f and checks it throws pab::Error whose message names `file` and contains `what`.
::testing::AssertionResult fails_with(const std::function<void()>& f, const std::string& file,
                                      const std::string& what) {
  try {
    f();
  } catch (const Error& e) {
    std::string m = e.what();
    if (m.find(file) == std::string::npos)
      return ::testing::AssertionFailure() << "message does not name " << file << ": " << m;
    if (m.find(what) == std::string::npos)
      return ::testing::AssertionFailure() << "message lacks '" << what << "': " << m;
    if (m.find('\n') != std::string::npos) return ::testing::AssertionFailure() << "message spans lines: " << m;
    return ::testing::AssertionSuccess() << m;
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw a non-pab exception: " << e.what();
  }
  return ::testing::AssertionFailure() << "did not throw";
}

// ---------------------------------------------------------------- dtypes

TEST(Safetensors, EveryDtypeConvertsToF32AsTorchDoes) {
  Checkpoint ck = Checkpoint::open_file(kDtypes);
  for (const auto& c : kAllDtypes) {
    SCOPED_TRACE(c.name);
    const TensorEntry& e = ck.entry(cat("x_", c.name));
    EXPECT_EQ(e.dtype, c.dtype);
    EXPECT_STREQ(dtype_name(e.dtype), c.name);
    std::vector<float> ours = ck.load(e.name, DType::f32).to_vector();
    std::vector<float> ref = ck.load(cat("f32_", c.name), DType::f32).to_vector();
    EXPECT_EQ(mismatches(ours, ref), 0u);
  }
  // The comparison can fail: F8_E4M3 bytes read as F8_E5M2 do not match.
  Tensor e4m3 = ck.load("x_F8_E4M3", DType::f8_e4m3);
  std::vector<float> wrong(size_t(e4m3.numel()));
  convert_to_f32(e4m3.raw(), DType::f8_e5m2, wrong.data(), wrong.size());
  EXPECT_GT(mismatches(wrong, ck.load("f32_F8_E4M3").to_vector()), 200u);
}

TEST(Safetensors, RoundTripThroughOurWriterForEveryDtype) {
  Checkpoint ref = Checkpoint::open_file(kDtypes);
  TempDir tmp;
  std::map<std::string, Tensor> tensors;
  for (const auto& c : kAllDtypes) tensors[c.name] = ref.load(cat("x_", c.name), c.dtype);
  tensors["matrix"] = ref.load("x_2d");
  tensors["empty"] = ref.load("x_empty", DType::f16);
  const std::string path = tmp / "all.safetensors";
  write_safetensors(path, tensors, {{"note", "round trip"}});
  EXPECT_FALSE(fs::exists(tmp / ".all.safetensors.tmp"));

  auto f = SafetensorsFile::open(path);
  EXPECT_EQ(f->metadata().at("note"), "round trip");
  ASSERT_EQ(f->entries().size(), tensors.size());
  for (const auto& [name, t] : tensors) {
    SCOPED_TRACE(name);
    const TensorEntry* e = f->find(name);
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->dtype, t.dtype());
    EXPECT_EQ(e->shape, t.shape());
    EXPECT_EQ(raw_bytes(f->load(*e, e->dtype)), raw_bytes(t));
  }
  for (const auto& c : kAllDtypes) {
    SCOPED_TRACE(c.name);
    EXPECT_EQ(mismatches(f->load(*f->find(c.name), DType::f32).to_vector(), ref.load(cat("f32_", c.name)).to_vector()),
              0u);
  }
  EXPECT_EQ(f->find("matrix")->shape, (Shape{2, 3, 4}));
  EXPECT_EQ(f->find("empty")->shape, (Shape{0, 3}));
}

TEST(Safetensors, ConvertsToTheComputeDtypeOnLoad) {
  Checkpoint ck = Checkpoint::open_file(kDtypes);
  // f32 values exactly representable in bf16/f16 become torch's bytes.
  for (auto [name, dtype] : {std::pair{"BF16", DType::bf16}, std::pair{"F16", DType::f16}}) {
    SCOPED_TRACE(name);
    Tensor from_f32 = ck.load(cat("f32_", name), dtype);
    Tensor ref = ck.load(cat("x_", name), dtype);
    EXPECT_EQ(from_f32.dtype(), dtype);
    EXPECT_EQ(mismatches(from_f32.to_vector(), ref.to_vector()), 0u);
  }
  // Every F8_E4M3 value is exact in bf16.
  Tensor e4m3 = ck.load("x_F8_E4M3", DType::bf16);
  EXPECT_EQ(e4m3.dtype(), DType::bf16);
  EXPECT_EQ(mismatches(e4m3.to_vector(), ck.load("f32_F8_E4M3").to_vector()), 0u);
  // Integers convert only to f32 (and themselves).
  EXPECT_TRUE(fails_with([&] { ck.load("x_I64", DType::bf16); }, kDtypes, "cannot convert to BF16"));
  EXPECT_EQ(ck.load("x_I64", DType::i64).dtype(), DType::i64);
}

// The fixture checkpoints read as the reference library reads them.
TEST(Safetensors, FixtureCheckpointsMatchTheReferenceManifest) {
  json manifest = json::parse(testing::read_bytes(testing::data_path("io/fixture_manifest.json")));
  const std::map<std::string, DType> torch_dtypes = {
      {"float32", DType::f32}, {"float16", DType::f16},  {"bfloat16", DType::bf16}, {"int64", DType::i64},
      {"int32", DType::i32},   {"bool", DType::boolean}, {"uint8", DType::u8}};
  size_t files = 0, tensors = 0;
  for (auto file = manifest.begin(); file != manifest.end(); ++file) {
    SCOPED_TRACE(file.key());
    Checkpoint ck = Checkpoint::open_file(testing::data_path("fixtures/" + file.key()));
    ASSERT_EQ(ck.size(), file.value().size());
    for (auto t = file.value().begin(); t != file.value().end(); ++t) {
      SCOPED_TRACE(t.key());
      const TensorEntry& e = ck.entry(t.key());
      ASSERT_TRUE(torch_dtypes.count(t.value()["dtype"]));
      EXPECT_EQ(e.dtype, torch_dtypes.at(t.value()["dtype"]));
      EXPECT_EQ(e.shape, t.value()["shape"].get<Shape>());
      double sum = 0, abs_sum = 0;
      for (float v : ck.load(t.key()).to_vector()) {
        sum += v;
        abs_sum += std::fabs(v);
      }
      double ref_abs = t.value()["abs_sum"].get<double>();
      EXPECT_NEAR(abs_sum, ref_abs, 1e-9 * ref_abs + 1e-30);
      EXPECT_NEAR(sum, t.value()["sum"].get<double>(), 1e-9 * ref_abs + 1e-30);
      ++tensors;
    }
    ++files;
  }
  EXPECT_GE(files, 50u);
  EXPECT_GT(tensors, 2000u);
}

// ---------------------------------------------------------------- sharded checkpoints

const std::string kLatte =
    testing::data_path("fixtures/transformer/latte/transformer/diffusion_pytorch_model.safetensors");

TEST(Safetensors, ShardedCheckpointEqualsTheSingleFile) {
  TempDir tmp;
  std::string index = testing::write_sharded(kLatte, tmp.path(), 3);
  Checkpoint whole = Checkpoint::open_file(kLatte);
  Checkpoint sharded = Checkpoint::open_dir(tmp.path());
  EXPECT_EQ(sharded.where(), index);
  EXPECT_EQ(sharded.files().size(), 3u);
  ASSERT_EQ(sharded.names(), whole.names());
  std::set<std::string> used;
  for (const std::string& name : whole.names()) {
    SCOPED_TRACE(name);
    EXPECT_EQ(sharded.entry(name).shape, whole.entry(name).shape);
    EXPECT_EQ(raw_bytes(sharded.load(name)), raw_bytes(whole.load(name)));
    used.insert(sharded.file_of(name).path());
  }
  EXPECT_EQ(used.size(), 3u);
  // The comparison can fail: tensors from neighbouring positions differ.
  auto names = whole.names();
  EXPECT_NE(raw_bytes(sharded.load(names[0])), raw_bytes(whole.load(names[1])));
  // Conversion on load works through shards too.
  EXPECT_EQ(sharded.load(names[0], DType::bf16).dtype(), DType::bf16);
}

TEST(Safetensors, CheckpointFileChoice) {
  TempDir tmp;
  testing::write_sharded(kLatte, tmp.path(), 2);
  // A single file wins over an index.
  fs::copy_file(testing::data_path("fixtures/components/t5/text_encoder/model.safetensors"),
                tmp / "diffusion_pytorch_model.safetensors");
  EXPECT_EQ(Checkpoint::open_dir(tmp.path()).files().size(), 1u);
  // transformers' stem.
  TempDir t5;
  fs::copy_file(testing::data_path("fixtures/components/t5/text_encoder/model.safetensors"), t5 / "model.safetensors");
  EXPECT_EQ(Checkpoint::open_dir(t5.path()).size(), 21u);
  // One variant is used; two are ambiguous.
  TempDir var;
  fs::copy_file(kLatte, var / "diffusion_pytorch_model.fp16.safetensors");
  EXPECT_EQ(Checkpoint::open_dir(var.path()).where(), var / "diffusion_pytorch_model.fp16.safetensors");
  fs::copy_file(kLatte, var / "diffusion_pytorch_model.bf16.safetensors");
  EXPECT_TRUE(fails_with([&] { Checkpoint::open_dir(var.path()); }, var.path(), "several weight variants"));
  // Pickled weights only, or nothing.
  TempDir bin;
  testing::write_bytes(bin / "diffusion_pytorch_model.bin", "x");
  // Refused with the command that converts them (no config.json here: the plain torch -> safetensors one).
  EXPECT_TRUE(fails_with([&] { Checkpoint::open_dir(bin.path()); }, bin.path(), "PyTorch pickles"));
  EXPECT_TRUE(fails_with([&] { Checkpoint::open_dir(bin.path()); }, bin.path(), "st.save_file("));
  TempDir none;
  EXPECT_TRUE(fails_with([&] { Checkpoint::open_dir(none.path()); }, none.path(), "no diffusion_pytorch_model"));
  EXPECT_TRUE(fails_with([&] { Checkpoint::open_dir(none / "absent"); }, none / "absent", "not a directory"));
}

TEST(Safetensors, CheckpointLookupErrors) {
  Checkpoint ck = Checkpoint::open_file(kLatte);
  EXPECT_TRUE(fails_with([&] { ck.load("no.such.tensor"); }, kLatte, "missing tensor 'no.such.tensor'"));
  const std::string name = ck.names()[0];
  EXPECT_TRUE(fails_with([&] { ck.load(name, Shape{7, 7, 7}); }, kLatte, "expected [7, 7, 7]"));
  EXPECT_EQ(ck.load(name, ck.entry(name).shape).shape(), ck.entry(name).shape);
}

// ---------------------------------------------------------------- corrupt input

// A valid three-tensor file: a F32[2, 2], b I64[3], c BF16[0].
std::string valid_header(const std::string& a_extra = "") {
  return R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16])" + a_extra +
         R"(},"b":{"dtype":"I64","shape":[3],"data_offsets":[16,40]},"c":{"dtype":"BF16","shape":[0],"data_offsets":[40,40]}})";
}
const std::string kData(40, '\x01');

class CorruptFile : public ::testing::Test {
 protected:
  // Writes bytes to a file and checks that opening it fails naming it with `what`.
  ::testing::AssertionResult rejects(const std::string& bytes, const std::string& what) {
    std::string path = tmp_ / cat("case", n_++, ".safetensors");
    testing::write_bytes(path, bytes);
    auto r = fails_with([&] { SafetensorsFile::open(path); }, path, what);
    // The in-memory validator agrees.
    auto m = fails_with(
        [&] { SafetensorsFile::validate("image", reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()); },
        "image", what);
    if (!m) return m;
    return r;
  }
  ::testing::AssertionResult rejects_header(const std::string& header, const std::string& what,
                                            const std::string& data = kData) {
    return rejects(testing::safetensors_bytes(header, data), what);
  }
  TempDir tmp_;
  int n_ = 0;
};

TEST_F(CorruptFile, TheValidBaseOpens) {
  std::string path = tmp_ / "ok.safetensors";
  testing::write_bytes(path, testing::safetensors_bytes(valid_header(), kData));
  auto f = SafetensorsFile::open(path);
  EXPECT_EQ(f->entries().size(), 3u);
  EXPECT_EQ(f->metadata().at("format"), "pt");
  // Padding after the JSON (spaces, as the reference writer adds) is fine.
  testing::write_bytes(path, testing::safetensors_bytes(valid_header() + "     ", kData));
  EXPECT_EQ(SafetensorsFile::open(path)->entries().size(), 3u);
}

TEST_F(CorruptFile, Truncated) {
  std::string good = testing::safetensors_bytes(valid_header(), kData);
  EXPECT_TRUE(rejects("", "too short"));
  EXPECT_TRUE(rejects(good.substr(0, 5), "too short"));
  EXPECT_TRUE(rejects(good.substr(0, 8), "truncated"));
  EXPECT_TRUE(rejects(good.substr(0, 60), "truncated"));
  EXPECT_TRUE(rejects(good.substr(0, good.size() - 1), "beyond the 39 data bytes"));
  EXPECT_TRUE(rejects(good.substr(0, good.size() - 20), "truncated file?"));
}

TEST_F(CorruptFile, HeaderLengthLies) {
  std::string good = testing::safetensors_bytes(valid_header(), kData);
  auto with_length = [&](uint64_t n) {
    std::string b = good;
    for (int i = 0; i < 8; ++i) b[size_t(i)] = char((n >> (8 * i)) & 0xff);
    return b;
  };
  uint64_t n = valid_header().size();
  EXPECT_TRUE(rejects(with_length(n + 100), "truncated"));  // longer than the file
  EXPECT_TRUE(rejects(with_length(~0ull), "exceeds"));      // absurd
  EXPECT_TRUE(rejects(with_length(1ull << 40), "exceeds"));
  EXPECT_TRUE(rejects(with_length(n - 1), "not valid JSON"));  // cuts the JSON
  EXPECT_TRUE(rejects(with_length(n + 4), "not valid JSON"));  // takes data bytes into the JSON
  EXPECT_TRUE(rejects(with_length(0), "not valid JSON"));
}

TEST_F(CorruptFile, BadJson) {
  EXPECT_TRUE(rejects_header("{\"a\": {\"dtype\": \"F32\",", "not valid JSON (line 1, column"));
  EXPECT_TRUE(rejects_header("not json at all", "not valid JSON"));
  EXPECT_TRUE(rejects_header(std::string("{\"a\xff\": 1}"), "not valid JSON"));  // invalid UTF-8
  EXPECT_TRUE(rejects_header("[1, 2, 3]", "header: expected a JSON object, got array"));
  EXPECT_TRUE(rejects_header("{\"a\": 1e999}", "not valid JSON"));
  EXPECT_TRUE(rejects_header(R"({"__metadata__":{"k":1}})", "is not a string", ""));
  EXPECT_TRUE(rejects_header(R"({"__metadata__":[]})", "__metadata__: expected an object of strings", ""));
}

TEST_F(CorruptFile, MalformedEntries) {
  EXPECT_TRUE(rejects_header(R"({"a":5})", "tensor \"a\": expected an object, got integer 5"));
  EXPECT_TRUE(rejects_header(R"({"a":{"shape":[1],"data_offsets":[0,4]}})", "missing or non-string 'dtype'", "abcd"));
  EXPECT_TRUE(rejects_header(R"({"a":{"dtype":"F32","data_offsets":[0,4]}})", "missing or non-array 'shape'", "abcd"));
  EXPECT_TRUE(rejects_header(R"({"a":{"dtype":"F32","shape":[1]}})", "'data_offsets' must be", "abcd"));
  EXPECT_TRUE(
      rejects_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,2,4]}})", "'data_offsets' must be", "abcd"));
  EXPECT_TRUE(
      rejects_header(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", "non-negative integers", "abcd"));
  EXPECT_TRUE(
      rejects_header(R"({"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", "non-negative integers", "abcd"));
  EXPECT_TRUE(
      rejects_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[-1,4]}})", "non-negative integers", "abcd"));
  EXPECT_TRUE(rejects_header(R"({"a":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,4]}})",
                             "too large", "abcd"));
  EXPECT_TRUE(rejects_header(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,4]}})",
                             "too large", "abcd"));
}

TEST_F(CorruptFile, UnknownDtype) {
  EXPECT_TRUE(
      rejects_header(R"({"a":{"dtype":"F128","shape":[1],"data_offsets":[0,4]}})", "unknown dtype \"F128\"", "abcd"));
  EXPECT_TRUE(rejects_header(R"({"a":{"dtype":"f32","shape":[1],"data_offsets":[0,4]}})", "unknown dtype", "abcd"));
  EXPECT_TRUE(
      rejects_header(R"({"a":{"dtype":"F4","shape":[8],"data_offsets":[0,4]}})", "unsupported dtype \"F4\"", "abcd"));
  EXPECT_TRUE(
      rejects_header(R"({"a":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}})", "unsupported dtype", "abcdefgh"));
  EXPECT_TRUE(rejects_header(R"({"a":{"dtype":7,"shape":[1],"data_offsets":[0,4]}})", "non-string 'dtype'", "abcd"));
}

TEST_F(CorruptFile, OffsetsOutOfBoundsInvertedOrOverlapping) {
  // out of bounds
  EXPECT_TRUE(
      rejects_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[40,44]}})", "end beyond the 40 data bytes"));
  EXPECT_TRUE(rejects_header(
      R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[18446744073709551612,18446744073709551615]}})", "beyond"));
  // inverted
  EXPECT_TRUE(rejects_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})", "are inverted"));
  // overlapping
  EXPECT_TRUE(rejects_header(
      R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})",
      "overlaps tensor \"a\"", std::string(24, '\0')));
  EXPECT_TRUE(rejects_header(
      R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})",
      "overlaps", std::string(16, '\0')));
  // a hole between tensors, and bytes after the last one
  EXPECT_TRUE(rejects_header(
      R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
      "data bytes [4, 8) before tensor \"b\" belong to no tensor", std::string(12, '\0')));
  EXPECT_TRUE(rejects_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                             "data bytes [4, 40) after the last tensor belong to no tensor"));
}

// A name given twice: JSON readers keep one or the other (nlohmann and
// Python the last, others the first), so the file means two things. Before,
// the first pair below opened as one tensor "a" of F32 (the BF16 entry
// dropped), and the second failed on a hole "before tensor a".
TEST_F(CorruptFile, DuplicateTensorNames) {
  EXPECT_TRUE(rejects_header(
      R"({"a":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
      "header: key \"a\" appears twice", "abcd"));
  EXPECT_TRUE(rejects_header(
      R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
      "header: key \"a\" appears twice", std::string(8, '\0')));
  EXPECT_TRUE(rejects_header(R"({"__metadata__":{"k":"v"},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                             R"("__metadata__":{"k":"w"}})",
                             "key \"__metadata__\" appears twice", "abcd"));
  // Names repeated at other depths are fine: metadata values, shapes.
  std::string path = tmp_ / "nested.safetensors";
  testing::write_bytes(
      path, testing::safetensors_bytes(
                R"({"__metadata__":{"a":"a"},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", "abcd"));
  EXPECT_EQ(SafetensorsFile::open(path)->entries().size(), 1u);
}

TEST_F(CorruptFile, SizeMismatch) {
  EXPECT_TRUE(rejects_header(valid_header().replace(valid_header().find("[2,2]"), 5, "[2,3]"),
                             "16 bytes for shape [2, 3] of F32 (expected 6 x 4)"));
  EXPECT_TRUE(rejects_header(R"({"a":{"dtype":"BF16","shape":[3],"data_offsets":[0,4]}})",
                             "4 bytes for shape [3] of BF16", "abcd"));
}

TEST_F(CorruptFile, NotARegularFile) {
  EXPECT_TRUE(fails_with([&] { SafetensorsFile::open(tmp_ / "absent.safetensors"); }, tmp_ / "absent.safetensors",
                         "cannot open"));
  fs::create_directory(tmp_ / "dir.safetensors");
  EXPECT_TRUE(fails_with([&] { SafetensorsFile::open(tmp_ / "dir.safetensors"); }, tmp_ / "dir.safetensors",
                         "not a regular file"));
}

// ---------------------------------------------------------------- corrupt indexes

class CorruptIndex : public ::testing::Test {
 protected:
  void SetUp() override { index_ = testing::write_sharded(kLatte, tmp_.path(), 3); }
  json index() { return json::parse(testing::read_bytes(index_)); }
  void rewrite(const json& j) { testing::write_bytes(index_, j.dump()); }
  ::testing::AssertionResult rejects(const std::string& file, const std::string& what) {
    return fails_with([&] { Checkpoint::open_dir(tmp_.path()); }, file, what);
  }
  TempDir tmp_;
  std::string index_;
};

TEST_F(CorruptIndex, MissingShard) {
  fs::remove(tmp_ / "diffusion_pytorch_model-00002-of-00003.safetensors");
  EXPECT_TRUE(rejects(index_, "shard diffusion_pytorch_model-00002-of-00003.safetensors"));
  EXPECT_TRUE(rejects(index_, "is missing"));
}

TEST_F(CorruptIndex, TensorAbsentFromItsShard) {
  json j = index();
  std::string name = j["weight_map"].begin().key();
  j["weight_map"][name] = "diffusion_pytorch_model-00003-of-00003.safetensors";
  j["weight_map"]["ghost.weight"] = "diffusion_pytorch_model-00001-of-00003.safetensors";
  rewrite(j);
  EXPECT_TRUE(rejects(index_, "is not in its shard"));
}

TEST_F(CorruptIndex, CorruptShardIsNamed) {
  std::string shard = tmp_ / "diffusion_pytorch_model-00003-of-00003.safetensors";
  std::string bytes = testing::read_bytes(shard);
  testing::write_bytes(shard, bytes.substr(0, bytes.size() / 2));
  EXPECT_TRUE(rejects(shard, "truncated"));
}

TEST_F(CorruptIndex, MalformedIndex) {
  testing::write_bytes(index_, "{\"weight_map\": {\n\"a\": ");
  EXPECT_TRUE(rejects(index_, "not valid JSON (line 2"));
  rewrite(json::array());
  EXPECT_TRUE(rejects(index_, "expected a JSON object"));
  rewrite(json{{"metadata", json::object()}});
  EXPECT_TRUE(rejects(index_, "missing object 'weight_map'"));
  rewrite(json{{"weight_map", json::object()}});
  EXPECT_TRUE(rejects(index_, "lists no tensors"));
  rewrite(json{{"weight_map", {{"a", 3}}}});
  EXPECT_TRUE(rejects(index_, "weight_map entry \"a\": expected a file name, got integer 3"));
  for (const char* bad : {"../diffusion_pytorch_model-00001-of-00003.safetensors", "", "..", "sub/x.safetensors"}) {
    rewrite(json{{"weight_map", {{"a", bad}}}});
    EXPECT_TRUE(rejects(index_, "names an invalid shard"));
  }
}

// ---------------------------------------------------------------- writing

TEST(Safetensors, WriterRejectsWhatItCannotWrite) {
  TempDir tmp;
  std::string path = tmp / "w.safetensors";
  EXPECT_TRUE(fails_with(
      [&] {
        write_safetensors(path, {{"__metadata__", Tensor::scalar(1)}});
      },
      path, "__metadata__"));
  EXPECT_TRUE(fails_with([&] { write_safetensors(path, {{"bad\xff", Tensor::scalar(1)}}); }, path, "UTF-8"));
  EXPECT_TRUE(fails_with(
      [&] {
        write_safetensors(tmp / "no/such/dir/x.safetensors", {{"a", Tensor::scalar(1)}});
      },
      tmp / "no/such/dir/x.safetensors", "cannot create"));
  EXPECT_TRUE(fs::is_empty(tmp.path()));  // nothing half-written is left behind
}

}  // namespace
}  // namespace pab
