"""Channels-last activations on the GPU (codegen/channels_last.h): bf16
convolutions under autocast lay the activations between them out
channels-last by default; results match eager, outputs keep eager's layout,
the plan is one CUDA graph, and parameters read channels-last (a bf16
model's) are converted once. Skipped without a GPU."""

import os
import sys

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python"))
from test_channels_last import ConvNet, FeatureMaps, channels_last_kernel_slots, model  # noqa: E402
from stream_race import call_while_another_stream_recomputes  # noqa: E402

import deepvisor  # noqa: E402


@pytest.mark.parametrize("same_region", [False, True])
@pytest.mark.parametrize("cls", [ConvNet, FeatureMaps])
def test_bf16_convolutions_run_channels_last_on_the_gpu(monkeypatch, cls, same_region):
    """same_region: eager ran first in the autocast region the compiled
    calls run in (its cache holds bf16 weights; the capture records the
    casts anyway, which write the weights channels-last)."""
    monkeypatch.delenv("DEEPVISOR_CHANNELS_LAST", raising=False)
    m = model(cls).cuda()
    x = torch.randn(2, 3, 37, 41, device="cuda")
    g = deepvisor.compile(m)
    with torch.no_grad():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            want = m(x)
            if same_region:
                outs = [g(x).clone() for _ in range(4)]
        if not same_region:
            outs = []
            for _ in range(4):
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    outs.append(g(x).clone())
    torch.cuda.synchronize()
    stats = deepvisor.stats(g)
    assert stats["graphs"] == 1 and stats["fallback_ops"] == {} and stats["eager_calls"] == 0, stats
    assert stats["cuda_graphs"] == 1, stats
    (executor,) = g._plans.executors()
    assert channels_last_kernel_slots(executor), executor.describe()
    assert stats["inputs_prepared"] == 0, stats
    for got in outs:
        assert got.stride() == want.stride()
        torch.testing.assert_close(got.float(), want.float(), rtol=3e-2, atol=3e-2)


def test_bf16_parameters_are_converted_once_on_the_gpu(monkeypatch):
    monkeypatch.delenv("DEEPVISOR_CHANNELS_LAST", raising=False)
    m = model(ConvNet).cuda().bfloat16()
    x = torch.randn(2, 3, 29, 31, device="cuda", dtype=torch.bfloat16)
    g = deepvisor.compile(m)
    with torch.no_grad():
        outs = [g(x).clone() for _ in range(4)]
        want = m(x)
    stats = deepvisor.stats(g)
    assert stats["inputs_prepared"] == 4 and stats["cuda_graphs"] == 1, stats
    for got in outs:
        torch.testing.assert_close(got.float(), want.float(), rtol=3e-2, atol=3e-2)


@pytest.mark.parametrize("graphs", ["graphs", "steps"])
def test_a_call_on_another_stream_waits_for_the_converted_parameters(monkeypatch, graphs):
    """A bf16 model's parameters are converted to channels-last once and
    kept; after they change in place, the conversion runs again on stream s1,
    queued behind a long sleep. A call on s2 enqueued meanwhile must wait for
    it, not read the old copies (they are deepvisor's, so the user cannot
    order s2 after them)."""
    monkeypatch.delenv("DEEPVISOR_CHANNELS_LAST", raising=False)
    if graphs == "steps":
        monkeypatch.setenv("DEEPVISOR_CUDA_GRAPHS", "0")
    m = model(ConvNet).cuda().bfloat16()
    x = torch.randn(2, 3, 29, 31, device="cuda", dtype=torch.bfloat16)
    g = deepvisor.compile(m)
    with torch.no_grad():
        for _ in range(3):
            g(x)
        got = call_while_another_stream_recomputes(g, m, (x,), (x,))
        want = m(x)
    torch.testing.assert_close(got.float(), want.float(), rtol=3e-2, atol=3e-2)
    if graphs == "steps":  # (a graphed plan converts them inside its graph after the change)
        assert deepvisor.stats(g)["inputs_prepared"] >= 8, deepvisor.stats(g)


def test_float32_convolutions_keep_nchw_by_default(monkeypatch):
    monkeypatch.delenv("DEEPVISOR_CHANNELS_LAST", raising=False)
    m = model(FeatureMaps).cuda()
    x = torch.randn(2, 3, 21, 19, device="cuda")
    g = deepvisor.compile(m)
    with torch.no_grad():
        for _ in range(3):
            got = g(x)
        want = m(x)
    (executor,) = g._plans.executors()
    assert not channels_last_kernel_slots(executor), executor.describe()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_weight_casts_are_kept_and_redone_after_an_update_on_the_gpu(monkeypatch):
    """The bf16 channels-last weight casts read only parameters: they run
    outside the CUDA graph, once, and again (into the same memory, so the
    graph stays) after an in-place update (runtime/constant_steps.h)."""
    monkeypatch.delenv("DEEPVISOR_CHANNELS_LAST", raising=False)
    monkeypatch.setenv("DEEPVISOR_WEIGHT_COPIES", "all")  # kept whatever eager's memory (kept_constants.h)
    m = model(ConvNet).cuda()
    x = torch.randn(2, 3, 37, 41, device="cuda")
    g = deepvisor.compile(m)

    def both():
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            got = g(x).clone()
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            return got, m(x)

    for _ in range(4):
        got, want = both()
        torch.testing.assert_close(got.float(), want.float(), rtol=3e-2, atol=3e-2)
    s = deepvisor.stats(g)
    assert s["constant_kernels"] >= 5 and s["constant_kernel_runs"] == s["constant_kernels"], s
    assert s["cuda_graphs"] == 1, s
    for step in range(2):
        with torch.no_grad():
            for p in m.parameters():
                p.mul_(-0.75 if step == 0 else 1.25)
        got, want = both()
        torch.testing.assert_close(got.float(), want.float(), rtol=3e-2, atol=3e-2)
    s2 = deepvisor.stats(g)
    assert s2["constant_kernel_runs"] == 3 * s["constant_kernels"] and s2["cuda_graphs"] == 1, s2


@pytest.mark.parametrize("requires_grad", [True, False])
def test_kept_weight_casts_stay_within_eagers_peak_memory(monkeypatch, requires_grad):
    """A 16 MB activation early and a 4096x4096 linear layer late: keeping its
    32 MB bf16 cast would put the plan that much above eager where eager
    casts it only while it is used (parameters that do not require grad);
    the plan computes it on each call instead (codegen/kept_constants.h).
    Measured: torch.cuda.max_memory_allocated over calls, eager's first."""
    monkeypatch.delenv("DEEPVISOR_WEIGHT_COPIES", raising=False)
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(4),
                            torch.nn.Flatten(), torch.nn.Linear(512, 4096), torch.nn.ReLU(),
                            torch.nn.Linear(4096, 4096)).cuda().eval().requires_grad_(requires_grad)
    x = torch.randn(1, 3, 512, 512, device="cuda")

    def peak(fn):
        out = None
        for _ in range(3):
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                out = fn(x)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        for _ in range(3):
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                out = fn(x)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated(), out

    eager_peak, want = peak(m)
    del want
    g = deepvisor.compile(m)
    dv_peak, got = peak(g)
    s = deepvisor.stats(g)
    assert s["cuda_graphs"] == 1 and s["constant_kernels_not_kept"] >= 1, s
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        torch.testing.assert_close(got.float(), m(x).float(), rtol=3e-2, atol=3e-2)
    assert dv_peak <= eager_peak + (1 << 20), (dv_peak / 2**20, eager_peak / 2**20, s)
