"""bench/routing.py: every mode's row, deepvisor's within eager's numbers and never eager on counts that fit."""

import os
import subprocess
import sys

BENCH = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "routing.py")


def test_routing_rows_match_eager(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", DEEPVISOR_CACHE_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, BENCH, "--device", "cpu", "--tokens", "32", "--dim", "16", "--experts", "4",
                           "--calls", "24", "--modes", "eager", "deepvisor"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in done.stdout.splitlines() if line.startswith("| eager") or line.startswith("| deepvisor")}
    assert set(rows) == {"eager", "deepvisor"}, done.stdout
    total, warm, error, captures, instances, eager_calls = rows["deepvisor"]
    assert float(error) < 1e-4 and int(eager_calls) == 0 and int(captures) <= 6, done.stdout
