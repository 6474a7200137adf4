// Running one op test on every backend (ggml's test-backend-ops idea): the
// (device, compute dtype) cases of this build, moving inputs there and outputs
// back, the tolerance of each compute dtype, and comparison with a naive
// reference that also proves the comparison can fail.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "support/naive_ops.h"
#include "support/testing.h"

namespace pab::testing {

struct BackendCase {
  Device device;
  DType dtype;  // the compute dtype float inputs are cast to on the device
};
std::string case_name(const BackendCase& c);           // "cpu_F32"
void PrintTo(const BackendCase& c, std::ostream* os);  // gtest's name for a parameter

// Every case this program can run: each registered backend that starts, in
// each of its compute dtypes (the CPU in f32; CUDA in f32, bf16 and f16).
std::vector<BackendCase> backend_cases();
// The device registered as `name` where its backend is built and starts
// here; the tests that need it skip otherwise.
std::optional<Device> started_device(const std::string& name);

// Bound on max|out - ref| / max|ref| for ops that compute (GEMM, reductions,
// transcendental functions), given inputs already rounded to the dtype:
//   f32  1e-5: a few ulps of f32 accumulated over the reductions of the tests
//        (sums of up to ~1e3 terms), well below any modelling error;
//   f16  2e-3: the output's own rounding is up to 2^-11 (4.9e-4) of the
//        largest value, plus intermediates a backend may keep in f16;
//   bf16 1e-2: the same with bf16's 2^-8 (3.9e-3) step.
// Layout ops (permute, concat, slice, pad, upsample, embedding, casts) move
// values unchanged and are compared exactly (tolerance 0) in every dtype.
double math_tolerance(DType dtype);

// What a float input holds once cast to `dtype`: rounded to it, returned as
// CPU f32 (the input the reference must use).
Tensor quantize(const Tensor& x, DType dtype);
// A CPU tensor moved to the case's device; float tensors cast to its compute dtype.
Tensor to_case(const Tensor& x, const BackendCase& c);
// Moves to the CPU only (the dtype kept), for inputs that stay f32 (attention bias, key mask).
Tensor to_device(const Tensor& x, const BackendCase& c);

// The case that expect_close records its errors under (set by each test's SetUp).
void set_current_case(const BackendCase& c);

// Checks that `out` (any device and dtype) has the reference's shape and that
// max|out - ref| <= tol * max|ref|; records the error for the summary printed
// at the end. Then checks that the same comparison rejects the reference with
// one element moved by 4 * tol * max|ref| (by max(1, 1e-3 of it) where tol
// is 0), so that a
// passing test cannot be a comparison that accepts anything.
void expect_close(const Tensor& out, const naive::Array& ref, double tol, const std::string& op);

// max|out - ref| / max|ref| (max|out - ref| when the reference is all zeros).
double rel_error(const Tensor& out, const naive::Array& ref);

// A gtest environment printing the largest relative error measured per op and case.
::testing::Environment* error_summary_environment();

}  // namespace pab::testing
