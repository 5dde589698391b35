"""Fuzzer finding (seed 2105009261): new inputs: output 0: max error 2.04e-02 from float64, eager's 2.68e-03"""

SEED = 2105009261
INPUTS = [((2, 3, 8, 5), torch.bfloat16, 'expanded')]
SOURCE = '''
def make(g, dev):
    c0 = ((torch.randn(1, 3, 3, 3, generator=g) / 5.196).to(torch.bfloat16)).to(dev)
    c1 = (torch.randn(1, generator=g).to(torch.bfloat16)).to(dev)
    c2 = ((torch.randn(9, 1, 1, 1, generator=g) / 1.000).to(torch.bfloat16)).to(dev)
    c3 = (torch.randint(-2, 2, (5,), generator=g)).to(dev)
    c4 = (torch.randn(5, generator=g)).to(dev)
    c5 = (torch.randn(5, generator=g)).to(dev)
    c6 = (torch.randint(-5, 5, (16,), generator=g)).to(dev)
    c7 = (torch.randint(-5, 5, (7,), generator=g)).to(dev)
    c8 = (torch.randn(7, 7, generator=g)).to(dev)
    c9 = (torch.randint(0, 7, (16, 1), generator=g)).to(dev)
    c10 = (torch.randint(0, 2, (8,), generator=g)).to(dev)
    c11 = (torch.randn(33, 7, generator=g) / 2.646).to(dev)
    c12 = (torch.randn(33, generator=g)).to(dev)
    c13 = ((torch.randn(3, 9, 3, 3, generator=g) / 9.000).to(torch.bfloat16)).to(dev)
    def program(x0):
        v0 = torch.relu(F.conv2d(x0, c0, c1, 2, 0, 2, 1))
        v1 = v0 + -0.524
        v2 = torch.sum(v1, dim=[1, 2, 3], keepdim=False)
        v20 = torch.stack([v2, v2 * 2], dim=0)
        v28 = v20.narrow(0, 1, 1)
        return (v28,)
    return program
'''
