"""Fuzzer finding (seed 13000439, H200): two layer norms fused in one persistent row kernel; the
second reused the first one's row-start scalar, declared in a scope already closed (NVRTC error)."""

SEED = 13000439
INPUTS = [((8,), torch.float32, 'expanded'), ((33, 2), torch.float32, 'contiguous')]
SOURCE = '''
def make(g, dev):
    c0 = (torch.randn(2, generator=g)).to(dev)
    c1 = (torch.randn(2, generator=g)).to(dev)
    c2 = (torch.randint(0, 33, (16,), generator=g)).to(dev)
    c3 = (torch.randn(2, generator=g)).to(dev)
    c4 = (torch.randn(2, generator=g)).to(dev)
    c5 = (torch.randn(3, 2, generator=g) / 1.414).to(dev)
    c6 = (torch.randn(3, generator=g)).to(dev)
    def program(x0, x1):
        v0 = x1.contiguous()
        v1 = (lambda y: (y.narrow(1, 0, 1).fill_(0.5), y)[1])(x1.clone())
        v2 = F.layer_norm(v1.float(), (2,), c0, c1)
        v7 = F.layer_norm(x1.float(), (2,), c3, c4)
        v11 = v7 * v0
        v14 = v11.to(torch.bfloat16)
        return (v2, v14,)
    return program
'''
