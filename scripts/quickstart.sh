#!/usr/bin/env bash
# Installs the missing Debian packages, builds pab and runs the main job on the
# data shipped with the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh --target pab

./build/pab inspect tests/data/fixtures/pipeline/cogvideox_ddim/model
# ---- main job: becomes `pab generate` once the text-to-video pipeline exists ----
./build/pab replay tests/data/fixtures/transformer/cogvideox_2b_style -o build/replay_cogvideox_2b.safetensors
