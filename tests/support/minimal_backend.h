// A backend of the required ops alone, as a new backend starts: each op runs
// on the CPU reference (over views of the same bytes, no copies) and
// supports() is false for every fusion, so every fusion runs as its
// reference composite. Its memory is host memory under a device of its own,
// so tensors on it take the paths of any device's (Tensor::to, clone,
// copy_bytes, casts). While profiling, it counts the calls of each op.
//
// A test file registers it under a device name of its own:
//   const Device kMinimal = register_backend("minimal", testing::create_minimal_backend);
#pragma once

#include "backend/backend.h"

namespace pab::testing {

Backend* create_minimal_backend(Device device);

}  // namespace pab::testing
