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
void add_pab_options(CLI::App* cmd, CacheOptions* opts);
// Adds --device, its help naming the devices of this build.
void add_device_option(CLI::App* cmd, ComputeOptions* opts);
// Adds --gpus, --comm and --cfg-parallel.
void add_parallel_options(CLI::App* cmd, ComputeOptions* opts);
// Adds --max-memory (a size such as 24G).
void add_max_memory_option(CLI::App* cmd, ComputeOptions* opts);
// Adds --allow-unused-weights.
void add_unused_weights_option(CLI::App* cmd, ComputeOptions* opts);
// Adds --seed: an integer from 0 to 2^64 - 1 (a sign or anything beyond is refused).
CLI::Option* add_seed_option(CLI::App* cmd, uint64_t* seed, const std::string& help);

// Validators whose messages name the allowed range (CLI11 puts the flag first).
CLI::Validator at_least(int lo);
CLI::Validator finite_number(const std::string& meaning = "");
CLI::Validator not_blank();

struct AutoRegister {
  explicit AutoRegister(Register r) { registry().push_back(std::move(r)); }
};

}  // namespace pab::cli

#define PAB_COMMAND_CONCAT2(a, b) a##b
#define PAB_COMMAND_CONCAT(a, b) PAB_COMMAND_CONCAT2(a, b)
#define PAB_COMMAND(fn) static ::pab::cli::AutoRegister PAB_COMMAND_CONCAT(pab_command_, __LINE__)(fn)
