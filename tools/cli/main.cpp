// The `pab` command: subcommands are registered by the cmd_*.cpp files.
#include <CLI/CLI.hpp>
#include <iostream>

#include "commands.h"

int main(int argc, char** argv) {
  // Before any thread starts: the interrupt cleanup, and the arguments for
  // the copies of this program a sequence-parallel run starts.
  pab::init_program(argc, argv);
  CLI::App app{"pab: video diffusion transformers with Pyramid Attention Broadcast"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "pab 0.1.0");
  for (const auto& reg : pab::cli::registry()) reg(app);
  app.failure_message([](const CLI::App*, const CLI::Error& e) {
    return std::string("pab: error: ") + e.what() + " (--help explains every flag)\n";
  });

  // A first word that names no command is said plainly, with the commands.
  std::string commands;
  bool known = false;
  const std::string first = argc > 1 ? argv[1] : "";
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
    commands += (commands.empty() ? "" : ", ") + sub->get_name();
    known = known || sub->get_name() == first;
  }
  if (first.empty() || (first[0] != '-' && !known)) {
    std::cerr << "pab: error: " << (first.empty() ? "no command given" : "unknown command '" + first + "'")
              << "; the commands are " << commands << " (pab COMMAND --help explains each)\n";
    return 2;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return pab::cli::exit_code();
}
