#!/usr/bin/env bash
# On the GPU machine (through the device tool): Open-Sora-Plan v1.1's and
# v1.2's loop workloads (65x512x512 and 29x480p, bf16, CFG batch 2) timed by
# pab and by the original PAB code (VideoSys 4cce477 + PyTorch), without and
# with PAB, in one session; the tiny fixture pipelines of both versions generated on the
# GPU in f32 and bf16 against the original's f32 frames; then the GPU tests
# given as arguments.
#   dev/device/gpu_open_sora_plan.sh [steps] [test ...]
# Needs .whl/videosys-4cce477.tar.gz (the videosys/ package of a 4cce477
# checkout) and the wheels of VideoSys's transformer imports (diffusers,
# einops) in .whl. Logs and JSON go to $OUT (or /tmp/pab-out); the last line
# printed is the table (v1.2's steps: the first argument, default 100).
set -uo pipefail
steps=${1:-100}
shift || true
source dev/device/videosys_prelude.sh
# The tiny fixture pipelines on the GPU, f32 and bf16, against the original's f32 frames (8-bit levels).
for v in v110 v120; do
  d=tests/data/open_sora_plan/$v
  recipe=open-sora-plan-1.1; [ $v = v120 ] && recipe=open-sora-plan-1.2
  /tmp/pab/bin/pab assemble $recipe --transformer $d/transformer --vae $d/vae --text-encoder $d/text_encoder \
    -o /tmp/osp-$v > "$out/assemble_$v.log" 2>&1
  args=$(python3 -c "import json; c=json.load(open('$d/case.json')); print(c['height'], c['width'], c['frames'], c['steps'], c['seed'])")
  read -r h w f s seed <<< "$args"
  for dt in f32 bf16; do
    /tmp/pab/bin/pab generate -m /tmp/osp-$v --device cuda --dtype $dt \
      --prompt "$(python3 -c "import json; print(json.load(open('$d/case.json'))['prompt'])")" \
      --height $h --width $w --frames $f --steps $s --seed $seed --pab off --frames-dir /tmp/osp-frames-$v-$dt \
      > "$out/fixture_${v}_$dt.log" 2>&1
    echo "fixture $v $dt: exit $?"
    python3 - "$d/reference.safetensors" /tmp/osp-frames-$v-$dt <<'PY'
import glob, sys
import numpy as np
from PIL import Image
from safetensors.numpy import load_file
ref = load_file(sys.argv[1])["frames_nopab"]  # F, C, H, W in [0, 1]
got = np.stack([np.asarray(Image.open(f)) for f in sorted(glob.glob(sys.argv[2] + "/*.png"))]).astype(np.float64)
want = np.round(ref.transpose(0, 2, 3, 1) * 255)
print("  frames", got.shape, "max |diff| in 8-bit levels:", np.abs(got - want).max(), "mean:", np.abs(got - want).mean())
PY
  done
done
get() { python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print('%.2f' % eval(sys.argv[2]))" "$1" "$2" 2>/dev/null || echo "-"; }
# v1.1 at 150 PNDM steps, v1.2 at the given steps (default 100), as VideoSys runs them.
for v in v110 v120; do
  w=open-sora-plan-1.${v:2:1}; n=$steps; [ $v = v110 ] && n=150
  timeout 500 /tmp/pab/bin/pab bench --workload $w --pab --steps "$n" --dtype bf16 --device cuda \
    --json > "$out/pab_$v.json" 2> "$out/pab_$v.err"
  echo "pab $w: exit $?"
  for mode in no-pab pab; do
    flag=""; [ $mode = no-pab ] && flag=--no-pab
    timeout 500 python3 dev/device/videosys_open_sora_plan_loop.py /tmp/videosys --version $v --steps "$n" $flag \
      > "$out/videosys_${v}_$mode.json" 2> "$out/videosys_${v}_$mode.err"
    echo "videosys $w $mode: exit $?"; grep -v "kept in float32" "$out/videosys_${v}_$mode.err" | tail -3
  done
  row="$w steps=$n pab=$(get "$out/pab_$v.json" "j['no_pab']['total_s']")/$(get "$out/pab_$v.json" "j['pab']['total_s']")"
  row="$row peak=$(get "$out/pab_$v.json" "j['no_pab']['peak_gib']")/$(get "$out/pab_$v.json" "j['pab']['peak_gib']")GiB"
  row="$row videosys=$(get "$out/videosys_${v}_no-pab.json" "j['total_s']")/$(get "$out/videosys_${v}_pab.json" "j['total_s']")"
  row="$row peak=$(get "$out/videosys_${v}_no-pab.json" "j['peak_gib']")/$(get "$out/videosys_${v}_pab.json" "j['peak_gib']")GiB"
  echo "$row" | tee -a "$out/table.txt"
done
