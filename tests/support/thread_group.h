// Ranks as threads of one process: a Communicator over shared memory with a
// barrier, for testing sequence parallelism on the CPU backend (which keeps
// no state between calls) without starting processes.
#pragma once

#include <barrier>
#include <functional>
#include <memory>
#include <vector>

#include "parallel/comm.h"

namespace pab::testing {

class ThreadGroup {
 public:
  explicit ThreadGroup(int size);
  ~ThreadGroup();
  // Runs body(rank's communicator) on one thread per rank and waits for all;
  // an exception on any rank is rethrown here (the first by rank).
  void run(const std::function<void(Communicator&)>& body);
  Communicator& comm(int rank) { return *comms_.at(size_t(rank)); }

 private:
  class Member;
  int size_;
  std::barrier<> barrier_;
  std::vector<const void*> posted_;
  std::vector<std::unique_ptr<Communicator>> comms_;
};

}  // namespace pab::testing
