// pab generate --model DIR --prompt TEXT [-o OUT.mp4] [--frames-dir DIR] [options]
#include <unistd.h>

#include <cstdio>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "commands.h"

namespace {

// Progress on stderr: a bar redrawn in place on a terminal, one line per step otherwise.
class Progress {
 public:
  Progress() : tty_(::isatty(STDERR_FILENO) != 0) {}

  void operator()(const pab::GenerateEvent& e) {
    using Kind = pab::GenerateEvent::Kind;
    switch (e.kind) {
      case Kind::plan:
        std::cerr << e.message << "\n";
        break;
      case Kind::note:
        end_bar();
        std::cerr << "pab: note: " << e.message << "\n";
        break;
      case Kind::warning:
        end_bar();
        std::cerr << "pab: warning: " << e.message << "\n";
        break;
      case Kind::phase:
        end_bar();
        if (e.message != "denoise")
          std::cerr << "  " << std::left << std::setw(8) << e.message << std::fixed << std::setprecision(2) << e.seconds
                    << " s\n";
        break;
      case Kind::step:
        step(e);
        break;
    }
  }

 private:
  void step(const pab::GenerateEvent& e) {
    total_ += e.seconds;
    const int done = e.step + 1;
    std::ostringstream line;
    line << std::fixed;
    if (tty_) {
      constexpr int kWidth = 30;
      const int filled = kWidth * done / e.steps;
      line << "\r  denoise [" << std::string(size_t(filled), '#') << std::string(size_t(kWidth - filled), '.') << "] ";
    } else {
      line << "  step ";
    }
    line << done << "/" << e.steps << "  t=" << std::defaultfloat << e.timestep << std::fixed << "  "
         << std::setprecision(3) << e.seconds << " s/step";
    if (tty_) {
      const double eta = total_ / done * (e.steps - done);
      line << ", " << std::setprecision(1) << eta << " s left  ";
      in_bar_ = done < e.steps;
      std::cerr << line.str() << (in_bar_ ? "" : "\n") << std::flush;
    } else {
      std::cerr << line.str() << "\n";
    }
  }
  void end_bar() {
    if (in_bar_) std::cerr << "\n";
    in_bar_ = false;
  }

  bool tty_;
  bool in_bar_ = false;
  double total_ = 0;
};

void register_generate(CLI::App& app) {
  auto o = std::make_shared<pab::GenerateOptions>();
  auto tiling_on = std::make_shared<bool>(false);
  auto tiling_off = std::make_shared<bool>(false);
  CLI::App* cmd = app.add_subcommand(
      "generate",
      "Text to video with a pipeline folder (CogVideoX, Latte, or Open-Sora / Open-Sora-Plan after pab "
      "assemble): a prompt in, a video (mp4, webm or "
      "gif) and/or PNG frames out, with Pyramid Attention Broadcast (the model's published settings unless "
      "--pab says otherwise)");
  cmd->add_option("-m,--model", o->model_dir, "Pipeline folder (model_index.json and its components)")->required();
  cmd->add_option("-p,--prompt", o->prompt, "What to generate")->required()->check(pab::cli::not_blank());
  cmd->add_option("--negative-prompt", o->negative_prompt,
                  "What to steer away from (CFG's unconditional text; default: empty, as diffusers)");
  cmd->add_option("-o,--output", o->output,
                  "Video file to write, its format from the extension: .mp4 (H.264), .webm (VP9) or .gif");
  cmd->add_option("--frames-dir", o->frames_dir, "Folder to write frame_NNNN.png files into");
  cmd->add_option("--pab-report", o->pab_report,
                  "PNG picture of what PAB computed and what it broadcast: blocks by steps, one panel per kind");
  cmd->add_option("--steps", o->steps, "Denoising steps (default 50)")->check(pab::cli::at_least(1));
  cmd->add_option("--guidance", o->guidance, "CFG scale (default: CogVideoX 6, Latte 7.5; 1 or less: no CFG)")
      ->check(pab::cli::finite_number("1 or less: no CFG"));
  cmd->add_flag("--dynamic-cfg", o->dynamic_cfg, "CogVideoX: raise the guidance scale along the schedule");
  cmd->add_option("--frames", o->frames, "Frames (default: the model's; CogVideoX makes 8k+1: 9, 17, ..., 49)")
      ->check(pab::cli::at_least(1));
  cmd->add_option("--height", o->height, "Height in pixels (default: the model's sample size)")
      ->check(pab::cli::at_least(1));
  cmd->add_option("--width", o->width, "Width in pixels (default: the model's sample size)")
      ->check(pab::cli::at_least(1));
  cmd->add_option("--resolution", o->resolution,
                  "Open-Sora: a named size instead of --height/--width: 144p, 240p, 360p, 480p or 720p (default 480p)");
  cmd->add_option("--aspect-ratio", o->aspect_ratio,
                  "Open-Sora: the shape with --resolution, height:width as the original writes it (9:16 is landscape: "
                  "480p 9:16 is 480x854), one of its ratios such as 9:16, 16:9, 1:1, 4:3, 3:4 (default 9:16)");
  cmd->add_option("--duration", o->duration,
                  "Open-Sora: a named length instead of --frames: 2s (51 frames), 4s (102), 8s (204), 16s (408)");
  pab::cli::add_seed_option(cmd, &o->seed, "Seed, as torch.Generator('cpu').manual_seed(seed) in diffusers");
  cmd->add_option("--max-sequence-length", o->max_sequence_length,
                  "CogVideoX prompt tokens (default: the transformer's max_text_seq_length)")
      ->check(pab::cli::at_least(1));
  cmd->add_option("--fps", o->fps, "Frame rate of the video file, in (0, 1000] (default: the model's, 8; Open-Sora 24)")
      ->check(pab::cli::finite_number());
  auto* on = cmd->add_flag("--tiling", *tiling_on, "Always decode the VAE in tiles");
  auto* off = cmd->add_flag("--no-tiling", *tiling_off,
                            "Never tile (default: tiles frames above 480x720 pixels, above half that in f32)");
  on->excludes(off);
  pab::cli::add_device_option(cmd, &o->compute);
  cmd->add_option("--dtype", o->compute.dtype, "Compute dtype: f32, bf16 or f16")->capture_default_str();
  pab::cli::add_parallel_options(cmd, &o->compute);
  pab::cli::add_max_memory_option(cmd, &o->compute);
  pab::cli::add_unused_weights_option(cmd, &o->compute);
  pab::cli::add_pab_options(cmd, &o->cache);
  cmd->callback([o, tiling_on, tiling_off] {
    o->tiling = *tiling_on ? "on" : *tiling_off ? "off" : "auto";
    Progress progress;
    pab::GenerateResult r;
    pab::Status s = pab::generate(*o, &r, [&](const pab::GenerateEvent& e) { progress(e); });
    if (s.ok) {
      std::ostringstream line;
      line << std::fixed << std::setprecision(2) << "done in " << r.total_seconds << " s (text " << r.text_seconds
           << " s, denoise " << r.denoise_seconds << " s, decode " << r.decode_seconds << " s"
           << (r.tiled ? " tiled" : "") << ", write " << r.write_seconds << " s); PAB skipped " << r.cache_skipped
           << "; wrote ";
      for (size_t i = 0; i < r.written.size(); ++i) line << (i ? " and " : "") << r.written[i];
      line << " (" << r.frames << " frames " << r.width << "x" << r.height << " at " << std::defaultfloat << r.fps
           << " fps)";
      std::cout << line.str() << "\n";
    }
    pab::cli::report(s);
  });
}

PAB_COMMAND(register_generate);

}  // namespace
