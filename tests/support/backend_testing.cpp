#include "support/backend_testing.h"

#include <cmath>
#include <cstdio>
#include <map>

#include "backend/backend.h"

namespace pab::testing {

namespace {
BackendCase g_current{Device::cpu, DType::f32};

// op -> case -> largest relative error seen
std::map<std::string, std::map<std::string, double>>& error_table() {
  static std::map<std::string, std::map<std::string, double>> table;
  return table;
}

// max|out - ref| and max|ref|; a NaN difference, or a NaN/inf where the reference is finite, counts as infinite.
std::pair<double, double> max_diff(const std::vector<double>& out, const std::vector<double>& ref) {
  double diff = 0, mag = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    double d = out[i] == ref[i] ? 0.0 : std::fabs(out[i] - ref[i]);  // equal infinities match
    if (std::isnan(d)) d = INFINITY;
    diff = std::max(diff, d);
    if (std::isfinite(ref[i])) mag = std::max(mag, std::fabs(ref[i]));
  }
  return {diff, mag};
}

bool within(const std::vector<double>& out, const std::vector<double>& ref, double tol) {
  auto [diff, mag] = max_diff(out, ref);
  return diff <= tol * mag;
}

class ErrorSummary : public ::testing::Environment {
 public:
  void TearDown() override {
    if (error_table().empty()) return;
    std::printf("\nLargest max|out - ref| / max|ref| per op:\n");
    for (const auto& [op, cases] : error_table()) {
      std::printf("  %-24s", op.c_str());
      for (const auto& [name, err] : cases) std::printf("  %s %.2e", name.c_str(), err);
      std::printf("\n");
    }
  }
};
}  // namespace

std::string case_name(const BackendCase& c) {
  return cat(device_name(c.device), "_", dtype_name(c.dtype));
}

void PrintTo(const BackendCase& c, std::ostream* os) {
  *os << case_name(c);
}

std::vector<BackendCase> backend_cases() {
  std::vector<BackendCase> cases;
  for (Device d : devices())
    if (backend_available(d))
      for (DType t : backend(d).compute_dtypes()) cases.push_back({d, t});
  return cases;
}

std::optional<Device> started_device(const std::string& name) {
  const std::optional<Device> d = find_device(name);
  return d && backend_available(*d) ? d : std::nullopt;
}

double math_tolerance(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return 1e-5;
    case DType::f16:
      return 2e-3;
    case DType::bf16:
      return 1e-2;
    default:
      break;
  }
  fail("no tolerance for compute dtype ", dtype_name(dtype));
}

Tensor quantize(const Tensor& x, DType dtype) {
  if (!is_float(x.dtype()) || dtype == DType::f32) return x;
  return x.to(dtype).to(DType::f32);
}

Tensor to_case(const Tensor& x, const BackendCase& c) {
  Tensor t = to_device(x, c);
  return is_float(t.dtype()) && t.dtype() != c.dtype ? t.to(c.dtype) : t;
}

Tensor to_device(const Tensor& x, const BackendCase& c) {
  return c.device == x.device() ? x : x.to(c.device);
}

void set_current_case(const BackendCase& c) {
  g_current = c;
}

double rel_error(const Tensor& out, const naive::Array& ref) {
  auto [diff, mag] = max_diff(naive::Array::from(out).v, ref.v);
  return mag > 0 ? diff / mag : diff;
}

void expect_close(const Tensor& out, const naive::Array& ref, double tol, const std::string& op) {
  ASSERT_TRUE(out.defined()) << op << ": no output";
  ASSERT_EQ(shape_str(out.shape()), shape_str(ref.shape)) << op << ": output shape";
  const std::vector<double> got = naive::Array::from(out).v;
  auto [diff, mag] = max_diff(got, ref.v);
  // f16 cannot hold magnitudes below its smallest normal: results that small count as zero
  if (g_current.dtype == DType::f16) mag = std::max(mag, 6.1e-5);
  const double rel = mag > 0 ? diff / mag : diff;
  double& worst = error_table()[op][case_name(g_current)];
  worst = std::max(worst, rel);
  EXPECT_LE(diff, tol * mag) << op << ": max abs diff " << diff << " = " << rel << " of max |ref| " << mag
                             << ", tolerance " << tol;
  if (ref.v.empty()) return;
  // The comparison must reject a reference that differs in one (finite) element by a few tolerances
  // (or, for exact comparisons, by a visible amount).
  std::vector<double> moved = ref.v;
  size_t at = 0;
  for (size_t i = 0; i < moved.size(); ++i)
    if (std::isfinite(moved[i])) at = i;
  moved[at] += tol > 0 ? 4 * tol * std::max(mag, 1e-30) : std::max(1.0, std::fabs(moved[at]) * 1e-3);
  EXPECT_FALSE(within(got, moved, tol)) << op << ": the comparison accepts a perturbed reference";
}

::testing::Environment* error_summary_environment() {
  return new ErrorSummary;
}

}  // namespace pab::testing
