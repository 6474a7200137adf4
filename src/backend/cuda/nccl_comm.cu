// The NCCL communicator for sequence-parallel runs (one GPU per rank): the
// collectives run on the CUDA backend's stream, ordered with the kernels
// around them, so nothing waits on the host.
#include <nccl.h>

#include <cstdio>

#include "backend/cuda/cuda_backend.h"
#include "core/error.h"
#include "parallel/world.h"

namespace pab {

namespace {

#define PAB_NCCL_CHECK(expr)                                                                         \
  do {                                                                                               \
    ncclResult_t pab_r_ = (expr);                                                                    \
    if (pab_r_ != ncclSuccess) fail("NCCL error in ", #expr, ": ", ncclGetErrorString(pab_r_)); \
  } while (0)

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(int rank, int size, const ncclUniqueId& id) : Communicator(rank, size) {
    cuda_backend();  // selects the device
    PAB_NCCL_CHECK(ncclCommInitRank(&comm_, size, id, rank));
  }
  NcclCommunicator(ncclComm_t comm, int rank, int size) : Communicator(rank, size), comm_(comm) {}
  ~NcclCommunicator() override {
    if (comm_) ncclCommDestroy(comm_);
  }

  std::string description() const override { return "NCCL"; }

  std::unique_ptr<Communicator> split(int color, int key) override {
    ncclComm_t sub = nullptr;
    PAB_NCCL_CHECK(ncclCommSplit(comm_, color, key, &sub, nullptr));
    int rank = 0, size = 0;
    PAB_NCCL_CHECK(ncclCommUserRank(sub, &rank));
    PAB_NCCL_CHECK(ncclCommCount(sub, &size));
    return std::make_unique<NcclCommunicator>(sub, rank, size);
  }

  void all_to_all(const void* send, void* recv, size_t block, Device device) override {
    check(device);
    cudaStream_t s = cuda_backend().stream();
    PAB_NCCL_CHECK(ncclGroupStart());
    for (int peer = 0; peer < size(); ++peer) {
      PAB_NCCL_CHECK(ncclSend(static_cast<const char*>(send) + size_t(peer) * block, block, ncclUint8, peer, comm_, s));
      PAB_NCCL_CHECK(ncclRecv(static_cast<char*>(recv) + size_t(peer) * block, block, ncclUint8, peer, comm_, s));
    }
    PAB_NCCL_CHECK(ncclGroupEnd());
    ++stats_.all_to_all;
    stats_.bytes_sent += int64_t(block) * size();
  }

  void all_gather(const void* send, void* recv, size_t bytes, Device device) override {
    check(device);
    PAB_NCCL_CHECK(ncclAllGather(send, recv, bytes, ncclUint8, comm_, cuda_backend().stream()));
    ++stats_.all_gather;
    stats_.bytes_sent += int64_t(bytes);
  }

 private:
  static void check(Device device) {
    if (device != cuda_device()) fail("NCCL exchanges CUDA tensors only");
  }
  ncclComm_t comm_ = nullptr;
};

std::string make_id() {
  ncclUniqueId id;
  PAB_NCCL_CHECK(ncclGetUniqueId(&id));
  std::string hex;
  for (unsigned char c : id.internal) {
    char b[3];
    std::snprintf(b, sizeof b, "%02x", c);
    hex += b;
  }
  return hex;
}

std::unique_ptr<Communicator> connect(int rank, int size, const std::string& hex) {
  ncclUniqueId id;
  if (hex.size() != 2 * sizeof id.internal) fail("sequence parallel: malformed NCCL id");
  for (size_t i = 0; i < sizeof id.internal; ++i) id.internal[i] = char(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
  return std::make_unique<NcclCommunicator>(rank, size, id);
}

struct Registrar {
  Registrar() { register_nccl({make_id, connect, cuda_device()}); }
} registrar;

}  // namespace

}  // namespace pab
