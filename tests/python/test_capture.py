"""The Python-state monitor: guards over what the program read, side effects
replayed, results rebuilt, one graph through ordinary Python.

Every test changes Python state between calls and compares with eager; the
plan counts (captures, cache hits) show that the compiled path was taken.
"""

import _thread
import abc
import collections
import contextvars
import copy
import dataclasses
import decimal
import functools
import gc
import heapq
import io
import itertools
import logging
import operator
import os
import random
import re
import sys
import sysconfig
import threading
import time
import types
import typing
import warnings
import weakref

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import deepvisor
from op_cases import assert_matches


DEVICE = "cpu"  # set by the `device` fixture: every test runs on the CPU and, where there is one, on a GPU


def tol(dtype):
    if DEVICE == "cuda":
        return (1e-4, 1e-4) if dtype != torch.float64 else (1e-7, 1e-7)
    return (1e-5, 1e-5) if dtype != torch.float64 else (1e-7, 1e-7)


def randn(*shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype).to(DEVICE)


def full(shape, value):
    return torch.full(shape, value, device=DEVICE)


def tensor(values):
    return torch.tensor(values, device=DEVICE)


def on(module):
    """The module on the test's device, in eval mode."""
    return module.to(DEVICE).eval()


@pytest.fixture(autouse=True, params=["cpu", "cuda"])
def device(request):
    global DEVICE
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("no GPU")
    DEVICE = request.param
    with torch.no_grad():
        yield request.param
    DEVICE = "cpu"


def same(g, fn, *args, **kwargs):
    """g(*args) equals fn(*args); returns g's result."""
    out = g(*args, **kwargs)
    assert_matches(out, fn(*args, **kwargs), tol)
    return out


def same_around(change, g, fn, *args):
    """g equals fn on two calls, then `change()`, then on two calls more."""
    for _ in range(2):
        same(g, fn, *args)
    change()
    for _ in range(2):
        same(g, fn, *args)


# -- the issue's example ------------------------------------------------------------

class Issue(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)
        self.scale = 2.0
        self.use_relu = True

    def forward(self, x):
        y = self.lin(x) * self.scale
        return torch.relu(y) if self.use_relu else torch.tanh(y)


def test_issue_example_sees_every_change():
    m = on(Issue())
    x = randn(3, 8)
    g = deepvisor.compile(m)
    same(g, m, x)
    same(g, m, x)
    assert deepvisor.stats(g)["cache_hits"] == 1
    m.scale = 3.0
    same(g, m, x)
    m.use_relu = False
    same(g, m, x)
    m.lin = on(nn.Linear(8, 8))
    same(g, m, x)
    m.lin.weight.mul_(2)  # in place: the plan reads the parameter itself
    same(g, m, x)
    s = deepvisor.stats(g)
    assert s["captures"] == 4 and s["eager_calls"] == 0
    # Back to an earlier state: that plan is still held.
    m.scale, m.use_relu = 2.0, True
    before = deepvisor.stats(g)["captures"]
    same(g, m, x)
    assert deepvisor.stats(g)["captures"] == before + 1  # m.lin was replaced: a new plan


# -- behaviour 2: guards catch every change that matters --------------------------

class Config:
    def __init__(self):
        self.eps = 1e-5
        self.mode = "gelu"
        self.depth = 2


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.norm = nn.LayerNorm(6)
        self.flag = True
        self.power = 2

    def forward(self, x):
        h = F.layer_norm(x, (6,), self.norm.weight, self.norm.bias, self.cfg.eps)
        for _ in range(self.cfg.depth):
            h = F.gelu(h) if self.cfg.mode == "gelu" else torch.sigmoid(h)
        if self.flag:
            h = h ** self.power
        return h


class Outer(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block(Config())
        self.offset = 0.5

    def forward(self, x):
        return self.block(x) + self.offset


@pytest.mark.parametrize("change", [
    lambda m: setattr(m, "offset", 1.5),                      # float attribute of the module
    lambda m: setattr(m.block, "flag", False),                # bool attribute of a submodule
    lambda m: setattr(m.block, "power", 3),                   # int attribute of a submodule
    lambda m: setattr(m.block.cfg, "mode", "sigmoid"),        # str attribute of a config object
    lambda m: setattr(m.block.cfg, "eps", 1e-1),              # float attribute of a config object
    lambda m: setattr(m.block.cfg, "depth", 3),               # loop trip count
    lambda m: setattr(m.block, "cfg", Config()) or setattr(m.block.cfg, "depth", 1),  # object replaced
    lambda m: setattr(m.block, "norm", on(nn.LayerNorm(6))) or m.block.norm.bias.fill_(1.0),  # submodule replaced
    lambda m: setattr(m.block.norm, "weight", nn.Parameter(full((6,), 2.0))),               # parameter replaced
    lambda m: m.block.norm.weight.mul_(3.0),                  # parameter updated in place
])
def test_a_change_of_module_state_is_seen(change):
    m = on(Outer())
    x = randn(4, 6)
    g = deepvisor.compile(m)
    same_around(lambda: change(m), g, m, x)
    s = deepvisor.stats(g)
    assert s["eager_calls"] == 0 and s["cache_hits"] >= 2


@pytest.mark.parametrize("eager_first", [True, False])
def test_parameters_updated_between_autocast_regions_are_seen(eager_first):
    """Autocast caches its casts of parameters for the rest of a region.
    When eager ran in the region before the capture, the capture met the
    cached bf16 weights, which no recorded op made, and held them as
    constants: after an in-place update of the parameters (a training step
    between regions) the plan kept computing with the old weights (errors
    of 0.26, then 0.79). The capture records the casts themselves."""
    torch.manual_seed(0)
    m = on(nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4)))
    x = randn(3, 16)
    g = deepvisor.compile(m)
    with torch.no_grad():
        for _ in range(3):
            with torch.autocast(DEVICE, dtype=torch.bfloat16):
                if eager_first:
                    want = m(x)
                got = [g(x), g(x)]
                if not eager_first:
                    want = m(x)
            for out in got:  # bf16: the fused plan rounds less often than eager
                torch.testing.assert_close(out.float(), want.float(), rtol=2e-2, atol=2e-2)
            m[0].weight.mul_(2.0)
            m[2].bias.add_(1.0)
    s = deepvisor.stats(g)
    assert s["captures"] == 1 and s["eager_calls"] == 0, s

SCALE = 2.0


def uses_global(x):
    return x * SCALE


def test_a_global_is_guarded():
    global SCALE
    x = randn(5)
    g = deepvisor.compile(uses_global)
    try:
        same(g, uses_global, x)
        SCALE = 4.0
        same(g, uses_global, x)
        same(g, uses_global, x)
    finally:
        SCALE = 2.0
    assert deepvisor.stats(g)["captures"] == 2


def _one_capture_then_a_change_seen(fn, change, undo):
    """Three calls replay one capture; after `change` to the state the next
    two calls see it (each test asserts how); then `undo`."""
    g = deepvisor.compile(fn)
    x = randn(5)
    for _ in range(3):
        same(g, fn, x)
    assert deepvisor.stats(g)["captures"] == 1
    try:
        change()
        same(g, fn, x)
        same(g, fn, x)
    finally:
        undo()
    return g


class _Instantier(collections.OrderedDict):
    """transformers' ClassInstantier (ACT2FN): each item read makes a new
    instance of the class stored under the key."""

    def __getitem__(self, key):
        return super().__getitem__(key)()


ACTIVATIONS = _Instantier(act=torch.nn.Tanh)


def uses_instantier(x):
    return ACTIVATIONS["act"](x) * 2


def test_a_dict_whose_items_are_made_on_each_read_is_guarded_on_what_it_stores():
    """The program reads the stored class (super().__getitem__) and calls a
    new instance. The guard read the item through the subclass's
    __getitem__, which made another instance every call: a guard that
    never held, a capture a call (Mamba in transformers: 20 captures for
    20 calls). It reads the stored item, and a change of it is still seen."""
    g = _one_capture_then_a_change_seen(uses_instantier, lambda: ACTIVATIONS.__setitem__("act", torch.nn.ReLU),
                                        lambda: ACTIVATIONS.__setitem__("act", torch.nn.Tanh))
    assert deepvisor.stats(g)["captures"] == 2


class _LayerView:
    """A view over a config that a property makes on every read."""

    def __init__(self, config):
        self._config = config

    def scale(self):
        return self._config.scale


class _ViewingConfig:
    """transformers' PreTrainedConfig: a Python __getattribute__ that reads
    through super(), and `per_layer_config`, a property that returns a new
    view on every read."""

    def __init__(self, scale):
        self.scale = scale

    def __getattribute__(self, key):
        return super().__getattribute__(key)

    @property
    def per_layer_config(self):
        return _LayerView(self)


VIEWING_CONFIG = _ViewingConfig(2.0)


def reads_a_view_through_getattribute(x):
    return x * VIEWING_CONFIG.per_layer_config.scale()


def reads_a_view_through_getattr(x):
    return x * getattr(VIEWING_CONFIG, "per_layer_config").scale()


@pytest.mark.parametrize("fn", [reads_a_view_through_getattribute, reads_a_view_through_getattr])
def test_an_attribute_a_property_makes_on_each_read_is_not_guarded_by_identity(fn):
    """A property that ran Python under a C getattr (super().__getattribute__,
    getattr) made its result: the guard checked that result's identity, a
    new object every call, so it never held (Bloom, Falcon, Pegasus, Marian
    and XGLM in transformers captured on every call: their forward makes a
    DynamicCache, which reads config.per_layer_config). The property's own
    reads are checked, so a change of what it reads is still seen."""
    g = _one_capture_then_a_change_seen(fn, lambda: setattr(VIEWING_CONFIG, "scale", 3.0),
                                        lambda: setattr(VIEWING_CONFIG, "scale", 2.0))
    assert deepvisor.stats(g)["captures"] == 2


class _CountsItsCalls(torch.nn.Module):
    def forward(self, x):
        self.calls = getattr(self, "calls", 0) + 1  # nn.Module.__getattr__ (Python) until the attribute is set
        return x * self.calls


def test_a_getattr_default_after_a_python_getattr_checks_the_attribute_is_absent():
    """getattr(module, "calls", 0) runs nn.Module.__getattr__ (Python) after
    the lookup fails: unlike a property's getter, that failed lookup is a
    read to check, or the first call's plan replays on every call."""
    counter, reference = _CountsItsCalls(), _CountsItsCalls()
    g = deepvisor.compile(counter)
    x = randn(3)
    for n in range(1, 5):
        torch.testing.assert_close(g(x), reference(x))
        assert counter.calls == reference.calls == n


class _PlainSettings:
    def __init__(self):
        self.scale = 2.0
        self.extra = {"shift": 1.0}


class _ReadThroughSettings(_PlainSettings):
    def __getattribute__(self, key):  # (transformers' configs)
        return super().__getattribute__(key)


SETTINGS = {"plain": _PlainSettings(), "read_through": _ReadThroughSettings()}


@pytest.mark.parametrize("kind", ["plain", "read_through"])
def test_a_deep_copy_of_state_is_guarded_on_all_it_copies(kind):
    """copy.deepcopy reads obj.__reduce_ex__, a builtin method made anew on
    every read (checked by identity, a guard that never held: Pegasus and
    Marian captured on every call), and calls it: C code that hands on the
    whole instance dict. The method is checked as the same C function of
    the same object, and its call checks every item of the dict, so a
    change of any attribute, or of what one holds, is seen."""
    settings = SETTINGS[kind]

    def fn(x):
        copied = copy.deepcopy(settings)
        return x * copied.scale + copied.extra["shift"]

    g = deepvisor.compile(fn)
    x = randn(5)
    for _ in range(4):
        same(g, fn, x)
    captures = deepvisor.stats(g)["captures"]
    assert captures <= 2  # (the first deepcopy of a class also caches its __slotnames__: that run is eager)
    try:
        settings.scale = 3.0
        same(g, fn, x)
        same(g, fn, x)
        settings.extra["shift"] = -4.0
        same(g, fn, x)
        settings.extra = {"shift": 0.5}
        same(g, fn, x)
    finally:
        settings.scale, settings.extra = 2.0, {"shift": 1.0}
    assert deepvisor.stats(g)["captures"] == captures + 3


def annotates_a_list(x):
    outs = torch.jit.annotate(typing.List[torch.Tensor], [])  # (timm's CrossViT)
    outs.append(x * 2)
    return outs[0] + 1


def test_a_generic_alias_made_in_the_call_is_no_state():
    """List[Tensor] goes through typing's lru_cache (_tp_cache), a C object
    whose entries deepvisor does not follow: the call ran eagerly. Its
    entries are the aliases of their arguments: captured now."""
    g = deepvisor.compile(annotates_a_list)
    x = randn(5)
    for _ in range(3):
        same(g, annotates_a_list, x)
    s = deepvisor.stats(g)
    assert s["captures"] == 1 and s["eager_calls"] == 0, s


PRIMES = [31, 43, 59, 61]


def scales_by_a_slice(x):
    return x * sum(PRIMES[:2])  # (CANINE's hash buckets: _PRIMES[:num_hashes])


def test_a_slice_of_state_is_guarded_on_its_items():
    """On Python 3.11 `lst[:2]` is an item read with a slice key: the guard
    checked the identity of the new list it made, which never held, a
    capture a call (CANINE in transformers). It checks the list's items."""
    g = _one_capture_then_a_change_seen(scales_by_a_slice, lambda: PRIMES.__setitem__(1, 47),
                                        lambda: PRIMES.__setitem__(1, 43))
    same(g, scales_by_a_slice, randn(5))  # (the first capture's state again)
    assert deepvisor.stats(g)["captures"] == 2


def test_a_closure_variable_is_guarded():
    k = 3.0

    def f(x):
        return x * k

    g = deepvisor.compile(f)
    x = randn(5)
    same(g, f, x)
    k = 5.0  # noqa: F841 (read by f through its cell)
    same(g, f, x)
    assert deepvisor.stats(g)["captures"] == 2


def test_scalar_and_list_arguments():
    def f(x, n, items):
        for t in items:
            x = x + t * n
        return x

    g = deepvisor.compile(f)
    x, a, b = randn(3), randn(3, seed=1), randn(3, seed=2)
    same(g, f, x, 2, [a])
    same(g, f, x, 3, [a])         # another int
    same(g, f, x, 2.0, [a])       # a float, not an int
    same(g, f, x, 2, [a, b])      # a longer list
    same(g, f, x, 2, [b, a])      # other tensors in the list: no capture
    s = deepvisor.stats(g)
    assert s["captures"] == 4 and s["cache_hits"] == 1


@pytest.mark.parametrize("other", [
    lambda x: x.double(), lambda x: x.reshape(2, 6), lambda x: x.t().contiguous().t(), lambda x: x[None]])
def test_input_dtype_rank_and_layout_are_guarded(other):
    def f(x):
        return torch.sin(x) * 2

    g = deepvisor.compile(f)
    x = randn(3, 4)
    same(g, f, x)
    same(g, f, other(x))
    assert deepvisor.stats(g)["captures"] == 2


def test_train_and_eval_are_guarded():
    m = on(nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5)))
    g = deepvisor.compile(m)
    x = randn(8, 4)
    same(g, m, x)
    m.train()
    torch.manual_seed(0)
    out = g(x)
    torch.manual_seed(0)
    assert_matches(out, m(x), tol)
    m.eval()
    same(g, m, x)
    assert deepvisor.stats(g)["versions"] == 2  # one plan per mode


# -- behaviour 3: no needless recaptures ----------------------------------------

def test_a_thousand_calls_with_new_values_capture_once():
    m = on(Outer())
    g = deepvisor.compile(m)
    for i in range(1000):
        x = randn(4, 6, seed=i)
        out = g(x)
        if i % 250 == 0:
            assert_matches(out, m(x), tol)
    s = deepvisor.stats(g)
    assert s["captures"] == 1 and s["cache_hits"] == 999


# -- behaviour 1: complete graphs through ordinary Python ----------------------------

Pair = collections.namedtuple("Pair", "a b")


@dataclasses.dataclass
class Batch:
    x: torch.Tensor
    scale: float


class Helper:
    def __init__(self, k):
        self.k = k

    def apply(self, t):
        return t * self.k


@pytest.fixture
def library_module(monkeypatch):
    """A module that deepvisor takes for an installed library's (its file is
    under site-packages), holding state a program may read."""
    mod = types.ModuleType("dv_test_installed_lib")
    mod.__file__ = os.path.join(sysconfig.get_paths()["purelib"], "dv_test_installed_lib.py")
    mod.CONFIG, mod.SCALES, mod.FLAG = {"scale": 2.0}, [2.0], 2.0
    mod.OPTIONS = Batch(None, 2.0)
    mod.helper = lambda x: x * 2
    # Code of the library's own, reading a module-level switch that a setter changes.
    source = "def scaled(x):\n    return x * _SWITCH\n\n\ndef set_switch(v):\n    global _SWITCH\n    _SWITCH = v\n"
    exec(compile(source, mod.__file__, "exec"), mod.__dict__)
    mod.set_switch(2.0)
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    return mod


@pytest.mark.parametrize("read, change", [
    (lambda lib: lib.CONFIG["scale"], lambda lib: lib.CONFIG.__setitem__("scale", 3.0)),
    (lambda lib: lib.SCALES[0], lambda lib: lib.SCALES.__setitem__(0, 3.0)),
    (lambda lib: lib.FLAG, lambda lib: setattr(lib, "FLAG", 3.0)),
    (lambda lib: lib.OPTIONS.scale, lambda lib: setattr(lib.OPTIONS, "scale", 3.0)),
    (lambda lib: lib.scaled(1.0), lambda lib: lib.set_switch(3.0)),
], ids=["dict item", "list item", "module attribute", "config object", "a global its own code reads"])
def test_state_of_an_installed_library_is_guarded(library_module, read, change):
    """A library's functions and classes are trusted to stay what they are;
    the numbers, flags, containers and config objects it holds are state
    like any other (they were trusted too, and a change was missed)."""
    def fn(x):
        return library_module.helper(x) * read(library_module)
    x = randn(3)
    g = deepvisor.compile(fn)
    same_around(lambda: change(library_module), g, fn, x)
    s = deepvisor.stats(g)
    assert s["captures"] == 2 and s["cache_hits"] == 2 and s["eager_calls"] == 0, s


def test_setting_a_library_modules_attribute_runs_eagerly(library_module):
    """A module keeps no snapshot to replay a write from: the call runs
    eagerly, so the write happens on every call, as in eager."""
    def fn(x):
        library_module.FLAG = 7.0
        return x + 1
    x = randn(3)
    g = deepvisor.compile(fn)
    for _ in range(2):
        library_module.FLAG = 1.0
        same(g, fn, x)
        assert library_module.FLAG == 7.0
    s = deepvisor.stats(g)
    assert s["captures"] == 0 and s["eager_calls"] == 2, s
    assert any("an attribute of a library module" in r for r in s["eager_reasons"]), s


class _Lookups(nn.Module):
    """Reaches parameters, buffers and submodules through nn.Module.__getattr__,
    and an attribute that none of them holds."""
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.scale = nn.Parameter(torch.ones(4))
        self.register_buffer("shift", torch.zeros(4))

    def forward(self, x):
        y = self.lin(x) * self.scale + self.shift
        extra = getattr(self, "extra", None)
        return y if extra is None else y + extra


def _guard_lines(g):
    return sorted(re.sub(r"0x[0-9a-f]+", "ID", line.strip())
                  for line in deepvisor.explain(g).splitlines() if line.startswith("    "))


def _guard_lines_stepped_and_summarized(monkeypatch, m, x):
    """{summaries on: the guard lines of a compile of m called on x}, for off
    and on; and the last compiled function."""
    from deepvisor import _monitor
    lines = {}
    for summaries in (False, True):
        monkeypatch.setattr(_monitor, "_summaries_on", summaries)
        g = deepvisor.compile(m)
        same(g, m, x)
        lines[summaries] = _guard_lines(g)
    return lines, g


def test_module_getattr_is_summarized_with_the_reads_stepping_makes(monkeypatch):
    """nn.Module.__getattr__ is not stepped (it was a quarter of a capture's
    instructions); the monitor records its reads at its start. The guards are
    those that stepping it gave, and a parameter added under a name that was
    missing is a guard miss."""
    m = on(_Lookups())
    x = randn(2, 4)
    lines, g = _guard_lines_stepped_and_summarized(monkeypatch, m, x)
    assert lines[True] == lines[False]
    assert any("'extra' in " in line and " is False" in line for line in lines[True]), lines[True]
    same(g, m, x)
    m.extra = nn.Parameter(torch.full((4,), 2.0, device=DEVICE))
    same(g, m, x)
    s = deepvisor.stats(g)
    assert s["captures"] == 2 and s["cache_hits"] == 1, s


class _TwoLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


class _RegistersInForward(_TwoLayers):
    """Sets a hook on its first layer during its own forward."""
    def forward(self, x):
        if not self.a._forward_hooks:
            self.a.register_forward_hook(lambda module, args, out: out * 2)
        return self.b(self.a(x))


class _OwnGetattribute(_TwoLayers):
    def __getattribute__(self, name):
        return super().__getattribute__(name)


def test_module_calls_are_summarized_with_the_reads_stepping_makes(monkeypatch):
    """nn.Module._call_impl is not stepped where no hook is set (it made 44%
    of a capture's reports); the monitor records its reads at its start, and
    the forward it calls is stepped. The guards are those that stepping gave,
    the hook registries' emptiness among them."""
    x = randn(3, 4)
    for cls in (_TwoLayers, _OwnGetattribute):
        lines, _ = _guard_lines_stepped_and_summarized(monkeypatch, on(cls()), x)
        assert lines[True] == lines[False]
        assert any("['weight']" in line for line in lines[True]), lines[True]  # read in Linear.forward, stepped
        if cls is _TwoLayers:  # (a Python __getattribute__ declines the summary)
            assert any("bool(self._forward_hooks) is False" in line for line in lines[True]), lines[True]


@pytest.mark.parametrize("hook", ["forward", "forward pre", "global forward", "global forward pre",
                                  "forward replaced"])
def test_a_hook_set_between_calls_is_a_guard_miss(hook):
    """A hook set on a module or on all modules after a capture is a guard
    miss; the call with it is stepped, so the hook's own reads are guarded;
    once it is removed, the first plan serves again."""
    m = on(_TwoLayers())
    x = randn(3, 4)
    g = deepvisor.compile(m)
    state = {"scale": 2.0}
    handles = []

    def scaled(module, args, out):
        return out * state["scale"]

    def shifted(module, args):
        return (args[0] + 1,)

    def set_hook():
        if hook == "forward":
            handles.append(m.a.register_forward_hook(scaled))
        elif hook == "forward pre":
            handles.append(m.b.register_forward_pre_hook(shifted))
        elif hook == "global forward":
            handles.append(torch.nn.modules.module.register_module_forward_hook(scaled))
        elif hook == "global forward pre":
            handles.append(torch.nn.modules.module.register_module_forward_pre_hook(shifted))
        else:
            m.a.forward = lambda inp: inp * 3

    try:
        same_around(set_hook, g, m, x)
        same_around(lambda: state.update(scale=3.0), g, m, x)
    finally:
        for h in handles:
            h.remove()
    for _ in range(2):
        same(g, m, x)
    s = deepvisor.stats(g)
    scaling = hook in ("forward", "global forward")
    assert s["eager_calls"] == 0 and s["versions"] == (3 if scaling else 2), s


def test_a_hook_set_during_the_call_is_seen():
    """A forward that registers a hook on a layer before calling it: that
    layer's call is stepped with its hook, and the registration is a change
    a replay must see (the second call captures again, with the hook set)."""
    m, twin = on(_RegistersInForward()), on(_RegistersInForward())
    twin.load_state_dict(m.state_dict())
    x = randn(3, 4)
    g = deepvisor.compile(m)
    for _ in range(3):
        assert_matches(g(x), twin(x), tol)
    assert len(m.a._forward_hooks) == 1
    assert deepvisor.stats(g)["eager_calls"] == 0


class _SuperGetattribute(nn.Module):
    """Every attribute read runs a Python __getattribute__ that defers to the default."""
    def __init__(self, via_super):
        super().__init__()
        self.via_super = via_super
        self.lin = nn.Linear(4, 4)
        self.scale = 2.0

    def __getattribute__(self, name):
        if object.__getattribute__(self, "__dict__").get("via_super", True):
            return super().__getattribute__(name)
        return object.__getattribute__(self, name)

    def forward(self, x):
        return self.lin(x) * self.scale


@pytest.mark.parametrize("via_super", [True, False], ids=["super", "object"])
@pytest.mark.parametrize("change", ["value", "submodule", "weight"])
def test_attributes_read_through_a_python_getattribute_are_guarded(via_super, change):
    """super().__getattribute__(name) on Python 3.11 is a builtin method bound
    to the module: its call reads the module although no operand is the
    module. Once stale: the plan kept scale 2.0 after it became 5.0."""
    m = on(_SuperGetattribute(via_super))
    x = randn(3, 4)
    g = deepvisor.compile(m)

    def change_it():
        if change == "value":
            m.scale = 5.0
        elif change == "submodule":
            m.lin = on(nn.Linear(4, 4))
        else:
            m.lin.weight = nn.Parameter(randn(4, 4, seed=3))

    same_around(change_it, g, m, x)
    assert deepvisor.stats(g)["captures"] == 2


_HELD = {"s": 2.0}
_held_get = _HELD.get
_PUSHED = []
_held_push = _PUSHED.append


class _HoldsABoundGet(nn.Module):
    def __init__(self):
        super().__init__()
        self.cfg = {"s": 2.0}
        self.lookup = self.cfg.get

    def forward(self, x):
        return x * self.lookup("s")


def _reads_through_a_held_get(x):
    return x * _held_get("s")


def _appends_through_a_held_method(x):
    _held_push(1)
    return x * 2


def test_a_builtin_method_held_in_state_reads_its_object():
    """A bound builtin method kept in state (self.lookup = self.cfg.get, a
    global CFG.get): a call of it reads its object, which is guarded; a held
    list.append is a side effect that every call makes. Once stale or lost."""
    x = randn(3)
    m = _HoldsABoundGet()
    g = deepvisor.compile(m)
    same_around(lambda: m.cfg.update(s=5.0), g, m, x)
    g = deepvisor.compile(_reads_through_a_held_get)
    same_around(lambda: _HELD.update(s=7.0), g, _reads_through_a_held_get, x)
    g = deepvisor.compile(_appends_through_a_held_method)
    _PUSHED.clear()
    for _ in range(3):
        same(g, lambda v: v * 2, x)
    assert _PUSHED == [1, 1, 1]


_DEFAULTS = {"s": 2.0}
_SEEN_BY_DEFAULT = []


def _positional_default(x, cfg=_DEFAULTS):
    return x * cfg["s"]


def _keyword_default(x, *, cfg=_DEFAULTS):
    return x * cfg["s"]


def _calls_a_helper_with_a_default(x):
    return _positional_default(x) + 1


def _appends_to_its_default(x, seen=_SEEN_BY_DEFAULT):
    seen.append(len(seen))
    return x * 2


class _MethodDefault(nn.Module):
    def forward(self, x, cfg=_DEFAULTS):
        return x * cfg["s"]


@pytest.mark.parametrize("fn", [_positional_default, _keyword_default, _calls_a_helper_with_a_default,
                                _MethodDefault()], ids=["positional", "keyword", "helper", "method"])
def test_state_held_by_a_default_argument_is_guarded(fn):
    """A parameter left to its default holds that object, though no
    instruction read it: what the run reads of it is checked. Once stale:
    the plan kept s = 2.0 after the dict changed."""
    _DEFAULTS["s"] = 2.0
    x = randn(3)
    g = deepvisor.compile(fn)
    try:
        same_around(lambda: _DEFAULTS.update(s=5.0), g, fn, x)
    finally:
        _DEFAULTS["s"] = 2.0
    assert deepvisor.stats(g)["captures"] == 2


def test_a_default_argument_written_by_the_run_is_a_side_effect():
    """def f(x, seen=[]): seen.append(...): every call appends, compiled or not."""
    _SEEN_BY_DEFAULT.clear()
    g = deepvisor.compile(_appends_to_its_default)
    x = randn(3)
    for _ in range(3):
        same(g, lambda v: v * 2, x)
    assert _SEEN_BY_DEFAULT == [0, 1, 2]


class _Settings:
    K = 2.0

    def __init__(self):
        self.scale = 2.0
        self.shift = 1.0


_SETTINGS = _Settings()


def _through_vars(x):
    return x * vars(_SETTINGS)["scale"]


def _through_an_attrgetter(x):
    scale, shift = operator.attrgetter("scale", "shift")(_SETTINGS)
    return x * scale + shift


def _through_the_type(x):
    return x * type(_SETTINGS).K


def _through_a_dotted_attrgetter(x):
    return x * operator.attrgetter("inner.scale")(_HOLDER)


@pytest.mark.parametrize("fn", [_through_vars, _through_an_attrgetter, _through_the_type],
                         ids=["vars", "attrgetter", "type"])
def test_state_read_by_c_functions_is_guarded(fn):
    """vars(obj)[k], operator.attrgetter(...)(obj) and type(obj).K read the
    object's state in C or through a result no instruction read from it.
    Once stale: the plan kept 2.0 after the attribute became 5.0."""
    x = randn(3)
    g = deepvisor.compile(fn)

    def change():
        _SETTINGS.scale = _SETTINGS.shift = 5.0
        _Settings.K = 5.0

    try:
        same_around(change, g, fn, x)
    finally:
        _SETTINGS.scale, _SETTINGS.shift, _Settings.K = 2.0, 1.0, 2.0
    assert deepvisor.stats(g)["captures"] == 2


_HOLDER = types.SimpleNamespace(inner=_SETTINGS)


def test_a_dotted_attrgetter_on_state_runs_eagerly():
    """operator.attrgetter('inner.scale'): what obj.inner gave is not in the
    result, so the read cannot be checked: the call runs eagerly, with a reason."""
    x = randn(3)
    g = deepvisor.compile(_through_a_dotted_attrgetter)
    same(g, _through_a_dotted_attrgetter, x)
    s = deepvisor.stats(g)
    assert s["eager_calls"] == 1 and any("attrgetter" in r for r in s["eager_reasons"]), s


def _scaled_by(cfg, x, *, shift):
    return x * cfg["s"] + shift["t"]


_SHIFT = {"t": 1.0}
_PARTIAL = functools.partial(_scaled_by, _DEFAULTS, shift=_SHIFT)


def _through_a_partial(x):
    return _PARTIAL(x)


def test_state_held_by_a_partial_is_guarded():
    """functools.partial(f, cfg, shift=...) passes what it holds to f, though
    no instruction read it. Once stale."""
    x = randn(3)
    g = deepvisor.compile(_through_a_partial)

    def change():
        _DEFAULTS["s"], _SHIFT["t"] = 5.0, 3.0

    try:
        same_around(change, g, _through_a_partial, x)
    finally:
        _DEFAULTS["s"], _SHIFT["t"] = 2.0, 1.0
    assert deepvisor.stats(g)["captures"] == 2


def _counting():
    n = 0
    while True:
        n += 1
        yield float(n)


_ITERATORS = {}


def _takes_with_next(x):
    return x * next(_ITERATORS["it"])


def _takes_in_a_loop(x):
    for v in _ITERATORS["it"]:
        return x * v


def _takes_by_unpacking(x):
    a, b = _ITERATORS["pair"]
    return x * a * b


@pytest.mark.parametrize("make", [_counting, lambda: iter([1.0, 2.0, 3.0, 4.0]), lambda: itertools.count(1.0)],
                         ids=["generator", "list iterator", "itertools.count"])
@pytest.mark.parametrize("fn", [_takes_with_next, _takes_in_a_loop], ids=["next", "loop"])
def test_taking_from_an_iterator_held_in_state_runs_eagerly(make, fn):
    """An iterator held in state gives the next value at every call; a replay
    would give the first one forever (it did). The call runs eagerly, with a reason."""
    x = randn(3)
    _ITERATORS["it"], twin = make(), make()
    g = deepvisor.compile(fn)
    for _ in range(3):
        want = x * next(twin)
        assert_matches(g(x), want, tol)
    s = deepvisor.stats(g)
    assert s["eager_calls"] == 3 and any("iterator" in r for r in s["eager_reasons"]), s


def test_unpacking_an_iterator_held_in_state_runs_eagerly():
    x = randn(3)
    _ITERATORS["pair"] = iter([2.0, 3.0])
    g = deepvisor.compile(_takes_by_unpacking)
    assert_matches(g(x), x * 6.0, tol)
    assert any("iterator" in r for r in deepvisor.stats(g)["eager_reasons"])


_BY_ID = {}
_LAST = [None]


def _caches_by_id(x):
    key = id(x)
    if key in _BY_ID:
        return x * _BY_ID[key]
    _BY_ID[key] = 2.0
    return x * 3


def _caches_by_tensor(x):
    hit = _BY_ID.get(x)
    _BY_ID.setdefault(x, 2.0)
    return x * (3 if hit is None else hit)


def _compares_with_the_last_input(x):
    again = x is _LAST[0]
    _LAST[0] = x
    return x * (2 if again else 3)


@pytest.mark.parametrize("fn", [_caches_by_id, _caches_by_tensor, _compares_with_the_last_input],
                         ids=["id", "dict key", "is"])
def test_which_argument_object_was_passed_is_never_replayed(fn):
    """id(x) as a cache key, x as a dict key, `x is LAST[0]`: the answer
    depends on which tensor the caller passed, which guards do not check (they
    check what it is like). Once wrong: a new tensor replayed the first
    tensor's branch. Such calls run eagerly; the results follow eager's on a
    sequence that repeats and changes tensors."""
    xs = [randn(3, seed=s) for s in range(3)]
    sequence = [xs[0], xs[0], xs[1], xs[1], xs[2], xs[0]]
    g = deepvisor.compile(fn)
    _BY_ID.clear()
    _LAST[0] = None
    got = [g(v) for v in sequence]
    _BY_ID.clear()
    _LAST[0] = None
    for out, v in zip(got, sequence):
        assert_matches(out, fn(v), tol)
    assert any("depends on which object" in r for r in deepvisor.stats(g)["eager_reasons"])


def test_arguments_compared_with_each_other_or_none_are_captured():
    """`a is b` between two arguments (their aliasing is part of the call's key)
    and `mask is None` stay captured."""
    def fn(a, b, mask=None):
        out = a * 2 if a is b else a * 3
        return out if mask is None else out * mask

    x, y = randn(3, seed=1), randn(3, seed=2)
    g = deepvisor.compile(fn)
    for args in ((x, y), (x, x), (x, y, y), (y, y)):
        same(g, fn, *args)
    assert deepvisor.stats(g)["eager_calls"] == 0


class _UnhashableTarget(dict):
    """A dict: its weakref cannot be hashed (a weakref hashes its referent)."""


_WEAK_TARGET = _UnhashableTarget(s=2.0)


def _calls_a_weakref_default(x, ref=weakref.ref(_WEAK_TARGET)):
    return x * (2.0 if ref() is not None else 1.0)


@pytest.mark.parametrize("dynamic", [False, True])
def test_a_tracked_weakref_is_called_like_any_callable(dynamic):
    """A weakref held in state (a default here; CPython's WeakValueDictionary
    callbacks hold one) is tracked, so its calls are reported: the monitor
    must not hash it while classifying the call (it raised TypeError, and
    every capture with symbolic sizes that a weakref callback ran in failed)."""
    g = deepvisor.compile(_calls_a_weakref_default, dynamic=dynamic)
    for n in (3, 5):
        same(g, _calls_a_weakref_default, randn(n))
    assert deepvisor.stats(g)["eager_calls"] == 0, deepvisor.stats(g)["eager_reasons"]


_SCALE_VAR = contextvars.ContextVar("scale", default=2.0)
_QUEUE = collections.deque()
_HEAP = []


def _reads_a_context_variable(x):
    return x * _SCALE_VAR.get()


def _appends_to_a_deque(x):
    _QUEUE.append(1.0)
    return x * len(_QUEUE)


def _pushes_on_a_heap(x):
    heapq.heappush(_HEAP, 1.0)
    return x * len(_HEAP)


def test_state_in_c_objects_deepvisor_does_not_follow_runs_eagerly():
    """A context variable's value and a deque's contents change through C
    methods that no instruction shows: once a replay kept the first value
    (2.0 after set(5.0); a length of 1 at every call). Such calls run
    eagerly, with a reason."""
    x = randn(3)
    g = deepvisor.compile(_reads_a_context_variable)
    token = _SCALE_VAR.set(2.0)
    try:
        same_around(lambda: _SCALE_VAR.set(5.0), g, _reads_a_context_variable, x)
    finally:
        _SCALE_VAR.reset(token)
    _QUEUE.clear()
    g2 = deepvisor.compile(_appends_to_a_deque)
    for n in range(1, 4):
        assert_matches(g2(x), x * n, tol)
    for fn in (g, g2):
        assert any("does not follow" in r for r in deepvisor.stats(fn)["eager_reasons"])


_ARRAY = np.ones(3)
_RNG = random.Random(0)
_TEXT = io.StringIO()
_SCALE = {"v": 2.0}
_NS, _NS_REF = types.SimpleNamespace(s=1.0), types.SimpleNamespace(s=1.0)


@functools.lru_cache(maxsize=None)
def _cached_scale(k):
    return _SCALE["v"] * k


@pytest.mark.parametrize("read", [
    lambda x: x * _ARRAY.sum(),             # a C method of a numpy array
    lambda x: x * float(np.max(_ARRAY)),    # a C function given one
    lambda x: x * float((_ARRAY * 2).sum()),  # its operator
    lambda x: x * sum(float(v) for v in _ARRAY),  # a loop over it
    lambda x: x * _RNG.random(),            # a random generator of the program's
    lambda x: x * len(_TEXT.getvalue()),    # a StringIO's text
    lambda x: x * _cached_scale(1),         # an lru_cache function's entries
    lambda x: x * (2.0 if _NS == _NS_REF else 3.0),  # a SimpleNamespace's == (its dict, read in C)
], ids=["ndarray_method", "ndarray_argument", "ndarray_operator", "ndarray_loop", "random_instance", "stringio",
        "lru_cache", "namespace_equality"])
def test_state_kept_in_a_c_layout_runs_eagerly(read):
    """Objects whose state lives in a C layout (a numpy array's data, a random
    generator, a StringIO's text, an lru_cache's entries, what a
    SimpleNamespace's == compares) change where no instruction shows it:
    replays once kept the first call's value (the array's old sum, the same
    "random" number, a cached value after cache_clear()). Such calls run
    eagerly, with a reason."""
    def reset():
        _ARRAY[:] = 1.0
        _TEXT.seek(0)
        _TEXT.truncate()
        _SCALE["v"] = 2.0
        _cached_scale.cache_clear()
        _RNG.seed(1)
        _NS_REF.s = 1.0

    def change():
        _ARRAY[0] += 10.0
        _TEXT.write("abc")
        _SCALE["v"] += 1.0
        _cached_scale.cache_clear()
        _NS_REF.s = 5.0

    def calls(fn):
        reset()
        out = [fn(x) for _ in range(2)]
        change()
        return out + [fn(x) for _ in range(2)]

    x = randn(3)
    g = deepvisor.compile(read)
    for got, expected in zip(calls(g), calls(read)):
        assert_matches(got, expected, tol)
    assert any("does not follow" in r for r in deepvisor.stats(g)["eager_reasons"])


@pytest.mark.parametrize("read", [
    lambda x: x * float(np.asarray(x.cpu()).sum()),  # numpy's __array__ (Tensor.numpy() inside)
    lambda x: x * len(str(x)),                  # torch formats with the dispatch modes off
    lambda x: x * len(f"{x}"),
    lambda x: x * len(repr(x[0])),
    lambda x: x.cpu().clone().apply_(lambda v: v + 1.0).to(x.device),  # a Python function called from C
], ids=["asarray", "str", "fstring", "repr_of_a_view", "apply_"])
def test_tensor_values_read_by_python_methods_run_eagerly(read):
    """Tensor methods written in Python that hand its values to Python
    outside the dispatcher (np.asarray(x), str(x), an f-string) ran unseen:
    a replay kept the first call's text or sum. They run eagerly."""
    g = deepvisor.compile(read)
    for v in (1.5, 100.5, 1e10):
        x = torch.full((2,), v, device=DEVICE)
        assert_matches(g(x), read(x), tol)
    assert any("tensor data reaches Python" in r for r in deepvisor.stats(g)["eager_reasons"])


def test_a_tensor_formatted_as_a_number_is_a_decision():
    """format() of a 0-dim tensor formats .item(), which the recorder sees."""
    def fn(x):
        return x * len(f"{x.sum():.1f}")

    g = deepvisor.compile(fn)
    for v in (1.5, 100.5, 1e10):
        x = torch.full((2,), v, device=DEVICE)
        assert_matches(g(x), fn(x), tol)
    assert deepvisor.stats(g)["graphs"] == 1


_THIRD = decimal.Decimal(1)


def test_decimal_context_and_thread_identity_run_eagerly():
    """Decimal arithmetic rounds by the thread's context, which no guard
    checks; threading.get_ident() answers per thread. Replays kept the first
    precision's quotient and the capturing thread's identity."""
    def by_context(x):
        return x * float(decimal.Decimal(2) / decimal.Decimal(3))

    def by_a_program_decimal(x):
        return x * float(_THIRD / 3)

    def by_thread(x):
        return x * (threading.get_ident() % 7 + 1)

    x = randn(3)
    for fn in (by_context, by_a_program_decimal):
        g = deepvisor.compile(fn)
        with decimal.localcontext() as ctx:
            for prec in (28, 3, 28):
                ctx.prec = prec
                assert_matches(g(x), fn(x), tol)
        assert deepvisor.stats(g)["eager_calls"] > 0
    g = deepvisor.compile(by_thread)
    other = []
    thread = threading.Thread(target=lambda: other.append(g(x)))
    thread.start()
    thread.join()
    assert_matches(other[0], x * (thread.ident % 7 + 1), tol)
    assert_matches(g(x), by_thread(x), tol)

    # A lock that the program (or a library: torch.vmap) makes reads nothing of the thread's: captured.
    def makes_a_lock(x):
        with _thread.allocate_lock():
            return x * 2

    g = deepvisor.compile(makes_a_lock)
    for _ in range(3):
        assert_matches(g(x), x * 2, tol)
    assert deepvisor.stats(g)["eager_calls"] == 0, deepvisor.stats(g)["eager_reasons"]


def test_logging_in_the_program_is_not_lost():
    """logging's code was never stepped: a replay dropped the program's log
    records, and a level changed later was not seen. A record that would be
    emitted runs the call eagerly; a disabled one is checked, not replayed."""
    logger = logging.getLogger("deepvisor.test.program")
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)

    def fn(x):
        logger.debug("scaled")
        return x * 2

    g = deepvisor.compile(fn)
    x = randn(3)
    try:
        for _ in range(3):
            assert_matches(g(x), x * 2, tol)
        assert not records and deepvisor.stats(g)["eager_calls"] == 0
        logger.setLevel(logging.DEBUG)
        for _ in range(2):
            assert_matches(g(x), x * 2, tol)
        assert len(records) == 2  # one a call, as eager logs
    finally:
        logger.removeHandler(handler)


def test_warnings_in_the_program_are_shown_as_eager_shows_them():
    """warnings.warn is a C function taken to be pure: under an "always"
    filter a replay showed the warning once where eager shows it on every
    call. Now that call runs eagerly; under the other actions the replay
    shows what eager shows (once), and the filters are checked, so changing
    them reaches the warning again."""
    def fn(x):
        warnings.warn("careful")
        return x * 2

    def shown(f, x, action, calls=3):
        warnings.simplefilter(action)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter(action)  # (catch_warnings resets what was shown: every round starts afresh)
            for _ in range(calls):
                assert_matches(f(x), x * 2, tol)
        return len(w)

    g = deepvisor.compile(fn)
    x = randn(3)
    with warnings.catch_warnings():
        for action in ("default", "always", "ignore", "always", "once"):
            assert shown(g, x, action) == shown(fn, x, action), action
    s = deepvisor.stats(g)
    assert s["eager_calls"] == 6 and "'always' filter" in str(s["eager_reasons"]), s
    assert s["cache_hits"] >= 4, s  # the other actions replay


def test_c_types_whose_state_is_followed_still_capture():
    """Values and containers of C types (a struct sequence, an OrderedDict, a
    SimpleNamespace's attribute, a dtype, a compiled pattern) are read through
    modelled calls or cannot change: the program is one graph."""
    od = collections.OrderedDict(a=1.0)
    ns = types.SimpleNamespace(s=2.0)
    pattern = re.compile("a+")

    def fn(x):
        m = torch.max(x, 0)
        k = len(pattern.findall("aa-a")) + len(od.keys()) + ns.s
        return x * m.values * k * (2.0 if x.dtype.is_floating_point else 1.0) + torch.finfo(x.dtype).eps

    g = deepvisor.compile(fn)
    x = randn(4)
    same_around(lambda: od.update(b=2.0), g, fn, x)
    assert deepvisor.stats(g)["eager_calls"] == 0, deepvisor.stats(g)["eager_reasons"]


def _READ_SEED():
    return torch.initial_seed() % 7


@pytest.mark.parametrize("read, set_to", [
    (lambda: torch.get_num_threads(), lambda v: torch.set_num_threads(v)),
    (lambda: torch.is_anomaly_enabled(), lambda v: torch.autograd.set_detect_anomaly(bool(v - 1))),
    (lambda: torch.is_warn_always_enabled(), lambda v: torch.set_warn_always(bool(v - 1))),
    (_READ_SEED, lambda v: torch.manual_seed(v)),
    (lambda: 1 + (torch.backends.cuda.preferred_linalg_library() != torch._C._LinalgBackend.Default),
     lambda v: torch.backends.cuda.preferred_linalg_library(["default", "cusolver"][v - 1])),
], ids=["num_threads", "anomaly", "warn_always", "initial_seed", "linalg_library"])
def test_torch_settings_that_guards_do_not_check_run_eagerly(read, set_to):
    """torch's settings outside the guards' global state (threads, anomaly
    mode, warn-always, the seed): a replay once kept the value read first."""
    before, rng = read(), torch.get_rng_state()
    fn = lambda x: x * float(read())  # noqa: E731
    g = deepvisor.compile(fn)
    x = randn(3)
    try:
        set_to(1)
        same(g, fn, x)
        set_to(2)
        same(g, fn, x)
    finally:
        if isinstance(before, bool) or read is not _READ_SEED:
            set_to(int(before) + 1 if isinstance(before, bool) else before)
        torch.set_rng_state(rng)
    assert deepvisor.stats(g)["eager_reasons"]  # each read runs eagerly, with its reason


_PARAMETER = nn.Parameter(torch.ones(3))


@pytest.mark.parametrize("change", [
    lambda: setattr(_PARAMETER, "grad", torch.zeros(3)),
    lambda: _PARAMETER.requires_grad_(False),
], ids=["grad", "requires_grad"])
def test_a_tensors_autograd_state_read_as_python_is_checked(change):
    """`if w.grad is None`, `if w.requires_grad`: no tensor guard checks a
    tensor's autograd state, so a replay once kept the first branch."""
    def fn(x):
        return x * (2.0 if _PARAMETER.grad is None else 3.0) * (5.0 if _PARAMETER.requires_grad else 7.0)

    _PARAMETER.grad, _PARAMETER.requires_grad = None, True
    g = deepvisor.compile(fn)
    try:
        with torch.no_grad():
            same_around(change, g, fn, randn(3))
    finally:
        _PARAMETER.grad, _PARAMETER.requires_grad = None, True
    assert deepvisor.stats(g)["eager_calls"] == 0


def _seeds_then_draws(x):
    torch.manual_seed(0)
    return x + torch.randn(3)


def test_a_program_that_seeds_the_generator_runs_eagerly():
    """torch.manual_seed inside the program resets the default generator's
    state, which a replay did not repeat: eager drew the same noise on every
    call, the replay new noise each time."""
    g = deepvisor.compile(_seeds_then_draws)
    x = torch.zeros(3)
    rng = torch.get_rng_state()
    try:
        for _ in range(3):
            assert_matches(g(x), _seeds_then_draws(x), tol)
    finally:
        torch.set_rng_state(rng)
    assert any("torch.Generator" in r for r in deepvisor.stats(g)["eager_reasons"])


_DISABLED_SCALE = {"s": 2.0}


@torch.compiler.disable
def _hidden_from_dynamo(x):
    return x * _DISABLED_SCALE["s"]


def _calls_a_dynamo_disabled_function(x):
    return _hidden_from_dynamo(x) + 1


def test_a_function_under_torch_compiler_disable_is_stepped():
    """torch.compiler.disable wraps a function in Dynamo's code, which the
    monitor never stepped, nor what it called: the function's reads went
    unseen and a replay kept the first scale."""
    _DISABLED_SCALE["s"] = 2.0  # (each device's run changes it)
    g = deepvisor.compile(_calls_a_dynamo_disabled_function)
    same_around(lambda: _DISABLED_SCALE.update(s=5.0), g, _calls_a_dynamo_disabled_function, randn(3))
    s = deepvisor.stats(g)
    assert s["captures"] == 2 and s["eager_calls"] == 0, s


def _shapes():
    """A fresh ABC, a class, an instance and a program that asks about them
    (fresh on each device's run: a registration lasts for the process)."""
    class Shape(abc.ABC):
        pass

    class Square:
        pass

    square = Square()

    def is_a_shape(x):
        return x * (2.0 if isinstance(square, Shape) else 3.0) * (5.0 if issubclass(Square, (Shape,)) else 7.0)

    return Shape, Square, is_a_shape


def test_an_abc_registration_changes_isinstance_answers():
    """isinstance/issubclass against an ABC answer from its registrations,
    which no object of the program holds: after Shape.register(Square) a
    replay kept False. A guard on abc's cache token (which every register()
    changes) makes it a new version."""
    shape, square, is_a_shape = _shapes()
    g = deepvisor.compile(is_a_shape)
    x = randn(3)
    same_around(lambda: shape.register(square), g, is_a_shape, x)
    s = deepvisor.stats(g)
    assert s["captures"] == 2 and s["eager_calls"] == 0, s


def test_a_c_function_that_changes_its_list_is_a_side_effect():
    """heapq.heappush(HEAP, v) changes HEAP: every call pushes, compiled or not."""
    _HEAP.clear()
    x = randn(3)
    g = deepvisor.compile(_pushes_on_a_heap)
    for n in range(1, 4):
        assert_matches(g(x), x * n, tol)
    assert len(_HEAP) == 3


class _Parent:
    def __init__(self):
        self.cfg = {"s": 2.0}


class _Child(nn.Module):
    """Reaches its parent through a weakref, as trees of objects do to avoid cycles."""
    def __init__(self, parent):
        super().__init__()
        self.parent_ref = weakref.ref(parent)

    def forward(self, x):
        return x * self.parent_ref().cfg["s"]


def test_state_reached_through_a_weakref_is_guarded():
    """self.parent_ref().cfg['s']: the referent is tracked when the program
    calls the weakref. Once stale."""
    parent = _Parent()
    m = _Child(parent)
    x = randn(3)
    g = deepvisor.compile(m)
    same_around(lambda: parent.cfg.update(s=5.0), g, m, x)
    assert deepvisor.stats(g)["captures"] == 2


_GC_SEEN = []


def _notes_the_collector(x):
    _GC_SEEN.append(gc.isenabled())
    return x + 1


def _raises_after_a_note(x):
    _GC_SEEN.append(gc.isenabled())
    raise ValueError("from the program")


def test_the_collector_is_paused_through_a_capture_and_restored():
    """A capture runs with Python's cyclic collector paused (a full
    collection in it walks the whole process) and leaves it as it was, also
    after a program that raises, and off when the program had it off."""
    _GC_SEEN.clear()
    deepvisor.compile(_notes_the_collector)(randn(3))
    assert _GC_SEEN[0] is False and gc.isenabled()
    with pytest.raises(ValueError, match="from the program"):
        deepvisor.compile(_raises_after_a_note)(randn(3))
    assert _GC_SEEN[1] is False and gc.isenabled()
    gc.disable()
    try:
        deepvisor.compile(_notes_the_collector)(randn(3))
        assert not gc.isenabled()
    finally:
        gc.enable()


def _env_scaled(x):
    return x * (2 if os.environ.get("DV_TEST_FLAG") == "1" else 3)


def _getenv_scaled(x):
    return x * (2 if os.getenv("DV_TEST_FLAG") == "1" else 3)


def _env_writer(x):
    os.environ["DV_TEST_WRITTEN"] = "1"
    return x + 1


@pytest.mark.parametrize("fn", [_env_scaled, _getenv_scaled])
def test_the_environment_a_program_reads_is_guarded(monkeypatch, fn):
    """os.environ reads (directly or through os.getenv, in the standard
    library's code) are checked; a write to it calls putenv, which a replay
    would not: that call runs eagerly."""
    monkeypatch.delenv("DV_TEST_FLAG", raising=False)
    x = randn(3)
    g = deepvisor.compile(fn)
    same(g, fn, x)
    same(g, fn, x)
    monkeypatch.setenv("DV_TEST_FLAG", "1")
    same(g, fn, x)
    same(g, fn, x)
    s = deepvisor.stats(g)
    assert s["captures"] == 2 and s["cache_hits"] == 2, s


def test_writing_the_environment_runs_eagerly(monkeypatch):
    monkeypatch.delenv("DV_TEST_WRITTEN", raising=False)
    g = deepvisor.compile(_env_writer)
    same(g, _env_writer, randn(3))
    assert os.environ["DV_TEST_WRITTEN"] == "1"
    s = deepvisor.stats(g)
    assert s["captures"] == 0 and s["eager_calls"] == 1, s
    assert any("putenv" in r for r in s["eager_reasons"]), s


def python_features(x, *rest, pair, batch, weights=None, **options):
    helper = Helper(options.get("k", 2.0))

    def inner(t, depth):
        return t if depth == 0 else inner(torch.tanh(t), depth - 1)

    ys = [helper.apply(t) for t in (x, *rest)]
    total = sum(y.sum(0) for y in ys)
    parts = {name: t * i for i, (name, t) in enumerate(zip(["a", "b"], [pair.a, pair.b]))}
    ordered = sorted(parts.items(), key=lambda kv: kv[0])
    mapped = list(map(torch.relu, [v for _, v in ordered]))
    n = int(np.prod(x.shape)) // x.shape[0]
    scaled = x.reshape(-1, n) * batch.scale + (weights if isinstance(weights, torch.Tensor) else 0)
    out = {"total": inner(total, 2), "mapped": tuple(mapped), "pair": Pair(scaled, getattr(batch, "x") * 2)}
    return out, [len(ys), n]


def test_python_features_give_one_graph():
    x, y, a, b = randn(3, 4), randn(3, 4, seed=1), randn(4, seed=2), randn(4, seed=3)
    batch = Batch(randn(2, 2, seed=4), 0.5)
    kwargs = dict(pair=Pair(a, b), batch=batch, weights=randn(4, seed=5), k=3.0)
    g = deepvisor.compile(python_features)
    for _ in range(3):
        out = same(g, python_features, x, y, **kwargs)
    assert isinstance(out[0]["pair"], Pair) and isinstance(out[1], list)
    s = deepvisor.stats(g)
    assert s["captures"] == 1 and s["cache_hits"] == 2 and s["eager_calls"] == 0
    # A new dataclass value and new tensors: no capture.
    kwargs["batch"] = Batch(randn(2, 2, seed=7), 0.5)
    same(g, python_features, x * 2, y, **kwargs)
    assert deepvisor.stats(g)["captures"] == 1
    kwargs["batch"] = Batch(randn(2, 2, seed=7), 0.25)  # a scale that the program read
    same(g, python_features, x, y, **kwargs)
    assert deepvisor.stats(g)["captures"] == 2


class Stack(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(5, 5) for _ in range(3)])
        self.heads = nn.ModuleDict({"a": nn.Linear(5, 2), "b": nn.Linear(5, 3)})
        self.seq = nn.Sequential(nn.ReLU(), nn.Linear(5, 5), nn.Tanh())

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x) + i
        x = self.seq(x)
        for name, child in self.named_children():
            if isinstance(child, nn.Sequential):
                x = x + child[1].bias
        outs = {k: head(x) for k, head in self.heads.items()}
        return tuple(map(lambda l: l(x), self.layers[:2])), outs


def test_module_containers_give_one_graph():
    m = on(Stack())
    g = deepvisor.compile(m)
    x = randn(2, 5)
    for _ in range(3):
        same(g, m, x)
    assert deepvisor.stats(g)["captures"] == 1
    m.layers.append(on(nn.Linear(5, 5)))
    same(g, m, x)
    del m.heads["b"]
    same(g, m, x)
    assert deepvisor.stats(g)["captures"] == 3


class Square(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * x

    @staticmethod
    def backward(ctx, grad):
        return grad


def test_autograd_function_and_interpolate():
    def f(x):
        y = Square.apply(x)
        return F.interpolate(y, scale_factor=2.0, mode="nearest")

    g = deepvisor.compile(f)
    x = randn(1, 2, 3, 3)
    for _ in range(2):
        same(g, f, x)
    assert deepvisor.stats(g)["captures"] == 1


def fib_like(x, n):
    return x if n <= 1 else fib_like(x * 0.5, n - 1) + fib_like(x, n - 2)


def test_recursion_decided_by_an_int():
    g = deepvisor.compile(fib_like)
    x = randn(4)
    for n in (4, 4, 5):
        same(g, fib_like, x, n)
    assert deepvisor.stats(g)["captures"] == 2


def test_returned_python_objects_are_fresh_each_call():
    def f(x):
        return {x * 2}, enumerate([x + 1, x - 1]), x.size(), [x.shape[0]]

    g = deepvisor.compile(f)
    x = randn(3, 2)
    g(x)
    for i in range(2):
        xs = randn(3, 2, seed=i + 1)
        s, e, size, lst = g(xs)
        assert isinstance(size, torch.Size) and size == xs.size()
        (only,) = list(s)
        assert_matches(only, xs * 2, tol)
        items = list(e)
        assert [k for k, _ in items] == [0, 1]
        assert_matches(items[0][1], xs + 1, tol)
        lst.append(7)  # a fresh list each call: mutating it changes nothing next time
    assert g(x)[3] == [3]
    assert deepvisor.stats(g)["captures"] == 1


# -- behaviour 6: Python side effects ------------------------------------------------

class Counter(nn.Module):
    def __init__(self):
        super().__init__()
        self.last = None
        self.calls = 0

    def forward(self, x, log):
        y = x * 2
        self.last = y          # an attribute store on self
        log.append(y.sum())    # an append to an argument list
        return y


def test_side_effects_are_replayed():
    m = on(Counter())
    g = deepvisor.compile(m)
    for i in range(3):
        x = randn(3, seed=i)
        log = []
        out = g(x, log)
        assert_matches(out, x * 2, tol)
        assert len(log) == 1 and torch.allclose(log[0], (x * 2).sum())
        assert m.last is out or torch.equal(m.last, out)
    assert deepvisor.stats(g)["cache_hits"] >= 1


RESULTS = []
LAST = None


def assigns_a_global(x):
    global LAST
    LAST = x + 1
    RESULTS.append(LAST)
    return LAST * 2


def test_a_global_assignment_is_replayed():
    g = deepvisor.compile(assigns_a_global)
    RESULTS.clear()
    for i in range(3):
        x = randn(2, seed=i)
        out = g(x)
        assert torch.allclose(LAST, x + 1) and torch.allclose(out, (x + 1) * 2)
    assert len(RESULTS) == 3
    s = deepvisor.stats(g)
    assert s["eager_calls"] + s["captures"] + s["cache_hits"] == 3


def test_a_counter_attribute_stays_correct():
    class Steps(nn.Module):
        def __init__(self):
            super().__init__()
            self.step = 0

        def forward(self, x):
            self.step += 1
            return x * self.step

    m = on(Steps())
    g = deepvisor.compile(m)
    x = randn(3)
    for i in range(1, 25):
        assert_matches(g(x), x * i, tol)
    assert m.step == 24


def test_guard_checks_do_not_touch_pythons_random_state():
    m = on(Outer())
    g = deepvisor.compile(m)
    x = randn(4, 6)
    g(x)
    random.seed(5)
    state = random.getstate()
    for _ in range(10):
        g(x)
    assert random.getstate() == state


def test_python_random_makes_the_call_eager():
    def f(x):
        return x * random.random()

    g = deepvisor.compile(f)
    x = randn(3)
    random.seed(1)
    out = g(x)
    random.seed(1)
    assert_matches(out, f(x), tol)
    random.seed(2)
    out = g(x)
    random.seed(2)
    assert_matches(out, f(x), tol)
    s = deepvisor.stats(g)
    assert s["eager_calls"] >= 1 and any("random" in r for r in s["eager_reasons"])


# -- behaviour 7: never break the program -------------------------------------------

def test_user_exceptions_propagate_and_nothing_is_cached():
    class Boom(Exception):
        pass

    def f(x, fail):
        y = x + 1
        if fail:
            raise Boom("no")
        return y

    g = deepvisor.compile(f)
    x = randn(3)
    with pytest.raises(Boom):
        g(x, True)
    assert deepvisor.stats(g)["versions"] == 0
    same(g, f, x, False)
    with pytest.raises(Boom):
        g(x, True)


def test_rng_ops_give_fresh_numbers_on_every_replay():
    def f(x):
        return x + torch.rand_like(x)

    g = deepvisor.compile(f)
    x = torch.zeros(1000, device=DEVICE)
    a, b, c = g(x), g(x), g(x)
    assert not torch.equal(b, c) and not torch.equal(a, b)
    assert deepvisor.stats(g)["cache_hits"] == 2


def run_in_threads(work, count=4):
    """Runs work(k) for k in range(count) in threads at once; raises the first error."""
    errors = []

    def guarded(k):
        try:
            with torch.no_grad():
                work(k)
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=guarded, args=(k,)) for k in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def test_threads_get_eager_results_and_capture_each_version_once():
    m = on(Outer())
    g = deepvisor.compile(m, dynamic=False)  # a version per shape (test_dynamic_shapes.py: one for all)
    shapes = [(2, 6), (3, 6), (5, 6), (7, 6), (1, 6), (4, 6)]

    def work(seed):
        for i in range(30):
            x = randn(*shapes[(seed + i) % len(shapes)], seed=seed * 100 + i)
            assert_matches(g(x), m(x), tol)

    run_in_threads(work)
    assert deepvisor.stats(g)["captures"] == len(shapes)


# -- the tracer's events ------------------------------------------------------------------

MONITORED = {"k": 2.0}


@pytest.mark.skipif(sys.version_info < (3, 12), reason="sys.monitoring came with Python 3.12")
def test_a_capture_frees_its_monitoring_tool_and_falls_back_when_none_is_free():
    def f(x):
        return x * MONITORED["k"]

    MONITORED["k"] = 2.0
    tools = [sys.monitoring.get_tool(i) for i in range(6)]
    g = deepvisor.compile(f)
    x = randn(3)
    same(g, f, x)
    assert [sys.monitoring.get_tool(i) for i in range(6)] == tools
    free = [i for i in range(6) if sys.monitoring.get_tool(i) is None]
    for i in free:
        sys.monitoring.use_tool_id(i, "test")
    try:  # the legacy trace function instead
        MONITORED["k"] = -1.0
        same(g, f, x)
        MONITORED["k"] = 4.0
        same(g, f, x)
    finally:
        for i in free:
            sys.monitoring.free_tool_id(i)
    assert deepvisor.stats(g)["captures"] == 3


GENERATED = {"scales": [1.0, 2.0], "bias": 0.5}


def _scaled(x):
    for s in GENERATED["scales"]:
        yield x * s + GENERATED["bias"]


def test_state_read_inside_generators_is_guarded():
    """A generator's frame starts with the value sent in on its stack (Python
    3.12 reads stack values at the compiler's depths)."""
    GENERATED.update(scales=[1.0, 2.0], bias=0.5)

    def with_expression(x):
        return sum(x * s + GENERATED["bias"] for s in GENERATED["scales"])

    def with_function(x):
        return sum(_scaled(x))

    for f in (with_expression, with_function):
        GENERATED["bias"] = 0.5
        g = deepvisor.compile(f)
        x = randn(4)
        same(g, f, x)
        same(g, f, x)
        assert deepvisor.stats(g)["captures"] == 1  # its guards hold on the next call
        GENERATED["bias"] = -2.0  # read inside the generator's frame only
        same(g, f, x)
        assert deepvisor.stats(g)["captures"] == 2


class KeyedConfig:
    """A config whose __getattr__ raises KeyError, not AttributeError, for a missing name."""

    def __init__(self, **values):
        self.__dict__["values"] = values

    def __getattr__(self, name):
        return self.__dict__["values"][name]


def test_a_config_whose_getattr_raises_key_error_is_captured_and_guarded():
    cfg = KeyedConfig(k=2.0)

    def f(x):
        return x * cfg.k

    g = deepvisor.compile(f)
    x = randn(4)
    same(g, f, x)
    same(g, f, x)
    cfg.values["k"] = -3.0
    same(g, f, x)
    assert deepvisor.stats(g)["captures"] == 2
    assert deepvisor.stats(g)["eager_calls"] == 0


def test_methods_replaced_on_the_object_or_its_class_are_seen():
    class Obj:
        def __init__(self):
            self.a = 1.25

        def scaled(self):
            return self.a * 2

    o = Obj()

    def f(x):
        return x + o.scaled()

    g = deepvisor.compile(f)
    x = randn(3)
    same(g, f, x)
    same(g, f, x)
    o.scaled = lambda: 3.0  # the instance's own attribute shadows the class's method
    same(g, f, x)
    del o.scaled
    same(g, f, x)
    Obj.scaled = lambda self: -1.0  # the class's method replaced
    same(g, f, x)
    assert deepvisor.stats(g)["captures"] == 3


def test_a_class_defined_by_exec_in_a_namespace_of_its_own_is_state():
    namespace = {"__name__": "not_an_imported_module"}
    exec("class K:\n    c = 0.75\ndef f(x):\n    return x + K.c\n", namespace)
    f = namespace["f"]
    g = deepvisor.compile(f)
    x = randn(3)
    same(g, f, x)
    namespace["K"].c = -2.0
    same(g, f, x)
    assert deepvisor.stats(g)["captures"] == 2


def test_writes_are_replayed_even_where_the_capture_wrote_the_value_already_there():
    class Holder:
        pass

    h = Holder()
    h.a = 0.5
    table = {"k": 0.5}

    def f(x):
        h.a = 0.5  # written by every call, never read
        table["k"] = 0.5
        return x * 2

    g = deepvisor.compile(f)
    x = randn(3)
    same(g, f, x)
    h.a, table["k"] = -2.0, -2.0  # changed between calls: the next call writes them back
    g(x)
    assert h.a == 0.5 and table["k"] == 0.5


def _replayed_values(g, x, reset, read, starts=(1.0, 1.0, 8.0, 1.0)):
    """read() after each call of g, with reset(start) before it: a plan made
    for a value that comes back replays its writes."""
    values = []
    for start in starts:
        reset(start)
        g(x)
        values.append(read())
    return values


def test_writes_to_the_programs_class_attributes_are_replayed():
    class Counter:
        halves = 1.0

    def f(x):
        Counter.halves = Counter.halves * 0.5
        return x * 2

    def reset(v):
        Counter.halves = v

    g = deepvisor.compile(f)
    values = _replayed_values(g, randn(3), reset, lambda: Counter.halves)
    assert values == [0.5, 0.5, 4.0, 0.5]


def test_an_objects_class_or_dict_reassigned_is_seen():
    """Assigning __class__ or __dict__ changes no dict or type that 3.12's
    watchers cover. Once stale there."""
    class Obj:
        a = 1.0

    class Other:
        a = 5.0

    o = Obj()
    o.b = 2.0

    def f(x):
        return x * (1.0 if isinstance(o, Obj) else 2.0) * o.a * o.b

    g = deepvisor.compile(f)
    x = randn(3)
    changes = [lambda: None, lambda: setattr(o, "__class__", Other), lambda: setattr(o, "__dict__", {"b": 7.0}),
               lambda: setattr(o, "b", 3.0), lambda: setattr(o, "__class__", Obj)]
    for change in changes:
        change()
        same(g, f, x)
        same(g, f, x)


def test_writes_to_slots_are_replayed():
    class Slotted:
        __slots__ = ("p",)

    class Mixed:  # slots and a __dict__
        __slots__ = ("p", "__dict__")

    s, m = Slotted(), Mixed()

    def f(x):
        s.p = s.p * 0.5
        m.p = m.p * 0.5
        m.q = m.p + 1.0
        return x * 2

    def reset(v):
        s.p = m.p = v

    g = deepvisor.compile(f)
    values = _replayed_values(g, randn(3), reset, lambda: (s.p, m.p, m.q))
    assert values == [(0.5, 0.5, 1.5), (0.5, 0.5, 1.5), (4.0, 4.0, 5.0), (0.5, 0.5, 1.5)]


def test_writes_to_a_functions_attributes_and_defaults_are_replayed():
    def helper(a=1.0):
        return a

    helper.calls = 0.0

    def f(x):
        helper.calls = helper.calls + 1.0
        helper.__defaults__ = (helper.calls,)
        return x * 2

    def reset(v):
        helper.calls, helper.__defaults__ = v, (v,)

    g = deepvisor.compile(f)
    values = _replayed_values(g, randn(3), reset, lambda: (helper.calls, helper()))
    assert values == [(2.0, 2.0), (2.0, 2.0), (9.0, 9.0), (2.0, 2.0)]


def test_writes_to_the_programs_module_are_replayed():
    config = types.ModuleType("dv_test_config")
    config.__file__ = "/nonexistent/dv_test_config.py"  # the user's module, not a library's
    config.scale = 1.0

    def f(x):
        config.scale = config.scale * 0.5
        return x * config.scale

    def reset(v):
        config.scale = v

    g = deepvisor.compile(f)
    values = _replayed_values(g, randn(3), reset, lambda: config.scale)
    assert values == [0.5, 0.5, 4.0, 0.5]


def test_a_write_that_a_replay_cannot_repeat_runs_eagerly():
    w = randn(3)

    class A:
        pass

    class B:
        pass

    o = A()

    def c_attribute(x):
        w.requires_grad = False  # a tensor's C-level attribute, in no snapshot
        return x + w

    def changes_class(x):
        o.__class__ = B
        return x + 1

    for fn in (c_attribute, changes_class):
        g = deepvisor.compile(fn)
        same(g, fn, w)
        assert deepvisor.stats(g)["eager_calls"] == 1
    assert type(o) is B


def test_an_ordered_dicts_own_order_is_read_and_written():
    order = collections.OrderedDict(a=1.0, b=2.0)

    def reads(x):
        return x.relu() if list(order.values())[0] > 1.0 else x - 1

    g = deepvisor.compile(reads)
    x = randn(5)
    same(g, reads, x)
    order.move_to_end("a")  # the dict's storage order stays; the OrderedDict's changes
    same(g, reads, x)

    order.move_to_end("b")  # a, b again

    def rotates(x):
        order.move_to_end(next(iter(order)))
        return x * 2

    g = deepvisor.compile(rotates)
    seen = []
    for _ in range(4):
        g(x)
        seen.append(list(order))
    assert seen == [["b", "a"], ["a", "b"], ["b", "a"], ["a", "b"]]


# -- Python attributes set on tensors ----------------------------------------------------

def test_python_attributes_read_from_tensors_are_guarded():
    def direct(t):
        return t * t.scale

    def through_getattr(t):
        return t * getattr(t, "scale", 1.0)

    def through_hasattr(t):
        return t * (t.scale if hasattr(t, "scale") else 1.0)

    for f in (direct, through_getattr, through_hasattr):
        g = deepvisor.compile(f)
        t = randn(3)
        t.scale = 2.0
        same(g, f, t)
        same(g, f, t)
        t.scale = 5.0
        same(g, f, t)
        u = randn(3)
        u.scale = -1.0
        same(g, f, u)
        if f is not direct:
            same(g, f, randn(3))  # no attribute at all
    w = torch.nn.Parameter(torch.ones(3, device=DEVICE))
    w.factor = 2.0

    def with_parameter(x):
        return x * w * w.factor

    g = deepvisor.compile(with_parameter)
    x = randn(3)
    same(g, with_parameter, x)
    w.factor = 7.0
    same(g, with_parameter, x)


def test_python_attributes_set_on_tensors_are_replayed():
    def count(t):
        t.seen = getattr(t, "seen", 0) + 1
        return t * 2

    g = deepvisor.compile(count)
    t = randn(3)
    for _ in range(3):
        g(t)
    assert t.seen == 3
    u = randn(3)
    g(u)
    assert u.seen == 1

    def tag(x):
        y = x * 2
        y.meta = "made here"
        y.mask = x > 0  # a tensor the plan computes
        return y

    g = deepvisor.compile(tag)
    x = randn(5)
    for _ in range(3):
        out = g(x)
        assert out.meta == "made here"
        assert torch.equal(out.mask, x > 0)
    assert deepvisor.stats(g)["captures"] == 1


def test_the_programs_own_trace_function_comes_back_after_a_capture():
    events = []

    def tracer(frame, event, arg):
        events.append(event)

    before = sys.gettrace()
    sys.settrace(tracer)
    try:
        g = deepvisor.compile(lambda x: x * MONITORED["k"])
        x = randn(3)
        g(x)
        assert sys.gettrace() is tracer
        events.clear()
        (lambda: None)()
        assert "call" in events
    finally:
        sys.settrace(before)


# -- compiled functions that call compiled functions -------------------------------------

NESTED = {"a": 2.0, "b": 3.0}


def _nested_inner(x):
    return x * NESTED["a"]


def test_a_compiled_function_called_in_a_capture_is_part_of_it():
    NESTED.update(a=2.0, b=3.0)
    inner = deepvisor.compile(_nested_inner)

    def outer(x):
        return inner(x) + NESTED["b"]

    def eager(x):
        return _nested_inner(x) + NESTED["b"]

    g = deepvisor.compile(outer)
    x = randn(5)
    same(g, eager, x)
    same(g, eager, x)
    NESTED["a"] = 5.0  # read by the inner function only
    same(g, eager, x)
    NESTED["b"] = -1.0
    same(g, eager, x)
    assert deepvisor.stats(g)["captures"] == 3
    # The inner function captured nothing of its own: it ran in the outer captures.
    assert deepvisor.stats(inner)["captures"] == 0
    assert deepvisor.stats(inner)["inlined_calls"] == 3


def test_a_compiled_function_with_plans_of_its_own_is_still_part_of_a_capture():
    NESTED.update(a=2.0, b=3.0)
    inner = deepvisor.compile(_nested_inner)
    x = randn(5)
    same(inner, _nested_inner, x)  # its own plan, replayed below only outside the capture

    def outer(x):
        return inner(x) * NESTED["b"]

    g = deepvisor.compile(outer)
    same(g, outer, x)
    NESTED["a"] = -4.0
    same(g, outer, x)
    same(inner, _nested_inner, x)
    assert deepvisor.stats(g)["captures"] == 2


def test_a_compiled_module_called_by_a_compiled_function_follows_its_attributes():
    class Scale(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.k = 2.0

        def forward(self, x):
            return x * self.k

    m = on(Scale())
    inner = deepvisor.compile(m)

    def outer(x):
        return inner(x).relu()

    g = deepvisor.compile(outer)
    x = randn(6)
    same(g, outer, x)
    m.k = -3.0
    same(g, outer, x)
    assert deepvisor.stats(g)["captures"] == 2

    method = deepvisor.compile(m.forward)  # a bound method: what it reads of its object too

    def outer_method(x):
        return method(x) - 1

    g2 = deepvisor.compile(outer_method)
    same(g2, outer_method, x)
    m.k = 0.5
    same(g2, outer_method, x)
    assert deepvisor.stats(g2)["captures"] == 2


def test_a_compiled_bound_method_follows_its_object():
    class Holder:
        def __init__(self):
            self.k = 2.0
            self.table = {"shift": 1.0}

        def apply(self, x):
            return x * self.k + self.table["shift"]

    h = Holder()
    g = deepvisor.compile(h.apply)
    x = randn(4)
    same(g, h.apply, x)
    h.k = -1.5
    same(g, h.apply, x)
    h.table["shift"] = 7.0
    same(g, h.apply, x)
    assert deepvisor.stats(g)["captures"] == 3


def test_an_exception_in_an_inlined_compiled_function_reaches_the_caller():
    inner = deepvisor.compile(lambda x: x.view(-1, 7))

    def outer(x):
        try:
            return inner(x)
        except RuntimeError:
            return x + 1

    g = deepvisor.compile(outer)
    x = randn(5)
    same(g, outer, x)
    same(g, outer, x)


# -- interface --------------------------------------------------------------------------

def test_explain_lists_readable_guards():
    m = on(Issue())
    g = deepvisor.compile(m)
    g(randn(2, 8))
    text = deepvisor.explain(g)
    assert "self.use_relu is True" in text
    assert "self.scale == 2.0" in text
    assert "x: torch.float32 (2, 8)" in text and f"on {DEVICE}" in text


def test_reset_drops_plans():
    g = deepvisor.compile(lambda x: x * 3)
    g(randn(2))
    deepvisor.reset()
    g(randn(2))
    assert deepvisor.stats(g)["captures"] == 2


_PEAK_MEMORY_SCRIPT = """
import resource, sys, torch
import deepvisor
def step(x):
    y = (x * 1.01).relu()
    def read():  # a closure: y lives in a cell made during the run
        return y
    return read() + 0.5
def fn(x):
    for _ in range(24):
        x = step(x)
    return x.sum()
x = torch.randn(16 * 2**20)
f = fn if sys.argv[1] == "eager" else deepvisor.compile(fn, dynamic=sys.argv[1] == "dynamic")
f(x)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_a_capture_lets_the_runs_intermediates_die(mode):
    """The recorders watch the run's tensors weakly, and the state monitor
    keeps only the ids of closure cells the run made: a chain of 72 ops over
    a 64 MiB tensor, each step's result in a cell, peaks within a few
    tensors of an eager call's process, not with every intermediate held
    (4.6 GB more before)."""
    import subprocess

    def peak_mib(m):
        r = subprocess.run([sys.executable, "-c", _PEAK_MEMORY_SCRIPT, m], capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr
        return float(r.stdout.split()[-1])

    eager, captured = peak_mib("eager"), peak_mib(mode)
    assert captured < eager + 8 * 64, (eager, captured)


class Scaled:
    """A model whose scale (a float, guarded by value) the caller changes."""

    def __init__(self):
        self.scale = 1.0

    def __call__(self, x):
        return (x * self.scale).relu() + 1


def test_plans_past_the_limit_evict_the_least_recently_used(monkeypatch):
    """A working set that moves on (scales 0..5, then 6..11) is held by
    evicting the plans no longer used; no call runs eagerly."""
    import deepvisor._compiled as compiled
    monkeypatch.setattr(compiled, "MAX_PLANS", 4)
    monkeypatch.setattr(compiled, "THRASH_CALLS", 16)
    m = Scaled()
    g = deepvisor.compile(m)
    x = randn(3, 5)
    for phase in (range(0, 3), range(3, 6), range(6, 9)):
        for _ in range(8):  # each phase's three scales, called over and over
            for k in phase:
                m.scale = float(k)
                torch.testing.assert_close(g(x), m(x))
    s = deepvisor.stats(g)
    assert s["eager_calls"] == 0, s["eager_reasons"]
    assert s["captures"] == 9 and s["graphs"] == 4
    assert s["evictions"] == 5
    assert s["cache_hits"] == 9 * 8 - 9


def test_versions_that_change_faster_than_the_plans_held_run_eagerly(monkeypatch):
    """Scales cycling over more values than the plans held: every call would
    evict and capture; once as many plans were evicted within THRASH_CALLS
    calls, misses run eagerly (hits still replay), and capturing resumes
    when evictions have aged out."""
    import deepvisor._compiled as compiled
    monkeypatch.setattr(compiled, "MAX_PLANS", 3)
    monkeypatch.setattr(compiled, "THRASH_CALLS", 12)
    m = Scaled()
    g = deepvisor.compile(m)
    x = randn(3, 5)
    for call in range(60):
        m.scale = float(call % 5)
        torch.testing.assert_close(g(x), m(x))
    s = deepvisor.stats(g)
    assert s["graphs"] == 3
    assert s["eager_calls"] > 0 and any("change faster" in r for r in s["eager_reasons"])
    assert s["evictions"] >= 3 and s["captures"] < 30  # never a capture per call


def test_log_prints_recompiles(capsys, monkeypatch):
    monkeypatch.setenv("DEEPVISOR_LOG", "recompiles,guards")
    m = on(Issue())
    g = deepvisor.compile(m)
    g(randn(2, 8))
    m.scale = 5.0
    g(randn(2, 8))
    err = capsys.readouterr().err
    assert "deepvisor[recompiles]" in err and "self.scale" in err
    assert "deepvisor[guards]" in err


# -- global state: precision settings, the default device, torch function modes ----

def _set_backend_flag(path, value):
    """Sets torch.backends.<path> (dotted) to `value`; returns its old value."""
    *owner, name = path.split(".")
    obj = torch.backends
    for part in owner:
        obj = getattr(obj, part)
    old = getattr(obj, name)
    setattr(obj, name, value)
    return old


@pytest.fixture
def backend_flags():
    """Sets torch.backends flags for a test and puts every one back after it."""
    saved = []
    yield lambda path, value: saved.append((path, _set_backend_flag(path, value)))
    for path, old in reversed(saved):
        _set_backend_flag(path, old)


@pytest.mark.parametrize("path, value, reason", [
    ("cudnn.conv.fp32_precision", "ieee", "cudnn.conv.fp32_precision"),
    ("cudnn.allow_tf32", False, "cudnn.conv.fp32_precision"),
    ("cuda.matmul.fp32_precision", "tf32", "cuda.matmul.fp32_precision"),
    ("cuda.matmul.allow_tf32", True, "cuda.matmul.fp32_precision"),
    ("mkldnn.matmul.fp32_precision", "bf16", "mkldnn.matmul.fp32_precision"),
    ("cuda.matmul.allow_bf16_reduced_precision_reduction", False, "allow_bf16_reduced_precision_reduction"),
    ("cuda.matmul.allow_fp16_reduced_precision_reduction", False, "allow_fp16_reduced_precision_reduction"),
    ("cudnn.deterministic", True, "cudnn.deterministic"),
    ("cudnn.enabled", False, "cudnn.enabled"),
    ("cudnn.benchmark", True, "cudnn.benchmark"),
    ("mkldnn.enabled", False, "mkldnn.enabled"),
])
def test_a_precision_setting_changed_between_calls_is_a_new_plan(backend_flags, capsys, monkeypatch, path, value,
                                                                 reason):
    """A plan's library calls (cuBLAS, cuDNN, oneDNN) keep the precision they
    were captured under, so a change of ATen's precision settings is a guard
    miss, named in the log; set with the per-op API (fp32_precision) or the
    legacy flags. (Under TF32 or bf16 the plan and eager may pick different
    kernels: compared at that precision.)"""
    monkeypatch.setenv("DEEPVISOR_LOG", "recompiles")
    m = on(Issue())
    x = randn(2, 8)
    g = deepvisor.compile(m)
    same(g, m, x)
    same(g, m, x)
    backend_flags(path, value)
    for _ in range(2):
        torch.testing.assert_close(g(x), m(x), rtol=1e-2, atol=1e-2)
    s = deepvisor.stats(g)
    assert s["captures"] == 2 and s["cache_hits"] == 2 and s["eager_calls"] == 0, s
    assert reason in capsys.readouterr().err


def _attention(q, k, v):
    return torch.nn.functional.scaled_dot_product_attention(q, k, v) * 2


@pytest.mark.parametrize("backend", ["MATH", "EFFICIENT_ATTENTION"])
def test_the_attention_backends_allowed_are_guarded(capsys, monkeypatch, backend):
    """A capture records the attention kernel eager chose (flash, efficient,
    math's ops) under the backends allowed; with others allowed the plan
    would still call it. So a change is a new version: with the math backend
    alone both compute the same; with one that cannot run these inputs (the
    efficient kernel on the CPU) both raise the same error."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    monkeypatch.setenv("DEEPVISOR_LOG", "recompiles")
    q, k, v = (randn(2, 3, 16, 8, seed=s) for s in range(3))
    g = deepvisor.compile(_attention)
    same(g, _attention, q, k, v)
    same(g, _attention, q, k, v)
    with sdpa_kernel(getattr(SDPBackend, backend)):
        try:
            want = _attention(q, k, v)
        except RuntimeError as e:
            assert "No viable backend" in str(e)
            with pytest.raises(RuntimeError, match="No viable backend"):
                g(q, k, v)
            runs = False
        else:
            torch.testing.assert_close(g(q, k, v), want, rtol=1e-5, atol=1e-5)
            runs = True
    same(g, _attention, q, k, v)
    s = deepvisor.stats(g)
    # (a capture that raises, as eager does, leaves no plan)
    assert s["guard_misses"] == 1 and s["captures"] == 1 + runs and s["cache_hits"] == 2, s
    assert s["eager_calls"] == 0, s
    assert "scaled_dot_product_attention backends" in capsys.readouterr().err


def test_conv_and_rnn_precisions_that_differ_still_compile(backend_flags):
    """PyTorch's own legacy getter (cudnn.allow_tf32) raises once conv and rnn
    precisions differ; the guards read each one, so the program still
    compiles and stays one plan."""
    backend_flags("cudnn.conv.fp32_precision", "ieee")
    with pytest.raises(RuntimeError):
        torch.backends.cudnn.allow_tf32  # noqa: B018  (what the guards must not call)
    m = on(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))
    x = randn(2, 3, 9, 9)
    g = deepvisor.compile(m)
    same(g, m, x)
    same(g, m, x)
    s = deepvisor.stats(g)
    assert s["captures"] == 1 and s["cache_hits"] == 1 and s["eager_calls"] == 0, s


def _factories(x):
    return x + torch.ones(3), torch.arange(3)


@pytest.fixture
def default_device():
    """Sets torch's default device for a test; none again after it."""
    yield torch.set_default_device
    torch.set_default_device(None)


def test_the_default_device_is_guarded(default_device):
    """Factories without a device run on the default device: a plan holds the
    one they ran on, so a new default is a new version. On the meta device
    (which plans do not support) the call runs eagerly and its factories'
    results are on meta, as eager's are; they were on the CPU before. The
    first default again, set for a region, is the first plan's state."""
    x = randn(3)
    g = deepvisor.compile(_factories)
    default_device(DEVICE)
    same(g, _factories, x)
    same(g, _factories, x)
    assert deepvisor.stats(g)["captures"] == 1
    default_device("meta")
    y = torch.empty(3, device="meta")
    got, want = g(y), _factories(y)
    assert [t.device for t in got] == [t.device for t in want] == [torch.device("meta")] * 2
    default_device(None)
    with torch.device(DEVICE):  # the same default, set for a region: a version of its own too
        same(g, _factories, x)
        same(g, _factories, x)
    s = deepvisor.stats(g)
    assert s["captures"] == 1 and s["cache_hits"] == 3 and s["eager_calls"] == 1, s


def _factories_on_the_input_device(x):
    return x + torch.ones(3, device=x.device), torch.arange(3, device=x.device)


class _CountingMode(torch.overrides.TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


def test_a_torch_function_mode_makes_the_call_eager():
    """A user's torch function mode sees every torch call; a plan's replays
    would call none, so the calls under it run eagerly (and the mode sees
    each), while the calls outside it keep their plan."""
    x = randn(3)
    g = deepvisor.compile(_factories_on_the_input_device)
    same(g, _factories_on_the_input_device, x)
    same(g, _factories_on_the_input_device, x)
    mode = _CountingMode()
    with mode:
        same(g, _factories_on_the_input_device, x)
        seen = mode.calls  # g's call and the check's eager one: the mode saw the same calls in each
        same(g, _factories_on_the_input_device, x)
    assert seen > 0 and seen % 2 == 0 and mode.calls == 2 * seen
    same(g, _factories_on_the_input_device, x)
    s = deepvisor.stats(g)
    assert s["captures"] == 1 and s["cache_hits"] == 2 and s["eager_calls"] == 2, s
    assert any("torch function mode is active (_CountingMode)" in r for r in s["eager_reasons"]), s


class _Cfg:
    pass


WIDE_CFG = _Cfg()


def _wide_function():
    """A function whose attribute read needs an EXTENDED_ARG prefix (more than
    256 names), so the tracer must find the instruction behind the prefix."""
    names = [f"n{i}" for i in range(300)]
    body = "\n    ".join(f"{n} = 1" for n in names)
    # Globals named n0..n299 make co_names long; the attribute name comes last.
    src = ("def wide(x):\n    " + "\n    ".join(f"_ = WIDE_CFG.{n}" for n in names) +
           "\n    return x * WIDE_CFG.factor\n")
    for n in names:
        setattr(WIDE_CFG, n, 0)
    WIDE_CFG.factor = 2.0
    ns = {"WIDE_CFG": WIDE_CFG}
    exec(compile(src, "<wide>", "exec"), ns)
    del body
    return ns["wide"]


def test_instructions_behind_extended_args_are_seen():
    wide = _wide_function()
    import dis
    assert any(i.opname == "EXTENDED_ARG" for i in dis.get_instructions(wide))
    g = deepvisor.compile(wide)
    x = randn(3)
    same(g, wide, x)
    WIDE_CFG.factor = 5.0
    same(g, wide, x)
    WIDE_CFG.n299 = 7  # read, though unused
    same(g, wide, x)
    assert deepvisor.stats(g)["captures"] == 3


# -- behaviour 4: decisions on tensor data -------------------------------------------

def branchy(x):
    h = torch.sin(x) * 2
    if h.sum() > 0:
        return h + 1
    return h - 1


def test_a_data_decision_gives_two_versions_each_captured_once():
    g = deepvisor.compile(branchy)
    pos, neg = full((5,), 0.5), full((5,), -0.5)
    same(g, branchy, pos)
    same(g, branchy, neg)
    for i in range(10):
        same(g, branchy, (pos if i % 2 else neg) * (1 + i / 10))
    s = deepvisor.stats(g)
    assert s["captures"] == 2 and s["graphs"] == 1 and s["versions"] == 2 and s["eager_calls"] == 0
    assert s["cache_hits"] == 10
    assert "test_capture.py" in deepvisor.explain(g)  # the decision's site


def mutate_then_decide(x):
    x.add_(1)
    if x.sum() > 0:
        return x * 2
    return x * 3


def test_ops_before_a_decision_run_once():
    g = deepvisor.compile(mutate_then_decide)
    for start in (0.5, -5.0, 0.5, -5.0, 0.7):
        a, b = full((4,), start), full((4,), start)
        out = g(a)
        assert_matches(out, mutate_then_decide(b), tol)
        assert torch.equal(a, b)  # the input was incremented exactly once
    assert deepvisor.stats(g)["captures"] == 2


def test_tolist_and_equal_are_decisions():
    def f(x, y):
        n = x.argmax().tolist()
        z = x * n
        return z + 1 if torch.equal(x, y) else z - 1

    g = deepvisor.compile(f)
    x = tensor([0.1, 0.9, 0.3])
    same(g, f, x, x.clone())
    same(g, f, x, x + 1)
    same(g, f, tensor([0.9, 0.1, 0.2]), x)
    same(g, f, x * 2, x * 2)  # same outcomes as the first call: no capture
    s = deepvisor.stats(g)
    assert s["captures"] == 3 and s["cache_hits"] == 1 and s["eager_calls"] == 0


def test_returned_views_of_a_value_made_before_a_decision_select_what_eager_does():
    """The last segment returns views of a value an earlier segment made
    (x.t() * 2 keeps the transposed layout in eager). The runtime gave the
    bases of returned views the capture's layout only where they were not
    graph inputs, as the user's inputs are guarded; an earlier segment's
    result came in the layout its kernel wrote (row-major), and the view
    picked other elements: a replay returned wrong values. (Found by the op
    fuzzer's nonzero statements.)"""
    def f(x):
        v = x.t() * 2
        if v.sum() > -100:
            return v.select(1, 0), v, v.as_strided((2, 2), (1, 2), 1)
        return v, v, v

    g = deepvisor.compile(f)
    x = torch.randn(2, 5, generator=torch.Generator().manual_seed(0))
    for _ in range(3):
        same(g, f, x)
    assert deepvisor.stats(g)["cache_hits"] == 2


def test_versions_per_decision_site_are_bounded(monkeypatch):
    from deepvisor import _compiled
    monkeypatch.setattr(_compiled, "MAX_VERSIONS", 3)

    def f(x):
        return x * int(x.sum())

    g = deepvisor.compile(f)
    for i in range(6):
        same(g, f, full((2,), float(i)))
    s = deepvisor.stats(g)
    assert s["captures"] == 3 and s["eager_calls"] == 3
    assert any("took more than 3 values" in r for r in s["eager_reasons"])


def scale_by_mean(x, y):
    return x * float(y.mean())


def item_plus_one(x):
    return x * (x.sum().item() + 1) - x.max().item() / 2


def test_escaped_numbers_that_only_feed_tensor_ops_need_no_versions():
    for fn, make in ((scale_by_mean, lambda i: (randn(4, 3, seed=i), randn(5, seed=i + 50))),
                     (item_plus_one, lambda i: (randn(6, seed=i),))):
        g = deepvisor.compile(fn)
        for i in range(6):
            same(g, fn, *make(i))
        s = deepvisor.stats(g)
        assert s["captures"] == 1 and s["cache_hits"] == 5 and s["versions"] == 1, (fn.__name__, s)


def test_an_escaped_number_that_decides_is_a_version():
    def f(x):
        s = float(x.sum())
        return x * s if s > 0 else x - s  # the comparison needs the value

    g = deepvisor.compile(f)
    for v in (1.0, 1.0, -1.0, -1.0):
        same(g, f, full((3,), v))
    s = deepvisor.stats(g)
    assert s["captures"] == 2 and s["cache_hits"] == 2


def test_a_comparison_of_an_escaped_number_decides_on_its_bool():
    """`if loss.item() > 0.5:` needs which side the number is on, not the
    number: the comparison (of the numbers' tensors, in the graph) is the
    decision, so new numbers on a side seen before replay. Before, every new
    number was a version, and past DEEPVISOR_MAX_VERSIONS the call ran
    eagerly. Chained comparisons, two escaped numbers, ints, Python
    arithmetic before the comparison, and a number also used as a value."""
    def one_side(x):
        if x.sum().item() > 0:
            return x * 2
        return x - 1

    def chained(x):
        s = x.sum().item() * 2 + 1
        return x * 3 if 0.5 < s <= 3 else x - 1

    def two_numbers(x):
        return x + 1 if float(x.max()) >= float(x.min()) * -1.5 else x - 1

    def ints(x):  # (ints from -5 to 256 are shared objects, never escaped numbers: always versions)
        return x * 2 if int((x.abs() * 1000).long().sum()) + 100000 > 107000 else x

    def also_a_value(x):
        s = x.mean().item()
        return x * s if s > 0 else x - s

    def negated(x):  # -s stays symbolic too: as a value, and compared
        s = -x.sum().item()
        return x * -float(x.max()) if s < -0.5 else x - 1

    def negated_int(x):
        return x * 2 if -int((x.abs() * 1000).long().sum()) + 100000 < 93000 else x

    for fn, versions in ((one_side, 2), (chained, 3), (two_numbers, 2), (ints, 2), (also_a_value, 2), (negated, 2),
                         (negated_int, 2)):
        g = deepvisor.compile(fn)
        for seed in range(12):
            same(g, fn, randn(9, seed=seed))
        s = deepvisor.stats(g)
        assert s["eager_calls"] == 0 and s["captures"] <= versions, (fn.__name__, s)


def test_max_of_a_tensor_and_a_number():
    def f(x):
        return x / max(x.abs().sum(), 1e-8)

    g = deepvisor.compile(f)
    for i in range(3):
        same(g, f, randn(5, seed=i))
    assert deepvisor.stats(g)["captures"] == 1


class OutputLike(collections.OrderedDict):
    """Like transformers' ModelOutput: made in forward, and a generator
    expression in its __init__ reads `self` through a closure cell."""

    def __init__(self, **fields):
        super().__init__(**fields)
        self.complete = all(self[k] is not None for k in fields)


def makes_an_output(x):
    scale = x.abs().max()

    def normalize(t):
        return t / scale  # `scale` reaches this function through a cell made by the run

    return OutputLike(hidden=normalize(x * 2), pooled=normalize(x).sum(0))


def test_objects_reached_through_cells_made_by_the_run_are_fresh():
    g = deepvisor.compile(makes_an_output)
    for i in range(3):
        x = randn(4, 3, seed=i)
        out = g(x)
        assert isinstance(out, OutputLike) and out.complete
        assert_matches(dict(out), dict(makes_an_output(x)), tol)
    s = deepvisor.stats(g)
    assert s["captures"] == 1 and s["cache_hits"] == 2


def test_views_handed_to_the_next_segment_are_read_in_any_layout():
    """DeBERTa's attention: the chunks of a permuted projection cross a
    decision (a 0-d tensor used as a slice bound). Kernels write them
    contiguous; the next segment was compiled for the strided layout eager
    gave them, and read the wrong elements at batch > 1. (DeBERTa's bound,
    torch.tensor(5), is a constant now, folded: this one is computed from
    the projection, so that it stays a decision and the chunks' ops run
    before it.)"""
    torch.manual_seed(0)
    w, table, p = torch.randn(64, 192), torch.randn(1024, 64), torch.randn(64, 64)

    def fn(h):
        q, k, _ = (h @ w).view(3, 5, 2, 96).permute(0, 2, 1, 3).chunk(3, dim=-1)
        span = torch.ones_like(q[0, 0, 0, 0], dtype=torch.long) * 5  # (q's ops run before the decision)
        rel = table[512 - span: 512 + span].unsqueeze(0)
        pos = (rel @ p).view(1, 10, 2, 32).permute(0, 2, 1, 3)
        return torch.matmul(q, pos.transpose(-1, -2)), torch.matmul(k * 2, pos.transpose(-1, -2))

    g = deepvisor.compile(fn)
    for _ in range(3):
        h = torch.randn(3, 5, 64)
        for got, want in zip(g(h), fn(h)):
            torch.testing.assert_close(got, want)
    s = deepvisor.stats(g)
    assert s["captures"] == 1 and s["eager_calls"] == 0, s
    assert len(g.plans()[0].path.segments) > 1  # the views did cross a decision


def test_ops_a_decision_does_not_read_run_after_it():
    """BERT's attention mask: a decision on an argument alone, recorded
    after the embeddings. Its segment holds just the ops it reads; the
    embeddings run after it, in the segment of the rest (no activations
    handed from one segment to the next). A second decision on a value made
    after the first takes only its own ops too; the op that neither reads
    runs last. Both outcomes of the first give eager's results."""
    w = randn(8, 8, seed=3)

    def fn(x, mask):
        h = torch.tanh(x @ w)          # the embeddings: no decision reads them
        late = torch.sigmoid(x) * 3    # read by neither decision
        if mask.all():
            h = h * 2
        if (mask.sum() > 4).item():
            h = h + 1
        return h + late

    g = deepvisor.compile(fn)
    for trial in range(4):
        x = randn(5, 8, seed=trial)
        mask = torch.ones(5, 8, dtype=torch.bool, device=DEVICE)
        if trial >= 2:
            mask[0, trial] = False
        torch.testing.assert_close(g(x, mask), fn(x, mask))
    s = deepvisor.stats(g)
    assert s["captures"] == 2 and s["eager_calls"] == 0, s
    for plan in g.plans():
        first, second, last = (seg.text for seg in plan.path.segments)
        assert "aten::all" in first and not any(op in first for op in ("tanh", "sigmoid", "mm")), first
        assert "aten::sum" in second and not any(op in second for op in ("tanh", "sigmoid", "mm")), second
        assert all(op in last for op in ("tanh", "sigmoid", "mm")), last


def test_random_ops_moved_after_a_decision_draw_what_eager_draws():
    """The draws recorded before a decision that does not read them run
    after it, in their order: with the same seed, both outcomes give eager's
    numbers."""
    def fn(x):
        a = torch.rand(4, device=x.device)
        b = torch.randn(4, device=x.device)
        if (x.sum() > 0).item():
            return a + x + torch.rand(4, device=x.device), b
        return a - x, b

    g = deepvisor.compile(fn)
    for trial in range(4):
        x = randn(4, seed=trial) + (5 if trial % 2 else -5)
        torch.manual_seed(trial)
        want = fn(x)
        torch.manual_seed(trial)
        for got, w in zip(g(x), want):
            assert torch.equal(got, w), (trial, got, w)
    assert deepvisor.stats(g)["captures"] == 2


def _draws_then_masks(x):
    a = torch.rand(5, device=x.device)                       # a draw the decision does not need
    picked = x[torch.rand(x.shape[0], device=x.device) > 0.5]  # a decision on a draw (its sizes)
    return a, picked * 2, torch.rand(3, device=x.device), torch.rand_like(picked)


def _samples(x):
    noise = torch.randn(4, device=x.device)
    token = torch.multinomial(torch.softmax(x, -1), 1)       # sampling, then Python reads the token
    if token.item() == 0:
        return x + noise, torch.rand(2, device=x.device)
    return x - noise, token


@pytest.mark.parametrize("fn", [_draws_then_masks, _samples], ids=lambda f: f.__name__.strip("_"))
def test_a_decision_on_random_draws_replays_what_eager_draws(fn):
    """A decision that depends on a draw keeps every earlier draw ahead of
    it (eager's order), and where a replay goes on to run the program again
    (a capture of a new outcome, a later plan) the generators are put back
    first: the capture draws what the replay drew, and its path is the
    replay's outcome's. Before, a hit drew in another order, and a capture
    that drew another count was grafted under the replay's (a plan compiled
    for 3 rows given 5)."""
    g = deepvisor.compile(fn)
    x = randn(9, 4, seed=0) if fn is _draws_then_masks else randn(4, seed=0)
    for trial in range(12):
        torch.manual_seed(trial)
        want = fn(x)
        torch.manual_seed(trial)
        got = g(x)
        for w, o in zip(want, got):
            assert w.shape == o.shape and torch.equal(w, o), (trial, w, o)
    s = deepvisor.stats(g)
    assert s["eager_calls"] == 0 and s["cache_hits"] >= 6, s


class _FailingSegment:
    """Stands in for a segment's executor that fails (a kernel NVRTC rejects, say)."""

    def run_into(self, values, slots):
        raise RuntimeError("a segment failed")

    run_on = run_into


def test_a_segment_that_fails_runs_the_call_eagerly(monkeypatch):
    """An internal failure in a plan with decisions runs that call eagerly,
    logged, and that version from then on; it never reaches the program."""
    monkeypatch.delenv("DEEPVISOR_STRICT", raising=False)

    def fn(x):
        return x * 2 if x.sum() > 0 else x - 1

    g = deepvisor.compile(fn)
    x = randn(6, seed=1).abs()
    same(g, fn, x)
    same(g, fn, x)
    tree = g.plans()[0].tree
    real, tree.executor = tree.executor, _FailingSegment()
    same(g, fn, x)
    same(g, fn, x)
    tree.executor = real  # (for stats)
    s = deepvisor.stats(g)
    assert s["eager_calls"] == 2 and any("a segment failed" in r for r in s["eager_reasons"]), s


# -- constant folding --------------------------------------------------------------------

CENTRE, LIMIT = 8, 8


def relative_span(x, idx, table):
    """DeBERTa's attention span: a tensor made from Python numbers, used as
    slice bounds (__index__ reads it) and as clamp limits (read as a Scalar)."""
    span = torch.tensor(min(x.size(-2), LIMIT))
    rel = table[CENTRE - span: CENTRE + span]
    pos = torch.clamp(idx + span, 0, span * 2 - 1)
    return rel * x.sum(), pos


def segments(g):
    return [len(p.path.segments) for p in g.plans()]


def test_arithmetic_on_constants_is_folded_and_decides_nothing():
    """torch.tensor(...) of Python numbers is a constant of the plan, and so
    is arithmetic on it: reading it in Python cuts no segment. A change of
    the Python state that made it is a guard miss: a new capture, not a
    stale constant."""
    global LIMIT
    g = deepvisor.compile(relative_span)
    table, idx = randn(16, 4, seed=1), torch.arange(10, device=DEVICE) - 5
    try:
        for limit in (8, 8, 3, 3, 8):
            LIMIT = limit
            same(g, relative_span, randn(10, 4, seed=limit), idx, table)
    finally:
        LIMIT = 8
    s = deepvisor.stats(g)
    assert s["captures"] == 2 and s["cache_hits"] == 3 and s["eager_calls"] == 0, s
    assert segments(g) == [1, 1] and s["fallback_ops"] == {}, s


def test_random_ops_on_constants_are_not_folded():
    def noisy(x):
        keep = tensor([0.5] * 32).bernoulli()
        return x * keep, torch.rand_like(tensor([1.0, 2.0, 3.0, 4.0])) + x.sum()

    g = deepvisor.compile(noisy)
    x = randn(32)
    outs = [g(x) for _ in range(3)]
    for i in range(3):
        for j in range(i):  # fresh numbers on every call, as eager draws them
            assert not torch.equal(outs[i][0], outs[j][0]) and not torch.equal(outs[i][1], outs[j][1])
    for keep_x, u in outs:
        assert set((keep_x / x).cpu().tolist()) <= {0.0, 1.0}
        assert ((u - x.sum() >= 0) & (u - x.sum() <= 1)).all()
    s = deepvisor.stats(g)
    assert s["captures"] == 1 and s["cache_hits"] == 2, s

    def counted(x):  # random data read in Python: a decision each call, not a constant
        return x * int(torch.tensor([0.5] * 32).bernoulli().sum())

    torch.manual_seed(0)
    g = deepvisor.compile(counted)
    counts = {int(g(x)[0] / x[0]) for _ in range(5)}
    assert len(counts) > 1, counts


def test_a_constant_written_in_place_is_no_longer_known():
    def through_a_view(x):
        c = torch.tensor([1.0, 2.0, 3.0])
        c[1:].add_(x.sum().cpu())  # an argument's data: what follows is no constant
        return x * c.to(x.device), x * c.max().to(x.device)

    def then_decide(x):
        c = torch.tensor([1.0, 2.0])
        c.mul_(x.sum().cpu())
        return x * 2 if c.sum() > 0 else x * 3

    def by_a_constant(x):
        c = torch.tensor([1.0, 2.0])
        c.add_(torch.tensor(3.0))  # written before it is read: the graph reads the new contents
        return x * c.to(x.device)[int(c.argmax())]

    for fn, captures in ((through_a_view, 1), (then_decide, 2), (by_a_constant, 1)):
        g = deepvisor.compile(fn)
        for v in (1.0, -1.0, 2.0, -3.0):
            same(g, fn, full((3,) if fn is through_a_view else (2,), v))
        s = deepvisor.stats(g)
        assert s["captures"] == captures and s["eager_calls"] == 0, (fn.__name__, s)


def test_a_constant_made_from_an_escaped_number():
    """torch.tensor(x.sum().item()) keeps the decision on x.sum(): the
    constant, and what is folded from it, belong to that outcome's version."""
    def from_item(x):
        t = torch.tensor(x.sum().item()) * 2
        return x * t.to(x.device) + int(t > 0)

    g = deepvisor.compile(from_item)
    for v in (1.0, -1.0, 1.0, 2.0):
        same(g, from_item, full((3,), v))
    s = deepvisor.stats(g)
    assert s["captures"] == 3 and s["cache_hits"] == 1, s


def packed_positions(x, start=0):
    """transformers' packed-sequence check (masking_utils): positions from
    an arange, their differences, a cumulative sum, read in Python."""
    pos = torch.arange(start, start + x.shape[1], device=x.device).unsqueeze(0)
    packed = (torch.diff(pos, prepend=pos[:, :1] - 1, dim=-1) != 1).cumsum(-1)
    mask = torch.ones(x.shape[0], x.shape[1], dtype=torch.bool, device=x.device)
    if (packed[:, -1] == 0).all() and mask.all():
        return x * 2
    return x * 3


def test_factories_of_constants_decide_nothing():
    """arange, ones, full... of constant arguments make known values: what
    Python reads from them cuts no segment (GPT-2's one decision). Their
    arguments are guarded where Python state made them, and a write makes
    the tensor unknown again."""
    g = deepvisor.compile(packed_positions)
    for seed in range(3):
        same(g, packed_positions, randn(2, 9, seed=seed))
    s = deepvisor.stats(g)
    assert s["captures"] == 1 and s["cache_hits"] == 2 and segments(g) == [1], (s, segments(g))

    def filled(x, fill):
        t = torch.full((4,), fill, device=x.device)
        return x + 1 if (t > 1).all() else x - 1

    g = deepvisor.compile(filled)
    for fill in (2.0, 2.0, 0.5, 0.5, 2.0):
        same(g, filled, randn(3, 4), fill)
    assert deepvisor.stats(g)["captures"] == 2 and segments(g) == [1, 1]

    def written(x):
        t = torch.zeros(4, device=x.device)
        t[1] = x.sum()
        return x + 1 if (t > 0).any() else x - 1

    g = deepvisor.compile(written)
    for v in (1.0, -1.0, 1.0):
        same(g, written, full((4,), v))
    assert segments(g) == [2]


def test_a_folded_number_is_not_taken_for_an_earlier_decision():
    """b is read from a constant (no decision); a, read before with the same
    value, is an escaped number that stays in the graph. b must stay the
    constant it is, whatever x.sum() gives later."""
    def fn(x):
        a = x.sum().item()
        b = (torch.tensor(3.0) * 1.5).item()
        return x * a + b

    g = deepvisor.compile(fn)
    for v in (1.5, 1.0, -2.0):  # x.sum() == 4.5 == b at the capture
        same(g, fn, full((3,), v))
    assert deepvisor.stats(g)["captures"] == 1


# -- TorchScript functions run as their Python originals (_script.py) ---------------------

@torch.jit.script
def scripted_longer(q: torch.Tensor, k: torch.Tensor) -> int:
    return max(q.size(-2), k.size(-2))


@torch.jit.script
def scripted_span(q: torch.Tensor, k: torch.Tensor, limit: int):
    """transformers 5.17's DeBERTa compute_attention_span (calling another
    scripted function: in the original, a Python call of it)."""
    return torch.tensor(min(scripted_longer(q, k), limit))


@torch.jit.script
def scripted_scale(x: torch.Tensor, factor: int):
    """... and its scaled_size_sqrt."""
    return torch.sqrt(torch.tensor(x.size(-1), dtype=torch.float) * factor)


def scripted_attention(q, k, idx, table):
    span = scripted_span(q, k, LIMIT)
    rel = table[CENTRE - span: CENTRE + span]           # bounds read by __index__
    pos = torch.clamp(idx + span, 0, span * 2 - 1)      # a clamp limit
    scores = q @ k.transpose(-1, -2) / scripted_scale(q, 2).to(q.dtype)
    return scores, rel[:int(span)] * q.sum(), pos      # int() of it


def test_scripted_helpers_fold_as_python_does():
    """A @torch.jit.script helper makes its torch.tensor(...) where no
    dispatched op shows it: run as TorchScript, the span was an unknown
    tensor, and the arithmetic on it fallbacks and decisions (DeBERTa with
    transformers 5.17). A capture runs the Python original instead: folded,
    one segment. Another sequence length gives its own span, never the
    captured one (the original's reads of the sizes are seen, and guarded
    or symbolic as in plain Python)."""
    global LIMIT
    g = deepvisor.compile(scripted_attention)
    table, idx = randn(16, 4, seed=1), torch.arange(10, device=DEVICE) - 5
    try:
        for n, limit in ((5, 8), (5, 8), (12, 8), (3, 8), (12, 8), (3, 2), (7, 2)):
            LIMIT = limit
            same(g, scripted_attention, randn(2, n, 4, seed=n), randn(2, n, 4, seed=n + 1), idx, table)
    finally:
        LIMIT = 8
    s = deepvisor.stats(g)
    assert s["eager_calls"] == 0 and s["fallback_ops"] == {}, s
    assert s["cache_hits"] >= 1 and set(segments(g)) == {1}, (s, segments(g))
    assert torch.jit.ScriptFunction.__dict__["__call__"] is _TORCHSCRIPT_CALL  # outside captures: as it was


_TORCHSCRIPT_CALL = torch.jit.ScriptFunction.__dict__["__call__"]


@torch.jit.script
def scripting_flag(x: torch.Tensor):
    if torch.jit.is_scripting():
        return x + 1
    return x + 2  # only the Python original gets here


INSIDE, RESUME = threading.Event(), threading.Event()


def blocking_flag(x):
    INSIDE.set()
    RESUME.wait(30)
    return scripting_flag(x)


def test_only_captures_run_python_originals():
    """The Python original runs in the capturing thread only: another thread
    calling the same scripted function meanwhile runs TorchScript, and after
    the capture (a replay, an eager call) nothing is patched. (This test
    tells them apart by torch.jit.is_scripting(), the one thing a faithful
    original does differently.)"""
    x = randn(3)
    other = []

    def call_meanwhile():
        INSIDE.wait(30)
        other.append(scripting_flag(x))
        RESUME.set()

    INSIDE.clear(), RESUME.clear()
    t = threading.Thread(target=call_meanwhile)
    t.start()
    g = deepvisor.compile(blocking_flag)
    captured = g(x)
    t.join()
    torch.testing.assert_close(captured, x + 2)
    torch.testing.assert_close(other[0], x + 1)
    torch.testing.assert_close(g(x), x + 2)  # the replay of what the capture ran
    torch.testing.assert_close(scripting_flag(x), x + 1)
    assert torch.jit.ScriptFunction.__dict__["__call__"] is _TORCHSCRIPT_CALL
    assert deepvisor.stats(g)["captures"] == 1 and deepvisor.stats(g)["cache_hits"] == 1


def test_python_originals_are_restored_after_errors_and_nesting():
    from deepvisor._script import python_originals

    def fails(x):
        y = scripting_flag(x)
        raise ValueError("the program's own error")

    with pytest.raises(ValueError):
        deepvisor.compile(fails)(randn(3))
    assert torch.jit.ScriptFunction.__dict__["__call__"] is _TORCHSCRIPT_CALL
    x = randn(3)
    with python_originals():
        with python_originals():
            torch.testing.assert_close(scripting_flag(x), x + 2)
        torch.testing.assert_close(scripting_flag(x), x + 2)
    torch.testing.assert_close(scripting_flag(x), x + 1)
    assert torch.jit.ScriptFunction.__dict__["__call__"] is _TORCHSCRIPT_CALL


@torch.jit.script
def scripted_times(x: torch.Tensor, s: float):
    return x * s


def traced_double(x):
    if x.sum() > 0:  # traced on a positive sum: the trace keeps this branch
        return x * 2
    return x * 3


with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # (the trace's warning that it keeps one branch: the point here)
    traced = torch.jit.trace(traced_double, torch.ones(3))


def test_numbers_and_traces_passed_to_torchscript():
    """An escaped number handed to a scripted function: its original's
    arithmetic is seen (before, TorchScript baked the number in: the replay
    of the second call gave the first call's result). A trace is not run as
    its Python original (a trace is one path of it)."""
    def scaled(x):
        return scripted_times(x, x.sum().item() + 0.5)

    g = deepvisor.compile(scaled)
    for v in (1.0, 2.0, 3.0, 2.0):
        same(g, scaled, full((3,), v))
    assert deepvisor.stats(g)["eager_calls"] == 0

    def through_a_trace(x):
        return traced(x) + 1

    g = deepvisor.compile(through_a_trace)
    for v in (1.0, -1.0):
        x = full((3,), v)
        same(g, through_a_trace, x)
        torch.testing.assert_close(g(x), x * 2 + 1)  # the trace's branch, as eager


def test_a_callable_argument_decides_what_runs():
    """A function passed as an argument is checked by what it runs, not only
    its type: builtins by identity, Python functions by code and defaults,
    closures and bound methods so that their captured state counts."""
    def f(x, act):
        return act(x) + 1

    class Scale:
        def __init__(self, k):
            self.k = k

        def apply(self, t):
            return t * self.k

    def scaled(k):
        return lambda t: t * k

    def plain(t, k=2.0):
        return t * k

    def other(t, k=2.0):
        return t - k

    def plain3(t, k=3.0):
        return t * k
    plain3.__code__ = plain.__code__  # same code, other defaults

    g = deepvisor.compile(f)
    x = torch.randn(5)
    acts = [torch.relu, torch.sigmoid, torch.relu, lambda t: t * 2, lambda t: t * 3, scaled(2.0), scaled(5.0),
            Scale(2.0).apply, Scale(7.0).apply, plain, other, plain3, plain, torch.nn.ReLU(), torch.nn.Tanh()]
    for act in acts:
        assert torch.equal(g(x, act), f(x, act)), act
    same = Scale(4.0)
    for _ in range(2):
        assert torch.equal(g(x, same.apply), f(x, same.apply))
    same.k = 9.0
    assert torch.equal(g(x, same.apply), f(x, same.apply))
    s = deepvisor.stats(g)
    assert s["eager_calls"] == 0 and s["cache_hits"] >= 2, s


def test_numpy_scalars_are_checked_by_value():
    """np.float32(2.0) then np.float32(5.0): a numpy scalar is immutable data,
    compared by value wherever it is read (an argument, a module attribute, a
    global, a branch on np.bool_). It was checked by type alone, and the first
    value stayed in the plan."""
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.k = np.float32(2.0)

        def forward(self, x, s, flag):
            y = x * s * self.k + _NUMPY_OFFSET[0]
            return y + 1 if flag else y - 1

    m = Scaled()
    g = deepvisor.compile(m)
    x = torch.randn(6)
    calls = [(np.float32(2.0), np.bool_(True)), (np.float32(5.0), np.bool_(True)), (np.float32(5.0), np.bool_(False)),
             (np.int64(3), np.bool_(False)), (np.float64(0.5), np.bool_(True)), (np.float32(2.0), np.bool_(True))]
    for k, (s, flag) in enumerate(calls):
        if k == 3:
            m.k = np.float32(-1.5)
        if k == 4:
            _NUMPY_OFFSET[0] = np.float32(10.0)
        torch.testing.assert_close(g(x, s, flag), m(x, s, flag), msg=f"call {k}: {s!r} {flag!r}")
    hits = deepvisor.stats(g)["cache_hits"]
    torch.testing.assert_close(g(x, np.float32(2.0), np.bool_(True)), m(x, np.float32(2.0), np.bool_(True)))
    assert deepvisor.stats(g)["cache_hits"] == hits + 1  # an equal value replays


_NUMPY_OFFSET = [np.float32(0.0)]


# -- torch.compile'd code and higher-order operators inside a capture ------------------

_DYNAMO_SCRIPT = r'''
import sys, torch, deepvisor
case = sys.argv[1]
SCALE = {"k": 2.0}

def branches(x):
    return torch.cond(x.sum() > 0, lambda v: v.sin() * SCALE["k"], lambda v: v.cos() - 1, (x,)) + 1

if case == "compiled_before":  # Dynamo loaded, the program holds a torch.compile'd function
    body = lambda v: (v * 3).tanh()
    inner = torch.compile(body, backend="eager")
    fn = lambda x: inner(x) * SCALE["k"] + branches(x)
    ref = lambda x: body(x) * SCALE["k"] + branches(x)  # inner is first called by the capture
else:  # Dynamo is first loaded by torch.cond, inside the capture
    assert "torch._dynamo" not in sys.modules
    fn = ref = branches
g = deepvisor.compile(fn)
x = torch.randn(16, generator=torch.Generator().manual_seed(0))
for v in (x, -x.abs(), x.abs(), -2 * x.abs()):
    assert torch.allclose(g(v), ref(v), atol=1e-5), case
SCALE["k"] = 5.0  # read inside a branch: guarded
for v in (x.abs(), -x.abs()):
    assert torch.allclose(g(v), ref(v), atol=1e-5), case
s = deepvisor.stats(g)
assert s["eager_calls"] == 0 and s["versions"] >= 2 and s["cache_hits"] >= 2, s

# while_loop: each test of its condition a decision, each trip count a version (none: copies of the inputs).
from torch._higher_order_ops.while_loop import while_loop
def halve(x):
    return while_loop(lambda v: v.abs().sum() > 1, lambda v: (v / SCALE["k"],), (x,))[0] + 1
h = deepvisor.compile(halve)
for v in (x * 10, x, x * 10, x * 0.001, x * 100, x):
    assert torch.allclose(h(v), halve(v))
SCALE["k"] = 3.0  # read in the body: guarded
assert torch.allclose(h(x * 10), halve(x * 10))
s = deepvisor.stats(h)
assert s["eager_calls"] == 0 and s["versions"] >= 4, s

# Other higher-order operators make the call eager, with the reason.
from torch._higher_order_ops.map import map as map_rows
def rows(x):
    return map_rows(lambda r: r.sin() * 2, x.view(4, 4)) + 1
m = deepvisor.compile(rows)
for v in (x, x * 2):
    assert torch.allclose(m(v), rows(v))
s = deepvisor.stats(m)
assert s["eager_calls"] >= 1 and "higher_order.map" in str(s["eager_reasons"]), s

# Nothing Dynamo marked during the captures lasts: torch.cond and a new torch.compile'd function work after them.
from torch._dynamo.utils import counters
assert torch.allclose(torch.cond(x.sum() > 0, lambda v: v + 1, lambda v: v - 1, (x,)), x + (1 if x.sum() > 0 else -1))
frames = counters["frames"]["ok"]
later = torch.compile(lambda v: v * 7 + 1, backend="eager")
assert torch.allclose(later(x), x * 7 + 1) and counters["frames"]["ok"] > frames, dict(counters["frames"])
if case == "compiled_before":
    ok, y = counters["frames"]["ok"], torch.randn(3, 5)  # a new shape: compiled again unless marked
    assert torch.allclose(inner(y), body(y)) and counters["frames"]["ok"] > ok, "inner was left uncompilable"
print("ok")
'''


_VMAP_SCRIPT = r'''
import torch, deepvisor
fn = lambda x: torch.vmap(lambda r: r.sin() * r.sum())(x)
g = deepvisor.compile(fn)
x = torch.randn(3, 4)
for v in (x, x * 2, x):
    assert torch.allclose(g(v), fn(v))
s = deepvisor.stats(g)
assert s["eager_calls"] == 0, s["eager_reasons"]
print("ok")
'''


def test_torch_vmap_is_captured_from_its_first_call():
    """torch.vmap's first use in a process loads decompositions through
    torch.library, which takes a lock (_thread: impure since session 35) and
    extracts a stack (linecache open()s the source files): the first call
    ran eagerly. In a fresh process, where that first use happens."""
    import subprocess
    r = subprocess.run([sys.executable, "-c", _VMAP_SCRIPT], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]


def test_captures_on_two_threads_leave_dynamo_as_they_found_it():
    """Each capture set Dynamo's force_eager stance as a context of its own:
    two captures on two threads that ended in the order they began left
    force_eager on, so every torch.compile'd function of the process ran
    eagerly from then on. The stance is now held while any capture runs."""
    import torch._dynamo.eval_frame as eval_frame
    inner = torch.compile(lambda v: v * 2, backend="eager")

    def first(x):
        time.sleep(0.2)
        return inner(x) + 1

    def second(x):
        time.sleep(0.4)
        return inner(x) - 1

    x = randn(4)
    g1, g2 = deepvisor.compile(first), deepvisor.compile(second)
    results = []
    thread = threading.Thread(target=lambda: results.append(g1(x)))
    thread.start()
    time.sleep(0.05)
    assert_matches(g2(x), x * 2 - 1, tol)
    thread.join()
    assert_matches(results[0], x * 2 + 1, tol)
    assert eval_frame._stance.stance == "default"


@pytest.mark.parametrize("case", ["dynamo_loaded_by_cond", "compiled_before"])
def test_torch_cond_and_compiled_functions_inside_a_capture(case):
    """torch.cond inside a capture raised (its operator reached the recorder,
    which has no rule for it), and Dynamo, meeting the recorder, marked the
    frames it entered as never to compile: a later torch.cond outside
    deepvisor failed, and a torch.compile'd function first called inside a
    capture stayed eager for good. Now Dynamo runs eagerly through a capture,
    torch.cond and while_loop are captured as an `if` and a `while` (a version
    a branch or a trip count, the Python state their functions read guarded),
    other higher-order operators (map) make the call eager with the reason,
    and Dynamo is left as it was (each case in a fresh process: whether
    Dynamo is loaded matters)."""
    import subprocess
    r = subprocess.run([sys.executable, "-c", _DYNAMO_SCRIPT, case], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]
