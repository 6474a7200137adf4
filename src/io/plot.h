// PNG charts for reports, drawn with cairo (text in fontconfig's sans-serif
// face): line plots with shaded x-ranges, and panels of category grids (e.g.
// blocks x steps, computed or broadcast). Both are written atomically and
// fail naming the path when they cannot be.
#pragma once

#include <string>
#include <vector>

namespace pab {

struct Rgb {
  double r = 0, g = 0, b = 0;  // 0..1
};

struct LineSeries {
  std::string label;
  Rgb colour;
  std::vector<double> x, y;  // NaN in y leaves a gap
  // Optional band drawn behind the line (e.g. the spread over blocks); empty or as long as x.
  std::vector<double> y_low, y_high;
};

// A shaded range of x, e.g. a broadcast window: a light band over the plot
// and a solid strip in its own lane along the top.
struct XSpan {
  double x0 = 0, x1 = 0;
  Rgb colour;
};

// Titles shrink to fit the width; a subtitle goes on a second, smaller line.
struct LinePlot {
  std::string title, subtitle, x_label, y_label;
  bool x_reversed = false;  // larger x on the left (diffusion timesteps run downwards)
  // The y axis turns logarithmic when the positive values span more than this
  // factor (so that small curves are not flattened onto zero); 0: always linear.
  double log_y_above = 30;
  std::vector<LineSeries> series;
  std::vector<XSpan> spans;
  std::string span_note;           // legend text for the spans, e.g. "bands: proposed broadcast windows"
  int width = 1120, height = 600;  // the legend takes the right-hand side
};
void write_line_plot(const std::string& path, const LinePlot& plot);

struct GridCategory {
  std::string label;
  Rgb colour;
};

struct GridPanel {
  std::string title;
  int rows = 0, cols = 0;
  std::vector<int> cells;  // [rows * cols] row-major, an index into the categories; -1 leaves it empty
};

struct GridPlot {
  std::string title, subtitle, x_label, y_label;
  std::vector<std::string> col_labels, col_sublabels;  // under each column (thinned to fit); sublabels optional
  std::vector<GridCategory> categories;                // the legend shows those some cell uses
  std::vector<GridPanel> panels;
  int width = 960;
};
// Returns the height of the image, which grows with the panels' rows.
int write_grid_plot(const std::string& path, const GridPlot& plot);

}  // namespace pab
