// DDIMScheduler (diffusers scheduling_ddim.py): DDIM with optional noise
// (eta), and x_0 clipped or dynamically thresholded. Latte uses it with
// epsilon prediction (its learned-sigma channels dropped by the pipeline).
#include <algorithm>
#include <cmath>

#include "core/registry.h"
#include "pipeline/schedulers/step_math.h"

namespace pab {

namespace {

// torch.quantile(x, q) with linear interpolation, in f32 as torch computes it
// for an f32 input (x is sorted in place).
float quantile_f32(std::vector<float>& x, double q) {
  std::sort(x.begin(), x.end());
  const float rank = float(q) * float(x.size() - 1);
  const auto below = size_t(rank);
  const auto above = size_t(std::ceil(rank));
  const float lo = x[below], hi = x[std::min(above, x.size() - 1)];
  const float w = rank - float(below);
  // torch.lerp's two-sided formula
  return w < 0.5f ? lo + w * (hi - lo) : hi - (hi - lo) * (1.0f - w);
}

float clampf(float v, float lo, float hi) {
  return v < lo ? lo : v > hi ? hi : v;
}  // NaN passes, as in torch

// Dynamic thresholding (Imagen): per batch entry, s = the ratio-quantile of
// |x_0| clamped to [1, sample_max_value]; x_0 -> clamp(x_0, -s, s) / s.
// Runs on the host: a rarely used option, applied once per step.
Tensor threshold(const Tensor& x0, double ratio, double max_value) {
  Tensor h = x0.to(Device::cpu).clone();
  const int64_t batch = h.dim(0), per = h.numel() / batch;
  float* p = h.f32();
  for (int64_t b = 0; b < batch; ++b) {
    float* row = p + b * per;
    std::vector<float> mag(static_cast<size_t>(per));
    for (int64_t k = 0; k < per; ++k) mag[size_t(k)] = std::fabs(row[k]);
    const float s = std::min(std::max(quantile_f32(mag, ratio), 1.0f), float(max_value));
    for (int64_t k = 0; k < per; ++k) row[k] = clampf(row[k], -s, s) / s;
  }
  return x0.device() == Device::cpu ? h : h.to(x0.device());
}

Tensor clip(const Tensor& x0, double range) {
  Tensor h = x0.to(Device::cpu).clone();
  float* p = h.f32();
  const float r = float(range);
  for (int64_t k = 0; k < h.numel(); ++k) p[k] = clampf(p[k], -r, r);
  return x0.device() == Device::cpu ? h : h.to(x0.device());
}

struct DdimCoefs {
  double sqrt_alpha, sqrt_beta, sqrt_alpha_prev, direction, std_dev;
};

}  // namespace

DdimConfig DdimConfig::from_json(const JsonConfig& j) {
  DdimConfig c;
  static_cast<DdpmConfig&>(c) = parse_ddpm_config(j, {0.0001, 0.02, BetaSchedule::linear});
  c.clip_sample = j.get_or<bool>("clip_sample", true);
  c.clip_sample_range = j.get_or<double>("clip_sample_range", 1.0);
  c.sample_max_value = j.get_or<double>("sample_max_value", 1.0);
  c.thresholding = j.get_or<bool>("thresholding", false);
  c.dynamic_thresholding_ratio = j.get_or<double>("dynamic_thresholding_ratio", 0.995);
  if (c.thresholding && !(c.dynamic_thresholding_ratio >= 0 && c.dynamic_thresholding_ratio <= 1))
    j.unsupported("dynamic_thresholding_ratio", "expected a quantile in [0, 1]");
  return c;
}

// DDIMScheduler keeps every table in f32.
DdimScheduler::DdimScheduler(DdimConfig config)
    : DdpmScheduler(config, ddpm_alphas_cumprod(config, false), false), config_(std::move(config)) {}

StepOutput DdimScheduler::step(int i, const Tensor& model_output, const Tensor& sample, const StepOptions& opts) {
  return step_at(timestep_at(i), model_output, sample, opts);
}

StepOutput DdimScheduler::step_at(int64_t t, const Tensor& model_output, const Tensor& sample,
                                  const StepOptions& opts) {
  if (num_inference_steps_ == 0) fail(class_name(), ": step before set_timesteps");
  sched::check_step_inputs(class_name(), model_output, sample);
  const double eta = opts.eta;
  const DdimCoefs c = sched::in_table_precision(f64_table_, [&](auto zero) {
    using T = decltype(zero);
    const T a = T(alpha_prod(t)), a_prev = T(alpha_prod(prev_timestep(t)));
    const T beta = T(1) - a;
    const T variance = ((T(1) - a_prev) / beta) * (T(1) - a / a_prev);
    const T std_dev = T(eta) * std::sqrt(variance);
    return DdimCoefs{std::sqrt(a), std::sqrt(beta), std::sqrt(a_prev), std::sqrt(T(1) - a_prev - std_dev * std_dev),
                     std_dev};
  });

  Tensor x0 = sched::predict_original_sample(config_.prediction_type, model_output, sample, c.sqrt_alpha, c.sqrt_beta);
  Tensor eps;
  switch (config_.prediction_type) {
    case PredictionType::epsilon:
      eps = model_output;
      break;
    case PredictionType::sample:
      eps = sched::div_scalar(ops::sub(sample, ops::scale(x0, float(c.sqrt_alpha))), c.sqrt_beta);
      break;
    case PredictionType::v_prediction:
      eps = sched::scaled_sum(model_output, c.sqrt_alpha, sample, c.sqrt_beta);
      break;
  }
  if (config_.thresholding)
    x0 = threshold(x0, config_.dynamic_thresholding_ratio, config_.sample_max_value);
  else if (config_.clip_sample)
    x0 = clip(x0, config_.clip_sample_range);

  Tensor prev = sched::scaled_sum(x0, c.sqrt_alpha_prev, eps, c.direction);
  if (eta > 0) prev = ops::add(prev, ops::scale(draw_noise(opts, model_output), float(c.std_dev)));
  return {prev, x0};
}

PAB_REGISTER(SchedulerEntry, "DDIMScheduler", {[](const JsonConfig& j) -> std::unique_ptr<Scheduler> {
               return std::make_unique<DdimScheduler>(DdimConfig::from_json(j));
             }});

}  // namespace pab
