#include "commands.h"

#include <charconv>
#include <climits>
#include <cmath>
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

void add_pab_options(CLI::App* cmd, CacheOptions* opts) {
  auto* preset = cmd->add_option("--pab", opts->preset,
                                 "PAB settings: 'default' (published with the original method for this model), 'off', "
                                 "or kind=range[@low-high],... e.g. spatial=2@100-800,temporal=3@100-800,cross=6@100-900");
  auto* file = cmd->add_option("--pab-config", opts->file,
                               "PAB settings from a YAML or JSON file (diffusers or VideoSys names, docs/pab-config.md)")
                   ->check(CLI::ExistingFile);
  preset->excludes(file);
}

CLI::Validator at_least(int lo) {
  return CLI::Validator(
      [lo](std::string& text) -> std::string {
        long long v = 0;
        auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
        if (ec != std::errc() || end != text.data() + text.size() || v < lo || v > INT_MAX)
          return "'" + text + "' is out of range: expected an integer from " + std::to_string(lo) + " to " +
                 std::to_string(INT_MAX);
        return "";
      },
      "INT>=" + std::to_string(lo));
}

CLI::Validator finite_number(const std::string& meaning) {
  return CLI::Validator(
      [meaning](std::string& text) -> std::string {
        double v = 0;
        auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
        if (ec != std::errc() || end != text.data() + text.size() || !std::isfinite(v))
          return "'" + text + "' is not a finite number" + (meaning.empty() ? "" : " (" + meaning + ")");
        return "";
      },
      "NUMBER");
}

CLI::Validator not_blank() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        if (text.find_first_not_of(" \t\r\n") == std::string::npos) return "an empty value; give one";
        return "";
      },
      "TEXT");
}

CLI::Option* add_seed_option(CLI::App* cmd, uint64_t* seed, const std::string& help) {
  return cmd
      ->add_option_function<std::string>(
          "--seed",
          [seed](const std::string& text) {
            std::from_chars(text.data(), text.data() + text.size(), *seed);  // checked below
          },
          help + " (default 42)")
      ->check(CLI::Validator(
          [](std::string& text) -> std::string {
            uint64_t v = 0;
            auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
            if (text.empty() || ec != std::errc() || end != text.data() + text.size())
              return "'" + text + "' is not a seed: expected an integer from 0 to 18446744073709551615";
            return "";
          },
          "UINT64"));
}

void add_max_memory_option(CLI::App* cmd, ComputeOptions* opts) {
  cmd->add_option_function<std::string>(
         "--max-memory",
         [opts](const std::string& text) {
           uint64_t bytes = 0;
           parse_memory_size(text, &bytes);  // checked below
           opts->max_memory = bytes;
         },
         "The most memory the run may use, e.g. 24G (K, M, G, T: powers of 1024); the run's estimated need is "
         "checked against it and the device's free memory before any weight is loaded")
      ->check(CLI::Validator(
          [](std::string& text) -> std::string {
            uint64_t bytes = 0;
            Status s = parse_memory_size(text, &bytes);
            return s.ok ? "" : s.message;
          },
          "SIZE"));
}

void add_unused_weights_option(CLI::App* cmd, ComputeOptions* opts) {
  cmd->add_flag("--allow-unused-weights", opts->allow_unused_weights,
                "Load checkpoints holding tensors the model does not use (by default an error: the wrong model or a "
                "broken conversion?), with a warning naming them");
}

void add_device_option(CLI::App* cmd, ComputeOptions* opts) {
  std::string names;
  for (const std::string& d : device_names()) names += (names.empty() ? "" : " or ") + d;
  cmd->add_option("--device", opts->device, "Where to run: " + names + " (the devices this build has)")
      ->capture_default_str();
}

void add_parallel_options(CLI::App* cmd, ComputeOptions* opts) {
  cmd->add_option("--gpus", opts->gpus,
                  "Sequence parallelism: split the video tokens over N ranks, one process and one GPU each (CogVideoX, "
                  "Open-Sora-Plan 1.2: Ulysses attention; Latte, Open-Sora, Open-Sora-Plan 1.1: frames, traded for "
                  "spatial positions in temporal attention)")
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
