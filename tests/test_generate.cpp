// pab generate end to end on the tiny CogVideoX fixture model shipped in
// tests/data: an mp4 and PNG frames that hold diffusers' frames for the same
// seed, reproducible seeds, the command line, and bad input (a missing
// component, unknown component classes, a VAE of the wrong kind, a prompt
// over the token limit, impossible frame counts and sizes, outputs that
// cannot be written, a failure part-way leaving no file).
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "io/video.h"
#include "pab/pab.h"
#include "pipeline/tokenizer.h"
#include "support/testing.h"

namespace pab {
namespace {

namespace fs = std::filesystem;
using testing::data_path;

const std::string kModel = data_path("fixtures/pipeline/cogvideox_ddim/model");

// A fresh folder for one test's outputs, removed afterwards.
struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name)
      : path(fs::temp_directory_path() / ("pab_generate_" + name + "_" + std::to_string(::getpid()))) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string operator/(const std::string& rel) const { return (path / rel).string(); }
};

GenerateOptions small_run(const std::string& output) {
  GenerateOptions o;
  o.model_dir = kModel;
  o.prompt = "a cat";
  o.steps = 3;
  o.output = output;
  return o;
}

std::string error_of(const GenerateOptions& o, std::vector<GenerateEvent>* events = nullptr) {
  GenerateResult r;
  Status s = generate(o, &r, [&](const GenerateEvent& e) {
    if (events) events->push_back(e);
  });
  return s.ok ? "" : s.message;
}

// A model opened once makes many videos, each as a one-shot generate makes
// it: nothing of one generation (PAB's cache, released weights, the
// scheduler's state) leaks into the next.
TEST(Model, OpenedOnceGeneratesManyVideosEachAsAlone) {
  TempDir dir("model");
  GenerateOptions once = small_run("");
  once.frames_dir = dir / "once";
  once.seed = 42;
  ASSERT_TRUE(generate(once, nullptr).ok);

  std::unique_ptr<Model> model;
  Status s = Model::open(kModel, ComputeOptions{}, &model);
  ASSERT_TRUE(s.ok) << s.message;
  EXPECT_EQ(model->pipeline(), "CogVideoXPipeline");
  GenerateRequest req = once;
  req.frames_dir = dir / "first";
  ASSERT_TRUE(model->generate(req, nullptr).ok);
  GenerateRequest other = req;
  other.frames_dir = dir / "other";
  other.prompt = "a dog on a beach";
  other.seed = 7;
  other.cache.preset = "spatial=2@0-1000";
  GenerateResult r;
  ASSERT_TRUE(model->generate(other, &r).ok);
  EXPECT_NE(r.cache_skipped, "nothing") << "the other video reuses attention";
  req.frames_dir = dir / "again";
  ASSERT_TRUE(model->generate(req, nullptr).ok);

  const Rgb8Video a = read_video(once.frames_dir), first = read_video(dir / "first"), again = read_video(dir / "again"),
                  o = read_video(dir / "other");
  EXPECT_EQ(first.rgb, a.rgb);
  EXPECT_EQ(again.rgb, a.rgb);
  EXPECT_NE(o.rgb, a.rgb) << "the test can fail: another prompt and seed give other frames";
  // A request's errors leave the model usable.
  GenerateRequest bad = req;
  bad.steps = 0;
  EXPECT_FALSE(model->generate(bad, nullptr).ok);
  EXPECT_TRUE(model->generate(req, nullptr).ok);
}

// The seeded diffusers reference (dev/fixtures/make_seeded_pipelines.py), written
// through the public API without PAB: the PNGs hold diffusers' frames quantized
// (a level off at most where the value sits on a rounding boundary), the mp4 the
// same frames through H.264.
TEST(Generate, WritesMp4AndPngFramesOfDiffusersFrames) {
  TempDir dir("e2e");
  Checkpoint ref = Checkpoint::open_file(data_path("pipeline_seeded/cogvideox_ddim_seed42.safetensors"));
  GenerateOptions o = small_run(dir / "out.mp4");
  o.frames_dir = dir / "frames";
  o.prompt = "A small red boat on a calm lake at dawn.";
  o.steps = 4;
  o.guidance = 6;
  o.seed = 42;
  o.cache.preset = "off";
  std::vector<GenerateEvent> events;
  GenerateResult r;
  Status s = generate(o, &r, [&](const GenerateEvent& e) { events.push_back(e); });
  ASSERT_TRUE(s.ok) << s.message;

  VideoInfo info = probe_video(o.output);
  EXPECT_EQ(info.codec, "h264");
  EXPECT_EQ(info.width, 48);
  EXPECT_EQ(info.height, 32);
  EXPECT_EQ(info.frames, 9);
  EXPECT_NEAR(info.fps, 8.0, 1e-6);
  Rgb8Video png = read_video(o.frames_dir);
  ASSERT_EQ(png.frames, 9);
  ASSERT_EQ(png.width, 48);
  ASSERT_EQ(png.height, 32);

  Rgb8Video expected = quantize_frames(ref.load("frames"));
  int max_diff = 0;
  size_t differing = 0;
  for (size_t i = 0; i < png.rgb.size(); ++i) {
    int d = std::abs(int(png.rgb[i]) - int(expected.rgb[i]));
    max_diff = std::max(max_diff, d);
    differing += d != 0;
  }
  EXPECT_LE(max_diff, 1);
  EXPECT_LT(differing, png.rgb.size() / 1000);
  Rgb8Video mp4 = read_video(o.output);
  ASSERT_EQ(mp4.frames, 9);
  double mean_error = 0;
  for (size_t i = 0; i < mp4.rgb.size(); ++i) mean_error += std::abs(int(mp4.rgb[i]) - int(png.rgb[i]));
  EXPECT_LT(mean_error / double(mp4.rgb.size()), 8.0) << "H.264 at crf 18 stays close to the frames";

  EXPECT_EQ(r.frames, 9);
  EXPECT_EQ(r.written, (std::vector<std::string>{o.output, o.frames_dir}));
  EXPECT_EQ(r.cache, "off");
  int steps = 0;
  std::vector<std::string> phases;
  for (const GenerateEvent& e : events) {
    if (e.kind == GenerateEvent::Kind::step) {
      EXPECT_EQ(e.step, steps++);
    }
    if (e.kind == GenerateEvent::Kind::phase) phases.push_back(e.message);
  }
  EXPECT_EQ(steps, 4);
  EXPECT_EQ(phases, (std::vector<std::string>{"text", "denoise", "decode", "write"}));
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.front().kind, GenerateEvent::Kind::plan);
}

// `pab generate --gpus 2`: two processes split the transformer's tokens; the
// frames still match the seeded diffusers reference, and only rank 0 writes.
TEST(Generate, TwoRanksMatchTheSeededReference) {
  TempDir dir("sp");
  const std::string frames = dir / "frames";
  std::string log;
  ASSERT_EQ(testing::run_command(testing::pab_binary() + " generate -m " + kModel +
                                     " -p 'A small red boat on a calm lake at dawn.' --steps 4 --guidance 6 --seed 42"
                                     " --pab off --gpus 2 --frames-dir " +
                                     frames,
                                 &log),
            0)
      << log;
  Rgb8Video png = read_video(frames);
  Rgb8Video expected = quantize_frames(
      Checkpoint::open_file(data_path("pipeline_seeded/cogvideox_ddim_seed42.safetensors")).load("frames"));
  ASSERT_EQ(png.rgb.size(), expected.rgb.size());
  int max_diff = 0;
  for (size_t i = 0; i < png.rgb.size(); ++i)
    max_diff = std::max(max_diff, std::abs(int(png.rgb[i]) - int(expected.rgb[i])));
  EXPECT_LE(max_diff, 1);
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(dir.path)) files += e.path() != frames;
  EXPECT_EQ(files, 0u) << "a rank left a file behind";
}

TEST(Generate, SameSeedSameVideo) {
  TempDir dir("seed");
  auto frames = [&](uint64_t seed, const std::string& name) {
    GenerateOptions o = small_run("");
    o.frames_dir = dir / name;
    o.seed = seed;
    Status s = generate(o, nullptr);
    EXPECT_TRUE(s.ok) << s.message;
    return read_video(o.frames_dir).rgb;
  };
  std::vector<uint8_t> a = frames(7, "a"), b = frames(7, "b"), c = frames(8, "c");
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
}

TEST(Generate, PabIsOnByDefaultAndSaysWhatItSkipped) {
  TempDir dir("pab");
  GenerateResult r;
  GenerateOptions o = small_run(dir / "out.mp4");
  o.steps = 12;
  Status s = generate(o, &r);
  ASSERT_TRUE(s.ok) << s.message;
  EXPECT_NE(r.cache.find("spatial 2"), std::string::npos) << r.cache;
  EXPECT_NE(r.cache_skipped.find("spatial attention calls"), std::string::npos) << r.cache_skipped;
  // The broadcast map of that run: a PNG picture
  o.pab_report = dir / "map.png";
  ASSERT_TRUE(generate(o, &r).ok);
  std::ifstream png(o.pab_report, std::ios::binary);
  char magic[8] = {};
  png.read(magic, 8);
  EXPECT_EQ(std::string(magic + 1, 3), "PNG");
  o.cache.preset = "off";
  EXPECT_FALSE(generate(o, &r).ok);  // no map without PAB
  o.pab_report.clear();
  ASSERT_TRUE(generate(o, &r).ok);
  EXPECT_EQ(r.cache_skipped, "nothing (PAB off)");
}

TEST(Generate, CommandLine) {
  TempDir dir("cli");
  std::string log;
  const std::string cmd = testing::pab_binary() + " generate --model " + kModel +
                          " --prompt 'a dog on a skateboard' --steps 3 --seed 3 -o " + (dir / "out.mp4");
  ASSERT_EQ(testing::run_command(cmd, &log), 0) << log;
  EXPECT_NE(log.find("step 3/3"), std::string::npos) << log;
  EXPECT_NE(log.find("done in"), std::string::npos) << log;
  EXPECT_NE(log.find("PAB skipped"), std::string::npos) << log;
  EXPECT_TRUE(fs::exists(dir / "out.mp4"));
  // A bad flag value is one error line and exit status 1.
  EXPECT_EQ(testing::run_command(testing::pab_binary() + " generate --model " + kModel + " --prompt x --frames 13 -o " +
                                     (dir / "bad.mp4"),
                                 &log),
            1);
  EXPECT_NE(log.find("pab: error: frames 13"), std::string::npos) << log;
}

// ---------------------------------------------------------------- bad input

// A copy of a tiny model (the CogVideoX one unless `from` is given) with an edit applied.
struct ModelCopy : TempDir {
  explicit ModelCopy(const std::string& name, const std::string& from = kModel) : TempDir(name) {
    fs::copy(from, path / "model", fs::copy_options::recursive);
  }
  std::string model() const { return (path / "model").string(); }
  void edit_index(const std::function<void(nlohmann::json&)>& edit) const {
    const fs::path index = path / "model" / "model_index.json";
    nlohmann::json j = nlohmann::json::parse(std::ifstream(index));
    edit(j);
    std::ofstream(index) << j.dump(1);
  }
  // Names `cls` for `component` in model_index.json and in the component's
  // config.json, under `key` (diffusers' _class_name, transformers' architectures).
  void set_class(const std::string& component, const std::string& key, const std::string& cls) const {
    edit_index([&](nlohmann::json& j) { j[component][1] = cls; });
    const fs::path config = path / "model" / component / "config.json";
    nlohmann::json c = nlohmann::json::parse(std::ifstream(config));
    c[key] = key == "architectures" ? nlohmann::json::array({cls}) : nlohmann::json(cls);
    std::ofstream(config) << c.dump(1);
  }
};

TEST(GenerateBadInput, MissingComponent) {
  ModelCopy m("missing");
  m.edit_index([](nlohmann::json& j) { j.erase("vae"); });
  GenerateOptions o = small_run(m / "out.mp4");
  o.model_dir = m.model();
  std::string e = error_of(o);
  EXPECT_NE(e.find("model_index.json"), std::string::npos) << e;
  EXPECT_NE(e.find("'vae'"), std::string::npos) << e;

  ModelCopy f("missing_folder");
  fs::remove_all(f.path / "model" / "text_encoder");
  o.model_dir = f.model();
  o.output = f / "out.mp4";
  e = error_of(o);
  EXPECT_NE(e.find("text_encoder"), std::string::npos) << e;
  EXPECT_NE(e.find("missing"), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(o.output));
}

TEST(GenerateBadInput, TooLongPromptIsTruncatedWithAWarning) {
  TempDir dir("long");
  GenerateOptions o = small_run(dir / "out.mp4");
  o.prompt =
      "A panda, dressed in a small, red jacket and a tiny hat, sits on a wooden stool in a serene bamboo forest.";
  std::vector<GenerateEvent> events;
  GenerateResult r;
  ASSERT_TRUE(generate(o, &r, [&](const GenerateEvent& e) { events.push_back(e); }).ok);
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_NE(r.warnings[0].find("truncated to 16 tokens"), std::string::npos) << r.warnings[0];
  // How many tokens went, not the text again (a long prompt made a long line).
  const size_t dropped = T5Tokenizer::load(kModel + "/tokenizer")->encode(o.prompt).size() - 16;
  EXPECT_NE(r.warnings[0].find(cat("its last ", dropped, " tokens were dropped")), std::string::npos) << r.warnings[0];
  EXPECT_EQ(r.warnings[0].find("bamboo"), std::string::npos) << r.warnings[0];
  bool warned = false;
  for (const GenerateEvent& e : events) warned |= e.kind == GenerateEvent::Kind::warning;
  EXPECT_TRUE(warned);
  // Can fail: a prompt that fits gives no warning.
  o.prompt = "a cat";
  ASSERT_TRUE(generate(o, &r).ok);
  EXPECT_TRUE(r.warnings.empty());
}

// A value given is used or refused, never replaced by the default: each is
// an error naming it and its range, before any work.
TEST(GenerateBadInput, GivenValuesAreCheckedNotReplaced) {
  TempDir dir("given");
  struct Case {
    std::function<void(GenerateOptions&)> set;
    std::string needle;
  };
  const std::string blank = " \t\u3000";  // an ideographic space too
  const std::string not_utf8 = "\xFF";
  for (const Case& c : std::vector<Case>{
           {[](GenerateOptions& o) { o.steps = 0; }, "--steps 0: expected at least 1"},
           {[](GenerateOptions& o) { o.frames = 0; }, "--frames 0: expected at least 1"},
           {[](GenerateOptions& o) { o.width = 0; }, "--width 0: expected at least 1"},
           {[](GenerateOptions& o) { o.height = 0; }, "--height 0: expected at least 1"},
           {[](GenerateOptions& o) { o.max_sequence_length = 0; }, "--max-sequence-length 0: expected at least 1"},
           {[](GenerateOptions& o) { o.guidance = std::nan(""); }, "--guidance nan: expected a finite number"},
           {[](GenerateOptions& o) { o.guidance = INFINITY; }, "--guidance inf: expected a finite number"},
           {[](GenerateOptions& o) { o.fps = 0; }, "--fps 0: expected a frame rate in (0, 1000]"},
           {[](GenerateOptions& o) { o.cache.preset = ""; }, "--pab '': expected default, off"},
           {[](GenerateOptions& o) { o.cache.file = ""; }, "--pab-config '': expected the path"},
           {[](GenerateOptions& o) { o.compute.max_memory = 0; }, "--max-memory 0: expected a positive size"},
           {[&](GenerateOptions& o) { o.prompt = blank; }, "empty prompt"},
           {[](GenerateOptions& o) { o.prompt = "bad \xC3\x28"; }, "the prompt (--prompt) is not valid UTF-8 (byte 4)"},
           {[&](GenerateOptions& o) { o.negative_prompt = not_utf8; },
            "the negative prompt (--negative-prompt) is not valid UTF-8 (byte 0)"},
       }) {
    GenerateOptions o = small_run(dir / "out.mp4");
    c.set(o);
    std::vector<GenerateEvent> events;
    const std::string e = error_of(o, &events);
    EXPECT_NE(e.find(c.needle), std::string::npos) << c.needle << ": " << e;
    EXPECT_TRUE(events.empty()) << c.needle;
  }
  EXPECT_FALSE(fs::exists(dir / "out.mp4"));
  // Guidance of 1 or less runs without CFG; a value not given takes the pipeline's 6.
  GenerateOptions o = small_run(dir / "out.mp4");
  o.guidance = -5;
  std::vector<GenerateEvent> events;
  ASSERT_EQ(error_of(o, &events), "");
  EXPECT_NE(events.front().message.find("guidance -5 (no CFG)"), std::string::npos) << events.front().message;
  o.guidance.reset();
  events.clear();
  ASSERT_EQ(error_of(o, &events), "");
  EXPECT_NE(events.front().message.find("guidance 6,"), std::string::npos) << events.front().message;
}

TEST(GenerateBadInput, ImpossibleFrameCountOrSize) {
  TempDir dir("sizes");
  GenerateOptions o = small_run(dir / "out.mp4");
  std::vector<GenerateEvent> events;
  o.frames = 13;
  std::string e = error_of(o, &events);
  EXPECT_NE(e.find("frames 13"), std::string::npos) << e;
  EXPECT_NE(e.find("9 and 17"), std::string::npos) << e;
  o.frames = 5;
  EXPECT_NE(error_of(o).find("1 and 9"), std::string::npos);
  o.frames = 17;  // possible: (17 - 1) / 4 + 1 = 5 latent frames decode to 17
  o.height = 30;
  e = error_of(o, &events);
  EXPECT_NE(e.find("height 30"), std::string::npos) << e;
  EXPECT_NE(e.find("multiple of 16"), std::string::npos) << e;
  o.height.reset();
  o.width = -16;
  EXPECT_NE(error_of(o).find("width -16"), std::string::npos);
  o.width.reset();
  o.max_sequence_length = 20;
  EXPECT_NE(error_of(o).find("max_text_seq_length"), std::string::npos);
  o.max_sequence_length.reset();
  o.steps = -2;
  EXPECT_NE(error_of(o).find("steps -2"), std::string::npos);
  EXPECT_TRUE(events.empty()) << "errors come before any work";
  EXPECT_FALSE(fs::exists(o.output));

  GenerateOptions latte = small_run(dir / "latte.mp4");
  latte.model_dir = data_path("fixtures/pipeline/latte/model");
  latte.frames = 5;
  e = error_of(latte);
  EXPECT_NE(e.find("frames 5"), std::string::npos) << e;
  EXPECT_NE(e.find("video_length"), std::string::npos) << e;
  latte.frames.reset();
  latte.dynamic_cfg = true;
  EXPECT_NE(error_of(latte).find("dynamic CFG"), std::string::npos);
}

TEST(GenerateBadInput, UnwritableOutputFailsBeforeAnyWork) {
  TempDir dir("unwritable");
  // The model folder is bogus too: the output is checked first.
  GenerateOptions o = small_run("/nonexistent-pab-dir/out.mp4");
  o.model_dir = "/nonexistent-pab-model";
  std::vector<GenerateEvent> events;
  std::string e = error_of(o, &events);
  EXPECT_NE(e.find("/nonexistent-pab-dir/out.mp4"), std::string::npos) << e;
  EXPECT_NE(e.find("does not exist"), std::string::npos) << e;
  EXPECT_TRUE(events.empty());
  fs::create_directory(dir.path / "folder.mp4");
  o.output = dir / "folder.mp4";
  EXPECT_NE(error_of(o).find("is a directory"), std::string::npos);
  o.output = "";
  o.frames_dir = "/nonexistent-pab-dir/frames";
  EXPECT_NE(error_of(o).find("/nonexistent-pab-dir"), std::string::npos);
  std::ofstream(dir / "keep.txt") << "not a frame";
  o.frames_dir = dir.path.string();  // a folder holding other files is not replaced
  EXPECT_NE(error_of(o).find("other than frame_NNNN.png"), std::string::npos);
  o.frames_dir = "";
  EXPECT_NE(error_of(o).find("no output"), std::string::npos);
}

// model_index.json decides the classes, as in diffusers: a scheduler is built
// as the class it names from scheduler_config.json; a model whose config.json
// declares another class than the index names is refused with both names.
TEST(GenerateFolder, ModelIndexClassesAreHonouredOrTheMismatchRefused) {
  auto frames_of = [](const std::string& model, const std::string& out) {
    GenerateOptions o = small_run("");
    o.frames_dir = out;
    o.model_dir = model;
    o.cache.preset = "off";
    GenerateResult r;
    Status s = generate(o, &r);
    EXPECT_TRUE(s.ok) << s.message;
    return s.ok ? read_video(out).rgb : std::vector<uint8_t>{};
  };
  // Index and config say DDIMScheduler (both), the index alone, the config alone.
  ModelCopy both("both"), by_index("by_index"), by_config("by_config");
  for (const ModelCopy* m : {&both, &by_index})
    m->edit_index([](nlohmann::json& j) { j["scheduler"][1] = "DDIMScheduler"; });
  for (const ModelCopy* m : {&both, &by_config}) {
    const fs::path sc = m->path / "model" / "scheduler" / "scheduler_config.json";
    nlohmann::json cfg = nlohmann::json::parse(std::ifstream(sc));
    ASSERT_EQ(cfg["_class_name"], "CogVideoXDDIMScheduler");
    cfg["_class_name"] = "DDIMScheduler";
    std::ofstream(sc) << cfg.dump(1);
  }
  const auto original = frames_of(kModel, both / "original");
  const auto ddim = frames_of(both.model(), both / "frames");
  EXPECT_TRUE(ddim != original) << "the two schedulers give other frames, so the test can fail";
  EXPECT_TRUE(frames_of(by_index.model(), by_index / "frames") == ddim);
  EXPECT_TRUE(frames_of(by_config.model(), by_config / "frames") == original);

  ModelCopy m("mismatch");
  m.edit_index([](nlohmann::json& j) { j["transformer"][1] = "LatteTransformer3DModel"; });
  GenerateOptions o = small_run(m / "out.mp4");
  o.model_dir = m.model();
  std::string e = error_of(o);
  EXPECT_NE(e.find("model_index.json: key 'transformer' names LatteTransformer3DModel"), std::string::npos) << e;
  EXPECT_NE(e.find("is a CogVideoXTransformer3DModel"), std::string::npos) << e;
  m.edit_index([](nlohmann::json& j) {
    j["transformer"][1] = "CogVideoXTransformer3DModel";
    j["tokenizer"][1] = "CLIPTokenizer";
  });
  e = error_of(o);
  EXPECT_NE(e.find("key 'tokenizer' names CLIPTokenizer"), std::string::npos) << e;
}

// The VAE and the text encoder are built as the classes model_index.json
// names, among the registered ones: an unknown class is refused listing them,
// and a pipeline refuses a VAE of the kind it does not decode with; each
// before any work, leaving no file.
TEST(GenerateFolder, UnknownComponentClassesAndVaesOfTheWrongKindAreRefused) {
  const std::string latte = data_path("fixtures/pipeline/latte/model");
  auto refused = [](const ModelCopy& m, const std::string& needle) {
    GenerateOptions o = small_run(m / "out.mp4");
    o.model_dir = m.model();
    std::vector<GenerateEvent> events;
    const std::string e = error_of(o, &events);
    EXPECT_NE(e.find(needle), std::string::npos) << e;
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
    EXPECT_TRUE(events.empty()) << needle;
    EXPECT_FALSE(fs::exists(o.output)) << needle;
  };
  ModelCopy vae("unknown_vae");
  vae.set_class("vae", "_class_name", "NoSuchAutoencoderKL");
  refused(vae,
          "model_index.json: key 'vae': unsupported VAE class 'NoSuchAutoencoderKL' (supported: AutoencoderKL, "
          "AutoencoderKLCogVideoX, ");
  ModelCopy text("unknown_text_encoder");
  text.set_class("text_encoder", "architectures", "NoSuchEncoderModel");
  refused(text,
          "model_index.json: key 'text_encoder': unsupported text encoder class 'NoSuchEncoderModel' (supported: "
          "MT5EncoderModel, T5EncoderModel)");

  // Each pipeline's folder with the other's VAE.
  auto with_vae_of = [](ModelCopy& m, const std::string& other, const std::string& cls) {
    fs::remove_all(m.path / "model" / "vae");
    fs::copy(other + "/vae", m.path / "model" / "vae", fs::copy_options::recursive);
    m.edit_index([&](nlohmann::json& j) { j["vae"][1] = cls; });
  };
  ModelCopy latte_3d("latte_3d_vae", latte);
  with_vae_of(latte_3d, kModel, "AutoencoderKLCogVideoX");
  refused(latte_3d,
          "LattePipeline needs a 2D image VAE (each frame decoded on its own); AutoencoderKLCogVideoX is a causal 3D "
          "video VAE");
  ModelCopy cogvideox_2d("cogvideox_2d_vae");
  with_vae_of(cogvideox_2d, latte, "AutoencoderKL");
  refused(cogvideox_2d,
          "CogVideoXPipeline needs a causal 3D video VAE; AutoencoderKL is a 2D image VAE (each frame decoded on its "
          "own)");
}

// A pipeline saved by diffusers 0.42 with transformers 5 has tokenizer.json
// and no spiece.model: it generates the frames of the folder that has both.
TEST(GenerateFolder, TokenizerJsonWithoutSpieceModelGivesTheSameFrames) {
  ModelCopy m("no_spiece");
  fs::remove(m.path / "model" / "tokenizer" / "spiece.model");
  GenerateOptions o = small_run("");
  o.prompt = "A panda, dressed in a small, red jacket, sits on a wooden stool.";
  o.frames_dir = m / "json_only";
  o.model_dir = m.model();
  ASSERT_EQ(error_of(o), "");
  o.frames_dir = m / "both";
  o.model_dir = kModel;
  ASSERT_EQ(error_of(o), "");
  EXPECT_TRUE(read_video(m / "json_only").rgb == read_video(m / "both").rgb);
}

// A checkpoint tensor no model loads (here a stray one beside the
// transformer's) stops the run naming it, before the transformer runs; with
// allow_unused_weights the run goes on and says so.
TEST(GenerateFolder, UnusedCheckpointTensorsAreAnErrorUnlessAllowed) {
  ModelCopy m("unused");
  const fs::path weights = m.path / "model" / "transformer" / "diffusion_pytorch_model.safetensors";
  Checkpoint ck = Checkpoint::open_file(weights.string());
  std::map<std::string, Tensor> tensors;
  for (const std::string& name : ck.names()) tensors[name] = ck.load(name, ck.entry(name).dtype);
  tensors["transformer_blocks.9.attn1.to_q.weight"] = Tensor::zeros({4, 4});
  fs::remove(weights);
  write_safetensors(weights.string(), tensors);

  GenerateOptions o = small_run(m / "out.mp4");
  o.model_dir = m.model();
  std::vector<GenerateEvent> events;
  std::string e = error_of(o, &events);
  EXPECT_NE(e.find("1 tensor that CogVideoXTransformer3DModel does not use (transformer_blocks.9.attn1.to_q.weight)"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("--allow-unused-weights"), std::string::npos) << e;
  for (const GenerateEvent& ev : events) EXPECT_NE(ev.kind, GenerateEvent::Kind::step) << "no step ran";
  EXPECT_FALSE(fs::exists(o.output));

  o.compute.allow_unused_weights = true;
  events.clear();
  EXPECT_EQ(error_of(o, &events), "");
  int warned = 0;
  for (const GenerateEvent& ev : events)
    warned += ev.kind == GenerateEvent::Kind::warning && ev.message.find("transformer_blocks.9") != std::string::npos;
  EXPECT_EQ(warned, 1);
}

// The VAE's weights lack a tensor: the run fails at decoding, after the loop,
// and neither the video nor the frames folder appears.
TEST(GenerateBadInput, FailurePartWayLeavesNoFile) {
  ModelCopy m("partway");
  const fs::path weights = m.path / "model" / "vae" / "diffusion_pytorch_model.safetensors";
  Checkpoint vae = Checkpoint::open_file(weights.string());
  std::map<std::string, Tensor> kept;
  for (const std::string& name : vae.names())
    if (name != "decoder.conv_out.conv.weight") kept[name] = vae.load(name, vae.entry(name).dtype);
  ASSERT_EQ(kept.size() + 1, vae.size());
  fs::remove(weights);
  write_safetensors(weights.string(), kept);

  GenerateOptions o = small_run(m / "out.mp4");
  o.model_dir = m.model();
  o.frames_dir = m / "frames";
  std::vector<GenerateEvent> events;
  std::string e = error_of(o, &events);
  EXPECT_NE(e.find("decoder.conv_out.conv.weight"), std::string::npos) << e;
  int steps = 0;
  for (const GenerateEvent& ev : events) steps += ev.kind == GenerateEvent::Kind::step;
  EXPECT_EQ(steps, 3) << "the loop ran before the failure";
  EXPECT_FALSE(fs::exists(o.output));
  EXPECT_FALSE(fs::exists(o.frames_dir));
  for (const auto& entry : fs::directory_iterator(m.path))
    EXPECT_EQ(entry.path().filename(), "model") << "left behind: " << entry.path();
}

}  // namespace
}  // namespace pab
