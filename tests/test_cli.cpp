// The `pab` command as a user meets it: the same command gives the same
// bytes whatever the order or spelling of its arguments, values out of range
// and outputs pab cannot write are refused before any work with one line
// naming the flag, folders that are not model folders say what they are,
// and an interrupted run leaves no temporary and no half of its outputs.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "io/video.h"
#include "support/io_testing.h"
#include "support/testing.h"

namespace pab {
namespace {

namespace fs = std::filesystem;
using testing::data_path;

const std::string kModel = data_path("fixtures/pipeline/cogvideox_ddim/model");

struct CliRun {
  int rc = 0;
  std::string out;
};
CliRun pab_run(const std::string& args) {
  CliRun r;
  r.rc = testing::run_command(testing::pab_binary() + " " + args, &r.out);
  return r;
}

// Whether a run failed with one "pab: error:" line holding `needle`, before
// any step ran.
::testing::AssertionResult refused(const CliRun& r, const std::string& needle) {
  if (r.rc == 0) return ::testing::AssertionFailure() << "exit status 0: " << r.out;
  if (r.out.find("pab: error: ") != 0 || r.out.find('\n') != r.out.size() - 1)
    return ::testing::AssertionFailure() << "not one error line: " << r.out;
  if (r.out.find(needle) == std::string::npos)
    return ::testing::AssertionFailure() << "no '" << needle << "': " << r.out;
  return ::testing::AssertionSuccess();
}

std::string bytes_of(const std::string& path) {
  return testing::read_bytes(path);
}

TEST(Cli, TheSameCommandGivesTheSameBytesWhateverTheArgumentOrder) {
  testing::TempDir dir;
  for (const char* ext : {".mp4", ".webm", ".gif"}) {
    SCOPED_TRACE(ext);
    const std::string a = dir / (std::string("a") + ext), b = dir / (std::string("b") + ext);
    ASSERT_EQ(pab_run("generate -m " + kModel + " -p 'a red boat' --steps 3 -o " + a).rc, 0);
    ASSERT_EQ(pab_run("generate --output=" + b + " --seed 42 --steps=3 --prompt 'a red boat' --model " + kModel).rc, 0);
    EXPECT_TRUE(bytes_of(a) == bytes_of(b)) << "42 is the default seed: the two commands are the same";
    // Can fail: another seed gives another file.
    const std::string c = dir / (std::string("c") + ext);
    ASSERT_EQ(pab_run("generate -m " + kModel + " -p 'a red boat' --steps 3 --seed 43 -o " + c).rc, 0);
    EXPECT_FALSE(bytes_of(a) == bytes_of(c));
  }
  EXPECT_EQ(probe_video(dir / "a.webm").codec, "vp9");
  EXPECT_EQ(probe_video(dir / "a.gif").codec, "gif");
}

// Open-Sora's three hub folders, assembled and run as its documentation says
// (docs/open-sora.md): the video comes out at the named size and length and
// the model's frame rate; a named size is refused for another pipeline.
TEST(Cli, AssembledOpenSoraMakesAVideoOfTheNamedSizeAndLength) {
  testing::TempDir dir;
  const std::string os = data_path("open_sora");
  CliRun a = pab_run("assemble open-sora-1.2 --transformer " + os + "/transformer --vae " + os +
                     "/vae --text-encoder " + os + "/text_encoder -o " + (dir / "open-sora"));
  ASSERT_EQ(a.rc, 0) << a.out;
  EXPECT_NE(a.out.find("vae: VideoAutoencoderPipeline"), std::string::npos) << a.out;
  CliRun g =
      pab_run("generate -m " + (dir / "open-sora") +
              " -p 'a red fox' --resolution 144p --aspect-ratio 1:1 --duration 2s --steps 2 -o " + (dir / "fox.mp4"));
  ASSERT_EQ(g.rc, 0) << g.out;
  const VideoInfo info = probe_video(dir / "fox.mp4");
  EXPECT_EQ(info.width, 192);
  EXPECT_EQ(info.height, 192);
  EXPECT_EQ(info.frames, 51);
  EXPECT_NEAR(info.fps, 24.0, 1e-6);
  EXPECT_TRUE(refused(pab_run("generate -m " + kModel + " -p 'a cat' --resolution 480p -o " + (dir / "x.mp4")),
                      "--resolution '480p': named sizes and lengths are Open-Sora's"));
  EXPECT_TRUE(refused(pab_run("generate -m " + (dir / "open-sora") + " -p 'a cat' --duration 3s -o " + (dir / "x.mp4")),
                      "duration '3s': Open-Sora offers"));
  EXPECT_FALSE(fs::exists(dir / "x.mp4"));
}

// Open-Sora-Plan v1.2's downloaded folders, assembled and run as
// docs/open-sora-plan.md says: the transformer's size and frame count, 24 fps,
// PAB's summary; a VAE of the other release is named before anything is written.
TEST(Cli, AssembledOpenSoraPlanMakesAVideo) {
  testing::TempDir dir;
  const std::string v120 = data_path("open_sora_plan/v120"), v110 = data_path("open_sora_plan/v110");
  CliRun a = pab_run("assemble open-sora-plan-1.2 --transformer " + v120 + "/transformer --vae " + v120 +
                     "/vae --text-encoder " + v120 + "/text_encoder -o " + (dir / "osp"));
  ASSERT_EQ(a.rc, 0) << a.out;
  EXPECT_NE(a.out.find("text_encoder: MT5EncoderModel"), std::string::npos) << a.out;
  CliRun g = pab_run("generate -m " + (dir / "osp") + " -p 'a red fox' --steps 3 -o " + (dir / "fox.mp4"));
  ASSERT_EQ(g.rc, 0) << g.out;
  EXPECT_NE(g.out.find("PAB"), std::string::npos) << g.out;
  const VideoInfo info = probe_video(dir / "fox.mp4");
  EXPECT_EQ(info.width, 48);
  EXPECT_EQ(info.height, 32);
  EXPECT_EQ(info.frames, 37);
  EXPECT_NEAR(info.fps, 24.0, 1e-6);
  // Each folder is of the class the recipe names, but they do not fit together.
  EXPECT_TRUE(refused(pab_run("assemble open-sora-plan-1.2 --transformer " + v120 + "/transformer --vae " + v110 +
                              "/vae --text-encoder " + v120 + "/text_encoder -o " + (dir / "mixed")),
                      "a CausalVAEModel of Open-Sora-Plan v1.1 with a v1.2 transformer"));
  EXPECT_FALSE(fs::exists(dir / "mixed"));
}

TEST(Cli, ValuesOutOfRangeAreRefusedNamingTheFlagAndTheRange) {
  testing::TempDir dir;
  const std::string run = "generate -m " + kModel + " -p 'a cat' -o " + (dir / "out.mp4") + " ";
  struct Case {
    std::string args, needle;
  };
  for (const Case& c : std::vector<Case>{
           {"--steps 0", "--steps: '0' is out of range: expected an integer from 1 to"},
           {"--frames 0", "--frames: '0' is out of range"},
           {"--width 0", "--width: '0' is out of range"},
           {"--height -8", "--height: '-8' is out of range"},
           {"--max-sequence-length 0", "--max-sequence-length: '0' is out of range"},
           {"--guidance nan", "--guidance: 'nan' is not a finite number (1 or less: no CFG)"},
           {"--guidance inf", "--guidance: 'inf' is not a finite number"},
           {"--seed -1", "--seed: '-1' is not a seed: expected an integer from 0 to 18446744073709551615"},
           {"--seed 18446744073709551616", "--seed: '18446744073709551616' is not a seed"},
           {"--fps 0", "--fps 0: expected a frame rate in (0, 1000]"},
           {"--fps nan", "--fps: 'nan' is not a finite number"},
           {"--pab ''", "--pab '': expected default, off, or kind=range"},
           {"--pab-config ''", "--pab-config"},
           {"--max-memory 0", "--max-memory: '0': expected a size such as 24G"},
           {"--max-memory 12X", "--max-memory: '12X'"},
           {"-p '   '", "--prompt: an empty value"},
           {"--device tpu", "unsupported device 'tpu' (this build supports: cpu"},
           {"--dtype bf16", "--dtype bf16: the cpu backend computes in f32 only"},
       }) {
    EXPECT_TRUE(refused(pab_run(run + c.args), c.needle)) << c.args;
  }
  EXPECT_TRUE(fs::is_empty(dir.path()));
  EXPECT_TRUE(refused(pab_run("calibrate --case " + data_path("fixtures/transformer/latte") + " --target-speedup nan"),
                      "--target-speedup: 'nan' is not a finite number"));
  EXPECT_TRUE(refused(pab_run("calibrate --case " + data_path("fixtures/transformer/latte") + " --target-speedup 0.5"),
                      "--target-speedup 0.5: expected a finite number >= 1"));
  // Guidance 1 or less runs without CFG, as the help says.
  CliRun r = pab_run(run + "--guidance -5 --steps 2");
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("guidance -5 (no CFG)"), std::string::npos) << r.out;
}

TEST(Cli, OutputsAreCheckedBeforeAnyWork) {
  testing::TempDir dir;
  const std::string run = "generate -m " + kModel + " -p 'a cat' --steps 2 ";
  EXPECT_TRUE(
      refused(pab_run(run + "-o " + (dir / "out.png")),
              "out.png: unsupported video format '.png': expected one of .mp4 (H.264), .webm (VP9), .gif (GIF); "
              "for PNG frames give a folder with --frames-dir"));
  EXPECT_TRUE(refused(pab_run(run + "-o " + (dir / "out.xyz")), "unsupported video format '.xyz'"));
  EXPECT_TRUE(refused(pab_run(run + "-o " + (dir / "out")), "out: no file extension"));
  EXPECT_TRUE(refused(pab_run(run + "-o " + (dir / "out.mp4") + " --pab off --pab-report " + (dir / "map.png")),
                      "map.png: no PAB report without PAB (--pab off)"));
  EXPECT_TRUE(refused(pab_run(run + "-o " + (dir / "out.mp4") + " --pab-report " + (dir / "map.jpg")),
                      "map.jpg: the PAB report is a PNG picture"));
  EXPECT_TRUE(refused(pab_run(run + "--frames-dir " + (dir / "same.png") + " --pab-report " + (dir / "same.png")),
                      "same.png: given as two outputs"));
  EXPECT_TRUE(fs::is_empty(dir.path()));
}

TEST(Cli, CommandsAndFoldersSayWhatIsWrong) {
  EXPECT_TRUE(refused(
      pab_run("gnerate -m x"),
      "unknown command 'gnerate'; the commands are assemble, bench, calibrate, compare, generate, inspect, replay"));
  EXPECT_TRUE(refused(pab_run(""), "no command given; the commands are"));
  EXPECT_EQ(pab_run("--version").rc, 0);
  CliRun help = pab_run("generate --help");
  EXPECT_EQ(help.rc, 0);
  for (const char* flag : {"--max-memory", "--allow-unused-weights", "--seed", ".webm (VP9)"})
    EXPECT_NE(help.out.find(flag), std::string::npos) << flag;

  testing::TempDir dir;
  const std::string run = " -p 'a cat' -o " + (dir / "out.mp4");
  EXPECT_TRUE(refused(pab_run("generate -m " + (dir / "absent") + run), "absent: no such folder"));
  testing::write_bytes(dir / "file", "x");
  EXPECT_TRUE(refused(pab_run("generate -m " + (dir / "file") + run), "file: is a file, expected a model folder"));
  fs::create_symlink(dir / "loop_b", dir / "loop_a");
  fs::create_symlink(dir / "loop_a", dir / "loop_b");
  EXPECT_TRUE(refused(pab_run("generate -m " + (dir / "loop_a") + run), "loop_a: a loop of symbolic links"));
  fs::create_symlink(dir / "nowhere", dir / "dangling");
  EXPECT_TRUE(refused(pab_run("generate -m " + (dir / "dangling") + run), "which does not exist"));
  const std::string copy = dir / "model";
  testing::copy_tree(kModel, copy);
  fs::remove(fs::path(copy) / "model_index.json");
  fs::create_directory(fs::path(copy) / "model_index.json");
  EXPECT_TRUE(refused(pab_run("generate -m " + copy + run), "model_index.json: is a folder, expected"));
  fs::remove(fs::path(copy) / "model_index.json");
  fs::copy_file(fs::path(kModel) / "model_index.json", fs::path(copy) / "model_index.json");
  fs::remove(fs::path(copy) / "vae" / "config.json");
  fs::create_directory(fs::path(copy) / "vae" / "config.json");
  EXPECT_TRUE(refused(pab_run("generate -m " + copy + run), "vae/config.json: is a folder, expected"));
  if (::geteuid() != 0) {  // root reads any folder
    fs::permissions(fs::path(copy) / "vae", fs::perms::none);
    EXPECT_TRUE(refused(pab_run("generate -m " + copy + run), "vae: cannot be read"));
    fs::permissions(fs::path(copy) / "vae", fs::perms::owner_all);
  }
  // A PAB configuration: a syntax error at its line and column, a block the model does not have.
  testing::write_bytes(dir / "pab.json", "{\n  \"spatial_broadcast\": true,,\n}");
  EXPECT_TRUE(refused(pab_run("generate -m " + kModel + run + " --pab-config " + (dir / "pab.json")),
                      "pab.json: not valid JSON (line 2, column 29"));
  testing::write_bytes(dir / "pab.yaml",
                       "spatial_broadcast: true\nspatial_threshold: [100, 800]\nspatial_range: 2\n"
                       "spatial_block: [0, 5]\n");
  EXPECT_TRUE(refused(pab_run("generate -m " + kModel + run + " --pab-config " + (dir / "pab.yaml")),
                      "PAB spatial: block 3 is beyond this model's 3 spatial blocks (0 to 2)"));
  EXPECT_FALSE(fs::exists(dir / "out.mp4"));
}

// Starts `pab args` with its stderr on a pipe; returns the pid.
pid_t spawn_pab(const std::string& args, int* err_fd) {
  int fds[2];
  PAB_ASSERT(::pipe(fds) == 0);
  const pid_t pid = ::fork();
  PAB_ASSERT(pid >= 0);
  if (pid == 0) {
    ::dup2(fds[1], 2);
    ::close(fds[0]);
    const int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, 1);
    const std::string cmd = "exec " + testing::pab_binary() + " " + args;
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(fds[1]);
  *err_fd = fds[0];
  return pid;
}

// Reads the child's stderr until `needle` has been seen (or it closes).
bool wait_for_line(int fd, const std::string& needle, std::string* seen) {
  char buf[512];
  while (seen->find(needle) == std::string::npos) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) return false;
    seen->append(buf, size_t(n));
  }
  return true;
}

std::vector<std::string> listing(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// SIGINT or SIGTERM while the outputs are being written (the video being
// encoded, or the frames written after it): every temporary is removed, the
// process dies by the signal, and the outputs are replaced all together or
// not at all. Before, the video was moved into place before the frames were
// written, so the second case left a new video beside the old frames.
TEST(Cli, AnInterruptWhileWritingLeavesTheEarlierOutputsAndNoTemporary) {
  struct Case {
    int sig;
    const char* temporary;  // the signal comes once this shows
  };
  for (const Case& c : {Case{SIGINT, ".out.mp4.tmp"}, Case{SIGTERM, ".out.mp4.tmp"}, Case{SIGINT, ".frames.tmp"}}) {
    const int sig = c.sig;
    SCOPED_TRACE(cat(sig == SIGINT ? "SIGINT" : "SIGTERM", " at ", c.temporary));
    testing::TempDir dir;
    const std::string out = dir / "out.mp4", frames = dir / "frames";
    const std::string args = "generate -m " + kModel + " -p 'a cat' --steps 2 --frames 17 --height 96 --width 160 -o " +
                             out + " --frames-dir " + frames;
    // An earlier run's outputs, which an interrupted run must leave alone.
    ASSERT_EQ(pab_run("generate -m " + kModel + " -p 'a dog' --steps 1 -o " + out + " --frames-dir " + frames).rc, 0);
    const std::string old_mp4 = bytes_of(out);
    const std::vector<std::string> old_frames = listing(frames);

    int err = -1;
    const pid_t pid = spawn_pab(args, &err);
    std::string seen;
    ASSERT_TRUE(wait_for_line(err, "decode", &seen)) << seen;
    // The write has begun once a temporary shows; then the signal.
    bool writing = false;
    for (int i = 0; i < 5000 && !writing; ++i) {
      for (const std::string& name : listing(dir.path())) writing = writing || name.starts_with(c.temporary);
      if (!writing) std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    ASSERT_TRUE(writing) << "no temporary appeared: " << seen;
    ::kill(pid, sig);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ::close(err);
    ASSERT_TRUE(WIFSIGNALED(status)) << "status " << status;
    EXPECT_EQ(WTERMSIG(status), sig);
    EXPECT_EQ(listing(dir.path()), (std::vector<std::string>{"frames", "out.mp4"}));
    // All or none: both outputs the earlier run's, or (when the signal came
    // as the outputs were being moved into place, which runs to its end) both new.
    const bool old_video = bytes_of(out) == old_mp4, old_pictures = listing(frames) == old_frames;
    EXPECT_EQ(old_video, old_pictures);
    if (std::string(c.temporary) == ".out.mp4.tmp") {
      EXPECT_TRUE(old_video) << "stopped while encoding";
    }
  }
}

}  // namespace
}  // namespace pab
