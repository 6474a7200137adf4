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

void add_parallel_options(CLI::App* cmd, ComputeOptions* opts) {
  cmd->add_option("--gpus", opts->gpus,
                  "Sequence parallelism: split the video tokens over N ranks, one process and one GPU each (CogVideoX: "
                  "Ulysses attention; Latte, Open-Sora: frames, traded for spatial positions in temporal attention)")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  cmd->add_option("--comm", opts->comm,
                  "How ranks exchange: auto (NCCL on CUDA), nccl, or host (shared memory; any device, ranks may share "
                  "a GPU; for testing)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "nccl", "host"}));
  cmd->add_flag("--cfg-parallel", opts->cfg_parallel,
                "Run the two classifier-free-guidance branches on separate halves of the --gpus ranks (even --gpus); "
                "each half splits its branch's tokens");
}

}  // namespace pab::cli
