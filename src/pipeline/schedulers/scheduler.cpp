// The parts every scheduler shares: the typed config, the noise table
// (betas -> alphas_cumprod, SNR shift, zero-terminal-SNR rescale), timestep
// spacing, and the factory.
#include "pipeline/schedulers/scheduler.h"

#include <cmath>
#include <numbers>

#include "pipeline/schedulers/step_math.h"

namespace pab {

namespace {

struct Defaults {
  double beta_start, beta_end;
  BetaSchedule beta_schedule;
};

Defaults class_defaults(SchedulerKind kind) {
  if (kind == SchedulerKind::ddim) return {0.0001, 0.02, BetaSchedule::linear};
  return {0.00085, 0.012, BetaSchedule::scaled_linear};
}

template <class E>
E parse_enum(const JsonConfig& j, const std::string& key, E fallback,
             std::initializer_list<std::pair<const char*, E>> names) {
  if (!j.has(key)) return fallback;
  std::string v = j.get<std::string>(key);
  std::string allowed;
  for (const auto& [name, e] : names) {
    if (v == name) return e;
    allowed += std::string(allowed.empty() ? "" : ", ") + name;
  }
  j.unsupported(key, "expected one of " + allowed);
}

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
std::vector<T> make_betas(const SchedulerConfig& c) {
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
std::vector<double> make_alphas_cumprod(const SchedulerConfig& c) {
  std::vector<T> betas = make_betas<T>(c);
  const bool cogvideox = c.kind != SchedulerKind::ddim;
  auto one_minus = [](const std::vector<T>& x) {
    std::vector<T> out(x.size());
    for (size_t i = 0; i < x.size(); ++i) out[i] = T(1) - x[i];
    return out;
  };
  if (!cogvideox && c.rescale_betas_zero_snr) {
    // DDIMScheduler rescales the betas: through alphas_cumprod and back.
    std::vector<T> ab = rescale_to_zero_terminal_snr(torch_cumprod(one_minus(betas)));
    std::vector<T> alphas(ab.size());
    alphas[0] = ab[0];
    for (size_t i = 1; i < ab.size(); ++i) alphas[i] = ab[i] / ab[i - 1];
    betas = one_minus(alphas);
  }
  std::vector<T> ac = torch_cumprod(one_minus(betas));
  if (cogvideox) {
    // SNR shift (as in SD3), then the rescale on alphas_cumprod itself.
    const T s = T(c.snr_shift_scale), one_minus_s = T(1 - c.snr_shift_scale);
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

namespace sched {

void check_step_inputs(const char* who, const Tensor& model_output, const Tensor& sample) {
  if (model_output.shape() != sample.shape())
    fail(who, ": model output ", shape_str(model_output.shape()), " and sample ", shape_str(sample.shape()),
         " differ in shape");
  PAB_ASSERT(model_output.dtype() == DType::f32 && sample.dtype() == DType::f32, who, ": f32 tensors expected, got ",
             model_output.desc(), " and ", sample.desc());
  PAB_ASSERT(model_output.device() == sample.device(), who, ": model output and sample on different devices");
}

}  // namespace sched

const char* scheduler_class_name(SchedulerKind kind) {
  switch (kind) {
    case SchedulerKind::ddim:
      return "DDIMScheduler";
    case SchedulerKind::cogvideox_ddim:
      return "CogVideoXDDIMScheduler";
    case SchedulerKind::cogvideox_dpm:
      return "CogVideoXDPMScheduler";
  }
  return "?";
}

SchedulerConfig parse_scheduler_config(const JsonConfig& j) {
  SchedulerConfig c;
  c.where = j.where();
  if (!j.has("_class_name")) j.unsupported("_class_name", "a scheduler config names its class");
  c.kind = parse_enum<SchedulerKind>(j, "_class_name", SchedulerKind::ddim,
                                     {{"DDIMScheduler", SchedulerKind::ddim},
                                      {"CogVideoXDDIMScheduler", SchedulerKind::cogvideox_ddim},
                                      {"CogVideoXDPMScheduler", SchedulerKind::cogvideox_dpm}});
  const Defaults d = class_defaults(c.kind);
  const bool ddim = c.kind == SchedulerKind::ddim;

  c.num_train_timesteps = j.get_or<int64_t>("num_train_timesteps", 1000);
  if (c.num_train_timesteps < 2 || c.num_train_timesteps > JsonConfig::kMaxConfigSize)
    j.unsupported("num_train_timesteps", cat("expected 2 to ", JsonConfig::kMaxConfigSize));
  c.beta_start = j.get_or<double>("beta_start", d.beta_start);
  c.beta_end = j.get_or<double>("beta_end", d.beta_end);
  c.beta_schedule = parse_enum<BetaSchedule>(j, "beta_schedule", d.beta_schedule,
                                             {{"linear", BetaSchedule::linear},
                                              {"scaled_linear", BetaSchedule::scaled_linear},
                                              {"squaredcos_cap_v2", BetaSchedule::squaredcos_cap_v2}});
  if (j.has("trained_betas")) {
    c.trained_betas = j.get<std::vector<double>>("trained_betas");
    if (int64_t(c.trained_betas.size()) != c.num_train_timesteps)
      j.unsupported("trained_betas", cat("expected ", c.num_train_timesteps, " values (num_train_timesteps)"));
  }
  c.clip_sample = j.get_or<bool>("clip_sample", true);
  c.clip_sample_range = j.get_or<double>("clip_sample_range", 1.0);
  c.set_alpha_to_one = j.get_or<bool>("set_alpha_to_one", true);
  c.steps_offset = j.get_or<int64_t>("steps_offset", 0);
  c.prediction_type = parse_enum<PredictionType>(j, "prediction_type", PredictionType::epsilon,
                                                 {{"epsilon", PredictionType::epsilon},
                                                  {"v_prediction", PredictionType::v_prediction},
                                                  {"sample", PredictionType::sample}});
  c.sample_max_value = j.get_or<double>("sample_max_value", 1.0);
  if (ddim) {
    c.thresholding = j.get_or<bool>("thresholding", false);
    c.dynamic_thresholding_ratio = j.get_or<double>("dynamic_thresholding_ratio", 0.995);
    if (c.thresholding && !(c.dynamic_thresholding_ratio >= 0 && c.dynamic_thresholding_ratio <= 1))
      j.unsupported("dynamic_thresholding_ratio", "expected a quantile in [0, 1]");
  } else {
    c.clip_sample = false;  // the CogVideoX steps never clip
    c.snr_shift_scale = j.get_or<double>("snr_shift_scale", 3.0);
  }
  c.timestep_spacing = parse_enum<TimestepSpacing>(j, "timestep_spacing", TimestepSpacing::leading,
                                                   {{"linspace", TimestepSpacing::linspace},
                                                    {"leading", TimestepSpacing::leading},
                                                    {"trailing", TimestepSpacing::trailing}});
  c.rescale_betas_zero_snr = j.get_or<bool>("rescale_betas_zero_snr", false);
  return c;
}

Scheduler::Scheduler(SchedulerConfig config) : config_(std::move(config)) {
  // diffusers builds scaled_linear betas in f64 for the CogVideoX schedulers
  // only; every other table is f32.
  f64_table_ = config_.kind != SchedulerKind::ddim && config_.trained_betas.empty() &&
               config_.beta_schedule == BetaSchedule::scaled_linear;
  alphas_cumprod_ = f64_table_ ? make_alphas_cumprod<double>(config_) : make_alphas_cumprod<float>(config_);
  final_alpha_cumprod_ = config_.set_alpha_to_one ? 1.0 : alphas_cumprod_.front();
}

void Scheduler::set_timesteps(int n) {
  const int64_t train = config_.num_train_timesteps;
  if (n < 1 || n > train)
    fail(config_.where, ": ", n, " inference steps: expected 1 to num_train_timesteps (", train, ")");
  std::vector<int64_t> ts;
  switch (config_.timestep_spacing) {
    case TimestepSpacing::linspace: {
      // np.linspace(0, train - 1, n): i * step, the last one exactly train - 1.
      const double step = n > 1 ? double(train - 1) / double(n - 1) : 0.0;
      for (int i = n - 1; i >= 0; --i)
        ts.push_back(i == n - 1 && n > 1 ? train - 1 : round_half_even(double(i) * step));
      break;
    }
    case TimestepSpacing::leading: {
      const int64_t ratio = train / n;
      for (int i = n - 1; i >= 0; --i) ts.push_back(int64_t(i) * ratio + config_.steps_offset);
      break;
    }
    case TimestepSpacing::trailing: {
      // np.arange(train, 0, -train / n): its length is ceil(train / ratio),
      // which rounding can make n + 1; values start + i * delta with delta
      // taken from the first two entries.
      const double ratio = double(train) / double(n);
      const double start = double(train);
      const auto len = int64_t(std::ceil(-start / -ratio));
      const double delta = (start + -ratio) - start;
      for (int64_t i = 0; i < len; ++i) {
        double v = i == 0 ? start : i == 1 ? start + -ratio : start + double(i) * delta;
        ts.push_back(round_half_even(v) - 1);
      }
      break;
    }
  }
  for (int64_t t : ts)
    if (t < 0 || t >= train)
      fail(config_.where, ": ", n, " inference steps with this timestep_spacing/steps_offset give timestep ", t,
           " (as diffusers computes them), outside the ", train, " training timesteps; choose another step count");
  timesteps_ = std::move(ts);
  num_inference_steps_ = n;
  reset_run();
}

int64_t Scheduler::timestep_at(int i) const {
  if (timesteps_.empty()) fail(class_name(), ": step before set_timesteps");
  PAB_ASSERT(i >= 0 && size_t(i) < timesteps_.size(), "step ", i, " of ", timesteps_.size());
  return timesteps_[size_t(i)];
}

double Scheduler::alpha_prod(int64_t t) const {
  if (t < 0) return final_alpha_cumprod_;
  PAB_ASSERT(t < int64_t(alphas_cumprod_.size()), "timestep ", t, " outside the noise table");
  return alphas_cumprod_[size_t(t)];
}

Tensor Scheduler::draw_noise(const StepOptions& opts, const Tensor& like) const {
  if (!opts.noise) fail(class_name(), ": this step is stochastic and needs a noise source");
  Tensor n = opts.noise->next(like.shape());
  PAB_ASSERT(n.shape() == like.shape(), "noise ", n.desc(), " for a sample ", like.desc());
  if (n.dtype() != DType::f32) n = n.to(DType::f32);
  return n.device() == like.device() ? n : n.to(like.device());
}

std::unique_ptr<Scheduler> make_scheduler(const SchedulerConfig& config) {
  switch (config.kind) {
    case SchedulerKind::ddim:
      return std::make_unique<DdimScheduler>(config);
    case SchedulerKind::cogvideox_ddim:
      return std::make_unique<CogVideoXDdimScheduler>(config);
    case SchedulerKind::cogvideox_dpm:
      return std::make_unique<CogVideoXDpmScheduler>(config);
  }
  PAB_ASSERT(false, "unhandled scheduler kind");
}

std::unique_ptr<Scheduler> load_scheduler(const std::string& path) {
  return make_scheduler(parse_scheduler_config(JsonConfig::load(path)));
}

}  // namespace pab
