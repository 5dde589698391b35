#!/usr/bin/env bash
# One call on the GPU machine for the whole-model work: build, the GPU suite
# (CUDA graphs included), the capture behaviours on CUDA tensors, then
# bench/models.py. Logs under $OUT; a short summary and the table last.
# Needs .carry/range-v3/include where range-v3 is missing.
#   bench/gpu_models.sh [models.py arguments...]
source "$(dirname "$0")/gpu_common.sh"
run gpu-tests env DEEPVISOR_STRICT=1 DEEPVISOR_POISON=1 python3 -m pytest -q -n 8 tests/gpu
run capture-cuda env DEEPVISOR_STRICT=1 DEEPVISOR_POISON=1 python3 -m pytest -q -n 4 -k cuda \
  tests/python/test_capture.py tests/python/test_backend.py tests/python/test_torchvision.py
run models python3 bench/models.py --out "$OUT/models.json" "$@"
# A new process with the disk cache the first run filled: deepvisor's warm start.
run warm-start python3 bench/models.py --out "$OUT/warm.json" "$@" --modes deepvisor --iters 5 --warmup 1
grep -h -E "^FAILED|^ERROR" "$OUT"/gpu-tests.log "$OUT"/capture-cuda.log | head -20
sed -n '/^| model/,$p' "$OUT/models.log"
echo "warm start (disk cache filled by the run above):"
grep -E '^\| [a-z]' "$OUT/warm-start.log" | awk -F'|' '{print $2, $3, "first call s (- / - / dv):", $15}'
