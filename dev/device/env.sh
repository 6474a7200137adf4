# Sourced on the GPU machine: unpacks .devpack/pack.tar.xz into /tmp/pab and
# points the loader at it and at the CUDA libraries of the machine's Python
# packages (cuDNN, cuBLAS) and toolkit.
mkdir -p /tmp/pab && tar -xJf .devpack/pack.tar.xz -C /tmp/pab
nv=$(python3 - <<'PY'
import glob, os, site
dirs = []
for sp in site.getsitepackages():
    dirs += glob.glob(os.path.join(sp, "nvidia", "*", "lib")) + glob.glob(os.path.join(sp, "nvidia", "cu*", "lib"))
print(":".join(dirs))
PY
)
export LD_LIBRARY_PATH=/tmp/pab/lib:$nv:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PATH=/tmp/pab/bin:$PATH
export PAB_TEST_DATA=$PWD/tests/data PAB_BINARY=/tmp/pab/bin/pab
