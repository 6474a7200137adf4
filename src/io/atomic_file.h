// Outputs that appear whole or not at all.
//
// An AtomicFile (or AtomicFolder) is written under a temporary name beside its
// target and renamed into place by commit(); one never committed (an error, an
// exception) is removed. While an OutputGroup is open on the thread, commits
// are deferred to the group, whose commit() moves every output into place at
// once: a run writes all of its outputs or none of them.
//
// With install_interrupt_cleanup() (the `pab` command calls it first thing),
// SIGINT, SIGTERM and SIGHUP remove every temporary still registered before
// the process dies by the signal; a group's commit runs to its end first.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace pab {

class AtomicFile {
 public:
  // Creates the (empty) temporary file; fails naming `path` if it cannot.
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

// A folder written file by file under a temporary name, then swapped in for
// `path` (a previous folder of that name is replaced).
class AtomicFolder {
 public:
  explicit AtomicFolder(std::string path);
  ~AtomicFolder();
  AtomicFolder(const AtomicFolder&) = delete;
  AtomicFolder& operator=(const AtomicFolder&) = delete;

  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return temp_; }  // the folder being written, until commit
  // Writes the file `name` in the temporary folder: `write` gets its full path.
  void write(const std::string& name, const std::function<void(const std::string&)>& write);
  void commit();

 private:
  std::string path_, temp_;
  bool done_ = false;
};

// Outputs committed together (see the top of this file). Groups do not nest.
class OutputGroup {
 public:
  OutputGroup();
  ~OutputGroup();  // removes what was deferred to it and never committed
  OutputGroup(const OutputGroup&) = delete;
  OutputGroup& operator=(const OutputGroup&) = delete;
  // Moves every deferred output into place, or, when one cannot be moved,
  // restores what was there before and fails naming it.
  void commit();

  struct Entry {
    std::string temp, target;
    bool folder = false;
  };

 private:
  // Adds `e` to the group open on this thread, or moves it into place now.
  static void commit_or_defer(const Entry& e);
  std::vector<Entry> entries_;
  friend class AtomicFile;
  friend class AtomicFolder;
};

// Installs the interrupt cleanup: blocks SIGINT, SIGTERM and SIGHUP in the
// calling thread (and so in the threads it starts later) and starts a thread
// that waits for them. Call before starting any other thread.
void install_interrupt_cleanup();

// Runs `open` (which creates or reopens a temporary's file, e.g. a video
// library opening AtomicFile::temp_path()) under the lock the interrupt
// cleanup takes, and keeps, before it removes the temporaries: the file is
// then opened before the cleanup, which removes it, or never (the process
// dies first), so no temporary outlives an interrupt.
void open_temporary(const std::function<void()>& open);

// Fails with a clear message unless a file can be created at `path`
// (the directory exists and is writable). Creates nothing.
void check_writable(const std::string& path);

// Reads a whole file; fails naming it.
std::string read_file(const std::string& path);

}  // namespace pab
