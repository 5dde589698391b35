#!/usr/bin/env bash
# One call on the GPU machine: build, C++ tests, GPU tests, the disk-cache
# check, the micro benchmarks and the per-call overhead. Logs go to $OUT (or
# ./gpu-out); a short table is printed last. Needs .carry/range-v3/include where range-v3 is missing.
#   bench/gpu_session.sh [build|tests|bench|all]...
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 DEEPVISOR_CACHE_DIR=${DEEPVISOR_CACHE_DIR:-/tmp/dv-cache}
BUILD=build-gpu
MESON="python3 -m mesonbuild.mesonmain"
python3 -c "import mesonbuild" 2>/dev/null || MESON=meson
what=${*:-all}
summary=()

step() {  # step NAME COMMAND...: runs, logs to $OUT/NAME.log, records the status
  local name=$1; shift
  local t0=$SECONDS
  "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  summary+=("$(printf '%-14s rc=%-3s %4ss  %s' "$name" "$rc" $((SECONDS - t0)) "$(tail -1 "$OUT/$name.log" | cut -c1-90)")")
  return $rc
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$OUT/gpu.txt" 2>&1
if [[ $what == *build* || $what == all ]]; then
  step build make build BUILD=$BUILD MESON="$MESON" || { cat "$OUT/build.log" | tail -40; exit 1; }
fi
if [[ $what == *tests* || $what == all ]]; then
  step cpp-tests $MESON test -C $BUILD --print-errorlogs
  step gpu-tests env DEEPVISOR_STRICT=1 DEEPVISOR_POISON=1 python3 -m pytest -q tests/gpu
  step disk-cache python3 bench/disk_cache_check.py
fi
if [[ $what == *bench* || $what == all ]]; then
  step bench python3 bench/micro.py --json "$OUT/bench.json"
  step overhead python3 bench/overhead.py
  grep -h '^|' "$OUT/bench.log" "$OUT/overhead.log"
fi
echo
cat "$OUT/gpu.txt"
printf '%s\n' "${summary[@]}"
