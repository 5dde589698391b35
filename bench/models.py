"""Whole models: eager, torch.compile, torch.compile(mode="reduce-overhead") and deepvisor.

    python3 bench/models.py [--device cuda|cpu] [--size full|small] [--batch 1 16]
        [--models bert_base gpt2 resnet50 resnet101 densenet121 deberta_base monodepth quantized_resnet18
                  tridentnet align]
        [--modes eager compile reduce-overhead deepvisor] [--iters N] [--warmup N]
        [--autocast none bf16] [--jobs N] [--out results.json] [--profile]

For each model and batch size, in one process, with the same weights and inputs
(random, no downloads; bench/models/ builds them), each mode in turn:
- first call: wall clock of the first two calls, synchronized (capture or
  Dynamo tracing, compiling, the first replay or CUDA graph recording);
- latency: after --warmup calls, the median over --iters calls of one call's
  time, each call synchronized on its own (CUDA events around it on CUDA,
  perf_counter on CPU), so host overhead counts as it does at batch 1. Where
  the median is more than 5% above the fastest call, something disturbed the
  window: the --iters calls are timed again (twice at most) and the window
  with the lowest median is kept, for every mode alike (timing_retakes in
  the JSON);
- max rel err: max |out - eager| / max |eager| over the compared output
  (last_hidden_state for transformers, the logits for the vision models, the
  full-resolution disparity for monodepth, the image embedding for align),
  from the last timed call; and beside it each mode's error against the
  model computed in float64 (same weights and inputs): where eager's own error
  is of that order (quantization steps flipped by a last bit), a difference
  from eager says nothing about the compiler;
- peak memory (CUDA): torch.cuda.max_memory_allocated() over the timed calls
  after a reset of the peak, weights included, plus the memory that the
  mode's CUDA graph pools hold beyond their allocated tensors (the
  intermediates of a graph are freed into its private pool at capture, so
  the allocator counts them as free though the pool keeps them for the
  graph's replays), and its ratio to eager's. peak_mem_allocated_mb is the
  first term alone;
- deepvisor's stats: graphs, extern and fallback ops, kernels, eager calls and
  their reasons, NVRTC compiles, CUDA graphs where the stats have them.
Inference under torch.no_grad(), float32 with TF32 off (or --autocast bf16:
each call in its own autocast region, as a user writes it, so no mode reads
casts that another mode left in autocast's weight cache).
With --profile (CUDA), each mode's GPU kernel time per call, kernels per call
and costliest kernels from torch.profiler. Dynamo and deepvisor are reset
after each mode. A mode that raises is recorded
as its error (traceback on stderr) and the run goes on. At the end: a markdown
table, the geometric mean of deepvisor's speed against the better torch.compile
mode, and with --out every figure as JSON.

With several --autocast values, every row runs in each precision (none:
float32). With --jobs N, the rows run as N processes at once, each row in its
own process with empty Inductor and deepvisor disk caches: the compiles
overlap, while the timed calls of every mode take exclusive turns through a
lock, on two cores that no job compiles on, and deepvisor's autotuner takes
the same lock while it times its candidates (DEEPVISOR_AUTOTUNE_LOCK). While
a job times its calls (warm-up included), the other jobs are paused (SIGSTOP,
then SIGCONT), so that their compiles and first calls put no work on the GPU
meanwhile, and no new job starts. A pause can stretch one of Inductor's autotuning measurements;
Inductor keeps the fastest of many separately timed launches, so one
stretched launch does not change its choice. The whole table then fits in one
run; the first-call columns are measured while other rows compile beside
them (deepvisor's includes any wait for the lock before its autotuning).

On a CPU machine that other work keeps busy, run with OMP_NUM_THREADS=1: ATen's
thread barriers wait on descheduled threads (a 2-core machine under a build
measured 50-250x slower with 2 threads).
"""

import argparse
import contextlib
import copy
import fcntl
import gc
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deepvisor  # noqa: E402
import models as builders  # noqa: E402  (the package bench/models/, not this file)

MODELS = ["bert_base", "gpt2", "resnet50", "resnet101", "densenet121", "deberta_base", "monodepth",
          "quantized_resnet18", "tridentnet", "align"]
MODES = ["eager", "compile", "reduce-overhead", "deepvisor"]
PRECISIONS = ["none", "bf16"]


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def output_tensor(out):
    """The tensor compared against eager: last_hidden_state, or the first tensor."""
    if hasattr(out, "last_hidden_state"):
        return out.last_hidden_state
    while isinstance(out, (tuple, list)):
        out = out[0]
    return out


def compiled(mode, model):
    if mode == "eager":
        return model
    if mode == "compile":
        return torch.compile(model)
    if mode == "reduce-overhead":
        return torch.compile(model, mode="reduce-overhead")
    if mode == "deepvisor":
        return deepvisor.compile(model)
    raise ValueError(f"unknown mode {mode}")


def make_fn(mode, model, region):
    """The mode's callable; each call runs inside `region()` (autocast or nothing)."""
    fn = compiled(mode, model)

    def call(*args):
        with region():
            return fn(*args)
    call.compiled = fn
    return call


def time_calls(fn, args, iters, device):
    """Per-call times in ms, each call synchronized; and the last call's output."""
    times = []
    for _ in range(iters):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = fn(*args)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            out = fn(*args)
            times.append((time.perf_counter() - t0) * 1e3)
    return times, out


def steady_times(take, retakes=2, spread=1.05):
    """take() -> (times, output), retaken while its median is more than `spread` times its minimum, at
    most `retakes` times: a window that something outside the mode disturbed (a collection, a clock
    change; one H200 run's GPT-2 bs16 had a median 13% above its minimum while every other mode of the
    row was within 1%). The take with the lowest median is kept, by the same rule for every mode.
    Returns (times, output, retakes made)."""
    best, out = take()
    made = 0
    while made < retakes and statistics.median(best) > spread * min(best):
        times, out = take()
        made += 1
        if statistics.median(times) < statistics.median(best):
            best = times
    return best, out, made


def gpu_profile(fn, args, calls=5, top=12):
    """GPU kernel time of one call (sum of its kernels' durations, from the
    profiler over `calls` calls), the number of kernels a call launches, and
    the kernels that take the most time: where the GPU time goes, beside the
    latency (which also counts the gaps between kernels)."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn(*args)
        torch.cuda.synchronize()
    kernels = {}
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            n, us = kernels.get(e.name, (0, 0.0))
            kernels[e.name] = (n + 1, us + e.device_time)
    total_us = sum(us for _, us in kernels.values()) / calls
    launches = sum(n for n, _ in kernels.values()) / calls
    ranked = sorted(kernels.items(), key=lambda kv: -kv[1][1])[:top]
    return {"gpu_ms": total_us / 1e3, "kernels_per_call": launches,
            "top": [[name[:90], n / calls, us / calls] for name, (n, us) in ranked]}


def float64_reference(model, args):
    """The compared output of the model computed in float64 (weights and
    floating inputs converted, autocast off), or None where the model does not
    run in float64."""
    try:
        m64 = copy.deepcopy(model).double()
        args64 = [x.double() if isinstance(x, torch.Tensor) and x.is_floating_point() else x for x in args]
        with torch.autocast(args64[0].device.type, enabled=False):
            return output_tensor(m64(*args64)).detach().double().clone()
    except Exception as e:  # noqa: BLE001  (a model with float32-only code: no such column)
        print(f"no float64 reference: {type(e).__name__}: {e}"[:200], file=sys.stderr)
        return None


def rel_err(got, ref):
    return ((got.double() - ref.double()).abs().max() / ref.double().abs().max().clamp_min(1e-30)).item()


def private_pools():
    """Memory of the CUDA graph pools (private pools) by pool id: (reserved, allocated) bytes."""
    pools = {}
    for seg in torch.cuda.memory_snapshot():
        pool = tuple(seg.get("segment_pool_id") or (0, 0))
        if pool != (0, 0):
            reserved, allocated = pools.get(pool, (0, 0))
            pools[pool] = (reserved + seg["total_size"], allocated + seg["allocated_size"])
    return pools


def pool_segments(pools_before):
    """The segments of the graph pools made since `pools_before`: (reserved MB, allocated MB, sizes in MB of
    the blocks allocated in it), largest first: what a pool holds beyond its plan's own storage."""
    segs = []
    for seg in torch.cuda.memory_snapshot():
        pool = tuple(seg.get("segment_pool_id") or (0, 0))
        if pool != (0, 0) and pool not in pools_before:
            blocks = [round(b["size"] / 2**20, 2) for b in seg["blocks"] if b["state"] == "active_allocated"]
            segs.append((round(seg["total_size"] / 2**20, 2), round(seg["allocated_size"] / 2**20, 2), blocks))
    return sorted(segs, reverse=True)


@contextlib.contextmanager
def gpu_turn(a):
    """In a job of a parallel run (--turn-lock): hold the run's lock, so that no other job times calls or
    autotunes kernels on the GPU meanwhile. Alone: nothing to wait for."""
    if not a.turn_lock:
        yield
        return
    with held(a.turn_lock):
        yield


@contextlib.contextmanager
def held(lock_path):
    """The run's turn lock, held: a POSIX lock, the one deepvisor's autotuner takes (DEEPVISOR_AUTOTUNE_LOCK)."""
    with open(lock_path, "a") as f:
        fcntl.lockf(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(f, fcntl.LOCK_UN)


def sibling_jobs():
    """The other jobs of this parallel run: the processes that the run's parent started, save this one.
    Found through /proc; without it (not Linux), none: the timed calls then run beside the others."""
    parent, me, pids = os.getppid(), os.getpid(), []
    if not os.path.isdir("/proc"):
        return pids
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2:].split()[1]) == parent:  # the fields after "(comm)": state, ppid
            pids.append(int(entry))
    return pids


def signal_all(pids, sig):
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


@contextlib.contextmanager
def quiet_gpu(a):
    """In a job of a parallel run, while it holds the turn: the other jobs paused, and the work they had
    queued on the GPU given time to drain, so that the timed calls have the card to themselves. The parent
    resumes every job when one exits, in case a job dies while it holds the others paused."""
    if not a.turn_lock:
        yield
        return
    paused = sibling_jobs()
    signal_all(paused, signal.SIGSTOP)
    try:
        time.sleep(0.2)  # a paused job's queued kernels (a graph replay, an autotuning batch) finish meanwhile
        yield
    finally:
        signal_all(paused, signal.SIGCONT)


@contextlib.contextmanager
def timing_cores(a):
    """In a job of a parallel run: the calling thread on the cores that no job compiles on (--timing-cpus), so
    that host-bound modes are timed on an idle core."""
    if not a.timing_cpus:
        yield
        return
    mask = os.sched_getaffinity(0)
    os.sched_setaffinity(0, a.timing_cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, mask)


def run_mode(mode, model, args, ref, a):
    fn = make_fn(mode, model, a.region)
    r = {}
    pools_before = set(private_pools()) if a.device == "cuda" else set()
    if a.device == "cuda":  # a parallel run's jobs share the card: what was free when this mode compiled
        r["gpu_free_mb_at_first_call"] = torch.cuda.mem_get_info()[0] / 2**20
    t0 = time.perf_counter()
    for _ in range(2):
        fn(*args)
    sync(a.device)
    r["first_call_s"] = time.perf_counter() - t0
    with contextlib.ExitStack() as turn:
        turn.enter_context(gpu_turn(a))
        turn.enter_context(timing_cores(a))
        turn.enter_context(quiet_gpu(a))
        for _ in range(a.warmup):
            fn(*args)
        sync(a.device)
        if a.device == "cuda":
            gc.collect()
            torch.cuda.reset_peak_memory_stats()
            r["mem_before_mb"] = torch.cuda.memory_allocated() / 2**20
        times, out, r["timing_retakes"] = steady_times(lambda: time_calls(fn, args, a.iters, a.device))
        r["ms"] = statistics.median(times)
        r["ms_min"] = min(times)
        if a.profile and a.device == "cuda":
            r["profile"] = gpu_profile(fn, args, top=a.profile_top)
    if a.device == "cuda":
        r["peak_mem_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
        pool_free = sum(reserved - allocated for pool, (reserved, allocated) in private_pools().items()
                        if pool not in pools_before)
        r["graph_pool_free_mb"] = pool_free / 2**20
        r["peak_mem_mb"] = r["peak_mem_allocated_mb"] + r["graph_pool_free_mb"]
        r["graph_pool_segments"] = pool_segments(pools_before)
    got = output_tensor(out).detach().float()
    r["max_rel_err"] = rel_err(got, ref)
    if a.ref64 is not None:
        r["rel_err_f64"] = rel_err(got, a.ref64)
    if mode == "deepvisor":
        s = deepvisor.stats(fn.compiled)
        r["stats"] = {k: s[k] for k in ("graphs", "versions", "kernels", "eager_calls", "eager_reasons",
                                        "extern_ops", "fallback_ops", "nvrtc_compiles", "cuda_graphs", "constant_kernels",
                                        "constant_kernels_not_kept", "library_results_in_block",
                                        "library_results_beside_block", "graph_pool_room_bytes",
                                        "graph_block_window_bytes", "block_bytes",
                                        "graph_beside_block_bytes", "graph_outside_pool_bytes") if k in s}
    return r


def reset_all(device):
    torch._dynamo.reset()
    deepvisor.reset()
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def run_model(name, batch, a):
    model, args = getattr(builders, name)(a.size, batch, a.device)
    with a.ctx():
        with a.region():
            ref = output_tensor(model(*args)).detach().float().clone()
        a.ref64 = float64_reference(model, args)
        sync(a.device)
        row = {"model": name, "batch": batch, "precision": a.precision, "modes": {}}
        for mode in a.modes:
            print(f"{name} batch {batch}: {mode}", file=sys.stderr, flush=True)
            try:
                row["modes"][mode] = run_mode(mode, model, args, ref, a)
            except Exception as e:  # noqa: BLE001  (one mode's failure must not end the run)
                traceback.print_exc()
                row["modes"][mode] = {"error": f"{type(e).__name__}: {e}".splitlines()[0][:300]}
            reset_all(a.device)
    eager = row["modes"].get("eager", {})
    for r in row["modes"].values():
        if "peak_mem_mb" in r and "peak_mem_mb" in eager:
            r["peak_mem_vs_eager"] = r["peak_mem_mb"] / eager["peak_mem_mb"]
    torch_ms = [row["modes"][m]["ms"] for m in ("compile", "reduce-overhead") if "ms" in row["modes"].get(m, {})]
    dv = row["modes"].get("deepvisor", {})
    if torch_ms and "ms" in dv:
        row["deepvisor_speedup_vs_best_compile"] = min(torch_ms) / dv["ms"]
    return row


def cell(r, key, fmt):
    if r is None:
        return "-"
    if "error" in r:
        return "error"
    return fmt.format(r[key]) if r.get(key) is not None else "-"


def table(rows, a, precision, meta=None):
    """The markdown table of `rows`; `meta`: a saved run's (its card and versions), else this process's."""
    meta = meta or {"device": torch.cuda.get_device_name() if a.device == "cuda" else "cpu",
                    "torch": torch.__version__, "python": sys.version.split()[0]}
    overlap = (f"; {a.jobs} rows at a time, first calls beside other rows' compiles, timed calls with the other "
               "rows paused" if a.jobs > 1 else "")
    print(f"\n{meta['device']}, {a.size} size, {'bf16 autocast' if precision == 'bf16' else 'fp32'}, "
          f"torch {meta.get('torch', '?')}, Python {meta.get('python', '?')}, median of {a.iters} calls{overlap}\n")
    print("| model | batch | eager ms | compile ms | reduce-overhead ms | deepvisor ms | dv vs best compile | "
          "graphs | extern / fallback ops | max rel err | rel err vs f64 (eager / dv) | peak mem vs eager | "
          "first call s (compile / reduce-overhead / dv) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        if "skipped" in row:
            print(f"| {row['model']} | {row['batch']} | skipped: {row['skipped']} |" + " |" * 10)
            continue
        m = row["modes"]
        dv = m.get("deepvisor")
        s = (dv or {}).get("stats")
        graphs = ops = "-"
        if s:
            graphs = str(s["graphs"]) + (f" ({s['eager_calls']} eager)" if s["eager_calls"] else "")
            ops = f"{sum(s['extern_ops'].values())} / {sum(s['fallback_ops'].values())}"
        ratio = row.get("deepvisor_speedup_vs_best_compile")
        print(f"| {row['model']} | {row['batch']} | {cell(m.get('eager'), 'ms', '{:.3f}')} | "
              f"{cell(m.get('compile'), 'ms', '{:.3f}')} | {cell(m.get('reduce-overhead'), 'ms', '{:.3f}')} | "
              f"{cell(dv, 'ms', '{:.3f}')} | {'-' if ratio is None else f'{ratio:.2f}x'} | {graphs} | {ops} | "
              f"{cell(dv, 'max_rel_err', '{:.1e}')} | "
              f"{cell(m.get('eager'), 'rel_err_f64', '{:.1e}')} / {cell(dv, 'rel_err_f64', '{:.1e}')} | "
              f"{cell(dv, 'peak_mem_vs_eager', '{:.2f}')} | "
              f"{cell(m.get('compile'), 'first_call_s', '{:.1f}')} / "
              f"{cell(m.get('reduce-overhead'), 'first_call_s', '{:.1f}')} / {cell(dv, 'first_call_s', '{:.1f}')} |")
    ratios = [r["deepvisor_speedup_vs_best_compile"] for r in rows if "deepvisor_speedup_vs_best_compile" in r]
    if ratios:
        geo = math.exp(sum(map(math.log, ratios)) / len(ratios))
        print(f"\nGeometric mean of best torch.compile ms / deepvisor ms over {len(ratios)} rows: {geo:.2f}x "
              "(>1: deepvisor faster)")
    for row in rows:
        for mode, r in row.get("modes", {}).items():
            if "profile" in r:
                p = r["profile"]
                print(f"\n{row['model']} batch {row['batch']}, {mode}: GPU kernel time {p['gpu_ms']:.3f} ms of "
                      f"{r['ms']:.3f} ms, {p['kernels_per_call']:.0f} kernels a call")
                for name, n, us in p["top"]:
                    print(f"    {us:9.1f} us  {n:5.1f}x  {name}")
    for row in rows:
        for mode, r in row.get("modes", {}).items():
            if "error" in r:
                print(f"{row['model']} batch {row['batch']}, {mode}: {r['error']}")
        s = row.get("modes", {}).get("deepvisor", {}).get("stats")
        if s and (s["eager_reasons"] or s["fallback_ops"]):
            print(f"{row['model']} batch {row['batch']}, deepvisor: eager reasons {s['eager_reasons']}, "
                  f"fallback ops {s['fallback_ops']}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    ap.add_argument("--size", default="full", choices=["full", "small"])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    ap.add_argument("--modes", nargs="+", default=MODES, choices=MODES)
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--autocast", nargs="+", choices=PRECISIONS, default=["none"],
                    help="none: float32 (TF32 off); bf16: each call in a bf16 autocast region; several: each row in each")
    ap.add_argument("--jobs", type=int, default=1, help="rows run as this many processes at once (see above)")
    ap.add_argument("--out", default=None, help="write every figure here as JSON")
    ap.add_argument("--profile", action="store_true",
                    help="CUDA: also profile 5 calls of each mode (GPU kernel time, kernels, the costliest)")
    ap.add_argument("--profile-top", type=int, default=12, help="kernels listed by --profile")
    ap.add_argument("--table", nargs="+", metavar="JSON",
                    help="print one table of the rows of these --out files (runs cut in parts) and exit")
    ap.add_argument("--turn-lock", help=argparse.SUPPRESS)  # set by --jobs for the rows it runs
    ap.add_argument("--timing-cpus", type=lambda v: {int(c) for c in v.split(",")}, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.table:
        print_saved(a.table, a)
        return
    a.modes = ["eager"] + [m for m in a.modes if m != "eager"]  # eager is the reference for errors and memory
    rows = run_jobs(a) if a.jobs > 1 and not a.turn_lock else run_rows(a)  # a job of a run is one row
    for precision in a.autocast:
        table([r for r in rows if r["precision"] == precision], a, precision)


def run_rows(a):
    """Every row in this process, in turn."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    a.ctx = torch.no_grad
    rows = []
    for precision in a.autocast:
        a.precision = precision
        a.region = lambda: (torch.autocast(a.device, dtype=torch.bfloat16) if a.precision == "bf16"
                            else contextlib.nullcontext())
        for name in a.models:
            for batch in a.batch:
                try:
                    rows.append(run_model(name, batch, a))
                except ImportError as e:
                    print(f"{name}: skipped ({e})", file=sys.stderr)
                    rows.append(skipped_row(name, batch, precision, str(e)))
                except Exception as e:  # noqa: BLE001  (building or the eager reference failed)
                    traceback.print_exc()
                    rows.append(skipped_row(name, batch, precision, f"{type(e).__name__}: {e}"))
                reset_all(a.device)
                save(rows, a)  # after every row: a run cut short still leaves what it measured
    return rows


def split_cores():
    """(cores kept for timed calls, cores the jobs compile on): two cores kept where there are enough."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 4:
        return set(), set(cores)
    return set(cores[:2]), set(cores[2:])


def row_command(a, precision, name, batch, out, lock, timing):
    cmd = [sys.executable, os.path.abspath(__file__), "--device", a.device, "--size", a.size,
           "--batch", str(batch), "--models", name, "--modes", *a.modes, "--iters", str(a.iters),
           "--warmup", str(a.warmup), "--autocast", precision, "--out", out, "--turn-lock", lock,
           "--jobs", str(a.jobs)]  # for its table's header; with --turn-lock it runs its row alone
    if timing:
        cmd += ["--timing-cpus", ",".join(map(str, sorted(timing)))]
    if a.profile:
        cmd += ["--profile", "--profile-top", str(a.profile_top)]
    return cmd


def run_jobs(a):
    """Each row in its own process, a.jobs at a time, with empty disk caches of its own; the rows' timed calls
    take turns through a lock file. Returns the rows, in the order of the arguments."""
    work = tempfile.mkdtemp(prefix="models-jobs-")
    timing, compiling = split_cores()
    lock = os.path.join(work, "gpu.lock")
    # Model-major, in the order given: models that compile longest go first when listed first.
    tasks = [(p, m, b) for m in a.models for p in a.autocast for b in a.batch]
    pending, running, results = list(enumerate(tasks)), {}, {}
    started = time.perf_counter()
    while pending or running:
        while pending and len(running) < a.jobs:
            i, (precision, name, batch) = pending.pop(0)
            job = os.path.join(work, f"{i:03d}-{precision}-{name}-{batch}")
            os.makedirs(job)
            # Inductor's compile workers take every compiling core (its default): the last rows, alone, use them all.
            env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=os.path.join(job, "inductor"),
                       DEEPVISOR_CACHE_DIR=os.path.join(job, "deepvisor"), DEEPVISOR_AUTOTUNE_LOCK=lock)
            # Started while no job holds the turn: a job started during another's timed calls would not be
            # among the jobs that it paused, and its first calls would share the card with them.
            with open(os.path.join(job, "log"), "w") as log, held(lock):
                proc = subprocess.Popen(row_command(a, precision, name, batch, os.path.join(job, "row.json"), lock,
                                                    timing), stdout=log, stderr=subprocess.STDOUT, env=env,
                                        preexec_fn=lambda: os.sched_setaffinity(0, compiling))
            running[proc] = (i, precision, name, batch, job)
        finished = wait_any(running)
        i, precision, name, batch, job = running.pop(finished)
        signal_all([proc.pid for proc in running], signal.SIGCONT)  # it may have died with the others paused
        results[i] = job_rows(finished.returncode, job, precision, name, batch)
        for cache in ("inductor", "deepvisor"):  # a run of 40 rows would otherwise keep gigabytes
            shutil.rmtree(os.path.join(job, cache), ignore_errors=True)
        print(f"[{time.perf_counter() - started:6.0f} s] {precision} {name} batch {batch}: rc={finished.returncode}"
              f" ({len(results)} of {len(tasks)})", file=sys.stderr, flush=True)
    rows = [row for i in sorted(results) for row in results[i]]
    save(rows, a)
    print(f"rows' logs under {work}", file=sys.stderr)
    return rows


def wait_any(running):
    while True:
        for proc in running:
            if proc.poll() is not None:
                return proc
        time.sleep(0.2)


def job_rows(returncode, job, precision, name, batch):
    """The rows that a job saved, or one row that says why it has none (the end of its log)."""
    try:
        with open(os.path.join(job, "row.json")) as f:
            return json.load(f)["rows"]
    except (OSError, ValueError):
        with open(os.path.join(job, "log")) as f:
            tail = [line.strip() for line in f.read().splitlines() if line.strip()][-1:]
        return [skipped_row(name, batch, precision, f"job exited {returncode}: {' '.join(tail)}")]


def skipped_row(name, batch, precision, why):
    return {"model": name, "batch": batch, "precision": precision, "skipped": why[:300]}


def print_saved(paths, a):
    rows, meta = [], None
    for path in paths:
        with open(path) as f:
            saved = json.load(f)
        meta = meta or saved["meta"]
        rows += saved["rows"]
    a.size, a.iters, a.jobs = meta["size"], meta["iters"], meta.get("jobs", 1)
    for row in rows:  # files of runs before --autocast took several values: one precision, in the meta
        row.setdefault("precision", meta.get("autocast") or "none")
    for precision in PRECISIONS:
        of_precision = [r for r in rows if r["precision"] == precision]
        if of_precision:
            table(of_precision, a, precision, meta=meta)


def save(rows, a):
    if not a.out:
        return
    meta = {"device": torch.cuda.get_device_name() if a.device == "cuda" else "cpu", "size": a.size,
            "autocast": a.autocast, "jobs": a.jobs, "iters": a.iters, "warmup": a.warmup,
            "torch": torch.__version__, "python": sys.version.split()[0]}
    with open(a.out, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
