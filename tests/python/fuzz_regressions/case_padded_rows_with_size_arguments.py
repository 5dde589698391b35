"""Fuzzer finding (seed 2308006935): new sizes (an instance), on an H100: output 0: max error 8.59e-01 from float64, eager's 1.19e-06. With size arguments the row kernel's first chunk is known to lie in the row, and its guard 'c < 1 || l0 < kRnumel' was joined to the pad's load mask without parentheses, so the pad's lanes loaded"""

SEED = 2308006935
INPUTS = [((5, 3, 2), torch.float32, 'contiguous')]
SOURCE = '''
def make(g, dev):
    c0 = ((torch.randn(2, 3, 3, 3, generator=g) / 5.196).to(torch.float32)).to(dev)
    c1 = (torch.randn(2, generator=g).to(torch.float32)).to(dev)
    c2 = (torch.randn(2, 2, generator=g) / 1.414).to(dev)
    c3 = (torch.randn(2, generator=g)).to(dev)
    c4 = (torch.randint(0, 3, (5, 5, 2), generator=g)).to(dev)
    c5 = (torch.randn(2, generator=g)).to(dev)
    c6 = (torch.randn(2, generator=g)).to(dev)
    c7 = (torch.randint(0, 2, (1,), generator=g)).to(dev)
    c8 = (torch.randn(6, generator=g)).to(dev)
    c9 = (torch.randn(6, generator=g)).to(dev)
    c10 = (torch.randint(0, 1, (5, 16, 2), generator=g)).to(dev)
    def program(x0):
        v4 = F.pad(x0, [2, 2, 1, 0], value=-0.5)
        v5 = torch.mean(x0, dim=[1], keepdim=True)
        v6 = (lambda y: (y.narrow(0, 0, 1).fill_(0.5), y)[1])(v5.clone())
        v12 = torch.sum(v6, dim=[0, 1, 2], keepdim=False)
        v13 = torch.maximum(v4, v12)
        v15 = F.layer_norm(v13.float(), (6,), c8, c9)
        return (v15,)
    return program
'''
