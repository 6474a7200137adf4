#!/usr/bin/env bash
# Installs the missing Debian packages, builds pab and runs the main job on the
# data shipped with the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh --target pab

# The shipped model: a tiny CogVideoX pipeline (diffusers layout, random weights).
./build/pab inspect tests/data/fixtures/pipeline/cogvideox_ddim/model
# The main job: a prompt in, an H.264 video out, with Pyramid Attention Broadcast.
./build/pab generate --model tests/data/fixtures/pipeline/cogvideox_ddim/model \
  --prompt "A panda plays the guitar" -o out.mp4
