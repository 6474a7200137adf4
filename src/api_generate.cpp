// The public API's generate (pab generate): checks, the pipeline, the video
// files. Part of the pab_media library (it writes video through libav*).
#include <chrono>
#include <optional>

#include "api_internal.h"
#include "backend/backend.h"
#include "cache/pab_config.h"
#include "io/atomic_file.h"
#include "io/video.h"
#include "pipeline/pab_report.h"
#include "pipeline/video_pipeline.h"

namespace pab {

namespace {

// "12 of 36 spatial attention calls broadcast; ..." or "nothing".
std::string skipped_summary(const PabStats& stats) {
  std::string out;
  for (int k = 0; k < kSiteKinds; ++k) {
    PabStats::Counts c = stats.total(SiteKind(k));
    if (c.computed + c.broadcast == 0 || c.broadcast == 0) continue;
    const std::string kind = site_kind_name(SiteKind(k));
    out += cat(out.empty() ? "" : ", ", c.broadcast, " of ", c.computed + c.broadcast, " ", kind,
               kind.starts_with("mlp") ? "" : " attention", " calls");
  }
  return out.empty() ? "nothing" : out;
}

}  // namespace

Status generate(const GenerateOptions& o, GenerateResult* result, const GenerateCallback& progress) {
  return guarded([&] {
    using clock = std::chrono::steady_clock;
    const auto started = clock::now();
    auto emit = [&](GenerateEvent e) {
      if (progress) progress(e);
    };

    // Everything that can be checked without loading weights, before any work.
    if (o.output.empty() && o.frames_dir.empty()) fail("no output: give a video file (-o) and/or --frames-dir");
    if (!o.output.empty()) check_writable(o.output);
    if (!o.frames_dir.empty()) check_png_frames_target(o.frames_dir);
    if (!o.pab_report.empty()) check_writable(o.pab_report);
    if (!(o.fps > 0) || o.fps > 1000) fail("fps ", o.fps, ": expected a frame rate in (0, 1000]");
    const TilingChoice tiling = parse_tiling(o.tiling);
    const LoadOptions lo = load_options(o.compute);
    auto pipe = VideoPipeline::open(o.model_dir, lo);

    VideoRequest req;
    req.prompt = o.prompt;
    req.negative_prompt = o.negative_prompt;
    if (o.steps != 0) req.steps = o.steps;
    if (o.guidance >= 0) req.guidance = o.guidance;
    if (o.frames != 0) req.frames = o.frames;
    if (o.height != 0) req.height = o.height;
    if (o.width != 0) req.width = o.width;
    if (o.max_sequence_length != 0) req.max_sequence_length = o.max_sequence_length;
    req.dynamic_cfg = o.dynamic_cfg;
    const VideoPlan plan = pipe->plan(req);
    if (plan.prompt.empty()) fail("empty prompt: give the text to generate from (--prompt)");

    const PabConfig pab_config = o.pab.any() ? resolve_pab_choice(o.pab.preset, o.pab.file, pipe->transformer_class())
                                             : default_pab_config(pipe->transformer_class());
    std::optional<PabPolicy> policy;
    if (pab_config.any()) policy.emplace(pab_config);

    GenerateResult r;
    r.pipeline = pipe->class_name();
    r.frames = plan.frames;
    r.height = plan.height;
    r.width = plan.width;
    r.steps = plan.steps;
    r.fps = o.fps;
    r.pab = pab_config.any() ? pab_config.describe() : "off";
    if (tiling == TilingChoice::on && !pipe->tiles(plan, tiling))
      r.warnings.push_back(cat(r.pipeline, " decodes frame by frame with an image VAE; tiling does not apply"));
    emit({GenerateEvent::Kind::plan,
          cat(r.pipeline, ": ", plan.describe(), ", seed ", o.seed, ", PAB ", r.pab, ", on ",
              backend(lo.device).device_description(), " ", o.compute.dtype),
          0, 0, 0, 0});
    for (const std::string& w : r.warnings) emit({GenerateEvent::Kind::warning, w, 0, 0, 0, 0});

    GenerationEvents events;
    events.on_warning = [&](const std::string& w) {
      r.warnings.push_back(w);
      emit({GenerateEvent::Kind::warning, w, 0, 0, 0, 0});
    };
    events.on_phase = [&](const std::string& phase, double s) {
      emit({GenerateEvent::Kind::phase, phase, 0, 0, 0, s});
    };
    events.on_step = [&](const StepReport& s) {
      emit({GenerateEvent::Kind::step, "", s.step, s.steps, s.timestep, s.seconds});
    };
    GeneratedVideo video = generate_video(*pipe, plan, o.seed, policy ? &*policy : nullptr, tiling, events);
    r.text_seconds = video.text_seconds;
    r.denoise_seconds = video.denoise_seconds;
    r.decode_seconds = video.decode_seconds;
    r.tiled = video.tiled;
    r.pab_skipped = policy ? skipped_summary(video.stats) : "nothing (PAB off)";

    const auto write_started = clock::now();
    const Rgb8Video rgb = quantize_frames(video.frames);
    if (!o.output.empty()) {
      VideoWriteOptions wo;
      wo.fps = o.fps;
      VideoWriteReport w = write_video(o.output, rgb, wo);
      for (const std::string& warning : w.warnings) events.on_warning(warning);
      r.written.push_back(o.output);
    }
    if (!o.frames_dir.empty()) {
      write_png_frames(o.frames_dir, rgb);
      r.written.push_back(o.frames_dir);
    }
    if (!o.pab_report.empty()) {
      if (!policy) fail(o.pab_report, ": no PAB report without PAB (--pab off)");
      write_broadcast_map(o.pab_report, video.stats, "PAB " + pab_config.describe());
      r.written.push_back(o.pab_report);
    }
    r.write_seconds = std::chrono::duration<double>(clock::now() - write_started).count();
    emit({GenerateEvent::Kind::phase, "write", 0, 0, 0, r.write_seconds});
    r.total_seconds = std::chrono::duration<double>(clock::now() - started).count();
    if (result) *result = std::move(r);
  });
}

}  // namespace pab
