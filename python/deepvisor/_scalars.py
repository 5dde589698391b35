"""Escaped scalars that only flow back into tensor arithmetic stay in the graph.

`s = float(y.mean())` or `n = x.item()` is a decision (_segments.py) when
it is read: the number reaches Python. But when the program only feeds it
(or Python arithmetic on it: `s * 2 + 1`) back into tensor ops (`x * s`),
its value does not change what the program does, so no version is needed
for it: the number becomes a 0-d tensor of the graph (computed from the
tensor it was read from), and a new value needs no capture.

The number is a Symbol: the Python object the program holds (floats, and
ints outside the interpreter's small-int cache, are new objects, so its
identity tells its uses apart; bools and small ints are always decisions).
The state monitor reports every instruction that uses it:
- Python arithmetic with numbers or other symbols gives a derived symbol,
  whose tensor the recorder computes in float64 (or int64), as Python would;
- a torch function that receives it (seen by a TorchFunctionMode, which
  still has the Python object) gets the symbol's tensor, cast to the dtype
  the number would have taken, in the Tensor-typed argument where the
  dispatcher passes the number;
- a comparison with a number or another symbol (`if loss.item() > 0.5:`)
  is decided on its bool: the comparison of the symbols' tensors is the
  decision, and a new number on the same side replays that version;
- anything else (`if s:`, formatting, a size, a C function, the function's
  result) decides: the decision stays and the value is a version.
"""

import struct

import torch
from torch.overrides import TorchFunctionMode

# Python arithmetic a symbol may take part in: BINARY_OP argument -> torch op.
_ARITH = {0: torch.add, 13: torch.add, 5: torch.mul, 18: torch.mul, 10: torch.sub, 23: torch.sub,
          11: "truediv", 24: "truediv"}


_COMPARISONS = {"<": torch.lt, "<=": torch.le, "==": torch.eq, "!=": torch.ne, ">": torch.gt, ">=": torch.ge}
_MIRRORED = {"<": ">", "<=": ">=", "==": "==", "!=": "!=", ">": "<", ">=": "<="}


def bits(value):
    """Tells numbers apart exactly (1 and 1.0 and -0.0 and 0.0 differ)."""
    if isinstance(value, float):
        return (float, struct.pack("<d", value))
    return (type(value), value)


class Symbol:
    __slots__ = ("obj", "tensor", "root", "decided", "decision")

    def __init__(self, obj, tensor, root=None, decision=None):
        self.obj = obj          # the Python number the program holds
        self.tensor = tensor    # a 0-d float64/int64 tensor of the graph with its value
        self.root = root or self
        self.decided = False    # on the root: some use needs the value itself
        self.decision = decision


def can_be_symbol(value):
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return True
    return isinstance(value, int) and not -5 <= value <= 256  # small ints are shared objects


class Scalars:
    """The symbols of one capture run."""

    def __init__(self, recorder):
        self.recorder = recorder
        self.symbols = {}   # id(obj) -> Symbol
        self._mode = None

    def symbol(self, obj):
        s = self.symbols.get(id(obj))
        return s if s is not None and s.obj is obj else None

    def on_escape(self, obj, tracer):
        """`obj` came out of the decision just recorded (item(), float(t)...)."""
        # (The last escape's decision: none when it read a known constant,
        # whose number is a constant of the plan; an earlier decision with
        # an equal outcome is not this number's.)
        decision = self.recorder.last_escape
        if decision is None or not can_be_symbol(obj) or bits(decision.outcome) != bits(obj):
            return
        if decision.op != "aten::_local_scalar_dense" or getattr(decision, "source", None) is None:
            return
        source = decision.source
        dtype = torch.float64 if isinstance(obj, float) else torch.int64
        tensor = source.reshape(()).to(dtype)  # recorded: the dispatch mode is on
        self._add(Symbol(obj, tensor, decision=decision), tracer)
        self._enter_mode()

    def _add(self, symbol, tracer):
        self.symbols[id(symbol.obj)] = symbol
        tracer.track(symbol.obj)

    def decide(self, obj):
        s = self.symbol(obj)
        if s is not None:
            _root_of(s).decided = True

    def arithmetic(self, op, a, b, result, tracer):
        """`result = a <op> b` in Python, with a symbol among the operands."""
        sa, sb = self.symbol(a), self.symbol(b)
        fn = _ARITH.get(op)
        ok = fn is not None and can_be_symbol(result) and all(
            s is not None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for s, v in ((sa, a), (sb, b)))
        if not ok:
            for s in (sa, sb):
                if s is not None:
                    _root_of(s).decided = True
            return
        root = _root_of(sa or sb)
        ta = sa.tensor if sa is not None else a
        tb = sb.tensor if sb is not None else b
        if fn == "truediv":
            ta = ta.to(torch.float64) if isinstance(ta, torch.Tensor) else float(ta)
            tb = tb.to(torch.float64) if isinstance(tb, torch.Tensor) else float(tb)
            tensor = torch.div(ta, tb) if isinstance(ta, torch.Tensor) else torch.div(torch.tensor(ta, dtype=torch.float64,
                                                                                                   device=tb.device), tb)
        elif isinstance(ta, torch.Tensor):
            tensor = fn(ta, tb)
        else:
            tensor = fn(torch.tensor(ta, dtype=tb.dtype, device=tb.device), tb)
        want = torch.float64 if isinstance(result, float) else torch.int64
        if tensor.dtype != want:
            tensor = tensor.to(want)
        if sa is not None and sb is not None and _root_of(sb) is not root:
            # Two decisions feed one number: deciding it keeps both.
            _root_of(sb).root = root
        self._add(Symbol(result, tensor, root), tracer)

    def negate(self, a, result, tracer):
        """`result = -a` in Python, `a` a symbol."""
        s = self.symbol(a)
        if not can_be_symbol(result):
            _root_of(s).decided = True
            return
        self._add(Symbol(result, torch.neg(s.tensor), _root_of(s)), tracer)

    def compare(self, op, a, b):
        """`a <op> b` in Python (op: "<", "==", ...) with a symbol among the
        operands: what the program does next depends on the bool alone, so
        the bool is the decision (the symbols' tensors compared in the
        graph), not the number: a new number on the same side replays. False
        where the comparison is not one the graph computes exactly as Python
        does (then the number itself is decided)."""
        sa, sb = self.symbol(a), self.symbol(b)
        kinds = {type(v) for v in (a, b)}
        if op not in _COMPARISONS or not kinds <= {int, float} or (sa is None and sb is None):
            return False
        floats = float in kinds
        if floats and any(type(v) is int and (s is not None or abs(v) > 2 ** 53) for v, s in ((a, sa), (b, sb))):
            return False  # an int compared with a float: Python compares exactly, float64 might not
        if any(type(v) is int and not -2 ** 63 <= v < 2 ** 63 for v in (a, b)):
            return False  # no int64
        outcome = {"<": a < b, "<=": a <= b, "==": a == b, "!=": a != b, ">": a > b, ">=": a >= b}[op]
        if sa is None:  # the number on the left: `0.5 < s` is `s > 0.5`
            a, b, sa, sb, op = b, a, sb, sa, _MIRRORED[op]
        dtype = torch.float64 if floats else torch.int64
        # (A plain number stays a Python scalar: a constant of the node, not a tensor the plan would hold.)
        other = sb.tensor.to(dtype) if sb is not None else b
        self.recorder.add_decision("aten::_local_scalar_dense", [_COMPARISONS[op](sa.tensor.to(dtype), other)], outcome,
                                   escapes=False)
        return True

    # -- torch functions ---------------------------------------------------------------
    def _enter_mode(self):
        if self._mode is None:
            self._mode = _SymbolMode(self)
            self._mode.__enter__()

    def close(self):
        if self._mode is not None:
            self._mode.__exit__(None, None, None)
            self._mode = None

    def finish(self):
        """Drops the decisions whose numbers only fed tensor ops."""
        self.close()
        sources = [s for s in self.symbols.values() if s.decision is not None]
        kept = {id(s.decision) for s in sources if s.decided or _root_of(s).decided}
        dropped = {id(s.decision) for s in sources} - kept
        self.recorder.decisions[:] = [d for d in self.recorder.decisions if id(d) not in dropped]


def _root_of(s):
    while s.root is not s:
        s = s.root
    return s


class _SymbolMode(TorchFunctionMode):
    """During a capture with symbols: a torch function given a symbol gets its
    tensor in place of the number (see Recorder.substitute_scalar)."""

    def __init__(self, scalars):
        super().__init__()
        self.scalars = scalars

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        found = [s for s in map(self.scalars.symbol, _flat(args, kwargs)) if s is not None]
        if not found:
            return func(*args, **kwargs)
        like = next((t for t in _flat(args, kwargs) if isinstance(t, torch.Tensor)), None)
        recorder = self.scalars.recorder
        subs = {}
        for s in found:
            if like is None:
                _root_of(s).decided = True
                continue
            dtype = torch.result_type(like, s.obj)
            subs[bits(s.obj)] = [s, s.tensor.to(dtype=dtype, device=like.device), False]
        saved = recorder.scalar_subs
        recorder.scalar_subs = subs
        try:
            return func(*args, **kwargs)
        finally:
            recorder.scalar_subs = saved
            for s, _, used in subs.values():
                if not used:
                    _root_of(s).decided = True


def _flat(args, kwargs):
    for v in (*args, *kwargs.values()):
        if isinstance(v, (list, tuple)):
            yield from v
        else:
            yield v
