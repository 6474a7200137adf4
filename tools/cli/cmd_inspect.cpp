// pab inspect DIR
#include <iostream>

#include "commands.h"

namespace {

void register_inspect(CLI::App& app) {
  auto dir = std::make_shared<std::string>();
  CLI::App* cmd =
      app.add_subcommand("inspect",
                         "Describe a diffusers model folder (a pipeline with model_index.json, or one component): each "
                         "component's class, key config values, tensor and parameter counts and dtypes");
  // No CLI11 existence check: the API's own one-line error names the folder.
  cmd->add_option("dir", *dir, "Model folder")->required();
  cmd->callback([dir] {
    std::string report;
    pab::Status s = pab::inspect_model(*dir, &report);
    if (s.ok) std::cout << report;
    pab::cli::report(s);
  });
}

PAB_COMMAND(register_inspect);

}  // namespace
