#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "io/atomic_file.h"

namespace pab {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {
constexpr uint64_t kMaxHeader = 100ull << 20;  // the format's own limit

[[noreturn]] void bad(const std::string& where, const std::string& what) { fail(where, ": ", what); }
}  // namespace

void SafetensorsFile::validate(const std::string& name, const uint8_t* bytes, size_t size,
                               std::map<std::string, TensorEntry>* entries_out,
                               std::map<std::string, std::string>* metadata_out) {
  if (size < 8) bad(name, cat("truncated: ", size, " bytes, too short for a safetensors header"));
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(bytes[i]) << (8 * i);
  if (n > kMaxHeader) bad(name, cat("header length ", n, " exceeds the 100 MiB limit (corrupt file?)"));
  if (n > size - 8) bad(name, cat("truncated: header of ", n, " bytes but only ", size - 8, " follow"));
  json header = json::parse(bytes + 8, bytes + 8 + n, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded()) bad(name, "header is not valid JSON");
  if (!header.is_object()) bad(name, "header is not a JSON object");
  const size_t data_size = size - 8 - size_t(n);

  std::map<std::string, TensorEntry> entries;
  std::vector<std::pair<size_t, size_t>> ranges;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& key = it.key();
    const json& v = it.value();
    if (key == "__metadata__") {
      if (!v.is_object()) bad(name, "__metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) bad(name, cat("__metadata__ value '", m.key(), "' is not a string"));
        if (metadata_out) (*metadata_out)[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = cat("tensor '", key, "'");
    if (!v.is_object()) bad(name, where + " is not an object");
    auto dt = v.find("dtype");
    auto sh = v.find("shape");
    auto off = v.find("data_offsets");
    if (dt == v.end() || !dt->is_string()) bad(name, where + ": missing or non-string 'dtype'");
    if (sh == v.end() || !sh->is_array()) bad(name, where + ": missing or non-array 'shape'");
    if (off == v.end() || !off->is_array() || off->size() != 2) bad(name, where + ": 'data_offsets' must be [begin, end]");
    TensorEntry e;
    e.name = key;
    if (!parse_dtype(dt->get<std::string>(), &e.dtype)) bad(name, where + ": unknown dtype '" + dt->get<std::string>() + "'");
    uint64_t numel = 1;
    for (const json& d : *sh) {
      if (!d.is_number_unsigned()) bad(name, where + ": shape entries must be non-negative integers");
      uint64_t dim = d.get<uint64_t>();
      if (dim > (1ull << 40) || __builtin_mul_overflow(numel, dim, &numel)) bad(name, where + ": shape too large");
      e.shape.push_back(int64_t(dim));
    }
    for (const json& o : *off)
      if (!o.is_number_unsigned()) bad(name, where + ": data_offsets must be non-negative integers");
    uint64_t b = (*off)[0].get<uint64_t>(), en = (*off)[1].get<uint64_t>();
    if (b > en) bad(name, where + cat(": data_offsets [", b, ", ", en, "] are inverted"));
    if (en > data_size)
      bad(name, where + cat(": data_offsets end ", en, " beyond the ", data_size, " data bytes (truncated file?)"));
    uint64_t bytes_needed;
    if (__builtin_mul_overflow(numel, uint64_t(dtype_size(e.dtype)), &bytes_needed) || bytes_needed != en - b)
      bad(name, where + cat(": ", en - b, " bytes for shape ", shape_str(e.shape), " of ", dtype_name(e.dtype),
                            " (expected ", numel * dtype_size(e.dtype), ")"));
    e.begin = size_t(b);
    e.end = size_t(en);
    ranges.emplace_back(e.begin, e.end);
    entries.emplace(key, std::move(e));
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].first < ranges[i - 1].second)
      bad(name, cat("tensor data ranges overlap at byte ", ranges[i].first));
  if (entries_out) *entries_out = std::move(entries);
}

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) fail(path, ": cannot open: ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, ": not a regular file");
  }
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  f->map_size_ = size_t(st.st_size);
  if (f->map_size_ > 0) {
    void* m = ::mmap(nullptr, f->map_size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
      ::close(fd);
      fail(path, ": cannot map: ", std::strerror(errno));
    }
    f->map_ = m;
  }
  ::close(fd);
  const uint8_t* bytes = static_cast<const uint8_t*>(f->map_);
  validate(path, bytes, f->map_size_, &f->entries_, &f->metadata_);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(bytes[i]) << (8 * i);
  f->data_ = bytes + 8 + n;
  return f;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(map_, map_size_);
}

const TensorEntry* SafetensorsFile::find(const std::string& name) const {
  auto it = entries_.find(name);
  return it == entries_.end() ? nullptr : &it->second;
}

Tensor SafetensorsFile::load(const TensorEntry& e, DType dtype, Device device) const {
  size_t n = size_t(shape_numel(e.shape));
  Tensor host;
  if (e.dtype == dtype) {
    host = Tensor::empty(e.shape, dtype);
    std::memcpy(host.raw(), data(e), e.end - e.begin);
  } else if (dtype == DType::f32) {
    host = Tensor::empty(e.shape, DType::f32);
    convert_to_f32(data(e), e.dtype, host.f32(), n);
  } else if (is_float(e.dtype) && is_float(dtype)) {
    std::vector<float> tmp(n);
    convert_to_f32(data(e), e.dtype, tmp.data(), n);
    host = Tensor::empty(e.shape, dtype);
    convert_from_f32(tmp.data(), host.raw(), dtype, n);
  } else {
    fail(path_, ": tensor '", e.name, "' is ", dtype_name(e.dtype), ", cannot convert to ", dtype_name(dtype));
  }
  return device == Device::cpu ? host : host.to(device);
}

// ---------------------------------------------------------------- Checkpoint

Checkpoint Checkpoint::open_file(const std::string& path) {
  Checkpoint c;
  c.where_ = path;
  auto f = std::shared_ptr<SafetensorsFile>(SafetensorsFile::open(path));
  for (const auto& [name, e] : f->entries()) c.index_[name] = 0;
  c.files_.push_back(std::move(f));
  c.file_paths_.push_back(path);
  return c;
}

Checkpoint Checkpoint::open_dir(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) fail(dir, ": not a directory");
  // A single file wins over an index; diffusers and transformers stems both occur.
  for (const char* stem : {"diffusion_pytorch_model", "model"}) {
    fs::path single = fs::path(dir) / (std::string(stem) + ".safetensors");
    if (fs::exists(single, ec)) return open_file(single.string());
  }
  for (const char* stem : {"diffusion_pytorch_model", "model"}) {
    fs::path index_path = fs::path(dir) / (std::string(stem) + ".safetensors.index.json");
    if (!fs::exists(index_path, ec)) continue;
    Checkpoint c;
    c.where_ = index_path.string();
    json idx = json::parse(read_file(c.where_), nullptr, false);
    if (idx.is_discarded() || !idx.is_object()) fail(c.where_, ": not valid JSON");
    auto wm = idx.find("weight_map");
    if (wm == idx.end() || !wm->is_object()) fail(c.where_, ": missing object 'weight_map'");
    std::map<std::string, size_t> shard_ids;
    for (auto it = wm->begin(); it != wm->end(); ++it) {
      if (!it.value().is_string()) fail(c.where_, ": weight_map entry '", it.key(), "' is not a file name");
      std::string shard = it.value().get<std::string>();
      if (shard.find('/') != std::string::npos || shard.empty())
        fail(c.where_, ": weight_map entry '", it.key(), "' names an invalid shard '", shard, "'");
      auto sid = shard_ids.find(shard);
      if (sid == shard_ids.end()) {
        fs::path sp = fs::path(dir) / shard;
        if (!fs::exists(sp, ec)) fail(c.where_, ": shard ", shard, " (of tensor '", it.key(), "') is missing");
        c.files_.push_back(std::shared_ptr<SafetensorsFile>(SafetensorsFile::open(sp.string())));
        c.file_paths_.push_back(sp.string());
        sid = shard_ids.emplace(shard, c.files_.size() - 1).first;
      }
      if (c.files_[sid->second]->find(it.key()) == nullptr)
        fail(c.where_, ": tensor '", it.key(), "' is not in its shard ", shard);
      c.index_[it.key()] = sid->second;
    }
    return c;
  }
  fail(dir, ": no diffusion_pytorch_model.safetensors, model.safetensors or their .index.json");
}

const TensorEntry& Checkpoint::entry(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) fail(where_, ": missing tensor '", name, "'");
  return *files_[it->second]->find(name);
}

const SafetensorsFile& Checkpoint::file_of(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) fail(where_, ": missing tensor '", name, "'");
  return *files_[it->second];
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  for (const auto& [n, i] : index_) out.push_back(n);
  return out;
}

Tensor Checkpoint::load(const std::string& name, DType dtype, Device device) const {
  return file_of(name).load(entry(name), dtype, device);
}

Tensor Checkpoint::load(const std::string& name, const Shape& expected, DType dtype, Device device) const {
  const TensorEntry& e = entry(name);
  if (e.shape != expected)
    fail(where_, ": tensor '", name, "' has shape ", shape_str(e.shape), ", expected ", shape_str(expected));
  return file_of(name).load(e, dtype, device);
}

// ---------------------------------------------------------------- writing

void write_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  size_t offset = 0;
  for (const auto& [name, t] : tensors) {
    header[name] = {{"dtype", dtype_name(t.dtype())}, {"shape", t.shape()}, {"data_offsets", {offset, offset + t.nbytes()}}};
    offset += t.nbytes();
  }
  std::string h = header.dump();
  while ((h.size() + 8) % 8 != 0) h.push_back(' ');
  AtomicFile out(path);
  {
    std::ofstream f(out.temp_path(), std::ios::binary);
    if (!f) fail(path, ": cannot create: ", std::strerror(errno));
    uint64_t n = h.size();
    char len[8];
    for (int i = 0; i < 8; ++i) len[i] = char((n >> (8 * i)) & 0xff);
    f.write(len, 8);
    f.write(h.data(), std::streamsize(h.size()));
    for (const auto& [name, t] : tensors) {
      Tensor c = t.device() == Device::cpu ? t : t.to(Device::cpu);
      f.write(static_cast<const char*>(c.raw()), std::streamsize(c.nbytes()));
    }
    f.close();
    if (!f) fail(path, ": write failed");
  }
  out.commit();
}

}  // namespace pab
