// Video output and input: generated frames (F x 3 x H x W floats in [0, 1],
// as the pipelines return them) to an H.264 mp4 (libavcodec/libavformat) or
// to a folder of PNG frames (libpng), both written atomically; and reading an
// mp4 (any container and codec libavformat decodes) or a PNG folder back.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace pab {

// 8-bit RGB video, frames stored one after another as [F, H, W, 3].
struct Rgb8Video {
  int frames = 0, height = 0, width = 0;
  double fps = 0;  // 0 where unknown (a PNG folder)
  std::vector<uint8_t> rgb;

  const uint8_t* frame(int f) const { return rgb.data() + size_t(f) * size_t(height) * size_t(width) * 3; }
};

// [F, 3, H, W] floats -> 8 bit exactly as diffusers' numpy_to_pil (the path of
// the pipelines' default output): round(x * 255) in f32 with halves to even.
// Values outside [0, 1] are clipped first (diffusers clamps them earlier), NaN
// gives 0. Fails on another shape.
Rgb8Video quantize_frames(const Tensor& frames);
// 8 bit -> [F, 3, H, W] f32 on the CPU, v / 255.
Tensor frames_from_rgb8(const Rgb8Video& video);

struct VideoWriteOptions {
  double fps = 8;                   // CogVideoX and Latte are shown at 8 fps, Open-Sora at 24
  int crf = 18;                     // libx264 constant rate factor (0 lossless .. 51)
  std::string encoder = "libx264";  // falls back to mpeg4 (with a warning) when unavailable
};

struct VideoWriteReport {
  std::string encoder;                // the encoder used
  int width = 0, height = 0;          // as stored: odd sizes are padded to even (yuv420p)
  std::vector<std::string> warnings;  // fallback encoder, padding
};

// Writes an H.264 yuv420p video (BT.601 limited range, as ffmpeg's default RGB
// conversion) at `path`; the container follows the extension (mp4 when it has
// none; mp4/mov get +faststart). The file appears only when complete. Fails
// with a message naming the path if it cannot be written.
VideoWriteReport write_video(const std::string& path, const Rgb8Video& video, const VideoWriteOptions& opts = {});
VideoWriteReport write_video(const std::string& path, const Tensor& frames, const VideoWriteOptions& opts = {});

// Writes frame_0000.png, frame_0001.png, ... (8-bit RGB) into folder `dir`,
// built under a temporary name and renamed into place. An existing `dir` is
// replaced only if it holds nothing but frame_*.png files.
void write_png_frames(const std::string& dir, const Rgb8Video& video);
void write_png_frames(const std::string& dir, const Tensor& frames);
// The checks write_png_frames makes before writing (the parent folder exists
// and is writable; an existing `dir` is a folder of frames only), so that a
// caller can fail before any work. Creates nothing.
void check_png_frames_target(const std::string& dir);

// Decodes a video file (all frames, converted to RGB) or a folder of
// frame_NNNN.png files (in number order).
Rgb8Video read_video(const std::string& path);

// What a video file's container says, without decoding.
struct VideoInfo {
  std::string codec;    // e.g. "h264"
  std::string pix_fmt;  // e.g. "yuv420p"
  int width = 0, height = 0;
  int64_t frames = 0;  // the stream's frame count (0 if the container does not say)
  double fps = 0;      // average frame rate
};
VideoInfo probe_video(const std::string& path);

}  // namespace pab
