// FlowMatchEulerDiscreteScheduler (diffusers
// scheduling_flow_match_euler_discrete.py): Euler steps of a flow-matching
// ODE, x_next = x + (sigma_next - sigma) * v, on sigmas from 1 towards 0
// shifted statically (`shift`) or by the caller's mu (use_dynamic_shifting),
// optionally stretched to end at shift_terminal, inverted (Mochi), or stepped
// stochastically (x_0 re-noised to the next sigma).
//
// Precision as diffusers holds it: the constructor's sigma range in f32, the
// schedule in f64 (numpy) and then f32, the steps in f32.
#include <cmath>

#include "core/registry.h"
#include "pipeline/schedulers/step_math.h"

namespace pab {

namespace {

constexpr const char* kName = "FlowMatchEulerDiscreteScheduler";

struct FlowMatchEulerConfig {
  std::string where;
  int64_t num_train_timesteps = 1000;
  sched::FlowShift shift;  // shift, use_dynamic_shifting, time_shift_type, shift_terminal
  bool invert_sigmas = false;
  bool stochastic_sampling = false;

  static FlowMatchEulerConfig from_json(const JsonConfig& j) {
    FlowMatchEulerConfig c;
    c.where = j.where();
    c.num_train_timesteps = j.get_size("num_train_timesteps", 1000);
    const double shift = j.get_or<double>("shift", 1.0);
    if (!(shift > 0) || !std::isfinite(shift)) j.unsupported("shift", "expected a positive number");
    c.shift = sched::FlowShift::from_json(j, shift);
    // What a pipeline computes mu from (diffusers' calculate_shift, reading the config): checked here only.
    j.get_or<double>("base_shift", 0.5);
    j.get_or<double>("max_shift", 1.15);
    j.get_or<int64_t>("base_image_seq_len", 256);
    j.get_or<int64_t>("max_image_seq_len", 4096);
    c.invert_sigmas = j.get_or<bool>("invert_sigmas", false);
    c.stochastic_sampling = j.get_or<bool>("stochastic_sampling", false);
    sched::refuse_sigma_variants(j, kName);
    return c;
  }
};

class FlowMatchEulerScheduler final : public Scheduler {
 public:
  explicit FlowMatchEulerScheduler(FlowMatchEulerConfig config) : Scheduler(config.where), c_(std::move(config)) {
    // The constructor's table: sigmas k / N for k = N..1 in f32, shifted in
    // f32 unless the shift is dynamic; its ends bound every schedule.
    const auto n = float(c_.num_train_timesteps);
    auto table_sigma = [&](int64_t k) {
      const float s = float(k) / n;
      if (c_.shift.dynamic) return s;
      return float(c_.shift.shift) * s / (1.0f + float(c_.shift.shift - 1) * s);
    };
    sigma_max_ = table_sigma(c_.num_train_timesteps);
    sigma_min_ = table_sigma(1);
  }

  const char* class_name() const override { return kName; }

  StepOutput step(int i, const Tensor& model_output, const Tensor& sample, const StepOptions& opts) override {
    check_step(i);
    sched::check_step_inputs(kName, model_output, sample);
    const auto sigma = float(sigmas_[size_t(i)]), next = float(sigmas_[size_t(i) + 1]);
    if (c_.stochastic_sampling) {
      Tensor x0 = ops::sub(sample, ops::scale(model_output, sigma));
      Tensor noise = draw_noise(opts, sample);
      return {sched::scaled_sum(x0, 1.0f - next, noise, next), Tensor()};
    }
    return {ops::add(sample, ops::scale(model_output, next - sigma)), Tensor()};
  }

 private:
  Schedule make_schedule(int n, const TimestepOptions& options) const override {
    const auto train = double(c_.num_train_timesteps);
    // Timesteps from sigma_max * N to sigma_min * N (Python floats), sigmas in f64.
    std::vector<double> s = sched::np_linspace(double(sigma_max_) * train, double(sigma_min_) * train, n);
    for (double& v : s) v = v / train;
    c_.shift.apply(s, options.mu, where());
    Schedule out;
    for (double v : s) {
      float sigma = float(v);
      if (c_.invert_sigmas) sigma = 1.0f - sigma;
      out.sigmas.push_back(sigma);
      out.timesteps.push_back(sigma * float(c_.num_train_timesteps));
    }
    out.sigmas.push_back(c_.invert_sigmas ? 1.0 : 0.0);
    if (n > 1 && out.timesteps[0] == out.timesteps[1])
      fail(where(), ": ", n, " inference steps give equal first timesteps (", out.timesteps[0],
           "), and diffusers then starts at the second; choose fewer steps");
    return out;
  }

  FlowMatchEulerConfig c_;
  float sigma_max_ = 1, sigma_min_ = 0;
};

}  // namespace

PAB_REGISTER(SchedulerEntry, kName, {[](const JsonConfig& j) -> std::unique_ptr<Scheduler> {
               return std::make_unique<FlowMatchEulerScheduler>(FlowMatchEulerConfig::from_json(j));
             }});

}  // namespace pab
