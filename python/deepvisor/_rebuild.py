"""Recipes that rebuild, after a replay, the Python values a call produced:
its result and the new state of the objects it changed (side effects).

At capture every value the call hands back is described once:
- tensors: a graph output, a graph input returned as is, or a view of an
  argument tensor (which must alias the argument as in eager);
- numbers, strings and other immutable values, and pre-existing objects (the
  module, a pinned list...): themselves;
- objects reached from the arguments: fetched again from this call's arguments;
- objects the call made: rebuilt each time, containers item by item, pytree
  nodes (ModelOutput...) through their pytree functions, other objects
  through __reduce_ex__ (as copy.deepcopy does), so that a replay never hands
  out an object of an earlier call. Objects that cannot be rebuilt (a
  generator) make the capture unsupported.
A fresh object that appears twice is built once per replay (aliasing kept).
"""

import collections
import dataclasses
import sys
import types

import torch
from torch.utils import _pytree as pytree

from . import _attributes
from ._monitor import Unsupported, hashable_key, is_value
from ._capture import view_of_argument as _view_of_argument
from ._shapes import SizeInt


class Context:
    """What a replay hands to the recipes."""

    __slots__ = ("outputs", "inputs", "args", "kwargs", "memo")

    def __init__(self, outputs, inputs, args, kwargs):
        self.outputs, self.inputs, self.args, self.kwargs = outputs, inputs, args, kwargs
        self.memo = {}


class Recipe:
    shared = False

    def build(self, ctx):
        if not self.shared:
            return self.make(ctx)
        key = id(self)
        if key in ctx.memo:
            return ctx.memo[key]
        value = ctx.memo[key] = self.make(ctx)
        return value


class Const(Recipe):
    def __init__(self, value):
        self.value = value

    def make(self, ctx):
        return self.value


class Output(Recipe):
    def __init__(self, k):
        self.k = k

    def make(self, ctx):
        return ctx.outputs[self.k]


class Size(Recipe):
    """A size the run read as a SizeInt (_shapes.py) and the call stores or
    returns (`self.seq_len = x.size(1)`): where the capture is symbolic, its
    expression of the symbols evaluated on this call's inputs
    (symbolic_capture binds it); elsewhere the capture's number, which the
    static guards hold."""

    def __init__(self, n):
        self.value = int(n)
        self.sym = n._sym
        self.evaluate = None  # inputs (the call's graph inputs) -> the size

    def make(self, ctx):
        return self.value if self.evaluate is None else self.evaluate(ctx.inputs)


class Fetch(Recipe):
    """An object reached from the call's arguments, by its node's path."""

    def __init__(self, node):
        self.path = []
        while node.source[0] == "access":
            self.path.append(node.source[2])
            node = node.source[1]
        self.root = node.source
        self.path.reverse()

    def make(self, ctx):
        kind, key = self.root
        value = ctx.args[key] if kind == "arg" else ctx.kwargs[key]
        for accessor in self.path:
            if accessor[0] == "attr":
                value = getattr(value, accessor[1])
            elif accessor[0] == "item":  # (the item stored in a dict, as the guards read it)
                value = dict.__getitem__(value, accessor[1]) if isinstance(value, dict) else value[accessor[1]]
            else:
                value = value.cell_contents
        return value


class View(Recipe):
    """A view of an argument tensor: the argument's as_strided, as in eager."""

    def __init__(self, base, sizes, strides, offset):
        self.base, self.sizes, self.strides, self.offset = base, sizes, strides, offset

    def make(self, ctx):
        base = self.base.build(ctx)
        return base.as_strided(self.sizes, self.strides, base.storage_offset() + self.offset)


class Attributed(Recipe):
    """A tensor the run made and gave Python attributes (y.meta = ...): the
    plan's tensor, given them again on each replay."""

    def __init__(self, tensor, attributes):
        self.tensor, self.attributes = tensor, attributes

    def make(self, ctx):
        t = self.tensor.build(ctx)
        d = t.__dict__
        for name, r in self.attributes:
            d[name] = r.build(ctx)
        return t


class Sequence(Recipe):
    shared = True

    def __init__(self, kind, items):
        self.kind, self.items = kind, items

    def make(self, ctx):
        values = [r.build(ctx) for r in self.items]
        kind = self.kind
        if kind is list or kind is tuple:
            return kind(values)
        if kind is torch.Size:
            return torch.Size(values)
        if kind in (set, frozenset):
            return kind(values)
        if isinstance(kind, type) and issubclass(kind, tuple) and hasattr(kind, "_fields"):
            return kind(*values)
        return kind(values)


class Mapping(Recipe):
    shared = True

    def __init__(self, kind, keys, values, default_factory=None):
        self.kind, self.keys, self.values, self.default_factory = kind, keys, values, default_factory

    def make(self, ctx):
        items = [(k.build(ctx), v.build(ctx)) for k, v in zip(self.keys, self.values)]
        if self.kind is collections.defaultdict:
            return collections.defaultdict(self.default_factory, items)
        return self.kind(items)


class Pytree(Recipe):
    shared = True

    def __init__(self, kind, context, children):
        self.kind, self.context, self.children = kind, context, children

    def make(self, ctx):
        unflatten = pytree.SUPPORTED_NODES[self.kind].unflatten_fn
        return unflatten([c.build(ctx) for c in self.children], self.context)


class Reduce(Recipe):
    """An object rebuilt through the __reduce_ex__ protocol."""
    shared = True

    def __init__(self, func, args, state, listitems, dictitems):
        self.func, self.args, self.state, self.listitems, self.dictitems = func, args, state, listitems, dictitems

    def make(self, ctx):
        obj = self.func(*[a.build(ctx) for a in self.args])
        ctx.memo[id(self)] = obj  # the state may refer back to the object
        if self.state is not None:
            state = self.state.build(ctx)
            setstate = getattr(obj, "__setstate__", None)
            if setstate is not None and not _is_default_setstate(obj):
                setstate(state)
            else:
                _set_state(obj, state)
        for r in self.listitems:
            obj.append(r.build(ctx))
        for k, v in self.dictitems:
            obj[k.build(ctx)] = v.build(ctx)
        return obj

    def build(self, ctx):
        key = id(self)
        if key in ctx.memo:
            return ctx.memo[key]
        return self.make(ctx)


def _is_default_setstate(obj):
    f = getattr(type(obj), "__setstate__", None)
    return f is None or f is getattr(object, "__setstate__", None)


def _set_state(obj, state):
    slots = None
    if isinstance(state, tuple) and len(state) == 2:
        state, slots = state
    if state:
        for k, v in state.items():
            object.__setattr__(obj, k, v) if _frozen(obj) else obj.__dict__.__setitem__(k, v)
    if slots:
        for k, v in slots.items():
            object.__setattr__(obj, k, v)


def _frozen(obj):
    params = getattr(type(obj), "__dataclass_params__", None)
    return params is not None and params.frozen


# -- capture side ------------------------------------------------------------------

_OPAQUE_TYPES = (types.FunctionType, types.BuiltinFunctionType, types.MethodType, types.ModuleType, type,
                 types.GeneratorType, types.CoroutineType)


class RecipeBuilder:
    """Describes values at the end of a capture run."""

    def __init__(self, monitor, recorder, arguments_of_input):
        self.argument_views = 0  # views of arguments rebuilt as_strided with this call's layout
        self.monitor = monitor
        self.recorder = recorder
        self.output_tensors = []   # tensors the recipes need as graph outputs
        self._output_index = {}
        self._memo = {}
        self._arguments_of_input = arguments_of_input  # [(input k, tensor)] for argument tensors
        self.sizes = []  # the Size recipes made

    def of(self, value):
        if type(value) is SizeInt and value._shadow is self.monitor.shapes:
            recipe = Size(value)
            self.sizes.append(recipe)
            return recipe
        scalars = self.monitor.scalars
        if scalars is not None and scalars.symbol(value) is not None:
            scalars.decide(value)  # the number itself leaves the function: its value is a version
        if is_value(value):
            return Const(value)
        key = id(value)
        recipe = self._memo.get(key)
        if recipe is None:
            recipe = self._memo[key] = self._describe(value)
        return recipe

    def _describe(self, value):
        node = self.monitor.node_of(value)
        if node is not None and node.source[0] in ("arg", "kwarg", "access"):
            return Fetch(node) if not isinstance(value, torch.Tensor) else self._tensor(value, node)
        if isinstance(value, torch.Tensor):
            return self._tensor(value, node)
        if node is not None:
            return Const(value)  # pinned: the same object
        t = type(value)
        if t in (list, tuple, set, frozenset, torch.Size) or (issubclass(t, tuple) and hasattr(t, "_fields")
                                                               and t not in pytree.SUPPORTED_NODES):
            return Sequence(t, [self.of(v) for v in value])
        if t in (dict, collections.OrderedDict, collections.defaultdict):
            items = list(value.items())
            return Mapping(t, [self.of(k) for k, _ in items], [self.of(v) for _, v in items],
                           getattr(value, "default_factory", None))
        if t in pytree.SUPPORTED_NODES:
            children, context = pytree.SUPPORTED_NODES[t].flatten_fn(value)
            return Pytree(t, context, [self.of(c) for c in children])
        if isinstance(value, (types.GeneratorType, types.CoroutineType)):
            raise Unsupported("the call returns or stores a generator, which a replay cannot rebuild")
        if isinstance(value, _OPAQUE_TYPES) or isinstance(value, torch.nn.Module) or not self._made_by_run(value):
            return Const(value)
        return self._reduce(value)

    def _made_by_run(self, value):
        """Whether an object the monitor did not track must be rebuilt on each
        replay: instances of the program's own classes and dataclasses (made
        by the run, or changed by it), and any object holding a tensor the run
        computed. Other objects (library state, caches) are handed back as the
        same object."""
        cls = type(value)
        if dataclasses.is_dataclass(value) or _defined_in_user_code(cls):
            return True
        return self._holds_run_tensor(value)

    def _holds_run_tensor(self, value, budget=256):
        """Whether a tensor the run computed is reachable from `value` through
        containers, instance dicts and the reductions of C iterators (a
        bounded search)."""
        stack, seen = [value], set()
        while stack and budget > 0:
            v = stack.pop()
            budget -= 1
            if id(v) in seen:
                continue
            seen.add(id(v))
            if isinstance(v, torch.Tensor):
                node = self.monitor.node_of(v)
                if self.recorder.knows(v) and (node is None or not node.pinned):
                    return True
            elif isinstance(v, (list, tuple, set, frozenset)):
                stack.extend(list(v)[:64])
            elif isinstance(v, dict):
                stack.extend(list(v.values())[:64])
            elif isinstance(getattr(v, "__dict__", None), dict) and not isinstance(v, (type, types.ModuleType)):
                stack.extend(list(v.__dict__.values())[:64])
            elif type(v).__module__ in ("builtins", "itertools", "collections") and not is_value(v) \
                    and not isinstance(v, (type, types.BuiltinFunctionType)):
                # C iterators (enumerate, zip, map...): what their reduction holds.
                try:
                    reduced = v.__reduce_ex__(4)
                except Exception:
                    continue
                if isinstance(reduced, tuple):
                    stack.extend(x for x in reduced[1:3] if x is not None)
        return False

    def _reduce(self, value):
        try:
            rv = value.__reduce_ex__(4)
        except Exception as e:
            raise Unsupported(f"the call returns or stores a {type(value).__qualname__}, which cannot be rebuilt "
                              f"({type(e).__name__}: {e})")
        if isinstance(rv, str):
            return Const(value)  # a global singleton
        func, args = rv[0], rv[1]
        state = rv[2] if len(rv) > 2 else None
        listitems = list(rv[3]) if len(rv) > 3 and rv[3] is not None else []
        dictitems = list(rv[4]) if len(rv) > 4 and rv[4] is not None else []
        recipe = Reduce(func, [], None, [], [])
        self._memo[id(value)] = recipe  # cycles
        recipe.args = [self.of(a) for a in args]
        recipe.state = self.of(state) if state is not None else None
        recipe.listitems = [self.of(v) for v in listitems]
        recipe.dictitems = [(self.of(k), self.of(v)) for k, v in dictitems]
        return recipe

    def _tensor(self, t, node):
        if node is not None and node.source[0] in ("arg", "kwarg", "access"):
            return Fetch(node)  # its attributes, if the run set any, are side effects
        recipe = self._made_tensor(t, node)
        attributes = list(t.__dict__.items())
        if not attributes or isinstance(recipe, Const):  # pinned: the same object, with its attributes
            return recipe
        self._memo[id(t)] = recipe  # an attribute that holds the tensor itself
        return Attributed(recipe, [(name, self.of(v)) for name, v in attributes])

    def _made_tensor(self, t, node):
        base = _view_of_argument(t, self._arguments_of_input)
        if base is not None:
            i, sizes, strides, offset = base
            self.argument_views += 1  # its layout is this call's numbers (dynamic shapes: _shapes.py)
            return View(self.of(self._arguments_of_input[i]), sizes, strides, offset)
        if node is not None and node.pinned:
            return Const(t)
        if not self.recorder.knows(t):
            raise Unsupported("the call returns or stores a tensor made outside the recorded ops")
        k = self._output_index.get(id(t))
        if k is None:
            k = self._output_index[id(t)] = len(self.output_tensors)
            self.output_tensors.append(t)
        return Output(k)


def _defined_in_user_code(cls):
    from ._monitor import code_kind
    module = sys.modules.get(getattr(cls, "__module__", None))
    path = getattr(module, "__file__", None)
    return path is not None and code_kind(path) == "user"


# -- side effects ----------------------------------------------------------------------

class SideEffect:
    """The new state of one object the call changed, replayed after the plan."""

    def __init__(self, target, kind, changes, removed, final):
        self.target, self.kind, self.changes, self.removed, self.final = target, kind, changes, removed, final

    def apply(self, ctx):
        obj = self.target.build(ctx)
        kind = self.kind
        if kind == "attrs":
            for k in self.removed:
                _attributes.remove(obj, k)
            for k, r in self.changes:
                _attributes.put(obj, k, r.build(ctx))
        elif kind == "dict":
            setitem = dict.__setitem__ if type(obj) is dict else type(obj).__setitem__
            for k in self.removed:
                obj.pop(k, None)
            for k, r in self.changes:
                setitem(obj, k, r.build(ctx))
        elif kind == "list":
            obj[:] = [r.build(ctx) for r in self.final]
        elif kind == "odict":
            for k in self.removed:
                obj.pop(k, None)
            for k, r in self.changes:
                obj[k] = r.build(ctx)
            for r in self.final or ():  # the order the run left
                k = r.build(ctx)
                if k in obj:
                    obj.move_to_end(k)
        elif kind == "set":
            items = [r.build(ctx) for r in self.final]
            obj.clear()
            obj.update(items)
        elif kind == "cell":
            obj.cell_contents = self.final.build(ctx)


def _reordered(before, after):
    """Whether the keys of `after` are in another order than `before`'s keys
    that remain followed by the new ones (what writes and deletions alone make)."""
    after_keys = [k for k, _ in after]
    kept = set(after_keys)
    before_keys = [k for k, _ in before]
    known = set(before_keys)
    return [k for k in before_keys if k in kept] + [k for k in after_keys if k not in known] != after_keys


def describe_side_effects(builder, monitor):
    """SideEffects for the tracked objects whose state the run changed."""
    out = []
    for node, now in monitor.side_effects():
        target = Const(node.obj) if node.pinned else Fetch(node)
        kind, state = now
        before = node.snapshot[1]
        if kind in ("attrs", "dict", "odict"):
            old = dict(before)
            new = dict(state)
            changes = [(k, builder.of(v)) for k, v in new.items()
                       if k not in old or old[k] is not v or hashable_key(k) in node.written]
            removed = [k for k in old if k not in new]
            order = None
            if kind == "odict" and _reordered(before, state):
                # move_to_end, popitem...: the final order is replayed, so only
                # from the order this run started with.
                monitor.use_all(node, "an OrderedDict the run reordered")
                order = [builder.of(k) for k, _ in state]
            out.append(SideEffect(target, kind, changes, removed, order))
        elif kind in ("list", "set"):
            out.append(SideEffect(target, kind, None, None, [builder.of(v) for v in state]))
        elif kind == "cell":
            out.append(SideEffect(target, kind, None, None, builder.of(state)))
    return out


def _plain(v):
    """A SizeInt (or a tuple holding some) as plain ints."""
    if type(v) is SizeInt:
        return int(v)
    if type(v) is tuple and any(type(e) is SizeInt for e in v):
        return tuple(int(e) if type(e) is SizeInt else e for e in v)
    return v


def plain_sizes_in_state(monitor):
    """Puts plain ints where the capture run stored SizeInts in the program's
    state: a SizeInt holds the capture's shape environment, and is no int to
    code that checks `type(n) is int` (or pickles the object)."""
    for node, (kind, state) in monitor.side_effects():
        obj = node.obj
        if kind in ("attrs", "dict", "odict"):
            for k, v in state:
                plain = _plain(v)
                if plain is not v:
                    if kind == "attrs":
                        _attributes.put(obj, k, plain)
                    else:
                        (dict.__setitem__ if type(obj) is dict else type(obj).__setitem__)(obj, k, plain)
        elif kind == "list":
            for i, v in enumerate(state):
                plain = _plain(v)
                if plain is not v:
                    obj[i] = plain
        elif kind == "cell" and _plain(state) is not state:
            obj.cell_contents = _plain(state)
