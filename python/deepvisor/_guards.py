"""Compiles the monitor's nodes and checks into a C++ GuardProgram
(src/capture/guard_program.h), with a readable expression for each check
(what deepvisor.explain prints)."""

import inspect
import types

import torch

from . import _C
from ._log import log_event
from ._monitor import describe_value, qualname

# Mirrors of the C++ enums (guard_program.h).
_ACCESSORS = {"self": 0, "attr": 1, "item": 2, "cell": 3, "len": 4, "truth": 5, "contains": 6, "hasattr": 7,
              "keys": 8, "content": 9, "type": 10}
_EXPECTS = {"value": 0, "id": 1, "type": 2, "raises": 3, "method": 4, "ids": 5, "tensor": 6, "same": 7}


_EXPRESSIONS = {"self": "{n}", "attr": "{n}.{k}", "item": "{n}[{k!r}]", "cell": "{n}", "len": "len({n})",
                "truth": "bool({n})", "contains": "{k!r} in {n}", "hasattr": "hasattr({n}, {k!r})",
                "keys": "tuple({n}.keys())", "content": "set({n})", "type": "type({n})"}


def expression(name, accessor):
    """The Python expression a check reads: self.scale, len(x), 'k' in d..."""
    kind = accessor[0]
    key = accessor[1] if len(accessor) > 1 else None
    return _EXPRESSIONS.get(kind, "{n}.<" + kind + ">").format(n=name, k=key)


def describe(name, accessor, expectation):
    what = expression(name, accessor)
    kind = expectation[0]
    if kind == "value":
        v = expectation[1]
        if v is None or isinstance(v, bool):
            return f"{what} is {v}"
        return f"{what} == {describe_value(v)}"
    if kind == "id":
        o = expectation[1]
        label = qualname(o)
        return f"id({what}) == {id(o):#x}  ({label})"
    if kind == "type":
        return f"type({what}) is {expectation[1].__qualname__}" if accessor[0] != "type" else \
            f"{what} is {expectation[1].__qualname__}"
    if kind == "raises":
        return f"{what} raises {expectation[1].__name__}"
    if kind == "method":
        return f"{what} is a method of {getattr(expectation[1], '__qualname__', '?')}"
    if kind == "ids":
        return f"{what} holds the same {len(expectation[1])} objects"
    if kind == "tensor":
        return f"{what} is a tensor"
    if kind == "same":
        return f"{what} is {expectation[1].name}"
    return f"{what}: {kind}"


def _data_descriptor(cls, name, seen):
    """Whether `name` on class `cls` is a data descriptor (a slot, a getset):
    its value lives outside the instance dict. `seen` memoizes the answer for
    one compile (a model's many instances of one class ask the same)."""
    key = (cls, name)
    if key not in seen:
        static = inspect.getattr_static(cls, name, None)
        seen[key] = static is not None and (hasattr(type(static), "__set__") or hasattr(type(static), "__delete__"))
    return seen[key]


def _versioned(node, seen):
    """Whether every check on a pinned node reads state that the object's
    type version and instance-dict version (or, for a dict, its own version)
    cover, so that the group may be skipped while they are unchanged."""
    obj = node.obj
    if isinstance(obj, dict):
        return type(obj) is dict or not any(a[0] == "keys" for a, _ in node.checks)
    if isinstance(obj, type) or isinstance(obj, torch.Tensor):
        return False
    d = getattr(obj, "__dict__", None)
    if type(d) is not dict:
        return False
    if not isinstance(obj, types.ModuleType) and type(obj).__getattribute__ is not object.__getattribute__:
        return False
    for accessor, _ in node.checks:
        kind = accessor[0]
        if kind in ("self", "type"):
            continue
        if kind not in ("attr", "hasattr"):
            return False
        name = accessor[1]
        if name == "__dict__":
            continue
        if _data_descriptor(type(obj), name, seen):
            return False
    return True


def compile_guards(monitor, input_tensors, dynamic_dims=None):
    """A GuardProgram for the nodes of `monitor`; input_tensors are the graph's
    inputs in order; dynamic_dims {input position: (sizes, strides)} the
    symbolic sizes and strides (any value here: the plan's shape guards
    check them). Returns
    (program, descriptions, input_sources) where input_sources[k] is the node
    a graph input comes from (or None: pinned)."""
    dynamic_dims = dynamic_dims or {}
    program = _C.GuardProgram()
    program.capture_global_state()
    program.set_arguments(monitor.num_args, list(monitor.kwarg_names))
    regs = {}
    descriptions = []

    def reg_of(node):
        return regs[id(node)]

    def add(node, accessor, expectation, in_group):
        kind = expectation[0]
        expected = expectation[1] if len(expectation) > 1 else None
        other = -1
        if kind == "method":
            expected = (expectation[1], expectation[2])
        elif kind == "same":
            other = reg_of(expectation[1])
            expected = None
        elif kind == "tensor":
            expected = None
        key = accessor[1] if len(accessor) > 1 else None
        text = describe(node.name, accessor, expectation)
        descriptions.append(text)
        program.add_check(reg_of(node), _ACCESSORS[accessor[0]], key, _EXPECTS[kind], expected, other, text)

    # A pinned object's instance dict, when the monitor tracked it too, is
    # checked in the object's group: the group's versions cover the dict.
    pinned = [n for n in monitor.order if n.source[0] == "pinned"]
    seen = {}
    versioned = {id(node): _versioned(node, seen) for node in pinned}
    for node in pinned:
        regs[id(node)] = program.load_pinned(node.obj)
    owner_of = {}
    for node in pinned:
        d = getattr(node.obj, "__dict__", None) if not isinstance(node.obj, (dict, type)) else None
        if type(d) is dict and id(d) in monitor.nodes and versioned[id(node)]:
            owner_of[id(monitor.nodes[id(d)])] = node
    merged = {}
    for node in pinned:
        owner = owner_of.get(id(node))
        if owner is not None:
            merged.setdefault(id(owner), []).append(node)

    for node in monitor.order:
        kind = node.source[0]
        if kind == "view":
            continue
        if kind == "pinned":
            if id(node) in owner_of:
                continue  # checked with its owner
            parts = [node] + merged.get(id(node), [])
            if any(n.checks for n in parts):
                program.begin_group(regs[id(node)], versioned[id(node)])
                for part in parts:
                    for accessor, expectation in part.checks:
                        add(part, accessor, expectation, True)
                program.end_group()
            continue
        if kind == "arg":
            regs[id(node)] = program.load_arg(node.source[1])
        elif kind == "kwarg":
            regs[id(node)] = program.load_kwarg(node.source[1])
        elif kind == "access":
            parent, accessor = node.source[1], node.source[2]
            regs[id(node)] = program.load_access(reg_of(parent), _ACCESSORS[accessor[0]],
                                                 accessor[1] if len(accessor) > 1 else None)
        for accessor, expectation in node.checks:
            add(node, accessor, expectation, False)

    sources = []
    argument_inputs = []
    for k, t in enumerate(input_tensors):
        node = monitor.node_of(t)
        if node is None or id(node) not in regs:
            # No Python state of the program led to it (a constant the capture
            # folded, or a tensor a library made and kept): the plan holds
            # this very tensor, guarded by its own metadata and version only.
            reg = program.load_pinned(t)
            name = f"<tensor {tuple(t.shape)} {t.dtype}>"
            log_event("guards", f"input {k}, {name}: reached through no Python state of the program; "
                                "the plan holds this tensor as it is")
            sources.append(None)
        else:
            reg = regs[id(node)]
            name = node.name
            sources.append(node)
            if not node.pinned:
                argument_inputs.append(k)
        sizes, strides = dynamic_dims.get(k, ((), ()))
        text = f"{name}: {t.dtype} {_layout_text(t.shape, sizes)} strides {_layout_text(t.stride(), strides)} " \
               f"on {t.device}" + (" requires grad" if t.requires_grad else "")
        descriptions.append(text)
        program.add_tensor(reg, k, t, text, list(sizes), list(strides))
    program.add_distinct_inputs(argument_inputs)
    return program, descriptions, sources


def _layout_text(values, symbolic):
    """(2, 6, 8), or (*, 6, 8) where the first is symbolic."""
    return "(" + ", ".join("*" if d in symbolic else str(n) for d, n in enumerate(values)) + ")"
