"""What the tensor monitor records instead of giving up on the whole function:
every dtype as a graph value, ops with several or undefined outputs, in-place
ops on views and on tensors with views, in-place ops without a functional
form, out= variants, and BatchNorm in inference.

Every case is differential: the compiled function against eager on the same
arguments (made twice from one seed), called several times (a capture, then
replays on new values), with poisoned kernel outputs (conftest). Beyond the
results, the in-place effects on the arguments (values and layouts) and the
aliasing of the results (which argument or other result each one shares
memory with, at which offset and strides) must equal eager's.
"""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._pytree import tree_flatten

import deepvisor
from op_cases import assert_matches

F32, F64, BF16, F16 = torch.float32, torch.float64, torch.bfloat16, torch.float16
U8, I8, I16, I32, I64, B8 = torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.bool
C64, C128 = torch.complex64, torch.complex128

TOLERANCE = {F32: (1e-5, 1e-5), F64: (1e-7, 1e-9), BF16: (1.6e-2, 1.6e-2), F16: (2e-3, 1e-3),
             C64: (1e-5, 1e-5), C128: (1e-7, 1e-9)}


def tolerance(dtype):
    return TOLERANCE.get(dtype, (0.0, 0.0))


def gen(seed):
    return torch.Generator().manual_seed(1000 + seed)


def randn(g, *shape, dtype=F32):
    return torch.randn(shape, generator=g).to(dtype)


def randint(g, low, high, *shape, dtype=I64):
    return torch.randint(low, high, shape, generator=g).to(dtype)


def sliced(t):
    """`t`'s values in a non-contiguous, unaligned layout: every other element of a wider last dim, from offset 1."""
    wide = torch.zeros(t.shape[:-1] + (2 * t.shape[-1] + 1,), dtype=t.dtype)
    view = wide[..., 1::2]
    view.copy_(t)
    return view


def transposed(t):
    """`t`'s values with the last two dims' strides swapped."""
    return t.transpose(-1, -2).contiguous().transpose(-1, -2)


def layout(t):
    return tuple(t.shape), tuple(t.stride()), t.storage_offset(), t.dtype


def aliasing(result, args):
    """How each tensor of `result` relates to the arguments and to the earlier
    tensors of `result`: is it an argument, which argument's memory it views
    (offset, sizes, strides), which earlier results share its memory."""
    leaves = [t for t in tree_flatten(result)[0] if isinstance(t, torch.Tensor)]
    arg_tensors = [a for a in args if isinstance(a, torch.Tensor)]
    out = []
    for i, t in enumerate(leaves):
        is_arg = next((j for j, a in enumerate(arg_tensors) if t is a), None)
        memory = None
        if t.numel():
            ptr = t.untyped_storage().data_ptr()
            for j, a in enumerate(arg_tensors):
                if a.numel() and a.untyped_storage().data_ptr() == ptr:
                    memory = (j, t.storage_offset() - a.storage_offset(), tuple(t.shape), tuple(t.stride()))
                    break
        shares = tuple(k for k, u in enumerate(leaves[:i])
                       if u.numel() and t.numel() and u.untyped_storage().data_ptr() == t.untyped_storage().data_ptr())
        out.append((is_arg, memory, shares))
    return out


def check(fn, make_args, seeds=(0, 1, 2), rng=False, fallbacks=None, tolerance=tolerance):
    """Compiles `fn` and calls it once per seed on make_args(seed), against
    eager on a second make_args(seed). rng: reseed torch's generators before
    both calls (random ops must draw the same numbers). Returns the compiled
    function."""
    g = deepvisor.compile(fn)
    for seed in seeds:
        args, ref_args = make_args(seed), make_args(seed)
        if rng:
            torch.manual_seed(500 + seed)
        with torch.no_grad():
            expected = fn(*ref_args)
        if rng:
            torch.manual_seed(500 + seed)
        with torch.no_grad():
            got = g(*args)
        what = f"call {seed}"
        assert_matches(got, expected, tolerance, what)
        for i, (a, r) in enumerate(zip(args, ref_args)):
            if isinstance(r, torch.Tensor):
                assert layout(a) == layout(r), f"{what}: argument {i} has layout {layout(a)}, eager {layout(r)}"
                assert_matches(a, r, tolerance, f"{what}: argument {i} after the call")
        assert aliasing(got, args) == aliasing(expected, ref_args), f"{what}: results alias differently"
    stats = deepvisor.stats(g)
    assert stats["eager_calls"] == 0, stats["eager_reasons"]
    assert stats["captures"] == 1 and stats["cache_hits"] == len(seeds) - 1, stats
    if fallbacks is not None:
        assert set(stats["fallback_ops"]) <= set(fallbacks), stats["fallback_ops"]
    return g


def assert_eager_with_reason(fn, args, words):
    g = deepvisor.compile(fn)
    with torch.no_grad():
        g(*args)
    stats = deepvisor.stats(g)
    assert stats["eager_calls"] == 1 and stats["captures"] == 0, stats
    reasons = " ".join(stats["eager_reasons"])
    assert any(w in reasons for w in words), reasons


# -- 1. every dtype is a graph value --------------------------------------------------------


@pytest.mark.parametrize("dtype", [U8, I8, I16])
def test_small_integer_arithmetic(dtype):
    def fn(x, y):
        return (x + 3) * y, x.sum(-1), (x - y).to(F32) * 0.5, x > y

    check(fn, lambda s: (randint(gen(s), 0, 60, 7, 13, dtype=dtype), randint(gen(s + 9), 0, 4, 13, dtype=dtype)))


def test_uint8_image_into_float_kernels():
    """Preprocessing: the cast runs through ATen, the float work in kernels."""
    def fn(img, mean, std):
        return ((img.to(F32) / 255 - mean) / std).relu()

    g = check(fn, lambda s: (sliced(randint(gen(s), 0, 256, 3, 9, 11, dtype=U8)),
                             torch.tensor([0.4, 0.5, 0.6]).view(3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).view(3, 1, 1)))
    assert deepvisor.stats(g)["kernels"] >= 1


def test_dtype_arguments_of_new_dtypes():
    def fn(x):
        z = torch.zeros(x.shape, dtype=U8)
        return z + x.to(U8), x.sum(dtype=I16), torch.full((3,), 7, dtype=I8)

    check(fn, lambda s: (randint(gen(s), 0, 5, 4, 5, dtype=I32),))


@pytest.mark.parametrize("dtype", [C64, C128])
def test_complex_values(dtype):
    def fn(z, w):
        prod = z * w + 2j
        return prod, prod.abs(), torch.view_as_real(prod) * 2, (z.conj() * z).real

    def make(s):
        g = gen(s)
        return (torch.complex(randn(g, 5, 7), randn(g, 5, 7)).to(dtype),
                transposed(torch.complex(randn(g, 5, 7), randn(g, 5, 7)).to(dtype)))

    check(fn, make)


def test_float8_round_trip():
    def fn(x):
        return x.to(torch.float8_e4m3fn).to(F32) * 2, x.to(torch.float8_e5m2)

    check(fn, lambda s: (randn(gen(s), 6, 17),))


@pytest.mark.parametrize("dtype", [torch.uint16, torch.uint32])
def test_wide_unsigned_casts(dtype):
    def fn(x):
        return x.to(dtype), x.to(dtype).to(I64) + 1

    check(fn, lambda s: (randint(gen(s), 0, 1000, 4, 9),))


def test_bool_and_uint8_masks():
    def fn(x, m):
        return torch.where(m.bool(), x, -x), m.to(B8) & (x > 0)

    check(fn, lambda s: (randn(gen(s), 6, 10), randint(gen(s + 1), 0, 2, 6, 10, dtype=U8)))


def test_quantized_tensors_run_eagerly_with_a_reason():
    def fn(x):
        return torch.quantize_per_tensor(x, 0.1, 0, torch.quint8).dequantize() * 2

    assert_eager_with_reason(fn, (torch.randn(4, 4),), ["quantized"])


# -- BatchNorm in inference ------------------------------------------------------------------


def _randomize_bn(module, seed):
    g = gen(seed)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.running_mean.copy_(randn(g, m.num_features) * 0.3)
                m.running_var.copy_(randn(g, m.num_features).abs() + 0.5)
                if m.affine:
                    m.weight.copy_(randn(g, m.num_features) * 0.2 + 1)
                    m.bias.copy_(randn(g, m.num_features) * 0.2)
    return module


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_conv_batchnorm_relu_eval_is_one_graph(dtype):
    """Batch norm in inference is a lowering fused with what follows: the
    convolution is the only library call, ATen's empty reserve is not run."""
    torch.manual_seed(0)
    model = _randomize_bn(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
                                        nn.BatchNorm2d(8, affine=False)), 1).eval().to(dtype)
    g = check(model, lambda s: (randn(gen(s), 2, 3, 11, 13, dtype=dtype),))
    stats = deepvisor.stats(g)
    assert stats["captures"] == 1 and stats["eager_calls"] == 0, stats
    assert stats["fallback_ops"] == {} and stats["extern_ops"] == {"aten::convolution.default": 1}, stats


def test_batchnorm_statistics_read_by_the_program_run_through_aten():
    torch.manual_seed(0)
    bn = _randomize_bn(nn.BatchNorm2d(4), 4).eval()

    def fn(x):
        out, mean, invstd = torch.ops.aten.native_batch_norm(x, bn.weight, bn.bias, bn.running_mean, bn.running_var,
                                                             False, 0.1, 1e-5)
        return out * 2, mean.sum() + invstd.sum() + out.sum()

    g = check(fn, lambda s: (randn(gen(s), 2, 4, 3, 3),))
    assert "aten::native_batch_norm.default" in deepvisor.stats(g)["fallback_ops"]


def test_batchnorm1d_on_non_contiguous_input():
    torch.manual_seed(0)
    model = _randomize_bn(nn.Sequential(nn.BatchNorm1d(9), nn.GELU()), 2).eval()
    check(model, lambda s: (transposed(randn(gen(s), 5, 9)),))


class BasicBlock(nn.Module):
    """torchvision's resnet BasicBlock: in-place ReLUs and `out += identity`."""

    def __init__(self, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(planes // stride, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1:
            self.downsample = nn.Sequential(nn.Conv2d(planes // stride, planes, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


def test_small_resnet_eval():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
                          nn.MaxPool2d(3, 2, 1), BasicBlock(8), BasicBlock(16, stride=2),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))
    model = _randomize_bn(model, 3).eval()
    check(model, lambda s: (randn(gen(s), 2, 3, 19, 17),))


# -- 2. several outputs, undefined outputs ----------------------------------------------------


@pytest.mark.parametrize("batch_first", [True, False])
def test_multi_head_attention_without_weights(batch_first):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(12, 3, batch_first=batch_first).eval()

    def fn(x):
        out, weights = mha(x, x, x, need_weights=False)
        assert weights is None
        return out

    check(fn, lambda s: (randn(gen(s), 3, 7, 12),))


def test_multi_head_attention_with_weights_and_mask():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    mask = torch.triu(torch.ones(5, 5, dtype=B8), 1)

    def fn(q, kv):
        return mha(q, kv, kv, attn_mask=mask)

    check(fn, lambda s: (randn(gen(s), 2, 5, 8), randn(gen(s + 3), 2, 5, 8)))


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_recurrent_layers(kind):
    torch.manual_seed(0)
    cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[kind]
    rnn = cls(6, 10, num_layers=2, batch_first=True, bidirectional=True).eval()
    g = check(rnn, lambda s: (randn(gen(s), 3, 5, 6),))
    # One library call, whatever the device does inside (cuDNN's flat weights).
    op = {"lstm": "aten::lstm.input", "gru": "aten::gru.input", "rnn": "aten::rnn_tanh.input"}[kind]
    assert deepvisor.stats(g)["fallback_ops"] == {op: 1}


def test_lstm_over_packed_sequences():
    torch.manual_seed(0)
    lstm = nn.LSTM(4, 5).eval()

    def fn(x, lengths):
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
        out, (h, c) = lstm(packed)
        padded, _ = nn.utils.rnn.pad_packed_sequence(out)
        return padded, h, c

    g = check(fn, lambda s: (randn(gen(s), 4, 3, 4), torch.tensor([4, 2, 3])))
    assert deepvisor.stats(g)["fallback_ops"]["aten::lstm.data"] == 1


def test_lstm_with_initial_state():
    torch.manual_seed(0)
    lstm = nn.LSTM(4, 7).eval()

    def fn(x, h, c):
        out, (h2, c2) = lstm(x, (h, c))
        return out.sum(0), h2, c2

    check(fn, lambda s: (randn(gen(s), 6, 2, 4), randn(gen(s + 1), 1, 2, 7), randn(gen(s + 2), 1, 2, 7)))


def test_ops_with_several_outputs():
    def fn(x):
        values, indices = x.max(dim=1)
        top = torch.topk(x, 3, dim=-1)
        parts = torch.split(x, [2, 5, 4], dim=1)
        return values * 2, indices, top.values, top.indices, parts[1] + 1, torch.unbind(x, 0)[2]

    check(fn, lambda s: (randn(gen(s), 5, 11),))


def test_optional_tensors_in_index_lists():
    def fn(x, i, j):
        return x[:, i] * 2, x[i, :, j], x[..., j]

    check(fn, lambda s: (randn(gen(s), 5, 6, 7), randint(gen(s), 0, 5, 4), randint(gen(s + 1), 0, 7, 4)))


# -- 3. in-place ops on views and on tensors with views ---------------------------------------


def test_assign_into_a_column_of_an_input():
    def fn(x):
        x[:, 0] = 0
        return x

    check(fn, lambda s: (randn(gen(s), 5, 7),), fallbacks=())


@pytest.mark.parametrize("make", [lambda t: t, sliced, transposed], ids=["contiguous", "sliced", "transposed"])
def test_copy_into_a_strided_slice_of_an_input(make):
    def fn(x, y):
        x[1:, ::2] = y
        x[0] += 1
        return x.sum(0)

    check(fn, lambda s: (make(randn(gen(s), 4, 9)), randn(gen(s + 1), 3, 5)), fallbacks=())


def test_in_place_relu_on_a_slice_of_an_intermediate():
    def fn(x):
        y = x * 2
        y[1:].relu_()
        y[:, -2:].fill_(3)
        y[0].zero_()
        return y

    check(fn, lambda s: (randn(gen(s), 5, 9),), fallbacks=())


def test_view_of_an_input_updated_in_place():
    def fn(x):
        y = x.view(-1)
        y.add_(1)
        return y, x

    check(fn, lambda s: (randn(gen(s), 3, 4),))


def test_view_of_an_intermediate_updated_in_place_and_both_returned():
    def fn(x):
        t = x * 3
        v = t.view(-1)
        v.add_(1)
        return t, v, t.t()

    g = check(fn, lambda s: (randn(gen(s), 3, 5),))
    t, v, tt = g(randn(gen(7), 3, 5))
    v[0] = 100.0  # the returned view writes through to the returned base, as in eager
    assert t[0, 0] == 100.0 and tt[0, 0] == 100.0


def test_views_read_after_their_base_changes():
    def fn(x):
        row, col = x[1], x[:, 2]
        x.mul_(2)
        first = row + 1
        col.sub_(5)
        return first, row * 1, x.sum()

    check(fn, lambda s: (randn(gen(s), 4, 6),), fallbacks=())


def test_write_through_a_chain_of_views():
    def fn(x):
        x.t()[1:3].mul_(2)
        x.unsqueeze(0)[0, :, 1] += 10
        x.permute(1, 0)[0].neg_()
        return x

    check(fn, lambda s: (randn(gen(s), 4, 6),))


def test_writes_through_unbind_split_diagonal_and_narrow():
    def fn(x):
        y = x.clone()
        a, b = y.unbind(0)[1:3]
        a.add_(1)
        b.mul_(-1)
        y.split(2, dim=1)[1].fill_(0.5)
        y[0].diagonal().add_(100) if y.dim() == 3 else None
        y.narrow(2, 1, 2).sub_(7)
        return y

    check(fn, lambda s: (randn(gen(s), 4, 5, 6),))


@pytest.mark.parametrize("accumulate", [False, True])
def test_index_put_into_inputs_and_views(accumulate):
    def fn(x, idx, v):
        x.index_put_((idx,), v, accumulate=accumulate)
        x[:, idx] = 0.5
        x[1][x[1] > 0] = -1
        return x

    check(fn, lambda s: (randn(gen(s), 6, 6), torch.tensor([0, 4, 2]), randn(gen(s + 1), 3, 6)))


def test_scatter_into_a_view():
    def fn(x, idx, src):
        y = x.clone()
        y[:, 2:].scatter_(1, idx, src)
        y[:, :2].scatter_add_(1, idx[:, :2] % 2, src[:, :2])
        return y

    check(fn, lambda s: (randn(gen(s), 4, 8), randint(gen(s), 0, 6, 4, 3), randn(gen(s + 1), 4, 3)))


def test_in_place_ops_on_an_input_with_views_returned():
    def fn(x):
        head = x[:2]
        x.add_(1)
        return head, x[1:].t()

    check(fn, lambda s: (randn(gen(s), 4, 3),))


def test_detach_and_alias_write_through():
    def fn(x):
        d = x.detach()
        d.mul_(3)
        return x + 0

    check(fn, lambda s: (randn(gen(s), 4, 3),))


# -- in-place ops without a functional form, metadata changes, out= -----------------------


def test_random_in_place_ops_draw_like_eager():
    def fn(x):
        y = torch.empty_like(x)
        y.normal_()
        x[:, 1:].uniform_(-1, 1)
        z = torch.empty(3, 4).bernoulli_(0.3)
        return y * 2, x, z

    check(fn, lambda s: (randn(gen(s), 3, 5),), rng=True)


def test_dropout_in_training_mode_draws_like_eager():
    def fn(x):
        return F.dropout(x, 0.4, training=True) + 1

    check(fn, lambda s: (randn(gen(s), 6, 9),), rng=True)


@pytest.mark.parametrize("op", ["t_", "transpose_", "unsqueeze_", "squeeze_", "as_strided_"])
def test_metadata_changes_of_an_input(op):
    def fn(x):
        if op == "t_":
            x.t_()
        elif op == "transpose_":
            x.transpose_(0, 1)
        elif op == "unsqueeze_":
            x.unsqueeze_(1)
        elif op == "squeeze_":
            x.squeeze_()
        else:
            x.as_strided_((2, 3), (1, 2), x.storage_offset() + 1)
        x.mul_(2)
        return x, x * 1, x[1:]

    check(fn, lambda s: (randn(gen(s), 4, 1 if op == "squeeze_" else 6),))


def test_metadata_changes_of_an_intermediate():
    def fn(x):
        y = x + 1
        y.t_()
        y.unsqueeze_(0)
        y[0, 0].fill_(9)
        return y.sum(-1)

    check(fn, lambda s: (randn(gen(s), 3, 5),), fallbacks=())


def test_global_average_pool_of_channels_last_restrides_its_mean():
    """adaptive_avg_pool2d(x, 1) on channels-last memory takes a mean and
    as_strided_s it (storage offset None) to channels-last strides (ConvNeXt)."""
    def fn(x):
        return F.adaptive_avg_pool2d(x * 2, 1).flatten(1) + 1

    check(fn, lambda s: (randn(gen(s), 2, 5, 6, 7).permute(0, 3, 1, 2),))


def test_as_strided_of_a_view_addresses_its_base_memory():
    def fn(x):
        y = (x * 2)[1:, 1:]
        return y.as_strided((2, 3), (1, 4), 2) + 1, y.as_strided((3,), (5,)) * 1

    check(fn, lambda s: (randn(gen(s), 4, 4),))


def test_resize_of_a_fresh_tensor():
    def fn(x):
        buf = torch.empty(0)
        buf.resize_(x.shape)
        buf.copy_(x)
        return buf * 2

    check(fn, lambda s: (randn(gen(s), 3, 4),))


def test_out_variants():
    def fn(a, b, c, d):
        torch.add(a, b, out=c)                      # into an input
        fresh = torch.mul(a, 2, out=torch.empty(0))  # resized from empty
        torch.sub(a, b, out=d[1])                    # into a view of an input
        values, indices = torch.empty(0), torch.empty(0, dtype=I64)
        torch.max(a, 1, out=(values, indices))      # several out arguments
        return c, fresh, d, values, indices

    check(fn, lambda s: (randn(gen(s), 3, 5), randn(gen(s + 1), 3, 5), randn(gen(s + 2), 3, 5),
                         randn(gen(s + 3), 2, 3, 5)))


def test_out_variant_into_a_wider_dtype():
    def fn(a, b, out):
        return torch.mul(a, b, out=out)

    check(fn, lambda s: (randn(gen(s), 4, 5), randn(gen(s + 1), 4, 5), torch.zeros(4, 5, dtype=F64)))


def test_module_buffer_updated_in_place_every_call():
    class Counter(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("calls", torch.zeros((), dtype=I64))
            self.register_buffer("total", torch.zeros(4))

        def forward(self, x):
            self.calls += 1
            self.total[1:].add_(x.sum(0)[1:])
            return x * self.calls

    eager, compiled_module = Counter(), Counter()
    g = deepvisor.compile(compiled_module)
    with torch.no_grad():
        for seed in range(4):
            x = randn(gen(seed), 3, 4)
            assert_matches(g(x), eager(x), tolerance)
    assert_matches(compiled_module.calls, eager.calls, tolerance)
    assert_matches(compiled_module.total, eager.total, tolerance)
    stats = deepvisor.stats(g)
    assert stats["captures"] == 1 and stats["eager_calls"] == 0 and stats["cache_hits"] == 3, stats


def test_tensor_literal_written_in_place_is_fresh_every_call():
    def fn(x):
        t = torch.tensor([1.0, 2.0, 3.0])
        t.mul_(2)
        return x + t

    check(fn, lambda s: (randn(gen(s), 2, 3),), seeds=(0, 1, 2, 3))


def test_returned_view_of_a_parameter_aliases_it():
    lin = nn.Linear(3, 4)

    def fn(x):
        return lin.weight.t(), x @ lin.weight.t()

    g = check(fn, lambda s: (randn(gen(s), 2, 3),))
    with torch.no_grad():
        wt, _ = g(randn(gen(9), 2, 3))
    assert wt.untyped_storage().data_ptr() == lin.weight.untyped_storage().data_ptr()
    assert wt.stride() == lin.weight.t().stride()


# -- 4. what still runs eagerly, with a reason ------------------------------------------------


def test_write_into_an_argument_sharing_memory_with_another_runs_eagerly():
    def fn(a, b):
        a.add_(1)
        return b * 2

    base = torch.randn(5, 4)
    assert_eager_with_reason(fn, (base, base[1:]), ["shares"])


def test_write_through_unfold_runs_eagerly():
    def fn(x):
        x.unfold(0, 2, 1)[0].mul_(2)
        return x

    assert_eager_with_reason(fn, (torch.randn(6, 3),), ["no scatter form"])


def test_sparse_argument_runs_eagerly_with_a_reason():
    def fn(x):
        return x.to_dense() * 2

    assert_eager_with_reason(fn, (torch.randn(3, 4).to_sparse(),), ["sparse"])


def test_as_strided_of_an_input_written_before_runs_eagerly():
    def fn(x):
        x.add_(1)
        return x.as_strided((2, 2), (1, 2), 1) * 1

    assert_eager_with_reason(fn, (torch.randn(3, 4),), ["as_strided of an input written"])


def test_set_runs_eagerly():
    def fn(x, y):
        x.set_(y)
        return x + 1

    assert_eager_with_reason(fn, (torch.randn(3), torch.randn(3)), ["set_"])
