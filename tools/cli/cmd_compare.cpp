// pab compare A B [--json]
#include <iostream>

#include "commands.h"

namespace {

void register_compare(CLI::App& app) {
  auto opts = std::make_shared<pab::CompareOptions>();
  CLI::App* cmd = app.add_subcommand(
      "compare",
      "Compare two videos (video files or folders of frame_NNNN.png) of the same size: PSNR, SSIM and the largest "
      "and mean absolute error in 8-bit levels, per frame and overall");
  cmd->add_option("a", opts->a, "First video (the reference)")->required();
  cmd->add_option("b", opts->b, "Second video")->required();
  cmd->add_flag("--json", opts->json, "Print JSON instead of text");
  cmd->callback([opts] {
    std::string report;
    pab::Status s = pab::compare_videos(*opts, &report);
    if (s.ok) std::cout << report;
    pab::cli::report(s);
  });
}

PAB_COMMAND(register_compare);

}  // namespace
