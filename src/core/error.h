// Errors: user-facing failures throw pab::Error with a one-line message naming
// what and where; invariants use PAB_ASSERT (always on, file and line).
// The public API catches Error and returns pab::Status, so no exception escapes.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace pab {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Concatenates its arguments with operator<< into one string.
template <class... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

template <class... Args>
[[noreturn]] void fail(const Args&... args) {
  throw Error(cat(args...));
}

namespace detail {
[[noreturn]] void assert_fail(const char* file, int line, const char* cond, const std::string& msg);
}

}  // namespace pab

#define PAB_ASSERT(cond, ...)                                                 \
  do {                                                                        \
    if (!(cond)) ::pab::detail::assert_fail(__FILE__, __LINE__, #cond, ::pab::cat("" __VA_OPT__(, ) __VA_ARGS__)); \
  } while (0)
