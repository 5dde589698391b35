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
# Time to a ready plan, cold and warm (a new process on the filled disk caches), beside torch.compile's.
run cold-start python3 bench/cold_start.py --out "$OUT/cold_start.json"
grep -h -E "^FAILED|^ERROR" "$OUT"/gpu-tests.log "$OUT"/capture-cuda.log | head -20
sed -n '/^| model/,$p' "$OUT/models.log"
sed -n '/^| model/,$p' "$OUT/cold-start.log"
