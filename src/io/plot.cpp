#include "io/plot.h"

#include <cairo.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <memory>

#include "core/error.h"
#include "io/atomic_file.h"

namespace pab {

namespace {

constexpr double kTitleSize = 17, kLabelSize = 13, kTickSize = 11;
constexpr Rgb kInk{0.15, 0.15, 0.15}, kGridLine{0.88, 0.88, 0.88}, kFrame{0.35, 0.35, 0.35};

// An image surface and its context, written to a PNG at the end.
class Canvas {
 public:
  Canvas(int width, int height)
      : surface_(cairo_image_surface_create(CAIRO_FORMAT_RGB24, width, height), cairo_surface_destroy),
        cr_(cairo_create(surface_.get()), cairo_destroy) {
    if (cairo_surface_status(surface_.get()) != CAIRO_STATUS_SUCCESS)
      fail("plot: cannot create a ", width, "x", height, " image");
    cairo_set_source_rgb(cr_.get(), 1, 1, 1);
    cairo_paint(cr_.get());
    cairo_select_font_face(cr_.get(), "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
  }
  cairo_t* cr() const { return cr_.get(); }

  void colour(const Rgb& c, double alpha = 1) { cairo_set_source_rgba(cr(), c.r, c.g, c.b, alpha); }
  void font(double size, bool bold = false) {
    cairo_select_font_face(cr(), "sans-serif", CAIRO_FONT_SLANT_NORMAL,
                           bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(cr(), size);
  }
  double text_width(const std::string& s) {
    cairo_text_extents_t e;
    cairo_text_extents(cr(), s.c_str(), &e);
    return e.x_advance;
  }
  // Text with its anchor at (x, y): ax 0 left, 0.5 centre, 1 right; y is the
  // vertical centre of a capital letter.
  void text(const std::string& s, double x, double y, double ax = 0, double angle = 0) {
    cairo_font_extents_t fe;
    cairo_font_extents(cr(), &fe);
    cairo_save(cr());
    cairo_translate(cr(), x, y);
    cairo_rotate(cr(), angle);
    cairo_move_to(cr(), -ax * text_width(s), fe.ascent * 0.35);
    cairo_show_text(cr(), s.c_str());
    cairo_restore(cr());
  }
  // Centred text at (x, y) in the largest size up to `size` (down to 9) that fits `width`.
  void fitted_text(const std::string& s, double x, double y, double width, double size, bool bold) {
    for (font(size, bold); size > 9 && text_width(s) > width; size -= 0.5) font(size - 0.5, bold);
    text(s, x, y, 0.5);
  }
  void line(double x0, double y0, double x1, double y1, double width) {
    cairo_set_line_width(cr(), width);
    cairo_move_to(cr(), x0, y0);
    cairo_line_to(cr(), x1, y1);
    cairo_stroke(cr());
  }
  void rect(double x, double y, double w, double h) {
    cairo_rectangle(cr(), x, y, w, h);
    cairo_fill(cr());
  }

  void write(const std::string& path) {
    cairo_surface_flush(surface_.get());
    AtomicFile file(path);
    if (cairo_surface_write_to_png(surface_.get(), file.temp_path().c_str()) != CAIRO_STATUS_SUCCESS)
      fail(path, ": cannot write the PNG");
    file.commit();
  }

 private:
  std::unique_ptr<cairo_surface_t, void (*)(cairo_surface_t*)> surface_;
  std::unique_ptr<cairo_t, void (*)(cairo_t*)> cr_;
};

// Round tick positions covering [lo, hi], about `target` of them.
std::vector<double> nice_ticks(double lo, double hi, int target) {
  if (!(hi > lo)) return {lo};
  const double raw = (hi - lo) / target;
  const double mag = std::pow(10, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0}) {
    step = m * mag;
    if (step >= raw) break;
  }
  std::vector<double> out;
  for (double v = std::ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step)
    out.push_back(std::fabs(v) < step * 1e-9 ? 0 : v);
  return out;
}

std::string tick_text(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

// Legend entries: a swatch (line or box) and a label.
struct LegendEntry {
  std::string label;
  Rgb colour;
  bool box = false;
  double alpha = 1;
};
constexpr double kLegendRow = 20, kLegendPad = 8, kLegendSwatch = 22;
double legend_width(Canvas& c, const std::vector<LegendEntry>& entries) {
  c.font(kLabelSize);
  double w = 0;
  for (const auto& e : entries) w = std::max(w, c.text_width(e.label));
  return kLegendPad * 3 + kLegendSwatch + w;
}
// Boxed legend with its top-left corner at (x, y).
void draw_legend(Canvas& c, const std::vector<LegendEntry>& entries, double x, double y) {
  if (entries.empty()) return;
  const double bw = legend_width(c, entries), bh = kLegendPad * 2 + kLegendRow * double(entries.size());
  c.colour(kFrame);
  cairo_set_line_width(c.cr(), 1);
  cairo_rectangle(c.cr(), x + 0.5, y + 0.5, bw - 1, bh - 1);
  cairo_stroke(c.cr());
  for (size_t i = 0; i < entries.size(); ++i) {
    const double cy = y + kLegendPad + kLegendRow * (double(i) + 0.5);
    c.colour(entries[i].colour, entries[i].alpha);
    if (entries[i].box) {
      c.rect(x + kLegendPad, cy - 6, kLegendSwatch, 12);
    } else {
      c.line(x + kLegendPad, cy, x + kLegendPad + kLegendSwatch, cy, 2.5);
    }
    c.colour(kInk);
    c.text(entries[i].label, x + kLegendPad * 2 + kLegendSwatch, cy);
  }
}

// Title and optional subtitle, centred over [left, right].
double draw_titles(Canvas& c, const std::string& title, const std::string& subtitle, double left, double right) {
  c.colour(kInk);
  c.fitted_text(title, (left + right) / 2, 22, right - left, kTitleSize, true);
  if (subtitle.empty()) return 34;
  c.colour(kFrame);
  c.fitted_text(subtitle, (left + right) / 2, 42, right - left, kLabelSize, false);
  return 52;
}

}  // namespace

void write_line_plot(const std::string& path, const LinePlot& p) {
  Canvas c(p.width, p.height);
  std::vector<LegendEntry> legend;
  for (const LineSeries& s : p.series) legend.push_back({s.label, s.colour});
  if (!p.span_note.empty()) legend.push_back({p.span_note, kFrame, true, 0.25});
  const double legend_w = legend.empty() ? 0 : legend_width(c, legend) + 16;
  const double left = 84, right = std::max(left + 200, p.width - 16 - legend_w);
  const double top = draw_titles(c, p.title, p.subtitle, 12, p.width - 12.0) + 12, bottom = p.height - 62.0;

  double xmin = std::numeric_limits<double>::infinity(), xmax = -xmin, ymax = 0, ymin_pos = xmin;
  for (const LineSeries& s : p.series) {
    for (size_t i = 0; i < s.x.size(); ++i) {
      xmin = std::min(xmin, s.x[i]);
      xmax = std::max(xmax, s.x[i]);
      for (double y : {s.y[i], s.y_high.empty() ? 0.0 : s.y_high[i], s.y_low.empty() ? 0.0 : s.y_low[i]}) {
        if (!std::isfinite(y)) continue;
        ymax = std::max(ymax, y);
        if (y > 0) ymin_pos = std::min(ymin_pos, y);
      }
    }
  }
  for (const XSpan& s : p.spans) {
    xmin = std::min(xmin, std::min(s.x0, s.x1));
    xmax = std::max(xmax, std::max(s.x0, s.x1));
  }
  if (!std::isfinite(xmin)) xmin = 0, xmax = 1;
  if (xmax == xmin) xmax = xmin + 1;
  if (ymax <= 0) ymax = 1;
  const bool log_y = p.log_y_above > 0 && std::isfinite(ymin_pos) && ymax / ymin_pos > p.log_y_above;
  // Linear: from 0 to a round value above the data. Log: whole decades around it.
  double ylo = 0, yhi = 0;
  std::vector<double> yticks;
  if (log_y) {
    ylo = std::floor(std::log10(ymin_pos));
    yhi = std::ceil(std::log10(ymax));
    if (yhi == ylo) yhi += 1;
    for (double e = ylo; e <= yhi + 1e-9; e += 1) yticks.push_back(std::pow(10, e));
  } else {
    yticks = nice_ticks(0, ymax * 1.08, 6);
    yhi = std::max(yticks.back(), ymax * 1.08);
  }
  const std::vector<double> xticks = nice_ticks(xmin, xmax, 10);
  auto px = [&](double x) {
    double f = (x - xmin) / (xmax - xmin);
    return left + (p.x_reversed ? 1 - f : f) * (right - left);
  };
  // NaN for values a log axis cannot show (zero): the caller skips them.
  auto py = [&](double y) {
    if (!log_y) return bottom - y / yhi * (bottom - top);
    if (!(y > 0)) return std::numeric_limits<double>::quiet_NaN();
    return bottom - (std::log10(y) - ylo) / (yhi - ylo) * (bottom - top);
  };

  // Spans: a light band over the plot and a strip in each one's lane at the top.
  for (size_t i = 0; i < p.spans.size(); ++i) {
    const XSpan& s = p.spans[i];
    const double a = px(s.x0), b = px(s.x1);
    c.colour(s.colour, 0.07);
    c.rect(std::min(a, b), top, std::fabs(b - a), bottom - top);
    c.colour(s.colour, 0.85);
    c.rect(std::min(a, b), top + 2 + 7 * double(i), std::fabs(b - a), 5);
  }
  // Grid and ticks.
  c.font(kTickSize);
  for (double v : yticks) {
    c.colour(kGridLine);
    c.line(left, py(v), right, py(v), 1);
    c.colour(kInk);
    c.text(tick_text(v), left - 8, py(v), 1);
  }
  for (double v : xticks) {
    c.colour(kGridLine);
    c.line(px(v), top, px(v), bottom, 1);
    c.colour(kInk);
    c.line(px(v), bottom, px(v), bottom + 5, 1);
    c.text(tick_text(v), px(v), bottom + 16, 0.5);
  }
  c.colour(kFrame);
  cairo_set_line_width(c.cr(), 1);
  cairo_rectangle(c.cr(), left + 0.5, top + 0.5, right - left - 1, bottom - top - 1);
  cairo_stroke(c.cr());

  // Series: band, then line with markers, clipped to the plot.
  cairo_save(c.cr());
  cairo_rectangle(c.cr(), left, top, right - left, bottom - top);
  cairo_clip(c.cr());
  for (const LineSeries& s : p.series) {
    if (!s.y_low.empty()) {
      c.colour(s.colour, 0.15);
      for (size_t i = 0; i + 1 < s.x.size(); ++i) {
        const double y[4] = {py(s.y_high[i]), py(s.y_high[i + 1]), py(s.y_low[i + 1]), py(s.y_low[i])};
        if (!std::all_of(y, y + 4, [](double v) { return std::isfinite(v); })) continue;
        cairo_move_to(c.cr(), px(s.x[i]), y[0]);
        cairo_line_to(c.cr(), px(s.x[i + 1]), y[1]);
        cairo_line_to(c.cr(), px(s.x[i + 1]), y[2]);
        cairo_line_to(c.cr(), px(s.x[i]), y[3]);
        cairo_close_path(c.cr());
        cairo_fill(c.cr());
      }
    }
    c.colour(s.colour);
    cairo_set_line_width(c.cr(), 2.2);
    bool drawing = false;
    for (size_t i = 0; i < s.x.size(); ++i) {
      const double y = py(s.y[i]);
      if (!std::isfinite(y)) {
        drawing = false;
        continue;
      }
      if (drawing) {
        cairo_line_to(c.cr(), px(s.x[i]), y);
      } else {
        cairo_move_to(c.cr(), px(s.x[i]), y);
      }
      drawing = true;
    }
    cairo_stroke(c.cr());
    for (size_t i = 0; i < s.x.size(); ++i) {
      const double y = py(s.y[i]);
      if (!std::isfinite(y)) continue;
      cairo_arc(c.cr(), px(s.x[i]), y, 3, 0, 2 * M_PI);
      cairo_fill(c.cr());
    }
  }
  cairo_restore(c.cr());

  c.colour(kInk);
  c.font(kLabelSize);
  c.text(p.x_label, (left + right) / 2, p.height - 18.0, 0.5);
  c.text(p.y_label + (log_y ? " (log scale)" : ""), 22, (top + bottom) / 2, 0.5, -M_PI / 2);
  draw_legend(c, legend, right + 16, top);
  c.write(path);
}

int write_grid_plot(const std::string& path, const GridPlot& p) {
  const double left = 84, right = p.width - 24.0;
  int cols = 0, rows_max = 0;
  for (const GridPanel& panel : p.panels) {
    PAB_ASSERT(panel.cells.size() == size_t(panel.rows) * size_t(panel.cols), "grid panel cells");
    cols = std::max(cols, panel.cols);
    rows_max = std::max(rows_max, panel.rows);
  }
  cols = std::max(cols, 1);
  const double cell_w = (right - left) / cols;
  // Square cells where they fit; tall models get thinner rows.
  const double cell_h = std::clamp(std::min(cell_w, 260.0 / std::max(rows_max, 1)), 4.0, 28.0);
  std::vector<bool> used(p.categories.size(), false);
  for (const GridPanel& panel : p.panels)
    for (int v : panel.cells)
      if (v >= 0) {
        PAB_ASSERT(size_t(v) < p.categories.size(), "grid category ", v);
        used[size_t(v)] = true;
      }
  const double header = (p.subtitle.empty() ? 34 : 52) + 50, panel_title = 26, axis = p.col_sublabels.empty() ? 30 : 44,
               gap = 18, footer = 34;
  std::vector<double> panel_top;
  double y = header;
  for (const GridPanel& panel : p.panels) {
    panel_top.push_back(y);
    y += panel_title + panel.rows * cell_h + axis + gap;
  }
  const int height = int(std::ceil(y + footer));
  Canvas c(p.width, height);

  const double legend_y = draw_titles(c, p.title, p.subtitle, 12, p.width - 12.0) + 16;
  // Category legend in a row under the title.
  c.font(kLabelSize);
  double lx = left;
  for (size_t i = 0; i < p.categories.size(); ++i) {
    if (!used[i]) continue;
    const GridCategory& cat = p.categories[i];
    c.colour(cat.colour);
    c.rect(lx, legend_y - 8, 16, 16);
    c.colour(kInk);
    c.text(cat.label, lx + 22, legend_y);
    lx += 22 + c.text_width(cat.label) + 28;
  }

  // Column labels thinned so that neighbours do not touch.
  c.font(kTickSize);
  double widest = 1;
  for (const auto& s : p.col_labels) widest = std::max(widest, c.text_width(s));
  for (const auto& s : p.col_sublabels) widest = std::max(widest, c.text_width(s));
  const int stride = std::max(1, int(std::ceil((widest + 8) / cell_w)));

  for (size_t k = 0; k < p.panels.size(); ++k) {
    const GridPanel& panel = p.panels[k];
    const double top = panel_top[k] + panel_title;
    c.colour(kInk);
    c.font(kLabelSize, true);
    c.text(panel.title, left, panel_top[k] + 12);
    for (int r = 0; r < panel.rows; ++r) {
      for (int col = 0; col < panel.cols; ++col) {
        int v = panel.cells[size_t(r) * size_t(panel.cols) + size_t(col)];
        if (v < 0) continue;
        c.colour(p.categories[size_t(v)].colour);
        c.rect(left + col * cell_w, top + r * cell_h, cell_w, cell_h);
      }
    }
    // Cell borders where the cells are large enough to show them.
    if (cell_w >= 6 && cell_h >= 6) {
      c.colour({1, 1, 1});
      for (int col = 1; col < panel.cols; ++col)
        c.line(left + col * cell_w, top, left + col * cell_w, top + panel.rows * cell_h, 1);
      for (int r = 1; r < panel.rows; ++r)
        c.line(left, top + r * cell_h, left + panel.cols * cell_w, top + r * cell_h, 1);
    }
    c.colour(kFrame);
    cairo_set_line_width(c.cr(), 1);
    cairo_rectangle(c.cr(), left + 0.5, top + 0.5, panel.cols * cell_w - 1, panel.rows * cell_h - 1);
    cairo_stroke(c.cr());
    // Row ticks: every block when they fit, otherwise a few.
    c.font(kTickSize);
    c.colour(kInk);
    const int row_stride = std::max(1, int(std::ceil(14 / cell_h)));
    for (int r = 0; r < panel.rows; r += row_stride) c.text(std::to_string(r), left - 6, top + (r + 0.5) * cell_h, 1);
    c.text(p.y_label, left - 40, top + panel.rows * cell_h / 2, 0.5, -M_PI / 2);
    const double base = top + panel.rows * cell_h;
    for (int col = 0; col < panel.cols; col += stride) {
      const double cx = left + (col + 0.5) * cell_w;
      c.line(cx, base, cx, base + 4, 1);
      if (size_t(col) < p.col_labels.size()) c.text(p.col_labels[size_t(col)], cx, base + 14, 0.5);
      if (size_t(col) < p.col_sublabels.size()) {
        c.colour(kFrame);
        c.text(p.col_sublabels[size_t(col)], cx, base + 28, 0.5);
        c.colour(kInk);
      }
    }
  }
  c.font(kLabelSize);
  c.colour(kInk);
  c.text(p.x_label, (left + right) / 2, height - 16.0, 0.5);
  c.write(path);
  return height;
}

}  // namespace pab
