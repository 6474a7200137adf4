// The DDPM family: schedulers over a discrete noise table (betas ->
// alphas_cumprod) with integer timesteps, as diffusers defines them:
//   DDIMScheduler           ddim.cpp            DDIM with eta, clipping or thresholding of x_0
//   CogVideoXDDIMScheduler  cogvideox_ddim.cpp  DDIM on the SNR-shifted table
//   CogVideoXDPMScheduler   cogvideox_dpm.cpp   DPM-Solver++(2M)-style steps with noise
//   PNDMScheduler           pndm.cpp            Runge-Kutta warm-up, then linear multistep (PRK, PLMS)
// (EulerAncestralDiscreteScheduler takes its sigmas from this table too, at
// f32 timesteps: euler_ancestral_discrete.cpp.)
// Timesteps are exactly the integers diffusers computes; the table is built
// in the precision diffusers holds it (f64 for the CogVideoX schedulers with
// scaled_linear betas, f32 otherwise) and the per-step coefficients are
// computed in that precision too.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "pipeline/schedulers/scheduler.h"

namespace pab {

enum class BetaSchedule { linear, scaled_linear, squaredcos_cap_v2 };
enum class TimestepSpacing { linspace, leading, trailing };
enum class PredictionType { epsilon, v_prediction, sample };

// The scheduler_config.json fields every DDPM-family class has.
struct DdpmConfig {
  std::string where;  // the file, for messages
  int64_t num_train_timesteps = 1000;
  double beta_start = 0.0001, beta_end = 0.02;
  BetaSchedule beta_schedule = BetaSchedule::linear;
  std::vector<double> trained_betas;  // empty: use beta_schedule
  bool set_alpha_to_one = true;
  int64_t steps_offset = 0;
  PredictionType prediction_type = PredictionType::epsilon;
  TimestepSpacing timestep_spacing = TimestepSpacing::leading;
  bool rescale_betas_zero_snr = false;
};

// The class's constructor defaults where the classes differ.
struct DdpmDefaults {
  double beta_start, beta_end;
  BetaSchedule beta_schedule;
  TimestepSpacing timestep_spacing = TimestepSpacing::leading;
};
// Reads the shared fields; missing keys take `defaults` or diffusers' common
// defaults, an unsupported value fails naming the file and the key. Without
// `prediction`, prediction_type is left to the caller (a class with more types).
DdpmConfig parse_ddpm_config(const JsonConfig& json, const DdpmDefaults& defaults, bool prediction = true);

// DDIMScheduler's config.
struct DdimConfig : DdpmConfig {
  bool clip_sample = true;
  double clip_sample_range = 1.0;
  bool thresholding = false;
  double dynamic_thresholding_ratio = 0.995;
  double sample_max_value = 1.0;
  static DdimConfig from_json(const JsonConfig& json);
};

// CogVideoXDDIMScheduler's and CogVideoXDPMScheduler's config (the same
// fields; the steps never clip or threshold).
struct CogVideoXSchedulerConfig : DdpmConfig {
  double snr_shift_scale = 3.0;
  static CogVideoXSchedulerConfig from_json(const JsonConfig& json);
  // diffusers builds these classes' scaled_linear betas (and so the table) in f64.
  bool f64_table() const { return trained_betas.empty() && beta_schedule == BetaSchedule::scaled_linear; }
};

// alphas_cumprod as diffusers holds it, in f64 or (rounded to) f32: from the
// betas, either with DDIMScheduler's zero-terminal-SNR rescale of the betas
// or, given `snr_shift_scale`, with the CogVideoX SNR shift and the rescale of
// alphas_cumprod itself.
std::vector<double> ddpm_alphas_cumprod(const DdpmConfig& config, bool f64,
                                        std::optional<double> snr_shift_scale = std::nullopt);

class DdpmScheduler : public Scheduler {
 public:
  const DdpmConfig& ddpm_config() const { return ddpm_; }
  // alphas_cumprod[t] for t in [0, num_train_timesteps), holding the values diffusers holds.
  const std::vector<double>& alphas_cumprod() const { return alphas_cumprod_; }
  double final_alpha_cumprod() const { return final_alpha_cumprod_; }
  // True when diffusers keeps the table (and the step coefficients) in f64.
  bool f64_table() const { return f64_table_; }

 protected:
  DdpmScheduler(const DdpmConfig& config, std::vector<double> alphas_cumprod, bool f64_table);

  // The timesteps of diffusers' set_timesteps for the config's spacing
  // (descending integers; "trailing" can give n + 1 of them). Fails if n is
  // out of [1, num_train_timesteps] or a timestep falls outside the table
  // (diffusers gives -1 for some step counts with "trailing", and more than
  // the table with a large steps_offset).
  Schedule make_schedule(int n, const TimestepOptions& options) const override;

  int64_t timestep_at(int i) const;  // checks set_timesteps ran and i is in range
  // The timestep step t moves to: t - train_timesteps // n (not the next
  // entry of timesteps(): diffusers' formula, whatever the spacing).
  int64_t prev_timestep(int64_t t) const { return t - ddpm_.num_train_timesteps / num_inference_steps_; }
  double alpha_prod(int64_t t) const;  // alphas_cumprod[t], or the final one for t < 0

  bool f64_table_ = false;

 private:
  DdpmConfig ddpm_;
  std::vector<double> alphas_cumprod_;
  double final_alpha_cumprod_ = 1.0;
};

// DDIMScheduler: DDIM with eta, clipping or dynamic thresholding of x_0.
class DdimScheduler : public DdpmScheduler {
 public:
  explicit DdimScheduler(DdimConfig config);
  const char* class_name() const override { return "DDIMScheduler"; }
  const DdimConfig& config() const { return config_; }
  StepOutput step(int i, const Tensor& model_output, const Tensor& sample, const StepOptions& opts = {}) override;
  // diffusers' step(model_output, timestep, sample, eta, generator): any timestep.
  StepOutput step_at(int64_t timestep, const Tensor& model_output, const Tensor& sample, const StepOptions& opts);

 private:
  DdimConfig config_;
};

// CogVideoXDDIMScheduler: deterministic DDIM on the SNR-shifted table.
class CogVideoXDdimScheduler : public DdpmScheduler {
 public:
  explicit CogVideoXDdimScheduler(CogVideoXSchedulerConfig config);
  const char* class_name() const override { return "CogVideoXDDIMScheduler"; }
  StepOutput step(int i, const Tensor& model_output, const Tensor& sample, const StepOptions& opts = {}) override;
  StepOutput step_at(int64_t timestep, const Tensor& model_output, const Tensor& sample);
};

// CogVideoXDPMScheduler: stochastic DPM-Solver++(2M)-style steps that use the
// previous step's x_0. step(i, ...) keeps that state; step_at is diffusers'
// stateless step(model_output, old_pred_original_sample, timestep,
// timestep_back, sample, generator). Each step draws one noise tensor, and a
// second one when it uses the previous x_0 (i > 0 and not the last step to
// t < 0): the first draw is then discarded, as in diffusers.
class CogVideoXDpmScheduler : public DdpmScheduler {
 public:
  explicit CogVideoXDpmScheduler(CogVideoXSchedulerConfig config);
  const char* class_name() const override { return "CogVideoXDPMScheduler"; }
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

}  // namespace pab
