#!/usr/bin/env bash
# On the GPU machine: the memory estimate against the measured peak of every
# benchmark workload (each loop, the whole pipeline tiled and untiled), and
# the refusal of a run that does not fit.
#   dev/device/gpu_memory.sh [steps]
set -uo pipefail
steps=${1:-20}
out=${OUT:-/tmp/pab-out}
mkdir -p "$out"
source dev/device/env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
for w in latte-1 cogvideox-2b cogvideox-5b; do
  timeout 300 pab bench --workload "$w" --pab --steps "$steps" > "$out/bench_$w.txt" 2>&1
  echo "bench $w: exit $?"; grep -E "weights|peak|GiB" "$out/bench_$w.txt"
done
for tiling in off on; do
  timeout 300 pab bench --workload cogvideox-2b-pipeline --pab --steps "$steps" --tiling "$tiling" \
    > "$out/bench_pipeline_$tiling.txt" 2>&1
  echo "pipeline, tiling $tiling: exit $?"; grep -E "peak" "$out/bench_pipeline_$tiling.txt"
done
model=tests/data/fixtures/pipeline/cogvideox_ddim/model
pab generate -m $model -p "a cat" --device cuda --dtype bf16 --frames-dir "$out/frames" 2>&1 | grep -E "at most|done"
pab generate -m $model -p "a cat" --device cuda --dtype bf16 --frames-dir "$out/frames2" --max-memory 1M 2>&1 | tail -1
