"""The tensor monitor: records the ATen ops of one real run into an op graph.

The program runs for real under a TorchDispatchMode. Every ATen op it runs is
recorded with its arguments normalized to the op's schema; tensors that did
not come out of a recorded op are graph inputs (the call's arguments first,
then "constants": parameters and other tensors the program reached).

In-place ops on plain tensors are recorded as their functional form (add_ as
add) and the tensor is rebound to the new value; if the tensor existed before
the run, the final value is copied back after a replay. What cannot be replayed
faithfully (tensor data escaping into Python, in-place updates through views,
out= variants, autograd) makes the capture unsupported, with a reason, and the
caller runs the function eagerly.
"""

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_DTYPES = {
    torch.bool: "b8",
    torch.int32: "i32",
    torch.int64: "i64",
    torch.float16: "f16",
    torch.bfloat16: "bf16",
    torch.float32: "f32",
    torch.float64: "f64",
}
_MEMORY_FORMATS = {
    torch.contiguous_format: 0,
    torch.preserve_format: 1,
    torch.channels_last: 2,
    torch.channels_last_3d: 3,
}
# Ops whose result hands tensor data to Python.
_DATA_ESCAPES = {"aten::_local_scalar_dense", "aten::item", "aten::equal", "aten::is_nonzero"}


class Unsupported(Exception):
    """The run did something a replay could not reproduce."""


def _dtype_name(dtype):
    name = _DTYPES.get(dtype)
    if name is None:
        raise Unsupported(f"dtype {dtype} is not supported")
    return name


def _device_name(device):
    device = torch.device(device)
    if device.type == "cpu":
        return "cpu"
    if device.type == "cuda":
        return f"cuda:{device.index if device.index is not None else torch.cuda.current_device()}"
    raise Unsupported(f"device {device} is not supported")


def _quote(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _format_float(value):
    return "f:" + float(value).hex()


class Recorder(TorchDispatchMode):
    """Records one run. Use as a context manager, then call finish()."""

    @classmethod
    def _should_skip_dynamo(cls):
        # Not wrapped in torch._disable_dynamo: that wrapper is Python code the
        # state monitor would step on every op.
        return False

    def __init__(self, arguments):
        super().__init__()
        self.value_lines = []
        self.node_lines = []
        self.input_values = []  # graph inputs: arguments, then constants
        self.constants = []     # tensors behind the constant inputs
        self._value_of = {}     # id(tensor) -> current value id
        self._keep = []         # keeps recorded tensors alive so ids stay unique
        self._input_of = {}     # id(tensor) -> its graph input value id
        self._viewed = set()    # value ids that are views or have views
        self._mutations = {}    # input value id -> final value id
        self.unsupported = None
        self.decisions = []     # where tensor data reached Python (_segments.Decision)
        self.num_arguments = len(arguments)
        for t in arguments:
            v = self._new_value(t)
            self.input_values.append(v)
            self._input_of.setdefault(id(t), v)

    # -- values -------------------------------------------------------------
    def _new_value(self, t):
        if t.layout != torch.strided or t.is_quantized or t.is_nested:
            raise Unsupported("only strided dense tensors are supported")
        v = len(self.value_lines)
        sizes = ",".join(str(s) for s in t.shape)
        strides = ",".join(str(s) for s in t.stride())
        aligned = 1 if t.data_ptr() % 16 == 0 else 0
        self.value_lines.append(
            f"value %{v} {_dtype_name(t.dtype)} sizes={sizes} strides={strides} "
            f"device={_device_name(t.device)} aligned={aligned}")
        self._value_of[id(t)] = v
        self._keep.append(t)
        return v

    def value_of(self, t):
        """The value id of a tensor; unknown tensors become constant inputs."""
        v = self._value_of.get(id(t))
        if v is None:
            v = self._new_value(t)
            self.input_values.append(v)
            self.constants.append(t)
            self._input_of[id(t)] = v
        return v

    # -- arguments ----------------------------------------------------------
    def _encode(self, arg_type, value):
        """One argument in the graph format. Dispatches on the value's type; the
        schema type (a TorchScript type string such as "List[int]" or
        "Optional[int]", which is also how ScalarType and Layout read) only
        decides whether a lone int stands for an int list."""
        if value is None:
            return "none"
        if isinstance(value, torch.Tensor):
            return f"%{self.value_of(value)}"
        if isinstance(value, (list, tuple)):
            if all(isinstance(x, torch.Tensor) for x in value) and "Tensor" in arg_type:
                return "tl:[" + ",".join(f"%{self.value_of(x)}" for x in value) + "]"
            if all(isinstance(x, int) and not isinstance(x, bool) for x in value):
                return "il:[" + ",".join(str(x) for x in value) + "]"
            raise Unsupported(f"list argument of type {arg_type}")
        if isinstance(value, torch.dtype):
            return "dt:" + _dtype_name(value)
        if isinstance(value, torch.device):
            return "dev:" + _quote(_device_name(value))
        if isinstance(value, torch.layout):
            if value != torch.strided:
                raise Unsupported(f"layout {value}")
            return "layout:0"
        if isinstance(value, torch.memory_format):
            return f"mf:{_MEMORY_FORMATS[value]}"
        if isinstance(value, bool):
            return f"b:{int(value)}"
        if isinstance(value, int):
            return f"il:[{value}]" if "List[int]" in arg_type else f"i:{value}"
        if isinstance(value, float):
            return _format_float(value)
        if isinstance(value, str):
            return "s:" + _quote(value)
        raise Unsupported(f"argument of type {type(value).__name__} ({arg_type})")

    def _normalize(self, schema, args, kwargs):
        """Arguments in the schema's positional order, defaults filled in."""
        out = []
        for i, a in enumerate(schema.arguments):
            if i < len(args) and not a.kwarg_only:
                out.append((a, args[i]))
            elif a.name in kwargs:
                out.append((a, kwargs[a.name]))
            elif a.has_default_value():
                out.append((a, a.default_value))
            else:
                raise Unsupported(f"missing argument {a.name}")
        return out

    # -- recording ------------------------------------------------------------
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.unsupported is None:
            try:
                self._record(func, args, kwargs, out)
            except Unsupported as e:
                self.unsupported = f"{func}: {e}"
            except Exception as e:  # never break the user's program over a recording problem
                self.unsupported = f"{func}: recording failed: {type(e).__name__}: {e}"
        return out

    def _record(self, func, args, kwargs, out):
        schema = func._schema
        name = schema.name
        if name in _DATA_ESCAPES:
            self.add_decision(name, [a for a in args if isinstance(a, torch.Tensor)], out)
            return
        op = f"{name}.{func._overloadname}"
        written = [a for a in schema.arguments if a.alias_info is not None and a.alias_info.is_write]
        if written:
            self._record_in_place(func, schema, written, args, kwargs, out)
            return
        bound = self._normalize(schema, args, kwargs)
        encoded = [self._encode(str(a.type), v) for a, v in bound]
        outputs = [t for t in _flatten(out) if isinstance(t, torch.Tensor)]
        out_values = [self._new_value(t) for t in outputs]
        if any(r.alias_info is not None for r in schema.returns):  # a view: aliasing matters for mutation
            self._viewed.update(out_values)
            for _, v in bound:
                if isinstance(v, torch.Tensor):
                    self._viewed.add(self._value_of[id(v)])
        self._add_node(op, encoded, out_values)

    def _record_in_place(self, func, schema, written, args, kwargs, out):
        base = schema.name.split("::")[1]
        if len(written) != 1 or schema.arguments[0] is not written[0] or not base.endswith("_"):
            raise Unsupported("in-place op with out= arguments or several written arguments")
        packet = getattr(torch.ops.aten, base[:-1], None)
        functional = getattr(packet, func._overloadname, None) if packet is not None else None
        if functional is None:
            raise Unsupported(f"in-place op without a functional form ({base[:-1]}.{func._overloadname})")
        target = args[0]
        old = self.value_of(target)
        if old in self._viewed:
            raise Unsupported("in-place update of a view or of a tensor that has views")
        bound = self._normalize(functional._schema, args, kwargs)
        encoded = [self._encode(str(a.type), v) for a, v in bound]
        del self._value_of[id(target)]
        new = self._new_value(target)  # the tensor now holds the new value
        self._add_node(f"{functional._schema.name}.{functional._overloadname}", encoded, [new])
        if id(target) in self._input_of:
            self._mutations[self._input_of[id(target)]] = new

    def _add_node(self, op, encoded, out_values):
        outs = " ".join(f"%{v}" for v in out_values)
        self.node_lines.append(f"node {op} {' '.join(encoded)} -> {outs}".replace("  ", " "))

    # -- decisions ---------------------------------------------------------------
    def add_decision(self, op, tensors, outcome):
        """Tensor data reaches Python here: the graph is cut, and the value read
        selects the version of what follows (see _segments.py)."""
        from ._segments import Decision
        values = [self.value_of(t) for t in tensors]
        self.decisions.append(Decision(len(self.node_lines), op, values, outcome, _user_site()))

    # -- result -----------------------------------------------------------------
    def knows(self, t):
        """Whether `t` is a value of the graph (made by a recorded op or an input)."""
        return id(t) in self._value_of

    def output_values(self, tensors):
        """The value ids of these tensors, which become graph outputs."""
        return [self.value_of(t) for t in tensors]

    @property
    def mutations(self):
        """{graph input value id: the value id of its final contents}."""
        return self._mutations

    def graph_text(self, output_tensors):
        """The graph in the text format, with these tensors as its outputs."""
        output_values = [self.value_of(t) for t in output_tensors]
        lines = ["deepvisor-graph 1", *self.value_lines]
        lines += [f"input %{v}" for v in self.input_values]
        lines += self.node_lines
        lines.append("output" + "".join(f" %{v}" for v in output_values))
        lines += [f"mutation %{i} %{v}" for i, v in self._mutations.items()]
        return "\n".join(lines) + "\n"


    def finish(self, result, arguments):
        """The graph text and how to rebuild `result` from the graph outputs.

        Returns (text, spec, leaves): leaves are ("arg", i) for a call argument
        returned as is, ("view", (i, sizes, strides, offset)) for a view of
        argument i (rebuilt with as_strided, so that it aliases the argument as
        in eager), ("out", k) for graph output k, ("const", obj) otherwise.
        """
        leaves, spec = torch.utils._pytree.tree_flatten(result)
        arg_position = {id(t): i for i, t in enumerate(arguments)}
        output_values, rebuilt = [], []
        for leaf in leaves:
            if isinstance(leaf, torch.Tensor):
                if id(leaf) in arg_position:
                    rebuilt.append(("arg", arg_position[id(leaf)]))
                    continue
                view = _view_of_argument(leaf, arguments)
                if view is not None:
                    rebuilt.append(("view", view))
                    continue
                output_values.append(self.value_of(leaf))
                rebuilt.append(("out", len(output_values) - 1))
            else:
                rebuilt.append(("const", leaf))
        lines = ["deepvisor-graph 1", *self.value_lines]
        lines += [f"input %{v}" for v in self.input_values]
        lines += self.node_lines
        lines.append("output" + "".join(f" %{v}" for v in output_values))
        lines += [f"mutation %{i} %{v}" for i, v in self._mutations.items()]
        return "\n".join(lines) + "\n", spec, rebuilt


def _user_site():
    """file:line of the innermost frame outside torch and deepvisor."""
    import os
    import sys
    torch_dir = os.path.dirname(torch.__file__)
    own_dir = os.path.dirname(__file__)
    f = sys._getframe(1)
    while f is not None:
        name = f.f_code.co_filename
        if not name.startswith((torch_dir, own_dir)):
            return f"{name}:{f.f_lineno}"
        f = f.f_back
    return "?"


def _span(t):
    """The lowest and highest storage offsets `t` reaches."""
    lo = hi = t.storage_offset()
    for size, stride in zip(t.shape, t.stride()):
        lo += min(0, (size - 1) * stride)
        hi += max(0, (size - 1) * stride)
    return lo, hi


def _view_of_argument(leaf, arguments):
    """(i, sizes, strides, offset from argument i's) when `leaf` is a view of
    argument i: the same storage and dtype, within the argument's span. Guards
    pin the arguments' sizes and strides, so the same view of a later call's
    argument i is that argument's as_strided with these numbers."""
    if leaf.numel() == 0:
        return None
    storage = leaf.untyped_storage().data_ptr()
    sharing = [i for i, arg in enumerate(arguments) if arg.untyped_storage().data_ptr() == storage]
    if len(sharing) != 1:
        # None: a result of its own. Several: arguments that share storage (x
        # and x[1:]) cannot tell which one the view came from; a copy is right
        # for later calls that pass unrelated tensors.
        return None
    i = sharing[0]
    arg = arguments[i]
    if arg.numel() == 0 or arg.dtype != leaf.dtype:
        return None
    (lo, hi), (arg_lo, arg_hi) = _span(leaf), _span(arg)
    if not (arg_lo <= lo and hi <= arg_hi):
        return None
    return i, tuple(leaf.shape), tuple(leaf.stride()), leaf.storage_offset() - arg.storage_offset()


def _flatten(out):
    if isinstance(out, (list, tuple)):
        for x in out:
            yield from _flatten(x)
    else:
        yield out
