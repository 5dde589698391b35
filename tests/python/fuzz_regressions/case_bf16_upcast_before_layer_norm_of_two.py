"""Fuzzer finding (seed 3000972): replay: output 0: max error 1.85e-01 of the output's magnitude"""

SEED = 3000972
INPUTS = [((7, 7, 7), torch.float32, 'sliced'), ((7, 8, 8, 1), torch.float32, 'contiguous'), ((33, 5, 2), torch.bfloat16, 'contiguous')]
SOURCE = '''
def make(g, dev):
    c0 = (torch.randint(0, 8, (7, 8, 7, 1), generator=g)).to(dev)
    c1 = (torch.randn(2, generator=g)).to(dev)
    c2 = (torch.randn(2, generator=g)).to(dev)
    c3 = (torch.randn(16, 7, generator=g) / 2.646).to(dev)
    c4 = (torch.randn(16, generator=g)).to(dev)
    c5 = (torch.randn(16, 16, generator=g)).to(dev)
    c6 = (torch.randint(0, 16, (5, 2), generator=g)).to(dev)
    c7 = (torch.randn(8, 16, generator=g) / 4.000).to(dev)
    c8 = (torch.randn(8, generator=g)).to(dev)
    def program(x0, x1, x2):
        v0 = x2 * x2
        v3 = torch.sin(v0)
        v14 = F.layer_norm(v3.float(), (2,), c1, c2)
        return (v14,)
    return program
'''
