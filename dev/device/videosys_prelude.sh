# Sourced by the scripts that time pab against VideoSys on the GPU machine,
# after they take their own first argument: sets $out (OUT, or /tmp/pab-out),
# unpacks pab (env.sh), installs the wheels in .whl and VideoSys 4cce477's
# package (.whl/videosys-4cce477.tar.gz) into /tmp/videosys, records the GPU,
# then runs the GPU tests named in the remaining arguments.
out=${OUT:-/tmp/pab-out}
mkdir -p "$out" /tmp/videosys
source dev/device/env.sh
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl &&
  export PYTHONPATH=/tmp/site
tar -xzf .whl/videosys-4cce477.tar.gz -C /tmp/videosys
nvidia-smi --query-gpu=name,memory.total,driver_version,power.limit --format=csv | tee "$out/gpu.txt"
for t in "$@"; do
  OMP_WAIT_POLICY=passive timeout 300 /tmp/pab/bin/$t --gtest_brief=1 > "$out/$t.log" 2>&1
  echo "$t: exit $?"; grep -E "FAILED|PASSED" "$out/$t.log" | head -20
done
