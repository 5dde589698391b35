"""Fuzzer finding (seed 2701014229): replay: output 0: max error 1.42e-02 from float64, eager's 2.10e-03.
A bf16 sum that cancels: eager's error on the call's inputs was lucky; the judge now samples
eager's noise on four nudged inputs (fuzz_graphs._eager_noise)."""

SEED = 2701014229
INPUTS = [((7, 8, 1), torch.bfloat16, 'contiguous')]
SOURCE = '''
def make(g, dev):
    c0 = (torch.randint(0, 8, (7, 8, 1), generator=g)).to(dev)
    def program(x0):
        v1 = x0 * x0
        v2 = torch.mean(v1, dim=[0, 1, 2], keepdim=False)
        v4 = v2 + 0.105
        v6 = v4 - 0.768
        return (v6,)
    return program
'''
