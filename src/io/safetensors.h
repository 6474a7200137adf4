// safetensors reading (memory-mapped, fully validated) and writing, and
// checkpoints that are either one file or shards listed by an index.json.
#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace pab {

struct TensorEntry {
  std::string name;
  DType dtype;
  Shape shape;
  size_t begin = 0;  // byte offsets into the data section
  size_t end = 0;
};

// One .safetensors file, mapped read-only. Opening validates the whole header:
// well-formed JSON, known dtypes, offsets in bounds, byte sizes equal to
// shape x dtype size, and tensors tiling the data section exactly (no overlap,
// hole or trailing bytes). Errors name the file.
class SafetensorsFile {
 public:
  static std::unique_ptr<SafetensorsFile> open(const std::string& path);
  // Validates an in-memory image (the same checks as open; used by the fuzz test).
  static void validate(const std::string& name, const uint8_t* bytes, size_t size,
                       std::map<std::string, TensorEntry>* entries = nullptr,
                       std::map<std::string, std::string>* metadata = nullptr);
  ~SafetensorsFile();

  const std::string& path() const { return path_; }
  const std::map<std::string, TensorEntry>& entries() const { return entries_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const TensorEntry* find(const std::string& name) const;
  const void* data(const TensorEntry& e) const { return data_ + e.begin; }
  // Copies a tensor out, converted to `dtype`: any dtype to itself or to f32, float dtypes
  // to f16 and bf16; anything else is an error naming the file and tensor.
  Tensor load(const TensorEntry& e, DType dtype, Device device = Device::cpu) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  const uint8_t* data_ = nullptr;
  std::map<std::string, TensorEntry> entries_;
  std::map<std::string, std::string> metadata_;
};

// Where model weights come from: a checkpoint on disk, or generated weights
// (benchmarks of the real architectures without their checkpoints).
class WeightSource {
 public:
  virtual ~WeightSource() = default;
  virtual bool has(const std::string& name) const = 0;
  // The tensor `name` with shape `expected`, converted to `dtype` on `device`;
  // fails naming the source if it is missing or has another shape.
  virtual Tensor load(const std::string& name, const Shape& expected, DType dtype, Device device) const = 0;
  virtual const std::string& where() const = 0;
  // Every tensor's name; empty where the source makes any name it is asked for.
  virtual std::vector<std::string> names() const { return {}; }
  // The bytes of every tensor not under one of `skip` (name prefixes), were
  // all loaded as `dtype`; 0 where the source does not know its tensors.
  virtual uint64_t bytes_as(DType dtype, const std::vector<std::string>& skip = {}) const { return 0; }
  // Tells a source that tracks use (WeightUse) that the tensors under
  // `prefix` are left unloaded on purpose (a VAE's encoder, a tied copy).
  virtual void not_needed(const std::string& prefix) const {}
};

// The weights of one model component: one .safetensors file, or the shards an
// index.json names (`{"weight_map": {tensor: shard file}}`, shards beside it).
// Every file is validated on opening; a missing shard, or a tensor absent from
// the shard the index names, is an error naming the index.
class Checkpoint final : public WeightSource {
 public:
  // `<dir>/<stem>.safetensors`, else `<dir>/<stem>.safetensors.index.json`, for the
  // stems diffusion_pytorch_model and model; else the one variant present
  // (`<stem>.fp16.safetensors`, `<stem>.safetensors.index.fp16.json`).
  static Checkpoint open_dir(const std::string& dir);
  static Checkpoint open_file(const std::string& path);
  static Checkpoint open_index(const std::string& index_path);

  bool has(const std::string& name) const override { return index_.count(name) != 0; }
  const TensorEntry& entry(const std::string& name) const;
  const SafetensorsFile& file_of(const std::string& name) const;
  std::vector<std::string> names() const override;
  uint64_t bytes_as(DType dtype, const std::vector<std::string>& skip = {}) const override;
  size_t size() const { return index_.size(); }
  const std::vector<std::string>& files() const { return file_paths_; }
  // A tensor converted to `dtype` on `device`; fails naming the checkpoint if missing.
  Tensor load(const std::string& name, DType dtype = DType::f32, Device device = Device::cpu) const;
  // As load, and fails unless the shape is `expected`.
  Tensor load(const std::string& name, const Shape& expected, DType dtype, Device device) const override;
  Tensor load(const std::string& name, const Shape& expected) const {
    return load(name, expected, DType::f32, Device::cpu);
  }
  const std::string& where() const override { return where_; }

 private:
  std::string where_;  // the file or index path, for messages
  std::vector<std::string> file_paths_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, size_t> index_;  // tensor name -> file
};

// A weight source that records which tensors a model loads, so that the
// tensors of a checkpoint that the model never asks for can be reported: a
// sign of the wrong model or a broken conversion.
class WeightUse final : public WeightSource {
 public:
  explicit WeightUse(const WeightSource& inner) : inner_(inner) {}
  bool has(const std::string& name) const override { return inner_.has(name); }
  Tensor load(const std::string& name, const Shape& expected, DType dtype, Device device) const override;
  const std::string& where() const override { return inner_.where(); }
  std::vector<std::string> names() const override { return inner_.names(); }
  uint64_t bytes_as(DType dtype, const std::vector<std::string>& skip = {}) const override {
    return inner_.bytes_as(dtype, skip);
  }
  void not_needed(const std::string& prefix) const override { skipped_.push_back(prefix); }

  // The source's tensors that were neither loaded nor declared not needed.
  std::vector<std::string> unused() const;
  // Fails unless every tensor was used: "<where>: 3 tensors that <model>
  // does not use (a, b, ...): ...". With `allow`, returns that as a warning
  // instead ("" when all were used).
  std::string check_all_used(const std::string& model, bool allow) const;

 private:
  const WeightSource& inner_;
  mutable std::set<std::string> loaded_;
  mutable std::vector<std::string> skipped_;
};

// The tensors of `inner` under `prefix`, named without it: a model stored
// inside another's checkpoint (Open-Sora's VAE keeps its 2D VAE under
// "spatial_vae.module."). Loads and not_needed pass through to `inner`; sizes
// are the whole checkpoint's business (bytes_as is not answered here).
class PrefixedWeights final : public WeightSource {
 public:
  PrefixedWeights(const WeightSource& inner, std::string prefix)
      : inner_(inner), prefix_(std::move(prefix)), where_(inner.where() + " (under " + prefix_ + ")") {}
  bool has(const std::string& name) const override { return inner_.has(prefix_ + name); }
  Tensor load(const std::string& name, const Shape& expected, DType dtype, Device device) const override {
    return inner_.load(prefix_ + name, expected, dtype, device);
  }
  const std::string& where() const override { return where_; }
  std::vector<std::string> names() const override;
  void not_needed(const std::string& prefix) const override { inner_.not_needed(prefix_ + prefix); }

 private:
  const WeightSource& inner_;
  std::string prefix_, where_;
};

// Writes tensors (any dtype, any device) to `path` atomically: a temporary file
// beside it is renamed into place once complete.
void write_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace pab
