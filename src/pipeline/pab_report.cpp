#include "pipeline/pab_report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>

#include "io/plot.h"

namespace pab {

namespace {

// One colour per kind in every picture (matplotlib's first five).
Rgb kind_colour(SiteKind k) {
  static const Rgb kColours[kSiteKinds] = {
      {0.12, 0.47, 0.71}, {1.00, 0.50, 0.05}, {0.17, 0.63, 0.17}, {0.58, 0.40, 0.74}, {0.55, 0.34, 0.29}};
  return kColours[size_t(k)];
}

std::string kind_title(SiteKind k) {
  switch (k) {
    case SiteKind::spatial:
    case SiteKind::temporal:
    case SiteKind::cross:
      return cat(site_kind_name(k), " attention");
    case SiteKind::mlp_spatial:
      return "spatial MLP";
    case SiteKind::mlp_temporal:
      return "temporal MLP";
    case SiteKind::block:
    case SiteKind::step:
      break;
  }
  return site_kind_name(k);
}

std::string percent(int part, int whole) {
  return whole ? cat(int(std::lround(100.0 * part / whole)), "%") : "0%";
}

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

}  // namespace

int write_broadcast_map(const std::string& path, const CacheStats& stats, const std::string& caption) {
  if (stats.decisions.empty()) fail(path, ": no attention site ran, so there is nothing to draw");
  int steps = int(stats.per_step.size());
  std::map<int, int> blocks;  // kind -> blocks
  std::map<int, double> timestep_of;
  for (const CacheStats::Decision& d : stats.decisions) {
    steps = std::max(steps, d.step + 1);
    blocks[int(d.site.kind)] = std::max(blocks[int(d.site.kind)], d.site.block + 1);
    timestep_of.emplace(d.step, d.timestep);
  }
  GridPlot plot;
  plot.x_label = "denoising step (timestep below)";
  plot.y_label = "block";
  plot.categories = {{"computed", {0.16, 0.33, 0.55}},
                     {"broadcast (reused)", {0.98, 0.73, 0.35}},
                     {"both (several calls in the step)", {0.75, 0.55, 0.75}}};
  for (int s = 0; s < steps; ++s) {
    plot.col_labels.push_back(std::to_string(s));
    auto t = timestep_of.find(s);
    plot.col_sublabels.push_back(t == timestep_of.end() ? "" : number(t->second));
  }
  int computed_all = 0, broadcast_all = 0;
  for (const auto& [kind, nblocks] : blocks) {
    // MLP sites only where something was broadcast: otherwise all computed, as always.
    if (kind >= 3 && stats.total(SiteKind(kind)).reused == 0) continue;
    GridPanel panel;
    panel.rows = nblocks;
    panel.cols = steps;
    std::vector<int> computed(size_t(nblocks) * size_t(steps), 0), reused(computed.size(), 0);
    for (const CacheStats::Decision& d : stats.decisions) {
      if (int(d.site.kind) != kind) continue;
      const size_t at = size_t(d.site.block) * size_t(steps) + size_t(d.step);
      (d.computed ? computed : reused)[at]++;
    }
    for (size_t i = 0; i < computed.size(); ++i)
      panel.cells.push_back(computed[i] && reused[i] ? 2 : computed[i] ? 0 : reused[i] ? 1 : -1);
    CacheStats::Counts c = stats.total(SiteKind(kind));
    computed_all += c.computed;
    broadcast_all += c.reused;
    panel.title = cat(kind_title(SiteKind(kind)), ": ", c.computed, " computed, ", c.reused, " broadcast (",
                      percent(c.reused, c.computed + c.reused), ")");
    plot.panels.push_back(std::move(panel));
  }
  plot.title = cat("PAB broadcast map: ", broadcast_all, " of ", computed_all + broadcast_all, " calls broadcast (",
                   percent(broadcast_all, computed_all + broadcast_all), ")");
  plot.subtitle = caption;
  return write_grid_plot(path, plot);
}

void write_change_plot(const std::string& path, const ChangeTable& table, const PabConfig* windows,
                       const std::string& caption) {
  LinePlot plot;
  plot.title = "How much each site's output changes from the previous step";
  plot.subtitle = caption;
  plot.x_label = "timestep (the generation runs from left to right)";
  plot.y_label = "relative L2 change from the previous step";
  plot.x_reversed = true;
  for (const ChangeTable::Kind& kind : table.kinds) {
    LineSeries s;
    s.colour = kind_colour(kind.kind);
    s.x = table.timesteps;
    s.y = kind.curve();
    s.label = kind_title(kind.kind);
    if (kind.blocks() > 1) {
      for (int step = 0; step < table.steps(); ++step) {
        double lo = INFINITY, hi = -INFINITY;
        for (const auto& block : kind.change) {
          if (std::isnan(block[size_t(step)])) continue;
          lo = std::min(lo, block[size_t(step)]);
          hi = std::max(hi, block[size_t(step)]);
        }
        s.y_low.push_back(std::isfinite(lo) ? lo : NAN);
        s.y_high.push_back(std::isfinite(hi) ? hi : NAN);
      }
    }
    if (windows && int(kind.kind) < 3) {
      const BroadcastRule& r = windows->rule(kind.kind);
      if (r.enabled()) {
        s.label += cat(", range ", r.range, " in (", number(r.lo), ", ", number(r.hi), ")");
        plot.spans.push_back({r.lo, r.hi, s.colour});
      }
    }
    plot.series.push_back(std::move(s));
  }
  if (!plot.spans.empty()) plot.span_note = "broadcast windows (strips on top)";
  plot.subtitle += " - lines: mean over blocks";
  if (!table.kinds.empty() && table.kinds[0].blocks() > 1) plot.subtitle += ", bands: their spread";
  write_line_plot(path, plot);
}

}  // namespace pab
