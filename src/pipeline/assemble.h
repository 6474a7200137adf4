// `pab assemble`: a pipeline folder made of components downloaded as separate
// repositories (Open-Sora's transformer, VAE and T5 live in three hub
// repositories; diffusers pipelines come whole). The folder holds
// model_index.json, scheduler/scheduler_config.json and a symbolic link per
// component to the folder it came from, so nothing is copied or converted.
// Each pipeline that needs one registers its recipe in its own file:
//   PAB_REGISTER(AssemblyRecipe, "open-sora-1.2", {...});
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace pab {

struct AssemblyRecipe {
  std::string pipeline_class;  // model_index.json's _class_name
  std::string summary;         // one line for --help
  struct Part {
    std::string role;                  // transformer, vae, text_encoder
    std::string library;               // model_index.json's first entry: "videosys", "transformers", ...
    std::vector<std::string> classes;  // what the folder's config.json may declare (the first is written)
    std::string source;                // where users get it, e.g. "hpcai-tech/OpenSora-VAE-v1.2"
  };
  std::vector<Part> parts;
  std::string tokenizer_class = "T5Tokenizer";  // the tokenizer: the text encoder's folder unless one is given
  nlohmann::json scheduler;                     // scheduler/scheduler_config.json, its _class_name included
};

struct AssembleInput {
  std::string recipe;                          // a registered recipe's name
  std::map<std::string, std::string> folders;  // role -> folder; "tokenizer" optional
  std::string output;                          // missing, empty, or a folder pab assembled before
};

// Checks every folder (its config's class, its weights' headers; PyTorch
// pickles are refused with the command that converts them) and the pipeline
// they make together, then writes the output folder whole. Returns what was
// written, one line per component.
std::string assemble_pipeline(const AssembleInput& in);

}  // namespace pab
