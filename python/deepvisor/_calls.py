"""What a call of a C function reads and writes, for the Python-state monitor.

Python functions need nothing here: their frames are stepped, so their reads
and writes are seen instruction by instruction. A C function can read or
change the objects it is given without any instruction showing it, so each
call with a tracked argument is classified:

- readers that are modelled exactly (len, getattr, hasattr, isinstance,
  dict.get, dict views...) check exactly what they read;
- mutators of builtin containers (list.append, dict.update, setattr...) are
  writes: the container's prior state is checked and the change is a side
  effect;
- calls with hidden state (random, time, print, input, open), calls that
  take from an iterator held in state (next(it), list(gen)) and answers
  that depend on which object an argument is (id(x), x as a dict key)
  cannot be replayed: the capture is unsupported and the call runs eagerly;
- objects whose state lives in a C layout deepvisor does not follow (a numpy
  array, a random generator, an lru_cache function, a StringIO): a C method
  of theirs, a C function given one, or a call of one runs eagerly
  (_c_state.py);
- any other C function is taken to be a pure function of its arguments, so
  the builtin containers it is given are checked whole. A TorchScript
  function is one unless it has its Python original, which a capture runs
  instead (_script.py).
"""

import _thread
import abc
import bisect
import builtins
import decimal
import functools
import heapq
import inspect
import operator
import os
import random
import time
import types
import warnings
import weakref

import torch

from . import _C
from ._monitor import (NULL, Unsupported, _on_library_module_read, code_kind, is_value, one_of,
                       refuse_argument_identity, refuse_c_state, refuse_taking_from, tensor_metadata)

_MethodDescriptor = (types.MethodDescriptorType, types.WrapperDescriptorType, types.ClassMethodDescriptorType)
_BoundBuiltin = (types.BuiltinMethodType, types.MethodWrapperType)

# (_thread: get_ident() and its kin answer per thread. decimal is impure too:
# _impure_reason.)
_IMPURE_MODULES = ("random", "time", "secrets", "uuid", "numpy.random", "datetime", "os", "socket", "subprocess",
                   "_thread")
# _thread's functions that make a lock (library code guards its caches with
# them: torch.vmap does): a new object, nothing of the thread's read.
_THREAD_LOCK_MAKERS = ("allocate_lock", "allocate", "RLock", "_set_sentinel")
# (os.putenv and os.unsetenv: a write to os.environ calls them; a replay
# would write its dict alone, not the process's environment.)
_IMPURE_BUILTINS = {builtins.print, builtins.input, builtins.open, builtins.breakpoint, os.putenv, os.unsetenv}
_TYPE_READERS = {builtins.isinstance, builtins.issubclass, builtins.type, builtins.callable}
# torch's global settings that guards do not check (GlobalState in
# guard_program.h checks grad mode, the default dtype, autocast, precisions...):
# a program that reads one runs eagerly rather than replay the value it read.
_UNCHECKED_TORCH_GETTERS = {torch.get_num_threads, torch.get_num_interop_threads, torch.is_anomaly_enabled,
                            torch.is_anomaly_check_nan_enabled, torch._C._get_warnAlways,
                            torch._C._get_deterministic_algorithms_warn_only}
# ATen's other settable flags (each has a torch._C._set_ twin), read through
# torch.backends.* (preferred_linalg_library(), quantized.engine...).
_UNCHECKED_TORCH_GETTERS |= {getattr(torch._C, f"_get_{name}") for name in (
    "blas_preferred_backend", "linalg_preferred_backend", "cpu_allow_fp16_reduced_precision_reduction",
    "deterministic_fill_uninitialized_memory", "mkldnn_deterministic", "nnpack_enabled", "qengine",
    "rocm_fa_preferred_backend", "sm_carveout_experimental", "miopen_immediate", "backcompat_broadcast_warn",
    "backcompat_keepdim_warn") if hasattr(torch._C, f"_get_{name}")}
_CONTAINER_TYPES = (list, tuple, dict, set, frozenset)
# C functions that change the list they are given.
_LIST_MUTATING_FUNCTIONS = {heapq.heappush, heapq.heappop, heapq.heapify, heapq.heapreplace, heapq.heappushpop,
                            bisect.insort_left, bisect.insort_right}


def _normalize(fn, args):
    """(owner type or None, name, self or NULL, the other arguments) for a C callable."""
    if isinstance(fn, _MethodDescriptor) and args:
        return fn.__objclass__, fn.__name__, args[0], args[1:]
    if isinstance(fn, _BoundBuiltin):
        owner = getattr(fn, "__self__", None)
        if owner is not None and not isinstance(owner, types.ModuleType):
            return type(owner), fn.__name__, owner, args
    return None, fn, NULL, args


def _is_python(fn):
    return isinstance(fn, (types.FunctionType, types.MethodType)) or (
        not isinstance(fn, type) and isinstance(getattr(type(fn), "__call__", None), types.FunctionType))


# C methods of tensors that hand tensor data to Python without an ATen op the
# tensor monitor would see (apply_, map_, map2_: a Python function of each
# element, called from C and writing the tensor, unseen by both monitors). The
# methods written in Python (__array__, __repr__, storage...) are stepped, not
# reported here: the torch function mode stops at them (_opaque.py).
_TENSOR_DATA_METHODS = ("tolist", "numpy", "data_ptr", "untyped_storage", "apply_", "map_", "map2_")


def watched_callables():
    """Objects whose calls have hidden state: the tracer reports every call of
    them (or of their methods), whatever the arguments."""
    global _WATCHED
    if _WATCHED is None:
        watched = [*_IMPURE_BUILTINS, *_UNCHECKED_TORCH_GETTERS, random._inst, torch.default_generator,
                   torch._C.TensorBase.item, builtins.float, builtins.int]
        watched += [getattr(torch._C.TensorBase, n) for n in _TENSOR_DATA_METHODS]
        watched += [getattr(random, n) for n in dir(random) if isinstance(getattr(random, n), _BoundBuiltin)]
        for module in (time, _thread):
            watched += [getattr(module, n) for n in dir(module)
                        if isinstance(getattr(module, n), types.BuiltinFunctionType)]
        watched += [decimal.Decimal, decimal.getcontext, decimal.setcontext, decimal.localcontext]
        watched += [warnings.warn, warnings.warn_explicit]
        try:
            import numpy.random as npr
            state = npr.mtrand._rand
            watched.append(state)
            watched += [getattr(npr, n) for n in dir(npr) if getattr(getattr(npr, n), "__self__", None) is state]
        except Exception:  # numpy missing or laid out differently
            pass
        _WATCHED = watched
    return _WATCHED


_WATCHED = None


def _impure_reason(fn):
    if isinstance(fn, (types.BuiltinFunctionType, types.FunctionType)) and fn in _IMPURE_BUILTINS:
        return f"calls {fn.__name__}(), which a replay would not repeat"
    if one_of(fn, _UNCHECKED_TORCH_GETTERS):
        return f"reads {fn.__module__}.{fn.__name__}(), a global setting that guards do not check"
    owner = getattr(fn, "__self__", None)
    if isinstance(owner, random.Random):
        return f"calls random.{fn.__name__}(): Python's random state"
    if isinstance(owner, torch.Generator):
        return f"calls torch.Generator.{fn.__name__}(): the random number generator's state"
    module = getattr(fn, "__module__", None) or (owner.__name__ if isinstance(owner, types.ModuleType) else "")
    if module == "decimal":  # the thread's context, which no guard checks
        return f"calls decimal.{getattr(fn, '__name__', fn)}(): decimal arithmetic rounds by the thread's context"
    if module and any(module == m or module.startswith(m + ".") for m in _IMPURE_MODULES):
        if module.startswith("os") and getattr(fn, "__name__", "") in ("fspath", "getcwd", "sep"):
            return None
        if module == "_thread" and getattr(fn, "__name__", "") in _THREAD_LOCK_MAKERS:
            return None  # a new lock: no state of the thread's
        return f"calls {module}.{getattr(fn, '__name__', fn)}(), which has hidden state"
    if type(owner).__module__ == "numpy.random" or type(owner).__name__ in ("RandomState", "Generator"):
        return f"calls numpy random state ({getattr(fn, '__name__', fn)})"
    return None


def on_call(m, fn, args, kwargs, results, status, frame):
    if isinstance(fn, functools.partial):  # its arguments were tracked with it (track_partial_arguments)
        # What its function receives (a Python function's frame is stepped).
        return on_call(m, fn.func, [*fn.args, *args], {**fn.keywords, **kwargs}, results, status, frame)
    if isinstance(fn, torch.jit.ScriptFunction):
        if _scripted_original(m, fn):
            return  # its Python original ran, stepped
    elif _is_python(fn):
        return  # stepped
    if m.scalars is not None and not status & _C.FAILED and results and _reads_a_number(fn, args):
        m.scalars.on_escape(results[0], m.tracer)
        return
    reason = _impure_reason(fn)
    if reason is not None:
        raise Unsupported(reason)
    callee = m.subject(fn)
    if callee is not None:  # a callable object of state (an lru_cache function: its entries)
        refuse_c_state(callee, "a call")
    owner, name, self, rest = _normalize(fn, args)
    failed = bool(status & _C.FAILED)
    if status & _C.PYTHON_RAN:
        read = _attribute_read(fn, owner, name, self, rest)
        if read is not None and _python_property(*read):
            _attribute_made_by_python(m, *read, results, failed)
            return
    if isinstance(self, torch.Tensor) and name in _TENSOR_DATA_METHODS:
        _tensor_data(m, self, name, results, failed)
        return
    if owner is not None:
        node = m.subject(self) if self is not NULL else None
        if node is not None:
            _method_call(m, node, owner, name, rest, kwargs, results, failed)
        _use_args(m, rest, kwargs)
        return
    if type(fn) is operator.attrgetter:
        _attrgetter(m, fn, args, kwargs, results, status)
        return
    if isinstance(fn, weakref.ref):
        _weak_referent(m, fn, args, results, status, frame)
        return
    handler = _FUNCTIONS[fn] if one_of(fn, _FUNCTIONS) else None
    if handler is not None:
        handler(m, args, kwargs, results, failed)
        return
    _use_args(m, args, kwargs)


def _scripted_original(m, fn):
    """A scripted function's call ran its Python original (_script.py): true,
    and where the scripted function is guarded (by identity), the original it
    holds is guarded too, as a plain function would be (its code, defaults).
    False: TorchScript ran, a C function of its arguments."""
    from ._script import python_original
    original = python_original(fn)
    if original is None:
        return False
    node = m.subject(fn)
    if node is not None:
        m.record_read(node, ("attr", "_torchdynamo_inline"), original)
    return True


def _tensor_data(m, tensor, name, results, failed):
    """t.tolist() is a decision on t's data; the other ways of reaching the
    data (numpy(), data_ptr()...) cannot be replayed."""
    if failed:
        return
    if name == "tolist" and m.recorder is not None:
        m.recorder.add_decision("tolist", [tensor], results[0])
        return
    raise Unsupported(f"tensor data reaches Python through Tensor.{name}(), which a replay cannot follow")


def _reads_a_number(fn, args):
    """t.item(), float(t), int(t): a tensor's value as a Python number."""
    if fn is torch._C.TensorBase.item:
        return bool(args) and isinstance(args[0], torch.Tensor)
    return fn in (builtins.float, builtins.int) and len(args) == 1 and isinstance(args[0], torch.Tensor)


def _use_args(m, args, kwargs):
    for v in (*args, *kwargs.values()):
        node = m.subject(v)
        if node is None or isinstance(node.obj, torch.Tensor):
            continue
        refuse_taking_from(node, "a C function (next, list, sum...)")
        refuse_c_state(node, "a C function")
        if isinstance(node.obj, _CONTAINER_TYPES):
            m.use_all(node, "argument of a C function")
        else:
            m.record_read(node, ("type",), type(node.obj))


# -- methods of builtin types --------------------------------------------------------

_DICT_MUTATORS = {"update", "pop", "popitem", "setdefault", "clear", "__setitem__", "__delitem__", "__ior__",
                  "move_to_end"}
_LIST_MUTATORS = {"append", "extend", "insert", "pop", "remove", "clear", "sort", "reverse", "__setitem__",
                  "__delitem__", "__iadd__", "__imul__"}
_SET_MUTATORS = {"add", "discard", "remove", "pop", "clear", "update", "difference_update",
                 "intersection_update", "symmetric_difference_update", "__ior__", "__iand__", "__isub__"}


def _method_call(m, node, owner, name, rest, kwargs, results, failed):
    obj = node.obj
    if isinstance(obj, torch.Tensor):
        return
    refuse_c_state(node, f"{type(obj).__qualname__}.{name}()")
    if isinstance(obj, dict):
        _dict_method(m, node, name, rest, results, failed)
    elif isinstance(obj, list):
        if name in _LIST_MUTATORS:
            m.mutated_by_c(node, f"list.{name}")
        else:
            m.use_all(node, f"list.{name}")
    elif isinstance(obj, (set, frozenset)):
        if name in _SET_MUTATORS:
            m.mutated_by_c(node, f"set.{name}")
        else:
            m.use_all(node, f"set.{name}")
    elif isinstance(obj, tuple):
        m.use_all(node, f"tuple.{name}")
    elif name in ("__next__", "send", "throw", "close", "__setstate__"):
        refuse_taking_from(node, f"{name}()")
        m.record_read(node, ("type",), type(obj))
    elif name in ("__setattr__", "__delattr__") and rest and isinstance(rest[0], str):
        m.record_attribute_write(node, rest[0])
    elif name == "__getattribute__" and rest and is_value(rest[0]):
        _read_attr(m, node, rest[0], results, failed)
    elif name in _STATE_READERS:
        _instance_state_read(m, node, name)
    else:
        m.record_read(node, ("type",), type(obj))


# object's C methods that read an instance's whole state, its __dict__
# (copy.deepcopy and pickle call __reduce_ex__, which hands on the dict).
_STATE_READERS = {"__reduce_ex__", "__reduce__", "__getstate__", "__dir__"}


def _instance_state_read(m, node, name):
    """C code read the object's instance dict: every item of it is checked,
    as it was before the run changed it (and an object whose state lives
    elsewhere, in slots or a C layout, is refused)."""
    m.record_read(node, ("type",), type(node.obj))
    try:
        d = object.__getattribute__(node.obj, "__dict__")
    except AttributeError:
        d = None
    if type(d) is not dict or getattr(type(node.obj), "__slots__", None):
        raise Unsupported(f"{node.name}.{name}() reads state that is not in an instance dict")
    m.record_read(node, ("attr", "__dict__"), d)
    dnode = m.subject(d)
    if dnode is None:
        raise Unsupported(f"{node.name}.{name}() reads an instance dict deepvisor does not track")
    m.use_all(dnode, f"{name}()")


_DICT_KEYED = {"get", "__getitem__", "__contains__", "pop", "setdefault", "__setitem__", "__delitem__"}


def _dict_method(m, node, name, rest, results, failed):
    if name in _DICT_KEYED and rest and not is_value(rest[0]):
        refuse_argument_identity(m, rest[0], f"dict.{name}")  # a key hashed by identity (a tensor)
    if name in ("keys", "values", "items") and not failed:
        m.add_view(results[0], name, node)
    elif name in ("get", "__getitem__") and rest and is_value(rest[0]):
        key = rest[0]
        if key in node.obj or name == "__getitem__":
            if failed:
                m.record_read(node, ("item", key), None, failed=KeyError)
            else:
                m.record_read(node, ("item", key), results[0])
        else:
            m.record_read(node, ("contains", key), False)
    elif name == "__contains__" and rest and is_value(rest[0]) and not failed:
        m.record_read(node, ("contains", rest[0]), bool(results[0]))
    elif name == "__setitem__" and rest and is_value(rest[0]):
        m.record_write(node, rest[0])
    elif name in _DICT_MUTATORS:
        m.mutated_by_c(node, f"dict.{name}")
    else:
        m.use_all(node, f"dict.{name}")


def _attribute_read(fn, owner, name, self, rest):
    """(obj, attribute name) of getattr(obj, "name") or
    obj.__getattribute__("name") (super()'s too); else None."""
    if owner is not None:
        return (self, rest[0]) if name == "__getattribute__" and rest and isinstance(rest[0], str) else None
    if fn is builtins.getattr and len(rest) >= 2 and isinstance(rest[1], str):
        return rest[0], rest[1]
    return None


def _python_property(obj, name):
    """Whether `name` is a property of obj's type: a data descriptor, found
    before the instance dict, whose getter is Python. (Where Python ran for
    another reason, a __getattr__ after the lookup failed, that failure is a
    read to check: `getattr(module, "calls", 0)` until the run sets it.)"""
    found = inspect.getattr_static(type(obj), name, None)
    return type(found) is property and isinstance(found.fget, types.FunctionType)


def _attribute_made_by_python(m, obj, name, results, failed):
    """A C getattr that ran a property's Python getter: its reads were
    stepped and checked, and its result is what that code made (a property
    that returns a new object on each read: checked by identity, it would
    never hold). As for `obj.name` (_on_attr): only named after the attribute."""
    node = m.subject(obj)
    if node is not None and not failed:
        m.rename(results[0], f"{node.name}.{name}")


def _read_attr(m, node, name, results, failed):
    if failed:
        m.record_read(node, ("attr", name), None, failed=AttributeError)
    else:
        m.record_read(node, ("attr", name), results[0])


# -- builtin functions ------------------------------------------------------------------

def _getattr(m, args, kwargs, results, failed):
    if len(args) < 2 or not isinstance(args[1], str):
        return _use_args(m, args, kwargs)
    node = m.subject(args[0])
    if node is None or tensor_metadata(node.obj, args[1]):
        return
    if failed or (len(args) == 3 and results[0] is args[2] and not hasattr(node.obj, args[1])):
        m.record_read(node, ("hasattr", args[1]), False)
        return
    m.record_read(node, ("attr", args[1]), results[0])


def track_partial_arguments(m, node):
    """A partial passes the arguments it holds to its function, though no
    instruction reads them: they are tracked when the partial is, before any
    call of it, as objects fixed by the partial's identity (checked where it is
    called: StateMonitor.called; its args are a tuple). Its keywords dict is
    read whole."""
    fn = node.obj
    for i, value in enumerate(fn.args):
        m._track_result(value, f"{node.name}.args[{i}]", ("pinned",))
    keywords = m._track_result(fn.keywords, f"{node.name}.keywords", ("pinned",))
    if keywords is not None:
        m.use_all(keywords, "functools.partial")


def _weak_referent(m, ref, args, results, status, frame):
    """ref() in the program's code (self.parent_ref().cfg): the referent is
    state its later reads reach, fixed by the weakref's identity (checked where
    it is guarded or called), so it is tracked. The plan then holds it, as it
    holds any pinned object. Library code's weakrefs (a WeakValueDictionary's
    callbacks) are left as they were: their referents are its own caches."""
    node = m.subject(ref)
    if node is None or args or status & _C.FAILED or not results or results[0] is None:
        return
    if code_kind(frame.f_code.co_filename) == "user":
        m._track_result(results[0], f"{node.name}()", ("pinned",))


def _vars(m, args, kwargs, results, failed):
    """vars(obj) is obj.__dict__ (without an argument: the caller's locals)."""
    node = m.subject(args[0]) if len(args) == 1 and not kwargs else None
    if node is None or failed or isinstance(node.obj, torch.Tensor):
        return _use_args(m, args, kwargs)
    m.record_read(node, ("attr", "__dict__"), results[0])


def _attrgetter(m, getter, args, kwargs, results, status):
    """operator.attrgetter('a', 'b')(obj): obj.a and obj.b, read by C."""
    node = m.subject(args[0]) if len(args) == 1 and not kwargs else None
    if node is None or status & _C.FAILED or isinstance(node.obj, torch.Tensor):
        return _use_args(m, args, kwargs)
    names = getter.__reduce__()[1]
    if any("." in name for name in names) or (status & _C.PYTHON_RAN and len(names) > 1):
        # What obj.a.b or a property between plain attributes gave is not in the result.
        raise Unsupported(f"operator.attrgetter{names} reads {node.name} through attributes a replay cannot check")
    if status & _C.PYTHON_RAN:
        return  # a Python __getattr__ or property ran: its reads were stepped
    values = results[0] if len(names) > 1 else (results[0],)
    for name, value in zip(names, values):
        m.record_read(node, ("attr", name), value)


def _hasattr(m, args, kwargs, results, failed):
    if len(args) != 2 or not isinstance(args[1], str) or failed:
        return _use_args(m, args, kwargs)
    node = m.subject(args[0])
    if node is not None and not tensor_metadata(node.obj, args[1]):
        m.record_read(node, ("hasattr", args[1]), bool(results[0]))


def _setattr(m, args, kwargs, results, failed):
    node = m.subject(args[0]) if args else None
    if node is not None and len(args) >= 2 and isinstance(args[1], str):
        m.record_attribute_write(node, args[1])


def _identity(m, args, kwargs, results, failed):
    """id(obj): fixed for pinned state (its identity is checked); an argument's is
    which object the caller passed."""
    if len(args) == 1:
        refuse_argument_identity(m, args[0], "id()")
    _type_reader(m, args, kwargs, results, failed)


def _hash(m, args, kwargs, results, failed):
    """hash(obj) by identity (no __hash__ of its own in Python: a Python one is stepped)."""
    if len(args) == 1 and not isinstance(getattr(type(args[0]), "__hash__", None), types.FunctionType):
        refuse_argument_identity(m, args[0], "hash()")
    _use_args(m, args, kwargs)


def _mutates_its_list(m, args, kwargs, results, failed):
    """heapq.heappush(lst, v), bisect.insort(lst, v): a change of lst."""
    node = m.subject(args[0]) if args else None
    if node is not None and isinstance(node.obj, list):
        m.mutated_by_c(node, "heapq/bisect")
    _use_args(m, args[1:], kwargs)


def _len(m, args, kwargs, results, failed):
    node = m.subject(args[0]) if len(args) == 1 else None
    if node is not None:
        refuse_c_state(node, "len()")
    if node is None or failed or isinstance(node.obj, torch.Tensor):
        return
    if isinstance(node.obj, _CONTAINER_TYPES):
        m.record_read(node, ("len",), results[0])


class _AbcRegistrations:
    """abc.get_cache_token() as an attribute. isinstance and issubclass
    against an ABC answer from registrations (ABC.register, anywhere) that no
    object of the program holds; every registration changes the token, so a
    check on it (a property: checked on every call) guards such answers."""
    @property
    def token(self):
        return abc.get_cache_token()


_ABC_REGISTRATIONS = _AbcRegistrations()


def _asks_an_abc(classes):
    classes = classes if isinstance(classes, tuple) else (classes,)
    return any(isinstance(c, abc.ABCMeta) or isinstance(c, tuple) and _asks_an_abc(c) for c in classes)


def _type_reader(m, args, kwargs, results, failed):
    if len(args) == 2 and _asks_an_abc(args[1]):
        node = m.node_of(_ABC_REGISTRATIONS) or m._add(_ABC_REGISTRATIONS, "abc registrations", ("pinned",))
        m.record_read(node, ("attr", "token"), abc.get_cache_token())
    node = m.subject(args[0]) if args else None
    if node is not None and not isinstance(node.obj, torch.Tensor):
        m.record_read(node, ("type",), type(node.obj))
        if len(args) == 1 and not failed and results[0] is type(node.obj):
            # type(obj): its class (checked by the line above) is state a later read may reach (type(obj).K).
            m._track_result(results[0], f"type({node.name})", ("pinned",))
    for v in args[1:]:
        n = m.subject(v)
        if n is not None and isinstance(n.obj, _CONTAINER_TYPES):
            m.use_all(n, "isinstance")


def _may_always_show(args, kwargs, filters):
    """Whether the filter that handles this warning may be "always": the first
    filter that matches its text and category, where a filter that also
    names a module or a line (which depend on the caller's stack level) is
    taken to match if it says "always", else passed over."""
    message = args[0] if args else kwargs.get("message")
    category = args[1] if len(args) > 1 else kwargs.get("category")
    if isinstance(message, Warning):
        category, message = type(message), str(message)
    if not (isinstance(category, type) and issubclass(category, Warning)):
        category = UserWarning
    text = str(message)
    for action, pattern, kind, module, line in filters:
        if (pattern is not None and not pattern.match(text)) or not issubclass(category, kind):
            continue
        if module is None and line == 0:
            return action in ("always", "all")
        if action in ("always", "all"):
            return True
    return warnings.defaultaction in ("always", "all")


def _warn(m, args, kwargs, results, failed):
    """warnings.warn / warn_explicit: the capture run showed the warning (or
    not) as eager does. Under the filters' other actions a replay shows
    nothing more than eager would (once a place, a module, a process); under
    "always" eager shows it on every call, so that call runs eagerly. The
    filters are checked: changing them may show it again (and resets what
    was shown)."""
    filters = warnings.filters
    # (Checked first: the eager plan of an "always" filter serves only calls under the same filters.)
    _on_library_module_read(m, warnings, "defaultaction", warnings.defaultaction)
    _on_library_module_read(m, warnings, "filters", filters)
    node = m.node_of(filters)
    if node is not None:
        m.use_all(node, "warnings' filters")
    if _may_always_show(args, kwargs, filters):
        raise Unsupported("calls warnings.warn under an 'always' filter: a replay would not show the warning")
    _use_args(m, args, kwargs)


_FUNCTIONS = {builtins.getattr: _getattr, builtins.hasattr: _hasattr, builtins.setattr: _setattr,
              builtins.delattr: _setattr, builtins.len: _len, builtins.vars: _vars, builtins.id: _identity,
              builtins.hash: _hash}
for _f in _TYPE_READERS:
    _FUNCTIONS[_f] = _type_reader
for _f in (warnings.warn, warnings.warn_explicit):
    _FUNCTIONS[_f] = _warn
for _f in _LIST_MUTATING_FUNCTIONS:
    _FUNCTIONS[_f] = _mutates_its_list
