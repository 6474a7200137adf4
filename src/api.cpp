// The public API: converts internal errors into Status at the boundary.
#include <algorithm>
#include <cctype>
#include <filesystem>

#include "api_internal.h"
#include "backend/backend.h"
#include "cache/pab_config.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "pab/pab.h"
#include "parallel/world.h"
#include "pipeline/bench.h"
#include "pipeline/memory_plan.h"
#include "pipeline/pab_report.h"
#include "pipeline/replay.h"

namespace pab {

LoadOptions load_options(const ComputeOptions& c) {
  LoadOptions o;
  o.device = device_named(c.device);
  const Backend& be = backend(o.device);  // fails clearly when the device cannot start
  if (c.dtype == "f32") {
    o.dtype = DType::f32;
  } else if (c.dtype == "bf16") {
    o.dtype = DType::bf16;
  } else if (c.dtype == "f16") {
    o.dtype = DType::f16;
  } else {
    fail("unknown dtype '", c.dtype, "' (expected f32, bf16 or f16)");
  }
  const std::vector<DType> dtypes = be.compute_dtypes();
  if (std::find(dtypes.begin(), dtypes.end(), o.dtype) == dtypes.end()) {
    std::string names;  // as --dtype spells them
    for (DType t : dtypes) names += cat(names.empty() ? "" : ", ", dtype_name(t));
    std::transform(names.begin(), names.end(), names.begin(), [](unsigned char ch) { return char(std::tolower(ch)); });
    fail("--dtype ", c.dtype, ": the ", c.device, " backend computes in ", names, " only");
  }
  o.allow_unused_weights = c.allow_unused_weights;
  return o;
}

void join_ranks(const ComputeOptions& c, LoadOptions* load) {
  ParallelGroups groups = join_world({c.gpus, load->device, c.comm, c.cfg_parallel});
  load->comm = groups.sequence;
  load->cfg_comm = groups.cfg;
}

// The options of a command that runs on the ranks it asks for.
LoadOptions load_options_with_ranks(const ComputeOptions& c) {
  LoadOptions o = load_options(c);
  join_ranks(c, &o);
  return o;
}

std::vector<std::string> device_names() {
  std::vector<std::string> out;
  for (Device d : devices()) out.push_back(device_name(d));
  return out;
}

void init_program(int argc, char** argv) {
  install_interrupt_cleanup();
  set_program_arguments(argc, argv);
}

Status parse_memory_size(const std::string& text, uint64_t* bytes) {
  return guarded([&] { *bytes = pab::parse_memory_size(text, ""); });
}

Status replay(const ReplayOptions& opts, std::string* summary) {
  return guarded([&] {
    check_writable(opts.output);
    if (!opts.pab_report.empty()) check_writable(opts.pab_report);
    if (opts.pab.method != "pab")
      fail("replay compares with PAB references: the cache method is pab, not '", opts.pab.method, "'");
    LoadOptions lo = load_options_with_ranks(opts.compute);
    if (is_pipeline_case(opts.case_dir)) {
      PipelineCase c = load_pipeline_case(opts.case_dir);
      if (opts.pab.any())
        c.pab =
            resolve_pab_choice(opts.pab.preset, opts.pab.file,
                               transformer_class_name((std::filesystem::path(c.dir) / "model/transformer").string()));
      auto tensors = replay_pipeline_case(c, lo, summary);
      if (!is_secondary_rank()) write_safetensors(opts.output, tensors);
      return;
    }
    ReplayCase c = load_replay_case(opts.case_dir);
    if (opts.pab.any())
      c.pab = resolve_pab_choice(opts.pab.preset, opts.pab.file,
                                 transformer_class_name((std::filesystem::path(c.dir) / "transformer").string()));
    CacheStats stats;
    auto tensors = replay_case(c, lo, summary, &stats);
    if (is_secondary_rank()) return;  // rank 0 writes
    write_safetensors(opts.output, tensors);
    if (!opts.pab_report.empty()) write_broadcast_map(opts.pab_report, stats, "PAB " + c.pab.describe());
  });
}

TilingChoice parse_tiling(const std::string& s) {
  if (s == "auto" || s.empty()) return TilingChoice::automatic;
  if (s == "on") return TilingChoice::on;
  if (s == "off") return TilingChoice::off;
  fail("tiling '", s, "': expected auto, on or off");
}

Status bench(const BenchRequest& request, std::string* report) {
  return guarded([&] {
    if (request.steps < 1) fail("--steps must be >= 1");
    const auto pipelines = pipeline_bench_workload_names();
    if (std::find(pipelines.begin(), pipelines.end(), request.workload) != pipelines.end()) {
      PipelineBenchWorkload w = pipeline_bench_workload(request.workload, request.steps);
      w.tiling = parse_tiling(request.tiling);
      PipelineBenchReport r = run_pipeline_bench(w, load_options_with_ranks(request.compute), request.pab);
      *report = request.json ? pipeline_bench_json(r) : pipeline_bench_text(r);
      return;
    }
    BenchOptions o;
    o.workload = request.workload;
    o.pab = request.pab;
    o.steps = request.steps;
    o.load = load_options_with_ranks(request.compute);
    BenchReport r = run_bench(o);
    *report = request.json ? bench_json(r) : bench_text(r);
  });
}

}  // namespace pab
