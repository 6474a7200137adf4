// Pictures of PAB for a person: the broadcast map (what was computed and what
// was broadcast, blocks by steps, one panel per site kind, with the totals)
// and the calibration curves (each kind's relative change per step over the
// timesteps, with broadcast windows shaded). PNG, via io/plot.h.
#pragma once

#include <string>

#include "cache/calibration.h"
#include "cache/pab.h"

namespace pab {

// From the decisions `stats` holds (CacheStats::decisions), a panel per
// attention kind (and per MLP kind that broadcast anything); `caption` goes
// under the title (e.g. the configuration). Fails when no site ran. Returns
// the height.
int write_broadcast_map(const std::string& path, const CacheStats& stats, const std::string& caption);

// The mean over blocks per kind (the band: the blocks' spread) against the
// timestep, high timesteps first; `windows` (may be null) shades each
// enabled kind's broadcast window.
void write_change_plot(const std::string& path, const ChangeTable& table, const PabConfig* windows,
                       const std::string& caption);

}  // namespace pab
