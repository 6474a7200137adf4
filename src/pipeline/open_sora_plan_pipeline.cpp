// OpenSoraPlanPipeline: Open-Sora-Plan v1.1 and v1.2 text-to-video as the
// original PAB code runs them (VideoSys 4cce477,
// pipelines/open_sora_plan/pipeline_open_sora_plan.py, generate with its
// defaults). The transformer's class picks the version:
//
//   v1.1  LatteT2V, CausalVAEModel v1.1, T5 (DeepFloyd/t5-v1_1-xxl), PNDMScheduler;
//         the prompt tokenized to 300 tokens and encoded with its mask, then the
//         prompt's and the negative prompt's embeddings both cut to the prompt's
//         token count (mask_feature); no mask reaches the transformer.
//   v1.2  OpenSoraT2V, CausalVAEModel v1.2, mT5 (google/mt5-xxl),
//         EulerAncestralDiscreteScheduler; both texts tokenized to 512 tokens
//         (max_sequence_length) and each entry of the CFG batch attends to its
//         own text's tokens.
//
// Both: the prompt and the negative prompt (default "") cleaned twice by
// DeepFloyd IF's _clean_caption (clean_caption=True); the CFG batch
// [negative, prompt] with diffusers' guidance formula; the learned-sigma
// channels dropped before the step (when out_channels is twice in_channels);
// latents [1, 4, (frames - 1) / 4 + 1, H / 8, W / 8] times the scheduler's
// init_noise_sigma; the CausalVAE divides by 0.18215 and decodes with the
// tiles the pipeline sets (enable_tiling: 64 latents a side, chunks of 8
// latent frames); videos at 24 fps. PNDM evaluates the model n + 9 times for n
// steps (its Runge-Kutta warm-up); VideoSys's PAB counts those calls modulo n.
//
// Sizes: the original derives the size from the transformer's sample_size
// (x 8) and the frame count from the checkpoint's subfolder name (65x512x512,
// 29x480p: the transformer's latent frames, x 4, + 1); those are the defaults
// here. v1.1's positional tables fix both; v1.2 (rotary positions) takes
// other sizes and frame counts of the same form.
#include "backend/ops.h"
#include "core/registry.h"
#include "io/model_folder.h"
#include "models/open_sora_plan.h"
#include "models/vae_causal.h"
#include "pipeline/assemble.h"
#include "pipeline/prompt_text.h"
#include "pipeline/video_pipeline.h"

namespace pab {

namespace {

constexpr int64_t kV110TextLength = 300;  // encode_prompt's max_length
constexpr int64_t kV120TextLength = 512;  // generate's max_sequence_length
constexpr double kFps = 24;               // save_video's
// Vocabularies are padded to a multiple of 128 past the tokenizer's pieces
// (T5: 32,128 for 32,100; mT5: 250,112 for 250,100).
constexpr int64_t kVocabPadding = 128;

class OpenSoraPlanPipeline final : public VideoPipeline {
 public:
  OpenSoraPlanPipeline(PipelineParts parts, const LoadOptions& opts) : VideoPipeline(std::move(parts), opts) {
    if (transformer_class_ != "LatteT2V" && transformer_class_ != "OpenSoraT2V")
      fail(parts_.transformer.config.where(),
           ": OpenSoraPlanPipeline needs a LatteT2V (v1.1) or OpenSoraT2V (v1.2) transformer, got ",
           transformer_class_);
    facts_ = open_sora_plan_facts(parts_.transformer.config, transformer_class_);
    check_components(transformer_class_, VaeKind::causal_video, facts_.in_channels, facts_.caption_channels,
                     "caption_channels");
    const char* version = facts_.v120 ? "v1.2" : "v1.1";
    if (vae_class_ != "CausalVAEModel")
      fail(parts_.vae.config.where(), ": Open-Sora-Plan ", version, " decodes with its CausalVAEModel, got ",
           vae_class_);
    const CausalVaeVersion vae_version = CausalVae::config_from_json(parts_.vae.config).version;
    if ((vae_version == CausalVaeVersion::v120) != facts_.v120)
      fail(parts_.vae.config.where(), ": a CausalVAEModel of Open-Sora-Plan ",
           vae_version == CausalVaeVersion::v120 ? "v1.2" : "v1.1", " with a ", version, " transformer (",
           transformer_class_, "); each release decodes with its own VAE");
    if (parts_.text_encoder) check_text_encoder(version);
  }

  double default_fps() const override { return kFps; }

  VideoPlan plan(const VideoRequest& r) const override {
    if (r.dynamic_cfg) fail("dynamic CFG is a CogVideoXPipeline option; OpenSoraPlanPipeline uses a fixed guidance");
    if (r.max_sequence_length && (!facts_.v120 || *r.max_sequence_length < 1))
      fail("max_sequence_length ", *r.max_sequence_length,
           facts_.v120 ? ": at least 1 token" : ": Open-Sora-Plan v1.1 encodes prompts as 300 tokens");
    if (r.eta != 0 && config_class_name_or(parts_.scheduler) != "DDIMScheduler")
      fail("eta ", r.eta, ": ", config_class_name_or(parts_.scheduler), " takes no eta (DDIMScheduler's)");
    if (facts_.v120 && !r.mask_feature)
      fail("mask_feature: Open-Sora-Plan v1.2 masks its texts in the transformer; it does not cut them");
    refuse_named_sizes(r);

    const int s = vae_facts().spatial_factor(), tf = vae_facts().temporal_factor();
    VideoPlan p;
    p.prompt = r.prompt;
    p.negative_prompt = r.negative_prompt;
    p.steps = r.steps.value_or(facts_.v120 ? 100 : 150);  // the original's sampling commands
    p.guidance = r.guidance.value_or(7.5);
    p.cfg = p.guidance > 1.0;
    p.mask_feature = r.mask_feature;
    p.eta = r.eta;
    p.text_length = int(facts_.v120 ? r.max_sequence_length.value_or(kV120TextLength) : kV110TextLength);
    p.height = r.height.value_or(facts_.sample_h * s);
    p.width = r.width.value_or(facts_.sample_w * s);
    const int default_frames = (facts_.latent_frames - 1) * tf + 1;
    p.frames = r.frames.value_or(default_frames);
    check_request(p);
    check_size(p, s, facts_.patch_size);

    // The VAE decodes 1 + tf * k frames; the original crops what it decodes to the count asked.
    if (p.frames < 1 || (p.frames - 1) % tf != 0)
      fail("frames ", p.frames, ": Open-Sora-Plan makes 1 + ", tf, " x k frames (its VAE's ", tf,
           "x time compression), e.g. ", default_frames);
    const int latent_frames = (p.frames - 1) / tf + 1;
    if (!facts_.v120) {
      // LatteT2V's positional tables are made for its sample_size and video_length.
      if (latent_frames != facts_.latent_frames)
        fail("frames ", p.frames, ": this LatteT2V's temporal positions cover ", facts_.latent_frames,
             " latent frames (video_length in its config.json), so it makes ", default_frames, " frames");
      if (p.height != facts_.sample_h * s || p.width != facts_.sample_w * s)
        fail("size ", p.height, "x", p.width, ": this LatteT2V's patch positions are made for ",
             facts_.sample_h * s, "x", facts_.sample_w * s, " (sample_size in its config.json)");
    }
    p.latents = {1, facts_.in_channels, latent_frames, p.height / s, p.width / s};
    return p;
  }

  PromptEmbeddings encode_prompt(const VideoPlan& plan) override {
    PromptEmbeddings e;
    const std::string prompt = open_sora_plan_text_preprocessing(plan.prompt);
    const std::string negative = open_sora_plan_text_preprocessing(plan.negative_prompt);
    const int64_t length = plan.text_length;
    int64_t tokens = 0, negative_tokens = 0;
    e.prompt = encode_text(prompt, length, true, "prompt", cat("Open-Sora-Plan's limit of ", length, " tokens"),
                           &e.warnings, &tokens);  // [1, length, D]
    // The original does not warn about a truncated negative prompt.
    if (plan.cfg) e.negative = encode_text(negative, length, true, "", "", nullptr, &negative_tokens);
    if (facts_.v120) {
      e.mask = token_mask(tokens, length);
      if (plan.cfg) e.negative_mask = token_mask(negative_tokens, length);
    } else if (plan.mask_feature) {  // mask_text_embeddings: both cut to the prompt's tokens
      e.prompt = ops::slice(e.prompt, 1, 0, tokens);
      if (plan.cfg) e.negative = ops::slice(e.negative, 1, 0, tokens);
    }
    return e;
  }

  bool tiles(const VideoPlan& plan, TilingChoice tiling) const override {
    if (tiling == TilingChoice::off) return false;
    const CausalVaeTiling t;
    return plan.latents[2] > t.tile_latent_min_size_t || plan.latents[3] > t.tile_latent_min_size ||
           plan.latents[4] > t.tile_latent_min_size;
  }

  Tensor decode(const VideoPlan& plan, const Tensor& latents, TilingChoice tiling) override {
    if (latents.shape() != plan.latents)
      fail("OpenSoraPlanPipeline: latents ", latents.desc(), " do not have the plan's shape ",
           shape_str(plan.latents));
    Tensor video = vae().decode_video(latents, decode_options(tiling));  // [1, 3, F, H, W]
    // video[:, :num_frames, :height, :width]
    video = ops::slice(video, 2, 0, std::min<int64_t>(plan.frames, video.dim(2)));
    video = ops::slice(video, 3, 0, std::min<int64_t>(plan.height, video.dim(3)));
    video = ops::slice(video, 4, 0, std::min<int64_t>(plan.width, video.dim(4)));
    return postprocess_video(video);
  }

 protected:
  double guidance_at(const VideoPlan& plan, int, double) const override { return plan.guidance; }

  // noise_pred.chunk(2, dim=1)[0] where the model predicts sigma too.
  Tensor scheduler_input(const Tensor& guided) const override {
    if (facts_.out_channels / 2 != facts_.in_channels) return guided;
    return ops::slice(guided, 1, 0, facts_.in_channels);
  }

  MemoryEstimate::Phase decode_memory(const VideoPlan& plan, TilingChoice tiling) const override {
    return vae_decode_memory(plan, plan.latents[2], decode_options(tiling));
  }

 private:
  // The original loads T5 for v1.1 and mT5 for v1.2, each with its own
  // tokenizer; a tokenizer of the other model is refused before any weight loads.
  void check_text_encoder(const char* version) const {
    const std::string encoder = parts_.text_encoder->class_name.empty()
                                    ? config_class_name(parts_.text_encoder->config)
                                    : parts_.text_encoder->class_name;
    const char* expected = facts_.v120 ? "MT5EncoderModel" : "T5EncoderModel";
    if (encoder != expected)
      fail(parts_.text_encoder->config.where(), ": Open-Sora-Plan ", version, " encodes prompts with ", expected,
           ", got ", encoder);
    if (!parts_.tokenizer) return;
    const int64_t pieces = tokenizer().vocab_size(), vocab = text_encoder_facts_->vocab_size();
    if (pieces > vocab || pieces <= vocab - kVocabPadding)
      fail(parts_.where, ": the tokenizer has ", pieces, " pieces and the text encoder (", expected, ") a vocabulary of ",
           vocab, ": a tokenizer of another model");
  }

  static VaeDecodeOptions decode_options(TilingChoice tiling) {
    VaeDecodeOptions o;
    o.tiled = tiling != TilingChoice::off;  // generate enables tiling
    return o;
  }
  static std::string config_class_name_or(const JsonConfig& j) { return j.get_or<std::string>("_class_name", ""); }

  OpenSoraPlanFacts facts_;  // the transformer's
};

std::unique_ptr<VideoPipeline> make_open_sora_plan_pipeline(PipelineParts parts, const LoadOptions& opts) {
  return std::make_unique<OpenSoraPlanPipeline>(std::move(parts), opts);
}

}  // namespace

PAB_REGISTER(PipelineEntry, "OpenSoraPlanPipeline", {make_open_sora_plan_pipeline});

// LanguageBind/Open-Sora-Plan-v1.1.0 and -v1.2.0 hold one transformer per
// subfolder (65x512x512, 221x512x512; 29x480p, 93x480p, 29x720p, 93x720p)
// beside vae/; the schedulers are the ones generate builds (their defaults).
PAB_REGISTER(AssemblyRecipe, "open-sora-plan-1.1",
             {"OpenSoraPlanPipeline",
              "Open-Sora-Plan v1.1: --transformer (a subfolder of LanguageBind/Open-Sora-Plan-v1.1.0, e.g. "
              "65x512x512), --vae (its vae), --text-encoder (DeepFloyd/t5-v1_1-xxl, its tokenizer beside it)",
              {{"transformer", "videosys", {"LatteT2V"}, "LanguageBind/Open-Sora-Plan-v1.1.0"},
               {"vae", "videosys", {"CausalVAEModel"}, "LanguageBind/Open-Sora-Plan-v1.1.0"},
               {"text_encoder", "transformers", {"T5EncoderModel"}, "DeepFloyd/t5-v1_1-xxl"}},
              "T5Tokenizer",
              {{"_class_name", "PNDMScheduler"}}});
PAB_REGISTER(AssemblyRecipe, "open-sora-plan-1.2",
             {"OpenSoraPlanPipeline",
              "Open-Sora-Plan v1.2: --transformer (a subfolder of LanguageBind/Open-Sora-Plan-v1.2.0, e.g. "
              "29x480p), --vae (its vae), --text-encoder (google/mt5-xxl, its tokenizer beside it)",
              {{"transformer", "videosys", {"OpenSoraT2V"}, "LanguageBind/Open-Sora-Plan-v1.2.0"},
               {"vae", "videosys", {"CausalVAEModel"}, "LanguageBind/Open-Sora-Plan-v1.2.0"},
               {"text_encoder", "transformers", {"MT5EncoderModel"}, "google/mt5-xxl"}},
              "T5Tokenizer",
              {{"_class_name", "EulerAncestralDiscreteScheduler"}}});

}  // namespace pab
