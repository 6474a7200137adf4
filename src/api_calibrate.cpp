// The public API of `pab calibrate`.
#include <cmath>
#include <filesystem>

#include "api_internal.h"
#include "io/atomic_file.h"
#include "pipeline/calibrate.h"
#include "pipeline/prompt_text.h"

namespace pab {

Status calibrate(const CalibrateOptions& opts, std::string* report) {
  return guarded([&] {
    const bool by_case = !opts.case_dir.empty(), by_model = !opts.model_dir.empty();
    if (by_case == by_model) fail("calibrate: give either a case folder (--case) or a model folder (--model)");
    if (by_model && opts.prompt.empty()) fail("calibrate: --model needs --prompt");
    if (!by_model && opts.steps) fail("calibrate: --steps goes with --model; a case has its own schedule");
    if (by_case && !opts.prompt.empty()) fail("calibrate: --prompt goes with --model; a case has its own inputs");
    if (opts.target_speedup && !(*opts.target_speedup >= 1 && std::isfinite(*opts.target_speedup)))
      fail("calibrate: --target-speedup ", *opts.target_speedup, ": expected a finite number >= 1");
    if (opts.max_range < 2) fail("calibrate: --max-range must be >= 2, got ", opts.max_range);
    if (opts.steps && *opts.steps < 1) fail("calibrate: --steps ", *opts.steps, ": expected at least 1");
    if (by_model) {
      check_prompt_utf8(opts.prompt, "the prompt (--prompt)");
      check_prompt_utf8(opts.negative_prompt, "the negative prompt (--negative-prompt)");
      if (is_blank(opts.prompt)) fail("calibrate: empty prompt: give the text to calibrate on (--prompt)");
    }
    CalibrationOptions co;
    co.target_speedup = opts.target_speedup;
    if (opts.counting == "diffusers") {
      co.counting = Counting::diffusers;
    } else if (opts.counting == "videosys") {
      co.counting = Counting::videosys;
    } else {
      fail("calibrate: unknown counting rule '", opts.counting, "' (expected diffusers or videosys)");
    }
    co.max_range = opts.max_range;
    co.verify = opts.verify;
    // Before any heavy work: the folder, or where it is to be created, takes files.
    const std::filesystem::path out(opts.output_dir);
    check_writable((std::filesystem::is_directory(out) ? out / "changes.csv" : out).string());

    LoadOptions lo = load_options_with_ranks(opts.compute);
    Generation gen;
    if (by_case) {
      gen = replay_generation(opts.case_dir, lo);
    } else {
      PipelineGenerationRequest req;
      req.model_dir = opts.model_dir;
      req.prompt = opts.prompt;
      req.negative_prompt = opts.negative_prompt;
      req.steps = opts.steps;
      req.seed = opts.seed;
      req.max_memory = opts.compute.max_memory;
      gen = pipeline_generation(req, lo);
    }
    CalibrationResult r = run_calibration(gen, co);
    std::vector<std::string> written;
    if (!is_secondary_rank()) written = write_calibration_files(r, opts.output_dir);  // rank 0 writes
    if (opts.json) {
      nlohmann::json j = calibration_json(r);
      j["written"] = written;
      *report = j.dump(1) + "\n";
    } else {
      *report = calibration_text(r) + "\nwrote";
      for (const std::string& w : written) *report += " " + w;
      *report += "\n";
    }
    if (!r.proposal.reached)
      fail("calibrate: the target speed-up ", r.target_speedup, " is out of reach; the fastest choice predicts ",
           r.proposal.best.speedup);
  });
}

}  // namespace pab
