"""deepvisor.compile: capture on a miss, replay compiled plans on a hit.

A call first runs the guards of the plans held (C++, over the arguments and
the pinned Python state the captures read). On a hit the plan runs, the side
effects the capture saw are replayed, and the result is rebuilt. On a miss
the function runs for real under the two monitors (the tensor monitor records
the ATen ops, the Python-state monitor the state it reads and writes), and
what they saw becomes a new plan with its guards.

A capture in which tensor data decided Python control flow is a path through
a tree of versions (_segments.py): its graph is cut at each decision, and a
replay reads each decision's value between segments to choose the branch. A
new outcome captures again and grafts the new branch under that decision.

A capture that meets something a replay cannot reproduce becomes an eager
version: calls that pass its guards run the function eagerly, with the reason
logged and counted.
"""

import collections
import contextlib
import functools
import gc
import inspect
import itertools
import os
import re
import sys
import threading
import time
import weakref

import torch

from . import _C
from ._capture import Recorder, casts_recorded
from ._capture import Unsupported as TensorUnsupported
from ._guards import compile_guards
from ._log import log, log_event
from ._monitor import StateMonitor, qualname, running_monitor
from ._monitor import Unsupported as StateUnsupported
from ._opaque import OpaqueMode
from ._rebuild import Context, Output, RecipeBuilder, describe_side_effects, plain_sizes_in_state
from ._scalars import Scalars
from ._script import python_originals
from ._segments import outcome_key, split
from ._shapes import DECLINED, DynamicDims, ShapeShadow, SymbolicPlan, symbolic_capture

# Root plans held per compiled function; past this, a miss evicts the least
# recently used plan before capturing, unless MAX_PLANS were evicted within the
# last THRASH_CALLS calls: versions then change faster than the plans held can
# follow, and calls that miss run eagerly (logged) until evictions slow down.
MAX_PLANS = int(os.environ.get("DEEPVISOR_MAX_PLANS", "16"))
THRASH_CALLS = 4 * MAX_PLANS
# Outcomes captured per decision site; past this, new outcomes there run eagerly.
MAX_VERSIONS = int(os.environ.get("DEEPVISOR_MAX_VERSIONS", "8"))
# The same for the sizes of a result sized by the data (nonzero, x[mask]...),
# lower: a count that changes on every call (a mixture of experts' routing)
# would otherwise cost that many captures, and compiles, before running eagerly.
MAX_SIZE_VERSIONS = int(os.environ.get("DEEPVISOR_MAX_SIZE_VERSIONS", "4"))


_MISS = object()  # no plan's guards pass


def _flag(name):
    return os.environ.get(name, "") not in ("", "0")


class _Path:
    """What one capture produced: the result and side effects to rebuild, the
    guards' readable form, and its graph (whole, or cut at decisions)."""

    def __init__(self, result, side_effects, descriptions, fallbacks, input_values, segments, program,
                 constant_values=frozenset()):
        self.result = result
        self.side_effects = side_effects
        self.descriptions = descriptions
        self.fallbacks = fallbacks
        self.input_values = input_values  # value ids of the graph inputs, in the guards' order
        self.segments = segments          # [Segment]; one without a decision when nothing was decided
        self.program = program            # the GuardProgram of this capture
        self.constant_values = constant_values  # input value ids that are not from the arguments (parameters...)
        self.lone_output = isinstance(result, Output) and result.k == 0
        self.symbolic = None  # _Symbolic: the capture holds for other sizes of its symbolic dimensions
        self.rebuilds_sizes = False  # its result or side effects hold sizes of the call (_rebuild.Size)

    def finish(self, outputs, inputs, args, kwargs):
        if self.lone_output and not self.side_effects:
            return outputs[0]
        ctx = Context(outputs, inputs, args, kwargs)
        for effect in self.side_effects:
            effect.apply(ctx)
        return self.result.build(ctx)


class _Slots:
    """Where a node's values sit among a call's values (_C.CallValues): the
    same on every call that reaches the node (one path from the root, each
    segment appending its outputs, each grafted branch its inputs)."""

    def __init__(self, segment, entry, size):
        self.inputs = [entry[v] for v in segment.inputs]
        self.after = dict(entry)  # value id -> slot once the segment ran
        self.after.update((v, size + j) for j, v in enumerate(segment.outputs))
        self.size = size + len(segment.outputs)
        self.decision = [self.after[v] for v in segment.decision.values] if segment.decision is not None else []

    def entry_of(self, child):
        """(value id -> slot, count) on entering `child`."""
        if child.guards is None:
            return self.after, self.size
        entry = dict(self.after)
        entry.update((v, self.size + j) for j, v in enumerate(child.path.input_values))
        return entry, self.size + len(child.path.input_values)


class _Node:
    """A segment of a version tree, and the branches after its decision."""

    def __init__(self, segment, executor, path, guards=None, held_before=0):
        self.segment = segment
        self.executor = executor
        self.held_before = held_before  # bytes the graph pools of the segments before it hold
        self.path = path            # the capture this segment came from (its leaf finishes the call)
        self.guards = guards        # checked on entering this branch (grafted from another capture)
        self.children = {}          # outcome key -> _Node
        self.later = set()          # outcome keys a later plan holds (a symbolic plan's new outcomes)
        self.counts_later = False   # a decision on sizes: a later plan takes every count not held here
        self.slots = None           # _Slots, set on the first call that reaches this node

    def set_slots(self, entry, size):
        self.slots = _Slots(self.segment, entry, size)

    def nodes(self):
        yield self
        for child in self.children.values():
            yield from child.nodes()


class _Plan:
    """One entry of the plan cache: a single graph, a tree of versions, or an
    eager version."""

    def __init__(self, path=None, executor=None, tree=None, eager_reason=None, descriptions=(), symbolic=None):
        self.path = path
        self.executor = executor          # a whole-graph plan: the C++ cache runs it
        self.symbolic = symbolic          # a dynamic-shape plan (SymbolicPlan): one executor per layout
        self.tree = tree                  # a plan with decisions: segments run from Python
        self.eager_reason = eager_reason  # set: calls that pass these guards run eagerly
        # A segment before a decision draws random numbers (in any branch):
        # a call saves the generators' state, to put it back if the program
        # runs again (_run_tree).
        self.draws_early = tree is not None and any(n.segment.draws for n in tree.nodes() if n.segment.decision)
        self.descriptions = list(descriptions) if path is None else path.descriptions
        self.last_call = 0                # the compiled function's call count when it last ran (eviction)

    @property
    def fallbacks(self):
        return self.path.fallbacks if self.path is not None else []

    @property
    def side_effects(self):
        return self.path.side_effects if self.path is not None else []

    def executors(self):
        if self.executor is not None:
            yield self.executor
        if self.symbolic is not None:
            yield from self.symbolic.executors()
        if self.tree is not None:
            for node in self.tree.nodes():
                if node.executor is not None:
                    yield node.executor

    def versions(self):
        if self.tree is None:
            return 1
        return sum(1 for n in self.tree.nodes() if n.segment.decision is None)


def _generator_states():
    """The default generators' states: the CPU's, and each GPU's once CUDA is
    up."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


def _restore_generators(states):
    if states is None:
        return
    cpu, cuda = states
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


@contextlib.contextmanager
def _dynamo_eager():
    """torch.compile'd code that the program calls runs eagerly through a
    capture (Dynamo's force_eager stance), so that the recorder sees its ATen
    ops. Left alone, Dynamo meets the recorder (a dispatch mode it cannot
    trace under) and marks every frame it then enters as never to be compiled,
    for the rest of the process: the program's own compiled functions and
    torch.cond's wrapper among them (a later torch.cond outside deepvisor
    failed). Where Dynamo is not loaded yet, nothing of the program is
    compiled; if the run loads it (torch.cond does), its caches are reset
    afterwards so that what it marked during the capture is forgotten. (The
    stance is the process's: another thread's compiled functions run eagerly
    while a capture lasts.)"""
    if "torch._dynamo.eval_frame" in sys.modules:
        with _eager_stance:
            yield
        return
    try:
        yield
    finally:
        if "torch._dynamo" in sys.modules:
            sys.modules["torch._dynamo"].reset()


class _EagerStance:
    """Dynamo's force_eager stance while any capture runs, on any thread: the
    first capture in sets it, the last one out restores the stance it found
    (nested set_stance contexts exited out of order across threads would
    leave force_eager on for good)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._captures = 0
        self._context = None

    def __enter__(self):
        with self._lock:
            if self._captures == 0:
                self._context = torch.compiler.set_stance("force_eager")
                self._context.__enter__()
            self._captures += 1

    def __exit__(self, *exc):
        with self._lock:
            self._captures -= 1
            if self._captures == 0:
                self._context.__exit__(None, None, None)
                self._context = None


_eager_stance = _EagerStance()


@contextlib.contextmanager
def _gc_paused():
    """Python's cyclic collector paused through a capture: a capture makes
    many small objects (monitor nodes, guards), and a full collection that
    they set off walks every object of a process that holds a model. The
    cycles it leaves are collected after it."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class CompiledFunction:
    def __init__(self, fn, dynamic=None, dump_dir=None, fuse=True):
        self.fn = fn
        self.dynamic = dynamic
        self.dump_dir = dump_dir or os.environ.get("DEEPVISOR_DUMP_DIR") or None
        self.fuse = fuse
        self._plans = _C.PlanCache()
        self._entries = {}   # plan id (the C++ plan cache's) -> _Plan, oldest first
        self._evicted = {}   # the two plans evicted last, for a call on another thread that hit one meanwhile
        self._evictions = collections.deque()  # the call counts at which plans were evicted lately
        self._calls = 0
        self._lock = threading.RLock()
        self._stats = {"captures": 0, "cache_hits": 0, "guard_misses": 0, "eager_calls": 0, "evictions": 0,
                       "inlined_calls": 0}
        # Host seconds spent on first calls: running the function under the
        # monitors (capture_s) and building executors (compile_s: parsing and
        # lowering; on a GPU kernels compile on an executor's first run, not
        # counted here).
        self._seconds = {"capture_s": 0.0, "compile_s": 0.0}
        self._eager_reasons = {}
        self._arg_names = _argument_names(fn)
        self._dims = DynamicDims(dynamic)
        functools.update_wrapper(self, fn, updated=())
        _registry.add(self)

    # -- calling ----------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        self._calls += 1
        outer = running_monitor()
        if outer is not None:
            # Called by a function being captured: its Python runs as part of
            # that capture, which then sees the state it reads (a replay here
            # would hide the reads from the outer plan's guards).
            self._stats["inlined_calls"] += 1
            return outer.call_inline(self.fn, args, kwargs)
        result = self._replay(args, kwargs)
        if result is not _MISS:
            return result
        if _under_tracing(args, kwargs):
            # Fake tensors (torch.compile propagating metadata through this
            # backend) or a tracing mode: run the function as is, cache nothing.
            return self.fn(*args, **kwargs)
        modes = _user_function_modes()
        if modes:
            # No plan's guards pass while the mode is on (they count the
            # modes), and none is captured: the capture's own torch calls
            # would go through the mode too.
            return self._eager(f"a torch function mode is active ({', '.join(modes)}): a plan would not call it "
                               "on its replays", args, kwargs)
        with self._lock:
            # Another thread may have captured this version meanwhile.
            result = self._replay(args, kwargs) if len(self._plans) else _MISS
            if result is not _MISS:
                return result
            if len(self._entries):
                self._stats["guard_misses"] += 1
                why = "; ".join(self._plans.explain_miss(args, kwargs))
                log_event("recompiles", f"{self._name()}: guard miss ({why}), capturing again")
            return self._capture_root(args, kwargs)

    def _capture_root(self, args, kwargs):
        """Captures this call as a new plan (the lock held), evicting the least
        recently used one past MAX_PLANS."""
        if len(self._entries) >= MAX_PLANS:
            if self._thrashing():
                return self._eager(f"versions change faster than the {MAX_PLANS} plans held can follow: "
                                   f"{MAX_PLANS} evicted within {THRASH_CALLS} calls (DEEPVISOR_MAX_PLANS)", args, kwargs)
            self._evict_least_recently_used()
        with self._timed("capture_s"):
            result, path, program, reason = self._capture(args, kwargs, self._dims.for_call(args, kwargs),
                                                          reached=self._dims)
        self._add_root(path, program, reason)
        return result

    def _thrashing(self):
        while self._evictions and self._calls - self._evictions[0] >= THRASH_CALLS:
            self._evictions.popleft()
        return len(self._evictions) >= MAX_PLANS

    def _evict_least_recently_used(self):
        victim = min(self._entries, key=lambda i: self._entries[i].last_call)
        plan = self._entries.pop(victim)
        self._plans.remove(victim)
        self._evicted[victim] = plan
        while len(self._evicted) > 2:  # (a hit and its lookup are bytecodes apart; a capture is not)
            self._evicted.pop(next(iter(self._evicted)))
        self._evictions.append(self._calls)
        self._stats["evictions"] += 1
        log_event("recompiles", f"{self._name()}: {MAX_PLANS} plans held (DEEPVISOR_MAX_PLANS): the least recently "
                                f"used one (last run {self._calls - plan.last_call} calls ago) is evicted")

    @contextlib.contextmanager
    def _timed(self, key):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._seconds[key] += time.perf_counter() - t0

    def _replay(self, args, kwargs):
        """Runs the first plan whose guards pass; _MISS when none does."""
        start = 0
        while True:
            try:
                hit = self._plans.run(args, kwargs, start)
            except Exception as e:  # an internal failure: this call runs eagerly
                return self._internal_failure(e, args, kwargs)
            if hit is None:
                return _MISS
            index, plan_id, outputs, inputs = hit
            plan = self._entries.get(plan_id)
            if plan is None:  # evicted by another thread meanwhile
                plan = self._evicted.get(plan_id)
            if plan is None:  # ... many times over
                return self._internal_failure(RuntimeError("the plan was evicted during the call"), args, kwargs)
            plan.last_call = self._calls
            if plan.eager_reason is not None:
                return self._eager(plan.eager_reason, args, kwargs)
            executors = None
            if plan.symbolic is not None and inputs is not None:  # (else C++ ran a known instance)
                executors = self._instance(plan, inputs, plan_id)
                if executors is DECLINED:
                    return self._eager(plan.symbolic.declined_reason, args, kwargs)
                if executors is None:  # its shape guards reject these sizes: the next plan
                    start = index + 1
                    continue
            if plan.tree is not None:
                result = self._run_tree(plan, plan_id, inputs, args, kwargs, executors)
                if result is _MISS:  # an outcome the symbolic plan leaves to a later plan
                    start = index + 1
                    continue
                return result
            if executors is not None:
                try:
                    outputs = executors[0].run(inputs.tensors())
                except Exception as e:
                    return self._internal_failure(e, args, kwargs, plan_id)
            self._stats["cache_hits"] += 1
            return plan.path.finish(outputs, inputs, args, kwargs)

    def _instance(self, plan, inputs, plan_id):
        """The executors of the instance of a symbolic plan for these inputs;
        a plan of one segment hands the instance to the C++ plan cache, which
        runs it from then on without coming back here."""
        with self._lock:
            executors = plan.symbolic.executors_for(inputs, may_decline=True)
            dropped, plan.symbolic.dropped = plan.symbolic.dropped, []
            if executors is DECLINED:
                return executors
            if plan.tree is None and not plan.path.rebuilds_sizes:  # (Size recipes read this call's inputs)
                for layout in dropped:  # (the C++ cache may hold it)
                    self._plans.forget_instance(plan_id, list(layout))
                self._plans.add_instance(plan_id, inputs, executors[0] if executors else None)
            return executors

    def _run_tree(self, plan, plan_id, values, args, kwargs, executors=None):
        """Runs a plan's segments, choosing each branch by the decision's value
        (_walk_tree); at an outcome no branch holds, captures it. A symbolic
        plan returns _MISS at an outcome it does not hold: a later plan does.
        Where the segments before a decision draw random numbers, the
        generators are put back before anything runs the program again (a
        capture, a later plan, eager), so that it draws what eager draws."""
        generators = _generator_states() if plan.draws_early else None
        try:
            end = self._walk_tree(plan, values, args, kwargs, executors)
        except Exception as e:  # an internal failure: this call runs eagerly
            _restore_generators(generators)
            return self._internal_failure(e, args, kwargs, plan_id)
        if end is _MISS:
            _restore_generators(generators)
            return _MISS
        node, depth, value, key, outs = end
        if outs is not None:
            return node.path.finish(outs, values, args, kwargs)
        _restore_generators(generators)
        if executors is not None:
            return self._new_symbolic_outcome(plan, node, key, args, kwargs)
        return self._new_outcome(plan, node, depth, value, args, kwargs)

    def _walk_tree(self, plan, values, args, kwargs, executors):
        """Runs segments from the root: (the leaf, its depth, None, None, its
        outputs) at a leaf; (the node, its depth, the decision's value, its
        key, None) at an outcome no branch holds; _MISS where a later plan
        holds it. `values` (a _C.CallValues) holds the call's graph inputs and
        receives each segment's outputs; segments read theirs by slot
        (_Node.slots). `executors`: a symbolic plan's _Instance."""
        node = plan.tree
        if node.slots is None:
            node.set_slots({v: i for i, v in enumerate(plan.path.input_values)}, len(plan.path.input_values))
        depth = 0
        counts = {}  # a symbolic plan's counts: the sizes of results sized by the data, per symbol
        while True:
            segment = node.segment
            executor = executors.at(depth, counts) if executors is not None else node.executor
            decision = segment.decision
            if decision is None:
                outs = executor.run_on(values, node.slots.inputs)
                self._stats["cache_hits"] += 1
                if executors is not None:
                    self._stop_if_counts_thrash(plan)
                return node, depth, None, None, outs
            executor.run_into(values, node.slots.inputs)
            value = decision.evaluate(values.take(node.slots.decision))
            key = outcome_key(value)
            if executors is not None and decision.op == "sizes":
                taken = plan.symbolic.counts_of(depth, value, decision.outcome)
                if taken is not None:  # what follows is compiled for these counts: the capture's branch
                    counts.update(taken)
                    key = outcome_key(decision.outcome)
            child = node.children.get(key)
            if child is not None and child.guards is not None:
                branch_inputs = child.guards.check(args, kwargs)
                if branch_inputs is None:
                    child = None
                else:
                    values.extend(branch_inputs)
            if child is not None and child.slots is None:
                child.set_slots(*node.slots.entry_of(child))
            if child is None and (key in node.later or node.counts_later):
                return _MISS
            if child is None:
                return node, depth, value, key, None
            node = child
            depth += 1

    def _stop_if_counts_thrash(self, plan):
        """A symbolic plan that compiles an executor for new counts on nearly
        every call runs eagerly from then on (logged, in eager_reasons)."""
        reason = plan.symbolic.counts_thrash()
        if reason is not None:  # (the next call warns and counts it)
            plan.eager_reason = reason

    def _new_symbolic_outcome(self, plan, node, key, args, kwargs):
        """A decision of a symbolic plan took a new value: this outcome goes to
        the plans after it from now on, and this call captures one."""
        with self._lock:
            node.later.add(key)
            result = self._replay(args, kwargs)
            if result is not _MISS:
                return result
            self._stats["guard_misses"] += 1
            return self._capture_root(args, kwargs)

    def _new_outcome(self, plan, node, depth, value, args, kwargs):
        """A decision took a value no version holds: capture that version
        (the function runs again; the segments already run changed nothing
        visible) and graft it under the decision."""
        decision = node.segment.decision
        log_event("decisions", f"{self._name()}: {decision.describe()} gave {value!r}: a new version")
        with self._lock:
            sizes = decision.op == "sizes"
            limit, name = (MAX_SIZE_VERSIONS, "DEEPVISOR_MAX_SIZE_VERSIONS") if sizes else \
                (MAX_VERSIONS, "DEEPVISOR_MAX_VERSIONS")
            if len(node.children) >= limit:
                return self._eager(f"{decision.describe()} took more than {limit} values ({name})", args, kwargs)
            # A second count: captured with the counts symbolic (_shapes.py),
            # a plan that takes every count at least MIN_COUNT from now on.
            result, path, program, reason = self._capture(args, kwargs, counts=sizes)
            key = outcome_key(value)
            if reason is None and path.symbolic is not None:
                if any(name for _, _, name in path.symbolic.count_dims.get(depth, ())):
                    log_event("recompiles", f"{self._name()}: {decision.describe()}: counts symbolic from now on")
                    node.counts_later = True
                    self._add_root(path, program, reason)
                    return result
                path.symbolic = None  # (counts symbolic elsewhere only: grafted as the static capture it also is)
            if reason is not None or not self._graft(plan, node, depth, key, path, program):
                # The new version is a plan of its own: this tree hands the
                # outcome on to it (else each such call would capture again).
                node.later.add(key)
                self._add_root(path, program, reason)
            return result

    def _graft(self, plan, node, depth, key, path, program):
        """Hangs the new path's segments after `depth` under `node`'s decision,
        keyed by the value the replay computed there (the compiled segments may
        round a value differently from the eager capture run). False when the
        new capture does not match the tree's segments up to there."""
        segments = path.segments
        if len(segments) <= depth + 1:
            return False
        mine, theirs = node.segment, segments[depth]
        # (Their later segments may read fewer of its values: a path that needs no more shares it.)
        if (theirs.key != mine.key or theirs.inputs != mine.inputs or not set(theirs.outputs) <= set(mine.outputs)
                or theirs.decision is None or theirs.decision.op != mine.decision.op
                or theirs.decision.values != mine.decision.values):
            return False
        if key in node.children:
            return False
        if mine.decision.op == "sizes" and key != outcome_key(theirs.decision.outcome):
            # The capture run's op gave other sizes than the replay's (a mask
            # of values the compiled plan rounded otherwise): its path holds
            # for its own sizes only. (Other values stay keyed by the replay's
            # value: a float, or a comparison of floats, may round otherwise,
            # and the eager branch is the capture's on those inputs.)
            return False
        held = node.held_before + (node.executor.estimated_pool_bytes() if node.executor is not None else 0)
        node.children[key] = self._subtree(path, segments[depth + 1:], program, held=held)
        plan.draws_early = plan.draws_early or any(s.draws for s in segments[depth + 1:-1])
        self._stats["captures"] += 1
        self._after_capture(path)
        return True

    def _subtree(self, path, segments, guards=None, compiled=True, held=0):
        """The nodes of `segments`, one after the other. `held`: the bytes the
        graph pools of the segments before them hold through the call."""
        first = None
        parent = None
        for segment in segments:
            executor = self._compile(segment, path, held_elsewhere=held) if compiled else None
            node = _Node(segment, executor, path, guards if parent is None else None, held)
            if executor is not None:
                held += executor.estimated_pool_bytes()
            if parent is None:
                first = node
            else:
                parent.children[outcome_key(parent.segment.decision.outcome)] = node
            parent = node
        return first

    # -- capturing ---------------------------------------------------------------
    def _capture(self, args, kwargs, dynamic_dims=None, counts=False, reached=None):
        """Runs the function under the monitors. Returns (its result, the
        path or None, the guard program or None, the eager reason or None).
        dynamic_dims {k: dims} names symbolic dimensions of the k-th tensor
        passed directly: a shape shadow follows the run (_shapes.py), which
        also makes the sizes of results sized by the data symbolic (counts);
        counts=True: a shadow for those alone. reached (the DynamicDims):
        tensors reached from the arguments (cache.k) whose sizes changed
        since the last capture are symbolic too."""
        with _gc_paused(), _dynamo_eager():
            return self._capture_unpaused(args, kwargs, dynamic_dims, counts, reached)

    def _capture_unpaused(self, args, kwargs, dynamic_dims, counts, reached):
        monitor = StateMonitor(self.fn, args, kwargs, self._arg_names)
        # Tensors passed directly are inputs from the start (an in-place change
        # of their layout may be the first thing the run does with them).
        direct = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        recorder = Recorder(direct, is_argument=lambda t: _is_argument(monitor, t))
        monitor.recorder = recorder
        monitor.scalars = Scalars(recorder)
        watch_reached = reached is not None and reached.watches_reached()
        shadow = ShapeShadow(direct, dynamic_dims or {}, lambda t: _is_argument(monitor, t), recorder,
                             reached if watch_reached else None, lambda t: _name_of(monitor, t)) \
            if dynamic_dims or counts or watch_reached else None
        if shadow is not None:
            monitor.shapes = shadow
            shadow.tracker = monitor.tracer.track
        try:
            # (python_originals: scripted functions run their Python originals, _script.py)
            with recorder, OpaqueMode(recorder), shadow or contextlib.nullcontext(), python_originals(), \
                    casts_recorded():
                monitor.start()
                try:
                    result = self.fn(*args, **kwargs)
                    if shadow is not None:  # a size returned: the plan would return this value
                        shadow.specialize_all(result)
                finally:
                    monitor.stop()
                    monitor.scalars.close()
                    if shadow is not None:
                        shadow.live = False
        finally:
            monitor.close()
        # A user exception propagates from the call above: nothing is cached.
        try:
            path = self._build_path(monitor, recorder, result, shadow)
            if reached is not None:
                _note_reached_sizes(reached, monitor, recorder, direct)
            return result, path, path.program, None
        except (StateUnsupported, TensorUnsupported) as e:
            reason = str(e)
        except Exception as e:
            if _flag("DEEPVISOR_STRICT"):
                raise
            reason = f"compilation failed: {type(e).__name__}: {e}"
        try:
            program, descriptions, _ = compile_guards(monitor, [])
        except Exception as e:  # guards that cannot even be built: cache nothing
            if _flag("DEEPVISOR_STRICT"):
                raise
            self._note_eager(f"{reason}; guards could not be built: {type(e).__name__}: {e}")
            return result, None, None, None
        return result, _Path(None, [], descriptions, [], [], [], program), program, reason

    def _build_path(self, monitor, recorder, result, shadow=None):
        if monitor.internal_error is not None and _flag("DEEPVISOR_STRICT"):
            raise monitor.internal_error
        reason = monitor.unsupported or recorder.unsupported
        if reason is not None:
            raise StateUnsupported(reason)
        inputs = recorder.input_tensors()
        if torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
            raise StateUnsupported("autograd: inputs or parameters require grad (compile under torch.no_grad())")
        argument_tensors = [t for t in inputs if _is_argument(monitor, t)]
        builder = RecipeBuilder(monitor, recorder, argument_tensors)
        result_recipe = builder.of(result)
        side_effects = describe_side_effects(builder, monitor)
        if builder.sizes:
            plain_sizes_in_state(monitor)
        monitor.scalars.finish()
        output_values, view_lines = recorder.output_values(builder.output_tensors)
        inputs = recorder.input_tensors()
        segments = split(recorder.value_lines, recorder.input_values, recorder.node_lines, recorder.decisions,
                         output_values, list(recorder.mutations.items()), recorder.restride_lines() + view_lines,
                         recorder.random_nodes)
        symbolic = symbolic_capture(shadow, monitor, recorder, builder, segments, inputs) \
            if shadow is not None else None
        with recorder.initial_layouts():  # guards: the layouts the call came with, not the run's (t_...)
            program, descriptions, _ = compile_guards(monitor, inputs, symbolic.dims if symbolic else None)
        constant_values = frozenset(v for v, t in zip(recorder.input_values, inputs) if not _is_argument(monitor, t))
        path = _Path(result_recipe, side_effects, descriptions, [], list(recorder.input_values), segments, program,
                     constant_values)
        path.symbolic = symbolic
        path.rebuilds_sizes = symbolic is not None and bool(builder.sizes)
        for recipe in builder.sizes:
            recipe.sym = None  # (the shape environment stays with the plan, if any, not with its recipes)
        return path

    def _compile(self, segment, path, text=None, constant_sizes=(), reference=None, graph_pool=None,
                 held_elsewhere=0, shared=None):
        with self._timed("compile_s"):
            return self._new_executor(segment, path, text, constant_sizes, reference, graph_pool, held_elsewhere,
                                      shared)

    def _new_executor(self, segment, path, text, constant_sizes, reference, graph_pool, held_elsewhere,
                      shared=None):
        executor = _C.compile_graph_text(text or segment.text, self.fuse)
        if shared is not None:
            executor.share_constants(shared)
        if path.symbolic is not None:
            executor.use_size_arguments(list(constant_sizes))
            if reference is not None:
                try:
                    executor.use_reference(_C.compile_graph_text(reference, self.fuse))
                except Exception as e:  # the sizes' origins stay guessed by value
                    log_event("recompiles", f"dynamic shapes: no reference lowering ({type(e).__name__}: {e})")
        if _flag("DEEPVISOR_VALIDATE_CUDA"):
            executor.validate_cuda(90)
        # Values an earlier segment made: a new tensor on every call.
        inputs = set(path.input_values)
        produced = [v not in inputs for v in segment.inputs]
        executor.enable_cuda_graph([v in path.constant_values for v in segment.inputs], graph_pool, produced,
                                   held_elsewhere)
        return executor

    def _add_root(self, path, program, reason):
        if path is None:
            return
        if reason is None:
            try:
                plan = self._plan_of(path)
            except Exception as e:
                if _flag("DEEPVISOR_STRICT"):
                    raise
                reason = f"compilation failed: {type(e).__name__}: {e}"
        if reason is not None:
            plan = _Plan(eager_reason=reason, descriptions=path.descriptions)
            plan.last_call = self._calls
            self._entries[self._plans.add(program, None)] = plan
            self._note_eager(reason)
            return
        plan_id = self._plans.add(program, plan.executor)
        if plan.symbolic is not None and plan.tree is None:
            self._plans.set_dynamic(plan_id, list(plan.symbolic.positions))
        plan.last_call = self._calls
        self._entries[plan_id] = plan
        self._stats["captures"] += 1
        self._after_capture(path)

    def _plan_of(self, path):
        if path.symbolic is not None:
            # The instances' CUDA graphs (one per shape) share one memory pool, and
            # each segment's instances the results of its constant steps.
            pool = _C.GraphPool()
            shared = [_C.SharedConstants() for _ in path.segments]
            plan = SymbolicPlan(path.symbolic,
                                lambda i, text, constants, reference: self._compile(
                                    path.segments[i], path, text, constants, reference, pool, shared=shared[i]))
            instance = plan.executors_for(path.symbolic.inputs)  # this call's instance: the capture's own texts
            path.symbolic.inputs = None
            executors = [instance.at(i, plan.counts) for i in range(len(path.segments))]
            path.fallbacks = [note for e in executors for note in _fallback_notes(e)]
            tree = None
            if len(path.segments) > 1:  # one path of segments; their executors come per layout
                tree = self._subtree(path, path.segments, compiled=False)
            return _Plan(path=path, symbolic=plan, tree=tree)
        if len(path.segments) == 1:
            executor = self._compile(path.segments[0], path)
            path.fallbacks = list(_fallback_notes(executor))
            return _Plan(path=path, executor=executor)
        tree = self._subtree(path, path.segments)
        path.fallbacks = [note for n in tree.nodes() for note in _fallback_notes(n.executor)]
        return _Plan(path=path, tree=tree)

    def _after_capture(self, path):
        for op, reason in path.fallbacks:
            log_event("fallbacks", f"{self._name()}: {op} runs as a fallback ({reason})")
        log_event("guards", f"{self._name()}: new version, guards: " + "; ".join(path.descriptions))
        if self.dump_dir:
            for segment in path.segments:
                self._dump(segment.text)

    # -- eager calls ---------------------------------------------------------------
    def _eager(self, reason, args, kwargs):
        self._note_eager(reason)
        return self.fn(*args, **kwargs)

    def _note_eager(self, reason):
        self._stats["eager_calls"] += 1
        if reason not in self._eager_reasons:
            log.warning("deepvisor: %s runs eagerly: %s", self._name(), reason)
            log_event("fallbacks", f"{self._name()} runs eagerly: {reason}")
        self._eager_reasons[reason] = self._eager_reasons.get(reason, 0) + 1

    def _internal_failure(self, error, args, kwargs, plan_id=None):
        # A kernel that finds an index out of range reports the program's own
        # error on these inputs: eager raises it too, in its own words, so the
        # call runs eagerly to raise that, even under DEEPVISOR_STRICT. (The
        # interpreter raises IndexOutOfRange; a CUDA kernel traps instead, a
        # sticky context error, as eager's device-side assert is.)
        program_error = isinstance(error, _C.IndexOutOfRange)
        # A size that depends on the data changed since the capture: a limit
        # of the plan, not a failure (this version runs eagerly from now on).
        data_dependent = isinstance(error, _C.DataDependentSize)
        if _flag("DEEPVISOR_STRICT") and not program_error and not data_dependent:
            raise error
        reason = f"{error}: the plan was compiled for the capture's size" if data_dependent else \
            f"internal failure: {type(error).__name__}: {error}"
        with self._lock:
            plan_id = self._plans.failed_id() if plan_id is None else plan_id
        # The call runs eagerly. If the program fails there too, the error was
        # the program's own on these inputs (an index out of range): it
        # propagates and the plan stays. Else the plan failed where eager does
        # not (a kernel NVRTC rejects, no CUDA driver) and would fail again:
        # that version runs eagerly from now on.
        self._note_eager(reason)
        result = self.fn(*args, **kwargs)
        if program_error and _flag("DEEPVISOR_STRICT"):
            raise error  # eager accepted indices a kernel rejected: a bug
        with self._lock:
            if plan_id in self._entries:
                self._plans.make_eager(plan_id)
                self._entries[plan_id].eager_reason = reason
        return result

    # -- introspection --------------------------------------------------------------
    def executors(self):
        for plan in self._entries.values():
            yield from plan.executors()

    def plans(self):
        return list(self._entries.values())

    def stats(self):
        s = dict(self._stats)
        s.update(self._seconds)
        s.update(kernels=0, nvrtc_compiles=0, disk_cache_hits=0, fallback_ops={}, extern_ops={})
        s.update(kernels_autotuned=0, autotune_s=0.0, autotune_cache_hits=0, autotune_compiles=0, kernels_ready_s=0.0)
        s.update(cpu_compiled_kernels=0, cpu_interpreted_kernels=0, host_compiles=0, host_cache_hits=0)
        s["inputs_prepared"] = s["constant_kernels"] = s["constant_kernel_runs"] = s["constant_kernels_not_kept"] = 0
        s["library_results_in_block"] = s["library_results_beside_block"] = s["graph_pool_room_bytes"] = 0
        s["graph_block_window_bytes"] = s["block_bytes"] = s["graph_beside_block_bytes"] = 0
        s["graph_outside_pool_bytes"] = 0
        s["cpu_interpreted_reasons"] = []
        s["cuda_graphs"] = 0
        for executor in self.executors():
            es = executor.stats()
            for k in ("kernels", "nvrtc_compiles", "disk_cache_hits", "kernels_autotuned", "autotune_s",
                      "kernels_ready_s", "autotune_cache_hits", "autotune_compiles", "cpu_compiled_kernels",
                      "cpu_interpreted_kernels", "host_compiles", "host_cache_hits", "inputs_prepared",
                      "constant_kernels", "constant_kernel_runs", "constant_kernels_not_kept",
                      "library_results_in_block", "library_results_beside_block", "graph_pool_room_bytes",
                      "graph_block_window_bytes", "block_bytes", "graph_beside_block_bytes",
                      "graph_outside_pool_bytes"):
                s[k] += es[k]
            s["cpu_interpreted_reasons"] += es["cpu_interpreted_reasons"]
            for op, n in es["fallback_ops"].items():
                key = "extern_ops" if is_extern(op) else "fallback_ops"
                s[key][op] = s[key].get(op, 0) + n
            s["cuda_graphs"] += es["cuda_graph"] == "graphed"
        s["graphs"] = sum(1 for p in self._entries.values() if p.eager_reason is None)
        s["versions"] = sum(p.versions() for p in self._entries.values())
        symbolic = [p.symbolic for p in self._entries.values() if p.symbolic is not None]
        s["count_instances"] = sum(p.count_instances() for p in symbolic)
        s["instances"] = sum(1 for p in symbolic for i in p.instances.values() if i)
        s["instances_evicted"] = sum(p.instances_evicted for p in symbolic)
        s["instances_declined"] = sum(p.instances_declined for p in symbolic)
        s["eager_reasons"] = dict(self._eager_reasons)
        return s

    def reset(self):
        with self._lock:
            self._plans = _C.PlanCache()
            self._entries = {}
            self._evicted = {}
            self._evictions.clear()

    def _name(self):
        return qualname(self.fn)

    def _dump(self, text):
        os.makedirs(self.dump_dir, exist_ok=True)
        base = re.sub(r"[^A-Za-z0-9_.-]", "_", self._name())
        n = sum(1 for _ in self.executors())
        # Never overwrite: two functions with one name (lambdas, methods of
        # two instances) or two processes may dump into the same directory.
        for k in itertools.count(1):
            path = os.path.join(self.dump_dir, f"{base}-{n}.dvg" if k == 1 else f"{base}-{n}.{k}.dvg")
            try:
                with open(path, "x") as f:
                    f.write(text)
                break
            except FileExistsError:
                continue
        log.info("deepvisor: wrote %s", path)


_registry = weakref.WeakSet()


def compiled_functions():
    """The compiled functions alive now (deepvisor.compile's and the backend's)."""
    return list(_registry)


def _under_tracing(args, kwargs):
    from torch._subclasses.fake_tensor import FakeTensor
    from torch.utils._python_dispatch import _get_current_dispatch_mode
    if _get_current_dispatch_mode() is not None:
        return True
    return any(isinstance(a, FakeTensor) for a in (*args, *kwargs.values()))


def _user_function_modes():
    """The type names of the torch function modes on the stack, save the
    default device's (torch.set_default_device, `with torch.device(...)`):
    the device its factories ran on is in the plan, and the guards check it."""
    from torch.utils._device import DeviceContext
    modes = (torch._C._get_function_stack_at(i) for i in range(torch._C._len_torch_function_stack()))
    return [type(m).__qualname__ for m in modes if not isinstance(m, DeviceContext)]


def _is_argument(monitor, t):
    node = monitor.node_of(t)
    return node is not None and not node.pinned


def _name_of(monitor, t):
    node = monitor.node_of(t)
    return None if node is None else node.name


def _note_reached_sizes(reached, monitor, recorder, direct):
    """Tells `reached` (DynamicDims) the sizes of the graph inputs this
    capture reached from the arguments, so that the next capture makes a
    dimension that changed symbolic."""
    passed = {id(t) for t in direct}
    for t in recorder.input_tensors():
        if id(t) not in passed and _is_argument(monitor, t):
            reached.saw_reached(_name_of(monitor, t), t)


def _argument_names(fn):
    target = fn.forward if isinstance(fn, torch.nn.Module) else fn
    try:
        params = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


# Library calls by design (matmul, convolution, attention), not ops waiting
# for a lowering: stats() counts them as extern_ops.
_EXTERN_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear",
               "aten::addmv", "aten::mv", "aten::dot", "aten::convolution", "aten::_convolution",
               "aten::cudnn_convolution", "aten::mkldnn_convolution", "aten::_scaled_dot_product",
               "aten::scaled_dot_product_attention", "aten::_native_multi_head_attention", "aten::_flash_attention",
               "aten::_efficient_attention", "aten::_grouped_mm")


def is_extern(op):
    return op.startswith(_EXTERN_OPS)


def _fallback_notes(executor):
    for note in executor.stats()["fallback_reasons"]:
        op, _, reason = note.partition(": ")
        if not is_extern(op):
            yield op, reason
