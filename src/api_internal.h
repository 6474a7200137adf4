// Shared by the files implementing the public API (api*.cpp): the boundary
// where internal exceptions become pab::Status.
#pragma once

#include <exception>
#include <new>

#include "core/error.h"
#include "models/transformer.h"
#include "pab/pab.h"
#include "parallel/world.h"
#include "pipeline/video_pipeline.h"

namespace pab {

// The device and compute dtype the options name; fails for unknown names, a
// backend not built, or a dtype the device does not compute in. Starts no
// process: see join_ranks.
LoadOptions load_options(const ComputeOptions& c);
// Starts (or, in a started rank, joins) the sequence-parallel ranks `c` asks
// for and sets `load`'s communicators; nothing for one rank.
void join_ranks(const ComputeOptions& c, LoadOptions* load);
// load_options, then join_ranks: for the commands that run on all ranks.
LoadOptions load_options_with_ranks(const ComputeOptions& c);
// "auto" (or empty), "on", "off"; fails naming the value otherwise.
TilingChoice parse_tiling(const std::string& s);

// Runs f, turning any exception into an error Status with a one-line message.
template <class F>
Status guarded(F&& f) {
  auto one_line = [](std::string m) {
    for (char& c : m)
      if (c == '\n' || c == '\r') c = ' ';
    return m;
  };
  std::string message;
  try {
    f();
    return Status::success();
  } catch (const Error& e) {
    message = one_line(e.what());
  } catch (const std::bad_alloc&) {
    message = "out of memory";
  } catch (const std::exception& e) {
    message = one_line(cat("unexpected error: ", e.what()));
  }
  note_world_error(message);  // the other ranks that stop with it are not reported again
  return Status::error(message);
}

}  // namespace pab
