// The memory estimate made before a run: each phase's figure against the
// peak the CPU backend measured for it (live tensor bytes, as the CUDA
// allocator counts them), sizes and their parsing, and refusals that come
// before any work.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "cache/pab_config.h"
#include "pab/pab.h"
#include "pipeline/memory_plan.h"
#include "pipeline/video_pipeline.h"
#include "support/io_testing.h"
#include "support/testing.h"

namespace pab {
namespace {

using testing::data_path;

struct Measured {
  uint64_t text = 0, denoise = 0, decode = 0;
};

// Runs a generation phase by phase, measuring each phase's peak of live tensor bytes.
Measured measure(VideoPipeline& pipe, const VideoPlan& plan, PabPolicy* pab) {
  Backend& cpu = backend(Device::cpu);
  Measured m;
  const uint64_t base = cpu.memory_stats().in_use;
  cpu.reset_peak_memory();
  PromptEmbeddings e = pipe.encode_prompt(plan);
  m.text = cpu.memory_stats().peak - base;
  pipe.release_text_encoder();
  const uint64_t held = cpu.memory_stats().in_use - base;  // the embeddings
  cpu.reset_peak_memory();
  TorchNoise noise(1);
  DenoiseResult r = pipe.denoise(plan, e, pipe.initial_latents(plan, noise), pab, &noise);
  m.denoise = cpu.memory_stats().peak - base - held;
  pipe.release_transformer();
  e = PromptEmbeddings();
  const uint64_t latents = cpu.memory_stats().in_use - base;
  cpu.reset_peak_memory();
  Tensor frames = pipe.decode(plan, r.latents, TilingChoice::automatic);
  m.decode = cpu.memory_stats().peak - base - latents;
  return m;
}

const MemoryEstimate::Phase& phase(const MemoryEstimate& e, const std::string& name) {
  for (const auto& p : e.phases)
    if (p.name == name) return p;
  PAB_ASSERT(false, "no phase ", name);
}

struct Case {
  std::string pipeline;
  int frames, height, width;
  const char* pab;  // short form
};

// The estimate covers what each phase held at most and stays within 1.6x of
// it (measured: text 1.0-1.3x, denoise 1.0-1.2x, decode 1.1-1.5x; the tiny
// models' fixed parts weigh more than in full-size ones).
TEST(MemoryEstimate, CoversEachPhasesMeasuredPeak) {
  for (const Case& c :
       {Case{"cogvideox_ddim", 17, 64, 96, "spatial=2@100-900"}, Case{"cogvideox_ddim", 33, 96, 128, "off"},
        Case{"cogvideox_dpm", 9, 96, 64, "off"}, Case{"cogvideox_dpm", 25, 160, 96, "spatial=2@100-900"},
        Case{"latte", 4, 128, 96, "spatial=2@100-900,temporal=2@100-900,cross=2@100-900"},
        Case{"latte", 3, 192, 160, "off"}}) {
    SCOPED_TRACE(c.pipeline);
    auto pipe = VideoPipeline::open(data_path("fixtures/pipeline/" + c.pipeline + "/model"), LoadOptions{});
    VideoRequest req;
    req.prompt = "a red circle moves to the right";
    req.steps = std::string(c.pab) == "off" ? 2 : 4;  // PAB fills its cache over the steps
    req.frames = c.frames;
    req.height = c.height;
    req.width = c.width;
    const VideoPlan plan = pipe->plan(req);
    const PabConfig pab = resolve_pab_choice(std::string(c.pab), std::nullopt, pipe->transformer_class());
    std::optional<PabPolicy> policy;
    if (pab.any()) policy.emplace(pab);
    const MemoryEstimate e =
        pipe->estimate_memory(plan, policy ? policy->held_kinds() : std::vector<SiteKind>{}, TilingChoice::automatic);
    const Measured m = measure(*pipe, plan, policy ? &*policy : nullptr);
    for (auto [name, measured] : {std::pair{"text encoder", m.text}, {"denoise", m.denoise}, {"decode", m.decode}}) {
      const uint64_t estimated = phase(e, name).total();
      std::printf("%s %s: estimated %s, measured %s (%.2fx)\n", c.pipeline.c_str(),
                  MemoryEstimate::describe(phase(e, name)).c_str(), format_bytes(estimated).c_str(),
                  format_bytes(measured).c_str(), double(estimated) / double(measured));
      EXPECT_GE(estimated, measured) << name;
      EXPECT_LE(double(estimated), 1.6 * double(measured)) << name;
    }
  }
}

// A run that does not fit is refused before any work, naming its figure, the
// phase and the limit; the limit may be lowered, never silently raised.
TEST(MemoryEstimate, ARunThatDoesNotFitIsRefusedBeforeAnyWork) {
  testing::TempDir dir;
  GenerateOptions o;
  o.model_dir = data_path("fixtures/pipeline/cogvideox_ddim/model");
  o.prompt = "a cat";
  o.steps = 2;
  o.output = dir / "out.mp4";
  o.compute.max_memory = 4 << 20;
  std::vector<GenerateEvent> events;
  Status s = generate(o, nullptr, [&](const GenerateEvent& e) { events.push_back(e); });
  ASSERT_FALSE(s.ok);
  EXPECT_NE(s.message.find("this run needs about"), std::string::npos) << s.message;
  EXPECT_NE(s.message.find("decode:"), std::string::npos) << s.message;
  EXPECT_NE(s.message.find("more than the 4.00 MiB of --max-memory"), std::string::npos) << s.message;
  EXPECT_TRUE(events.empty()) << "refused before any work";
  EXPECT_FALSE(std::filesystem::exists(o.output));
  // Can fail: with room for it the same run goes through.
  o.compute.max_memory = 64 << 20;
  EXPECT_TRUE(generate(o, nullptr).ok);
  // Frames far beyond what the host holds.
  o.compute.max_memory.reset();
  o.height = 1 << 20;
  o.width = 1 << 20;
  s = generate(o, nullptr);
  ASSERT_FALSE(s.ok);
  EXPECT_NE(s.message.find("more than the"), std::string::npos) << s.message;
  EXPECT_NE(s.message.find("the host's available memory"), std::string::npos) << s.message;
}

TEST(MemorySizes, ParsedInPowersOf1024AndFormatted) {
  EXPECT_EQ(parse_memory_size("24G", ""), 24ull << 30);
  EXPECT_EQ(parse_memory_size("24GiB", ""), 24ull << 30);
  EXPECT_EQ(parse_memory_size("24 gb", ""), 24ull << 30);
  EXPECT_EQ(parse_memory_size("512M", ""), 512ull << 20);
  EXPECT_EQ(parse_memory_size("1.5T", ""), 3ull << 39);
  EXPECT_EQ(parse_memory_size("4096", ""), 4096u);
  EXPECT_EQ(parse_memory_size("2k", ""), 2048u);
  for (const char* bad : {"", "0", "-1G", "G", "12X", "nan", "inf", "1e30T", "3 G B", "0.0001"}) {
    try {
      parse_memory_size(bad, "--max-memory");
      ADD_FAILURE() << "'" << bad << "' accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("--max-memory '"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(format_bytes(512), "512 B");
  EXPECT_EQ(format_bytes(3ull << 29), "1.50 GiB");
  EXPECT_EQ(format_bytes(uint64_t(8.23 * (1ull << 30))), "8.23 GiB");
  EXPECT_THROW(add_bytes(UINT64_MAX, 1, "x"), Error);
  EXPECT_THROW(element_bytes(int64_t(1) << 62, DType::f32, "x"), Error);
  EXPECT_THROW(shape_numel({int64_t(1) << 40, int64_t(1) << 40}), Error);
  EXPECT_THROW(shape_numel({2, -3}), Error);
}

// Every integer of every component's config set to values far out of range:
// each run is refused with one line, quickly, before any heavy work (the
// sanitizer lane runs this too: no overflow anywhere on the way).
TEST(MemoryEstimate, HugeConfigSizesAreRefusedQuickly) {
  namespace fs = std::filesystem;
  testing::TempDir dir;
  const std::string model = dir / "model";
  testing::copy_tree(data_path("fixtures/pipeline/cogvideox_ddim/model"), model);
  const std::vector<int64_t> values = {0, -1, 1000000, (1 << 24) + 1, 2147483647, 2000000000};
  int runs = 0, refused = 0;
  double slowest = 0;
  for (const char* config :
       {"transformer/config.json", "vae/config.json", "text_encoder/config.json", "scheduler/scheduler_config.json"}) {
    const fs::path file = fs::path(model) / config;
    const nlohmann::json original = nlohmann::json::parse(testing::read_bytes(file.string()));
    for (auto it = original.begin(); it != original.end(); ++it) {
      if (!it.value().is_number_integer()) continue;
      for (int64_t v : values) {
        nlohmann::json edited = original;
        edited[it.key()] = v;
        testing::write_bytes(file.string(), edited.dump(1));
        GenerateOptions o;
        o.model_dir = model;
        o.prompt = "a cat";
        o.steps = 1;
        o.output = dir / "out.mp4";
        const auto t0 = std::chrono::steady_clock::now();
        Status s = generate(o, nullptr);
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        slowest = std::max(slowest, seconds);
        ++runs;
        refused += !s.ok;
        EXPECT_LT(seconds, 10) << config << " " << it.key() << " = " << v;
        if (!s.ok) {
          EXPECT_EQ(s.message.find('\n'), std::string::npos) << s.message;
        } else {
          EXPECT_TRUE(fs::exists(o.output)) << config << " " << it.key() << " = " << v;
        }
      }
      testing::write_bytes(file.string(), original.dump(1));
    }
  }
  std::printf("%d runs of edited configs, %d refused, slowest %.2f s\n", runs, refused, slowest);
  EXPECT_GT(refused, runs / 2);

  // The cases found by hand, with what each now says.
  auto error_with = [&](const char* config, const char* key, int64_t v) {
    const fs::path file = fs::path(model) / config;
    const nlohmann::json original = nlohmann::json::parse(testing::read_bytes(file.string()));
    nlohmann::json edited = original;
    edited[key] = v;
    testing::write_bytes(file.string(), edited.dump(1));
    GenerateOptions o;
    o.model_dir = model;
    o.prompt = "a cat";
    o.output = dir / "out.mp4";
    Status s = generate(o, nullptr);
    testing::write_bytes(file.string(), original.dump(1));
    return s.message;
  };
  std::string e = error_with("transformer/config.json", "max_text_seq_length", 2000000000);
  EXPECT_NE(e.find("'max_text_seq_length' = 2000000000: must be at most 16777216"), std::string::npos) << e;
  e = error_with("transformer/config.json", "sample_height", 1000000);
  EXPECT_NE(e.find("this run needs about"), std::string::npos) << e;
  e = error_with("transformer/config.json", "sample_height", 300000000);
  EXPECT_NE(e.find("'sample_height' = 300000000"), std::string::npos) << e;
  e = error_with("transformer/config.json", "attention_head_dim", 2000000000);
  EXPECT_NE(e.find("'attention_head_dim' = 2000000000"), std::string::npos) << e;
}

}  // namespace
}  // namespace pab
