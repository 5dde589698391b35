"""Time to a ready plan: a model's first two calls, cold and warm, deepvisor beside torch.compile.

    python3 bench/cold_start.py [--device cuda|cpu] [--size full|small] [--models bert_base resnet50]
        [--batch 1 16] [--modes compile reduce-overhead deepvisor] [--autocast none|bf16] [--out results.json]

For each model, batch and mode, two processes, one after the other:
- cold: empty disk caches (DEEPVISOR_CACHE_DIR and TORCHINDUCTOR_CACHE_DIR
  in a fresh folder): deepvisor captures, compiles every kernel with NVRTC
  (the host compiler on CPU tensors) and times its autotuning candidates;
  torch.compile traces with Dynamo and compiles with Inductor;
- warm: a new process on the caches that the cold one filled, as a user's
  second run of the same program: deepvisor loads its kernels and autotuning
  choices from disk; torch.compile still traces, then hits Inductor's caches.
What is timed is the wall clock of the first two calls, synchronized (the
first replay or CUDA graph recording included): how long a user waits before
the model runs at speed. Python's start, the imports and building the model
are not counted. deepvisor's rows also give its own split: seconds in the
capture, in building the plan (kernels that NVRTC compiles at their first
run not included) and in timing autotuning candidates; and how many kernels
it compiled or loaded from disk. Each process
compares its result with eager's (max rel err).

Issue 10's target: BERT-base and ResNet-50 ready in at most 3 s cold and
0.3 s warm on the GPU machine. Inference under torch.no_grad(), float32 with
TF32 off, or --autocast bf16 (each call in its own autocast region). Run it
alone on the machine: compiles use every core.
"""

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
MODELS = ["bert_base", "resnet50"]
MODES = ["compile", "reduce-overhead", "deepvisor"]
DEEPVISOR_STATS = ("capture_s", "compile_s", "kernels_ready_s", "autotune_s", "nvrtc_compiles", "host_compiles", "disk_cache_hits",
                   "host_cache_hits", "kernels", "kernels_autotuned", "autotune_compiles", "autotune_cache_hits", "graphs",
                   "eager_calls")


def model_bench():
    """bench/models.py as a module (its name is taken by the package bench/models/)."""
    spec = importlib.util.spec_from_file_location("model_bench", os.path.join(HERE, "models.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def measure(a):
    """The first two calls of `a.mode` on a fresh model in this process: a dict of figures."""
    mb = model_bench()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model, args = getattr(mb.builders, a.model)(a.size, a.batch, a.device)
    region = ((lambda: torch.autocast(a.device, dtype=torch.bfloat16)) if a.autocast == "bf16"
              else contextlib.nullcontext)
    with torch.no_grad():
        with region():
            want = mb.output_tensor(model(*args)).detach().float().clone()
        mb.sync(a.device)
        fn = mb.make_fn(a.mode, model, region)
        t0 = time.perf_counter()
        for _ in range(2):
            out = fn(*args)
        mb.sync(a.device)
        r = {"first_two_calls_s": time.perf_counter() - t0}
    r["max_rel_err"] = mb.rel_err(mb.output_tensor(out).detach().float(), want)
    if a.mode == "deepvisor":
        s = mb.deepvisor.stats(fn.compiled)
        r["stats"] = {k: s[k] for k in DEEPVISOR_STATS if k in s}
    return r


def run_process(a, model, batch, mode, caches):
    """One measurement in a new process whose disk caches are under `caches`: its figures, or why it has none."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--device", a.device, "--size", a.size,
           "--models", model, "--batch", str(batch), "--modes", mode, "--autocast", a.autocast]
    env = dict(os.environ, DEEPVISOR_CACHE_DIR=os.path.join(caches, "deepvisor"),
               TORCHINDUCTOR_CACHE_DIR=os.path.join(caches, "inductor"))
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {done.returncode}: {tail}"[:300]}
    return json.loads(lines[-1])


def run_all(a):
    rows = []
    for model in a.models:
        for batch in a.batch:
            row = {"model": model, "batch": batch, "precision": a.autocast, "modes": {}}
            for mode in a.modes:
                caches = tempfile.mkdtemp(prefix="cold-start-")
                try:
                    cold = run_process(a, model, batch, mode, caches)
                    warm = run_process(a, model, batch, mode, caches)
                finally:
                    shutil.rmtree(caches, ignore_errors=True)
                row["modes"][mode] = {"cold": cold, "warm": warm}
                print(f"{model} batch {batch} {mode}: cold {seconds(cold)} s, warm {seconds(warm)} s",
                      file=sys.stderr, flush=True)
            rows.append(row)
    return rows


def seconds(r):
    return "error" if "error" in r else f"{r['first_two_calls_s']:.2f}"


def split(r):
    """deepvisor's own split of a measurement: seconds capturing, building the plan, making its kernels
    ready at their first run (compiles, loads, autotuning; of which timing candidates), and what it
    compiled or loaded from disk (NVRTC's kernels, or on CPU tensors the host compiler's libraries). The
    rest of the first two calls is their runs (libraries' first calls, a CUDA graph's recording)."""
    s = r.get("stats")
    if not s:
        return "-"
    compiled = s.get("nvrtc_compiles", 0) + s.get("host_compiles", 0)
    loaded = s.get("disk_cache_hits", 0) + s.get("host_cache_hits", 0)
    return (f"{s['capture_s']:.2f} / {s['compile_s']:.2f} / {s['kernels_ready_s']:.2f} ({s['autotune_s']:.2f}); "
            f"{compiled} compiled, "
            f"{loaded} from disk, {s['kernels_autotuned']} autotuned "
            f"({s['autotune_cache_hits']} choices from disk)")


def table(rows, a):
    device = torch.cuda.get_device_name() if a.device == "cuda" else "cpu"
    print(f"\n{device}, {a.size} size, {'bf16 autocast' if a.autocast == 'bf16' else 'fp32'}, torch "
          f"{torch.__version__}: seconds of the first two calls, cold (empty disk caches) / warm (a new process "
          "on the filled caches)\n")
    print("| model | batch | " + " | ".join(a.modes) + " | deepvisor cold: capture / plan / kernels ready "
          "(autotune timing) s | deepvisor warm: idem | max rel err (dv cold / warm) |")
    print("| --- | --- | " + " | ".join("---" for _ in a.modes) + " | --- | --- | --- |")
    for row in rows:
        m = row["modes"]
        cells = [f"{seconds(m[mode]['cold'])} / {seconds(m[mode]['warm'])}" for mode in a.modes]
        dv = m.get("deepvisor", {"cold": {}, "warm": {}})
        errs = " / ".join(f"{dv[k]['max_rel_err']:.1e}" if "max_rel_err" in dv[k] else "-" for k in ("cold", "warm"))
        print(f"| {row['model']} | {row['batch']} | " + " | ".join(cells) +
              f" | {split(dv['cold'])} | {split(dv['warm'])} | {errs} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    ap.add_argument("--size", default="full", choices=["full", "small"])
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--modes", nargs="+", default=MODES, choices=MODES)
    ap.add_argument("--autocast", default="none", choices=["none", "bf16"])
    ap.add_argument("--out", default=None, help="write every figure here as JSON")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # one measurement, JSON on stdout
    a = ap.parse_args()
    if a.child:
        a.model, a.batch, a.mode = a.models[0], a.batch[0], a.modes[0]
        print(json.dumps(measure(a)))
        return
    rows = run_all(a)
    table(rows, a)
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"device": a.device, "size": a.size, "precision": a.autocast, "torch": torch.__version__,
                       "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
