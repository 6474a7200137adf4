// `pab calibrate --model DIR --prompt TEXT`: the text-to-video pipeline as a
// calibration Generation.
//
// TO FINISH WHEN THE PIPELINE IS MERGED (pipeline/video_pipeline.h): open the
// pipeline, plan the request, encode the prompt once, and make `run` draw the
// seeded initial latents, call VideoPipeline::denoise with `sites` (its
// parameter generalised from PabPolicy* to SteppedSiteRunner*: PabPolicy is
// one, so its callers do not change; it resets the runner before the loop and
// again on every exit, which a ChangeRecorder survives with its measurements),
// time the loop with the device synchronised, decode the frames (f32 in [0, 1]
// on the CPU) and return them with the final latents, the schedule and, when
// `sites` is a PabPolicy, DenoiseResult::stats. kinds = the transformer's
// site_kinds(), model_class = its class name.
#include "pipeline/calibrate.h"

namespace pab {

Generation pipeline_generation(const PipelineGenerationRequest& request, const LoadOptions& opts) {
  fail("pab calibrate --model ", request.model_dir,
       ": the text-to-video pipeline is not in this build yet; calibrate a transformer case with --case CASE_DIR");
}

}  // namespace pab
