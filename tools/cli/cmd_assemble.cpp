// pab assemble PIPELINE --transformer DIR --vae DIR --text-encoder DIR [--tokenizer DIR] -o OUT
#include <iostream>

#include "commands.h"

namespace {

void register_assemble(CLI::App& app) {
  auto r = std::make_shared<pab::AssembleRequest>();
  std::string pipelines;
  for (const std::string& line : pab::assembly_recipes()) pipelines += "\n  " + line;
  CLI::App* cmd = app.add_subcommand(
      "assemble",
      "Make a pipeline folder (for generate, bench, calibrate) from components downloaded as separate "
      "repositories: writes model_index.json and the scheduler's config, and links each component's folder "
      "(nothing is copied or converted). Pipelines:" +
          pipelines);
  // No CLI11 existence checks: the API's one-line errors name the folder and what it should hold.
  cmd->add_option("pipeline", r->pipeline, "What to assemble (listed above)")->required();
  cmd->add_option("--transformer", r->transformer, "The transformer's folder (config.json + safetensors)");
  cmd->add_option("--vae", r->vae, "The VAE's folder");
  cmd->add_option("--text-encoder", r->text_encoder, "The text encoder's folder");
  cmd->add_option("--tokenizer", r->tokenizer, "The tokenizer's folder (default: the text encoder's)");
  cmd->add_option("-o,--output", r->output, "The folder to write: new, empty, or one pab assembled before")->required();
  cmd->callback([r] {
    std::string report;
    pab::Status s = pab::assemble(*r, &report);
    if (s.ok) std::cout << report << "wrote " << r->output << "\n";
    pab::cli::report(s);
  });
}

PAB_COMMAND(register_assemble);

}  // namespace
