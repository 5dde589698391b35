"""DEEPVISOR_CPU=compiled: the kernels of CPU plans as C++ from the host
compiler (codegen/cpp_emitter.h). A representative part of the operator
catalogue (every pointwise unary and binary op, casts, reductions, softmax,
layer_norm, masked and indirect loads, scatters) must match eager as the
interpreter does, and run compiled, not in the interpreter; the benchmark's
workloads (bench/cpu.py) run as compiled kernels only.

Compiles are cached on disk in the session's test cache (conftest.py), so
kernels shared by several cases compile once."""

import dataclasses
import os
import sys

import pytest
import torch

import deepvisor
from deepvisor import _C
from op_cases import CASES, B8, BF16, F16, F32, I32, I64, assert_matches, check_compiled, SHORT

pytestmark = pytest.mark.skipif(not _C.host_compiler_available(), reason="no host C++ compiler ($CXX or g++)")


@pytest.fixture(autouse=True)
def compiled_cpu(monkeypatch):
    monkeypatch.setenv("DEEPVISOR_CPU", "compiled")


# Families of the catalogue run here, in float32: a case whose name starts
# with one of these. (The whole catalogue runs in the interpreter, test_ops.py.)
F32_FAMILIES = (
    # pointwise: the first layout of each unary op, special values, every binary op
    "[odd]", "[special_values]", "[same]", "[outer]", "[special_pairs]", "[edges]", "[promote_",
    "[scalar_", "[operator]", "[mixed_bool]", "[halves]", "[exp_tanh_mul]", "[large]",
    # reductions and normalizations
    "sum[", "mean[", "amax[", "amin[", "prod[", "var[dim1", "std[dims02", "var[all_dims_corr1]", "max[all]",
    "min[all]", "all[", "any[", "softmax[", "log_softmax[", "layer_norm[", "native_layer_norm[",
    "group_norm[affine]", "vector_norm[", "fused[", "argmax[dim1_ties]", "max_dim[ties]",
    # masked and indirect loads, scatters, data movement
    "where[", "masked_fill", "clamp_both[odd]", "cast_", "cast[", "embedding[", "gather[", "index_select[",
    "index_tensor[", "index_put", "scatter", "index_add[", "index_fill[", "cat[", "constant_pad[", "flip[dim0]",
    "roll[dims]", "cumsum[last]", "max_pool2d[resnet_3x3_s2_p1]", "avg_pool2d[3x3_s2_p1]",
    "upsample_bilinear2d[scale2]", "view[pointwise]", "permute[pointwise]",
)

# Every dtype of these cases (integers, bools, bf16, f16 storage and rounding).
ALL_DTYPE_CASES = {
    "add[same]", "mul[same]", "div[same]", "div_floor[same]", "div_trunc[same]", "remainder[same]", "pow[same]",
    "maximum[same]", "minimum[same]", "neg[odd]", "abs[odd]", "exp[odd]", "round[odd]", "lt[same]", "eq[same]",
    "logical_and[same]", "logical_not[odd]", "where[tensors]", "sum[dim1]", "prod[dim1]", "amax[dim1]", "amin[dim1]",
    "softmax[last]", "layer_norm[affine]", "cast_float[method]", "cast_half[method]", "cast_bfloat16[method]",
    "cast_int[method]", "cast_long[method]", "cast_bool[method]", "cast[int64_wraps_to_int32]", "any[dim]",
    "all[dim]", "embedding[odd]", "index_put_accumulate[duplicates_negative]", "scatter_add[dim1_duplicates]",
    "masked_fill[same_shape]", "cat[last_dim]",
}

# Kernels the emitter leaves to the interpreter, by case: (why). None so far.
INTERPRETED = {}

# Float sums combine in simd lanes (16 partial sums with AVX-512), which the
# semantics allow; eager's cumsum adds in sequence, and where a running sum
# nears zero the relative error of either order passes 1e-5.
LOOSER = {"cumsum[last]": {F32: (1e-4, 1e-5)}}


def _selected():
    out = []
    for c in CASES:
        for dt in c.dtypes:
            if c.skips.get(("cpu", dt)):
                continue
            in_f32 = dt == F32 and any(f in c.name for f in F32_FAMILIES)
            if in_f32 or c.name in ALL_DTYPE_CASES:
                out.append(pytest.param(c, dt, id=f"{c.name}-{SHORT[dt]}"))
    return out


@pytest.mark.parametrize("sizes", ["literal", "arguments"])
@pytest.mark.parametrize("case,dtype", _selected())
def test_op_compiled(case, dtype, sizes, monkeypatch):
    """`arguments`: every size the kernel's C++ uses comes from its size
    table (DEEPVISOR_SIZE_ARGS=1, no size kept literal), as dynamic-shape
    instances take theirs (codegen/size_table.h)."""
    if sizes == "arguments":
        monkeypatch.setenv("DEEPVISOR_SIZE_ARGS", "1")
    made = []
    original = deepvisor.compile

    def recording_compile(fn, *a, **kw):
        g = original(fn, *a, **kw)
        made.append(g)
        return g
    monkeypatch.setattr(deepvisor, "compile", recording_compile)
    if case.name in LOOSER:
        case = dataclasses.replace(case, tolerance=LOOSER[case.name])
    check_compiled(case, dtype, "cpu")
    stats = deepvisor.stats(made[-1])
    assert stats["cpu_compiled_kernels"] + stats["cpu_interpreted_kernels"] == stats["kernels"], stats
    if case.name not in INTERPRETED:
        assert stats["cpu_interpreted_kernels"] == 0, stats["cpu_interpreted_reasons"]


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench"))


def _benchmark_workloads():
    from micro import gelu_chain, layer_norm, softmax
    g = torch.Generator().manual_seed(0)
    randn = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return [("gelu_chain", gelu_chain, (randn(1 << 20),)), ("softmax", softmax, (randn(1024, 1024),)),
            ("layer_norm", layer_norm, (randn(2048, 1024), randn(1024), randn(1024)))]


@pytest.mark.parametrize("threads", [1, 2])
def test_benchmark_workloads_run_as_compiled_kernels(threads):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for name, fn, args in _benchmark_workloads():
            g = deepvisor.compile(fn)
            for _ in range(2):
                torch.testing.assert_close(g(*args), fn(*args), rtol=1e-5, atol=1e-5, msg=lambda m: f"{name}: {m}")
            stats = deepvisor.stats(g)
            assert stats["kernels"] == 1 and stats["cpu_compiled_kernels"] == 1, (name, stats)
            assert stats["fallback_ops"] == {} and stats["eager_calls"] == 0, (name, stats)
    finally:
        torch.set_num_threads(previous)


def _small_bert():
    """A 2-layer BertModel (hidden 64) and its inputs (batch 2, sequence 16)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=2, intermediate_size=128,
                                  vocab_size=1000)
    return transformers.BertModel(cfg).eval(), torch.randint(0, 1000, (2, 16)), torch.ones(2, 16, dtype=torch.long)


def test_a_small_bert_matches_eager():
    model, ids, mask = _small_bert()
    with torch.no_grad():
        g = deepvisor.compile(model)
        for _ in range(2):
            out, ref = g(ids, mask), model(ids, mask)
            torch.testing.assert_close(out.last_hidden_state, ref.last_hidden_state, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(out.pooler_output, ref.pooler_output, rtol=1e-4, atol=1e-5)
    stats = deepvisor.stats(g)
    assert stats["kernels"] > 0 and stats["cpu_interpreted_kernels"] == 0, stats
    assert stats["fallback_ops"] == {} and stats["eager_calls"] == 0, stats


def test_an_index_out_of_range_raises_as_eager_does():
    table, good, bad = torch.randn(10, 4), torch.tensor([1, 9, 0]), torch.tensor([1, 10, 0])
    g = deepvisor.compile(lambda t, i: torch.nn.functional.embedding(i, t) * 2)
    torch.testing.assert_close(g(table, good), table[good] * 2)
    with pytest.raises(IndexError):
        g(table, bad)
    stats = deepvisor.stats(g)
    assert stats["cpu_compiled_kernels"] >= 1 and stats["cpu_interpreted_kernels"] == 0, stats


def test_scalar_math_matches_too(monkeypatch):
    """DEEPVISOR_CPU_VECTOR_MATH=0: every math call is libm's scalar function, as in the interpreter."""
    monkeypatch.setenv("DEEPVISOR_CPU_VECTOR_MATH", "0")
    fn = lambda x: (x * 3).sin().exp().sum(1)  # noqa: E731
    g = deepvisor.compile(fn)
    x = torch.randn(50, 70)
    for _ in range(2):
        torch.testing.assert_close(g(x), fn(x), rtol=1e-5, atol=1e-6)
    stats = deepvisor.stats(g)
    assert stats["cpu_compiled_kernels"] == stats["kernels"] == 1, stats


def test_without_a_host_compiler_plans_run_through_aten(tmp_path):
    """CXX names no compiler: DEEPVISOR_CPU=compiled runs plans as the default path does."""
    script = tmp_path / "no_compiler.py"
    script.write_text(
        "import torch, deepvisor\n"
        "from deepvisor import _C\n"
        "assert not _C.host_compiler_available()\n"
        "g = deepvisor.compile(lambda x: torch.softmax(x * 2, -1))\n"
        "x = torch.randn(8, 16)\n"
        "for _ in range(2): torch.testing.assert_close(g(x), torch.softmax(x * 2, -1))\n"
        "s = deepvisor.stats(g)\n"
        "assert s['kernels'] == 0 and s['eager_calls'] == 0, s\n")
    env = dict(os.environ, CXX=str(tmp_path / "no-such-compiler"), DEEPVISOR_CPU="compiled",
               PYTHONPATH=os.pathsep.join(sys.path))
    import subprocess
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]


def test_fused_mode_compiles_pointwise_work_and_row_reductions(monkeypatch):
    """DEEPVISOR_CPU=fused: a pointwise chain is one compiled kernel, and so
    are softmax and layer_norm (reductions over the last dim, as rows); a
    small BERT mixes compiled kernels and ATen calls and matches eager."""
    monkeypatch.setenv("DEEPVISOR_CPU", "fused")
    kernels = {}
    for name, fn, args in _benchmark_workloads():
        g = deepvisor.compile(fn)
        for _ in range(2):
            torch.testing.assert_close(g(*args), fn(*args), rtol=1e-5, atol=1e-5, msg=lambda m: f"{name}: {m}")
        stats = deepvisor.stats(g)
        assert stats["fallback_ops"] == {} and stats["eager_calls"] == 0, (name, stats)
        kernels[name] = (stats["kernels"], stats["cpu_compiled_kernels"])
    assert kernels == {"gelu_chain": (1, 1), "softmax": (1, 1), "layer_norm": (1, 1)}, kernels
    model, ids, mask = _small_bert()
    with torch.no_grad():
        g = deepvisor.compile(model)
        for _ in range(2):
            torch.testing.assert_close(g(ids, mask).last_hidden_state, model(ids, mask).last_hidden_state,
                                       rtol=1e-4, atol=1e-5)
    stats = deepvisor.stats(g)
    assert stats["cpu_compiled_kernels"] > 0 and stats["cpu_interpreted_kernels"] == 0, stats
    assert stats["fallback_ops"] == {} and stats["eager_calls"] == 0, stats


@pytest.mark.parametrize("setting", ["unset", "empty"])
def test_fused_is_the_default(setting, monkeypatch):
    """With DEEPVISOR_CPU unset (or empty), CPU plans run as in fused mode:
    the benchmark workloads' kernels compiled, results equal to eager."""
    if setting == "unset":
        monkeypatch.delenv("DEEPVISOR_CPU", raising=False)
    else:
        monkeypatch.setenv("DEEPVISOR_CPU", "")
    for name, fn, args in _benchmark_workloads():
        g = deepvisor.compile(fn)
        for _ in range(2):
            torch.testing.assert_close(g(*args), fn(*args), rtol=1e-5, atol=1e-5, msg=lambda m: f"{name}: {m}")
        stats = deepvisor.stats(g)
        assert (stats["kernels"], stats["cpu_compiled_kernels"], stats["eager_calls"]) == (1, 1, 0), (name, stats)


def test_fused_mode_runs_batch_norm_through_aten(monkeypatch):
    """Inference batch norm is a per-channel map that ATen's CPU kernel runs
    faster than a generated one: in fused mode it stays an ATen call, and the
    ReLU and residual add after it fuse into one compiled kernel."""
    monkeypatch.setenv("DEEPVISOR_CPU", "fused")
    torch.manual_seed(0)
    conv, bn = torch.nn.Conv2d(3, 8, 3, padding=1).eval(), torch.nn.BatchNorm2d(8).eval()
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)

    def block(x):
        y = conv(x)
        return torch.relu(bn(y)) + y

    x = torch.randn(2, 3, 9, 11)
    with torch.no_grad():
        g = deepvisor.compile(block)
        for _ in range(2):
            torch.testing.assert_close(g(x), block(x), rtol=1e-5, atol=1e-5)
    stats = deepvisor.stats(g)
    assert stats["kernels"] == 1 and stats["cpu_compiled_kernels"] == 1, stats
    assert stats["fallback_ops"] == {} and stats["eager_calls"] == 0, stats


def test_fused_mode_compiles_only_row_reductions(monkeypatch):
    """In fused mode a reduction over the trailing dims into at least as many
    rows as threads compiles (a row kernel); one over a leading dim, a whole
    tensor's, and group norm (a per-channel map after its rows) run through
    ATen. Results match eager either way."""
    monkeypatch.setenv("DEEPVISOR_CPU", "fused")
    x = torch.randn(64, 48, 40)
    w, b = torch.randn(48), torch.randn(48)
    cases = {
        "sum_last": (lambda t: t.sum(-1) * 2, (x,), 1),
        "mean_last_two": (lambda t: t.mean((1, 2)), (x,), 1),
        "log_softmax": (lambda t: torch.log_softmax(t, -1), (x,), 1),
        "sum_first": (lambda t: t.sum(0), (x,), 0),
        "sum_middle": (lambda t: t.sum(1), (x,), 0),
        "sum_all": (lambda t: t.sum(), (x,), 0),
        "group_norm": (lambda t: torch.nn.functional.group_norm(t, 4, w, b), (x.view(64, 48, 5, 8),), 0),
    }
    for name, (fn, args, compiled) in cases.items():
        g = deepvisor.compile(fn)
        for _ in range(2):
            torch.testing.assert_close(g(*args), fn(*args), rtol=1e-5, atol=1e-5, msg=lambda m: f"{name}: {m}")
        stats = deepvisor.stats(g)
        assert stats["cpu_compiled_kernels"] == compiled and stats["eager_calls"] == 0, (name, stats)


# The reductions and normalizations of the catalogue in fused mode, where row
# reductions compile and the others run through ATen, pointwise work around
# them fused either way.
FUSED_FAMILIES = ("sum[", "mean[", "amax[", "amin[", "prod[", "var[", "std[", "max[all]", "min[all]", "all[", "any[",
                  "softmax[", "log_softmax[", "layer_norm[", "native_layer_norm[", "group_norm[", "vector_norm[",
                  "fused[", "argmax[", "max_dim[", "cumsum[last]", "logsumexp[")


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in CASES
                                  if F32 in c.dtypes and not c.skips.get(("cpu", F32))
                                  and any(c.name.startswith(f) for f in FUSED_FAMILIES)])
def test_op_fused(case, monkeypatch):
    monkeypatch.setenv("DEEPVISOR_CPU", "fused")
    if case.name in LOOSER:
        case = dataclasses.replace(case, tolerance=LOOSER[case.name])
    tolerances = lambda dtype: case.tolerances(dtype, "cpu")  # noqa: E731
    args = case.args("cpu", F32)
    g = deepvisor.compile(case.fn)
    for _ in range(2):
        assert_matches(g(*args), case.fn(*args), tolerances, "fused")
    fresh = case.args("cpu", F32, seed=1)
    assert_matches(g(*fresh), case.fn(*fresh), tolerances, "fused, new inputs")
    stats = deepvisor.stats(g)
    assert stats["eager_calls"] == 0 and stats["cpu_interpreted_kernels"] == 0, stats
