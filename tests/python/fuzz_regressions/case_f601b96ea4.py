"""Fuzzer finding (seed 12000358, H200): two layer norms fused in one persistent row kernel; the
second reused the first one's row-start scalar, declared in a scope already closed (NVRTC error)."""

SEED = 12000358
INPUTS = [((5, 1, 7), torch.float32, 'transposed'), ((1, 16), torch.float32, 'expanded')]
SOURCE = '''
def make(g, dev):
    c0 = (torch.randn(16, generator=g)).to(dev)
    c1 = (torch.randn(16, generator=g)).to(dev)
    c2 = (torch.randn(16, generator=g)).to(dev)
    c3 = (torch.randn(16, generator=g)).to(dev)
    c4 = (torch.randn(16, generator=g)).to(dev)
    c5 = (torch.randn(16, generator=g)).to(dev)
    c6 = (torch.randn(8, 8, generator=g)).to(dev)
    c7 = (torch.randint(0, 8, (3, 7), generator=g)).to(dev)
    c8 = (torch.randn(5, 3, generator=g)).to(dev)
    c9 = (torch.randint(0, 5, (16, 33), generator=g)).to(dev)
    c10 = (torch.randint(0, 16, (1, 16), generator=g)).to(dev)
    def program(x0, x1):
        v0 = F.silu(x1)
        v1 = v0 / (torch.abs(v0) + 0.5)
        v7 = F.layer_norm(v1.float(), (16,), c2, c3)
        v15 = F.layer_norm(v7.float(), (16,), c4, c5)
        v22 = v15.clone().mul_(2).add_(1)
        return (v22,)
    return program
'''
