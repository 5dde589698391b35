# Sourced by the one-call GPU scripts (gpu_capture.sh, gpu_models.sh): logs
# under $OUT, a shared kernel disk cache, the build, and `run NAME CMD...`,
# which logs CMD to $OUT/NAME.log and prints one line with its status.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 DEEPVISOR_CACHE_DIR=${DEEPVISOR_CACHE_DIR:-/tmp/dv-cache}
bench/gpu_session.sh build || exit 1
run() { local name=$1; shift; local t0=$SECONDS; "$@" >"$OUT/$name.log" 2>&1; echo "$name rc=$? $((SECONDS - t0))s: $(tail -1 "$OUT/$name.log" | cut -c1-150)"; }
