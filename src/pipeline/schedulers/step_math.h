// What the scheduler files share: config enums, coefficients computed in the
// reference's precision, the elementwise combinations in the order diffusers
// evaluates them (each product rounded to f32, then summed) on any backend,
// and the flow-matching sigma shifts as diffusers computes them (in f64, as
// numpy does).
#pragma once

#include <cmath>
#include <initializer_list>
#include <optional>
#include <utility>
#include <vector>

#include "backend/ops.h"
#include "pipeline/schedulers/ddpm.h"

namespace pab::sched {

// The enum value a string key names; missing or null gives `fallback`,
// another string fails naming the file, the key and the allowed values.
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

// Fails naming the key when a boolean option the class does not implement is set.
inline void refuse_true(const JsonConfig& j, const char* key, const char* why) {
  if (j.get_or<bool>(key, false)) j.unsupported(key, why);
}

// Calls fn(T{}) with T = double for an f64 table, float otherwise, so that
// coefficient arithmetic rounds as torch's 0-d tensors of that dtype do.
template <class Fn>
auto in_table_precision(bool f64, Fn&& fn) {
  return f64 ? fn(double{}) : fn(float{});
}

// a * ca + b * cb and a * ca - b * cb (coefficients rounded to f32 as torch
// casts a 0-d tensor operand to the f32 tensor's dtype).
inline Tensor scaled_sum(const Tensor& a, double ca, const Tensor& b, double cb) {
  return ops::add(ops::scale(a, float(ca)), ops::scale(b, float(cb)));
}
inline Tensor scaled_diff(const Tensor& a, double ca, const Tensor& b, double cb) {
  return ops::sub(ops::scale(a, float(ca)), ops::scale(b, float(cb)));
}
// x / c as a true division (not a multiplication by 1/c).
inline Tensor div_scalar(const Tensor& x, double c) {
  Tensor d = Tensor::scalar(float(c));
  return ops::div(x, x.device() == Device::cpu ? d : d.to(x.device()));
}

// x_0 from the model output at a timestep with sqrt(alpha_prod_t) = sa and
// sqrt(1 - alpha_prod_t) = sb.
inline Tensor predict_original_sample(PredictionType type, const Tensor& model_output, const Tensor& sample, double sa,
                                      double sb) {
  switch (type) {
    case PredictionType::epsilon:
      return div_scalar(ops::sub(sample, ops::scale(model_output, float(sb))), sa);
    case PredictionType::sample:
      return model_output;
    case PredictionType::v_prediction:
      return scaled_diff(sample, sa, model_output, sb);
  }
  PAB_ASSERT(false, "unhandled prediction type");
}

// Checks the step's inputs agree (same shape, f32, one device).
void check_step_inputs(const char* who, const Tensor& model_output, const Tensor& sample);

// ---------------------------------------------------------------- flow sigmas

// np.linspace(start, stop, num): start + i * step in f64 (two roundings), the
// last exactly stop (num > 1); num == 1 gives start.
inline std::vector<double> np_linspace(double start, double stop, int64_t num) {
  std::vector<double> out(static_cast<size_t>(num));
  const double step = num > 1 ? (stop - start) / double(num - 1) : 0.0;
  for (int64_t i = 0; i < num; ++i) out[size_t(i)] = double(i) * step + start;
  if (num > 1) out.back() = stop;
  return out;
}

// np.round(np.arange(start, 0, -step)) for start, step > 0 (diffusers'
// "trailing" spacing): numpy's length ceil(start / step), which rounding can
// make one more than intended, and values start + i * delta with delta taken
// from the first two; halves round to even, as np.round.
inline std::vector<double> np_rounded_arange_down(double start, double step) {
  const auto len = int64_t(std::ceil(-start / -step));
  const double delta = (start + -step) - start;
  std::vector<double> out;
  for (int64_t i = 0; i < len; ++i) {
    const double v = i == 0 ? start : i == 1 ? start + -step : start + double(i) * delta;
    out.push_back(std::nearbyint(v));
  }
  return out;
}

enum class TimeShiftType { exponential, linear };

// The resolution-dependent and static shifts of flow-matching sigmas and the
// stretch to a terminal value, as FlowMatchEulerDiscreteScheduler and UniPC
// (use_flow_sigmas) configure them.
struct FlowShift {
  double shift = 1.0;    // the static shift (shift, flow_shift)
  bool dynamic = false;  // use_dynamic_shifting: shift by the caller's mu instead
  TimeShiftType type = TimeShiftType::exponential;
  std::optional<double> terminal;  // shift_terminal (unset for null or 0, as diffusers tests its truth)

  // Reads use_dynamic_shifting, time_shift_type and shift_terminal (the static
  // shift is the caller's key).
  static FlowShift from_json(const JsonConfig& j, double shift) {
    FlowShift f;
    f.shift = shift;
    f.dynamic = j.get_or<bool>("use_dynamic_shifting", false);
    f.type =
        parse_enum<TimeShiftType>(j, "time_shift_type", TimeShiftType::exponential,
                                  {{"exponential", TimeShiftType::exponential}, {"linear", TimeShiftType::linear}});
    if (auto t = j.get_optional<double>("shift_terminal"); t && *t != 0) {
      if (!(*t < 1)) j.unsupported("shift_terminal", "expected a value below 1");
      f.terminal = *t;
    }
    return f;
  }

  // Shifts sigmas (f64, as numpy holds them) in place: time_shift(mu, 1, s)
  // when dynamic (mu required), shift * s / (1 + (shift - 1) * s) otherwise;
  // then the stretch that ends the schedule at `terminal`.
  void apply(std::vector<double>& s, std::optional<double> mu, const std::string& where) const {
    if (dynamic) {
      if (!mu)
        fail(where,
             ": use_dynamic_shifting is set: the schedule needs mu (the pipeline's resolution-dependent "
             "shift), and none was given");
      const double e = std::exp(*mu);
      for (double& v : s) v = type == TimeShiftType::exponential ? e / (e + (1 / v - 1)) : *mu / (*mu + (1 / v - 1));
    } else {
      for (double& v : s) v = shift * v / (1 + (shift - 1) * v);
    }
    if (terminal) {
      const double scale = (1 - s.back()) / (1 - *terminal);
      for (double& v : s) v = 1 - (1 - v) / scale;
    }
  }
};

// Fails naming the key if a sigma schedule we do not implement is asked for.
inline void refuse_sigma_variants(const JsonConfig& j, const char* cls) {
  for (const char* key : {"use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas"})
    refuse_true(j, key, cat("not implemented for ", cls, " (the plain, shifted sigmas are)").c_str());
}

}  // namespace pab::sched
