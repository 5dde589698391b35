"""bench/cold_start.py: a cold process compiles, a warm one (same disk caches, new process) loads it all."""

import json
import os
import subprocess
import sys

BENCH = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "cold_start.py")


def test_warm_process_compiles_nothing_and_matches_eager(tmp_path):
    out = tmp_path / "cold.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("DEEPVISOR_CPU", None)  # the user's default (kernels compiled to C++), not the tests' interpreter
    done = subprocess.run([sys.executable, BENCH, "--device", "cpu", "--size", "small", "--models", "resnet50",
                           "--batch", "1", "--modes", "deepvisor", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| resnet50 | 1 |" in done.stdout
    (row,) = json.loads(out.read_text())["rows"]
    cold, warm = row["modes"]["deepvisor"]["cold"], row["modes"]["deepvisor"]["warm"]
    for r in (cold, warm):
        assert r["first_two_calls_s"] > 0 and r["max_rel_err"] < 1e-4, r
        assert r["stats"]["graphs"] == 1 and r["stats"]["eager_calls"] == 0, r
    # Kernels: the host compiler's libraries, and under DEEPVISOR_VALIDATE_CUDA=1 (make test) NVRTC's too.
    compiled = lambda s: s["nvrtc_compiles"] + s["host_compiles"]  # noqa: E731
    loaded = lambda s: s["disk_cache_hits"] + s["host_cache_hits"]  # noqa: E731
    assert compiled(cold["stats"]) > 0 and loaded(cold["stats"]) == 0, cold
    assert compiled(warm["stats"]) == 0 and loaded(warm["stats"]) == compiled(cold["stats"]), warm
