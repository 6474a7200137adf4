#include "parallel/world.h"

#include <fcntl.h>
#include <omp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <numeric>
#include <chrono>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>
#include <vector>

#include "backend/backend.h"
#include "core/error.h"

extern char** environ;

namespace pab {

namespace {

constexpr int kMaxRanks = 64;
constexpr const char* kRankVar = "PAB_RANK";
constexpr const char* kWorldVar = "PAB_WORLD";  // "size,comm,control fd,data fd 0,...,data fd N-1[,nccl id]"

std::vector<std::string>& program_args() {
  static std::vector<std::string> args;
  return args;
}

NcclHooks& nccl_hooks() {
  static NcclHooks hooks;
  return hooks;
}

constexpr int kMaxSplits = 4;
constexpr int kBarriers = 1 + kMaxSplits * kMaxRanks;  // the world's, then one per group of each split

// Shared by all ranks (a memfd every rank inherits from rank 0).
struct Control {
  struct Barrier {
    std::atomic<uint32_t> arrived;
    std::atomic<uint32_t> phase;
  };
  Barrier barriers[kBarriers];
  // Set by a rank when it stops (normally or not), and by rank 0 for a rank
  // it finds exited: a barrier waiting on a stopped member can never finish.
  std::atomic<uint32_t> stopped[kMaxRanks];
  std::atomic<uint64_t> capacity[kMaxRanks];  // bytes in each rank's data memfd
};

int checked_memfd(const char* name) {
  int fd = ::memfd_create(name, 0);  // inherited by the ranks started from here
  if (fd < 0) fail("sequence parallel: memfd_create failed: ", std::strerror(errno));
  return fd;
}

void* map_fd(int fd, size_t bytes) {
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) fail("sequence parallel: mmap of ", bytes, " bytes failed: ", std::strerror(errno));
  return p;
}

std::string last_line_of(const std::string& path) {
  std::ifstream in(path);
  std::string line, last;
  while (std::getline(in, line))
    if (!line.empty()) last = line;
  return last;
}

// The processes of the run, as rank 0 sees them.
struct Children {
  std::vector<pid_t> pids;  // rank r's pid at r - 1
  std::vector<std::string> logs;
  bool killed = false;  // rank 0 stopped on an error and killed the ranks left
};

// What a rank says when a peer it waits on has stopped.
std::string peer_stopped(int rank) { return cat("sequence parallel: rank ", rank, " stopped"); }

// A rank's last words ("<program>: error: <message>") that only repeat rank
// 0's own error or follow from it.
bool follows(const std::string& why, const std::string& own_error) {
  if (own_error.empty() || why.empty()) return false;
  const size_t at = why.find(": error: ");
  const std::string message = at == std::string::npos ? why : why.substr(at + 9);
  return message == peer_stopped(0) || own_error.find(message) != std::string::npos ||
         message.find(own_error) != std::string::npos;
}

// Rank 0: marks the ranks that have exited as stopped. Waiting in a barrier
// (own_error null), the first one found to have failed fails this rank with
// what its log says last; at exit, each is reported unless it only repeats
// rank 0's own error.
void reap_children(Control* ctl, Children* children, const std::string* own_error) {
  for (size_t i = 0; i < children->pids.size(); ++i) {
    int status = 0;
    if (children->pids[i] < 0 || ::waitpid(children->pids[i], &status, WNOHANG) != children->pids[i]) continue;
    children->pids[i] = -1;
    ctl->stopped[i + 1].store(1);
    const bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    std::string why = clean ? "" : last_line_of(children->logs[i]);
    if (clean || (own_error && (follows(why, *own_error) || children->killed))) {  // nothing to read in its log
      std::remove(children->logs[i].c_str());
      continue;
    }
    std::string how = WIFEXITED(status) ? cat("with exit status ", WEXITSTATUS(status)) : cat("by signal ", WTERMSIG(status));
    if (!own_error) fail(peer_stopped(int(i) + 1), " ", how, why.empty() ? "" : ": " + why);
    std::cerr << "pab: warning: rank " << i + 1 << " stopped " << how << " (" << children->logs[i] << ")"
              << (why.empty() ? "" : ": " + why) << "\n";
  }
}

// Exchanges through host shared memory: each rank owns a data memfd that it
// grows as needed and writes its outgoing blocks to; after a barrier every
// rank copies its blocks out of its peers' memfds; a second barrier lets the
// owners reuse them. A group of ranks (split) uses the same memfds with a
// barrier of its own.
class HostCommunicator final : public Communicator {
 public:
  // members: the world ranks of this group, in group rank order
  HostCommunicator(std::vector<int> members, int world_rank, int barrier, Control* ctl, std::vector<int> fds,
                   Children* children)
      : Communicator(index_of(members, world_rank), int(members.size())),
        members_(std::move(members)),
        world_rank_(world_rank),
        barrier_(barrier),
        ctl_(ctl),
        fds_(std::move(fds)),
        maps_(fds_.size()),
        children_(children) {}

  ~HostCommunicator() override {
    for (const Map& m : maps_)
      if (m.ptr) ::munmap(m.ptr, m.bytes);
  }

  std::string description() const override { return "host shared memory"; }

  std::unique_ptr<Communicator> split(int color, int key) override {
    if (color < 0 || color >= kMaxRanks) fail("sequence parallel: split color ", color, " out of range");
    static int splits = 0;  // every rank splits in the same order, so the count names the split
    if (++splits > kMaxSplits) fail("sequence parallel: more than ", kMaxSplits, " splits");
    std::vector<int> mine = {color, key, world_rank_}, all(3 * size_t(size()));
    all_gather(mine.data(), all.data(), sizeof(int) * 3, Device::cpu);
    std::vector<std::array<int, 2>> group;  // key, world rank
    for (size_t j = 0; j < size_t(size()); ++j)
      if (all[3 * j] == color) group.push_back({all[3 * j + 1], all[3 * j + 2]});
    std::sort(group.begin(), group.end());
    std::vector<int> members;
    for (const auto& g : group) members.push_back(g[1]);
    return std::make_unique<HostCommunicator>(members, world_rank_, 1 + (splits - 1) * kMaxRanks + color, ctl_, fds_,
                                              children_);
  }

  void all_to_all(const void* send, void* recv, size_t block, Device device) override {
    const size_t p = size_t(size()), me = size_t(rank());
    publish(send, block * p, device);
    for (size_t j = 0; j < p; ++j)
      copy_bytes(static_cast<char*>(recv) + j * block, device, peer(j) + me * block, Device::cpu, block);
    barrier();
    ++stats_.all_to_all;
    stats_.bytes_sent += int64_t(block * p);
  }

  void all_gather(const void* send, void* recv, size_t bytes, Device device) override {
    publish(send, bytes, device);
    for (size_t j = 0; j < size_t(size()); ++j)
      copy_bytes(static_cast<char*>(recv) + j * bytes, device, peer(j), Device::cpu, bytes);
    barrier();
    ++stats_.all_gather;
    stats_.bytes_sent += int64_t(bytes);
  }

 private:
  struct Map {
    char* ptr = nullptr;
    size_t bytes = 0;
  };

  static int index_of(const std::vector<int>& members, int world_rank) {
    auto it = std::find(members.begin(), members.end(), world_rank);
    if (it == members.end()) fail("sequence parallel: rank ", world_rank, " is not in its own group");
    return int(it - members.begin());
  }

  // Writes this rank's outgoing bytes and waits until every rank has.
  void publish(const void* data, size_t bytes, Device device) {
    const size_t me = size_t(world_rank_);
    if (ctl_->capacity[me].load() < bytes) {
      if (::ftruncate(fds_[me], off_t(bytes)) != 0)
        fail("sequence parallel: cannot grow the exchange buffer to ", bytes, " bytes: ", std::strerror(errno));
      ctl_->capacity[me].store(bytes);
    }
    copy_bytes(mapped(me), Device::cpu, data, device, bytes);
    barrier();
  }

  char* peer(size_t j) { return mapped(size_t(members_[j])); }

  // World rank j's memfd mapped at its current capacity.
  char* mapped(size_t j) {
    Map& m = maps_[j];
    const size_t cap = ctl_->capacity[j].load();
    if (m.bytes < cap) {
      if (m.ptr) ::munmap(m.ptr, m.bytes);
      m.ptr = static_cast<char*>(map_fd(fds_[j], cap));
      m.bytes = cap;
    }
    return m.ptr;
  }

  // Sense-reversing barrier over the group's ranks; fails (instead of
  // waiting forever) when a member has stopped before arriving.
  void barrier() {
    Control::Barrier& b = ctl_->barriers[barrier_];
    const uint32_t phase = b.phase.load();
    if (b.arrived.fetch_add(1) + 1 == uint32_t(size())) {
      b.arrived.store(0);
      b.phase.fetch_add(1);
      return;
    }
    for (uint64_t spin = 0; b.phase.load() == phase; ++spin) {
      if (spin < 4096) {
        std::this_thread::yield();
        continue;
      }
      if (spin % 1024 == 0) check_peers(b, phase);
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  }

  // A member that stopped after the barrier completed (the phase is read
  // after its flag) was not waited for: only one that stopped before fails it.
  void check_peers(const Control::Barrier& b, uint32_t phase) {
    if (world_rank_ == 0) reap_children(ctl_, children_, nullptr);
    for (int m : members_)
      if (m != world_rank_ && ctl_->stopped[m].load() && b.phase.load() == phase)
        fail(peer_stopped(m));
  }

  std::vector<int> members_;
  int world_rank_, barrier_;
  Control* ctl_;
  std::vector<int> fds_;  // by world rank
  std::vector<Map> maps_;
  Children* children_;
};

class World {
 public:
  explicit World(const WorldOptions& o) : size_(o.ranks), device_(o.device), cfg_parallel_(o.cfg_parallel) {}

  // Rank 0: creates the shared state and starts ranks 1..N-1.
  void start(const WorldOptions& o) {
    const std::string comm = resolve_comm(o);
    if (program_args().empty()) fail("sequence parallel: the program's arguments were not recorded");
    int ctl_fd = checked_memfd("pab-control");
    if (::ftruncate(ctl_fd, sizeof(Control)) != 0) fail("sequence parallel: ftruncate: ", std::strerror(errno));
    std::vector<int> fds;
    for (int r = 0; r < size_; ++r) fds.push_back(checked_memfd("pab-exchange"));
    std::string id;
    if (comm == "nccl") id = nccl_hooks().make_id();

    std::ostringstream world;
    world << size_ << ',' << comm << ',' << ctl_fd;
    for (int fd : fds) world << ',' << fd;
    if (!id.empty()) world << ',' << id;

    // The variable choosing a process's devices (CUDA_VISIBLE_DEVICES), if the device has one.
    const char* devices_var = backend(device_).visible_devices_variable();
    std::vector<std::string> gpus = visible_gpus(devices_var);
    int threads = device_ == Device::cpu ? std::max(1, int(std::thread::hardware_concurrency()) / size_) : 0;
    if (threads > 0 && !std::getenv("OMP_NUM_THREADS")) omp_set_num_threads(threads);
    for (int r = 1; r < size_; ++r) {
      std::vector<std::string> env;
      for (char** e = environ; *e; ++e) {
        std::string kv = *e;
        bool ours = kv.rfind(std::string(kRankVar) + "=", 0) == 0 || kv.rfind(std::string(kWorldVar) + "=", 0) == 0;
        bool gpu_choice = !gpus.empty() && kv.rfind(cat(devices_var, "="), 0) == 0;
        bool omp = threads > 0 && kv.rfind("OMP_NUM_THREADS=", 0) == 0;
        if (!ours && !gpu_choice && !omp) env.push_back(kv);
      }
      env.push_back(cat(kRankVar, "=", r));
      env.push_back(cat(kWorldVar, "=", world.str()));
      if (!gpus.empty()) env.push_back(cat(devices_var, "=", gpus[size_t(r) % gpus.size()]));
      if (threads > 0) {
        const char* set = std::getenv("OMP_NUM_THREADS");
        env.push_back(cat("OMP_NUM_THREADS=", set ? std::string(set) : std::to_string(threads)));
      }
      children_.logs.push_back(cat("/tmp/pab-rank", r, "-", ::getpid(), ".log"));
      children_.pids.push_back(spawn(env, children_.logs.back()));
    }
    connect(0, comm, ctl_fd, fds, id);
  }

  // Ranks 1..N-1: joins the world described by the environment.
  void join(int rank) {
    std::vector<std::string> parts;
    std::stringstream ss(std::getenv(kWorldVar));
    for (std::string s; std::getline(ss, s, ',');) parts.push_back(s);
    if (parts.size() < 3 || std::stoi(parts[0]) != size_)
      fail("sequence parallel: rank ", rank, " was started for another world (", kWorldVar, "=", std::getenv(kWorldVar), ")");
    std::vector<int> fds;
    for (int r = 0; r < size_; ++r) fds.push_back(std::stoi(parts.at(size_t(3 + r))));
    std::string id = parts.size() > size_t(3 + size_) ? parts[size_t(3 + size_)] : "";
    connect(rank, parts[1], std::stoi(parts[2]), fds, id);
  }

  ~World() {
    // NCCL communicators are left to the process exit: tearing one down
    // after the CUDA runtime's own teardown has begun can crash.
    if (uses_nccl_) {
      (void)comm_.release();
      (void)sequence_.release();
      (void)cfg_.release();
    }
    if (!ctl_) return;
    ctl_->stopped[rank_].store(1);  // ranks still waiting on this one stop
    if (rank_ != 0) return;
    // Ranks that exit here are marked stopped too, so that a rank waiting on
    // one that died by a signal stops as well. When rank 0 stops on an error,
    // ranks that have not noticed within the grace period (one inside an NCCL
    // collective never does) are killed: the run has failed either way.
    const auto grace = std::chrono::steady_clock::now() + std::chrono::seconds(3);
    while (std::any_of(children_.pids.begin(), children_.pids.end(), [](pid_t p) { return p >= 0; })) {
      reap_children(ctl_, &children_, &own_error_);
      if (!own_error_.empty() && !children_.killed && std::chrono::steady_clock::now() > grace) {
        for (pid_t p : children_.pids)
          if (p >= 0) ::kill(p, SIGKILL);
        children_.killed = true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

  void note_error(const std::string& message) { own_error_ = message; }

  bool same(const WorldOptions& o) const {
    return size_ == o.ranks && device_ == o.device && cfg_parallel_ == o.cfg_parallel;
  }
  ParallelGroups groups() const {
    return {sequence_ ? sequence_.get() : comm_.get(), cfg_.get()};
  }

 private:
  std::string resolve_comm(const WorldOptions& o) const {
    const NcclHooks& nccl = nccl_hooks();
    const bool nccl_built = nccl.connect != nullptr;
    std::string comm = o.comm;
    if (comm == "auto") comm = nccl_built && device_ == nccl.device ? "nccl" : "host";
    if (comm != "nccl" && comm != "host") fail("unknown --comm '", o.comm, "' (expected auto, nccl or host)");
    if (comm == "nccl") {
      if (!nccl_built) fail("--comm nccl: this build of pab has no NCCL (install libnccl-dev and rebuild)");
      if (device_ != nccl.device) fail("--comm nccl needs --device ", device_name(nccl.device));
      int n = backend(device_).device_count();
      if (n < size_)
        fail("--gpus ", size_, " needs ", size_, " CUDA devices and ", n,
             " are visible (--comm host runs the ranks on fewer devices through host memory, for testing)");
    }
    return comm;
  }

  // The device each rank sees as its own (rank r: entry r mod count), as
  // `var` lists them; none where the device has no such variable.
  std::vector<std::string> visible_gpus(const char* var) const {
    if (!var) return {};
    std::vector<std::string> gpus;
    if (const char* v = std::getenv(var)) {
      std::stringstream ss(v);
      for (std::string s; std::getline(ss, s, ',');) gpus.push_back(s);
    } else {
      for (int i = 0; i < backend(device_).device_count(); ++i) gpus.push_back(std::to_string(i));
    }
    return gpus;
  }

  static pid_t spawn(const std::vector<std::string>& env, const std::string& log) {
    std::vector<char*> argv, envp;
    for (const std::string& a : program_args()) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    for (const std::string& e : env) envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);
    const pid_t parent = ::getpid();
    int out = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
    int err = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out < 0 || err < 0) fail("sequence parallel: cannot open ", log, ": ", std::strerror(errno));
    pid_t pid = ::fork();
    if (pid < 0) fail("sequence parallel: fork failed: ", std::strerror(errno));
    if (pid == 0) {  // only async-signal-safe calls until exec
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);
      sigset_t none;  // the interrupt cleanup's blocked signals would survive exec
      sigemptyset(&none);
      ::sigprocmask(SIG_SETMASK, &none, nullptr);
      ::dup2(out, 1);
      ::dup2(err, 2);
      ::execve("/proc/self/exe", argv.data(), envp.data());
      ::_exit(127);
    }
    ::close(out);
    ::close(err);
    return pid;
  }

  void connect(int rank, const std::string& comm, int ctl_fd, const std::vector<int>& fds, const std::string& id) {
    rank_ = rank;
    ctl_ = static_cast<Control*>(map_fd(ctl_fd, sizeof(Control)));
    if (comm == "nccl") {
      uses_nccl_ = true;
      if (!nccl_hooks().connect) fail("sequence parallel: rank ", rank, " has no NCCL");
      comm_ = nccl_hooks().connect(rank, size_, id);
    } else {
      std::vector<int> all(static_cast<size_t>(size_));
      std::iota(all.begin(), all.end(), 0);
      comm_ = std::make_unique<HostCommunicator>(all, rank, 0, ctl_, fds, &children_);
    }
    if (cfg_parallel_) {  // ranks [0, N/2) take the first CFG branch, [N/2, N) the second
      const int half = size_ / 2;
      sequence_ = comm_->split(rank / half, rank);
      cfg_ = comm_->split(rank % half, rank);
    }
  }

  int size_, rank_ = 0;
  Device device_;
  Control* ctl_ = nullptr;
  Children children_;
  bool cfg_parallel_;
  std::unique_ptr<Communicator> comm_, sequence_, cfg_;
  bool uses_nccl_ = false;
  std::string own_error_;  // rank 0's, if it stops on one
};

std::unique_ptr<World>& the_world() {
  static std::unique_ptr<World> world;
  return world;
}

}  // namespace

void set_program_arguments(int argc, char** argv) { program_args().assign(argv, argv + argc); }

void register_nccl(NcclHooks hooks) { nccl_hooks() = hooks; }

std::unique_ptr<Communicator> nccl_communicator(int rank, int size, const std::string& id) {
  if (!nccl_hooks().connect) fail("this build of pab has no NCCL");
  return nccl_hooks().connect(rank, size, id);
}

std::string new_nccl_id() {
  if (!nccl_hooks().make_id) fail("this build of pab has no NCCL");
  return nccl_hooks().make_id();
}

void note_world_error(const std::string& message) {
  if (the_world()) the_world()->note_error(message);
}

bool is_secondary_rank() {
  const char* r = std::getenv(kRankVar);
  return r && std::strcmp(r, "0") != 0;
}

ParallelGroups join_world(const WorldOptions& opts) {
  std::unique_ptr<World>& world = the_world();
  if (opts.ranks < 1 || opts.ranks > kMaxRanks) fail("--gpus must be between 1 and ", kMaxRanks, ", got ", opts.ranks);
  if (opts.cfg_parallel && opts.ranks % 2 != 0)
    fail("--cfg-parallel needs an even --gpus (the two CFG branches split the ranks), got ", opts.ranks);
  if (world) {
    if (!world->same(opts)) fail("sequence parallel: this process already runs another set of ranks");
    return world->groups();
  }
  if (opts.ranks == 1) return {};
  const char* rank_var = std::getenv(kRankVar);
  const int rank = rank_var ? std::atoi(rank_var) : 0;
  world = std::make_unique<World>(opts);
  if (rank == 0)
    world->start(opts);
  else
    world->join(rank);
  return world->groups();
}

}  // namespace pab
