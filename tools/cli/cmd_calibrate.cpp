// pab calibrate (--case CASE_DIR | --model DIR --prompt TEXT) [--target-speedup X] [--verify] [-o DIR]
#include <iostream>

#include "commands.h"

namespace {

void register_calibrate(CLI::App& app) {
  auto opts = std::make_shared<pab::CalibrateOptions>();
  CLI::App* cmd = app.add_subcommand(
      "calibrate",
      "Run a full generation, measure how much each attention site's output changes from step to step and what "
      "the sites cost, and propose the PAB settings with the smallest predicted deviation that reach a speed-up; "
      "writes changes.csv, curves.png, proposal.yaml and proposal_map.png");
  auto* by_case = cmd->add_option("--case", opts->case_dir,
                                  "A transformer fixture case folder (case.json, "
                                  "inputs.safetensors, transformer/)");
  auto* by_model = cmd->add_option("--model", opts->model_dir, "A diffusers pipeline folder (model_index.json)");
  by_case->excludes(by_model);
  cmd->add_option("--prompt", opts->prompt, "The prompt to calibrate on (with --model)");
  cmd->add_option("--negative-prompt", opts->negative_prompt, "Negative prompt (with --model)");
  cmd->add_option("--steps", opts->steps, "Denoising steps (with --model; default: the pipeline's)")
      ->check(pab::cli::at_least(1));
  pab::cli::add_seed_option(cmd, &opts->seed, "Seed of the initial noise (with --model)");
  cmd->add_option("--target-speedup", opts->target_speedup,
                  "Predicted speed-up to reach, >= 1 (count-based, from the measured site costs); default: that of "
                  "the settings published for the model")
      ->check(pab::cli::finite_number(">= 1"));
  cmd->add_option("--counting", opts->counting, "Counting rule of the proposal: diffusers or videosys")
      ->capture_default_str();
  cmd->add_option("--max-range", opts->max_range, "Largest broadcast range tried")->capture_default_str();
  cmd->add_flag("--verify", opts->verify,
                "Also run the generation without PAB and with the proposal, and report the measured speed-up and "
                "the difference from the full run");
  cmd->add_option("-o,--output-dir", opts->output_dir, "Folder for the files written")->capture_default_str();
  cmd->add_flag("--json", opts->json, "Print JSON instead of text");
  pab::cli::add_device_option(cmd, &opts->compute);
  cmd->add_option("--dtype", opts->compute.dtype, "Compute dtype: f32, bf16 or f16")->capture_default_str();
  pab::cli::add_max_memory_option(cmd, &opts->compute);
  pab::cli::add_unused_weights_option(cmd, &opts->compute);
  cmd->callback([opts] {
    std::string report;
    pab::Status s = pab::calibrate(*opts, &report);
    std::cout << report;  // also when the target is out of reach: what was found still helps
    pab::cli::report(s);
  });
}

PAB_COMMAND(register_calibrate);

}  // namespace
