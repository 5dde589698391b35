"""Fuzzer finding on the GPU (seed 2914008796, H100): new inputs: output 0: max error 7.41e-03
from float64, eager's 1.77e-07. A 1x1 float32 convolution of two channels, laid out channels-last
by the fuzzer's DEEPVISOR_CHANNELS_LAST=1, under PyTorch's default cudnn.allow_tf32: cuDNN's NHWC
engine computed in TF32 (5e-4 off before the sqrt), eager's NCHW one in float32. Not a lowering
bug: the fuzzer now checks with TF32 off (fuzz_graphs._fp32_convolutions); this case keeps that so."""

SEED = 2914008796
INPUTS = [((1,), torch.float32, 'transposed'), ((8, 2, 16), torch.float32, 'transposed'), ((33, 2, 33, 7), torch.float32, 'contiguous')]
SOURCE = '''
def make(g, dev):
    c0 = (torch.rand((1,), generator=g).argsort(0).narrow(0, 0, 1)).to(dev)
    c1 = (torch.randn(33, 16, generator=g) / 4.000).to(dev)
    c2 = (torch.randn(33, generator=g)).to(dev)
    c3 = (torch.randint(0, 1, (2,), generator=g)).to(dev)
    c4 = (torch.randint(-1, 1, (8,), generator=g)).to(dev)
    c5 = (torch.randn((8,), generator=g)).to(dev)
    c6 = (torch.randint(0, 2, (8,), generator=g)).to(dev)
    c7 = ((torch.randn(2, 2, 1, 1, generator=g) / 1.414).to(torch.float32)).to(dev)
    c8 = (torch.randn(2, generator=g).to(torch.float32)).to(dev)
    c9 = (torch.randn(33, 16, generator=g) / 4.000).to(dev)
    c10 = (torch.randn(33, generator=g)).to(dev)
    c11 = (torch.randn(33, 5, generator=g)).to(dev)
    c12 = (torch.randint(0, 33, (1, 1), generator=g)).to(dev)
    c13 = (torch.randperm(1, generator=g)[:1]).to(dev)
    c14 = (torch.randint(0, 2, (8, 1, 6), generator=g)).to(dev)
    def program(x0, x1, x2):
        v4 = torch.maximum(x0, x2)
        v13 = torch.relu(F.conv2d(v4, c7, c8, 1, 0, 1, 1))
        v27 = torch.sqrt(torch.abs(v13))
        return (v27,)
    return program
'''
