"""The operator catalogue (tests/python/op_cases.py) on CUDA tensors, against
eager on the same device; the benchmark-shaped workloads at smaller sizes;
unaligned inputs; the current stream. Skipped without a GPU."""

import pytest
import torch
import torch.nn.functional as F

import deepvisor
from op_cases import (NUMBER_OPERAND_CASES, assert_binary_op_bit_exact, assert_matches, assert_number_operand_bit_exact,
                      check_compiled, params)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

BF16 = torch.bfloat16


@pytest.mark.parametrize("case,dtype", params("cuda"))
def test_op_gpu(case, dtype):
    check_compiled(case, dtype, "cuda")


# -- benchmark-shaped workloads ---------------------------------------------------------------


def gelu_chain(x):
    return F.gelu(x * 1.5 + 0.3) * torch.sigmoid(x)


def softmax_rows(x):
    return torch.softmax(x, dim=-1)


def layer_norm_rows(x, w, b):
    return F.layer_norm(x, (x.shape[-1],), w, b)


def cuda_randn(*shape, seed=0, dtype=torch.float32, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) * scale).to("cuda", dtype)


# float32: 1e-4 relative (CUDA's math functions and reduction order); bf16: as on CPU.
def gpu_tolerance(dtype):
    return {torch.float32: (1e-4, 1e-5), BF16: (1.6e-2, 1.6e-2)}.get(dtype, (0.0, 0.0))


WORKLOADS = [
    ("gelu_chain", gelu_chain, lambda dt, s: (cuda_randn(1024, 4096, seed=s, dtype=dt),)),
    ("softmax_8192", softmax_rows, lambda dt, s: (cuda_randn(256, 8192, seed=s, dtype=dt, scale=3),)),
    ("softmax_8192_few_rows", softmax_rows, lambda dt, s: (cuda_randn(3, 8192, seed=s, dtype=dt, scale=3),)),
    ("layer_norm_4096", layer_norm_rows,
     lambda dt, s: (cuda_randn(512, 4096, seed=s, dtype=dt), cuda_randn(4096, seed=s + 1, dtype=dt),
                    cuda_randn(4096, seed=s + 2, dtype=dt))),
    # Enough rows that 768 and 3072 columns take the equal-share tiles (3 chunks a thread).
    ("layer_norm_768", layer_norm_rows,
     lambda dt, s: (cuda_randn(8800, 768, seed=s, dtype=dt), cuda_randn(768, seed=s + 1, dtype=dt),
                    cuda_randn(768, seed=s + 2, dtype=dt))),
    ("layer_norm_3072", layer_norm_rows,
     lambda dt, s: (cuda_randn(1100, 3072, seed=s, dtype=dt), cuda_randn(3072, seed=s + 1, dtype=dt),
                    cuda_randn(3072, seed=s + 2, dtype=dt))),
    # A reduction that writes no row: its loads skip L1 (dv_load_once). A mean, not a sum:
    # a sum of 4096 terms near zero differs from eager's order by more than the f32 atol.
    ("row_mean_4096", lambda x: x.mean(-1), lambda dt, s: (cuda_randn(512, 4096, seed=s, dtype=dt),)),
    # Rows too long for registers: looped passes, the variance computed with the mean.
    ("layer_norm_32768", layer_norm_rows,
     lambda dt, s: (cuda_randn(64, 32768, seed=s, dtype=dt), cuda_randn(32768, seed=s + 1, dtype=dt),
                    cuda_randn(32768, seed=s + 2, dtype=dt))),
    ("softmax_32768", softmax_rows, lambda dt, s: (cuda_randn(64, 32768, seed=s, dtype=dt, scale=3),)),
    # Enough columns for 64-wide column blocks, with a partial last block (9000 = 140 x 64 + 40).
    ("column_mean_9000", lambda x: x.mean(0), lambda dt, s: (cuda_randn(300, 9000, seed=s, dtype=dt),)),
]


@pytest.mark.parametrize("dtype", [torch.float32, BF16], ids=["f32", "bf16"])
@pytest.mark.parametrize("name,fn,make", WORKLOADS, ids=[w[0] for w in WORKLOADS])
def test_workload(name, fn, make, dtype):
    args = make(dtype, 0)
    g = deepvisor.compile(fn)
    g(*args)
    assert_matches(g(*args), fn(*args), gpu_tolerance)
    fresh = make(dtype, 10)
    assert_matches(g(*fresh), fn(*fresh), gpu_tolerance)
    stats = deepvisor.stats(g)
    assert stats["kernels"] == 1 and stats["fallback_ops"] == {} and stats["eager_calls"] == 0, stats
    assert stats["cache_hits"] == 2


def test_issue_example_on_gpu():
    def f(x, w, b):
        y = F.gelu(x * 1.5 + 0.3) * torch.sigmoid(x)
        y = torch.softmax(y, dim=-1)
        return F.layer_norm(y, (y.shape[-1],), w, b)

    x, w, b = cuda_randn(64, 1000), cuda_randn(1000, seed=1), cuda_randn(1000, seed=2)
    g = deepvisor.compile(f)
    g(x, w, b)
    assert_matches(g(x, w, b), f(x, w, b), lambda dt: (1e-4, 1e-4))
    assert deepvisor.stats(g)["kernels"] == 1


# -- masked and indirect loads at model sizes -------------------------------------------------------

def cuda_indices(*shape, high, seed=0, dtype=torch.int64):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, high, shape, generator=g).to("cuda", dtype)


# Data movement is exact; avg_pool2d sums windows in another order (float tolerance).
LOAD_WORKLOADS = [
    # BERT's word embedding (30522 x 768) for 4 x 512 tokens, int64 and int32 ids, plus positions.
    ("bert_embedding", lambda w, p, i: F.embedding(i, w) + p[: i.shape[1]],
     lambda dt, s: (cuda_randn(30522, 768, seed=s, dtype=dt), cuda_randn(512, 768, seed=s + 1, dtype=dt),
                    cuda_indices(4, 512, high=30522, seed=s))),
    ("bert_embedding_i32", lambda w, i: F.embedding(i, w),
     lambda dt, s: (cuda_randn(30522, 768, seed=s, dtype=dt), cuda_indices(4, 512, high=30522, seed=s, dtype=torch.int32))),
    ("gather_rows", lambda x, i: torch.gather(x, 1, i),
     lambda dt, s: (cuda_randn(4096, 1000, seed=s, dtype=dt), cuda_indices(4096, 5, high=1000, seed=s))),
    ("index_select_cols", lambda x, i: x.index_select(1, i),
     lambda dt, s: (cuda_randn(2048, 4096, seed=s, dtype=dt), cuda_indices(777, high=4096, seed=s))),
    # DenseNet-style cat of feature maps along channels, then batch-norm-like scaling.
    ("densenet_cat", lambda a, b, c: torch.cat([a, b, c], 1) * 0.5 + 1,
     lambda dt, s: (cuda_randn(8, 64, 56, 56, seed=s, dtype=dt), cuda_randn(8, 32, 56, 56, seed=s + 1, dtype=dt),
                    cuda_randn(8, 32, 56, 56, seed=s + 2, dtype=dt))),
    ("pad_image", lambda x: F.pad(x, (1, 2, 3, 0), value=-1.0),
     lambda dt, s: (cuda_randn(8, 64, 55, 57, seed=s, dtype=dt),)),
    # ResNet's stem pooling after batch norm and ReLU, and GoogLeNet's ceil_mode pools.
    ("resnet_maxpool", lambda x: F.max_pool2d(torch.relu(x), 3, 2, 1),
     lambda dt, s: (cuda_randn(8, 64, 112, 112, seed=s, dtype=dt),)),
    ("maxpool_ceil_mode", lambda x: F.max_pool2d(x, 3, 2, ceil_mode=True),
     lambda dt, s: (cuda_randn(8, 192, 57, 57, seed=s, dtype=dt),)),
    ("avgpool_exclude_pad", lambda x: F.avg_pool2d(x, 3, 1, 1, count_include_pad=False),
     lambda dt, s: (cuda_randn(8, 256, 28, 28, seed=s, dtype=dt),)),
]


@pytest.mark.parametrize("dtype", [torch.float32, BF16], ids=["f32", "bf16"])
@pytest.mark.parametrize("name,fn,make", LOAD_WORKLOADS, ids=[w[0] for w in LOAD_WORKLOADS])
def test_masked_and_indirect_load_workload(name, fn, make, dtype):
    args = make(dtype, 0)
    g = deepvisor.compile(fn)
    g(*args)
    tolerance = gpu_tolerance if name.startswith("avgpool") else (lambda dt: (0.0, 0.0))
    assert_matches(g(*args), fn(*args), tolerance)
    fresh = make(dtype, 10)
    assert_matches(g(*fresh), fn(*fresh), tolerance)
    stats = deepvisor.stats(g)
    assert stats["fallback_ops"] == {} and stats["eager_calls"] == 0 and stats["cache_hits"] == 2, stats


# -- writes by data at model sizes ------------------------------------------------------------------


def cuda_perm(n, k, seed=0):
    """k distinct indices in [0, n)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k].to("cuda")


def _set_cache(cache, pos, new):
    cache = cache.clone()
    cache[:, pos] = new
    return cache


def _zero_large(x):
    x = x.clone()
    x[x > 0.5] = 0
    return x


# Replacing forms with distinct indices: exact.
STORE_WORKLOADS = [
    ("index_copy_rows", lambda x, i, s: x.index_copy(0, i, s),
     lambda dt, s: (cuda_randn(8192, 512, seed=s, dtype=dt), cuda_perm(8192, 3000, seed=s), cuda_randn(3000, 512, seed=s + 1, dtype=dt))),
    ("scatter_permutation", lambda x, i, s: torch.scatter(x, 1, i, s),
     lambda dt, s: (cuda_randn(1024, 1000, seed=s, dtype=dt),
                    torch.rand(1024, 1000, generator=torch.Generator().manual_seed(s)).argsort(1)[:, :700].cuda(),
                    cuda_randn(1024, 700, seed=s + 1, dtype=dt))),
    ("kv_cache_update", _set_cache,
     lambda dt, s: (cuda_randn(8, 2048, 64, seed=s, dtype=dt), cuda_perm(2048, 16, seed=s), cuda_randn(8, 16, 64, seed=s + 1, dtype=dt))),
    ("mask_fill_setitem", _zero_large, lambda dt, s: (cuda_randn(4096, 1024, seed=s, dtype=dt),)),
]


@pytest.mark.parametrize("dtype", [torch.float32, BF16], ids=["f32", "bf16"])
@pytest.mark.parametrize("name,fn,make", STORE_WORKLOADS, ids=[w[0] for w in STORE_WORKLOADS])
def test_indirect_store_workload(name, fn, make, dtype):
    args = make(dtype, 0)
    g = deepvisor.compile(fn)
    g(*args)
    assert_matches(g(*args), fn(*args), lambda dt: (0.0, 0.0))
    fresh = make(dtype, 10)
    assert_matches(g(*fresh), fn(*fresh), lambda dt: (0.0, 0.0))
    stats = deepvisor.stats(g)
    assert stats["fallback_ops"] == {} and stats["eager_calls"] == 0 and stats["cache_hits"] == 2, stats


def test_integer_sums_by_atomic_adds_are_exact():
    def fn(i, w32):
        counts = torch.zeros(1000, dtype=torch.int64, device=i.device).scatter_add_(0, i, torch.ones_like(i))
        return counts, torch.zeros(1000, 3, dtype=torch.int32, device=i.device).index_put_((i,), w32, accumulate=True)

    i = cuda_indices(1 << 20, high=1000)
    w32 = cuda_indices(1 << 20, 3, high=100, seed=1, dtype=torch.int32)
    g = deepvisor.compile(fn)
    g(i, w32)
    assert_matches(g(i, w32), fn(i, w32), lambda dt: (0.0, 0.0))
    assert deepvisor.stats(g)["fallback_ops"] == {}


def test_float32_sums_by_atomic_adds():
    # An embedding's gradient (index_put accumulate) and an index_add with
    # many duplicates: eager sums in another order.
    def fn(ids, grad, rows, src):
        table = torch.zeros(30522, 768, device=ids.device).index_put_((ids,), grad, accumulate=True)
        return table, torch.zeros(64, 1000, device=ids.device).index_add_(0, rows, src, alpha=0.5)

    args = (cuda_indices(2048, high=30522), cuda_randn(2048, 768), cuda_indices(100000, high=64, seed=2),
            cuda_randn(100000, 1000, seed=3))
    g = deepvisor.compile(fn)
    g(*args)
    assert_matches(g(*args), fn(*args), lambda dt: (1e-4, 1e-3))
    assert deepvisor.stats(g)["fallback_ops"] == {}


@pytest.mark.parametrize("dtype", [BF16, torch.float16], ids=["bf16", "f16"])
def test_16bit_sums_against_exact_sums(dtype):
    # Eager CUDA rounds these sums in other ways (op_cases.py skips them), so
    # they are checked against float64: scatter_add sums in float32 and rounds
    # once (within an ulp); index_put and index_add round at each addition (a
    # compare-and-swap loop), a few duplicates each here.
    ulp = 2.0 ** -7 if dtype == BF16 else 2.0 ** -10

    def fn(x, i, s, rows, v):
        return torch.scatter_add(x, 0, i, s), x.index_put((rows,), v, accumulate=True), x.index_add(0, rows, v)

    x, s = cuda_randn(256, 300, dtype=dtype), cuda_randn(4096, 300, seed=1, dtype=dtype)
    i, rows = cuda_indices(4096, 300, high=256, seed=2), cuda_indices(512, high=256, seed=3)
    v = cuda_randn(512, 300, seed=4, dtype=dtype)
    g = deepvisor.compile(fn)
    g(x, i, s, rows, v)
    add, put, index_add = g(x, i, s, rows, v)
    assert deepvisor.stats(g)["fallback_ops"] == {}
    exact_add = torch.scatter_add(x.double(), 0, i, s.double())
    exact_put = x.double().index_put((rows,), v.double(), accumulate=True)
    torch.testing.assert_close(add.double(), exact_add, rtol=ulp, atol=ulp)
    most = torch.bincount(rows, minlength=256).max().item() + 1  # roundings on the way to one element
    for got in (put, index_add):
        torch.testing.assert_close(got.double(), exact_put, rtol=most * ulp, atol=most * ulp)


# -- alignment ------------------------------------------------------------------------------------


def unaligned(shape, dtype, seed=0, offset=1):
    """A tensor of `shape` whose data pointer is `offset` elements past a
    16-byte boundary (contiguous rows, each row unaligned too when the row
    length is odd)."""
    n = 1
    for s in shape:
        n *= s
    flat = cuda_randn(n + offset, seed=seed, dtype=dtype)
    t = flat[offset:].view(shape)
    assert t.data_ptr() % 16 != 0
    return t


ALIGNMENT_CASES = [
    ("pointwise_flat", lambda x: torch.exp(x) * 2 - x, (4097,)),
    ("pointwise_rows", lambda x: F.gelu(x) + 1, (33, 1024)),
    ("softmax", lambda x: torch.softmax(x, -1), (17, 1024)),
    ("sum_rows", lambda x: x.sum(-1), (9, 4096)),
    ("layer_norm", lambda x: F.layer_norm(x, (512,)), (15, 512)),
]


@pytest.mark.parametrize("dtype", [torch.float32, BF16, torch.float16], ids=["f32", "bf16", "f16"])
@pytest.mark.parametrize("name,fn,shape", ALIGNMENT_CASES, ids=[c[0] for c in ALIGNMENT_CASES])
def test_unaligned_input(name, fn, shape, dtype):
    def tol(dt):
        return {torch.float32: (1e-4, 1e-5), BF16: (1.6e-2, 1.6e-2), torch.float16: (2e-3, 1e-3)}[dt]

    for offset in (1, 3):
        x = unaligned(shape, dtype, offset=offset)
        g = deepvisor.compile(fn)
        g(x)
        assert_matches(g(x), fn(x), tol)
        x2 = unaligned(shape, dtype, seed=1, offset=offset)
        assert_matches(g(x2), fn(x2), tol)
        assert deepvisor.stats(g)["cache_hits"] == 2


def test_unaligned_after_aligned_captures_again():
    fn = ALIGNMENT_CASES[0][1]
    g = deepvisor.compile(fn)
    aligned = cuda_randn(4097)
    assert aligned.data_ptr() % 16 == 0
    g(aligned)
    g(aligned)
    x = unaligned((4097,), torch.float32)
    assert_matches(g(x), fn(x), gpu_tolerance)  # the aligned plan must not run on it
    assert_matches(g(x), fn(x), gpu_tolerance)
    stats = deepvisor.stats(g)
    assert stats["captures"] == 2 and stats["cache_hits"] == 2, stats


def test_sliced_column_input_unaligned_and_strided():
    def fn(x):
        return torch.softmax(x * 2, dim=-1)

    base = cuda_randn(64, 1027)
    x = base[:, 3:1027]  # each row starts 12 bytes past the row's start
    g = deepvisor.compile(fn)
    g(x)
    assert_matches(g(x), fn(x), gpu_tolerance)


# -- streams and devices -----------------------------------------------------------------------------


def test_runs_on_the_current_stream():
    fn = gelu_chain
    x = cuda_randn(2048, 1024)
    g = deepvisor.compile(fn)
    g(x)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        y = x * 3  # produced on the side stream: the kernel must be ordered after it
        out = g(y)
        expected = fn(y)
    stream.synchronize()
    assert_matches(out, expected, gpu_tolerance)


def test_cpu_and_gpu_inputs_get_separate_plans():
    fn = gelu_chain
    g = deepvisor.compile(fn)
    x_cpu = torch.randn(16, 100, generator=torch.Generator().manual_seed(0))
    x_gpu = x_cpu.cuda()
    for _ in range(2):
        assert_matches(g(x_cpu), fn(x_cpu), lambda dt: (1e-5, 1e-6))
        assert_matches(g(x_gpu), fn(x_gpu), gpu_tolerance)
    assert deepvisor.stats(g)["captures"] == 2


# -- variance computed in one pass (with the mean) -------------------------------------------

# Rows that take the one-pass form (every thread holds the same number of
# elements: 8 or 16, one warp or several) and one that keeps the two-pass form
# (3072 f32: the last chunk is masked), in float32, bfloat16 and float64.
VARIANCE_SHAPES = [(64, 4096, torch.float32), (300, 64, torch.float32), (50, 1024, torch.float32),
                   (33, 2048, BF16), (20, 4096, torch.float64), (17, 3072, torch.float32),
                   # looped rows (2 and 4 steps a pass): the moments merged step by step
                   (8, 65536, torch.float32), (4, 131072, torch.float32), (6, 65536, BF16), (4, 65536, torch.float64)]


@pytest.mark.parametrize("offset", [0.0, 1000.0], ids=["centered", "offset1000"])
@pytest.mark.parametrize("rows,cols,dtype", VARIANCE_SHAPES,
                         ids=[f"{r}x{c}-{str(d).split('.')[-1]}" for r, c, d in VARIANCE_SHAPES])
def test_variance_accuracy(rows, cols, dtype, offset):
    """var and std against a float64 reference: a large mean must not cost
    precision (the partial sums are taken around the row's first element)."""
    x = (cuda_randn(rows, cols, seed=3) + offset).to(dtype)
    ref = x.double().var(dim=-1)
    g = deepvisor.compile(lambda t: (torch.var(t, dim=-1), torch.std(t, dim=-1, correction=0)))
    g(x)  # the capture runs eager (whose float32 Welford is off by ~1e-5 at offset 1000)
    var, std = g(x)
    stats = deepvisor.stats(g)
    assert stats["kernels"] == 1 and stats["cache_hits"] == 1, stats
    # float32: the pivoted one-pass form lands near 1e-7 at either offset;
    # partial sums of x itself (no pivot) would reach ~2e-6, and the two-pass
    # form (3072: masked chunks) inherits the float32 mean's error (~1e-5).
    tol = {torch.float64: 1e-12, torch.float32: 5e-7 if cols != 3072 else 3e-5,
           BF16: 8e-3}[dtype]  # bf16: the result is rounded to bf16
    torch.testing.assert_close(var.double(), ref, rtol=tol, atol=0)
    torch.testing.assert_close(std.double(), (ref * (cols - 1) / cols).sqrt(), rtol=tol, atol=0)


@pytest.mark.parametrize("offset", [0.0, 1000.0], ids=["centered", "offset1000"])
@pytest.mark.parametrize("cols", [65536, 4096, 1024, 64])
def test_layer_norm_large_mean(cols, offset):
    x = cuda_randn(40, cols, seed=4) + offset
    w, b = cuda_randn(cols, seed=5), cuda_randn(cols, seed=6)
    g = deepvisor.compile(layer_norm_rows)
    g(x, w, b)  # the capture runs eager
    got = g(x, w, b)
    assert deepvisor.stats(g)["cache_hits"] == 1
    want = layer_norm_rows(x.double(), w.double(), b.double())
    # The float32 mean of values near 1000 is off by ~1e-4 (as eager's is).
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5 + offset * 1e-6)


def test_cumsum_bf16_keeps_float32_partial_sums():
    # Eager CUDA rounds each bf16 partial sum (op_cases skips the comparison
    # there); deepvisor scans in float32 and rounds once, as eager CPU does.
    x = cuda_randn(37, 129, dtype=BF16)
    g = deepvisor.compile(lambda t: torch.cumsum(t, -1))
    g(x)  # the capture runs eager's scan
    want = torch.cumsum(x.float(), -1).to(BF16)
    for _ in range(2):
        assert_matches(g(x), want, lambda dt: (1.6e-2, 1.6e-2))


@pytest.mark.parametrize("name", ["add", "sub", "mul", "div", "atan2", "eq", "ne", "lt", "ge", "remainder", "fmod",
                                  "maximum", "minimum"])
@pytest.mark.parametrize("operands", ["x,s", "s,x", "x,c", "c,x", "x,i", "i,x"])
def test_operands_are_cast_to_a_bf16_common_dtype_as_aten_does_on_the_gpu(name, operands):
    """On the GPU, ATen casts a float32 0-d CUDA tensor or an int64 tensor in a
    bf16 op to bf16 before computing. A 0-d CPU tensor (a CPU scalar) its
    kernel reads as the type the op's functor takes: float for add, sub, mul
    and a divisor, bf16 (rounded) for the rest. (tests/python/test_lowering.py:
    the CPU's rules.)"""
    values = {"x": torch.tensor([-2.171875, 1.0, 3.0, 7.5, -0.3], dtype=BF16, device="cuda"),
              "s": torch.tensor(-2.1787893772125244, device="cuda"), "c": torch.tensor(-2.1787893772125244),
              "i": torch.tensor([257, 513, 1025, -3, 4099], device="cuda")}
    assert_binary_op_bit_exact(name, *(values[k] for k in operands.split(",")), calls=3)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", sorted(NUMBER_OPERAND_CASES))
def test_a_number_operand_is_read_as_eager_reads_it_on_the_gpu(name, dtype):
    """A Python number (a CPU scalar to ATen) in a bf16/f16 op on the GPU:
    comparisons, remainder and pow (its exponent or base) round it to the
    dtype; add, sub, mul and div read it in float (tests/python/
    test_lowering.py: the CPU's rules)."""
    assert_number_operand_bit_exact(name, dtype, "cuda")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("divisor", ["number", "cpu_scalar"])
def test_division_by_a_cpu_scalar_is_eagers_to_the_bit(dtype, divisor):
    """ATen's CUDA kernel divides by a CPU scalar or a Python number as
    a * (1 / b), the reciprocal in the compute type (div_true_kernel_cuda):
    up to an ulp from a / b, for a good share of these quotients. The plan
    computes the same."""
    x = cuda_randn(4099, seed=11, dtype=dtype) * 100
    if divisor == "number":
        fn, args = (lambda t: t / 3.1), (x,)
    else:
        fn, args = (lambda t, d: t / d), (x, torch.tensor(0.7, dtype=dtype))
    want = fn(*args)
    assert not torch.equal(want, x / torch.full_like(x, 3.1 if divisor == "number" else 0.7))  # the test can tell
    g = deepvisor.compile(fn)
    for _ in range(3):
        got = g(*args)
    assert torch.equal(got, want)
    assert deepvisor.stats(g)["fallback_ops"] == {}


@pytest.mark.parametrize("dtype", [torch.float32, BF16])
def test_densenet_block_of_cats_channels_last(dtype):
    """DenseNet's cats (each extends the one before: lower_cat reads that one
    as a part) over channels-last feature maps of odd sizes."""
    def block(x, scales):
        features = [x]
        for k, s in enumerate(scales):
            h = torch.relu(torch.cat(features, 1) * 0.75 - 0.1 * k)
            features.append(torch.tanh(h[:, k:k + 5] * s))
        return torch.cat(features, 1)

    x = cuda_randn(3, 13, 9, 11, seed=7, dtype=dtype).to(memory_format=torch.channels_last)
    scales = [cuda_randn(1, 5, 1, 1, seed=8 + k, dtype=dtype) for k in range(9)]
    g = deepvisor.compile(block)
    for _ in range(3):
        got = g(x, scales)
    assert_matches(got, block(x, scales), gpu_tolerance)
    assert deepvisor.stats(g)["fallback_ops"] == {}
