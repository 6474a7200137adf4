// Video output: 8-bit conversion against diffusers, PNG folders (exact round
// trip), H.264 mp4 (container metadata, PSNR after a round trip), the mpeg4
// fallback, odd sizes, and failures that leave nothing behind.
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>

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
  if (report.encoder != "libx264") {
    ASSERT_FALSE(report.warnings.empty()) << "a fallback encoder must come with a warning";
    GTEST_SKIP() << "libx264 is not available in this libavcodec: " << report.warnings[0];
  }
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

TEST_F(VideoTest, Mp4FallsBackToMpeg4WithAWarning) {
  VideoWriteOptions opts;
  opts.encoder = "no_such_encoder";
  Tensor smooth = smooth_video(10, 32, 48);
  VideoWriteReport report = write_video(path("fallback.mp4"), smooth, opts);
  EXPECT_EQ(report.encoder, "mpeg4");
  ASSERT_EQ(report.warnings.size(), 1u);
  EXPECT_NE(report.warnings[0].find("no_such_encoder"), std::string::npos);
  VideoInfo info = probe_video(path("fallback.mp4"));
  EXPECT_EQ(info.codec, "mpeg4");
  EXPECT_EQ(info.frames, 10);
  Rgb8Video back = read_video(path("fallback.mp4"));
  EXPECT_EQ(back.frames, 10);
  const double p = psnr(back, quantize_frames(smooth));
  EXPECT_GE(p, 30);
  std::printf("mpeg4 fallback round trip PSNR: %.1f dB\n", p);
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
  fs::create_directory(dir_ / "adir");
  EXPECT_NE(message(path("adir")).find("is a directory"), std::string::npos);
  VideoWriteOptions bad_fps;
  bad_fps.fps = 0;
  EXPECT_NE(message(path("a.mp4"), bad_fps).find("frame rate"), std::string::npos);
  // A container that cannot hold video fails after the temporary file was created: it is removed.
  const std::string wav = message(path("sound.wav"));
  EXPECT_NE(wav.find("sound.wav"), std::string::npos) << wav;
  EXPECT_EQ(listing(), (std::vector<std::string>{"adir"}));
  // Reading something that is not a video.
  std::ofstream(path("text.mp4")) << "not a video";
  EXPECT_THROW(read_video(path("text.mp4")), Error);
  EXPECT_THROW(probe_video(path("text.mp4")), Error);
}

}  // namespace
}  // namespace pab
