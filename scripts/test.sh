#!/usr/bin/env bash
# Installs the missing Debian packages, builds everything and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh
# OpenMP threads sleep rather than spin between parallel regions: with two test
# processes on two cores, spinning threads starve each other.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
ctest --test-dir build -j2 --output-on-failure
