#include "io/atomic_file.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "parallel/world.h"

namespace pab {

namespace fs = std::filesystem;

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  fs::path p(path_);
  std::string name = ".";  // appended piecewise: GCC 12 warns (-Wrestrict) falsely on "." + string
  name += p.filename().string();
  name += ".tmp" + std::to_string(::getpid());
  temp_ = (p.parent_path() / name).string();
}

AtomicFile::~AtomicFile() {
  if (!done_) std::remove(temp_.c_str());
}

void AtomicFile::commit() {
  if (is_secondary_rank()) {  // rank 0 of a sequence-parallel run writes the outputs
    std::remove(temp_.c_str());
    done_ = true;
    return;
  }
  if (std::rename(temp_.c_str(), path_.c_str()) != 0)
    fail(path_, ": cannot move the finished file into place: ", std::strerror(errno));
  done_ = true;
}

void check_writable(const std::string& path) {
  if (path.empty()) fail("no output path given");
  fs::path p(path);
  fs::path dir = p.parent_path().empty() ? fs::path(".") : p.parent_path();
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) fail(path, ": the directory ", dir.string(), " does not exist");
  if (fs::is_directory(p, ec)) fail(path, ": is a directory");
  if (::access(dir.c_str(), W_OK) != 0) fail(path, ": the directory ", dir.string(), " is not writable");
}

std::string read_file(const std::string& path) {
  std::error_code ec;
  fs::file_status st = fs::status(path, ec);
  if (!ec && fs::is_directory(st)) fail(path, ": is a directory, expected a file");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, ": cannot open: ", std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) fail(path, ": read error");
  return ss.str();
}

}  // namespace pab
