"""Ops that read by data or under masks (embedding, index_select, gather,
x[idx], cat, constant_pad_nd, 2-d pooling), beyond the op catalogue
(op_cases.py, which compares their values against eager): an index out of
range is an error as in eager, never a read of another element; the forms
that have no Python spelling on CPU (max_pool2d.default); read pooling
indices; small models that use them stay kernels; the CUDA C checks offsets."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import deepvisor
from deepvisor import _C
from op_cases import assert_matches


def exact(dtype):
    return 0.0, 0.0


def float_tolerance(dtype):
    return (1e-5, 1e-6) if dtype.is_floating_point else (0.0, 0.0)


def gen(seed=0):
    return torch.Generator().manual_seed(4000 + seed)


# -- an index out of range is an error, as in eager ---------------------------------------

TABLE = torch.randn(10, 6, generator=gen())

# name, fn(table, index), a valid index, out-of-range indices. The gather and
# index_select ones would land inside the table's memory (row 1, column 0 for
# column 6 of row 0; the last row for -1): a kernel that did not check would
# return a plausible wrong value instead of failing.
OUT_OF_RANGE = [
    ("embedding", lambda w, i: F.embedding(i, w), torch.tensor([[0, 9], [3, 3]]),
     [torch.tensor([[0, 10], [3, 3]]), torch.tensor([[0, -1], [3, 3]])]),
    ("embedding_i32", lambda w, i: F.embedding(i, w) * 2, torch.tensor([4, 2], dtype=torch.int32),
     [torch.tensor([4, 12], dtype=torch.int32)]),
    ("index_select", lambda w, i: torch.index_select(w, 1, i), torch.tensor([5, 0, 2]),
     [torch.tensor([5, 6, 2]), torch.tensor([-1, 0, 2])]),
    ("gather", lambda w, i: torch.gather(w, 1, i), torch.zeros(10, 2, dtype=torch.long),
     [torch.full((10, 2), 6), torch.full((10, 2), -1)]),
    ("index_tensor", lambda w, i: w[i] + 1, torch.tensor([-10, 9, 0]), [torch.tensor([10, 0, 0]), torch.tensor([-11, 0, 0])]),
    # Row 0 column 6 would be row 1 column 0 of the table's memory: each index is checked alone.
    ("index_tensor_two_indices", lambda w, i: w[i, i] * 2, torch.tensor([0, 5, -6]), [torch.tensor([0, 6, 1])]),
    ("cat_of_embedding", lambda w, i: torch.cat([F.embedding(i, w), w[:2]], 0), torch.tensor([1, 2]),
     [torch.tensor([1, 20])]),
    # Writes by data (an indirect store checks its offset as a load does). Only
    # index_put and index_fill count negative indices from the end.
    ("index_put", lambda w, i: torch.index_put(w, (i,), torch.ones(3, 6)), torch.tensor([-10, 9, 0]),
     [torch.tensor([10, 0, 1]), torch.tensor([-11, 0, 1])]),
    ("index_put_accumulate", lambda w, i: torch.index_put(w * 2, (i,), torch.ones(3, 6), accumulate=True),
     torch.tensor([-1, 9, 9]), [torch.tensor([10, 0, 1]), torch.tensor([-11, 0, 1])]),
    # Row 0 column 6 would be row 1 column 0 of the table's memory: each index is checked alone.
    ("index_put_two_indices", lambda w, i: torch.index_put(w, (i, i), torch.ones(3)), torch.tensor([0, 5, -6]),
     [torch.tensor([0, 6, 1])]),
    ("scatter", lambda w, i: torch.scatter(w, 1, i, 1.0), torch.full((10, 2), 5),
     [torch.full((10, 2), 6), torch.full((10, 2), -1)]),
    ("scatter_add", lambda w, i: torch.scatter_add(w, 0, i, torch.ones(2, 6)), torch.full((2, 6), 9),
     [torch.full((2, 6), 10), torch.full((2, 6), -1)]),
    ("index_add", lambda w, i: w.index_add(0, i, torch.ones(2, 6)), torch.tensor([1, 1]),
     [torch.tensor([1, 10]), torch.tensor([-1, 0])]),
    ("index_copy", lambda w, i: w.index_copy(1, i, torch.ones(10, 2)), torch.tensor([5, 0]),
     [torch.tensor([6, 0]), torch.tensor([-1, 0])]),
    ("index_fill", lambda w, i: w.index_fill(1, i, 2.0), torch.tensor([-6, 5]),
     [torch.tensor([6, 0]), torch.tensor([-7, 0])]),
]


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "default"])
@pytest.mark.parametrize("name,fn,good,bad", OUT_OF_RANGE, ids=[c[0] for c in OUT_OF_RANGE])
def test_an_index_out_of_range_is_an_error(monkeypatch, strict, name, fn, good, bad):
    if strict:
        monkeypatch.setenv("DEEPVISOR_STRICT", "1")
    else:
        monkeypatch.delenv("DEEPVISOR_STRICT", raising=False)
    g = deepvisor.compile(fn)
    g(TABLE, good)
    assert_matches(g(TABLE, good), fn(TABLE, good), exact)
    assert deepvisor.stats(g)["fallback_ops"] == {}
    for index in bad:
        with pytest.raises(Exception) as eager:
            fn(TABLE, index)
        with pytest.raises(Exception) as compiled:
            g(TABLE, index)
        # The kernel's check stops the replay (nothing is read out of range);
        # the call then runs eagerly and fails as eager does, in strict mode too.
        assert compiled.type is eager.type and str(compiled.value) == str(eager.value)
    # The program's own error on those inputs: the plan stays.
    assert_matches(g(TABLE, good), fn(TABLE, good), exact)
    stats = deepvisor.stats(g)
    assert stats["captures"] == 1 and stats["cache_hits"] == 2 and stats["eager_calls"] == len(bad), stats
    assert all("IndexOutOfRange" in reason for reason in stats["eager_reasons"]), stats["eager_reasons"]


def test_the_interpreter_reports_an_index_out_of_range_as_the_programs_error():
    # What the replay raised before the eager run: an IndexError of its own kind.
    text = "\n".join([
        "deepvisor-graph 1",
        "value %0 f32 sizes=10,6 strides=6,1 device=cpu aligned=1",
        "value %1 i64 sizes=2 strides=1 device=cpu aligned=1",
        "value %2 f32 sizes=2,6 strides=6,1 device=cpu aligned=1",
        "input %0",
        "input %1",
        "node aten::embedding.default %0 %1 i:-1 b:0 b:0 -> %2",
        "output %2",
    ]) + "\n"
    e = _C.compile_graph_text(text)
    assert e.stats()["fallback_ops"] == {}
    assert_matches(e.run([TABLE, torch.tensor([9, 0])])[0], TABLE[[9, 0]], exact)
    with pytest.raises(_C.IndexOutOfRange, match=r"index 10 is out of range \[0, 10\)"):
        e.run([TABLE, torch.tensor([9, 10])])
    assert issubclass(_C.IndexOutOfRange, IndexError)


# -- forms without a Python spelling on CPU ----------------------------------------------------


def pool_graph(op, out_sizes, args, outputs=1):
    values = ["value %0 f32 sizes=2,3,11,9 strides=297,99,9,1 device=cpu aligned=1"]
    strides = [out_sizes[1] * out_sizes[2] * out_sizes[3], out_sizes[2] * out_sizes[3], out_sizes[3], 1]
    layout = f"sizes={','.join(map(str, out_sizes))} strides={','.join(map(str, strides))} device=cpu aligned=1"
    values.append(f"value %1 f32 {layout}")
    outs = "%1"
    if outputs == 2:
        values.append(f"value %2 i64 {layout}")
        outs = "%1 %2"
    return "\n".join(["deepvisor-graph 1", *values, "input %0", f"node {op} %0 {args} -> {outs}", "output %1"]) + "\n"


def test_max_pool2d_default_is_a_kernel():
    # Eager CPU decomposes max_pool2d into max_pool2d_with_indices before the
    # monitor sees it; other backends record max_pool2d.default itself.
    x = torch.randn(2, 3, 11, 9, generator=gen(3))
    expected = F.max_pool2d(x, 3, 2, 1, ceil_mode=True)
    text = pool_graph("aten::max_pool2d.default", list(expected.shape), "il:[3,3] il:[2,2] il:[1,1] il:[1,1] b:1")
    e = _C.compile_graph_text(text)
    assert e.stats()["fallback_ops"] == {}
    assert_matches(e.run([x])[0], expected, exact)


def test_max_pool2d_with_indices_stays_a_kernel_while_its_indices_are_unread():
    x = torch.randn(2, 3, 11, 9, generator=gen(4))
    values, _ = torch.ops.aten.max_pool2d_with_indices(x, [3, 3], [2, 2], [1, 1])
    text = pool_graph("aten::max_pool2d_with_indices.default", list(values.shape),
                      "il:[3,3] il:[2,2] il:[1,1] il:[1,1] b:0", outputs=2)
    e = _C.compile_graph_text(text)
    assert e.stats()["fallback_ops"] == {}
    assert_matches(e.run([x])[0], values, exact)


def test_pooling_indices_read_by_the_program_run_through_aten():
    fn = lambda x: F.max_pool2d(x, 3, 2, 1, return_indices=True)  # noqa: E731
    x = torch.randn(2, 3, 11, 9, generator=gen(5))
    g = deepvisor.compile(fn)
    g(x)
    assert_matches(g(x), fn(x), exact)
    assert deepvisor.stats(g)["fallback_ops"] == {"aten::max_pool2d_with_indices.default": 1}


# -- small models --------------------------------------------------------------------------


class TokenMixer(nn.Module):
    """Token and position embeddings, a learned prefix concatenated in front,
    layer norm, then a gather of one position per row."""

    def __init__(self):
        super().__init__()
        self.tokens = nn.Embedding(50, 16, padding_idx=0)
        self.positions = nn.Embedding(12, 16)
        self.prefix = nn.Parameter(torch.randn(1, 2, 16))
        self.norm = nn.LayerNorm(16)

    def forward(self, ids, pick):
        positions = torch.arange(ids.shape[1], device=ids.device)
        h = self.tokens(ids) + self.positions(positions)
        h = torch.cat([self.prefix.expand(ids.shape[0], -1, -1), h], 1)
        h = self.norm(h)
        return h, torch.gather(h, 1, pick[:, :, None].expand(-1, -1, 16))


def test_embeddings_cat_and_gather_are_one_graph_of_kernels():
    torch.manual_seed(0)
    model = TokenMixer().eval()
    ids = torch.randint(0, 50, (3, 10), generator=gen(6))
    pick = torch.randint(0, 12, (3, 4), generator=gen(7))
    with torch.no_grad():
        expected = model(ids, pick)
        g = deepvisor.compile(model)
        g(ids, pick)
        assert_matches(g(ids, pick), expected, float_tolerance)
        fresh = torch.randint(0, 50, (3, 10), generator=gen(8)), torch.randint(0, 12, (3, 4), generator=gen(9))
        assert_matches(g(*fresh), model(*fresh), float_tolerance)
    stats = deepvisor.stats(g)
    assert stats["fallback_ops"] == {} and stats["extern_ops"] == {}, stats
    assert stats["captures"] == 1 and stats["eager_calls"] == 0, stats


def test_resnet_stem_pooling_is_a_kernel():
    torch.manual_seed(0)
    stem = nn.Sequential(nn.Conv2d(3, 8, 7, 2, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
                         nn.MaxPool2d(3, 2, 1), nn.AvgPool2d(2, ceil_mode=True)).eval()
    x = torch.randn(2, 3, 37, 29, generator=gen(10))
    with torch.no_grad():
        g = deepvisor.compile(stem)
        g(x)
        assert_matches(g(x), stem(x), lambda dt: (1e-5, 1e-5))
    stats = deepvisor.stats(g)
    assert stats["fallback_ops"] == {}, stats
    assert stats["extern_ops"] == {"aten::convolution.default": 1}, stats


def test_padded_concat_of_a_sequence():
    # constant_pad_nd and cat together, with a negative pad (a crop) and a reduction after.
    fn = lambda a, b: torch.cat([F.pad(a, (0, 0, 1, -2), value=-1.0), b], 1).amax(1)  # noqa: E731
    a, b = torch.randn(2, 7, 5, generator=gen(11)), torch.randn(2, 3, 5, generator=gen(12))
    g = deepvisor.compile(fn)
    g(a, b)
    assert_matches(g(a, b), fn(a, b), exact)
    assert deepvisor.stats(g)["fallback_ops"] == {}


def dense_block(x, scales, dim=1):
    """DenseNet's block: each layer reads the cat of every feature so far
    (batch norm and relu as a scale, shift and clamp) and adds a feature."""
    features, reads = [x], []
    for k, s in enumerate(scales):
        h = torch.relu(torch.cat(features, dim) * 0.75 - 0.1 * k)
        reads.append(h.amax(dim))
        features.append(torch.tanh(h.narrow(dim, k, 2) * s))
    return torch.cat(features, dim), reads


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("dim", [1, 3])
def test_a_chain_of_cats_that_extend_each_other_matches_eager(dtype, dim):
    # Each cat reads the one before it as a part (lower_cat): values, odd
    # sizes, a non-contiguous first feature, the channel and the last dim.
    x = torch.randn(3, 7, 9, 5, generator=gen(13)).to(dtype).transpose(1, 2)
    scale_shape = [1, 1, 1, 1]
    scale_shape[dim] = 2
    scales = [torch.randn(scale_shape, generator=gen(14 + k)).to(dtype) for k in range(6)]
    fn = lambda x, scales: dense_block(x, scales, dim)  # noqa: E731
    g = deepvisor.compile(fn)
    for _ in range(2):
        got = g(x, scales)
    tol = (lambda dt: (1e-5, 1e-6)) if dtype == torch.float32 else (lambda dt: (1e-2, 1e-2))
    assert_matches(got, fn(x, scales), tol)
    assert deepvisor.stats(g)["fallback_ops"] == {}


def test_a_float32_cat_of_bf16_values_read_by_a_pad_matches_eager_exactly():
    # MonoDepth's decoder under autocast: bf16 activations upsampled in
    # float32, joined with a bf16 skip, padded by reflection. The cat, read
    # from memory by the pad, is stored in bf16 (its values are bf16's).
    def decoder_step(x, skip):
        u = F.interpolate(F.elu(x).float(), scale_factor=2, mode="nearest")
        c = torch.cat([u, skip.float()], 1)
        return F.pad(c, (1, 1, 1, 1), mode="reflect").to(torch.bfloat16) * 2, c.amax(1)

    x = torch.randn(2, 3, 5, 4, generator=gen(30)).bfloat16()
    skip = torch.randn(2, 2, 10, 8, generator=gen(31)).bfloat16().transpose(2, 3).contiguous().transpose(2, 3)
    g = deepvisor.compile(decoder_step)
    for _ in range(2):
        got = g(x, skip)
    assert_matches(got, decoder_step(x, skip), exact)
    assert deepvisor.stats(g)["fallback_ops"] == {}


# -- the CUDA C (written and compiled without a GPU) ----------------------------------------------


def test_cuda_source_of_a_gather_checks_its_offsets_and_masks_its_reads():
    fn = lambda w, i, x: torch.cat([F.embedding(i, w), F.pad(x, (1, 1))], 1)  # noqa: E731
    w, i, x = torch.randn(10, 4), torch.tensor([[1, 2], [3, 4]]), torch.randn(2, 2, 2)
    g = deepvisor.compile(fn)
    g(w, i, x)
    g(w, i, x)
    (executor,) = g._plans.executors()
    sources = executor.cuda_sources(90)
    assert len(sources) == 1
    source = sources[0]
    assert "dv_checked((long long)" in source and ", 10LL) * 4LL]" in source
    assert "__trap();" in source
    assert " ? b" in source  # masked reads: m ? p[...] : other
    executor.validate_cuda(90)  # NVRTC accepts it
