#!/usr/bin/env bash
# On the GPU machine (through the device tool): the GPU tests, then each
# workload's denoising loop with PAB timed by an earlier pab (bin/pab_before in
# the pack, when there), this pab and diffusers, in turns, in one session.
#   dev/device/gpu_compare.sh [steps] [workload ...]
# Needs the diffusers wheels in .whl (docs/performance.md says which). Logs and
# JSON go to $OUT (or /tmp/pab-out); the last lines printed are the table,
# seconds without/with PAB for pab, with PAB for diffusers.
set -uo pipefail
steps=${1:-50}
shift || true
workloads=("$@")
[ ${#workloads[@]} -gt 0 ] || workloads=(latte-1 cogvideox-2b)
out=${OUT:-/tmp/pab-out}
mkdir -p "$out"
source dev/device/env.sh
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl &&
  export PYTHONPATH=/tmp/site
nvidia-smi --query-gpu=name,memory.total,driver_version,power.limit --format=csv | tee "$out/gpu.txt"
if [ -z "${SKIP_TESTS:-}" ]; then
  for t in /tmp/pab/bin/test_*; do
    n=$(basename "$t")
    OMP_WAIT_POLICY=passive timeout 300 "$t" --gtest_brief=1 > "$out/$n.log" 2>&1
    echo "$n: exit $?"; grep -E "FAILED|PASSED" "$out/$n.log" | head -20
  done
fi
runs=(pab)
[ -x /tmp/pab/bin/pab_before ] && runs=(pab_before pab)
total() { python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print('%.2f' % j['$2'])" "$1" 2>/dev/null || echo "-"; }
rows=()
for w in "${workloads[@]}"; do
  declare -A t=()
  for r in "${runs[@]}"; do
    timeout 500 /tmp/pab/bin/$r bench --workload "$w" --pab --steps "$steps" --json > "$out/${r}_$w.json" 2> "$out/${r}_$w.err"
    echo "$r $w: exit $?"
    t[$r]=$(python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print('%.2f/%.2f' % (j['no_pab']['total_s'], j['pab']['total_s']))" "$out/${r}_$w.json" 2>/dev/null || echo "-")
  done
  timeout 500 python3 dev/device/diffusers_loop.py "$w" --steps "$steps" > "$out/diffusers_$w.json" 2> "$out/diffusers_$w.err"
  echo "diffusers $w: exit $?"
  t[diffusers]=$(total "$out/diffusers_$w.json" total_s)
  rows+=("$w before=${t[pab_before]:--} after=${t[pab]} diffusers=${t[diffusers]}")
  unset t
done
printf '%s\n' "${rows[@]}" | tee "$out/table.txt"
