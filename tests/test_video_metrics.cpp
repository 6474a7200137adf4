// Video quality metrics (pab compare): identical videos, a one-pixel shift
// and added noise against scikit-image's values (dev/fixtures/make_video_metrics.py),
// the data range convention, sizes, and the command on PNG folders and mp4 files.
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/video.h"
#include "io/video_metrics.h"
#include "support/testing.h"

namespace pab {
namespace {

namespace fs = std::filesystem;
using testing::data_path;

std::string folder(const std::string& name) {
  return data_path("video_metrics/" + name);
}

nlohmann::json expected() {
  std::ifstream in(data_path("video_metrics/expected.json"));
  return nlohmann::json::parse(in);
}

VideoComparison compare_folders(const std::string& a, const std::string& b) {
  return compare_frames(rgb8_levels(read_video(folder(a))), rgb8_levels(read_video(folder(b))), 255);
}

// Metrics against skimage's: PSNR and SSIM to 1e-9 (both in float64), errors exactly.
void expect_metrics(const FrameMetrics& m, const nlohmann::json& ref, const std::string& where) {
  EXPECT_NEAR(m.psnr, ref["psnr_db"].get<double>(), 1e-9) << where;
  EXPECT_NEAR(m.ssim, ref["ssim"].get<double>(), 1e-9) << where;
  EXPECT_NEAR(m.mse, ref["mse"].get<double>(), 1e-9) << where;
  EXPECT_EQ(m.max_abs, ref["max_abs_error"].get<double>()) << where;
  EXPECT_NEAR(m.mean_abs, ref["mean_abs_error"].get<double>(), 1e-12) << where;
}

TEST(VideoMetrics, IdenticalVideos) {
  VideoComparison c = compare_folders("a", "a");
  ASSERT_EQ(c.frames, 3);
  EXPECT_EQ(c.width, 48);
  EXPECT_EQ(c.height, 40);
  for (const FrameMetrics& m : c.per_frame) {
    EXPECT_TRUE(std::isinf(m.psnr) && m.psnr > 0);
    EXPECT_NEAR(m.ssim, 1.0, 1e-12);
    EXPECT_EQ(m.max_abs, 0);
    EXPECT_EQ(m.mean_abs, 0);
  }
  EXPECT_TRUE(std::isinf(c.overall.psnr));
  EXPECT_NEAR(c.overall.ssim, 1.0, 1e-12);
  // JSON has no infinity: null
  EXPECT_TRUE(comparison_json(c, "a", "a")["overall"]["psnr_db"].is_null());
}

TEST(VideoMetrics, KnownShiftAndNoiseMatchScikitImage) {
  const nlohmann::json ref = expected();
  for (const char* name : {"a_shift", "a_noise"}) {
    VideoComparison c = compare_folders("a", name);
    const nlohmann::json& r = ref[name];
    ASSERT_EQ(c.per_frame.size(), r["per_frame"].size());
    for (size_t f = 0; f < c.per_frame.size(); ++f)
      expect_metrics(c.per_frame[f], r["per_frame"][f], std::string(name) + " frame " + std::to_string(f));
    expect_metrics(c.overall, r["overall"], std::string(name) + " overall");
  }
  // The test can fail: the noisy video does not give the shifted one's values.
  VideoComparison noise = compare_folders("a", "a_noise");
  EXPECT_GT(std::fabs(noise.overall.psnr - ref["a_shift"]["overall"]["psnr_db"].get<double>()), 5);
  EXPECT_GT(std::fabs(noise.overall.ssim - ref["a_shift"]["overall"]["ssim"].get<double>()), 0.1);
}

TEST(VideoMetrics, OverallPsnrIsFromTheTotalError) {
  VideoComparison c = compare_folders("a", "a_shift");
  double mean_psnr = 0;
  for (const FrameMetrics& m : c.per_frame) mean_psnr += m.psnr / double(c.per_frame.size());
  EXPECT_NEAR(c.overall.psnr, 10 * std::log10(255.0 * 255.0 / c.overall.mse), 1e-12);
  EXPECT_GT(std::fabs(c.overall.psnr - mean_psnr), 1e-3);  // not the mean of the frames' PSNR
}

TEST(VideoMetrics, DataRangeOneOnFramesInUnitRange) {
  // The same videos as [0, 1] floats with data range 1: identical PSNR and SSIM.
  Tensor a = frames_from_rgb8(read_video(folder("a"))), b = frames_from_rgb8(read_video(folder("a_noise")));
  VideoComparison unit = compare_frames(a, b, 1.0);
  VideoComparison levels = compare_folders("a", "a_noise");
  EXPECT_NEAR(unit.overall.psnr, levels.overall.psnr, 1e-4);
  EXPECT_NEAR(unit.overall.ssim, levels.overall.ssim, 1e-6);
  EXPECT_NEAR(unit.overall.max_abs * 255, levels.overall.max_abs, 1e-3);
}

TEST(VideoMetrics, SizesAndSmallFrames) {
  Tensor a = testing::random_tensor({2, 3, 8, 8}, 1, 0, 1), b = testing::random_tensor({2, 3, 8, 8}, 2, 0, 1);
  VideoComparison c = compare_frames(a, b, 1.0);
  EXPECT_TRUE(std::isnan(c.overall.ssim));  // smaller than the 11x11 window
  EXPECT_TRUE(std::isfinite(c.overall.psnr));
  EXPECT_TRUE(comparison_json(c, "a", "b")["overall"]["ssim"].is_null());
  EXPECT_NE(comparison_text(c, "a", "b").find("n/a"), std::string::npos);
  try {
    compare_frames(a, testing::random_tensor({2, 3, 8, 9}, 2), 1.0);
    FAIL() << "no error for different sizes";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[2, 3, 8, 9]"), std::string::npos) << e.what();
  }
}

TEST(CompareCommand, FoldersAndVideoFiles) {
  const std::string pab = testing::pab_binary();
  std::string out;
  ASSERT_EQ(testing::run_command(pab + " compare " + folder("a") + " " + folder("a_shift") + " --json", &out), 0)
      << out;
  nlohmann::json j = nlohmann::json::parse(out);
  EXPECT_NEAR(j["overall"]["psnr_db"].get<double>(), expected()["a_shift"]["overall"]["psnr_db"].get<double>(), 1e-9);
  EXPECT_EQ(j["per_frame"].size(), 3u);

  ASSERT_EQ(testing::run_command(pab + " compare " + folder("a") + " " + folder("a_noise"), &out), 0) << out;
  EXPECT_NE(out.find("overall"), std::string::npos) << out;
  EXPECT_NE(out.find("PSNR"), std::string::npos) << out;

  // An mp4 against itself, and against the frames it was encoded from (lossy).
  fs::path dir = fs::temp_directory_path() / ("pab_test_compare_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string mp4 = (dir / "a.mp4").string();
  write_video(mp4, read_video(folder("a")));
  ASSERT_EQ(testing::run_command(pab + " compare " + mp4 + " " + mp4 + " --json", &out), 0) << out;
  EXPECT_TRUE(nlohmann::json::parse(out)["overall"]["psnr_db"].is_null());
  ASSERT_EQ(testing::run_command(pab + " compare " + folder("a") + " " + mp4 + " --json", &out), 0) << out;
  j = nlohmann::json::parse(out);
  EXPECT_GT(j["overall"]["psnr_db"].get<double>(), 25);
  EXPECT_GT(j["overall"]["ssim"].get<double>(), 0.6);  // the texture suffers from 4:2:0 chroma

  // Different sizes and missing inputs are one-line errors.
  fs::create_directories(dir / "short");
  fs::copy_file(folder("a") + "/frame_0000.png", dir / "short" / "frame_0000.png");
  EXPECT_NE(testing::run_command(pab + " compare " + folder("a") + " " + (dir / "short").string(), &out), 0);
  EXPECT_NE(out.find("3 frames"), std::string::npos) << out;
  EXPECT_NE(testing::run_command(pab + " compare " + folder("a") + " " + (dir / "missing").string(), &out), 0);
  EXPECT_NE(out.find("missing"), std::string::npos) << out;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace pab
