#include "io/video_metrics.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>

#include "io/video.h"

namespace pab {

namespace {

constexpr int kRadius = 5;  // int(3.5 * 1.5 + 0.5): scipy's gaussian_filter with truncate=3.5
constexpr int kWindow = 2 * kRadius + 1;
constexpr double kSigma = 1.5, kK1 = 0.01, kK2 = 0.03;

std::array<double, kWindow> gaussian_window() {
  std::array<double, kWindow> g{};
  double sum = 0;
  for (int i = 0; i < kWindow; ++i) {
    const double x = i - kRadius;
    g[size_t(i)] = std::exp(-x * x / (2 * kSigma * kSigma));
    sum += g[size_t(i)];
  }
  for (double& v : g) v /= sum;
  return g;
}

// Mean SSIM of one channel (h x w, row-major) over the pixels whose window
// lies inside the image.
double ssim_channel(const float* x, const float* y, int h, int w, double range) {
  static const std::array<double, kWindow> g = gaussian_window();
  const double c1 = (kK1 * range) * (kK1 * range), c2 = (kK2 * range) * (kK2 * range);
  const int ow = w - 2 * kRadius, oh = h - 2 * kRadius;
  // Horizontal pass over every row, valid columns only: x, y, xx, yy, xy.
  std::vector<std::array<double, 5>> rows(size_t(h) * size_t(ow));
  for (int r = 0; r < h; ++r) {
    for (int c = 0; c < ow; ++c) {
      std::array<double, 5> acc{};
      for (int k = 0; k < kWindow; ++k) {
        const double a = x[size_t(r) * size_t(w) + size_t(c + k)], b = y[size_t(r) * size_t(w) + size_t(c + k)];
        const double wk = g[size_t(k)];
        acc[0] += wk * a;
        acc[1] += wk * b;
        acc[2] += wk * a * a;
        acc[3] += wk * b * b;
        acc[4] += wk * a * b;
      }
      rows[size_t(r) * size_t(ow) + size_t(c)] = acc;
    }
  }
  double total = 0;
  for (int r = 0; r < oh; ++r) {
    for (int c = 0; c < ow; ++c) {
      std::array<double, 5> m{};
      for (int k = 0; k < kWindow; ++k) {
        const auto& v = rows[size_t(r + k) * size_t(ow) + size_t(c)];
        for (int i = 0; i < 5; ++i) m[size_t(i)] += g[size_t(k)] * v[size_t(i)];
      }
      const double ux = m[0], uy = m[1];
      const double vx = m[2] - ux * ux, vy = m[3] - uy * uy, vxy = m[4] - ux * uy;
      total += ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2));
    }
  }
  return total / (double(oh) * double(ow));
}

double psnr(double mse, double range) {
  return mse == 0 ? std::numeric_limits<double>::infinity() : 10 * std::log10(range * range / mse);
}

nlohmann::json number_or_null(double v) {
  return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
}

nlohmann::json metrics_json(const FrameMetrics& m) {
  return {{"psnr_db", number_or_null(m.psnr)},
          {"ssim", number_or_null(m.ssim)},
          {"mse", m.mse},
          {"max_abs_error", m.max_abs},
          {"mean_abs_error", m.mean_abs}};
}

std::string fixed(double v, int digits) {
  if (std::isnan(v)) return "n/a";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

}  // namespace

VideoComparison compare_frames(const Tensor& a_in, const Tensor& b_in, double data_range) {
  if (a_in.rank() != 4 || a_in.shape() != b_in.shape())
    fail("cannot compare videos of different sizes: ", shape_str(a_in.shape()), " and ", shape_str(b_in.shape()),
         " (frames, channels, height, width)");
  if (!(data_range > 0)) fail("compare: the data range must be > 0, got ", data_range);
  const std::vector<float> a = a_in.to_vector(), b = b_in.to_vector();
  VideoComparison out;
  out.frames = int(a_in.dim(0));
  out.channels = int(a_in.dim(1));
  out.height = int(a_in.dim(2));
  out.width = int(a_in.dim(3));
  out.data_range = data_range;
  const size_t plane = size_t(out.height) * size_t(out.width);
  const size_t frame = plane * size_t(out.channels);
  const bool has_ssim = out.height >= kWindow && out.width >= kWindow;
  double total_sq = 0, total_abs = 0, ssim_sum = 0;
  for (int f = 0; f < out.frames; ++f) {
    FrameMetrics m;
    double sq = 0, abs_sum = 0;
    for (size_t i = size_t(f) * frame; i < size_t(f + 1) * frame; ++i) {
      const double d = double(a[i]) - double(b[i]);
      sq += d * d;
      abs_sum += std::fabs(d);
      m.max_abs = std::max(m.max_abs, std::fabs(d));
    }
    m.mse = frame ? sq / double(frame) : 0;
    m.mean_abs = frame ? abs_sum / double(frame) : 0;
    m.psnr = psnr(m.mse, data_range);
    m.ssim = std::numeric_limits<double>::quiet_NaN();
    if (has_ssim) {
      double s = 0;
      for (int c = 0; c < out.channels; ++c) {
        const size_t at = size_t(f) * frame + size_t(c) * plane;
        s += ssim_channel(a.data() + at, b.data() + at, out.height, out.width, data_range);
      }
      m.ssim = s / out.channels;
      ssim_sum += m.ssim;
    }
    total_sq += sq;
    total_abs += abs_sum;
    out.overall.max_abs = std::max(out.overall.max_abs, m.max_abs);
    out.per_frame.push_back(m);
  }
  const double n = double(frame) * out.frames;
  out.overall.mse = n > 0 ? total_sq / n : 0;
  out.overall.mean_abs = n > 0 ? total_abs / n : 0;
  out.overall.psnr = psnr(out.overall.mse, data_range);
  out.overall.ssim = has_ssim && out.frames > 0 ? ssim_sum / out.frames : std::numeric_limits<double>::quiet_NaN();
  return out;
}

Tensor rgb8_levels(const Rgb8Video& v) {
  Tensor t = Tensor::empty({v.frames, 3, v.height, v.width});  // [F, 3, H, W]
  float* out = t.f32();
  const size_t plane = size_t(v.height) * size_t(v.width);
  for (int f = 0; f < v.frames; ++f) {
    const uint8_t* src = v.frame(f);  // [H, W, 3]
    for (size_t p = 0; p < plane; ++p)
      for (size_t c = 0; c < 3; ++c) out[(size_t(f) * 3 + c) * plane + p] = float(src[p * 3 + c]);
  }
  return t;
}

std::string comparison_text(const VideoComparison& c, const std::string& a_name, const std::string& b_name) {
  std::ostringstream os;
  const int digits = c.data_range >= 2 ? 2 : 5;  // 8-bit levels or [0, 1] values
  os << "A: " << a_name << "\nB: " << b_name << "\n"
     << c.frames << " frames " << c.width << "x" << c.height << ", " << c.channels << " channels, data range "
     << c.data_range << "; SSIM: 11x11 Gaussian window (sigma 1.5) per channel, averaged\n";
  char line[160];
  std::snprintf(line, sizeof line, "%-8s %9s %8s %10s %10s\n", "frame", "PSNR dB", "SSIM", "max|A-B|", "mean|A-B|");
  os << line;
  auto row = [&](const std::string& label, const FrameMetrics& m) {
    std::snprintf(line, sizeof line, "%-8s %9s %8s %10s %10s\n", label.c_str(), fixed(m.psnr, 2).c_str(),
                  fixed(m.ssim, 4).c_str(), fixed(m.max_abs, digits).c_str(), fixed(m.mean_abs, digits + 2).c_str());
    os << line;
  };
  for (size_t f = 0; f < c.per_frame.size(); ++f) row(std::to_string(f), c.per_frame[f]);
  row("overall", c.overall);
  return os.str();
}

nlohmann::json comparison_json(const VideoComparison& c, const std::string& a_name, const std::string& b_name) {
  nlohmann::json j;
  j["a"] = a_name;
  j["b"] = b_name;
  j["frames"] = c.frames;
  j["channels"] = c.channels;
  j["height"] = c.height;
  j["width"] = c.width;
  j["data_range"] = c.data_range;
  j["ssim_convention"] =
      "11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, per channel averaged, 5-pixel border "
      "cropped (scikit-image gaussian_weights=True, use_sample_covariance=False)";
  j["overall"] = metrics_json(c.overall);
  j["overall"]["psnr_from"] = "total MSE over all frames";
  nlohmann::json frames = nlohmann::json::array();
  for (const FrameMetrics& m : c.per_frame) frames.push_back(metrics_json(m));
  j["per_frame"] = std::move(frames);
  return j;
}

}  // namespace pab
