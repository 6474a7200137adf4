#!/usr/bin/env bash
# Installs the Debian packages pab builds against, skipping those already present.
set -euo pipefail
pkgs=(build-essential cmake ninja-build pkg-config git
      libopenblas-openmp-dev nlohmann-json3-dev libcli11-dev
      libavcodec-dev libavformat-dev libavfilter-dev libavutil-dev libswscale-dev
      libyaml-cpp-dev libgtest-dev libgmock-dev libpng-dev
      libcairo2-dev fonts-dejavu-core)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
echo "installing: ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps.sh: run as root or install sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
# sudo resets the environment, so the frontend is passed through env.
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
