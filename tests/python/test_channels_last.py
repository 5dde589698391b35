"""Channels-last activations around 2-d convolutions (codegen/channels_last.h).

On a GPU in f16/bf16 the plan lays the activations between convolutions out
channels-last, as cuDNN computes them, instead of the capture's NCHW. No GPU
here: DEEPVISOR_CHANNELS_LAST=1 makes the same choice on the CPU (any dtype),
so the kernels that store and iterate in that order run in the loop-IR
interpreter and as compiled C++, against eager. CUDA plans are built (not
run) from graph text, and their kernels compiled with NVRTC."""

import re

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import deepvisor
from deepvisor import _C

CPU_MODES = ["interpreter", "compiled"]


class ConvNet(nn.Module):
    """What the evaluation CNNs do between convolutions: batch norm, relu,
    max and average pooling, a residual add, a concatenation of channels,
    nearest upsampling, grouped and depthwise convolutions, then a head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv_a = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn_a = nn.BatchNorm2d(8)
        self.conv_b = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn_b = nn.BatchNorm2d(8)
        self.side = nn.Conv2d(8, 6, 1)
        self.grouped = nn.Conv2d(14, 10, 3, padding=1, groups=2)
        self.depthwise = nn.Conv2d(10, 10, 3, padding=1, groups=10)
        self.head = nn.Linear(10, 5)
        for bn in (self.bn1, self.bn_a, self.bn_b):  # statistics that are not the identity
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.uniform_(-0.2, 0.2)

    def features(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.stem(x))), 3, 2, 1)
        y = F.relu(self.bn_a(self.conv_a(x)))
        x = F.relu(self.bn_b(self.conv_b(y)) + x)
        x = torch.cat([x, self.side(x)], dim=1)
        x = F.avg_pool2d(x, 2)
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.depthwise(F.relu(self.grouped(x)))

    def forward(self, x):
        return self.head(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


class FeatureMaps(ConvNet):
    """The last feature map itself is the output: it leaves in eager's layout."""

    def forward(self, x):
        return self.features(x) * 2.0


class Flattened(ConvNet):
    """A feature map read by a view: it stays in the layout the view was taken of."""

    def forward(self, x):
        f = F.relu(self.features(x))
        return f.view(f.shape[0], -1).sum(1)


def model(cls):
    torch.manual_seed(0)
    return cls().eval()


def channels_last_kernel_slots(executor):
    """Slots written by kernels in channels-last strides (N, C, H, W with C innermost)."""
    slots = re.findall(r"kernel \w+\[(\d+),(\d+),(\d+),(\d+)\] strides=(\d+),1,(\d+),(\d+)", executor.describe())
    return [s for s in slots if int(s[6]) == int(s[1]) and int(s[5]) == int(s[1]) * int(s[3])]


def run_compiled(m, x, autocast=False, calls=3):
    g = deepvisor.compile(m)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        want = m(x)
    # Another autocast region: its cache of cast weights starts empty, so the
    # capture records the casts (in the same region it would read cached ones).
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        for _ in range(calls):
            got = g(x)
    (executor,) = g._plans.executors()
    return want, got, executor, deepvisor.stats(g)


@pytest.mark.parametrize("cpu", CPU_MODES)
@pytest.mark.parametrize("cls", [ConvNet, FeatureMaps, Flattened])
def test_channels_last_plans_match_eager_in_float32(monkeypatch, cpu, cls):
    monkeypatch.setenv("DEEPVISOR_CHANNELS_LAST", "1")
    monkeypatch.setenv("DEEPVISOR_CPU", cpu)
    x = torch.randn(2, 3, 19, 23)
    want, got, executor, stats = run_compiled(model(cls), x)
    assert stats["graphs"] == 1 and stats["fallback_ops"] == {}, stats
    assert channels_last_kernel_slots(executor), executor.describe()
    assert got.shape == want.shape and got.stride() == want.stride()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cpu", CPU_MODES)
def test_channels_last_plans_match_eager_under_bf16_autocast(monkeypatch, cpu):
    """Autocast's casts of the weights are kernels of the plan: they write the
    bf16 weights channels-last too."""
    monkeypatch.setenv("DEEPVISOR_CHANNELS_LAST", "1")
    monkeypatch.setenv("DEEPVISOR_CPU", cpu)
    x = torch.randn(2, 3, 17, 21)
    want, got, executor, stats = run_compiled(model(FeatureMaps), x, autocast=True)
    assert stats["graphs"] == 1 and stats["fallback_ops"] == {}, stats
    weights = [s for s in channels_last_kernel_slots(executor) if s[0] in ("8", "10")]
    assert weights, executor.describe()  # conv_a/b's [8, 8, 3, 3] and the depthwise [10, 1, 3, 3] casts
    assert got.dtype == want.dtype == torch.bfloat16 and got.stride() == want.stride()
    torch.testing.assert_close(got.float(), want.float(), rtol=3e-2, atol=3e-2)


def test_a_channels_last_plan_reads_new_inputs_and_odd_layouts(monkeypatch):
    """Replays read each call's input; a non-contiguous (transposed) input
    and a channels-last one give eager's results too."""
    monkeypatch.setenv("DEEPVISOR_CHANNELS_LAST", "1")
    monkeypatch.setenv("DEEPVISOR_CPU", "interpreter")
    m = model(FeatureMaps)
    g = deepvisor.compile(m)
    with torch.no_grad():
        for x in (torch.randn(1, 3, 11, 13), torch.randn(1, 3, 11, 13),
                  torch.randn(1, 3, 13, 11).transpose(2, 3),
                  torch.randn(1, 3, 11, 13).contiguous(memory_format=torch.channels_last)):
            got, want = g(x), m(x)
            assert got.stride() == want.stride()
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("setting", [None, "0"])
def test_cpu_plans_keep_the_capture_layout_unless_asked(monkeypatch, setting):
    """By default only GPU plans in f16/bf16 change layouts; "0" never does."""
    if setting is None:
        monkeypatch.delenv("DEEPVISOR_CHANNELS_LAST", raising=False)
    else:
        monkeypatch.setenv("DEEPVISOR_CHANNELS_LAST", setting)
    monkeypatch.setenv("DEEPVISOR_CPU", "interpreter")
    want, got, executor, _ = run_compiled(model(ConvNet), torch.randn(2, 3, 19, 23))
    assert not channels_last_kernel_slots(executor), executor.describe()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def _cuda_graph_text(m, x, autocast):
    """The graph deepvisor captures of m(x) on the CPU, moved to cuda:0 (plans built, never run)."""
    import os
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        old = os.environ.get("DEEPVISOR_DUMP_DIR")
        os.environ["DEEPVISOR_DUMP_DIR"] = d
        try:
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                deepvisor.compile(m)(x)
        finally:
            if old is None:
                del os.environ["DEEPVISOR_DUMP_DIR"]
            else:
                os.environ["DEEPVISOR_DUMP_DIR"] = old
        (name,) = [f for f in os.listdir(d) if f.endswith(".dvg")]
        text = open(os.path.join(d, name)).read()
    return text.replace("device=cpu", "device=cuda:0").replace('dev:"cpu"', 'dev:"cuda:0"')


@pytest.mark.parametrize("autocast", [True, False])
def test_cuda_plans_go_channels_last_in_bf16_only(monkeypatch, autocast):
    """The default on a GPU: bf16 convolutions (autocast) get channels-last
    activations and weights, float32 ones keep NCHW (there cuDNN's NCHW
    kernels need no transposes, and the f32 model table was measured so).
    Every kernel of the plan compiles with NVRTC for sm_90."""
    monkeypatch.delenv("DEEPVISOR_CHANNELS_LAST", raising=False)
    text = _cuda_graph_text(model(FeatureMaps), torch.randn(2, 3, 19, 23), autocast)
    executor = _C.compile_graph_text(text, True)
    slots = channels_last_kernel_slots(executor)
    assert bool(slots) == autocast, executor.describe()
    assert "fallback aten::convolution.default" in executor.describe()
    executor.validate_cuda(90)


def test_cuda_channels_last_kernels_load_whole_vectors(monkeypatch):
    """A batch norm over a channels-last bf16 tensor reads its per-channel
    parameters at x % C and the tensor at x: 16-byte loads, no division by
    H*W (the NCHW kernel's x / (H*W) % C)."""
    monkeypatch.delenv("DEEPVISOR_CHANNELS_LAST", raising=False)

    class ConvBn(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64)

        def forward(self, x):
            return self.conv(F.relu(self.bn(self.conv(x)))).sum()

    text = _cuda_graph_text(model(ConvBn), torch.randn(1, 64, 24, 24), True)
    executor = _C.compile_graph_text(text, True)
    assert channels_last_kernel_slots(executor), executor.describe()
    bn = [s for s in executor.cuda_sources(90) if "% 64" in s and "sqrtf" in s]
    assert bn and all("/ 576" not in s for s in bn), bn[:1]


def bf16_model_calls(m, x, calls):
    """Calls a compiled bf16 model; the last result against eager's."""
    g = deepvisor.compile(m)
    with torch.no_grad():
        for _ in range(calls):
            got = g(x)
        torch.testing.assert_close(got.float(), m(x).float(), rtol=2e-2, atol=2e-2)
    return g


@pytest.mark.parametrize("cpu", CPU_MODES)
def test_constant_weights_are_converted_once(monkeypatch, cpu):
    """A bf16 model's weights are parameters (graph inputs): the plan copies
    those it reads channels-last (3x3 with more than one input channel a
    group: the stem, conv_a, conv_b, grouped) once, not on every call; an
    in-place update of one gives a plan that reads the new values."""
    monkeypatch.setenv("DEEPVISOR_CHANNELS_LAST", "1")
    monkeypatch.setenv("DEEPVISOR_CPU", cpu)
    m = model(ConvNet).bfloat16()
    x = torch.randn(2, 3, 15, 17, dtype=torch.bfloat16)
    g = bf16_model_calls(m, x, 4)
    assert deepvisor.stats(g)["inputs_prepared"] == 4, deepvisor.stats(g)
    with torch.no_grad():
        m.stem.weight.mul_(-1.5)
        for _ in range(2):
            got = g(x)
        torch.testing.assert_close(got.float(), m(x).float(), rtol=2e-2, atol=2e-2)
        m.conv_a.weight.data.mul_(0.5)  # moves no version counter (deepvisor/_data_watch.py)
        torch.testing.assert_close(g(x).float(), m(x).float(), rtol=2e-2, atol=2e-2)


def test_weights_cast_before_the_capture_are_cast_in_the_plan(monkeypatch):
    """Eager run first in the same autocast region: the capture still records
    the casts of the float32 parameters (not the region's cached bf16 weights,
    test_capture.py), so the plan's cast kernels write them channels-last and
    it holds no copy of its own."""
    monkeypatch.setenv("DEEPVISOR_CHANNELS_LAST", "1")
    monkeypatch.setenv("DEEPVISOR_CPU", "interpreter")
    m = model(FeatureMaps)
    x = torch.randn(2, 3, 13, 15)
    g = deepvisor.compile(m)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        want = m(x)
        for _ in range(3):
            got = g(x)
    stats = deepvisor.stats(g)
    assert stats["graphs"] == 1 and stats["inputs_prepared"] == 0, stats
    (executor,) = g._plans.executors()
    assert [s for s in channels_last_kernel_slots(executor) if s[0] in ("8", "10")], executor.describe()
    torch.testing.assert_close(got.float(), want.float(), rtol=3e-2, atol=3e-2)


def test_weight_copies_can_be_left_to_cudnn(monkeypatch):
    """DEEPVISOR_WEIGHT_COPIES=0: parameters stay in the caller's layout
    (nothing held beyond eager's memory); activations still go channels-last."""
    monkeypatch.setenv("DEEPVISOR_CHANNELS_LAST", "1")
    monkeypatch.setenv("DEEPVISOR_WEIGHT_COPIES", "0")
    monkeypatch.setenv("DEEPVISOR_CPU", "interpreter")
    g = bf16_model_calls(model(ConvNet).bfloat16(), torch.randn(2, 3, 15, 17, dtype=torch.bfloat16), 3)
    (executor,) = g._plans.executors()
    assert deepvisor.stats(g)["inputs_prepared"] == 0 and channels_last_kernel_slots(executor)


def test_values_as_strided_reads_keep_the_capture_layout(monkeypatch):
    """as_strided reinterprets memory: a convolution's result that it reads
    stays NCHW (laid out channels-last, the plan returned other elements)."""
    monkeypatch.setenv("DEEPVISOR_CHANNELS_LAST", "1")
    monkeypatch.setenv("DEEPVISOR_CPU", "interpreter")
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 3, padding=1).eval()

    def f(x):
        y = F.relu(conv(x))
        return y.as_strided((2, 8, 4, 4), (8 * 9 * 11, 9 * 11, 11, 1), 3) * 2

    x = torch.randn(2, 3, 9, 11)
    g = deepvisor.compile(f)
    with torch.no_grad():
        for _ in range(2):
            got = g(x)
        torch.testing.assert_close(got, f(x), rtol=1e-5, atol=1e-5)
