// What the DDPM family shares: the typed config, the noise table (betas ->
// alphas_cumprod, SNR shift, zero-terminal-SNR rescale) and timestep spacing.
#include "pipeline/schedulers/ddpm.h"

#include <cmath>
#include <numbers>

#include "pipeline/schedulers/step_math.h"

namespace pab {

namespace {

// torch.linspace(a, b, n, dtype=T) on the CPU: the two halves are computed from
// either end; the reference build contracts `start + step * i` to one fused
// multiply-add (checked against torch's table).
template <class T>
std::vector<T> torch_linspace(double a, double b, int64_t n) {
  std::vector<T> out(static_cast<size_t>(n));
  const T start = T(a), end = T(b);
  if (n == 1) {
    out[0] = start;
    return out;
  }
  const T step = (end - start) / T(n - 1);
  for (int64_t i = 0; i < n; ++i)
    out[size_t(i)] = i < n / 2 ? std::fma(step, T(i), start) : std::fma(-step, T(n - 1 - i), end);
  return out;
}

// torch.cumprod on the CPU accumulates in double and stores in T.
template <class T>
std::vector<T> torch_cumprod(const std::vector<T>& x) {
  std::vector<T> out(x.size());
  double acc = 1.0;
  for (size_t i = 0; i < x.size(); ++i) {
    acc *= double(x[i]);
    out[i] = T(acc);
  }
  return out;
}

// Algorithm 1 of "Common Diffusion Noise Schedules and Sample Steps are
// Flawed": shift and scale sqrt(alphas_cumprod) so the last is 0 and the first unchanged.
template <class T>
std::vector<T> rescale_to_zero_terminal_snr(const std::vector<T>& alphas_cumprod) {
  std::vector<T> s(alphas_cumprod.size());
  for (size_t i = 0; i < s.size(); ++i) s[i] = std::sqrt(alphas_cumprod[i]);
  const T s0 = s.front(), s_last = s.back();
  const T scale = s0 / (s0 - s_last);
  for (T& v : s) v = (v - s_last) * scale;
  for (T& v : s) v = v * v;
  return s;
}

// The betas diffusers starts from, in the table's precision T.
template <class T>
std::vector<T> make_betas(const DdpmConfig& c) {
  const int64_t n = c.num_train_timesteps;
  if (!c.trained_betas.empty()) {
    std::vector<T> b;
    for (double v : c.trained_betas) b.push_back(T(float(v)));
    return b;
  }
  switch (c.beta_schedule) {
    case BetaSchedule::linear:
      return torch_linspace<T>(c.beta_start, c.beta_end, n);
    case BetaSchedule::scaled_linear: {
      std::vector<T> b = torch_linspace<T>(std::pow(c.beta_start, 0.5), std::pow(c.beta_end, 0.5), n);
      for (T& v : b) v = v * v;
      return b;
    }
    case BetaSchedule::squaredcos_cap_v2: {
      // Computed in double (Python floats), stored as f32.
      auto alpha_bar = [](double t) {
        double c = std::cos((t + 0.008) / 1.008 * std::numbers::pi / 2);
        return c * c;
      };
      std::vector<T> b(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) {
        double t1 = double(i) / double(n), t2 = double(i + 1) / double(n);
        b[size_t(i)] = T(float(std::min(1 - alpha_bar(t2) / alpha_bar(t1), 0.999)));
      }
      return b;
    }
  }
  PAB_ASSERT(false, "unhandled beta schedule");
}

template <class T>
std::vector<double> make_alphas_cumprod(const DdpmConfig& c, std::optional<double> snr_shift_scale) {
  std::vector<T> betas = make_betas<T>(c);
  auto one_minus = [](const std::vector<T>& x) {
    std::vector<T> out(x.size());
    for (size_t i = 0; i < x.size(); ++i) out[i] = T(1) - x[i];
    return out;
  };
  if (!snr_shift_scale && c.rescale_betas_zero_snr) {
    // DDIMScheduler rescales the betas: through alphas_cumprod and back.
    std::vector<T> ab = rescale_to_zero_terminal_snr(torch_cumprod(one_minus(betas)));
    std::vector<T> alphas(ab.size());
    alphas[0] = ab[0];
    for (size_t i = 1; i < ab.size(); ++i) alphas[i] = ab[i] / ab[i - 1];
    betas = one_minus(alphas);
  }
  std::vector<T> ac = torch_cumprod(one_minus(betas));
  if (snr_shift_scale) {
    // SNR shift (as in SD3), then the rescale on alphas_cumprod itself.
    const T s = T(*snr_shift_scale), one_minus_s = T(1 - *snr_shift_scale);
    for (T& v : ac) v = v / (one_minus_s * v + s);
    if (c.rescale_betas_zero_snr) ac = rescale_to_zero_terminal_snr(ac);
  }
  return std::vector<double>(ac.begin(), ac.end());
}

// np.round: halves to even (the default rounding mode).
int64_t round_half_even(double x) {
  return int64_t(std::nearbyint(x));
}

}  // namespace

std::vector<double> ddpm_alphas_cumprod(const DdpmConfig& config, bool f64, std::optional<double> snr_shift_scale) {
  return f64 ? make_alphas_cumprod<double>(config, snr_shift_scale)
             : make_alphas_cumprod<float>(config, snr_shift_scale);
}

DdpmConfig parse_ddpm_config(const JsonConfig& j, const DdpmDefaults& d, bool prediction) {
  DdpmConfig c;
  c.where = j.where();
  c.num_train_timesteps = j.get_or<int64_t>("num_train_timesteps", 1000);
  if (c.num_train_timesteps < 2 || c.num_train_timesteps > JsonConfig::kMaxConfigSize)
    j.unsupported("num_train_timesteps", cat("expected 2 to ", JsonConfig::kMaxConfigSize));
  c.beta_start = j.get_or<double>("beta_start", d.beta_start);
  c.beta_end = j.get_or<double>("beta_end", d.beta_end);
  c.beta_schedule = sched::parse_enum<BetaSchedule>(j, "beta_schedule", d.beta_schedule,
                                                    {{"linear", BetaSchedule::linear},
                                                     {"scaled_linear", BetaSchedule::scaled_linear},
                                                     {"squaredcos_cap_v2", BetaSchedule::squaredcos_cap_v2}});
  if (j.has("trained_betas")) {
    c.trained_betas = j.get<std::vector<double>>("trained_betas");
    if (int64_t(c.trained_betas.size()) != c.num_train_timesteps)
      j.unsupported("trained_betas", cat("expected ", c.num_train_timesteps, " values (num_train_timesteps)"));
  }
  c.set_alpha_to_one = j.get_or<bool>("set_alpha_to_one", true);
  c.steps_offset = j.get_or<int64_t>("steps_offset", 0);
  if (prediction)
    c.prediction_type = sched::parse_enum<PredictionType>(j, "prediction_type", PredictionType::epsilon,
                                                          {{"epsilon", PredictionType::epsilon},
                                                           {"v_prediction", PredictionType::v_prediction},
                                                           {"sample", PredictionType::sample}});
  c.timestep_spacing = sched::parse_enum<TimestepSpacing>(j, "timestep_spacing", d.timestep_spacing,
                                                          {{"linspace", TimestepSpacing::linspace},
                                                           {"leading", TimestepSpacing::leading},
                                                           {"trailing", TimestepSpacing::trailing}});
  c.rescale_betas_zero_snr = j.get_or<bool>("rescale_betas_zero_snr", false);
  return c;
}

CogVideoXSchedulerConfig CogVideoXSchedulerConfig::from_json(const JsonConfig& j) {
  CogVideoXSchedulerConfig c;
  static_cast<DdpmConfig&>(c) = parse_ddpm_config(j, {0.00085, 0.012, BetaSchedule::scaled_linear});
  // Taken by the constructor and never used by the steps (no clipping or thresholding): type-checked only.
  j.get_or<bool>("clip_sample", true);
  j.get_or<double>("clip_sample_range", 1.0);
  j.get_or<double>("sample_max_value", 1.0);
  c.snr_shift_scale = j.get_or<double>("snr_shift_scale", 3.0);
  return c;
}

DdpmScheduler::DdpmScheduler(const DdpmConfig& config, std::vector<double> alphas_cumprod, bool f64_table)
    : Scheduler(config.where), f64_table_(f64_table), ddpm_(config), alphas_cumprod_(std::move(alphas_cumprod)) {
  final_alpha_cumprod_ = ddpm_.set_alpha_to_one ? 1.0 : alphas_cumprod_.front();
}

Scheduler::Schedule DdpmScheduler::make_schedule(int n, const TimestepOptions&) const {
  const int64_t train = ddpm_.num_train_timesteps;
  if (n > train) fail(where(), ": ", n, " inference steps: expected 1 to num_train_timesteps (", train, ")");
  std::vector<double> ts;
  switch (ddpm_.timestep_spacing) {
    case TimestepSpacing::linspace: {
      // np.linspace(0, train - 1, n): i * step, the last one exactly train - 1.
      const double step = n > 1 ? double(train - 1) / double(n - 1) : 0.0;
      for (int i = n - 1; i >= 0; --i)
        ts.push_back(double(i == n - 1 && n > 1 ? train - 1 : round_half_even(double(i) * step)));
      break;
    }
    case TimestepSpacing::leading: {
      const int64_t ratio = train / n;
      for (int i = n - 1; i >= 0; --i) ts.push_back(double(int64_t(i) * ratio + ddpm_.steps_offset));
      break;
    }
    case TimestepSpacing::trailing: {
      // np.arange(train, 0, -train / n).round() - 1 (its length can be n + 1).
      for (double v : sched::np_rounded_arange_down(double(train), double(train) / double(n))) ts.push_back(v - 1);
      break;
    }
  }
  for (double t : ts)
    if (t < 0 || t >= double(train))
      fail(where(), ": ", n, " inference steps with this timestep_spacing/steps_offset give timestep ", t,
           " (as diffusers computes them), outside the ", train, " training timesteps; choose another step count");
  return {std::move(ts), {}};
}

int64_t DdpmScheduler::timestep_at(int i) const {
  check_step(i);
  return int64_t(timesteps_[size_t(i)]);
}

double DdpmScheduler::alpha_prod(int64_t t) const {
  if (t < 0) return final_alpha_cumprod_;
  PAB_ASSERT(t < int64_t(alphas_cumprod_.size()), "timestep ", t, " outside the noise table");
  return alphas_cumprod_[size_t(t)];
}

}  // namespace pab
