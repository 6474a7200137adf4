#include "commands.h"

#include <iostream>

namespace pab::cli {

std::vector<Register>& registry() {
  static std::vector<Register> r;
  return r;
}

int& exit_code() {
  static int code = 0;
  return code;
}

void report(const Status& s) {
  if (s.ok) return;
  std::cerr << "pab: error: " << s.message << "\n";
  exit_code() = 1;
}

void add_pab_options(CLI::App* cmd, PabOptions* opts) {
  auto* preset = cmd->add_option("--pab", opts->preset,
                                 "PAB settings: 'default' (published with the original method for this model), 'off', "
                                 "or kind=range[@low-high],... e.g. spatial=2@100-800,temporal=3@100-800,cross=6@100-900");
  auto* file = cmd->add_option("--pab-config", opts->file,
                               "PAB settings from a YAML or JSON file (diffusers or VideoSys names, docs/pab-config.md)")
                   ->check(CLI::ExistingFile);
  preset->excludes(file);
}

}  // namespace pab::cli
