// `pab calibrate --model DIR --prompt TEXT`: the text-to-video pipeline as a
// calibration Generation. The prompt is encoded once; every run draws the
// same seeded initial latents, denoises with the given site runner and
// decodes the frames, so runs differ only in what the runner decides.
#include <chrono>

#include "backend/backend.h"
#include "pipeline/calibrate.h"
#include "pipeline/noise.h"
#include "pipeline/video_pipeline.h"

namespace pab {

Generation pipeline_generation(const PipelineGenerationRequest& request, const LoadOptions& opts) {
  std::shared_ptr<VideoPipeline> pipe = VideoPipeline::open(request.model_dir, opts);
  VideoRequest vr;
  vr.prompt = request.prompt;
  vr.negative_prompt = request.negative_prompt;
  vr.steps = request.steps;
  auto plan = std::make_shared<VideoPlan>(pipe->plan(vr));
  // Calibration keeps every site's last output and the transformer through
  // the decode: the decode phase holds the transformer's weights too.
  MemoryEstimate memory = pipe->estimate_memory(*plan, pipe->transformer_sites().layer_kinds(), TilingChoice::automatic);
  for (MemoryEstimate::Phase& p : memory.phases)
    if (p.name == "decode") p.parts.push_back({"transformer weights", memory.part("denoise", "weights")});
  check_memory(memory, memory_limit(opts.device, request.max_memory));
  auto embeds = std::make_shared<PromptEmbeddings>(pipe->encode_prompt(*plan));
  pipe->release_text_encoder();
  DiffusionTransformer& model = pipe->transformer();

  Generation g;
  g.description = cat(pipe->class_name(), " (", model.class_name(), "), ", request.model_dir, ", \"", request.prompt,
                      "\", ", plan->steps, " steps");
  g.model_class = model.class_name();
  g.sites = model.site_layout();
  g.device = opts.device;
  const uint64_t seed = request.seed;
  const Device device = opts.device;
  g.run = [pipe, plan, embeds, seed, device](CachePolicy* sites) {
    Backend& be = backend(device);
    TorchNoise noise(seed);
    Tensor latents = pipe->initial_latents(*plan, noise);
    be.synchronize();
    const auto t0 = std::chrono::steady_clock::now();
    DenoiseResult run = pipe->denoise(*plan, *embeds, latents, sites, &noise);
    be.synchronize();
    GenerationOutput out;
    out.loop_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    out.latents = run.latents;
    out.timesteps = run.timesteps;
    out.stats = run.stats;
    out.frames = pipe->decode(*plan, run.latents, TilingChoice::automatic);
    return out;
  };
  return g;
}

}  // namespace pab
