#include "pipeline/calibrate.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "backend/backend.h"
#include "cache/pab_config.h"
#include "io/atomic_file.h"
#include "pipeline/pab_report.h"
#include "pipeline/replay.h"

namespace pab {

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

std::string fixed(double v, int digits) {
  if (std::isnan(v)) return "-";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

// Relative L2 difference and largest absolute difference of a against b.
std::pair<double, double> tensor_difference(const Tensor& a, const Tensor& b) {
  PAB_ASSERT(a.shape() == b.shape(), "latents of different shapes: ", a.desc(), " and ", b.desc());
  const std::vector<float> x = a.to_vector(), y = b.to_vector();
  double diff = 0, ref = 0, max_abs = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double d = double(x[i]) - double(y[i]);
    diff += d * d;
    ref += double(y[i]) * double(y[i]);
    max_abs = std::max(max_abs, std::fabs(d));
  }
  return {ref > 0 ? std::sqrt(diff / ref) : std::sqrt(diff), max_abs};
}

int broadcast_calls(const CacheStats& s) {
  return s.total().reused;
}
int all_calls(const CacheStats& s) {
  return s.total().computed + s.total().reused;
}

std::string kinds_summary(const ChangeTable& t) {
  std::string s;
  for (const auto& k : t.kinds) s += cat(s.empty() ? "" : ", ", site_kind_name(k.kind), " ", k.blocks());
  return s;
}

std::string cost_summary(const CostModel& c, const ChangeTable& t) {
  std::string s;
  for (const auto& k : t.kinds)
    s += cat(s.empty() ? "" : ", ", site_kind_name(k.kind), " ", fixed(100 * c.fraction[size_t(k.kind)], 1), "%");
  return s;
}

}  // namespace

Generation replay_generation(const std::string& case_dir, const LoadOptions& opts) {
  auto c = std::make_shared<ReplayCase>(load_replay_case(case_dir));
  std::shared_ptr<DiffusionTransformer> model = load_transformer((fs::path(case_dir) / "transformer").string(), opts);
  c->latents0 = c->latents0.to(opts.device).to(opts.dtype);
  c->text = c->text.to(opts.device).to(opts.dtype);
  Generation g;
  g.description = cat(model->class_name(), ", case ", case_dir);
  g.model_class = model->class_name();
  g.sites = model->site_layout();
  g.device = opts.device;
  g.known_configs.push_back({"case.json pab", c->pab});
  const Device device = opts.device;
  g.run = [c, model, device](CachePolicy* sites) {
    Backend& be = backend(device);
    be.synchronize();
    const auto t0 = Clock::now();
    ReplayRun run = run_replay(*model, *c, sites);
    be.synchronize();
    GenerationOutput out;
    out.loop_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    out.latents = run.latents;
    out.timesteps = c->timesteps;
    out.stats = run.stats;
    return out;
  };
  return g;
}

CalibrationResult run_calibration(const Generation& gen, const CalibrationOptions& opts) {
  CalibrationResult r;
  r.description = gen.description;

  // The full run, every site computed and recorded.
  ChangeRecorder recorder(gen.device);
  GenerationOutput full = gen.run(&recorder);
  r.steps = int(full.timesteps.size());
  r.calls = recorder.calls();
  r.table = tabulate_changes(r.calls, full.timesteps);
  if (r.table.kinds.empty()) fail(gen.description, ": no attention site ran; nothing to calibrate");
  r.loop_seconds = full.loop_seconds;
  r.overhead_seconds = recorder.overhead_seconds();
  r.cost = opts.cost ? *opts.cost
                     : measure_cost(r.calls, r.loop_seconds, r.overhead_seconds,
                                    cat("wall clock of each site's computation on ", device_name(gen.device),
                                        " (device synchronised around it) over the ", r.steps,
                                        "-step loop, the change measurements excluded"));

  // Known configurations on the same curves; the published one sets the default target.
  std::optional<PabPrediction> published;
  std::optional<PabConfig> published_config;
  try {
    PabConfig c = default_pab_config(gen.model_class);
    c.validate(gen.sites);
    published_config = c;
  } catch (const Error&) {
    // No published settings for this class (or none that fit it): nothing to compare with.
  }
  if (published_config) {
    published = predict_pab(*published_config, r.table, r.cost);
    r.references.push_back({"published (--pab default)", *published});
  }
  for (const auto& [label, config] : gen.known_configs) {
    config.validate(gen.sites);
    r.references.push_back({label, predict_pab(config, r.table, r.cost)});
  }
  if (opts.target_speedup) {
    r.target_speedup = *opts.target_speedup;
    r.target_source = "--target-speedup";
  } else if (published) {
    r.target_speedup = published->speedup;
    r.target_source = "the published settings' predicted speed-up";
  } else {
    fail(gen.model_class, " has no published PAB settings to take a target from; give --target-speedup");
  }

  ProposalOptions po;
  po.target_speedup = r.target_speedup;
  po.counting = opts.counting;
  po.max_range = opts.max_range;
  r.proposal = propose_pab(r.table, r.cost, po);
  r.proposal.best.config.validate(gen.sites);

  if (opts.verify) {
    VerifyReport v;
    v.plain_seconds = gen.run(nullptr).loop_seconds;
    auto measure = [&](const std::string& label, const PabConfig& config) {
      MeasuredRun m;
      m.label = label;
      m.config = config;
      PabPolicy policy(config);
      GenerationOutput out = gen.run(&policy);
      m.stats = out.stats;
      m.count_speedup = r.cost.speedup(m.stats);
      m.seconds = out.loop_seconds;
      std::tie(m.latents_rel_l2, m.latents_max_abs) = tensor_difference(out.latents, full.latents);
      if (out.frames.defined() && full.frames.defined()) m.frames = compare_frames(out.frames, full.frames, 1.0);
      return m;
    };
    v.proposal = measure("proposal", r.proposal.best.config);
    for (const auto& [label, p] : r.references) v.references.push_back(measure(label, p.config));
    r.verify = std::move(v);
  }
  return r;
}

std::vector<std::string> write_calibration_files(const CalibrationResult& r, const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail(dir, ": cannot create the folder: ", ec.message());
  std::vector<std::string> written;
  auto path = [&](const char* name) { return (fs::path(dir) / name).string(); };

  write_change_csv(path("changes.csv"), r.calls);
  written.push_back(path("changes.csv"));
  const PabConfig& proposal = r.proposal.best.config;
  write_change_plot(path("curves.png"), r.table, &proposal, r.description);
  written.push_back(path("curves.png"));
  if (proposal.any()) {
    const CacheStats& stats = r.verify ? r.verify->proposal.stats : r.proposal.best.stats;
    write_broadcast_map(path("proposal_map.png"), stats,
                        cat(r.verify ? "Measured" : "Predicted", " PAB ", format_pab_short_form(proposal)));
    written.push_back(path("proposal_map.png"));
    AtomicFile yaml(path("proposal.yaml"));
    {
      std::ofstream os(yaml.temp_path());
      os << format_pab_yaml(proposal,
                            proposal.counting == Counting::videosys ? PabDialect::videosys : PabDialect::diffusers);
      if (!os.flush()) fail(path("proposal.yaml"), ": cannot write");
    }
    yaml.commit();
    written.push_back(path("proposal.yaml"));
  }
  return written;
}

std::string calibration_text(const CalibrationResult& r) {
  std::ostringstream os;
  os << "calibrated " << r.description << ": " << r.steps << " steps; sites: " << kinds_summary(r.table) << "\n";
  os << "loop " << fixed(r.loop_seconds, 3) << " s with the recorder (" << fixed(r.overhead_seconds, 3)
     << " s of it measuring changes)\n";
  os << "cost: " << cost_summary(r.cost, r.table) << " of the loop (" << r.cost.source << ")\n\n";

  os << "relative L2 change of each site's output from the previous step (mean over blocks)\n";
  char line[256];
  std::snprintf(line, sizeof line, "%5s %9s", "step", "timestep");
  os << line;
  for (const auto& k : r.table.kinds) {
    std::snprintf(line, sizeof line, " %12s", site_kind_name(k.kind));
    os << line;
  }
  os << "\n";
  std::vector<std::vector<double>> curves;
  for (const auto& k : r.table.kinds) curves.push_back(k.curve());
  for (int s = 0; s < r.table.steps(); ++s) {
    std::snprintf(line, sizeof line, "%5d %9g", s, r.table.timesteps[size_t(s)]);
    os << line;
    for (const auto& c : curves) {
      std::snprintf(line, sizeof line, " %12s", fixed(c[size_t(s)], 6).c_str());
      os << line;
    }
    os << "\n";
  }

  const PabPrediction& best = r.proposal.best;
  auto describe = [](const PabPrediction& p) {
    return cat("speed-up ", fixed(p.speedup, 3), " (count-based), deviation ", fixed(p.deviation, 5), ", ",
               broadcast_calls(p.stats), " of ", all_calls(p.stats), " calls broadcast");
  };
  os << "\ntarget speed-up " << fixed(r.target_speedup, 3) << " (" << r.target_source << ")\n";
  os << (r.proposal.reached ? "proposal: " : "target out of reach; the fastest choice: ")
     << format_pab_short_form(best.config) << (best.config.counting == Counting::videosys ? " [videosys counting]" : "")
     << "\n";
  os << "  predicted: " << describe(best) << "\n";
  os << "  (" << r.proposal.candidates
     << " kind/range/window choices compared; deviation: mean over all site calls of the bound on a reused "
        "output's relative error)\n";
  for (const auto& [label, p] : r.references)
    os << label << ": " << p.config.describe() << "\n  predicted: " << describe(p) << "\n";
  if (r.verify) {
    const VerifyReport& v = *r.verify;
    os << "\nverify: each configuration run against the full run (loop " << fixed(v.plain_seconds, 3)
       << " s without PAB)\n";
    auto measured = [&](const MeasuredRun& m, double predicted) {
      os << m.label << ": count-based speed-up " << fixed(m.count_speedup, 3) << " (predicted " << fixed(predicted, 3)
         << "), wall clock " << fixed(m.seconds, 3) << " s = " << fixed(v.wall_speedup(m), 3) << "x\n"
         << "  final latents: relative L2 difference " << fixed(m.latents_rel_l2, 6) << ", max |difference| "
         << fixed(m.latents_max_abs, 6) << "\n";
      if (m.frames)
        os << "  decoded frames: PSNR " << fixed(m.frames->overall.psnr, 2) << " dB, SSIM "
           << fixed(m.frames->overall.ssim, 4) << ", max |difference| " << fixed(m.frames->overall.max_abs, 4) << "\n";
    };
    measured(v.proposal, best.speedup);
    for (size_t i = 0; i < v.references.size(); ++i) measured(v.references[i], r.references[i].second.speedup);
  }
  return os.str();
}

nlohmann::json calibration_json(const CalibrationResult& r) {
  using json = nlohmann::json;
  auto num = [](double v) { return std::isfinite(v) ? json(v) : json(nullptr); };
  auto prediction = [&](const PabPrediction& p) {
    json j = {{"describe", p.config.describe()},
              {"counting", p.config.counting == Counting::videosys ? "videosys" : "diffusers"},
              {"speedup", num(p.speedup)},
              {"deviation", num(p.deviation)},
              {"broadcast_calls", broadcast_calls(p.stats)},
              {"calls", all_calls(p.stats)}};
    try {
      j["short_form"] = format_pab_short_form(p.config);
    } catch (const Error&) {
      j["short_form"] = nullptr;  // block lists or MLP broadcast
    }
    return j;
  };
  json j;
  j["description"] = r.description;
  j["steps"] = r.steps;
  j["timesteps"] = r.table.timesteps;
  j["loop_seconds"] = r.loop_seconds;
  j["overhead_seconds"] = r.overhead_seconds;
  j["cost"] = {{"source", r.cost.source}};
  json kinds = json::object();
  for (const auto& k : r.table.kinds) {
    json curve = json::array();
    for (double v : k.curve()) curve.push_back(num(v));
    kinds[site_kind_name(k.kind)] = {
        {"blocks", k.blocks()}, {"cost_fraction", r.cost.fraction[size_t(k.kind)]}, {"mean_change", curve}};
  }
  j["kinds"] = std::move(kinds);
  j["target_speedup"] = r.target_speedup;
  j["target_source"] = r.target_source;
  j["proposal"] = prediction(r.proposal.best);
  j["proposal"]["reached"] = r.proposal.reached;
  j["proposal"]["candidates"] = r.proposal.candidates;
  json refs = json::object();
  for (const auto& [label, p] : r.references) refs[label] = prediction(p);
  j["references"] = std::move(refs);
  if (r.verify) {
    const VerifyReport& v = *r.verify;
    auto measured = [&](const MeasuredRun& m) {
      json mj = {{"label", m.label},
                 {"count_speedup", m.count_speedup},
                 {"seconds", m.seconds},
                 {"wall_speedup", num(v.wall_speedup(m))},
                 {"broadcast_calls", broadcast_calls(m.stats)},
                 {"calls", all_calls(m.stats)},
                 {"latents_rel_l2", m.latents_rel_l2},
                 {"latents_max_abs", m.latents_max_abs}};
      if (m.frames) mj["frames"] = comparison_json(*m.frames, m.label, "full")["overall"];
      return mj;
    };
    json refs_measured = json::array();
    for (const MeasuredRun& m : v.references) refs_measured.push_back(measured(m));
    j["verify"] = {
        {"plain_seconds", v.plain_seconds}, {"proposal", measured(v.proposal)}, {"references", refs_measured}};
  }
  return j;
}

}  // namespace pab
