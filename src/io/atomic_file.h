// Output files that appear whole or not at all: written under a temporary
// name beside the target and renamed into place by commit(). A file that is
// never committed (an error, an exception) is removed.
#pragma once

#include <string>

namespace pab {

class AtomicFile {
 public:
  explicit AtomicFile(std::string path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  const std::string& temp_path() const { return temp_; }
  const std::string& path() const { return path_; }
  void commit();

 private:
  std::string path_, temp_;
  bool done_ = false;
};

// Fails with a clear message unless a file can be created at `path`
// (the directory exists and is writable). Creates nothing.
void check_writable(const std::string& path);

// Reads a whole file; fails naming it.
std::string read_file(const std::string& path);

}  // namespace pab
