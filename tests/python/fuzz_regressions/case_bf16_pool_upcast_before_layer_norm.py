"""Fuzzer finding (seed 3001398): new inputs: output 0: max error 9.85e-02 of the output's magnitude"""

SEED = 3001398
INPUTS = [((33, 16, 8, 3), torch.bfloat16, 'sliced'), ((2, 8), torch.bfloat16, 'expanded'), ((7,), torch.float32, 'transposed')]
SOURCE = '''
def make(g, dev):
    c0 = (torch.randn(2, generator=g)).to(dev)
    c1 = (torch.randn(2, generator=g)).to(dev)
    c2 = (torch.randn(8, generator=g)).to(dev)
    c3 = (torch.randn(8, generator=g)).to(dev)
    c4 = (torch.randn(8, generator=g)).to(dev)
    c5 = (torch.randn(8, generator=g)).to(dev)
    c6 = (torch.randint(0, 2, (16, 8), generator=g)).to(dev)
    c7 = (torch.randn(2, 8, generator=g) / 2.828).to(dev)
    c8 = (torch.randn(2, generator=g)).to(dev)
    def program(x0, x1, x2):
        v0 = F.avg_pool2d(x0, 3, 2, 1, ceil_mode=False)
        v8 = F.layer_norm(v0.float(), (2,), c0, c1)
        v18 = torch.softmax(v8, dim=-4)
        return (v18,)
    return program
'''
