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
#include "io/config.h"

namespace pab {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {
constexpr uint64_t kMaxHeader = 100'000'000;  // the limit the reference implementation enforces
constexpr uint64_t kMaxDim = 1ull << 40;

// Dtypes safetensors defines that pab does not read (sub-byte, AMD fp8, complex).
constexpr const char* kUnsupportedDtypes[] = {"F4", "F6_E2M3", "F6_E3M2", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "C64"};

[[noreturn]] void bad(const std::string& where, const std::string& what) {
  fail(where, ": ", what);
}

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(p[i]) << (8 * i);
  return n;
}
}  // namespace

void SafetensorsFile::validate(const std::string& name, const uint8_t* bytes, size_t size,
                               std::map<std::string, TensorEntry>* entries_out,
                               std::map<std::string, std::string>* metadata_out) {
  if (size < 8) bad(name, cat("truncated: ", size, " bytes, too short for a safetensors header"));
  const uint64_t n = read_u64_le(bytes);
  if (n > kMaxHeader)
    bad(name,
        cat("header length ", n, " exceeds the format's limit of ", kMaxHeader, " bytes (not a safetensors file?)"));
  if (n > size - 8)
    bad(name, cat("truncated: the header says ", n, " bytes of JSON but only ", size - 8, " bytes follow"));
  json header =
      parse_json(name + ": header", std::string_view(reinterpret_cast<const char*>(bytes) + 8, size_t(n)), true);
  if (!header.is_object()) bad(name, cat("header: expected a JSON object, got ", json_type_name(header)));
  const uint64_t data_size = size - 8 - n;

  std::map<std::string, TensorEntry> entries;
  std::map<std::string, std::string> metadata;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& key = it.key();
    const json& v = it.value();
    if (key == "__metadata__") {
      if (!v.is_object()) bad(name, cat("__metadata__: expected an object of strings, got ", json_brief(v)));
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          bad(name, cat("__metadata__ value ", json_brief(json(m.key())), " is not a string"));
        metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = "tensor " + json_brief(json(key), 80);
    if (!v.is_object()) bad(name, cat(where, ": expected an object, got ", json_type_name(v), " ", json_brief(v)));
    auto dt = v.find("dtype");
    auto sh = v.find("shape");
    auto off = v.find("data_offsets");
    if (dt == v.end() || !dt->is_string()) bad(name, where + ": missing or non-string 'dtype'");
    if (sh == v.end() || !sh->is_array()) bad(name, where + ": missing or non-array 'shape'");
    if (off == v.end() || !off->is_array() || off->size() != 2)
      bad(name, where + ": 'data_offsets' must be [begin, end]");
    TensorEntry e;
    e.name = key;
    const std::string& dtype = dt->get_ref<const std::string&>();
    if (!parse_dtype(dtype, &e.dtype)) {
      bool known = std::find(std::begin(kUnsupportedDtypes), std::end(kUnsupportedDtypes), dtype) !=
                   std::end(kUnsupportedDtypes);
      bad(name, cat(where, ": ", known ? "unsupported" : "unknown", " dtype ", json_brief(*dt)));
    }
    uint64_t numel = 1;
    for (const json& d : *sh) {
      if (!d.is_number_unsigned())
        bad(name, cat(where, ": shape ", json_brief(*sh), " must hold non-negative integers"));
      uint64_t dim = d.get<uint64_t>();
      if (dim > kMaxDim || __builtin_mul_overflow(numel, dim, &numel))
        bad(name, cat(where, ": shape ", json_brief(*sh), " is too large"));
      e.shape.push_back(int64_t(dim));
    }
    for (const json& o : *off)
      if (!o.is_number_unsigned())
        bad(name, cat(where, ": data_offsets ", json_brief(*off), " must be non-negative integers"));
    const uint64_t b = (*off)[0].get<uint64_t>(), en = (*off)[1].get<uint64_t>();
    if (b > en) bad(name, cat(where, ": data_offsets [", b, ", ", en, "] are inverted"));
    if (en > data_size)
      bad(name,
          cat(where, ": data_offsets [", b, ", ", en, "] end beyond the ", data_size, " data bytes (truncated file?)"));
    uint64_t bytes_needed;
    if (__builtin_mul_overflow(numel, uint64_t(dtype_size(e.dtype)), &bytes_needed) || bytes_needed != en - b)
      bad(name, cat(where, ": ", en - b, " bytes for shape ", shape_str(e.shape), " of ", dtype_name(e.dtype),
                    " (expected ", numel, " x ", dtype_size(e.dtype), ")"));
    e.begin = size_t(b);
    e.end = size_t(en);
    entries.emplace(key, std::move(e));
  }

  // The tensors must tile the data section exactly, as the reference implementation
  // requires: an overlap, a hole or trailing bytes mean the header and data disagree.
  std::vector<const TensorEntry*> order;
  order.reserve(entries.size());
  for (const auto& [k, e] : entries) order.push_back(&e);
  std::sort(order.begin(), order.end(), [](const TensorEntry* a, const TensorEntry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  size_t covered = 0;
  const TensorEntry* prev = nullptr;
  for (const TensorEntry* e : order) {
    if (e->begin < covered)
      bad(name,
          cat("tensor ", json_brief(json(e->name), 80), " (bytes [", e->begin, ", ", e->end, ")) overlaps tensor ",
              json_brief(json(prev->name), 80), " (bytes [", prev->begin, ", ", prev->end, "))"));
    if (e->begin > covered)
      bad(name, cat("data bytes [", covered, ", ", e->begin, ") before tensor ", json_brief(json(e->name), 80),
                    " belong to no tensor"));
    covered = e->end;
    prev = e;
  }
  if (covered != data_size)
    bad(name, cat("data bytes [", covered, ", ", data_size, ") after the last tensor belong to no tensor"));
  if (entries_out) *entries_out = std::move(entries);
  if (metadata_out) *metadata_out = std::move(metadata);
}

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
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
      int err = errno;
      ::close(fd);
      fail(path, ": cannot map: ", std::strerror(err));
    }
    f->map_ = m;
  }
  ::close(fd);
  const uint8_t* bytes = static_cast<const uint8_t*>(f->map_);
  validate(path, bytes, f->map_size_, &f->entries_, &f->metadata_);
  f->data_ = bytes + 8 + read_u64_le(bytes);
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
  const size_t n = size_t(shape_numel(e.shape));
  Tensor host = Tensor::empty(e.shape, dtype);
  if (e.dtype == dtype) {
    std::memcpy(host.raw(), data(e), e.end - e.begin);
  } else if (dtype == DType::f32) {
    convert_to_f32(data(e), e.dtype, host.f32(), n);
  } else if (is_float(e.dtype) && (dtype == DType::f16 || dtype == DType::bf16)) {
    // Through f32 in blocks, so that a large tensor needs no second full-size buffer.
    constexpr size_t kBlock = 1 << 16;
    std::vector<float> tmp(std::min(n, kBlock));
    const char* src = static_cast<const char*>(data(e));
    char* dst = static_cast<char*>(host.raw());
    for (size_t i = 0; i < n; i += kBlock) {
      size_t m = std::min(kBlock, n - i);
      convert_to_f32(src + i * dtype_size(e.dtype), e.dtype, tmp.data(), m);
      convert_from_f32(tmp.data(), dst + i * dtype_size(dtype), dtype, m);
    }
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

Checkpoint Checkpoint::open_index(const std::string& index_path) {
  Checkpoint c;
  c.where_ = index_path;
  const fs::path dir = fs::path(index_path).parent_path();
  json idx = parse_json(index_path, read_file(index_path));
  if (!idx.is_object()) fail(index_path, ": expected a JSON object at the top level, got ", json_type_name(idx));
  auto wm = idx.find("weight_map");
  if (wm == idx.end() || !wm->is_object()) fail(index_path, ": missing object 'weight_map'");
  if (wm->empty()) fail(index_path, ": 'weight_map' lists no tensors");
  std::map<std::string, size_t> shard_ids;
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    const std::string tensor = json_brief(json(it.key()), 80);
    if (!it.value().is_string())
      fail(index_path, ": weight_map entry ", tensor, ": expected a file name, got ", json_type_name(it.value()), " ",
           json_brief(it.value()));
    const std::string& shard = it.value().get_ref<const std::string&>();
    if (shard.empty() || shard == "." || shard == ".." || shard.find('/') != std::string::npos ||
        shard.find('\0') != std::string::npos)
      fail(index_path, ": weight_map entry ", tensor, " names an invalid shard ", json_brief(it.value(), 80));
    auto sid = shard_ids.find(shard);
    if (sid == shard_ids.end()) {
      const std::string sp = (dir / shard).string();
      std::error_code ec;
      if (!fs::exists(sp, ec)) fail(index_path, ": shard ", shard, " (holding tensor ", tensor, ") is missing");
      c.files_.push_back(std::shared_ptr<SafetensorsFile>(SafetensorsFile::open(sp)));
      c.file_paths_.push_back(sp);
      sid = shard_ids.emplace(shard, c.files_.size() - 1).first;
    }
    if (c.files_[sid->second]->find(it.key()) == nullptr)
      fail(index_path, ": tensor ", tensor, " is not in its shard ", shard);
    c.index_[it.key()] = sid->second;
  }
  return c;
}

namespace {

// Why a folder of PyTorch pickles is refused, and the command that converts
// it once: the class its config.json names, through the library that saves it.
std::string pickle_refusal(const std::string& dir, const std::string& file) {
  std::string convert;
  try {
    const nlohmann::json config = JsonConfig::load((fs::path(dir) / "config.json").string()).json();
    const std::string q = "'" + dir + "'";
    if (config.contains("architectures") && config["architectures"].is_array() && !config["architectures"].empty() &&
        config["architectures"][0].is_string())
      convert = "python3 -c \"from transformers import " + config["architectures"][0].get<std::string>() +
                " as M; M.from_pretrained(" + q + ").save_pretrained(" + q + ")\"";
    else if (config.contains("_class_name") && config["_class_name"].is_string())
      convert = "python3 -c \"from diffusers import " + config["_class_name"].get<std::string>() +
                " as M; M.from_pretrained(" + q + ").save_pretrained(" + q + ")\"";
  } catch (const Error&) {
  }
  if (convert.empty())
    convert =
        "python3 -c \"import torch, safetensors.torch as st; st.save_file({k: v.contiguous().clone() for k, v "
        "in torch.load('" +
        (fs::path(dir) / file).string() + "', map_location='cpu', weights_only=True).items()}, '" +
        (fs::path(dir) / "model.safetensors").string() + "')\"";
  return cat("the weights are PyTorch pickles (", file,
             "), which pab does not load (unpickling can run code); convert them to safetensors once with: ", convert);
}

}  // namespace

Checkpoint Checkpoint::open_dir(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) fail(dir, ": not a directory");
  // A single file wins over an index; diffusers and transformers stems both occur.
  for (const char* stem : {"diffusion_pytorch_model", "model"}) {
    fs::path single = fs::path(dir) / (std::string(stem) + ".safetensors");
    if (fs::exists(single, ec)) return open_file(single.string());
  }
  for (const char* stem : {"diffusion_pytorch_model", "model"}) {
    fs::path index = fs::path(dir) / (std::string(stem) + ".safetensors.index.json");
    if (fs::exists(index, ec)) return open_index(index.string());
  }
  // Variants (diffusion_pytorch_model.fp16.safetensors, model.safetensors.index.bf16.json)
  // are used only when they are the one choice, so that no precision is picked silently.
  std::vector<std::string> variants, others;
  for (const auto& ent : fs::directory_iterator(dir, ec)) {
    std::string f = ent.path().filename().string();
    bool is_weights =
        f.ends_with(".safetensors") || (f.find(".safetensors.index.") != std::string::npos && f.ends_with(".json"));
    if (!is_weights) {
      if (f.ends_with(".bin") || f.ends_with(".pt") || f.ends_with(".ckpt") || f.ends_with(".pth")) others.push_back(f);
      continue;
    }
    bool known_stem = f.starts_with("diffusion_pytorch_model.") || f.starts_with("model.");
    bool is_shard = f.find("-of-") != std::string::npos;
    if (known_stem && !is_shard) variants.push_back(f);
  }
  std::sort(variants.begin(), variants.end());
  if (variants.size() == 1) {
    fs::path p = fs::path(dir) / variants[0];
    return variants[0].ends_with(".json") ? open_index(p.string()) : open_file(p.string());
  }
  if (variants.size() > 1) {
    std::string list;
    for (const auto& v : variants) list += (list.empty() ? "" : ", ") + v;
    fail(dir, ": several weight variants (", list, "); keep one of them");
  }
  if (!others.empty()) fail(dir, ": ", pickle_refusal(dir, others[0]));
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

uint64_t Checkpoint::bytes_as(DType dtype, const std::vector<std::string>& skip) const {
  uint64_t total = 0;
  for (const auto& [name, file] : index_) {
    if (std::any_of(skip.begin(), skip.end(), [&](const std::string& p) { return name.starts_with(p); })) continue;
    const TensorEntry& e = entry(name);
    // Tensors of other kinds (integer buffers) keep their own dtype.
    const DType as = is_float(e.dtype) ? dtype : e.dtype;
    total += uint64_t(shape_numel(e.shape)) * dtype_size(as);
  }
  return total;
}

Tensor Checkpoint::load(const std::string& name, DType dtype, Device device) const {
  return file_of(name).load(entry(name), dtype, device);
}

// ------------------------------------------------------------------ WeightUse

Tensor WeightUse::load(const std::string& name, const Shape& expected, DType dtype, Device device) const {
  Tensor t = inner_.load(name, expected, dtype, device);
  loaded_.insert(name);
  return t;
}

std::vector<std::string> PrefixedWeights::names() const {
  std::vector<std::string> out;
  for (const std::string& name : inner_.names())
    if (name.starts_with(prefix_)) out.push_back(name.substr(prefix_.size()));
  return out;
}

std::vector<std::string> WeightUse::unused() const {
  std::vector<std::string> out;
  for (const std::string& name : inner_.names()) {
    if (loaded_.count(name)) continue;
    if (std::any_of(skipped_.begin(), skipped_.end(), [&](const std::string& p) { return name.starts_with(p); }))
      continue;
    out.push_back(name);
  }
  return out;
}

std::string WeightUse::check_all_used(const std::string& model, bool allow) const {
  const std::vector<std::string> left = unused();
  if (left.empty()) return "";
  std::string names;
  for (size_t i = 0; i < left.size() && i < 3; ++i) names += cat(i ? ", " : "", left[i]);
  if (left.size() > 3) names += ", ...";
  const std::string what = cat(where(), ": ", left.size(), left.size() == 1 ? " tensor" : " tensors", " that ", model,
                               " does not use (", names, "): the wrong model or a broken conversion?");
  if (!allow) fail(what, " (--allow-unused-weights loads it anyway)");
  return what;
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
    if (name == "__metadata__") fail(path, ": '__metadata__' cannot be a tensor name");
    header[name] = {
        {"dtype", dtype_name(t.dtype())}, {"shape", t.shape()}, {"data_offsets", {offset, offset + t.nbytes()}}};
    offset += t.nbytes();
  }
  std::string h;
  try {
    h = header.dump();
  } catch (const json::exception&) {
    fail(path, ": a tensor name or metadata value is not valid UTF-8");
  }
  // The data section starts 8-byte aligned, as the reference writer does.
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
