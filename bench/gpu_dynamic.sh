#!/usr/bin/env bash
# One call on the GPU machine for the dynamic-shape work (issue 11): build,
# the GPU suite (the operator catalogue with sizes as kernel arguments
# included), then bench/dynamic.py's sweeps. Logs under $OUT; the tables last.
# Needs .carry/range-v3/include where range-v3 is missing.
#   bench/gpu_dynamic.sh [seq|batch|all]
source "$(dirname "$0")/gpu_common.sh"
what=${1:-all}
run gpu-tests env DEEPVISOR_STRICT=1 DEEPVISOR_POISON=1 python3 -m pytest -q -n 8 tests/gpu
grep -h -E "^FAILED|^ERROR" "$OUT"/gpu-tests.log | head -20
if [[ $what == seq || $what == all ]]; then
  run dynamic-seq python3 bench/dynamic.py --profile --out "$OUT/dynamic_seq.json"
  sed -n '/^bert4/,$p' "$OUT/dynamic-seq.log"
fi
if [[ $what == batch || $what == all ]]; then
  run dynamic-batch-resnet python3 bench/dynamic.py --model resnet50 --sweep batch --out "$OUT/dynamic_resnet.json"
  run dynamic-batch-bert python3 bench/dynamic.py --model bert_base --sweep batch --out "$OUT/dynamic_bert.json"
  sed -n '/^resnet50/,$p' "$OUT/dynamic-batch-resnet.log"
  sed -n '/^bert_base/,$p' "$OUT/dynamic-batch-bert.log"
fi
