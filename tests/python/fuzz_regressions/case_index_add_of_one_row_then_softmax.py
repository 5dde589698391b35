"""Fuzzer finding (seed 21000271, H200): on the first replay, output 0: max error 2.22e-02 from float64, eager's 7.14e-08;
a scatter of one point (its index and value do not vary with x) was written
before the per-element loop of its pointwise CUDA kernel, so every thread of the
block did its atomic add (64 adds for 1 point). Right on the CPU, where the
kernel is compiled by NVRTC; tests/gpu/test_scatter_gpu.py runs it on the GPU."""

SEED = 21000271
INPUTS = [((3,), torch.float32, 'transposed')]
SOURCE = '''
def make(g, dev):
    c0 = (torch.randint(0, 3, (1,), generator=g)).to(dev)
    c1 = (torch.randperm(3, generator=g)[:3]).to(dev)
    def program(x0):
        v0 = -x0
        v1 = v0.index_add(0, c0, v0.narrow(0, 2, 1) * -1.9, alpha=-0.5)
        v9 = torch.softmax(v1, dim=0)
        return (v9,)
    return program
'''
