#!/usr/bin/env bash
# On the GPU machine: sequence-parallel runs. With one GPU the ranks share it
# through host memory (--comm host: checks the partitioning at full size, not
# the speed); with several, NCCL and the scaling of the anchor workloads.
#   dev/device/gpu_parallel.sh [steps]
set -uo pipefail
steps=${1:-10}
out=${OUT:-/tmp/pab-out}
mkdir -p "$out"
source dev/device/env.sh
gpus=$(nvidia-smi -L | wc -l)
echo "visible GPUs: $gpus"
if [ "$gpus" -ge 2 ]; then
  for w in latte-1 cogvideox-2b cogvideox-5b; do
    for n in 1 2 4 8; do
      [ "$n" -le "$gpus" ] || continue
      timeout 300 pab bench --workload $w --pab --steps "$steps" --gpus $n 2>&1 | grep -E "ranks|total|PAB|error" | head -4
    done
  done
else
  pab bench --workload latte-1 --gpus 2 --comm nccl 2>&1 | tail -1  # a clear error: one GPU
  for flags in "--gpus 2 --comm host" "--gpus 2 --comm host --cfg-parallel"; do
    timeout 300 pab bench --workload latte-1 --pab --steps "$steps" $flags 2>&1 | tail -6
  done
fi
