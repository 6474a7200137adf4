// Video files through libavformat/libavcodec/libswscale (GIF palettes through
// libavfilter) and PNG frames through libpng's simplified API (no setjmp
// across C++ frames).
#include "io/video.h"

#include <png.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <regex>

#include "io/atomic_file.h"

#if PAB_HAVE_LIBAV
extern "C" {
#include <libavcodec/avcodec.h>
#include <libavfilter/avfilter.h>
#include <libavfilter/buffersink.h>
#include <libavfilter/buffersrc.h>
#include <libavformat/avformat.h>
#include <libavutil/opt.h>
#include <libavutil/pixdesc.h>
#include <libswscale/swscale.h>
}
#endif

namespace pab {

namespace fs = std::filesystem;

namespace {

// What each output format is made of.
struct FormatSpec {
  VideoFormat format;
  const char* extension;
  const char* name;     // for messages
  const char* muxer;    // libavformat's name
  const char* encoder;  // libavcodec's name
  int max_crf;          // the encoder's quality scale (0: none)
  int default_crf;
};
constexpr FormatSpec kFormats[] = {
    {VideoFormat::mp4, ".mp4", "H.264", "mp4", "libx264", 51, 18},
    {VideoFormat::webm, ".webm", "VP9", "webm", "libvpx-vp9", 63, 24},
    {VideoFormat::gif, ".gif", "GIF", "gif", "gif", 0, 0},
};

const FormatSpec& spec_of(VideoFormat f) {
  for (const FormatSpec& s : kFormats)
    if (s.format == f) return s;
  PAB_ASSERT(false, "unknown video format ", int(f));
}

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

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

// Why this build cannot write `s` ("" when it can).
std::string missing_for(const FormatSpec& s) {
  if (!av_guess_format(s.muxer, nullptr, nullptr)) return cat("libavformat has no ", s.muxer, " muxer");
  if (!avcodec_find_encoder_by_name(s.encoder)) return cat("libavcodec has no ", s.encoder, " encoder");
  if (s.format == VideoFormat::gif && (!avfilter_get_by_name("palettegen") || !avfilter_get_by_name("paletteuse")))
    return "libavfilter has no palettegen/paletteuse filters";
  return "";
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
struct GraphDeleter {
  void operator()(AVFilterGraph* g) const { avfilter_graph_free(&g); }
};
struct InOutDeleter {
  void operator()(AVFilterInOut* io) const { avfilter_inout_free(&io); }
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
using Graph = std::unique_ptr<AVFilterGraph, GraphDeleter>;
using InOut = std::unique_ptr<AVFilterInOut, InOutDeleter>;

// A frame of `format` with libav's own padded buffers: swscale's vector code
// reads past the end of a row, which a tightly packed buffer does not allow.
Frame padded_frame(AVPixelFormat format, int width, int height, const std::string& path) {
  Frame f(av_frame_alloc());
  if (!f) fail(path, ": out of memory for a frame");
  f->format = format;
  f->width = width;
  f->height = height;
  check_av(av_frame_get_buffer(f.get(), 0), path, "frame buffer");
  // The padding is read too (by swscale's vector code); zeroed, it reads the same on every run.
  for (int i = 0; i < AV_NUM_DATA_POINTERS && f->buf[i]; ++i) std::memset(f->buf[i]->data, 0, f->buf[i]->size);
  return f;
}

// Copies frame `index` of `v` into an RGB24 frame of libav's (padded rows).
void fill_rgb(AVFrame* dst, const Rgb8Video& v, int index, const std::string& path) {
  check_av(av_frame_make_writable(dst), path, "frame buffer");
  const size_t row = size_t(v.width) * 3;
  for (int y = 0; y < v.height; ++y)
    std::memcpy(dst->data[0] + size_t(y) * size_t(dst->linesize[0]), v.frame(index) + size_t(y) * row, row);
}

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

// The frames of `v` as the GIF encoder takes them: one palette for the whole
// video (palettegen over every frame) and each frame mapped onto it with
// dithering (paletteuse), as `ffmpeg -vf "split[a][b];[a]palettegen[p];[b][p]paletteuse"`.
std::vector<Frame> gif_frames(const Rgb8Video& v, AVRational time_base, const std::string& path) {
  Graph graph(avfilter_graph_alloc());
  if (!graph) fail(path, ": out of memory for a filter graph");
  graph->nb_threads = 1;  // the same bytes on every machine
  AVFilterContext *src = nullptr, *sink = nullptr;
  const std::string args = cat("video_size=", v.width, "x", v.height, ":pix_fmt=", int(AV_PIX_FMT_RGB24),
                               ":time_base=", time_base.num, "/", time_base.den, ":pixel_aspect=1/1");
  check_av(avfilter_graph_create_filter(&src, avfilter_get_by_name("buffer"), "in", args.c_str(), nullptr, graph.get()),
           path, "GIF palette: the frame source");
  check_av(
      avfilter_graph_create_filter(&sink, avfilter_get_by_name("buffersink"), "out", nullptr, nullptr, graph.get()),
      path, "GIF palette: the frame sink");
  InOut outputs(avfilter_inout_alloc()), inputs(avfilter_inout_alloc());
  if (!outputs || !inputs) fail(path, ": out of memory for a filter graph");
  outputs->name = av_strdup("in");
  outputs->filter_ctx = src;
  inputs->name = av_strdup("out");
  inputs->filter_ctx = sink;
  AVFilterInOut *in_raw = inputs.release(), *out_raw = outputs.release();
  const int parsed = avfilter_graph_parse_ptr(
      graph.get(), "split[a][b];[a]palettegen=stats_mode=full[p];[b][p]paletteuse=dither=sierra2_4a", &in_raw, &out_raw,
      nullptr);
  inputs.reset(in_raw);
  outputs.reset(out_raw);
  check_av(parsed, path, "GIF palette: the filter graph");
  check_av(avfilter_graph_config(graph.get(), nullptr), path, "GIF palette: the filter graph");

  std::vector<Frame> out;
  Frame rgb = padded_frame(AV_PIX_FMT_RGB24, v.width, v.height, path);
  auto drain = [&] {
    for (;;) {
      Frame f(av_frame_alloc());
      const int ret = av_buffersink_get_frame(sink, f.get());
      if (ret == AVERROR(EAGAIN) || ret == AVERROR_EOF) return;
      check_av(ret, path, "GIF palette: mapping a frame");
      out.push_back(std::move(f));
    }
  };
  for (int i = 0; i < v.frames; ++i) {
    fill_rgb(rgb.get(), v, i, path);
    rgb->pts = i;
    check_av(av_buffersrc_add_frame_flags(src, rgb.get(), AV_BUFFERSRC_FLAG_KEEP_REF), path, "GIF palette: a frame");
    drain();
  }
  check_av(av_buffersrc_add_frame(src, nullptr), path, "GIF palette: the last frame");
  drain();
  if (int(out.size()) != v.frames) fail(path, ": GIF palette: ", out.size(), " frames came out of ", v.frames);
  return out;
}

// Encodes `input` into `file` (created already, written from its start) in `format`.
VideoWriteReport encode_video(const std::string& path, const std::string& file, VideoFormat format,
                              const Rgb8Video& input, const VideoWriteOptions& opts) {
  const FormatSpec& spec = spec_of(format);
  VideoWriteReport report;
  // yuv420p needs even sizes; GIF takes any.
  const bool pad = format != VideoFormat::gif && ((input.width | input.height) & 1);
  const Rgb8Video padded = pad ? pad_to_even(input) : Rgb8Video{};
  const Rgb8Video& v = pad ? padded : input;
  if (pad)
    report.warnings.push_back(cat(path, ": ", input.width, "x", input.height, " padded to ", v.width, "x", v.height,
                                  " (", spec.name, " in yuv420p needs even sizes)"));
  report.width = v.width;
  report.height = v.height;
  report.encoder = spec.encoder;

  const AVOutputFormat* muxer = av_guess_format(spec.muxer, nullptr, nullptr);
  const AVCodec* codec = avcodec_find_encoder_by_name(spec.encoder);
  PAB_ASSERT(muxer && codec, path, ": format checked before writing");
  AVFormatContext* raw = nullptr;
  check_av(avformat_alloc_output_context2(&raw, muxer, nullptr, file.c_str()), path, "cannot set up the container");
  OutputContext oc(raw);
  oc->flags |= AVFMT_FLAG_BITEXACT;  // no random ids (WebM's segment UID) or version strings in the file

  const AVRational rate = av_d2q(opts.fps, 1 << 16);
  CodecContext enc(avcodec_alloc_context3(codec));
  enc->width = v.width;
  enc->height = v.height;
  enc->time_base = av_inv_q(rate);
  enc->framerate = rate;
  enc->sample_aspect_ratio = AVRational{1, 1};
  enc->thread_count = 1;  // the same bytes on every machine
  if (oc->oformat->flags & AVFMT_GLOBALHEADER) enc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
  DictGuard codec_opts;
  if (format == VideoFormat::gif) {
    enc->pix_fmt = AV_PIX_FMT_PAL8;
  } else {
    enc->pix_fmt = AV_PIX_FMT_YUV420P;
    // swscale's default RGB -> YUV conversion: BT.601 matrix, limited range; say so in the stream.
    enc->colorspace = AVCOL_SPC_SMPTE170M;
    enc->color_range = AVCOL_RANGE_MPEG;
    const int crf = opts.crf.value_or(spec.default_crf);
    if (format == VideoFormat::mp4) {
      av_dict_set(&codec_opts.d, "preset", "medium", 0);
      // libx264 0.164's AVX-512 macroblock-tree code reads memory it never
      // wrote (the bytes then depend on what the process did before; valgrind,
      // without AVX-512, sees nothing): without the tree the same frames give
      // the same bytes on every machine.
      av_dict_set(&codec_opts.d, "x264-params", "mbtree=0", 0);
    } else {  // VP9 in constant-quality mode
      enc->bit_rate = 0;
      av_dict_set(&codec_opts.d, "deadline", "good", 0);
      av_dict_set_int(&codec_opts.d, "cpu-used", 4, 0);
    }
    av_dict_set_int(&codec_opts.d, "crf", crf, 0);
  }
  check_av(avcodec_open2(enc.get(), codec, &codec_opts.d), path, "cannot open the encoder");

  AVStream* st = avformat_new_stream(oc.get(), nullptr);
  if (!st) fail(path, ": cannot add a video stream");
  check_av(avcodec_parameters_from_context(st->codecpar, enc.get()), path, "encoder parameters");
  st->time_base = enc->time_base;
  st->avg_frame_rate = rate;

  // The temporary may have been removed by an interrupt's cleanup since it was made; opening it under the
  // cleanup's lock keeps avio_open from making it again.
  if (!(oc->oformat->flags & AVFMT_NOFILE))
    open_temporary(
        [&] { check_av(avio_open(&oc->pb, file.c_str(), AVIO_FLAG_WRITE), path, "cannot create the file"); });
  DictGuard mux_opts;
  if (format == VideoFormat::mp4) av_dict_set(&mux_opts.d, "movflags", "+faststart", 0);
  check_av(avformat_write_header(oc.get(), &mux_opts.d), path, "cannot write the header");

  Packet pkt(av_packet_alloc());
  if (format == VideoFormat::gif) {
    for (Frame& f : gif_frames(v, enc->time_base, path)) encode(enc.get(), f.get(), oc.get(), st, pkt.get(), path);
  } else {
    Sws sws(sws_getContext(v.width, v.height, AV_PIX_FMT_RGB24, v.width, v.height, AV_PIX_FMT_YUV420P,
                           SWS_BICUBIC | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INP, nullptr, nullptr, nullptr));
    if (!sws) fail(path, ": cannot set up the RGB to YUV conversion");
    Frame rgb = padded_frame(AV_PIX_FMT_RGB24, v.width, v.height, path);
    Frame yuv = padded_frame(enc->pix_fmt, v.width, v.height, path);
    for (int f = 0; f < v.frames; ++f) {
      fill_rgb(rgb.get(), v, f, path);
      check_av(av_frame_make_writable(yuv.get()), path, "frame buffer");
      sws_scale(sws.get(), rgb->data, rgb->linesize, 0, v.height, yuv->data, yuv->linesize);
      yuv->pts = f;
      encode(enc.get(), yuv.get(), oc.get(), st, pkt.get(), path);
    }
  }
  encode(enc.get(), nullptr, oc.get(), st, pkt.get(), path);
  check_av(av_write_trailer(oc.get()), path, "cannot finish the file");
  if (!(oc->oformat->flags & AVFMT_NOFILE)) check_av(avio_closep(&oc->pb), path, "cannot close the file");
  return report;
}
#endif

void check_video(const Rgb8Video& v, const std::string& path) {
  if (v.frames < 1 || v.height < 1 || v.width < 1)
    fail(path, ": nothing to write (", v.frames, " frames of ", v.width, "x", v.height, ")");
  PAB_ASSERT(v.rgb.size() == size_t(v.frames) * v.height * v.width * 3, "RGB buffer of ", v.rgb.size(), " bytes");
}

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
  Frame rgb;
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
        rgb = padded_frame(AV_PIX_FMT_RGB24, v.width, v.height, path);
      } else if (frame->width != v.width || frame->height != v.height) {
        fail(path, ": frame ", v.frames, " changes size to ", frame->width, "x", frame->height);
      }
      check_av(av_frame_make_writable(rgb.get()), path, "frame buffer");
      sws_scale(sws.get(), frame->data, frame->linesize, 0, v.height, rgb->data, rgb->linesize);
      const size_t row = size_t(v.width) * 3, offset = v.rgb.size();
      v.rgb.resize(offset + row * size_t(v.height));
      for (int y = 0; y < v.height; ++y)
        std::memcpy(v.rgb.data() + offset + size_t(y) * row, rgb->data[0] + size_t(y) * size_t(rgb->linesize[0]), row);
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
Rgb8Video decode_file(const std::string& path) {
  no_codecs(path);
}
#endif

}  // namespace

// ------------------------------------------------------------------ formats

std::string writable_video_formats() {
  std::string out;
#if PAB_HAVE_LIBAV
  for (const FormatSpec& s : kFormats)
    if (missing_for(s).empty()) out += cat(out.empty() ? "" : ", ", s.extension, " (", s.name, ")");
#endif
  return out.empty() ? "none (use --frames-dir for PNG frames)" : out;
}

VideoFormat video_format_of(const std::string& path) {
  const std::string ext = lower(fs::path(path).extension().string());
  for (const FormatSpec& s : kFormats) {
    if (ext != s.extension) continue;
#if PAB_HAVE_LIBAV
    if (const std::string why = missing_for(s); !why.empty())
      fail(path, ": cannot write ", s.name, " here: ", why, "; this build writes ", writable_video_formats());
    return s.format;
#else
    fail(path, ": this build of pab has no video codecs (built with PAB_VIDEO=OFF); use --frames-dir for PNG frames");
#endif
  }
  std::string all;
  for (const FormatSpec& s : kFormats) all += cat(all.empty() ? "" : ", ", s.extension, " (", s.name, ")");
  const std::string hint = ext == ".png" ? "; for PNG frames give a folder with --frames-dir" : "";
  fail(path, ": ", ext.empty() ? "no file extension" : cat("unsupported video format '", ext, "'"),
       ": expected one of ", all, hint);
}

void check_video_target(const std::string& path, const VideoWriteOptions& opts) {
  const FormatSpec& spec = spec_of(video_format_of(path));
  check_writable(path);
  if (!(opts.fps > 0) || opts.fps > 1000) fail(path, ": frame rate ", opts.fps, " is not in (0, 1000]");
  if (opts.crf) {
    if (spec.max_crf == 0) fail(path, ": ", spec.name, " has no quality setting (crf)");
    if (*opts.crf < 0 || *opts.crf > spec.max_crf)
      fail(path, ": crf ", *opts.crf, " is not in [0, ", spec.max_crf, "] (", spec.encoder, ")");
  }
}

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
VideoWriteReport write_video(const std::string& path, const Rgb8Video& video, const VideoWriteOptions& opts) {
  check_video(video, path);
  check_video_target(path, opts);
  quiet_libav();
  AtomicFile file(path);
  VideoWriteReport report = encode_video(path, file.temp_path(), video_format_of(path), video, opts);
  file.commit();
  return report;
}
#else
VideoWriteReport write_video(const std::string& path, const Rgb8Video&, const VideoWriteOptions&) {
  no_codecs(path);
}
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
VideoInfo probe_video(const std::string& path) {
  no_codecs(path);
}
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
  if (fs::exists(fs::symlink_status(target, ec))) {
    if (!fs::is_directory(fs::symlink_status(target, ec))) fail(dir, ": exists and is not a folder");
    if (!holds_only_frames(target)) fail(dir, ": exists and holds files other than frame_NNNN.png; not replacing it");
  }
}

void write_png_frames(const std::string& dir, const Rgb8Video& v) {
  check_video(v, dir);
  check_png_frames_target(dir);
  AtomicFolder folder(frames_target(dir).string());
  for (int f = 0; f < v.frames; ++f)
    folder.write(frame_name(f), [&](const std::string& file) { write_png(file, v.frame(f), v.width, v.height); });
  folder.commit();
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
