"""What the GPU tests of results kept between calls share: a call on one
stream that must wait for another stream's recomputation of them."""

import torch


def call_while_another_stream_recomputes(g, module, recompute_args, read_args):
    """Changes `module`'s parameters in place (what the compiled `g` keeps
    from them is stale now), calls g(*recompute_args) on stream s1 behind a
    half-second sleep, so that it computes them again there later, and
    g(*read_args) on stream s2 meanwhile. Returns the s2 call's result once
    every stream is done. Asserts that s1 was still busy when the s2 call
    was enqueued: else there was no race to lose."""
    torch.cuda.synchronize()
    for p in module.parameters():
        p.mul_(-0.5)
    torch.cuda.synchronize()
    s1, s2 = torch.cuda.Stream(), torch.cuda.Stream()
    with torch.cuda.stream(s1):
        torch.cuda._sleep(1_000_000_000)  # about half a second
        g(*recompute_args)
    with torch.cuda.stream(s2):
        got = g(*read_args)
    assert not s1.query(), "the sleep ended before the second call was enqueued: no race was tested"
    torch.cuda.synchronize()
    return got
