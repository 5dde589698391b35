#!/usr/bin/env bash
# One call on the GPU machine for the capture work: build, the GPU suite, the
# capture/backend/torchvision behaviours on CUDA tensors, the guard-overhead
# benchmark. Logs under $OUT; a short table last. Needs .carry/range-v3/include.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 DEEPVISOR_CACHE_DIR=${DEEPVISOR_CACHE_DIR:-/tmp/dv-cache}
bench/gpu_session.sh build || exit 1
run() { local name=$1; shift; local t0=$SECONDS; "$@" >"$OUT/$name.log" 2>&1; echo "$name rc=$? $((SECONDS - t0))s: $(tail -1 "$OUT/$name.log" | cut -c1-120)"; }
run gpu-tests env DEEPVISOR_STRICT=1 DEEPVISOR_POISON=1 python3 -m pytest -q -x -n 8 tests/gpu
run capture-cuda env DEEPVISOR_STRICT=1 DEEPVISOR_POISON=1 python3 -m pytest -q -k cuda \
  tests/python/test_capture.py tests/python/test_backend.py tests/python/test_torchvision.py
run capture-cpu env DEEPVISOR_STRICT=1 python3 -m pytest -q -k "not cuda" tests/python/test_capture.py tests/python/test_backend.py
run guards python3 bench/guard_overhead.py --calls 400
grep -h '^|' "$OUT/guards.log"
grep -h -E "FAILED|Error" "$OUT"/*.log | head -20
