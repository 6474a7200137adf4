// Test helpers for the readers: temporary folders, raw file bytes, and
// checkpoints re-written as shards.
#pragma once

#include <string>

namespace pab::testing {

// A fresh folder under the system's temporary directory, removed with its contents.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& rel) const { return path_ + "/" + rel; }

 private:
  std::string path_;
};

std::string read_bytes(const std::string& path);
void write_bytes(const std::string& path, const std::string& bytes);

// Copies the folder `from` to `to` (recursively; `to` must not exist).
void copy_tree(const std::string& from, const std::string& to);

// Rewrites the single-file checkpoint `file` as `shards` shard files
// <stem>-0000i-of-0000n.safetensors in `dir`, tensors dealt out in turn, with
// <stem>.safetensors.index.json naming them, as transformers and diffusers save
// large checkpoints. Returns the index path.
std::string write_sharded(const std::string& file, const std::string& dir, int shards,
                          const std::string& stem = "diffusion_pytorch_model");

// A safetensors image: the 8-byte little-endian header length, the header, the data.
std::string safetensors_bytes(const std::string& header, const std::string& data);

}  // namespace pab::testing
