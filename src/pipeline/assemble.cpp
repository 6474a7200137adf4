// pab assemble (see assemble.h).
#include "pipeline/assemble.h"

#include <filesystem>
#include <fstream>

#include "core/registry.h"
#include "io/atomic_file.h"
#include "io/config.h"
#include "io/model_folder.h"
#include "io/safetensors.h"
#include "pipeline/tokenizer.h"
#include "pipeline/video_pipeline.h"

namespace pab {

namespace fs = std::filesystem;

namespace {

constexpr const char* kAssembledKey = "_pab_assembled";  // marks a folder this command wrote

void write_json(const std::string& path, const nlohmann::json& j) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream out(path);
  out << j.dump(2) << "\n";
  if (!out) fail(path, ": cannot write");
}

// The output may be replaced only when it is nothing, an empty folder, or an earlier assembly.
void check_output(const std::string& out) {
  std::error_code ec;
  const fs::path p(out);
  if (!fs::exists(fs::symlink_status(p, ec))) {
    const fs::path parent = fs::absolute(p).parent_path();
    if (!fs::is_directory(parent, ec)) fail(out, ": its parent folder ", parent.string(), " does not exist");
    return;
  }
  if (!fs::is_directory(p, ec)) fail(out, ": exists and is not a folder");
  if (fs::is_empty(p, ec)) return;
  const fs::path index = p / "model_index.json";
  bool ours = false;
  try {
    ours = fs::is_regular_file(index, ec) && JsonConfig::load(index.string()).get_or<bool>(kAssembledKey, false);
  } catch (const Error&) {
  }
  if (!ours) fail(out, ": exists and is not a folder pab assembled; give a new or empty folder");
}

}  // namespace

std::string assemble_pipeline(const AssembleInput& in) {
  const auto& recipes = Registry<AssemblyRecipe>::get();
  const AssemblyRecipe* recipe = recipes.find(in.recipe);
  if (!recipe) fail("pipeline '", in.recipe, "': pab assembles ", recipes.list());
  for (const auto& [role, dir] : in.folders) {
    bool known = role == "tokenizer";
    for (const auto& part : recipe->parts) known = known || part.role == role;
    if (!known) fail("--", role, ": ", in.recipe, " has no such component");
  }
  check_output(in.output);

  // Every folder before anything is written.
  nlohmann::json index = {{"_class_name", recipe->pipeline_class}, {kAssembledKey, true}};
  std::map<std::string, fs::path> links;
  std::string report;
  for (const auto& part : recipe->parts) {
    auto it = in.folders.find(part.role);
    if (it == in.folders.end()) fail("--", part.role, ": the ", part.role, " folder is needed (", part.source, ")");
    const std::string& dir = it->second;
    check_folder(dir, cat("the ", part.role, " folder (", part.source, ")"));
    const fs::path config = fs::path(dir) / "config.json";
    if (!fs::is_regular_file(config)) fail(dir, ": no config.json (expected the ", part.role, " of ", part.source, ")");
    const std::string cls = config_class_name(JsonConfig::load(config.string()));
    std::string accepted;
    bool ok = false;
    for (const std::string& c : part.classes) {
      ok = ok || c == cls;
      accepted += (accepted.empty() ? "" : " or ") + c;
    }
    if (!ok)
      fail(config.string(), ": a ", cls, ", but ", in.recipe, "'s ", part.role, " is a ", accepted, " (", part.source,
           ")");
    Checkpoint::open_dir(dir);  // headers validated; pickles refused with the conversion command
    index[part.role] = {part.library, cls};
    links[part.role] = fs::canonical(dir);
    report += cat(part.role, ": ", cls, " <- ", links[part.role].string(), "\n");
  }
  auto tok = in.folders.find("tokenizer");
  const std::string tokenizer_dir = tok != in.folders.end() ? tok->second : in.folders.at("text_encoder");
  check_folder(tokenizer_dir, "the tokenizer folder");
  T5Tokenizer::load(tokenizer_dir);
  index["tokenizer"] = {"transformers", recipe->tokenizer_class};
  links["tokenizer"] = fs::canonical(tokenizer_dir);
  report += cat("tokenizer: ", recipe->tokenizer_class, " <- ", links["tokenizer"].string(), "\n");
  index["scheduler"] = {"pab", recipe->scheduler.value("_class_name", "")};
  report += cat("scheduler: ", recipe->scheduler.dump(), "\n");

  AtomicFolder out(in.output);
  out.write("model_index.json", [&](const std::string& p) { write_json(p, index); });
  out.write("scheduler/scheduler_config.json", [&](const std::string& p) { write_json(p, recipe->scheduler); });
  for (const auto& [role, target] : links)
    out.write(role, [&](const std::string& p) { fs::create_directory_symlink(target, p); });
  // The folder is read as generate will read it, the pipeline's own checks included.
  VideoPipeline::open(fs::path(out.temp_path()).string(), LoadOptions{});
  out.commit();
  return report;
}

}  // namespace pab
