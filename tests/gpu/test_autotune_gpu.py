"""Kernel configurations chosen by measurement (runtime/autotune) on a GPU:
every candidate configuration of softmax, layer_norm, pointwise and column
reductions (f32 and bf16, odd sizes) against eager; autotuning on by default
with its stats; a warm start (another process over the same disk cache, or a
new executor in this one) times nothing; DEEPVISOR_AUTOTUNE_LOCK makes the
timing wait for a lock that another process holds. Skipped without a GPU."""

import json
import os
import subprocess
import sys
import time

import pytest
import torch

import deepvisor

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def softmax(x):
    return torch.softmax(x * 1.5, -1)


def layer_norm(x, w, b):
    return torch.nn.functional.layer_norm(x, x.shape[-1:], w, b)


def pointwise(x, w, b):
    return torch.nn.functional.gelu(x * 1.5 + 0.3) * torch.sigmoid(x) + b


def column_sum(x):
    return (x * 2).sum(0)


def transposed(x):
    return torch.sigmoid(x.t() * 1.5 + 1)


def inputs(rows, cols, dtype):
    torch.manual_seed(0)
    x = torch.randn(rows, cols, device="cuda", dtype=dtype)
    w = torch.randn(cols, device="cuda", dtype=dtype)
    b = torch.randn(cols, device="cuda", dtype=dtype)
    return x, w, b


CASES = [
    (softmax, 1), (layer_norm, 3), (pointwise, 3), (column_sum, 1), (transposed, 1),
]
# Long rows (one looped step in f32), odd rows, rows longer than a block
# holds, many short rows; each large enough to have alternatives.
SHAPES = [(4096, 4096), (2053, 1000), (8, 65536), (16384, 768)]


def tolerance(dtype):
    return dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)


def reference(fn, args):
    """Eager in float32 over the same inputs: a fused kernel computes in
    float32 and rounds once, where eager bfloat16 rounds after every op (on
    the 4096x4096 pointwise chain, 3 elements of 16M differ by 0.04 between
    the two ways, more than the tolerance, with every candidate alike)."""
    return fn(*[a.float() for a in args])


@pytest.mark.parametrize("force", range(12))  # kMaxCandidates
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_every_candidate_matches_eager(force, dtype, monkeypatch):
    monkeypatch.setenv("DEEPVISOR_AUTOTUNE_FORCE", str(force))
    for fn, nargs in CASES:
        for rows, cols in SHAPES:
            args = inputs(rows, cols, dtype)[:nargs]
            g = deepvisor.compile(fn)
            with torch.no_grad():
                got = g(*args)
                got = g(*args)
                ref = reference(fn, args)
            torch.testing.assert_close(got.float(), ref, **tolerance(dtype),
                                       msg=lambda m: f"{fn.__name__} {rows}x{cols} candidate {force}: {m}")


@pytest.mark.parametrize("force", range(12))  # kMaxCandidates
def test_every_candidate_with_size_arguments(force, monkeypatch):
    monkeypatch.setenv("DEEPVISOR_AUTOTUNE_FORCE", str(force))
    monkeypatch.setenv("DEEPVISOR_SIZE_ARGS", "1")
    for fn, nargs in CASES:
        g = deepvisor.compile(fn)
        for rows, cols in [(2053, 1000), (4096, 1000), (4095, 999)]:  # a second value makes the size symbolic
            args = inputs(rows, cols, torch.float32)[:nargs]
            with torch.no_grad():
                got = g(*args)
                got = g(*args)
                ref = fn(*args)
            torch.testing.assert_close(got, ref, **tolerance(torch.float32),
                                       msg=lambda m: f"{fn.__name__} {rows}x{cols} candidate {force}: {m}")


def big_program(x, w, b):
    y = torch.nn.functional.gelu(x * 1.5 + 0.3) * torch.sigmoid(x)
    return torch.softmax(y, -1), torch.nn.functional.layer_norm(y, y.shape[-1:], w, b), (y * 2).sum(0)


def test_autotuned_results_and_a_warm_start_in_process(monkeypatch):
    monkeypatch.delenv("DEEPVISOR_AUTOTUNE", raising=False)
    monkeypatch.delenv("DEEPVISOR_AUTOTUNE_FORCE", raising=False)
    x, w, b = inputs(4096, 2048, torch.float32)
    g = deepvisor.compile(big_program)
    with torch.no_grad():
        got = g(x, w, b)
        got = g(x, w, b)
    for o, r in zip(got, big_program(x, w, b)):
        torch.testing.assert_close(o, r, rtol=1e-4, atol=1e-4)
    s = deepvisor.stats(g)
    assert s["kernels_autotuned"] + s["autotune_cache_hits"] > 0, s
    # A new executor (same process): every choice from memory, nothing timed.
    g2 = deepvisor.compile(big_program)
    with torch.no_grad():
        got2 = g2(x, w, b)
    for o, r in zip(got2, got):
        torch.testing.assert_close(o, r, rtol=1e-5, atol=1e-5)
    s2 = deepvisor.stats(g2)
    # (its kernels may come from the process's compiled kernels without a lookup)
    assert s2["kernels_autotuned"] == 0 and s2["autotune_s"] == 0 and s2["nvrtc_compiles"] == 0, s2


CHILD = r"""
import json, sys, torch, deepvisor
def f(x, w, b):
    y = torch.nn.functional.gelu(x * 1.5 + 0.3) * torch.sigmoid(x)
    return torch.softmax(y, -1), torch.nn.functional.layer_norm(y, y.shape[-1:], w, b), (y * 2).sum(0)
torch.manual_seed(0)
x, w, b = torch.randn(3000, 3000, device="cuda"), torch.randn(3000, device="cuda"), torch.randn(3000, device="cuda")
g = deepvisor.compile(f)
with torch.no_grad():
    g(x, w, b)
    out = g(x, w, b)
ok = all(torch.allclose(o, r, rtol=1e-4, atol=1e-4) for o, r in zip(out, f(x, w, b)))
s = deepvisor.stats(g)
print(json.dumps(dict(ok=ok, **{k: s[k] for k in ("kernels", "nvrtc_compiles", "disk_cache_hits", "kernels_autotuned",
                                                "autotune_s", "autotune_cache_hits", "autotune_compiles")})))
"""


def run_child(cache_dir, **env):
    env = dict(os.environ, DEEPVISOR_CACHE_DIR=str(cache_dir), DEEPVISOR_STRICT="1", **env)
    env.pop("DEEPVISOR_AUTOTUNE_FORCE", None)
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_second_process_measures_nothing(tmp_path):
    first = run_child(tmp_path, DEEPVISOR_AUTOTUNE="1")
    second = run_child(tmp_path, DEEPVISOR_AUTOTUNE="1")
    print(f"cold: {first}\nwarm: {second}")
    assert first["ok"] and second["ok"]
    assert first["kernels_autotuned"] > 0 and first["autotune_compiles"] > 0, first
    assert second["kernels_autotuned"] == 0 and second["autotune_s"] == 0, second
    assert second["autotune_cache_hits"] == first["kernels_autotuned"], (first, second)
    # (a choice's kernel and its default form may both be read from the disk cache)
    assert second["nvrtc_compiles"] == 0 and second["disk_cache_hits"] >= second["kernels"], second


def test_autotune_off_uses_the_heuristic(tmp_path):
    s = run_child(tmp_path, DEEPVISOR_AUTOTUNE="0")
    assert s["ok"] and s["kernels_autotuned"] == 0 and s["autotune_cache_hits"] == 0, s
    assert s["autotune_compiles"] == 0 and 0 < s["nvrtc_compiles"] <= s["kernels"], s


def test_cold_l2_timing_chooses_and_matches(tmp_path):
    # DEEPVISOR_AUTOTUNE_COLD_L2=1: each candidate launch timed alone after the L2 is overwritten.
    s = run_child(tmp_path, DEEPVISOR_AUTOTUNE="1", DEEPVISOR_AUTOTUNE_COLD_L2="1")
    assert s["ok"] and s["kernels_autotuned"] > 0 and s["autotune_compiles"] > 0, s


HOLDER = r"""
import fcntl, sys, time
with open(sys.argv[1], "a") as f:
    fcntl.lockf(f, fcntl.LOCK_EX)
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_candidates_are_timed_only_while_the_lock_is_free(tmp_path):
    # DEEPVISOR_AUTOTUNE_LOCK: another process holds the file's lock for 4 s; the child's first call compiles
    # meanwhile but times its candidates only after the holder lets go, and then autotunes as usual.
    lock = tmp_path / "turn.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock), "4"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.perf_counter()
        s = run_child(tmp_path / "cache", DEEPVISOR_AUTOTUNE="1", DEEPVISOR_AUTOTUNE_LOCK=str(lock))
        waited = time.perf_counter() - t0
    finally:
        holder.wait()
    assert s["ok"] and s["kernels_autotuned"] > 0, s
    assert waited >= 3.5, waited
    # Unset: nothing waits (the same child, a cold cache of its own).
    free = run_child(tmp_path / "cache2", DEEPVISOR_AUTOTUNE="1")
    assert free["ok"] and free["kernels_autotuned"] > 0, free


def test_an_unusable_lock_path_times_without_it(tmp_path):
    s = run_child(tmp_path, DEEPVISOR_AUTOTUNE="1", DEEPVISOR_AUTOTUNE_LOCK=str(tmp_path / "missing" / "turn.lock"))
    assert s["ok"] and s["kernels_autotuned"] > 0, s
