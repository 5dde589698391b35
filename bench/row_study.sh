#!/usr/bin/env bash
# One GPU call that studies the row kernels (softmax, f32 layer_norm) against
# torch.compile: the card's clocks, the emitted variants in bench/lab_sources/study
# timed three ways (kernel_lab.py --cu), ncu metrics of each kernel alone,
# and Inductor's generated code and PTX. Logs in $OUT (or ./gpu-out).
# study/ holds the variants behind the last emitter decisions (row-sum loads,
# column-block width); the earlier sets are in git history (bench/NOTES.md).
#   bench/row_study.sh [ROUNDS] [METHODS]   (METHODS: default flush,loop,graph; NCU_CACHE="all none";
#   INDUCTOR_CODE=0 skips dumping Inductor's code)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 DEEPVISOR_CACHE_DIR=${DEEPVISOR_CACHE_DIR:-/tmp/dv-cache}
rounds=${1:-5}
methods=${2:-flush,loop,graph}
sources=(bench/lab_sources/study/*.cu)
smi="clocks.sm,clocks.max.sm,clocks.mem,clocks.max.mem,power.draw,power.limit,temperature.gpu,clocks_event_reasons.active"

nvidia-smi --query-gpu=name,serial,pci.bus_id,driver_version,$smi --format=csv >"$OUT/smi.csv" 2>&1
nvidia-smi -q -d CLOCK,POWER,PERFORMANCE,ECC,MEMORY >"$OUT/smi-q.txt" 2>&1
if ! python3 -c 'import deepvisor' 2>/dev/null; then
  make build BUILD=build-gpu MESON="python3 -m mesonbuild.mesonmain" >"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
fi
nvidia-smi --query-gpu=$smi --format=csv -lms 500 >"$OUT/clocks-during.csv" 2>&1 &
sampler=$!
DEEPVISOR_STRICT=1 timeout 260 python3 bench/kernel_lab.py --cu "${sources[@]}" --rounds "$rounds" --methods "$methods" >"$OUT/lab.log" 2>&1
kill $sampler
metrics=gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,dram__bytes_read.sum,dram__bytes_write.sum,sm__cycles_elapsed.avg.per_second,dram__cycles_elapsed.avg.per_second,smsp__inst_executed.sum,launch__registers_per_thread,launch__grid_size,launch__block_size,sm__warps_active.avg.pct_of_peak_sustained_active
for cache in ${NCU_CACHE:-all none}; do
  timeout 110 ncu --clock-control none --cache-control $cache --nvtx --nvtx-include "measure/" --metrics $metrics --csv \
    python3 bench/kernel_lab.py --cu "${sources[@]}" --ncu >"$OUT/ncu-cache-$cache.csv" 2>"$OUT/ncu-cache-$cache.err"
done
[[ ${INDUCTOR_CODE:-1} == 1 ]] && TORCHINDUCTOR_CACHE_DIR=/tmp/ind-cache TORCH_LOGS=output_code timeout 80 python3 - >"$OUT/inductor-code.log" 2>&1 <<'PY'
import torch
x = torch.randn(8192, 8192, device="cuda")
torch.compile(lambda x: torch.softmax(x, -1))(x)
y, w, b = torch.randn(16384, 4096, device="cuda"), torch.randn(4096, device="cuda"), torch.randn(4096, device="cuda")
torch.compile(lambda x, w, b: torch.nn.functional.layer_norm(x, x.shape[-1:], w, b))(y, w, b)
PY
[[ ${INDUCTOR_CODE:-1} == 1 ]] && mkdir -p "$OUT/ptx" && find /tmp/ind-cache -name '*.ptx' -exec cp {} "$OUT/ptx/" \;
grep -h '^|\|^flush\|^loop\|^graph' "$OUT/lab.log"
cat "$OUT/smi.csv"
