// The public API of `pab compare` (reads videos: needs the pab_media library).
#include "api_internal.h"
#include "io/video.h"
#include "io/video_metrics.h"

namespace pab {

Status compare_videos(const CompareOptions& opts, std::string* report) {
  return guarded([&] {
    Rgb8Video a = read_video(opts.a), b = read_video(opts.b);
    if (a.frames != b.frames || a.height != b.height || a.width != b.width)
      fail("compare: ", opts.a, " has ", a.frames, " frames of ", a.width, "x", a.height, " but ", opts.b, " has ",
           b.frames, " frames of ", b.width, "x", b.height);
    VideoComparison c = compare_frames(rgb8_levels(a), rgb8_levels(b), 255);
    *report = opts.json ? comparison_json(c, opts.a, opts.b).dump(1) + "\n" : comparison_text(c, opts.a, opts.b);
  });
}

}  // namespace pab
