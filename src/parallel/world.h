// The ranks of a sequence-parallel run: one process per rank, like torchrun.
// Rank 0 is the process the user started; it starts ranks 1..N-1 as copies of
// itself (same program, same arguments) that find their rank in the
// environment. The secondary ranks print nothing on stdout and write no files
// (their stderr goes to a log that rank 0 quotes if they fail); every rank
// computes its share and rank 0 writes the results.
//
// Communication: NCCL between N GPUs (rank r on the r-th visible GPU), or host
// shared memory, which works on any device and lets N ranks share fewer GPUs
// (for testing the partitioning; it is not fast).
#pragma once

#include <memory>
#include <string>

#include "parallel/comm.h"

namespace pab {

struct WorldOptions {
  int ranks = 1;
  Device device = Device::cpu;
  std::string comm = "auto";  // auto (NCCL on CUDA when built), nccl or host
  // The two CFG branches on separate halves of the ranks; each half splits
  // the tokens of its branch.
  bool cfg_parallel = false;
};

struct ParallelGroups {
  Communicator* sequence = nullptr;  // the ranks splitting this rank's tokens
  Communicator* cfg = nullptr;       // with --cfg-parallel: this rank and its peer in the other branch
};

// This process's groups in a run of `ranks` ranks, started on first use
// (later calls must ask for the same world). Empty for a single rank.
ParallelGroups join_world(const WorldOptions& opts);

// True in a rank started by join_world (not rank 0).
bool is_secondary_rank();

// Rank 0's own error. When rank 0 then exits, ranks that stopped with the same
// error or because rank 0 stopped are not reported again, and ranks still
// running a few seconds later are killed.
void note_world_error(const std::string& message);

// The program's arguments, for starting copies of it (main() records them).
void set_program_arguments(int argc, char** argv);

// Registered by the CUDA library when it is built with NCCL.
struct NcclHooks {
  std::string (*make_id)() = nullptr;  // a new communicator id, printable
  std::unique_ptr<Communicator> (*connect)(int rank, int size, const std::string& id) = nullptr;
  Device device;  // the device whose memory NCCL exchanges (CUDA's)
};
void register_nccl(NcclHooks hooks);
// A communicator over NCCL of `size` ranks (a world of one, for testing the
// collectives on one GPU); fails where pab was built without NCCL.
std::unique_ptr<Communicator> nccl_communicator(int rank, int size, const std::string& id);
std::string new_nccl_id();

}  // namespace pab
