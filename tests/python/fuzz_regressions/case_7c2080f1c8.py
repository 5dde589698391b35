"""Fuzzer finding (seed 31001499): eager calls: {'compilation failed: AssertionError: sources must not be empty for symbol s17': 1}"""

SEED = 31001499
INPUTS = [((16, 8), torch.float32, 'contiguous'), ((16,), torch.float32, 'transposed'), ((1, 16), torch.float32, 'sliced')]
SOURCE = '''
def make(g, dev):
    c0 = (torch.randint(0, 16, (33,), generator=g)).to(dev)
    c1 = (torch.randn(1, generator=g)).to(dev)
    c2 = (torch.randn(1, generator=g)).to(dev)
    def program(x0, x1, x2):
        v1 = torch.sin(x1)
        v2 = torch.sin(v1)
        v3 = v2.unsqueeze(1)
        v8 = x2.expand([3, 16])
        v11 = torch.log1p(torch.abs(v8))
        v15 = F.layer_norm(v3.float(), (1,), c1, c2)
        return (v15,)
    return program
'''
