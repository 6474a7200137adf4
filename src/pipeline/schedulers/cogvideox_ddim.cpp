// CogVideoXDDIMScheduler (diffusers scheduling_ddim_cogvideox.py): a
// deterministic DDIM step on the SNR-shifted table, written as
// x_prev = a_t * x + b_t * x_0 (no clipping, eta unused).
#include <cmath>

#include "core/registry.h"
#include "pipeline/schedulers/step_math.h"

namespace pab {

CogVideoXDdimScheduler::CogVideoXDdimScheduler(CogVideoXSchedulerConfig config)
    : DdpmScheduler(config, ddpm_alphas_cumprod(config, config.f64_table(), config.snr_shift_scale),
                    config.f64_table()) {}

StepOutput CogVideoXDdimScheduler::step(int i, const Tensor& model_output, const Tensor& sample, const StepOptions&) {
  return step_at(timestep_at(i), model_output, sample);
}

StepOutput CogVideoXDdimScheduler::step_at(int64_t t, const Tensor& model_output, const Tensor& sample) {
  if (num_inference_steps_ == 0) fail(class_name(), ": step before set_timesteps");
  sched::check_step_inputs(class_name(), model_output, sample);
  struct Coefs {
    double sqrt_alpha, sqrt_beta, a, b;
  };
  const Coefs c = sched::in_table_precision(f64_table_, [&](auto zero) {
    using T = decltype(zero);
    const T alpha = T(alpha_prod(t)), alpha_prev = T(alpha_prod(prev_timestep(t)));
    const T a = std::sqrt((T(1) - alpha_prev) / (T(1) - alpha));
    const T b = std::sqrt(alpha_prev) - std::sqrt(alpha) * a;
    return Coefs{std::sqrt(alpha), std::sqrt(T(1) - alpha), a, b};
  });
  Tensor x0 =
      sched::predict_original_sample(ddpm_config().prediction_type, model_output, sample, c.sqrt_alpha, c.sqrt_beta);
  return {sched::scaled_sum(sample, c.a, x0, c.b), x0};
}

PAB_REGISTER(SchedulerEntry, "CogVideoXDDIMScheduler", {[](const JsonConfig& j) -> std::unique_ptr<Scheduler> {
               return std::make_unique<CogVideoXDdimScheduler>(CogVideoXSchedulerConfig::from_json(j));
             }});

}  // namespace pab
