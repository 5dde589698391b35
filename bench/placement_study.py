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

    source = SOURCE.read_text()
    kernel = kernel_lab.compile_kernel(source, "k0")
    # Outputs at several addresses: a pool allocated up front, in order.
    outs = [torch.empty_like(want) for _ in range(4)]
    launches = {}
    for i, out in enumerate(outs):
        launches[f"preallocated #{i} at {out.data_ptr():#x}"] = (
            lambda out=out: kernel((ROWS, 1, 1), (512, 1, 1), [x, w, b, out]))
    # Outputs at chosen offsets inside one larger buffer: the address alone varies.
    pool = torch.empty(want.numel() + (8 << 20) // 4, device="cuda")
    for offset in (0, 4 << 10, 64 << 10, 1 << 20, (2 << 20) + (4 << 10), 4 << 20):
        view = pool[offset // 4: offset // 4 + want.numel()].view_as(want)
        launches[f"offset {offset:#x} in one buffer at {pool.data_ptr():#x}"] = (
            lambda out=view: kernel((ROWS, 1, 1), (512, 1, 1), [x, w, b, out]))
    launches["allocated each call"] = lambda: kernel((ROWS, 1, 1), (512, 1, 1), [x, w, b, torch.empty_like(want)])
    launches["deepvisor"] = lambda: dv(x, w, b)
    launches["torch.compile"] = lambda: tc(x, w, b)
    for launch in launches.values():
        launch()
    torch.cuda.synchronize()
    torch.testing.assert_close(outs[0], want, rtol=1e-4, atol=1e-4)

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
