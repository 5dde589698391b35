"""The tensor monitor's coverage (tests/python/test_tensor_coverage.py) on CUDA
tensors, where the ops differ: cudnn batch norm (a uint8 reserve output),
cudnn RNNs (tensor-list weights, undefined outputs), fused attention, random
ops on the CUDA generator, and the functionalized writes as CUDA kernels.
Skipped without a GPU."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import deepvisor
from test_tensor_coverage import BasicBlock, _randomize_bn, check, gen, randint, randn, sliced, transposed

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

F32, F16, U8 = torch.float32, torch.float16, torch.uint8


def gpu_tolerance(dtype):
    # float32: CUDA's math and reduction orders, cuDNN's algorithms; half: as on CPU.
    return {F32: (1e-4, 1e-5), F16: (2e-3, 2e-3), torch.bfloat16: (1.6e-2, 1.6e-2),
            torch.complex64: (1e-4, 1e-5)}.get(dtype, (0.0, 0.0))


def cuda(*tensors):
    return tuple(t.cuda() for t in tensors)


@pytest.mark.parametrize("dtype", [F32, F16])
def test_conv_batchnorm_relu_eval_gpu(dtype):
    torch.manual_seed(0)
    model = _randomize_bn(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU()), 1).eval().cuda().to(dtype)
    check(model, lambda s: cuda(randn(gen(s), 2, 3, 11, 13, dtype=dtype)), tolerance=gpu_tolerance)


def test_small_resnet_eval_gpu():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
                          nn.MaxPool2d(3, 2, 1), BasicBlock(8), BasicBlock(16, stride=2),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))
    model = _randomize_bn(model, 3).eval().cuda()
    check(model, lambda s: cuda(randn(gen(s), 2, 3, 19, 17)), tolerance=gpu_tolerance)


@pytest.mark.parametrize("need_weights", [False, True])
def test_multi_head_attention_gpu(need_weights):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, batch_first=True).eval().cuda()

    def fn(x):
        return mha(x, x, x, need_weights=need_weights)

    check(fn, lambda s: cuda(randn(gen(s), 3, 7, 16)), tolerance=gpu_tolerance)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_recurrent_layers_gpu(kind):
    torch.manual_seed(0)
    cls = {"lstm": nn.LSTM, "gru": nn.GRU}[kind]
    rnn = cls(6, 10, num_layers=2, batch_first=True, bidirectional=True).eval().cuda()
    check(rnn, lambda s: cuda(randn(gen(s), 3, 5, 6)), tolerance=gpu_tolerance)


def test_writes_into_views_gpu():
    def fn(x, y, idx):
        x[:, 0] = 0
        x[1:, ::2] = y
        t = x * 2
        t[1:].relu_()
        t.view(-1)[::5].fill_(7)
        t.index_put_((idx,), torch.ones(t.shape[1], device=t.device), accumulate=True)
        return t, x

    check(fn, lambda s: cuda(sliced(randn(gen(s), 4, 9)), randn(gen(s + 1), 3, 5), torch.tensor([0, 2, 2])),
          tolerance=gpu_tolerance)


def test_uint8_and_complex_gpu():
    def fn(img, z):
        return (img.to(F32) / 255 - 0.5).sum(0), img + 3, (z * z.conj()).real

    check(fn, lambda s: cuda(randint(gen(s), 0, 256, 3, 9, 11, dtype=U8),
                             torch.complex(randn(gen(s), 5), randn(gen(s + 1), 5))), tolerance=gpu_tolerance)


def test_random_and_out_and_metadata_ops_gpu():
    def fn(a, b, c):
        noise = torch.empty_like(a).normal_()
        torch.add(a, b, out=c)
        a.t_()
        return noise + 1, F.dropout(b, 0.3, training=True), c, a * 1

    check(fn, lambda s: cuda(randn(gen(s), 3, 5), transposed(randn(gen(s + 1), 3, 5)), randn(gen(s + 2), 3, 5)),
          rng=True, tolerance=gpu_tolerance)
