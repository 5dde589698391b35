"""Fuzzer finding (seed 14000410, H200): two layer norms fused in one persistent row kernel; the
second reused the first one's row-start scalar, declared in a scope already closed (NVRTC error)."""

SEED = 14000410
INPUTS = [((16, 5, 16, 8), torch.float32, 'sliced'), ((16,), torch.float32, 'expanded')]
SOURCE = '''
def make(g, dev):
    c0 = (torch.randn(8, generator=g)).to(dev)
    c1 = (torch.randn(8, generator=g)).to(dev)
    c2 = (torch.randn(8, generator=g)).to(dev)
    c3 = (torch.randn(8, generator=g)).to(dev)
    def program(x0, x1):
        v0 = x0 * x0
        v1 = (lambda y: (y.narrow(1, 0, 1).fill_(0.5), y)[1])(v0.clone())
        v7 = F.layer_norm(v1.float(), (8,), c0, c1)
        v14 = v7 - v1
        v19 = F.layer_norm(v14.float(), (8,), c2, c3)
        return (v19,)
    return program
'''
