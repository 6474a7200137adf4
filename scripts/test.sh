#!/usr/bin/env bash
# Installs the missing Debian packages, builds everything and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh
ctest --test-dir build -j2 --output-on-failure
