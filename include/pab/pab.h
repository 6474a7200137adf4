// The pab C++ API: everything the `pab` command does, as functions that
// report failure through Status (no exception escapes).
#pragma once

#include <string>

namespace pab {

struct Status {
  bool ok = true;
  std::string message;  // one line naming what failed and where
  static Status success() { return {}; }
  static Status error(std::string m) { return {false, std::move(m)}; }
};

// Describes each component of a diffusers model folder (or a single component
// folder): class, key config values, tensor and parameter counts, dtypes.
Status inspect_model(const std::string& dir, std::string* report);

}  // namespace pab
