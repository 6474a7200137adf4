// pab replay CASE_DIR -o OUT.safetensors [--pab ... | --pab-config FILE] [--pab-report MAP.png]
#include <iostream>

#include "commands.h"

namespace {

void register_replay(CLI::App& app) {
  auto opts = std::make_shared<pab::ReplayOptions>();
  CLI::App* cmd = app.add_subcommand(
      "replay", "Run a fixture case's denoising loop (case.json, inputs.safetensors, transformer/) without and with "
                "PAB and write every step's output under the reference's names");
  cmd->add_option("case_dir", opts->case_dir, "Case folder")->required()->check(CLI::ExistingDirectory);
  cmd->add_option("-o,--output", opts->output, "Output .safetensors file")->required();
  pab::cli::add_device_option(cmd, &opts->compute);
  cmd->add_option("--dtype", opts->compute.dtype, "Compute dtype: f32, bf16 or f16")->capture_default_str();
  pab::cli::add_parallel_options(cmd, &opts->compute);
  pab::cli::add_unused_weights_option(cmd, &opts->compute);
  pab::cli::add_pab_options(cmd, &opts->pab);  // replaces the case's own PAB settings
  cmd->add_option("--pab-report", opts->pab_report,
                  "PNG picture of the PAB run: what was computed and what was broadcast, blocks by steps, per kind");
  cmd->callback([opts] {
    std::string summary;
    pab::Status s = pab::replay(*opts, &summary);
    if (s.ok)
      std::cout << summary << "\nwrote " << opts->output << (opts->pab_report.empty() ? "" : ", " + opts->pab_report)
                << "\n";
    pab::cli::report(s);
  });
}

PAB_COMMAND(register_replay);

}  // namespace
