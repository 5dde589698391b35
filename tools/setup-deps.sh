#!/usr/bin/env bash
# Installs what deepvisor needs and is missing; touches the network only then.
# Usage: tools/setup-deps.sh PYTHON
set -euo pipefail
PY=${1:-python3}

missing_debs=()
if command -v dpkg >/dev/null 2>&1; then
  for pkg in g++ pkg-config libeigen3-dev librange-v3-dev catch2; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing_debs+=("$pkg")
  done
fi
if [ ${#missing_debs[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "setup: installing ${missing_debs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing_debs[@]}" >/dev/null
  else
    echo "setup: missing Debian packages ${missing_debs[*]} (no apt-get as root here; the build may still find them)" >&2
  fi
fi

# Python packages, by import name and pip requirement. torch is pinned to the
# GPU machine's version: one torch everywhere.
missing_pips=()
check() { "$PY" -c "import $1" >/dev/null 2>&1 || missing_pips+=("$2"); }
check torch "torch==2.11.0"
check mesonbuild "meson>=1.1"
check ninja ninja
check mesonpy "meson-python>=0.15"  # pip install --no-build-isolation . (pyproject.toml) and its test
check pytest pytest
check numpy numpy
check torchvision "torchvision==0.26.0"
check transformers "transformers>=5"  # the evaluation models and the CPU benchmark
if [ ${#missing_pips[@]} -gt 0 ]; then
  echo "setup: pip installing ${missing_pips[*]}"
  "$PY" -m pip install -q "${missing_pips[@]}"
fi

if [ ! -e "${CUDA_HOME:-/usr/local/cuda}/include/nvrtc.h" ]; then
  echo "setup: warning: no CUDA toolkit at ${CUDA_HOME:-/usr/local/cuda} (set CUDA_HOME); NVRTC is needed to compile kernels" >&2
fi
