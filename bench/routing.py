"""Sizes that depend on the data: a mixture of experts' top-1 routing, whose
per-expert counts change on every call. eager, torch.compile (which breaks
the graph at each nonzero), torch.compile with capture_dynamic_output_shape_ops
(unbacked sizes) and deepvisor (symbolic counts, _shapes.py).

    python3 bench/routing.py                       # 8 experts, 1024 tokens of 512
    python3 bench/routing.py --device cpu --tokens 128 --dim 64 --calls 60

Every mode is called on the same stream of `--calls` inputs (fresh random
tokens each call, so every call routes other counts). Reported per mode: the
wall time of the whole stream (captures and compiles included), the median
time of a call over its last half (what a server sees once warm), the
largest relative error against eager, and deepvisor's captures, count
instances and eager calls.
"""

import argparse
import os
import statistics
import tempfile
import time

import torch
import torch.nn as nn

MODES = ["eager", "compile", "compile-unbacked", "deepvisor"]


class TopOneExperts(nn.Module):
    def __init__(self, dim, experts):
        super().__init__()
        self.gate = nn.Linear(dim, experts)
        self.experts = nn.ModuleList(nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
                                     for _ in range(experts))

    def forward(self, x):
        weight, top = torch.softmax(self.gate(x), -1).max(-1)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            rows = torch.nonzero(top == e).flatten()
            out.index_add_(0, rows, expert(x[rows]) * weight[rows, None])
        return out


def compiled(mode, model):
    if mode == "eager":
        return model
    if mode == "deepvisor":
        import deepvisor
        return deepvisor.compile(model)
    import torch._dynamo
    torch._dynamo.reset()
    torch._dynamo.config.capture_dynamic_output_shape_ops = mode == "compile-unbacked"
    return torch.compile(model)


def run_stream(fn, stream, sync):
    times = []
    start = time.perf_counter()
    for x in stream:
        t0 = time.perf_counter()
        fn(x)
        sync()
        times.append(time.perf_counter() - t0)
    return time.perf_counter() - start, times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--modes", nargs="+", default=MODES, choices=MODES)
    a = ap.parse_args()
    os.environ.setdefault("DEEPVISOR_CACHE_DIR", tempfile.mkdtemp(prefix="dv-routing-"))
    torch.manual_seed(0)
    model = TopOneExperts(a.dim, a.experts).eval().to(a.device)
    gen = torch.Generator(device=a.device).manual_seed(1)
    stream = [torch.randn(a.tokens, a.dim, device=a.device, generator=gen) for _ in range(a.calls)]
    sync = torch.cuda.synchronize if a.device == "cuda" else (lambda: None)
    with torch.no_grad():
        want = [model(x) for x in stream[:8]]
        print(f"| top-1 routing, {a.experts} experts, {a.tokens} tokens of {a.dim} on {a.device}, {a.calls} calls "
              "| whole stream s | warm call ms | max rel. error | captures | count instances | eager calls |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for mode in a.modes:
            fn = compiled(mode, model)
            try:
                total, times = run_stream(fn, stream, sync)
                error = max(((fn(x) - w).abs().max() / w.abs().max()).item() for x, w in zip(stream, want))
            except Exception as e:  # noqa: BLE001  (a mode that cannot run this program says why)
                print(f"| {mode} | failed: {type(e).__name__}: {str(e).splitlines()[0][:120]} | | | | | |")
                continue
            warm = statistics.median(times[len(times) // 2:]) * 1e3
            extra = ["", "", ""]
            if mode == "deepvisor":
                import deepvisor
                s = deepvisor.stats(fn)
                extra = [str(s["captures"]), str(s["count_instances"]), str(s["eager_calls"])]
            print(f"| {mode} | {total:.2f} | {warm:.3f} | {error:.1e} | " + " | ".join(extra) + " |", flush=True)


if __name__ == "__main__":
    main()
