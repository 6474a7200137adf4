// The scheduler interface: what a denoising loop needs of a scheduler, for the
// DDPM family (discrete noise tables, integer timesteps) and for flow matching
// (sigmas in [0, 1], float timesteps) alike. Each class is one file that
// registers itself by diffusers' `_class_name` (core/registry.h):
//   DDIMScheduler                    (Latte)              ddim.cpp
//   CogVideoXDDIMScheduler           (CogVideoX-2b)       cogvideox_ddim.cpp
//   CogVideoXDPMScheduler            (CogVideoX-5b)       cogvideox_dpm.cpp
//   FlowMatchEulerDiscreteScheduler  (SD3, Flux, LTX)     flow_match_euler.cpp
//   UniPCMultistepScheduler          (Wan 2.1 / 2.2)      unipc_multistep.cpp
//   RFlowScheduler                   (Open-Sora 1.2)      rflow.cpp
//   PNDMScheduler                    (Open-Sora-Plan 1.1) pndm.cpp
//   EulerAncestralDiscreteScheduler  (Open-Sora-Plan 1.2) euler_ancestral_discrete.cpp
// The DDPM family shares its noise table and timestep spacing (ddpm.h).
//
// A run: set_timesteps(n, options); then for i in [0, timesteps().size()):
// the pipeline evaluates the model at timesteps()[i] on
// scale_model_input(x, i), applies guidance, and calls step(i, ...). That is
// n evaluations for most classes; PNDM's Runge-Kutta and multistep warm-ups
// take n + 9 or n + 1. The first latents are a unit normal draw times
// init_noise_sigma(). Every scheduler's numbers follow its reference
// implementation's precision (which values it holds in f32, f64 or as Python
// floats), so steps match the reference to float rounding.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/config.h"
#include "pipeline/noise.h"

namespace pab {

// What a schedule may depend on besides the step count; each scheduler reads
// what it needs and fails, naming the option, when a needed one is missing.
struct TimestepOptions {
  // use_dynamic_shifting (FlowMatchEulerDiscreteScheduler, UniPC): the shift
  // exponent the pipeline computes from the image sequence length.
  std::optional<double> mu;
  // RFlowScheduler's timestep transform: the video's height, width and frame
  // count in pixels (Open-Sora's model_args), and the dtype the pipeline holds
  // those values in (VideoSys computes the shift in that precision).
  int64_t height = 0, width = 0, frames = 0;
  DType size_dtype = DType::f32;
};

struct StepOptions {
  double eta = 0.0;              // DDIMScheduler's η (the other schedulers ignore it, as diffusers does)
  NoiseSource* noise = nullptr;  // for stochastic steps (CogVideoX DPM, DDIM with eta > 0, stochastic flow matching)
};

struct StepOutput {
  Tensor prev_sample;           // the sample at the next timestep: the next latents
  Tensor pred_original_sample;  // predicted x_0 where the reference returns one; undefined otherwise
};

class Scheduler {
 public:
  virtual ~Scheduler() = default;

  // The registered class name (diffusers' `_class_name`).
  virtual const char* class_name() const = 0;
  // The config file it was built from, for messages.
  const std::string& where() const { return where_; }

  // Sets the schedule of a run of n steps and resets per-run state. Fails
  // (naming the file) if n is outside what the class can run or an option it
  // needs is missing.
  void set_timesteps(int num_inference_steps, const TimestepOptions& options = {});
  // The timesteps the model is evaluated at, in order, with the values the
  // reference holds (integers for the DDPM family and UniPC, f32 values for
  // flow matching and RFlow).
  const std::vector<double>& timesteps() const { return timesteps_; }
  // The noise levels of the run where the scheduler has them: one per step
  // plus the terminal one (as diffusers' `sigmas`, f32 values); empty otherwise.
  const std::vector<double>& sigmas() const { return sigmas_; }
  int num_inference_steps() const { return num_inference_steps_; }

  // The standard deviation of the initial noise.
  virtual float init_noise_sigma() const { return 1.0f; }
  // The model input at step i (the identity for every class here).
  virtual Tensor scale_model_input(const Tensor& sample, int /*i*/) const { return sample; }

  // Step i of the run: model_output (the guided prediction, f32, the shape of
  // sample) at timesteps()[i] -> the sample at the next timestep. Stateful
  // schedulers (multistep, DPM) require i = 0, 1, 2, ... in order.
  virtual StepOutput step(int i, const Tensor& model_output, const Tensor& sample, const StepOptions& opts = {}) = 0;

 protected:
  explicit Scheduler(std::string where) : where_(std::move(where)) {}

  struct Schedule {
    std::vector<double> timesteps, sigmas;
  };
  // The schedule of n >= 1 steps; fails for step counts or options the class
  // cannot run.
  virtual Schedule make_schedule(int n, const TimestepOptions& options) const = 0;
  // Forgets per-run state (called by set_timesteps).
  virtual void reset_run() {}

  // Checks that set_timesteps ran and i indexes a step of the run.
  void check_step(int i) const;
  // Checks that steps run in order: i must be `expected` (stateful classes).
  void check_in_order(int i, int expected) const;
  // A draw shaped like `like` from opts.noise (f32, on like's device); fails without a source.
  Tensor draw_noise(const StepOptions& opts, const Tensor& like) const;

  std::vector<double> timesteps_, sigmas_;
  int num_inference_steps_ = 0;

 private:
  std::string where_;
};

// A scheduler class as the registry holds it: PAB_REGISTER(SchedulerEntry,
// "<_class_name>", {make}) in the class's own file.
struct SchedulerEntry {
  // Parses the class's config (missing keys take the reference's constructor
  // defaults; an unsupported value fails naming the file and key) and builds it.
  std::unique_ptr<Scheduler> (*make)(const JsonConfig& config);
};

// The scheduler the config's `_class_name` names; an unknown class fails
// naming the file, the key and the registered classes.
std::unique_ptr<Scheduler> make_scheduler(const JsonConfig& config);
// Reads `path` (a scheduler_config.json) and builds its scheduler.
std::unique_ptr<Scheduler> load_scheduler(const std::string& path);
// Every registered class name, sorted.
std::vector<std::string> scheduler_class_names();

}  // namespace pab
