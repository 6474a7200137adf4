#!/usr/bin/env bash
# On the GPU machine: generate on the shipped tiny model with CUDA, then the
# whole-pipeline benchmark (docs/performance.md: CogVideoX-2b, T5-XXL, 3D VAE).
set -uo pipefail
out=${OUT:-/tmp/pab-out}
mkdir -p "$out"
source dev/device/env.sh
model=tests/data/fixtures/pipeline/cogvideox_ddim/model
for dtype in f32 bf16; do
  /tmp/pab/bin/pab generate -m $model -p "A panda playing a guitar" --device cuda --dtype $dtype \
    --frames-dir "$out/frames_$dtype" 2>&1 | tail -2
done
/tmp/pab/bin/pab generate -m tests/data/fixtures/pipeline/latte/model -p "dance monkey" --device cuda --dtype bf16 \
  --frames-dir "$out/frames_latte" 2>&1 | tail -1
timeout 500 /tmp/pab/bin/pab bench --workload cogvideox-2b-pipeline --pab --json > "$out/bench_pipeline.json" 2> "$out/bench_pipeline.err"
echo "pipeline bench: exit $?"; tail -3 "$out/bench_pipeline.err"; head -c 3000 "$out/bench_pipeline.json"
