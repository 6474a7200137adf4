// Video quality metrics between two videos of the same size, per frame and
// overall: PSNR, SSIM and the largest and mean absolute error.
//
// Conventions (those of scikit-image's peak_signal_noise_ratio and
// structural_similarity, the latter as its documentation says to match Wang
// et al. 2004: gaussian_weights=True, sigma=1.5, use_sample_covariance=False):
//  - PSNR = 10 log10(R^2 / MSE) with R the data range (255 for 8-bit video, 1
//    for frames in [0, 1]) and the MSE over every channel and pixel of a
//    frame; the overall PSNR is from the MSE over all frames (not the mean of
//    the frames' PSNR). Identical frames give +inf.
//  - SSIM per RGB channel, averaged over the channels (skimage's
//    channel_axis), with an 11x11 Gaussian window (sigma 1.5, truncated at 3.5
//    sigma), K1 = 0.01, K2 = 0.03, population (co)variances, averaged over the
//    pixels whose window lies inside the frame (skimage crops a 5-pixel
//    border, where its padding mode would matter; torchmetrics' SSIM agrees
//    there). The overall SSIM is the mean over frames. Frames smaller than
//    11x11 have no SSIM (NaN).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace pab {

struct Rgb8Video;

struct FrameMetrics {
  double mse = 0;
  double psnr = 0;  // dB; +inf when identical
  double ssim = 0;  // NaN when the frames are smaller than the window
  double max_abs = 0, mean_abs = 0;
};

struct VideoComparison {
  int frames = 0, channels = 0, height = 0, width = 0;
  double data_range = 1;
  std::vector<FrameMetrics> per_frame;
  FrameMetrics overall;
};

// a and b: [F, C, H, W] float tensors (any float dtype, any device) with
// values in [0, data_range]; fails naming both shapes when they differ.
VideoComparison compare_frames(const Tensor& a, const Tensor& b, double data_range);

// An 8-bit video as [F, 3, H, W] f32 on the CPU with values 0..255 (compare
// with data_range 255, so that errors read in 8-bit levels).
Tensor rgb8_levels(const Rgb8Video& video);

// Per-frame table and the overall line; `a_name` and `b_name` label the inputs.
std::string comparison_text(const VideoComparison& c, const std::string& a_name, const std::string& b_name);
// The same as JSON; PSNR +inf and SSIM NaN are written as null.
nlohmann::json comparison_json(const VideoComparison& c, const std::string& a_name, const std::string& b_name);

}  // namespace pab
