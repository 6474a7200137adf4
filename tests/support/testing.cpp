#include "support/testing.h"

#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <sys/wait.h>

#include <algorithm>

#include "io/safetensors.h"

namespace pab::testing {

// Both can be overridden from the environment, for binaries run away from
// their build tree (the GPU machine).
std::string data_path(const std::string& rel) {
  const char* env = std::getenv("PAB_TEST_DATA");
  return std::string(env ? env : PAB_TEST_DATA) + "/" + rel;
}

std::string pab_binary() {
  const char* env = std::getenv("PAB_BINARY");
  return env ? env : PAB_BINARY;
}

Tensor random_tensor(const Shape& shape, uint32_t seed, float lo, float hi) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  Tensor t = Tensor::empty(shape);
  float* p = t.f32();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = dist(rng);
  return t;
}

Diff compare(const Tensor& a, const Tensor& b) {
  Diff d;
  std::vector<float> va = a.to_vector(), vb = b.to_vector();
  for (size_t i = 0; i < va.size() && i < vb.size(); ++i) {
    double diff = std::fabs(double(va[i]) - double(vb[i]));
    if (std::isnan(diff)) diff = INFINITY;
    d.max_abs = std::max(d.max_abs, diff);
    d.max_ref = std::max(d.max_ref, std::fabs(double(vb[i])));
  }
  return d;
}

double rel_l2(const Tensor& a, const Tensor& b) {
  std::vector<float> x = a.to_vector(), y = b.to_vector();
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    num += (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
    den += double(y[i]) * y[i];
  }
  return std::sqrt(num / den);
}

::testing::AssertionResult close_rel(const Tensor& a, const Tensor& b, double tol) {
  if (a.shape() != b.shape())
    return ::testing::AssertionFailure() << "shape " << shape_str(a.shape()) << " vs reference " << shape_str(b.shape());
  Diff d = compare(a, b);
  if (d.max_abs <= tol * d.max_ref) return ::testing::AssertionSuccess() << "rel " << d.rel();
  return ::testing::AssertionFailure() << "max abs diff " << d.max_abs << " = " << d.rel()
                                       << " of max |ref| " << d.max_ref << " exceeds tolerance " << tol;
}

ReferenceCheck expect_reference(const std::map<std::string, Tensor>& out, const std::string& reference, double tol) {
  Checkpoint ref = Checkpoint::open_file(reference);
  ReferenceCheck r;
  for (const std::string& name : ref.names()) {
    auto it = out.find(name);
    if (it == out.end()) {
      ADD_FAILURE() << "missing output " << name;
      continue;
    }
    Tensor want = ref.load(name);
    EXPECT_TRUE(close_rel(it->second, want, tol)) << name;
    r.worst = std::max(r.worst, compare(it->second, want).rel());
    ++r.compared;
  }
  return r;
}

int run_command(const std::string& cmd, std::string* output) {
  std::string full = cmd + " 2>&1";
  FILE* p = ::popen(full.c_str(), "r");
  if (!p) return -1;
  char buf[4096];
  size_t n;
  std::string out;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int status = ::pclose(p);
  if (output) *output = out;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace pab::testing
