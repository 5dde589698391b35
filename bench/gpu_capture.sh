#!/usr/bin/env bash
# One call on the GPU machine for the capture work: build, the GPU suite, the
# capture/backend/torchvision behaviours on CUDA tensors, the guard-overhead
# benchmark. Logs under $OUT; a short table last. Needs .carry/range-v3/include.
source "$(dirname "$0")/gpu_common.sh"
run gpu-tests env DEEPVISOR_STRICT=1 DEEPVISOR_POISON=1 python3 -m pytest -q -x -n 8 tests/gpu
run capture-cuda env DEEPVISOR_STRICT=1 DEEPVISOR_POISON=1 python3 -m pytest -q -k cuda \
  tests/python/test_capture.py tests/python/test_backend.py tests/python/test_torchvision.py
run capture-cpu env DEEPVISOR_STRICT=1 python3 -m pytest -q -k "not cuda" tests/python/test_capture.py tests/python/test_backend.py
run guards python3 bench/guard_overhead.py --calls 400
grep -h '^|' "$OUT/guards.log"
grep -h -E "FAILED|Error" "$OUT"/*.log | head -20
