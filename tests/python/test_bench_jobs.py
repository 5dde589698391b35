"""bench/models.py --jobs: while a job times its calls, the run's other jobs are paused, and resumed after."""

import importlib.util
import os
import subprocess
import sys
import textwrap
import time

import pytest

BENCH = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "models.py")

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the run's jobs through /proc")


def state(pid):
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    return stat[stat.rindex(")") + 2]


def test_timing_job_pauses_its_siblings_and_resumes_them(tmp_path):
    sibling = subprocess.Popen(["sleep", "60"])
    # The timing job: a sibling of `sleep` (same parent: this test), reporting what it sees inside quiet_gpu.
    job = textwrap.dedent(f"""
        import importlib.util, types, sys
        spec = importlib.util.spec_from_file_location("bench_models", {os.path.abspath(BENCH)!r})
        bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench)
        a = types.SimpleNamespace(turn_lock={str(tmp_path / "gpu.lock")!r})
        print("siblings", bench.sibling_jobs())
        with bench.quiet_gpu(a):
            with open("/proc/{sibling.pid}/stat") as f:
                s = f.read()
            print("inside", s[s.rindex(")") + 2])
    """)
    try:
        out = subprocess.run([sys.executable, "-c", job], capture_output=True, text=True, timeout=120,
                             env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
        assert out.returncode == 0, out.stderr
        lines = dict(line.split(" ", 1) for line in out.stdout.splitlines())
        assert str(sibling.pid) in lines["siblings"]
        assert lines["inside"] == "T"  # stopped while the job timed
        time.sleep(0.1)
        assert state(sibling.pid) in "SR"  # running again after
    finally:
        sibling.kill()
        sibling.wait()


def test_alone_nothing_is_paused():
    spec = importlib.util.spec_from_file_location("bench_models_alone", os.path.abspath(BENCH))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    class Alone:
        turn_lock = None
    sibling = subprocess.Popen(["sleep", "60"])
    try:
        with bench.quiet_gpu(Alone()):
            assert state(sibling.pid) in "SR"
    finally:
        sibling.kill()
        sibling.wait()


def _bench():
    spec = importlib.util.spec_from_file_location("bench_models", os.path.abspath(BENCH))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_a_disturbed_timing_window_is_retaken_and_the_steadiest_kept():
    bench = _bench()
    windows = iter([[10.0, 13.0, 13.0], [10.0, 10.1, 10.2], [9.0, 9.0, 9.0]])
    times, out, retakes = bench.steady_times(lambda: (next(windows), "out"))
    assert (times, out, retakes) == ([10.0, 10.1, 10.2], "out", 1)  # steady at the second take

    always_noisy = iter([[10.0, 14.0, 14.0], [10.0, 12.0, 12.0], [10.0, 13.0, 13.0], [1.0]])
    times, _, retakes = bench.steady_times(lambda: (next(always_noisy), None))
    assert (times, retakes) == ([10.0, 12.0, 12.0], 2)  # two retakes at most; the lowest median kept
