"""Regression tests for fixes in the lowering and the scheduler, at the plan
level (how many kernels, what falls back) as well as by value. The value
cases also live in the catalogue (op_cases.py): div_floor[edges],
floor_divide[edges], div_trunc[edges] in bf16, add/mul on bools, cast_*[then_sum],
cast[float_chain_roundtrip]."""

import pytest
import torch
import torch.nn.functional as F

import deepvisor
from deepvisor import _C
from op_cases import NUMBER_OPERAND_CASES, assert_binary_op_bit_exact, assert_matches, assert_number_operand_bit_exact

BF16 = torch.bfloat16


def compiled_run(fn, *args):
    g = deepvisor.compile(fn)
    g(*args)
    out, stats = g(*args), deepvisor.stats(g)
    assert stats["captures"] == 1 and stats["cache_hits"] == 1 and stats["eager_calls"] == 0, stats
    return out, stats


def exact(dtype):
    return 0.0, 0.0


def slice_graph(start_arg):
    return "\n".join([
        "deepvisor-graph 1",
        "value %0 f32 sizes=6,4 strides=4,1 device=cpu aligned=1",
        "value %1 f32 sizes=4,4 strides=4,1 device=cpu aligned=1",
        "input %0",
        f"node aten::slice.Tensor %0 i:0 {start_arg} i:6 i:1 -> %1",
        "output %1",
    ]) + "\n"


def test_int_argument_of_another_kind_falls_back_instead_of_reading_zero():
    # An int argument given as a list used to be read as 0 (slice from the start).
    good = _C.compile_graph_text(slice_graph("i:2"))
    assert good.stats()["fallback_ops"] == {}
    x = torch.arange(24.0).view(6, 4)
    assert torch.equal(good.run([x])[0], x[2:])
    odd = _C.compile_graph_text(slice_graph("il:[2]"))
    assert odd.stats()["fallback_ops"] == {"aten::slice.Tensor": 1}
    assert any("not an int" in note for note in odd.stats()["fallback_reasons"])


def test_number_argument_of_another_kind_falls_back():
    text = "\n".join([
        "deepvisor-graph 1",
        "value %0 f32 sizes=3 strides=1 device=cpu aligned=1",
        "value %1 f32 sizes=3 strides=1 device=cpu aligned=1",
        "input %0",
        'node aten::pow.Tensor_Scalar %0 s:"two" -> %1',
        "output %1",
    ]) + "\n"
    e = _C.compile_graph_text(text)  # used to throw out of the lowering
    assert e.stats()["fallback_ops"] == {"aten::pow.Tensor_Scalar": 1}


@pytest.mark.parametrize("op", [torch.add, torch.mul, torch.maximum, torch.minimum])
def test_arithmetic_on_bools(op):
    a = torch.tensor([[False, True, False, True]] * 3)
    b = torch.tensor([[False, False, True, True]] * 3)

    def fn(x, y):
        return op(x, y), op(x, y).sum(-1)

    out, stats = compiled_run(fn, a, b)
    assert_matches(out, fn(a, b), exact)
    assert stats["fallback_ops"] == {}


def test_float_floor_division_rounds_like_python():
    a = torch.tensor([1.0, -1.0, 0.3, 5.5, -0.0, 0.0, 2.0, -2.0, float("inf"), 1.0, -1.0])
    b = torch.tensor([0.1, 0.1, 0.1, -1.1, 0.3, -0.3, 0.0, 0.0, 2.0, float("inf"), float("inf")])

    def fn(x, y):
        return torch.div(x, y, rounding_mode="floor"), x // y

    out, stats = compiled_run(fn, a, b)
    assert_matches(out, fn(a, b), exact)
    assert stats["fallback_ops"] == {}
    assert out[0][0].item() == 9.0  # 1.0 / 0.1 rounds to 10, the floor division is 9
    assert torch.equal(torch.signbit(out[0]), torch.signbit(fn(a, b)[0]))  # signed zeros too


def test_bf16_trunc_division_rounds_the_quotient_first():
    a = torch.tensor([1.0, -1.0, 3.0, 0.3, 7.0], dtype=BF16)
    b = torch.tensor([0.1, 0.1, 0.3, 0.1, 0.7], dtype=BF16)

    def fn(x, y):
        return torch.div(x, y, rounding_mode="trunc")

    out, _ = compiled_run(fn, a, b)
    assert_matches(out, fn(a, b), exact)


# The cast tests build their graphs by hand, so they do not depend on how the
# recorder encodes _to_copy's dtype argument.
_SHORT = {torch.float32: "f32", torch.bfloat16: "bf16", torch.float16: "f16"}


def graph_text(values, nodes, outputs):
    """values: {id: (dtype, sizes)} (contiguous, value 0 is the input);
    nodes: lines like "aten::exp.default %0 -> %1"."""
    lines = ["deepvisor-graph 1"]
    for v, (dtype, sizes) in values.items():
        strides = [1] * len(sizes)
        for i in range(len(sizes) - 2, -1, -1):
            strides[i] = strides[i + 1] * sizes[i + 1]
        lines.append(f"value %{v} {_SHORT[dtype]} sizes={','.join(map(str, sizes))} "
                     f"strides={','.join(map(str, strides))} device=cpu aligned=1")
    lines.append("input %0")
    lines += [f"node {n}" for n in nodes]
    lines.append("output " + " ".join(f"%{v}" for v in outputs))
    return "\n".join(lines) + "\n"


def run_graph(text, *inputs):
    executor = _C.compile_graph_text(text)
    executor.validate_cuda(90)
    return executor.run(list(inputs)), executor.stats()


def test_explicit_cast_to_bf16_rounds_inside_a_fused_chain():
    x = torch.randn(16, 33, generator=torch.Generator().manual_seed(0))
    text = graph_text({0: (torch.float32, [16, 33]), 1: (BF16, [16, 33]), 2: (torch.float32, [16, 33]),
                       3: (torch.float32, [16, 33])},
                      ["aten::_to_copy.default %0 -> %1", "aten::_to_copy.default %1 -> %2",
                       "aten::mul.Tensor %2 f:0x1.8p+1 -> %3"], [3])
    (out,), stats = run_graph(text, x)
    assert_matches(out, x.to(BF16).float() * 3, lambda dt: (1e-6, 1e-6))
    assert stats["kernels"] == 1  # the rounded value is rounded in registers (PrimOp::RoundBf16)


@pytest.mark.parametrize("target", [torch.float16, torch.bfloat16])
def test_cast_then_reduce_sums_rounded_values(target):
    x = torch.randn(8, 300, generator=torch.Generator().manual_seed(1)) * 3
    text = graph_text({0: (torch.float32, [8, 300]), 1: (target, [8, 300]), 2: (target, [8])},
                      ["aten::_to_copy.default %0 -> %1", "aten::sum.dim_IntList %1 il:[-1] b:0 none -> %2"], [2])
    (out,), stats = run_graph(text, x)
    assert_matches(out, x.to(target).sum(-1), lambda dt: (2e-3, 2e-3) if dt == torch.float16 else (8e-3, 8e-3))
    assert stats["kernels"] == 1


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_rounded_result_and_its_reader_are_one_kernel(dtype):
    """Batch norm's 16-bit result is read rounded, as eager stores it; the
    relu after it rounds it in registers instead of reading it from memory."""
    m = torch.nn.Sequential(torch.nn.BatchNorm2d(5), torch.nn.ReLU()).eval()
    with torch.no_grad():
        m[0].running_mean.uniform_(-1, 1)
        m[0].running_var.uniform_(0.5, 2)
    x = (torch.randn(3, 5, 7, 9, generator=torch.Generator().manual_seed(3)) * 4).to(dtype)
    g = deepvisor.compile(m)
    with torch.no_grad():
        assert_matches(g(x), m(x), lambda dt: (0, 0))
    assert deepvisor.stats(g)["kernels"] == 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_convolution_bias_is_added_by_the_kernel_that_reads_the_result(dtype):
    """codegen/library_bias.h: the first convolution runs without its bias,
    which the ELU's kernel adds; the last one's result leaves the plan, so
    it keeps its bias. A bf16 convolution on the CPU keeps its bias: ATen
    adds it there before rounding once."""
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ELU(),
                            torch.nn.Conv2d(8, 4, 3, groups=2)).eval().to(dtype)
    x = torch.randn(2, 3, 9, 11).to(dtype)
    g = deepvisor.compile(m)
    with torch.no_grad():
        tol = (1e-5, 1e-5) if dtype == torch.float32 else (1e-2, 1e-2)  # bf16: the sum is not rounded again
        for _ in range(2):
            assert_matches(g(x), m(x), lambda dt: tol)
    (executor,) = g._plans.executors()
    convs = [line for line in executor.describe().splitlines() if ": fallback aten::convolution" in line]
    split = [2, 3] if dtype == torch.float32 else [3, 3]  # (x, w, -> y) or (x, w, b, -> y)
    assert [line.split("(")[1].count(",") for line in convs] == split, convs


def test_upcast_still_fuses():
    x = torch.randn(8, 64, generator=torch.Generator().manual_seed(2)).to(BF16)
    text = graph_text({0: (BF16, [8, 64]), 1: (torch.float32, [8, 64]), 2: (torch.float32, [8, 64])},
                      ["aten::_to_copy.default %0 -> %1", "aten::_softmax.default %1 i:-1 b:0 -> %2"], [2])
    (out,), stats = run_graph(text, x)
    assert_matches(out, torch.softmax(x.float(), -1), lambda dt: (1e-6, 1e-6))
    assert stats["kernels"] == 1, stats


def test_downcast_as_the_final_output_stays_fused():
    x = torch.randn(8, 64, generator=torch.Generator().manual_seed(3))
    text = graph_text({0: (torch.float32, [8, 64]), 1: (torch.float32, [8, 64]), 2: (BF16, [8, 64])},
                      ["aten::_softmax.default %0 i:-1 b:0 -> %1", "aten::_to_copy.default %1 -> %2"], [2])
    (out,), stats = run_graph(text, x)
    assert_matches(out, torch.softmax(x, -1).to(BF16), lambda dt: (0.0, 0.0))
    assert stats["kernels"] == 1, stats


def test_plain_bf16_chain_is_one_kernel():
    x = torch.randn(8, 64, generator=torch.Generator().manual_seed(4)).to(BF16)

    def fn(t):
        return torch.exp(t) * 2 + t

    out, stats = compiled_run(fn, x)
    assert_matches(out, fn(x), lambda dt: (1.6e-2, 1.6e-2))
    assert stats["kernels"] == 1, stats


# -- index remapping and upsampling: view-like defs, the .vec overloads ---------------------------

# The capture never records upsample_*2d.vec (a composite that dispatches to
# .default); graphs that hold it (hand-written, or recorded by another
# front end) lower it all the same.
UPSAMPLE_VEC = [
    ("aten::upsample_nearest2d.vec", "none fl:[2,3]", (10, 18),
     lambda x: torch.ops.aten.upsample_nearest2d.vec(x, None, [2.0, 3.0])),
    ("aten::upsample_nearest2d.vec", "il:[9,31] none", (9, 31),
     lambda x: torch.ops.aten.upsample_nearest2d.vec(x, [9, 31], None)),
    ("aten::upsample_bilinear2d.vec", "none b:0 fl:[1.5,2]", (7, 12),
     lambda x: torch.ops.aten.upsample_bilinear2d.vec(x, None, False, [1.5, 2.0])),
    ("aten::upsample_bilinear2d.vec", "il:[3,4] b:1 none", (3, 4),
     lambda x: torch.ops.aten.upsample_bilinear2d.vec(x, [3, 4], True, None)),
]


@pytest.mark.parametrize("op,args,out_hw,eager", UPSAMPLE_VEC, ids=[f"{u[0][6:]}-{u[1]}" for u in UPSAMPLE_VEC])
def test_upsample_vec_overloads(op, args, out_hw, eager):
    x = torch.randn(2, 3, 5, 6, generator=torch.Generator().manual_seed(5))
    text = graph_text({0: (torch.float32, [2, 3, 5, 6]), 1: (torch.float32, [2, 3, *out_hw])},
                      [f"{op} %0 {args} -> %1"], [1])
    (out,), stats = run_graph(text, x)
    assert stats["fallback_ops"] == {}, stats
    assert_matches(out, eager(x), lambda dt: (1e-6, 1e-6))


# Between two pointwise ops, each remapping is read through its index
# expressions: one kernel, no copy of the input.
VIEW_LIKE = [
    ("flip", lambda x: (x * 2).flip(1, 2) + 1),
    ("roll", lambda x: torch.roll(x * 2, (1, -2), (1, 3)) + 1),
    ("repeat", lambda x: (x * 2).repeat(1, 2, 1, 3) + 1),
    ("stack", lambda x: torch.stack([x * 2, x - 1], 2) + 1),
    ("upsample_nearest", lambda x: F.interpolate(x * 2, scale_factor=(2, 3)) + 1),
    ("upsample_bilinear", lambda x: F.interpolate(x * 2, size=(9, 13), mode="bilinear") + 1),
]


@pytest.mark.parametrize("name,fn", VIEW_LIKE, ids=[v[0] for v in VIEW_LIKE])
def test_index_remapping_fuses_with_its_neighbours(name, fn):
    x = torch.randn(2, 3, 5, 7, generator=torch.Generator().manual_seed(6))
    out, stats = compiled_run(fn, x)
    assert_matches(out, fn(x), lambda dt: (1e-5, 1e-6))
    assert stats["fallback_ops"] == {} and stats["kernels"] == 1, stats


def test_group_norm_statistics_are_stored_only_when_read():
    x = torch.randn(2, 6, 5, 7, generator=torch.Generator().manual_seed(7))
    values = {0: (torch.float32, [2, 6, 5, 7]), 1: (torch.float32, [2, 6, 5, 7]), 2: (torch.float32, [2, 3]),
              3: (torch.float32, [2, 3])}
    node = "aten::native_group_norm.default %0 none none i:2 i:6 i:35 i:3 f:1e-05 -> %1 %2 %3"
    stores = {}
    for outputs in ([1], [1, 2, 3]):
        executor = _C.compile_graph_text(graph_text(values, [node], outputs))
        out = executor.run([x])
        assert executor.stats()["fallback_ops"] == {}
        expected = torch.ops.aten.native_group_norm(x, None, None, 2, 6, 35, 3, 1e-5)
        assert_matches(tuple(out), tuple(expected[v - 1] for v in outputs), lambda dt: (1e-5, 1e-5))
        stores[len(outputs)] = executor.loop_ir().count("store ")
    assert stores[1] + 2 == stores[3], stores  # mean and rstd: one store each, only when they are outputs


_X_BF16 = torch.tensor([-2.171875, 1.0, 3.0, 7.5, -0.3], dtype=torch.bfloat16)
_S_F32 = torch.tensor(-2.1787893772125244)  # 0-d; -2.171875 in bf16
_I64 = torch.tensor([257, 513, 1025, -3, 4099])  # 256, 512, 1024, -3, 4096 in bf16


@pytest.mark.parametrize("name", ["add", "sub", "mul", "div", "atan2", "eq", "lt", "remainder", "fmod", "maximum"])
@pytest.mark.parametrize("operands", ["x,s", "s,x", "x,i", "i,x"])
def test_operands_are_cast_to_a_bf16_common_dtype_as_aten_does(name, operands):
    """A float32 0-d tensor or an int64 tensor in a bf16 op: ATen casts it to
    bf16 before computing (x - s with s 0-d gave 0 in eager and -0.0069 in
    the plan, which a floor then made -1), except on the CPU the 0-d second
    operand of mul and div (their scalar fast path)."""
    values = {"x": _X_BF16, "s": _S_F32, "i": _I64}
    assert_binary_op_bit_exact(name, *(values[k] for k in operands.split(",")))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", sorted(NUMBER_OPERAND_CASES))
def test_a_number_operand_is_read_as_eager_reads_it(name, dtype):
    """A Python number in a bf16/f16 op: the CPU's add, sub, rsub, alpha,
    remainder, pow and comparisons round it to the dtype first, mul and div
    do not (x - -1.573 then floor(3 * ...) gave 8 where eager gives 7: the
    CPU fuzzer, seed 2602)."""
    assert_number_operand_bit_exact(name, dtype, "cpu")


def test_moments_of_rows_of_equal_values_are_exact():
    """The variance family's mean is pivot + sum(x - pivot) / n, pivot the
    row's first element (CPU fuzzer, seed 2105): a replicate pad makes rows of
    equal values, where eager's Welford moments are exact. A plain sum / n was
    an ulp off, and layer norm's rsqrt(0 + eps) made that ulp 8e-5 here."""
    gen = torch.Generator().manual_seed(7)
    x, w, b = torch.randn(33, 1, 33, 1, generator=gen), torch.randn(3, generator=gen), torch.randn(3, generator=gen)
    out, _ = compiled_run(lambda x: F.layer_norm(F.pad(x, [1, 1, 0, 1], mode="replicate"), (3,), w, b), x)
    assert torch.equal(out, F.layer_norm(F.pad(x, [1, 1, 0, 1], mode="replicate"), (3,), w, b))
    # Each (n, c) row one value: every result is exactly 0 (eager's layer_norm
    # of rows of 7 is not, in float32 or float64: -4.9e-4 and -1.7e-12).
    rows = (torch.randn(4, 6, 1, generator=gen) * 100).expand(4, 6, 7).contiguous()
    for fn in (lambda t: t.var(-1), lambda t: t.std(-1, keepdim=True),
               lambda t: F.group_norm(t, 6, w.repeat(2).to(t.dtype)), lambda t: F.layer_norm(t, (7,))):
        out, _ = compiled_run(fn, rows)
        assert not out.any(), out


@pytest.mark.parametrize("n", [3, 7, 768, 1000])
def test_layer_norm_of_rows_with_a_large_mean_is_as_accurate_as_eager(n):
    """Rows of mean 100 and spread 0.01: the sums of x - pivot do not cancel,
    and x - mean is formed as (x - pivot) - shift, never rounding the mean at
    the values' magnitude: measured 1.6e-7 to 5.4e-7 from float64 where
    eager is 1e-3 to 1.7e-3 off."""
    y = torch.randn(64, n, generator=torch.Generator().manual_seed(n)) * 0.01 + 100.0
    out, _ = compiled_run(lambda y: F.layer_norm(y, (n,)), y)
    exact_result = F.layer_norm(y.double(), (n,))
    eager_error = (F.layer_norm(y, (n,)).double() - exact_result).abs().max()
    assert (out.double() - exact_result).abs().max() <= eager_error / 100


@pytest.mark.filterwarnings("ignore:.*degrees of freedom")
def test_moments_of_empty_rows_are_eagers_nan():
    """Empty rows have no first element to pivot on: the plain mean's NaN."""
    x = torch.randn(4, 0)
    for fn in (lambda t: t.var(1), lambda t: t.std(1, keepdim=True)):
        out, _ = compiled_run(fn, x)
        assert out.isnan().all() and out.shape == fn(x).shape
