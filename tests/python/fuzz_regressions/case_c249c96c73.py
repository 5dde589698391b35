"""Fuzzer finding (seed 31000671): eager calls: {'compilation failed: AssertionError: sources must not be empty for symbol s55': 1}"""

SEED = 31000671
INPUTS = [((8,), torch.float32, 'transposed'), ((1, 3, 7), torch.float32, 'sliced'), ((33, 33, 5), torch.bfloat16, 'transposed')]
SOURCE = '''
def make(g, dev):
    c0 = (torch.randint(0, 1, (3,), generator=g)).to(dev)
    c1 = (torch.randn(8, 8, generator=g)).to(dev)
    c2 = (torch.randint(0, 8, (2, 8), generator=g)).to(dev)
    c3 = (torch.randn(16, 7, generator=g) / 2.646).to(dev)
    c4 = (torch.randn(16, generator=g)).to(dev)
    c5 = (torch.randn(33, 7, generator=g)).to(dev)
    c6 = (torch.randint(0, 33, (1, 1), generator=g)).to(dev)
    c7 = (torch.randperm(7, generator=g)[:3] - 7).to(dev)
    c8 = (torch.randn((3, 3, 3), generator=g)).to(dev)
    def program(x0, x1, x2):
        v0 = torch.index_select(x1, 0, c0)
        v2 = torch.where(x1 > v0, x1, v0)
        v6 = F.embedding(c6, c5) + 0
        return (v6,)
    return program
'''
