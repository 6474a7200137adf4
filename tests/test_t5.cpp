// T5 encoder parity with transformers' T5EncoderModel (components/t5 fixture),
// weight layouts real checkpoints use (sharded, embedding under either name),
// the optional attention mask, and load errors.
#include <filesystem>
#include <fstream>

#include "backend/ops.h"
#include "io/safetensors.h"
#include "models/t5.h"
#include "support/testing.h"

namespace pab {
namespace {

namespace fs = std::filesystem;

const double kTol = 1e-5;

std::string t5_dir() {
  return testing::data_path("fixtures/components/t5/text_encoder");
}

// A fresh empty directory under the system temp dir, removed at scope exit.
struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name) {
    path = fs::temp_directory_path() / cat("pab_test_t5_", name, "_", ::getpid());
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string str() const { return path.string(); }
};

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream(path) << text;
}

// Copies the fixture encoder into `dir` as `shards` safetensors shards plus an
// index.json, renaming shared.weight to `embed_names` (one or both names).
void write_sharded_copy(const std::string& dir, int shards, const std::vector<std::string>& embed_names) {
  fs::copy_file(t5_dir() + "/config.json", dir + "/config.json");
  Checkpoint ck = Checkpoint::open_dir(t5_dir());
  std::vector<std::map<std::string, Tensor>> parts(static_cast<size_t>(shards));
  nlohmann::json weight_map = nlohmann::json::object();
  size_t i = 0;
  auto place = [&](const std::string& name, const Tensor& t) {
    size_t s = i++ % size_t(shards);
    parts[s][name] = t;
    weight_map[name] = cat("model-0000", s + 1, "-of-0000", shards, ".safetensors");
  };
  for (const std::string& name : ck.names()) {
    if (name == "shared.weight") {
      for (const std::string& alias : embed_names) place(alias, ck.load(name));
    } else {
      place(name, ck.load(name));
    }
  }
  for (int s = 0; s < shards; ++s)
    write_safetensors(cat(dir, "/model-0000", s + 1, "-of-0000", shards, ".safetensors"), parts[size_t(s)]);
  nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}};
  write_text(dir + "/model.safetensors.index.json", index.dump(1));
}

TEST(T5, MatchesTransformersLastHiddenState) {
  auto enc = T5Encoder::load(t5_dir());
  EXPECT_EQ(enc->config().num_layers, 2);
  EXPECT_TRUE(enc->config().gated);
  EXPECT_EQ(enc->config().act, Unary::gelu_tanh);
  Checkpoint ref = Checkpoint::open_file(testing::data_path("fixtures/components/t5/reference.safetensors"));
  Tensor ids = ref.load("input_ids", DType::i64);
  Tensor expected = ref.load("last_hidden_state");
  Tensor out = enc->encode(ids);
  EXPECT_TRUE(testing::close_rel(out, expected, kTol));

  // The test can fail: one changed token changes every position of its row.
  Tensor other = ids.clone();
  other.i64()[3] = other.i64()[3] == 5 ? 6 : 5;
  EXPECT_FALSE(testing::close_rel(enc->encode(other), expected, 1e-3));
}

TEST(T5, ShardedCheckpointAndEmbeddingNames) {
  auto single = T5Encoder::load(t5_dir());
  Checkpoint ref = Checkpoint::open_file(testing::data_path("fixtures/components/t5/reference.safetensors"));
  Tensor ids = ref.load("input_ids", DType::i64);
  Tensor expected = single->encode(ids);
  for (const auto& names : std::vector<std::vector<std::string>>{
           {"encoder.embed_tokens.weight"}, {"shared.weight", "encoder.embed_tokens.weight"}, {"shared.weight"}}) {
    TempDir dir(names.front().substr(0, 6) + std::to_string(names.size()));
    write_sharded_copy(dir.str(), 3, names);
    EXPECT_FALSE(fs::exists(dir.path / "model.safetensors"));
    auto enc = T5Encoder::load(dir.str());
    testing::Diff d = testing::compare(enc->encode(ids), expected);
    EXPECT_EQ(d.max_abs, 0.0) << names.front();
  }
}

TEST(T5, MaskedKeysEqualTheShorterSequence) {
  // With the keys after n masked out, the first n outputs are those of the
  // first n tokens alone (relative positions do not depend on the length).
  auto enc = T5Encoder::load(t5_dir());
  Checkpoint ref = Checkpoint::open_file(testing::data_path("fixtures/components/t5/reference.safetensors"));
  Tensor ids = ref.load("input_ids", DType::i64).narrow0(0, 1).clone();  // [1, 32]
  const int64_t length = ids.dim(1), n = 11;
  Tensor mask = Tensor::zeros({1, length}, DType::i64);
  for (int64_t i = 0; i < n; ++i) mask.i64()[i] = 1;
  Tensor masked = enc->encode(ids, &mask);  // [1, 32, D]
  Tensor prefix_ids = Tensor::empty({1, n}, DType::i64);
  for (int64_t i = 0; i < n; ++i) prefix_ids.i64()[i] = ids.i64()[i];
  Tensor prefix = enc->encode(prefix_ids);  // [1, n, D]
  Tensor head = ops::slice(masked, 1, 0, n);
  EXPECT_TRUE(testing::close_rel(head, prefix, kTol));
  EXPECT_FALSE(testing::close_rel(ops::slice(enc->encode(ids), 1, 0, n), prefix, 1e-3));  // unmasked differs
  Tensor bad_mask = Tensor::zeros({1, length + 1}, DType::i64);
  EXPECT_THROW(enc->encode(ids, &bad_mask), Error);
}

TEST(T5, RelativePositionBuckets) {
  // Exact buckets below num_buckets / 4 on each side, the far ones saturate.
  EXPECT_EQ(t5_relative_position_bucket(0, 32, 128), 0);
  EXPECT_EQ(t5_relative_position_bucket(-7, 32, 128), 7);
  EXPECT_EQ(t5_relative_position_bucket(7, 32, 128), 23);
  EXPECT_EQ(t5_relative_position_bucket(-1000, 32, 128), 15);
  EXPECT_EQ(t5_relative_position_bucket(1000, 32, 128), 31);
}

TEST(T5, LoadErrorsNameFileAndKey) {
  auto expect_error = [](const std::string& dir, const std::string& needle) {
    try {
      T5Encoder::load(dir);
      ADD_FAILURE() << "no error for " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  TempDir dir("errors");
  nlohmann::json cfg = nlohmann::json::parse(std::ifstream(t5_dir() + "/config.json"));
  fs::copy_file(t5_dir() + "/model.safetensors", dir.path / "model.safetensors");
  auto with = [&](const char* key, nlohmann::json value) {
    nlohmann::json c = cfg;
    c[key] = value;
    write_text(dir.path / "config.json", c.dump());
  };
  with("feed_forward_proj", "gated-foo");
  expect_error(dir.str(), "feed_forward_proj");
  with("num_heads", 0);
  expect_error(dir.str(), "num_heads");
  with("d_ff", "64");
  expect_error(dir.str(), "d_ff");
  with("d_model", 48);  // weights no longer fit
  expect_error(dir.str(), "model.safetensors");
  fs::remove(dir.path / "config.json");
  expect_error(dir.str(), "config.json");

  auto enc = T5Encoder::load(t5_dir());
  EXPECT_THROW(enc->encode(Tensor::zeros({1, 4})), Error);  // f32 ids
  Tensor out_of_vocab = Tensor::zeros({1, 2}, DType::i64);
  out_of_vocab.i64()[1] = 1000;
  EXPECT_THROW(enc->encode(out_of_vocab), Error);
}

}  // namespace
}  // namespace pab
