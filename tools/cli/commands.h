// Subcommand registration: each cmd_*.cpp adds itself with PAB_COMMAND and
// sets the exit code through its callback.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <vector>

#include "pab/pab.h"

namespace pab::cli {

using Register = std::function<void(CLI::App&)>;
std::vector<Register>& registry();
int& exit_code();
// Prints "pab: error: <message>" on failure and sets the exit code.
void report(const Status& s);
// Adds --pab and --pab-config (for generate and replay).
void add_pab_options(CLI::App* cmd, PabOptions* opts);
// Adds --gpus, --comm and --cfg-parallel.
void add_parallel_options(CLI::App* cmd, ComputeOptions* opts);

struct AutoRegister {
  explicit AutoRegister(Register r) { registry().push_back(std::move(r)); }
};

}  // namespace pab::cli

#define PAB_COMMAND_CONCAT2(a, b) a##b
#define PAB_COMMAND_CONCAT(a, b) PAB_COMMAND_CONCAT2(a, b)
#define PAB_COMMAND(fn) static ::pab::cli::AutoRegister PAB_COMMAND_CONCAT(pab_command_, __LINE__)(fn)
