"""Torch functions recorded as one node instead of the ATen ops they run.

The recurrent layers call torch.lstm/gru/rnn_tanh/rnn_relu, composite ops
whose insides depend on the device: on CUDA they go to cuDNN, which views
the weights through a flat buffer it makes with set_, something a replay of
the inner ops could not follow. Recorded as one node, the op runs as a
library call inside the plan (a fallback op) on every device; nothing of it
is recorded twice, and its inner ops are not recorded at all.

A TorchFunctionMode sees these calls with their Python arguments; it is on
for the whole capture run and passes every other torch function straight on.

It also stops the capture at the Tensor methods written in Python that hand a
tensor's values to Python where neither monitor sees them: the mode runs them
from deepvisor's own frame, which the Python-state monitor does not step, and
torch formats a tensor as text with the dispatch modes switched off. A replay
would keep the first values (np.asarray(x), str(x), f"{x}").

Higher-order operators (torch.cond, while_loop...) reach it too: cond and
while_loop are captured as the program's own `if` and `while` would be
(decisions, then the functions they select, stepped and recorded); the
others make the call eager.
"""

import functools
import types

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import _disable_current_modes

from ._monitor import running_monitor
from ._shapes import METADATA_READS

# Torch function name -> the ATen op packet whose overload is recorded.
_OPAQUE = {name: getattr(torch.ops.aten, name) for name in ("lstm", "gru", "rnn_tanh", "rnn_relu")}


def _accepts(arg_type, value):
    """Whether a Python value can bind to a schema type (enough to tell the
    overloads of one op apart: Tensor against Tensor[] against scalars)."""
    kind = str(arg_type)
    if kind == "Tensor":
        return isinstance(value, torch.Tensor)
    if kind.startswith("List["):
        return isinstance(value, (list, tuple))
    if kind in ("bool", "int", "float"):
        return isinstance(value, (bool, int, float)) and not isinstance(value, torch.Tensor)
    return True


def _overload(packet, args, kwargs):
    """The overload of `packet` these arguments bind to, or None."""
    for name in packet.overloads():
        op = getattr(packet, name)
        params = op._schema.arguments
        if len(args) > len(params):
            continue
        if all(_accepts(p.type, v) for p, v in zip(params, args)) and \
                all(any(p.name == k for p in params) for k in kwargs):
            return op
    return None


def opaque_op(func, args, kwargs):
    """The ATen overload to record `func(*args, **kwargs)` as, or None."""
    if not isinstance(func, types.BuiltinFunctionType) or getattr(func, "__module__", None) != "torch":
        return None
    packet = _OPAQUE.get(func.__name__)
    return _overload(packet, args, kwargs) if packet is not None else None


def _data_reading_methods():
    """Tensor methods (Python) that read a tensor's values outside the dispatcher -> how."""
    t = torch.Tensor
    named = {"__repr__": "str()/repr()", "__format__": "format() or an f-string", "__array__": "numpy's __array__",
             "__dlpack__": "__dlpack__", "__reduce_ex__": "pickling", "storage": "Tensor.storage()"}
    return {getattr(t, name): how for name, how in named.items() if name in vars(t)}


_DATA_READING_METHODS = _data_reading_methods()


def _data_read_reason(func, args):
    how = _DATA_READING_METHODS.get(func)
    if how is None:
        return None
    if func is torch.Tensor.__format__ and args and isinstance(args[0], torch.Tensor) and args[0].dim() == 0:
        return None  # formats .item(), which the recorder sees
    return f"tensor data reaches Python through {how}, which a replay cannot follow"


def _call(func, args, kwargs):
    return func(*args, **kwargs)


@functools.cache
def _without_dynamo():
    """_call with Dynamo's frame hook off: torch.cond reaches the modes from
    inside torch.compile, whose hook would compile the operator's own Python
    once the modes are off (and fail: it reads the mode stack)."""
    import torch._dynamo
    return torch._dynamo.disable(_call)


class OpaqueMode(TorchFunctionMode):
    """During a capture: records the functions of _OPAQUE as one node each."""

    def __init__(self, recorder):
        super().__init__()
        self.recorder = recorder

    def __torch_function__(self, func, types_, args=(), kwargs=None):
        kwargs = kwargs or {}
        if isinstance(func, torch._ops.HigherOrderOperator):
            return self._higher_order(func, args, kwargs)
        if func in METADATA_READS and args and isinstance(args[0], torch.Tensor):
            self.recorder.note_metadata_read(args[0])
        reason = _data_read_reason(func, args)
        if reason is not None and self.recorder.unsupported is None:
            self.recorder.unsupported = reason
        op = opaque_op(func, args, kwargs)
        if op is None:
            return func(*args, **kwargs)
        return self.recorder.record_opaque(op, func, args, kwargs)

    def _higher_order(self, func, args, kwargs):
        """torch.cond, while_loop, map... reach the modes as one operator whose
        functions run inside the dispatcher. cond and while_loop are captured
        as the program's own `if` and `while` would be; the others run
        eagerly, as torch runs them without modes (their functions
        unrecorded, hence the reason)."""
        monitor = running_monitor()
        captured = {torch.ops.higher_order.cond: self._captured_cond,
                    torch.ops.higher_order.while_loop: self._captured_while_loop}.get(func)
        if captured is not None and len(args) == 4 and not kwargs and monitor is not None:
            return _without_dynamo()(captured, (monitor, *args), {})
        if self.recorder.unsupported is None:
            self.recorder.unsupported = f"calls the higher-order operator torch.ops.higher_order.{func.name()}"
        with _disable_current_modes():
            return _without_dynamo()(func, args, kwargs)

    def _captured_cond(self, monitor, pred, true_fn, false_fn, operands):
        """torch.cond(pred, true_fn, false_fn, operands) as eager runs it
        (cond_op_dense): the branch that pred selects, called on the operands.
        Reading pred is a decision of the recorder, so each outcome is a
        version of the plan; the branch's frames are stepped (its reads of
        Python state guarded) and its ops recorded, under this mode again."""
        taken = true_fn if bool(pred) else false_fn
        with self:
            return monitor.tracer.call_stepped(taken, tuple(operands), {})

    def _captured_while_loop(self, monitor, cond_fn, body_fn, carried, additional):
        """while_loop(cond_fn, body_fn, carried_inputs) as eager runs it
        (while_loop_dense): body_fn while cond_fn says so, each test a
        decision (so each trip count is a version of the plan), the functions
        stepped and recorded; no trip at all returns copies of the inputs."""
        def call(fn, values):
            with self:
                return monitor.tracer.call_stepped(fn, (*values, *additional), {})

        carried = tuple(carried)
        if not bool(call(cond_fn, carried)):
            with self:
                return tuple(v.clone() if isinstance(v, torch.Tensor) else v for v in carried)
        while True:
            out = call(body_fn, carried)
            if not isinstance(out, tuple) or len(out) != len(carried):
                raise AssertionError("body_fn should return a tuple of as many elements as carried_inputs, "
                                     f"got {type(out).__name__} of {len(out) if isinstance(out, tuple) else 1}")
            carried = out
            if not bool(call(cond_fn, carried)):
                return carried
