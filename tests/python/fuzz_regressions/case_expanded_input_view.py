"""Fuzzer finding (seed 1000117): raised RuntimeError: unsupported operation: more than one element of the written-to tensor refers to a single memory location (a library view of a kernel's result laid out as a broadcast input)"""

SEED = 1000117
INPUTS = [((7, 2, 16), torch.float32, 'expanded'), ((2, 16), torch.bfloat16, 'contiguous'), ((2, 8, 16), torch.float32, 'expanded')]
SOURCE = '''
def make(g, dev):
    c0 = (torch.randn(33, 2, generator=g)).to(dev)
    c1 = (torch.randint(0, 33, (2, 16), generator=g)).to(dev)
    c2 = (torch.randn(5, 16, generator=g) / 4.000).to(dev)
    c3 = (torch.randn(5, generator=g)).to(dev)
    c4 = (torch.randn(5, generator=g)).to(dev)
    c5 = (torch.randn(5, generator=g)).to(dev)
    c6 = (torch.randn(2, generator=g)).to(dev)
    c7 = (torch.randn(2, generator=g)).to(dev)
    c8 = (torch.randn(3, 16, generator=g) / 4.000).to(dev)
    c9 = (torch.randn(3, generator=g)).to(dev)
    c10 = (torch.randn(2, 2, generator=g) / 1.414).to(dev)
    c11 = (torch.randn(2, generator=g)).to(dev)
    c12 = (torch.randint(0, 2, (8, 16, 2), generator=g)).to(dev)
    def program(x0, x1, x2):
        v1 = x0.permute([0, 1, 2])
        v5 = v1 / (torch.abs(x0) + 0.5)
        v9 = F.gelu(F.linear(v1, c2, c3))
        v25 = v5 * 0.128
        v26 = v25.transpose(1, 1)
        return (v26,)
    return program
'''
