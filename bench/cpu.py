"""CPU tensors: eager vs deepvisor, one thread and all threads, one run.

    python3 bench/cpu.py [--rounds N] [--aten] [--compiled] [--interpreter] [--only NAME]

Workloads (issue 12): a 2-layer BERT (transformers BertModel, hidden 768,
batch 1, sequence 128, random weights), gelu(1.5x+0.3)*sigmoid(x) on 1M
float32, softmax of 1024x1024 float32 over the last dim, layer_norm of
2048x1024 float32. deepvisor runs a CPU plan as it does by default (DEEPVISOR_CPU unset:
fused, pointwise work and row reductions compiled to C++ by the host
compiler, the rest through ATen); --aten also times DEEPVISOR_CPU=aten (every
node through ATen); --compiled also times DEEPVISOR_CPU=compiled (every
kernel as C++, library ops through ATen); --interpreter also
times DEEPVISOR_CPU=interpreter, the loop-IR interpreter that the tests
compare against (slow: a reference, not a backend). Each round times every mode in an order that rotates from round to
round (median of a few calls each, after a warm-up); the table shows the
median over rounds and the ratio eager / deepvisor (>1: deepvisor faster),
then the geometric mean per thread count. Inference under torch.no_grad().
"""

import argparse
import math
import os
import statistics
import sys
import time

import torch

import deepvisor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from micro import gelu_chain, layer_norm, softmax  # noqa: E402  (the GPU micro benchmarks' workloads)


def bert_2_layers():
    from transformers import BertConfig, BertModel
    cfg = BertConfig(num_hidden_layers=2)
    cfg._attn_implementation = "sdpa"
    model = BertModel(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (1, 128))
    return model, (ids, torch.ones(1, 128, dtype=torch.long))


def workloads():
    g = torch.Generator().manual_seed(0)
    randn = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    yield "bert_2_layers", *bert_2_layers()
    yield "gelu_chain_1M", gelu_chain, (randn(1 << 20),)
    yield "softmax_1024x1024", softmax, (randn(1024, 1024),)
    yield "layer_norm_2048x1024", layer_norm, (randn(2048, 1024), randn(1024), randn(1024))


def compiled(fn, cpu_mode):
    """deepvisor.compile(fn) whose plans are built under DEEPVISOR_CPU=cpu_mode
    (None: unset, the default; the mode is read when a plan is compiled: on
    the first calls)."""
    g = deepvisor.compile(fn)

    def call(*args):
        if cpu_mode is None:
            os.environ.pop("DEEPVISOR_CPU", None)
        else:
            os.environ["DEEPVISOR_CPU"] = cpu_mode
        return g(*args)
    return call


def time_call(fn, args, calls):
    t0 = time.perf_counter()
    for _ in range(calls):
        fn(*args)
    return (time.perf_counter() - t0) / calls * 1e3


def measure(name, fn, args, modes, rounds):
    fns = {"eager": fn}
    for mode in modes[1:]:
        fns[mode] = compiled(fn, None if mode == "deepvisor" else mode)
    for f in fns.values():  # capture, compile, warm up
        for _ in range(2):
            f(*args)
    calls = max(1, int(0.2 / max(time_call(fn, args, 1) / 1e3, 1e-6)))  # about 0.2 s a timing
    times = {m: [] for m in fns}
    for r in range(rounds):
        order = list(fns)[r % len(fns):] + list(fns)[:r % len(fns)]
        for m in order:
            times[m].append(time_call(fns[m], args, calls if m != "interpreter" else 1))
    return {m: statistics.median(ts) for m, ts in times.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--aten", action="store_true", help="also time every node through ATen")
    ap.add_argument("--compiled", action="store_true", help="also time every kernel compiled to C++")
    ap.add_argument("--interpreter", action="store_true", help="also time the loop-IR interpreter")
    ap.add_argument("--only", default=None)
    a = ap.parse_args()
    modes = (["eager", "deepvisor"] + (["aten"] if a.aten else []) + (["compiled"] if a.compiled else []) +
             (["interpreter"] if a.interpreter else []))
    versus = [m for m in ("deepvisor", "aten", "compiled") if m in modes]
    all_threads = torch.get_num_threads()
    print(f"CPU: {os.cpu_count()} cores, torch {torch.__version__}, medians of {a.rounds} rounds (ms)\n")
    print("| workload | threads | " + " | ".join(modes) + " | " + " | ".join(f"eager / {m}" for m in versus) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in modes + versus) + " |")
    ratios = {}
    with torch.no_grad():
        for threads in sorted({1, all_threads}):
            torch.set_num_threads(threads)
            for name, fn, args in workloads():
                if a.only and a.only != name:
                    continue
                t = measure(name, fn, args, modes, a.rounds)
                for m in versus:
                    ratios.setdefault((threads, m), []).append(t["eager"] / t[m])
                cells = " | ".join(f"{t[m]:.3f}" for m in modes)
                vs = " | ".join(f"{t['eager'] / t[m]:.2f}x" for m in versus)
                print(f"| {name} | {threads} | {cells} | {vs} |", flush=True)
                deepvisor.reset()
    print()
    for (threads, m), rs in ratios.items():
        geo = math.exp(sum(map(math.log, rs)) / len(rs))
        print(f"{threads} thread(s): geometric mean eager / {m} {geo:.2f}x over {len(rs)} workloads")


if __name__ == "__main__":
    sys.exit(main())
