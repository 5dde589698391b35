"""Plans on CPU tensors run node by node through ATen (the default; the rest
of the suite sets DEEPVISOR_CPU=interpreter to test the lowerings): results
equal eager's and the interpreter's, no kernel runs, only ops without a
lowering count as fallbacks, and the capture's behaviours (in-place updates,
returned views, decisions on data) hold the same way."""

import pytest
import torch
import torch.nn as nn

import deepvisor
from op_cases import CASES, F32, aliased_arguments, assert_matches


@pytest.fixture
def aten_cpu(monkeypatch):
    monkeypatch.setenv("DEEPVISOR_CPU", "aten")


def compiled_in(mode, fn, monkeypatch):
    """fn compiled, its plans built with DEEPVISOR_CPU=mode."""
    g = deepvisor.compile(fn)

    def call(*args):
        monkeypatch.setenv("DEEPVISOR_CPU", mode)
        return g(*args)
    call.compiled = g
    return call


# Every 6th case of the op catalogue in float32: ATen replays the recorded ops.
SAMPLE = [pytest.param(c, id=c.name) for c in CASES[::6] if F32 in c.dtypes and not c.skips.get(("cpu", F32))]


@pytest.mark.parametrize("case", SAMPLE)
def test_op_cases_replay_through_aten(case, monkeypatch):
    args = case.args("cpu", F32)
    expected = case.fn(*args)
    aten = compiled_in("aten", case.fn, monkeypatch)
    interpreter = compiled_in("interpreter", case.fn, monkeypatch)
    tolerances = lambda dtype: case.tolerances(dtype, "cpu")  # noqa: E731
    for _ in range(2):
        got = aten(*args)
        assert_matches(got, expected, tolerances, "ATen path")
        assert_matches(got, interpreter(*args), tolerances, "ATen path against the interpreter")
    assert aliased_arguments(got, args) == aliased_arguments(expected, args)
    fresh = case.args("cpu", F32, seed=1)
    assert_matches(aten(*fresh), case.fn(*fresh), tolerances, "new inputs")
    stats = deepvisor.stats(aten.compiled)
    assert stats["kernels"] == 0 and stats["captures"] == 1 and stats["eager_calls"] == 0, stats
    assert set(stats["fallback_ops"]) <= case.allowed_fallbacks, stats["fallback_ops"]


def test_a_small_bert_equals_eager_bit_for_bit(aten_cpu):
    transformers = pytest.importorskip("transformers")
    BertConfig, BertModel = transformers.BertConfig, transformers.BertModel
    torch.manual_seed(0)
    cfg = BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=2, intermediate_size=128,
                     vocab_size=1000)
    model = BertModel(cfg).eval()
    ids, mask = torch.randint(0, 1000, (2, 16)), torch.ones(2, 16, dtype=torch.long)
    with torch.no_grad():
        g = deepvisor.compile(model)
        for _ in range(3):
            out, ref = g(ids, mask), model(ids, mask)
            assert torch.equal(out.last_hidden_state, ref.last_hidden_state)
            assert torch.equal(out.pooler_output, ref.pooler_output)
    stats = deepvisor.stats(g)
    assert stats["kernels"] == 0 and stats["fallback_ops"] == {} and stats["captures"] == 1, stats
    assert stats["extern_ops"]["aten::addmm.default"] == 13, stats  # addmm keeps its bias: no kernel reads it


def in_place_views_and_decision(x, acc):
    acc.add_(x)                       # an argument updated in place
    row = x[0]                        # a view of an argument, returned
    y = x * 2
    if y.sum() > 0:                   # a decision on data
        return y.t(), row, acc
    return -y, row, acc


def test_capture_behaviours_hold(aten_cpu):
    g = deepvisor.compile(in_place_views_and_decision)
    for seed in range(4):
        x = torch.randn(3, 4, generator=torch.Generator().manual_seed(seed))
        acc, acc_ref = torch.zeros(3, 4), torch.zeros(3, 4)
        out = g(x, acc)
        ref = in_place_views_and_decision(x, acc_ref)
        assert_matches(out, ref, lambda dtype: (0.0, 0.0))
        assert out[2] is acc and out[1]._base is x and torch.equal(acc, acc_ref)
    stats = deepvisor.stats(g)
    assert stats["kernels"] == 0 and stats["eager_calls"] == 0 and stats["versions"] <= 2, stats


def test_a_module_with_batch_norm_and_pooling(aten_cpu):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)).eval()
    x = torch.randn(2, 3, 17, 19)
    with torch.no_grad():
        g = deepvisor.compile(m)
        for _ in range(2):
            assert torch.equal(g(x), m(x))
    assert deepvisor.stats(g)["kernels"] == 0
