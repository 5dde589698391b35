"""deepvisor.compile: capture on a miss, replay compiled plans on a hit.

A call first runs the guards of the plans held (C++, over the arguments and
the pinned Python state the captures read). On a hit the plan runs, the side
effects the capture saw are replayed, and the result is rebuilt. On a miss
the function runs for real under the two monitors (the tensor monitor records
the ATen ops, the Python-state monitor the state it reads and writes), and
what they saw becomes a new plan with its guards. A capture that meets
something a replay cannot reproduce becomes an eager version: calls that pass
its guards run the function eagerly, with the reason logged and counted.
"""

import functools
import inspect
import itertools
import os
import re
import threading

import torch

from . import _C
from ._capture import Recorder
from ._capture import Unsupported as TensorUnsupported
from ._guards import compile_guards
from ._log import log, log_event
from ._monitor import StateMonitor
from ._monitor import Unsupported as StateUnsupported
from ._rebuild import Context, RecipeBuilder, describe_side_effects

# Plans kept per compiled function; past this, calls that miss run eagerly
# with a logged reason instead of capturing again.
MAX_PLANS = int(os.environ.get("DEEPVISOR_MAX_PLANS", "16"))


def _flag(name):
    return os.environ.get(name, "") not in ("", "0")


class _Plan:
    """How to finish a call that passed a plan's guards."""

    def __init__(self, result, side_effects, executor, descriptions, eager_reason=None, fallbacks=()):
        self.result = result              # a Recipe
        self.side_effects = side_effects  # [SideEffect]
        self.executor = executor
        self.descriptions = descriptions  # readable guards
        self.eager_reason = eager_reason  # set: calls that pass these guards run eagerly
        self.fallbacks = fallbacks
        self.lone_output = result is not None and type(result).__name__ == "Output" and result.k == 0

    def finish(self, outputs, inputs, args, kwargs):
        if self.lone_output and not self.side_effects:
            return outputs[0]
        ctx = Context(outputs, inputs, args, kwargs)
        for effect in self.side_effects:
            effect.apply(ctx)
        return self.result.build(ctx)


class CompiledFunction:
    def __init__(self, fn, dynamic=None, dump_dir=None, fuse=True):
        self.fn = fn
        self.dynamic = dynamic
        self.dump_dir = dump_dir or os.environ.get("DEEPVISOR_DUMP_DIR") or None
        self.fuse = fuse
        self._plans = _C.PlanCache()
        self._entries = []
        self._lock = threading.RLock()
        self._stats = {"captures": 0, "cache_hits": 0, "guard_misses": 0, "eager_calls": 0}
        self._eager_reasons = {}
        self._arg_names = _argument_names(fn)
        functools.update_wrapper(self, fn, updated=())

    # -- calling ----------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        try:
            hit = self._plans.run(args, kwargs)
        except Exception as e:  # an internal failure: this call runs eagerly
            return self._internal_failure(e, args, kwargs)
        if hit is not None:
            index, outputs, inputs = hit
            plan = self._entries[index]
            if plan.eager_reason is not None:
                return self._eager(plan.eager_reason, args, kwargs)
            self._stats["cache_hits"] += 1
            return plan.finish(outputs, inputs, args, kwargs)
        with self._lock:
            # Another thread may have captured this version meanwhile.
            if len(self._plans) and self._plans.run(args, kwargs) is not None:
                return self.__call__(*args, **kwargs)
            if len(self._entries):
                self._stats["guard_misses"] += 1
                if len(self._entries) >= MAX_PLANS:
                    return self._eager(f"{len(self._entries)} plans already captured (DEEPVISOR_MAX_PLANS)", args,
                                       kwargs)
                log_event("recompiles", f"{self._name()}: guard miss ({'; '.join(self._plans.explain_miss(args, kwargs))}), "
                          "capturing again")
            return self._capture(args, kwargs)

    def _capture(self, args, kwargs):
        monitor = StateMonitor(self.fn, args, kwargs, self._arg_names)
        recorder = Recorder([])
        try:
            with recorder:
                monitor.start()
                try:
                    result = self.fn(*args, **kwargs)
                finally:
                    monitor.stop()
        finally:
            monitor.close()
        # A user exception propagates from the call above: nothing is cached.
        try:
            plan, program = self._build_plan(monitor, recorder, result)
        except (StateUnsupported, TensorUnsupported) as e:
            plan, program = self._eager_plan(monitor, str(e))
        except Exception as e:
            if _flag("DEEPVISOR_STRICT"):
                raise
            plan, program = self._eager_plan(monitor, f"compilation failed: {type(e).__name__}: {e}")
        if plan is None:
            self._note_eager(f"internal failure while building guards: {program}")
            return result
        self._plans.add(program, plan.executor)
        self._entries.append(plan)
        if plan.eager_reason is not None:
            self._note_eager(plan.eager_reason)
        else:
            self._stats["captures"] += 1
            for op, reason in plan.fallbacks:
                log_event("fallbacks", f"{self._name()}: {op} runs as a fallback ({reason})")
            log_event("guards", f"{self._name()}: plan {len(self._entries) - 1} guards: " + "; ".join(plan.descriptions))
            if self.dump_dir:
                self._dump(plan.executor)
        return result

    def _build_plan(self, monitor, recorder, result):
        reason = monitor.unsupported or recorder.unsupported
        if reason is not None:
            raise StateUnsupported(reason)
        inputs = list(recorder.constants)
        if torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
            raise StateUnsupported("autograd: inputs or parameters require grad (compile under torch.no_grad())")
        argument_tensors = [t for t in inputs if _is_argument(monitor, t)]
        builder = RecipeBuilder(monitor, recorder, argument_tensors)
        result_recipe = builder.of(result)
        side_effects = describe_side_effects(builder, monitor)
        text = recorder.graph_text(builder.output_tensors)
        # The recipes may have asked for more graph inputs (none expected).
        inputs = list(recorder.constants)
        executor = _C.compile_graph_text(text, self.fuse)
        if _flag("DEEPVISOR_VALIDATE_CUDA"):
            executor.validate_cuda(90)
        program, descriptions, _ = compile_guards(monitor, inputs)
        fallbacks = list(_fallback_notes(executor))
        return _Plan(result_recipe, side_effects, executor, descriptions, fallbacks=fallbacks), program

    def _eager_plan(self, monitor, reason):
        try:
            program, descriptions, _ = compile_guards(monitor, [])
        except Exception as e:  # guards that cannot even be built: cache nothing
            return None, f"{type(e).__name__}: {e}"
        return _Plan(None, [], None, descriptions, eager_reason=reason), program

    def _eager(self, reason, args, kwargs):
        self._note_eager(reason)
        return self.fn(*args, **kwargs)

    def _note_eager(self, reason):
        self._stats["eager_calls"] += 1
        if reason not in self._eager_reasons:
            log.warning("deepvisor: %s runs eagerly: %s", self._name(), reason)
            log_event("fallbacks", f"{self._name()} runs eagerly: {reason}")
        self._eager_reasons[reason] = self._eager_reasons.get(reason, 0) + 1

    def _internal_failure(self, error, args, kwargs):
        if _flag("DEEPVISOR_STRICT"):
            raise error
        # A plan that failed once (a kernel NVRTC rejects, no CUDA driver) would
        # fail again: that version runs eagerly from now on.
        reason = f"internal failure: {type(error).__name__}: {error}"
        with self._lock:
            index = self._plans.failed_index()
            if 0 <= index < len(self._entries):
                self._plans.make_eager(index)
                self._entries[index].eager_reason = reason
        return self._eager(reason, args, kwargs)

    # -- introspection --------------------------------------------------------------
    def executors(self):
        for plan in self._entries:
            if plan.executor is not None:
                yield plan.executor

    def plans(self):
        return list(self._entries)

    def stats(self):
        s = dict(self._stats)
        s.update(kernels=0, nvrtc_compiles=0, disk_cache_hits=0, fallback_ops={})
        for executor in self.executors():
            es = executor.stats()
            for k in ("kernels", "nvrtc_compiles", "disk_cache_hits"):
                s[k] += es[k]
            for op, n in es["fallback_ops"].items():
                s["fallback_ops"][op] = s["fallback_ops"].get(op, 0) + n
        s["graphs"] = sum(1 for p in self._entries if p.executor is not None)
        s["versions"] = len(self._entries)
        s["eager_reasons"] = dict(self._eager_reasons)
        return s

    def reset(self):
        with self._lock:
            self._plans = _C.PlanCache()
            self._entries = []

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


def _is_argument(monitor, t):
    node = monitor.node_of(t)
    return node is not None and not node.pinned


def _argument_names(fn):
    target = fn.forward if isinstance(fn, torch.nn.Module) else fn
    try:
        params = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _fallback_notes(executor):
    for note in executor.stats()["fallback_reasons"]:
        op, _, reason = note.partition(": ")
        yield op, reason
