"""deepvisor.compile: capture on a miss, replay compiled plans on a hit."""

import functools
import itertools
import logging
import os
import re

import torch
from torch.utils._pytree import tree_flatten, tree_unflatten

from . import _C
from ._capture import Recorder

log = logging.getLogger("deepvisor")

# Plans kept per call signature (shapes etc.); past this, calls that miss run
# eagerly with a logged reason instead of capturing again.
MAX_PLANS_PER_SIGNATURE = 8


def _flag(name):
    return os.environ.get(name, "") not in ("", "0")


def _guard_key(value):
    """Non-tensor arguments are guarded by value (numbers, strings...) or identity."""
    if value is None or isinstance(value, (bool, int, float, str, torch.dtype, torch.device)):
        return (type(value), value)
    return ("id", id(value))


def _alias_pattern(tensors):
    """Which tensor arguments are the same object: a plan captured with f(x, x)
    reads one value for both and is valid only for calls that alias alike."""
    first = {}
    return tuple(first.setdefault(id(t), i) for i, t in enumerate(tensors))


class _Entry:
    """How to rebuild the outputs of one cached plan."""

    def __init__(self, spec, leaves, executor):
        self.spec = spec
        self.leaves = leaves
        self.executor = executor
        # Shortcuts for a lone tensor or a plain tuple of graph outputs, in order.
        in_order = [("out", k) for k in range(len(leaves))] == list(leaves)
        self.lone_output = in_order and spec.is_leaf()
        self.tuple_of_outputs = in_order and spec.type is tuple and all(c.is_leaf() for c in spec.children())

    def rebuild(self, outputs, arguments):
        if self.lone_output:
            return outputs[0]
        if self.tuple_of_outputs:
            return tuple(outputs)
        values = []
        for kind, x in self.leaves:
            if kind == "view":
                i, sizes, strides, offset = x
                values.append(arguments[i].as_strided(sizes, strides, arguments[i].storage_offset() + offset))
            else:
                values.append(arguments[x] if kind == "arg" else outputs[x] if kind == "out" else x)
        return tree_unflatten(values, self.spec)


class _Signature:
    """The plans for one structure of arguments and values of non-tensor arguments."""

    def __init__(self, pinned):
        self.cache = _C.GraphCache()
        self.entries = []
        self.eager_reason = None  # set when this signature always runs eagerly
        self.constants_require_grad = False  # plans read parameters that require grad
        self.pinned = pinned      # objects guarded by identity, kept alive


class CompiledFunction:
    def __init__(self, fn, dump_dir=None, fuse=True):
        self.fn = fn
        self.dump_dir = dump_dir or os.environ.get("DEEPVISOR_DUMP_DIR") or None
        self.fuse = fuse
        self._signatures = {}
        self._stats = {"captures": 0, "cache_hits": 0, "guard_misses": 0, "eager_calls": 0}
        self._eager_reasons = {}
        functools.update_wrapper(self, fn)

    # -- calling ----------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        if not kwargs and all(type(a) is torch.Tensor for a in args):
            # The common case, without pytree work: positional tensors only.
            tensors, others = list(args), ()
            key = (len(args), _alias_pattern(tensors))
        else:
            leaves, spec = tree_flatten((args, kwargs))
            tensors = [x for x in leaves if isinstance(x, torch.Tensor)]
            others = [x for x in leaves if not isinstance(x, torch.Tensor)]
            key = (spec, tuple(_guard_key(x) for x in others), _alias_pattern(tensors))
        signature = self._signatures.get(key)
        if signature is None:
            signature = self._signatures[key] = _Signature(others)
        if signature.eager_reason is not None:
            return self._eager(signature.eager_reason, args, kwargs)
        if torch.is_grad_enabled() and (signature.constants_require_grad or any(t.requires_grad for t in tensors)):
            return self._eager("autograd: inputs or parameters require grad (compile under torch.no_grad())",
                               args, kwargs)
        if len(signature.entries):
            try:
                hit = signature.cache.run(tensors)
            except Exception as e:  # an internal failure: this and later calls run eagerly
                return self._internal_failure(signature, e, args, kwargs)
            if hit is not None:
                index, outputs = hit
                self._stats["cache_hits"] += 1
                return signature.entries[index].rebuild(outputs, tensors)
            self._stats["guard_misses"] += 1
            if len(signature.entries) >= MAX_PLANS_PER_SIGNATURE:
                reason = f"{len(signature.entries)} plans already captured for this signature"
                return self._eager(reason, args, kwargs)
            log.info("deepvisor: %s: guard miss (%s), capturing again", self._name(),
                     "; ".join(signature.cache.explain_miss(tensors)))
        return self._capture(signature, tensors, args, kwargs)

    def _capture(self, signature, tensors, args, kwargs):
        recorder = Recorder(tensors)
        with recorder:
            result = self.fn(*args, **kwargs)
        if recorder.unsupported is not None:
            signature.eager_reason = recorder.unsupported
            self._note_eager(recorder.unsupported)
            return result
        try:
            text, spec, leaves = recorder.finish(result, tensors)
            executor = _C.compile_graph_text(text, self.fuse)
            if _flag("DEEPVISOR_VALIDATE_CUDA"):
                executor.validate_cuda(90)
            with recorder.initial_layouts():  # guards: the layouts the call came with
                signature.cache.add(executor, tensors, recorder.constants)
        except Exception as e:
            if _flag("DEEPVISOR_STRICT"):
                raise
            signature.eager_reason = f"compilation failed: {type(e).__name__}: {e}"
            self._note_eager(signature.eager_reason)
            return result
        signature.entries.append(_Entry(spec, leaves, executor))
        signature.constants_require_grad |= any(t.requires_grad for t in recorder.constants)
        self._stats["captures"] += 1
        for op, reason in _fallback_notes(executor):
            log.info("deepvisor: %s: %s runs as a fallback (%s)", self._name(), op, reason)
        if self.dump_dir:
            self._dump(executor)
        return result

    def _eager(self, reason, args, kwargs):
        self._note_eager(reason)
        return self.fn(*args, **kwargs)

    def _note_eager(self, reason):
        self._stats["eager_calls"] += 1
        if reason not in self._eager_reasons:
            log.warning("deepvisor: %s runs eagerly: %s", self._name(), reason)
        self._eager_reasons[reason] = self._eager_reasons.get(reason, 0) + 1

    def _internal_failure(self, signature, error, args, kwargs):
        if _flag("DEEPVISOR_STRICT"):
            raise error
        # A plan that failed once (a kernel NVRTC rejects, no CUDA driver) would
        # fail again: stop trying it for this signature.
        signature.eager_reason = f"internal failure: {type(error).__name__}: {error}"
        return self._eager(signature.eager_reason, args, kwargs)

    # -- introspection --------------------------------------------------------------
    def executors(self):
        for signature in self._signatures.values():
            yield from signature.cache.executors()

    def stats(self):
        s = dict(self._stats)
        s.update(kernels=0, nvrtc_compiles=0, disk_cache_hits=0, fallback_ops={})
        for executor in self.executors():
            es = executor.stats()
            for k in ("kernels", "nvrtc_compiles", "disk_cache_hits"):
                s[k] += es[k]
            for op, n in es["fallback_ops"].items():
                s["fallback_ops"][op] = s["fallback_ops"].get(op, 0) + n
        s["eager_reasons"] = dict(self._eager_reasons)
        return s

    def _name(self):
        return getattr(self.fn, "__qualname__", None) or type(self.fn).__name__

    def _dump(self, executor):
        os.makedirs(self.dump_dir, exist_ok=True)
        base = re.sub(r"[^A-Za-z0-9_.-]", "_", self._name())
        n = sum(1 for _ in self.executors())
        # Never overwrite: two functions with one name (lambdas, methods of
        # two instances) or two processes may dump into the same directory.
        for k in itertools.count(1):
            path = os.path.join(self.dump_dir, f"{base}-{n}.dvg" if k == 1 else f"{base}-{n}.{k}.dvg")
            try:
                with open(path, "x") as f:
                    f.write(executor.graph_text())
                break
            except FileExistsError:
                continue
        log.info("deepvisor: wrote %s", path)


def _fallback_notes(executor):
    for note in executor.stats()["fallback_reasons"]:
        op, _, reason = note.partition(": ")
        yield op, reason
