// CogVideoXPipeline (diffusers pipeline_cogvideox.py): T5 prompts padded to
// max_sequence_length without a mask, negative prompt "" for CFG, latents
// [B, (F - 1) / 4 + 1, C, H / 8, W / 8] (CogVideoX 1.5 pads the latent frames
// to its temporal patch and drops the padding before decoding), dynamic CFG,
// latents kept in the compute dtype between steps, and the 3D VAE.
#include <cmath>
#include <numbers>

#include "backend/ops.h"
#include "core/registry.h"
#include "models/cogvideox.h"
#include "pipeline/video_pipeline.h"

namespace pab {

namespace {

// Untiled decoding holds several full-resolution activations of 128 channels
// for each batch of 8 or 9 frames: CogVideoX's native 480x720 in bf16 peaks at
// 8.6 GiB on the GPU (VAE weights included) and decodes in 1.0 s where tiles
// take 1.8 s (H100). Above that many bytes of a frame's pixels the automatic choice
// tiles: larger frames, or 480x720 in f32.
constexpr int64_t kAutoTileBytes = 480 * 720 * 2;

class CogVideoXPipeline final : public VideoPipeline {
 public:
  CogVideoXPipeline(PipelineParts parts, const LoadOptions& opts)
      : VideoPipeline(std::move(parts), opts), facts_(parse_cogvideox_config(parts_.transformer.config)) {
    // Its frame counts and decoding follow the causal VAE's frame batches.
    check_components("CogVideoXTransformer3DModel", VaeKind::causal_video, facts_.in_channels, facts_.text_embed_dim,
                     "text_embed_dim");
  }

  VideoPlan plan(const VideoRequest& r) const override {
    const int s = vae_facts().spatial_factor();
    const int temporal = vae_facts().temporal_factor();
    refuse_named_sizes(r);
    VideoPlan p;
    p.prompt = r.prompt;
    p.negative_prompt = r.negative_prompt;
    p.steps = r.steps.value_or(50);
    p.guidance = r.guidance.value_or(6.0);
    p.cfg = p.guidance > 1.0;
    p.dynamic_cfg = r.dynamic_cfg;
    p.eta = r.eta;
    p.height = r.height.value_or(facts_.sample_height * s);
    p.width = r.width.value_or(facts_.sample_width * s);
    p.frames = r.frames.value_or(facts_.sample_frames);
    p.text_length = r.max_sequence_length.value_or(facts_.max_text_seq_length);
    check_request(p);

    check_size(p, s, facts_.patch_size);
    if (facts_.learned_positions && (p.height != facts_.sample_height * s || p.width != facts_.sample_width * s))
      fail("size ", p.width, "x", p.height,
           ": this transformer's learned positional embeddings only cover its sample size ", facts_.sample_width * s,
           "x", facts_.sample_height * s);
    if (!valid_frames(p.frames)) {
      int below = p.frames - 1, above = p.frames + 1;
      while (below > 0 && !valid_frames(below)) --below;
      while (!valid_frames(above) && above < p.frames + 1000) ++above;
      fail("frames ", p.frames, ": the CogVideoX VAE decodes ", temporal,
           "x-compressed latent frames in pairs and cannot make this count; the nearest it makes are ",
           below > 0 ? cat(below, " and ") : std::string(), above);
    }
    if (p.text_length < 1) fail("max_sequence_length ", p.text_length, ": must be >= 1");
    if ((!facts_.rotary || facts_.learned_positions) && p.text_length != facts_.max_text_seq_length)
      fail("max_sequence_length ", p.text_length, ": this transformer's positional embeddings are built for ",
           facts_.max_text_seq_length, " text tokens (max_text_seq_length in its config.json)");

    const int64_t latent_frames = (p.frames - 1) / temporal + 1;
    const int pt = facts_.patch_size_t;
    p.padding_frames = pt > 0 && latent_frames % pt != 0 ? pt - latent_frames % pt : 0;
    p.latents = {1, latent_frames + p.padding_frames, facts_.in_channels, p.height / s, p.width / s};
    return p;
  }

  PromptEmbeddings encode_prompt(const VideoPlan& plan) override {
    PromptEmbeddings e;
    const std::string limit = "max_sequence_length";
    e.prompt = encode_text(plan.prompt, plan.text_length, false, "prompt", limit, &e.warnings);
    if (plan.cfg)
      e.negative = encode_text(plan.negative_prompt, plan.text_length, false, "negative prompt", limit, &e.warnings);
    return e;
  }

  bool tiles(const VideoPlan& plan, TilingChoice tiling) const override {
    if (tiling != TilingChoice::automatic) return tiling == TilingChoice::on;
    return int64_t(plan.height) * plan.width * int64_t(dtype_size(opts_.dtype)) > kAutoTileBytes;
  }

  Tensor decode(const VideoPlan& plan, const Tensor& latents, TilingChoice tiling) override {
    if (latents.shape() != plan.latents)
      fail("CogVideoXPipeline: latents ", latents.desc(), " do not have the plan's shape ", shape_str(plan.latents));
    Tensor x = plan.padding_frames ? ops::slice(latents, 1, plan.padding_frames, latents.dim(1)) : latents;
    x = ops::permute(x, {0, 2, 1, 3, 4});  // [1, F, C, h, w] -> [1, C, F, h, w]
    return postprocess_video(vae().decode_video(x, decode_options(plan, tiling)));  // from [1, C, F, H, W]
  }

  MemoryEstimate::Phase decode_memory(const VideoPlan& plan, TilingChoice tiling) const override {
    return vae_decode_memory(plan, plan.latents[1] - plan.padding_frames, decode_options(plan, tiling));
  }

 protected:
  // diffusers' use_dynamic_cfg formula, which takes the timestep's value (not
  // the step index) as its progress variable.
  double guidance_at(const VideoPlan& plan, int, double t) const override {
    if (!plan.dynamic_cfg) return plan.guidance;
    const double n = plan.steps;
    return 1 + plan.guidance * ((1 - std::cos(std::numbers::pi * std::pow((n - t) / n, 5.0))) / 2);
  }

  // `latents = latents.to(prompt_embeds.dtype)` after every step.
  Tensor keep_latents(const Tensor& latents) const override {
    return opts_.dtype == DType::f32 ? latents : latents.to(opts_.dtype).to(DType::f32);
  }

 private:
  VaeDecodeOptions decode_options(const VideoPlan& plan, TilingChoice tiling) const {
    VaeDecodeOptions o;
    o.tiled = tiles(plan, tiling);
    return o;
  }

  // Whether the VAE turns the latent frames for `frames` back into exactly `frames`.
  bool valid_frames(int frames) const {
    const int temporal = vae_facts().temporal_factor();
    if (frames < 1 || (frames - 1) % temporal != 0) return false;
    return vae_facts().decoded_frames((frames - 1) / temporal + 1) == frames;
  }

  CogVideoXConfig facts_;  // the transformer's
};

}  // namespace

std::unique_ptr<VideoPipeline> make_cogvideox_pipeline(PipelineParts parts, const LoadOptions& opts) {
  return std::make_unique<CogVideoXPipeline>(std::move(parts), opts);
}

PAB_REGISTER(PipelineEntry, "CogVideoXPipeline", {make_cogvideox_pipeline});

}  // namespace pab
