// OpenSoraPipeline: Open-Sora 1.2 text-to-video as the original PAB code
// runs it (VideoSys 4cce477, pipelines/open_sora/pipeline_open_sora.py,
// OpenSoraPipeline.generate with its defaults, one loop, no reference frames):
//
// - the prompt gets " aesthetic score: 6.5." (append_score_to_prompts, aes
//   6.5) and is cleaned twice (text_preprocessing), tokenized to 300 tokens
//   and encoded by T5 with its attention mask;
// - the unconditional branch is the transformer's learned null caption
//   (y_embedder.y_embedding); the CFG batch is [conditional, null] and both
//   entries attend to the prompt's tokens only (STDiT3 repeats the mask);
//   there is no negative prompt;
// - STDiT3 is conditioned on fps 24 and the table size (e.g. 480x854), the
//   RFlow schedule shifted by that size and the frame count;
// - latents [1, 4, latent frames, H / 8, W / 8], the VAE's latent frames of
//   the video (VideoAutoencoderPipeline.get_latent_size), floored sizes: a
//   width of 854 decodes 848 columns, as the original's;
// - v = uncond + g * (cond - uncond) on the first 4 of STDiT3's 8 output
//   channels, z += v * dt (RFlowScheduler), and the VAE decodes the
//   requested frame count;
// - in bf16 (f16) STDiT3 and PAB see each timestep in that dtype, as the
//   original casts it (PAB compares int(t.to(dtype))): the published MLP
//   broadcast's keys 864 and 788 are such timesteps of the default run
//   (480p 9:16, 51 frames, 30 steps in bf16); in f32 they are 863 and 787.
//
// Sizes: --resolution (144p, 240p, 360p, 480p, 720p) with --aspect-ratio
// (the original's 17 ratios; default 9:16), as get_image_size maps them, or
// --height/--width; lengths: --frames, or --duration as get_num_frames maps
// it (2s = 51 frames, 4s = 102, 8s = 204, 16s = 408).
//
// The folder: model_index.json naming OpenSoraPipeline with an STDiT3
// transformer, a VideoAutoencoderPipeline VAE, a T5 text encoder and
// tokenizer and an RFlowScheduler (`pab assemble` writes one from the hub's
// folders); scheduler_config.json's num_sampling_steps and cfg_scale are the
// defaults of --steps and --guidance (30 and 7 in VideoSys's OpenSoraConfig).
#include <array>
#include <cmath>
#include <cstring>

#include "backend/ops.h"
#include "core/dtype.h"
#include "core/registry.h"
#include "models/open_sora.h"
#include "pipeline/assemble.h"
#include "pipeline/prompt_text.h"
#include "pipeline/video_pipeline.h"

namespace pab {

namespace {

constexpr int64_t kTextLength = 300;  // get_text_embeddings' max_length
constexpr double kFps = 24;           // generate's fps
constexpr double kAesthetic = 6.5;    // generate's aes

struct SizeEntry {
  const char* ratio;  // the key of ASPECT_RATIO_MAP's values
  int height, width;
};

// data_process.py's ASPECT_RATIO_MAP: the names users give, H:W.
constexpr std::array<std::pair<const char*, const char*>, 17> kAspectRatios = {{
    {"3:8", "0.38"},
    {"9:21", "0.43"},
    {"12:25", "0.48"},
    {"1:2", "0.50"},
    {"9:17", "0.53"},
    {"27:50", "0.54"},
    {"9:16", "0.56"},
    {"5:8", "0.62"},
    {"2:3", "0.67"},
    {"3:4", "0.75"},
    {"1:1", "1.00"},
    {"4:3", "1.33"},
    {"3:2", "1.50"},
    {"16:9", "1.78"},
    {"17:9", "1.89"},
    {"2:1", "2.00"},
    {"50:27", "2.08"},
}};

// data_process.py's ASPECT_RATIO_144P ... _720P: (height, width) per ratio.
struct Resolution {
  const char* name;
  std::array<SizeEntry, 17> sizes;
};
const Resolution kResolutions[] = {
    {"144p",
     {{{"0.38", 117, 312},
       {"0.43", 125, 291},
       {"0.48", 133, 277},
       {"0.50", 135, 270},
       {"0.53", 139, 262},
       {"0.54", 141, 260},
       {"0.56", 144, 256},
       {"0.62", 151, 241},
       {"0.67", 156, 234},
       {"0.75", 166, 221},
       {"1.00", 192, 192},
       {"1.33", 221, 165},
       {"1.50", 235, 156},
       {"1.78", 256, 144},
       {"1.89", 263, 139},
       {"2.00", 271, 135},
       {"2.08", 277, 132}}}},
    {"240p",
     {{{"0.38", 196, 522},
       {"0.43", 210, 490},
       {"0.48", 222, 462},
       {"0.50", 226, 452},
       {"0.53", 232, 438},
       {"0.54", 236, 436},
       {"0.56", 240, 426},
       {"0.62", 252, 404},
       {"0.67", 262, 393},
       {"0.75", 276, 368},
       {"1.00", 320, 320},
       {"1.33", 370, 278},
       {"1.50", 392, 262},
       {"1.78", 426, 240},
       {"1.89", 440, 232},
       {"2.00", 452, 226},
       {"2.08", 462, 222}}}},
    {"360p",
     {{{"0.38", 294, 784},
       {"0.43", 314, 732},
       {"0.48", 332, 692},
       {"0.50", 340, 680},
       {"0.53", 350, 662},
       {"0.54", 352, 652},
       {"0.56", 360, 640},
       {"0.62", 380, 608},
       {"0.67", 392, 588},
       {"0.75", 416, 554},
       {"1.00", 480, 480},
       {"1.33", 554, 416},
       {"1.50", 588, 392},
       {"1.78", 640, 360},
       {"1.89", 660, 350},
       {"2.00", 678, 340},
       {"2.08", 692, 332}}}},
    {"480p",
     {{{"0.38", 392, 1046},
       {"0.43", 420, 980},
       {"0.48", 444, 925},
       {"0.50", 452, 904},
       {"0.53", 466, 880},
       {"0.54", 470, 870},
       {"0.56", 480, 854},
       {"0.62", 506, 810},
       {"0.67", 522, 784},
       {"0.75", 554, 738},
       {"1.00", 640, 640},
       {"1.33", 740, 555},
       {"1.50", 784, 522},
       {"1.78", 854, 480},
       {"1.89", 880, 466},
       {"2.00", 906, 454},
       {"2.08", 924, 444}}}},
    {"720p",
     {{{"0.38", 588, 1568},
       {"0.43", 628, 1466},
       {"0.48", 666, 1388},
       {"0.50", 678, 1356},
       {"0.53", 698, 1318},
       {"0.54", 706, 1306},
       {"0.56", 720, 1280},
       {"0.62", 758, 1212},
       {"0.67", 784, 1176},
       {"0.75", 832, 1110},
       {"1.00", 960, 960},
       {"1.33", 1108, 832},
       {"1.50", 1176, 784},
       {"1.78", 1280, 720},
       {"1.89", 1320, 698},
       {"2.00", 1358, 680},
       {"2.08", 1386, 666}}}},
};

// get_num_frames' NUM_FRAMES_MAP.
constexpr std::array<std::pair<const char*, int>, 10> kDurations = {{
    {"1x", 51},
    {"2x", 102},
    {"4x", 204},
    {"8x", 408},
    {"16x", 816},
    {"2s", 51},
    {"4s", 102},
    {"8s", 204},
    {"16s", 408},
    {"32s", 816},
}};

template <class Table>
std::string names_of(const Table& t) {
  std::string out;
  for (const auto& e : t) out += (out.empty() ? "" : ", ") + std::string(e.first);
  return out;
}

// get_image_size(resolution, aspect_ratio).
std::pair<int, int> table_size(const std::string& resolution, const std::string& aspect) {
  const char* ratio = nullptr;
  for (const auto& [name, key] : kAspectRatios)
    if (aspect == name) ratio = key;
  if (!ratio) fail("aspect ratio '", aspect, "': Open-Sora offers ", names_of(kAspectRatios));
  std::string known;
  for (const Resolution& r : kResolutions) {
    known += (known.empty() ? "" : ", ") + std::string(r.name);
    if (resolution != r.name) continue;
    for (const SizeEntry& e : r.sizes)
      if (std::strcmp(e.ratio, ratio) == 0) return {e.height, e.width};
  }
  fail("resolution '", resolution, "': Open-Sora 1.2 offers ", known);
}

class OpenSoraPipeline final : public VideoPipeline {
 public:
  OpenSoraPipeline(PipelineParts parts, const LoadOptions& opts)
      : VideoPipeline(std::move(parts), opts), facts_(parse_stdit3_config(parts_.transformer.config)) {
    check_components("STDiT3", VaeKind::chunked_video, facts_.in_channels, facts_.caption_channels, "caption_channels");
    // The null caption is concatenated with prompts of 300 tokens.
    if (facts_.max_text_len != kTextLength)
      parts_.transformer.config.unsupported("model_max_length",
                                            cat("OpenSoraPipeline encodes prompts as ", kTextLength,
                                                " tokens, and the null caption (y_embedding) must have as many"));
    if (facts_.out_channels != 2 * facts_.in_channels)
      parts_.transformer.config.unsupported("pred_sigma", "OpenSoraPipeline expects learned sigma (true)");
    const JsonConfig& sc = parts_.scheduler;
    if (config_class_name_or(sc) != "RFlowScheduler")
      fail(sc.where(), ": OpenSoraPipeline samples with RFlowScheduler, got ", config_class_name_or(sc));
    default_steps_ = int(sc.get_size("num_sampling_steps", 30));
    default_guidance_ = sc.get_or<double>("cfg_scale", 7.0);
  }

  double default_fps() const override { return kFps; }  // save_video's fps

  VideoPlan plan(const VideoRequest& r) const override {
    if (r.dynamic_cfg) fail("dynamic CFG is a CogVideoXPipeline option; OpenSoraPipeline uses a fixed guidance scale");
    if (r.max_sequence_length && *r.max_sequence_length != kTextLength)
      fail("max_sequence_length ", *r.max_sequence_length, ": OpenSoraPipeline encodes prompts as ", kTextLength,
           " tokens");
    if (!r.negative_prompt.empty())
      fail(
          "negative prompt: Open-Sora's unconditional branch is the model's learned null caption; it takes no "
          "negative prompt");
    if (r.eta != 0) fail("eta: RFlow sampling is deterministic; it takes no eta");
    // Reference frames and loop prompts are image/video conditioning, which pab does not run.
    if (r.prompt.find('{') != std::string::npos)
      fail(
          "prompt: Open-Sora reads '{...}' in a prompt as reference frames to condition on, which pab does not "
          "support; remove the braces");
    if (r.prompt.rfind("|0|", 0) == 0)
      fail("prompt: '|0|...' prompts are Open-Sora's multi-loop generation, which pab does not support");

    VideoPlan p;
    p.prompt = r.prompt;
    p.steps = r.steps.value_or(default_steps_);
    p.guidance = r.guidance.value_or(default_guidance_);
    p.cfg = p.guidance > 1.0;
    p.text_length = int(kTextLength);

    int height = 0, width = 0;
    if (r.resolution || r.aspect_ratio) {
      if (r.height || r.width) fail("height/width: give either a resolution (with an aspect ratio) or a size");
      std::tie(height, width) = table_size(r.resolution.value_or("480p"), r.aspect_ratio.value_or("9:16"));
    } else {
      // generate's defaults: 480p, 9:16.
      std::tie(height, width) = table_size("480p", "9:16");
      height = r.height.value_or(height);
      width = r.width.value_or(width);
    }
    const int s = vae_facts().spatial_factor();
    for (auto [what, v] : {std::pair{"height", height}, {"width", width}})
      if (v < s) fail(what, " ", v, ": must be at least ", s, " (one latent pixel of the ", s, "x VAE)");
    p.condition_height = height;
    p.condition_width = width;
    p.height = height / s * s;  // the VAE's latents floor the size
    p.width = width / s * s;

    if (r.duration) {
      if (r.frames) fail("frames: give either a frame count or a duration");
      bool found = false;
      for (const auto& [name, n] : kDurations)
        if (*r.duration == name) p.frames = n, found = true;
      if (!found) fail("duration '", *r.duration, "': Open-Sora offers ", names_of(kDurations));
    } else {
      p.frames = r.frames.value_or(51);  // generate's default
    }
    if (p.frames < 1) fail("frames ", p.frames, ": at least 1");
    check_request(p);
    p.latents = {1, facts_.in_channels, vae_facts().latent_frames(p.frames), p.height / s, p.width / s};
    return p;
  }

  PromptEmbeddings encode_prompt(const VideoPlan& plan) override {
    PromptEmbeddings e;
    std::string text = plan.prompt;
    if (text.find("aesthetic score:") == std::string::npos) text += cat(" aesthetic score: ", kAesthetic, ".");
    int64_t tokens = 0;
    e.prompt = encode_text(open_sora_text_preprocessing(text), kTextLength, true, "prompt", "Open-Sora's limit",
                           &e.warnings, &tokens);  // [1, 300, D]
    e.mask = token_mask(tokens, kTextLength);
    return e;
  }

  bool tiles(const VideoPlan&, TilingChoice) const override { return false; }

  Tensor decode(const VideoPlan& plan, const Tensor& latents, TilingChoice) override {
    if (latents.shape() != plan.latents)
      fail("OpenSoraPipeline: latents ", latents.desc(), " do not have the plan's shape ", shape_str(plan.latents));
    return postprocess_video(vae().decode_video(latents, decode_options(plan)));  // from [1, 3, F, H, W]
  }

 protected:
  double guidance_at(const VideoPlan& plan, int, double) const override { return plan.guidance; }
  bool conditional_first() const override { return true; }
  Tensor unconditional_text(const DiffusionTransformer& model, const PromptEmbeddings&) const override {
    const Tensor null = model.null_text();  // [300, D]
    return null.reshape({1, null.dim(0), null.dim(1)});
  }
  double model_timestep(double t) const override {
    switch (opts_.dtype) {
      case DType::bf16:
        return bf16_to_f32(f32_to_bf16(float(t)));
      case DType::f16:
        return f16_to_f32(f32_to_f16(float(t)));
      default:
        return float(t);
    }
  }
  void add_conditioning(const VideoPlan& plan, TransformerInputs& in) const override {
    in.fps = kFps;
    in.height_px = plan.condition_height;
    in.width_px = plan.condition_width;
  }
  // output.chunk(2, dim=1)[0]: RFlow steps with the velocity, not the variance channels.
  Tensor scheduler_input(const Tensor& guided) const override { return ops::slice(guided, 1, 0, facts_.in_channels); }

  MemoryEstimate::Phase decode_memory(const VideoPlan& plan, TilingChoice) const override {
    return vae_decode_memory(plan, plan.latents[2], decode_options(plan));
  }

 private:
  static VaeDecodeOptions decode_options(const VideoPlan& plan) {
    VaeDecodeOptions o;
    o.frames = plan.frames;
    return o;
  }
  static std::string config_class_name_or(const JsonConfig& j) { return j.get_or<std::string>("_class_name", ""); }

  StDiT3Config facts_;  // the transformer's
  int default_steps_ = 30;
  double default_guidance_ = 7;
};

std::unique_ptr<VideoPipeline> make_open_sora_pipeline(PipelineParts parts, const LoadOptions& opts) {
  return std::make_unique<OpenSoraPipeline>(std::move(parts), opts);
}

}  // namespace

PAB_REGISTER(PipelineEntry, "OpenSoraPipeline", {make_open_sora_pipeline});

// VideoSys's OpenSoraConfig: RFLOW(use_timestep_transform=True, num_sampling_steps=30, cfg_scale=7.0).
PAB_REGISTER(AssemblyRecipe, "open-sora-1.2",
             {"OpenSoraPipeline",
              "Open-Sora 1.2: --transformer (hpcai-tech/OpenSora-STDiT-v3), --vae (hpcai-tech/OpenSora-VAE-v1.2), "
              "--text-encoder (DeepFloyd/t5-v1_1-xxl, its tokenizer beside it)",
              {{"transformer", "videosys", {"STDiT3"}, "hpcai-tech/OpenSora-STDiT-v3"},
               {"vae", "videosys", {"VideoAutoencoderPipeline"}, "hpcai-tech/OpenSora-VAE-v1.2"},
               {"text_encoder", "transformers", {"T5EncoderModel"}, "DeepFloyd/t5-v1_1-xxl"}},
              "T5Tokenizer",
              {{"_class_name", "RFlowScheduler"},
               {"num_sampling_steps", 30},
               {"cfg_scale", 7.0},
               {"use_timestep_transform", true}}});

}  // namespace pab
