#include "support/io_testing.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "core/error.h"
#include "io/safetensors.h"

namespace pab::testing {

namespace fs = std::filesystem;

TempDir::TempDir() {
  std::string pattern = (fs::temp_directory_path() / "pab_test_XXXXXX").string();
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  if (!::mkdtemp(buf.data())) fail("cannot create a temporary folder from ", pattern);
  path_ = buf.data();
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, ": cannot open");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
  if (!out) fail(path, ": cannot write");
}

void copy_tree(const std::string& from, const std::string& to) {
  fs::copy(from, to, fs::copy_options::recursive);
}

std::string write_sharded(const std::string& file, const std::string& dir, int shards, const std::string& stem) {
  Checkpoint src = Checkpoint::open_file(file);
  std::vector<std::map<std::string, Tensor>> parts(static_cast<size_t>(shards));
  nlohmann::json weight_map = nlohmann::json::object();
  size_t i = 0, total = 0;
  for (const std::string& name : src.names()) {
    const TensorEntry& e = src.entry(name);
    size_t s = i++ % size_t(shards);
    parts[s][name] = src.load(name, e.dtype);
    total += e.end - e.begin;
    char shard[128];
    std::snprintf(shard, sizeof shard, "%s-%05zu-of-%05d.safetensors", stem.c_str(), s + 1, shards);
    weight_map[name] = shard;
  }
  for (size_t s = 0; s < parts.size(); ++s) {
    char shard[128];
    std::snprintf(shard, sizeof shard, "%s-%05zu-of-%05d.safetensors", stem.c_str(), s + 1, shards);
    write_safetensors(dir + "/" + shard, parts[s]);
  }
  nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  std::string index_path = dir + "/" + stem + ".safetensors.index.json";
  write_bytes(index_path, index.dump(2));
  return index_path;
}

std::string safetensors_bytes(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[size_t(i)] = char((n >> (8 * i)) & 0xff);
  return out + header + data;
}

}  // namespace pab::testing
