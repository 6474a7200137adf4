// EulerAncestralDiscreteScheduler (diffusers
// scheduling_euler_ancestral_discrete.py): ancestral sampling with Euler
// steps in the noise level sigma = sqrt((1 - alpha_cumprod) / alpha_cumprod)
// of the DDPM table (Karras et al. 2022, k-diffusion's sample_euler_ancestral).
// Each step splits the move from sigma to sigma_next into a deterministic
// Euler step down to sigma_down and fresh noise of size sigma_up, with
// sigma_down^2 + sigma_up^2 = sigma_next^2; the model sees the sample scaled
// to unit variance, x / sqrt(sigma^2 + 1), and the first latents are drawn
// with init_noise_sigma. Open-Sora-Plan v1.2 samples with
// EulerAncestralDiscreteScheduler() (linear betas, linspace spacing).
//
// Each step draws one standard normal tensor shaped like the model output
// from StepOptions::noise, the last step too (its sigma_up is 0), as
// diffusers' step draws from the pipeline's generator: with TorchNoise seeded
// as the pipeline's torch.Generator("cpu").manual_seed(seed), the initial
// latents and then one draw per step reproduce its f32 draws.
//
// Precision as diffusers: the table and its sigmas in f32 (torch), the
// schedule's timesteps in f32 and their sigmas interpolated in f64 (numpy)
// then held in f32, the step's coefficients in f32 (0-d tensors).
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/registry.h"
#include "pipeline/schedulers/step_math.h"

namespace pab {

namespace {

constexpr const char* kName = "EulerAncestralDiscreteScheduler";

struct EulerAncestralConfig {
  DdpmConfig table;  // betas, spacing, steps_offset, zero-terminal-SNR rescale, prediction type

  static EulerAncestralConfig from_json(const JsonConfig& j) {
    EulerAncestralConfig c;
    c.table = parse_ddpm_config(j, {0.0001, 0.02, BetaSchedule::linear, TimestepSpacing::linspace}, false);
    // diffusers' step raises NotImplementedError for "sample".
    c.table.prediction_type = sched::parse_enum<PredictionType>(
        j, "prediction_type", PredictionType::epsilon,
        {{"epsilon", PredictionType::epsilon}, {"v_prediction", PredictionType::v_prediction}});
    return c;
  }
};

// np.interp(x, [0, 1, ..., n - 1], y) in f64: linear between the neighbouring
// entries, the end values outside them.
double interp(const std::vector<float>& y, double x) {
  const size_t n = y.size();
  if (!(x > 0)) return y.front();
  if (x >= double(n - 1)) return y.back();
  const auto j = size_t(x);
  if (double(j) == x) return y[j];
  const double slope = double(y[j + 1]) - double(y[j]);
  return slope * (x - double(j)) + double(y[j]);
}

class EulerAncestralScheduler final : public Scheduler {
 public:
  explicit EulerAncestralScheduler(EulerAncestralConfig config) : Scheduler(config.table.where), c_(std::move(config)) {
    std::vector<double> ac = ddpm_alphas_cumprod(c_.table, false);
    // With zero terminal SNR the last entry is 2^-24, so that the first sigma is finite.
    if (c_.table.rescale_betas_zero_snr) ac.back() = 0x1p-24;
    for (double a : ac) table_sigmas_.push_back(std::sqrt((1.0f - float(a)) / float(a)));
  }

  const char* class_name() const override { return kName; }

  // The largest sigma of the run (of the table before set_timesteps), or the
  // standard deviation of a sample at that sigma for "leading" spacing.
  float init_noise_sigma() const override {
    float top = 0;
    if (sigmas_.empty())
      top = *std::max_element(table_sigmas_.begin(), table_sigmas_.end());
    else
      top = float(*std::max_element(sigmas_.begin(), sigmas_.end()));
    if (c_.table.timestep_spacing == TimestepSpacing::leading) return std::sqrt(top * top + 1.0f);
    return top;
  }

  Tensor scale_model_input(const Tensor& sample, int i) const override {
    check_step(i);
    const auto sigma = float(sigmas_[size_t(i)]);
    return sched::div_scalar(sample, std::sqrt(sigma * sigma + 1.0f));
  }

  StepOutput step(int i, const Tensor& model_output, const Tensor& sample, const StepOptions& opts) override {
    check_step(i);
    sched::check_step_inputs(kName, model_output, sample);
    const auto sigma = float(sigmas_[size_t(i)]), next = float(sigmas_[size_t(i) + 1]);
    Tensor x0;
    if (c_.table.prediction_type == PredictionType::epsilon) {
      x0 = ops::sub(sample, ops::scale(model_output, sigma));
    } else {  // v_prediction: x_0 = c_out * v + c_skip * x
      const float var = sigma * sigma + 1.0f;
      x0 = ops::add(ops::scale(model_output, -sigma / std::sqrt(var)), sched::div_scalar(sample, var));
    }
    const float from2 = sigma * sigma, to2 = next * next;
    const float up = std::sqrt(to2 * (from2 - to2) / from2);
    const float down = std::sqrt(to2 - up * up);
    Tensor derivative = sched::div_scalar(ops::sub(sample, x0), sigma);
    Tensor prev = ops::add(sample, ops::scale(derivative, down - sigma));
    Tensor noise = draw_noise(opts, model_output);
    return {ops::add(prev, ops::scale(noise, up)), x0};
  }

 private:
  Schedule make_schedule(int n, const TimestepOptions&) const override {
    const int64_t train = c_.table.num_train_timesteps;
    std::vector<float> ts;  // descending, f32 as diffusers holds them
    switch (c_.table.timestep_spacing) {
      case TimestepSpacing::linspace: {
        const std::vector<double> v = sched::np_linspace(0.0, double(train - 1), n);
        for (auto it = v.rbegin(); it != v.rend(); ++it) ts.push_back(float(*it));
        break;
      }
      case TimestepSpacing::leading: {
        const int64_t ratio = train / n;
        for (int64_t k = n - 1; k >= 0; --k) ts.push_back(float(k * ratio) + float(c_.table.steps_offset));
        break;
      }
      case TimestepSpacing::trailing:
        for (double v : sched::np_rounded_arange_down(double(train), double(train) / double(n)))
          ts.push_back(float(v) - 1.0f);
        break;
    }
    if (ts.size() != size_t(n))
      fail(where(), ": ", n, " inference steps with trailing spacing give ", ts.size(),
           " timesteps in diffusers (the last at ", ts.back(), "); choose another step count");
    // diffusers finds the first step's index by its timestep, and takes the second of equal ones.
    if (std::count(ts.begin(), ts.end(), ts.front()) > 1)
      fail(where(), ": ", n, " inference steps give the first timestep (", ts.front(),
           ") more than once, and diffusers would start at the second; choose fewer steps");
    Schedule out;
    for (float t : ts) {
      out.timesteps.push_back(t);
      out.sigmas.push_back(float(interp(table_sigmas_, double(t))));
    }
    out.sigmas.push_back(0.0);
    return out;
  }

  EulerAncestralConfig c_;
  std::vector<float> table_sigmas_;  // sqrt((1 - a) / a) of the table, by training timestep
};

}  // namespace

PAB_REGISTER(SchedulerEntry, kName, {[](const JsonConfig& j) -> std::unique_ptr<Scheduler> {
               return std::make_unique<EulerAncestralScheduler>(EulerAncestralConfig::from_json(j));
             }});

}  // namespace pab
