// UniPCMultistepScheduler (diffusers scheduling_unipc_multistep.py): the UniP
// predictor of order p (B(h) as bh1 or bh2) from the last p converted model
// outputs, and the UniC corrector that, before each step after the first,
// refines the previous step's result with this step's model output. The
// order ramps up from 1 (warm-up) and, with lower_order_final, down again
// over the last steps.
//
// Two noise schedules: flow sigmas (use_flow_sigmas, as Wan 2.1 and 2.2
// configure it: sigmas from 1 to 1/N shifted by flow_shift or the caller's mu,
// alpha = 1 - sigma), and the DDPM table's sigmas sqrt((1 - a) / a) at integer
// timesteps (alpha = 1 / sqrt(sigma^2 + 1)). Karras, exponential and beta
// sigmas, thresholding and solver_p are refused. The schedule is computed in
// f64 as numpy does and held in f32; the step coefficients in f32 as
// diffusers' 0-d tensors (log and expm1 can differ from torch's vectorised
// ones by an ulp, and torch.linalg.solve's f32 LU is replaced by one in f64
// rounded to f32).
#include <algorithm>
#include <cmath>
#include <deque>

#include "core/registry.h"
#include "pipeline/schedulers/step_math.h"

namespace pab {

namespace {

constexpr const char* kName = "UniPCMultistepScheduler";

enum class UniPcPrediction { epsilon, sample, v_prediction, flow_prediction };
enum class SolverType { bh1, bh2 };

struct UniPcConfig {
  std::string where;
  int64_t num_train_timesteps = 1000;
  int solver_order = 2;
  UniPcPrediction prediction_type = UniPcPrediction::epsilon;
  bool predict_x0 = true;
  SolverType solver_type = SolverType::bh2;
  bool lower_order_final = true;
  std::vector<int64_t> disable_corrector;  // steps (0-based) whose following step skips the corrector
  bool flow_sigmas = false;                // use_flow_sigmas
  sched::FlowShift shift;                  // flow_shift, use_dynamic_shifting, time_shift_type, shift_terminal
  DdpmConfig table;                        // the DDPM table and timestep spacing (without flow sigmas)
  bool final_sigma_min = false;            // final_sigmas_type "sigma_min" (else "zero")

  static UniPcConfig from_json(const JsonConfig& j) {
    UniPcConfig c;
    c.where = j.where();
    c.num_train_timesteps = j.get_size("num_train_timesteps", 1000);
    c.flow_sigmas = j.get_or<bool>("use_flow_sigmas", false);
    c.solver_order = j.get_or<int>("solver_order", 2);
    if (c.solver_order < 1 || c.solver_order > 4) j.unsupported("solver_order", "expected 1 to 4");
    c.prediction_type = sched::parse_enum<UniPcPrediction>(j, "prediction_type", UniPcPrediction::epsilon,
                                                           {{"epsilon", UniPcPrediction::epsilon},
                                                            {"sample", UniPcPrediction::sample},
                                                            {"v_prediction", UniPcPrediction::v_prediction},
                                                            {"flow_prediction", UniPcPrediction::flow_prediction}});
    c.predict_x0 = j.get_or<bool>("predict_x0", true);
    if (!c.predict_x0 && c.prediction_type == UniPcPrediction::flow_prediction)
      j.unsupported("predict_x0", "flow_prediction needs predict_x0 true (diffusers has no noise update for it)");
    // diffusers maps the DPM-Solver names onto bh2.
    c.solver_type = sched::parse_enum<SolverType>(j, "solver_type", SolverType::bh2,
                                                  {{"bh1", SolverType::bh1},
                                                   {"bh2", SolverType::bh2},
                                                   {"midpoint", SolverType::bh2},
                                                   {"heun", SolverType::bh2},
                                                   {"logrho", SolverType::bh2}});
    c.lower_order_final = j.get_or<bool>("lower_order_final", true);
    c.disable_corrector = j.get_or<std::vector<int64_t>>("disable_corrector", {});
    const double flow_shift = j.get_or<double>("flow_shift", 1.0);
    if (!(flow_shift > 0) || !std::isfinite(flow_shift)) j.unsupported("flow_shift", "expected a positive number");
    c.shift = sched::FlowShift::from_json(j, flow_shift);
    if (!c.flow_sigmas) {
      c.table = parse_ddpm_config(j, {0.0001, 0.02, BetaSchedule::linear, TimestepSpacing::linspace}, false);
      if (c.prediction_type == UniPcPrediction::flow_prediction)
        j.unsupported("prediction_type", "flow_prediction needs use_flow_sigmas");
      if (c.shift.dynamic) j.unsupported("use_dynamic_shifting", "shifts flow sigmas only (use_flow_sigmas is off)");
      if (c.shift.terminal) j.unsupported("shift_terminal", "shifts flow sigmas only (use_flow_sigmas is off)");
    }
    c.final_sigma_min = sched::parse_enum<bool>(j, "final_sigmas_type", false, {{"zero", false}, {"sigma_min", true}});
    // Settings whose last step diffusers computes as NaN or inf (0 * inf, or divisions by a zero-length step).
    if (!c.final_sigma_min && c.solver_type == SolverType::bh1)
      j.unsupported("solver_type",
                    "bh1 makes the last step (to sigma 0) NaN in diffusers; use final_sigmas_type "
                    "sigma_min or bh2");
    if (!c.final_sigma_min && !c.predict_x0)
      j.unsupported("predict_x0",
                    "false makes the last step (to sigma 0) NaN in diffusers; use final_sigmas_type "
                    "sigma_min or predict_x0 true");
    if (!c.lower_order_final && c.solver_order >= (c.final_sigma_min ? 3 : 2))
      j.unsupported("lower_order_final",
                    cat("false with solver_order ", c.solver_order, " and final_sigmas_type ",
                        c.final_sigma_min ? "sigma_min" : "zero", " makes the last step NaN or inf in diffusers"));
    sched::refuse_sigma_variants(j, kName);
    sched::refuse_true(j, "thresholding", "not implemented for UniPCMultistepScheduler");
    if (j.has("solver_p")) j.unsupported("solver_p", "a solver_p scheduler is not supported (expected null)");
    return c;
  }
};

// The solution of a K x K system of the order conditions, by Gaussian
// elimination with partial pivoting in f64, rounded to f32 (for
// torch.linalg.solve on f32 tensors).
std::vector<float> solve(std::vector<std::vector<double>> a, std::vector<double> b) {
  const size_t n = b.size();
  for (size_t col = 0; col < n; ++col) {
    size_t pivot = col;
    for (size_t r = col + 1; r < n; ++r)
      if (std::fabs(a[r][col]) > std::fabs(a[pivot][col])) pivot = r;
    std::swap(a[col], a[pivot]);
    std::swap(b[col], b[pivot]);
    for (size_t r = col + 1; r < n; ++r) {
      const double f = a[r][col] / a[col][col];
      for (size_t k = col; k < n; ++k) a[r][k] -= f * a[col][k];
      b[r] -= f * b[col];
    }
  }
  std::vector<double> x(n);
  for (size_t r = n; r-- > 0;) {
    double v = b[r];
    for (size_t k = r + 1; k < n; ++k) v -= a[r][k] * x[k];
    x[r] = v / a[r][r];
  }
  return std::vector<float>(x.begin(), x.end());
}

class UniPcScheduler final : public Scheduler {
 public:
  explicit UniPcScheduler(UniPcConfig config) : Scheduler(config.where), c_(std::move(config)) {
    if (c_.flow_sigmas) return;
    // The DDPM table in f32; with zero terminal SNR the last entry is 2^-24 so that its sigma is finite.
    std::vector<double> ac = ddpm_alphas_cumprod(c_.table, false);
    if (c_.table.rescale_betas_zero_snr) ac.back() = 0x1p-24;
    for (double a : ac) table_sigmas_.push_back(std::sqrt((1.0f - float(a)) / float(a)));
  }

  const char* class_name() const override { return kName; }

  StepOutput step(int i, const Tensor& model_output, const Tensor& sample, const StepOptions&) override {
    check_step(i);
    check_in_order(i, next_step_);
    sched::check_step_inputs(kName, model_output, sample);
    const bool corrector = i > 0 && last_sample_.defined() &&
                           std::find(c_.disable_corrector.begin(), c_.disable_corrector.end(), int64_t(i - 1)) ==
                               c_.disable_corrector.end();
    Tensor converted = convert_model_output(model_output, sample, i);
    Tensor x = corrector ? correct(converted, last_sample_, sample, this_order_, i) : sample;

    model_outputs_.pop_front();
    model_outputs_.push_back(converted);
    const int order = c_.lower_order_final ? std::min(c_.solver_order, num_inference_steps_ - i) : c_.solver_order;
    this_order_ = std::min(order, lower_order_nums_ + 1);  // warm-up
    last_sample_ = x;
    Tensor prev = predict(x, this_order_, i);
    lower_order_nums_ = std::min(lower_order_nums_ + 1, c_.solver_order);
    ++next_step_;
    return {prev, Tensor()};
  }

 private:
  Schedule make_schedule(int n, const TimestepOptions& options) const override {
    Schedule out = c_.flow_sigmas ? flow_schedule(n, options) : ddpm_schedule(n);
    if (n > 1 && out.timesteps[0] == out.timesteps[1])
      fail(where(), ": ", n, " inference steps give equal first timesteps (", out.timesteps[0],
           "), and diffusers then starts at the second; choose fewer steps");
    return out;
  }

  Schedule flow_schedule(int n, const TimestepOptions& options) const {
    std::vector<double> s = sched::np_linspace(1.0, 1.0 / double(c_.num_train_timesteps), int64_t(n) + 1);
    s.pop_back();
    c_.shift.apply(s, options.mu, where());
    // Keeps log(alpha) finite at the first step.
    if (std::fabs(s[0] - 1) < 1e-6) s[0] -= 1e-6;
    Schedule out;
    for (double v : s) {
      out.timesteps.push_back(std::trunc(v * double(c_.num_train_timesteps)));  // int64 as torch casts them
      out.sigmas.push_back(float(v));
    }
    out.sigmas.push_back(c_.final_sigma_min ? float(s.back()) : 0.0);
    return out;
  }

  // Integer timesteps by the spacing (UniPC's own: n + 1 points, the last
  // dropped), each with the table's sigma.
  Schedule ddpm_schedule(int n) const {
    const int64_t train = c_.table.num_train_timesteps;
    if (n > train) fail(where(), ": ", n, " inference steps: expected 1 to num_train_timesteps (", train, ")");
    std::vector<double> ts;
    switch (c_.table.timestep_spacing) {
      case TimestepSpacing::linspace: {
        // np.linspace(0, train - 1, n + 1).round(), reversed, without the 0.
        const double step = double(train - 1) / double(n);
        for (int i = n; i >= 1; --i) ts.push_back(i == n ? double(train - 1) : std::nearbyint(double(i) * step));
        break;
      }
      case TimestepSpacing::leading: {
        const int64_t ratio = train / (int64_t(n) + 1);
        for (int i = n; i >= 1; --i) ts.push_back(double(int64_t(i) * ratio + c_.table.steps_offset));
        break;
      }
      case TimestepSpacing::trailing: {
        // np.arange(train, 0, -train / n).round() - 1, as DDIMScheduler's.
        for (double v : sched::np_rounded_arange_down(double(train), double(train) / double(n))) ts.push_back(v - 1);
        if (int64_t(ts.size()) != n)
          fail(where(), ": ", n, " inference steps with trailing spacing give ", ts.size(),
               " timesteps in diffusers; choose another step count");
        break;
      }
    }
    Schedule out;
    for (double t : ts) {
      if (t < 0 || t >= double(train))
        fail(where(), ": ", n, " inference steps with this timestep_spacing/steps_offset give timestep ", t,
             " (as diffusers computes them), outside the ", train, " training timesteps; choose another step count");
      out.sigmas.push_back(table_sigmas_[size_t(t)]);
    }
    out.timesteps = std::move(ts);
    out.sigmas.push_back(c_.final_sigma_min ? table_sigmas_.front() : 0.0f);
    return out;
  }

  void reset_run() override {
    model_outputs_.assign(size_t(c_.solver_order), Tensor());
    last_sample_ = Tensor();
    this_order_ = 0;
    lower_order_nums_ = 0;
    next_step_ = 0;
  }

  // alpha, sigma and lambda = log(alpha) - log(sigma) of sigmas()[k], in f32.
  struct Level {
    float alpha, sigma, lambda;
  };
  Level level(int k) const {
    const auto s = float(sigmas_[size_t(k)]);
    if (c_.flow_sigmas) {
      const float alpha = 1.0f - s;
      return {alpha, s, std::log(alpha) - std::log(s)};
    }
    const float alpha = 1.0f / std::sqrt(s * s + 1.0f), sigma = s * alpha;
    return {alpha, sigma, std::log(alpha) - std::log(sigma)};
  }

  // The model output as the solver uses it: x_0 (predict_x0) or the noise.
  Tensor convert_model_output(const Tensor& mo, const Tensor& sample, int i) const {
    const Level l = level(i);
    if (c_.predict_x0) {
      switch (c_.prediction_type) {
        case UniPcPrediction::epsilon:
          return sched::div_scalar(ops::sub(sample, ops::scale(mo, l.sigma)), l.alpha);
        case UniPcPrediction::sample:
          return mo;
        case UniPcPrediction::v_prediction:
          return sched::scaled_diff(sample, l.alpha, mo, l.sigma);
        case UniPcPrediction::flow_prediction:
          return ops::sub(sample, ops::scale(mo, l.sigma));
      }
    }
    switch (c_.prediction_type) {
      case UniPcPrediction::epsilon:
        return mo;
      case UniPcPrediction::sample:
        return sched::div_scalar(ops::sub(sample, ops::scale(mo, l.alpha)), l.sigma);
      case UniPcPrediction::v_prediction:
        return sched::scaled_sum(mo, l.alpha, sample, l.sigma);
      case UniPcPrediction::flow_prediction:
        break;
    }
    PAB_ASSERT(false, "unhandled UniPC prediction type");
  }

  // What the predictor and the corrector share for a move from level s0 to
  // level t using the history at levels `history` (most recent first, their
  // outputs `outputs`): the B(h) coefficients and the divided differences D1.
  struct Update {
    float h_phi_1 = 0, b_h = 0;
    std::vector<float> rks;  // r_k of each history entry, then 1
    std::vector<float> b;    // the right-hand side of the order conditions
    std::vector<Tensor> d1;  // (m_k - m0) / r_k
  };
  Update update(const Level& t, const Level& s0, const Tensor& m0, const std::vector<int>& history,
                const std::vector<Tensor>& outputs, int order) const {
    Update u;
    const float h = t.lambda - s0.lambda;
    for (size_t k = 0; k < history.size(); ++k) {
      const float rk = (level(history[k]).lambda - s0.lambda) / h;
      u.rks.push_back(rk);
      u.d1.push_back(sched::div_scalar(ops::sub(outputs[k], m0), rk));
    }
    u.rks.push_back(1.0f);
    const float hh = c_.predict_x0 ? -h : h;
    u.h_phi_1 = std::expm1(hh);
    float h_phi_k = u.h_phi_1 / hh - 1.0f;
    u.b_h = c_.solver_type == SolverType::bh1 ? hh : std::expm1(hh);
    int64_t factorial = 1;
    for (int k = 1; k <= order; ++k) {
      u.b.push_back(h_phi_k * float(factorial) / u.b_h);
      factorial *= k + 1;
      h_phi_k = h_phi_k / hh - float(1.0 / double(factorial));
    }
    return u;
  }

  // R[i][j] = rks[j]^i, the order conditions' matrix (its top-left `size` block).
  static std::vector<std::vector<double>> powers(const std::vector<float>& rks, size_t size) {
    std::vector<std::vector<double>> r(size, std::vector<double>(size));
    for (size_t j = 0; j < size; ++j) {
      float p = 1.0f;
      for (size_t i = 0; i < size; ++i) {
        r[i][j] = p;
        p *= rks[j];
      }
    }
    return r;
  }

  // sum_k rhos[k] * d1[k] (einsum "k,bkc...->bc...").
  static Tensor weighted(const std::vector<float>& rhos, const std::vector<Tensor>& d1) {
    Tensor acc = ops::scale(d1[0], rhos[0]);
    for (size_t k = 1; k < d1.size(); ++k) acc = ops::add(acc, ops::scale(d1[k], rhos[k]));
    return acc;
  }

  // x_t_ = the first-order move of x from s0 to t with m0, before the higher-order terms.
  Tensor first_order(const Level& t, const Level& s0, const Tensor& x, const Tensor& m0, float h_phi_1) const {
    return c_.predict_x0 ? sched::scaled_diff(x, t.sigma / s0.sigma, m0, t.alpha * h_phi_1)
                         : sched::scaled_diff(x, t.alpha / s0.alpha, m0, t.sigma * h_phi_1);
  }

  // UniP: x at level i -> level i + 1 with the last `order` outputs.
  Tensor predict(const Tensor& x, int order, int i) const {
    const Tensor& m0 = model_outputs_.back();
    const Level t = level(i + 1), s0 = level(i);
    std::vector<int> history;
    std::vector<Tensor> outputs;
    for (int k = 1; k < order; ++k) {
      history.push_back(i - k);
      outputs.push_back(model_outputs_[model_outputs_.size() - 1 - size_t(k)]);
    }
    const Update u = update(t, s0, m0, history, outputs, order);
    Tensor x_t = first_order(t, s0, x, m0, u.h_phi_1);
    if (u.d1.empty()) return x_t;
    std::vector<float> rhos =
        order == 2 ? std::vector<float>{0.5f}
                   : solve(powers(u.rks, size_t(order - 1)), std::vector<double>(u.b.begin(), u.b.end() - 1));
    const float coef = (c_.predict_x0 ? t.alpha : t.sigma) * u.b_h;
    return ops::sub(x_t, ops::scale(weighted(rhos, u.d1), coef));
  }

  // UniC: the previous step's result `this_sample` (at level i, reached from
  // `last_sample` at level i - 1) corrected with this step's output.
  Tensor correct(const Tensor& this_output, const Tensor& last_sample, const Tensor& this_sample, int order,
                 int i) const {
    PAB_ASSERT(this_sample.shape() == last_sample.shape(), kName, ": the sample changed shape between steps");
    const Tensor& m0 = model_outputs_.back();
    const Level t = level(i), s0 = level(i - 1);
    std::vector<int> history;
    std::vector<Tensor> outputs;
    for (int k = 1; k < order; ++k) {
      history.push_back(i - (k + 1));
      outputs.push_back(model_outputs_[model_outputs_.size() - 1 - size_t(k)]);
    }
    const Update u = update(t, s0, m0, history, outputs, order);
    Tensor x_t = first_order(t, s0, last_sample, m0, u.h_phi_1);
    std::vector<float> rhos = order == 1
                                  ? std::vector<float>{0.5f}
                                  : solve(powers(u.rks, size_t(order)), std::vector<double>(u.b.begin(), u.b.end()));
    Tensor correction = ops::scale(ops::sub(this_output, m0), rhos.back());
    if (!u.d1.empty()) correction = ops::add(weighted(rhos, u.d1), correction);
    const float coef = (c_.predict_x0 ? t.alpha : t.sigma) * u.b_h;
    return ops::sub(x_t, ops::scale(correction, coef));
  }

  UniPcConfig c_;
  std::vector<float> table_sigmas_;   // sqrt((1 - a) / a) of the DDPM table (without flow sigmas)
  std::deque<Tensor> model_outputs_;  // the last solver_order converted outputs, oldest first
  Tensor last_sample_;                // the sample the last predictor started from
  int this_order_ = 0, lower_order_nums_ = 0, next_step_ = 0;
};

}  // namespace

PAB_REGISTER(SchedulerEntry, kName, {[](const JsonConfig& j) -> std::unique_ptr<Scheduler> {
               return std::make_unique<UniPcScheduler>(UniPcConfig::from_json(j));
             }});

}  // namespace pab
