#!/usr/bin/env bash
# Installs the missing Debian packages, builds everything and runs every test,
# then builds and runs them again under AddressSanitizer and UBSan
# (PAB_SANITIZE_LANE=0 leaves that out).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh
# OpenMP threads sleep rather than spin between parallel regions: with two test
# processes on two cores, spinning threads starve each other.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
ctest --test-dir build -j2 --output-on-failure

# The sanitizer lane: the whole engine, the command and every CPU test again
# under AddressSanitizer and UBSan (any finding fails the test), in build-asan/.
if [ "${PAB_SANITIZE_LANE:-1}" != 0 ]; then
  generator=()
  if [ ! -f build-asan/CMakeCache.txt ] && command -v ninja >/dev/null; then generator=(-G Ninja); fi
  cmake -S . -B build-asan "${generator[@]}" -DPAB_SANITIZE=ON -DPAB_CUDA=OFF
  cmake --build build-asan -j "${PAB_JOBS:-$(nproc)}"
  ASAN_OPTIONS=abort_on_error=1:detect_leaks=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  LSAN_OPTIONS=suppressions=$PWD/tests/sanitizer/lsan.supp:print_suppressions=0 \
    ctest --test-dir build-asan -j2 --output-on-failure
fi
