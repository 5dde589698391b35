"""Writes by data (index_put, scatter, scatter_add, index_add, index_copy,
index_fill), beyond the op catalogue (op_cases.py, which compares their
values against eager): in-place updates of arguments, several scatters into
one tensor, the order of the two kernels a scatter runs (a copy of self, then
the updates) against what reads its result, new index values on replay, the
loop IR's indirect and accumulating stores and their CUDA C. Index errors:
test_indexing.py."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import deepvisor
from deepvisor import _C
from op_cases import assert_matches


def exact(dtype):
    return 0.0, 0.0


def sums(dtype):
    """Accumulated floats: the additions run in another order than eager's."""
    return (1e-5, 1e-5) if dtype.is_floating_point else (0.0, 0.0)


def sums_or_bf16(dtype):
    """As sums, and bf16 results within an ulp or so: eager rounds every bf16
    intermediate, a fused kernel keeps float32 until it stores."""
    return (1.6e-2, 1e-2) if dtype == torch.bfloat16 else sums(dtype)


def gen(seed=0):
    return torch.Generator().manual_seed(5000 + seed)


def compiled_matches(fn, make_args, tolerances, calls=3):
    """Compiles fn, runs it on fresh arguments `calls` times (new values each
    time: the replay must read them), comparing results and the arguments'
    contents after the call with eager's; returns the stats."""
    g = deepvisor.compile(fn)
    for seed in range(calls):
        args = make_args(seed)
        mine = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
        theirs = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
        assert_matches(g(*mine), fn(*theirs), tolerances, f"call {seed}")
        assert_matches(mine, theirs, tolerances, f"arguments after call {seed}")
    stats = deepvisor.stats(g)
    assert stats["captures"] == 1 and stats["eager_calls"] == 0, stats
    assert stats["fallback_ops"] == {}, stats["fallback_ops"]
    return stats


def only_plan(g):
    (executor,) = g._plans.executors()
    return executor


# -- in-place updates of the arguments ----------------------------------------------------------


def set_rows(x, i, v):
    x[i] = v
    return x.sum()


def add_rows_twice(x, i, v, j):
    x.index_put_((i,), v, accumulate=True)
    x[j] += 1  # reads the first update's result: a second scatter after it
    return x * 2


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int64], ids=["f32", "bf16", "i64"])
def test_setitem_updates_the_argument(dtype):
    def make(seed):
        g = gen(seed)
        return (torch.randn(11, 7, generator=g).to(dtype), torch.randperm(11, generator=g)[:5] - 5,
                torch.randn(5, 7, generator=g).to(dtype))
    compiled_matches(set_rows, make, sums)


def test_accumulate_then_setitem_on_an_argument_with_duplicates():
    def make(seed):
        g = gen(seed)
        return (torch.randn(9, 4, generator=g), torch.randint(-9, 9, (20,), generator=g), torch.randn(20, 4, generator=g),
                torch.randperm(9, generator=g)[:3])
    compiled_matches(add_rows_twice, make, sums)


def test_scatter_in_place_on_a_non_contiguous_argument():
    # The base is a transposed view: the update goes through its layout.
    def fn(x, i, s):
        x.t().scatter_(1, i, s)
        return x

    def make(seed):
        g = gen(seed)
        i = torch.rand(6, 9, generator=g).argsort(1)[:, :4]
        return torch.randn(9, 6, generator=g), i, torch.randn(6, 4, generator=g)
    compiled_matches(fn, make, exact)


# -- the two kernels of a scatter and what reads its result ---------------------------------


def test_readers_of_the_result_run_after_the_updates():
    # y is read by a pointwise op that also reads x (which the copy kernel
    # reads too), by a reduction over it, and returned: every reader must see
    # the updates complete.
    def fn(x, i, s):
        y = x.index_add(0, i, s)
        return y + x, y.sum(0), y

    def make(seed):
        g = gen(seed)
        return torch.randn(13, 33, generator=g), torch.randint(0, 13, (40,), generator=g), torch.randn(40, 33, generator=g)
    compiled_matches(fn, make, sums)


def test_a_scatter_of_computed_tensors_into_a_computed_tensor():
    def fn(x, i, s):
        y = torch.zeros(5, 8).scatter_add_(0, i, torch.exp(s) * 2)
        return torch.softmax(y + x, -1)

    def make(seed):
        g = gen(seed)
        return torch.randn(5, 8, generator=g), torch.randint(0, 5, (12, 8), generator=g), torch.randn(12, 8, generator=g)
    compiled_matches(fn, make, lambda dt: (1e-5, 1e-6))


def test_the_plan_copies_self_then_scatters_into_that_memory():
    fn = lambda x, i, s: torch.scatter_add(x, 1, i, s) * 2  # noqa: E731
    g = torch.Generator().manual_seed(1)
    args = torch.randn(4, 10, generator=g), torch.randint(0, 10, (4, 30), generator=g), torch.randn(4, 30, generator=g)
    c = deepvisor.compile(fn)
    c(*args)
    assert_matches(c(*args), fn(*args), sums)
    plan = only_plan(c).describe()
    steps = [line.split(": ", 1)[1] for line in plan.split("steps:\n")[1].split("fusion groups:")[0].splitlines()]
    assert len(steps) == 3, plan
    # copy (x -> s), updates (i, s -> that same slot), then the reader of the result.
    copy_out = steps[0].split("(")[1].split(")")[0].split(", ")[-1]
    assert steps[1].split("(")[1].split(")")[0].split(", ")[-1] == copy_out, plan
    assert copy_out in steps[2].split("(")[1], plan
    ir = only_plan(c).loop_ir()
    assert "store out" in ir and " += %" in ir and "(%" in ir, ir


# -- several forms in small programs ----------------------------------------------------------


class TokenHistogram(nn.Module):
    """Counts tokens per row with scatter_add, weights them, and adds a
    one-hot marker of the last token via scatter."""

    def __init__(self, vocab=17):
        super().__init__()
        self.vocab = vocab
        self.weight = nn.Parameter(torch.randn(vocab))

    def forward(self, ids):
        counts = torch.zeros(ids.shape[0], self.vocab).scatter_add_(1, ids, torch.ones(ids.shape, dtype=torch.float32))
        marker = torch.zeros_like(counts).scatter_(1, ids[:, -1:], 1.0)
        return F.normalize(counts * self.weight + marker, dim=-1)


def test_a_token_histogram_model_is_kernels_only():
    torch.manual_seed(0)
    model = TokenHistogram().eval()
    with torch.no_grad():
        stats = compiled_matches(model, lambda s: (torch.randint(0, 17, (3, 25), generator=gen(s)),),
                                 lambda dt: (1e-5, 1e-6))
    assert stats["extern_ops"] == {}, stats


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.int32], ids=["f32", "f16", "i32"])
def test_index_put_with_a_mask_and_with_a_number(dtype):
    def fn(x, i):
        x = x.clone()
        x[x > 1] = -1
        x[:, i] = 2
        return x

    def make(seed):
        g = gen(seed)
        return (torch.randn(6, 10, generator=g) * 3).to(dtype), torch.randperm(10, generator=g)[:4]
    compiled_matches(fn, make, exact)


# -- the loop IR and its CUDA C --------------------------------------------------------------------


def scatter_graph(op_args, out_dtype="f32"):
    return "\n".join([
        "deepvisor-graph 1",
        "value %0 f32 sizes=10,6 strides=6,1 device=cpu aligned=1",
        "value %1 i64 sizes=3 strides=1 device=cpu aligned=1",
        "value %2 f32 sizes=3,6 strides=6,1 device=cpu aligned=1",
        f"value %3 {out_dtype} sizes=10,6 strides=6,1 device=cpu aligned=1",
        "input %0",
        "input %1",
        "input %2",
        f"node {op_args} -> %3",
        "output %3",
    ]) + "\n"


def test_the_interpreter_reports_a_write_out_of_range_as_the_programs_error():
    table, rows = torch.randn(10, 6, generator=gen(1)), torch.randn(3, 6, generator=gen(2))
    e = _C.compile_graph_text(scatter_graph("aten::index_add.default %0 i:0 %1 %2 i:1"))
    assert e.stats()["fallback_ops"] == {}
    index = torch.tensor([9, 0, 9])
    assert_matches(e.run([table, index, rows])[0], table.index_add(0, index, rows), sums)
    with pytest.raises(_C.IndexOutOfRange, match=r"index 10 is out of range \[0, 10\) writing"):
        e.run([table, torch.tensor([9, 10, 0]), rows])


def test_cuda_source_of_scatters_checks_offsets_and_adds_atomically():
    sources = {}
    for name, op in [("copy", "aten::index_copy.default %0 i:0 %1 %2"),
                     ("add", "aten::index_add.default %0 i:0 %1 %2 i:1")]:
        e = _C.compile_graph_text(scatter_graph(op))
        (source,) = [s for s in e.cuda_sources(90) if "dv_checked((long long)" in s.split("extern")[-1]]
        sources[name] = source.split('extern "C"')[-1]
        e.validate_cuda(90)  # NVRTC accepts every kernel of the plan
    assert ", 10LL) * 6LL] = " in sources["copy"] and "atomic" not in sources["copy"], sources["copy"]
    assert "dv_atomic_add(&" in sources["add"] and ", 10LL) * 6LL]" in sources["add"], sources["add"]


@pytest.mark.parametrize("dtype,call", [(torch.bfloat16, "dv_atomic_add_bf16(&"), (torch.float16, "dv_atomic_add_f16(&"),
                                        (torch.int64, "dv_atomic_add(&"), (torch.int32, "dv_atomic_add(&"),
                                        (torch.float64, "dv_atomic_add(&")],
                         ids=["bf16", "f16", "i64", "i32", "f64"])
def test_cuda_source_of_accumulating_stores_in_every_dtype(dtype, call):
    fn = lambda x, i, v: torch.index_put(x, (i,), v, accumulate=True)  # noqa: E731
    x, i, v = torch.zeros(8, 3, dtype=dtype), torch.tensor([1, 1, 7]), torch.ones(3, 3, dtype=dtype)
    c = deepvisor.compile(fn)
    c(x, i, v)
    assert_matches(c(x, i, v), fn(x, i, v), sums)
    executor = only_plan(c)
    assert any(call in s for s in executor.cuda_sources(90))
    executor.validate_cuda(90)


# -- scatters of one point (the fuzzer's seed 21 on the H200) ----------------------------------


def atomic_adds_outside_loops(source):
    """The lines of a kernel's CUDA C that add atomically directly in its
    body, outside every loop and branch: code every thread of every block
    runs, so that one point would add once per thread."""
    body = source.split('extern "C"')[-1]
    depth, found = 0, []
    for line in body.splitlines():
        if depth == 1 and "dv_atomic_add" in line:
            found.append(line.strip())
        depth += line.count("{") - line.count("}")
    return found


def one_point_scatters(device="cpu"):
    """(fn, make_args) on `device`: scatters whose index and value are one
    element, as the fuzzer found them failing on the GPU
    (fuzz_regressions/case_*_of_one_*), and one point repeated (an expanded
    index and value: 5 adds into one element)."""
    c7 = torch.zeros(1, dtype=torch.long, device=device)
    c2 = torch.zeros(1, 1, dtype=torch.long, device=device)
    c0 = torch.tensor([1], device=device)
    w = (torch.randn(3, 5, generator=gen(3)) / 2.236).to(device)
    b = torch.randn(3, generator=gen(4)).to(device)

    def randn(*shape, seed):
        return torch.randn(shape, generator=gen(seed)).to(device)

    def scatter_add_bf16(x0):
        v0 = x0 * x0
        v2 = v0.to(torch.bfloat16)
        return (torch.scatter_add(v2 * v0.select(0, -1), 0, c7, v2),)

    def index_add_softmax(x0):
        v0 = -x0
        return (torch.softmax(v0.index_add(0, c0, v0.narrow(0, 2, 1) * -1.9, alpha=-0.5), dim=0),)

    def scatter_add_into_sum(x2):
        v6 = torch.sum(F.linear(x2, w, b) * 0.5 + 1, dim=[0, 1], keepdim=True)
        return (torch.scatter_add(v6, 0, c2, v6),)

    def repeated_point(x, s):
        return (torch.scatter_add(x * 1, 0, c7.expand(5), s.expand(5)),)

    return [
        (scatter_add_bf16, lambda seed: (randn(1, seed=seed),)),
        (index_add_softmax, lambda seed: (randn(3, seed=seed),)),
        (scatter_add_into_sum, lambda seed: (randn(33, 5, seed=seed),)),
        (repeated_point, lambda seed: (randn(3, seed=seed), randn(1, seed=seed + 7))),
    ]


@pytest.mark.parametrize("case", range(4), ids=["scatter_add_bf16", "index_add_softmax", "scatter_add_into_sum",
                                                 "repeated_point"])
def test_a_scatter_of_one_point_adds_once_per_point_in_its_cuda_kernel(case):
    """A Store whose index and value do not vary with x was CUDA C written
    before the per-element loop (as every x-invariant value is): harmless for
    a plain store, but an atomic add ran in every thread of the block (64x on
    the H200). It is lane code now, inside the loop over x. The values on the
    CPU (the interpreter) were always right; on a GPU: tests/gpu/test_scatter_gpu.py."""
    fn, make_args = one_point_scatters()[case]
    g = deepvisor.compile(fn)
    for seed in range(3):
        args = make_args(seed)
        assert_matches(g(*args), fn(*args), sums_or_bf16)
    executor = only_plan(g)
    sources = [s for s in executor.cuda_sources(90) if "dv_atomic_add" in s.split('extern "C"')[-1]]
    assert sources, executor.describe()
    for s in sources:
        assert not atomic_adds_outside_loops(s), s.split('extern "C"')[-1]
    executor.validate_cuda(90)
