"""Micro benchmarks: eager vs torch.compile vs deepvisor, in one run on one card.

    python3 bench/micro.py [--only NAME] [--json FILE] [--rounds N] [--extra]

Workloads (issue 3): (a) gelu(1.5x+0.3)*sigmoid(x) on 64M float32, (b) softmax
of 8192x8192 float32 over the last dim, (c) layer_norm of 16384x4096 float32 and
bfloat16. Each workload is timed in N rounds (default 5); a round times eager,
torch.compile and deepvisor, in an order that rotates from round to round, each
with triton.testing.do_bench (warm-up 25 ms, repeat 100 ms, median) when triton
is importable, else with CUDA events. The table shows the median over rounds,
then each round's numbers. Effective bandwidth counts one read of each input
and one write of each output. --extra times other shapes instead (rows of
512 to 3072, odd sizes, a row sum and a column mean). A second table reports
each workload's cold start: the seconds of deepvisor's first two calls (the
capture, then NVRTC, autotuning and the run), the second's compile and
autotuning alone, and deepvisor.stats' compile and autotune counts; with a warm
DEEPVISOR_CACHE_DIR nothing is compiled or timed.
"""

import argparse
import json
import statistics
import sys
import time

import torch

import deepvisor


def gelu_chain(x):
    return torch.nn.functional.gelu(x * 1.5 + 0.3) * torch.sigmoid(x)


def softmax(x):
    return torch.softmax(x, -1)


def layer_norm(x, w, b):
    return torch.nn.functional.layer_norm(x, x.shape[-1:], w, b)


def workloads(device):
    def randn(*shape, dtype=torch.float32):
        return torch.randn(*shape, device=device, dtype=dtype)

    yield "gelu_chain 64M f32", gelu_chain, lambda: (randn(64 * 2**20),)
    yield "softmax 8192x8192 f32", softmax, lambda: (randn(8192, 8192),)
    for dtype, tag in ((torch.float32, "f32"), (torch.bfloat16, "bf16")):
        yield (f"layer_norm 16384x4096 {tag}", layer_norm,
               lambda dtype=dtype: (randn(16384, 4096, dtype=dtype), randn(4096, dtype=dtype), randn(4096, dtype=dtype)))


def extra_workloads(device):
    """Shapes a transformer or a classifier meets (rows of 512-3072, odd sizes,
    rows of 32768, reductions over either end), to check we are no slower than torch.compile
    beyond the four issue-3 workloads."""
    def randn(*shape, dtype=torch.float32):
        return torch.randn(*shape, device=device, dtype=dtype)

    for rows, cols, dtype, tag in ((32768, 768, torch.float32, "f32"), (32768, 768, torch.bfloat16, "bf16"),
                                   (16384, 3072, torch.float32, "f32"), (16384, 1024, torch.bfloat16, "bf16")):
        yield (f"layer_norm {rows}x{cols} {tag}", layer_norm,
               lambda rows=rows, cols=cols, dtype=dtype: (randn(rows, cols, dtype=dtype), randn(cols, dtype=dtype),
                                                          randn(cols, dtype=dtype)))
    yield "softmax 16x12x512x512 f32", softmax, lambda: (randn(16, 12, 512, 512),)
    yield "softmax 32768x1000 f32", softmax, lambda: (randn(32768, 1000),)
    yield "softmax 16384x4096 f32", softmax, lambda: (randn(16384, 4096),)
    yield "softmax 16x12x512x512 bf16", softmax, lambda: (randn(16, 12, 512, 512, dtype=torch.bfloat16),)
    # Rows too long for registers (the looped form).
    yield "softmax 2048x32768 f32", softmax, lambda: (randn(2048, 32768),)
    yield ("layer_norm 2048x32768 f32", layer_norm,
           lambda: (randn(2048, 32768), randn(32768), randn(32768)))
    yield "gelu_chain 50000017 f32", gelu_chain, lambda: (randn(50000017),)
    yield "sum(-1) 16384x4096 f32", row_sum, lambda: (randn(16384, 4096),)
    yield "mean(0) 4096x16384 f32", col_mean, lambda: (randn(4096, 16384),)


def row_sum(x):
    return x.sum(-1)


def col_mean(x):
    return x.mean(0)


def bytes_moved(args, out):
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return sum(t.numel() * t.element_size() for t in (*args, *outs))


def median_us(fn):
    try:
        from triton.testing import do_bench
        return do_bench(fn, warmup=25, rep=100, return_mode="median") * 1e3
    except ImportError:
        times = []
        for _ in range(10):
            fn()
        for _ in range(50):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) * 1e3)
        return statistics.median(times)


def check(name, got, want, dtype):
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-4
    if not torch.allclose(got.float(), want.float(), rtol=tol, atol=tol):
        err = (got.float() - want.float()).abs().max().item()
        raise SystemExit(f"{name}: deepvisor differs from eager (max abs error {err})")


def run_one(name, fn, make_args, rounds):
    """Times eager, torch.compile and deepvisor in `rounds` interleaved rounds
    (the order rotates each round, so drift in the card's clocks during a run
    favours none of them) and keeps the median of each one's round medians."""
    args = make_args()
    # A fresh Dynamo cache for each workload: several workloads share a
    # function (layer_norm, softmax), and a second shape would otherwise make
    # torch.compile recompile it with dynamic shapes (slower kernels).
    torch._dynamo.reset()
    compiled_dv = deepvisor.compile(fn)
    compiled_ind = torch.compile(fn)
    with torch.no_grad():
        want = fn(*args)
        torch.cuda.synchronize()
        # The first call runs the function while capturing it; the second
        # makes the plan's kernels ready (NVRTC, and autotuning unless
        # DEEPVISOR_AUTOTUNE=0) and runs them: together, the time to a ready plan.
        first_two_calls = time.perf_counter()
        compiled_dv(*args)
        got = compiled_dv(*args)
        torch.cuda.synchronize()
        first_two_calls = time.perf_counter() - first_two_calls
        check(name, got, want, args[0].dtype)
        compiled_ind(*args)
        variants = [("eager", lambda: fn(*args)), ("inductor", lambda: compiled_ind(*args)),
                    ("deepvisor", lambda: compiled_dv(*args))]
        times = {key: [] for key, _ in variants}
        for r in range(rounds):
            for key, run in variants[r % 3:] + variants[:r % 3]:
                times[key].append(median_us(run))
    stats = deepvisor.stats(compiled_dv)
    moved = bytes_moved(args, want)
    t_eager, t_ind, t_dv = (statistics.median(times[k]) for k in ("eager", "inductor", "deepvisor"))
    return {
        "workload": name, "eager_us": t_eager, "inductor_us": t_ind, "deepvisor_us": t_dv,
        "deepvisor_tbps": moved / (t_dv * 1e-6) / 1e12, "inductor_tbps": moved / (t_ind * 1e-6) / 1e12,
        "kernels": stats["kernels"], "eager_calls": stats["eager_calls"], "rounds": times,
        "first_two_calls_s": first_two_calls, "kernels_ready_s": stats["kernels_ready_s"],
        "nvrtc_compiles": stats["nvrtc_compiles"],
        "kernels_autotuned": stats["kernels_autotuned"], "autotune_s": stats["autotune_s"],
        "autotune_cache_hits": stats["autotune_cache_hits"], "autotune_compiles": stats["autotune_compiles"],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="run workloads whose name contains this")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (default 5)")
    parser.add_argument("--extra", action="store_true", help="time the extra shapes instead of the issue-3 four")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench/micro.py needs a CUDA GPU")
    device = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    results = []
    for name, fn, make_args in (extra_workloads if args.extra else workloads)(device):
        if args.only and args.only not in name:
            continue
        results.append(run_one(name, fn, make_args, args.rounds))
        torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    print()
    print("| workload | eager us | torch.compile us | deepvisor us | deepvisor TB/s | vs torch.compile | kernels |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['workload']} | {r['eager_us']:.1f} | {r['inductor_us']:.1f} | {r['deepvisor_us']:.1f} | "
              f"{r['deepvisor_tbps']:.2f} | {r['inductor_us'] / r['deepvisor_us']:.3f}x | {r['kernels']} |")
    print()
    print("Cold start (deepvisor's first two calls: the capture, then NVRTC, autotuning and the run; "
          "kernels ready s: the second's compile and autotuning alone; a warm disk cache compiles and times nothing):")
    print("| workload | first two calls s | kernels ready s | nvrtc compiles | of which candidates | kernels autotuned | autotune s | choices cached |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['workload']} | {r['first_two_calls_s']:.2f} | {r['kernels_ready_s']:.2f} | {r['nvrtc_compiles']} | {r['autotune_compiles']} | "
              f"{r['kernels_autotuned']} | {r['autotune_s']:.3f} | {r['autotune_cache_hits']} |")
    print()
    print("Each round's medians (us), torch.compile / deepvisor:")
    for r in results:
        pairs = ", ".join(f"{a:.1f}/{b:.1f}" for a, b in zip(r["rounds"]["inductor"], r["rounds"]["deepvisor"]))
        print(f"  {r['workload']}: {pairs}")


if __name__ == "__main__":
    main()
