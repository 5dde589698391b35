#!/usr/bin/env bash
# One GPU call: are looped rows with cache hints (evict_last on the passes a
# later pass re-reads, evict_first on the last) better than rows held in
# registers, and where? Dumps each kernel_lab workload's graph (on CPU), writes
# variants of its kernel with dvdump (default; looped with 2 chunks a step;
# the hints in L1 and L2, in one of them, or none; the variance in its own
# pass or with the mean) and times them with kernel_lab.py --cu
# (outputs preallocated and allocated at each call), beside deepvisor,
# torch.compile and a copy. Logs in $OUT (or ./gpu-out).
#   bench/loop_study.sh [ROUNDS] [TAGS...]   (TAGS: kernel_lab.py --cu workload prefixes;
#   env HINTS: hint levels besides 3, default "0 1 2"; CHUNKS: looped steps, default 2)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 DEEPVISOR_CACHE_DIR=${DEEPVISOR_CACHE_DIR:-/tmp/dv-cache}
rounds=${1:-3}
shift || true
tags=${*:-lnf32 lnbf16 softmax ln768f32 ln768bf16 ln3072f32 sm512f32 sm32k ln32k}
if ! python3 -c 'import deepvisor' 2>/dev/null; then
  make build BUILD=build-gpu MESON="python3 -m mesonbuild.mesonmain" >"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
fi
dvdump=$(ls build-gpu/tools/dvdump build/tools/dvdump 2>/dev/null | head -1)
src=$OUT/loop-sources
rm -rf "$src" && mkdir -p "$src"
python3 - "$src" $tags <<'PY'
import sys, torch, deepvisor
sys.path.insert(0, "bench")
import kernel_lab
out, tags = sys.argv[1], sys.argv[2:]
for tag, (dtype, fn, shapes, _) in kernel_lab.emitted_workloads().items():
    if tag in tags:
        args = [torch.randn(*shape, dtype=dtype) for shape in shapes]
        deepvisor.compile(fn, dump_dir=f"{out}/{tag}")(*args)
PY
emit() {  # emit OUTFILE DVDUMP-ARGS...: the kernel source alone (dvdump's stage header dropped)
  local out=$1; shift
  "$dvdump" "$@" --stage cuda | sed '1{/^====/d}' >"$out"
}
for tag in $tags; do
  graph=$(ls "$src/$tag"/*.dvg | head -1)
  emit "$src/${tag}__default.cu" "$graph"
  if grep -q "^// strategy: row kernel, looped" "$src/${tag}__default.cu"; then
    for h in ${HINTS:-0 1 2}; do emit "$src/${tag}__default_h$h.cu" "$graph" --loop-hints $h; done
    emit "$src/${tag}__default_nomoments.cu" "$graph" --no-loop-moments
  fi
  for c in ${CHUNKS:-2}; do
    for h in ${HINTS:-0 1 2} 3; do  # hints: none, L1 only, L2 only, both
      emit "$src/${tag}__looped_c${c}_h$h.cu" "$graph" --row-looped --row-chunks $c --loop-hints $h
    done
    emit "$src/${tag}__looped_c${c}_nomoments.cu" "$graph" --row-looped --row-chunks $c --no-loop-moments
  done
  grep -h "^// strategy" "$src/${tag}"__*.cu | sed "s/^/$tag: /" >>"$OUT/strategies.txt"
done
timeout 430 python3 bench/kernel_lab.py --cu "$src"/*.cu --rounds "$rounds" --fresh >"$OUT/loop-lab.log" 2>&1
grep '^|' "$OUT/loop-lab.log"
