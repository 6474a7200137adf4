// LattePipeline (diffusers pipeline_latte.py) with clean_caption=False:
// prompts lower-cased and stripped, tokenized to 120 tokens and encoded with
// their attention mask; with mask_feature the prompt's embeddings are cut to
// its token count and the negative prompt's (also 120 tokens) to the same
// count. The transformer's learned-sigma channels are dropped before the
// scheduler step, and the SD-style VAE decodes frame by frame.
#include "backend/ops.h"
#include "core/registry.h"
#include "models/latte.h"
#include "pipeline/prompt_text.h"
#include "pipeline/video_pipeline.h"

namespace pab {

namespace {

constexpr int64_t kTextLength = 120;      // LattePipeline.encode_prompt's max_length
constexpr int64_t kDecodeChunkSize = 14;  // LattePipeline's decode_chunk_size default

class LattePipeline final : public VideoPipeline {
 public:
  LattePipeline(PipelineParts parts, const LoadOptions& opts)
      : VideoPipeline(std::move(parts), opts), facts_(parse_latte_config(parts_.transformer.config)) {
    // Latte's latents are frames of an image VAE's latents, decoded one by one.
    check_components("LatteTransformer3DModel", VaeKind::image, facts_.in_channels, facts_.caption_channels,
                     "caption_channels");
    // The pipeline keeps the first half of the output channels (learned sigma).
    if (facts_.out_channels != 2 * facts_.in_channels)
      parts_.transformer.config.unsupported(
          "out_channels", cat("LattePipeline expects learned sigma: 2 x in_channels = ", 2 * facts_.in_channels));
  }

  VideoPlan plan(const VideoRequest& r) const override {
    const int s = vae_facts().spatial_factor();
    if (r.dynamic_cfg) fail("dynamic CFG is a CogVideoXPipeline option; LattePipeline uses a fixed guidance scale");
    if (r.max_sequence_length && *r.max_sequence_length != kTextLength)
      fail("max_sequence_length ", *r.max_sequence_length, ": LattePipeline encodes prompts as ", kTextLength,
           " tokens");
    refuse_named_sizes(r);
    VideoPlan p;
    p.prompt = r.prompt;
    p.negative_prompt = r.negative_prompt;
    p.steps = r.steps.value_or(50);
    p.guidance = r.guidance.value_or(7.5);
    p.cfg = p.guidance > 1.0;
    p.mask_feature = r.mask_feature;
    p.eta = r.eta;
    p.height = r.height.value_or(facts_.sample_size * s);
    p.width = r.width.value_or(facts_.sample_size * s);
    p.frames = r.frames.value_or(facts_.video_length);
    p.text_length = int(kTextLength);
    check_request(p);

    check_size(p, s, facts_.patch_size);
    // diffusers adds a temporal position table of exactly video_length rows.
    if (p.frames < 1 || p.frames > facts_.video_length)
      fail("frames ", p.frames, ": this Latte transformer's temporal positions cover 1 to ", facts_.video_length,
           " frames (video_length in its config.json)");
    p.latents = {1, facts_.in_channels, p.frames, p.height / s, p.width / s};
    return p;
  }

  PromptEmbeddings encode_prompt(const VideoPlan& plan) override {
    PromptEmbeddings e;
    int64_t keep = 0;
    e.prompt = encode_text(python_lower_strip(plan.prompt), kTextLength, true, "prompt", "LattePipeline's limit",
                           &e.warnings, &keep);  // [1, 120, D]
    // diffusers does not warn about a truncated negative prompt.
    if (plan.cfg)
      e.negative = encode_text(python_lower_strip(plan.negative_prompt), kTextLength, true, "", "", nullptr);
    if (plan.mask_feature) {
      e.prompt = ops::slice(e.prompt, 1, 0, keep);  // [1, keep, D]
      if (plan.cfg) e.negative = ops::slice(e.negative, 1, 0, keep);
    }
    return e;
  }

  bool tiles(const VideoPlan&, TilingChoice) const override { return false; }

  Tensor decode(const VideoPlan& plan, const Tensor& latents, TilingChoice) override {
    if (latents.shape() != plan.latents)
      fail("LattePipeline: latents ", latents.desc(), " do not have the plan's shape ", shape_str(plan.latents));
    return postprocess_video(vae().decode_video(latents, decode_options()));  // from [1, C, F, H, W]
  }

 protected:
  double guidance_at(const VideoPlan& plan, int, double) const override { return plan.guidance; }

  MemoryEstimate::Phase decode_memory(const VideoPlan& plan, TilingChoice) const override {
    return vae_decode_memory(plan, plan.frames, decode_options());
  }
  // noise_pred.chunk(2, dim=1)[0]: the variance channels are not used by DDIM.
  Tensor scheduler_input(const Tensor& guided) const override { return ops::slice(guided, 1, 0, facts_.in_channels); }

 private:
  static VaeDecodeOptions decode_options() {
    VaeDecodeOptions o;
    o.chunk_frames = kDecodeChunkSize;
    return o;
  }

  LatteConfig facts_;  // the transformer's
};

}  // namespace

std::unique_ptr<VideoPipeline> make_latte_pipeline(PipelineParts parts, const LoadOptions& opts) {
  return std::make_unique<LattePipeline>(std::move(parts), opts);
}

PAB_REGISTER(PipelineEntry, "LattePipeline", {make_latte_pipeline});

}  // namespace pab
