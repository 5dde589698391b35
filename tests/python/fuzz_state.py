"""A differential fuzzer of Python state: random small programs that read state
of many kinds in many ways, compiled once and called again after random
changes of that state, each result compared with eager's.

    python3 tests/python/fuzz_state.py [--programs N] [--seed S]

Each program is Python source over a fresh namespace: a dict, a list, an
object with attributes and a method, a class attribute, a closure cell, a
default argument, nested dicts, a property, a list of objects, an
OrderedDict, a defaultdict, a tuple, an enum, a partial, a set, a Python
attribute on a tensor and on the argument, a compiled helper, inherited and
slotted attributes, class and static methods, function defaults, the
program's own module, a dataclass, a namedtuple, tensors read as numbers,
globals that shadow builtins, non-string dict keys, a property with a
setter, a __getattr__ config, a container class, tensors held in a dict
and a list (graph inputs), an nn.Linear (its parameters changed in place,
through .data or replaced; the module replaced; hooks added and removed),
state kept in C layouts (a numpy array, a random generator, a StringIO, an
lru_cache function), an ABC's registrations, a parameter's grad and
requires_grad, a tensor's text and numpy view, a logger (its records and
level), a Decimal under a changed context precision;
the argument itself changes too (its values, size, dtype, strides). Two
programs in five are an nn.Module's forward, compiled as the module, that
also read and write their own attributes, config dict, buffer, training
flag and submodules (a ModuleList grown, shrunk or replaced in part; a
forward hook added). Every program takes a dict as its second argument,
which it reads and writes, and which the changes edit or replace. Its
statements read that state directly, through getattr, in a generator
expression, a comprehension, a generator function, a nested function, a
method or a compiled function, and use what they read as a factor, a term or
a branch condition; some statements change state too. Between calls one
piece of state changes. The compiled program and eager run in twin
namespaces changed alike: a result, an exception or a state left that
differs is a stale result or a lost side effect.
"""

import argparse
import os
import random
import sys
import textwrap
import traceback
import types

import torch

import deepvisor

PRELUDE = """
import torch
D = {"k0": 1.5, "k1": -0.5, "k2": 2.0}
L = [0.5, 1.0]
class Obj:
    def __init__(self):
        self.a = 1.25
        self.b = -2.0
    def scaled(self):
        return self.a * 2
O = Obj()
class K:
    c = 0.75
W = torch.ones(3)
W.scale = 1.5
def _cell():
    v = 0.5
    def get():
        return v
    def set(n):
        nonlocal v
        v = n
    return get, set
cell_get, cell_set = _cell()
def helper():
    return D["k1"] * 2
def gen_values():
    for v in L:
        yield v
NESTED = {"cfg": {"s": 1.0}}
class Prop:
    def __init__(self):
        self.base = 2.0
    @property
    def doubled(self):
        return self.base * 2
    @doubled.setter
    def doubled(self, v):
        self.base = v / 2
P = Prop()
LO = [Obj(), Obj()]
import collections, enum, functools
OD = collections.OrderedDict(a=1.0, b=2.0)
DD = collections.defaultdict(float, a=0.5)
T = (1.0, 2.0)
MODE = ["relu"]
class Color(enum.Enum):
    RED = 1
    BLUE = 2
C = [Color.RED]
PART = functools.partial(lambda a, b: a * b, 2.0)
S = {"k0", "k1"}
class Other:
    a = -4.0
    def scaled(self):
        return 7.0
import dataclasses, sys, types
class Base:
    f = 1.0
class Derived(Base):
    pass
DO = Derived()
class Slotted:
    __slots__ = ("p",)
SL = Slotted()
SL.p = 0.5
class Cm:
    k = 1.0
    @classmethod
    def get(cls):
        return cls.k * 3
    @staticmethod
    def st():
        return L[0] + 1.0
def dfl2(a=1.0):
    return a
def kwd(*, s=2.0):
    return s
MOD = types.ModuleType(f"dv_fuzz_state_{id(D)}")  # a config module, as `import config` gives
MOD.__file__ = f"/nonexistent/{MOD.__name__}.py"  # the user's own module, not a library's
sys.modules[MOD.__name__] = MOD
MOD.scale = 1.0
@dataclasses.dataclass
class DC:
    s: float = 1.0
DCI = DC()
NT = collections.namedtuple("NT", "a b")(1.0, 2.0)
W2 = torch.full((2,), 0.5)
G = 1.0
def code_fn():
    return 1.0
D2 = {1: 0.5, (1, 2): 1.5}
TL = [torch.ones(2)]
class Cfg:
    def __init__(self):
        self._d = {"lr": 0.5}
    def __getattr__(self, k):
        return self._d[k]
CFG = Cfg()
class Box:
    def __init__(self):
        self.items = [1.0, 2.0]
    def __getitem__(self, i):
        return self.items[i]
    def __len__(self):
        return len(self.items)
BX = Box()
TD = {"w": torch.ones(2)}
def make_linear(w):
    m = torch.nn.Linear(1, 1)
    m.weight.data.fill_(w)
    m.bias.data.fill_(0.25)
    return m
M = make_linear(0.5)
HOOKS = []
OPTS = {"s": 1.0, "n": 0}  # passed as the second argument
import io, numpy, random
ARR = numpy.array([0.5, 1.5, -1.0])  # state kept in C layouts
RNG = random.Random(0)
TXT = io.StringIO()
@functools.lru_cache(maxsize=None)
def cached(k):
    return D["k0"] * k
import abc
class Shape(abc.ABC):  # isinstance answers that registrations change
    pass
WG = torch.nn.Parameter(torch.ones(1))  # autograd state read in Python
import logging, decimal
LOGGED = []  # the records the program's logger emitted (a logger of this namespace's own)
class _Kept(logging.Handler):
    def emit(self, record):
        LOGGED.append(record.getMessage())
LOG = logging.getLogger(f"fuzz_state_program.{id(LOGGED)}")
LOG.propagate = False
LOG.addHandler(_Kept())
LOG.setLevel(logging.INFO)
DEC = decimal.Decimal(2)  # its arithmetic rounds by the thread's context
class Prog(torch.nn.Module):  # the base of the programs that are modules
    def __init__(self):
        super().__init__()
        self.scale = 1.5
        self.cfg = {"k": 0.5}
        self.use_relu = True
        self.lin = make_linear(0.5)
        self.layers = torch.nn.ModuleList([make_linear(0.25), make_linear(2.0)])
        self.register_buffer("buf", torch.ones(1))
"""

# Expressions that read state and give a number.
READS = [
    'D["k0"]', 'D.get("k1", 0.0)', 'L[0]', 'L[-1]', 'len(L)', 'O.a', 'getattr(O, "b")', 'K.c', 'cell_get()',
    'W.scale', 'sum(v for v in L)', '[v * 2 for v in L][0]', 'max(D.values())', 'O.scaled()', 'helper()',
    'sum(gen_values())', 'len([k for k in D if D[k] > 0])', 'fallback()', 'dflt()', 'NESTED["cfg"]["s"]',
    'P.doubled', 'LO[0].a', 'LO[-1].scaled()', 'x.scale', 'OD["a"]', 'list(OD.values())[0]', 'DD["a"]', 'DD["zz"]',
    'T[1]', '(2.0 if MODE[0] == "relu" else -1.0)', '(1.0 if C[0] is Color.RED else 3.0)', 'PART(1.5)',
    '(1.0 if "k0" in S else -1.0)', '(1.0 if isinstance(O, Obj) else 2.0)', 'len(type(O).__name__)',
    'O.__dict__["a"]', 'vars(O)["b"]', 'getattr(O, "extra", 0.25)', '(1.0 if hasattr(O, "extra") else 0.0)',
    'min(L)', 'sorted(D.values())[0]', 'next(iter(D))[-1] == "0" and 1.0 or 2.0',
    'DO.f', 'Derived.f', 'SL.p', 'Cm.get()', 'Cm.st()', 'dfl2()', 'kwd()', 'MOD.scale', 'DCI.s', 'NT.a', 'NT[1]',
    'W2[0].item()', 'float(W2.sum())', 'len(W2)', 'G', 'code_fn()', 'abs(-1.5)', '(1.0 if type(O) is Obj else 2.0)',
    'x.sum().item()', 'float(x[0])', 'len(x)', 'x.shape[0]', '(1.0 if x.dtype == torch.float64 else 2.0)',
    '(1.0 if x.is_contiguous() else 2.0)', 'x.abs().max().item()', 'D2[1]', 'D2[(1, 2)]', 'TL[0].sum().item()',
    'CFG.lr', 'BX[0]', 'len(BX)', 'globals()["G"]', 'sum(v for k, v in D.items())', 'opts["s"]',
    'opts.get("extra", 0.5)', 'len(opts)', 'float(ARR.sum())', 'float(ARR[0])', 'float(numpy.max(ARR))',
    'RNG.random()', 'len(TXT.getvalue())', 'cached(2.0)', '(1.0 if isinstance(O, Shape) else 4.0)',
    '(2.0 if WG.grad is None else 0.5)', '(1.0 if WG.requires_grad else -1.0)',
    'float(len(str(W2)))', 'float(numpy.asarray(W2).sum())', 'float(DEC / 3)',
    '(1.0 if LOG.isEnabledFor(logging.DEBUG) else 2.0)',
]

# What a program that is a module reads of itself: numbers, then tensors.
SELF_READS = ['self.scale', 'self.cfg["k"]', '(1.0 if self.use_relu else 2.0)', '(1.0 if self.training else 3.0)',
              'len(self.layers)', 'self.buf.sum().item()', 'getattr(self, "calls", 0.5)']
SELF_TENSOR_READS = ['self.lin(y.unsqueeze(-1)).squeeze(-1)', 'self.layers[-1](y.unsqueeze(-1)).squeeze(-1)',
                     'self.buf', 'sum(layer.weight.sum() for layer in self.layers)']

# Expressions that read tensors of the state and give a tensor (a graph input; a parameter).
TENSOR_READS = ['TD["w"].sum()', 'TL[0].mean()', 'W2[0]', 'M(y.unsqueeze(-1)).squeeze(-1)']

# Changes of the state, as statements run between calls.
CHANGES = [
    'D["k0"] = {v}', 'D["k1"] = {v}', 'D["k2"] = {v}', 'D["new"] = {v}', 'del D["k2"]', 'L[0] = {v}',
    'L.append({v})', 'L.pop()', 'O.a = {v}', 'O.b = {v}', 'K.c = {v}', 'cell_set({v})', 'W.scale = {v}',
    'DEFAULT[0] = {v}', 'O.scaled = lambda: {v}', 'NESTED["cfg"]["s"] = {v}', 'NESTED["cfg"] = {{"s": {v}}}',
    'P.base = {v}', 'LO[0].a = {v}', 'LO.reverse()', 'helper = lambda: {v}', 'x.scale = {v}',
    'Obj.scaled = lambda self: {v}', 'OD["a"] = {v}', 'OD.move_to_end("a")', 'DD["zz"] = {v}', 'T = (1.0, {v})',
    'MODE[0] = "tanh"', 'MODE[0] = "relu"', 'C[0] = Color.BLUE', 'PART = functools.partial(lambda a, b: a * b, {v})',
    'S.discard("k0")', 'S.add("k0")', 'O = Other()', 'O = Obj()', 'O.__dict__["a"] = {v}', 'O.extra = {v}',
    'del O.extra', 'L.sort()', 'D.clear()', 'D.update(k0={v}, k1={v}, k2={v})',
    'Base.f = {v}', 'Derived.f = {v}', 'DO.f = {v}', 'SL.p = {v}', 'Cm.k = {v}', 'Cm.st = staticmethod(lambda: {v})',
    'dfl2.__defaults__ = ({v},)', 'kwd.__kwdefaults__ = {{"s": {v}}}', 'MOD.scale = {v}', 'DCI.s = {v}',
    'DCI = DC(s={v})', 'NT = NT._replace(a={v})', 'W2.add_({v})', 'W2 = torch.full((3,), {v})', 'G = {v}',
    'code_fn.__code__ = (lambda: {v}).__code__', 'abs = lambda v: {v}', 'del abs', 'O.__class__ = Other',
    'x = torch.linspace(-2.0, 2.0, 7)', 'x = torch.linspace(-1.0, 1.0, 10)[::2]', 'x = x.double()', 'x = x * {v}',
    'x.mul_({v})', 'x = x.clone()', 'D2[1] = {v}', 'D2[(1, 2)] = {v}', 'TL[0] = torch.full((2,), {v})',
    'TL[0].mul_({v})', 'del helper', 'P.doubled = {v}', 'CFG._d["lr"] = {v}', 'BX.items[0] = {v}',
    'BX.items.append({v})', 'TD["w"] = torch.full((2,), {v})', 'TD["w"].add_({v})', 'M.weight.mul_({v})',
    'M.bias.fill_({v})', 'M.weight = torch.nn.Parameter(torch.full((1, 1), {v}))',
    'M.bias.data = torch.full((1,), {v})', 'M.eval()', 'M.train()', 'M = make_linear({v})',
    'HOOKS.append(M.register_forward_hook(lambda m, i, o: o * {v}))',
    'HOOKS.append(M.register_forward_pre_hook(lambda m, i: (i[0] + {v},)))', 'HOOKS.pop().remove()',
    'OPTS = {{"s": {v}, "n": 0}}', 'OPTS["s"] = {v}', 'OPTS["extra"] = {v}', 'OPTS = dict(OPTS)',
    'ARR[0] = {v}', 'ARR = numpy.full(3, {v})', 'RNG.seed({v})', 'TXT.write("ab")', 'cached.cache_clear()',
    'Shape.register(type(O))', 'WG.grad = torch.full((1,), {v})', 'WG.grad = None', 'WG.requires_grad_(False)',
    'LOG.setLevel(logging.DEBUG)', 'LOG.setLevel(logging.WARNING)', 'LOG.disabled = True',
    'decimal.getcontext().prec = 4', 'decimal.getcontext().prec = 28',
]

# Changes of a program that is a module (the others do not apply to a function: skipped).
MODULE_CHANGES = [
    'program.scale = {v}', 'program.cfg["k"] = {v}', 'program.use_relu = False', 'program.train()', 'program.eval()',
    'program.layers.append(make_linear({v}))', 'program.layers[0] = make_linear({v})', 'del program.layers[0]',
    'program.lin = make_linear({v})', 'program.buf.add_({v})', 'program.buf = torch.full((1,), {v})',
    'program.lin.weight.mul_({v})', 'HOOKS.append(program.register_forward_hook(lambda m, i, o: o * {v}))',
    'program.calls = {v}', 'del program.calls',
]


def _read(rng):
    return rng.choice(READS)


# Statements that change state as they run (their effects must be replayed).
WRITES = [
    'D["n"] = D.get("n", 0.0) + 1.0', 'O.b = O.b + 1.0', 'x.seen = getattr(x, "seen", 0) + 1',
    'K.c = K.c * 0.5', 'L.append(float(len(L)))', 'DEFAULT[0] = DEFAULT[0] + 0.25', 'cell_set(cell_get() * -1.0)',
    'NESTED["cfg"]["s"] = NESTED["cfg"]["s"] + 1.0', 'LO[0].a = 0.5', 'D.setdefault("m", 1.0)', 'L.sort()',
    'setattr(O, "z", 1.0)', 'OD["c"] = 3.0', 'DD["hits"] += 1', 'S.add("seen")', 'OD.move_to_end(next(iter(OD)))',
    'G = G + 1.0', 'MOD.scale = MOD.scale * 2.0', 'DCI.s += 1.0', 'SL.p = SL.p + 1.0', 'W2.mul_(2.0)',
    'Cm.k = Cm.k + 1.0', 'Base.f = Base.f + 0.5', 'x.add_(0.5)', 'TL[0].add_(1.0)', 'D2[1] = D2[1] * 2.0',
    'P.doubled = P.doubled + 1.0', 'TD["w"].mul_(0.5)', 'CFG._d["lr"] = CFG.lr * 2.0',
    'opts["n"] = opts["n"] + 1', 'opts.setdefault("seen", 1.0)', 'ARR[1] += 1.0', 'TXT.write("c")',
    'LOG.debug("debug")', 'LOG.info("info")',
]
SELF_WRITES = ['self.scale = self.scale * 0.5', 'self.cfg["k"] += 1.0', 'self.buf.add_(1.0)',
               'self.calls = getattr(self, "calls", 0) + 1']


# torch.cond and while_loop (COND, WHILE_LOOP in the programs): the compiled
# program calls torch's, which a capture records; the eager twin calls these,
# their meaning in Python (torch's dense implementations). Eager torch traces
# the functions with Dynamo, which keeps values that changed since it traced
# them where Python does not (a class attribute, a method replaced on the
# class, an lru_cache function traced through, a global shadowing a builtin
# later): torch's own stale results, not the reference deepvisor is held to.
def python_cond(pred, true_fn, false_fn, operands):
    return true_fn(*operands) if pred else false_fn(*operands)


def python_while_loop(cond_fn, body_fn, carried):
    carried = tuple(carried)
    if not cond_fn(*carried):
        return tuple(v.clone() for v in carried)
    while cond_fn(*carried):
        carried = body_fn(*carried)
    return carried


# The reads those functions make: where a capture's version of the program ran
# eagerly, torch's own path ran, so only state Dynamo follows as Python does.
_TRACED_READS = ['D["k0"]', 'D.get("k1", 0.0)', 'L[0]', 'L[-1]', 'len(L)', 'O.a', 'K.c', 'W.scale',
                 'NESTED["cfg"]["s"]', 'opts["s"]', 'G', 'T[1]']
_TRACED_SELF_READS = ['self.scale', 'self.cfg["k"]']


def _statement(rng, module):
    """One statement of the program; `module`: it is a module's forward (self is there)."""
    def read():
        return rng.choice(SELF_READS) if module and rng.random() < 0.4 else _read(rng)

    def traced_read():  # a read inside torch.cond's and while_loop's functions, which eager traces with Dynamo
        return rng.choice(_TRACED_READS + _TRACED_SELF_READS if module else _TRACED_READS)

    kind = rng.randrange(8)
    if kind == 7:  # while_loop: its condition and body read state (at most half as much each trip: it ends)
        return (f"y = WHILE_LOOP(lambda v: v.abs().sum() > ({traced_read()}) ** 2 + 1.0, "
                f"lambda v: (v * (0.5 if ({traced_read()}) > 0 else 0.25),), (y,))[0]")
    if kind == 6:  # torch.cond: its branches read state too
        return (f"y = COND(y.sum() > ({traced_read()}), lambda v: v * ({traced_read()}), "
                f"lambda v: v - ({traced_read()}), (y,))")
    if kind == 5:
        tensors = TENSOR_READS + SELF_TENSOR_READS if module else TENSOR_READS
        return f"y = y + {rng.choice(tensors)}" if rng.random() < 0.5 else f"y = y * {rng.choice(tensors)}"
    if kind == 0:
        return f"y = y * ({read()})"
    if kind == 1:
        return f"y = y + ({read()})"
    if kind == 2:
        return f"if ({read()}) > {rng.choice([-1.0, 0.0, 1.0, 2.0])}:\n    y = y.relu()\nelse:\n    y = y - 1"
    if kind == 3:  # a compiled function, called while the program is captured
        return "y = inner(y)"
    return rng.choice(WRITES + SELF_WRITES if module else WRITES)


def make_program(rng):
    """(the program's module source, the changes to make between its calls)."""
    module = rng.random() < 0.4  # a module's forward, compiled as the module
    body = "\n".join(_statement(rng, module) for _ in range(rng.randint(1, 4)))
    source = PRELUDE + textwrap.dedent("""
        DEFAULT = [0.25]
        def dflt(box=DEFAULT):
            return box[0]
        import deepvisor
        inner = deepvisor.compile(lambda t: t * O.a + L[0])
        def fallback():
            try:
                return D["k2"]
            except KeyError:
                return -3.0
        """)
    if module:
        source += ("class Program(Prog):\n    def forward(self, x, opts):\n        global G\n        y = x * 1.0\n" +
                   textwrap.indent(body, "        ") + "\n        return y\nprogram = Program()\n")
    else:
        source += "def program(x, opts):\n    global G\n    y = x * 1.0\n" + textwrap.indent(body, "    ") + "\n    return y\n"
    pool = CHANGES + MODULE_CHANGES if module else CHANGES
    changes = [rng.choice(pool).format(v=rng.choice([-2.0, -0.5, 0.5, 3.0])) for _ in range(rng.randint(1, 4))]
    return source, changes


def _namespace(source, name, compiled):
    # An importable module of its own (torch.cond's eager path, Dynamo, imports
    # the module of the code it traces), with a file that is not a library's.
    module = types.ModuleType(name)
    module.__file__ = "<fuzz_state>"
    sys.modules[name] = module
    namespace = module.__dict__
    from torch._higher_order_ops.while_loop import while_loop
    namespace["COND"], namespace["WHILE_LOOP"] = (torch.cond, while_loop) if compiled else \
        (python_cond, python_while_loop)
    exec(compile(source, "<fuzz_state>", "exec"), namespace)
    x = torch.linspace(-1.0, 1.0, 5)
    x.scale = 0.5
    namespace["x"] = x  # the argument, for the changes that set its attributes
    return namespace


def _state(ns):
    """What a program may read or write, comparable between two namespaces."""
    def attrs(o):
        return sorted((k, v) for k, v in vars(o).items() if isinstance(v, (int, float, str)))

    return (sorted(ns["D"].items()), list(ns["L"]), attrs(ns["O"]), ns["K"].c, ns["cell_get"](),
            sorted(ns["NESTED"]["cfg"].items()), list(ns["DEFAULT"]), ns["P"].base,
            [attrs(o) for o in ns["LO"]], attrs(ns["x"]), list(ns["OD"].items()), sorted(ns["DD"].items()),
            sorted(ns["S"]), type(ns["O"]).__name__, ns["Base"].f, vars(ns["Derived"]).get("f"), attrs(ns["DO"]),
            ns["SL"].p, ns["Cm"].k, ns["dfl2"].__defaults__, ns["kwd"].__kwdefaults__, ns["MOD"].scale, ns["DCI"].s,
            tuple(ns["NT"]), ns["W2"].tolist(), ns["G"], ns["x"].tolist(), ns["x"].dtype, sorted(ns["D2"].items(), key=str),
            [t.tolist() for t in ns["TL"]], dict(ns["CFG"]._d), list(ns["BX"].items), ns["TD"]["w"].tolist(),
            ns["M"].weight.tolist(), ns["M"].bias.tolist(), ns["M"].training, _module_state(ns["program"]),
            sorted(ns["OPTS"].items()), ns["ARR"].tolist(), ns["RNG"].getstate(), ns["TXT"].getvalue(),
            ns["WG"].requires_grad, None if ns["WG"].grad is None else ns["WG"].grad.tolist(), list(ns["LOGGED"]))


def _module_state(p):
    if not isinstance(p, torch.nn.Module):
        return None
    return (p.scale, dict(p.cfg), p.use_relu, p.training, [m.weight.tolist() for m in p.layers], p.buf.tolist(),
            p.lin.weight.tolist(), getattr(p, "calls", None))


class _RefusedByDynamo(Exception):
    """torch.cond and while_loop trace their functions with Dynamo in eager,
    which refuses some that deepvisor runs (a branch reading a number out of
    a tensor) or fails inside (an assertion of its own on a recompile): not a
    program torch accepts, so not one to compare."""


def _call(fn, x, opts):
    try:
        return fn(x, opts), None
    except Exception as e:  # the program itself fails on this state: so must the compiled one
        frames = traceback.extract_tb(e.__traceback__)
        if any(f"torch{os.sep}_dynamo" in f.filename for f in frames):
            return None, _RefusedByDynamo
        return None, type(e)


_checks = 0


def check(source, changes):
    """None, or why the compiled program differed from eager: its result, an
    exception, or the state it left. The compiled program and eager run in
    twin namespaces, changed alike between calls."""
    global _checks
    _checks += 1  # fresh module names: Dynamo's caches (torch.cond in eager) know the earlier modules by name
    compiled_ns = _namespace(source, f"fuzz_state_compiled_{_checks}", compiled=True)
    eager_ns = _namespace(source, f"fuzz_state_eager_{_checks}", compiled=False)
    g = deepvisor.compile(compiled_ns["program"])
    for step, change in enumerate(["pass", "pass"] + changes):
        try:
            exec(change, eager_ns)
        except (IndexError, KeyError, AttributeError, NameError):
            continue  # a change that does not apply to this state (an empty list, a missing key)
        exec(change, compiled_ns)
        want, eager_error = _call(eager_ns["program"], eager_ns["x"], eager_ns["OPTS"])
        eager_before = deepvisor.stats(g)["eager_calls"]
        got, error = _call(g, compiled_ns["x"], compiled_ns["OPTS"])
        if deepvisor.stats(g)["eager_calls"] > eager_before and ("COND(" in source or "WHILE_LOOP(" in source):
            return None  # the call ran torch's own torch.cond or while_loop (see python_cond)
        where = f"after {change!r} (step {step})"
        if _RefusedByDynamo in (eager_error, error):
            return None
        if eager_error or error:
            if eager_error is not error:
                return f"{where}: eager raised {eager_error}, compiled {error}"
        elif not torch.allclose(got, want, equal_nan=True):
            return f"{where}: compiled {got.tolist()} != eager {want.tolist()}"
        if _state(compiled_ns) != _state(eager_ns):
            return f"{where}: state compiled {_state(compiled_ns)} != eager {_state(eager_ns)}"
    return None


def run(programs, seed, log=print):
    """Failing (source, changes, why) triples of `programs` random programs."""
    rng = random.Random(seed)
    failures = []
    with torch.no_grad():
        for i in range(programs):
            source, changes = make_program(rng)
            why = check(source, changes)
            if why:
                failures.append((source, changes, why))
                log(f"program {i}: {why}\n{source.split('DEFAULT = [0.25]')[-1]}changes: {changes}")
    return failures


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--programs", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    failures = run(a.programs, a.seed)
    print(f"{a.programs} programs, seed {a.seed}: {len(failures)} failing")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
