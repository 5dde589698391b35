"""Dynamic shapes: one capture serves every size of a symbolic dimension.

Static on the first shape: a dimension of an argument that takes a second
value (or every dimension, with compile(dynamic=True), or one marked with
mark_dynamic) is captured as a symbol, and later sizes need no capture. So is
one of a tensor reached from an argument (a KV cache's keys, an attribute of
an argument; an item of a list passed in), told apart by the expression that
reaches it: the shadow gives it symbols when the run first uses it.

The capture run stays real: the program sees real tensors only. Beside it a
*shape shadow* (a TorchFunctionMode) repeats every torch function the program
calls on fake tensors whose symbolic dimensions are SymInts of a ShapeEnv,
and a second Recorder records what those calls run. Both recorders see the
same ATen ops (ATen's decompositions run on the SymInts in the shadow, so an
int a decomposition computes from a size, such as the rows of a flattened
matmul operand, comes out as an expression), and they write the same graph,
the shadow's with `{expression}` where the real one has a number. The two
texts are zipped into a Template; every expression must give the real run's
number at the capture's sizes, or the capture stays static. A new size then
fills in the expressions and compiles the text (its kernels, which take
their sizes as arguments, come from the cache: no NVRTC compile).

The ShapeEnv collects what the program's ops assumed of the symbols (two
inputs sharing a dimension, a broadcast of size 1, a dimension at least 2)
as guards; a call whose sizes break them misses the plan and captures again.

The sizes of a result sized by the data (nonzero, x[mask]: a decision on
sizes, _capture.py) are counts: the shadow's op gives a fresh unbacked symbol
(u0), whose value a replay takes from the decision's outcome; the segments
after it are compiled per count (_Instance). The capture stays static where
an op assumed a count's value (a replacement or a runtime assertion of the
ShapeEnv), where Python reads a count, and at a count below MIN_COUNT.

Not yet symbolic (the capture stays static, with the reason logged): Python
that reads a symbolic size (x.size(1), x.shape, len(x)), tensor data that
reaches Python (a decision), escaped numbers, ops recorded as one node.
"""

import collections
import contextlib
import functools
import inspect
import logging
import math
import os
import re
import threading
import weakref

import torch
import torch.utils._pytree as pytree
from torch._dispatch.python import enable_python_dispatcher
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import _disable_current_modes

from ._log import log_event

_T = torch.Tensor
_F = torch.nn.functional
_DROPOUTS = {_F.dropout, _F.dropout1d, _F.dropout2d, _F.dropout3d, _F.alpha_dropout, _F.feature_alpha_dropout,
             torch.dropout, torch.alpha_dropout, torch.feature_dropout, torch.feature_alpha_dropout}
# Composite torch functions the shadow runs through ATen's C++ decomposition.
_CPP_DECOMPOSED = {torch.batch_norm, torch.nn.functional.batch_norm}
# Torch functions that hand sizes to Python; those of _SIZES give SizeInts.
_SIZES = {_T.size, _T.shape.__get__, _T.numel, _T.nelement, torch.numel}
_SIZE_READS = {_T.size, _T.shape.__get__, _T.numel, _T.nelement, _T.__len__, _T.stride, _T.storage_offset,
               _T.is_contiguous, _T.__iter__, torch.numel}
# Torch functions that hand tensor data to Python (the real recorder makes them decisions).
_DATA_READS = {_T.__bool__, _T.item, _T.tolist, _T.__int__, _T.__float__, _T.__index__, _T.__complex__, _T.numpy,
               _T.__array__, _T.__format__, _T.__repr__, _T.data_ptr, _T.is_nonzero, torch.equal, _T.equal}
# Torch functions that read no size and run no op.
_METADATA = {_T.dtype.__get__, _T.device.__get__, _T.dim, _T.ndim.__get__, _T.is_cuda.__get__,
             _T.requires_grad.__get__, _T.layout.__get__, _T.ndimension, _T.is_floating_point, _T.is_complex,
             _T.grad_fn.__get__, _T.is_leaf.__get__, _T.get_device, _T.__hash__}

# Torch functions that tell Python a tensor's metadata (a tensor's hash is its
# identity): a tensor reached from the arguments that the program reads this
# way is an input of the capture (Recorder.note_metadata_read), in both recorders.
METADATA_READS = (_SIZE_READS | _METADATA | {_T.element_size, _T.nbytes.__get__, _T.itemsize.__get__,
                                               _T.is_sparse.__get__, _T.is_quantized.__get__}) - {_T.__hash__}


def _skip_source_locations(shape_env):
    """Our ShapeEnv records no user source location per symbol and guard:
    finding one walks the stack against a list of torch's own files, and
    building that list imports Dynamo, Inductor and networkx (about 380
    modules, 0.5 s with bytecode cached, 1.5 s without). The locations only
    decorate ShapeEnv's messages; ours name the symbols' sources themselves."""
    import traceback

    from torch.fx.experimental.symbolic_shapes import SLoc
    if not hasattr(shape_env, "_get_stack_summary"):  # another torch: keep its own
        return
    here = traceback.FrameSummary(__file__, 0, "deepvisor capture")
    shape_env._get_stack_summary = lambda is_debug=False, framework_loc=None: (SLoc(framework_loc or here, None), "")


# What a symbol stands for: a size or a stride of an argument, or a count:
# a size of a result sized by the data (nonzero, a boolean mask's selection...).
_SIZE, _STRIDE, _COUNT = 0, 1, 2
# The least count a symbolic plan takes: 0 and 1 may take other paths in
# ATen's decompositions (and fake tensors assume neither), as with Dynamo's
# sizes; those counts stay versions of their own.
MIN_COUNT = 2


class ShapeShadow(TorchFunctionMode):
    """During a capture with symbolic dimensions: repeats each torch function
    on fake tensors (see the module's docstring). `failed` says why the
    capture cannot be symbolic, once something could not be followed."""

    def __init__(self, arguments, dynamic_dims, is_argument, real_recorder, reached=None, name_of=None):
        super().__init__()
        from torch.fx.experimental.symbolic_shapes import ShapeEnv  # (symbolic_shapes and Dynamo: 0.7 s to import)

        from ._capture import Recorder
        self.real_recorder = real_recorder
        self.failed = None
        self.shape_env = ShapeEnv(duck_shape=False)
        _skip_source_locations(self.shape_env)
        self.fake_mode = FakeTensorMode(shape_env=self.shape_env)
        self._fakes = {}            # id(real tensor) -> (weak reference to it, its fake), while it lives
        self._reals = {}            # id(fake) -> weak reference to the real tensor
        # symbol name -> (position among `arguments`, dim, _SIZE or _STRIDE),
        # or for a count (decision index, (result, dim), _COUNT)
        self.symbol_sources = {}
        self.count_dims = {}        # decision index -> [(result, dim, count symbol or None)] (a decision on sizes)
        self.symbol_hints = {}      # symbol name -> its size in this run
        self.dynamic = []           # (position among `arguments`, fake) of the arguments with symbolic dims
        # The tensors passed directly, then those reached from the arguments
        # (cache.k: an attribute of an argument) that the run gave symbols,
        # in the order it first used them.
        self.arguments = list(arguments)
        self._is_argument = is_argument
        self._reached = reached      # DynamicDims: which dims of a reached tensor are symbolic (None: none)
        self._name_of = name_of      # a reached tensor -> the expression that reaches it (cache.k)
        fakes = []
        for k, t in enumerate(arguments):
            dims = dynamic_dims.get(k, ())
            fake = self._fake_argument(k, t, dims) if dims else self._static_fake(t)
            self._pair(t, fake)
            fakes.append(fake)
        self.recorder = Recorder(fakes, is_argument=lambda f: is_argument(self._real_of(f)))
        # Factories make no known values in a symbolic capture: the real run
        # cannot tell `torch.arange(n)` of a symbolic n from one of a constant.
        # (Also with counts symbolic alone: the shadow does not know the
        # constants a factory makes, so both recorders record their ops.)
        real_recorder.factories_known = self.recorder.factories_known = False
        self.tracker = lambda n: None  # the state monitor's track(): it reports each use of a SizeInt
        self.live = True               # False after the run: SizeInts left in the program's state are ints

    def _fake_argument(self, k, t, dims):
        from torch._dynamo.source import LocalSource
        from torch.fx.experimental.symbolic_shapes import DimDynamic, StatelessSymbolicContext
        sizes = [DimDynamic.DYNAMIC if d in dims else DimDynamic.STATIC for d in range(t.dim())]
        context = StatelessSymbolicContext(dynamic_sizes=sizes)
        fake = self.fake_mode.from_tensor(t, symbolic_context=context, source=LocalSource(f"arg{k}"))
        # A symbol is a size, or a stride that is not a product of sizes (a view's).
        for d in range(t.dim()):
            for kind, value, hint in ((_SIZE, fake.shape[d], t.shape[d]), (_STRIDE, fake.stride()[d], t.stride()[d])):
                if _symbolic(value) and value.node.expr.is_Symbol:
                    self.symbol_sources.setdefault(str(value.node.expr), (k, d, kind))
                    self.symbol_hints.setdefault(str(value.node.expr), hint)
        if any(isinstance(s, torch.SymInt) for s in fake.shape):
            self.dynamic.append((k, fake))
        return fake

    def _static_fake(self, t):
        # With no mode on: making the fake of a view runs torch functions on
        # the fake base (as_strided), which the capture's recorder (a
        # dispatch mode) would record as ops of the real graph, on a fake
        # input that the guards would then check.
        with _disable_current_modes(), torch._C.DisableTorchFunction():
            return self.fake_mode.from_tensor(t, static_shapes=True)

    def _pair(self, real, fake):
        # Weakly, as the capture's recorder does: the run's intermediates die
        # when the program drops them (fakes hold no memory and stay).
        key = id(real)
        fakes = self._fakes
        real_ref = weakref.ref(real, lambda _: fakes.pop(key, None))
        self._fakes[key] = (real_ref, fake)
        self._reals[id(fake)] = real_ref

    def _real_of(self, f):
        ref = self._reals.get(id(f))
        real = ref() if ref is not None else None
        return f if real is None else real

    def fail(self, reason):
        if self.failed is None:
            self.failed = reason.split("\n")[0]  # (torch's data-dependent errors go on for lines)

    # -- the shadow -------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is _T.__contains__ and self.failed is None and len(args) == 2 and not kwargs and \
                isinstance(args[1], (torch.Tensor, int, float, bool)):
            return self._contains(*args)
        if self.failed is None and func in METADATA_READS and args and isinstance(args[0], torch.Tensor):
            self.recorder.note_metadata_read(self._shadow_of(args[0]))  # as the real recorder will
        if self.failed is not None or func in _METADATA:
            return func(*args, **kwargs)
        decisions, nodes = len(self.real_recorder.decisions), len(self.real_recorder.node_lines)
        out = func(*args, **kwargs)
        if func in _DROPOUTS and len(self.real_recorder.node_lines) == nodes and \
                any(out is a for a in args) and self.fake_of(out) is not None:
            # Dropout in eval handed its input back, nothing run: ATen's Python
            # decomposition would clone it, the C++ one does not.
            return out
        if func in _DATA_READS:
            if len(self.real_recorder.decisions) == decisions and self._known_for_this_size_only(args):
                self.fail(f"{_name(func)} read a value that holds for this size only")
                return out
            self._repeat_decisions(decisions)
            return out
        made = self.real_recorder.decisions[decisions:]
        if any(d.op != "sizes" for d in made):
            self.fail(f"{_name(func)} read tensor data")
            return out
        shadow_decisions = len(self.recorder.decisions)
        try:
            shadow = self._call_shadow(func, args, kwargs)
        except Exception as e:  # never break the program: the capture stays static
            self.fail(f"the shape shadow could not follow {_name(func)}: {type(e).__name__}: {e}")
            return out
        if func in _SIZE_READS:
            return self._size_read(func, out, shadow)
        self._pair_outputs(func, out, shadow)
        if made:
            try:
                self._counts(func, decisions, made, self.recorder.decisions[shadow_decisions:])
            except Exception as e:  # never break the program: the capture stays static
                self.fail(f"the shape shadow could not make counts of {_name(func)}: {type(e).__name__}: {e}")
        return out

    def _contains(self, t, element):
        """`element in t` as the steps torch takes, run under this mode again:
        Tensor.__contains__ runs them inside one torch function, where the
        shadow sees neither the comparison nor the decision on its outcome
        (`pad_token_id in input_ids`, a check in transformers' forward)."""
        with self:
            return bool((element == t).any())

    def _counts(self, func, first, real, fake):
        """Decisions on the sizes of results sized by the data: each size the
        shadow's op gave as a fresh unbacked symbol is a count, a symbol whose
        value a replay takes from the decision."""
        from torch.fx.experimental.symbolic_shapes import _constrain_range_for_size, free_unbacked_symbols
        if len(real) != len(fake):
            self.fail(f"{_name(func)} made other decisions on fake tensors")
            return
        for i, (r, f) in enumerate(zip(real, fake), first):
            dims = []
            if len(r.outcome) != len(f.outcome) or any(len(a) != len(b) for a, b in zip(r.outcome, f.outcome)):
                self.fail(f"{_name(func)} gave results of other ranks on fake tensors")
                return
            for k, (sizes, syms) in enumerate(zip(r.outcome, f.outcome)):
                for d, (n, sym) in enumerate(zip(sizes, syms)):
                    if not _symbolic(sym) or not free_unbacked_symbols(sym.node.expr):
                        dims.append((k, d, None))
                        continue
                    name = str(sym.node.expr)
                    if not sym.node.expr.is_Symbol or n < MIN_COUNT or self.symbol_hints.get(name, n) != n:
                        self.fail(f"{_name(func)} gave a count of {n} ({name}): this count only")
                        return
                    if name not in self.symbol_sources:
                        self.symbol_sources[name] = (i, (k, d), _COUNT)
                        # The plan takes counts of at least MIN_COUNT: what the
                        # ShapeEnv may assume (a span, a slice: no guard).
                        upper = self.shape_env.var_to_range[sym.node.expr].upper
                        _constrain_range_for_size(sym, min=MIN_COUNT, max=upper)
                    self.symbol_hints[name] = n
                    dims.append((k, d, name))
            self.count_dims[i] = dims

    def assumed_counts(self):
        """What ops assumed of the counts (a count replaced by a number, as an
        add with a tensor of 7 rows makes u0 = 7; a runtime assertion): a
        reason the plan may not take other counts, or None."""
        counts = {n for n, (_, _, kind) in self.symbol_sources.items() if kind == _COUNT}
        if not counts:
            return None
        replaced = sorted(str(s) for s in self.shape_env.replacements if str(s) in counts)
        asserted = sorted(str(s) for s, a in self.shape_env.deferred_runtime_asserts.items()
                          if a and (s is None or str(s) in counts))
        if replaced or asserted:
            return f"ops assumed values of counts ({', '.join(replaced + asserted)})"
        return None

    def _size_read(self, func, out, shadow):
        """Sizes the program reads: SizeInts where they are symbolic (only
        .size()/.shape/.numel(): the rest are specialized, a guard each)."""
        from torch.fx.experimental.symbolic_shapes import free_unbacked_symbols
        if any(_symbolic(v) and free_unbacked_symbols(v.node.expr) for v in pytree.tree_leaves(shadow)):
            self.fail(f"Python reads a size that depends on the data ({_name(func)})")
            return out
        if func in _SIZES and isinstance(out, int) and _symbolic(shadow):
            return self.size_int(out, shadow)
        if func in _SIZES and isinstance(out, tuple) and len(out) == len(shadow):
            return torch.Size(self.size_int(o, s) if _symbolic(s) else o for o, s in zip(out, shadow))
        for value in pytree.tree_leaves(shadow):
            if _symbolic(value):
                if not isinstance(value, torch.SymInt):
                    self.fail(f"Python reads a symbolic {_name(func)}")
                    break
                _guard_int(value)  # len(x), x.stride(), iteration...: this size only
                log_event("recompiles", f"dynamic shapes: {value.node.expr} kept static: {_name(func)}")
        return out

    def size_int(self, value, sym):
        n = SizeInt(value)
        n._sym, n._shadow = sym, self
        self.tracker(n)
        return n

    def specialize(self, n, why):
        """The program used a size in a way the shadow cannot follow (a C
        function, a list index, state it keeps): the capture holds for this
        value only."""
        if type(n) is SizeInt and n._shadow is self and self.live and _symbolic(n._sym):
            from ._capture import _user_site
            log_event("recompiles", f"dynamic shapes: {n._sym.node.expr} = {int.__repr__(n)} kept static: {why} at "
                                    f"{_user_site()}")
            _guard_int(n._sym)

    def _known_for_this_size_only(self, args):
        """Whether the program reads a tensor the real recorder knows (so it
        made no decision: every replay computes the same) whose shadow is no
        known value (made from a symbolic size: `torch.arange(n)`), where
        the outcome would hold for this size only."""
        for t in pytree.tree_leaves(args):
            if isinstance(t, torch.Tensor) and self.real_recorder.knows(t):
                fake = self.fake_of(t)
                if fake is None or not self.recorder.knows(fake):
                    return True
        return False

    def _repeat_decisions(self, start):
        """Tensor data the program read (a decision of the real recorder):
        the shadow's graph is cut at the same place."""
        for d in self.real_recorder.decisions[start:]:
            fakes = [self.fake_of(t) for t in d.tensors]
            if any(f is None for f in fakes):
                self.fail("a decision on a tensor the shadow did not follow")
                return
            self.recorder.add_decision(d.op, fakes, d.outcome)

    def specialize_all(self, value):
        _map_shadow(lambda v: self.specialize(v, "returned") if type(v) is SizeInt else None, value)

    def _call_shadow(self, func, args, kwargs):
        _quiet_fake_kernels()
        _in_shadow.depth = getattr(_in_shadow, "depth", 0) + 1
        try:
            return self._call_shadow_quietly(func, args, kwargs)
        finally:
            _in_shadow.depth -= 1

    def _call_shadow_quietly(self, func, args, kwargs):
        sargs, skwargs = _map_shadow(self._shadow_of, (args, kwargs))
        direct = _upsample_as_real(func, sargs, skwargs)
        if direct is not None:
            func, sargs, skwargs = direct
        # The Python dispatcher runs ATen's SymInt-aware Python decompositions of
        # composite ops (matmul...) where the C++ ones need concrete sizes; for
        # batch norm the C++ one is fine and picks the op the real run picks
        # (cuDNN's on a GPU); a direct upsample would be decomposed.
        cpp = func in _CPP_DECOMPOSED or direct is not None
        dispatcher = contextlib.nullcontext() if cpp else enable_python_dispatcher()
        with _disable_current_modes(), torch._C.DisableTorchFunction(), dispatcher, self.fake_mode, self.recorder:
            return func(*sargs, **skwargs)

    def _shadow_of(self, x):
        if type(x) is SizeInt and x._shadow is self:
            return x._sym
        if not isinstance(x, torch.Tensor):
            return x
        entry = self._fakes.get(id(x))
        if entry is not None and entry[0]() is x:
            return entry[1]
        # A tensor from outside the ops seen: one reached from the arguments
        # (symbolic where its sizes changed), a parameter, a constant.
        fake = self._reached_fake(x)
        if fake is None:
            fake = self._static_fake(x)
        self._pair(x, fake)
        return fake

    def _reached_fake(self, t):
        """A fake with symbols for a tensor reached from the arguments (an
        attribute of one, an item of a list passed in: a growing KV cache)
        whose dimensions changed between captures, else None."""
        if self._reached is None or not self._is_argument(t):
            return None
        name = self._name_of(t)
        dims = self._reached.reached_dims(name, t) if name is not None else set()
        if not dims:
            return None
        k = len(self.arguments)
        self.arguments.append(t)
        # No mode on (see _static_fake): we are inside the run's torch function.
        with _disable_current_modes(), torch._C.DisableTorchFunction():
            return self._fake_argument(k, t, dims)

    def _pair_outputs(self, func, out, shadow):
        real_leaves, fake_leaves = pytree.tree_leaves(out), pytree.tree_leaves(shadow)
        if len(real_leaves) != len(fake_leaves):
            self.fail(f"{_name(func)} gave different results on fake tensors")
            return
        for r, f in zip(real_leaves, fake_leaves):
            if isinstance(r, torch.Tensor) and isinstance(f, torch.Tensor):
                self._pair(r, f)
            elif isinstance(r, torch.Tensor) or isinstance(f, torch.Tensor) or _symbolic(f):
                self.fail(f"{_name(func)} returned a symbolic size or a different result on fake tensors")
                return

    def fake_of(self, t):
        entry = self._fakes.get(id(t))
        return entry[1] if entry is not None and entry[0]() is t else None

    # -- after the run -----------------------------------------------------------------------
    def template(self, real_text, shadow_text):
        """The Template of the capture, or None (with `failed` set)."""
        if self.failed is not None:
            return None
        try:
            return Template(real_text, shadow_text, self.symbol_sources, self.symbol_hints)
        except _Mismatch as e:
            self.fail(str(e))
            return None

    def guard_code(self, placeholders):
        """A Python expression over L['a0'], L['a1']... (the placeholders'
        tensors) that holds where the capture's assumptions about the symbols do."""
        return self.shape_env.produce_guards_expression(placeholders)


_in_shadow = threading.local()  # depth: the shadow's calls on this thread


class _ShadowFailures(logging.Filter):
    """Drops FakeTensorMode's error log of a fake kernel that failed inside
    the shadow (a guard on a count, say): the shadow catches the error and
    keeps the capture static, with its own reason logged."""

    def filter(self, record):
        return not getattr(_in_shadow, "depth", 0)


@functools.lru_cache(maxsize=None)
def _quiet_fake_kernels():
    logging.getLogger("torch._subclasses.fake_tensor").addFilter(_ShadowFailures())


def _symbolic(x):
    """A SymInt that is not a constant, or any SymFloat or SymBool."""
    if isinstance(x, torch.SymInt):
        return x.node.maybe_as_int() is None
    return isinstance(x, (torch.SymFloat, torch.SymBool))


def _upsample_as_real(func, args, kwargs):
    """F.interpolate(mode="nearest") of a 4-d tensor by whole scale factors,
    as the op the real run records: (op, args, kwargs), else None.

    The real run's ATen computes the output size from the scale factors in
    C++ and records upsample_nearest2d.default; on fake tensors the Python
    dispatcher decomposes the call into index arithmetic on SymFloats
    instead (another graph), and the C++ path makes the sizes concrete.
    Here the output sizes are the symbolic size times the factor (exact for
    whole factors) and the op is called directly, with the factors as its
    scales, as ATen's C++ calls it. (Bilinear's op has no SymInt-aware
    kernel off the Python dispatcher: those captures stay static.)"""
    if func is not _F.interpolate:
        return None
    try:
        bound = inspect.signature(_F.interpolate).bind(*args, **kwargs)
    except TypeError:
        return None
    bound.apply_defaults()
    bound = bound.arguments
    x, scale, mode = bound["input"], bound["scale_factor"], bound["mode"]
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or bound.get("size") is not None or scale is None:
        return None
    if mode != "nearest" or bound.get("recompute_scale_factor") or bound.get("antialias"):
        return None
    scales = list(scale) if isinstance(scale, (list, tuple)) else [scale, scale]
    if len(scales) != 2 or not all(isinstance(s, (int, float)) and float(s) == int(s) and s >= 1 for s in scales):
        return None
    scales = [float(s) for s in scales]
    out_size = [x.shape[2] * int(scales[0]), x.shape[3] * int(scales[1])]
    return torch.ops.aten.upsample_nearest2d.default, (x, out_size, scales[0], scales[1]), {}


def _name(func):
    return getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)


def _guard_int(sym):
    from torch.fx.experimental.symbolic_shapes import guard_int
    return guard_int(sym)


def _map_shadow(fn, value):
    """fn over the leaves of `value`, into lists, tuples, dicts and slices
    (`x[:, :n]` hands the shadow a slice holding a SizeInt)."""
    if isinstance(value, slice):
        return slice(_map_shadow(fn, value.start), _map_shadow(fn, value.stop), _map_shadow(fn, value.step))
    if isinstance(value, torch.Size):
        return tuple(_map_shadow(fn, v) for v in value)
    if isinstance(value, (list, tuple)):
        mapped = [_map_shadow(fn, v) for v in value]
        return type(value)(mapped) if type(value) in (list, tuple) else type(value)(*mapped) \
            if hasattr(value, "_fields") else type(value)(mapped)
    if isinstance(value, dict):
        return {k: _map_shadow(fn, v) for k, v in value.items()}
    return fn(value)


def _binary(op):
    def method(self, other):
        result = getattr(int, op)(self, other)
        shadow = self._shadow
        if result is NotImplemented or not shadow.live or not isinstance(result, int) or isinstance(result, bool):
            if isinstance(result, float):
                shadow.specialize(self, op)
                if type(other) is SizeInt:
                    shadow.specialize(other, op)
            return result
        if type(other) is SizeInt and other._shadow is not shadow:
            return result
        sym = getattr(self._sym, op)(other._sym if type(other) is SizeInt else other)
        return shadow.size_int(result, sym) if _symbolic(sym) else result
    return method


def _comparison(op):
    def method(self, other):
        result = getattr(int, op)(self, other)
        shadow = self._shadow
        if result is NotImplemented or not shadow.live or not isinstance(other, int) or isinstance(other, bool):
            return result
        if type(other) is SizeInt and other._shadow is not shadow:
            return result
        decided = bool(getattr(self._sym, op)(other._sym if type(other) is SizeInt else other))  # a guard
        if decided != result:
            shadow.fail("a size comparison went another way on the shadow")
        return result
    return method


def _specializing(op):
    def method(self, *args):
        self._shadow.specialize(self, op)
        return getattr(int, op)(self, *args)
    return method


class SizeInt(int):
    """A size the program read in Python during a capture with symbolic
    dimensions: an int (its value in this run) that carries its SymInt.
    Arithmetic gives SizeInts, comparisons give bools and guards on the
    symbols, a torch function receives the SymInt in the shadow. What the
    shadow cannot follow specializes it (a guard that it keeps this value):
    __hash__, formatting, float(), and, through the state monitor, C
    functions, list indices and stores into the program's state."""

    for _op in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__floordiv__",
                "__rfloordiv__", "__mod__", "__rmod__", "__truediv__", "__rtruediv__", "__pow__", "__rpow__"):
        locals()[_op] = _binary(_op)
    for _op in ("__lt__", "__le__", "__gt__", "__ge__", "__eq__", "__ne__"):
        locals()[_op] = _comparison(_op)
    for _op in ("__hash__", "__format__", "__float__", "__int__", "__index__", "__str__", "__repr__",
                "__and__", "__or__", "__xor__", "__lshift__", "__rshift__", "__invert__", "__abs__"):
        locals()[_op] = _specializing(_op)
    del _op

    def __neg__(self):
        result = int.__neg__(self)
        return self._shadow.size_int(result, -self._sym) if self._shadow.live else result

    def __pos__(self):
        return self

    def __bool__(self):
        return self != 0


def sizes_in(value, depth=2):
    """The SizeInts in an instruction's operand (also inside a slice or a tuple)."""
    if type(value) is SizeInt:
        return [value]
    if depth and isinstance(value, slice):
        return [n for v in (value.start, value.stop, value.step) for n in sizes_in(v, depth - 1)]
    if depth and isinstance(value, tuple):
        return [n for v in value for n in sizes_in(v, depth - 1)]
    return []


class _Mismatch(Exception):
    pass


# Where ATen's Python decompositions (the shadow's) call another op than the
# C++ ones (the real run's) for the same computation: (real op, shadow op).
_SAME_COMPUTATION = {("aten::_unsafe_view.default", "aten::view.default"),
                     ("aten::native_batch_norm.default", "aten::_native_batch_norm_legit_no_training.default")}


def _as_real_decomposition(real, shadow):
    """The shadow's node line as the real run wrote it, where the two ops are
    the same computation: only the op (and its constant arguments) differ."""
    if real == shadow or not real.startswith("node ") or not shadow.startswith("node "):
        return shadow
    real_op, shadow_op = real.split(" ", 2)[1], shadow.split(" ", 2)[1]
    if (real_op, shadow_op) not in _SAME_COMPUTATION:
        return shadow
    if real_op.endswith("_unsafe_view.default"):
        return shadow.replace(shadow_op, real_op, 1)
    # batch norm: the same tensors in and out, no symbolic argument
    same_values = _REFS.findall(real) == _REFS.findall(shadow)
    return real if same_values and "{" not in shadow else shadow


_REFS = re.compile(r"%\d+")
_LAYOUT = re.compile(r"sizes=(\S*) strides=(\S*)")
_ITEMS = re.compile(r"\{[^{}]*\}|[^,]+")
# The ints of a line's sizes=, strides=, offset=, il:[...] and i: fields (not value ids, dtypes or floats).
_INT_LISTS = re.compile(r"il:\[(-?\d+(?:,-?\d+)+)\]")
_LITERAL_INTS = re.compile(r"(?:(?<=sizes=)|(?<=strides=)|(?<=offset=)|(?<=il:\[)|(?<=i:)|(?<=,))(-?\d+)(?=[,\] \n]|$)")


def _unit_strides_as_real(real, shadow):
    """A value line's strides of its size-1 dimensions as the real run wrote
    them: they address nothing (ATen leaves them arbitrary, its kernels and
    fake ones differently)."""
    if not real.startswith("value "):
        return shadow
    r, f = _LAYOUT.search(real), _LAYOUT.search(shadow)
    if r is None or f is None:
        return shadow
    sizes, real_strides, strides = (_ITEMS.findall(x) for x in (r.group(1), r.group(2), f.group(2)))
    if not (len(sizes) == len(real_strides) == len(strides)) or "1" not in sizes:
        return shadow
    strides = [real_strides[d] if sizes[d] == "1" else strides[d] for d in range(len(sizes))]
    return shadow[:f.start(2)] + ",".join(strides) + shadow[f.end(2):]
_EXPR = re.compile(r"\{([^{}]*)\}")
_ALIGNED = re.compile(r"aligned=\d")
_DEVICE = re.compile(r"device=\S+")
_SYMBOL = re.compile(r"\b[a-z]+\d+\b")
# What the expressions of a ShapeEnv print as, evaluated on Python ints.
_FUNCTIONS = {"Max": max, "Min": min, "Mod": lambda a, b: a % b, "PythonMod": lambda a, b: a % b,
              "FloorDiv": lambda a, b: a // b, "CleanDiv": lambda a, b: a // b, "Abs": abs,
              "CeilDiv": lambda a, b: -(-a // b), "floor": lambda a: a, "ceiling": lambda a: a}


_ALIAS = re.compile(r"node aten::alias\.default (%\d+) -> (%\d+)")
_FULL_SLICE = re.compile(r"node aten::slice\.Tensor (%\d+) i:-?\d+ i:0 i:\{([^{}]*)\} i:1 -> (%\d+)")


def _full_slice_as_shadow(real, shadow, hints):
    """A slice whose end reaches its dim's size at this capture is no op to
    the real run (ATen's indexing hands back an alias); on the shadow's
    symbols the end is an expression, not known to be the size (SEW's
    pooled length), so it records the slice. The real line as that slice
    at this capture's numbers: a replay at other sizes slices."""
    a, f = _ALIAS.fullmatch(real), _FULL_SLICE.fullmatch(shadow)
    if a is None or f is None or (a.group(1), a.group(2)) != (f.group(1), f.group(3)):
        return real
    expr = f.group(2)
    names = set(_SYMBOL.findall(expr)) - set(_FUNCTIONS)
    if not names <= set(hints):
        return real
    try:
        value = int(eval(expr, dict(_FUNCTIONS), {n: hints[n] for n in names}))
    except Exception:
        return real
    return shadow.replace("{" + expr + "}", str(value))


class Template:
    """A graph text whose symbolic ints are expressions of the symbols; built
    by zipping the real run's text with the shadow's, line by line."""

    def __init__(self, real_text, shadow_text, symbol_sources, symbol_hints):
        real_lines, shadow_lines = real_text.split("\n"), shadow_text.split("\n")
        if len(real_lines) != len(shadow_lines):
            raise _Mismatch("the shape shadow recorded a different graph (line counts differ)")
        self.parts = []          # per line: [literal, expr index, literal, ...]
        expressions = {}         # expression text -> index
        hints = []
        for real, shadow in zip(real_lines, shadow_lines):
            real = _full_slice_as_shadow(real, shadow, symbol_hints)
            aligned = _ALIGNED.search(real)
            if aligned is not None:  # the shadow's fakes have no address: the real run says
                shadow = _ALIGNED.sub(aligned.group(0), shadow)
            shadow = _as_real_decomposition(real, shadow)
            shadow = _unit_strides_as_real(real, shadow)
            if real.startswith("value ") and " sizes= " in real:
                # A 0-d value (the random state a CUDA attention kernel returns
                # lives on the CPU; a fake kernel puts it on the GPU).
                shadow = _DEVICE.sub(_DEVICE.search(real).group(0), shadow)
            pieces = _EXPR.split(shadow)
            if len(pieces) == 1:
                if real != shadow:
                    raise _Mismatch(f"the shape shadow recorded a different graph: {real!r} vs {shadow!r}")
                self.parts.append([real])
                continue
            pattern = "".join(re.escape(p) if i % 2 == 0 else r"(-?\d+)" for i, p in enumerate(pieces))
            match = re.fullmatch(pattern, real)
            if match is None:
                raise _Mismatch(f"the shape shadow recorded a different graph: {real!r} vs {shadow!r}")
            line = []
            for i, piece in enumerate(pieces):
                if i % 2 == 0:
                    line.append(piece)
                    continue
                if piece not in expressions:
                    expressions[piece] = len(expressions)
                    hints.append(int(match.group(i // 2 + 1)))
                elif hints[expressions[piece]] != int(match.group(i // 2 + 1)):
                    raise _Mismatch(f"{{{piece}}} stands for two numbers")
                line.append(expressions[piece])
            self.parts.append(line)
        names = sorted({name for text in expressions for name in _SYMBOL.findall(text)} - set(_FUNCTIONS))
        unknown = [n for n in names if n not in symbol_sources]
        if unknown:
            raise _Mismatch(f"sizes depend on symbols no argument gives ({', '.join(unknown)})")
        self.symbols = names
        self.sources = [symbol_sources[n] for n in names]
        body = ", ".join(expressions) + ("," if len(expressions) == 1 else "")
        self._evaluate = eval(f"lambda {', '.join(names)}: ({body})", dict(_FUNCTIONS))
        self.num_expressions = len(expressions)
        # Sizes, strides and int arguments written as numbers (the same in every
        # instance), less those an expression also gave in the capture: the
        # index constants kernels keep as literals. (One list for every
        # instance: a list that followed each instance's values would give
        # kernels that differ between instances wherever a static size equals
        # a symbolic one there.)
        literal = {int(n) for line in self.parts for p in line if isinstance(p, str) for n in _LITERAL_INTS.findall(p)}
        # (and the products of int lists, a pooling window's kh*kw: a row length)
        literal |= {math.prod(int(n) for n in ints.split(",")) for line in self.parts for p in line
                    if isinstance(p, str) for ints in _INT_LISTS.findall(p)}
        self.constant_ints = sorted(literal - set(hints))
        if self.num_expressions and tuple(self._evaluate(*[symbol_hints[n] for n in names])) != tuple(hints):
            raise _Mismatch("an expression of the shape shadow does not give the real run's number")

    def render(self, symbol_values):
        """(the graph text for these symbol values (in the order of
        `symbols`), the index constants its kernels keep as literals)."""
        values = self._evaluate(*symbol_values) if self.num_expressions else ()
        text = "\n".join("".join(p if isinstance(p, str) else str(values[p]) for p in line) for line in self.parts)
        return text, self.constant_ints


DECLINED = object()  # SymbolicPlan.executors_for: this call runs eagerly


class SymbolicPlan:
    """A plan over symbolic dimensions: the templates of its segments, the
    shape guards, and per layout of the dynamic arguments seen so far an
    _Instance, the executors of its segments."""

    # Each instance holds its executors (on a CPU about 130 KB of host memory
    # a transformer layer; on a GPU its CUDA graph, its memory in the plan's
    # shared pool): a decoder's growing KV cache makes one a token, so the
    # bound is that of a long generate(), not of a few batch sizes.
    MAX_INSTANCES = int(os.environ.get("DEEPVISOR_MAX_INSTANCES", "128"))
    # Of the last INSTANCE_WINDOW layouts no instance held: when at least
    # INSTANCE_EVICTIONS were built in place of another, the layouts outrun
    # the bound (a cycle longer than it misses on every call under LRU) and
    # an instance, which costs several eager calls to build, would be dropped
    # before it is used again: such layouts run eagerly instead, while the
    # instances held keep replaying.
    INSTANCE_WINDOW = 64
    INSTANCE_EVICTIONS = 8

    def __init__(self, capture, compile_text):
        self.templates = capture.templates
        self.guard_code = capture.guard_code  # over L['a0']... = inputs[positions[0]]...
        self.shape_env = capture.shape_env
        self.positions = capture.positions    # graph input positions of the dynamic arguments
        self.sources = capture.sources        # per template, per symbol (SymbolicCapture.sources)
        self.count_dims = capture.count_dims  # decision index -> [(result, dim, count symbol or None)]
        self.counts = capture.counts          # count symbol -> its value in the capture
        # (segment index, text, constant sizes, reference text) -> executor
        self.compile_text = compile_text
        # layout key -> _Instance, or None: guards fail; the last MAX_INSTANCES
        # kept (each holds executors, and on a GPU their graphs' outputs and kept
        # constants: a stream of new shapes must not hold memory without end)
        self.instances = collections.OrderedDict()
        self.instances_evicted = 0
        self.instances_declined = 0  # layouts run eagerly while the instances thrash
        self.declined_reason = None  # why the last one was
        self.dropped = []  # layout keys evicted, for the caller to forget elsewhere
        # Per layout no instance held, of the last INSTANCE_WINDOW: whether it
        # was built in place of another (False) or not (built into room, or
        # declined: True).
        self.instance_misses = collections.deque(maxlen=self.INSTANCE_WINDOW)
        # Whether each of the last COUNT_WINDOW executors for a count was held
        # or compiled into a cache with room (True), or compiled in place of
        # another (False).
        self.count_lookups = collections.deque(maxlen=self.COUNT_WINDOW)

    def executors_for(self, inputs, may_decline=False):
        """The _Instance for these inputs, made for a new layout; None when the
        shape guards reject them; DECLINED (may_decline: not the capture's
        own call) when instances thrash, for this call to run eagerly."""
        tensors = [inputs[k] for k in self.positions]
        key = tuple((tuple(t.shape), tuple(t.stride())) for t in tensors)
        if key in self.instances:
            self.instances.move_to_end(key)
            return self.instances[key]
        if may_decline:
            reason = self.instances_thrash()
            if reason is not None:
                self.declined_reason = reason
                self.instance_misses.append(True)
                self.instances_declined += 1
                return DECLINED
        self.instance_misses.append(len(self.instances) < self.MAX_INSTANCES)
        instance = None
        if self.guard_code is None or self.shape_env.evaluate_guards_expression(self.guard_code, tensors):
            instance = _Instance(self, inputs)
            if self.instances or not self.counts:  # (the capture's own: nothing new to say)
                log_event("recompiles", f"dynamic shapes: a plan instance for {[tuple(t.shape) for t in tensors]} "
                                        "(no capture)")
        self.instances[key] = instance
        if len(self.instances) > self.MAX_INSTANCES:
            evicted, _ = self.instances.popitem(last=False)
            self.dropped.append(evicted)
            self.instances_evicted += 1
            log_event("recompiles", f"dynamic shapes: the instance for {[s for s, _ in evicted]} dropped (the least "
                                    f"recently used of {self.MAX_INSTANCES}, DEEPVISOR_MAX_INSTANCES)")
        return instance

    def instances_thrash(self):
        """Why a new layout runs eagerly instead of building an instance, or
        None (INSTANCE_EVICTIONS)."""
        evictions = self.instance_misses.count(False)
        if evictions < self.INSTANCE_EVICTIONS:
            return None
        return (f"dynamic shapes: layouts outrun the {self.MAX_INSTANCES} instances held "
                f"(DEEPVISOR_MAX_INSTANCES): {evictions} of the last {len(self.instance_misses)} new ones replaced "
                "one; a new one runs eagerly")

    COUNT_WINDOW = 64
    # Of the last COUNT_WINDOW: a compile for a count costs several calls'
    # worth of eager time (on a CPU, about 5 of a small model's), so a
    # quarter of them makes the plan slower than eager.
    COUNT_EVICTIONS = 16

    def counts_thrash(self):
        """A reason to run eagerly when counts change faster than the
        executors held per segment can follow, or None."""
        lookups = self.count_lookups
        if len(lookups) < self.COUNT_WINDOW:
            return None
        evictions = lookups.count(False)
        if evictions < self.COUNT_EVICTIONS:
            return None
        return (f"counts change faster than the {_Instance.MAX_COUNTS} executors held per segment can follow: "
                f"{evictions} of the last {len(lookups)} replaced one")

    def counts_of(self, index, sizes, captured):
        """{count symbol: value} of decision `index` (on sizes) given these
        sizes, where the plan takes them; None where it does not (no count
        there, one below MIN_COUNT, a fixed size that differs)."""
        dims = self.count_dims.get(index)
        if dims is None or len(sizes) != len(captured) or any(len(a) != len(b) for a, b in zip(sizes, captured)):
            return None
        counts = {}
        for k, d, name in dims:
            n = sizes[k][d]
            if name is None:
                # (With symbolic arguments a fixed size may follow them: the
                # columns of x[mask]; the shape guards hold those.)
                if n != captured[k][d] and not self.positions:
                    return None
            elif n < MIN_COUNT or counts.setdefault(name, n) != n:
                return None
        return counts

    def _compile_instance(self, i, template, values):
        """Segment i's executor for these symbol values. The same template at
        every symbol doubled (a reference the kernels are never run on) tells
        which sizes of each kernel depend on the symbols."""
        text, constants = template.render(values)
        reference, _ = template.render([2 * v for v in values])
        return self.compile_text(i, text, constants, reference)

    def executors(self):
        return [e for instance in self.instances.values() if instance for e in instance.executors()]

    def describe(self):
        """Readable lines: each symbol, the shape guards, the instances."""
        kinds = {_SIZE: "size", _STRIDE: "stride"}
        named = {name: source for t, sources in zip(self.templates, self.sources)
                 for name, source in zip(t.symbols, sources)}
        symbols = ", ".join(f"{name} = count: size {d[1]} of result {d[0]} of decision {k}" if kind == _COUNT else
                            f"{name} = {kinds[kind]} {d} of graph input {k}"
                            for name, (k, d, kind) in sorted(named.items()))
        instances = [i for i in self.instances.values() if i]
        return [f"dynamic shapes: {symbols}",
                f"shape guards: {self.guard_code or 'none'}",
                f"instances (one per layout, no capture): {len(instances)}"] + \
            ([f"count instances (one per count, no capture): {self.count_instances()}"] if self.counts else [])

    def count_instances(self):
        """Executors compiled for counts other than the capture's (held now)."""
        return sum(i.count_instances() for i in self.instances.values() if i)


class _Instance:
    """The executors of a symbolic plan for one layout of its dynamic
    arguments: one per segment, and for a segment after a decision on sizes
    one per count it reads (its template filled in with them; the kernels,
    which take their sizes as arguments, come from the cache)."""

    # Executors per segment kept for counts, the least recently used dropped.
    MAX_COUNTS = int(os.environ.get("DEEPVISOR_MAX_COUNT_EXECUTORS", "32"))

    def __init__(self, plan, inputs):
        self.plan = plan
        # Per segment: its symbols' values (a count of its own decision at the
        # capture's value: its executor hands on whatever size the op gives),
        # and where the counts of earlier decisions go, [(position, symbol)].
        self.sizes, self._reads = [], []
        for i, (template, sources) in enumerate(zip(plan.templates, plan.sources)):
            self.sizes.append([plan.counts[name] if kind == _COUNT else _read(inputs, (k, d, kind))
                               for name, (k, d, kind) in zip(template.symbols, sources)])
            self._reads.append([(j, name) for j, (name, (k, _, kind)) in enumerate(zip(template.symbols, sources))
                                if kind == _COUNT and k < i])
        self._by_counts = [collections.OrderedDict() for _ in plan.templates]
        self._lock = threading.Lock()  # (replays on several threads)

    def at(self, i, counts):
        """Segment i's executor for `counts` ({count symbol: value} of the
        decisions before it)."""
        reads, cache = self._reads[i], self._by_counts[i]
        if not reads:  # the usual segment: one executor
            executor = cache.get(())
            if executor is not None:
                return executor
        values = list(self.sizes[i])
        for j, name in reads:
            values[j] = counts[name]
        key = tuple(values[j] for j, _ in reads)
        with self._lock:
            executor = cache.get(key)
            if reads:
                # (A miss while the cache fills is the warm-up; one that
                # evicts an executor says the counts outrun the cache.)
                self.plan.count_lookups.append(executor is not None or len(cache) < self.MAX_COUNTS)
            if executor is None:
                executor = cache[key] = self.plan._compile_instance(i, self.plan.templates[i], values)
                if len(cache) > self.MAX_COUNTS:
                    cache.popitem(last=False)
            else:
                cache.move_to_end(key)
            return executor

    def __getitem__(self, i):  # a segment that reads no count
        return self.at(i, {})

    def executors(self):
        return [e for cache in self._by_counts for e in cache.values()]

    def count_instances(self):
        return sum(max(0, len(cache) - 1) for cache in self._by_counts)


def _read(inputs, source):
    k, d, kind = source
    return inputs[k].stride(d) if kind == _STRIDE else inputs[k].shape[d]


class SymbolicCapture:
    """What a capture with a successful shadow adds to its path."""

    def __init__(self, templates, guard_code, shape_env, positions, sources, dims, inputs, count_dims, counts):
        self.templates = templates  # one per segment of the capture
        self.guard_code = guard_code
        self.shape_env = shape_env
        self.positions = positions  # graph input positions of the dynamic arguments (the guards' L['a0']...)
        # per template, per symbol: (graph input position, dim, _SIZE or _STRIDE),
        # or (decision index, (result, dim), _COUNT)
        self.sources = sources
        self.dims = dims            # {graph input position: (symbolic sizes, symbolic strides)}: any value there
        self.inputs = inputs        # the capture's graph inputs (its own instance is compiled from them)
        self.count_dims = count_dims  # decision index -> [(result, dim, count symbol or None)]
        self.counts = counts          # count symbol -> its value in the capture


def symbolic_capture(shadow, monitor, recorder, builder, segments, inputs):
    """The SymbolicCapture of a run the shadow followed, or None (the reason
    logged): the capture then holds for its own sizes only."""
    from ._segments import split
    if len(shadow.recorder.decisions) != len(recorder.decisions):
        shadow.fail("the shadow saw other decisions")
    if monitor.scalars is not None and monitor.scalars.symbols:
        shadow.fail("numbers read from tensors flow back into tensor ops")
    shadow_recorder = shadow.recorder
    if shadow_recorder.unsupported is not None:
        shadow.fail(f"the shadow's recorder: {shadow_recorder.unsupported}")
    if builder.argument_views:
        shadow.fail("the call returns or stores a view of an argument (rebuilt with this call's layout)")
    assumed = shadow.assumed_counts()
    if assumed is not None:
        shadow.fail(assumed)
    fakes = [shadow.fake_of(t) for t in builder.output_tensors]
    if any(f is None for f in fakes):
        shadow.fail("an output the shadow did not follow")
    templates = None
    if shadow.failed is None:
        try:
            values, view_lines = shadow_recorder.output_values(fakes)
            shadow_segments = split(shadow_recorder.value_lines, shadow_recorder.input_values,
                                    shadow_recorder.node_lines, shadow_recorder.decisions, values,
                                    list(shadow_recorder.mutations.items()),
                                    shadow_recorder.restride_lines() + view_lines, shadow_recorder.random_nodes)
            if len(shadow_segments) != len(segments):
                shadow.fail("the shadow's graph has other segments")
            else:
                templates = [shadow.template(a.text, b.text) for a, b in zip(segments, shadow_segments)]
                if any(t is None for t in templates):
                    templates = None
        except Exception as e:
            shadow.fail(f"the shadow's graph: {type(e).__name__}: {e}")
    if templates is None:
        log_event("recompiles", f"dynamic shapes: this capture stays static: {shadow.failed}")
        return None
    if not any(t.symbols for t in templates):
        return None  # every symbolic dimension was specialized (a size of 1): a static plan
    position = {id(t): k for k, t in enumerate(inputs)}
    arguments = shadow.arguments  # those passed directly, then the reached ones given symbols
    if any(id(arguments[k]) not in position for k, _ in shadow.dynamic):
        log_event("recompiles", "dynamic shapes: this capture stays static: a tensor with symbolic sizes "
                                "that no op read")
        return None
    unbound = _bind_sizes(builder.sizes, shadow, position)
    if unbound is not None:
        log_event("recompiles", f"dynamic shapes: this capture stays static: {unbound}")
        return None
    positions, placeholders, dims = [], [], {}
    for k, fake in shadow.dynamic:
        # Every tensor given symbols is a placeholder of the shape guards, also
        # one whose symbols were all specialized (`expand` to a literal size):
        # the guards may still name its symbols.
        p = position[id(arguments[k])]
        positions.append(p)
        placeholders.append(fake)
        sizes = [d for d, n in enumerate(fake.shape) if _symbolic(n)]
        if sizes:
            dims[p] = (sizes, [d for d, n in enumerate(fake.stride()) if _symbolic(n)])
    sources = [[(k, d, kind) if kind == _COUNT else (position[id(arguments[k])], d, kind) for k, d, kind in t.sources]
               for t in templates]
    code = shadow.guard_code(placeholders) if placeholders else None
    counts = {name: shadow.symbol_hints[name] for name, (_, _, kind) in shadow.symbol_sources.items()
              if kind == _COUNT}
    return SymbolicCapture(templates, code, shadow.shape_env, positions, sources, dims, inputs,
                           shadow.count_dims, counts)


def _bind_sizes(recipes, shadow, position):
    """Gives each Size recipe (_rebuild.py: a size the call stores or
    returns) its expression of the symbols, read from the call's graph
    inputs (`position`: id of an argument -> its input position); returns
    why one cannot have it, or None."""
    for recipe in recipes:
        expr = recipe.sym.node.expr
        names = sorted(str(s) for s in expr.free_symbols)
        sources = []
        for name in names:
            k, d, kind = shadow.symbol_sources.get(name, (None, None, _COUNT))
            if kind == _COUNT or id(shadow.arguments[k]) not in position:
                return f"a size the call stores or returns ({expr}) depends on {name}, which no input gives"
            sources.append((position[id(shadow.arguments[k])], d, kind))
        try:
            fn = eval(f"lambda {', '.join(names)}: ({expr})", dict(_FUNCTIONS))
            exact = fn(*[shadow.symbol_hints[n] for n in names]) == recipe.value
        except Exception as e:
            return f"a size the call stores or returns ({expr}) is no expression deepvisor evaluates ({e})"
        if not exact:
            return f"a size the call stores or returns ({expr}) does not give its number ({recipe.value})"
        recipe.evaluate = lambda inputs, fn=fn, sources=sources: int(fn(*[_read(inputs, s) for s in sources]))
    return None


class DynamicDims:
    """Which dimensions of the tensors passed directly, and of those reached
    from the arguments, a capture makes symbolic. dynamic=None: a dimension
    that took a second value (or one marked with mark_dynamic); True: every
    dimension; False: none."""

    def __init__(self, dynamic):
        self.dynamic = dynamic
        self._last = {}      # k -> sizes of the k-th tensor passed directly, at the last capture
        self._symbolic = {}  # k -> dims seen with two values
        # The same for tensors reached from the arguments, by the expression
        # that reaches them (cache.k): the shadow asks when the run uses one.
        self._last_reached = {}
        self._symbolic_reached = {}

    def mark_symbolic(self, dims):
        """{k: dims} of the k-th tensor passed directly: symbolic from the
        next capture on (what Dynamo already made symbolic)."""
        for k, d in dims.items():
            if d:
                self._symbolic.setdefault(k, set()).update(d)

    def for_call(self, args, kwargs):
        direct = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        chosen = {}
        for k, t in enumerate(direct):
            dims = self._choose(k, t)
            self._last[k] = tuple(t.shape)
            if dims:
                self._symbolic.setdefault(k, set()).update(dims)
                chosen[k] = dims
        return chosen

    def _choose(self, k, t):
        return self._dims_of(t, self._symbolic.get(k, set()), self._last.get(k))

    def _dims_of(self, t, symbolic, last):
        if self.dynamic is False:
            return set()
        if self.dynamic:
            dims = set(range(t.dim()))
        else:
            dims = set(getattr(t, "_dynamo_dynamic_indices", ())) | symbolic
            if last is not None and len(last) == t.dim():
                dims |= {d for d in range(t.dim()) if last[d] != t.shape[d]}
        return dims - set(getattr(t, "_dynamo_static_indices", ()))

    def saw_reached(self, name, t):
        """After a capture: the sizes of a tensor it reached from the arguments."""
        self._last_reached[name] = tuple(t.shape)

    def watches_reached(self):
        """Whether a capture needs a shape shadow for the tensors it reaches
        from the arguments (some were seen before, and may have changed)."""
        return self.dynamic is not False and bool(self._last_reached)

    def reached_dims(self, name, t):
        dims = self._dims_of(t, self._symbolic_reached.get(name, set()), self._last_reached.get(name))
        if dims:
            self._symbolic_reached.setdefault(name, set()).update(dims)
        return dims
