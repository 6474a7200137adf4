// Diffusion schedulers as diffusers defines them, built from a
// scheduler/scheduler_config.json by its `_class_name`:
//   DDIMScheduler           (Latte)            schedulers/ddim.cpp
//   CogVideoXDDIMScheduler  (CogVideoX-2b)     schedulers/cogvideox_ddim.cpp
//   CogVideoXDPMScheduler   (CogVideoX-5b)     schedulers/cogvideox_dpm.cpp
// Timesteps are int64 exactly as diffusers computes them; the noise table is
// built in the precision diffusers holds it (f64 for the CogVideoX schedulers
// with scaled_linear betas, f32 otherwise) and the per-step coefficients are
// computed in that precision too, so steps match diffusers to float rounding.
//
// A run: set_timesteps(n); then for i in [0, n): the pipeline evaluates the
// model at timesteps()[i] on scale_model_input(x) and calls step(i, ...).
// The pipeline keeps guidance (including CogVideoX's dynamic CFG) and, for
// learned-sigma models (Latte), drops the variance channels before step.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/config.h"
#include "pipeline/noise.h"

namespace pab {

enum class SchedulerKind { ddim, cogvideox_ddim, cogvideox_dpm };
enum class BetaSchedule { linear, scaled_linear, squaredcos_cap_v2 };
enum class TimestepSpacing { linspace, leading, trailing };
enum class PredictionType { epsilon, v_prediction, sample };

// The scheduler_config.json fields; missing keys take the defaults of the
// class's constructor in diffusers (see parse_scheduler_config).
struct SchedulerConfig {
  std::string where;  // the file, for messages
  SchedulerKind kind = SchedulerKind::ddim;
  int64_t num_train_timesteps = 1000;
  double beta_start = 0.0001, beta_end = 0.02;
  BetaSchedule beta_schedule = BetaSchedule::linear;
  std::vector<double> trained_betas;  // empty: use beta_schedule
  bool clip_sample = true;            // DDIMScheduler only (the CogVideoX steps never clip)
  double clip_sample_range = 1.0;
  bool set_alpha_to_one = true;
  int64_t steps_offset = 0;
  PredictionType prediction_type = PredictionType::epsilon;
  bool thresholding = false;  // DDIMScheduler only
  double dynamic_thresholding_ratio = 0.995;
  double sample_max_value = 1.0;
  TimestepSpacing timestep_spacing = TimestepSpacing::leading;
  bool rescale_betas_zero_snr = false;
  double snr_shift_scale = 3.0;  // CogVideoX schedulers only
};

// Reads the typed config; unknown `_class_name` or an unsupported value fails
// with one line naming the file and the key. Keys the class does not take are
// ignored, as diffusers ignores them.
SchedulerConfig parse_scheduler_config(const JsonConfig& json);
const char* scheduler_class_name(SchedulerKind kind);

struct StepOptions {
  double eta = 0.0;              // DDIMScheduler's η (the CogVideoX steps ignore it, as diffusers does)
  NoiseSource* noise = nullptr;  // needed by CogVideoXDPMScheduler and by DDIM with eta > 0
};

struct StepOutput {
  Tensor prev_sample;           // x_{t-1}, the next latents
  Tensor pred_original_sample;  // predicted x_0
};

class Scheduler {
 public:
  explicit Scheduler(SchedulerConfig config);
  virtual ~Scheduler() = default;

  const SchedulerConfig& config() const { return config_; }
  const char* class_name() const { return scheduler_class_name(config_.kind); }

  // Sets the timesteps of a run of n steps (descending, int64, as diffusers'
  // set_timesteps) and resets per-run state. Fails if n is out of [1, train
  // timesteps] or a timestep falls outside the noise table (diffusers gives -1
  // for some step counts with "trailing", and more than the table with large
  // steps_offset).
  void set_timesteps(int num_inference_steps);
  const std::vector<int64_t>& timesteps() const { return timesteps_; }
  int num_inference_steps() const { return num_inference_steps_; }

  // The standard deviation of the initial noise (1 for these schedulers).
  float init_noise_sigma() const { return 1.0f; }
  // The model input at timestep t (the identity for these schedulers).
  Tensor scale_model_input(const Tensor& sample, int64_t /*timestep*/) const { return sample; }

  // Step i of the run: model_output (the guided prediction, same shape as
  // sample) at timesteps()[i] -> the sample at the next timestep. Stateful
  // schedulers (DPM) require i = 0, 1, 2, ... in order.
  virtual StepOutput step(int i, const Tensor& model_output, const Tensor& sample, const StepOptions& opts = {}) = 0;

  // alphas_cumprod[t] for t in [0, num_train_timesteps), after any SNR shift
  // and zero-terminal-SNR rescale, holding the values diffusers holds.
  const std::vector<double>& alphas_cumprod() const { return alphas_cumprod_; }
  double final_alpha_cumprod() const { return final_alpha_cumprod_; }
  // True when diffusers keeps the table (and the step coefficients) in f64.
  bool f64_table() const { return f64_table_; }

 protected:
  int64_t timestep_at(int i) const;  // checks set_timesteps ran and i is in range
  // The timestep step t moves to: t - train_timesteps // n (not the next
  // entry of timesteps(): diffusers' formula, whatever the spacing).
  int64_t prev_timestep(int64_t t) const { return t - config_.num_train_timesteps / num_inference_steps_; }
  double alpha_prod(int64_t t) const;  // alphas_cumprod[t], or the final one for t < 0
  Tensor draw_noise(const StepOptions& opts, const Tensor& like) const;  // fails without a source

  SchedulerConfig config_;
  std::vector<double> alphas_cumprod_;
  double final_alpha_cumprod_ = 1.0;
  bool f64_table_ = false;
  std::vector<int64_t> timesteps_;
  int num_inference_steps_ = 0;

 private:
  virtual void reset_run() {}
};

// DDIMScheduler: DDIM with eta, clipping or dynamic thresholding of x_0.
class DdimScheduler : public Scheduler {
 public:
  explicit DdimScheduler(SchedulerConfig config);
  StepOutput step(int i, const Tensor& model_output, const Tensor& sample, const StepOptions& opts = {}) override;
  // diffusers' step(model_output, timestep, sample, eta, generator): any timestep.
  StepOutput step_at(int64_t timestep, const Tensor& model_output, const Tensor& sample, const StepOptions& opts);
};

// CogVideoXDDIMScheduler: deterministic DDIM on the SNR-shifted table.
class CogVideoXDdimScheduler : public Scheduler {
 public:
  explicit CogVideoXDdimScheduler(SchedulerConfig config);
  StepOutput step(int i, const Tensor& model_output, const Tensor& sample, const StepOptions& opts = {}) override;
  StepOutput step_at(int64_t timestep, const Tensor& model_output, const Tensor& sample);
};

// CogVideoXDPMScheduler: stochastic DPM-Solver++(2M)-style steps that use the
// previous step's x_0. step(i, ...) keeps that state; step_at is diffusers'
// stateless step(model_output, old_pred_original_sample, timestep,
// timestep_back, sample, generator). Each step draws one noise tensor, and a
// second one when it uses the previous x_0 (i > 0 and not the last step to
// t < 0): the first draw is then discarded, as in diffusers.
class CogVideoXDpmScheduler : public Scheduler {
 public:
  explicit CogVideoXDpmScheduler(SchedulerConfig config);
  StepOutput step(int i, const Tensor& model_output, const Tensor& sample, const StepOptions& opts = {}) override;
  StepOutput step_at(int64_t timestep, std::optional<int64_t> timestep_back, const Tensor& model_output,
                     const Tensor* old_pred_original_sample, const Tensor& sample, NoiseSource* noise);

 private:
  void reset_run() override {
    old_pred_original_sample_ = Tensor();
    next_step_ = 0;
  }
  Tensor old_pred_original_sample_;
  int next_step_ = 0;
};

// The scheduler a config names.
std::unique_ptr<Scheduler> make_scheduler(const SchedulerConfig& config);
// Reads `path` (a scheduler_config.json) and builds its scheduler.
std::unique_ptr<Scheduler> load_scheduler(const std::string& path);

}  // namespace pab
