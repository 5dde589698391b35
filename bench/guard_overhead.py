"""Guard checks and capture time on whole models.

    python3 bench/guard_overhead.py [--device cpu|cuda] [--size full|small] [--calls N]

For a 12-layer BERT-like encoder (batch 1, sequence 128) and ResNet-50
(batch 1, 224x224), one run on one machine:
- eager: the median time of one eager call;
- first call: the capture run (both monitors), building the plan, compiling
  its kernels and running it, against eager's time;
- guards: the time of one check of the plan's guards (the C++ guard program
  over the arguments, the pinned module state and the global torch state),
  timed in C++ over N checks, median of 5 such rounds, with the number of
  checks it holds and the number of groups of checks on pre-existing objects;
- replay: one compiled call (guards, the plan, rebuilding the result),
  median over N/10 calls, next to eager's;
- what a hit walks: pinned tensors, groups covered by dict/type watchers
  (CPython 3.12), groups checked on every hit, and whether the program was
  left dirty (a watched object changed since its last passing check).
Inference under torch.no_grad(), float32.
"""

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deepvisor  # noqa: E402
from models import bert_like, resnet50  # noqa: E402


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def median_us(fn, calls, device, rounds=5):
    fn()
    sync(device)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        sync(device)
        times.append((time.perf_counter() - t0) / calls * 1e6)
    return statistics.median(times)


def measure(name, model, args, device, calls):
    eager_us = median_us(lambda: model(*args), max(1, calls // 10), device)
    g = deepvisor.compile(model)
    t0 = time.perf_counter()
    g(*args)
    sync(device)
    first_s = time.perf_counter() - t0
    s = deepvisor.stats(g)
    if s["graphs"] != 1 or s["eager_calls"]:
        print(f"{name}: not one graph ({s['graphs']} graphs, eager reasons {s['eager_reasons']})", file=sys.stderr)
        return None
    g(*args)  # the first replay compiles what is left (CUDA: loads the kernels)
    program = g._plans.guards()[0]
    guard_us = statistics.median(program.time_checks(args, {}, calls) for _ in range(5)) * 1e6
    hit_us = median_us(lambda: g(*args), max(1, calls // 10), device)
    return {"model": name, "eager_us": eager_us, "first_s": first_s, "guard_us": guard_us,
            "checks": program.num_checks(), "groups": program.num_groups(), "hit_us": hit_us,
            "profile": program.hit_profile()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--size", default="full", choices=["full", "small"])
    ap.add_argument("--calls", type=int, default=2000)
    a = ap.parse_args()
    rows = []
    with torch.no_grad():
        for name, build in (("BERT-like, 12 layers, bs1 seq128", lambda: bert_like(a.size, 1, 128, a.device)),
                            ("ResNet-50, bs1 224x224", lambda: resnet50(a.size, 1, a.device))):
            model, args = build()
            r = measure(name, model, args, a.device, a.calls)
            if r is not None:
                rows.append(r)
    dev = torch.cuda.get_device_name() if a.device == "cuda" else "cpu"
    print(f"| {dev}, {a.size} size, Python {sys.version.split()[0]} | eager call | first call (capture + compile) | "
          "guard check | checks (groups) | replay |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['model']} | {r['eager_us'] / 1e3:.2f} ms | {r['first_s']:.2f} s "
              f"({r['first_s'] * 1e6 / r['eager_us']:.0f}x eager) | {r['guard_us']:.2f} us | "
              f"{r['checks']} ({r['groups']}) | {r['hit_us'] / 1e3:.2f} ms |")
    for r in rows:
        print(f"{r['model']}: a hit walks {r['profile']}")


if __name__ == "__main__":
    main()
