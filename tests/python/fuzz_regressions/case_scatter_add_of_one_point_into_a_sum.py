"""Fuzzer finding (seed 21000321, H200): on the first replay, output 0: max error 3.15e+01 from float64, eager's 2.67e-08;
a scatter of one point (its index and value do not vary with x) was written
before the per-element loop of its pointwise CUDA kernel, so every thread of the
block did its atomic add (64 adds for 1 point). Right on the CPU, where the
kernel is compiled by NVRTC; tests/gpu/test_scatter_gpu.py runs it on the GPU."""

SEED = 21000321
INPUTS = [((7, 7, 1), torch.float32, 'expanded'), ((2, 2), torch.bfloat16, 'contiguous'), ((33, 5), torch.float32, 'sliced')]
SOURCE = '''
def make(g, dev):
    c0 = (torch.randn(3, 5, generator=g) / 2.236).to(dev)
    c1 = (torch.randn(3, generator=g)).to(dev)
    c2 = (torch.randint(0, 1, (1, 1), generator=g)).to(dev)
    def program(x0, x1, x2):
        v0 = F.linear(x2, c0, c1) * 0.5 + 1
        v6 = torch.sum(v0, dim=[0, 1], keepdim=True)
        v8 = torch.scatter_add(v6, 0, c2, v6)
        return (v8,)
    return program
'''
