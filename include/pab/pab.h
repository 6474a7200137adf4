// The pab C++ API: everything the `pab` command does, as functions that
// report failure through Status (no exception escapes).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace pab {

struct Status {
  bool ok = true;
  std::string message;  // one line naming what failed and where
  static Status success() { return {}; }
  static Status error(std::string m) { return {false, std::move(m)}; }
};

// Where heavy work runs, and how models load. "Not given" is std::nullopt.
struct ComputeOptions {
  std::string device = "cpu";  // a backend's device name: "cpu", or "cuda" where built
  std::string dtype = "f32";   // "f32", "bf16" or "f16" (the CPU computes in f32 only)
  // Sequence parallelism: the video tokens split over this many ranks, one
  // process each (rank 0 is the caller; Model::open, replay, bench and
  // calibrate start the others as copies of the running program with the same
  // arguments, and rank 0 alone writes outputs).
  int gpus = 1;
  std::string comm = "auto";  // "auto", "nccl" (one GPU per rank) or "host" (shared memory, any device)
  bool cfg_parallel = false;  // the two CFG branches on separate halves of the ranks
  // The most memory a run may use, in bytes (--max-memory). Before any weight
  // is loaded, what the run needs is estimated and checked against the
  // smaller of this and what the device has free (the host's available
  // memory for the CPU).
  std::optional<uint64_t> max_memory;
  // Checkpoint tensors that the model does not use are an error (a sign of the
  // wrong model or a broken conversion) unless this is set; then a warning.
  bool allow_unused_weights = false;
};

// Parses a memory size such as "24G", "24GiB", "512M" or "1.5T" (K, M, G, T:
// powers of 1024; a plain number is bytes) for ComputeOptions::max_memory.
Status parse_memory_size(const std::string& text, uint64_t* bytes);

// Describes each component of a diffusers model folder (or a single component
// folder): class, key config values, tensor and parameter counts, dtypes.
Status inspect_model(const std::string& dir, std::string* report);

// A pipeline folder made of components downloaded as separate repositories
// (pab assemble): model_index.json, the scheduler's config and a symbolic
// link per component to its folder; nothing is copied or converted.
struct AssembleRequest {
  std::string pipeline;                        // what to assemble, e.g. "open-sora-1.2" (assembly_recipes lists them)
  std::string transformer, vae, text_encoder;  // the downloaded folders
  std::string tokenizer;                       // empty: the text encoder's folder holds it
  std::string output;                          // a new or empty folder, or one pab assembled before
};
// Checks every folder and the pipeline they make before writing; `report`
// says what was linked.
Status assemble(const AssembleRequest& request, std::string* report);
// "name: what it takes", one per pipeline pab can assemble.
std::vector<std::string> assembly_recipes();

// The cache method and its settings; neither preset nor file given: the
// method's default for the model. The one method today is Pyramid Attention
// Broadcast, "pab" (--pab and --pab-config): its default is the settings
// published with the original method for the model, and off, with a note,
// for a model without any.
struct CacheOptions {
  std::string method = "pab";
  // --pab: "default", "off", or the short form "spatial=2@100-800,temporal=3@100-800,cross=6@100-900"
  std::optional<std::string> preset;
  // --pab-config: a YAML or JSON file in the diffusers or the VideoSys dialect
  std::optional<std::string> file;
  bool any() const { return preset.has_value() || file.has_value(); }
};

struct ReplayOptions {
  std::string case_dir;  // holds case.json, inputs.safetensors, transformer/
  std::string output;    // .safetensors to write
  ComputeOptions compute;
  CacheOptions pab;        // PAB settings replacing the case's `pab` for the PAB run (method "pab" only)
  std::string pab_report;  // PNG of the PAB run's broadcast map (--pab-report); empty: none
};
// Runs the case's denoising loop without and with PAB and writes the outputs
// under the reference's names; `summary` gets one line on what ran.
Status replay(const ReplayOptions& opts, std::string* summary);

struct BenchRequest {
  // cogvideox-2b, cogvideox-5b, latte-1 (the transformer's loop) or
  // cogvideox-2b-pipeline (prompt to frames: T5 encode, denoise, VAE decode)
  std::string workload;
  bool pab = false;  // also run with PAB and report the speed-up
  int steps = 50;
  bool json = false;
  // The pipeline workload's VAE decode: on (default: the tiled run of docs/performance.md), off or auto
  std::string tiling = "on";
  ComputeOptions compute;  // default: cuda, bf16

  BenchRequest() {
    compute.device = "cuda";
    compute.dtype = "bf16";
  }
};
// Times the workload; `report` gets text or JSON.
Status bench(const BenchRequest& request, std::string* report);

// One video from an opened model (Model::generate). Values not given take the
// pipeline's defaults: diffusers' call defaults and the sizes and frame count
// in the model folder's configs. A value given out of range is an error,
// never replaced by a default.
struct GenerateRequest {
  std::string prompt;
  std::string negative_prompt;               // diffusers' default: ""
  std::optional<int> steps;                  // >= 1; default 50
  std::optional<double> guidance;            // finite; default CogVideoX 6, Latte 7.5; <= 1 runs without CFG
  bool dynamic_cfg = false;                  // CogVideoX's use_dynamic_cfg
  std::optional<int> frames, height, width;  // >= 1; default from the model's configs
  // Open-Sora: a named size and aspect ratio instead of height and width
  // ("144p" ... "720p", "9:16"), a named length instead of frames ("2s" = 51 frames).
  std::optional<std::string> resolution, aspect_ratio, duration;
  std::optional<int> max_sequence_length;  // CogVideoX prompt tokens; default the transformer's max_text_seq_length
  uint64_t seed = 42;                      // as torch.Generator("cpu").manual_seed(seed) in diffusers
  std::string output;                      // video file: .mp4 (H.264), .webm (VP9) or .gif; empty: none
  std::string frames_dir;                  // folder of frame_NNNN.png files; empty: none
  std::string pab_report;                  // PNG picture of what the cache computed and reused; empty: none
  std::optional<double> fps;               // in (0, 1000]; default the model's: 8, Open-Sora 24
  std::string tiling = "auto";             // VAE tiling: "auto" (by frame size), "on" or "off"
  CacheOptions cache;                      // neither preset nor file given: the method's default for the model
};

// Text to video in one call (pab generate): Model::open, then generate.
struct GenerateOptions : GenerateRequest {
  std::string model_dir;  // a diffusers pipeline folder (model_index.json): CogVideoX or Latte
  ComputeOptions compute;
};

// Progress while generating.
struct GenerateEvent {
  enum class Kind { plan, note, warning, phase, step };
  Kind kind = Kind::plan;
  // plan: what will run; note, warning: the text; phase: "text", "denoise", "decode", "write"
  std::string message;
  int step = 0, steps = 0;  // step: 0-based index and count
  double timestep = 0;      // step: the timestep the model ran at (integer for DDPM schedulers)
  double seconds = 0;       // step or phase time
};
using GenerateCallback = std::function<void(const GenerateEvent&)>;

struct GenerateResult {
  std::string pipeline;  // e.g. "CogVideoXPipeline"
  int frames = 0, height = 0, width = 0, steps = 0;
  double fps = 0;
  double text_seconds = 0, denoise_seconds = 0, decode_seconds = 0, write_seconds = 0, total_seconds = 0;
  bool tiled = false;
  std::string cache;          // the cache method and settings used ("off" when none)
  std::string cache_skipped;  // what the cache reused instead of computing, e.g. "12 of 36 spatial attention calls"
  std::vector<std::string> warnings;
  std::vector<std::string> written;  // the files and folders written
};
// A diffusers pipeline folder, opened once to generate many videos: every
// config read and checked, every weights file opened (nothing loaded yet),
// the sequence-parallel ranks started. Each component loads when its phase
// of a generation starts and is freed when it ends, so that no two are held
// at once. Not for use from several threads at once.
class Model {
 public:
  static Status open(const std::string& dir, const ComputeOptions& compute, std::unique_ptr<Model>* model);
  ~Model();
  const std::string& pipeline() const;  // e.g. "CogVideoXPipeline"

  // Generates a video; checks the outputs can be written and the request
  // fits the model before any heavy work, and leaves no partial file on
  // failure. In a sequence-parallel run only rank 0 writes.
  Status generate(const GenerateRequest& request, GenerateResult* result, const GenerateCallback& progress = {});

  struct Impl;

 private:
  explicit Model(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Model::open(opts.model_dir, opts.compute) and one generate, the request
// checked before the folder is read.
Status generate(const GenerateOptions& opts, GenerateResult* result, const GenerateCallback& progress = {});

// For programs that are the `pab` command or run like it: first thing in
// main, before any thread starts. Records the arguments (sequence-parallel
// runs start copies of the program with them) and installs the interrupt
// cleanup (SIGINT, SIGTERM and SIGHUP remove the temporaries of unfinished
// outputs).
void init_program(int argc, char** argv);
// The device names this build has a backend for ("cpu" first), as
// ComputeOptions::device takes them.
std::vector<std::string> device_names();
// pab calibrate: runs a full generation, measures how much every attention
// site's output changes from step to step and what the sites cost, and
// proposes the PAB settings with the smallest predicted deviation that reach
// the target speed-up (docs/calibration.md). Give case_dir, or model_dir and prompt.
struct CalibrateOptions {
  std::string case_dir;           // --case: a transformer fixture case (case.json, inputs, transformer/)
  std::string model_dir, prompt;  // --model, --prompt: a pipeline folder and a prompt
  std::string negative_prompt;
  std::optional<int> steps;  // pipeline steps; default: the pipeline's
  uint64_t seed = 42;
  std::optional<double> target_speedup;    // >= 1; default: that of the settings published for the model
  std::string counting = "diffusers";      // the proposal's counting rule: diffusers or videosys
  int max_range = 8;                       // the largest range tried
  bool verify = false;                     // run the proposal and report measured speed-up and quality
  std::string output_dir = "calibration";  // changes.csv, curves.png, proposal.yaml, proposal_map.png
  bool json = false;
  ComputeOptions compute;
};
// `report` gets text or JSON, also when the target is out of reach (then the
// status is an error saying so, after the files are written).
Status calibrate(const CalibrateOptions& opts, std::string* report);

// pab compare A B: PSNR, SSIM and absolute errors between two videos (video
// files or folders of frame_NNNN.png), per frame and overall, in 8-bit levels.
struct CompareOptions {
  std::string a, b;
  bool json = false;
};
Status compare_videos(const CompareOptions& opts, std::string* report);

}  // namespace pab
