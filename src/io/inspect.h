// `pab inspect`: a plain-text report on a diffusers model folder (a pipeline
// or a single component).
#pragma once

#include <cstdint>
#include <string>

namespace pab {

// For each component: its class, the key config values present, and for model
// weights the number of files, tensors and parameters and the dtypes; file
// names for tokenizers. Reading fails (pab::Error) at the first malformed or
// missing file, naming it.
std::string inspect_report(const std::string& dir);

// A count in three significant digits: 950 -> "950", 53312 -> "53.3K", 1690000000 -> "1.69B".
std::string human_count(uint64_t n);

}  // namespace pab
