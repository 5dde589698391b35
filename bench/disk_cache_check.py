"""A second process running the same program compiles nothing: all from disk.

    python3 bench/disk_cache_check.py [--device cpu|cuda]

Runs one program in two fresh processes sharing a fresh DEEPVISOR_CACHE_DIR and
prints deepvisor.stats of each. On CPU the kernels go through NVRTC for sm_90
(DEEPVISOR_VALIDATE_CUDA=1) so the disk cache is exercised without a GPU.
Exits 1 unless the first process compiled and the second loaded every kernel.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, sys, torch, deepvisor
def f(x, w, b):
    y = torch.nn.functional.gelu(x * 1.5 + 0.3) * torch.sigmoid(x)
    return torch.softmax(y, -1), torch.nn.functional.layer_norm(y, y.shape[-1:], w, b), (y * 2).sum(0)
dev = sys.argv[1]
g = deepvisor.compile(f)
x, w, b = torch.randn(64, 300, device=dev), torch.randn(300, device=dev), torch.randn(300, device=dev)
with torch.no_grad():
    g(x, w, b)
    out = g(x, w, b)
ref = f(x, w, b)
ok = all(torch.allclose(o, r, rtol=1e-4, atol=1e-5) for o, r in zip(out, ref))
s = deepvisor.stats(g)
print(json.dumps({"ok": ok, "kernels": s["kernels"], "nvrtc_compiles": s["nvrtc_compiles"],
                  "disk_cache_hits": s["disk_cache_hits"], "kernels_autotuned": s["kernels_autotuned"],
                  "autotune_compiles": s["autotune_compiles"], "autotune_cache_hits": s["autotune_cache_hits"],
                  "autotune_s": round(s["autotune_s"], 3)}))
"""


def run_child(device, cache_dir):
    env = dict(os.environ, DEEPVISOR_CACHE_DIR=cache_dir, DEEPVISOR_STRICT="1")
    if device == "cpu":
        env["DEEPVISOR_VALIDATE_CUDA"] = "1"
    out = subprocess.run([sys.executable, "-c", CHILD, device], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"child process failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    import torch
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache_dir:
        first = run_child(args.device, cache_dir)
        second = run_child(args.device, cache_dir)
    print(f"first process:  {first}")
    print(f"second process: {second}")
    # Autotuning (on a GPU) compiles candidates too, so the first process may
    # compile more kernels than the plan has; the second compiles and times nothing.
    good = (first["ok"] and second["ok"] and first["nvrtc_compiles"] >= first["kernels"] > 0
            and (first["autotune_compiles"] > 0 or first["nvrtc_compiles"] == first["kernels"])
            and second["nvrtc_compiles"] == 0 and second["disk_cache_hits"] == second["kernels"]
            and second["kernels_autotuned"] == 0)
    print("second process compiled nothing and timed nothing (all kernels and choices from the disk cache)"
          if good else "FAILED")
    sys.exit(0 if good else 1)


if __name__ == "__main__":
    main()
