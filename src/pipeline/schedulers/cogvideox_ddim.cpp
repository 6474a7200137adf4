// CogVideoXDDIMScheduler (diffusers scheduling_ddim_cogvideox.py): a
// deterministic DDIM step on the SNR-shifted table, written as
// x_prev = a_t * x + b_t * x_0 (no clipping, eta unused).
#include <cmath>

#include "pipeline/schedulers/step_math.h"

namespace pab {

CogVideoXDdimScheduler::CogVideoXDdimScheduler(SchedulerConfig config) : Scheduler(std::move(config)) {
  PAB_ASSERT(config_.kind == SchedulerKind::cogvideox_ddim);
}

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
  Tensor x0 = sched::predict_original_sample(config_.prediction_type, model_output, sample, c.sqrt_alpha, c.sqrt_beta);
  return {sched::scaled_sum(sample, c.a, x0, c.b), x0};
}

}  // namespace pab
