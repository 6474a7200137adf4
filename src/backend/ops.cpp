#include "backend/ops.h"

namespace pab::ops {

std::vector<Tensor> chunk(const Tensor& x, int n, int dim) {
  int64_t size = x.dim(dim);
  PAB_ASSERT(n > 0 && size % n == 0, "chunk ", x.desc(), " into ", n, " along ", dim);
  std::vector<Tensor> out;
  int64_t step = size / n;
  // Along the first dimension a chunk is a contiguous block: a view, no copy
  // (the adaptive-norm tables are cut into 6 chunks in every block).
  for (int i = 0; i < n; ++i)
    out.push_back(dim == 0 ? x.narrow0(i * step, step) : slice(x, dim, i * step, (i + 1) * step));
  return out;
}

}  // namespace pab::ops
