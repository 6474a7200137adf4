#include "support/thread_group.h"

#include <cstring>
#include <exception>
#include <thread>

#include "backend/backend.h"
#include "core/error.h"

namespace pab::testing {

class ThreadGroup::Member final : public Communicator {
 public:
  Member(ThreadGroup& g, int rank) : Communicator(rank, g.size_), g_(g) {}
  std::string description() const override { return "threads"; }
  std::unique_ptr<Communicator> split(int, int) override { fail("ThreadGroup: split is not supported"); }

  void all_to_all(const void* send, void* recv, size_t block, Device device) override {
    exchange(send, [&](size_t j, const char* peer) {
      copy_bytes(static_cast<char*>(recv) + j * block, device, peer + size_t(rank()) * block, device, block);
    });
    ++stats_.all_to_all;
    stats_.bytes_sent += int64_t(block) * size();
  }

  void all_gather(const void* send, void* recv, size_t bytes, Device device) override {
    exchange(send, [&](size_t j, const char* peer) {
      copy_bytes(static_cast<char*>(recv) + j * bytes, device, peer, device, bytes);
    });
    ++stats_.all_gather;
    stats_.bytes_sent += int64_t(bytes);
  }

 private:
  template <class Read>
  void exchange(const void* send, Read read) {
    g_.posted_[size_t(rank())] = send;
    g_.barrier_.arrive_and_wait();
    for (size_t j = 0; j < size_t(size()); ++j) read(j, static_cast<const char*>(g_.posted_[j]));
    g_.barrier_.arrive_and_wait();
  }
  ThreadGroup& g_;
};

ThreadGroup::ThreadGroup(int size) : size_(size), barrier_(size), posted_(size_t(size)) {
  for (int r = 0; r < size; ++r) comms_.push_back(std::make_unique<Member>(*this, r));
}

ThreadGroup::~ThreadGroup() = default;

void ThreadGroup::run(const std::function<void(Communicator&)>& body) {
  std::vector<std::exception_ptr> errors(static_cast<size_t>(size_));
  std::vector<std::thread> threads;
  for (int r = 0; r < size_; ++r)
    threads.emplace_back([&, r] {
      try {
        body(*comms_[size_t(r)]);
      } catch (...) {
        errors[size_t(r)] = std::current_exception();
        barrier_.arrive_and_drop();  // the others must not wait for this rank
      }
    });
  for (std::thread& t : threads) t.join();
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace pab::testing
