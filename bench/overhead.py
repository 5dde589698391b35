"""Per-call host overhead: eager vs torch.compile vs deepvisor on a tiny input.

    python3 bench/overhead.py [--device cuda|cpu] [--calls N]

The program is gelu(1.5x+0.3)*sigmoid(x) on an 8-element tensor, so the kernels
themselves take next to nothing and the time per call is what the host spends:
Python, guards, allocation and launches. Each variant is called N times
back to back and the device is synchronized once at the end; the median of 5
such rounds is reported in microseconds per call.
"""

import argparse
import statistics
import time

import torch

import deepvisor


def gelu_chain(x):
    return torch.nn.functional.gelu(x * 1.5 + 0.3) * torch.sigmoid(x)


def per_call_us(fn, x, calls, device):
    for _ in range(50):
        fn(x)
    rounds = []
    for _ in range(5):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(calls):
            fn(x)
        if device == "cuda":
            torch.cuda.synchronize()
        rounds.append((time.perf_counter() - t0) / calls * 1e6)
    return statistics.median(rounds)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--calls", type=int, default=2000)
    opts = parser.parse_args()
    x = torch.randn(8, device=opts.device)
    variants = {
        "eager (5 ATen ops)": gelu_chain,
        "torch.compile": torch.compile(gelu_chain),
        "deepvisor": deepvisor.compile(gelu_chain),
    }
    want = gelu_chain(x)
    print(f"| per-call host time, 8 elements on {opts.device} | us |")
    print("| --- | --- |")
    for name, fn in variants.items():
        torch.testing.assert_close(fn(x), want)
        print(f"| {name} | {per_call_us(fn, x, opts.calls, opts.device):.1f} |", flush=True)


if __name__ == "__main__":
    main()
