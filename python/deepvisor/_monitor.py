"""The Python-state monitor: what one capture run read and wrote (the RefGraph).

The tracer (src/capture/tracer.h) steps every frame of the capture run and
reports the instructions that touch tracked objects. Each tracked object has a
Node that says how a later call reaches it:

- pinned: the same object as now. Pre-existing state the program reached
  through guarded reads (the module, its submodules and parameters, globals,
  closure cells, config objects) is pinned: once a guard has checked that a
  read still gives this object, reads from it can be checked on it directly.
- an argument (`args[i]`, `kwargs[k]`), or an access (attribute, item) on an
  argument-derived node: re-read on every call.

Every read of a tracked object adds a check to its node: the value read
(numbers, strings, bools, None, dtypes by value; other objects by identity,
or by type under an argument), or that it raised. Reads of fresh objects (made
during the run) need no check. Writes to tracked objects are side effects:
each mutable node keeps a shallow snapshot of its state from when the run first
reached it, and at the end the differences are the side effects to replay.
Reads of a key the run wrote before are not checked (their value came from the
run).

Python values the program reached without a guarded path (an opaque C call
with hidden state) make the capture unsupported instead of trusted.
"""

import collections
import dataclasses
import enum
import functools
import numbers
import os
import sys
import sysconfig
import threading
import types

import torch

from . import _C
from . import _attributes
from . import _bytecode as B
from . import _table_store
from ._c_state import c_state_refusal, native_state_type

NULL = type("NULL", (), {"__repr__": lambda self: "NULL"})()


class Unsupported(Exception):
    """The run did something a replay could not reproduce."""


# -- values ---------------------------------------------------------------------

_SCALAR_TYPES = (type(None), bool, int, float, complex, str, bytes, type(Ellipsis), type(NotImplemented),
                 torch.dtype, torch.layout, torch.memory_format, torch.device, range)


def _is_numpy_scalar(x):
    """A numpy number or bool (np.float32(2.0)...): immutable, so compared by
    value. Without this it was an opaque object checked by type alone, and a
    torch op that read it baked its first value into the plan."""
    np = sys.modules.get("numpy")
    return np is not None and isinstance(x, (np.number, np.bool_))


def is_value(x, depth=0):
    """Immutable data compared by value: numbers, strings, None, dtypes,
    devices, and tuples, slices and frozensets of those."""
    t = type(x)
    if t in _SCALAR_TYPES or isinstance(x, enum.Enum) or _is_numpy_scalar(x):
        return True
    if depth > 4:
        return False
    if t is tuple or t is torch.Size or t is frozenset:
        return len(x) <= 64 and all(is_value(e, depth + 1) for e in x)
    if t is slice:
        return is_value(x.start, depth + 1) and is_value(x.stop, depth + 1) and is_value(x.step, depth + 1)
    return False


def describe_value(v):
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, torch.dtype):
        return str(v)
    return repr(v)


# -- where code comes from --------------------------------------------------------

def _library_dirs():
    dirs = set()
    paths = sysconfig.get_paths()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        p = paths.get(key)
        if p:
            dirs.add(os.path.realpath(p) + os.sep)
    for p in sys.path:
        if p.endswith(("site-packages", "dist-packages")):
            dirs.add(os.path.realpath(p) + os.sep)
    return tuple(sorted(dirs))


_LIBRARY_DIRS = _library_dirs()
_OWN_DIR = os.path.dirname(os.path.realpath(__file__)) + os.sep
# Code that is never stepped (nor anything it calls): deepvisor itself, the
# dispatch-mode machinery that calls the tensor monitor, the import system (a
# module body runs once, on first import), warnings (shown once a place by
# default), linecache (source lines for a traceback, read from their files
# once: torch.library's first use extracts a stack, and its open() made the
# first call of torch.vmap eager). logging is stepped: a record it would emit
# makes the call eager (a replay would drop it), and a disabled level is
# checked in its loggers' caches.
_EXCLUDED_FILES = tuple(
    os.path.realpath(p) for p in (
        os.path.join(os.path.dirname(torch.__file__), "utils", "_python_dispatch.py"),
        os.path.join(os.path.dirname(torch.__file__), "_ops.py"),
        # Dynamo's bookkeeping (generation tags of new modules, weakref
        # callbacks of its caches) runs inside the program once it is loaded.
        os.path.join(os.path.dirname(torch.__file__), "_dynamo"),
        os.path.join(os.path.dirname(os.__file__), "warnings.py"),
        os.path.join(os.path.dirname(os.__file__), "threading.py"),
        os.path.join(os.path.dirname(os.__file__), "linecache.py"),
    ))
_path_kinds = {}


def code_kind(filename):
    """'excluded', 'library' (stdlib, site-packages: its globals are trusted)
    or 'user'."""
    kind = _path_kinds.get(filename)
    if kind is None:
        real = os.path.realpath(filename) if not filename.startswith("<") else filename
        if real.startswith(_OWN_DIR) or real.startswith(_EXCLUDED_FILES) or filename.startswith("<frozen importlib"):
            kind = "excluded"
        elif filename.startswith("<frozen") or real.startswith(_LIBRARY_DIRS):
            kind = "library"
        else:
            kind = "user"
        _path_kinds[filename] = kind
    return kind


def is_library_module(m):
    f = getattr(m, "__file__", None)
    return f is None or code_kind(f) == "library"


def _library_class(cls):
    """A class of an installed library's module (its attributes are trusted to
    stay). One whose module is not imported (defined by exec'd source with a
    namespace of its own) is the program's."""
    module = sys.modules.get(getattr(cls, "__module__", None))
    return module is not None and is_library_module(module)


def _reporting_every_attribute_read(table):
    """A user code's table whose attribute reads and writes reach the monitor
    whatever object they touch: a library module is not tracked until the
    program reads state of it (_on_library_module_read)."""
    depths, entries, cells = table
    reads_and_writes = (B.ATTR, B.METHOD, B.STORE_ATTR, B.DELETE_ATTR)
    entries = [(u, kind, n_in, n_out, flags | B.ALWAYS if kind in reads_and_writes else flags, aux, arg)
               for u, kind, n_in, n_out, flags, aux, arg in entries]
    return depths, entries, cells


def _is_code_object(value):
    """Callables (functions, classes, ufuncs, ATen ops...) and modules: what a
    library module's attributes are trusted to keep being (a program that
    rebinds them monkeypatches the library)."""
    return callable(value) or isinstance(value, types.ModuleType)


# -- nodes ----------------------------------------------------------------------

@dataclasses.dataclass(eq=False)
class Node:
    """A tracked object and how a later call reaches it."""
    obj: object
    name: str                    # a readable expression: self.layers[0], x, globals()['CFG']
    source: tuple                # ("pinned",) | ("arg", i) | ("kwarg", k) | ("access", parent, accessor)
    checks: list = dataclasses.field(default_factory=list)   # [(accessor, expectation)]
    checked: set = dataclasses.field(default_factory=set)    # accessors already checked
    snapshot: object = None      # shallow state when the run first reached it (mutable objects)
    written: set = dataclasses.field(default_factory=set)    # keys the run wrote
    view: object = None          # (kind, node) for a dict view: any use reads the whole dict
    opaque_use: bool = False     # C code may have read all of it: everything is checked
    written_all: bool = False    # C code changed it: later reads come from the run
    library_module: bool = False  # a library module: only the state it holds is checked (_on_library_module_read)

    @property
    def pinned(self):
        return self.source[0] == "pinned"


def _snapshot(obj):
    """The shallow state of a mutable object, or None for immutable ones."""
    t = type(obj)
    if isinstance(obj, collections.OrderedDict):  # its own order, which move_to_end changes
        return ("odict", list(obj.items()))
    if isinstance(obj, dict):
        return ("dict", list(dict.items(obj)))
    if isinstance(obj, list):
        return ("list", list.copy(obj))
    if isinstance(obj, (set,)):
        return ("set", set(obj))
    if isinstance(obj, types.ModuleType):  # the program's own modules (a library's are never written)
        return None if is_library_module(obj) else ("attrs", list(vars(obj).items()))
    items = _attributes.attribute_items(obj)  # instances (a tensor's Python attributes), classes, functions
    if items is not None:
        return ("attrs", items)
    if t is types.CellType:
        try:
            return ("cell", obj.cell_contents)
        except ValueError:
            return ("cell", NULL)
    return None


def qualname(obj):
    """obj's __qualname__, else its type's name (reading it may run a
    __getattr__ of the program's, which may raise anything)."""
    try:
        name = getattr(obj, "__qualname__", None)
    except Exception:
        name = None
    return name if isinstance(name, str) else type(obj).__name__


_running = threading.local()  # .monitor: the monitor capturing on this thread


def running_monitor():
    """The StateMonitor capturing on this thread, or None."""
    return getattr(_running, "monitor", None)


class StateMonitor:
    """Monitors the Python state of one capture run. Use start()/stop()
    around the call, then read nodes, side_effects() and unsupported."""

    def __init__(self, fn, args, kwargs, arg_names=None):
        self.nodes = {}          # id(obj) -> Node
        self.library_globals_seen = set()  # (id(globals), name, id(value)) read by library code (_on_global)
        self.defaults_seen = {}  # id(function) -> (function, its defaults, its kwdefaults) tracked (_on_defaults)
        self.order = []          # nodes in creation order (parents first)
        self.unsupported = None
        self.internal_error = None  # an exception of the monitor itself (DEEPVISOR_STRICT raises it)
        self.tracer = _C.Tracer(self, NULL)
        self.recorder = None     # the tensor monitor of the same run (for decisions it cannot see)
        # ids of the closure cells made during the run. Only ids, so that a
        # cell's contents (a layer's outputs) die with it: a dead cell's id
        # can only come back as an object made during the run, fresh as well.
        self.fresh_cells = set()
        self.scalars = None      # escaped numbers that may stay in the graph (_scalars.Scalars)
        self.shapes = None       # the shape shadow of a capture with symbolic sizes (_shapes.ShapeShadow)
        self.num_args = len(args)
        self.kwarg_names = tuple(kwargs)
        self._pinned_root(fn, "fn" if not isinstance(fn, torch.nn.Module) else "self")
        for i, a in enumerate(args):
            name = arg_names[i] if arg_names and i < len(arg_names) else f"args[{i}]"
            self._arg_root(a, ("arg", i), name)
        for k, v in kwargs.items():
            self._arg_root(v, ("kwarg", k), k)

    # -- roots ----------------------------------------------------------------
    def _pinned_root(self, obj, name):
        node = self._add(obj, name, ("pinned",))
        if isinstance(obj, types.FunctionType):
            self._pin_function(node)
        return node

    def _arg_root(self, obj, source, name):
        existing = self.nodes.get(id(obj))
        node = Node(obj, name, source)
        if existing is not None and not is_value(obj):
            # The same object passed twice (f(x, x)), or an argument that is
            # also pre-existing state: later calls must pass that object again.
            node.checks.append((("self",), ("same", existing) if not existing.pinned else ("id", obj)))
            self.order.append(node)
            return
        if is_value(obj):
            node.checks.append((("self",), ("value", obj)))
            self.order.append(node)
            return
        self._register(node)
        if not isinstance(obj, torch.Tensor):
            node.checks.append((("self",), ("type", type(obj))))
        else:
            self.tracer.track(obj)  # so that `x is ...` and id(x) are seen (_on_identity); other uses return early

    def _add(self, obj, name, source):
        node = Node(obj, name, source)
        self._register(node)
        return node

    def _register(self, node):
        self.nodes[id(node.obj)] = node
        self.order.append(node)
        node.snapshot = _snapshot(node.obj)
        if not isinstance(node.obj, torch.Tensor):
            self.tracer.track(node.obj)
        if isinstance(node.obj, types.MethodType) and node.pinned:
            # A pinned method's object is fixed with it (compile(obj.method)):
            # what the method reads of it is state.
            self._track_result(node.obj.__self__, f"{node.name}.__self__", ("pinned",))
        elif isinstance(node.obj, types.MethodType):
            # Its object now, before a call: what the method reads of it is
            # then checked as it is read (calls are seen after they ran).
            self.record_read(node, ("attr", "__self__"), node.obj.__self__)
        elif isinstance(node.obj, functools.partial):
            from ._calls import track_partial_arguments
            track_partial_arguments(self, node)  # the same: before a call

    def _pin_function(self, node):
        fn = node.obj
        node.checks.append((("attr", "__code__"), ("id", fn.__code__)))
        node.checks.append((("attr", "__defaults__"), self._expect_pinned(fn.__defaults__, node.name + ".__defaults__")))
        node.checks.append((("attr", "__kwdefaults__"),
                            self._expect_pinned(fn.__kwdefaults__, node.name + ".__kwdefaults__")))

    # -- the tracer's interface -------------------------------------------------------
    def start(self):
        from ._calls import watched_callables
        _step_through_dynamo_disable()
        for obj in watched_callables():
            self.tracer.track(obj)  # calls of these must be seen even with untracked arguments
        # The environment is state, though a library module's global (os.environ
        # is a mapping object, not a dict that _on_global would track).
        self._add(os.environ, "os.environ", ("pinned",))
        # sys.monitoring where the interpreter has it (3.12), else the legacy trace function.
        if os.environ.get("DEEPVISOR_TRACER") == "settrace" or not self.tracer.start_monitoring():
            B.set_opcode_events()
            self.tracer.start()
        _running.monitor = self

    def call_inline(self, fn, args, kwargs):
        """fn(*args, **kwargs) run as part of this capture: its frames are
        stepped, though deepvisor's own code calls it (a compiled function
        called by the function being captured)."""
        # What it reads of itself is state: the compiled object holds this
        # function (or module, or bound method) for its life, so it is pinned.
        name = f"{qualname(fn)} (compiled)"
        self._track_result(fn, name, ("pinned",))
        return self.tracer.call_stepped(fn, args, kwargs)

    def close(self):
        """Breaks the reference cycle with the tracer (after stop())."""
        self.tracer.close()

    def stop(self):
        _running.monitor = None
        self.tracer.stop()
        _table_store.store_made()
        if self.unsupported is None and self.tracer.error():
            self.unsupported = f"internal error in the Python-state monitor: {self.tracer.error()}"

    def code_table(self, code):
        kind = "transparent" if code in TRANSPARENT_CODES else code_kind(code.co_filename)
        if kind == "excluded":
            return None
        table = _table_cache.get(code)
        if table is None:
            table = _table_store.table_of(code)
            if kind == "user":
                table = _reporting_every_attribute_read(table)
            elif kind == "transparent":
                table = (table[0], [], [])  # stepped, so that what it calls is; nothing of its own reported
            _table_cache[code] = table
        if code in SUMMARIES and _summaries_on:
            return ("summarized", table)  # the table steps it where the summary declines
        return table

    def on_instruction(self, kind, arg, frame, operands, results, status):
        if self.unsupported is not None:
            return
        try:
            if self.scalars is not None and self.scalars.symbols:
                _symbol_uses(self, kind, arg, operands, results, status)
            if self.shapes is not None:
                _size_uses(self, kind, arg, frame, operands)
            return _HANDLERS[kind](self, arg, frame, operands, results, status)  # a summary's: whether it summarized
        except Unsupported as e:
            self.unsupported = f"{e} ({_where(frame)})"
        except Exception as e:  # never break the program over a monitoring problem
            self.unsupported = f"internal error in the Python-state monitor: {type(e).__name__}: {e} ({_where(frame)})"
            self.internal_error = self.internal_error or e

    # -- reads -------------------------------------------------------------------------
    def node_of(self, obj):
        return self.nodes.get(id(obj))

    def subject(self, obj):
        """The node an instruction reads from, or None. A dict view stands for
        its whole dict: using it checks all of the dict."""
        node = self.nodes.get(id(obj))
        if node is not None and node.view is not None:
            self.use_all(node, "view")
            return None
        return node

    def rename(self, obj, name):
        node = self.nodes.get(id(obj))
        if node is not None and len(name) < len(node.name):
            node.name = name

    def add_view(self, view, kind, base):
        node = Node(view, f"{base.name}.{kind}()", ("view",))
        node.view = (kind, base)
        self.nodes[id(view)] = node
        self.order.append(node)
        self.tracer.track(view)

    def _expect_pinned(self, value, name):
        """The expectation for a value read from pinned state; pins and tracks it.
        `name`: a string, or a function giving it (_named)."""
        if is_value(value):
            return ("value", value)
        existing = self.nodes.get(id(value))
        if existing is not None and rooted_in_an_argument(existing) and ("argument held",) not in existing.checked:
            # State holds this call's argument (a model that keeps its last
            # input): what the run did depends on that, so the plan serves
            # only calls that pass this very object.
            existing.checked.add(("argument held",))
            existing.checks.append((("self",), ("id", value)))
        if isinstance(value, types.MethodType):
            self._track_result(value.__self__, _named(name) + ".__self__", ("pinned",))
            return ("method", value.__func__, value.__self__)
        bound = _bound_object(value)
        if bound is not None:
            # A builtin method of an object (CFG.get): a call of it reads the
            # object, which the tracer sees only if the object is tracked.
            self._track_result(bound, _named(name) + ".__self__", ("pinned",))
            if isinstance(value, types.BuiltinMethodType):
                # A new object on every read (copy.deepcopy reads cfg.__reduce_ex__):
                # checked as the same C function bound to the same object.
                return ("method", value, bound)
        self._track_result(value, name, ("pinned",))
        return ("id", value)

    def _track_result(self, value, name, source):
        if id(value) in self.nodes or is_value(value) or value is NULL:
            return self.nodes.get(id(value))
        if _is_library_module_object(value):
            return None
        if isinstance(value, (types.BuiltinFunctionType, types.BuiltinMethodType)) and source[0] == "pinned":
            return None
        if isinstance(value, type) and source[0] == "pinned" and _library_class(value):
            return None
        node = Node(value, _named(name), source)
        self._register(node)
        if isinstance(value, types.FunctionType) and source[0] == "pinned":
            self._pin_function(node)
        return node

    def record_read(self, node, accessor, value, failed=None):
        """node's accessor gave `value` (or raised `failed`): check it on later calls."""
        mark = hashable_key(accessor)
        if mark in node.checked or node.written_all or hashable_key(_key_of(accessor)) in node.written:
            return
        node.checked.add(mark)
        # The name of what was read, made only if a node is made for it: most
        # reads are of values or of objects tracked already.
        name = lambda: _access_name(node.name, accessor)  # noqa: E731
        if accessor[0] == "type":
            node.checks.append((accessor, ("id", value)))
            return
        if failed is not None:
            node.checks.append((accessor, ("raises", failed)))
            return
        if node.pinned:
            node.checks.append((accessor, self._expect_pinned(value, name)))
            return
        # Under an argument: re-read on every call; check the kind of value, not its identity.
        if is_value(value):
            node.checks.append((accessor, ("value", value)))
            return
        existing = self.nodes.get(id(value))
        if existing is not None and existing.pinned:
            node.checks.append((accessor, ("id", value)))
            return
        child = self._track_result(value, name, ("access", node, accessor))
        if child is None:
            node.checks.append((accessor, ("id", value)))
        elif not isinstance(value, torch.Tensor):
            node.checks.append((accessor, ("type", type(value))))
        else:
            node.checks.append((accessor, ("tensor",)))

    def called(self, fn):
        """The program calls `fn`. Reached through an argument, a callable is
        otherwise checked by its type alone, which does not say what a call
        runs (torch.relu and torch.sigmoid share a type; so do two lambdas):
        check what decides it. A plain Python function: its code and
        defaults (its frame is stepped, so what it reads is checked as it
        is read). A bound method: its function the same way, its object as
        a tracked value. One with a closure, and anything that runs C code
        (a builtin, a partial, a TorchScript function...): its identity.
        Instances of Python classes (a module) are checked by type already,
        and their __call__ is read through it."""
        node = self.nodes.get(id(fn))
        if node is None or node.pinned or ("called",) in node.checked:
            return
        node.checked.add(("called",))
        if isinstance(fn, types.MethodType):  # its __self__ is tracked from the start (_register)
            func = fn.__func__
            if isinstance(func, types.FunctionType) and func.__closure__ is None:
                node.checks.append((("attr", "__func__"), ("id", func)))
                return
        elif isinstance(fn, types.FunctionType) and fn.__closure__ is None:
            node.checks.append((("attr", "__code__"), ("id", fn.__code__)))
            for attr in ("__defaults__", "__kwdefaults__"):
                value = getattr(fn, attr)
                node.checks.append((("attr", attr), ("value", value) if is_value(value) else ("id", value)))
            return
        elif not isinstance(fn, (types.FunctionType, types.MethodType, type)) and \
                isinstance(getattr(type(fn), "__call__", None), types.FunctionType):
            return  # a Python class's instance: its type is checked, its __call__ read through it
        node.checks.append((("self",), ("id", fn)))

    def use_all(self, node, why):
        """C code may read the whole object: check all of its shallow state as
        it was before the run changed it."""
        if node.view is not None:
            node = node.view[1]
        if node.opaque_use or isinstance(node.obj, torch.Tensor):
            return
        node.opaque_use = True
        obj = node.obj
        state = node.snapshot[1] if node.snapshot is not None else None
        if isinstance(obj, dict):
            items = state if state is not None else list(dict.items(obj))
            keys = tuple(k for k, _ in items)
            node.checks.append((("keys",), ("value", keys) if all(is_value(k) for k in keys) else ("ids", keys)))
            for k, v in items:
                if is_value(k):
                    self.record_read(node, ("item", k), v)
        elif isinstance(obj, (list, tuple)):
            items = state if state is not None else list(obj)
            node.checks.append((("len",), ("value", len(items))))
            for i, v in enumerate(items):
                self.record_read(node, ("item", i), v)
        elif isinstance(obj, (set, frozenset)):
            items = state if state is not None else set(obj)
            node.checks.append((("content",), ("value", frozenset(items)) if all(is_value(e) for e in items)
                               else ("ids", tuple(items))))
        else:
            # Other objects: C code reads their attributes only through getattr-like
            # calls, which are modelled, or through Python methods, which are
            # stepped; unless their state lives in a C layout.
            refuse_c_state(node, why)

    def mutated_by_c(self, node, why):
        """C code changed the object (list.append, dict.update...): its whole
        prior state matters, and later reads come from the run."""
        if node.view is not None:
            node = node.view[1]
        self.use_all(node, why)
        node.written_all = True

    def record_write(self, node, key):
        node.written.add(hashable_key(key))

    def record_attribute_write(self, node, name):
        """node.name set or deleted: replayed from the attributes snapshot,
        so a write that lands elsewhere (a C-level attribute) is refused. A
        library module's own code writing it is its business (the program's
        writes to one are refused before: _refuse_library_module_write)."""
        if node.library_module:
            return
        if node.snapshot is None or node.snapshot[0] != "attrs" or not _attributes.replayable(node.obj, name):
            raise Unsupported(f"sets {node.name}.{name}, which a replay cannot repeat")
        self.record_write(node, name)

    # -- results -----------------------------------------------------------------------
    def side_effects(self):
        """[(node, kind, final state)] for the tracked mutable objects the run changed."""
        out = []
        for node in self.order:
            if node.snapshot is None:
                continue
            now = _snapshot(node.obj)
            # A write of the value already there changes nothing now, but a
            # replay must still make it: the state may differ by then.
            if node.written or not _same_state(node.snapshot, now):
                out.append((node, now))
        return out


_table_cache = {}


# deepvisor's own code that the program's calls pass through (_script._call):
# stepped, unlike the rest of deepvisor, so that the code it calls is
# stepped too, but with no instruction of its own reported.
TRANSPARENT_CODES = set()


def _step_through_dynamo_disable():
    """torch.compiler.disable's wrapper (and torch's own functions that
    torch._disable_dynamo wraps on first call: manual_seed...) lives in
    Dynamo's files, which are never stepped, nor anything they call: the
    function it wraps ran unseen, its reads unchecked (a stale result). Once
    Dynamo is loaded, the wrapper's code is transparent: what it calls is
    stepped. (Looked up once, the first capture after Dynamo loads.)"""
    global _dynamo_disable_seen
    if _dynamo_disable_seen:
        return
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")
    if eval_frame is None:
        return
    _dynamo_disable_seen = True
    call = getattr(getattr(eval_frame, "DisableContext", None), "__call__", None)
    for c in getattr(getattr(call, "__code__", None), "co_consts", ()):
        if isinstance(c, types.CodeType) and c.co_name == "_fn":
            TRANSPARENT_CODES.add(c)


_dynamo_disable_seen = False


# -- summarized library functions --------------------------------------------------
#
# A few library functions run at nearly every step of a model
# (nn.Module.__getattr__: 27% of the instructions BERT-base's forward runs;
# nn.Module._call_impl: 44% of the reports left after that). Their frames are
# not stepped; at their start the monitor records the reads they make, as
# stepping them would have, from the same pre-call state, by calling the same
# handlers. The frames they call are stepped. A summary returns False to
# decline, where the function would take a path it does not model: the frame
# is then stepped. (The handlers' work on what a function reads, not the
# stepping of its instructions, is most of a capture's time: bench/NOTES.md,
# thirtieth session.)

_summaries_on = os.environ.get("DEEPVISOR_SUMMARIES", "1") != "0"


def _module_getattr_reads(m, frame):
    """nn.Module.__getattr__(self, name): looks `name` up in self.__dict__'s
    '_parameters', '_buffers' and '_modules', in that order, each only if
    present; returns the first hit or raises AttributeError."""
    local = frame.f_locals
    obj, name = local.get("self", NULL), local.get("name", NULL)
    node = m.subject(obj) if obj is not NULL else None
    if node is None or isinstance(node.obj, torch.Tensor) or not is_value(name):
        return
    d = object.__getattribute__(obj, "__dict__")
    m.record_read(node, ("attr", "__dict__"), d)
    dnode = m.subject(d)
    for key in ("_parameters", "_buffers", "_modules"):
        if dnode is not None:
            m.record_read(dnode, ("contains", key), key in d)
        if key not in d:
            continue
        table = d[key]
        if dnode is not None:
            m.record_read(dnode, ("item", key), table)
        tnode = m.subject(table)
        found = name in table
        if tnode is not None:
            m.record_read(tnode, ("contains", name), found)
        if found:
            if tnode is not None:
                m.record_read(tnode, ("item", name), table[name])
            return True
    # The AttributeError's message: type(self).__name__ (a class the program
    # defined is tracked by type(), so its name is read as stepping reads it).
    cls = type(obj)
    m.record_read(node, ("type",), cls)
    cnode = m._track_result(cls, f"type({node.name})", ("pinned",))
    if cnode is not None:
        m.record_read(cnode, ("attr", "__name__"), cls.__name__)
    return True


_MODULE_HOOKS = ("_backward_hooks", "_backward_pre_hooks", "_forward_hooks", "_forward_pre_hooks")
_GLOBAL_HOOKS = ("_global_backward_pre_hooks", "_global_backward_hooks", "_global_forward_hooks",
                 "_global_forward_pre_hooks")
_plain_module_types = {}  # type -> whether _plainly_called


def _plainly_called(cls):
    """Whether, on an instance of cls, `self.forward` is the type's function
    and the hook registries come from the instance's dict, found without
    running Python code."""
    plain = _plain_module_types.get(cls)
    if plain is None:
        import inspect
        plain = (cls.__getattribute__ is object.__getattribute__
                 and isinstance(inspect.getattr_static(cls, "forward", None), types.FunctionType)
                 and all(inspect.getattr_static(cls, name, NULL) is NULL for name in _MODULE_HOOKS))
        _plain_module_types[cls] = plain
    return plain


def _empty_registry(value):
    return type(value) in (dict, collections.OrderedDict) and not value


def _module_call_reads(m, frame):
    """nn.Module._call_impl(self, *args, **kwargs) on its common path: no
    TorchScript trace runs and no hook is registered, so it reads
    self.forward, then the module's four hook registries and the four global
    ones (each empty: its truth), and calls forward. Declined otherwise, and
    where the uses of symbolic sizes and numbers are watched (stepping finds
    those in every instruction)."""
    if m.shapes is not None or (m.scalars is not None and m.scalars.symbols):
        return False
    obj = frame.f_locals.get("self", NULL)
    if obj is NULL or not _plainly_called(type(obj)):
        return False
    d = object.__getattribute__(obj, "__dict__")
    if type(d) is not dict or "forward" in d or torch._C._get_tracing_state():
        return False
    hooks = [d.get(name, NULL) for name in _MODULE_HOOKS]
    registries = [frame.f_globals.get(name, NULL) for name in _GLOBAL_HOOKS]
    if not all(_empty_registry(h) for h in (*hooks, *registries)):
        return False
    # What the tracer would report: an instruction with a tracked operand (globals: always).
    tracked = m.tracer.is_tracked
    forward = object.__getattribute__(obj, "forward")
    if tracked(obj):
        _on_attr(m, "forward", frame, (obj,), (forward,), 0)
    for name, value in zip(_MODULE_HOOKS, hooks):
        if tracked(obj):
            _on_attr(m, name, frame, (obj,), (value,), 0)
        if tracked(value):
            _on_truth(m, None, frame, (value,), None, _C.BEFORE)
    for name, value in zip(_GLOBAL_HOOKS, registries):
        _on_global(m, name, frame, (), (value,), 0)
        if tracked(value):
            _on_truth(m, None, frame, (value,), None, _C.BEFORE)
    m.called(forward)  # forward_call(*args, **kwargs): its frame is stepped
    return True


SUMMARIES = {torch.nn.Module.__getattr__.__code__: _module_getattr_reads,
             torch.nn.Module._call_impl.__code__: _module_call_reads}


def _on_summary(m, arg, frame, operands, results, status):
    return SUMMARIES[frame.f_code](m, frame)


def hashable_key(x):
    try:
        hash(x)
        return x
    except TypeError:
        return ("<unhashable>", repr(x))


def _key_of(accessor):
    kind = accessor[0]
    if kind in ("attr", "item", "contains"):
        return accessor[1]
    if kind == "cell":
        return "<cell>"
    return accessor


def _access_name(base, accessor):
    from ._guards import expression
    return expression(base, accessor)


def _named(name):
    """A node's name: given, or made now by the function given (record_read)."""
    return name() if callable(name) else name


def _same_state(a, b):
    if a is None or b is None or a[0] != b[0]:
        return a is b
    kind, x = a
    y = b[1]
    if kind == "set":
        return x == y
    if kind == "cell":
        return x is y
    if len(x) != len(y):
        return False
    if kind == "list":
        return all(p is q for p, q in zip(x, y))
    return all((k1 is k2 or k1 == k2) and v1 is v2 for (k1, v1), (k2, v2) in zip(x, y))


def _where(frame):
    try:
        return f"{frame.f_code.co_filename}:{frame.f_lineno}"
    except Exception:
        return "?"


# -- instruction handlers ---------------------------------------------------------

def _on_library_module_read(m, module, name, value):
    """A library module's attribute: its callables and submodules are
    trusted; the state it holds (numbers, strings, flags, containers,
    config objects: os.environ, somelib.CONFIG['x'], somelib.FLAG) is
    checked like any other, so the module becomes a pinned node."""
    if _is_code_object(value) or value is NULL:
        return
    node = m.node_of(module) or m._add(module, module.__name__, ("pinned",))
    node.library_module = True
    m.record_read(node, ("attr", name), value)


def one_of(fn, table):
    """fn in a table of builtins and classes, without hashing any other
    callable (a weakref hashes its referent, which may be unhashable)."""
    return isinstance(fn, (types.BuiltinFunctionType, type)) and fn in table


def rooted_in_an_argument(node):
    """Whether the node is an argument of the call or reached from one."""
    while node.source[0] == "access":
        node = node.source[1]
    return node.source[0] in ("arg", "kwarg")


def refuse_argument_identity(m, obj, how):
    """`how` depends on which object the caller passed: a replay cannot check
    that (it checks what an argument is like, not which one it is)."""
    node = m.node_of(obj)
    if node is not None and not is_value(obj) and rooted_in_an_argument(node):
        raise Unsupported(f"{how} depends on which object {node.name} is")


_SINGLETONS = (None, True, False, Ellipsis, NotImplemented)


def _on_identity(m, invert, frame, operands, results, status):
    """a is b. Against None (or another singleton) it asks what the object is,
    which the checks on it hold. Between an argument and an object that the run
    did not get from the arguments (state, a constant), it asks which object
    the caller passed: refused. Objects made by the run compare the same way on
    every call that takes this path."""
    a, b = operands
    if any(v is s for v in (a, b) for s in _SINGLETONS) or a is b:
        return
    for this, other in ((a, b), (b, a)):
        node = m.node_of(other)
        if node is not None and not rooted_in_an_argument(node):
            refuse_argument_identity(m, this, "`is`")


def _bound_object(value):
    """The object a builtin method is bound to (d.get, lst.append, x.__getattribute__), or None."""
    if not isinstance(value, (types.BuiltinMethodType, types.MethodWrapperType)):
        return None
    obj = getattr(value, "__self__", None)
    return None if obj is None or isinstance(obj, types.ModuleType) else obj


def _is_library_module_object(obj):
    return isinstance(obj, types.ModuleType) and is_library_module(obj)


def _on_attr(m, name, frame, operands, results, status):
    node = m.subject(operands[0])
    if node is None or node.library_module:
        if _is_library_module_object(operands[0]) and not status & (_C.FAILED | _C.PYTHON_RAN):
            _on_library_module_read(m, operands[0], name, results[0])
        return
    if status & _C.PYTHON_RAN:
        # A Python __getattr__ or property ran: its reads were stepped. Name
        # what it found after the attribute (self.lin, not self._modules['lin']).
        if not status & _C.FAILED:
            m.rename(results[0], f"{node.name}.{name}")
        return
    if tensor_metadata(node.obj, name):
        return  # checked with the tensor
    _read(m, node, ("attr", name), results, status, AttributeError)


def tensor_metadata(obj, name):
    """Whether obj is a tensor and `name` is what its type defines (shape,
    dtype, methods: the tensor's guards check them). A Python attribute set on
    a tensor (t.scale = 2.0) is state like any object's, and so is its autograd
    state, which no tensor guard checks (`if w.grad is None`)."""
    return isinstance(obj, torch.Tensor) and name not in _AUTOGRAD_ATTRIBUTES and hasattr(type(obj), name)


_AUTOGRAD_ATTRIBUTES = frozenset({"grad", "requires_grad", "is_leaf", "grad_fn", "retains_grad", "_version"})


def _read(m, node, accessor, results, status, error):
    """A read that gave results[0], or raised (results: the exception's type)."""
    if status & _C.FAILED:
        m.record_read(node, accessor, None, failed=results if isinstance(results, type) else error)
    else:
        m.record_read(node, accessor, results[0])


def _on_method(m, name, frame, operands, results, status):
    node = m.subject(operands[0])
    if node is None or node.library_module:
        if (_is_library_module_object(operands[0]) and not status & (_C.FAILED | _C.PYTHON_RAN)
                and results[0] is NULL):
            _on_library_module_read(m, operands[0], name, results[1])
        return
    if status & _C.PYTHON_RAN or isinstance(node.obj, torch.Tensor):
        return
    if status & _C.FAILED:
        m.record_read(node, ("attr", name), None, failed=AttributeError)
        return
    if results[0] is NULL:
        m.record_read(node, ("attr", name), results[1])
    else:
        # A method found on the type: the node's type decides it, while the
        # object's own dict does not hold the name (o.method = something else)
        # and the program's class still holds this function (Cls.method = ...).
        m.record_read(node, ("type",), type(node.obj))
        _record_not_in_instance_dict(m, node, name)
        cls = type(node.obj)
        cls_node = m.subject(cls) or m._track_result(cls, f"type({node.name})", ("pinned",))
        if cls_node is not None:  # (None: a library's class, trusted to keep its methods)
            m.record_read(cls_node, ("attr", name), results[0])


def _record_not_in_instance_dict(m, node, name):
    try:
        d = object.__getattribute__(node.obj, "__dict__")
    except AttributeError:
        return  # no instance dict (__slots__, a builtin): nothing can shadow the type's
    if type(d) is not dict:
        return
    m.record_read(node, ("attr", "__dict__"), d)
    dnode = m.subject(d)
    if dnode is not None:
        m.record_read(dnode, ("contains", name), False)


def _on_item(m, arg, frame, operands, results, status):
    container, key = operands
    node = m.subject(container)
    if node is None or status & _C.PYTHON_RAN or isinstance(node.obj, torch.Tensor):
        return
    if type(key) is slice:  # lst[:8] before 3.12: a new container of the items, as _on_slice
        m.use_all(node, "slice")
        return
    if not is_value(key):
        if isinstance(key, torch.Tensor):
            raise Unsupported(f"indexing {node.name} with a tensor")
        m.use_all(node, "item with a non-constant key")
        return
    _read(m, node, ("item", key), results, status, LookupError)


def _on_slice(m, arg, frame, operands, results, status):
    node = m.subject(operands[0])
    if node is None or status & _C.PYTHON_RAN or isinstance(node.obj, torch.Tensor):
        return
    m.use_all(node, "slice")  # a slice reads a run of items (and the length)


def _globals_node(m, globals_dict):
    """The pinned node of a module's globals dict, made at its first use."""
    return m.node_of(globals_dict) or m._add(globals_dict, f"{globals_dict.get('__name__', '?')}.__dict__",
                                             ("pinned",))


def _on_global(m, name, frame, operands, results, status):
    if status & _C.FAILED:
        return  # a NameError propagates; nothing is cached for a failing call
    value = results[0]
    if code_kind(frame.f_code.co_filename) == "library":
        # A library's own globals (functions, modules, classes) are trusted;
        # its mutable containers (hook registries) are state, and so are the
        # flags and numbers it reads (a module-level switch set by a setter).
        # The same global giving the same object again adds nothing (most of
        # a model's reads: nn.Module's hook registries at every call).
        seen = (id(frame.f_globals), name, id(value))
        if seen in m.library_globals_seen:
            return
        m.library_globals_seen.add(seen)
        if isinstance(value, (dict, list, set)):
            m._track_result(value, f"{frame.f_globals.get('__name__', '?')}.{name}", ("pinned",))
        elif is_value(value) and name in frame.f_globals:
            m.record_read(_globals_node(m, frame.f_globals), ("item", name), value)
        return
    globals_dict = frame.f_globals
    gnode = _globals_node(m, globals_dict)
    if name in globals_dict:
        m.record_read(gnode, ("item", name), value)
    else:
        m.record_read(gnode, ("contains", name), False)
        builtins = frame.f_builtins
        bnode = m.node_of(builtins)
        if bnode is None:
            bnode = m._add(builtins, "builtins", ("pinned",))
        m.record_read(bnode, ("item", name), value)


def _on_defaults(m, arg, frame, operands, results, status):
    """The frame's function has defaults that are not plain constants. The
    parameters left to them hold these objects though no instruction read
    them, so they are tracked as pinned objects: what the run reads of them is
    checked, what it writes is a side effect. (Their identity is the
    function's: a pinned function's __defaults__ are checked by identity.)"""
    fn = operands[0]
    defaults, kwdefaults = fn.__defaults__, fn.__kwdefaults__
    seen = m.defaults_seen.get(id(fn))
    if seen is not None and seen[1] is defaults and seen[2] is kwdefaults:
        return
    m.defaults_seen[id(fn)] = (fn, defaults, kwdefaults)
    name = getattr(fn, "__qualname__", "?")
    for i, value in enumerate(defaults or ()):
        m._track_result(value, f"{name}.__defaults__[{i}]", ("pinned",))
    for key, value in (kwdefaults or {}).items():
        m._track_result(value, f"{name}.__kwdefaults__[{key!r}]", ("pinned",))


def _on_new_cell(m, arg, frame, operands, results, status):
    m.fresh_cells.add(id(results[0]))


def _on_deref(m, name, frame, operands, results, status):
    cell, fn = operands[-2], operands[-1]
    if cell is NULL or status & _C.FAILED or id(cell) in m.fresh_cells:
        return  # a cell made during the run: its contents come from the run
    node = m.node_of(cell)
    if node is None:
        owner = m.node_of(fn)
        base = owner.name if owner is not None else getattr(fn, "__qualname__", "?")
        node = m._add(cell, f"{base}.<closure {name}>", ("pinned",))
    m.record_read(node, ("cell",), results[0])


def is_c_iterator(obj):
    """An iterator whose __next__ is C (a generator, iter(list), itertools.count()):
    taking from it changes state that no instruction shows and a replay would
    not change (a Python __next__ is stepped: its writes are seen)."""
    step = getattr(type(obj), "__next__", None)
    return step is not None and not isinstance(step, types.FunctionType)


def refuse_taking_from(node, how):
    if is_c_iterator(node.obj):
        raise Unsupported(f"{how} takes from the iterator {node.name}, which a replay would not advance")


def refuse_c_state(node, how):
    """`how` would read or change state of the node's object that lives in a C
    layout (a numpy array's data, a random generator...): _c_state.py."""
    reason = c_state_refusal(node, how)
    if reason is not None:
        raise Unsupported(reason)


def _on_contains(m, invert, frame, operands, results, status):
    key, container = operands
    node = m.subject(container)
    if node is None or status & (_C.PYTHON_RAN | _C.FAILED) or isinstance(node.obj, torch.Tensor):
        return
    refuse_taking_from(node, "`in`")
    if not is_value(key):
        refuse_argument_identity(m, key, "`in`")
        m.use_all(node, "membership of a non-constant key")
        return
    found = bool(results[0]) != bool(invert)
    m.record_read(node, ("contains", key), found)


def _on_iter(m, arg, frame, operands, results, status):
    node = m.subject(operands[0])
    if node is None or status & (_C.FAILED | _C.PYTHON_RAN) or isinstance(node.obj, torch.Tensor):
        return  # a Python __iter__ is stepped
    refuse_taking_from(node, "a loop")
    # Iterating a container reads all of it; its items are registered by
    # use_all, so what the loop takes out keeps its provenance.
    m.use_all(node, "iteration")


def _on_unpack(m, n, frame, operands, results, status):
    node = m.subject(operands[0])
    if node is None or status & _C.FAILED or isinstance(node.obj, torch.Tensor):
        return
    if status & _C.PYTHON_RAN:
        return
    refuse_taking_from(node, "unpacking")
    if isinstance(node.obj, (list, tuple)):
        m.record_read(node, ("len",), len(node.obj))
        values = list(reversed(results))
        for i, v in enumerate(values):
            m.record_read(node, ("item", i), v)
    else:
        m.use_all(node, "unpacking")


def _on_truth(m, arg, frame, operands, results, status):
    node = m.subject(operands[0])
    if node is None or isinstance(node.obj, torch.Tensor):
        return
    if node.view is not None:
        m.use_all(node, "truth")
    elif not _has_python_truth(node.obj):  # a Python __bool__/__len__ is stepped
        m.record_read(node, ("truth",), bool(node.obj))


def _has_python_truth(obj):
    t = type(obj)
    for name in ("__bool__", "__len__"):
        f = getattr(t, name, None)
        if isinstance(f, types.FunctionType):
            return True
    return False


def _refuse_library_module_write(obj, name, frame):
    """A program that sets a library module's attribute (somelib.FLAG = 1):
    modules keep no snapshot to replay the write from, so the call runs
    eagerly. (A library's own code writing its modules is its business.)"""
    if _is_library_module_object(obj) and code_kind(frame.f_code.co_filename) == "user":
        raise Unsupported(f"sets {obj.__name__}.{name}, an attribute of a library module")


def _on_store_attr(m, name, frame, operands, results, status):
    value, obj = operands
    _refuse_library_module_write(obj, name, frame)
    node = m.node_of(obj)
    if node is not None:
        m.record_attribute_write(node, name)


def _on_delete_attr(m, name, frame, operands, results, status):
    _refuse_library_module_write(operands[0], name, frame)
    node = m.node_of(operands[0])
    if node is not None:
        m.record_attribute_write(node, name)


def _on_store_item(m, arg, frame, operands, results, status):
    """c[key] = v (operands v, c, key) and del c[key] (operands c, key)."""
    container, key = operands[-2], operands[-1]
    node = m.node_of(container)
    if node is None or isinstance(node.obj, torch.Tensor):
        return
    if is_value(key):
        m.record_write(node, key)
    else:
        m.use_all(node, "a write with a non-constant key")


def _on_store_slice(m, arg, frame, operands, results, status):
    node = m.node_of(operands[1])
    if node is not None and not isinstance(node.obj, torch.Tensor):
        m.use_all(node, "slice assignment")


def _on_store_global(m, name, frame, operands, results, status):
    if code_kind(frame.f_code.co_filename) == "library":
        return
    m.record_write(_globals_node(m, frame.f_globals), name)


def _on_store_deref(m, name, frame, operands, results, status):
    cell, fn = operands[-2], operands[-1]
    if cell is NULL or id(cell) in m.fresh_cells:
        return
    node = m.node_of(cell)
    if node is None:
        owner = m.node_of(fn)
        if owner is None:
            return  # a closure made during the run
        node = m._add(cell, f"{owner.name}.<closure {name}>", ("pinned",))
    m.record_write(node, "<cell>")


def _on_use(m, opname, frame, operands, results, status):
    for v in operands:
        node = m.subject(v)
        if node is None or isinstance(node.obj, torch.Tensor):
            continue
        if isinstance(node.obj, (list, tuple, dict, set, frozenset)):
            m.use_all(node, opname)
        else:
            refuse_c_state(node, opname)  # an operator of a numpy array, say
            m.record_read(node, ("type",), type(node.obj))


def _on_arith(m, op, frame, operands, results, status):
    _on_use(m, "BINARY_OP", frame, operands, results, status)


def _is_torch_callable(fn):
    if isinstance(fn, torch.jit.ScriptFunction):
        return False  # TorchScript calls no torch function: the modes would not see its uses
    if isinstance(fn, (types.BuiltinFunctionType, types.BuiltinMethodType, types.MethodDescriptorType,
                       types.WrapperDescriptorType, types.MethodWrapperType)):
        owner = getattr(fn, "__self__", None)
        if isinstance(owner, torch.Tensor) or getattr(fn, "__objclass__", None) in (torch._C.TensorBase,):
            return True
        module = getattr(fn, "__module__", None) or getattr(owner, "__name__", "") or ""
        return module.startswith("torch")
    module = getattr(fn, "__module__", None) or ""
    return module.startswith("torch.") or module == "torch"


def _symbol_uses(m, kind, arg, operands, results, status):
    """How an instruction uses escaped numbers (_scalars.py): arithmetic keeps
    them symbolic, a torch function takes their tensor, anything else decides."""
    scalars = m.scalars
    symbols = [v for v in operands if scalars.symbol(v) is not None]
    if not symbols:
        return
    if kind == B.ARITH and not status & _C.FAILED and len(operands) == 1:
        scalars.negate(operands[0], results[0], m.tracer)
        return
    if kind == B.ARITH and not status & _C.FAILED:
        a, b = operands
        if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
            return  # a tensor operator: the torch function sees the number
        scalars.arithmetic(arg, a, b, results[0], m.tracer)
        return
    if kind == B.USE and arg.startswith("COMPARE_OP ") and scalars.compare(arg.split()[1], *operands):
        return
    if kind in (B.CALL, B.CALL_EX):
        fn = operands[1] if operands[0] is NULL else operands[0]
        if kind == B.CALL_EX:
            fn = operands[1]
        if _is_torch_callable(fn) or fn is float and all(type(v) is float for v in symbols):
            return
    for v in symbols:
        scalars.decide(v)


# Builtins a size may pass through as it is (min/max compare: SizeInt guards).
_SIZE_TRANSPARENT = {min, max, list, tuple, isinstance, len, print, id, type, getattr, hasattr}


def _size_uses(m, kind, arg, frame, operands):
    """Where the program uses a size it read (_shapes.SizeInt) in a way the
    shape shadow cannot follow, the size is specialized (a guard that it
    keeps this value). Arithmetic and comparisons follow through the
    SizeInt's own methods, tensors through the shadow's torch function mode;
    a tuple or a list that only holds sizes (torch.Size, `shape + (h, d)`)
    uses none of them."""
    from ._shapes import SizeInt, sizes_in
    if kind in (B.ARITH, B.USE) and _size_meets_float(operands, SizeInt):
        # float's own operators take an int subclass as a plain int (`n * 0.5`,
        # `0.5 < n`: no SizeInt method runs), so the result holds for this size only.
        used = [v for v in operands if type(v) is SizeInt]
    elif kind in (B.TRUTH, B.CONTAINS, B.UNPACK, B.ITER) or (kind == B.USE and arg != "FORMAT_VALUE"):
        return
    elif kind == B.ARITH:
        if all(isinstance(v, (int, float, torch.Tensor)) for v in operands):
            return
        used = [v for v in operands if type(v) is SizeInt]  # `[0] * n`: n; `shape + (h, d)`: none
    elif kind in (B.ITEM, B.SLICE):
        if isinstance(operands[0], torch.Tensor):
            return  # a tensor index: the torch function sees it
        used = [n for v in operands[1:] for n in sizes_in(v)]
    elif kind in (B.CALL, B.CALL_EX):
        fn = operands[1] if kind == B.CALL_EX or operands[0] is NULL else operands[0]
        if _is_torch_callable(fn) or one_of(fn, _SIZE_TRANSPARENT) or _runs_python(fn) or _passes_sizes_through(fn):
            return
        used = [n for v in operands[1:] for n in sizes_in(v)]
    elif kind in _STORES:
        # The value stored in Python state: its new value, rebuilt from each
        # call's sizes (_rebuild.Size); a key or a slice's bounds are used
        # here. Stored in an object of a C layout (a numpy array's shape), it is.
        if kind in (B.STORE_ITEM, B.STORE_SLICE) and isinstance(operands[1], torch.Tensor):
            return  # a tensor's item: the torch function sees it
        target = operands[1] if kind in (B.STORE_ATTR, B.STORE_ITEM, B.STORE_SLICE) else None
        if target is not None and native_state_type(type(target)) is not None:
            used = [n for v in operands for n in sizes_in(v)]
        else:
            used = [n for v in operands[2:] for n in sizes_in(v)] if kind in (B.STORE_ITEM, B.STORE_SLICE) else []
    else:
        used = [n for v in operands for n in sizes_in(v)]
    for n in used:
        m.shapes.specialize(n, f"{B.KIND_NAMES.get(kind, kind)} {_describe_use(kind, operands)}")


_STORES = (B.STORE_ATTR, B.STORE_ITEM, B.STORE_SLICE, B.STORE_GLOBAL, B.STORE_DEREF)


def _passes_sizes_through(fn):
    """A C function that computes nothing from a size's value: object's
    __setattr__ bound to an object of Python state (nn.Module's __setattr__
    calls super().__setattr__), a store whose value the side effects
    rebuild; and a type's __instancecheck__ (Parameter's, in the same
    __setattr__)."""
    name = getattr(fn, "__name__", None)
    if name == "__instancecheck__":
        return True
    owner = getattr(fn, "__self__", None)
    return name == "__setattr__" and owner is not None and native_state_type(type(owner)) is None


def _size_meets_float(operands, size_type):
    """A size and a number that is not an int (a float, a complex, a NumPy
    float) side by side: an operator or a comparison between them."""
    return len(operands) == 2 and any(type(v) is size_type for v in operands) and \
        any(isinstance(v, numbers.Number) and not isinstance(v, int) for v in operands)


def _describe_use(kind, operands):
    if kind in (B.CALL, B.CALL_EX):
        fn = operands[1] if kind == B.CALL_EX or operands[0] is NULL else operands[0]
        return qualname(fn)
    return ", ".join(type(v).__name__ for v in operands)


def _runs_python(fn):
    """A Python function or method (the tracer steps into it: its uses are
    seen one by one), a scripted function with its Python original (which a
    capture runs instead, _script.py), or a class whose construction hands
    its arguments to Python code only (a C type such as collections.deque
    would use a size where nothing sees it), or an instance whose class
    defines __call__ in Python (a module: its forward gets the size)."""
    fn = getattr(fn, "__func__", fn)
    if isinstance(fn, types.FunctionType):
        return True
    if not isinstance(fn, type) and isinstance(getattr(type(fn), "__call__", None), types.FunctionType):
        return True
    if isinstance(fn, torch.jit.ScriptFunction):
        from ._script import python_original
        return python_original(fn) is not None
    if not isinstance(fn, type):
        return False
    init, new = fn.__init__, fn.__new__
    python_init = isinstance(init, types.FunctionType)
    python_new = isinstance(new, types.FunctionType)
    return (python_init or python_new) and (python_init or init is object.__init__) and \
        (python_new or new is object.__new__)


def _on_super_attr(m, name, frame, operands, results, status):
    node = m.subject(operands[2])
    if node is not None and not isinstance(node.obj, torch.Tensor):
        m.record_read(node, ("type",), type(node.obj))


def _on_call(m, kwnames, frame, operands, results, status):
    from . import _calls
    first, second, *rest = operands
    if first is NULL:
        fn, args = second, list(rest)
    else:
        fn, args = first, [second, *rest]
    nkw = len(kwnames) if kwnames else 0
    kwargs = dict(zip(kwnames, args[len(args) - nkw:])) if nkw else {}
    if nkw:
        args = args[:len(args) - nkw]
    m.called(fn)
    _calls.on_call(m, fn, args, kwargs, results, status, frame)


def _on_call_ex(m, arg, frame, operands, results, status):
    from . import _calls
    fn = operands[1]
    args = operands[2]
    kwargs = operands[3] if len(operands) > 3 else {}
    for container in (args, kwargs):
        node = m.node_of(container)
        if node is not None:
            m.use_all(node, "*args")
    m.called(fn)
    _calls.on_call(m, fn, list(args) if isinstance(args, (tuple, list)) else [], dict(kwargs) if isinstance(kwargs, dict) else {},
                   results, status, frame)


_HANDLERS = {
    B.ATTR: _on_attr, B.METHOD: _on_method, B.ITEM: _on_item, B.SLICE: _on_slice, B.GLOBAL: _on_global,
    B.DEREF: _on_deref, B.CONTAINS: _on_contains, B.ITER: _on_iter, B.UNPACK: _on_unpack,
    B.CALL: _on_call, B.CALL_EX: _on_call_ex, B.TRUTH: _on_truth, B.STORE_ATTR: _on_store_attr,
    B.DELETE_ATTR: _on_delete_attr, B.STORE_ITEM: _on_store_item, B.DELETE_ITEM: _on_store_item,
    B.STORE_GLOBAL: _on_store_global, B.DELETE_GLOBAL: _on_store_global, B.STORE_DEREF: _on_store_deref,
    B.USE: _on_use, B.STORE_SLICE: _on_store_slice, B.SUPER_ATTR: _on_super_attr, B.NEW_CELL: _on_new_cell,
    B.ARITH: _on_arith, B.SUMMARY: _on_summary, B.DEFAULTS: _on_defaults, B.IDENTITY: _on_identity,
}
