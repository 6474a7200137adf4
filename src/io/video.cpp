// Video files through libavformat/libavcodec/libswscale and PNG frames
// through libpng's simplified API (no setjmp across C++ frames).
#include "io/video.h"

#include <png.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <regex>

#include "io/atomic_file.h"

#if PAB_HAVE_LIBAV
extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/pixdesc.h>
#include <libswscale/swscale.h>
}
#endif

namespace pab {

namespace fs = std::filesystem;

namespace {

#if PAB_HAVE_LIBAV
// ------------------------------------------------------------------ libav helpers

std::string av_error(int code) {
  char buf[AV_ERROR_MAX_STRING_SIZE] = {};
  av_strerror(code, buf, sizeof buf);
  return buf;
}

void check_av(int ret, const std::string& path, const char* what) {
  if (ret < 0) fail(path, ": ", what, ": ", av_error(ret));
}

// libav and libx264 report progress at the info level; only errors matter here.
void quiet_libav() {
  static const bool once = [] {
    av_log_set_level(AV_LOG_ERROR);
    return true;
  }();
  (void)once;
}

struct OutputContextDeleter {
  void operator()(AVFormatContext* c) const {
    if (c->pb && !(c->oformat->flags & AVFMT_NOFILE)) avio_closep(&c->pb);
    avformat_free_context(c);
  }
};
struct InputContextDeleter {
  void operator()(AVFormatContext* c) const { avformat_close_input(&c); }
};
struct CodecContextDeleter {
  void operator()(AVCodecContext* c) const { avcodec_free_context(&c); }
};
struct FrameDeleter {
  void operator()(AVFrame* f) const { av_frame_free(&f); }
};
struct PacketDeleter {
  void operator()(AVPacket* p) const { av_packet_free(&p); }
};
struct SwsDeleter {
  void operator()(SwsContext* s) const { sws_freeContext(s); }
};
struct DictGuard {
  AVDictionary* d = nullptr;
  ~DictGuard() { av_dict_free(&d); }
};

using OutputContext = std::unique_ptr<AVFormatContext, OutputContextDeleter>;
using InputContext = std::unique_ptr<AVFormatContext, InputContextDeleter>;
using CodecContext = std::unique_ptr<AVCodecContext, CodecContextDeleter>;
using Frame = std::unique_ptr<AVFrame, FrameDeleter>;
using Packet = std::unique_ptr<AVPacket, PacketDeleter>;
using Sws = std::unique_ptr<SwsContext, SwsDeleter>;

#endif

#if PAB_HAVE_LIBAV
// Replicates the last column and row so both sizes are even (4:2:0 chroma).
Rgb8Video pad_to_even(const Rgb8Video& v) {
  Rgb8Video out = v;
  out.width = v.width + (v.width & 1);
  out.height = v.height + (v.height & 1);
  out.rgb.assign(size_t(v.frames) * out.height * out.width * 3, 0);
  for (int f = 0; f < v.frames; ++f)
    for (int y = 0; y < out.height; ++y)
      for (int x = 0; x < out.width; ++x) {
        const uint8_t* src = v.frame(f) + (size_t(std::min(y, v.height - 1)) * v.width + std::min(x, v.width - 1)) * 3;
        std::copy(src, src + 3, out.rgb.data() + ((size_t(f) * out.height + y) * out.width + x) * 3);
      }
  return out;
}
#endif

void check_video(const Rgb8Video& v, const std::string& path) {
  if (v.frames < 1 || v.height < 1 || v.width < 1)
    fail(path, ": nothing to write (", v.frames, " frames of ", v.width, "x", v.height, ")");
  PAB_ASSERT(v.rgb.size() == size_t(v.frames) * v.height * v.width * 3, "RGB buffer of ", v.rgb.size(), " bytes");
}

#if PAB_HAVE_LIBAV
// Sends one frame (or the flush, frame = null) and writes what the encoder returns.
void encode(AVCodecContext* enc, AVFrame* frame, AVFormatContext* oc, AVStream* st, AVPacket* pkt,
            const std::string& path) {
  check_av(avcodec_send_frame(enc, frame), path, "encoding a frame");
  for (;;) {
    int ret = avcodec_receive_packet(enc, pkt);
    if (ret == AVERROR(EAGAIN) || ret == AVERROR_EOF) return;
    check_av(ret, path, "encoding a frame");
    av_packet_rescale_ts(pkt, enc->time_base, st->time_base);
    pkt->stream_index = st->index;
    check_av(av_interleaved_write_frame(oc, pkt), path, "writing a packet");
  }
}
#endif

// ------------------------------------------------------------------ PNG helpers

std::string frame_name(int i) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "frame_%04d.png", i);
  return buf;
}

const std::regex& frame_pattern() {
  static const std::regex re("frame_([0-9]+)\\.png");
  return re;
}

void write_png(const std::string& file, const uint8_t* rgb, int width, int height) {
  png_image img{};
  img.version = PNG_IMAGE_VERSION;
  img.width = png_uint_32(width);
  img.height = png_uint_32(height);
  img.format = PNG_FORMAT_RGB;
  if (!png_image_write_to_file(&img, file.c_str(), 0, rgb, width * 3, nullptr)) {
    std::string why = img.message;
    png_image_free(&img);
    fail(file, ": cannot write PNG: ", why);
  }
}

void read_png(const std::string& file, Rgb8Video* v) {
  png_image img{};
  img.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_file(&img, file.c_str())) fail(file, ": not a readable PNG: ", img.message);
  img.format = PNG_FORMAT_RGB;
  if (v->frames == 0) {
    v->width = int(img.width);
    v->height = int(img.height);
  } else if (int(img.width) != v->width || int(img.height) != v->height) {
    png_image_free(&img);
    fail(file, ": ", img.width, "x", img.height, " differs from the first frame's ", v->width, "x", v->height);
  }
  const size_t offset = v->rgb.size();
  v->rgb.resize(offset + PNG_IMAGE_SIZE(img));
  if (!png_image_finish_read(&img, nullptr, v->rgb.data() + offset, 0, nullptr))
    fail(file, ": cannot decode PNG: ", img.message);
  ++v->frames;
}

// A temporary folder beside the target, removed unless released.
class TempDir {
 public:
  explicit TempDir(const fs::path& target)
      : path_(target.parent_path() / ("." + target.filename().string() + ".tmp" + std::to_string(::getpid()))) {
    std::error_code ec;
    fs::remove_all(path_, ec);
    if (!fs::create_directory(path_, ec)) fail(target.string(), ": cannot create a folder beside it: ", ec.message());
  }
  ~TempDir() {
    std::error_code ec;
    if (!released_) fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  void release() { released_ = true; }

 private:
  fs::path path_;
  bool released_ = false;
};

bool holds_only_frames(const fs::path& dir) {
  for (const auto& e : fs::directory_iterator(dir))
    if (!e.is_regular_file() || !std::regex_match(e.path().filename().string(), frame_pattern())) return false;
  return true;
}

Rgb8Video read_png_folder(const std::string& dir) {
  std::vector<std::pair<long, fs::path>> files;
  for (const auto& e : fs::directory_iterator(dir)) {
    std::smatch m;
    const std::string name = e.path().filename().string();
    if (std::regex_match(name, m, frame_pattern())) files.emplace_back(std::stol(m[1]), e.path());
  }
  if (files.empty()) fail(dir, ": no frame_NNNN.png files in this folder");
  std::sort(files.begin(), files.end());
  Rgb8Video v;
  for (const auto& [index, file] : files) read_png(file.string(), &v);
  return v;
}

#if PAB_HAVE_LIBAV
Rgb8Video decode_file(const std::string& path) {
  quiet_libav();
  AVFormatContext* raw = nullptr;
  check_av(avformat_open_input(&raw, path.c_str(), nullptr, nullptr), path, "cannot open");
  InputContext ic(raw);
  check_av(avformat_find_stream_info(ic.get(), nullptr), path, "cannot read stream information");
  const AVCodec* codec = nullptr;
  const int index = av_find_best_stream(ic.get(), AVMEDIA_TYPE_VIDEO, -1, -1, &codec, 0);
  check_av(index, path, "no decodable video stream");
  AVStream* st = ic->streams[index];
  CodecContext dec(avcodec_alloc_context3(codec));
  check_av(avcodec_parameters_to_context(dec.get(), st->codecpar), path, "decoder parameters");
  check_av(avcodec_open2(dec.get(), codec, nullptr), path, "cannot open the decoder");

  Rgb8Video v;
  AVRational rate = st->avg_frame_rate.num ? st->avg_frame_rate : st->r_frame_rate;
  v.fps = rate.num ? av_q2d(rate) : 0;
  Frame frame(av_frame_alloc());
  Packet pkt(av_packet_alloc());
  Sws sws;
  auto receive = [&] {
    for (;;) {
      int ret = avcodec_receive_frame(dec.get(), frame.get());
      if (ret == AVERROR(EAGAIN) || ret == AVERROR_EOF) return;
      check_av(ret, path, "decoding a frame");
      if (v.frames == 0) {
        v.width = frame->width;
        v.height = frame->height;
        sws.reset(sws_getContext(v.width, v.height, AVPixelFormat(frame->format), v.width, v.height, AV_PIX_FMT_RGB24,
                                 SWS_BICUBIC | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INT, nullptr, nullptr, nullptr));
        if (!sws) fail(path, ": cannot convert ", av_get_pix_fmt_name(AVPixelFormat(frame->format)), " to RGB");
        // Decode with the matrix and range the stream declares (BT.601 limited when unspecified).
        const int cs = frame->colorspace == AVCOL_SPC_BT709 ? SWS_CS_ITU709 : SWS_CS_DEFAULT;
        const int full = frame->color_range == AVCOL_RANGE_JPEG;
        sws_setColorspaceDetails(sws.get(), sws_getCoefficients(cs), full, sws_getCoefficients(SWS_CS_DEFAULT), 1, 0,
                                 1 << 16, 1 << 16);
      } else if (frame->width != v.width || frame->height != v.height) {
        fail(path, ": frame ", v.frames, " changes size to ", frame->width, "x", frame->height);
      }
      const size_t offset = v.rgb.size();
      v.rgb.resize(offset + size_t(v.width) * v.height * 3);
      uint8_t* dst[1] = {v.rgb.data() + offset};
      int dst_stride[1] = {v.width * 3};
      sws_scale(sws.get(), frame->data, frame->linesize, 0, v.height, dst, dst_stride);
      ++v.frames;
      av_frame_unref(frame.get());
    }
  };
  for (;;) {
    int ret = av_read_frame(ic.get(), pkt.get());
    if (ret == AVERROR_EOF) break;
    check_av(ret, path, "reading a packet");
    if (pkt->stream_index == index) {
      ret = avcodec_send_packet(dec.get(), pkt.get());
      av_packet_unref(pkt.get());
      check_av(ret, path, "decoding a packet");
      receive();
    } else {
      av_packet_unref(pkt.get());
    }
  }
  check_av(avcodec_send_packet(dec.get(), nullptr), path, "flushing the decoder");
  receive();
  if (v.frames == 0) fail(path, ": the video stream holds no frames");
  return v;
}
#else
[[noreturn]] void no_codecs(const std::string& path) {
  fail(path, ": this build of pab has no video codecs (built with PAB_VIDEO=OFF); use PNG frame folders");
}
Rgb8Video decode_file(const std::string& path) { no_codecs(path); }
#endif

}  // namespace

// ------------------------------------------------------------------ conversions

Rgb8Video quantize_frames(const Tensor& frames) {
  if (frames.rank() != 4 || frames.dim(1) != 3)
    fail("video frames: expected [F, 3, H, W] (frames, RGB channels, height, width), got ", shape_str(frames.shape()));
  if (!is_float(frames.dtype())) fail("video frames: expected floats in [0, 1], got ", frames.desc());
  Rgb8Video v;
  v.frames = int(frames.dim(0));
  v.height = int(frames.dim(2));
  v.width = int(frames.dim(3));
  const std::vector<float> x = frames.to_vector();  // [F, 3, H, W]
  v.rgb.resize(x.size());
  const size_t plane = size_t(v.height) * v.width;
  for (size_t f = 0; f < size_t(v.frames); ++f)
    for (size_t c = 0; c < 3; ++c)
      for (size_t p = 0; p < plane; ++p) {
        float s = x[(f * 3 + c) * plane + p];
        s = s >= 0.0f ? std::min(s, 1.0f) : 0.0f;  // NaN fails the test and gives 0
        v.rgb[(f * plane + p) * 3 + c] = uint8_t(std::nearbyint(s * 255.0f));
      }
  return v;
}

Tensor frames_from_rgb8(const Rgb8Video& v) {
  Tensor t = Tensor::empty({v.frames, 3, v.height, v.width});
  float* o = t.f32();
  const size_t plane = size_t(v.height) * v.width;
  for (size_t f = 0; f < size_t(v.frames); ++f)
    for (size_t c = 0; c < 3; ++c)
      for (size_t p = 0; p < plane; ++p) o[(f * 3 + c) * plane + p] = float(v.rgb[(f * plane + p) * 3 + c]) / 255.0f;
  return t;
}

// ------------------------------------------------------------------ video files

#if PAB_HAVE_LIBAV
VideoWriteReport write_video(const std::string& path, const Rgb8Video& input, const VideoWriteOptions& opts) {
  check_video(input, path);
  check_writable(path);
  if (!(opts.fps > 0) || opts.fps > 1000) fail(path, ": frame rate ", opts.fps, " is not in (0, 1000]");
  if (opts.crf < 0 || opts.crf > 51) fail(path, ": crf ", opts.crf, " is not in [0, 51]");
  quiet_libav();

  VideoWriteReport report;
  const Rgb8Video padded = (input.width | input.height) & 1 ? pad_to_even(input) : Rgb8Video{};
  const Rgb8Video& v = padded.frames ? padded : input;
  if (padded.frames)
    report.warnings.push_back(cat(path, ": ", input.width, "x", input.height, " padded to ", v.width, "x", v.height,
                                  " (yuv420p needs even sizes)"));
  report.width = v.width;
  report.height = v.height;

  const AVCodec* codec = avcodec_find_encoder_by_name(opts.encoder.c_str());
  if (!codec) {
    codec = avcodec_find_encoder_by_name("mpeg4");
    if (!codec) fail(path, ": neither the ", opts.encoder, " nor the mpeg4 encoder is available in libavcodec");
    report.warnings.push_back(cat(path, ": encoder ", opts.encoder,
                                  " is not available in this libavcodec; wrote MPEG-4 Part 2 (mpeg4) instead"));
  }
  report.encoder = codec->name;

  const AVOutputFormat* format = av_guess_format(nullptr, path.c_str(), nullptr);
  if (!format) format = av_guess_format("mp4", nullptr, nullptr);
  if (!format) fail(path, ": libavformat has no mp4 muxer");

  AtomicFile file(path);  // declared before the context so the temporary is closed before it is removed
  AVFormatContext* raw = nullptr;
  check_av(avformat_alloc_output_context2(&raw, format, nullptr, file.temp_path().c_str()), path,
           "cannot set up the container");
  OutputContext oc(raw);

  const AVRational rate = av_d2q(opts.fps, 1 << 16);
  CodecContext enc(avcodec_alloc_context3(codec));
  enc->width = v.width;
  enc->height = v.height;
  enc->pix_fmt = AV_PIX_FMT_YUV420P;
  enc->time_base = av_inv_q(rate);
  enc->framerate = rate;
  enc->sample_aspect_ratio = AVRational{1, 1};
  // swscale's default RGB -> YUV conversion: BT.601 matrix, limited range; say so in the stream.
  enc->colorspace = AVCOL_SPC_SMPTE170M;
  enc->color_range = AVCOL_RANGE_MPEG;
  if (oc->oformat->flags & AVFMT_GLOBALHEADER) enc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
  DictGuard codec_opts;
  if (report.encoder == "libx264") {
    av_dict_set(&codec_opts.d, "preset", "medium", 0);
    av_dict_set_int(&codec_opts.d, "crf", opts.crf, 0);
  } else {
    enc->flags |= AV_CODEC_FLAG_QSCALE;
    enc->global_quality = FF_QP2LAMBDA * 2;  // near-transparent fixed quantiser
  }
  check_av(avcodec_open2(enc.get(), codec, &codec_opts.d), path, "cannot open the encoder");

  AVStream* st = avformat_new_stream(oc.get(), nullptr);
  if (!st) fail(path, ": cannot add a video stream");
  check_av(avcodec_parameters_from_context(st->codecpar, enc.get()), path, "encoder parameters");
  st->time_base = enc->time_base;
  st->avg_frame_rate = rate;

  if (!(oc->oformat->flags & AVFMT_NOFILE))
    check_av(avio_open(&oc->pb, file.temp_path().c_str(), AVIO_FLAG_WRITE), path, "cannot create the file");
  DictGuard mux_opts;
  const std::string muxer = oc->oformat->name;
  if (muxer.find("mp4") != std::string::npos || muxer.find("mov") != std::string::npos)
    av_dict_set(&mux_opts.d, "movflags", "+faststart", 0);
  check_av(avformat_write_header(oc.get(), &mux_opts.d), path, "cannot write the header");

  Sws sws(sws_getContext(v.width, v.height, AV_PIX_FMT_RGB24, v.width, v.height, AV_PIX_FMT_YUV420P,
                         SWS_BICUBIC | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INP, nullptr, nullptr, nullptr));
  if (!sws) fail(path, ": cannot set up the RGB to YUV conversion");
  Frame frame(av_frame_alloc());
  frame->format = enc->pix_fmt;
  frame->width = v.width;
  frame->height = v.height;
  check_av(av_frame_get_buffer(frame.get(), 0), path, "frame buffer");
  Packet pkt(av_packet_alloc());
  for (int f = 0; f < v.frames; ++f) {
    check_av(av_frame_make_writable(frame.get()), path, "frame buffer");
    const uint8_t* src[1] = {v.frame(f)};
    const int src_stride[1] = {v.width * 3};
    sws_scale(sws.get(), src, src_stride, 0, v.height, frame->data, frame->linesize);
    frame->pts = f;
    encode(enc.get(), frame.get(), oc.get(), st, pkt.get(), path);
  }
  encode(enc.get(), nullptr, oc.get(), st, pkt.get(), path);
  check_av(av_write_trailer(oc.get()), path, "cannot finish the file");
  if (!(oc->oformat->flags & AVFMT_NOFILE)) check_av(avio_closep(&oc->pb), path, "cannot close the file");
  file.commit();
  return report;
}
#else
VideoWriteReport write_video(const std::string& path, const Rgb8Video&, const VideoWriteOptions&) { no_codecs(path); }
#endif

VideoWriteReport write_video(const std::string& path, const Tensor& frames, const VideoWriteOptions& opts) {
  return write_video(path, quantize_frames(frames), opts);
}

#if PAB_HAVE_LIBAV
VideoInfo probe_video(const std::string& path) {
  quiet_libav();
  AVFormatContext* raw = nullptr;
  check_av(avformat_open_input(&raw, path.c_str(), nullptr, nullptr), path, "cannot open");
  InputContext ic(raw);
  check_av(avformat_find_stream_info(ic.get(), nullptr), path, "cannot read stream information");
  const int index = av_find_best_stream(ic.get(), AVMEDIA_TYPE_VIDEO, -1, -1, nullptr, 0);
  check_av(index, path, "no video stream");
  const AVStream* st = ic->streams[index];
  VideoInfo info;
  info.codec = avcodec_get_name(st->codecpar->codec_id);
  const char* pix = av_get_pix_fmt_name(AVPixelFormat(st->codecpar->format));
  info.pix_fmt = pix ? pix : "";
  info.width = st->codecpar->width;
  info.height = st->codecpar->height;
  info.frames = st->nb_frames;
  const AVRational rate = st->avg_frame_rate.num ? st->avg_frame_rate : st->r_frame_rate;
  info.fps = rate.num ? av_q2d(rate) : 0;
  return info;
}
#else
VideoInfo probe_video(const std::string& path) { no_codecs(path); }
#endif

// ------------------------------------------------------------------ PNG folders

namespace {
fs::path frames_target(const std::string& dir) {
  fs::path target = fs::path(dir);
  return target.has_filename() ? target : target.parent_path();  // "out/" -> "out"
}
}  // namespace

void check_png_frames_target(const std::string& dir) {
  if (dir.empty()) fail("no output folder given");
  const fs::path target = frames_target(dir);
  const fs::path parent = target.parent_path().empty() ? fs::path(".") : target.parent_path();
  std::error_code ec;
  if (!fs::is_directory(parent, ec)) fail(dir, ": the folder ", parent.string(), " does not exist");
  if (::access(parent.c_str(), W_OK) != 0) fail(dir, ": the folder ", parent.string(), " is not writable");
  if (fs::exists(target, ec)) {
    if (!fs::is_directory(target, ec)) fail(dir, ": exists and is not a folder");
    if (!holds_only_frames(target)) fail(dir, ": exists and holds files other than frame_NNNN.png; not replacing it");
  }
}

void write_png_frames(const std::string& dir, const Rgb8Video& v) {
  check_video(v, dir);
  check_png_frames_target(dir);
  const fs::path target = frames_target(dir);
  const fs::path parent = target.parent_path().empty() ? fs::path(".") : target.parent_path();
  std::error_code ec;

  TempDir temp(target);
  for (int f = 0; f < v.frames; ++f) write_png((temp.path() / frame_name(f)).string(), v.frame(f), v.width, v.height);

  // Swap the finished folder in; a previous one is moved aside first (rename
  // cannot replace a non-empty folder) and removed after.
  const fs::path old = parent / ("." + target.filename().string() + ".old" + std::to_string(::getpid()));
  const bool replacing = fs::exists(target, ec);
  if (replacing) {
    fs::rename(target, old, ec);
    if (ec) fail(dir, ": cannot move the previous frames aside: ", ec.message());
  }
  fs::rename(temp.path(), target, ec);
  if (ec) {
    std::error_code restore;
    if (replacing) fs::rename(old, target, restore);
    fail(dir, ": cannot move the finished frames into place: ", ec.message());
  }
  temp.release();
  if (replacing) fs::remove_all(old, ec);
}

void write_png_frames(const std::string& dir, const Tensor& frames) {
  write_png_frames(dir, quantize_frames(frames));
}

Rgb8Video read_video(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) return read_png_folder(path);
  if (!fs::exists(path, ec)) fail(path, ": no such file or folder");
  return decode_file(path);
}

}  // namespace pab
