"""Behaviour of deepvisor.compile on CPU tensors: guards and recapture,
fusion of the issue's example, fallbacks, eager runs with reasons, in-place
updates, modules, autograd, output structures, edge-case tensors and the dump
tool."""

import os
import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import deepvisor
from op_cases import assert_matches

REPO = Path(__file__).resolve().parents[2]
DVDUMP = REPO / "build" / "tools" / "dvdump"


def f32_tolerance(dtype):
    return {torch.float32: (1e-5, 1e-5), torch.bfloat16: (1.6e-2, 1.6e-2)}.get(dtype, (0.0, 0.0))


def randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def run_twice(fn, *args):
    """Compiles fn, captures and replays it; returns (compiled, replay output)."""
    g = deepvisor.compile(fn)
    g(*args)
    return g, g(*args)


def pointwise_and_softmax(x):
    return torch.softmax(torch.exp(x) * 0.5 - x, dim=-1)


# -- guards ----------------------------------------------------------------------------


def test_new_shape_captures_again_and_both_shapes_replay():
    g = deepvisor.compile(pointwise_and_softmax)
    small, large = randn(3, 5), randn(37, 129, seed=1)
    g(small)
    g(small)
    g(large)  # guard miss: a second capture
    stats = deepvisor.stats(g)
    assert stats["captures"] == 2 and stats["guard_misses"] == 1 and stats["cache_hits"] == 1, stats
    for x in (randn(3, 5, seed=2), randn(37, 129, seed=3), randn(3, 5, seed=4)):
        assert_matches(g(x), pointwise_and_softmax(x), f32_tolerance)
    stats = deepvisor.stats(g)
    assert stats["captures"] == 2 and stats["cache_hits"] == 4 and stats["eager_calls"] == 0, stats


def test_new_dtype_captures_again():
    g = deepvisor.compile(pointwise_and_softmax)
    x32, x16 = randn(8, 33), randn(8, 33, dtype=torch.bfloat16)
    for x in (x32, x32, x16, x16, x32):
        out = g(x)
        assert out.dtype == x.dtype
        assert_matches(out, pointwise_and_softmax(x), f32_tolerance)
    stats = deepvisor.stats(g)
    assert stats["captures"] == 2 and stats["cache_hits"] == 3, stats


def test_new_strides_capture_again():
    g = deepvisor.compile(pointwise_and_softmax)
    x = randn(9, 17)
    g(x)
    g(x)
    t = randn(17, 9, seed=1).t()  # same shape, transposed strides
    assert_matches(g(t), pointwise_and_softmax(t), f32_tolerance)
    assert_matches(g(t), pointwise_and_softmax(t), f32_tolerance)
    stats = deepvisor.stats(g)
    assert stats["captures"] == 2 and stats["cache_hits"] == 2, stats


def test_non_tensor_argument_is_guarded_by_value():
    def scale(x, factor):
        return x * factor + 1

    g = deepvisor.compile(scale)
    x = randn(4, 6)
    for factor in (2.0, 2.0, 3.0, 3.0):
        assert_matches(g(x, factor), scale(x, factor), f32_tolerance)
    stats = deepvisor.stats(g)
    assert stats["captures"] == 2 and stats["cache_hits"] == 2, stats


# -- the issue's example ---------------------------------------------------------------


def issue_example(x, w, b):
    y = F.gelu(x * 1.5 + 0.3) * torch.sigmoid(x)
    y = torch.softmax(y, dim=-1)
    return F.layer_norm(y, (y.shape[-1],), w, b)


@pytest.mark.parametrize("shape", [(37, 129), (4, 8, 256)])
def test_issue_example_is_one_kernel(shape):
    x, w, b = randn(*shape), randn(shape[-1], seed=1), randn(shape[-1], seed=2)
    g, out = run_twice(issue_example, x, w, b)
    assert_matches(out, issue_example(x, w, b), lambda dt: (1e-5, 1e-5))
    stats = deepvisor.stats(g)
    assert stats["kernels"] == 1, stats
    assert stats["fallback_ops"] == {} and stats["eager_calls"] == 0, stats
    x2 = randn(*shape, seed=5)
    assert_matches(g(x2, w, b), issue_example(x2, w, b), lambda dt: (1e-5, 1e-5))


def test_issue_example_bf16():
    x, w, b = (randn(37, 129, dtype=torch.bfloat16), randn(129, seed=1, dtype=torch.bfloat16),
               randn(129, seed=2, dtype=torch.bfloat16))
    g, out = run_twice(issue_example, x, w, b)
    # Eager rounds to bf16 after every op, deepvisor once at the end; the
    # layer norm divides by the (small) spread of softmax outputs, which
    # magnifies eager's intermediate rounding.
    assert_matches(out, issue_example(x, w, b), lambda dt: (5e-2, 5e-2))
    assert deepvisor.stats(g)["kernels"] == 1


# -- fallbacks and eager runs -------------------------------------------------------------


def with_unlowered_ops(x):
    return torch.cumprod(x, dim=0) * 2 + torch.sort(x, dim=-1).values


def test_op_without_lowering_runs_as_fallback_inside_the_plan():
    x = randn(6, 9)
    g, out = run_twice(with_unlowered_ops, x)
    assert_matches(out, with_unlowered_ops(x), f32_tolerance)
    stats = deepvisor.stats(g)
    assert stats["fallback_ops"] == {"aten::cumprod.default": 1, "aten::sort.default": 1}, stats
    assert stats["captures"] == 1 and stats["cache_hits"] == 1 and stats["eager_calls"] == 0, stats
    assert stats["kernels"] >= 1, stats
    x2 = randn(6, 9, seed=1)
    assert_matches(g(x2), with_unlowered_ops(x2), f32_tolerance)


def test_fallback_output_feeds_a_reduction_kernel():
    def fn(x):
        return torch.cumprod(x, dim=1).amax(dim=1) + x.sum(dim=1)

    x = randn(7, 11)
    g, out = run_twice(fn, x)
    assert_matches(out, fn(x), f32_tolerance)
    assert deepvisor.stats(g)["fallback_ops"] == {"aten::cumprod.default": 1}


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _masked(x):
    y = torch.sin(x) * 2  # work the cut does not need: it runs after it, with the rest
    picked = x[x > 0]
    return picked.sum() * y + picked.numel()  # Python reads the count too


def _uniques(x):
    return torch.unique(x.round()).sum() + x


def _nonzero_then_gather(x):
    rows = torch.nonzero(x[:, 0] > 0).flatten()
    return torch.cos(x[rows]).sum(0) + torch.bincount(rows, minlength=1).float().mean()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("fn", [_masked, _uniques, _nonzero_then_gather], ids=lambda f: f.__name__.strip("_"))
def test_sizes_that_depend_on_the_data_choose_the_version(fn, device):
    """Boolean-mask indexing, unique, nonzero and bincount return as many
    elements as the data says. The graph is cut after such an op and the
    sizes it gave choose the version of what follows, as a value Python
    reads does: a count seen before replays, a new one captures once. (Before,
    a new count made the version eager for good.)"""
    g = deepvisor.compile(fn)
    inputs = [randn(9, 7, seed=seed).to(device) for seed in (0, 1, 2)]
    for x in inputs + inputs:
        assert_matches(g(x), fn(x), f32_tolerance)
    stats = deepvisor.stats(g)
    assert stats["eager_calls"] == 0, stats["eager_reasons"]
    assert stats["captures"] <= 3 and stats["cache_hits"] >= 3, stats


def _rows_where(x, w):
    picked = x[x[:, 0] > 0]                       # u0 rows
    h = torch.softmax(picked @ w, dim=1) * 2      # work on the u0 rows, compiled per count
    return h.sum(0), h


def _two_counts(x, w):
    picked = x[x[:, 0] > 0]
    rows = torch.nonzero(picked[:, 1] > -1e9).flatten()  # u1 of the u0 rows (all of them)
    h = torch.tanh(picked[rows] @ w)
    return h.sum(0) + torch.bincount(rows).float().sum(), picked * 3


def _then_a_decision(x, w):
    h = torch.relu(x[x[:, 0] > 0] @ w)
    if h.sum() > 1:  # a decision after the count, on the rows sized by the data
        return h * 2
    return h - 1


def _count_rows(n, seed, cols=5, rows=11):
    """x of `rows` rows of which exactly n have a positive first column."""
    x = randn(rows, cols, seed=seed)
    x[:, 0] = -x[:, 0].abs() - 0.1
    x[:n, 0] = x[:n, 0].abs()
    return x[torch.randperm(rows, generator=torch.Generator().manual_seed(seed))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("fn", [_rows_where, _two_counts, _then_a_decision],
                         ids=lambda f: f.__name__.strip("_"))
def test_counts_that_change_on_every_call_need_no_capture_each(fn, device):
    """A second count captures once more with the counts symbolic (as a
    dimension that takes a second value does): from then on every count of
    at least 2 replays, what follows the cut compiled per count from the
    capture's template (no capture; kernels from the cache). 0 and 1 stay
    versions of their own. Every call matches eager, poisoned outputs."""
    g = deepvisor.compile(fn)
    w = randn(5, 4, seed=9).to(device)
    for seed, n in enumerate([3, 5, 2, 7, 11, 4, 6, 8, 9, 10, 0, 1, 5, 0, 1, 3]):
        x = _count_rows(n, seed).to(device)
        assert_matches(g(x, w), fn(x, w), f32_tolerance)
    stats = deepvisor.stats(g)
    assert stats["eager_calls"] == 0, stats["eager_reasons"]
    # 3 (the first count), 5 (counts symbolic), 0 and 1 (and for the decision
    # after the count, 1 with its other outcome): at most 5 captures in 16 calls
    assert stats["captures"] <= 5 and stats["cache_hits"] >= 11, stats
    assert "count instances" in deepvisor.explain(g)


@pytest.mark.parametrize("device", DEVICES)
def test_a_mixture_of_experts_routing_replays_every_call(device):
    """Top-1 routing: each expert takes the rows routed to it, a count that
    changes on every call. (Before counts were symbolic: 14 captures, then
    every call eager, in 30 calls.)"""
    torch.manual_seed(0)
    experts = nn.ModuleList(nn.Linear(16, 16) for _ in range(4)).eval().to(device)
    gate = nn.Linear(16, 4).eval().to(device)

    def moe(x):
        weight, top = torch.softmax(gate(x), -1).max(-1)
        out = torch.zeros_like(x)
        for e, expert in enumerate(experts):
            rows = torch.nonzero(top == e).flatten()
            out.index_add_(0, rows, expert(x[rows]) * weight[rows, None])
        return out

    g = deepvisor.compile(moe)
    with torch.no_grad():
        for seed in range(30):
            x = randn(64, 16, seed=seed).to(device)
            assert_matches(g(x), moe(x), f32_tolerance)
    stats = deepvisor.stats(g)
    assert stats["eager_calls"] == 0 and stats["captures"] <= 6 and stats["cache_hits"] >= 24, stats


def test_counts_on_the_cpu_compile_no_kernels_per_count(monkeypatch, tmp_path):
    """Under the default DEEPVISOR_CPU (fused: kernels compiled to C++), the
    generated C++ of a segment compiled for a new count takes its sizes as
    arguments: after the first new count's executor, no host compile per
    count."""
    from deepvisor import _C
    if not _C.host_compiler_available():
        pytest.skip("no host C++ compiler")
    monkeypatch.setenv("DEEPVISOR_CPU", "fused")
    monkeypatch.setenv("DEEPVISOR_CACHE_DIR", str(tmp_path))  # every compile counted
    w = randn(5, 4, seed=9)
    g = deepvisor.compile(_rows_where)
    for seed, n in enumerate([3, 5, 2, 7, 9, 4, 6, 8]):
        x = _count_rows(n, seed)
        assert_matches(g(x, w), _rows_where(x, w), f32_tolerance)
        if seed == 2:  # the counts' capture, then the first new count
            first = deepvisor.stats(g)["host_compiles"]
    stats = deepvisor.stats(g)
    assert stats["count_instances"] >= 5 and first > 0 and stats["host_compiles"] == first, stats
    assert stats["cpu_interpreted_kernels"] == 0, stats["cpu_interpreted_reasons"]


def test_counts_that_outrun_the_executors_held_make_the_plan_eager(monkeypatch):
    """Each count compiles an executor for the segment after it, the last
    MAX_COUNTS kept. Where most compiles replace a held one (the counts
    spread wider than the cache), compiling costs more than eager: the plan
    runs eagerly from then on, with the reason. Counts that fit keep it."""
    from deepvisor import _shapes
    monkeypatch.setattr(_shapes._Instance, "MAX_COUNTS", 2)
    w = randn(5, 4, seed=9)
    g = deepvisor.compile(_rows_where)
    for seed in range(90):
        x = _count_rows(2 + seed % 9, seed)
        assert_matches(g(x, w), _rows_where(x, w), f32_tolerance)
    stats = deepvisor.stats(g)
    assert any("counts change faster" in r for r in stats["eager_reasons"]), stats["eager_reasons"]
    g = deepvisor.compile(_rows_where)
    for seed in range(90):
        x = _count_rows(2 + seed % 2, seed)
        assert_matches(g(x, w), _rows_where(x, w), f32_tolerance)
    assert deepvisor.stats(g)["eager_calls"] == 0


def test_an_op_that_assumes_a_count_keeps_it_a_version():
    """picked + w needs as many rows as w has: the shadow's add makes u0 = 7,
    so the capture stays static, and another count raises as eager does."""
    w = randn(7, 5, seed=3)

    def fn(x):
        return x[x[:, 0] > 0] + w

    g = deepvisor.compile(fn)
    for seed in range(3):
        x = _count_rows(7, seed)
        assert_matches(g(x), fn(x), f32_tolerance)
    with pytest.raises(RuntimeError, match="size of tensor"):
        g(_count_rows(4, 5))
    assert deepvisor.stats(g)["eager_calls"] == 0


def test_past_max_versions_new_data_dependent_sizes_run_eagerly(monkeypatch):
    from deepvisor import _compiled
    monkeypatch.setattr(_compiled, "MAX_SIZE_VERSIONS", 2)
    g = deepvisor.compile(_masked)
    for seed in range(4):
        x = randn(9, 7, seed=seed)
        assert_matches(g(x), _masked(x), f32_tolerance)
    stats = deepvisor.stats(g)
    assert stats["captures"] == 2 and stats["eager_calls"] == 2, stats
    assert any("sizes of a result that depends on the data" in r and "took more than 2 values" in r
               for r in stats["eager_reasons"]), stats["eager_reasons"]


def test_an_out_variant_whose_size_depends_on_the_data_makes_that_version_eager():
    """nonzero(out=): the written buffer's new size is no decision yet: a
    replay with another count runs eagerly, with the reason, never stale."""
    def fn(x):
        buf = torch.empty(0, 2, dtype=torch.long)
        torch.nonzero(x > 0, out=buf)
        return buf.sum() + x

    g = deepvisor.compile(fn)
    for seed in range(4):
        x = randn(5, 7, seed=seed)
        assert_matches(g(x), fn(x), f32_tolerance)
    reasons = " ".join(deepvisor.stats(g)["eager_reasons"])
    assert "depends on the data" in reasons and "internal failure" not in reasons, reasons


def test_library_calls_read_views_of_their_operands_without_copies():
    """nn.Linear's weight transpose and the reshapes around addmm are views
    the library call reads through its layout: no kernel copies them, and a
    layer norm read by two projections is written once (3 kernels: the norm,
    the two epilogues). Also through a non-contiguous input and a 4-d bmm."""
    torch.manual_seed(0)
    lin, lin2, norm = nn.Linear(8, 16).eval(), nn.Linear(8, 16).eval(), nn.LayerNorm(8).eval()

    def fn(x):
        h = norm(x)
        return torch.relu(lin(h)) + 1, lin2(h) * 2

    with torch.no_grad():
        x = randn(2, 3, 8)
        g, out = run_twice(fn, x)
        assert_matches(out, fn(x), f32_tolerance)
        stats = deepvisor.stats(g)
        assert stats["kernels"] == 3 and stats["fallback_ops"] == {}, stats
        assert stats["extern_ops"] == {"aten::mm.default": 2}, stats  # the biases are in the epilogues

        def attention_scores(q, k):
            return torch.softmax(q.transpose(1, 2) @ k.transpose(1, 2).transpose(-1, -2), dim=-1)

        q, k = randn(2, 5, 3, 4, seed=1), randn(2, 5, 3, 4, seed=2).transpose(0, 0)
        g, out = run_twice(attention_scores, q, k)
        assert_matches(out, attention_scores(q, k), f32_tolerance)
        for seed in (3, 4):
            q, k = randn(2, 5, 3, 4, seed=seed), randn(2, 5, 3, 4, seed=seed + 10)
            assert_matches(g(q, k), attention_scores(q, k), f32_tolerance)


def test_work_repeated_on_the_same_values_runs_once():
    """A node that repeats an earlier one (same op, operands and arguments:
    a projection, a convolution run again on the same input) is computed
    once (codegen/common_nodes.h); random draws are not merged, nor results
    that leave the call (eager returns distinct tensors)."""
    torch.manual_seed(0)
    lin, conv = nn.Linear(8, 16).eval(), nn.Conv2d(3, 4, 3).eval()

    def repeated(x, img):
        h = torch.relu(lin(x)) + lin(x) * 2
        return h, conv(img).sigmoid() + conv(img).tanh()

    with torch.no_grad():
        x, img = randn(2, 3, 8), randn(2, 3, 9, 7)
        g, out = run_twice(repeated, x, img)
        assert_matches(out, repeated(x, img), f32_tolerance)
        extern = deepvisor.stats(g)["extern_ops"]
        assert extern.get("aten::mm.default", 0) + extern.get("aten::addmm.default", 0) == 1, extern
        assert sum(n for op, n in extern.items() if "convolution" in op) == 1, extern

    def draws(x):
        return torch.rand_like(x) - torch.rand_like(x), torch.dropout(x, 0.5, True) - torch.dropout(x, 0.5, True)

    g, (a, b) = run_twice(draws, torch.ones(64))
    assert (a != 0).any() and (b != 0).any()

    def returned_twice(x):
        return x.exp(), x.exp()

    g, (p, q) = run_twice(returned_twice, randn(5))
    p.zero_()
    assert_matches(q, randn(5).exp(), f32_tolerance)


def test_a_split_read_by_attention_is_a_view_not_a_copy():
    """GPT-2's fused QKV projection split into heads for attention: the split
    and head views run as ATen views (no kernel, no fallback)."""
    torch.manual_seed(0)
    qkv = nn.Linear(12, 36).eval()

    def attention(x):
        q, k, v = qkv(x).split(12, dim=2)
        heads = [t.view(2, 5, 3, 4).transpose(1, 2) for t in (q, k, v)]
        return F.scaled_dot_product_attention(*heads, is_causal=True)

    with torch.no_grad():
        x = randn(2, 5, 12)
        g, out = run_twice(attention, x)
        assert_matches(out, attention(x), f32_tolerance)
        stats = deepvisor.stats(g)
        assert stats["fallback_ops"] == {} and stats["kernels"] == 0, stats
        x = randn(2, 5, 12, seed=3)
        assert_matches(g(x), attention(x), f32_tolerance)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_matmuls_bias_moves_into_the_kernel_that_reads_its_product(dtype):
    """addmm read only by kernels runs as mm, its bias added by the kernel that
    follows (GELU; residual add and layer norm; torch.addmm with beta); a
    projection returned as it is, or read by attention, keeps addmm. Odd
    sizes, a non-contiguous input, several calls with new values. A bf16
    product on the CPU keeps its bias: ATen adds it there before rounding."""
    torch.manual_seed(0)
    up, down, q = nn.Linear(13, 29), nn.Linear(29, 13), nn.Linear(13, 13)
    for m in (up, down, q):
        m.to(dtype).eval()
    bias = torch.randn(29, dtype=dtype)

    def block(x):
        h = F.gelu(up(x))
        y = F.layer_norm(down(h) + x, (13,))
        scaled = torch.relu(torch.addmm(bias, x.reshape(-1, 13), up.weight.t(), beta=0.5))
        query = q(x).view(x.shape[0], x.shape[1], 1, 13).transpose(1, 2)
        attn = F.scaled_dot_product_attention(query, query, query)
        return y, scaled, q(x), attn

    with torch.no_grad():
        x = randn(3, 7, 13, dtype=dtype)
        g, out = run_twice(block, x)
        assert_matches(out, block(x), f32_tolerance)
        stats = deepvisor.stats(g)
        assert stats["fallback_ops"] == {}, stats
        extern = stats["extern_ops"]
        split = 3 if dtype == torch.float32 else 0
        # Five projections, the two q(x) computed once (codegen/common_nodes.h).
        assert extern.get("aten::mm.default", 0) == split and extern["aten::addmm.default"] == 4 - split, extern
        # A non-contiguous input: F.linear takes another path (matmul, then add).
        for seed in (1, 2):
            x = randn(7, 3, 13, seed=seed, dtype=dtype).transpose(0, 1)
            assert_matches(g(x), block(x), f32_tolerance)
        assert deepvisor.stats(g)["captures"] == 2


def data_dependent(x):
    total = x.sum().item()
    return x * total if total > 0 else x - 1


def test_item_is_a_decision_not_an_eager_call():
    """.item() cuts the graph, and `total > 0` is what the branch reads: the
    comparison is the decision (a version a side), so new totals on a side
    seen before replay without a capture."""
    g = deepvisor.compile(data_dependent)
    for seed, sign in ((0, 1), (1, 1), (2, -1), (0, -1), (0, 1), (1, -1), (2, 1)):
        x = randn(6, 9, seed=seed) * sign
        assert_matches(g(x), data_dependent(x), f32_tolerance)
    stats = deepvisor.stats(g)
    assert stats["eager_calls"] == 0 and stats["captures"] == 2 and stats["cache_hits"] == 5, stats


# -- in-place updates -----------------------------------------------------------------------


def add_then_mul_in_place(x):
    x.add_(1)
    x.mul_(2)
    return x


def test_in_place_updates_of_an_input_are_replayed():
    g = deepvisor.compile(add_then_mul_in_place)
    for seed in (0, 1, 2):
        x = randn(5, 7, seed=seed)
        expected = (x.clone() + 1) * 2
        out = g(x)
        assert out is x
        assert_matches(x, expected, f32_tolerance)
    stats = deepvisor.stats(g)
    assert stats["captures"] == 1 and stats["cache_hits"] == 2 and stats["eager_calls"] == 0, stats


def test_in_place_update_and_a_new_output():
    def fn(x, y):
        x.mul_(y)
        return x.sum(-1)

    g = deepvisor.compile(fn)
    for seed in (0, 1):
        x, y = randn(4, 6, seed=seed), randn(6, seed=seed + 10)
        x_ref = x.clone()
        expected = fn(x_ref, y)
        assert_matches(g(x, y), expected, f32_tolerance)
        assert_matches(x, x_ref, f32_tolerance)
    assert deepvisor.stats(g)["cache_hits"] == 1


# -- returned views ------------------------------------------------------------------------------


def views_and_a_result(x):
    return x.t(), x[1:3], x.reshape(-1), x[:, ::2].unsqueeze(0), x * 2


def test_returned_views_alias_their_argument_as_in_eager():
    g = deepvisor.compile(views_and_a_result)
    g(randn(4, 6))
    x = randn(4, 6, seed=1)
    got, want = g(x), views_and_a_result(x)
    for o, r in zip(got[:4], want[:4]):
        assert o.shape == r.shape and o.stride() == r.stride() and torch.equal(o, r)
        assert o.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()
        assert o.storage_offset() == r.storage_offset()
    assert_matches(got[4], want[4], f32_tolerance)
    got[1][0, 0] = 123.0  # written through a returned view, as in eager
    assert x[1, 0] == 123.0
    assert deepvisor.stats(g)["kernels"] == 1  # the views cost no kernel


def test_view_of_an_offset_argument_follows_the_new_argument():
    def fn(x):
        return x[1:].t()

    g = deepvisor.compile(fn)
    g(randn(6, 9)[1:, 2:])
    x = randn(6, 9, seed=3)[1:, 2:]
    got = g(x)
    assert torch.equal(got, fn(x)) and got.data_ptr() == fn(x).data_ptr()
    assert deepvisor.stats(g)["kernels"] == 0


def test_view_after_an_in_place_update_sees_the_update():
    def fn(x):
        x.add_(1)
        return x[0]

    g = deepvisor.compile(fn)
    g(randn(3, 5))
    x = randn(3, 5, seed=4)
    expected = x[0] + 1
    got = g(x)
    assert_matches(got, expected, f32_tolerance)
    assert got.data_ptr() == x.data_ptr()


def test_view_of_one_of_two_arguments_sharing_storage_is_a_copy():
    def fn(a, b):
        return b.t()

    g = deepvisor.compile(fn)
    base = randn(5, 6)
    g(base, base[1:])  # b's view lies in a's storage too: which one it came from is unknown
    a, b = randn(5, 6, seed=1), randn(4, 6, seed=2)
    got = g(a, b)
    assert torch.equal(got, b.t())


def test_reinterpreting_view_comes_back_as_a_copy_with_equal_values():
    def fn(x):
        return x.view(torch.int32)

    _, got = run_twice(fn, randn(4, 4))
    x = randn(4, 4)
    assert torch.equal(got, fn(x))


# -- modules and autograd ----------------------------------------------------------------------


class NormGelu(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        with torch.no_grad():
            self.norm.weight.copy_(randn(width, seed=7))
            self.norm.bias.copy_(randn(width, seed=8))

    def forward(self, x):
        return F.gelu(self.norm(x)) * 0.5 + x


class NormLinear(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, width // 2)

    def forward(self, x):
        return F.gelu(self.proj(self.norm(x)))


@pytest.mark.parametrize("module_type", [NormGelu, NormLinear])
def test_module_under_no_grad(module_type):
    torch.manual_seed(0)
    module = module_type(48).eval()
    g = deepvisor.compile(module)
    x = randn(5, 48)
    with torch.no_grad():
        expected = module(x)
        g(x)
        out = g(x)
        out2 = g(randn(5, 48, seed=1))
        expected2 = module(randn(5, 48, seed=1))
    assert_matches(out, expected, f32_tolerance)
    assert_matches(out2, expected2, f32_tolerance)
    stats = deepvisor.stats(g)
    assert stats["captures"] == 1 and stats["cache_hits"] == 2 and stats["eager_calls"] == 0, stats
    allowed = {"aten::addmm.default", "aten::mm.default", "aten::t.default"}  # Linear: an extern call
    assert set(stats["fallback_ops"]) <= allowed, stats
    assert stats["kernels"] >= 1


def test_module_parameter_update_is_seen():
    module = NormGelu(16).eval()
    g = deepvisor.compile(module)
    x = randn(3, 16)
    with torch.no_grad():
        g(x)
        module.norm.weight.mul_(3)
        assert_matches(g(x), module(x), f32_tolerance)


def test_inputs_requiring_grad_run_eagerly():
    def fn(x):
        return torch.tanh(x) * 2

    g = deepvisor.compile(fn)
    x = randn(4, 5).requires_grad_()
    out = g(x)
    out.sum().backward()
    assert_matches(x.grad, 2 * (1 - torch.tanh(x.detach()) ** 2), f32_tolerance)
    stats = deepvisor.stats(g)
    assert stats["eager_calls"] == 1 and stats["captures"] == 0, stats
    assert any("grad" in reason for reason in stats["eager_reasons"]), stats
    with torch.no_grad():  # under no_grad the same input compiles
        g(x)
        assert_matches(g(x), fn(x), f32_tolerance)
    assert deepvisor.stats(g)["cache_hits"] == 1


def test_module_with_trainable_parameters_under_grad_mode_keeps_gradients():
    """Parameters are inputs too: under grad mode the outputs must carry
    gradients to them (eagerly, with a reason), as in eager."""
    module = NormGelu(16)
    g = deepvisor.compile(module)
    x = randn(3, 16)
    g(x)
    out = g(x)
    assert out.requires_grad, "the replayed output lost its autograd graph"
    out.sum().backward()
    assert module.norm.weight.grad is not None


# -- arguments and results ------------------------------------------------------------------------


def test_output_structure_with_non_tensor_leaves_is_rebuilt():
    def fn(x, y):
        s = x + y
        return {"sum": s, "parts": [s.exp(), 3, "label", None], "pair": (x.amax(-1), 2.5), "input": x}

    x, y = randn(4, 6), randn(6, seed=1)
    g, out = run_twice(fn, x, y)
    assert_matches(out, fn(x, y), f32_tolerance)
    assert out["input"] is x
    assert type(out["parts"]) is list and type(out["pair"]) is tuple


def test_same_tensor_passed_twice():
    def fn(a, b):
        return a * b + a

    x = randn(6, 10)
    g, out = run_twice(fn, x, x)
    assert_matches(out, fn(x, x), f32_tolerance)
    y = randn(6, 10, seed=1)
    assert_matches(g(y, y), fn(y, y), f32_tolerance)
    z = randn(6, 10, seed=2)
    assert_matches(g(y, z), fn(y, z), f32_tolerance)  # distinct tensors now: must not reuse y for z


def test_keyword_arguments():
    def fn(x, *, bias, scale=2.0):
        return x * scale + bias

    g = deepvisor.compile(fn)
    x, b = randn(3, 4), randn(4, seed=1)
    g(x, bias=b)
    assert_matches(g(x, bias=b), fn(x, bias=b), f32_tolerance)
    assert_matches(g(x, bias=b, scale=3.0), fn(x, bias=b, scale=3.0), f32_tolerance)


@pytest.mark.parametrize("shape", [(0, 5), (3, 0), (2, 0, 4)])
def test_empty_tensors(shape):
    def fn(x):
        return torch.exp(x) + 1, x.sum(-1), torch.softmax(x, -1)

    x = randn(*shape)
    g, out = run_twice(fn, x)
    assert_matches(out, fn(x), f32_tolerance)
    assert deepvisor.stats(g)["eager_calls"] == 0


def test_zero_dim_tensors():
    def fn(s, v):
        return s * v + s.exp(), (v * s).sum(), s + 1

    g = deepvisor.compile(fn)
    for seed in (0, 1, 2):
        s, v = randn(seed=seed), randn(5, seed=seed + 10)
        assert s.dim() == 0
        assert_matches(g(s, v), fn(s, v), f32_tolerance)
    stats = deepvisor.stats(g)
    assert stats["captures"] == 1 and stats["cache_hits"] == 2, stats


def test_reduction_to_zero_dim():
    def fn(x):
        return x.sum(), x.amax(), x.mean()

    x = randn(13, 7)
    g, out = run_twice(fn, x)
    assert_matches(out, fn(x), f32_tolerance)
    assert all(t.dim() == 0 for t in out)


def test_no_fuse_gives_the_same_results():
    x, w, b = randn(8, 40), randn(40, seed=1), randn(40, seed=2)
    g = deepvisor.compile(issue_example, fuse=False)
    g(x, w, b)
    assert_matches(g(x, w, b), issue_example(x, w, b), lambda dt: (1e-5, 1e-5))
    assert deepvisor.stats(g)["kernels"] > 1


# -- dumps ---------------------------------------------------------------------------------------


def test_identical_layers_share_their_kernels_compiles(monkeypatch):
    """Kernels are named by their content: six identical layers (layer norm,
    GELU, residual) compile each distinct kernel once. The residual stream is
    realized every other layer (a pointwise chain read twice is cut once it
    reads 4 buffers), so the layers' kernels repeat with period 2: at most 5
    distinct kernels (2 layer norms, GELU, the first and last layers')."""
    monkeypatch.setenv("DEEPVISOR_VALIDATE_CUDA", "1")  # NVRTC compiles every kernel for sm_90 (no GPU needed)
    monkeypatch.setenv("DEEPVISOR_DISK_CACHE", "0")
    torch.manual_seed(0)
    layers = nn.ModuleList(nn.Sequential(nn.LayerNorm(23), nn.Linear(23, 31), nn.GELU(), nn.Linear(31, 23))
                           for _ in range(6)).eval()

    def encoder(x):
        for layer in layers:
            x = x + layer(x)
        return x

    with torch.no_grad():
        x = randn(3, 23)
        g, out = run_twice(encoder, x)
        assert_matches(out, encoder(x), f32_tolerance)
    stats = deepvisor.stats(g)
    if stats["nvrtc_compiles"] == 0:
        pytest.skip("NVRTC is not available")
    # (On a GPU autotuning also compiles candidates: autotune_compiles.)
    assert stats["kernels"] >= 12 and stats["nvrtc_compiles"] - stats["autotune_compiles"] <= 5, stats


def test_dump_dir_and_dvdump(tmp_path):
    if not DVDUMP.exists():
        pytest.skip(f"{DVDUMP} is not built")
    x, w, b = randn(4, 32), randn(32, seed=1), randn(32, seed=2)
    g = deepvisor.compile(issue_example, dump_dir=str(tmp_path))
    g(x, w, b)
    dumps = sorted(tmp_path.glob("*.dvg"))
    assert len(dumps) == 1, list(tmp_path.iterdir())
    text = dumps[0].read_text()
    assert text.startswith("deepvisor-graph") and "aten::native_layer_norm" in text

    result = subprocess.run([str(DVDUMP), str(dumps[0]), "--stage", "all"], capture_output=True, text=True,
                            timeout=120, env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for section in ("op graph", "plan", "fusion groups", "loop IR", "CUDA C"):
        assert f"==== {section}" in out, f"missing section {section!r}:\n{out[:2000]}"
    assert "__global__" in out and "kernel dv_" in out  # kernels are named by their content


def test_dumps_of_same_named_functions_do_not_overwrite(tmp_path):
    first = deepvisor.compile(lambda t: t * 2, dump_dir=str(tmp_path))
    second = deepvisor.compile(lambda t: t + 1, dump_dir=str(tmp_path))
    first(randn(4))
    second(randn(4))
    texts = sorted(p.read_text() for p in tmp_path.glob("*.dvg"))
    assert len(texts) == 2, list(tmp_path.iterdir())
    assert any("aten::mul" in t for t in texts) and any("aten::add" in t for t in texts)


def test_dvdump_rejects_a_bad_file(tmp_path):
    if not DVDUMP.exists():
        pytest.skip(f"{DVDUMP} is not built")
    bad = tmp_path / "bad.dvg"
    bad.write_text("not a graph\n")
    result = subprocess.run([str(DVDUMP), str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "dvdump" in result.stderr


def test_internal_failure_runs_eagerly_and_is_not_retried(monkeypatch):
    """A plan that fails at run time sends this call and later ones to eager,
    with the reason recorded, instead of failing the user's program."""
    monkeypatch.delenv("DEEPVISOR_STRICT", raising=False)

    def fn(x):
        return x * 2 + 1

    x = randn(5, 7)
    g = deepvisor.compile(fn)
    g(x)
    real = g._plans

    class Broken:
        """The plan cache with plan 0's executor failing."""

        def __init__(self):
            self.failed = -1

        def run(self, args, kwargs, start=0):
            if self.failed < 0:
                self.failed = 0
                raise RuntimeError("simulated kernel failure")
            return real.run(args, kwargs, start)

        def failed_id(self):
            return 0

        def make_eager(self, plan_id):
            real.make_eager(plan_id)

        def __len__(self):
            return len(real)

    g._plans = Broken()
    for _ in range(2):
        torch.testing.assert_close(g(x), fn(x))
    stats = deepvisor.stats(g)
    assert stats["eager_calls"] == 2
    assert any("simulated kernel failure" in r for r in stats["eager_reasons"])


# -- review findings: rounding, NaN in an ignored bias, stored fill values ---------------------

def test_low_precision_ties_and_underflow_decide_as_in_eager():
    """argmax of a bf16 sum that eager rounds into a tie, and any() of an f16
    product that eager rounds to zero: decided on the rounded values."""
    bf16, f16 = torch.bfloat16, torch.float16

    def argmax_of_sum(a, b):
        return torch.argmax(a + b), torch.max(a + b, dim=0).indices

    def any_of_product(a):
        return torch.any(a * a), torch.all(a * a)

    a, b = torch.ones(2, dtype=bf16), torch.tensor([0, 2 ** -8], dtype=bf16)
    g, out = run_twice(argmax_of_sum, a, b)
    assert_matches(out, argmax_of_sum(a, b), f32_tolerance)
    assert out[0].item() == 0
    tiny = torch.full((3,), 1e-4, dtype=f16)
    g, out = run_twice(any_of_product, tiny)
    assert_matches(out, any_of_product(tiny), f32_tolerance)


def test_addmm_with_beta_zero_ignores_its_bias():
    """addmm(nan_bias, a, b, beta=0) ignores the bias: the matmul-bias rewrite
    must not turn it into mm + 0 * nan."""
    def fn(bias, x, w):
        return torch.addmm(bias, x, w, beta=0).relu()

    bias, x, w = torch.full((4,), float("nan")), randn(3, 5), randn(5, 4, seed=1)
    g, out = run_twice(fn, bias, x, w)
    assert not torch.isnan(out).any()
    assert_matches(out, fn(bias, x, w), f32_tolerance)


def test_pad_value_is_stored_in_the_tensors_dtype():
    """F.pad(bf16, value=0.1) holds bf16(0.1): a float32 reader sees that."""
    def fn(x, y):
        return F.pad(x, (1, 1), value=0.1) + y

    x, y = randn(3, 4, dtype=torch.bfloat16), randn(3, 6, seed=1)
    g, out = run_twice(fn, x, y)
    assert torch.equal(out, fn(x, y))


_SCALAR_COPY_GRAPH = """deepvisor-graph 1
value %0 f32 sizes=4,5 strides=5,1 device=cuda:0 aligned=1
value %1 i64 sizes= strides= device=cpu aligned=1
value %2 i64 sizes= strides= device=cpu aligned=1
value %3 f32 sizes=4,5 strides=5,1 device=cuda:0 aligned=1
input %0
input %1
node aten::lift_fresh.default %1 -> %2
node aten::mul.Tensor %0 %2 -> %3
output %3
"""


_SCALAR_MATH_GRAPH = """deepvisor-graph 1
value %0 f32 sizes=4,5 strides=5,1 device=cuda:0 aligned=1
value %1 i64 sizes= strides= device=cpu aligned=1
value %2 i64 sizes= strides= device=cpu aligned=1
value %3 f32 sizes= strides= device=cpu aligned=1
value %4 f32 sizes= strides= device=cpu aligned=1
value %5 f32 sizes=4,5 strides=5,1 device=cuda:0 aligned=1
input %0
input %1
node aten::lift_fresh.default %1 -> %2
node aten::mul.Scalar %2 i:3 -> %3
node aten::sqrt.default %3 -> %4
node aten::div.Tensor %0 %4 -> %5
output %5
"""


def test_scalar_math_on_the_cpu_in_a_cuda_plan_is_kernel_work():
    """DeBERTa divides by sqrt(torch.tensor(d) * 3): CPU scalar ops that only
    work on the device reads compute inside the kernel that divides (no ATen
    call, still one CUDA graph); the ops of a scalar the caller gets stay ATen
    calls on the CPU."""
    s = _cuda_plan_stats(_SCALAR_MATH_GRAPH)
    assert s["fallback_ops"] == {} and s["kernels"] == 1, s
    assert s["cuda_graph"] == "warming up", s
    # The caller gets the square root on the CPU: the chain computing it stays there.
    s = _cuda_plan_stats(_SCALAR_MATH_GRAPH.replace("output %5", "output %5 %4"))
    assert s["fallback_ops"] == {"aten::lift_fresh.default": 1, "aten::mul.Scalar": 1, "aten::sqrt.default": 1}, s


_FOLDED_SPAN_GRAPH = """deepvisor-graph 1
value %0 i64 sizes=4,5 strides=5,1 device=cuda:0 aligned=1
value %1 i64 sizes= strides= device=cpu aligned=1
value %2 i64 sizes= strides= device=cpu aligned=1
value %3 i64 sizes=4,5 strides=5,1 device=cuda:0 aligned=1
value %4 i64 sizes=4,5 strides=5,1 device=cuda:0 aligned=1
input %0
input %1
input %2
node aten::add.Tensor %0 %1 i:1 -> %3
node aten::clamp.Tensor %3 none %2 -> %4
output %4
"""


def test_folded_cpu_scalars_read_by_cuda_kernels():
    """DeBERTa's clamp(relative_pos + att_span, 0, att_span * 2 - 1) once its
    CPU scalar arithmetic is folded at capture (test_capture.py): the span
    and the limit are constant CPU scalars of the graph that the kernel reads
    (copied to the device), no fallback, one CUDA graph."""
    s = _cuda_plan_stats(_FOLDED_SPAN_GRAPH)
    assert s["fallback_ops"] == {} and s["kernels"] == 1, s
    assert s["cuda_graph"] == "warming up", s


def _cuda_plan_stats(graph_text):
    """The stats of a plan built (not run: no GPU needed) from a CUDA graph
    whose inputs after the first are constants, with CUDA graphs enabled."""
    from deepvisor import _C
    plan = _C.compile_graph_text(graph_text, True)
    plan.enable_cuda_graph([False] + [True] * (graph_text.count("\ninput ") - 1))
    return plan.stats()


def test_a_cpu_scalar_copied_for_kernels_leaves_a_cuda_plan_graphable():
    """x[:, i] = 3 on CUDA: the copy of torch.tensor(3) (a CPU scalar) is a
    scalar of the kernel reading it, neither an ATen fallback nor CPU work
    that keeps the plan from being one CUDA graph (checked without a GPU:
    the plan is only built)."""
    s = _cuda_plan_stats(_SCALAR_COPY_GRAPH)
    assert s["fallback_ops"] == {} and s["kernels"] == 1, s
    assert s["cuda_graph"] == "warming up", s
    s = _cuda_plan_stats(_SCALAR_COPY_GRAPH.replace("output %3", "output %3 %2"))
    assert s["fallback_ops"] == {"aten::lift_fresh.default": 1}, s
    assert s["cuda_graph"].startswith("not graphed: part of it computes on the CPU"), s


_VIEW_ONLY_GRAPH = """deepvisor-graph 1
value %0 f32 sizes=8 strides=0 device=cuda:0 aligned=1
value %1 f32 sizes=8 strides=0 device=cuda:0 aligned=1
input %0
input %1
node aten::view.default %0 il:[-1] -> %1
output
"""


def test_a_cuda_plan_that_launches_no_gpu_work_is_not_graphed():
    """x.view(-1) of an expanded argument: the output is rebuilt as a view of
    the argument, and the plan holds a view and nothing to run. Captured, it
    made an empty CUDA graph (torch warned "The CUDA Graph is empty" on the
    H200); such a plan runs its steps (none) instead. A plan with one kernel
    may be graphed (checked without a GPU: the plan is only built)."""
    s = _cuda_plan_stats(_VIEW_ONLY_GRAPH)
    assert s["kernels"] == 0 and s["fallback_ops"] == {}, s
    assert s["cuda_graph"] == "not graphed: it launches no GPU work", s
    s = _cuda_plan_stats(_VIEW_ONLY_GRAPH.replace("output", "output %1"))  # a kernel writes the view's elements
    assert s["kernels"] == 1 and s["cuda_graph"] == "warming up", s


# What bf16 attention on CUDA records: the flash kernel, whose varlen and
# debug outputs are undefined (none).
_FLASH_ATTENTION_GRAPH = """deepvisor-graph 1
value %0 bf16 sizes=1,2,8,16 strides=256,128,16,1 device=cuda:0 aligned=1
value %1 bf16 sizes=1,2,8,16 strides=256,128,16,1 device=cuda:0 aligned=1
value %2 bf16 sizes=1,2,8,16 strides=256,128,16,1 device=cuda:0 aligned=1
value %3 bf16 sizes=1,2,8,16 strides=256,128,16,1 device=cuda:0 aligned=1
value %4 f32 sizes=1,2,8 strides=16,8,1 device=cuda:0 aligned=1
value %5 i64 sizes=2 strides=1 device=cuda:0 aligned=1
value %6 i64 sizes=0 strides=1 device=cuda:0 aligned=1
value %7 bf16 sizes=1,2,8,16 strides=256,128,16,1 device=cuda:0 aligned=1
input %0
input %1
input %2
node aten::_scaled_dot_product_flash_attention.default %0 %1 %2 f:0 b:0 b:0 none -> %3 %4 none none %5 %6 none
node aten::mul.Tensor %3 %3 -> %7
output %7
"""


def test_a_cuda_plan_with_undefined_extern_outputs_is_graphable():
    """BERT and GPT-2 under bf16 autocast aborted on the H200 ("double free
    or corruption"): deciding whether the plan could be a CUDA graph marked
    the ATen step's outputs in a bit vector, the undefined ones (-1) too,
    which wrote before the vector's memory. Built without a GPU: the plan is
    only made; the process surviving its destruction is part of the test."""
    for _ in range(3):
        s = _cuda_plan_stats(_FLASH_ATTENTION_GRAPH)
        assert s["fallback_ops"] == {"aten::_scaled_dot_product_flash_attention.default": 1}, s  # an ATen step
        assert s["kernels"] == 1 and s["cuda_graph"] == "warming up", s


def test_matmuls_write_their_results_into_the_block_of_kernel_results(capfd, monkeypatch):
    # mm, addmm and bmm run through their out= variants into the call's block
    # (runtime/library_into.h): the only storage outside it is the output.
    monkeypatch.setenv("DEEPVISOR_LOG", "decisions")

    def f(x, w1, w2, w3, bias):
        h = torch.mm(x.exp(), w1)
        h = torch.addmm(bias, torch.relu(h) + 1, w2)
        b = torch.bmm(h.view(4, 8, 128).sin(), w3)
        return b.sum(-1)

    args = [torch.randn(32, 24) * 0.3, torch.randn(24, 20) * 0.3, torch.randn(20, 128) * 0.3,
            torch.randn(4, 128, 9) * 0.3, torch.randn(128)]
    g = deepvisor.compile(f)
    for _ in range(3):
        got = g(*args)
    torch.testing.assert_close(got, f(*args), rtol=1e-4, atol=1e-4)
    s = deepvisor.stats(g)
    assert {"aten::mm.default", "aten::bmm.default"} <= set(s["extern_ops"])
    # The first call is the capture's; two runs of three library calls
    assert s["library_results_in_block"] == 6 and s["library_results_beside_block"] == 0, s
    assert s["graph_pool_room_bytes"] == s["graph_block_window_bytes"] == 0, s  # no CUDA graph on the CPU
    assert s["graph_beside_block_bytes"] == 0, s
    (line,) = [l for l in capfd.readouterr().err.splitlines() if "arena:" in l]
    assert "beside 512 of other storage" in line, line  # the output's 32 floats
    assert line.split("arena: ")[1].startswith(f"{s['block_bytes']} bytes for intermediates"), (line, s)
    assert s["block_bytes"] > 0, s


def test_a_view_of_a_matmul_result_inside_the_block_is_read_where_it_lies():
    # h lies in the block at an offset past a's (both alive): the view that
    # bmm reads it through is taken there, not from a copy (which the view
    # step used to make of any input off the start of its storage: 6 MiB
    # beside the block at each of BERT-base's attention views at batch 16).
    def f(x, w1, w2, w3):
        a = torch.mm(x, w1)
        h = torch.mm(x.sin(), w2)
        b = torch.bmm(h.view(4, 8, 24), w3)
        return b.sum(-1) + a.sum()

    g = deepvisor.compile(f)
    for i in range(3):
        args = [torch.randn(32, 40) * (i + 1), torch.randn(40, 24), torch.randn(40, 24), torch.randn(4, 24, 6)]
        torch.testing.assert_close(g(*args), f(*args), rtol=1e-4, atol=1e-4)
    s = deepvisor.stats(g)
    assert s["library_results_in_block"] >= 4 and s["fallback_ops"] == {}, s
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        got = g(*args)
    torch.testing.assert_close(got, f(*args), rtol=1e-4, atol=1e-4)
    copies = [e.key for e in prof.key_averages() if e.key in ("aten::copy_", "aten::clone", "aten::contiguous")]
    assert copies == [], prof.key_averages().table(row_limit=20)


def _arena_line(capfd):
    (line,) = [l for l in capfd.readouterr().err.splitlines() if "arena:" in l]
    return line


def test_a_kernel_writes_its_result_over_an_input_that_dies_at_it(capfd, monkeypatch):
    # ResNet's residual add: the two matmul results die at the kernel that
    # adds them, whose result then takes the first one's bytes in the block
    # (codegen/arena_plan.h). New values each call: a result left from the
    # call before cannot pass for a right one.
    monkeypatch.setenv("DEEPVISOR_LOG", "decisions")

    def f(x, w1, w2, w3):
        a = torch.mm(x, w1)
        s = torch.mm(x, w2)
        return torch.mm(torch.relu(a + s) * 0.5, w3)

    g = deepvisor.compile(f)
    for i in range(4):
        args = [torch.randn(33, 40) * (i + 1), torch.randn(40, 24), torch.randn(40, 24), torch.randn(24, 8)]
        torch.testing.assert_close(g(*args), f(*args), rtol=1e-4, atol=1e-4)
    assert deepvisor.stats(g)["library_results_in_block"] == 6  # a and s, three calls after the capture
    assert "(1 results written over an input that dies at them)" in _arena_line(capfd)


def test_a_kernel_does_not_write_over_an_input_it_reads_elsewhere(capfd, monkeypatch):
    # a dies at the kernel, which reads it at its own element and transposed:
    # writing the sum over it would change what other points read.
    monkeypatch.setenv("DEEPVISOR_LOG", "decisions")

    def f(x, w1, w3):
        a = torch.mm(x, w1)
        return torch.mm(a + a.t() * 2, w3)

    g = deepvisor.compile(f)
    for i in range(3):
        args = [torch.randn(24, 40) * (i + 1), torch.randn(40, 24), torch.randn(24, 8)]
        torch.testing.assert_close(g(*args), f(*args), rtol=1e-4, atol=1e-4)
    assert "(0 results written over an input that dies at them)" in _arena_line(capfd)


def test_a_view_an_aten_op_returns_keeps_its_base_out_of_the_block_of_kernel_results():
    # The kernel results of a call share one block at planned offsets
    # (codegen/arena_plan.h). diagonal (no lowering) returns a view of y, read
    # after y's last step; the sum made after it would take y's bytes if y
    # were in the block. Poisoned, a wrong offset shows.
    def f(x):
        y = x.exp()
        z = y.diagonal()
        v = torch.sort(x * 3, 1).values  # another library call, so that
        s = v.sin().sum(0)               # this result is made after y's last step
        return z * s[:6]

    x = torch.randn(6, 11)
    g = deepvisor.compile(f)
    for _ in range(3):
        got = g(x)
    torch.testing.assert_close(got, f(x))
    assert set(deepvisor.stats(g)["fallback_ops"]) == {"aten::sort.default", "aten::diagonal.default"}


def _pools(x):
    return F.max_pool1d(x, 2) * 2


def _pools_then_decides(x):
    y = F.max_pool1d(x, 2)  # its indices, squeezed and dropped, move past the decision
    return y * 2 if x.sum() > 0 else y - 1


@pytest.mark.parametrize("fn", [_pools, _pools_then_decides])
def test_indices_a_pooling_drops_leave_it_in_the_kernels(fn):
    """F.max_pool1d runs max_pool2d_with_indices and squeezes both results;
    the squeeze of the indices, which nothing reads, counted as a reader
    and kept the op on ATen (CANINE). Views nothing reads are dropped, in a
    graph and across a decision."""
    g = deepvisor.compile(fn)
    for x in (torch.randn(2, 3, 8), -torch.rand(2, 3, 8), torch.rand(2, 3, 8)):
        torch.testing.assert_close(g(x), fn(x))
    s = deepvisor.stats(g)
    assert s["fallback_ops"] == {} and s["eager_calls"] == 0, s

