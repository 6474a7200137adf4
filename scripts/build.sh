#!/usr/bin/env bash
# Configures and builds pab in build/ (Release; the CUDA backend when nvcc is
# found). Extra arguments go to the build, e.g. `scripts/build.sh --target pab`.
set -euo pipefail
cd "$(dirname "$0")/.."
generator=()
# The generator is chosen once; a configured build folder keeps its own.
if [ ! -f build/CMakeCache.txt ] && command -v ninja >/dev/null; then generator=(-G Ninja); fi
cmake -S . -B build "${generator[@]}" ${PAB_CMAKE_ARGS:-}
cmake --build build -j "${PAB_JOBS:-$(nproc)}" "$@"
