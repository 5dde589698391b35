"""deepvisor: a JIT compiler for PyTorch programs.

    g = deepvisor.compile(fn)      # fn: a function or an nn.Module
    g(*args)                       # first call: runs fn for real and captures it
    g(*args)                       # later calls: guards checked in C++, compiled plan replayed
    deepvisor.stats(g)             # captures, cache hits, kernels, compiles, fallbacks

On CUDA tensors the plan's kernels are CUDA C compiled by NVRTC; on CPU
tensors the same loop IR runs in the CPU interpreter.
"""

import torch  # noqa: F401  (loads LibTorch before the extension)

from . import _C  # noqa: F401
from ._compiled import CompiledFunction

__all__ = ["compile", "stats", "CompiledFunction"]
__version__ = "0.1.0"


def compile(fn, *, dump_dir=None, fuse=True):
    """Compiles `fn` (a callable or nn.Module) on its first call.

    dump_dir: write each captured op graph there (also DEEPVISOR_DUMP_DIR);
    the `dvdump` tool prints its plan, loop IR, fusion groups and CUDA C.
    fuse: set False to give every realized value its own kernel.
    """
    return CompiledFunction(fn, dump_dir=dump_dir, fuse=fuse)


def stats(compiled):
    """A dict: captures, cache_hits, guard_misses, eager_calls, kernels,
    nvrtc_compiles, disk_cache_hits, fallback_ops {op: count}, eager_reasons."""
    if not isinstance(compiled, CompiledFunction):
        raise TypeError("deepvisor.stats expects the result of deepvisor.compile")
    return compiled.stats()
