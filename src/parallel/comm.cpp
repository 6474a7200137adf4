#include "parallel/comm.h"

#include <algorithm>
#include <numeric>

#include "backend/ops.h"
#include "core/error.h"

namespace pab {

namespace {

int checked_dim(const Tensor& x, int dim, const char* what) {
  if (dim < 0 || dim >= x.rank()) fail(what, ": dimension ", dim, " out of range for ", x.desc());
  return dim;
}

// Moves axis 0 of y [P, ...] to sit just before dimension `dim` of the rest
// and merges the two: [P, d0, .., dk, ..] -> [d0, .., P * dk, ..].
Tensor merge_leading(const Tensor& y, int dim) {
  const int r = y.rank();
  std::vector<int> perm;
  for (int i = 1; i <= dim; ++i) perm.push_back(i);
  perm.push_back(0);
  for (int i = dim + 1; i < r; ++i) perm.push_back(i);
  Tensor moved = dim == 0 ? y : ops::permute(y, perm);
  Shape s;
  for (int i = 1; i < r; ++i) s.push_back(y.dim(i));
  s[size_t(dim)] *= y.dim(0);
  return moved.reshape(s);
}

}  // namespace

Tensor all_to_all(Communicator& comm, const Tensor& x, int scatter, int gather) {
  checked_dim(x, scatter, "all_to_all");
  checked_dim(x, gather, "all_to_all");
  const int p = comm.size();
  if (x.dim(scatter) % p != 0)
    fail("all_to_all: dimension ", scatter, " of ", x.desc(), " is not a multiple of the ", p, " ranks");
  if (p == 1) return x;
  // [.., P * m, ..] -> [.., P, m, ..] -> [P, .., m, ..]: block i is rank i's part
  Shape split = x.shape();
  split[size_t(scatter)] /= p;
  split.insert(split.begin() + scatter, p);
  Tensor send = x.reshape(split);
  if (scatter > 0) {
    std::vector<int> perm(size_t(x.rank() + 1));
    std::iota(perm.begin(), perm.end(), 0);
    perm.erase(perm.begin() + scatter);
    perm.insert(perm.begin(), scatter);
    send = ops::permute(send, perm);
  }
  Tensor recv = Tensor::empty(send.shape(), send.dtype(), send.device());
  comm.all_to_all(send.raw(), recv.raw(), send.nbytes() / size_t(p), send.device());
  // recv [P (source rank), .., m, ..]: the sources concatenate along `gather`
  return merge_leading(recv, gather);
}

Tensor all_gather(Communicator& comm, const Tensor& x, int dim) {
  checked_dim(x, dim, "all_gather");
  const int p = comm.size();
  if (p == 1) return x;
  Shape s = x.shape();
  s.insert(s.begin(), p);
  Tensor recv = Tensor::empty(s, x.dtype(), x.device());
  comm.all_gather(x.raw(), recv.raw(), x.nbytes(), x.device());
  return merge_leading(recv, dim);
}

Tensor frames_to_positions(Communicator& comm, const Tensor& x, int64_t frames) {
  Tensor all = all_to_all(comm, pad_to(x, 2, shard_of(x.dim(2), comm.size(), 0).padded), 2, 1);
  return ops::slice(all, 1, 0, frames);
}

Tensor positions_to_frames(Communicator& comm, const Tensor& y, int64_t positions) {
  Tensor all = all_to_all(comm, pad_to(y, 1, shard_of(y.dim(1), comm.size(), 0).padded), 1, 2);
  return ops::slice(all, 2, 0, positions);
}

Shard shard_of(int64_t n, int size, int rank) {
  if (size < 1 || rank < 0 || rank >= size) fail("shard_of: rank ", rank, " of ", size);
  Shard s;
  s.local = (n + size - 1) / size;
  s.padded = s.local * size;
  s.begin = s.local * rank;
  s.valid = std::clamp<int64_t>(n - s.begin, 0, s.local);
  return s;
}

Tensor pad_to(const Tensor& x, int dim, int64_t length) {
  checked_dim(x, dim, "pad_to");
  if (length == x.dim(dim)) return x;
  if (length < x.dim(dim)) fail("pad_to: ", x.desc(), " is longer than ", length, " along dimension ", dim);
  std::vector<std::array<int64_t, 2>> pads(size_t(x.rank()), {0, 0});
  pads[size_t(dim)][1] = length - x.dim(dim);
  return ops::pad(x, pads);
}

Tensor take_shard(const Tensor& x, int dim, const Shard& s) {
  checked_dim(x, dim, "take_shard");
  const int64_t end = std::min(x.dim(dim), s.begin + s.local);
  if (s.begin >= end) {  // all padding
    Shape shape = x.shape();
    shape[size_t(dim)] = s.local;
    return Tensor::zeros(shape, x.dtype(), x.device());
  }
  return pad_to(ops::slice(x, dim, s.begin, end), dim, s.local);
}

}  // namespace pab
