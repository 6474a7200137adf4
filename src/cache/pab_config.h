// Reading PAB configurations: the diffusers dialect
// (PyramidAttentionBroadcastConfig field names).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "cache/pab.h"

namespace pab {

// Parses a JSON object of PAB settings; `where` names its origin in errors.
// Unknown keys are errors.
PabConfig parse_pab_config(const nlohmann::json& j, const std::string& where);

}  // namespace pab
