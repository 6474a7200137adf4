// CogVideoXDPMScheduler (diffusers scheduling_dpm_cogvideox.py): a
// stochastic DPM-Solver++(2M)-style step in log-SNR (lambda) that, after the
// first step, extrapolates x_0 from this step's and the previous step's.
#include <cmath>

#include "core/registry.h"
#include "pipeline/schedulers/step_math.h"

namespace pab {

CogVideoXDpmScheduler::CogVideoXDpmScheduler(CogVideoXSchedulerConfig config)
    : DdpmScheduler(config, ddpm_alphas_cumprod(config, config.f64_table(), config.snr_shift_scale),
                    config.f64_table()) {}

StepOutput CogVideoXDpmScheduler::step(int i, const Tensor& model_output, const Tensor& sample,
                                       const StepOptions& opts) {
  const int64_t t = timestep_at(i);
  check_in_order(i, next_step_);
  // The pipeline looks back to the previous entry of the timesteps.
  std::optional<int64_t> back;
  if (i > 0) back = int64_t(timesteps_[size_t(i - 1)]);
  StepOutput out =
      step_at(t, back, model_output, old_pred_original_sample_.defined() ? &old_pred_original_sample_ : nullptr, sample,
              opts.noise);
  old_pred_original_sample_ = out.pred_original_sample;
  ++next_step_;
  return out;
}

StepOutput CogVideoXDpmScheduler::step_at(int64_t t, std::optional<int64_t> t_back, const Tensor& model_output,
                                          const Tensor* old_pred_original_sample, const Tensor& sample,
                                          NoiseSource* noise) {
  if (num_inference_steps_ == 0) fail(class_name(), ": step before set_timesteps");
  sched::check_step_inputs(class_name(), model_output, sample);
  const int64_t t_prev = prev_timestep(t);
  struct Coefs {
    double sqrt_alpha, sqrt_beta, m1, m2, m3, m4, m_noise;
  };
  const Coefs c = sched::in_table_precision(f64_table_, [&](auto zero) {
    using T = decltype(zero);
    const T alpha = T(alpha_prod(t)), alpha_prev = T(alpha_prod(t_prev));
    auto lambda = [](T a) { return std::log(std::sqrt(a / (T(1) - a))); };  // log-SNR / 2
    // At zero terminal SNR lambda is -inf and h +inf: the IEEE results
    // (exp(-inf) = 0, expm1(-inf) = -1) are what diffusers computes too.
    const T lam = lambda(alpha), h = lambda(alpha_prev) - lam;
    Coefs k{};
    k.sqrt_alpha = std::sqrt(alpha);
    k.sqrt_beta = std::sqrt(T(1) - alpha);
    k.m1 = std::sqrt((T(1) - alpha_prev) / (T(1) - alpha)) * std::exp(-h);
    k.m2 = std::expm1(T(-2) * h) * std::sqrt(alpha_prev);
    if (t_back) {
      const T r = (lam - lambda(T(alpha_prod(*t_back)))) / h;
      const T half_inv_r = T(1) / (T(2) * r);
      k.m3 = T(1) + half_inv_r;
      k.m4 = half_inv_r;
    }
    k.m_noise = std::sqrt(T(1) - alpha_prev) * std::sqrt(T(1) - std::exp(T(-2) * h));
    return k;
  });

  Tensor x0 =
      sched::predict_original_sample(ddpm_config().prediction_type, model_output, sample, c.sqrt_alpha, c.sqrt_beta);
  StepOptions opts;
  opts.noise = noise;
  // The first-order update's noise is drawn even when the second-order update replaces it.
  Tensor first_noise = draw_noise(opts, sample);
  const bool second_order = old_pred_original_sample != nullptr && t_prev >= 0;
  if (!second_order) {
    Tensor prev = ops::add(sched::scaled_diff(sample, c.m1, x0, c.m2), ops::scale(first_noise, float(c.m_noise)));
    return {prev, x0};
  }
  PAB_ASSERT(t_back.has_value(), class_name(), ": a previous x_0 without the timestep it came from");
  sched::check_step_inputs(class_name(), *old_pred_original_sample, sample);
  Tensor denoised = sched::scaled_diff(x0, c.m3, *old_pred_original_sample, c.m4);
  Tensor second_noise = draw_noise(opts, sample);
  Tensor prev = ops::add(sched::scaled_diff(sample, c.m1, denoised, c.m2), ops::scale(second_noise, float(c.m_noise)));
  return {prev, x0};
}

PAB_REGISTER(SchedulerEntry, "CogVideoXDPMScheduler", {[](const JsonConfig& j) -> std::unique_ptr<Scheduler> {
               return std::make_unique<CogVideoXDpmScheduler>(CogVideoXSchedulerConfig::from_json(j));
             }});

}  // namespace pab
