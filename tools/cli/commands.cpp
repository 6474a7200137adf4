#include "commands.h"

#include <iostream>

namespace pab::cli {

std::vector<Register>& registry() {
  static std::vector<Register> r;
  return r;
}

int& exit_code() {
  static int code = 0;
  return code;
}

void report(const Status& s) {
  if (s.ok) return;
  std::cerr << "pab: error: " << s.message << "\n";
  exit_code() = 1;
}

}  // namespace pab::cli
