// What a run needs in memory, estimated from the configs, the checkpoints'
// headers and the request before any weight is loaded, and the check of that
// estimate against what the run may use: a run that cannot fit is refused
// before it starts, naming the figure and the limit.
//
// A generation holds one model at a time (the text encoder, then the
// transformer, then the VAE), so the estimate is made per phase and the
// largest phase is what must fit.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace pab {

struct MemoryEstimate {
  struct Part {
    std::string what;  // "weights", "activations", "PAB cache", ...
    uint64_t bytes = 0;
  };
  struct Phase {
    std::string name;  // "text encoder", "denoise", "decode"
    std::vector<Part> parts;
    uint64_t total() const;
  };
  std::vector<Phase> phases;

  // The bytes of part `what` of phase `phase` (0 where there is none).
  uint64_t part(const std::string& phase, const std::string& what) const;
  // The largest phase (the first of equals); asserts there is one.
  const Phase& peak_phase() const;
  uint64_t peak() const { return phases.empty() ? 0 : peak_phase().total(); }
  // "denoise: 8.23 GiB (weights 3.14 GiB, activations 1.32 GiB, PAB cache 3.77 GiB)"
  static std::string describe(const Phase& p);
};

// The memory a run may use on `device`: what the GPU has free, or for the CPU
// what the host has available (MemAvailable, within the cgroup's limit),
// lowered to `max_memory` when that is given and smaller.
struct MemoryLimit {
  uint64_t bytes = 0;
  std::string what;  // "the GPU's free memory", "--max-memory", ...
};
MemoryLimit memory_limit(Device device, std::optional<uint64_t> max_memory);

// Fails when the estimate's largest phase exceeds the limit:
// "needs about 41.2 GiB (denoise: ...), more than the 24 GiB of --max-memory".
void check_memory(const MemoryEstimate& estimate, const MemoryLimit& limit);

// Sums with a check: a size that overflows 64 bits fails naming `what`.
uint64_t add_bytes(uint64_t a, uint64_t b, const char* what);
// n elements of `dtype`, checked: a negative count or overflow fails naming `what`.
uint64_t element_bytes(int64_t n, DType dtype, const char* what);

// "512 B", "3.5 MiB", "8.23 GiB"
std::string format_bytes(uint64_t bytes);
// "24G", "24GiB", "24 GB", "512M", "1.5T", "1048576" (bytes): K, M, G and T
// are powers of 1024. Fails naming `what` (may be empty) for anything else,
// zero included.
uint64_t parse_memory_size(const std::string& text, const std::string& what);

}  // namespace pab
