"""Shapes that change from call to call (issue 11): eager, torch.compile,
torch.compile(dynamic=True) and deepvisor over a sweep of shapes.

    python3 bench/dynamic.py                        # BERT 4 layers, batch 8, seq 32..256
    python3 bench/dynamic.py --model resnet50 --sweep batch
    python3 bench/dynamic.py --device cpu --size small --modes eager deepvisor deepvisor-static

Each mode runs in a fresh process (its own caches: the disk kernel cache of
deepvisor is a new empty folder) and calls the model on every shape of the
sweep `--repeat` times in a shuffled order (the same order for every mode).
Reported per mode: the wall time of that whole sequence (compiles included),
deepvisor's captures and NVRTC compiles, and then the steady-state latency
of each shape (median of `--iters` calls once everything is compiled); on a
GPU also the peak of allocated memory and what the allocator holds at the
end (CUDA graphs and their memory pools included).
`deepvisor` is the default policy (a dimension that changes becomes a
symbol, _shapes.py); `deepvisor-static` captures and compiles every shape
(dynamic=False), the static-shape plans the steady state is compared with.
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MODES = ["eager", "compile", "compile-dynamic", "deepvisor", "deepvisor-static"]


def build(model, size, device):
    import torch
    sys.path.insert(0, HERE)
    import models as bench_models
    torch.manual_seed(0)
    if model == "bert4":
        from transformers import BertConfig, BertModel
        cfg = (BertConfig(num_hidden_layers=4) if size == "full" else
               BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=2, intermediate_size=128,
                          vocab_size=1000))
        cfg._attn_implementation = "sdpa"
        m = BertModel(cfg).eval().to(device)
        return m, lambda b, s: (torch.randint(0, cfg.vocab_size, (b, s), device=device),
                                torch.ones(b, s, dtype=torch.long, device=device))
    m, args = getattr(bench_models, model)(size, 1, device)
    if model == "resnet50":
        side = args[0].shape[-1]
        return m, lambda b, s: (torch.randn(b, 3, side, side, device=device),)
    vocab = 30522 if size == "full" else 1000
    return m, lambda b, s: (torch.randint(0, vocab, (b, s), device=device),
                            torch.ones(b, s, dtype=torch.long, device=device))


def shapes(a):
    if a.sweep == "seq":
        return [(a.batch, s) for s in range(a.seq_from, a.seq_to + 1, a.seq_step)]
    return [(b, a.seq) for b in range(a.batch_from, a.batch_to + 1)]


def run_mode(a):
    """In the child process: one mode over the sweep; prints one JSON line."""
    import torch
    import deepvisor
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model, make = build(a.model, a.size, a.device)
    if a.mode == "eager":
        fn = model
    elif a.mode == "compile":
        fn = torch.compile(model)
    elif a.mode == "compile-dynamic":
        fn = torch.compile(model, dynamic=True)
    else:  # deepvisor-static: a capture and plan per shape (the steady state dynamic plans are held to)
        fn = deepvisor.compile(model, dynamic=False if a.mode == "deepvisor-static" else None)
    sync = torch.cuda.synchronize if a.device == "cuda" else (lambda: None)
    sweep = shapes(a)
    order = [s for s in sweep for _ in range(a.repeat)]
    random.Random(0).shuffle(order)
    inputs = {s: make(*s) for s in sweep}
    with torch.no_grad():
        sync()
        t0 = time.perf_counter()
        for s in order:
            fn(*inputs[s])
        sync()
        wall = time.perf_counter() - t0
        steady = {}
        for s in sweep:
            times = []
            for _ in range(a.iters):
                t = time.perf_counter()
                fn(*inputs[s])
                sync()
                times.append((time.perf_counter() - t) * 1e3)
            steady[f"{s[0]}x{s[1]}"] = statistics.median(times)
    row = {"mode": a.mode, "wall_s": wall, "steady_ms": steady}
    if a.device == "cuda":  # after every shape ran (CUDA graphs and their pools held)
        row["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
        row["reserved_mib"] = torch.cuda.memory_reserved() / 2**20
    if a.profile and a.device == "cuda":
        row["kernels"] = {f"{b}x{q}": kernel_time(fn, inputs[(b, q)], a.iters) for b, q in sweep}
    if a.mode.startswith("deepvisor"):
        st = deepvisor.stats(fn)
        row.update(captures=st["captures"], nvrtc_compiles=st["nvrtc_compiles"], eager_calls=st["eager_calls"])
    print("RESULT " + json.dumps(row), flush=True)


def kernel_time(fn, args, iters):
    """(GPU kernel time in us a call, kernels a call) over `iters` calls,
    from torch.profiler: tells device time from host overhead."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    with torch.no_grad(), profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            fn(*args)
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    return sum(e.device_time for e in kernels) / iters, len(kernels) / iters


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default=None, choices=["cuda", "cpu"])
    ap.add_argument("--model", default="bert4", choices=["bert4", "bert_base", "resnet50"])
    ap.add_argument("--size", default="full", choices=["full", "small"])
    ap.add_argument("--sweep", default="seq", choices=["seq", "batch"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--seq-from", type=int, default=32)
    ap.add_argument("--seq-to", type=int, default=256)
    ap.add_argument("--seq-step", type=int, default=32)
    ap.add_argument("--batch-from", type=int, default=2)
    ap.add_argument("--batch-to", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--modes", nargs="+", default=MODES, choices=MODES)
    ap.add_argument("--mode", help=argparse.SUPPRESS)  # the child process's one mode
    ap.add_argument("--out", default=None, help="write the rows here as JSON")
    ap.add_argument("--profile", action="store_true",
                    help="also the GPU kernel time and kernel count a call, per shape (torch.profiler)")
    a = ap.parse_args()
    if a.device is None:
        import torch
        a.device = "cuda" if torch.cuda.is_available() else "cpu"
    if a.mode:
        return run_mode(a)
    rows = []
    for mode in a.modes:
        env = dict(os.environ, DEEPVISOR_CACHE_DIR=tempfile.mkdtemp(prefix="dv-dynamic-"))
        # The child reads --mode (given last) and ignores --modes.
        p = subprocess.run([sys.executable, __file__] + sys.argv[1:] + ["--mode", mode], env=env, capture_output=True,
                           text=True)
        lines = [l for l in p.stdout.splitlines() if l.startswith("RESULT ")]
        if p.returncode != 0 or not lines:
            print(f"{mode}: failed\n{p.stderr[-2000:]}", file=sys.stderr)
            rows.append({"mode": mode, "error": p.stderr[-500:]})
            continue
        rows.append(json.loads(lines[-1][len("RESULT "):]))
        print(f"{mode}: {rows[-1]['wall_s']:.2f} s", file=sys.stderr, flush=True)
    table(rows, a)
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"args": vars(a), "rows": rows}, f, indent=1)



def table(rows, a):
    sweep = [f"{b}x{s}" for b, s in shapes(a)]
    print(f"\n{a.model} ({a.size}) on {a.device}, shapes (batch x seq) {sweep[0]}..{sweep[-1]}, "
          f"each called {a.repeat} times in a shuffled order\n")
    print("| mode | wall time of the sequence s | captures | NVRTC compiles | steady ms (min..max over shapes) "
          "| GPU memory MiB: peak allocated / reserved at the end |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        if "error" in r:
            print(f"| {r['mode']} | failed | | | | |")
            continue
        st = list(r["steady_ms"].values())
        memory = f"{r['peak_mib']:.0f} / {r['reserved_mib']:.0f}" if "peak_mib" in r else ""
        print(f"| {r['mode']} | {r['wall_s']:.2f} | {r.get('captures', '')} | {r.get('nvrtc_compiles', '')} | "
              f"{min(st):.3f}..{max(st):.3f} | {memory} |")
    ok = [r for r in rows if "steady_ms" in r]
    per_shape_table("steady-state ms per shape", sweep, ok, lambda r, s: f"{r['steady_ms'][s]:.3f}")
    per_shape_table("GPU kernel time a call, us (kernels a call), torch.profiler", sweep,
                    [r for r in ok if "kernels" in r], lambda r, s: "{:.1f} ({:.0f})".format(*r["kernels"][s]))


def per_shape_table(title, sweep, rows, cell):
    """A table of one column per mode (row of `rows`), one line per shape."""
    if not rows:
        return
    print(f"\n{title}:\n")
    print("| shape | " + " | ".join(r["mode"] for r in rows) + " |")
    print("| --- |" + " --- |" * len(rows))
    for s in sweep:
        print(f"| {s} | " + " | ".join(cell(r, s) for r in rows) + " |")


if __name__ == "__main__":
    main()
