#include "io/model_folder.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

namespace pab {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

bool is_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

bool is_dir(const fs::path& p) {
  std::error_code ec;
  return fs::is_directory(p, ec);
}

constexpr const char* kTokenizerFiles[] = {"spiece.model", "tokenizer.json", "tokenizer_config.json", "vocab.json",
                                           "special_tokens_map.json"};

// A component name from model_index.json becomes a path: only plain names are allowed.
bool plain_name(const std::string& s) {
  return !s.empty() && s != "." && s != ".." && s.find('/') == std::string::npos && s.find('\0') == std::string::npos;
}

// A JSON file that a folder is supposed to hold but that is a folder itself.
void refuse_folder_for_file(const fs::path& file, const char* what) {
  std::error_code ec;
  if (fs::is_directory(file, ec)) fail(file.string(), ": is a folder, expected ", what);
}

}  // namespace

void check_folder(const std::string& dir, const std::string& what) {
  std::error_code ec;
  const fs::file_status st = fs::status(dir, ec);
  if (ec == std::errc::too_many_symbolic_link_levels) fail(dir, ": a loop of symbolic links, expected ", what);
  if (ec == std::errc::permission_denied) fail(dir, ": cannot be read (permission denied)");
  if (ec && ec != std::errc::no_such_file_or_directory) fail(dir, ": cannot be read (", ec.message(), ")");
  if (!fs::exists(st)) {
    std::error_code lec;
    if (fs::is_symlink(fs::symlink_status(dir, lec)))
      fail(dir, ": a symbolic link to ", fs::read_symlink(dir, lec).string(), ", which does not exist");
    fail(dir, ": no such folder, expected ", what);
  }
  if (!fs::is_directory(st)) fail(dir, ": is a file, expected ", what);
  if (::access(dir.c_str(), R_OK | X_OK) != 0) fail(dir, ": cannot be read (", std::strerror(errno), ")");
}

const Component* ModelFolder::find(const std::string& name) const {
  for (const Component& c : components)
    if (c.name == name) return &c;
  return nullptr;
}

const Component& ModelFolder::component(const std::string& name) const {
  if (const Component* c = find(name)) return *c;
  fail(is_pipeline() ? index_path : dir, ": no component '", name, "'");
}

ComponentKind component_kind(const std::string& dir) {
  fs::path d(dir);
  if (is_file(d / "config.json")) return ComponentKind::model;
  if (is_file(d / "scheduler_config.json")) return ComponentKind::scheduler;
  for (const char* f : kTokenizerFiles)
    if (is_file(d / f)) return ComponentKind::tokenizer;
  return ComponentKind::other;
}

const char* component_kind_name(ComponentKind k) {
  switch (k) {
    case ComponentKind::model:
      return "model";
    case ComponentKind::scheduler:
      return "scheduler";
    case ComponentKind::tokenizer:
      return "tokenizer";
    case ComponentKind::other:
      break;
  }
  return "other";
}

std::string component_config_path(const std::string& dir) {
  for (const char* name : {"config.json", "scheduler_config.json"}) {
    fs::path p = fs::path(dir) / name;
    if (is_file(p)) return p.string();
  }
  return "";
}

std::string config_class_name(const JsonConfig& config) {
  if (config.has("_class_name")) return config.get<std::string>("_class_name");
  if (config.has("architectures")) {
    auto archs = config.get<std::vector<std::string>>("architectures");
    if (!archs.empty()) return archs[0];
  }
  if (config.has("model_type")) return config.get<std::string>("model_type");
  fail(config.where(), ": missing required key '_class_name' (or transformers' 'architectures')");
}

ModelFolder open_model_folder(const std::string& dir) {
  check_folder(dir, "a model folder (a diffusers pipeline with model_index.json, or one component)");
  ModelFolder m;
  m.dir = dir;
  fs::path index = fs::path(dir) / "model_index.json";
  refuse_folder_for_file(index, "the pipeline's JSON file");
  refuse_folder_for_file(fs::path(dir) / "config.json", "the component's JSON file");
  if (!is_file(index)) {
    if (component_kind(dir) == ComponentKind::other)
      fail(dir, ": not a model folder (no model_index.json, config.json, scheduler_config.json or tokenizer files)");
    // The folder's own name is the component's name ("transformer", "vae").
    std::error_code ec;
    fs::path p = fs::absolute(dir, ec).lexically_normal();
    std::string name = (p.has_filename() ? p.filename() : p.parent_path().filename()).string();
    m.components.push_back({name, "", "", dir});
    return m;
  }
  m.index_path = index.string();
  JsonConfig cfg = JsonConfig::load(m.index_path);
  m.pipeline_class = cfg.get<std::string>("_class_name");
  m.diffusers_version = cfg.get_or<std::string>("_diffusers_version", "");
  for (auto it = cfg.json().begin(); it != cfg.json().end(); ++it) {
    const std::string& key = it.key();
    const json& v = it.value();
    // `_name_or_path` and the like are metadata; scalars are pipeline options
    // (requires_safety_checker, force_zeros_for_empty_prompt).
    if (key.starts_with("_") || !v.is_array()) continue;
    const std::string what = cat(m.index_path, ": key '", key, "'");
    if (v.size() != 2) fail(what, ": expected [library, class], got ", json_brief(v));
    if (v[0].is_null() && v[1].is_null()) continue;  // an optional component left out
    if (!v[0].is_string() || !v[1].is_string()) fail(what, ": expected [library, class], got ", json_brief(v));
    if (!plain_name(key)) fail(what, ": not a valid component folder name");
    Component c{key, v[0].get<std::string>(), v[1].get<std::string>(), (fs::path(dir) / key).string()};
    if (!is_dir(c.dir))
      fail(what, ": the ", c.library, " ", c.class_name, " component's folder ", c.dir, " is missing");
    check_folder(c.dir, "the component's folder");
    refuse_folder_for_file(fs::path(c.dir) / "config.json", "the component's JSON file");
    m.components.push_back(std::move(c));
  }
  if (m.components.empty()) fail(m.index_path, ": lists no components");
  return m;
}

}  // namespace pab
