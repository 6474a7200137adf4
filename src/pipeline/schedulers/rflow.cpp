// RFlowScheduler: Open-Sora 1.2's rectified flow as VideoSys samples it
// (videosys/schedulers/scheduling_rflow_open_sora.py, RFLOW.sample): Euler
// steps z += v * dt from t = num_timesteps down to 0 over uniformly spaced
// timesteps, optionally rounded to integers (use_discrete_timesteps) and
// shifted by the video's size (use_timestep_transform): with
// ratio = sqrt(H * W / 512^2) * sqrt(frames // 17 * 5) (frames 1 for an image),
// t/N -> ratio * t/N / (1 + (ratio - 1) * t/N).
//
// Not a diffusers class; its config mirrors RFLOW's constructor:
//   {"_class_name": "RFlowScheduler", "num_sampling_steps": 30, "cfg_scale": 7.0,
//    "use_timestep_transform": true}
// (num_sampling_steps and cfg_scale are the pipeline's defaults; the scheduler
// itself takes the step count from set_timesteps and never applies guidance.)
//
// Precision as VideoSys holds it: timesteps are f32 tensors (int64 when
// discrete), the size ratio is computed in the dtype the pipeline holds the
// sizes in (TimestepOptions::size_dtype), the steps in f32.
#include <cmath>

#include "core/registry.h"
#include "pipeline/schedulers/step_math.h"

namespace pab {

namespace {

constexpr const char* kName = "RFlowScheduler";

struct RFlowConfig {
  std::string where;
  int64_t num_timesteps = 1000;
  bool use_discrete_timesteps = false;
  bool use_timestep_transform = false;

  static RFlowConfig from_json(const JsonConfig& j) {
    RFlowConfig c;
    c.where = j.where();
    c.num_timesteps = j.get_size("num_timesteps", 1000);
    // The pipeline's defaults (RFLOW's are 10 steps and guidance 4; Open-Sora asks for 30 and 7): checked here,
    // read by the pipeline from the config.
    j.get_size("num_sampling_steps", 10);
    if (!std::isfinite(j.get_or<double>("cfg_scale", 4.0))) j.unsupported("cfg_scale", "expected a finite number");
    c.use_discrete_timesteps = j.get_or<bool>("use_discrete_timesteps", false);
    c.use_timestep_transform = j.get_or<bool>("use_timestep_transform", false);
    // Training-only settings, checked as RFlowScheduler's constructor checks them.
    const bool logit_normal =
        sched::parse_enum<bool>(j, "sample_method", false, {{"uniform", false}, {"logit-normal", true}});
    if (logit_normal && c.use_discrete_timesteps)
      j.unsupported("sample_method", "discrete timesteps need uniform sampling");
    j.get_or<double>("loc", 0.0);
    j.get_or<double>("scale", 1.0);
    // RFLOW.sample transforms with the default scale, whatever this says.
    if (j.get_or<double>("transform_scale", 1.0) != 1.0)
      j.unsupported("transform_scale", "VideoSys's sampling does not apply it (only training does); expected 1.0");
    return c;
  }
};

// A float rounded to `dtype`, as torch stores an op's result in a tensor of that dtype.
float round_to(DType dtype, float v) {
  switch (dtype) {
    case DType::f32:
      return v;
    case DType::bf16:
      return bf16_to_f32(f32_to_bf16(v));
    case DType::f16:
      return f16_to_f32(f32_to_f16(v));
    default:
      PAB_ASSERT(false, "RFlow: size dtype ", dtype_name(dtype));
  }
}

// torch.floor_divide of floats (a, b > 0 here).
float floor_divide(float a, float b) {
  const float mod = std::fmod(a, b);
  return std::floor((a - mod) / b);
}

class RFlowScheduler final : public Scheduler {
 public:
  explicit RFlowScheduler(RFlowConfig config) : Scheduler(config.where), c_(std::move(config)) {}

  const char* class_name() const override { return kName; }

  StepOutput step(int i, const Tensor& model_output, const Tensor& sample, const StepOptions&) override {
    check_step(i);
    sched::check_step_inputs(kName, model_output, sample);
    const auto t = float(timesteps_[size_t(i)]);
    const float dt = size_t(i) + 1 < timesteps_.size() ? t - float(timesteps_[size_t(i) + 1]) : t;
    return {ops::add(sample, ops::scale(model_output, dt / float(c_.num_timesteps))), Tensor()};
  }

 private:
  Schedule make_schedule(int n, const TimestepOptions& options) const override {
    const auto total = float(c_.num_timesteps);
    float ratio = 1;
    if (c_.use_timestep_transform) ratio = size_ratio(options);
    Schedule out;
    for (int i = 0; i < n; ++i) {
      // Python floats, then an f32 tensor (or an int64 one, rounded half to even).
      const double td = (1.0 - double(i) / double(n)) * double(c_.num_timesteps);
      float t = c_.use_discrete_timesteps ? float(std::nearbyint(td)) : float(td);
      if (c_.use_timestep_transform) {
        const float u = t / total;
        t = ratio * u / (1.0f + round_to(options.size_dtype, ratio - 1.0f) * u) * total;
      }
      out.timesteps.push_back(t);
    }
    return out;
  }

  // timestep_transform's ratio for the video's size, in the sizes' dtype.
  float size_ratio(const TimestepOptions& o) const {
    if (o.height < 1 || o.width < 1 || o.frames < 1)
      fail(where(), ": use_timestep_transform: the schedule needs the video's height, width and frame count (got ",
           o.height, "x", o.width, ", ", o.frames, " frames)");
    if (o.size_dtype != DType::f32 && o.size_dtype != DType::bf16 && o.size_dtype != DType::f16)
      fail(where(), ": the sizes' dtype must be F32, BF16 or F16, got ", dtype_name(o.size_dtype));
    auto r = [&](float v) { return round_to(o.size_dtype, v); };
    const float height = r(float(o.height)), width = r(float(o.width)), frames = r(float(o.frames));
    const float space = r(std::sqrt(r(r(height * width) / float(512 * 512))));
    const float latent_frames = frames == 1.0f ? 1.0f : r(r(floor_divide(frames, 17.0f)) * 5.0f);
    const float time = r(std::sqrt(r(latent_frames / 1.0f)));
    const float ratio = r(r(space * time) * 1.0f);
    if (!std::isfinite(ratio))
      fail(where(), ": use_timestep_transform: ", o.height, "x", o.width, " overflows ", dtype_name(o.size_dtype),
           " (VideoSys computes the shift in the sizes' dtype and its timesteps are then NaN); hold the sizes in F32 "
           "or BF16");
    return ratio;
  }

  RFlowConfig c_;
};

}  // namespace

PAB_REGISTER(SchedulerEntry, kName, {[](const JsonConfig& j) -> std::unique_ptr<Scheduler> {
               return std::make_unique<RFlowScheduler>(RFlowConfig::from_json(j));
             }});

}  // namespace pab
