// The scheduler interface's shared parts and the factory: classes are looked
// up by `_class_name` in the registry their own files fill.
#include "pipeline/schedulers/scheduler.h"

#include "core/registry.h"
#include "pipeline/schedulers/step_math.h"

namespace pab {

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

void Scheduler::set_timesteps(int n, const TimestepOptions& options) {
  if (n < 1) fail(where_, ": ", n, " inference steps: at least 1 is needed");
  if (n > JsonConfig::kMaxConfigSize)
    fail(where_, ": ", n, " inference steps: expected at most ", JsonConfig::kMaxConfigSize);
  Schedule s = make_schedule(n, options);
  PAB_ASSERT(s.timesteps.size() >= size_t(n), class_name(), ": ", s.timesteps.size(), " timesteps for ", n, " steps");
  timesteps_ = std::move(s.timesteps);
  sigmas_ = std::move(s.sigmas);
  num_inference_steps_ = n;
  reset_run();
}

void Scheduler::check_step(int i) const {
  if (num_inference_steps_ == 0) fail(class_name(), ": step before set_timesteps");
  PAB_ASSERT(i >= 0 && size_t(i) < timesteps_.size(), "step ", i, " of ", timesteps_.size());
}

void Scheduler::check_in_order(int i, int expected) const {
  PAB_ASSERT(i == expected, class_name(), ": steps must run in order (got step ", i, ", expected ", expected, ")");
}

Tensor Scheduler::draw_noise(const StepOptions& opts, const Tensor& like) const {
  if (!opts.noise) fail(class_name(), ": this step is stochastic and needs a noise source");
  Tensor n = opts.noise->next(like.shape());
  PAB_ASSERT(n.shape() == like.shape(), "noise ", n.desc(), " for a sample ", like.desc());
  if (n.dtype() != DType::f32) n = n.to(DType::f32);
  return n.device() == like.device() ? n : n.to(like.device());
}

std::unique_ptr<Scheduler> make_scheduler(const JsonConfig& config) {
  if (!config.has("_class_name")) config.unsupported("_class_name", "a scheduler config names its class");
  const std::string name = config.get<std::string>("_class_name");
  const auto& classes = Registry<SchedulerEntry>::get();
  const SchedulerEntry* entry = classes.find(name);
  if (!entry) config.unsupported("_class_name", "unsupported scheduler (supported: " + classes.list() + ")");
  return entry->make(config);
}

std::unique_ptr<Scheduler> load_scheduler(const std::string& path) {
  return make_scheduler(JsonConfig::load(path));
}

std::vector<std::string> scheduler_class_names() {
  return Registry<SchedulerEntry>::get().names();
}

}  // namespace pab
