#include "core/error.h"

namespace pab::detail {

void assert_fail(const char* file, int line, const char* cond, const std::string& msg) {
  throw Error(cat("internal error at ", file, ":", line, ": ", cond, msg.empty() ? "" : ": ", msg));
}

}  // namespace pab::detail
