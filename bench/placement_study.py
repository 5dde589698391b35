"""Does where an output lands change a kernel's time? (f32 layer_norm 16384x4096)

    python3 bench/placement_study.py [--rounds N]

bench/NOTES.md (2026-11-25, second session) found the emitted f32 layer_norm
0.8 us slower with its output allocated at each call (as deepvisor and
torch.compile both do) than with one preallocated output, while torch.compile's
kernel did not pay it. This script prints, for deepvisor and torch.compile,
the output addresses they get under triton's do_bench (and the address of
do_bench's L2-flush buffer), then times the emitted kernel writing into outputs
at several fixed addresses (separate allocations, and offsets inside one buffer), so that an address effect shows as a spread
between them. It decides nothing by itself; read it beside NOTES.
"""

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kernel_lab  # noqa: E402  (compile_kernel, median_us, layer_norm)

import deepvisor  # noqa: E402

ROWS, COLS = kernel_lab.LN_ROWS, kernel_lab.LN_COLS
SOURCE = Path(__file__).resolve().parent / "lab_sources" / "lnf32__onepass_f653628.cu"
MB2 = 2 << 20


def addresses_under_do_bench(name, fn):
    """The distinct output addresses fn returns over a do_bench run."""
    seen = []

    def recording():
        out = fn()
        seen.append(out.data_ptr())
        return out

    us = kernel_lab.median_us(recording)
    distinct = sorted(set(seen))
    shown = ", ".join(f"{a:#x} (mod 2 MiB {a % MB2:#x})" for a in distinct[:4])
    print(f"{name}: {us:.1f} us; {len(distinct)} distinct output address(es) over {len(seen)} calls: {shown}")


def placement_kernels(x, w, b):
    """Kernels that write layer_norm(x, w, b) into a given output: the emitted
    one, the lab's copy of Inductor's looped form (tma_lab.py) and torch.compile's
    own kernel (an out= copy that Inductor folds into its kernel)."""
    import tma_lab
    emitted = kernel_lab.compile_kernel(SOURCE.read_text(), "k0")
    looped = kernel_lab.compile_kernel(tma_lab.ln_looped_source("looped", 512, 1, "l1l2"), "looped")
    looped3 = kernel_lab.compile_kernel(tma_lab.ln_looped_source("looped3", 512, 1, "l1l2", passes=3), "looped3")
    looped3_plain = kernel_lab.compile_kernel(tma_lab.ln_looped_source("looped3p", 512, 1, "none", passes=3), "looped3p")
    into = torch.compile(lambda x, w, b, out: out.copy_(kernel_lab.layer_norm(x, w, b)))
    return {
        "emitted": lambda out: emitted((ROWS, 1, 1), (512, 1, 1), [x, w, b, out]),
        "Inductor-like looped, L1+L2 hints": lambda out: looped((ROWS, 1, 1), (512, 1, 1), [x, w, b, out, ROWS]),
        "looped, 3 passes, L1+L2 hints": lambda out: looped3((ROWS, 1, 1), (512, 1, 1), [x, w, b, out, ROWS]),
        "looped, 3 passes, no hints": lambda out: looped3_plain((ROWS, 1, 1), (512, 1, 1), [x, w, b, out, ROWS]),
        "torch.compile into out": lambda out: into(x, w, b, out),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    opts = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench/placement_study.py needs a CUDA GPU")
    x = torch.randn(ROWS, COLS, device="cuda")
    w, b = torch.randn(COLS, device="cuda"), torch.randn(COLS, device="cuda")
    want = kernel_lab.layer_norm(x, w, b)

    dv = deepvisor.compile(kernel_lab.layer_norm)
    dv(x, w, b)
    tc = torch.compile(kernel_lab.layer_norm)
    tc(x, w, b)
    print(f"x at {x.data_ptr():#x}")
    for _ in range(2):  # twice: the first do_bench also allocates its flush buffer
        addresses_under_do_bench("deepvisor", lambda: dv(x, w, b))
        addresses_under_do_bench("torch.compile", lambda: tc(x, w, b))

    kernels = placement_kernels(x, w, b)
    # Outputs at several addresses: a pool allocated up front, in order.
    outs = [torch.empty_like(want) for _ in range(4)]
    launches = {}
    for kname, run in kernels.items():
        for i, out in enumerate(outs):
            launches[f"{kname}: preallocated #{i} at {out.data_ptr():#x}"] = lambda run=run, out=out: run(out)
        launches[f"{kname}: allocated each call"] = lambda run=run: run(torch.empty_like(want))
    launches["deepvisor"] = lambda: dv(x, w, b)
    launches["torch.compile"] = lambda: tc(x, w, b)
    for launch in launches.values():
        launch()
    torch.cuda.synchronize()
    for kname, run in kernels.items():
        outs[0].fill_(float("nan"))
        run(outs[0])
        torch.testing.assert_close(outs[0], want, rtol=1e-4, atol=1e-4, msg=kname)

    times = {name: [] for name in launches}
    names = list(launches)
    for r in range(opts.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name].append(kernel_lab.median_us(launches[name]))
    print("\n| output | median over rounds, us | rounds |")
    print("| --- | --- | --- |")
    for name in names:
        print(f"| {name} | {statistics.median(times[name]):.1f} | {', '.join(f'{t:.1f}' for t in times[name])} |")


if __name__ == "__main__":
    main()
