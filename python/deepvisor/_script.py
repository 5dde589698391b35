"""TorchScript functions run as their Python originals during a capture.

A `@torch.jit.script` function is C++ to the monitors: TorchScript's
interpreter calls ATen without the Python-level torch functions (the torch
function modes of the scalars and of the shape shadow see nothing), makes
`torch.tensor(n)` without a dispatched op (the recorder meets an unknown
tensor, so nothing folds: transformers 5.17's DeBERTa helpers), and reads
its arguments where the state monitor cannot see it (an escaped number
passed in became a stale constant). Its Python original, which
`torch.jit.script` keeps on the function as `_torchdynamo_inline` for
Dynamo, is ordinary Python: run instead during a capture, its frame is
stepped and its ops recorded exactly as for code that was never scripted.
This is what Dynamo does with the same attribute. Eager calls, replays and
other threads keep TorchScript.

How: while a capture runs (on any thread) `torch.jit.ScriptFunction.__call__`
is `_call` below, a Python function that asks whether this thread is
capturing and, if so, calls the original, else TorchScript as before. The
alternatives were worse: the tracer reports a CALL only after it ran, so the
monitor cannot redirect it; rebinding the globals that hold scripted
functions would change the program's own state. The patch is installed by
the first capture in the process and removed by the last (a count under a
lock), and whether a thread redirects is a per-thread depth, so concurrent
captures, a capture inside a capture and exceptions (finally) all leave the
type as it was and the other threads' calls on TorchScript; outside captures
there is no patch, so no cost. `_call`'s code is *transparent* to the state
monitor (_monitor.TRANSPARENT_CODES: stepped so that the original it calls
is stepped too, but none of its own instructions reported, so its reads of
deepvisor's module state are no guards); the call of a scripted function in
the program is classified in _calls.on_call, which guards the original
(`_torchdynamo_inline`, the original's code and defaults) where the
scripted function itself is guarded.

Only functions that torch.jit.script compiled from the original redirect
(its cache maps the original to this function's qualified name): a
torch.jit.trace also carries `_torchdynamo_inline`, but a trace is one path
of the original (sizes and branches baked in), and its Python original may
compute something else. Methods of scripted modules are ScriptMethods,
untouched. Differences from TorchScript the redirection makes visible: the
original reads its globals and closure cells as they are now (TorchScript
resolved them when it compiled), and an error inside it is Python's
exception, not torch.jit.Error.
"""

import contextlib
import threading
import types

import torch

from ._monitor import TRANSPARENT_CODES

ScriptFunction = torch.jit.ScriptFunction
_TORCHSCRIPT_CALL = ScriptFunction.__dict__["__call__"]

_lock = threading.Lock()
_captures = 0                 # captures running in the process: the patch is on while > 0
_local = threading.local()    # .depth: captures running on this thread


def python_original(fn):
    """The Python function torch.jit.script compiled `fn` from, or None (a
    trace, a function loaded from a file, an original with caching off)."""
    original = getattr(fn, "__dict__", {}).get("_torchdynamo_inline")
    if not isinstance(original, types.FunctionType):
        return None
    try:
        compiled = torch.jit._state._jit_caching_layer.get(original)
    except TypeError:  # not weak-referenceable
        return None
    if compiled is None or compiled != fn.qualified_name:
        return None
    if getattr(original, "__disable_jit_function_caching__", False) is True:
        return None
    return original


def _redirect(fn):
    """The original to call instead of `fn`: only on a capturing thread."""
    if getattr(_local, "depth", 0) <= 0:
        return None
    return python_original(fn)


def _call(self, *args, **kwargs):
    # Transparent to the state monitor: keep this to the two calls.
    original = _redirect(self)
    if original is None:
        return _TORCHSCRIPT_CALL(self, *args, **kwargs)
    return original(*args, **kwargs)


TRANSPARENT_CODES.add(_call.__code__)


@contextlib.contextmanager
def python_originals():
    """Around a capture run: this thread's calls of scripted functions run
    their Python originals."""
    global _captures
    with _lock:
        if _captures == 0:
            ScriptFunction.__call__ = _call
        _captures += 1
    _local.depth = getattr(_local, "depth", 0) + 1
    try:
        yield
    finally:
        _local.depth -= 1
        with _lock:
            _captures -= 1
            if _captures == 0:
                ScriptFunction.__call__ = _TORCHSCRIPT_CALL
