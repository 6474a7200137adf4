// Collective communication between the ranks of a sequence-parallel run (one
// process per rank; see parallel/world.h for how they are started).
//
// A Communicator moves raw bytes; the tensor collectives below arrange the
// tensors so that what each rank sends to each other rank is one contiguous
// block. Implementations: host shared memory (any device, staged through the
// host; CPU runs and tests) and NCCL (CUDA, one GPU per rank).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/tensor.h"

namespace pab {

struct CommStats {
  int64_t all_to_all = 0;  // calls
  int64_t all_gather = 0;
  int64_t bytes_sent = 0;  // this rank's payload, its own share included
};

class Communicator {
 public:
  Communicator(int rank, int size) : rank_(rank), size_(size) {}
  virtual ~Communicator() = default;
  int rank() const { return rank_; }
  int size() const { return size_; }
  virtual std::string description() const = 0;

  // `send` holds size() blocks of `block` bytes; block i goes to rank i, and
  // block j of `recv` comes from rank j. Both live on `device`.
  virtual void all_to_all(const void* send, void* recv, size_t block, Device device) = 0;
  // Every rank's `bytes` of `send`, in rank order, into `recv` (size() x bytes).
  virtual void all_gather(const void* send, void* recv, size_t bytes, Device device) = 0;

  // A communicator over the ranks that pass the same `color`, ordered by
  // `key`. Collective: every rank calls it, in the same order.
  virtual std::unique_ptr<Communicator> split(int color, int key) = 0;

  const CommStats& stats() const { return stats_; }

 protected:
  CommStats stats_;

 private:
  int rank_, size_;
};

// x's dimension `scatter` (a multiple of size()) is cut into size() equal
// parts; part i goes to rank i. The parts a rank receives are concatenated
// along `gather` in rank order. Ulysses attention uses it to trade a share of
// the tokens for a share of the heads, and back.
Tensor all_to_all(Communicator& comm, const Tensor& x, int scatter, int gather);
// Every rank's x concatenated along `dim` in rank order.
Tensor all_gather(Communicator& comm, const Tensor& x, int dim);

// Dynamic sequence parallelism (Latte, Open-Sora): x [B, F / ranks, S, D]
// holds this rank's share of the F frames (padded); returns all F frames of a
// share of the S positions, [B, F, S / ranks, D] (positions padded).
Tensor frames_to_positions(Communicator& comm, const Tensor& x, int64_t frames);
// The inverse: y [B, F, S / ranks, D] -> [B, F / ranks, S, D].
Tensor positions_to_frames(Communicator& comm, const Tensor& y, int64_t positions);

// A rank's contiguous share of n items: n is padded up to a multiple of the
// rank count, each rank holds `local` of them from `begin`, and the first
// `valid` of those are real (the rest is padding).
struct Shard {
  int64_t padded = 0, local = 0, begin = 0, valid = 0;
};
Shard shard_of(int64_t n, int size, int rank);

// Rows [begin, begin + local) of x along `dim`, zero-padded past its end.
Tensor take_shard(const Tensor& x, int dim, const Shard& s);
// x with `dim` padded with zeros (after its end) to `length`.
Tensor pad_to(const Tensor& x, int dim, int64_t length);

}  // namespace pab
