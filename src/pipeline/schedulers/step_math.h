// Helpers the scheduler steps share: coefficients computed in the noise
// table's precision, and the elementwise combinations in the order diffusers
// evaluates them (each product rounded to f32, then summed), on any backend.
#pragma once

#include "backend/ops.h"
#include "pipeline/schedulers/scheduler.h"

namespace pab::sched {

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

}  // namespace pab::sched
