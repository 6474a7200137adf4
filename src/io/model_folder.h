// Diffusers model folders: a pipeline folder (model_index.json naming its
// components, one sub-folder each) or a single component folder (config.json,
// scheduler_config.json or tokenizer files). Typed config structs per model
// class live with each model; this only finds the parts.
#pragma once

#include <string>
#include <vector>

#include "io/config.h"

namespace pab {

struct Component {
  std::string name;        // "transformer", "vae", ... (the folder's name for a single component)
  std::string library;     // "diffusers", "transformers" ("" when model_index.json is absent)
  std::string class_name;  // as model_index.json names it ("" when it is absent)
  std::string dir;         // the component's folder
};

struct ModelFolder {
  std::string dir;
  std::string index_path;             // model_index.json; "" for a single component folder
  std::string pipeline_class;         // model_index.json `_class_name`
  std::string diffusers_version;      // model_index.json `_diffusers_version`, if present
  std::vector<Component> components;  // sorted by name; slots set to [null, null] are left out

  bool is_pipeline() const { return !index_path.empty(); }
  const Component* find(const std::string& name) const;
  // Fails naming model_index.json (or the folder) when the component is absent.
  const Component& component(const std::string& name) const;
};

// Fails with a message of its own unless `dir` is a folder that can be read:
// no such path, a file, a dangling symbolic link, a loop of links, no
// permission. `what` says what was expected ("a model folder").
void check_folder(const std::string& dir, const std::string& what);

// Reads `dir` as a pipeline folder when it holds model_index.json, else as a single
// component folder. Fails with one line naming the file and key for a malformed
// model_index.json, a missing component folder, or a folder that is neither.
ModelFolder open_model_folder(const std::string& dir);

// What a component folder holds, judged by its files.
enum class ComponentKind { model, scheduler, tokenizer, other };
ComponentKind component_kind(const std::string& dir);
const char* component_kind_name(ComponentKind k);

// The configuration file of a component folder: <dir>/config.json, else
// <dir>/scheduler_config.json, else "".
std::string component_config_path(const std::string& dir);

// The class a component's config declares: diffusers `_class_name`, else
// transformers `architectures[0]`, else `model_type`; fails naming the file
// and key when none is present or one is not a string.
std::string config_class_name(const JsonConfig& config);

}  // namespace pab
