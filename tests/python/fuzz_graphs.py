"""Differential fuzzer: random programs of tensor ops, compiled by deepvisor and
compared with eager.

    python3 tests/python/fuzz_graphs.py [--graphs N] [--seed S] [--device cpu|cuda] [--save DIR]

A program is Python source: inputs of random shapes (sizes 1 and odd sizes),
dtypes and layouts (contiguous, transposed, sliced, expanded), constants
drawn from a seeded generator, then 2 to 30 statements, each one op over
earlier values: pointwise ops with broadcasting and scalars, reductions,
softmax, layer norm, group norm, views, concatenation, padding (constant,
reflection, replication), pooling, upsampling, scans, arg-reductions, sorts,
flips and rolls, indexing
(index_select, gather, embedding), writes by data (index_put, scatter,
scatter_add, index_add, index_copy, index_fill), matmuls and 2-d convolutions with epilogues, in-place
updates of fresh tensors and of their slices, and tensors made from Python
numbers (torch.tensor) with scalar arithmetic over them, results as large as
the data says (boolean masks, nonzero, unique), branches on tensor data and
numbers read from it (.item()), and earlier statements
repeated on the same values (merged work). Each statement is run eagerly as
it is generated, so every program is valid by construction. A program fails
when the compiled function's results differ from eager's in dtype, shape or
NaN positions, or are further from the program computed in float64 than
twice eager's error plus a tolerance (_close), on the capture call, on a
replay or on new input values; or when compiling raises. A failing
program is shrunk (statements and outputs removed while it still fails) and,
with --save, written as a regression case that tests/python/test_fuzz.py
replays. Seeds make every program reproducible: program i of a run with seed
S is `generate(S * 1_000_003 + i)`.
"""

import argparse
import contextlib
import glob
import hashlib
import math
import os
import random
import sys
import time
import traceback

import torch
import torch.nn.functional as F

# Kernels, not ATen, on CPU tensors: the lowerings are what is under test.
os.environ.setdefault("DEEPVISOR_CPU", "interpreter")
# Every kernel is also compiled for sm_90 by NVRTC (no GPU needed): the emitter is under test too.
os.environ.setdefault("DEEPVISOR_VALIDATE_CUDA", "1")
# Convolutions' activations laid out channels-last on every device and dtype
# (by default only GPU plans in f16/bf16): the layout pass is under test too.
os.environ.setdefault("DEEPVISOR_CHANNELS_LAST", "1")

SIZES = (1, 2, 3, 5, 7, 8, 16, 33)
LAYOUTS = ("contiguous", "contiguous", "transposed", "sliced", "expanded")
# Allowed error beyond twice eager's, relative to the output's magnitude (_close): a wrong
# element is off by its own size; reordered float32 sums that an ill-conditioned
# op (a norm over values eager found equal) magnifies 300x stay under 2e-3.
TOLERANCE = {torch.float32: 2e-3, torch.bfloat16: 1e-2}


# -- programs --------------------------------------------------------------------------------

class Program:
    """Inputs (shape, dtype, layout), constants (source expressions over a
    generator `g`), statements (variable, expression source) and outputs."""

    def __init__(self, seed):
        self.seed = seed
        self.inputs, self.consts, self.stmts, self.outputs = [], [], [], []

    def source(self):
        args = ", ".join(f"x{i}" for i in range(len(self.inputs)))
        lines = ["def make(g, dev):"]
        lines += [f"    c{i} = ({expr}).to(dev)" for i, expr in enumerate(self.consts)]
        lines.append(f"    def program({args}):")
        lines += [f"        {var} = {expr}" for var, expr in self.stmts]
        lines.append(f"        return ({', '.join(self.outputs)},)")
        lines.append("    return program")
        return "\n".join(lines) + "\n"

    def make(self, device="cpu"):
        namespace = {"torch": torch, "F": F}
        exec(compile(self.source(), f"<fuzz program {self.seed}>", "exec"), namespace)  # noqa: S102
        return namespace["make"](torch.Generator().manual_seed(self.seed), device)

    def make_reference(self, device="cpu"):
        """The program computed in float64 throughout (constants, casts and
        inputs), the reference that low-precision programs are judged by."""
        import re
        source = re.sub(r"^(    c\d+ = )\((.*)\)\.to\(dev\)$", r"\1_double(\2, dev)", self.source(), flags=re.M)
        for low in (".float()", ".half()", ".bfloat16()"):
            source = source.replace(low, ".double()")
        for dtype in ("torch.bfloat16", "torch.float16", "torch.float32"):
            source = source.replace(dtype, "torch.float64")
        double = lambda t, dev: (t.double() if t.is_floating_point() else t).to(dev)  # noqa: E731
        namespace = {"torch": torch, "F": F, "_double": double}
        exec(compile(source, f"<fuzz reference {self.seed}>", "exec"), namespace)  # noqa: S102
        return namespace["make"](torch.Generator().manual_seed(self.seed), device)

    def example_inputs(self, device, seed, grow=0, dim=0):
        """Inputs of the program's shapes, or with dimension `dim` (0 or -1,
        a row length) of each `grow` larger (a dynamic-shape capture, then an
        instance of it)."""
        g = torch.Generator().manual_seed(seed)
        return tuple(_tensor(_grown(shape, grow, dim), dtype, layout, g).to(device)
                     for shape, dtype, layout in self.inputs)


def _grown(shape, grow, dim=0):
    if not grow or not shape:
        return shape
    grown = list(shape)
    grown[dim] += grow
    return tuple(grown)


def _tensor(shape, dtype, layout, g):
    if layout == "transposed" and len(shape) >= 2:
        t = torch.randn(shape[:-2] + (shape[-1], shape[-2]), generator=g).transpose(-1, -2)
    elif layout == "sliced" and shape:
        t = torch.randn(shape[:-1] + (2 * shape[-1] + 1,), generator=g)[..., 1::2]
    elif layout == "expanded" and shape:
        t = torch.randn((1,) + tuple(shape[1:]), generator=g).expand(shape)
    else:
        t = torch.randn(shape, generator=g)
    return t.to(dtype)


# -- the generator -----------------------------------------------------------------------------

class Builder:
    """Adds statements to a program, running each one eagerly on example
    inputs to know the shapes and keep only valid programs."""

    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.p = Program(seed)
        self.values = {}  # variable -> eager tensor
        self.g = torch.Generator().manual_seed(seed)
        self.cg = torch.Generator().manual_seed(seed)  # replays the constants' draws
        # Values whose sizes depend on the data (op_by_data, and values made
        # from them): constants the builder shapes after them (indices)
        # would fall out of range on other data, where a GPU asserts.
        self.varying = set()

    def shape(self):
        """Up to 4 dims of SIZES, at most 2^16 elements (the limit on every value)."""
        while True:
            shape = tuple(self.rng.choice(SIZES) for _ in range(self.rng.randint(1, 4)))
            if math.prod(shape) <= 1 << 16:
                return shape

    def add_input(self):
        shape, dtype = self.shape(), self.rng.choice([torch.float32] * 4 + [torch.bfloat16])
        layout = self.rng.choice(LAYOUTS)
        name = f"x{len(self.p.inputs)}"
        self.p.inputs.append((shape, dtype, layout))
        self.values[name] = _tensor(shape, dtype, layout, self.g)

    def const(self, expr):
        """A constant drawn from the program's generator; its variable name."""
        value = eval(expr, {"torch": torch, "g": self.cg})  # noqa: S307
        self.p.consts.append(expr)
        self.values[f"c{len(self.p.consts) - 1}"] = value
        return f"c{len(self.p.consts) - 1}"

    def pick(self, pred=lambda t: True, sized_by_data=True):
        names = [n for n, t in self.values.items()
                 if not n.startswith("c") and pred(t) and (sized_by_data or n not in self.varying)]
        return self.rng.choice(names) if names else None

    def try_stmt(self, expr, sized_by_data=False):
        """Runs `expr` eagerly; on success adds it as a statement.
        sized_by_data: its sizes depend on the data (as do those of a
        statement over such a value)."""
        try:
            out = eval(expr, {"torch": torch, "F": F, **self.values})  # noqa: S307
        except Exception:  # noqa: BLE001  (an invalid combination: try another)
            return False
        if not isinstance(out, torch.Tensor) or out.numel() > 1 << 16 or not out.is_floating_point():
            return False
        var = f"v{len(self.p.stmts)}"
        self.p.stmts.append((var, expr))
        self.values[var] = out
        if sized_by_data or _names(expr) & self.varying:
            self.varying.add(var)
        return True


def _dims(rng, rank):
    return sorted(rng.sample(range(rank), rng.randint(1, rank))) if rank else []


UNARY = ["torch.tanh({a})", "torch.sigmoid({a})", "torch.relu({a})", "F.gelu({a})", "torch.abs({a})",
         "-{a}", "torch.sin({a})", "torch.erf({a})", "torch.sqrt(torch.abs({a}))", "torch.log1p(torch.abs({a}))",
         "torch.exp(torch.clamp({a}, -8, 8))", "F.silu({a})", "torch.clamp({a}, -0.5, 0.7)", "{a}.float()",
         "{a}.to(torch.bfloat16)", "torch.floor({a} * 3)", "torch.rsqrt(torch.abs({a}) + 0.5)",
         "F.hardswish({a})", "F.hardsigmoid({a})", "F.leaky_relu({a}, 0.1)", "F.elu({a})", "F.softplus({a})",
         "F.mish({a})", "{a}.masked_fill({a} < -0.5, 0.25)"]
BINARY = ["{a} + {b}", "{a} - {b}", "{a} * {b}", "{a} / (torch.abs({b}) + 0.5)", "torch.maximum({a}, {b})",
          "torch.minimum({a}, {b})", "torch.where({a} > {b}, {a}, {b})", "torch.where({a} > 0, {a}, 0.5 * {b})"]


def op_pointwise(b):
    a = b.pick()
    if b.rng.random() < 0.5:
        return b.try_stmt(b.rng.choice(UNARY).format(a=a))
    if b.rng.random() < 0.3:
        return b.try_stmt(b.rng.choice(BINARY[:4]).format(a=a, b=repr(round(b.rng.uniform(-2, 2), 3))))
    shape = b.values[a].shape
    other = b.pick(lambda t: _broadcasts(t.shape, shape))
    return other is not None and b.try_stmt(b.rng.choice(BINARY).format(a=a, b=other))


def _broadcasts(s, t):
    try:
        torch.broadcast_shapes(s, t)
        return True
    except RuntimeError:
        return False


def op_reduce(b):
    a = b.pick(lambda t: t.dim() > 0)
    if a is None:
        return False
    dims, keep = _dims(b.rng, b.values[a].dim()), b.rng.random() < 0.5
    fn = b.rng.choice(["sum", "mean", "amax", "amin"])
    return b.try_stmt(f"torch.{fn}({a}, dim={dims}, keepdim={keep})")


def op_row(b):
    a = b.pick(lambda t: t.dim() > 0)
    if a is None:
        return False
    dim = b.rng.randrange(-b.values[a].dim(), b.values[a].dim())
    choice = b.rng.randrange(3)
    if choice == 0:
        return b.try_stmt(f"torch.softmax({a}, dim={dim})")
    if choice == 1:
        return b.try_stmt(f"torch.log_softmax({a}.float(), dim={dim})")
    n = b.values[a].shape[-1]
    w = b.const(f"torch.randn({n}, generator=g)")
    bias = b.const(f"torch.randn({n}, generator=g)")
    return b.try_stmt(f"F.layer_norm({a}.float(), ({n},), {w}, {bias})")


def op_view(b):
    a = b.pick(lambda t: t.dim() > 0)
    if a is None:
        return False
    t, r = b.values[a], b.rng
    rank = t.dim()
    options = [f"{a}.reshape(-1)", f"{a}.unsqueeze({r.randrange(rank + 1)})", f"{a}.contiguous()"]
    if rank >= 2:
        options += [f"{a}.transpose({r.randrange(rank)}, {r.randrange(rank)})",
                    f"{a}.permute({r.sample(range(rank), rank)})", f"{a}.flatten({r.randrange(rank - 1)})"]
    d = r.randrange(rank)
    n = t.shape[d]
    if n == 0:
        return False
    start = r.randrange(n)
    options += [f"{a}.narrow({d}, {start}, {r.randint(1, n - start)})", f"{a}[{', '.join([':'] * d + ['::2'])}]",
                f"{a}.select({d}, {r.randrange(-n, n)})"]
    ones = [i for i, s in enumerate(t.shape) if s == 1]
    if ones:
        sizes = list(t.shape)
        sizes[r.choice(ones)] = r.choice(SIZES[1:])
        options.append(f"{a}.expand({sizes})")
    return b.try_stmt(r.choice(options))


def op_cat(b):
    a = b.pick(lambda t: t.dim() > 0)
    if a is None:
        return False
    shape, d = b.values[a].shape, b.rng.randrange(b.values[a].dim())
    other = b.pick(lambda t: t.dim() == len(shape) and all(t.shape[i] == shape[i] for i in range(len(shape)) if i != d))
    how = b.rng.randrange(4)
    if how == 0:
        return b.try_stmt(f"torch.cat([{a}, {other}], dim={d})")
    if how == 1:
        return b.try_stmt(f"torch.stack([{a}, {a} * 2], dim={d})")
    if how == 3:  # reflection or replication over the last one or two dims (a batch dim before them optional)
        padded = b.rng.choice([k for k in (1, 2) if len(shape) in (k + 1, k + 2)] or [0])
        pads = [b.rng.randint(0, 2) for _ in range(2 * padded)]
        return padded > 0 and b.try_stmt(f"F.pad({a}, {pads}, mode='{b.rng.choice(['reflect', 'replicate'])}')")
    pads = [b.rng.randint(-1, 2) for _ in range(2 * min(2, len(shape)))]
    return b.try_stmt(f"F.pad({a}, {pads}, value={round(b.rng.uniform(-1, 1), 2)})")


def op_index(b):
    a = b.pick(lambda t: t.dim() > 0, sized_by_data=False)
    if a is None:
        return False
    t, r = b.values[a], b.rng
    d = r.randrange(t.dim())
    n = t.shape[d]
    if n == 0:
        return False
    how = r.randrange(3)
    if how == 0:
        idx = b.const(f"torch.randint(0, {n}, ({r.choice(SIZES)},), generator=g)")
        return b.try_stmt(f"torch.index_select({a}, {d}, {idx})")
    if how == 1:
        shape = list(t.shape)
        shape[d] = r.choice(SIZES)
        idx = b.const(f"torch.randint(0, {n}, {tuple(shape)}, generator=g)")
        return b.try_stmt(f"torch.gather({a}, {d}, {idx})")
    table = b.const(f"torch.randn({r.choice(SIZES[2:])}, {r.choice(SIZES)}, generator=g)")
    ids = b.const(f"torch.randint(0, {b.values[table].shape[0]}, {b.shape()[:2]}, generator=g)")
    return b.try_stmt(f"F.embedding({ids}, {table}) + 0")


def op_scatter(b):
    """Writes by data: index_put (by rows, or x[..., idx] = v), scatter (of a
    tensor or a number), scatter_add, index_add, index_copy, index_fill. The
    replacing forms get distinct indices (which of two updates of one element
    stays is unspecified); the accumulating ones duplicates."""
    a = b.pick(lambda t: t.dim() > 0 and t.numel() > 0, sized_by_data=False)
    if a is None:
        return False
    t, r = b.values[a], b.rng
    d = r.randrange(t.dim())
    n, k = t.shape[d], r.choice(SIZES)
    moved = tuple(t.shape[:d] + t.shape[d + 1:])
    how = r.randrange(7)
    if how == 0:
        accumulate = r.random() < 0.5
        idx = b.const(f"torch.randint({-n}, {n}, ({k},), generator=g)" if accumulate
                      else f"torch.randperm({n}, generator=g)[:{min(k, n)}] - {r.choice([0, n])}")
        rows = k if accumulate else min(k, n)
        shape = moved if r.random() < 0.3 else (rows,) + moved
        v = b.const(f"torch.randn({shape}, generator=g)")
        return b.try_stmt(f"torch.index_put({a}.movedim({d}, 0), ({idx},), {v}.to({a}.dtype), "
                          f"accumulate={accumulate}).movedim(0, {d})")
    if how == 1:
        idx = b.const(f"torch.randperm({n}, generator=g)[:{min(k, n)}]")
        return b.try_stmt(f"(lambda y: (y.__setitem__((slice(None),) * {d} + ({idx},), "
                          f"{round(r.uniform(-2, 2), 2)}), y)[1])({a}.clone())")
    if how in (2, 3):  # scatter / scatter_add: an index no larger than self, src read where the index is
        shape = tuple(r.randint(1, s) for s in t.shape)
        if how == 2:
            full = tuple(n if i == d else s for i, s in enumerate(shape))
            idx = b.const(f"torch.rand({full}, generator=g).argsort({d}).narrow({d}, 0, {shape[d]})")
        else:
            idx = b.const(f"torch.randint(0, {n}, {shape}, generator=g)")
        if how == 2 and r.random() < 0.3:
            return b.try_stmt(f"torch.scatter({a}, {d}, {idx}, {round(r.uniform(-2, 2), 2)})")
        src = b.pick(lambda s: s.dim() == t.dim() and all(x >= y for x, y in zip(s.shape, shape)) and s.dtype == t.dtype,
                     sized_by_data=False)
        fn = "scatter" if how == 2 else "scatter_add"
        return src is not None and b.try_stmt(f"torch.{fn}({a}, {d}, {idx}, {src})")
    if how in (4, 5):  # index_add / index_copy of rows of `a` itself, scaled
        m = r.randint(1, n)
        idx = b.const(f"torch.randint(0, {n}, ({m},), generator=g)" if how == 4
                      else f"torch.randperm({n}, generator=g)[:{m}]")
        source = f"{a}.narrow({d}, {n - m}, {m}) * {round(r.uniform(-2, 2), 2)}"
        if how == 4:
            return b.try_stmt(f"{a}.index_add({d}, {idx}, {source}, alpha={r.choice([1, 2, -0.5])})")
        return b.try_stmt(f"{a}.index_copy({d}, {idx}, {source})")
    idx = b.const(f"torch.randint({-n}, {n}, ({k},), generator=g)")
    return b.try_stmt(f"{a}.index_fill({d}, {idx}, {round(r.uniform(-2, 2), 2)})")


def op_pool(b):
    a = b.pick(lambda t: t.dim() in (3, 4) and min(t.shape[-2:]) >= 2)
    if a is None:
        return False
    k, s = b.rng.choice([2, 3]), b.rng.choice([1, 2])
    p, ceil = b.rng.randint(0, k // 2), b.rng.random() < 0.3
    fn = b.rng.choice(["max_pool2d", "avg_pool2d"])
    return b.try_stmt(f"F.{fn}({a}, {k}, {s}, {p}, ceil_mode={ceil})")


def op_matmul(b):
    a = b.pick(lambda t: t.dim() in (2, 3) and t.dtype == torch.float32)
    if a is None:
        return False
    k, n = b.values[a].shape[-1], b.rng.choice(SIZES[1:])
    w = b.const(f"torch.randn({n}, {k}, generator=g) / {math.sqrt(k):.3f}")
    bias = b.const(f"torch.randn({n}, generator=g)")
    epilogue = b.rng.choice(["{y}", "torch.relu({y})", "F.gelu({y})", "{y} * 0.5 + 1"])
    return b.try_stmt(epilogue.format(y=f"F.linear({a}, {w}, {bias})"))


def op_conv(b):
    """A 2-d convolution (a library call) of a 4-d value: grouped, depthwise
    or not, strided, padded, dilated, with an epilogue. Its activations go
    channels-last where DEEPVISOR_CHANNELS_LAST asks (set below)."""
    a = b.pick(lambda t: t.dim() == 4 and t.shape[1] > 0)  # (no convolution of zero channels)
    if a is None:
        return False
    t, r = b.values[a], b.rng
    c = t.shape[1]
    groups = r.choice([n for n in (1, 1, 2, c) if c % n == 0])
    out, k = groups * r.choice([1, 2, 3]), r.choice([1, 3])
    fan_in = c // groups * k * k
    w = b.const(f"(torch.randn({out}, {c // groups}, {k}, {k}, generator=g) / {math.sqrt(fan_in):.3f}).to({t.dtype})")
    bias = b.const(f"torch.randn({out}, generator=g).to({t.dtype})") if r.random() < 0.5 else "None"
    stride, pad, dilation = r.choice([1, 2]), r.randint(0, k // 2), r.choice([1, 1, 2])
    epilogue = r.choice(["{y}", "torch.relu({y})", "F.gelu({y})", "{y} * 0.5 + 1"])
    return b.try_stmt(epilogue.format(y=f"F.conv2d({a}, {w}, {bias}, {stride}, {pad}, {dilation}, {groups})"))


def op_in_place(b):
    a = b.pick()
    if a is None:
        return False
    r, t = b.rng, b.values[a]
    how = r.randrange(3)
    if how == 0:
        return b.try_stmt(f"{a}.clone().mul_(2).add_(1)")
    if how == 1 and t.dim() > 0:
        return b.try_stmt(f"(lambda y: (y.narrow({r.randrange(t.dim())}, 0, 1).fill_(0.5), y)[1])({a}.clone())")
    return b.try_stmt(f"(lambda y: (y.relu_(), y)[1])({a} + 0)")


def op_python_constant(b):
    """Tensors made from Python numbers inside the program and CPU scalar
    arithmetic over them (constants folded at capture): as factors, as clamp
    limits, as slice bounds read back by int(), written in place first, and
    beside a random draw over one (never folded)."""
    a = b.pick(lambda t: t.dim() > 0)
    if a is None:
        return False
    t, r = b.values[a], b.rng
    x = round(r.uniform(0.2, 2), 2)
    how = r.randrange(5)
    if how == 0:
        return b.try_stmt(f"{a} * (torch.tensor({x}) * 2 - 1)")
    if how == 1:
        # Made on the operand's device: clamp's tensor limits, unlike a product's scalar, must share it.
        dev = f"device={a}.device"
        return b.try_stmt(f"torch.clamp({a}, -torch.tensor({x}, {dev}), torch.tensor([{x}, 1.0], {dev}).sum() - 1)")
    if how == 2:
        d = r.randrange(t.dim())
        n = t.shape[d]
        if n == 0:  # an empty dim: nothing to narrow to
            return False
        m = r.randint(1, n)
        return b.try_stmt(f"{a}.narrow({d}, int(torch.tensor({n + 3}) - {m + 3}), {m})")
    if how == 3:
        return b.try_stmt(f"(lambda s: {a} * s.mul_(2).add_(torch.tensor({x})))(torch.tensor({x}))")
    return b.try_stmt(f"{a} * 0 + torch.tensor([{x}]).bernoulli().sum() * 0")


def op_by_data(b):
    """Results as large as the data says (boolean-mask indexing, nonzero,
    unique): the plan is cut after them and their sizes choose what runs
    next. One element is put first where the selection could be empty, so
    that later ops see a value on every call."""
    a = b.pick(lambda t: t.dim() > 0 and t.numel() > 0)
    if a is None:
        return False
    how = b.rng.randrange(4)
    if how == 0:
        return b.try_stmt(f"torch.cat([{a}.reshape(-1)[:1], {a}[{a} > 0.3]])", sized_by_data=True)
    if how == 1:
        return b.try_stmt(f"{a}[({a}.reshape({a}.shape[0], -1).sum(-1) > 0) | "
                          f"(torch.arange({a}.shape[0], device={a}.device) == 0)]", sized_by_data=True)
    if how == 2:
        return b.try_stmt(f"torch.nonzero({a} > 0).to({a}.dtype)", sized_by_data=True)
    return b.try_stmt(f"torch.unique(({a} * 2).round())", sized_by_data=True)


def op_decision(b):
    """Tensor data read by Python: a branch on it (the plan is cut there, and
    values made before the cut, in whatever layout, flow into the next
    segment), or a number used in arithmetic."""
    a = b.pick()
    if a is None:
        return False
    if b.rng.randrange(2):
        return b.try_stmt(f"({a} * 1.5 if float({a}.float().mean()) > 0 else {a} - 0.5)")
    return b.try_stmt(f"{a} * ({a}.float().abs().max().item() + 1)")


def op_order(b):
    """Scans, arg-reductions, sorts and reorderings along a dimension."""
    a = b.pick(lambda t: t.dim() > 0 and t.numel() > 0)
    if a is None:
        return False
    t, r = b.values[a], b.rng
    d = r.randrange(t.dim())
    n = t.shape[d]
    options = [f"torch.cumsum({a}, {d})", f"torch.argmax({a}, {d}).float()", f"torch.argmin({a}, {d}, keepdim=True).float()",
               f"torch.sort({a}, {d}, descending={r.random() < 0.5})[0]", f"torch.topk({a}, {r.randint(1, n)}, {d})[0]",
               f"torch.flip({a}, [{d}])", f"torch.roll({a}, {r.randint(-n, n)}, {d})"]
    return b.try_stmt(r.choice(options))


def op_image(b):
    """Upsampling and group norm of 4-d values."""
    a = b.pick(lambda t: t.dim() == 4 and t.numel() > 0 and t.numel() <= 1 << 14)
    if a is None:
        return False
    t, r = b.values[a], b.rng
    how = r.randrange(3)
    if how == 0:
        return b.try_stmt(f"F.interpolate({a}, scale_factor={r.choice([2, 3])}, mode='nearest')")
    if how == 1:
        corners = r.random() < 0.5
        return b.try_stmt(f"F.interpolate({a}.float(), scale_factor=2, mode='bilinear', align_corners={corners})")
    c = t.shape[1]
    groups = r.choice([k for k in (1, 2, c) if c % k == 0])
    w = b.const(f"torch.randn({c}, generator=g)")
    bias = b.const(f"torch.randn({c}, generator=g)")
    return b.try_stmt(f"F.group_norm({a}.float(), {groups}, {w}, {bias})")


def op_repeat(b):
    """An earlier statement again, on the same values: work the plan computes
    once (codegen/common_nodes.h) unless it draws random numbers."""
    if not b.p.stmts:
        return False
    var, expr = b.rng.choice(b.p.stmts)
    return b.try_stmt(expr, sized_by_data=var in b.varying)  # (sized by the data as the first was)


OPS = [(op_pointwise, 6), (op_reduce, 2), (op_row, 2), (op_view, 3), (op_cat, 1), (op_index, 1), (op_pool, 1),
       (op_matmul, 1), (op_conv, 1), (op_in_place, 1), (op_scatter, 1), (op_python_constant, 1), (op_repeat, 1), (op_by_data, 1),
       (op_decision, 1), (op_order, 1), (op_image, 1)]


def generate(seed):
    b = Builder(seed)
    for _ in range(b.rng.randint(1, 3)):
        b.add_input()
    target = b.rng.randint(2, 30)
    fns, weights = zip(*OPS)
    for _ in range(target * 4):
        if len(b.p.stmts) >= target:
            break
        b.rng.choices(fns, weights)[0](b)
    if not b.p.stmts:
        b.try_stmt("x0.reshape(-1)[:64] * 1.5")
    produced = [v for v, _ in b.p.stmts]
    b.p.outputs = sorted(set([produced[-1]] + b.rng.sample(produced, min(len(produced), b.rng.randint(0, 2)))),
                         key=produced.index)
    return b.p


# -- running and comparing ------------------------------------------------------------------------

def _error(got, want):
    """max |got - want| over the finite elements of `want`, relative to its
    largest magnitude (at least 1e-2: outputs near 0 are compared absolutely)."""
    g, w = got.detach().double().cpu(), want.detach().double().cpu()
    finite = torch.isfinite(w) & torch.isfinite(g)
    if not finite.any():
        return 0.0
    scale = max(w[finite].abs().max().item(), 1e-2)
    return (g[finite] - w[finite]).abs().max().item() / scale


def _eager_noise(fn, reference, args):
    """Eager's errors from float64 (one per output, the largest of four
    samples) on the inputs nudged by one and two bfloat16 ulps either way: a
    sample of the rounding noise of a low-precision program beside the one
    the call made. One sample can be lucky: a sum that cancels magnifies
    one-ulp differences of its terms (fusion keeping a product in float32
    moves them) far past the error eager happened to make (fuzzer seed
    4512013578: eager 1.2e-2, the fused plan 3.9e-2, eager on nudged inputs
    of that order). Seed 2701014229, `mean(x * x) + 0.105 - 0.768` in bf16,
    cancels to about 0.13: eager's error was 9e-4 on the call's inputs, and
    from 2e-3 to 2.8e-2 on the four nudged ones; the plan, which keeps the
    product, the mean and the sums in float32, was off by 1.4e-2. None where
    the nudged program cannot run."""
    samples = []  # one list of errors (one per output) a nudge
    for ulps in (1, -1, 2, -2):
        nudged = [a * (1 + ulps * 2 ** -7) if a.is_floating_point() else a for a in args]
        try:
            want = fn(*nudged)
            refs = reference(*[a.double() if a.is_floating_point() else a for a in nudged])
        except Exception:  # noqa: BLE001  (an estimate only)
            return None
        samples.append([_error(w, r) if w.shape == r.shape else 0.0 for w, r in zip(want, refs)])
    return [max(errors) for errors in zip(*samples)]


def _close(got, want, reference, low_precision, eager_noise=0.0):
    """Why `got` differs from eager's `want` ("" if it does not), judged
    against the program computed in float64 (`reference`): the compiled
    result may be as far from it as eager is, twice over, plus a tolerance (a
    few ulps of float32, or of bfloat16 for programs that compute in bf16/f16
    anywhere). A program can magnify one ulp (sin of a large sum, a norm over
    a near-zero spread) and the reference keeps that from counting; and eager
    rounds every bf16 intermediate (on CPU, Python scalars too) where fused
    kernels keep float32, as Inductor does. eager_noise: a second sample of
    eager's error (_eager_noise), for low-precision programs."""
    if got.dtype != want.dtype or got.shape != want.shape:
        return f"dtype/shape {got.dtype}{tuple(got.shape)} != {want.dtype}{tuple(want.shape)}"
    if not low_precision and not torch.equal(torch.isnan(got.cpu()), torch.isnan(want.cpu())):
        return "NaN positions differ"
    if reference.shape != want.shape:  # float64 selected other elements (a mask by the data): eager is the reference
        reference, eager_noise = want, 0.0
    eager_err, err = max(_error(want, reference), eager_noise), _error(got, reference)
    if err <= 2 * eager_err + TOLERANCE[torch.bfloat16 if low_precision else torch.float32]:
        return ""
    return f"max error {err:.2e} from float64, eager's {eager_err:.2e}"


@contextlib.contextmanager
def _fp32_convolutions(device):
    """cuDNN's float32 convolutions without TF32 while checking on a GPU.
    PyTorch allows TF32 there by default, and whether cuDNN uses it depends on
    the engine it picks for the layout: the channels-last activations this
    fuzzer asks for (DEEPVISOR_CHANNELS_LAST above, test-only for float32) get
    a TF32 engine where eager's NCHW tensors may get an FMA one. Seed
    2914008796, a 1x1 convolution of two channels whose sum cancels before a
    sqrt, was then 5e-4 off before the sqrt, eager 4e-8 (H100); exact with
    TF32 off. The fuzzer judges float32 programs at float32's tolerance, so
    their libraries compute in float32."""
    if device == "cpu":
        yield
        return
    conv = torch.backends.cudnn.conv
    saved, conv.fp32_precision = conv.fp32_precision, "ieee"
    try:
        yield
    finally:
        conv.fp32_precision = saved


def check(program, device="cpu"):
    """"" if deepvisor matches eager on `program`, else why not."""
    with _fp32_convolutions(device):
        return _check(program, device)


def _check(program, device):
    import deepvisor
    try:
        fn = program.make(device)
        g = deepvisor.compile(fn)
        low_precision = any(dt in (torch.bfloat16, torch.float16) for _, dt, _ in program.inputs) or \
            "bfloat16" in program.source() or "float16" in program.source()
        reference = program.make_reference(device)
        calls = [("capture", 0, 0, 0), ("replay", 0, 0, 0), ("new inputs", 1, 0, 0),
                 ("new sizes (a symbolic capture)", 2, 2, 0), ("new sizes (an instance)", 3, 5, 0),
                 ("new row lengths (a symbolic capture)", 4, 3, -1), ("new row lengths (an instance)", 5, 6, -1)]
        for call, seed, grow, dim in calls:
            args = program.example_inputs(device, seed, grow, dim)
            if grow:
                try:
                    fn(*args)
                except Exception:  # noqa: BLE001  (the program's constants fix that size)
                    continue
            try:
                want = fn(*args)  # programs never write their inputs
            except Exception:  # noqa: BLE001  (a selection by the data took a size the program's constants
                continue       # or a later op cannot take: nothing to compare)
            got = g(*args)
            refs = reference(*[a.double() if a.is_floating_point() else a for a in args])
            noise = None
            for i, (x, y, r) in enumerate(zip(got, want, refs)):
                why = _close(x, y, r, low_precision)
                if why and low_precision:  # eager's error may have been lucky: a second sample
                    noise = noise or _eager_noise(fn, reference, args)
                    why = _close(x, y, r, low_precision, noise[i]) if noise else why
                if why:
                    return f"{call}: output {i}: {why}"
        stats = deepvisor.stats(g)
        if stats["eager_calls"]:
            return f"eager calls: {stats['eager_reasons']}"
    except Exception as e:  # noqa: BLE001  (any failure of the compiler is a finding)
        return f"raised {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    return ""


def shrink(program, device="cpu"):
    """A smaller program that still fails: statements (with what depends on
    them) and outputs removed one at a time while the failure persists."""
    current = program
    changed = True
    while changed:
        changed = False
        for var, _ in reversed(current.stmts):
            candidate = _without(current, var)
            if candidate is not None and check(candidate, device):
                current, changed = candidate, True
                break
        if not changed and len(current.outputs) > 1:
            for out in current.outputs:
                candidate = _copy(current, outputs=[o for o in current.outputs if o != out])
                if check(candidate, device):
                    current, changed = candidate, True
                    break
    return current


def _copy(p, **changes):
    q = Program(p.seed)
    q.inputs, q.consts, q.stmts, q.outputs = list(p.inputs), list(p.consts), list(p.stmts), list(p.outputs)
    for k, v in changes.items():
        setattr(q, k, v)
    return q


def _without(p, var):
    """p without statement `var` and the statements and outputs that read it."""
    removed, stmts = {var}, []
    for v, expr in p.stmts:
        reads = {tok for tok in _names(expr)}
        if v in removed or reads & removed:
            removed.add(v)
        else:
            stmts.append((v, expr))
    outputs = [o for o in p.outputs if o not in removed]
    if not stmts or not outputs:
        return None
    return _copy(p, stmts=stmts, outputs=outputs)


def _names(expr):
    import re
    return set(re.findall(r"\b[vxc]\d+\b", expr))


def regression_source(program, why):
    """A regression case file for tests/python/fuzz_regressions/."""
    return (f'"""Fuzzer finding (seed {program.seed}): {why}"""\n\n'
            f"SEED = {program.seed}\nINPUTS = {program.inputs!r}\nSOURCE = '''\n{program.source()}'''\n")


def program_from_case(namespace):
    """The Program a regression case file describes."""
    p = Program(namespace["SEED"])
    p.inputs = [(tuple(s), dt, layout) for s, dt, layout in namespace["INPUTS"]]
    p.source = lambda: namespace["SOURCE"].lstrip("\n")
    return p


def regression_cases(pattern="case_*.py"):
    """The saved regression case files (fuzz_regressions/) whose names match `pattern`."""
    return sorted(glob.glob(os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz_regressions", pattern)))


def program_from_file(path):
    """The Program a regression case file at `path` describes."""
    namespace = {"torch": torch}
    with open(path) as f:
        exec(f.read(), namespace)  # noqa: S102  (a case file: SEED, INPUTS, SOURCE)
    return program_from_case(namespace)


def run(graphs, seed, device="cpu", save=None, log=print, progress=None, seconds=None):
    """Checks `graphs` programs, or as many as fit in `seconds` (then `run.checked`
    says how many); returns the failures."""
    failures = []
    run.checked = 0
    start = time.monotonic()
    for i in range(graphs):
        if seconds is not None and time.monotonic() - start > seconds:
            log(f"time budget spent after {i} programs")
            break
        if progress and i and i % 1000 == 0:
            progress(f"{i} programs, {len(failures)} failing")
        p = generate(seed * 1_000_003 + i)
        why = check(p, device)
        run.checked = i + 1
        if not why:
            continue
        small = shrink(p, device)
        why = check(small, device) or why
        failures.append((small, why))
        log(f"program {p.seed} fails: {why}\n{small.source()}")
        if save:
            os.makedirs(save, exist_ok=True)
            name = hashlib.sha1(small.source().encode()).hexdigest()[:10]
            with open(os.path.join(save, f"case_{name}.py"), "w") as f:
                f.write(regression_source(small, why))
    return failures


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--graphs", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--save", default=None, help="write each shrunk failing program here as a regression case")
    ap.add_argument("--seconds", type=float, default=None, help="stop after this long (the count run is printed)")
    a = ap.parse_args()
    torch.manual_seed(0)
    try:
        failures = run(a.graphs, a.seed, a.device, a.save, progress=lambda m: print(m, file=sys.stderr, flush=True),
                       seconds=a.seconds)
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        return 2
    print(f"{run.checked} programs, seed {a.seed}, {a.device}: {len(failures)} failing")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
