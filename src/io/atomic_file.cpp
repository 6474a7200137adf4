#include "io/atomic_file.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include "core/error.h"

namespace pab {

namespace fs = std::filesystem;

namespace {

// Every temporary not yet moved into place or removed, for the interrupt
// cleanup. Its mutex also serialises what must not interleave with that
// cleanup: creating temporaries, writing into temporary folders, commits.
struct Temporaries {
  std::mutex mutex;
  std::map<std::string, bool> paths;  // path -> is a folder
};
Temporaries& temporaries() {
  static auto* t = new Temporaries;  // never destroyed: the cleanup thread may use it during exit
  return *t;
}

void remove_path(const std::string& path, bool folder) {
  std::error_code ec;
  if (folder)
    fs::remove_all(path, ec);
  else
    fs::remove(path, ec);
}

// `.name.<tag><pid>` beside `target`.
std::string beside(const std::string& target, const char* tag) {
  fs::path p(target);
  if (!p.has_filename()) p = p.parent_path();  // "out/" -> "out"
  std::string name = ".";                      // appended piecewise: GCC 12 warns (-Wrestrict) falsely on "." + string
  name += p.filename().string();
  name += tag;
  name += std::to_string(::getpid());
  return (p.parent_path() / name).string();
}

std::string target_of(const std::string& path) {
  fs::path p(path);
  return (p.has_filename() ? p : p.parent_path()).string();
}

thread_local OutputGroup* open_group = nullptr;

// Moves each entry's temporary to its target, a previous target first set
// aside and removed once all are in place. On a failure everything moved is
// put back, and the previous targets restored. Call with the mutex held.
void move_into_place(const std::vector<OutputGroup::Entry>& entries) {
  std::vector<std::string> aside(entries.size());
  size_t moved = 0;
  auto undo = [&] {
    std::error_code ec;
    for (size_t i = 0; i <= moved && i < entries.size(); ++i) {
      if (i < moved) fs::rename(entries[i].target, entries[i].temp, ec);
      if (!aside[i].empty()) fs::rename(aside[i], entries[i].target, ec);
    }
  };
  for (; moved < entries.size(); ++moved) {
    const auto& e = entries[moved];
    std::error_code ec;
    if (fs::exists(fs::symlink_status(e.target, ec))) {
      aside[moved] = beside(e.target, ".old");
      remove_path(aside[moved], true);
      fs::rename(e.target, aside[moved], ec);
      if (ec) {
        const std::string why = ec.message();
        aside[moved].clear();
        undo();
        fail(e.target, ": cannot move the previous ", e.folder ? "folder" : "file", " aside: ", why);
      }
    }
    fs::rename(e.temp, e.target, ec);
    if (ec) {
      const std::string why = ec.message();
      undo();
      fail(e.target, ": cannot move the finished ", e.folder ? "folder" : "file", " into place: ", why);
    }
  }
  for (size_t i = 0; i < entries.size(); ++i)
    if (!aside[i].empty()) remove_path(aside[i], true);
}

// Removes a temporary that will not be committed, and forgets it.
void discard(const std::string& temp, bool folder) {
  Temporaries& t = temporaries();
  std::lock_guard<std::mutex> lock(t.mutex);
  remove_path(temp, folder);
  t.paths.erase(temp);
}

[[noreturn]] void remove_temporaries_and_die(int sig) {
  Temporaries& t = temporaries();
  t.mutex.lock();  // never unlocked: nothing is created or committed after this
  for (const auto& [path, folder] : t.paths) remove_path(path, folder);
  ::signal(sig, SIG_DFL);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, sig);
  ::pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
  ::raise(sig);  // terminates the process, as the signal would have
  ::_exit(128 + sig);
}

}  // namespace

// ------------------------------------------------------------------ AtomicFile

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  temp_ = beside(path_, ".tmp");
  Temporaries& t = temporaries();
  std::lock_guard<std::mutex> lock(t.mutex);
  const int fd = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail(path_, ": cannot create a file beside it: ", std::strerror(errno));
  ::close(fd);
  t.paths[temp_] = false;
}

AtomicFile::~AtomicFile() {
  if (!done_) discard(temp_, false);
}

void AtomicFile::commit() {
  PAB_ASSERT(!done_, path_, ": committed twice");
  OutputGroup::commit_or_defer({temp_, path_, false});
  done_ = true;
}

void open_temporary(const std::function<void()>& open) {
  std::lock_guard<std::mutex> lock(temporaries().mutex);
  open();
}

// ------------------------------------------------------------------ AtomicFolder

AtomicFolder::AtomicFolder(std::string path) : path_(target_of(path)) {
  temp_ = beside(path_, ".tmp");
  Temporaries& t = temporaries();
  std::lock_guard<std::mutex> lock(t.mutex);
  remove_path(temp_, true);
  std::error_code ec;
  if (!fs::create_directory(temp_, ec)) fail(path_, ": cannot create a folder beside it: ", ec.message());
  t.paths[temp_] = true;
}

AtomicFolder::~AtomicFolder() {
  if (!done_) discard(temp_, true);
}

void AtomicFolder::write(const std::string& name, const std::function<void(const std::string&)>& write) {
  PAB_ASSERT(!done_, path_, ": written after commit");
  std::lock_guard<std::mutex> lock(temporaries().mutex);
  write((fs::path(temp_) / name).string());
}

void AtomicFolder::commit() {
  PAB_ASSERT(!done_, path_, ": committed twice");
  OutputGroup::commit_or_defer({temp_, path_, true});
  done_ = true;
}

// ------------------------------------------------------------------ OutputGroup

OutputGroup::OutputGroup() {
  PAB_ASSERT(!open_group, "output groups do not nest");
  open_group = this;
}

OutputGroup::~OutputGroup() {
  open_group = nullptr;
  Temporaries& t = temporaries();
  std::lock_guard<std::mutex> lock(t.mutex);
  for (const Entry& e : entries_) {
    remove_path(e.temp, e.folder);
    t.paths.erase(e.temp);
  }
}

void OutputGroup::commit_or_defer(const Entry& e) {
  if (open_group) {
    open_group->entries_.push_back(e);
    return;
  }
  Temporaries& t = temporaries();
  std::lock_guard<std::mutex> lock(t.mutex);
  move_into_place({e});
  t.paths.erase(e.temp);
}

void OutputGroup::commit() {
  open_group = nullptr;
  Temporaries& t = temporaries();
  std::lock_guard<std::mutex> lock(t.mutex);
  move_into_place(entries_);
  for (const Entry& e : entries_) t.paths.erase(e.temp);
  entries_.clear();
}

// ------------------------------------------------------------------ interrupts

void install_interrupt_cleanup() {
  static std::once_flag once;
  std::call_once(once, [] {
    sigset_t set;
    sigemptyset(&set);
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&set, sig);
    ::pthread_sigmask(SIG_BLOCK, &set, nullptr);
    std::thread([set] {
      for (;;) {
        int sig = 0;
        if (::sigwait(&set, &sig) == 0) remove_temporaries_and_die(sig);
      }
    }).detach();
  });
}

// ------------------------------------------------------------------ checks and reading

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
