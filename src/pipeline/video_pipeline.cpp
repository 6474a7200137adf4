// The parts every text-to-video pipeline shares (see video_pipeline.h):
// reading the folder, the text encoder and VAE by class name, the denoising
// loop with its cache policy, and the choice of pipeline by class name.
#include "pipeline/video_pipeline.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <numeric>
#include <sstream>

#include "backend/ops.h"
#include "core/registry.h"
#include "io/model_folder.h"

namespace pab {

namespace fs = std::filesystem;

namespace {

// A model component whose class model_index.json names: diffusers would build
// that class from the component's config, so one config.json declaring
// another class is refused with both names.
ComponentSource read_component(const ModelFolder& folder, const std::string& name) {
  const Component& c = folder.component(name);
  const fs::path config = fs::path(c.dir) / "config.json";
  if (!fs::is_regular_file(config)) fail(c.dir, ": the ", name, " folder has no config.json");
  JsonConfig json = JsonConfig::load(config.string());
  if (json.has("_class_name") || json.has("architectures")) {
    const std::string own = config_class_name(json);
    if (!c.class_name.empty() && own != c.class_name)
      fail(folder.index_path, ": key '", name, "' names ", c.class_name, " but ", config.string(), " is a ", own,
           "; one of the two is wrong");
  }
  return {std::move(json), std::make_shared<Checkpoint>(Checkpoint::open_dir(c.dir)), c.class_name};
}

// The registered entry of the class `component` is built as: the one
// model_index.json names, else the one its config declares. An unregistered
// class fails listing the registered ones. `cls` gets the class.
template <class Entry>
const Entry& component_entry(const PipelineParts& parts, const ComponentSource& c, const char* component,
                             const char* what, std::string* cls) {
  const bool by_index = !c.class_name.empty();
  *cls = by_index ? c.class_name : config_class_name(c.config);
  const auto& classes = Registry<Entry>::get();
  if (const Entry* e = classes.find(*cls)) return *e;
  fail(by_index ? cat(parts.where, "/model_index.json: key '", component, "'") : c.config.where(), ": unsupported ",
       what, " class '", *cls, "' (supported: ", classes.list(), ")");
}

constexpr const char* kTokenizerClasses[] = {"T5Tokenizer", "T5TokenizerFast"};

// Resets a cache policy when the loop ends, however it ends: cached outputs
// are freed and the next generation starts clean.
struct ResetOnExit {
  CachePolicy* policy;
  ~ResetOnExit() {
    if (policy) policy->reset();
  }
};

// What a schedule may depend on: the video's size in the compute dtype
// (RFlow's resolution- and length-dependent shift); each scheduler reads what it needs.
TimestepOptions timestep_options(const VideoPlan& plan, const LoadOptions& opts) {
  TimestepOptions t;
  t.height = plan.condition_height > 0 ? plan.condition_height : plan.height;
  t.width = plan.condition_width > 0 ? plan.condition_width : plan.width;
  t.frames = plan.frames;
  t.size_dtype = opts.dtype;
  return t;
}

}  // namespace

PipelineParts read_pipeline_folder(const std::string& dir) {
  ModelFolder folder = open_model_folder(dir);
  if (!folder.is_pipeline())
    fail(dir, ": not a pipeline folder (no model_index.json); generation needs the whole diffusers pipeline");
  PipelineParts p;
  p.pipeline_class = folder.pipeline_class;
  p.where = dir;
  p.transformer = read_component(folder, "transformer");
  p.vae = read_component(folder, "vae");
  p.text_encoder = read_component(folder, "text_encoder");
  const Component& tokenizer = folder.component("tokenizer");
  if (std::find(std::begin(kTokenizerClasses), std::end(kTokenizerClasses), tokenizer.class_name) ==
      std::end(kTokenizerClasses))
    fail(folder.index_path, ": key 'tokenizer' names ", tokenizer.class_name,
         "; pab reads T5 tokenizers (T5Tokenizer, T5TokenizerFast)");
  p.tokenizer = T5Tokenizer::load(tokenizer.dir);
  // As diffusers does, the scheduler is the class model_index.json names,
  // built from scheduler_config.json (whose _class_name may be another's).
  const Component& sc = folder.component("scheduler");
  const fs::path scheduler = fs::path(sc.dir) / "scheduler_config.json";
  if (!fs::is_regular_file(scheduler)) fail(sc.dir, ": no scheduler_config.json");
  p.scheduler = JsonConfig::load(scheduler.string());
  if (p.scheduler.get_or<std::string>("_class_name", "") != sc.class_name) {
    nlohmann::json edited = p.scheduler.json();
    edited["_class_name"] = sc.class_name;
    p.scheduler =
        JsonConfig(std::move(edited), cat(scheduler.string(), " (read as model_index.json's ", sc.class_name, ")"));
  }
  return p;
}

std::string VideoPlan::describe() const {
  std::ostringstream os;
  os << frames << " frames " << width << "x" << height << ", " << steps << " steps, guidance " << guidance;
  if (dynamic_cfg) os << " (dynamic)";
  if (!cfg) os << " (no CFG)";
  return os.str();
}

std::unique_ptr<VideoPipeline> VideoPipeline::open(const std::string& dir, const LoadOptions& opts) {
  return create(read_pipeline_folder(dir), opts);
}

std::unique_ptr<VideoPipeline> VideoPipeline::create(PipelineParts parts, const LoadOptions& opts) {
  const auto& pipelines = Registry<PipelineEntry>::get();
  const PipelineEntry* p = pipelines.find(parts.pipeline_class);
  if (!p)
    fail(parts.where, "/model_index.json: key '_class_name': unsupported pipeline '", parts.pipeline_class,
         "' (supported: ", pipelines.list(), ")");
  return p->make(std::move(parts), opts);
}

VideoPipeline::VideoPipeline(PipelineParts parts, const LoadOptions& opts) : parts_(std::move(parts)), opts_(opts) {
  PAB_ASSERT(parts_.transformer.weights && parts_.vae.weights, parts_.where, ": transformer and VAE weights needed");
  scheduler_ = make_scheduler(parts_.scheduler);
  transformer_class_ = config_class_name(parts_.transformer.config);
  // Unregistered classes and config errors before any work.
  if (parts_.text_encoder) {
    std::string cls;
    text_encoder_entry_ =
        &component_entry<TextEncoderEntry>(parts_, *parts_.text_encoder, "text_encoder", "text encoder", &cls);
    text_encoder_facts_ = text_encoder_entry_->facts(parts_.text_encoder->config);
  }
  vae_entry_ = &component_entry<VaeEntry>(parts_, parts_.vae, "vae", "VAE", &vae_class_);
  vae_facts_ = vae_entry_->facts(parts_.vae.config);
}

VideoPipeline::~VideoPipeline() = default;

const T5Tokenizer& VideoPipeline::tokenizer() const {
  if (!parts_.tokenizer) fail(parts_.where, ": no tokenizer: this pipeline takes prompt embeddings only");
  return *parts_.tokenizer;
}

TextEncoder& VideoPipeline::text_encoder() {
  if (!parts_.text_encoder) fail(parts_.where, ": no text encoder: this pipeline takes prompt embeddings only");
  if (!text_encoder_)
    text_encoder_ = text_encoder_entry_->load(parts_.text_encoder->config, *parts_.text_encoder->weights, opts_);
  return *text_encoder_;
}

void VideoPipeline::load_vae() {
  if (!vae_) vae_ = vae_entry_->load(parts_.vae.config, *parts_.vae.weights, opts_);
}

const VideoVae& VideoPipeline::vae() {
  load_vae();
  return *vae_;
}

DiffusionTransformer& VideoPipeline::transformer() {
  if (!transformer_) transformer_ = load_transformer(parts_.transformer.config, *parts_.transformer.weights, opts_);
  return *transformer_;
}

Tensor VideoPipeline::encode_text(const std::string& text, int64_t length, bool mask, const std::string& what,
                                  const std::string& limit, std::vector<std::string>* warnings, int64_t* tokens) {
  TokenizedText t = tokenizer().tokenize(text, length);
  if (t.num_dropped > 0 && warnings)
    warnings->push_back(cat("the ", what, " was truncated to ", length, " tokens (", limit, "): its last ",
                            t.num_dropped, t.num_dropped == 1 ? " token was" : " tokens were", " dropped"));
  if (tokens) {
    *tokens = 0;
    for (int64_t m : t.mask) *tokens += m;
  }
  Tensor ids = token_tensor({t.ids});  // [1, length]
  Tensor attention_mask = token_tensor({t.mask});
  return text_encoder().encode(ids, mask ? &attention_mask : nullptr);  // [1, length, D]
}

Tensor VideoPipeline::token_mask(int64_t tokens, int64_t length) {
  PAB_ASSERT(tokens >= 0 && tokens <= length, tokens, " tokens of ", length);
  std::vector<float> mask(size_t(length), 0.0f);
  std::fill(mask.begin(), mask.begin() + tokens, 1.0f);
  return Tensor::from_vector(mask, {1, length});
}

void VideoPipeline::check_request(const VideoPlan& plan) const {
  if (plan.steps < 1) fail("steps ", plan.steps, ": at least 1 step is needed");
  make_scheduler(parts_.scheduler)->set_timesteps(plan.steps, timestep_options(plan, opts_));  // its own limits
  if (!std::isfinite(plan.guidance)) fail("guidance ", plan.guidance, ": expected a finite number");
  if (!std::isfinite(plan.eta) || plan.eta < 0) fail("eta ", plan.eta, ": expected a number >= 0");
}

Tensor VideoPipeline::unconditional_text(const DiffusionTransformer&, const PromptEmbeddings& embeds) const {
  if (!embeds.negative.defined()) fail(class_name(), ": CFG needs the negative prompt's embeddings");
  return embeds.negative;
}

void VideoPipeline::refuse_named_sizes(const VideoRequest& r) const {
  for (auto [flag, v] :
       {std::pair{"--resolution", &r.resolution}, {"--aspect-ratio", &r.aspect_ratio}, {"--duration", &r.duration}})
    if (*v)
      fail(flag, " '", **v, "': named sizes and lengths are Open-Sora's; ", class_name(),
           " takes --height, --width and --frames");
}

SiteLayout VideoPipeline::transformer_sites() const {
  return transformer_site_layout(parts_.transformer.config);
}

MemoryEstimate::Phase text_memory(const TextEncoderFacts& encoder, uint64_t weight_bytes, int64_t length, DType dtype) {
  // The prompt's embeddings are kept while the negative prompt is encoded.
  return {"text encoder",
          {{"weights", weight_bytes},
           {"activations", add_bytes(encoder.activation_bytes(length, dtype),
                                     element_bytes(int64_t(encoder.hidden_size()) * length, dtype, "text"), "text")}}};
}

MemoryEstimate::Phase denoise_memory(const JsonConfig& transformer, uint64_t weight_bytes, const ForwardShape& shape,
                                     const std::vector<SiteKind>& cached) {
  const ForwardFootprint f = transformer_footprint(transformer, shape);
  uint64_t cache = 0;
  for (const auto& [kind, blocks] : transformer_site_layout(transformer).kinds)
    if (std::find(cached.begin(), cached.end(), kind) != cached.end()) {
      uint64_t bytes = 0;
      if (__builtin_mul_overflow(uint64_t(blocks), f.site[size_t(kind)], &bytes)) fail("PAB cache: beyond 2^64 bytes");
      cache = add_bytes(cache, bytes, "PAB cache");
    }
  // The f32 latents: the loop's, the scheduler's step and the guided output.
  const uint64_t loop = element_bytes(shape_numel(shape.latents), DType::f32, "latents") * 4;
  return {
      "denoise",
      {{"weights", weight_bytes}, {"activations", add_bytes(f.activations, loop, "denoise")}, {"PAB cache", cache}}};
}

MemoryEstimate VideoPipeline::estimate_memory(const VideoPlan& plan, const std::vector<SiteKind>& cached,
                                              TilingChoice tiling) const {
  const DType dtype = opts_.dtype;
  MemoryEstimate e;
  if (parts_.text_encoder)
    e.phases.push_back(
        text_memory(*text_encoder_facts_, parts_.text_encoder->weights->bytes_as(dtype), plan.text_length, dtype));
  Shape latents = plan.latents;
  latents[0] = plan.cfg ? 2 : 1;
  e.phases.push_back(denoise_memory(parts_.transformer.config, parts_.transformer.weights->bytes_as(dtype),
                                    {latents, plan.text_length, dtype, opts_.device}, cached));
  e.phases.push_back(decode_memory(plan, tiling));
  return e;
}

void VideoPipeline::check_components(const std::string& transformer_class, VaeKind vae_kind, int in_channels,
                                     int text_width, const char* text_key) const {
  if (transformer_class_ != transformer_class)
    fail(parts_.transformer.config.where(), ": ", class_name(), " needs a ", transformer_class, ", got ",
         transformer_class_);
  if (vae_facts_->kind() != vae_kind)
    fail(parts_.vae.config.where(), ": ", class_name(), " needs ", vae_kind_name(vae_kind), "; ", vae_class_, " is ",
         vae_kind_name(vae_facts_->kind()));
  if (vae_facts_->latent_channels() != in_channels)
    fail(parts_.vae.config.where(), ": latent_channels ", vae_facts_->latent_channels(),
         " differs from the transformer's in_channels ", in_channels);
  if (text_encoder_facts_ && text_encoder_facts_->hidden_size() != text_width)
    fail(parts_.text_encoder->config.where(), ": hidden size ", text_encoder_facts_->hidden_size(),
         " differs from the transformer's ", text_key, " ", text_width);
}

void VideoPipeline::check_size(const VideoPlan& plan, int vae_scale, int patch_size) {
  const int multiple = std::lcm(8, vae_scale * patch_size);
  for (auto [what, value] : {std::pair{"height", plan.height}, {"width", plan.width}})
    if (value <= 0 || value % multiple != 0)
      fail(what, " ", value, ": must be a positive multiple of ", multiple, " (the VAE's ", vae_scale,
           "x scale times the transformer's ", patch_size, "x", patch_size, " patches)");
}

MemoryEstimate::Phase VideoPipeline::vae_decode_memory(const VideoPlan& plan, int64_t latent_frames,
                                                       const VaeDecodeOptions& o) const {
  const uint64_t decode =
      vae_facts_->decode_bytes(latent_frames, plan.height, plan.width, o, opts_.dtype, opts_.device);
  const uint64_t frames = element_bytes(shape_numel({plan.frames, 3, plan.height, plan.width}), DType::f32, "frames");
  return {"decode",
          {{"weights", vae_facts_->weight_bytes(*parts_.vae.weights, opts_.dtype)},
           {"activations", add_bytes(decode, frames, "decode")}}};
}

Tensor VideoPipeline::postprocess_video(const Tensor& video) {
  PAB_ASSERT(video.rank() == 5 && video.dim(0) == 1, "decoded video ", video.desc());
  // [1, C, F, H, W] -> [F, C, H, W] where the video is, copied to the host in
  // its own dtype, then converted and mapped in one parallel pass (a whole
  // video is hundreds of MB: serial passes over it took ~0.6 s).
  const Tensor frames = ops::permute(video, {0, 2, 1, 3, 4}).to(Device::cpu);
  Tensor out = Tensor::empty({video.dim(2), video.dim(1), video.dim(3), video.dim(4)}, DType::f32, Device::cpu);
  const auto* src = static_cast<const char*>(frames.raw());
  float* dst = out.f32();
  const size_t es = dtype_size(frames.dtype());
  constexpr int64_t kChunk = 1 << 16;
  const int64_t n = out.numel(), chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t begin = c * kChunk, len = std::min(kChunk, n - begin);
    float* p = dst + begin;
    convert_to_f32(src + size_t(begin) * es, frames.dtype(), p, size_t(len));
    for (int64_t i = 0; i < len; ++i) {
      const float v = p[i] * 0.5f + 0.5f;
      p[i] = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;  // NaN stays NaN, as torch's clamp
    }
  }
  return out;
}

Tensor VideoPipeline::initial_latents(const VideoPlan& plan, NoiseSource& noise) const {
  Tensor x = noise.next(plan.latents);
  if (x.dtype() != DType::f32) x = x.to(DType::f32);
  if (x.device() != opts_.device) x = x.to(opts_.device);
  const float sigma = scheduler_->init_noise_sigma();
  if (sigma != 1.0f) x = ops::scale(x, sigma);
  return keep_latents(x);
}

DenoiseResult VideoPipeline::denoise(const VideoPlan& plan, const PromptEmbeddings& embeds, Tensor latents,
                                     CachePolicy* cache, NoiseSource* noise, const StepCallback& on_step) {
  using clock = std::chrono::steady_clock;
  DiffusionTransformer& model = transformer();
  if (latents.shape() != plan.latents)
    fail(class_name(), ": latents ", latents.desc(), " do not have the plan's shape ", shape_str(plan.latents));
  if (!embeds.prompt.defined()) fail(class_name(), ": prompt embeddings missing");
  scheduler_->set_timesteps(plan.steps, timestep_options(plan, opts_));
  DenoiseResult result;
  result.timesteps = scheduler_->timesteps();
  ResetOnExit reset_on_exit{cache};
  std::vector<double> model_ts = result.timesteps;
  for (double& t : model_ts) t = model_timestep(t);
  if (cache) cache->reset(model_ts, plan.steps);

  // The CFG pair is one batch, in the order the pipeline concatenates it.
  const bool cond_first = conditional_first();
  Tensor text = embeds.prompt;  // [B, L, D]
  if (plan.cfg) {
    Tensor uncond = unconditional_text(model, embeds);
    if (uncond.device() != text.device()) uncond = uncond.to(text.device());
    if (uncond.dtype() != text.dtype()) uncond = uncond.to(text.dtype());
    text = cond_first ? ops::concat({text, uncond}, 0) : ops::concat({uncond, text}, 0);
  }
  if (text.device() != opts_.device) text = text.to(opts_.device);
  if (text.dtype() != opts_.dtype) text = text.to(opts_.dtype);
  // Each entry attends to its own text's tokens where the negative prompt has
  // a mask; else both to the prompt's (Open-Sora repeats its mask over the batch).
  Tensor text_mask = embeds.mask;
  if (text_mask.defined() && plan.cfg) {
    const Tensor uncond = embeds.negative_mask.defined() ? embeds.negative_mask : embeds.mask;
    text_mask = cond_first ? ops::concat({embeds.mask, uncond}, 0) : ops::concat({uncond, embeds.mask}, 0);
  }
  if (latents.device() != opts_.device) latents = latents.to(opts_.device);
  if (latents.dtype() != DType::f32) latents = latents.to(DType::f32);
  Backend& be = backend(opts_.device);
  StepOptions step_options;
  step_options.eta = plan.eta;
  step_options.noise = noise;

  // One evaluation per timestep: PNDM's warm-up makes more than plan.steps.
  const int evaluations = int(result.timesteps.size());
  for (int i = 0; i < evaluations; ++i) {
    const auto started = clock::now();
    const double t = model_ts[size_t(i)];
    const StepContext step{i, t, plan.cfg ? CfgBranch::both : CfgBranch::none, plan.cfg && cond_first};
    if (cache) cache->begin_step(step);
    Tensor input = scheduler_->scale_model_input(latents, i);
    if (plan.cfg) input = ops::concat({input, input}, 0);
    TransformerInputs in;
    in.latents = input.dtype() == opts_.dtype ? input : input.to(opts_.dtype);
    in.text = text;
    in.text_mask = text_mask;
    in.timestep = t;
    add_conditioning(plan, in);
    Tensor out = forward_step(model, in, cache, step);
    if (out.dtype() != DType::f32) out = out.to(DType::f32);
    const double g = guidance_at(plan, i, t);
    if (plan.cfg) {
      Tensor uncond = out.narrow0(cond_first ? 1 : 0, 1), cond = out.narrow0(cond_first ? 0 : 1, 1);
      out = ops::add(uncond, ops::scale(ops::sub(cond, uncond), float(g)));
    }
    latents = keep_latents(scheduler_->step(i, scheduler_input(out), latents, step_options).prev_sample);
    if (on_step) {
      be.synchronize();
      StepReport r;
      r.step = i;
      r.steps = evaluations;
      r.timestep = t;
      r.guidance = g;
      r.seconds = std::chrono::duration<double>(clock::now() - started).count();
      r.latents = &latents;
      on_step(r);
    }
  }
  result.latents = latents;
  if (cache) result.stats = cache->stats();
  return result;
}

GeneratedVideo generate_video(VideoPipeline& pipe, const VideoPlan& plan, uint64_t seed, CachePolicy* cache,
                              TilingChoice tiling, const GenerationEvents& events) {
  using clock = std::chrono::steady_clock;
  Backend& be = backend(pipe.load_options().device);
  auto seconds_since = [&](clock::time_point t0) {
    be.synchronize();
    return std::chrono::duration<double>(clock::now() - t0).count();
  };
  GeneratedVideo v;

  auto t0 = clock::now();
  PromptEmbeddings embeds = pipe.encode_prompt(plan);
  pipe.release_text_encoder();
  v.text_seconds = seconds_since(t0);
  v.warnings = embeds.warnings;
  if (events.on_warning)
    for (const std::string& w : embeds.warnings) events.on_warning(w);
  if (events.on_phase) events.on_phase("text", v.text_seconds);

  t0 = clock::now();
  TorchNoise noise(seed);
  Tensor latents = pipe.initial_latents(plan, noise);
  v.initial_latents = latents.to(Device::cpu);
  DenoiseResult run = pipe.denoise(plan, embeds, latents, cache, &noise, events.on_step);
  embeds = PromptEmbeddings();
  pipe.release_transformer();
  v.denoise_seconds = seconds_since(t0);
  v.final_latents = run.latents.to(Device::cpu);
  v.stats = run.stats;
  if (events.on_phase) events.on_phase("denoise", v.denoise_seconds);

  t0 = clock::now();
  v.tiled = pipe.tiles(plan, tiling);
  v.frames = pipe.decode(plan, run.latents, tiling);
  pipe.release_vae();
  v.decode_seconds = seconds_since(t0);
  if (events.on_phase) events.on_phase("decode", v.decode_seconds);
  return v;
}

}  // namespace pab
