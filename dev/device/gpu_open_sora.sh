#!/usr/bin/env bash
# On the GPU machine (through the device tool): Open-Sora 1.2's loop workload
# (480p 9:16, 51 frames, bf16, CFG batch 2) timed by pab and by the original
# PAB code (VideoSys 4cce477 + PyTorch), without and with PAB, in turns, in one
# session; then the GPU tests given as arguments.
#   dev/device/gpu_open_sora.sh [steps] [test ...]
# Needs .whl/videosys-4cce477.tar.gz (the videosys/ package of a 4cce477 checkout)
# and the wheels of VideoSys's transformer imports (diffusers, einops, timm,
# rotary-embedding-torch) in .whl. Logs and JSON go to $OUT (or /tmp/pab-out);
# the last line printed is the table.
set -uo pipefail
steps=${1:-30}
shift || true
source dev/device/videosys_prelude.sh
# The tiny fixture pipeline on the GPU, f32 and bf16, against the original's f32 frames (8-bit levels).
os=tests/data/open_sora
/tmp/pab/bin/pab assemble open-sora-1.2 --transformer $os/transformer --vae $os/vae --text-encoder $os/text_encoder \
  -o /tmp/os-fixture > "$out/assemble.log" 2>&1
for dt in f32 bf16; do
  /tmp/pab/bin/pab generate -m /tmp/os-fixture --device cuda --dtype $dt --prompt "$(python3 -c "import json; print(json.load(open('$os/case.json'))['prompt'])")" \
    --height 32 --width 48 --frames 19 --steps 10 --pab off --frames-dir /tmp/os-frames-$dt > "$out/fixture_$dt.log" 2>&1
  echo "fixture $dt: exit $?"
  python3 - "$os/reference.safetensors" /tmp/os-frames-$dt <<'PY'
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
get() { python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print('%.2f' % eval(sys.argv[2]))" "$1" "$2" 2>/dev/null || echo "-"; }
timeout 500 /tmp/pab/bin/pab bench --workload open-sora-1.2 --pab --steps "$steps" --dtype bf16 --device cuda --json \
  > "$out/pab.json" 2> "$out/pab.err"
echo "pab: exit $?"
for mode in no-pab pab; do
  flag=""; [ $mode = no-pab ] && flag=--no-pab
  timeout 500 python3 dev/device/videosys_loop.py /tmp/videosys --steps "$steps" $flag > "$out/videosys_$mode.json" 2> "$out/videosys_$mode.err"
  echo "videosys $mode: exit $?"; tail -3 "$out/videosys_$mode.err"
done
row="open-sora-1.2 steps=$steps pab=$(get "$out/pab.json" "j['no_pab']['total_s']")/$(get "$out/pab.json" "j['pab']['total_s']")"
row="$row peak=$(get "$out/pab.json" "j['no_pab']['peak_gib']")/$(get "$out/pab.json" "j['pab']['peak_gib']")GiB"
row="$row videosys=$(get "$out/videosys_no-pab.json" "j['total_s']")/$(get "$out/videosys_pab.json" "j['total_s']")"
row="$row peak=$(get "$out/videosys_no-pab.json" "j['peak_gib']")/$(get "$out/videosys_pab.json" "j['peak_gib']")GiB"
echo "$row" | tee "$out/table.txt"
