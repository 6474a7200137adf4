// The public API's inspect_model (pab inspect).
#include "api_internal.h"
#include "io/inspect.h"

namespace pab {

Status inspect_model(const std::string& dir, std::string* report) {
  return guarded([&] {
    std::string r = inspect_report(dir);
    if (report) *report = std::move(r);
  });
}

}  // namespace pab
