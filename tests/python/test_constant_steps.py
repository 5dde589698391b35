"""Kernels that read only a plan's constants (runtime/constant_steps.h): the
weight casts autocast puts before each convolution and linear layer run
outside the calls and their results are kept; a parameter changed in place
makes them run again before the next call reads them. Checked against eager
with each call in its own autocast region (as a user writes it; one region
across calls would let eager itself read autocast's stale cached casts)."""

import pytest
import torch
import torch.nn as nn

import deepvisor


def conv_net():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                      nn.Conv2d(8, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU(),
                      nn.Flatten(), nn.Linear(6 * 9 * 11, 5)).eval()
    with torch.no_grad():
        for bn in (m[1], m[4]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2)
    return m


def in_region(fn, x):
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        return fn(x).float()


X = torch.randn(2, 3, 9, 11, generator=torch.Generator().manual_seed(1))
# bf16 autocast: the fused kernels round at other points than eager's ops.
BF16 = dict(rtol=2e-2, atol=2e-2)


def test_weight_casts_run_once_and_again_after_an_update():
    m = conv_net()
    g = deepvisor.compile(m)
    for _ in range(3):
        torch.testing.assert_close(in_region(g, X), in_region(m, X), **BF16)
    s = deepvisor.stats(g)
    assert s["constant_kernels"] >= 3, s  # two conv weights and the linear's
    assert s["constant_kernel_runs"] == s["constant_kernels"]  # once, over three calls
    with torch.no_grad():
        m[0].weight.mul_(-1.5)  # a training step's in-place update
    torch.testing.assert_close(in_region(g, X), in_region(m, X), **BF16)
    with torch.no_grad():
        m.load_state_dict({k: v * 0.5 for k, v in conv_net().state_dict().items()})  # copies in place
    torch.testing.assert_close(in_region(g, X), in_region(m, X), **BF16)
    s2 = deepvisor.stats(g)
    assert s2["constant_kernel_runs"] == 3 * s["constant_kernels"]
    assert s2["graphs"] == 1


def test_weight_copies_off_keeps_no_result(monkeypatch):
    monkeypatch.setenv("DEEPVISOR_WEIGHT_COPIES", "0")
    m = conv_net()
    g = deepvisor.compile(m)
    for _ in range(2):
        torch.testing.assert_close(in_region(g, X), in_region(m, X), **BF16)
    assert deepvisor.stats(g)["constant_kernels"] == 0



def late_weight_net():
    """A large activation early, the large weights late, when it is gone."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(16, 256), nn.ReLU(), nn.Linear(256, 512)).eval()


@pytest.mark.parametrize("requires_grad", [True, False])
def test_results_that_would_pass_eagers_peak_are_computed_on_each_call(monkeypatch, requires_grad):
    """Kept casts cost their bytes at all times; eager holds autocast's casts of
    parameters that require grad from their first use on, and others only
    while an op reads them. Casts whose keeping would lift the plan's peak
    above eager's run on each call, more of them where eager caches none."""
    m = late_weight_net().requires_grad_(requires_grad)
    x = torch.randn(1, 3, 64, 64)
    counts = {}
    for copies in ("all", None):
        if copies:
            monkeypatch.setenv("DEEPVISOR_WEIGHT_COPIES", copies)
        else:
            monkeypatch.delenv("DEEPVISOR_WEIGHT_COPIES")
        g = deepvisor.compile(m)
        for _ in range(3):
            torch.testing.assert_close(in_region(g, x), in_region(m, x), **BF16)
        s = deepvisor.stats(g)
        counts[copies] = (s["constant_kernels"], s["constant_kernels_not_kept"])
        assert s["constant_kernel_runs"] == s["constant_kernels"], s  # the kept ones once over three calls
    kept_all, not_kept_all = counts["all"]
    kept, not_kept = counts[None]
    assert not_kept_all == 0 and kept + not_kept == kept_all
    assert not_kept >= 1  # the 256x512 weight, read after the 16x64x64 activation is gone
    if not requires_grad:
        assert kept == 0
    with torch.no_grad():
        m[6].weight.mul_(-1)  # the results computed on each call see it too
    torch.testing.assert_close(in_region(g, x), in_region(m, x), **BF16)

def test_parameters_made_in_inference_mode_are_cast_on_every_call():
    """An inference tensor counts no versions: its change would go unseen, so
    kernels that read only such constants (where the plan has any) run before
    every call."""
    with torch.inference_mode():
        m = conv_net()
        g = deepvisor.compile(m)
        for _ in range(2):
            torch.testing.assert_close(in_region(g, X), in_region(m, X), **BF16)
        m[3].weight.mul_(2)
        torch.testing.assert_close(in_region(g, X), in_region(m, X), **BF16)
    s = deepvisor.stats(g)
    assert s["constant_kernel_runs"] == 3 * s["constant_kernels"]


def test_a_constant_written_again_by_a_later_step_is_not_kept():
    """A buffer filled from constants, then scattered into from the input:
    computed on each call (kept, the scatter would change it for the next)."""
    table = torch.arange(12.0).reshape(4, 3)

    def fn(x, idx):
        base = table * 2  # reads only a constant
        return base.index_put((idx,), x, accumulate=True) + 1

    g = deepvisor.compile(fn)
    for seed in range(3):
        gen = torch.Generator().manual_seed(seed)
        x, idx = torch.randn(5, 3, generator=gen), torch.randint(0, 4, (5,), generator=gen)
        torch.testing.assert_close(g(x, idx), fn(x, idx))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_plans_without_autocast_match(dtype):
    m = conv_net().to(dtype)
    g = deepvisor.compile(m)
    x = X.to(dtype)
    with torch.no_grad():
        for _ in range(2):
            torch.testing.assert_close(g(x), m(x), **BF16)
        m[3].weight.add_(0.25)
        torch.testing.assert_close(g(x), m(x), **BF16)


class SharedWeights(nn.Module):
    """TridentNet's pattern: one convolution's weights in three dilations."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 6, 3, padding=1)

    def forward(self, x):
        return sum(nn.functional.conv2d(x, self.conv.weight, self.conv.bias, padding=d, dilation=d).relu()
                   for d in (1, 2, 3))


def test_a_weight_read_three_times_is_cast_once():
    """The capture records autocast's cast at each use (codegen/common_nodes.h
    merges them): one kept bf16 weight, as eager's cache keeps one."""
    torch.manual_seed(0)
    m = SharedWeights().eval()
    x = torch.randn(2, 4, 11, 13)
    g = deepvisor.compile(m)
    for _ in range(3):
        torch.testing.assert_close(in_region(g, x), in_region(m, x), **BF16)
    (executor,) = g._plans.executors()
    kernels = [line for line in executor.describe().splitlines() if " kernel dv_" in line]
    # The weight's cast, the bias's (a bf16 convolution on the CPU keeps its
    # bias: codegen/library_bias.cpp), the input's, and the sum of the branches.
    assert len(kernels) == 4, executor.describe()
    assert deepvisor.stats(g)["constant_kernels"] == 2


W = nn.Parameter(torch.randn(5, 7, generator=torch.Generator().manual_seed(5)))


def scaled_then_shifted(x):
    v = W * 2.0  # reads only a constant
    v.add_(x.sum())  # then changed in place by a step that reads the input
    return v * x


def cast_then_scattered(x):
    v = W.to(torch.bfloat16)
    v.index_put_((torch.tensor([1, 3]),), x[:2].to(torch.bfloat16), accumulate=True)
    return v.float() + x


def transposed_then_row_scaled(x):
    v = W.t().contiguous()
    v[0].mul_(x[0, 0])
    return v


@pytest.mark.parametrize("cpu", ["interpreter", "fused"])
@pytest.mark.parametrize("fn", [scaled_then_shifted, cast_then_scattered, transposed_then_row_scaled])
def test_a_constant_changed_in_place_by_the_program_is_never_kept_changed(monkeypatch, cpu, fn):
    monkeypatch.setenv("DEEPVISOR_CPU", cpu)
    g = deepvisor.compile(fn)
    with torch.no_grad():
        for seed in range(4):
            x = torch.randn(5, 7, generator=torch.Generator().manual_seed(seed))
            torch.testing.assert_close(g(x), fn(x))
    assert deepvisor.stats(g)["eager_calls"] == 0


def test_a_write_through_data_is_seen():
    """p.data.mul_() moves no version counter of p: every access to .data
    counts (deepvisor/_data_watch.py), and kept results are computed again."""
    m = conv_net()
    g = deepvisor.compile(m)
    for _ in range(2):
        in_region(g, X)
    runs = deepvisor.stats(g)["constant_kernel_runs"]
    m[0].weight.data.mul_(-2)
    m[7].bias.data = m[7].bias.data + 3  # a new tensor behind the same parameter
    torch.testing.assert_close(in_region(g, X), in_region(m, X), **BF16)
    assert deepvisor.stats(g)["constant_kernel_runs"] == 2 * runs


def test_data_keeps_its_meaning():
    p = nn.Parameter(torch.ones(3))
    p.data.mul_(2)
    assert isinstance(p, nn.Parameter) and p.requires_grad and p.tolist() == [2, 2, 2]
    p.data = torch.full((3,), 5.0)
    assert p.tolist() == [5, 5, 5] and not p.data.requires_grad
    x = torch.randn(3, requires_grad=True)
    y = (x * 2).sum()
    _ = x.data
    y.backward()
    assert x.grad.tolist() == [2, 2, 2]
