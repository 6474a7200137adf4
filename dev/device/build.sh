#!/usr/bin/env bash
# Builds what the GPU machine runs (pab and the GPU tests, without video
# codecs) into build-device and packs it: dev/device/build.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
cmake -S . -B build-device -G Ninja -DPAB_VIDEO=OFF -DPAB_FUZZ=OFF -DCMAKE_CUDA_ARCHITECTURES=90 >/dev/null
ninja -C build-device pab tests/test_backend_ops tests/test_cuda_parity tests/test_pipeline_cuda tests/test_open_sora tests/test_vae_causal
dev/device/pack.sh build-device
