// Replay of recorded noise draws; seeded torch-compatible draws.
#include "pipeline/noise.h"

namespace pab {

Tensor ReplayNoise::next(const Shape& shape) {
  if (next_ >= draws_.size()) fail(where_, ": asked for draw ", next_, " but only ", draws_.size(), " were recorded");
  const Tensor& t = draws_[next_];
  if (t.shape() != shape)
    fail(where_, ": draw ", next_, " has shape ", shape_str(t.shape()), ", the step needs ", shape_str(shape));
  ++next_;
  return t;
}

Tensor TorchNoise::next(const Shape& shape) {
  return Tensor::from_vector(generator_.randn(shape), shape);
}

}  // namespace pab
