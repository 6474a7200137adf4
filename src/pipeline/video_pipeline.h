// Text-to-video pipelines as diffusers runs them, chosen by model_index.json's
// `_class_name` (each pipeline file registers a PipelineEntry): CogVideoXPipeline (cogvideox_pipeline.cpp: CFG and
// dynamic CFG, CogVideoX 1.5's temporal padding, the DPM scheduler's previous x_0) and LattePipeline
// (latte_pipeline.cpp: 120-token masked prompts, learned-sigma channels dropped before the step, frame-by-frame
// decoding).
//
// A generation: plan(request) fills in defaults and checks every constraint
// (no weights loaded yet); encode_prompt loads the text encoder; denoise
// loads the transformer and runs the loop (batched CFG: one forward per step)
// with an optional cache policy; decode loads the VAE and returns the frames.
// Components load on first use and each has a release_*; generate_video
// releases each after its phase, so no two are held at once.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cache/site.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "models/text_encoder.h"
#include "models/transformer.h"
#include "models/vae.h"
#include "pipeline/memory_plan.h"
#include "pipeline/noise.h"
#include "pipeline/schedulers/scheduler.h"
#include "pipeline/tokenizer.h"

namespace pab {

// A model component: its configuration, where its weights come from, and
// the class model_index.json names for it (empty: the class its config
// declares, for parts made from configs alone).
struct ComponentSource {
  JsonConfig config{nlohmann::json::object(), ""};
  std::shared_ptr<const WeightSource> weights;
  std::string class_name = {};
};

// Everything a pipeline is made of. A folder gives all of it; a benchmark may
// leave out the tokenizer and text encoder and pass prompt embeddings itself.
struct PipelineParts {
  std::string pipeline_class;  // CogVideoXPipeline or LattePipeline
  std::string where;           // the folder, for messages
  ComponentSource transformer, vae;
  std::optional<ComponentSource> text_encoder;
  std::shared_ptr<const T5Tokenizer> tokenizer;
  JsonConfig scheduler{nlohmann::json::object(), ""};
};

// Reads a diffusers pipeline folder: model_index.json and the tokenizer,
// text_encoder, transformer, scheduler and vae folders; every config is
// parsed and every weights file opened (validated, not loaded). A missing
// component or file is an error naming model_index.json or the folder.
PipelineParts read_pipeline_folder(const std::string& dir);

enum class TilingChoice : uint8_t { automatic, on, off };

// What a caller asks for; unset values take the pipeline's defaults
// (diffusers' call defaults; sizes and frame counts from the model's configs).
struct VideoRequest {
  std::string prompt;
  std::string negative_prompt;  // diffusers' default: ""
  std::optional<int> steps, frames, height, width;
  std::optional<double> guidance;
  std::optional<int> max_sequence_length;  // CogVideoX: tokens per prompt
  bool dynamic_cfg = false;                // CogVideoX: use_dynamic_cfg
  bool mask_feature = true;                // Latte: cut the embeddings to the prompt's tokens
  double eta = 0;                          // DDIMScheduler's eta
  // Open-Sora: a named size ("480p") with an aspect ratio ("9:16"), and a
  // named length ("2s"), as its sampling offers them.
  std::optional<std::string> resolution, aspect_ratio, duration;
};

// A request with every default filled in and every constraint checked.
struct VideoPlan {
  std::string prompt, negative_prompt;
  int steps = 0, frames = 0, height = 0, width = 0;
  double guidance = 1;
  bool cfg = true;  // guidance > 1: the unconditional branch runs too (batch 2)
  bool dynamic_cfg = false, mask_feature = true;
  double eta = 0;
  int text_length = 0;         // tokens a prompt is padded or truncated to
  Shape latents;               // [1, ...] in the transformer's layout: what the generator draws
  int64_t padding_frames = 0;  // CogVideoX 1.5: latent frames added for the temporal patch, dropped before decoding
  // Open-Sora: the size the model is conditioned on and the schedule shifted
  // by (its table's, e.g. 480x854), where the frames come out at the VAE's
  // multiple below it (480x848); 0: height and width.
  int condition_height = 0, condition_width = 0;
  std::string describe() const;  // "9 frames 48x32, 50 steps, guidance 6"
};

struct PromptEmbeddings {
  Tensor prompt;                      // [1, L, D] on the compute device
  Tensor negative;                    // [1, L, D]; undefined without CFG or where the model has its own (null_text)
  Tensor mask;                        // optional [1, L] for the transformer's cross attention, 1 = a real token
  Tensor negative_mask;               // optional [1, L], the negative prompt's (without it, CFG's pair share `mask`)
  std::vector<std::string> warnings;  // truncated prompts, as diffusers warns
};

// After every step of the loop.
struct StepReport {
  int step = 0, steps = 0;  // the evaluation and their count (the scheduler's timesteps)
  double timestep = 0;
  double guidance = 1;              // the scale used (dynamic CFG changes it per step)
  double seconds = 0;               // of this step, the device synchronised
  const Tensor* latents = nullptr;  // after the step: f32 [1, ...] on the compute device
};
using StepCallback = std::function<void(const StepReport&)>;

struct DenoiseResult {
  Tensor latents;  // f32 [1, ...] after the last step, on the compute device
  std::vector<double> timesteps;
  CacheStats stats;  // what the policy did; empty without one
};

class VideoPipeline {
 public:
  // The pipeline model_index.json names (a registered PipelineEntry).
  static std::unique_ptr<VideoPipeline> open(const std::string& dir, const LoadOptions& opts);
  static std::unique_ptr<VideoPipeline> create(PipelineParts parts, const LoadOptions& opts);
  virtual ~VideoPipeline();

  const std::string& class_name() const { return parts_.pipeline_class; }
  // Where warnings of loading (unused checkpoint tensors, when allowed) go.
  void on_warning(std::function<void(const std::string&)> f) { opts_.on_warning = std::move(f); }
  const std::string& transformer_class() const { return transformer_class_; }
  const LoadOptions& load_options() const { return opts_; }
  Scheduler& scheduler() { return *scheduler_; }

  // The frame rate its videos are written at unless one is given (diffusers' export_to_video: 8).
  virtual double default_fps() const { return 8; }
  // Fills in defaults and checks the request against the model: frame count,
  // size, steps, text length. Fails with one line naming the constraint.
  virtual VideoPlan plan(const VideoRequest& request) const = 0;

  // The transformer's sites, from its config (nothing loaded).
  SiteLayout transformer_sites() const;
  // What the generation will hold in memory, phase by phase, from the
  // configs, the checkpoints' headers and the plan (memory_plan.h), with the
  // outputs of the `cached` site kinds held across steps.
  MemoryEstimate estimate_memory(const VideoPlan& plan, const std::vector<SiteKind>& cached, TilingChoice tiling) const;

  // The pipeline's encode_prompt: tokenize, encode, and for CFG the negative
  // prompt. Loads the text encoder on first use.
  virtual PromptEmbeddings encode_prompt(const VideoPlan& plan) = 0;
  // Frees the text encoder's weights (reloaded if encode_prompt runs again).
  void release_text_encoder() { text_encoder_.reset(); }

  // prepare_latents: one draw of plan.latents from `noise`, times the
  // scheduler's init_noise_sigma, as f32 on the compute device.
  Tensor initial_latents(const VideoPlan& plan, NoiseSource& noise) const;

  // The denoising loop from `latents` (f32 plan.latents). `cache` (may be
  // null) is reset before the loop and again on every exit, errors
  // included; `noise` feeds stochastic steps (DPM; DDIM with eta > 0).
  DenoiseResult denoise(const VideoPlan& plan, const PromptEmbeddings& embeds, Tensor latents, CachePolicy* cache,
                        NoiseSource* noise, const StepCallback& on_step = {});
  // The transformer, loaded on first use.
  DiffusionTransformer& transformer();
  void release_transformer() { transformer_.reset(); }

  // decode_latents and postprocessing: frames [F, C, H, W], f32 on the CPU,
  // (x / 2 + 0.5) clamped to [0, 1]. Loads the VAE on first use.
  virtual Tensor decode(const VideoPlan& plan, const Tensor& latents, TilingChoice tiling) = 0;
  // Whether decode tiles with this choice at the plan's size.
  virtual bool tiles(const VideoPlan& plan, TilingChoice tiling) const = 0;
  // Loads the VAE now (decode otherwise loads it on first use).
  void load_vae();
  void release_vae() { vae_.reset(); }

 protected:
  VideoPipeline(PipelineParts parts, const LoadOptions& opts);

  // The decode phase of estimate_memory: the VAE's weights, its activations
  // and the frames it returns.
  virtual MemoryEstimate::Phase decode_memory(const VideoPlan& plan, TilingChoice tiling) const = 0;

  // The guidance scale at step i (timestep t).
  virtual double guidance_at(const VideoPlan& plan, int i, double t) const = 0;
  // The scheduler's input from the guided model output (Latte drops its
  // learned-sigma channels), f32.
  virtual Tensor scheduler_input(const Tensor& guided) const { return guided; }
  // Latents as the pipeline keeps them between steps (CogVideoX rounds them to the compute dtype).
  virtual Tensor keep_latents(const Tensor& latents) const { return latents; }
  // The unconditional branch's text [1, L, D] for CFG: the negative prompt's
  // embeddings (Open-Sora: the transformer's learned null caption).
  virtual Tensor unconditional_text(const DiffusionTransformer& model, const PromptEmbeddings& embeds) const;
  // Whether the CFG batch is [conditional, unconditional] (Open-Sora) rather
  // than diffusers' [unconditional, conditional].
  virtual bool conditional_first() const { return false; }
  // The timestep the transformer and the cache policy see for schedule
  // timestep t (Open-Sora: t in the compute dtype, as STDiT3 casts it and
  // VideoSys's PAB reads int(t.to(dtype))).
  virtual double model_timestep(double t) const { return t; }
  // What else the transformer is given every step (Open-Sora: fps and the size).
  virtual void add_conditioning(const VideoPlan&, TransformerInputs&) const {}

  const T5Tokenizer& tokenizer() const;
  // The components as registered under the classes model_index.json names,
  // loaded on first use; their facts come from the configs alone.
  TextEncoder& text_encoder();
  const VideoVae& vae();
  const VaeFacts& vae_facts() const { return *vae_facts_; }
  // Tokenizes and encodes one prompt: last_hidden_state [1, length, D].
  // `mask` passes the attention mask to the encoder; `tokens` gets its sum.
  // A truncated text adds a warning (when `warnings` is given) naming `what`
  // and the limit, as diffusers warns.
  Tensor encode_text(const std::string& text, int64_t length, bool mask, const std::string& what,
                     const std::string& limit, std::vector<std::string>* warnings, int64_t* tokens = nullptr);

  // A cross-attention mask [1, length] (f32) of `tokens` real tokens, then padding.
  static Tensor token_mask(int64_t tokens, int64_t length);
  // Checks a request's common values: steps the scheduler can run, a finite guidance.
  void check_request(const VideoPlan& plan) const;
  // Fails if the request names a size or length (Open-Sora's resolution,
  // aspect ratio, duration): pipelines other than Open-Sora's take numbers.
  void refuse_named_sizes(const VideoRequest& r) const;
  // Fails unless the components fit: the transformer is `transformer_class`,
  // the VAE is of `vae_kind` with latent_channels equal to the transformer's
  // in_channels, and the text encoder's hidden size is its text width (named
  // `text_key` in the transformer's config).
  void check_components(const std::string& transformer_class, VaeKind vae_kind, int in_channels, int text_width,
                        const char* text_key) const;
  // Fails unless the plan's height and width are positive multiples of 8 and
  // of the VAE's scale times the transformer's patch size.
  static void check_size(const VideoPlan& plan, int vae_scale, int patch_size);
  // Decoded video [1, C, F, H, W] (any device or dtype) -> frames [F, C, H, W],
  // f32 on the CPU, (x * 0.5 + 0.5) clamped to [0, 1] as diffusers' postprocessing.
  static Tensor postprocess_video(const Tensor& video);
  // The decode phase of a memory estimate: the VAE's weights, decoding
  // `latent_frames` latent frames of the plan's size with `o`, and the f32
  // frames decode returns.
  MemoryEstimate::Phase vae_decode_memory(const VideoPlan& plan, int64_t latent_frames,
                                          const VaeDecodeOptions& o) const;

  PipelineParts parts_;
  LoadOptions opts_;
  std::string transformer_class_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<DiffusionTransformer> transformer_;
  std::string vae_class_;
  const VaeEntry* vae_entry_ = nullptr;
  std::unique_ptr<const VaeFacts> vae_facts_;
  std::unique_ptr<VideoVae> vae_;
  const TextEncoderEntry* text_encoder_entry_ = nullptr;  // null without a text encoder
  std::unique_ptr<const TextEncoderFacts> text_encoder_facts_;
  std::unique_ptr<TextEncoder> text_encoder_;
};

// The text encoder's part of a memory estimate: `weight_bytes` of weights
// and the encoding of prompts of `length` tokens.
MemoryEstimate::Phase text_memory(const TextEncoderFacts& encoder, uint64_t weight_bytes, int64_t length, DType dtype);
// The denoising loop's part of a memory estimate: `weight_bytes` of weights,
// one forward pass of `shape` (the CFG batch included), the outputs of every
// site of the `cached` kinds and the loop's latents.
MemoryEstimate::Phase denoise_memory(const JsonConfig& transformer, uint64_t weight_bytes, const ForwardShape& shape,
                                     const std::vector<SiteKind>& cached);

// A pipeline as it registers itself, in its own file, by the `_class_name`
// of model_index.json:
//   PAB_REGISTER(PipelineEntry, "LattePipeline", {make_latte_pipeline});
struct PipelineEntry {
  std::function<std::unique_ptr<VideoPipeline>(PipelineParts parts, const LoadOptions& opts)> make;
};

// A whole generation's progress, for a display.
struct GenerationEvents {
  std::function<void(const std::string&)> on_warning;
  // After each phase: "text" (prompt encoding), "denoise", "decode"; seconds with the device synchronised.
  std::function<void(const std::string& phase, double seconds)> on_phase;
  StepCallback on_step;
};

struct GeneratedVideo {
  Tensor frames;           // [F, C, H, W] f32 on the CPU, in [0, 1]
  Tensor initial_latents;  // f32 [1, ...] as drawn (after init_noise_sigma), on the CPU
  Tensor final_latents;    // f32 [1, ...] after the last step, on the CPU
  CacheStats stats;
  bool tiled = false;  // whether the VAE decoded in tiles
  double text_seconds = 0, denoise_seconds = 0, decode_seconds = 0;
  std::vector<std::string> warnings;
};

// Prompt to frames as the diffusers pipeline does with
// generator=torch.Generator("cpu").manual_seed(seed): the initial latents and
// any scheduler noise are successive draws of that generator. Each component
// is freed once its phase is done (the text encoder after encoding, the
// transformer after the loop, the VAE after decoding), so no two of them are
// held at once. `cache` may be null.
GeneratedVideo generate_video(VideoPipeline& pipe, const VideoPlan& plan, uint64_t seed, CachePolicy* cache,
                              TilingChoice tiling, const GenerationEvents& events = {});

}  // namespace pab
