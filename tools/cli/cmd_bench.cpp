// pab bench --workload NAME [--pab] [--json] [--steps N]
#include <iostream>

#include "commands.h"

namespace {

void register_bench(CLI::App& app) {
  auto req = std::make_shared<pab::BenchRequest>();
  CLI::App* cmd = app.add_subcommand(
      "bench",
      "Time a benchmark workload (docs/performance.md): the transformer's denoising loop (batched CFG, generated "
      "weights of the real architecture), or the whole pipeline from prompt to frames, without and with PAB");
  cmd->add_option("-w,--workload", req->workload,
                  "cogvideox-2b, cogvideox-5b, latte-1, open-sora-1.2, open-sora-plan-1.1, open-sora-plan-1.2 (the loop; "
                  "Open-Sora at 480p 9:16, 51 frames, as its paper runs it with --steps 30; Open-Sora-Plan v1.1 at "
                  "65x512x512 with --steps 150, v1.2 at 29x480p with --steps 100, as VideoSys runs them) or "
                  "cogvideox-2b-pipeline (T5 encode, denoise, VAE decode)")
      ->required()
      ->check(CLI::IsMember({"cogvideox-2b", "cogvideox-5b", "latte-1", "open-sora-1.2", "open-sora-plan-1.1",
                             "open-sora-plan-1.2", "cogvideox-2b-pipeline"}));
  cmd->add_flag("--pab", req->pab, "Also run with the workload's PAB configuration and report the speed-up");
  cmd->add_option("--steps", req->steps, "Denoising steps")->capture_default_str();
  cmd->add_flag("--json", req->json, "Print JSON instead of text");
  cmd->add_option("--tiling", req->tiling,
                  "VAE decode of the pipeline workload: on (tiled), off, or auto (as pab generate)")
      ->check(CLI::IsMember({"on", "off", "auto"}))
      ->capture_default_str();
  cmd->add_option("--device", req->compute.device, "cuda or cpu")->capture_default_str();
  cmd->add_option("--dtype", req->compute.dtype, "bf16, f16 or f32")->capture_default_str();
  pab::cli::add_parallel_options(cmd, &req->compute);
  cmd->callback([req] {
    std::string report;
    pab::Status s = pab::bench(*req, &report);
    if (s.ok) std::cout << report << (req->json ? "\n" : "");
    pab::cli::report(s);
  });
}

PAB_COMMAND(register_bench);

}  // namespace
