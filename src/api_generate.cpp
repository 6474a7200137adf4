// The public API's Model and generate (pab generate): checks, the pipeline,
// the video files. Part of the pab_media library (it writes video through libav*).
#include <chrono>
#include <cmath>
#include <filesystem>
#include <optional>

#include "api_internal.h"
#include "backend/backend.h"
#include "cache/cache_method.h"
#include "io/atomic_file.h"
#include "io/video.h"
#include "parallel/world.h"
#include "pipeline/memory_plan.h"
#include "pipeline/pab_report.h"
#include "pipeline/prompt_text.h"
#include "pipeline/video_pipeline.h"

namespace pab {

namespace {

// "12 of 36 spatial attention calls, ..." or "nothing".
std::string skipped_summary(const CacheStats& stats) {
  std::string out;
  for (int k = 0; k < kSiteKinds; ++k) {
    CacheStats::Counts c = stats.total(SiteKind(k));
    if (c.computed + c.reused == 0 || c.reused == 0) continue;
    const std::string kind = site_kind_name(SiteKind(k));
    out += cat(out.empty() ? "" : ", ", c.reused, " of ", c.computed + c.reused, " ", kind,
               kind.starts_with("mlp") ? "" : " attention", " calls");
  }
  return out.empty() ? "nothing" : out;
}

// The request's own values, checked before any file is read: each given
// value in its range, the outputs writable, distinct and of a known format.
void check_request(const GenerateRequest& o) {
  check_prompt_utf8(o.prompt, "the prompt (--prompt)");
  check_prompt_utf8(o.negative_prompt, "the negative prompt (--negative-prompt)");
  if (is_blank(o.prompt)) fail("empty prompt: give the text to generate from (--prompt)");
  auto at_least_one = [](const char* flag, const std::optional<int>& v) {
    if (v && *v < 1) fail(flag, " ", *v, ": expected at least 1");
  };
  at_least_one("--steps", o.steps);
  at_least_one("--frames", o.frames);
  at_least_one("--height", o.height);
  at_least_one("--width", o.width);
  at_least_one("--max-sequence-length", o.max_sequence_length);
  if (o.guidance && !std::isfinite(*o.guidance))
    fail("--guidance ", *o.guidance, ": expected a finite number (1 or less: no CFG)");
  if (o.fps && (!(*o.fps > 0) || *o.fps > 1000)) fail("--fps ", *o.fps, ": expected a frame rate in (0, 1000]");

  if (o.output.empty() && o.frames_dir.empty()) fail("no output: give a video file (-o) and/or --frames-dir");
  VideoWriteOptions wo;
  wo.fps = o.fps.value_or(8);  // the models' defaults (8, 24) are in range too
  if (!o.output.empty()) check_video_target(o.output, wo);
  if (!o.frames_dir.empty()) check_png_frames_target(o.frames_dir);
  if (!o.pab_report.empty()) {
    check_writable(o.pab_report);
    if (std::filesystem::path(o.pab_report).extension() != ".png")
      fail(o.pab_report, ": the PAB report is a PNG picture; give a path ending in .png");
  }
  // Two outputs at one path would overwrite each other.
  auto canonical = [](const std::string& p) {
    std::error_code ec;
    const std::filesystem::path c = std::filesystem::weakly_canonical(p, ec);
    return ec ? std::filesystem::path(p).lexically_normal() : c;
  };
  const std::vector<std::string> paths = {o.output, o.frames_dir, o.pab_report};
  for (size_t i = 0; i < paths.size(); ++i)
    for (size_t j = i + 1; j < paths.size(); ++j)
      if (!paths[i].empty() && !paths[j].empty() && canonical(paths[i]) == canonical(paths[j]))
        fail(paths[i], ": given as two outputs; each output needs its own path");
}

void check_compute(const ComputeOptions& c) {
  if (c.max_memory && *c.max_memory == 0) fail("--max-memory 0: expected a positive size");
}

}  // namespace

struct Model::Impl {
  ComputeOptions compute;
  LoadOptions load;
  std::unique_ptr<VideoPipeline> pipe;
};

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::~Model() = default;

const std::string& Model::pipeline() const {
  return impl_->pipe->class_name();
}

Status Model::open(const std::string& dir, const ComputeOptions& compute, std::unique_ptr<Model>* model) {
  return guarded([&] {
    if (dir.empty()) fail("no model folder given (--model)");
    check_compute(compute);
    auto impl = std::make_unique<Impl>();
    impl->compute = compute;
    impl->load = load_options(compute);
    // The folder's errors before any rank starts.
    PipelineParts parts = read_pipeline_folder(dir);
    join_ranks(compute, &impl->load);
    impl->pipe = VideoPipeline::create(std::move(parts), impl->load);
    *model = std::unique_ptr<Model>(new Model(std::move(impl)));
  });
}

Status Model::generate(const GenerateRequest& o, GenerateResult* result, const GenerateCallback& progress) {
  return guarded([&] {
    using clock = std::chrono::steady_clock;
    const auto started = clock::now();
    auto emit = [&](GenerateEvent e) {
      if (progress) progress(e);
    };
    VideoPipeline& pipe = *impl_->pipe;
    const LoadOptions& lo = impl_->load;

    // Everything that can be checked without loading weights, before any work.
    check_request(o);
    const TilingChoice tiling = parse_tiling(o.tiling);
    VideoRequest req;
    req.prompt = o.prompt;
    req.negative_prompt = o.negative_prompt;
    req.steps = o.steps;
    req.guidance = o.guidance;
    req.frames = o.frames;
    req.height = o.height;
    req.width = o.width;
    req.resolution = o.resolution;
    req.aspect_ratio = o.aspect_ratio;
    req.duration = o.duration;
    req.max_sequence_length = o.max_sequence_length;
    req.dynamic_cfg = o.dynamic_cfg;
    const VideoPlan plan = pipe.plan(req);

    CacheChoice choice;
    choice.method = o.cache.method;
    choice.preset = o.cache.preset;
    choice.file = o.cache.file;
    std::string note;
    std::unique_ptr<CachePolicy> cache =
        make_cache_policy(choice, pipe.transformer_class(), pipe.transformer_sites(), &note);
    if (!o.pab_report.empty() && !cache)
      fail(o.pab_report, ": no PAB report without PAB (--pab off); leave out --pab-report or turn PAB on");

    const MemoryEstimate memory =
        pipe.estimate_memory(plan, cache ? cache->held_kinds() : std::vector<SiteKind>{}, tiling);
    check_memory(memory, memory_limit(lo.device, impl_->compute.max_memory));

    GenerateResult r;
    r.pipeline = pipe.class_name();
    r.frames = plan.frames;
    r.height = plan.height;
    r.width = plan.width;
    r.steps = plan.steps;
    r.fps = o.fps.value_or(pipe.default_fps());
    r.cache = cache ? cat(cache->name() == "pab" ? "PAB" : cache->name(), " ", cache->describe()) : "off";
    if (tiling == TilingChoice::on && !pipe.tiles(plan, tiling))
      r.warnings.push_back(cat(r.pipeline, " decodes frame by frame with an image VAE; tiling does not apply"));
    if (!note.empty()) emit({GenerateEvent::Kind::note, note, 0, 0, 0, 0});
    emit({GenerateEvent::Kind::plan,
          cat(r.pipeline, ": ", plan.describe(), ", seed ", o.seed, ", ", cache ? r.cache : "PAB off", ", on ",
              backend(lo.device).device_description(), " ", impl_->compute.dtype, ", about ",
              format_bytes(memory.peak()), " at most"),
          0, 0, 0, 0});
    for (const std::string& w : r.warnings) emit({GenerateEvent::Kind::warning, w, 0, 0, 0, 0});

    GenerationEvents events;
    events.on_warning = [&](const std::string& w) {
      r.warnings.push_back(w);
      emit({GenerateEvent::Kind::warning, w, 0, 0, 0, 0});
    };
    pipe.on_warning(events.on_warning);
    events.on_phase = [&](const std::string& phase, double s) {
      emit({GenerateEvent::Kind::phase, phase, 0, 0, 0, s});
    };
    events.on_step = [&](const StepReport& s) {
      emit({GenerateEvent::Kind::step, "", s.step, s.steps, s.timestep, s.seconds});
    };
    GeneratedVideo video = generate_video(pipe, plan, o.seed, cache.get(), tiling, events);
    r.text_seconds = video.text_seconds;
    r.denoise_seconds = video.denoise_seconds;
    r.decode_seconds = video.decode_seconds;
    r.tiled = video.tiled;
    r.cache_skipped = cache ? skipped_summary(video.stats) : "nothing (PAB off)";

    // Rank 0 alone writes. Every output is written under a temporary name,
    // then all are moved into place together: a run leaves all of them or none.
    const auto write_started = clock::now();
    if (!is_secondary_rank()) {
      OutputGroup outputs;
      const Rgb8Video rgb = quantize_frames(video.frames);
      std::vector<std::string> warnings;
      if (!o.output.empty()) {
        VideoWriteOptions wo;
        wo.fps = r.fps;
        VideoWriteReport w = write_video(o.output, rgb, wo);
        warnings = w.warnings;
        r.written.push_back(o.output);
      }
      if (!o.frames_dir.empty()) {
        write_png_frames(o.frames_dir, rgb);
        r.written.push_back(o.frames_dir);
      }
      if (!o.pab_report.empty()) {
        write_broadcast_map(o.pab_report, video.stats, r.cache);
        r.written.push_back(o.pab_report);
      }
      outputs.commit();
      for (const std::string& w : warnings) events.on_warning(w);
    }
    r.write_seconds = std::chrono::duration<double>(clock::now() - write_started).count();
    emit({GenerateEvent::Kind::phase, "write", 0, 0, 0, r.write_seconds});
    r.total_seconds = std::chrono::duration<double>(clock::now() - started).count();
    if (result) *result = std::move(r);
  });
}

Status generate(const GenerateOptions& o, GenerateResult* result, const GenerateCallback& progress) {
  Status s = guarded([&] {
    if (o.model_dir.empty()) fail("no model folder given (--model)");
    check_request(o);
    check_compute(o.compute);
  });
  if (!s.ok) return s;
  std::unique_ptr<Model> model;
  s = Model::open(o.model_dir, o.compute, &model);
  if (!s.ok) return s;
  return model->generate(o, result, progress);
}

}  // namespace pab
