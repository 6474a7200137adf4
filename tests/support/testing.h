// Shared test helpers: fixture paths, random tensors, tensor comparison.
#pragma once

#include <functional>

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <string>

#include "core/tensor.h"

namespace pab::testing {

// tests/data/<rel>
std::string data_path(const std::string& rel);
// Path of the built `pab` command.
std::string pab_binary();

// Uniform values in [lo, hi) on the CPU (f32), from a fixed seed.
Tensor random_tensor(const Shape& shape, uint32_t seed, float lo = -1.0f, float hi = 1.0f);

struct Diff {
  double max_abs = 0;   // max |a - b|
  double max_ref = 0;   // max |b|
  double rel() const { return max_ref > 0 ? max_abs / max_ref : max_abs; }
};
// Compares a with reference b (same shape); both converted to f32 on the CPU.
Diff compare(const Tensor& a, const Tensor& b);

// ||a - b|| / ||b|| over all elements (the measure of the bf16 baselines).
double rel_l2(const Tensor& a, const Tensor& b);

// gtest assertion: a matches reference b with max|a-b| <= tol * max|b|.
::testing::AssertionResult close_rel(const Tensor& a, const Tensor& b, double tol);

// Expects every tensor of the safetensors file `reference` in `out`, each
// within close_rel(tol); returns how many were compared and the largest
// relative error.
struct ReferenceCheck {
  int compared = 0;
  double worst = 0;
};
ReferenceCheck expect_reference(const std::map<std::string, Tensor>& out, const std::string& reference, double tol);

// Runs a shell command, returning its exit status and combined output.
int run_command(const std::string& cmd, std::string* output);
// The message of the pab::Error `fn` throws; "" when it throws none.
std::string error_of(const std::function<void()>& fn);

}  // namespace pab::testing
