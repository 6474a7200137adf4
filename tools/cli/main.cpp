// The `pab` command: subcommands are registered by the cmd_*.cpp files.
#include <CLI/CLI.hpp>
#include <iostream>

#include "commands.h"
#include "parallel/world.h"

int main(int argc, char** argv) {
  pab::set_program_arguments(argc, argv);  // sequence-parallel runs start copies of this program
  CLI::App app{"pab: video diffusion transformers with Pyramid Attention Broadcast"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "pab 0.1.0");
  for (const auto& reg : pab::cli::registry()) reg(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return pab::cli::exit_code();
}
