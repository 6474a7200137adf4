#!/usr/bin/env bash
# On the GPU machine (through the device tool): GPU tests, then benchmarks.
#   dev/device/gpu_run.sh [steps] [workload ...]
# Logs go to $OUT (or /tmp/pab-out).
set -uo pipefail
steps=${1:-50}
shift || true
workloads=("$@")
[ ${#workloads[@]} -gt 0 ] || workloads=(latte-1 cogvideox-2b cogvideox-5b)
out=${OUT:-/tmp/pab-out}
mkdir -p "$out"
source dev/device/env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cudnn', torch.backends.cudnn.version())" 2>/dev/null | tee -a "$out/gpu.txt"
if [ -z "${SKIP_TESTS:-}" ]; then
  for t in test_backend_ops test_cuda_parity test_pipeline_cuda test_open_sora test_vae_causal; do
    OMP_WAIT_POLICY=passive timeout 300 /tmp/pab/bin/$t --gtest_brief=1 > "$out/$t.log" 2>&1
    echo "$t: exit $?"; grep -E "FAILED|PASSED|bf16 relative|Largest" "$out/$t.log" | head -30
  done
fi
for w in "${workloads[@]}"; do
  timeout 400 /tmp/pab/bin/pab bench --workload "$w" --pab --steps "$steps" --json > "$out/bench_$w.json" 2> "$out/bench_$w.err"
  echo "bench $w: exit $?"; tail -3 "$out/bench_$w.err"
  python3 -c "
import json,sys; j=json.load(open('$out/bench_$w.json'))
print(j['workload'], 'steps', j['steps'], 'nopab %.2f s' % j['no_pab']['total_s'], 'pab %.2f s' % j['pab']['total_s'], 'speedup %.3f' % j['pab_speedup'], 'peak %.2f/%.2f GiB' % (j['no_pab']['peak_gib'], j['pab']['peak_gib']), j.get('profile_one_step'))
" 2>&1 | tail -2
done
