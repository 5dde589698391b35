"""Micro benchmarks: eager vs torch.compile vs deepvisor, in one run on one card.

    python3 bench/micro.py [--only NAME] [--json FILE]

Workloads (issue 3): (a) gelu(1.5x+0.3)*sigmoid(x) on 64M float32, (b) softmax
of 8192x8192 float32 over the last dim, (c) layer_norm of 16384x4096 float32 and
bfloat16. Times are medians of triton.testing.do_bench (warm-up 50 ms, repeat
300 ms) when triton is importable, else of CUDA-event timings. Effective
bandwidth counts one read of each input and one write of each output.
"""

import argparse
import json
import statistics
import sys

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


def bytes_moved(args, out):
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return sum(t.numel() * t.element_size() for t in (*args, *outs))


def median_us(fn):
    try:
        from triton.testing import do_bench
        return do_bench(fn, warmup=50, rep=300, return_mode="median") * 1e3
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


def run_one(name, fn, make_args):
    args = make_args()
    compiled_dv = deepvisor.compile(fn)
    compiled_ind = torch.compile(fn)
    with torch.no_grad():
        want = fn(*args)
        compiled_dv(*args)                # capture
        check(name, compiled_dv(*args), want, args[0].dtype)
        compiled_ind(*args)
        t_eager = median_us(lambda: fn(*args))
        t_ind = median_us(lambda: compiled_ind(*args))
        t_dv = median_us(lambda: compiled_dv(*args))
    stats = deepvisor.stats(compiled_dv)
    moved = bytes_moved(args, want)
    return {
        "workload": name, "eager_us": t_eager, "inductor_us": t_ind, "deepvisor_us": t_dv,
        "deepvisor_tbps": moved / (t_dv * 1e-6) / 1e12, "inductor_tbps": moved / (t_ind * 1e-6) / 1e12,
        "kernels": stats["kernels"], "eager_calls": stats["eager_calls"],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="run workloads whose name contains this")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench/micro.py needs a CUDA GPU")
    device = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    results = []
    for name, fn, make_args in workloads(device):
        if args.only and args.only not in name:
            continue
        results.append(run_one(name, fn, make_args))
        torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    print()
    print("| workload | eager us | torch.compile us | deepvisor us | deepvisor TB/s | vs torch.compile | kernels |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['workload']} | {r['eager_us']:.1f} | {r['inductor_us']:.1f} | {r['deepvisor_us']:.1f} | "
              f"{r['deepvisor_tbps']:.2f} | {r['inductor_us'] / r['deepvisor_us']:.2f}x | {r['kernels']} |")


if __name__ == "__main__":
    main()
