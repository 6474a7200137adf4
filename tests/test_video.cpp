// Video output: 8-bit conversion against diffusers, PNG folders (exact round
// trip), H.264 mp4, VP9 WebM and GIF (container metadata, PSNR after a round
// trip), formats by extension, the same bytes for the same frames, odd sizes,
// and failures that leave nothing behind.
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>

#include "io/safetensors.h"
#include "io/video.h"
#include "support/testing.h"

namespace pab {
namespace {

namespace fs = std::filesystem;
using testing::data_path;

// A fresh scratch folder per test, removed afterwards.
class VideoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("pab_video_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  std::vector<std::string> listing() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir_)) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }
  fs::path dir_;
};

Tensor fixture_frames(const std::string& pipeline_case) {
  auto ref = Checkpoint::open_file(data_path("fixtures/pipeline/" + pipeline_case + "/reference.safetensors"));
  return ref.load("frames_nopab");
}

std::vector<uint8_t> u8_reference(const std::string& key) {
  auto f = SafetensorsFile::open(data_path("video/quantize.safetensors"));
  const TensorEntry* e = f->find(key);
  PAB_ASSERT(e && e->dtype == DType::u8, "no u8 tensor ", key);
  const auto* p = static_cast<const uint8_t*>(f->data(*e));
  return std::vector<uint8_t>(p, p + (e->end - e->begin));
}

double psnr(const Rgb8Video& a, const Rgb8Video& b) {
  PAB_ASSERT(a.rgb.size() == b.rgb.size());
  double se = 0;
  for (size_t i = 0; i < a.rgb.size(); ++i) se += std::pow(double(a.rgb[i]) - double(b.rgb[i]), 2);
  const double mse = se / double(a.rgb.size());
  return mse == 0 ? INFINITY : 10 * std::log10(255.0 * 255.0 / mse);
}

// A smooth moving pattern, the kind of content the codec is made for.
Tensor smooth_video(int frames, int height, int width) {
  Tensor t = Tensor::empty({frames, 3, height, width});
  float* p = t.f32();
  for (int f = 0; f < frames; ++f)
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < height; ++y)
        for (int x = 0; x < width; ++x)
          *p++ = 0.5f + 0.4f * std::sin(0.15f * float(x + 2 * f) + 0.9f * float(c)) * std::cos(0.11f * float(y - f));
  return t;
}

// ------------------------------------------------------------------ 8-bit conversion

TEST(VideoQuantize, MatchesDiffusers) {
  for (const std::string c : {"cogvideox_ddim", "latte"})
    EXPECT_EQ(quantize_frames(fixture_frames(c)).rgb, u8_reference("u8_" + c)) << c;
  auto f = Checkpoint::open_file(data_path("video/quantize.safetensors"));
  Rgb8Video edge = quantize_frames(f.load("edge_frames"));
  EXPECT_EQ(edge.rgb, u8_reference("edge_u8"));
  // Can fail: truncation (export_to_video's own numpy path) differs on these values.
  std::vector<float> x = f.load("edge_frames").to_vector();
  size_t truncation_differs = 0;
  const std::vector<uint8_t> ref = u8_reference("edge_u8");
  const int plane = 16 * 24;
  for (size_t i = 0; i < x.size(); ++i) {
    const size_t frame = i / (3 * plane), c = (i / plane) % 3, p = i % plane;
    if (uint8_t(x[i] * 255.0f) != ref[(frame * plane + p) * 3 + c]) ++truncation_differs;
  }
  EXPECT_GT(truncation_differs, 100u);
}

TEST(VideoQuantize, ClipsAndRejectsBadShapes) {
  Rgb8Video v = quantize_frames(Tensor::from_vector({-0.5f, 1.5f, NAN, 0.0f, 1.0f, 0.5f}, {1, 3, 1, 2}));
  EXPECT_EQ(v.rgb, (std::vector<uint8_t>{0, 0, 255, 255, 0, 128}));
  EXPECT_THROW(quantize_frames(Tensor::zeros({2, 4, 8, 8})), Error);  // 4 channels
  EXPECT_THROW(quantize_frames(Tensor::zeros({1, 2, 3, 8, 8})), Error);
  Rgb8Video back = quantize_frames(frames_from_rgb8(v));
  EXPECT_EQ(back.rgb, v.rgb);
}

// ------------------------------------------------------------------ PNG folders

TEST_F(VideoTest, PngFolderRoundTripIsExact) {
  Tensor frames = fixture_frames("cogvideox_ddim");
  write_png_frames(path("frames"), frames);
  EXPECT_EQ(listing(), (std::vector<std::string>{"frames"}));  // no temporary left
  EXPECT_TRUE(fs::exists(dir_ / "frames/frame_0000.png"));
  EXPECT_TRUE(fs::exists(dir_ / "frames/frame_0008.png"));
  Rgb8Video back = read_video(path("frames"));
  EXPECT_EQ(back.frames, 9);
  EXPECT_EQ(back.height, 32);
  EXPECT_EQ(back.width, 48);
  EXPECT_EQ(back.rgb, u8_reference("u8_cogvideox_ddim"));

  // Writing again replaces the folder: fewer frames leave no stale ones.
  write_png_frames(path("frames"), fixture_frames("latte"));
  Rgb8Video latte = read_video(path("frames"));
  EXPECT_EQ(latte.frames, 4);
  EXPECT_EQ(latte.rgb, u8_reference("u8_latte"));
  EXPECT_EQ(listing(), (std::vector<std::string>{"frames"}));
}

TEST_F(VideoTest, PngFolderFailuresLeaveNothingBehind) {
  Tensor frames = fixture_frames("latte");
  // a parent that does not exist
  try {
    write_png_frames(path("missing/frames"), frames);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing"), std::string::npos) << e.what();
  }
  // a file in the way, and a folder holding other files: both left untouched
  std::ofstream(path("file")) << "x";
  EXPECT_THROW(write_png_frames(path("file"), frames), Error);
  fs::create_directory(dir_ / "mine");
  std::ofstream(path("mine/notes.txt")) << "keep";
  EXPECT_THROW(write_png_frames(path("mine"), frames), Error);
  EXPECT_TRUE(fs::exists(dir_ / "mine/notes.txt"));
  EXPECT_EQ(listing(), (std::vector<std::string>{"file", "mine"}));
  // reading: an empty folder, a missing path
  fs::create_directory(dir_ / "empty");
  EXPECT_THROW(read_video(path("empty")), Error);
  EXPECT_THROW(read_video(path("nothing_here")), Error);
}

// ------------------------------------------------------------------ mp4

// H.264 at crf 18, yuv420p. The fixture frames (random-weight VAE output,
// pixel-level colour noise, 48x32) measure 25.5 dB: 4:2:0 chroma alone costs
// that (25.9 dB even lossless, crf 0; grey frames keep 56.6 dB lossless, so
// the colour conversion itself is sound). The smooth pattern measures 39.8 dB.
// The bounds sit a little below.
constexpr double kFixturePsnr = 24, kSmoothPsnr = 38;

TEST_F(VideoTest, Mp4RoundTrip) {
  Tensor frames = fixture_frames("cogvideox_ddim");
  VideoWriteReport report = write_video(path("out.mp4"), frames, {});
  EXPECT_EQ(listing(), (std::vector<std::string>{"out.mp4"}));
  EXPECT_EQ(report.encoder, "libx264");
  EXPECT_TRUE(report.warnings.empty());

  VideoInfo info = probe_video(path("out.mp4"));
  EXPECT_EQ(info.codec, "h264");
  EXPECT_EQ(info.pix_fmt, "yuv420p");
  EXPECT_EQ(info.width, 48);
  EXPECT_EQ(info.height, 32);
  EXPECT_EQ(info.frames, 9);
  EXPECT_DOUBLE_EQ(info.fps, 8.0);

  Rgb8Video original = quantize_frames(frames);
  Rgb8Video back = read_video(path("out.mp4"));
  ASSERT_EQ(back.frames, 9);
  ASSERT_EQ(back.width, 48);
  ASSERT_EQ(back.height, 32);
  EXPECT_DOUBLE_EQ(back.fps, 8.0);
  const double fixture_psnr = psnr(back, original);
  EXPECT_GE(fixture_psnr, kFixturePsnr);
  // Can fail: another video's frames are far from this one.
  Rgb8Video shifted = original;
  std::rotate(shifted.rgb.begin(), shifted.rgb.begin() + 48 * 32 * 3, shifted.rgb.end());
  EXPECT_LT(psnr(back, shifted), kFixturePsnr);

  Tensor smooth = smooth_video(24, 48, 64);
  VideoWriteOptions opts;
  opts.fps = 24;
  write_video(path("smooth.mp4"), smooth, opts);
  EXPECT_DOUBLE_EQ(probe_video(path("smooth.mp4")).fps, 24.0);
  const double smooth_psnr = psnr(read_video(path("smooth.mp4")), quantize_frames(smooth));
  EXPECT_GE(smooth_psnr, kSmoothPsnr);
  std::printf("mp4 round trip PSNR: fixture frames %.1f dB, smooth %.1f dB; %zu + %zu bytes\n", fixture_psnr,
              smooth_psnr, size_t(fs::file_size(dir_ / "out.mp4")), size_t(fs::file_size(dir_ / "smooth.mp4")));
}

// ------------------------------------------------------------------ other formats

TEST_F(VideoTest, WebmAndGifRoundTrip) {
  Tensor smooth = smooth_video(12, 32, 48);
  const Rgb8Video original = quantize_frames(smooth);
  struct Case {
    const char* file;
    const char* codec;
    double min_psnr;  // measured: VP9 crf 24 42.9 dB, GIF (one palette, dithered) 31.6 dB
  };
  for (const Case& c : {Case{"out.webm", "vp9", 40}, Case{"out.gif", "gif", 29}}) {
    SCOPED_TRACE(c.file);
    VideoWriteOptions opts;
    opts.fps = 12;
    VideoWriteReport report = write_video(path(c.file), smooth, opts);
    EXPECT_TRUE(report.warnings.empty());
    VideoInfo info = probe_video(path(c.file));
    EXPECT_EQ(info.codec, c.codec);
    EXPECT_EQ(info.width, 48);
    EXPECT_EQ(info.height, 32);
    Rgb8Video back = read_video(path(c.file));
    ASSERT_EQ(back.frames, 12);
    EXPECT_NEAR(back.fps, 12.0, 0.5);  // GIF stores delays in hundredths of a second
    const double p = psnr(back, original);
    EXPECT_GE(p, c.min_psnr);
    // Can fail: the frames one step later are far from these.
    Rgb8Video shifted = original;
    std::rotate(shifted.rgb.begin(), shifted.rgb.begin() + 48 * 32 * 3, shifted.rgb.end());
    EXPECT_LT(psnr(back, shifted), c.min_psnr);
    std::printf("%s round trip PSNR: %.1f dB\n", c.file, p);
  }
  // GIF keeps odd sizes; the yuv420p formats pad them.
  EXPECT_TRUE(write_video(path("odd.gif"), smooth_video(3, 31, 47)).warnings.empty());
  EXPECT_EQ(probe_video(path("odd.gif")).width, 47);
  EXPECT_FALSE(write_video(path("odd.webm"), smooth_video(3, 31, 47)).warnings.empty());
}

TEST(VideoFormats, ChosenByTheExtensionOrRefusedWithTheList) {
  EXPECT_EQ(video_format_of("a.mp4"), VideoFormat::mp4);
  EXPECT_EQ(video_format_of("dir.x/A.MP4"), VideoFormat::mp4);
  EXPECT_EQ(video_format_of("a.webm"), VideoFormat::webm);
  EXPECT_EQ(video_format_of("a.GIF"), VideoFormat::gif);
  for (const char* bad : {"a.png", "a.xyz", "a.mkv", "noextension", "a.mp4.tmp"}) {
    try {
      video_format_of(bad);
      ADD_FAILURE() << bad << " accepted";
    } catch (const Error& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find(bad), std::string::npos) << m;
      EXPECT_NE(m.find(".mp4 (H.264), .webm (VP9), .gif (GIF)"), std::string::npos) << m;
    }
  }
  EXPECT_NE(writable_video_formats().find(".webm (VP9)"), std::string::npos);
  // Quality settings are checked against the format's own scale.
  VideoWriteOptions o;
  o.crf = 60;
  EXPECT_THROW(check_video_target("/tmp/x.mp4", o), Error);
  EXPECT_NO_THROW(check_video_target("/tmp/x.webm", o));
  EXPECT_THROW(check_video_target("/tmp/x.gif", o), Error);
}

// Fills and frees heap blocks of many sizes with `byte`, so that later
// allocations start out holding it: an encoder that reads memory it never
// wrote then gives other bytes.
void scribble_heap(uint8_t byte) {
  std::vector<std::unique_ptr<uint8_t[]>> blocks;
  for (size_t size = 64; size <= (size_t(1) << 20); size = size * 3 / 2)
    for (int i = 0; i < 4; ++i) {
      blocks.emplace_back(new uint8_t[size]);
      std::memset(blocks.back().get(), byte, size);
    }
}

// The same frames give the same file whatever the call path and whatever the
// heap held before. This failed with libx264's macroblock tree on (its
// AVX-512 code reads memory it never wrote) and with the frames read past
// their end by swscale (now copied into padded frames).
TEST_F(VideoTest, SameFramesGiveTheSameBytes) {
  auto bytes_of = [&](const std::string& name) {
    std::ifstream in(path(name), std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  for (const char* ext : {".mp4", ".webm", ".gif"}) {
    SCOPED_TRACE(ext);
    const Tensor frames = smooth_video(9, 32, 48);
    write_video(path(std::string("a") + ext), frames);  // through the tensor
    // Through a copy whose buffer continues with other bytes, after the heap was scribbled.
    Rgb8Video v = quantize_frames(frames);
    Rgb8Video copy = v;
    copy.rgb.reserve(v.rgb.size() + 4096);
    copy.rgb.resize(v.rgb.size() + 4096, 0xA5);
    copy.rgb.resize(v.rgb.size());
    scribble_heap(0x5A);
    write_video(path(std::string("b") + ext), copy);
    scribble_heap(0x00);
    write_video(path(std::string("c") + ext), v);
    const std::string a = bytes_of(std::string("a") + ext);
    EXPECT_TRUE(a == bytes_of(std::string("b") + ext));
    EXPECT_TRUE(a == bytes_of(std::string("c") + ext));
    // Can fail: other frames (a white square in one) give another file.
    Rgb8Video other = v;
    for (int y = 8; y < 16; ++y) std::fill_n(other.rgb.begin() + (y * 48 + 8) * 3, 8 * 3, uint8_t(255));
    write_video(path(std::string("d") + ext), other);
    EXPECT_FALSE(a == bytes_of(std::string("d") + ext));
  }
}

TEST_F(VideoTest, Mp4OddSizesArePaddedWithAWarning) {
  Tensor frames = smooth_video(5, 31, 47);
  VideoWriteReport report = write_video(path("odd.mp4"), frames);
  EXPECT_EQ(report.width, 48);
  EXPECT_EQ(report.height, 32);
  ASSERT_FALSE(report.warnings.empty());
  EXPECT_NE(report.warnings.back().find("47x31"), std::string::npos);
  Rgb8Video back = read_video(path("odd.mp4"));
  EXPECT_EQ(back.width, 48);
  EXPECT_EQ(back.height, 32);
  EXPECT_EQ(back.frames, 5);
}

TEST_F(VideoTest, Mp4FailuresAreClearAndLeaveNoFile) {
  Tensor frames = fixture_frames("latte");
  auto message = [&](const std::string& p, VideoWriteOptions opts = {}) -> std::string {
    try {
      write_video(p, frames, opts);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_NE(message(path("missing/out.mp4")).find("missing"), std::string::npos);
  fs::create_directory(dir_ / "adir.mp4");
  EXPECT_NE(message(path("adir.mp4")).find("is a directory"), std::string::npos);
  VideoWriteOptions bad_fps;
  bad_fps.fps = 0;
  EXPECT_NE(message(path("a.mp4"), bad_fps).find("frame rate"), std::string::npos);
  // A format pab does not write is refused before any file is created.
  const std::string wav = message(path("sound.wav"));
  EXPECT_NE(wav.find("sound.wav: unsupported video format '.wav'"), std::string::npos) << wav;
  EXPECT_EQ(listing(), (std::vector<std::string>{"adir.mp4"}));
  // Reading something that is not a video.
  std::ofstream(path("text.mp4")) << "not a video";
  EXPECT_THROW(read_video(path("text.mp4")), Error);
  EXPECT_THROW(probe_video(path("text.mp4")), Error);
}

}  // namespace
}  // namespace pab
