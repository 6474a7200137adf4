#!/usr/bin/env bash
# Packs built binaries and the shared libraries they need (but the CUDA
# libraries, which the GPU machine has) into .devpack/pack.tar.xz, for runs on
# a GPU machine that has none of our Debian packages. Usage:
#   dev/device/pack.sh [build-dir] [binary ...]   (default: pab and the GPU tests)
# Use a build configured with -DPAB_VIDEO=OFF (dev/device/build.sh): libavcodec
# alone would bring a hundred libraries along.
set -euo pipefail
build=${1:-build}
shift || true
bins=("$@")
[ ${#bins[@]} -gt 0 ] || bins=(pab tests/test_backend_ops tests/test_cuda_parity tests/test_pipeline_cuda tests/test_open_sora tests/test_vae_causal)
rm -rf .devpack && mkdir -p .devpack/stage/bin .devpack/stage/lib
for b in "${bins[@]}"; do
  [ -f "$build/$b" ] || continue
  cp "$build/$b" .devpack/stage/bin/
  ldd "$build/$b" | awk '/=>/ {print $3}' |
    grep -v -E '/(libc|libm|libdl|librt|libpthread|ld-linux[^/]*)\.so|libcuda\.|libcudart|libcublas|libcudnn|libnvrtc|libnccl' |
    while read -r lib; do cp -L -n "$lib" .devpack/stage/lib/ 2>/dev/null || true; done
done
# -9 -T1: a dictionary that spans the binaries, which are mostly the same engine.
tar -cf - -C .devpack/stage . | xz -9 -T1 > .devpack/pack.tar.xz
rm -rf .devpack/stage
ls -la .devpack/pack.tar.xz
