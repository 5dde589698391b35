"""The tensor monitor: records the ATen ops of one real run into an op graph.

The program runs for real under a TorchDispatchMode. Every ATen op it runs is
recorded with its arguments normalized to the op's schema; tensors that did
not come out of a recorded op are graph inputs (the call's arguments first,
then "constants": parameters and other tensors the program reached). Every
dtype is a legal graph value (lowering turns ops on dtypes the loop IR cannot
compute into fallbacks); quantized, sparse and nested tensors are not.

Aliasing is modelled, so that the graph stays functional (SSA) while the
program updates tensors in place:

- Tensors that share memory form a *family*: a base (a graph input, or the
  result of an op that made new memory) and views of it. A view remembers the
  chain of view ops (slice, select, view, permute, unbind...) from the base.
- A family's base has a current value; a write bumps the family's version.
  A view whose value is older than its family is re-derived from the base's
  current value by recording its view chain again, when it is next read.
- An in-place op is recorded as its functional form (add_ as add) when ATen
  has one, else as the op itself, which the runtime runs on copies of the
  written arguments (out= variants, normal_, index_put_ with no functional
  twin...). Either way the node yields the written tensor's new contents.
  Writing a view writes its base: the new contents are scattered back through
  the chain (select_scatter, slice_scatter, an inverse permute or reshape...).
- Ops that change a tensor's sizes or strides in place (t_, transpose_,
  squeeze_, unsqueeze_, as_strided_) extend its view chain; an input changed
  so is restrided after a replay.
- A graph input whose family was written gets a `mutation` line: its final
  contents are copied back after a replay.

Constants are folded: a tensor made from Python data during the run
(lift_fresh of torch.tensor(...)) is a *known* value, and so are the result
of a deterministic factory of constant arguments (arange, ones, full: not in
a symbolic capture, where the run cannot tell a symbolic size from a
constant), a view of a known value and the results of a deterministic op
that writes nothing and reads only known values. Where such a result is a small CPU tensor (DeBERTa's
`torch.tensor(min(q, k, 512))` and the slice bounds and clamp limits it
computes from it) the op is no node: the run computed it, and it becomes a
constant input of the graph (a copy the plan holds), added only if the graph
reads it. Tensor data of a known value reaching Python is no decision: every
replay would compute the same number from the same constants (add_decision).
A write makes a new value, which is not known.

What cannot be replayed faithfully (tensor data escaping into Python, a write
through a view op without a scatter form, memory shared in ways the monitor
did not see made) makes the capture unsupported, with a reason, and the
caller runs the function eagerly.
"""

import contextlib
import functools
import re
import weakref

import torch
from torch._subclasses.fake_tensor import FakeTensor
from torch.utils._python_dispatch import TorchDispatchMode

# Every dtype torch has, by its name in the graph format (src/ir/dtype.h).
_DTYPE_NAMES = [
    ("bool", "b8"), ("int32", "i32"), ("int64", "i64"), ("float16", "f16"), ("bfloat16", "bf16"),
    ("float32", "f32"), ("float64", "f64"),
    ("uint8", "u8"), ("int8", "i8"), ("int16", "i16"), ("uint16", "u16"), ("uint32", "u32"), ("uint64", "u64"),
    ("complex32", "c32"), ("complex64", "c64"), ("complex128", "c128"),
    ("float8_e5m2", "f8e5m2"), ("float8_e4m3fn", "f8e4m3fn"), ("float8_e5m2fnuz", "f8e5m2fnuz"),
    ("float8_e4m3fnuz", "f8e4m3fnuz"), ("float8_e8m0fnu", "f8e8m0fnu"), ("float4_e2m1fn_x2", "f4e2m1fnx2"),
    ("qint8", "qi8"), ("quint8", "qu8"), ("qint32", "qi32"), ("quint4x2", "qu4x2"), ("quint2x4", "qu2x4"),
    ("bits1x8", "bits1x8"), ("bits2x4", "bits2x4"), ("bits4x2", "bits4x2"), ("bits8", "bits8"), ("bits16", "bits16"),
    *((f"uint{n}", f"u{n}") for n in range(1, 8)),
    *((f"int{n}", f"i{n}") for n in range(1, 8)),
]
_DTYPES = {getattr(torch, attr): name for attr, name in _DTYPE_NAMES if hasattr(torch, attr)}
_MEMORY_FORMATS = {
    torch.contiguous_format: 0,
    torch.preserve_format: 1,
    torch.channels_last: 2,
    torch.channels_last_3d: 3,
}
# Ops whose result hands tensor data to Python.
_DATA_ESCAPES = {"aten::_local_scalar_dense", "aten::item", "aten::equal", "aten::is_nonzero"}
# Ops that return memory of their input although their schema does not say
# so: ATen calls them on temporaries nothing else reads, and functionalization
# treats them as copies; so do we.
_UNSAFE_VIEWS = {"aten::_unsafe_view", "aten::unsafe_split", "aten::unsafe_split_with_sizes"}
# Ops annotated as views that make a tensor of their own for the program:
# lift_fresh marks a tensor made from Python data (torch.tensor(...)) during
# the run; later runs make a fresh one, so writes to it must not reach the
# captured constant.
_FRESH = {"aten::lift_fresh", "aten::lift_fresh_copy"}
# In-place ops that change sizes/strides rather than data: the view op each
# one applies to the tensor.
_METADATA_OPS = {
    "aten::t_.default": torch.ops.aten.t.default,
    "aten::transpose_.default": torch.ops.aten.transpose.int,
    "aten::squeeze_.default": torch.ops.aten.squeeze.default,
    "aten::squeeze_.dim": torch.ops.aten.squeeze.dim,
    "aten::squeeze_.dims": torch.ops.aten.squeeze.dims,
    "aten::unsqueeze_.default": torch.ops.aten.unsqueeze.default,
    "aten::as_strided_.default": torch.ops.aten.as_strided.default,
    "aten::swapdims_.default": torch.ops.aten.transpose.int,
    "aten::swapaxes_.default": torch.ops.aten.transpose.int,
}
_NO_OPS = {"aten::detach_"}  # in-place, but no change a replay could see
# Returns of attention's fused kernels that hold no result of the call: the
# random state of its dropout (which only the backward reads), a placeholder,
# the debug mask not asked for. ATen's CUDA kernels and their fake versions
# lay them out differently (flash attention's rng_state is int64 [2] on the
# GPU and uint64 fake, its debug mask undefined and a [0] tensor fake), so
# the shape shadow's graph never matched the real run's and bf16 decoding on
# a GPU captured once a token. Both recorders write them as undefined; a
# program that reads one gets no plan.
_PLACEHOLDER_RETURNS = {"rng_state", "unused", "debug_attn_mask", "philox_seed", "philox_offset"}
_FUSED_ATTENTION = {"aten::_scaled_dot_product_flash_attention", "aten::_scaled_dot_product_efficient_attention",
                    "aten::_scaled_dot_product_cudnn_attention", "aten::_flash_attention_forward",
                    "aten::_efficient_attention_forward"}
# Queries of a tensor's metadata that ATen's Python decompositions dispatch (the
# shape shadow runs them, _shapes.py): they compute nothing a graph holds.
_METADATA_QUERIES = {"prim::device", "prim::layout", "aten::sym_size", "aten::sym_stride", "aten::sym_numel",
                     "aten::sym_storage_offset", "aten::is_contiguous", "aten::is_strides_like_format",
                     "aten::is_non_overlapping_and_dense"}
# View ops whose write-back is a reshape: they keep the row-major element order.
_RESHAPES = {"aten::view.default", "aten::_reshape_alias.default",
             "aten::unsqueeze.default", "aten::squeeze.default", "aten::squeeze.dim", "aten::squeeze.dims",
             "aten::view_copy.default", "aten::reshape.default"}
_IDENTITY_VIEWS = {"aten::alias.default", "aten::detach.default", "aten::alias_copy.default"}
# Folded results (a known value computed at capture time) are CPU tensors of
# at most this many elements: scalars and small tables, not data a plan
# should carry a copy of.
_FOLD_NUMEL = 64
_REF = re.compile(r"%(\d+)")


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
    return float(value).hex()


def _int_text(v):
    """An int in the graph format. A symbolic size (a SymInt of the shape
    shadow, _shapes.py) reads `{expression}`; _shapes.Template fills it in."""
    if isinstance(v, torch.SymInt):
        constant = v.node.maybe_as_int()
        return str(constant) if constant is not None else "{" + str(v.node.expr) + "}"
    return str(int(v))


def _is_int(v):
    return isinstance(v, (int, torch.SymInt)) and not isinstance(v, bool)


def _ints(values):
    return ",".join(_int_text(v) for v in values)


def _ignore(*_):
    pass


def _storage_key(t):
    """What tells memory apart: the data pointer of a tensor's storage; for a
    fake tensor of the shape shadow (no data), the storage object."""
    storage = t.untyped_storage()
    if isinstance(t, FakeTensor):
        return storage._cdata
    return storage.data_ptr()


def _contiguous_strides(sizes):
    strides, n = [], 1
    for s in reversed(sizes):
        strides.append(n)
        n *= max(s, 1)
    return tuple(reversed(strides))


def _tensor_positions(type_str):
    """How many tensors a schema type holds: "one" (Tensor, Tensor?), "list"
    (Tensor[], Tensor?[]) or None."""
    if type_str in ("Tensor", "Optional[Tensor]"):
        return "one"
    if type_str in ("List[Tensor]", "List[Optional[Tensor]]"):
        return "list"
    return None


def _is_written(arg):
    return arg.alias_info is not None and arg.alias_info.is_write


class _Meta:
    """What a value line says of a tensor."""

    __slots__ = ("dtype", "sizes", "strides", "device", "aligned")

    def __init__(self, dtype, sizes, strides, device, aligned):
        self.dtype, self.sizes, self.strides, self.device, self.aligned = dtype, sizes, strides, device, aligned

    @staticmethod
    def of(t):
        if t.is_quantized:
            raise Unsupported("quantized tensors are not supported")
        if t.is_nested:
            raise Unsupported("nested tensors are not supported")
        if t.layout != torch.strided:
            raise Unsupported(f"{t.layout} tensors are not supported (only strided dense ones)")
        # A fake tensor (the shape shadow's) has no address: the template takes
        # the alignment from the real run's line.
        aligned = 1 if isinstance(t, FakeTensor) else (1 if t.data_ptr() % 16 == 0 else 0)
        return _Meta(_dtype_name(t.dtype), tuple(t.shape), tuple(t.stride()), _device_name(t.device), aligned)

    def line(self, v):
        return (f"value %{v} {self.dtype} sizes={_ints(self.sizes)} strides={_ints(self.strides)} "
                f"device={self.device} aligned={self.aligned}")


class _Family:
    """Tensors sharing one piece of memory: a base and views of it."""

    __slots__ = ("base_value", "base_meta", "base_offset", "version", "input", "storage", "is_argument")

    def __init__(self, base_value, base_meta, base_offset, storage, input=None, is_argument=False):
        self.base_value = base_value    # value id of the base's current contents
        self.base_meta = base_meta      # the base's layout as first seen
        self.base_offset = base_offset  # its storage offset then
        self.version = 0                # bumped by every write into the family
        self.input = input              # graph input value id, if the base is an input
        self.storage = storage          # data_ptr of the memory (None when empty)
        self.is_argument = is_argument


class _Step:
    """One view op of a chain: re-recordable on a new value of its input."""

    __slots__ = ("op", "args", "self_pos", "raw", "out_metas", "out_index", "in_meta")

    def __init__(self, op, args, self_pos, raw, out_metas, out_index, in_meta):
        self.op = op                # "aten::slice.Tensor"
        self.args = args            # encoded arguments; args[self_pos] is replaced
        self.self_pos = self_pos
        self.raw = raw              # the Python values of the arguments
        self.out_metas = out_metas  # meta of each tensor output (None: undefined)
        self.out_index = out_index  # which output is this step's tensor
        self.in_meta = in_meta      # meta of the viewed tensor

    @property
    def out_meta(self):
        return self.out_metas[self.out_index]


class _Alias:
    """What the monitor knows of one tensor object."""

    __slots__ = ("family", "chain", "value", "version")

    def __init__(self, family, chain=(), value=None, version=0):
        self.family = family
        self.chain = chain      # view steps from the family's base; () for the base itself
        self.value = value      # views: value id of the contents at `version`
        self.version = version


class _OpInfo:
    """Per-op facts from the schema, computed once."""

    def __init__(self, func):
        schema = func._schema
        self.schema = schema
        self.name = schema.name
        self.op = f"{schema.name}.{func._overloadname}"
        self.written = [i for i, a in enumerate(schema.arguments) if _is_written(a)]
        self.is_view = (not self.written and self.name not in _FRESH and
                        any(r.alias_info is not None for r in schema.returns))
        # Outputs that get memory of their own in a replay, whatever they share here.
        self.private = self.name in _FRESH or self.name in _UNSAFE_VIEWS
        # Result sizes that depend on the data (nonzero, unique...; index.Tensor with a boolean index only).
        self.sized_by_data = torch.Tag.dynamic_output_shape in func.tags
        self.view_self = 0
        if self.is_view:
            for i, a in enumerate(schema.arguments):
                if a.alias_info is not None:
                    self.view_self = i
                    break


_OP_INFO = {}


def _op_info(func):
    info = _OP_INFO.get(func)
    if info is None:
        info = _OP_INFO[func] = _OpInfo(func)
    return info


def _functional_form(func, info):
    """The out-of-place twin of an in-place op (add_.Tensor -> add.Tensor): the
    same arguments, one returned tensor. None if ATen has none."""
    base = info.name.split("::")[1]
    if info.written != [0] or not base.endswith("_"):
        return None
    packet = getattr(torch.ops.aten, base[:-1], None)
    functional = getattr(packet, func._overloadname, None) if packet is not None else None
    if functional is None:
        return None
    f_args, args = functional._schema.arguments, info.schema.arguments
    if len(f_args) != len(args) or len(functional._schema.returns) != 1:
        return None
    if any(a.name != b.name or str(a.type) != str(b.type) for a, b in zip(f_args, args)):
        return None
    if str(functional._schema.returns[0].type) != "Tensor":
        return None
    return functional


@contextlib.contextmanager
def casts_recorded():
    """Autocast keeps the casts of parameters it made in its region (a
    weight cast once a region) and hands later ops the cached tensor, which
    no recorded op made: the capture would hold it as a constant of the
    plan, valid only for the region it was cast in and blind to the
    parameter's later updates (stale results after an optimizer step, when
    eager ran in the region before the capture). During a capture the cache
    is emptied and off, so the casts run and are recorded from the
    parameters; emptying it costs eager only a cast again."""
    enabled = torch.is_autocast_cache_enabled()
    torch.clear_autocast_cache()
    torch.set_autocast_cache_enabled(False)
    try:
        yield
    finally:
        torch.set_autocast_cache_enabled(enabled)


class Recorder(TorchDispatchMode):
    """Records one run. Use as a context manager; then read the parts of its
    graph (value_lines, input_values, node_lines, output_values, mutations,
    restride_lines, decisions): _segments.split assembles them."""

    @classmethod
    def _should_skip_dynamo(cls):
        # Not wrapped in torch._disable_dynamo: that wrapper is Python code the
        # state monitor would step on every op.
        return False

    def __init__(self, arguments, is_argument=None):
        super().__init__()
        # is_argument(t): whether a tensor met during the run came from the
        # call's arguments (the state monitor knows); they are guarded and
        # re-read on every call, and their memory is the caller's.
        self._is_argument = is_argument or (lambda t: False)
        self.decisions = []     # where tensor data reached Python (_segments.Decision)
        self.scalar_subs = {}   # during a torch function given escaped numbers: bits -> [symbol, tensor, used]
        self.value_lines = []
        self.node_lines = []
        self.random_nodes = set()  # positions in node_lines of ops that draw random numbers
        self.input_values = []  # graph inputs: arguments, then constants
        self.constants = []     # tensors behind the constant inputs
        self._alias = {}        # id(tensor) -> _Alias
        self._watched = {}      # id(tensor) -> a weak reference that forgets the tensor when it dies (_keep_alive)
        self._placeholders = {}  # id(tensor) -> (weak reference, what it is): returns left undefined (_outputs)
        self._live_on_storage = {}  # storage key -> tensors watched on it that are alive
        self._forget_weakly = weakref.WeakMethod(self._forget)  # (no cycle through the callbacks)
        self._input_of = {}     # id(tensor) -> its graph input value id
        self._initial_layout = {}  # graph input value id -> (tensor, sizes, strides, storage offset)
        self._families_by_storage = {}  # data_ptr -> families on that memory
        self._input_families = []       # families whose base is a graph input
        self._argument_storages = set()
        self.unsupported = None
        self._opaque_depth = 0  # > 0 while an op recorded as one node runs (record_opaque)
        self._known = set()     # value ids of known constants (folded, see the module's docstring)
        self.factories_known = True  # a factory of constant arguments makes a known value (not in symbolic captures)
        self._folded = {}       # value id of a folded result no node read yet -> the copy the plan holds
        self.last_escape = None  # the Decision of the last data escape; None when it read a known value
        self.num_arguments = len(arguments)
        try:
            for t in arguments:
                self._add_input(t, is_argument=True)
        except Unsupported as e:
            self.unsupported = str(e)

    # -- values -------------------------------------------------------------
    def _new_value(self, meta):
        v = len(self.value_lines)
        self.value_lines.append(meta.line(v))
        return v

    def _keep_alive(self, t):
        """Watches `t` until it dies, and then forgets its id and, with the last
        tensor watched on its memory, that memory: a later tensor may get the
        same id or the same address and must not be taken for it. (Holding
        every tensor of the run instead kept all its intermediates alive: a
        capture of BERT-base at batch 16 peaked at 13x an eager call's memory.)
        torch keeps a tensor's Python object alive while C++ holds the tensor,
        so a dead object's tensor never comes back under another id."""
        key = id(t)
        watched = self._watched.get(key)
        if watched is not None and watched() is t:
            return
        storage = _storage_key(t) if _nonempty(t) else None
        if storage is not None:
            self._live_on_storage[storage] = self._live_on_storage.get(storage, 0) + 1
        forget = self._forget_weakly
        self._watched[key] = weakref.ref(t, lambda _, key=key, storage=storage: (forget() or _ignore)(key, storage))

    def _forget(self, key, storage):
        self._watched.pop(key, None)
        self._alias.pop(key, None)
        self._input_of.pop(key, None)
        if storage is None:
            return
        left = self._live_on_storage.get(storage, 1) - 1
        if left > 0:
            self._live_on_storage[storage] = left
            return
        self._live_on_storage.pop(storage, None)
        self._families_by_storage.pop(storage, None)

    def _new_family(self, t, value, meta, input=None, is_argument=False, shared=True):
        """A family whose base is `t`, holding `value`. shared=False: a replay
        gives it memory of its own, whatever `t` shares in this run."""
        storage = _storage_key(t) if _nonempty(t) and shared else None
        family = _Family(value, meta, t.storage_offset(), storage or None, input, is_argument)
        if family.storage is not None:
            self._families_by_storage.setdefault(family.storage, []).append(family)
        if input is not None:
            self._input_families.append(family)
        self._alias[id(t)] = _Alias(family)
        self._keep_alive(t)
        return family

    def _add_input(self, t, is_argument):
        if id(t) in self._input_of:  # the same tensor passed twice: one value
            return self._input_of[id(t)]
        meta = _Meta.of(t)
        storage = _storage_key(t) if _nonempty(t) else None
        if storage and storage in self._argument_storages and id(t) not in self._alias:
            # A tensor on an argument's memory that no recorded op made (x.data,
            # a view made before the call): a replay would read the capture's tensor.
            if not is_argument:
                raise Unsupported("a tensor shares memory with an argument but was not made from it by a recorded op "
                                  "(x.data?)")
        v = self._new_value(meta)
        self.input_values.append(v)
        self._input_of[id(t)] = v
        self._initial_layout[v] = (t, tuple(t.shape), tuple(t.stride()), t.storage_offset())
        if is_argument and storage:
            self._argument_storages.add(storage)
        self._new_family(t, v, meta, input=v, is_argument=is_argument)
        return v

    def _note_placeholders(self, schema, out):
        """Remembers the returns `_outputs` left undefined (_PLACEHOLDER_RETURNS)."""
        if schema.name not in _FUSED_ATTENTION:
            return
        for r, value in zip(schema.returns, out):
            if r.name in _PLACEHOLDER_RETURNS and isinstance(value, torch.Tensor):
                self._placeholders[id(value)] = (weakref.ref(value), f"{r.name} of {schema.name}")

    def value_of(self, t):
        """The value id of a tensor's current contents; unknown tensors become constant inputs."""
        alias = self._alias.get(id(t))
        if alias is None:
            placeholder = self._placeholders.get(id(t))
            if placeholder is not None and placeholder[0]() is t:
                raise Unsupported(f"the program reads {placeholder[1]}, which the graph leaves undefined")
            v = self._add_input(t, is_argument=self._is_argument(t))
            self.constants.append(t)
            return v
        family = alias.family
        if not alias.chain:
            return family.base_value
        if alias.version != family.version:  # written since: view the base's new contents again
            value = family.base_value
            for step in alias.chain:
                value = self._record_step(step, value)
            alias.value, alias.version = value, family.version
        return alias.value

    def _record_step(self, step, value):
        outs = [None if m is None else self._new_value(m) for m in step.out_metas]
        args = list(step.args)
        args[step.self_pos] = f"%{value}"
        self._add_node(step.op, args, outs)
        return outs[step.out_index]

    # -- arguments ----------------------------------------------------------
    def _encode(self, arg_type, value):
        """One argument in the graph format. Dispatches on the value's type; the
        schema type (a TorchScript type string such as "List[int]" or
        "Optional[int]", which is also how ScalarType and Layout read) decides
        whether a lone int stands for an int list and how lists read."""
        if value is None:
            return "none"
        if isinstance(value, torch.Tensor):
            return f"%{self.value_of(value)}"
        if self.scalar_subs and isinstance(value, (int, float)) and not isinstance(value, bool):
            encoded = self._escaped_number(arg_type, value)
            if encoded is not None:
                return encoded
        if self.scalar_subs and isinstance(value, (list, tuple)):
            for x in value:
                if isinstance(x, (int, float)) and not isinstance(x, bool):
                    self._escaped_number("List", x)
        if isinstance(value, (list, tuple)):
            if "Tensor" in arg_type and all(isinstance(x, torch.Tensor) or x is None for x in value):
                return "tl:[" + ",".join("none" if x is None else f"%{self.value_of(x)}" for x in value) + "]"
            if all(isinstance(x, bool) for x in value) and "bool" in arg_type:
                return "bl:[" + ",".join(str(int(x)) for x in value) + "]"
            if all(_is_int(x) for x in value) and "float" not in arg_type:
                return "il:[" + _ints(value) + "]"
            if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value):
                return "fl:[" + ",".join(_format_float(x) for x in value) + "]"
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
        if _is_int(value):
            return f"il:[{_int_text(value)}]" if "List[int]" in arg_type else f"i:{_int_text(value)}"
        if isinstance(value, float):
            return "f:" + _format_float(value)
        if isinstance(value, complex):
            return f"c:{_format_float(value.real)},{_format_float(value.imag)}"
        if isinstance(value, str):
            return "s:" + _quote(value)
        if isinstance(value, torch.Generator):
            raise Unsupported("an explicit torch.Generator argument (the default generator is supported)")
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
        if self._opaque_depth:  # inside an op recorded as one node
            return func(*args, **kwargs)
        before = None
        if self.unsupported is None:
            try:
                info = _op_info(func)
                if info.written:  # the written tensors' layouts before the op changes them
                    before = self._layouts_of_written(info, args, kwargs)
            except Exception as e:  # never break the user's program over a recording problem
                self.unsupported = f"{func}: recording failed: {type(e).__name__}: {e}"
        out = _run_op(func, args, kwargs)
        self._record_guarded(func, args, kwargs, out, before)
        return out

    def record_opaque(self, op, func, args, kwargs):
        """Runs `func` (a composite torch function that writes none of its
        arguments, _opaque.py) and records it as one node of ATen op `op`; the
        ops it runs inside are not recorded."""
        self._opaque_depth += 1
        try:
            out = func(*args, **kwargs)
        finally:
            self._opaque_depth -= 1
        self._record_guarded(op, args, kwargs, out, None)
        return out

    def _record_guarded(self, func, args, kwargs, out, before):
        if self.unsupported is not None:
            return
        try:
            self._record(func, args, kwargs, out, before)
        except Unsupported as e:
            self.unsupported = f"{func}: {e}"
        except Exception as e:  # never break the user's program over a recording problem
            self.unsupported = f"{func}: recording failed: {type(e).__name__}: {e}"

    def _layouts_of_written(self, info, args, kwargs):
        bound = self._normalize(info.schema, args, kwargs)
        layouts = []
        for i in info.written:
            for t in _tensors_in(bound[i][1]):
                layouts.append((tuple(t.shape), tuple(t.stride()), t.storage_offset()))
        return layouts

    def _record(self, func, args, kwargs, out, before):
        info = _op_info(func)
        if info.name in _METADATA_QUERIES:
            return
        if info.name in _DATA_ESCAPES:
            self.add_decision(info.name, [a for a in args if isinstance(a, torch.Tensor)], out)
            return
        if info.written:
            self._record_write(func, info, args, kwargs, out, before)
            return
        if info.name in _FRESH and self._fold_fresh(args, out):
            return
        bound = self._normalize(info.schema, args, kwargs)
        encoded = [self._encode(str(a.type), v) for a, v in bound]
        outputs = list(_outputs(info.schema, out))
        self._note_placeholders(info.schema, out)
        metas = [None if t is None else _Meta.of(t) for t in outputs]
        source = bound[info.view_self][1] if info.is_view else None
        if isinstance(source, torch.Tensor):
            src_alias = self._alias[id(source)]
            chain, in_meta = src_alias.chain, self._meta_of_alias(src_alias)
            raw = [v for _, v in bound]
            if info.name == "aten::as_strided":  # rewrites `encoded` to view the base
                chain, in_meta = self._root_as_strided(encoded, raw, info.view_self, src_alias, source)
        if info.name == "aten::slice" and isinstance(source, torch.Tensor) and _same_layout(outputs[0], source):
            # A slice of everything: the same tensor. (ATen's indexing skips
            # one where it knows the size; with a symbolic size the shape
            # shadow's slices it: both recorders drop it.)
            self._alias[id(outputs[0])] = _Alias(src_alias.family, src_alias.chain, src_alias.value, src_alias.version)
            self._keep_alive(outputs[0])
            return
        inputs = {id(x) for _, x in bound for x in _tensors_in(x)}
        # A view of a known value, or a deterministic op of known values, is
        # known; the latter is folded where its results are small CPU tensors.
        known = (self._reads_known(encoded) and (isinstance(source, torch.Tensor) or _deterministic(func, info))) or \
            self._makes_known(func, info, bound, encoded, source)
        if known and not isinstance(source, torch.Tensor) and self._fold(outputs, inputs):
            return
        out_values = [None if m is None else self._new_value(m) for m in metas]
        self._add_node(info.op, encoded, out_values)
        if known:
            self._known.update(v for v in out_values if v is not None)
        if isinstance(source, torch.Tensor):
            # A view: its outputs join the family of the viewed tensor.
            for j, (t, v) in enumerate(zip(outputs, out_values)):
                if t is None:
                    continue
                step = _Step(info.op, encoded, info.view_self, raw, metas, j, in_meta)
                family = src_alias.family
                self._alias[id(t)] = _Alias(family, chain + (step,), v, family.version)
                self._keep_alive(t)
        else:
            for t, v, m in zip(outputs, out_values, metas):
                if t is None:
                    continue
                if id(t) in inputs and info.name not in _FRESH:
                    continue  # an input handed back as is: it keeps its family
                if id(t) in inputs:  # lift_fresh: this tensor is the program's own from now on
                    self._detach_constant(t)
                self._new_family(t, v, m, shared=not info.private)
        if info.sized_by_data and not known and _sizes_depend_on_data(info, bound):
            # The graph is cut after it, and the sizes it gave choose the
            # version of what follows, as a value Python reads does.
            results = [t for t in outputs if t is not None]
            self.add_decision("sizes", results, tuple(tuple(t.shape) for t in results), escapes=False)

    def _reads_known(self, encoded):
        """Whether the encoded arguments read tensors, only known values, and
        no symbolic size (the shape shadow's `{s0}`: a result computed from
        it would hold for one size only)."""
        if not self._known:
            return False
        text = " ".join(encoded)
        refs = _REF.findall(text)
        return bool(refs) and "{" not in text and all(int(v) in self._known for v in refs)

    def _makes_known(self, func, info, bound, encoded, source):
        """A factory (an op that reads no tensor: arange, ones, full...) of
        constant arguments makes a known value: its sizes, fill value, dtype
        and device are constants of the graph, and the state monitor guards
        the Python state they came from (an escaped number among them is a
        decision or a symbol tensor, which a factory then reads). Not one of
        a symbolic size (the shape shadow's `{s0}`): its values hold for one
        size only."""
        if not self.factories_known or isinstance(source, torch.Tensor) or \
                any(True for _, v in bound for _ in _tensors_in(v)):
            return False
        text = " ".join(encoded)
        return "{" not in text and _REF.search(text) is None and _deterministic(func, info)

    def knows(self, t):
        """Whether tensor `t` holds a known value (nothing recorded)."""
        alias = self._alias.get(id(t))
        if alias is None:
            return False
        if not alias.chain:
            return alias.family.base_value in self._known
        return alias.version == alias.family.version and alias.value in self._known

    def _fold(self, outputs, inputs):
        """Constant folding: a deterministic op read only known values; when
        its results are small CPU tensors (not its inputs handed back), they
        are known values held by the plan, and the op is no node. True if
        folded."""
        tensors = [t for t in outputs if t is not None]
        if not tensors or any(id(t) in inputs or t.device.type != "cpu" or not _small(t) for t in tensors):
            return False
        return self._known_values(tensors)

    def _fold_fresh(self, args, out):
        """lift_fresh of a tensor that torch.tensor(...) made from Python data
        (nothing recorded made it): a known value, not a node. True if folded."""
        if not args or not isinstance(args[0], torch.Tensor) or id(args[0]) in self._alias:
            return False
        return self._known_values([out])

    def _known_values(self, tensors):
        """The program's `tensors` hold known values from now on: each one's
        value is a copy the plan holds (the program may write its tensor
        later; a later run makes fresh ones). False, and nothing done, where
        a copy would not have a tensor's layout."""
        with torch._C.DisableTorchFunction():
            copies = [t.clone() for t in tensors]
        if not all(_same_layout(c, t) for c, t in zip(copies, tensors)):
            return False
        for t, c in zip(tensors, copies):
            meta = _Meta.of(c)
            v = self._new_value(meta)
            self._known.add(v)
            self._folded[v] = c  # an input once something reads it (_use_folded)
            self._new_family(t, v, meta, shared=False)
        return True

    def _use_folded(self, values):
        """Folded results among `values` (read by a node, a decision or the
        outputs) become graph inputs, in the order first read (the same in
        both recorders). One that nothing reads is no input: a slice bound
        or a clamp limit only Python saw."""
        for v in values:
            c = self._folded.pop(v, None)
            if c is not None:
                self.input_values.append(v)
                self.constants.append(c)
                self._initial_layout[v] = (c, tuple(c.shape), tuple(c.stride()), c.storage_offset())

    def _detach_constant(self, t):
        """`t`, a constant input, is from now on a tensor the program made
        (lift_fresh of torch.tensor(...)): the graph reads its contents as they
        are now, not as the run leaves them."""
        old = self._alias[id(t)].family
        if old.storage is not None and old in self._families_by_storage.get(old.storage, ()):
            self._families_by_storage[old.storage].remove(old)
        for i, c in enumerate(self.constants):
            if c is t:
                self.constants[i] = t.clone()
                self._initial_layout[old.input] = (self.constants[i],) + self._initial_layout[old.input][1:]

    def _meta_of_alias(self, alias):
        return alias.chain[-1].out_meta if alias.chain else alias.family.base_meta

    def _root_as_strided(self, encoded, raw, self_pos, src_alias, source):
        """as_strided reads the memory, not the values, of its input: applied to
        a view it addresses the base's memory. Rewrites the recorded arguments
        (`encoded`, in place) to apply it to the family's base; returns the
        chain it starts from (none) and the base's meta."""
        family = src_alias.family
        if family.base_offset != 0:
            raise Unsupported("as_strided of memory whose base does not start it (storage offsets are not guarded)")
        if family.input is not None and family.base_value != family.input:
            # Its new contents are a computed buffer, not the input's memory.
            raise Unsupported("as_strided of an input written in place earlier in the run")
        if raw[3] is None:  # the source's own storage offset, made explicit
            encoded[3] = f"i:{source.storage_offset()}"
        encoded[self_pos] = f"%{family.base_value}"
        return (), family.base_meta

    def _record_write(self, func, info, args, kwargs, out, before):
        bound = self._normalize(info.schema, args, kwargs)
        if info.name in _NO_OPS:
            return
        if info.name == "aten::set_":
            raise Unsupported("set_ swaps a tensor's memory")
        # The written arguments' tensors, with None where the runtime sees an
        # undefined one (a None Tensor? argument), as the node's outputs count them.
        entries = []
        for i in info.written:
            value, positions = bound[i][1], _tensor_positions(str(info.schema.arguments[i].type))
            if positions == "one":
                entries.append(value if isinstance(value, torch.Tensor) else None)
            elif positions == "list":
                entries.extend(x if isinstance(x, torch.Tensor) else None for x in value)
        targets = [t for t in entries if t is not None]
        after = [(tuple(t.shape), tuple(t.stride()), t.storage_offset()) for t in targets]
        view_op = _METADATA_OPS.get(info.op)
        if view_op is not None:
            self._record_restride(view_op, bound, targets[0])
            return
        if info.name == "aten::resize_":
            self._record_resize(bound, targets[0], before[0], after[0])
            return
        functional = _functional_form(func, info)
        if functional is not None:
            f_bound = self._normalize(functional._schema, args, kwargs)
            encoded = [self._encode(str(a.type), v) for a, v in f_bound]
            op = f"{functional._schema.name}.{functional._overloadname}"
            new_values = [self._new_value(_Meta.of(targets[0]))]
            self._add_node(op, encoded, new_values)
        else:
            # The op itself, run on copies of the written arguments: its outputs
            # are its own returned tensors, then the written tensors' contents.
            encoded = [self._encode(str(a.type), v) for a, v in bound]
            fresh = list(_outputs(info.schema, out, skip_written=True))
            fresh_metas = [None if t is None else _Meta.of(t) for t in fresh]
            fresh_values = [None if m is None else self._new_value(m) for m in fresh_metas]
            entry_values = [None if t is None else self._new_value(_Meta.of(t)) for t in entries]
            new_values = [v for v in entry_values if v is not None]
            self._add_node(info.op, encoded, fresh_values + entry_values)
            for t, v, m in zip(fresh, fresh_values, fresh_metas):
                if t is not None:
                    self._new_family(t, v, m)
        for t, v, (b_sizes, b_strides, b_offset), a in zip(targets, new_values, before, after):
            if (b_sizes, b_strides, b_offset) != a:
                self._rebind_resized(t, v, b_sizes, a)
            else:
                self._write(t, v)

    def _write(self, t, new_value):
        """`t` now holds `new_value`: update its family's base (and mark its views stale)."""
        alias = self._alias[id(t)]
        family = alias.family
        if family.storage is not None:
            for other in self._families_by_storage.get(family.storage, ()):
                if other is not family:
                    raise Unsupported("an in-place update of memory that another tensor shares without the monitor "
                                      "having seen it made from this one (aliasing arguments, x.data, set_...)")
        if not alias.chain:
            family.base_value = new_value
        else:
            # The chain's intermediate views of the current base, then the new
            # contents scattered back level by level.
            levels = [family.base_value]
            for step in alias.chain[:-1]:
                levels.append(self._record_step(step, levels[-1]))
            value = new_value
            for i in reversed(range(len(alias.chain))):
                value = self._scatter(alias.chain[i], levels[i], value, i, family)
            family.base_value = value
        family.version += 1
        alias.value, alias.version = new_value, family.version

    def _scatter(self, step, base, src, level, family):
        """The value of `base` (the input of view step `step`) with the step's
        view replaced by `src`."""
        name, raw = step.op, step.raw
        meta = step.in_meta

        def node(op, args):
            v = self._new_value(meta)
            self._add_node(op, [f"%{base}" if a == "BASE" else f"%{src}" if a == "SRC" else a for a in args], [v])
            return v

        a = step.args
        if name in _IDENTITY_VIEWS:
            return src
        if name == "aten::expand.default":
            if tuple(step.out_meta.sizes) == tuple(meta.sizes):
                return src
        elif name in _RESHAPES:
            return node("aten::reshape.default", ["SRC", f"il:[{_ints(meta.sizes)}]"])
        elif name == "aten::slice.Tensor":
            return node("aten::slice_scatter.default", ["BASE", "SRC", a[1], a[2], a[3], a[4]])
        elif name == "aten::select.int":
            return node("aten::select_scatter.default", ["BASE", "SRC", a[1], a[2]])
        elif name == "aten::diagonal.default":
            return node("aten::diagonal_scatter.default", ["BASE", "SRC", a[1], a[2], a[3]])
        elif name == "aten::unbind.int":
            return node("aten::select_scatter.default", ["BASE", "SRC", a[1], f"i:{step.out_index}"])
        elif name == "aten::narrow.default":
            start, length = raw[2] % max(meta.sizes[raw[1]], 1), raw[3]
            return node("aten::slice_scatter.default", ["BASE", "SRC", a[1], f"i:{start}", f"i:{start + length}", "i:1"])
        elif name in ("aten::split.Tensor", "aten::split_with_sizes.default", "aten::split.sizes",
                      "aten::split.default"):
            dim = raw[2] % max(len(meta.sizes), 1)
            lengths = [m.sizes[dim] for m in step.out_metas]
            start = sum(lengths[:step.out_index])
            return node("aten::slice_scatter.default",
                        ["BASE", "SRC", f"i:{dim}", f"i:{start}", f"i:{start + lengths[step.out_index]}", "i:1"])
        elif name == "aten::permute.default":
            rank = len(meta.sizes)
            dims = [d % rank for d in raw[1]] if rank else []
            inverse = [0] * len(dims)
            for i, d in enumerate(dims):
                inverse[d] = i
            return node("aten::permute.default", ["SRC", f"il:[{_ints(inverse)}]"])
        elif name == "aten::transpose.int":
            return node("aten::transpose.int", ["SRC", a[1], a[2]])
        elif name == "aten::t.default":
            return node("aten::t.default", ["SRC"])
        elif name == "aten::view_as_real.default":
            return node("aten::view_as_complex.default", ["SRC"])
        elif name == "aten::view_as_complex.default":
            return node("aten::view_as_real.default", ["SRC"])
        elif name == "aten::as_strided.default":
            # as_strided_scatter views a copy of its input with offset 0: the
            # base must start its memory and keep its strides when copied.
            contiguous = tuple(meta.strides) == _contiguous_strides(meta.sizes)
            if level == 0 and family.base_offset == 0 and (family.input is None or contiguous):
                return node("aten::as_strided_scatter.default", ["BASE", "SRC", a[1], a[2], a[3]])
        raise Unsupported(f"an in-place update through a view made by {name}, which has no scatter form here")

    def _record_restride(self, view_op, bound, t):
        """t_, transpose_, squeeze_...: `t` is now a view of what it was."""
        alias = self._alias.get(id(t))
        if alias is None:
            self.value_of(t)  # an unknown tensor: an input (its layout was taken before the op)
            raise Unsupported("an in-place change of sizes or strides of a tensor first seen by that change")
        value = self.value_of(t)
        chain, in_meta = alias.chain, self._meta_of_alias(alias)
        f_bound = self._normalize(view_op._schema, [x for _, x in bound], {})
        raw = [x for _, x in f_bound]
        encoded = [self._encode(str(a.type), x) if i else f"%{value}" for i, (a, x) in enumerate(f_bound)]
        if view_op is torch.ops.aten.as_strided.default:
            chain, in_meta = self._root_as_strided(encoded, raw, 0, alias, t)
        op = f"{view_op._schema.name}.{view_op._overloadname}"
        meta = _Meta.of(t)
        v = self._new_value(meta)
        self._add_node(op, encoded, [v])
        step = _Step(op, encoded, 0, raw, [meta], 0, in_meta)
        family = alias.family
        self._alias[id(t)] = _Alias(family, chain + (step,), v, family.version)
        self._keep_alive(t)

    def _record_resize(self, bound, t, before, after):
        if before[0] == after[0]:
            return  # same sizes: resize_ changes nothing
        self._check_reallocated(t, before[0])
        value = self.value_of(t)
        meta = _Meta.of(t)
        v = self._new_value(meta)
        mf = bound[2][1]
        self._add_node("aten::resize.default", [f"%{value}", f"il:[{_ints(after[0])}]",
                                                "none" if mf is None else f"mf:{_MEMORY_FORMATS[mf]}"], [v])
        self._new_family(t, v, meta)

    def _rebind_resized(self, t, value, before_sizes, after):
        """An out= op resized its output: the tensor holds new memory now."""
        self._check_reallocated(t, before_sizes)
        self._new_family(t, value, _Meta.of(t))

    def _check_reallocated(self, t, before_sizes):
        """`t` was resized from `before_sizes`: it must have been empty and be
        on memory of its own now (not an input's, not its family's)."""
        alias = self._alias[id(t)]
        family = alias.family
        numel = 1
        for s in before_sizes:
            numel *= s
        if family.input is not None and not alias.chain:
            raise Unsupported("an input was resized (it would need new memory)")
        if numel != 0:
            raise Unsupported("a tensor with elements was resized")
        if family.storage is not None and _storage_key(t) == family.storage:
            raise Unsupported("an empty view was resized within memory it shares")

    def _add_node(self, op, encoded, out_values):
        if self._folded:
            self._use_folded([int(v) for v in _REF.findall(" ".join(encoded))])
        outs = " ".join("none" if v is None else f"%{v}" for v in out_values)
        if _draws_random_numbers(op):
            self.random_nodes.add(len(self.node_lines))
        self.node_lines.append(f"node {op} {' '.join(encoded)} -> {outs}".replace("  ", " "))

    def initial_layouts(self):
        """A context in which the graph inputs have the sizes, strides and
        storage offsets they had when the run began (guards are built from
        them); the run's own layout changes (t_, ...) come back on exit."""
        recorder = self

        class _Context:
            def __enter__(self):
                self.final = []
                for t, sizes, strides, offset in recorder._initial_layout.values():
                    now = (tuple(t.shape), tuple(t.stride()), t.storage_offset())
                    if now != (sizes, strides, offset):
                        self.final.append((t, now))
                        with torch.no_grad():
                            t.as_strided_(sizes, strides, offset)

            def __exit__(self, *exc):
                with torch.no_grad():
                    for t, (sizes, strides, offset) in self.final:
                        t.as_strided_(sizes, strides, offset)
                return False

        return _Context()

    # -- decisions ---------------------------------------------------------------
    def add_decision(self, op, tensors, outcome, escapes=True):
        """Tensor data reaches Python here: the graph is cut, and the value read
        selects the version of what follows (see _segments.py). escapes:
        the value reaches the program as a number (the last escape,
        _scalars.py); not the sizes of a result or a comparison's bool."""
        from ._segments import Decision
        values = [self.value_of(t) for t in tensors]
        if values and all(v in self._known for v in values):
            # A known value: the plan computes it from constants it holds, so
            # every replay would read this outcome again. Which constants the
            # run made is Python's doing, and the state monitor guards what
            # Python read to make them (numbers by value, sizes by the shape
            # guards, an escaped number by its own decision: torch.tensor(n)
            # of one decides it, _scalars.py).
            if escapes:
                self.last_escape = None
            return
        self._use_folded(values)
        decision = Decision(len(self.node_lines), op, values, outcome, _user_site())
        decision.source = tensors[0] if len(tensors) == 1 else None
        decision.tensors = list(tensors)  # the shape shadow repeats the decision on its fakes
        self.decisions.append(decision)
        if escapes:
            self.last_escape = decision

    def _escaped_number(self, arg_type, value):
        """An escaped number (_scalars.py) passed where the dispatcher takes a
        tensor: the encoded symbol tensor. Elsewhere its value is used as a
        constant, so it must stay a decision."""
        from ._scalars import _root_of, bits
        entry = self.scalar_subs.get(bits(value))
        if entry is None:
            return None
        symbol, tensor, _ = entry
        if "Tensor" in arg_type and "[]" not in arg_type and "List" not in arg_type:
            entry[2] = True
            return f"%{self.value_of(tensor)}"
        _root_of(symbol).decided = True
        return None

    # -- result -----------------------------------------------------------------
    def input_tensors(self):
        """The tensors behind the graph inputs, in order."""
        return [self._initial_layout[v][0] for v in self.input_values]

    def knows(self, t):
        """Whether `t` is a value of the graph (made by a recorded op or an input)."""
        return id(t) in self._alias

    def note_metadata_read(self, t):
        """The program read a tensor's sizes, dtype, device...: one reached
        from the arguments that no op has used yet becomes an input, so that
        the guards check what was read (else a later call with other sizes
        would replay the sizes of this one)."""
        if id(t) not in self._alias and self._is_argument(t):
            self._add_input(t, is_argument=True)

    def output_values(self, tensors):
        """(value ids, output_view lines) for these tensors as the graph's
        outputs: several of them on one computed tensor's memory, or views of
        a constant, come back from the runtime as views of one buffer."""
        returned = {}
        for t in tensors:
            if id(t) in self._alias:
                family = self._alias[id(t)].family
                returned[id(family)] = returned.get(id(family), 0) + 1
        values, view_lines = [], []
        for t in tensors:
            alias = self._alias.get(id(t))
            base_view = self._view_of_base(t, alias, returned) if alias is not None else None
            if base_view is None:
                values.append(self.value_of(t))
                continue
            base_value, (sizes, strides, offset) = base_view
            values.append(base_value)
            view_lines.append(f"output_view {len(values) - 1} sizes={_ints(sizes)} strides={_ints(strides)} "
                              f"offset={_int_text(offset)}")
        self._use_folded(values)
        return values, view_lines

    @property
    def mutations(self):
        """{graph input value id: value id of its final contents} for the inputs
        the run wrote."""
        return {f.input: f.base_value for f in self._input_families if f.base_value != f.input}

    def restride_lines(self):
        """`restride` lines for the inputs whose sizes, strides or storage
        offset the run changed."""
        lines = []
        for v, (t, sizes, strides, offset) in self._initial_layout.items():
            if (tuple(t.shape), tuple(t.stride()), t.storage_offset()) != (sizes, strides, offset):
                lines.append(f"restride %{v} sizes={_ints(t.shape)} strides={_ints(t.stride())} "
                             f"offset={_int_text(t.storage_offset() - offset)}")
        return lines

    def _view_of_base(self, leaf, alias, returned):
        """(base value, (sizes, strides, offset)) when `leaf` should come back
        as a view of its family's base: it is a view of a constant, or several
        returned tensors share its (computed) memory. None otherwise."""
        family = alias.family
        if family.is_argument or family.storage is None or not _nonempty(leaf):
            return None
        if family.input is None and (returned.get(id(family), 0) < 2 or family.base_offset != 0):
            return None
        if not alias.chain:
            # The base itself (a constant, or a computed result returned with
            # its views): an output of its own, so that the views returned
            # beside it have it as their _base, as in eager.
            return None
        if _storage_key(leaf) != family.storage or leaf.dtype != _dtype_of(family.base_meta):
            return None
        base_value = family.input if family.input is not None else family.base_value
        meta = family.base_meta
        lo, hi = _span_of(leaf.storage_offset(), leaf.shape, leaf.stride())
        base_lo, base_hi = _span_of(family.base_offset, meta.sizes, meta.strides)
        if not _within(lo, hi, base_lo, base_hi):
            return None
        return base_value, (tuple(leaf.shape), tuple(leaf.stride()), leaf.storage_offset() - family.base_offset)


def _same_layout(a, b):
    if a.dtype != b.dtype or a.dim() != b.dim():
        return False
    pairs = list(zip((*a.shape, *a.stride(), a.storage_offset()), (*b.shape, *b.stride(), b.storage_offset())))
    if all(type(x) is int and type(y) is int for x, y in pairs):
        return all(x == y for x, y in pairs)
    # The shape shadow's fakes: equal where the ShapeEnv knows it (a count
    # that may differ from another decides nothing).
    from torch.fx.experimental.symbolic_shapes import statically_known_true
    return all(statically_known_true(x == y) for x, y in pairs)


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


def _deterministic(func, info):
    """Whether the op's results are a function of its arguments: not random
    numbers (a replay draws new ones), not uninitialized memory, not a sum
    whose order of additions varies (atomics on a GPU)."""
    tags = func.tags
    return not (torch.Tag.nondeterministic_seeded in tags or torch.Tag.nondeterministic_bitwise in tags or
                "empty" in info.name or any("Generator" in str(a.type) for a in info.schema.arguments))


@functools.lru_cache(maxsize=None)
def _draws_random_numbers(op):
    """Whether ATen op `op` ("aten::rand.default") draws from a generator."""
    namespace, _, name = op.partition("::")
    packet, _, overload = name.partition(".")
    try:
        func = getattr(getattr(getattr(torch.ops, namespace), packet), overload or "default")
    except (AttributeError, RuntimeError):
        return False
    return torch.Tag.nondeterministic_seeded in func.tags


def _nonempty(t):
    """t.numel() > 0; a fake tensor of the shape shadow sized by the data
    (a count, _shapes.py) is taken to be non-empty: a plan only takes
    counts of at least 2."""
    n = t.numel()
    if type(n) is int:
        return n > 0
    from torch.fx.experimental.symbolic_shapes import guard_or_true
    return guard_or_true(n > 0)


def _sizes_depend_on_data(info, bound):
    """Whether an op tagged dynamic_output_shape gives sizes that depend on
    the data in this call: index.Tensor only with a boolean index (x[mask])."""
    if info.name != "aten::index":
        return True
    indices = bound[1][1]
    return any(t.dtype in (torch.bool, torch.uint8) for t in _tensors_in(indices))


def _small(t):
    """At most _FOLD_NUMEL elements (a fake tensor's count may be symbolic: not small)."""
    n = t.numel()
    if isinstance(n, torch.SymInt):
        n = n.node.maybe_as_int()
    return n is not None and n <= _FOLD_NUMEL


def _dtype_of(meta):
    for dtype, name in _DTYPES.items():
        if name == meta.dtype:
            return dtype
    return None


def _run_op(func, args, kwargs):
    """func(*args, **kwargs); on fake tensors (the shape shadow's) whose fake
    kernel rejects what the real one takes, the result of _FAKE_RULES."""
    try:
        return func(*args, **kwargs)
    except RuntimeError:
        rule = _FAKE_RULES.get(func)
        if rule is None or not any(isinstance(a, FakeTensor) for a in args):
            raise
        return rule(func, args, kwargs)


def _bf16_like(x):
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        return torch.empty_strided(x.shape, x.stride(), dtype=torch.bfloat16, device=x.device)
    return x


def _grouped_mm_fake(func, args, kwargs):
    """torch._grouped_mm's meta function takes bf16 only; its CPU kernel also
    takes float32 (the experts of a mixture of experts in transformers): the
    meta's result for bf16 inputs of the same layouts, in the real dtype."""
    made = func(*[_bf16_like(a) for a in args], **{k: _bf16_like(v) for k, v in kwargs.items()})
    out_dtype = kwargs.get("out_dtype", args[4] if len(args) > 4 else None)
    return torch.empty_strided(made.shape, made.stride(), dtype=out_dtype or args[0].dtype, device=made.device)


# Ops whose fake kernel rejects inputs their real kernels take: op -> the
# fake result from the fake inputs (_run_op).
_FAKE_RULES = {torch.ops.aten._grouped_mm.default: _grouped_mm_fake} if hasattr(torch.ops.aten, "_grouped_mm") else {}


def _tensors_in(value):
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [x for x in value if isinstance(x, torch.Tensor)]
    return []


def _outputs(schema, out, skip_written=False):
    """The op's tensor outputs in schema order, None where undefined: one per
    Tensor/Tensor? return, one per element of a Tensor[] return. Other returns
    (ints, bools...) are not graph values."""
    returns = schema.returns
    values = out if len(returns) != 1 else (out,)
    if len(returns) == 0:
        values = ()
    placeholders = _PLACEHOLDER_RETURNS if schema.name in _FUSED_ATTENTION else ()
    for r, value in zip(returns, values):
        if skip_written and _is_written(r):
            continue
        if r.name in placeholders:
            yield None
            continue
        positions = _tensor_positions(str(r.type))
        if positions == "one":
            yield value if isinstance(value, torch.Tensor) else None
        elif positions == "list":
            for x in value:
                yield x if isinstance(x, torch.Tensor) else None


def _span_of(offset, sizes, strides):
    lo = hi = offset
    for size, stride in zip(sizes, strides):
        reach = (size - 1) * stride
        if type(reach) is int:
            lo += min(0, reach)
            hi += max(0, reach)
        else:  # a count of the shape shadow: an expression, no guard
            lo += torch.sym_min(0, reach)
            hi += torch.sym_max(0, reach)
    return lo, hi


def _within(lo, hi, base_lo, base_hi):
    """[lo, hi] inside [base_lo, base_hi]. With the shape shadow's counts, a
    view made by view ops lies inside its base at every count: taken to hold
    where the ShapeEnv cannot tell (the real run's own answer is compared
    line by line with the shadow's, _shapes.Template)."""
    inside = (base_lo <= lo, hi <= base_hi)
    if all(type(c) is bool for c in inside):
        return all(inside)
    from torch.fx.experimental.symbolic_shapes import guard_or_true
    return all(guard_or_true(c) for c in inside)




def view_of_argument(leaf, arguments):
    """(i, sizes, strides, offset from argument i's) when `leaf` is a view of
    argument i: the same storage and dtype, within the argument's span. Guards
    pin the arguments' sizes and strides, so the same view of a later call's
    argument i is that argument's as_strided with these numbers."""
    if not _nonempty(leaf):
        return None
    storage = _storage_key(leaf)
    sharing = [i for i, arg in enumerate(arguments) if _storage_key(arg) == storage]
    if len(sharing) != 1:
        # None: a result of its own. Several: arguments that share storage (x
        # and x[1:]) cannot tell which one the view came from; a copy is right
        # for later calls that pass unrelated tensors.
        return None
    i = sharing[0]
    arg = arguments[i]
    if not _nonempty(arg) or arg.dtype != leaf.dtype:
        return None
    lo, hi = _span_of(leaf.storage_offset(), leaf.shape, leaf.stride())
    arg_lo, arg_hi = _span_of(arg.storage_offset(), arg.shape, arg.stride())
    if not (arg_lo <= lo and hi <= arg_hi):
        return None
    return i, tuple(leaf.shape), tuple(leaf.stride()), leaf.storage_offset() - arg.storage_offset()
