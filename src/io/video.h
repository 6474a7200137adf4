// Video output and input: generated frames (F x 3 x H x W floats in [0, 1],
// as the pipelines return them) to an H.264 mp4, a VP9 WebM or a GIF
// (libavcodec/libavformat/libavfilter) or to a folder of PNG frames (libpng),
// all written atomically; and reading a video (any container and codec
// libavformat decodes) or a PNG folder back.
#pragma once

#include <cstdint>
#include <optional>
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

// The video files pab writes, chosen by the file's extension.
enum class VideoFormat : uint8_t {
  mp4,   // .mp4: H.264 (libx264), yuv420p
  webm,  // .webm: VP9 (libvpx-vp9), yuv420p
  gif,   // .gif: one palette for the whole video (libavfilter's palettegen), dithered
};

// The format `path`'s extension names (any letter case). Fails, listing the
// formats, for any other extension, and when this build's libav* lacks the
// format's encoder, muxer or filters.
VideoFormat video_format_of(const std::string& path);
// ".mp4 (H.264), .webm (VP9), .gif (GIF)": the formats this build can write.
std::string writable_video_formats();

struct VideoWriteOptions {
  double fps = 8;          // CogVideoX and Latte are shown at 8 fps, Open-Sora at 24
  std::optional<int> crf;  // constant quality: H.264 0..51 (default 18), VP9 0..63 (default 24); GIF has none
};

// Every check write_video makes before encoding (the format, a writable
// path, the frame rate and quality in range), so that a caller can fail
// before any work. Creates nothing.
void check_video_target(const std::string& path, const VideoWriteOptions& opts);

struct VideoWriteReport {
  std::string encoder;                // the encoder used
  int width = 0, height = 0;          // as stored: odd sizes are padded to even for yuv420p
  std::vector<std::string> warnings;  // padding
};

// Writes `video` at `path` in the format its extension names (yuv420p in
// BT.601 limited range, as ffmpeg's default RGB conversion, for H.264 and
// VP9; mp4 gets +faststart). The same frames give the same bytes. The file
// appears only when complete. Fails with a message naming the path if it
// cannot be written.
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
