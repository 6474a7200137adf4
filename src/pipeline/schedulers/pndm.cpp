// PNDMScheduler (diffusers scheduling_pndm.py): pseudo numerical methods for
// diffusion models (Liu et al. 2022). Every update is the paper's transfer
// x_t -> x_{t-δ} (formula 9) with an estimate of the noise:
//   - F-PNDM (skip_prk_steps false, the default, Open-Sora-Plan v1.1's):
//     three Runge-Kutta steps over the spacing's four highest timesteps, each
//     four model evaluations at the step's start, midpoint (twice) and end,
//     then linear multistep (PLMS) steps from the last four noise estimates;
//   - PLMS alone (skip_prk_steps true, Stable Diffusion's): a first step, the
//     same move redone with the mean of it and the next evaluation, then
//     multistep steps of order 2, 3 and 4 as the history grows.
// So a run of n steps evaluates the model n + 9 times (F-PNDM) or n + 1 times
// (PLMS; once for n = 1), at the timesteps() diffusers lists, which repeat
// some values. Quirks kept as diffusers has them: a PLMS step moves to
// t - num_train_timesteps // n whatever the spacing, and the redone first
// step starts from the timestep above the second.
//
// Precision as diffusers: the noise table and every coefficient in f32 (torch
// 0-d tensors), the Python-float weights (1/6, 1/24) rounded to f32, the
// integer divisions (/ 2, / 12) true divisions.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/registry.h"
#include "pipeline/schedulers/step_math.h"

namespace pab {

namespace {

constexpr const char* kName = "PNDMScheduler";
constexpr int kRungeKuttaSteps = 12;  // 3 steps of 4 evaluations

struct PndmConfig : DdpmConfig {
  bool skip_prk_steps = false;

  static PndmConfig from_json(const JsonConfig& j) {
    PndmConfig c;
    static_cast<DdpmConfig&>(c) = parse_ddpm_config(j, {0.0001, 0.02, BetaSchedule::linear}, false);
    c.set_alpha_to_one = j.get_or<bool>("set_alpha_to_one", false);  // this class's default
    // diffusers' step raises for "sample".
    c.prediction_type = sched::parse_enum<PredictionType>(
        j, "prediction_type", PredictionType::epsilon,
        {{"epsilon", PredictionType::epsilon}, {"v_prediction", PredictionType::v_prediction}});
    if (c.rescale_betas_zero_snr)
      j.unsupported("rescale_betas_zero_snr", "PNDMScheduler has no zero-terminal-SNR rescale (diffusers ignores it)");
    c.skip_prk_steps = j.get_or<bool>("skip_prk_steps", false);
    return c;
  }
};

class PndmScheduler final : public DdpmScheduler {
 public:
  explicit PndmScheduler(const PndmConfig& config)
      : DdpmScheduler(config, ddpm_alphas_cumprod(config, false), false), skip_prk_(config.skip_prk_steps) {}

  const char* class_name() const override { return kName; }

  StepOutput step(int i, const Tensor& model_output, const Tensor& sample, const StepOptions&) override {
    check_step(i);
    check_in_order(i, next_step_);
    sched::check_step_inputs(kName, model_output, sample);
    const Move m = move_of(timesteps_, i, num_inference_steps_);
    Tensor eps, from = sample;
    if (!skip_prk_ && i < kRungeKuttaSteps) {
      // The four evaluations of one Runge-Kutta step, weighted 1/6, 1/3, 1/3, 1/6;
      // each moves from the step's start, the last with the weighted sum.
      eps = model_output;
      switch (i % 4) {
        case 0:
          rk_sum_ = ops::scale(model_output, float(1.0 / 6));
          history_.push_back(model_output);
          rk_start_ = sample;
          break;
        case 1:
        case 2:
          rk_sum_ = ops::add(rk_sum_, ops::scale(model_output, float(1.0 / 3)));
          break;
        case 3:
          eps = ops::add(rk_sum_, ops::scale(model_output, float(1.0 / 6)));
          rk_sum_ = Tensor();
          break;
      }
      from = rk_start_;
    } else {
      if (i != 1) {
        if (history_.size() > 3) history_.erase(history_.begin(), history_.end() - 3);
        history_.push_back(model_output);
      }
      const size_t h = history_.size();
      auto e = [&](size_t back) -> const Tensor& { return history_[h - back]; };  // e(1): the newest
      if (h == 1 && i == 0) {
        eps = model_output;
        rk_start_ = sample;
      } else if (h == 1 && i == 1) {
        // The first move again, from its start, with the mean of both estimates.
        eps = sched::div_scalar(ops::add(model_output, e(1)), 2);
        from = rk_start_;
        rk_start_ = Tensor();
      } else if (h == 2) {
        eps = sched::div_scalar(ops::sub(ops::scale(e(1), 3), e(2)), 2);
      } else if (h == 3) {
        eps =
            sched::div_scalar(ops::add(ops::sub(ops::scale(e(1), 23), ops::scale(e(2), 16)), ops::scale(e(3), 5)), 12);
      } else {
        eps = ops::scale(ops::sub(ops::add(ops::sub(ops::scale(e(1), 55), ops::scale(e(2), 59)), ops::scale(e(3), 37)),
                                  ops::scale(e(4), 9)),
                         float(1.0 / 24));
      }
    }
    PAB_ASSERT(from.defined() && eps.defined(), kName, ": step ", i, " without its state");
    ++next_step_;
    return {transfer(from, m.t, m.prev, eps), Tensor()};
  }

 private:
  // The timestep a step moves from and the one it moves to (below 0: the final alpha).
  struct Move {
    int64_t t, prev;
  };
  Move move_of(const std::vector<double>& ts, int i, int n) const {
    const int64_t train = ddpm_config().num_train_timesteps, ratio = train / n;
    const auto at = [&](int k) { return int64_t(ts[size_t(k)]); };
    if (!skip_prk_ && i < kRungeKuttaSteps) {
      // Even evaluations step half a step ahead; all four move from the step's start.
      return {at(i / 4 * 4), at(i) - (i % 2 ? 0 : ratio / 2)};
    }
    if (i == 1) return {at(1) + ratio, at(1)};  // the redone first step (PLMS alone)
    return {at(i), at(i) - ratio};
  }

  Schedule make_schedule(int n, const TimestepOptions& options) const override {
    if (!skip_prk_ && n < 4)
      fail(where(), ": ", n,
           " inference steps: PNDMScheduler's Runge-Kutta warm-up (skip_prk_steps false) takes the 4 highest "
           "timesteps, so it needs at least 4 (diffusers fails for fewer); set skip_prk_steps or take more steps");
    // The spacing's timesteps (the DDPM family's, checked inside the table), ascending as diffusers holds them here.
    std::vector<double> up = DdpmScheduler::make_schedule(n, options).timesteps;
    std::reverse(up.begin(), up.end());
    const size_t len = up.size();
    std::vector<double> ts;
    if (skip_prk_) {
      // All but the last, the second-to-last again, the last; descending.
      ts.assign(up.begin(), up.end() - 1);
      if (len >= 2) ts.push_back(up[len - 2]);
      ts.push_back(up.back());
      std::reverse(ts.begin(), ts.end());
    } else {
      // The four highest timesteps each with its midpoint above it, less the
      // last midpoint; every value twice but the ends; descending.
      const int64_t half = ddpm_config().num_train_timesteps / n / 2;
      std::vector<double> points;
      for (size_t k = len - 4; k < len; ++k) {
        points.push_back(up[k]);
        points.push_back(up[k] + double(half));
      }
      points.pop_back();
      std::vector<double> rk;
      for (double v : points) rk.insert(rk.end(), {v, v});
      ts.assign(rk.rbegin() + 1, rk.rend() - 1);
      // Then the multistep steps, from the fourth-highest timestep's neighbour down.
      for (size_t k = len - 3; k-- > 0;) ts.push_back(up[k]);
    }
    // Every step's timestep indexes the table (the redone first step's can pass its top).
    const int64_t train = ddpm_config().num_train_timesteps;
    for (int i = 0; i < int(ts.size()); ++i) {
      const Move m = move_of(ts, i, n);
      if (m.t < 0 || m.t >= train)
        fail(where(), ": ", n, " inference steps with this timestep_spacing/steps_offset make step ", i,
             " start from timestep ", m.t, " (as diffusers computes it), outside the ", train,
             " training timesteps; choose another step count");
    }
    return {std::move(ts), {}};
  }

  void reset_run() override {
    history_.clear();
    rk_sum_ = Tensor();
    rk_start_ = Tensor();
    next_step_ = 0;
  }

  // Formula (9): x_t -> x_prev given the noise estimate `eps` (converted from
  // v_prediction at t first), in f32.
  Tensor transfer(const Tensor& x, int64_t t, int64_t prev, Tensor eps) const {
    const auto a = float(alpha_prod(t)), a_prev = float(alpha_prod(prev));
    const float b = 1.0f - a, b_prev = 1.0f - a_prev;
    if (ddpm_config().prediction_type == PredictionType::v_prediction)
      eps = sched::scaled_sum(eps, std::sqrt(a), x, std::sqrt(b));
    const float x_coef = std::sqrt(a_prev / a);
    const float denom = a * std::sqrt(b_prev) + std::sqrt(a * b * a_prev);
    return ops::sub(ops::scale(x, x_coef), sched::div_scalar(ops::scale(eps, a_prev - a), denom));
  }

  bool skip_prk_;
  std::vector<Tensor> history_;  // the noise estimates of the multistep history (newest last, at most 4)
  Tensor rk_sum_;                // the weighted sum of the current Runge-Kutta step's estimates
  Tensor rk_start_;              // the sample the current Runge-Kutta step (or the redone first step) starts from
  int next_step_ = 0;
};

}  // namespace

PAB_REGISTER(SchedulerEntry, kName, {[](const JsonConfig& j) -> std::unique_ptr<Scheduler> {
               return std::make_unique<PndmScheduler>(PndmConfig::from_json(j));
             }});

}  // namespace pab
