"""deepvisor: a JIT compiler for PyTorch programs.

    g = deepvisor.compile(fn)      # fn: a function or an nn.Module
    g(*args)                       # first call: runs fn for real and captures it
    g(*args)                       # later calls: guards checked in C++, compiled plan replayed
    deepvisor.stats(g)             # captures, cache hits, plans, kernels, compiles, fallbacks
    deepvisor.explain(g)           # each plan, its guards, fallback ops, eager reasons
    torch.compile(m, backend="deepvisor")   # Dynamo's graphs through deepvisor

On CUDA tensors the plan's kernels are CUDA C compiled by NVRTC; on CPU
tensors the same loop IR runs in the CPU interpreter.
"""

import torch  # noqa: F401  (loads LibTorch before the extension)

from . import _C  # noqa: F401
from . import _data_watch
from ._backend import deepvisor_backend, register_if_dynamo_is_loaded
from ._compiled import CompiledFunction, compiled_functions
from ._explain import explain

__all__ = ["compile", "stats", "explain", "reset", "mark_dynamic", "mark_static", "CompiledFunction",
           "compiled_functions", "deepvisor_backend"]
__version__ = "0.1.0"

def compile(fn, *, dynamic=None, dump_dir=None, fuse=True):
    """Compiles `fn` (a callable or nn.Module) on its first call.

    dynamic: None (the default): static on the first shape; a dimension of a
    tensor argument that takes a second value is captured as a symbol, and
    later sizes reuse that capture (no capture, kernels from the cache).
    True: every dimension symbolic from the first call. False: static.
    dump_dir: write each captured op graph there (also DEEPVISOR_DUMP_DIR);
    the `dvdump` tool prints its plan, loop IR, fusion groups and CUDA C.
    fuse: set False to give every realized value its own kernel.
    """
    return CompiledFunction(fn, dynamic=dynamic, dump_dir=dump_dir, fuse=fuse)


def mark_dynamic(t, dims):
    """Dimension(s) `dims` of tensor `t` are symbolic from its first capture
    (the same mark as torch._dynamo.mark_dynamic: either works)."""
    _mark(t, "_dynamo_dynamic_indices", dims)


def mark_static(t, dims):
    """Dimension(s) `dims` of tensor `t` stay static even when they change
    (as torch._dynamo.mark_static)."""
    _mark(t, "_dynamo_static_indices", dims)


def _mark(t, attribute, dims):
    dims = [dims] if isinstance(dims, int) else list(dims)
    marked = set(getattr(t, attribute, set()))
    marked.update(d % t.dim() for d in dims)
    setattr(t, attribute, marked)


def stats(compiled):
    """A dict: captures, cache_hits, guard_misses, graphs (plans held),
    evictions (plans dropped past DEEPVISOR_MAX_PLANS, least recently used first),
    inlined_calls (calls made by another compiled function while it was being
    captured: they run as part of that capture, neither captured nor replayed),
    versions (plans and eager versions held), eager_calls, eager_reasons,
    fallback_ops {op: count}, extern_ops, kernels, nvrtc_compiles, disk_cache_hits;
    on a GPU, kernels_autotuned (kernels whose configurations were timed at
    their first run, DEEPVISOR_AUTOTUNE=0 to skip), autotune_s (seconds timing
    them), autotune_compiles (the candidates' NVRTC compiles, included in
    nvrtc_compiles), autotune_cache_hits (configurations found chosen
    already, in memory or on disk); kernels_ready_s (wall seconds making
    the plans' kernels ready at their first run: NVRTC or host compiles,
    loads from disk, autotuning);
    inputs_prepared (parameters converted once to the layout a plan reads
    them in: convolution weights laid out channels-last, see
    DEEPVISOR_CHANNELS_LAST in the README); constant_kernels (kernels that
    read only parameters and buffers, such as a weight cast to bf16 under
    autocast: run outside the calls, their results kept, run again after a
    parameter changes in place), constant_kernel_runs (how many times
    they ran) and constant_kernels_not_kept (such kernels run on every call
    instead, where keeping their results would lift the plan's peak memory
    above eager's; DEEPVISOR_WEIGHT_COPIES=all keeps every one);
    library_results_in_block (runs of a convolution or matmul that wrote its
    result into the call's one block of intermediates, at a planned offset)
    and library_results_beside_block (runs planned there that allocated
    their result instead: ATen chose another convolution backend or layout);
    graph_pool_room_bytes (the segment made in each CUDA graph's memory pool
    before its capture, for the block of intermediates and what the capture
    allocates beside it: library workspaces, results outside the block, the
    outputs; summed over the plans, 0 where none was needed);
    graph_block_window_bytes (the window at the start of each graph's block of
    intermediates, freed during its capture for the steps that allocate and
    free memory of their own, as cuDNN's workspaces, so that they need no
    room beside it; summed over the plans, 0 where none); block_bytes (the
    block of intermediates each call of a plan allocates, summed over the
    plans that ran) and graph_beside_block_bytes (on a GPU: the most bytes
    the steps allocated beside the block at once on the runs before a
    graph's capture, summed over the plans; what the room holds beside the
    block unless a window takes it); graph_outside_pool_bytes (what the last
    capture of each graph took from memory made before it outside the
    graph's pool, where the pool's segments would hold more: outputs of
    1 MiB or less, and the block where nothing is allocated beside it;
    summed over the plans);
    capture_s and compile_s (host seconds in captures and in building executors,
    kernels compiled by NVRTC at their first run not included);
    for plans on CPU tensors, once a plan ran: cpu_compiled_kernels (kernels
    run as generated C++), cpu_interpreted_kernels and cpu_interpreted_reasons
    (those the interpreter runs instead, and why), host_compiles, host_cache_hits;
    for dynamic-shape plans: instances (the layouts of their symbolic
    arguments they hold executors for, the last DEEPVISOR_MAX_INSTANCES of
    each plan), instances_evicted (dropped past that, least recently used
    first), instances_declined (new layouts run eagerly instead, while
    layouts outrun that bound) and count_instances (executors compiled for counts of results
    sized by the data other than the capture's)."""
    if not isinstance(compiled, CompiledFunction):
        raise TypeError("deepvisor.stats expects the result of deepvisor.compile")
    return compiled.stats()


def reset():
    """Drops every compiled plan held in memory (the disk cache of kernels stays)."""
    for compiled in compiled_functions():
        compiled.reset()


register_if_dynamo_is_loaded()
_data_watch.install()
