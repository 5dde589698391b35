"""`make demo`: compile a small model, check it against eager, show what was built.

    python3 -m deepvisor.demo [--device cpu|cuda] [--rows N] [--cols N]

Runs on CUDA when a GPU is present (kernels compiled by NVRTC), else on the CPU
(the same loop IR compiled to C++ by the host compiler, or in the interpreter
without one; the CUDA C is still generated and compiled by NVRTC for sm_90
when the toolkit is there, to show it). Plans on CPU tensors run through ATen
by default; the demo asks for its kernels (DEEPVISOR_CPU=compiled, else
interpreter) so that the kernels it shows are the ones it runs.
"""

import argparse
import os
import statistics
import time

import torch

import deepvisor
from deepvisor import _C

# Read when a plan is compiled (not at import).
os.environ.setdefault("DEEPVISOR_CPU", "compiled" if _C.host_compiler_available() else "interpreter")


def model(x, w, b):
    y = torch.nn.functional.gelu(x * 1.5 + 0.3) * torch.sigmoid(x)
    return torch.softmax(y, -1), torch.nn.functional.layer_norm(y, y.shape[-1:], w, b)


def median_time(fn, device, repeats):
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def banner(title):
    print(f"\n=== {title} ===")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--cols", type=int, default=1000)
    args = parser.parse_args()
    device = torch.device(args.device)

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.rows, args.cols, generator=gen).to(device)
    w = torch.randn(args.cols, generator=gen).to(device)
    b = torch.randn(args.cols, generator=gen).to(device)

    compiled = deepvisor.compile(model)
    with torch.no_grad():
        compiled(x, w, b)  # capture: runs for real while recording
        got = compiled(x, w, b)  # replay: the compiled plan
        want = model(x, w, b)
    tol = 1e-4 if device.type == "cuda" else 1e-5
    ok = all(torch.allclose(g, e, rtol=tol, atol=tol) for g, e in zip(got, want))
    err = max((g - e).abs().max().item() for g, e in zip(got, want))

    executor = next(compiled.executors())
    banner("op graph (as captured)")
    print(executor.graph_text(), end="")
    banner("plan and fusion groups")
    print(executor.describe(), end="")
    banner("loop IR")
    print(executor.loop_ir(), end="")
    banner("CUDA C (first kernel, sm_90)")
    if _C.nvrtc_available():
        if device.type != "cuda":
            executor.validate_cuda(90)
        source = executor.cuda_sources(90)[0]
        body = source[source.find('extern "C"'):]
        print(body if body else source)
        print("(NVRTC compiled it for sm_90)")
    else:
        print("NVRTC not found: set CUDA_HOME to a CUDA 13 toolkit to see and compile the CUDA C")

    banner("timings (median of 20 calls)")
    with torch.no_grad():
        t_eager = median_time(lambda: model(x, w, b), device, 20)
        t_dv = median_time(lambda: compiled(x, w, b), device, 20)
    print(f"device {device}, x {tuple(x.shape)}")
    print(f"eager      {t_eager * 1e3:8.3f} ms")
    print(f"deepvisor  {t_dv * 1e3:8.3f} ms   ({t_eager / t_dv:.2f}x)")
    banner("stats")
    print(deepvisor.stats(compiled))
    banner("result")
    print(f"deepvisor matches eager: {ok} (max abs error {err:.2e})")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
