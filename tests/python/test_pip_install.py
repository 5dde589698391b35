"""`pip install --no-build-isolation .` builds a working package (pyproject.toml).

One test, run once per session: a fresh virtual environment that sees this
Python's packages (torch, meson, meson-python, ninja: --system-site-packages),
a clean copy of the working tree (tracked and untracked-but-not-ignored files,
so no build directory and no linked _C of the checkout comes along), pip
builds and installs it there, and a script run from outside the tree imports
deepvisor from the venv and compares a compiled function with eager on CPU.

It needs no network: pip runs with --no-index and --no-deps (torch is
already there), and builds without isolation. Only if meson-python (or meson,
ninja) is missing does it try to pip install them into the venv; where that
fails too (no network) it skips with the reason. The C++ build is the cost:
about two minutes on 2 cores. DEEPVISOR_SKIP_PIP_TEST=1 skips it.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE = os.path.join(ROOT, "python", "deepvisor")

pytestmark = pytest.mark.pip_install


def _run(cmd, timeout, **kwargs):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout, **kwargs)


def _tail(text, n=60):
    return "\n".join(text.splitlines()[-n:])


def _copy_tree(dst):
    """The working tree as git sees it: tracked and untracked files that are
    not ignored (so build/, build-*/ and python/deepvisor/_C*.so stay out),
    plus .carry/ (range-v3's headers on machines without the package)."""
    files = None
    if shutil.which("git") and os.path.exists(os.path.join(ROOT, ".git")):
        r = subprocess.run(["git", "-C", ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        if r.returncode == 0:
            files = [f for f in r.stdout.decode().split("\0") if f]
    if files is None:  # not a git checkout: copy all but build outputs
        ignore = shutil.ignore_patterns("build", "build-*", ".carry", "_C*.so", "__pycache__", ".pytest_cache",
                                        ".mesonpy-*", ".git")
        shutil.copytree(ROOT, dst, ignore=ignore, symlinks=True)
    else:
        for f in files:
            src = os.path.join(ROOT, f)
            if not os.path.lexists(src):  # deleted, not yet committed
                continue
            os.makedirs(os.path.dirname(os.path.join(dst, f)), exist_ok=True)
            shutil.copy2(src, os.path.join(dst, f), follow_symlinks=False)
    carry = os.path.join(ROOT, ".carry")
    if os.path.isdir(carry):
        shutil.copytree(carry, os.path.join(dst, ".carry"), symlinks=True)


CHECK = textwrap.dedent("""
    import importlib.metadata, json, os, sys
    import torch
    import deepvisor

    def f(x, w):
        y = torch.nn.functional.gelu(x * 1.5 + 0.3) * torch.sigmoid(x)
        return torch.softmax(y, -1) + w, y.sum(-1)

    g = deepvisor.compile(f)
    x, w = torch.randn(8, 32), torch.randn(32)
    with torch.no_grad():
        g(x, w)
        out = g(x, w)
        ref = f(x, w)
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b)
    dist = importlib.metadata.distribution("deepvisor")
    print(json.dumps({
        "package": os.path.dirname(os.path.abspath(deepvisor.__file__)),
        "extension": os.path.abspath(deepvisor._C.__file__),
        "files": sorted(os.listdir(os.path.dirname(deepvisor.__file__))),
        "stats": deepvisor.stats(g),
        "requires": dist.requires or [],
        "backends": [e.value for e in importlib.metadata.entry_points(group="torch_dynamo_backends")
                     if e.name == "deepvisor"],
    }))
""")


def test_meson_build_lists_every_python_file():
    """The quick half of the check below, without building: a new module that
    python/deepvisor/meson.build does not list would be missing from a pip
    install (and the package would fail to import there)."""
    import re
    with open(os.path.join(PACKAGE, "meson.build")) as f:
        listed = set(re.findall(r"'([^']+\.py)'", f.read()))
    sources = {f for f in os.listdir(PACKAGE) if f.endswith(".py")}
    assert not sources - listed, f"add to python/deepvisor/meson.build: {sorted(sources - listed)}"


def test_pip_install(tmp_path):
    if os.environ.get("DEEPVISOR_SKIP_PIP_TEST"):
        pytest.skip("DEEPVISOR_SKIP_PIP_TEST is set")
    if importlib.util.find_spec("venv") is None or importlib.util.find_spec("pip") is None:
        pytest.skip(f"{sys.executable} has no venv or pip module")

    # A venv that sees this Python's packages; pip itself comes from them too
    # (--without-pip: no ensurepip, which Debian ships apart as python3-venv).
    venv = tmp_path / "venv"
    r = _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], 120)
    assert r.returncode == 0, r.stdout
    vpy = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PIP_REQUIRE_VIRTUALENV")}
    # meson and ninja as console scripts: the venv's, then this Python's.
    env["PATH"] = os.pathsep.join([str(venv / "bin"), sysconfig.get_path("scripts"), env.get("PATH", "")])
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"

    # The build tools pip will not fetch (no isolation): present, or fetched now.
    missing = [req for mod, req in (("mesonpy", "meson-python>=0.15"), ("mesonbuild", "meson>=1.1"))
               if importlib.util.find_spec(mod) is None]
    if shutil.which("ninja", path=env["PATH"]) is None and importlib.util.find_spec("ninja") is None:
        missing.append("ninja")
    if missing:
        r = _run([vpy, "-m", "pip", "install", "-q", "--retries", "1", "--timeout", "20", *missing], 600, env=env)
        if r.returncode != 0:
            pytest.skip(f"{', '.join(missing)} not installed and could not be fetched "
                        f"(no network?); tools/setup-deps.sh installs them:\n{_tail(r.stdout, 5)}")

    src = tmp_path / "src"
    _copy_tree(str(src))
    jobs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    start = time.monotonic()
    r = _run([vpy, "-m", "pip", "install", "--no-build-isolation", "--no-index", "--no-deps",
              f"--config-settings=compile-args=-j{jobs}", str(src)], 1500, env=env, cwd=str(tmp_path))
    build_s = time.monotonic() - start
    assert r.returncode == 0, f"pip install failed after {build_s:.0f} s:\n{_tail(r.stdout)}"
    print(f"pip install --no-build-isolation: {build_s:.0f} s with -j{jobs}")

    # From outside the tree: the installed package, not python/ (nor the .pth
    # link `make` writes into this Python's site-packages, which the venv also
    # reads, after its own).
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    check_env = dict(env, DEEPVISOR_STRICT="1", DEEPVISOR_CPU="interpreter")
    r = _run([vpy, "-c", CHECK], 600, env=check_env, cwd=str(run_dir))
    assert r.returncode == 0, _tail(r.stdout)
    info = json.loads(r.stdout.strip().splitlines()[-1])

    site = os.path.realpath(str(venv))
    assert os.path.realpath(info["package"]).startswith(site + os.sep), info["package"]
    assert os.path.dirname(info["extension"]) == info["package"]
    assert not os.path.islink(info["extension"])
    stats = info["stats"]
    assert stats["captures"] == 1 and stats["cache_hits"] == 1 and stats["eager_calls"] == 0, stats
    assert stats["kernels"] >= 1, stats
    assert any(req.split(";")[0].strip().startswith("torch") for req in info["requires"]), info["requires"]
    assert "deepvisor._backend:deepvisor_backend" in info["backends"], info["backends"]

    # Every Python file of the package is installed (python/deepvisor/meson.build lists them).
    sources = {f for f in os.listdir(PACKAGE) if f.endswith(".py")}
    missing_py = sources - set(info["files"])
    assert not missing_py, f"not installed by pip (add them to python/deepvisor/meson.build): {sorted(missing_py)}"
