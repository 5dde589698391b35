"""The operator test catalogue shared by the CPU suite (test_ops.py) and the GPU
suite (tests/gpu/test_ops_gpu.py).

An OpCase is a function of tensors, an input builder and the dtypes it runs
in. Inputs come from a seeded CPU generator in float32 (or integers) and are
then moved to the device and dtype, so both suites see the same values. Each
op family is run over several shapes: an odd size, a broadcasting case and
non-contiguous inputs (transposed, sliced with a step -- which also leaves the
data pointer unaligned -- and expanded with a zero stride).

Tolerances: see DEFAULT_TOLERANCE; a case loosens them only where eager itself
computes differently (its `why` says how).
"""

import dataclasses
import math
from typing import Callable

import torch
import torch.nn.functional as F
import torch.utils._pytree

import deepvisor

F32, BF16, F16, F64 = torch.float32, torch.bfloat16, torch.float16, torch.float64
I32, I64, B8 = torch.int32, torch.int64, torch.bool

FLOATS = (F32, BF16)
FLOATS_F16 = (F32, BF16, F16)
INTS = (I32, I64)
NUMERIC = FLOATS + INTS
NUMERIC_F16 = FLOATS_F16 + INTS
ALL = NUMERIC + (B8,)

SHORT = {F32: "f32", BF16: "bf16", F16: "f16", F64: "f64", I32: "i32", I64: "i64", B8: "b8"}

# (rtol, atol) per device kind and dtype.
#  - float32 on CPU: the interpreter computes in float32 like eager.
#  - float32 on GPU: CUDA's math functions and reduction orders differ from
#    eager's by a few ulps.
#  - bfloat16 / float16: deepvisor computes a fused chain in float32 and rounds
#    once at the end; eager may round in between, so one or two ulps of the
#    16-bit type (bf16: 2^-8 = 0.4%) apart are expected.
#  - integers and bools: exact.
DEFAULT_TOLERANCE = {
    "cpu": {F32: (1e-5, 1e-6), F64: (1e-7, 1e-9), BF16: (1.6e-2, 1.6e-2), F16: (2e-3, 1e-3)},
    "cuda": {F32: (1e-4, 1e-5), F64: (1e-7, 1e-9), BF16: (1.6e-2, 1.6e-2), F16: (2e-3, 1e-3)},
}


# ---------------------------------------------------------------------------
# Inputs


class Inputs:
    """Seeded random tensors for one case on one device, in one dtype."""

    def __init__(self, device, dtype, seed=0):
        self.device = torch.device(device)
        self.dtype = dtype
        self.gen = torch.Generator().manual_seed(20240 + seed)

    def tensor(self, shape, kind="normal", layout="contiguous", dtype=None, scale=1.0, shift=0.0):
        """A tensor of `shape` and `dtype` (default: the case's dtype).

        kind: normal (randn * scale; ints in [-5, 5]), positive (> 0), nonzero,
              small_int (integers in [-3, 3] in any dtype: ties for
              comparisons, zeros for logical ops), exponent (ints in [0, 3]),
              near_one (1 + 0.05 randn; ints +-1 or +-2), bool.
        layout: contiguous, transposed (last two dims), sliced (every other
              element of the last dim from offset 1: a non-unit stride and an
              unaligned data pointer), expanded (stride 0 along dim 0).
        """
        dtype = dtype or self.dtype
        shape = tuple(shape)
        base = _base_shape(shape, layout)
        values = self._values(base, kind, dtype, scale)
        if shift:
            values = values + shift
        return _with_layout(values.to(self.device, dtype), shape, layout)

    def scalar_tensor(self, value, dtype):
        return torch.tensor(value, dtype=dtype, device=self.device)

    def indices(self, shape, high, dtype=None, layout="contiguous", low=0):
        """Indices in [low, high) (default dtype int64), in `layout` (see tensor())."""
        shape = tuple(shape)
        values = self._randint(low, high, _base_shape(shape, layout))
        return _with_layout(values.to(self.device, dtype or I64), shape, layout)

    def _randn(self, shape):
        return torch.randn(shape, generator=self.gen)

    def _randint(self, low, high, shape):
        return torch.randint(low, high, shape, generator=self.gen)

    def _sign(self, shape):
        return self._randint(0, 2, shape) * 2 - 1

    def _values(self, shape, kind, dtype, scale):
        floating = dtype.is_floating_point
        if dtype == B8 or kind == "bool":
            if kind in ("positive", "nonzero"):
                return torch.ones(shape)
            return self._randint(0, 2, shape).bool()
        if kind == "normal":
            return self._randn(shape) * scale if floating else self._randint(-5, 6, shape)
        if kind == "positive":
            return self._randn(shape).abs() * scale + 0.1 if floating else self._randint(1, 6, shape)
        if kind == "nonzero":
            if floating:
                return (self._randn(shape).abs() * scale + 0.25) * self._sign(shape)
            return self._randint(1, 6, shape) * self._sign(shape)
        if kind == "small_int":
            return self._randint(-3, 4, shape)
        if kind == "exponent":
            return self._randn(shape) if floating else self._randint(0, 4, shape)
        if kind == "near_one":
            if dtype in (BF16, F16):
                # Powers of two: eager multiplies 16-bit floats in their own
                # precision (prod of bf16 rounds at every step); these stay exact.
                return 2.0 ** self._randint(-1, 2, shape) * self._sign(shape)
            if floating:
                return 1 + 0.05 * self._randn(shape)
            return self._randint(1, 3, shape) * self._sign(shape)
        raise ValueError(f"unknown value kind {kind}")


def _base_shape(shape, layout):
    if layout == "contiguous":
        return shape
    if layout == "transposed":
        return shape[:-2] + (shape[-1], shape[-2])
    if layout == "sliced":
        return shape[:-1] + (2 * shape[-1] + 1,)
    if layout == "expanded":
        return (1,) + shape[1:]
    raise ValueError(f"unknown layout {layout}")


def _with_layout(t, shape, layout):
    if layout == "transposed":
        t = t.transpose(-1, -2)
    elif layout == "sliced":
        t = t[..., 1::2]
    elif layout == "expanded":
        t = t.expand(shape)
    assert tuple(t.shape) == shape, (t.shape, shape)
    return t


# ---------------------------------------------------------------------------
# Cases


@dataclasses.dataclass
class OpCase:
    name: str
    fn: Callable
    build: Callable          # Inputs -> tuple of arguments
    dtypes: tuple
    tolerance: dict = dataclasses.field(default_factory=dict)  # dtype -> (rtol, atol), loosens the default
    why: str = ""            # why the tolerance is loosened
    allowed_fallbacks: frozenset = frozenset()  # ops that may run through ATen
    min_kernels: int = 1     # the compiled plan runs at least this many kernels
    skips: dict = dataclasses.field(default_factory=dict)  # (device type, dtype) -> why it is not compared there
    exact: bool = False      # pure data movement: bit-identical to eager in every dtype

    def args(self, device, dtype, seed=0):
        """The case's arguments: an input builder (device, dtype) -> args."""
        return tuple(self.build(Inputs(device, dtype, seed)))

    def tolerances(self, dtype, device="cpu"):
        """(rtol, atol) for an output of `dtype` (integer ops may return floats)."""
        kind = torch.device(device).type
        if dtype in (B8, I32, I64) or self.exact:
            return 0.0, 0.0
        rtol, atol = DEFAULT_TOLERANCE[kind][dtype]
        if dtype in self.tolerance:
            rtol = max(rtol, self.tolerance[dtype][0])
            atol = max(atol, self.tolerance[dtype][1])
        return rtol, atol


CASES = []


def case(name, fn, build, dtypes, **kw):
    c = OpCase(name, fn, build, tuple(dtypes), **kw)
    assert all(c.name != other.name for other in CASES), name
    CASES.append(c)
    return c


def one(shape, kind="normal", layout="contiguous", scale=1.0):
    return lambda inp: (inp.tensor(shape, kind, layout, scale=scale),)


def two(shape_a, shape_b, kind_a="normal", kind_b="normal", layout_a="contiguous", layout_b="contiguous",
        dtype_b=None):
    return lambda inp: (inp.tensor(shape_a, kind_a, layout_a),
                        inp.tensor(shape_b, kind_b, layout_b, dtype=dtype_b))


ODD = (37, 129)
SMALL3 = (3, 5, 7)

# Unary shapes: an odd size, a rank-3 tensor read through a step (unaligned),
# a transposed view and a broadcast (expanded, stride-0) input.
UNARY_SHAPES = (
    ("odd", ODD, "contiguous"),
    ("sliced3d", SMALL3, "sliced"),
    ("transposed", ODD, "transposed"),
    ("expanded", ODD, "expanded"),
)

# Transcendental ops: eager uses SLEEF's vectorized functions (<= 1 ulp) and
# the interpreter the C library's; CUDA's differ by up to 2 ulps. Both are far
# inside the default float32 tolerance except near a zero of the result,
# which the absolute tolerance covers.
UNARY = [
    # name, fn, value kind, scale, dtypes
    ("neg", torch.neg, "normal", 1, NUMERIC_F16),
    ("abs", torch.abs, "normal", 1, NUMERIC_F16),
    ("exp", torch.exp, "normal", 2, FLOATS_F16 + (I32,)),
    ("exp2", torch.exp2, "normal", 2, FLOATS),
    ("log", torch.log, "positive", 2, FLOATS + (I64,)),
    ("log1p", torch.log1p, "positive", 2, FLOATS),
    ("sqrt", torch.sqrt, "positive", 2, FLOATS_F16 + (I32,)),
    ("rsqrt", torch.rsqrt, "positive", 2, FLOATS),
    ("sin", torch.sin, "normal", 3, FLOATS),
    ("cos", torch.cos, "normal", 3, FLOATS),
    ("tanh", torch.tanh, "normal", 2, FLOATS_F16),
    ("sigmoid", torch.sigmoid, "normal", 3, FLOATS_F16 + (I32,)),
    ("relu", torch.relu, "normal", 1, NUMERIC_F16),
    ("gelu", F.gelu, "normal", 2, FLOATS_F16),  # see GELU_TOLERANCE
    ("gelu_tanh", lambda x: F.gelu(x, approximate="tanh"), "normal", 2, FLOATS_F16),
    ("silu", F.silu, "normal", 3, FLOATS),
    ("erf", torch.erf, "normal", 1, FLOATS),
    ("reciprocal", torch.reciprocal, "nonzero", 1, FLOATS + (I32,)),
    ("floor", torch.floor, "normal", 4, NUMERIC),
    ("ceil", torch.ceil, "normal", 4, NUMERIC),
    ("round", torch.round, "normal", 4, NUMERIC),
    ("round_decimals2", lambda x: torch.round(x, decimals=2), "normal", 4, FLOATS),
    ("round_decimals_neg1", lambda x: torch.round(x, decimals=-1), "normal", 100, FLOATS),
    ("sign", torch.sign, "small_int", 1, NUMERIC),
    ("trunc", torch.trunc, "normal", 4, FLOATS),
]

# gelu(x) = x/2 (1 + erf(x / sqrt 2)) cancels for x < -2: eager's vectorized
# erf (a polynomial, ~1e-7 absolute error) is then off by ~1e-6 absolute.
GELU_TOLERANCE = {F32: (1e-5, 5e-6)}
# round(x, decimals=d < 0) in bf16/f16: eager on CUDA rounds x / 10^-d to the
# 16-bit type before rounding to an integer (it computes in scalar_t); eager
# on CPU, like deepvisor everywhere, computes in float32. Results differ by 10.
_ROUND_SKIPS = {("cuda", BF16): "eager CUDA rounds x / 10 to bf16 first; eager CPU does not",
                ("cuda", F16): "eager CUDA rounds x / 10 to f16 first; eager CPU does not"}
for _name, _fn, _kind, _scale, _dtypes in UNARY:
    for _variant, _shape, _layout in UNARY_SHAPES:
        case(f"{_name}[{_variant}]", _fn, one(_shape, _kind, _layout, _scale), _dtypes,
             tolerance=GELU_TOLERANCE if _name == "gelu" else {},
             why="1 + erf(x/sqrt 2) cancels; eager's erf is a polynomial" if _name == "gelu" else "",
             skips=_ROUND_SKIPS if _name == "round_decimals_neg1" else {})
# Large values: eager divides by 10 (multiplying by 0.1 rounds differently).
case("round_decimals_neg1[large]", lambda x: torch.round(x, decimals=-1), one(ODD, scale=1e7), (F32,))

# round() on exact halves: half to even, like eager.
case("round[halves]", torch.round,
     lambda inp: (inp.tensor(ODD, "small_int", shift=0.5),), FLOATS)
# A pointwise chain: deepvisor keeps float32 between the ops.
case("chain[exp_tanh_mul]", lambda x: torch.tanh(torch.exp(x) * 0.5) - x.abs(),
     one(ODD, "normal", "transposed"), FLOATS_F16)

# Special values: signed zeros, halves, infinities, NaN, huge and tiny numbers.
SPECIAL_VALUES = [0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 1.5, 2.5, -2.5, math.inf, -math.inf, math.nan,
                  1e30, -1e30, 88.0, -104.0, 1e-30, 3.0, -7.25]


def _special(shape, finite=False):
    values = [v for v in SPECIAL_VALUES if math.isnan(v) or abs(v) < 6e4] if finite else SPECIAL_VALUES

    def build(inp):
        v = torch.tensor(values, device=inp.device).to(inp.dtype)
        if len(shape) == 1:
            return (v,)
        return (v[:, None], v[None, :])  # every pair
    return build


# Eager's exact gelu gives NaN for +-inf (and for f16 overflow): a quirk of its
# vectorized erf formula; deepvisor gives the limits. Compared on finite values.
for _name, _fn, _kind, _scale, _dtypes in UNARY:
    if not _name.startswith("round_decimals"):
        case(f"{_name}[special_values]", _fn, _special((1,), finite=_name == "gelu"),
             tuple(d for d in _dtypes if d.is_floating_point))

# -- binary arithmetic ---------------------------------------------------------

BINARY_SHAPES = (
    ("same", ODD, ODD, "contiguous", "contiguous"),
    ("outer", (37, 1), (1, 129), "contiguous", "contiguous"),
    ("bias", ODD, (129,), "contiguous", "contiguous"),
    ("strided", ODD, ODD, "transposed", "sliced"),
    ("rank3", SMALL3, (5, 1), "sliced", "contiguous"),
)

BINARY = [
    # name, fn, kind of a, kind of b, dtypes
    ("add", torch.add, "normal", "normal", ALL),
    ("add_alpha", lambda a, b: torch.add(a, b, alpha=2), "normal", "normal", NUMERIC),
    ("sub", torch.sub, "normal", "normal", NUMERIC_F16),
    ("sub_alpha", lambda a, b: torch.sub(a, b, alpha=3), "normal", "normal", NUMERIC),
    ("sub_alpha_frac", lambda a, b: torch.sub(a, b, alpha=0.25), "normal", "normal", FLOATS),
    ("mul", torch.mul, "normal", "normal", ALL + (F16,)),
    ("div", torch.div, "normal", "nonzero", NUMERIC_F16),
    ("div_trunc", lambda a, b: torch.div(a, b, rounding_mode="trunc"), "normal", "nonzero", NUMERIC),
    ("div_floor", lambda a, b: torch.div(a, b, rounding_mode="floor"), "normal", "nonzero", NUMERIC),
    ("pow", torch.pow, "positive", "exponent", NUMERIC),
    ("maximum", torch.maximum, "normal", "normal", ALL + (F16,)),
    ("minimum", torch.minimum, "normal", "normal", ALL),
    ("remainder", torch.remainder, "normal", "nonzero", NUMERIC),
]

for _name, _fn, _ka, _kb, _dtypes in BINARY:
    for _variant, _sa, _sb, _la, _lb in BINARY_SHAPES:
        case(f"{_name}[{_variant}]", _fn, two(_sa, _sb, _ka, _kb, _la, _lb), _dtypes)

# The floor division of floats rounds like Python's // (1.0 // 0.1 == 9), not
# like floor(1.0 / 0.1) == 10; remainder is fmod-based.
_DIVIDENDS = [1.0, -1.0, 0.3, -0.3, 7.0, -7.0, 0.7, 5.5, 0.0, -0.0, 1e-3, 3.0]
_DIVISORS = [0.1, 0.1, 0.1, 0.1, 0.7, 0.7, -0.1, -1.1, 0.3, -0.3, -0.1, 0.3]


def _division_edges(inp):
    a = torch.tensor(_DIVIDENDS, dtype=inp.dtype, device=inp.device)
    b = torch.tensor(_DIVISORS, dtype=inp.dtype, device=inp.device)
    return a, b


for _name, _fn in [("add", torch.add), ("sub", torch.sub), ("mul", torch.mul), ("div", torch.div),
                   ("div_trunc", lambda a, b: torch.div(a, b, rounding_mode="trunc")),
                   ("div_floor", lambda a, b: torch.div(a, b, rounding_mode="floor")),
                   ("remainder", torch.remainder), ("pow", torch.pow), ("maximum", torch.maximum),
                   ("minimum", torch.minimum), ("lt", torch.lt), ("eq", torch.eq)]:
    case(f"{_name}[special_pairs]", _fn, _special((1, 1)), FLOATS)

case("div_floor[edges]", lambda a, b: torch.div(a, b, rounding_mode="floor"), _division_edges, FLOATS)
case("floor_divide[edges]", lambda a, b: a // b, _division_edges, FLOATS)
case("div_trunc[edges]", lambda a, b: torch.div(a, b, rounding_mode="trunc"), _division_edges, FLOATS)
case("remainder[edges]", torch.remainder, _division_edges, FLOATS)

# Tensor op Python scalar: a float scalar promotes integer tensors to float32,
# an int scalar keeps the tensor's dtype.
SCALAR_BINARY = [
    ("add_scalar_float", lambda x: x + 2.5, "normal", NUMERIC),
    ("add_scalar_int", lambda x: x + 3, "normal", NUMERIC),
    ("add_scalar_alpha", lambda x: torch.add(x, 3, alpha=2), "normal", NUMERIC),
    ("rsub_scalar", lambda x: 1.5 - x, "normal", NUMERIC),
    ("sub_scalar_int", lambda x: x - 2, "normal", NUMERIC),
    ("mul_scalar_float", lambda x: x * 1.5, "normal", ALL),
    ("mul_scalar_int", lambda x: x * 3, "normal", NUMERIC),
    ("div_scalar", lambda x: x / 3, "normal", NUMERIC),
    ("div_scalar_floor", lambda x: torch.div(x, -3, rounding_mode="floor"), "normal", NUMERIC),
    ("div_scalar_trunc", lambda x: torch.div(x, 3, rounding_mode="trunc"), "normal", NUMERIC),
    ("remainder_scalar", lambda x: torch.remainder(x, 3), "normal", NUMERIC),
    ("remainder_scalar_neg", lambda x: torch.remainder(x, -2.5), "normal", NUMERIC),
    ("pow_scalar2", lambda x: torch.pow(x, 2), "normal", NUMERIC_F16),
    ("pow_scalar3", lambda x: x ** 3, "normal", NUMERIC),
    ("pow_scalar_half", lambda x: torch.pow(x, 0.5), "positive", NUMERIC),
    ("pow_scalar_minus1", lambda x: torch.pow(x, -1), "nonzero", FLOATS),
    ("pow_scalar_minus_half", lambda x: torch.pow(x, -0.5), "positive", FLOATS),
    ("pow_scalar_1_7", lambda x: torch.pow(x, 1.7), "positive", NUMERIC),
    ("pow_scalar_0", lambda x: torch.pow(x, 0), "normal", NUMERIC),
    ("pow_scalar_base", lambda x: torch.pow(2.0, x), "normal", NUMERIC),
    ("pow_scalar_base_rpow", lambda x: 3 ** x, "exponent", NUMERIC),
    ("maximum_scalar_clamp_min", lambda x: x.clamp_min(0.25), "normal", FLOATS),
    ("minimum_scalar_clamp_max", lambda x: x.clamp_max(-1), "normal", NUMERIC),
]

for _name, _fn, _kind, _dtypes in SCALAR_BINARY:
    for _variant, _shape, _layout in UNARY_SHAPES[:3]:
        case(f"{_name}[{_variant}]", _fn, one(_shape, _kind, _layout), _dtypes)

# PyTorch's type promotion: the second operand has a fixed dtype.
PROMOTION_OPS = [
    ("add", torch.add),
    ("mul", torch.mul),
    ("div", torch.div),
    ("maximum", torch.maximum),
    ("lt", torch.lt),
]
for _name, _fn in PROMOTION_OPS:
    for _other in (F32, I64, B8, F16):
        case(f"{_name}[promote_{SHORT[_other]}]", _fn,
             two(ODD, (129,), "normal", "nonzero", dtype_b=_other), ALL)
    # A zero-dim float64 tensor does not promote a dimensioned tensor of the
    # same category; it does promote integer tensors (to the default float32).
    case(f"{_name}[promote_0d_f64]", _fn,
         lambda inp: (inp.tensor(ODD, "normal"), inp.scalar_tensor(1.75, F64)), NUMERIC)

# -- comparisons and logic ----------------------------------------------------------

COMPARISON_SHAPES = (
    ("same", ODD, ODD, "contiguous", "contiguous"),
    ("outer", (37, 1), (1, 129), "contiguous", "contiguous"),
    ("strided", ODD, (129,), "transposed", "sliced"),
)
for _name in ("eq", "ne", "lt", "le", "gt", "ge"):
    _fn = getattr(torch, _name)
    for _variant, _sa, _sb, _la, _lb in COMPARISON_SHAPES:
        case(f"{_name}[{_variant}]", _fn, two(_sa, _sb, "small_int", "small_int", _la, _lb), ALL)
    case(f"{_name}[scalar_int]", lambda x, fn=_fn: fn(x, 1), one(ODD, "small_int", "sliced"), ALL)
    case(f"{_name}[scalar_float]", lambda x, fn=_fn: fn(x, 0.5), one(ODD, "small_int", "transposed"), NUMERIC)
    case(f"{_name}[operator]", lambda a, b, name=_name: getattr(a, f"__{name}__")(b),
         two(ODD, ODD, "small_int", "small_int"), NUMERIC)

for _name in ("logical_and", "logical_or", "logical_xor"):
    _fn = getattr(torch, _name)
    for _variant, _sa, _sb, _la, _lb in COMPARISON_SHAPES:
        case(f"{_name}[{_variant}]", _fn, two(_sa, _sb, "small_int", "small_int", _la, _lb), ALL)
    case(f"{_name}[mixed_bool]", _fn, two(ODD, (129,), "small_int", "bool", dtype_b=B8), NUMERIC)
for _variant, _shape, _layout in UNARY_SHAPES:
    case(f"logical_not[{_variant}]", torch.logical_not, one(_shape, "small_int", _layout), ALL)
case("bitwise_not_bool[odd]", lambda x: ~x, one(ODD, "bool"), (B8,))
for _name in ("and", "or", "xor"):  # masks combined with &, |, ^ (sliding-window attention)
    case(f"bitwise_{_name}_bool[broadcast]", lambda a, b, name=_name: getattr(torch, f"bitwise_{name}")(a > 0, b > 0),
         two(ODD, (129,), "normal", "normal", "transposed", "contiguous"), (F32,))
    case(f"bitwise_{_name}_bool[scalar]", lambda a, name=_name: getattr(torch, f"bitwise_{name}")(a > 0, True),
         one(ODD, "normal", "sliced"), (F32,))
case("new_ones_zeros_full[odd]", lambda x: x.new_ones(x.shape) * x + x.new_zeros(x.shape[0], 1) + x.new_full((x.shape[-1],), 2.5),
     one(ODD, "normal"), FLOATS)
case("isnan[odd]", lambda x: torch.isnan(torch.log(x)), one(ODD, "normal"), FLOATS)

# -- where and clamp ----------------------------------------------------------------


def _where_inputs(inp):
    return (inp.tensor((37, 1), "bool", dtype=B8), inp.tensor((1, 129), "normal"),
            inp.tensor((129,), "normal", "sliced"))


case("where[tensors]", lambda x, y: torch.where(x > 0, x, y), two(ODD, ODD), ALL)
case("where[broadcast]", torch.where, _where_inputs, ALL)
case("where[strided]", lambda x, y: torch.where(x > y, x, y), two(ODD, ODD, layout_a="transposed",
                                                                  layout_b="sliced"), ALL)
case("where[scalar_other]", lambda x: torch.where(x > 0, x, 0.0), one(ODD), NUMERIC)
case("where[scalar_other_int]", lambda x: torch.where(x > 0, x, 2), one(ODD), NUMERIC)
case("where[scalar_self]", lambda x: torch.where(x < 0, -1.5, x), one(ODD, layout="transposed"), NUMERIC)
case("where[scalars]", lambda x: torch.where(x, 2.0, -1.0), one(ODD, "bool"), (B8,))
case("where[scalars_cond_from_tensor]", lambda x: torch.where(x > 1, 1, 0), one(SMALL3, layout="sliced"),
     NUMERIC)
# Not in the list of lowered ops: runs as a fallback inside the plan.
case("masked_fill", lambda x: x.masked_fill(x < 0, 0.5), one(ODD), FLOATS,
     allowed_fallbacks=frozenset({"aten::masked_fill.Scalar"}))

CLAMP = [
    ("clamp_min", lambda x: torch.clamp(x, min=-1)),
    ("clamp_max", lambda x: torch.clamp(x, max=2)),
    ("clamp_both", lambda x: torch.clamp(x, -1, 2)),
    ("clamp_inverted", lambda x: torch.clamp(x, 2, -1)),  # min > max: everything becomes max
    ("clamp_float_bounds", lambda x: torch.clamp(x, -0.5, 1.5)),
]
for _name, _fn in CLAMP:
    for _variant, _shape, _layout in UNARY_SHAPES:
        case(f"{_name}[{_variant}]", _fn, one(_shape, "normal", _layout, scale=2), NUMERIC)


def _clamp_tensor_inputs(inp):
    return (inp.tensor(ODD, "normal", "transposed", scale=2), inp.tensor((129,), "normal") - 1,
            inp.tensor((37, 1), "normal") + 1)


case("clamp_tensor[both]", torch.clamp, _clamp_tensor_inputs, NUMERIC)
case("clamp_tensor[min]", lambda x, lo: torch.clamp(x, min=lo), two(ODD, (129,)), NUMERIC)
case("clamp_tensor[max]", lambda x, hi: torch.clamp(x, max=hi), two(ODD, (37, 1)), NUMERIC)
case("clamp_tensor[clamp_min_tensor]", lambda x, lo: x.clamp_min(lo), two(ODD, (129,)), NUMERIC)

# -- casts (the _to_copy lowering) ----------------------------------------------------

CAST_TARGETS = [
    ("float", F32, lambda x: x.float()),
    ("half", F16, lambda x: x.half()),
    ("bfloat16", BF16, lambda x: x.bfloat16()),
    ("int", I32, lambda x: x.int()),
    ("long", I64, lambda x: x.long()),
    ("bool", B8, lambda x: x.bool()),
]
CAST_SOURCES = (F32, BF16, F16, I32, I64, B8)


def _cast_inputs(shape, layout):
    # Floats with fractions (truncation toward zero) and exact zeros (bool).
    def build(inp):
        x = inp.tensor(_base_shape(shape, layout), "normal", scale=6)
        if x.dtype != B8:
            x = torch.where(x.abs() < 1, torch.zeros_like(x), x)
        return (_with_layout(x, shape, layout),)  # the layout after the zeros, which would copy
    return build


for _name, _target, _method in CAST_TARGETS:
    _sources = tuple(d for d in CAST_SOURCES if d != _target)  # a cast to the same dtype is no op
    case(f"cast_{_name}[method]", _method, _cast_inputs(ODD, "contiguous"), _sources)
    case(f"cast_{_name}[to_transposed]", lambda x, t=_target: x.to(t), _cast_inputs(ODD, "transposed"),
         _sources)
    case(f"cast_{_name}[to_dtype_kwarg_sliced]", lambda x, t=_target: x.to(dtype=t),
         _cast_inputs(SMALL3, "sliced"), _sources)
    case(f"cast_{_name}[then_sum]", lambda x, t=_target: x.to(t).sum(-1), _cast_inputs(ODD, "contiguous"),
         _sources)
    case(f"cast_{_name}[expanded]", _method, _cast_inputs(ODD, "expanded"), _sources)
case("cast[int64_wraps_to_int32]", lambda x: (x * 1000000007).int(), one(ODD, "normal"), (I64,))
case("cast[float_chain_roundtrip]", lambda x: x.to(BF16).float() * 3, one(ODD), (F32,))

# -- reductions -------------------------------------------------------------------------

# (variant, shape, layout, kwargs); dim None means the op's all-dims form.
REDUCTION_SHAPES = (
    ("dim1", ODD, "contiguous", dict(dim=1)),
    ("dim0_keepdim", ODD, "contiguous", dict(dim=0, keepdim=True)),
    ("neg_dim", SMALL3, "contiguous", dict(dim=-1)),
    ("dims02", SMALL3, "contiguous", dict(dim=(0, 2))),
    ("neg_dims_keepdim", SMALL3, "sliced", dict(dim=(-1, -2), keepdim=True)),
    ("transposed", ODD, "transposed", dict(dim=1)),
    ("expanded_dim0", ODD, "expanded", dict(dim=0)),  # a broadcast input: reduces along stride 0
    ("all_dims", ODD, "contiguous", None),
    ("all_dims_list", SMALL3, "contiguous", dict(dim=(0, 1, 2))),
)

# Sums over long rows are rounded in a different order by eager (vectorized,
# cascaded) and by deepvisor (tree order): the error of a float32 sum of n
# terms grows like sqrt(n) * 2^-24 * sum|x|, so for the all-dims forms (4773
# elements of magnitude ~1) the absolute difference reaches ~1e-5.
REDUCTIONS = [
    # name, fn(x, **kw), fn(x) for all dims, value kind, dtypes, tolerance
    ("sum", torch.sum, torch.sum, "normal", ALL + (F16,), {F32: (1e-5, 2e-5)}),
    ("mean", torch.mean, torch.mean, "normal", FLOATS_F16, {F32: (1e-5, 2e-6)}),
    ("amax", torch.amax, torch.amax, "normal", NUMERIC_F16, {}),
    ("amin", torch.amin, torch.amin, "normal", NUMERIC, {}),
    ("prod", torch.prod, torch.prod, "near_one", NUMERIC, {F32: (2e-5, 1e-6)}),
]
_WHY_SUM = "float32 sums of thousands of terms: eager and deepvisor add in different orders"
_WHY_PROD = "float32 products of ~129 terms: each rounding is 2^-24 relative, the orders differ"


def _reduction_fn(fn, fn_all, kwargs):
    if kwargs is None:
        return fn_all
    return lambda x: fn(x, **kwargs)


for _name, _fn, _fn_all, _kind, _dtypes, _tol in REDUCTIONS:
    for _variant, _shape, _layout, _kw in REDUCTION_SHAPES:
        if _name == "prod" and _kw is not None and not isinstance(_kw["dim"], int):
            continue  # prod reduces one dim at a time
        case(f"{_name}[{_variant}]", _reduction_fn(_fn, _fn_all, _kw), one(_shape, _kind, _layout), _dtypes,
             tolerance=_tol, why=_WHY_PROD if _name == "prod" else _WHY_SUM)
case("prod[neg_dim_keepdim_sliced]", lambda x: torch.prod(x, -1, keepdim=True), one(SMALL3, "near_one", "sliced"),
     NUMERIC)
case("sum[dtype_float32]", lambda x: x.sum(-1, dtype=torch.float32), one(ODD), FLOATS_F16 + INTS)
case("sum[long_rows]", lambda x: x.sum(-1), one((4, 5000), "normal"), FLOATS, tolerance={F32: (1e-5, 3e-5)},
     why=_WHY_SUM)
case("amax[nan]", lambda x: torch.amax(torch.log(x), dim=1), one(ODD, "normal"), FLOATS)  # NaN propagates
case("amin[nan_all]", lambda x: torch.amin(torch.sqrt(x)), one(ODD, "normal"), FLOATS)
case("max[all]", torch.max, one(ODD, "normal", "transposed"), NUMERIC)
case("min[all]", torch.min, one(SMALL3, "normal", "sliced"), NUMERIC)
case("sum[of_product_chain]", lambda x, y: (x * y + 1).sum(dim=(0, 1)), two(SMALL3, (5, 1)), FLOATS,
     tolerance={F32: (1e-5, 1e-5)}, why=_WHY_SUM)

# var / std: eager uses Welford's algorithm, deepvisor two passes; both are
# accurate to a few ulps of the result.
for _name in ("var", "std"):
    _fn = getattr(torch, _name)
    for _corr in (0, 1, 2):
        for _variant, _shape, _layout, _kw in REDUCTION_SHAPES:
            _kwargs = dict(_kw or {}, correction=_corr)
            case(f"{_name}[{_variant}_corr{_corr}]", lambda x, fn=_fn, kw=_kwargs: fn(x, **kw),
                 one(_shape, "normal", _layout, scale=3), FLOATS, tolerance={F32: (2e-5, 1e-5)},
                 why="Welford (eager) against two passes (deepvisor): different rounding")
    case(f"{_name}[unbiased_false]", lambda x, fn=_fn: fn(x, 1, unbiased=False), one(ODD), FLOATS)
    case(f"{_name}[default]", lambda x, fn=_fn: fn(x), one(ODD, layout="transposed"), FLOATS,
         tolerance={F32: (2e-5, 1e-5)}, why="Welford (eager) against two passes (deepvisor)")

# addcmul / addcdiv: self + value * t1 (* or /) t2, broadcast.
case("addcmul[broadcast_transposed]", lambda a, b, c: torch.addcmul(a, b, c, value=0.75),
     lambda inp: (inp.tensor((1, 129)), inp.tensor(ODD, layout="transposed"), inp.tensor((37, 1))), NUMERIC_F16)
case("addcmul[default_value_sliced]", lambda a, b, c: torch.addcmul(a, b, c),
     lambda inp: (inp.tensor(SMALL3, layout="sliced"), inp.tensor(SMALL3), inp.tensor((7,))), NUMERIC)
case("addcdiv[broadcast]", lambda a, b, c: torch.addcdiv(a, b, c, value=-2),
     lambda inp: (inp.tensor(ODD), inp.tensor((1, 129)), inp.tensor(ODD, "positive")), FLOATS_F16)

# -- softmax, log_softmax, layer_norm -----------------------------------------------------

SOFTMAX_SHAPES = (
    ("last", ODD, "contiguous", -1),
    ("dim0", ODD, "contiguous", 0),
    ("rank3_dim1", SMALL3, "contiguous", 1),
    ("rank3_sliced", SMALL3, "sliced", -1),
    ("transposed", ODD, "transposed", -1),
    ("single_column", (37, 1), "contiguous", -1),
    ("expanded", ODD, "expanded", 0),
)
for _name, _fn in (("softmax", torch.softmax), ("log_softmax", torch.log_softmax)):
    for _variant, _shape, _layout, _dim in SOFTMAX_SHAPES:
        case(f"{_name}[{_variant}]", lambda x, fn=_fn, d=_dim: fn(x, d), one(_shape, "normal", _layout, scale=4),
             FLOATS_F16, tolerance={F32: (1e-5, 2e-6)},
             why="exp of shifted values, summed in a different order")
    case(f"{_name}[dtype_float32]", lambda x, fn=_fn: fn(x, -1, dtype=torch.float32), one(ODD, scale=4),
         FLOATS_F16)
case("softmax[functional_large]", lambda x: F.softmax(x, dim=-1), one(ODD, scale=30), FLOATS)
# _safe_softmax (scaled_dot_product_attention's math path with a mask): 0 in
# rows where every element is -inf; here rows masked whole and in part.
_NEG_INF = float("-inf")
case("safe_softmax[rows_masked]",
     lambda x: torch.ops.aten._safe_softmax(torch.where((x > 1.2) | (x[:, :1] > 0.6), _NEG_INF, x), -1),
     one(ODD, scale=2), FLOATS_F16, tolerance={F32: (1e-5, 2e-6)}, why="exp of shifted values, summed in a different order")
case("safe_softmax[dim0_float32_transposed]",
     lambda x: torch.ops.aten._safe_softmax(x.masked_fill(x[:1] > 0.5, _NEG_INF), 0, torch.float32),
     one(ODD, layout="transposed", scale=2), FLOATS, tolerance={F32: (1e-5, 2e-6)},
     why="exp of shifted values, summed in a different order")

# layer_norm: eager computes the moments with a vectorized Welford pass;
# deepvisor with two passes. rstd is accurate to a few ulps either way, and
# the output's absolute error scales with |x - mean| * rstd ~ 3.
_WHY_LN = "mean/variance by Welford (eager) against two passes (deepvisor)"
_LN_TOL = {F32: (1e-5, 1e-5)}


def _layer_norm_inputs(shape, norm_shape, layout, weight, bias):
    def build(inp):
        args = [inp.tensor(shape, "normal", layout, scale=2, shift=0.5)]
        if weight:
            args.append(inp.tensor(norm_shape, "normal"))
        if bias:
            args.append(inp.tensor(norm_shape, "normal"))
        return tuple(args)
    return build


LAYER_NORM = [
    ("affine", ODD, (129,), "contiguous", True, True),
    ("weight_only", ODD, (129,), "contiguous", True, False),
    ("no_affine", ODD, (129,), "transposed", False, False),
    ("two_dims", SMALL3, (5, 7), "contiguous", True, True),
    ("two_dims_sliced", SMALL3, (5, 7), "sliced", True, True),
    ("no_affine_two_dims", (4, 37, 33), (37, 33), "contiguous", False, False),
]
for _variant, _shape, _norm, _layout, _w, _b in LAYER_NORM:
    if _w and _b:
        fn = lambda x, w, b, n=_norm: F.layer_norm(x, n, w, b)
    elif _w:
        fn = lambda x, w, n=_norm: F.layer_norm(x, n, w)
    else:
        fn = lambda x, n=_norm: F.layer_norm(x, n)
    case(f"layer_norm[{_variant}]", fn, _layer_norm_inputs(_shape, _norm, _layout, _w, _b), FLOATS_F16,
         tolerance=_LN_TOL, why=_WHY_LN)
case("layer_norm[eps]", lambda x: F.layer_norm(x, (129,), eps=0.5), one(ODD), FLOATS, tolerance=_LN_TOL,
     why=_WHY_LN)


def _native_layer_norm(x, w, b):
    return torch.ops.aten.native_layer_norm(x, [129], w, b, 1e-5)  # (out, mean, rstd)


case("native_layer_norm[stats]", _native_layer_norm, _layer_norm_inputs(ODD, (129,), "contiguous", True, True),
     FLOATS, tolerance=_LN_TOL, why=_WHY_LN)

# all / any: "small_int" values hold zeros in every dtype (bool: False); the
# transposed case also reads NaN-free floats that are never zero.
for _name, _fn in (("all", torch.all), ("any", torch.any)):
    case(f"{_name}[default]", _fn, one(ODD, "small_int", "transposed"), ALL)
    case(f"{_name}[nonzero]", _fn, one(SMALL3, "nonzero", "sliced"), ALL)
    case(f"{_name}[dim]", lambda x, fn=_fn: fn(x, dim=1), one(ODD, "small_int"), ALL)
    case(f"{_name}[dim_keepdim]", lambda x, fn=_fn: fn(x, -1, keepdim=True), one(SMALL3, "small_int", "sliced"), ALL)
    case(f"{_name}[dims]", lambda x, fn=_fn: fn(x, dim=(0, 2)), one(SMALL3, "small_int"), ALL)
    case(f"{_name}[masked]", lambda x, fn=_fn: torch.where(fn(x > 0, dim=0), x, -x), one(ODD, "small_int"), NUMERIC)


# -- views --------------------------------------------------------------------------------

# (name, fn(view input) -> view, shape, layout); every view is returned as is
# and also composed with a pointwise op so a kernel reads through it.
VIEWS = [
    ("view", lambda x: x.view(111, 43), ODD, "contiguous"),
    ("view_flat", lambda x: x.view(-1), SMALL3, "contiguous"),
    ("reshape", lambda x: x.reshape(7, 15), SMALL3, "contiguous"),
    ("reshape_transposed", lambda x: x.reshape(-1, 37), ODD, "transposed"),  # copies
    ("flatten", lambda x: x.flatten(1), SMALL3, "contiguous"),
    ("permute", lambda x: x.permute(2, 0, 1), SMALL3, "contiguous"),
    ("permute_sliced", lambda x: x.permute(1, 2, 0), SMALL3, "sliced"),
    ("transpose", lambda x: x.transpose(0, 1), ODD, "contiguous"),
    ("t", lambda x: x.t(), ODD, "sliced"),
    ("expand", lambda x: x.expand(3, 37, 129), (37, 1), "contiguous"),
    ("expand_minus1", lambda x: x.unsqueeze(0).expand(4, -1, -1), ODD, "transposed"),
    ("unsqueeze", lambda x: x.unsqueeze(1), ODD, "contiguous"),
    ("unsqueeze_neg", lambda x: x.unsqueeze(-1), SMALL3, "sliced"),
    ("squeeze_dim", lambda x: x.squeeze(1), (37, 1, 5), "contiguous"),
    ("squeeze_all", lambda x: x.squeeze(), (1, 37, 1), "contiguous"),
    ("slice_step", lambda x: x[:, 1::3], ODD, "contiguous"),
    ("slice_negative_start", lambda x: x[-5:, ::2], ODD, "contiguous"),
    ("slice_both_ends", lambda x: x[2:-3, -10:], ODD, "transposed"),
    ("slice_rank3", lambda x: x[1:, ::2, 3:7:2], SMALL3, "contiguous"),
    ("narrow", lambda x: x.narrow(1, 5, 20), ODD, "sliced"),
    ("select", lambda x: x[3], ODD, "contiguous"),
    ("select_negative", lambda x: x[:, -2], ODD, "transposed"),
    ("select_last_dim", lambda x: x[..., 0], SMALL3, "sliced"),
    ("chain", lambda x: x.t()[1:, :5].reshape(-1), ODD, "contiguous"),
    ("split", lambda x: x.split(40, dim=1)[1], ODD, "contiguous"),
    ("split_last_short", lambda x: x.split(40, dim=-1)[3], ODD, "transposed"),
    ("split_with_sizes", lambda x: x.split([1, 3, 1], dim=1)[1], SMALL3, "sliced"),
    ("chunk", lambda x: x.chunk(4, 0)[3], ODD, "contiguous"),
    ("unbind", lambda x: x.unbind(0)[1], SMALL3, "contiguous"),
    ("unbind_sliced", lambda x: x.unbind(1)[2], SMALL3, "sliced"),
]
for _name, _view, _shape, _layout in VIEWS:
    # Returned as a view of the argument (no kernel), as eager does; reshape_transposed copies.
    case(f"{_name}[returned]", _view, one(_shape, "normal", _layout), ALL, min_kernels=0)
    case(f"{_name}[pointwise]", lambda x, v=_view: v(x) * 2 + 1, one(_shape, "normal", _layout), NUMERIC)
# Every piece of a split read by one kernel (GPT-2 splits its fused QKV projection).
case("split[all_pieces]", lambda x: (lambda a, b, c: a * b + c)(*x.split(43, dim=1)),
     one(ODD, "normal", "transposed"), NUMERIC)
case("unbind[all_pieces]", lambda x: (lambda a, b, c: a * b + c)(*x.unbind(0)), one(SMALL3, layout="sliced"), NUMERIC)
case("view[of_reduction]", lambda x: x.sum(-1).view(3, 5) * 2, one(SMALL3), FLOATS,
     tolerance={F32: (1e-5, 2e-6)}, why=_WHY_SUM)
case("view[pointwise_then_view]", lambda x: torch.exp(x).view(-1)[::7] + 1, one(ODD), FLOATS)


# -- in-place writes into views of computed tensors ---------------------------------------------

# The monitor records each write as its functional form and scatters it back
# into the base (select_scatter, slice_scatter, an inverse view): kernels, no
# fallback. The written tensors are computed inside, so the arguments stay
# untouched (tests/python/test_tensor_coverage.py writes into arguments).


def _write_select(x):
    y = x * 2
    y[:, 3].fill_(0)
    y[-1].add_(1)
    return y


def _write_slice_step(x):
    y = x + 1
    y[1::3, 2:-1:2] *= 2
    return y


def _write_relu_rows(x):
    y = x - 1
    y[1:, 2:].relu_()
    return y, y.sum(-1)


def _write_flat_view(x):
    y = x * 1
    y.view(-1)[::7].fill_(1)
    return y


def _write_transposed_chain(x):
    y = x * 3
    y.t()[2:5].neg_()
    return y


def _write_copy_from_another_view(x):
    y = x * 1
    y[:, :4] = x[:, -4:]
    return y


def _write_read_stale_view(x):
    y = x + 2
    row = y[3]
    y.mul_(2)
    return row + 1, y


WRITES = [
    ("select", _write_select, one(ODD)),
    ("slice_step", _write_slice_step, one(ODD, layout="transposed")),
    ("relu_rows", _write_relu_rows, one(SMALL3, layout="sliced")),
    ("flat_view", _write_flat_view, one(SMALL3)),
    ("transposed_chain", _write_transposed_chain, one(ODD)),
    ("copy_from_another_view", _write_copy_from_another_view, one(ODD, layout="sliced")),
    ("read_stale_view", _write_read_stale_view, one(ODD)),
]
for _name, _fn, _build in WRITES:
    case(f"write[{_name}]", _fn, _build, NUMERIC)


# -- fused patterns: reductions feeding pointwise work and each other -------------------------

# float32: sums in a different order, then divided or normalized. bfloat16:
# eager rounds every intermediate to bf16 (a row sum of magnitude ~10 has an
# ulp of 0.06), deepvisor keeps them in float32.
_WHY_FUSED = "float32: summation order; bf16: eager rounds intermediate sums to bf16"
_FUSED_TOLERANCE = {F32: (2e-5, 1e-5), BF16: (4e-2, 6e-2)}
FUSED = [
    ("center", lambda x: x - x.mean(-1, keepdim=True), one(ODD)),
    ("normalize_dim0", lambda x: x / x.abs().sum(0), one(ODD, layout="transposed")),
    ("row_and_column_sums", lambda x: x.sum(0)[None, :] + x.sum(1)[:, None], one(ODD)),
    ("reduction_of_reduction", lambda x: x.amax(-1).sum(), one(ODD)),
    ("softmax_dim0_then_sum_dim1", lambda x: torch.softmax(x, 0).sum(1), one(ODD)),
    ("reduce_transposed_product", lambda x: (x.t() * 2).sum(0), one(ODD)),
    ("outer_product_sum", lambda a, b: (a[:, None] * b[None, :]).sum(0), two((37,), (129,))),
    ("several_outputs", lambda x: (x.exp(), x.exp().sum(-1), x * 2, x.amax(0)), one(ODD)),
    ("norm_softmax_mean", lambda x: torch.softmax(F.layer_norm(x, (129,)), -1).mean(0), one(ODD)),
    ("var_of_exp", lambda x: torch.exp(x).var(-1), one(ODD)),
    ("slice_of_reduction", lambda x: x.sum(-1)[::2] * 3, one(ODD)),
    ("reduction_two_consumers", lambda x: (x / x.sum(-1, keepdim=True), x.sum(-1, keepdim=True) * 2),
     one(ODD, "positive")),
    ("view_then_reduce_twice", lambda x: x.view(37, 3, 43).sum(-1).amax(-1), one(ODD)),
    ("middle_dim_max_broadcast", lambda x: x - x.amax(1, keepdim=True), one(SMALL3, layout="sliced")),
    ("expanded_reduction", lambda x: x.sum(0, keepdim=True).expand(37, 129) + x, one(ODD)),
    ("reduce_all_then_broadcast", lambda x: x / x.abs().amax(), one(SMALL3)),
    ("sum_of_squares_rsqrt", lambda x: x * torch.rsqrt((x * x).mean(-1, keepdim=True) + 1e-6), one(ODD)),
    ("mask_then_softmax", lambda x, m: torch.softmax(torch.where(m, x, -1e4), -1),
     lambda inp: (inp.tensor(ODD), inp.tensor((1, 129), "bool", dtype=B8))),
    ("gelu_residual_norm", lambda x, w, b: F.layer_norm(F.gelu(x) + x, (129,), w, b),
     lambda inp: (inp.tensor(ODD), inp.tensor((129,)), inp.tensor((129,)))),
    ("three_reductions_of_one_input", lambda x: (x.sum(-1), x.amax(-1), torch.sigmoid(x).prod(-1)),
     one(SMALL3, layout="transposed")),
]
for _name, _fn, _build in FUSED:
    case(f"fused[{_name}]", _fn, _build, FLOATS, tolerance=_FUSED_TOLERANCE, why=_WHY_FUSED)


# -- indexing by data: embedding, index_select, gather, x[idx] ---------------------------------

# The table is read where the indices say (an indirect load): exact in every
# dtype. Indices come in int64 and int32, contiguous and strided; an index out
# of range is an error (tests/python/test_indexing.py).


def _table_and_indices(table_shape, index_shape, high, index_dtype=I64, table_layout="contiguous",
                       index_layout="contiguous", low=0):
    return lambda inp: (inp.tensor(table_shape, "normal", table_layout),
                        inp.indices(index_shape, high, index_dtype, index_layout, low))


INDEXING = [
    # name, fn(table, indices), build, dtypes
    ("embedding[odd]", lambda w, i: F.embedding(i, w), _table_and_indices((37, 13), (5, 7), 37), NUMERIC_F16),
    ("embedding[i32_sliced_table]", lambda w, i: F.embedding(i, w),
     _table_and_indices((11, 9), (40,), 11, I32, "sliced"), NUMERIC),
    ("embedding[transposed_indices]", lambda w, i: F.embedding(i, w),
     _table_and_indices((17, 5), (6, 4), 17, I64, "contiguous", "transposed"), FLOATS),
    ("embedding[padding_idx]", lambda w, i: F.embedding(i, w, padding_idx=0),
     _table_and_indices((10, 6), (3, 8), 10), FLOATS),
    ("embedding[then_pointwise]", lambda w, i: F.embedding(i, w) * 2 + 1,
     _table_and_indices((23, 16), (2, 3, 4), 23, I32), FLOATS),
    ("embedding[computed_table]", lambda w, i: F.embedding(i, torch.tanh(w)),
     _table_and_indices((23, 16), (7,), 23), FLOATS),
    ("embedding[scalar_index]", lambda w, i: F.embedding(i, w), _table_and_indices((9, 5), (), 9), FLOATS),
    ("index_select[dim0]", lambda x, i: torch.index_select(x, 0, i), _table_and_indices(ODD, (50,), 37), ALL),
    ("index_select[dim1_transposed]", lambda x, i: torch.index_select(x, 1, i),
     _table_and_indices(ODD, (20,), 129, I32, "transposed"), NUMERIC),
    ("index_select[neg_dim_rank3]", lambda x, i: x.index_select(-2, i) - 1,
     _table_and_indices(SMALL3, (8,), 5, I64, "sliced"), NUMERIC),
    ("index_select[scalar_index]", lambda x, i: torch.index_select(x, 1, i),
     _table_and_indices(ODD, (), 129, I32), FLOATS),
    ("gather[dim1]", lambda x, i: torch.gather(x, 1, i), _table_and_indices(ODD, (37, 60), 129), ALL),
    ("gather[dim0_smaller_index]", lambda x, i: torch.gather(x, 0, i),
     _table_and_indices(ODD, (20, 100), 37, I32), NUMERIC),
    ("gather[neg_dim_rank3_sliced]", lambda x, i: torch.gather(x, -1, i) * x[:, :, :1],
     _table_and_indices(SMALL3, (3, 5, 3), 7, I64, "sliced"), FLOATS),
    ("gather[transposed_input_and_index]", lambda x, i: torch.gather(x, 0, i),
     _table_and_indices(ODD, (37, 129), 37, I64, "transposed", "transposed"), FLOATS),
    ("gather[of_softmax]", lambda x, i: torch.gather(torch.log_softmax(x, -1), 1, i),
     _table_and_indices(ODD, (37, 1), 129), FLOATS),
    # Advanced indexing with one index tensor: negative indices count from the end.
    ("index_tensor[rows_negative]", lambda x, i: x[i], _table_and_indices(ODD, (45,), 37, I64, low=-37), ALL),
    ("index_tensor[middle_dim]", lambda x, i: x[:, i] + 1,
     _table_and_indices(SMALL3, (2, 3), 5, I32, "sliced", low=-5), NUMERIC),
    ("index_tensor[last_dim_transposed]", lambda x, i: x[..., i],
     _table_and_indices(ODD, (9,), 129, I64, "transposed", low=-129), FLOATS),
    # Several index tensors: adjacent dims, broadcast against each other, apart (the result's
    # indexed dims go first), a batch's own position (x[arange(B), idx]).
    ("index_tensor[two_dims]", lambda x, i: x[i, (i * 7) % 129], _table_and_indices(ODD, (45,), 37, low=-37), ALL),
    ("index_tensor[broadcast]", lambda x, i: x[i[:, None], i[None, :3] + 5],
     _table_and_indices(ODD, (20,), 37, I32, "contiguous", "sliced"), NUMERIC),
    ("index_tensor[apart]", lambda x, i: x[i, :, (i + 1) % 4],
     _table_and_indices(SMALL3, (6,), 3, I64, "sliced"), FLOATS),
    ("index_tensor[batch_positions]", lambda x, i: x[torch.arange(x.shape[0], device=x.device), i[: x.shape[0]]],
     _table_and_indices(ODD, (40,), 129), FLOATS),
]
_COMPUTED = ("embedding[then_pointwise]", "embedding[computed_table]", "gather[neg_dim_rank3_sliced]",
             "gather[of_softmax]", "index_select[neg_dim_rank3]", "index_tensor[middle_dim]")
for _name, _fn, _build, _dtypes in INDEXING:
    case(_name, _fn, _build, _dtypes, exact=_name not in _COMPUTED)

# -- writing by data: index_put, scatter, index_add, index_copy, index_fill ----------------------

# A copy of self, then a kernel that writes each update where its index
# says (an indirect store). Replacing forms get distinct indices (where two
# updates hit one element, which one stays is unspecified, in eager on CUDA
# too) and are exact; accumulating forms get duplicates (atomic adds: the
# order of the additions is unspecified). index_put and index_fill count
# negative indices from the end; the others reject them (test_indexing.py).


def _distinct(inp, n, k, dtype=I64, negative=False):
    """k distinct indices in [0, n); with `negative`, every other one as its negative twin (i - n)."""
    i = torch.randperm(n, generator=inp.gen)[:k]
    if negative:
        i = torch.where(torch.arange(k) % 2 == 1, i - n, i)
    return i.to(inp.device, dtype)


def _distinct_along(inp, self_shape, index_shape, dim, layout="contiguous"):
    """A scatter index of index_shape whose entries are distinct along dim (per other coordinate);
    transposed: the same values with transposed strides."""
    full = list(index_shape)
    full[dim] = self_shape[dim]
    i = torch.rand(full, generator=inp.gen).argsort(dim).narrow(dim, 0, index_shape[dim])
    if layout == "transposed":
        i = i.transpose(-1, -2).contiguous().transpose(-1, -2)
    return i.to(inp.device)


def _distinct_pairs(inp, n, m, k):
    """k distinct (row, column) pairs of an n x m grid, as two index tensors."""
    flat = torch.randperm(n * m, generator=inp.gen)[:k]
    return (flat // m).to(inp.device), (flat % m).to(inp.device)


def _set(x, index, value):
    """x[index] = value on a copy of x (the functional form the tracer records is index_put)."""
    y = x.clone()
    y[index] = value
    return y


def _set_where_negative(x):
    x = x.clone()
    x[x < 0] = 0
    return x


def _histogram(i, w):
    return torch.zeros(11, dtype=w.dtype, device=w.device).scatter_add_(0, i, w)


SCATTERS = [
    # name, fn, build, dtypes, accumulates
    ("index_put[rows_negative]", lambda x, i, v: torch.index_put(x, (i,), v),
     lambda inp: (inp.tensor(ODD), _distinct(inp, 37, 20, negative=True), inp.tensor((20, 129))), ALL, False),
    ("index_put[broadcast_row_i32_transposed_self]", lambda x, i, v: torch.index_put(x, (i,), v),
     lambda inp: (inp.tensor(ODD, layout="transposed"), _distinct(inp, 37, 9, I32), inp.tensor((129,))), NUMERIC, False),
    ("index_put[setitem_number_middle_dim]", lambda x, i: _set(x, (slice(None), i), 3),
     lambda inp: (inp.tensor(SMALL3, layout="sliced"), _distinct(inp, 5, 3, negative=True)), ALL, False),
    ("index_put[two_indices_adjacent]", lambda x, i, j, v: _set(x, (slice(None), i, j), v),
     lambda inp: (inp.tensor(SMALL3), *_distinct_pairs(inp, 5, 7, 6), inp.tensor((3, 6))), NUMERIC, False),
    ("index_put[two_indices_apart]", lambda x, i, j, v: _set(x, (i, slice(None), j), v),
     lambda inp: (inp.tensor(SMALL3, layout="sliced"), *_distinct_pairs(inp, 3, 7, 4), inp.tensor((4, 5))),
     NUMERIC, False),
    ("index_put[bool_mask]", _set_where_negative, one(ODD, layout="transposed"), NUMERIC_F16, False),
    ("index_put[of_computed_self_and_values]", lambda x, i, v: torch.index_put(x * 2, (i,), v + 1),
     lambda inp: (inp.tensor(ODD), _distinct(inp, 37, 30), inp.tensor((30, 129), layout="sliced")), FLOATS, False),
    ("index_put_accumulate[duplicates_negative]", lambda x, i, v: torch.index_put(x, (i,), v, accumulate=True),
     lambda inp: (inp.tensor(ODD), inp.indices((60,), 37, low=-37), inp.tensor((60, 129))), NUMERIC_F16 + (F64,), True),
    ("index_put_accumulate[broadcast_indices_and_values]",
     lambda x, i, j, v: torch.index_put(x, (i, j), v, accumulate=True),
     lambda inp: (inp.tensor((13, 6)), inp.indices((9, 1), 13), inp.indices((1, 4), 6, I32, low=-6), inp.tensor((4,))),
     NUMERIC, True),
    ("index_put_accumulate[bool_mask]", lambda x, v: torch.index_put(x, (x > 0,), v, accumulate=True),
     lambda inp: (inp.tensor(SMALL3, layout="sliced"), inp.tensor(())), NUMERIC, True),
    ("scatter[src_dim0_larger_src]", lambda x, i, s: torch.scatter(x, 0, i, s),
     lambda inp: (inp.tensor(ODD), _distinct_along(inp, ODD, (20, 100), 0), inp.tensor((25, 110))), ALL, False),
    ("scatter[value_neg_dim_sliced]", lambda x, i: torch.scatter(x, -1, i, 1.5),
     lambda inp: (inp.tensor(SMALL3, layout="sliced"), inp.indices((3, 4, 5), 7)), ALL, False),
    ("scatter[src_dim1_transposed_index]", lambda x, i, s: x.scatter(1, i, s) - 1,
     lambda inp: (inp.tensor((9, 11)), _distinct_along(inp, (9, 11), (9, 6), 1, "transposed"),
                  inp.tensor((9, 6), layout="transposed")), NUMERIC, False),
    ("scatter_add[dim1_duplicates]", lambda x, i, s: torch.scatter_add(x, 1, i, s),
     lambda inp: (inp.tensor(ODD), inp.indices((37, 200), 129), inp.tensor((37, 200))), NUMERIC_F16 + (F64,), True),
    ("scatter_add[then_sum]", lambda x, i, s: torch.scatter_add(x, 0, i, s).sum(1) * 2,
     lambda inp: (inp.tensor((7, 33)), inp.indices((20, 33), 7), inp.tensor((20, 33))), FLOATS + INTS, True),
    ("scatter_add[histogram]", _histogram, lambda inp: (inp.indices((300,), 11), inp.tensor((300,))), FLOATS + INTS, True),
    ("scatter_reduce[sum]", lambda x, i, s: x.scatter_reduce(0, i, s, "sum"),
     lambda inp: (inp.tensor((5, 8)), inp.indices((12, 8), 5), inp.tensor((12, 8))), FLOATS + INTS, True),
    # The older spelling, scatter_(..., reduce="add"): scatter.reduce and scatter.value_reduce.
    ("scatter[reduce_add]", lambda x, i, s: x.clone().scatter_(1, i, s, reduce="add"),
     lambda inp: (inp.tensor((6, 9)), inp.indices((6, 20), 9), inp.tensor((6, 20))), FLOATS + INTS, True),
    ("scatter[value_reduce_add]", lambda x, i: x.clone().scatter_(0, i, 0.3, reduce="add"),
     lambda inp: (inp.tensor((6, 9)), inp.indices((20, 9), 6)), FLOATS, True),
    ("index_add[dim0_alpha_duplicates]", lambda x, i, s: x.index_add(0, i, s, alpha=2),
     lambda inp: (inp.tensor(ODD), inp.indices((50,), 37), inp.tensor((50, 129))), NUMERIC_F16, True),
    ("index_add[dim1_i32_transposed]", lambda x, i, s: torch.index_add(x, 1, i, s),
     lambda inp: (inp.tensor(ODD, layout="transposed"), inp.indices((70,), 129, I32), inp.tensor((37, 70), layout="sliced")),
     NUMERIC, True),
    ("index_copy[dim1]", lambda x, i, s: x.index_copy(1, i, s),
     lambda inp: (inp.tensor(ODD), _distinct(inp, 129, 40), inp.tensor((37, 40))), ALL, False),
    ("index_copy[dim0_scalar_index]", lambda x, i, s: x.index_copy(0, i, s),
     lambda inp: (inp.tensor((6, 10)), torch.tensor(4, device=inp.device), inp.tensor((1, 10))), NUMERIC, False),
    ("index_fill[negative_duplicates]", lambda x, i: x.index_fill(1, i, -1.5),
     lambda inp: (inp.tensor(ODD, layout="sliced"), inp.indices((30,), 129, low=-129)), ALL, False),
    ("index_fill[tensor_value_dim0]", lambda x, i, v: torch.index_fill(x, 0, i, v) * 3,
     lambda inp: (inp.tensor(SMALL3), inp.indices((2,), 3), inp.tensor(())), FLOATS + INTS, False),
]
# Accumulated floats: the additions run in another order than eager's (and
# in bf16/f16 each one rounds), a few ulps of the sum.
_SCATTER_TOLERANCE = {F32: (1e-5, 1e-5), F64: (1e-7, 1e-9)}
# 16-bit sums follow eager on CPU: index_put and index_add round after every
# addition, scatter_add and scatter_reduce add in float32 and round once.
# Eager on CUDA differs per op (atomic adds that round each time, in any
# order; index_put sums duplicates in float32 after sorting them): a sum of
# many rounds apart by more than the 16-bit tolerance. tests/gpu/test_ops_gpu.py
# checks those kernels against exact sums instead.
_SCATTER_GPU_SKIPS = {("cuda", BF16): "eager CUDA rounds 16-bit sums in another way than eager CPU",
                      ("cuda", F16): "eager CUDA rounds 16-bit sums in another way than eager CPU"}
for _name, _fn, _build, _dtypes, _accumulates in SCATTERS:
    case(_name, _fn, _build, _dtypes, exact=not _accumulates and "computed" not in _name,
         tolerance=_SCATTER_TOLERANCE if _accumulates else {},
         why="additions in another order" if _accumulates else "",
         skips=_SCATTER_GPU_SKIPS if _accumulates else {})

# -- cat ------------------------------------------------------------------------------------

# One kernel: each element reads the input whose range holds it, every input
# under its own mask. Exact.
CATS = [
    ("last_dim", lambda a, b: torch.cat([a, b], -1), two((37, 5), (37, 11))),
    ("dim0_three", lambda a, b, c: torch.cat([a, b, c], 0),
     lambda inp: (inp.tensor((3, 129)), inp.tensor((37, 129), layout="transposed"), inp.tensor((1, 129), layout="sliced"))),
    ("middle_dim_strided", lambda a, b: torch.cat((a, b), 1),
     lambda inp: (inp.tensor((3, 2, 7), layout="sliced"), inp.tensor((3, 5, 7), layout="expanded"))),
    # Size 0 along dim, and the legacy 1-d empty tensor torch skips whatever its rank.
    ("empty_inputs", lambda a, b, e, legacy: torch.cat([e, a, a[:, :0], b, legacy], 1),
     lambda inp: (inp.tensor((4, 3)), inp.tensor((4, 5)), inp.tensor((4, 0)), inp.tensor((0,)))),
    ("of_pointwise", lambda a, b: torch.cat([torch.relu(a), b * 2, a - 1], -1) + 1, two((6, 7), (6, 4))),
    ("then_reduce", lambda a, b: torch.cat([a, b], 0).sum(0), two((5, 33), (9, 33))),
    ("single", lambda a: torch.cat([a], 1), one(ODD, layout="transposed")),
    ("promote", lambda a, b: torch.cat([a, b], 1), two((3, 4), (3, 5), dtype_b=I32)),
    # Inlined views of computed values read at shifted coordinates (negative
    # where masked off: reshapes divide them).
    ("of_views", lambda a, b: torch.cat([a, (b * 2).view(4, 3), (b - 1).view(3, 4).t(), b.view(2, 6)[:, 1::2]], 0),
     two((4, 3), (12,))),
]
for _name, _fn, _build in CATS:
    computed = _name in ("then_reduce", "of_pointwise", "of_views")
    case(f"cat[{_name}]", _fn, _build, NUMERIC if computed else ALL,
         tolerance={F32: (1e-5, 2e-6)} if _name == "then_reduce" else {}, why=_WHY_SUM, exact=not computed)

# -- constant_pad_nd ----------------------------------------------------------------------------

PADS = [
    # name, pad, value, shape, layout
    ("last_dim", (2, 3), 0.0, ODD, "contiguous"),
    ("two_dims_value", (1, 2, 3, 0), 1.5, ODD, "transposed"),
    ("crop", (-2, 1, 2, -3), -2.0, SMALL3, "sliced"),
    ("all_dims", (1, 1, 0, 2, 3, 1), 7.0, SMALL3, "contiguous"),
    ("expanded", (0, 4), -1.0, ODD, "expanded"),
]
for _name, _pad, _value, _shape, _layout in PADS:
    case(f"constant_pad[{_name}]", lambda x, p=_pad, v=_value: F.pad(x, p, value=v), one(_shape, "normal", _layout),
         ALL, exact=True)
# The pad value is converted to the tensor's dtype: truncated for ints, rounded for bf16.
case("constant_pad[fractional_value]", lambda x: F.pad(x, (1, 2), value=2.7), one(ODD), NUMERIC, exact=True)
case("constant_pad[then_pointwise]", lambda x: torch.exp(F.pad(x, (1, 1, 1, 1), value=-1.0)) * 2, one(ODD), FLOATS)
case("constant_pad[of_view]", lambda x: F.pad((x + 1).reshape(3, 35).t(), (2, 1, 1, 3), value=0.5),
     one(SMALL3, layout="transposed"), NUMERIC)

# -- scans, edge padding, vector norms ----------------------------------------------------------------

# cumsum sums in another order than eager's sequential scan (float tolerance);
# integers and bool (promoted to int64) are exact.
# Eager CUDA scans bf16 in bf16 (each partial sum rounded: 6 ulps off by the
# 100th element); eager CPU and deepvisor keep float32 partial sums.
# tests/gpu/test_ops_gpu.py compares the CUDA bf16 scan with float32's instead.
case("cumsum[last]", lambda x: torch.cumsum(x, -1), one(ODD, "normal", "transposed"), NUMERIC,
     why="cumsum: another summation order",
     skips={("cuda", BF16): "eager CUDA rounds every partial sum to bf16; deepvisor keeps float32 ones"})
case("cumsum[dim0_sliced]", lambda x: torch.cumsum(x, 0), one(SMALL3, "small_int", "sliced"), NUMERIC,
     why="cumsum: another summation order")
case("cumsum[bool_position_ids]", lambda x: (x > 0).cumsum(-1) - 1, one(ODD, "small_int"), NUMERIC)
case("cumsum[dtype]", lambda x: torch.cumsum(x, 1, dtype=torch.float32) * 2, one(SMALL3, "small_int"), NUMERIC,
     why="cumsum: another summation order")
PADS = [
    ("reflection_pad2d", lambda x: F.pad(x, (2, 3, 1, 4), mode="reflect"), (2, 3, 7, 6), "contiguous"),
    ("reflection_pad2d[sliced]", lambda x: F.pad(x, (1, 1, 1, 1), mode="reflect") * 2, (2, 3, 5, 5), "sliced"),
    ("reflection_pad1d", lambda x: F.pad(x, (3, 1), mode="reflect"), (2, 3, 9), "transposed"),
    ("replication_pad2d", lambda x: F.pad(x, (2, 0, 3, 1), mode="replicate"), (2, 3, 4, 5), "contiguous"),
    ("replication_pad1d", lambda x: F.pad(x, (4, 4), mode="replicate") + 1, (3, 2), "expanded"),
    ("reflection_pad2d[widest]", lambda x: F.pad(x * 2, (4, 4, 2, 2), mode="reflect"), (2, 3, 3, 5), "contiguous"),
    ("reflection_pad3d", lambda x: F.pad(x, (1, 1, 2, 0, 1, 1), mode="reflect") - 1, (1, 2, 3, 4, 5), "transposed"),
    ("replication_pad3d", lambda x: F.pad(x.abs(), (1, 2, 0, 3, 2, 1), mode="replicate"), (2, 2, 1, 4, 3), "sliced"),
]
for _name, _fn, _shape, _layout in PADS:
    case(_name, _fn, one(_shape, "normal", _layout), FLOATS, exact=True)
NORMS = [
    ("vector_norm[2_all]", lambda x: torch.linalg.vector_norm(x), ODD, "transposed"),
    ("vector_norm[2_dim]", lambda x: torch.nn.functional.normalize(x, dim=-1), ODD, "contiguous"),
    ("vector_norm[1_keepdim]", lambda x: torch.linalg.vector_norm(x, 1, dim=0, keepdim=True), SMALL3, "sliced"),
    ("vector_norm[inf]", lambda x: torch.linalg.vector_norm(x, float("inf"), dim=(0, 2)), SMALL3, "contiguous"),
    ("vector_norm[-inf]", lambda x: torch.linalg.vector_norm(x, float("-inf"), dim=1), ODD, "contiguous"),
]
for _name, _fn, _shape, _layout in NORMS:
    case(_name, _fn, one(_shape, "normal", _layout), FLOATS, why="vector_norm: another summation order")
# _weight_norm_interface(v, g, dim): the weight and its norm over every dim
# but dim (first or last: ATen's fused kernels; its CPU kernel reads v as if
# contiguous, so a transposed v goes through torch._weight_norm, which makes
# it contiguous first, as nn.utils' weight norm does).
WEIGHT_NORMS = [
    ("weight_norm[dim0]", lambda v, g: torch._weight_norm_interface(v, g, 0), two((6, 4, 5), (6, 1, 1))),
    ("weight_norm[last_dim]", lambda v, g: torch._weight_norm_interface(v, g, 1), two(ODD, (1, 129))),
    ("weight_norm[last_dim_transposed_then_used]", lambda v, g: torch._weight_norm(v, g, 2) * 2,
     two(SMALL3, (1, 1, 7), layout_a="transposed")),
]
for _name, _fn, _build in WEIGHT_NORMS:
    case(_name, _fn, _build, FLOATS, why="a norm: another summation order")


# im2col (F.unfold): every window as a column, 0 in the padding; exact.
UNFOLDS = [
    ("unfold[3x3_padded]", lambda x: F.unfold(x, 3, padding=1), (2, 3, 7, 6), "contiguous"),
    ("unfold[strided_dilated_sliced]", lambda x: F.unfold(x, (2, 3), dilation=(2, 1), padding=(1, 2), stride=(2, 3)),
     (2, 3, 9, 11), "sliced"),
    ("unfold[unbatched_transposed]", lambda x: F.unfold(x, (3, 1), padding=(4, 0)) * 2, (3, 9, 1), "transposed"),
]
for _name, _fn, _shape, _layout in UNFOLDS:
    case(_name, _fn, one(_shape, "normal", _layout), FLOATS, exact=True)

# -- 2-d pooling ------------------------------------------------------------------------------------

# A reduction over each window, padding masked (-inf for max, 0 for avg).
# max is exact; avg sums the window in another order than eager (float
# tolerance) and divides as eager does.
NCHW = (2, 3, 17, 15)
POOLS = [
    # name, fn, shape, layout
    ("max_pool2d[resnet_3x3_s2_p1]", lambda x: F.max_pool2d(x, 3, 2, 1), NCHW, "contiguous"),
    ("max_pool2d[module]", lambda x: torch.nn.MaxPool2d(3, 2, 1)(x), NCHW, "sliced"),
    ("max_pool2d[ceil_mode]", lambda x: F.max_pool2d(x, 3, 2, 1, ceil_mode=True), NCHW, "contiguous"),
    ("max_pool2d[dilation_rect]", lambda x: F.max_pool2d(x, (2, 3), (1, 2), (1, 0), dilation=(2, 1)), NCHW,
     "transposed"),
    ("max_pool2d[no_padding_3d]", lambda x: F.max_pool2d(x, 2), (3, 17, 15), "contiguous"),
    ("max_pool2d[after_relu]", lambda x: F.max_pool2d(torch.relu(x * 2 - 1), 3, 2, 1), NCHW, "contiguous"),
    ("max_pool2d[nan]", lambda x: F.max_pool2d(torch.log(x), 3, 2, 1), NCHW, "contiguous"),
    ("avg_pool2d[3x3_s2_p1]", lambda x: F.avg_pool2d(x, 3, 2, 1), NCHW, "contiguous"),
    ("avg_pool2d[count_exclude_pad]", lambda x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=False), NCHW, "sliced"),
    ("avg_pool2d[ceil_mode]", lambda x: F.avg_pool2d(x, 3, 2, 1, ceil_mode=True), NCHW, "transposed"),
    ("avg_pool2d[ceil_mode_exclude_pad]", lambda x: F.avg_pool2d(x, (3, 2), (2, 3), (1, 1), ceil_mode=True,
                                                                  count_include_pad=False), NCHW, "contiguous"),
    ("avg_pool2d[divisor_override]", lambda x: F.avg_pool2d(x, 3, 2, 1, divisor_override=4), NCHW, "contiguous"),
    ("avg_pool2d[global_3d]", lambda x: F.avg_pool2d(x, (17, 15)), (3, 17, 15), "contiguous"),
    ("avg_pool2d[module_then_pointwise]", lambda x: torch.nn.AvgPool2d(2)(x) * 3, NCHW, "expanded"),
    # A kernel larger than the input (ALIGN's final pool): the window is cut to the input.
    ("avg_pool2d[kernel_past_input]", lambda x: F.avg_pool2d(x, 640, ceil_mode=True), (2, 3, 5, 7), "contiguous"),
    ("avg_pool2d[kernel_past_input_exclude_pad]", lambda x: F.avg_pool2d(x, (9, 640), (4, 640), (4, 0), ceil_mode=True,
                                                                       count_include_pad=False), (2, 3, 5, 7),
     "sliced"),
    ("max_pool2d[kernel_past_input]", lambda x: F.max_pool2d(x, (640, 3), (640, 2), (0, 1), ceil_mode=True),
     (2, 3, 5, 7), "contiguous"),
]
for _name, _fn, _shape, _layout in POOLS:
    is_max = _name.startswith("max")
    case(_name, _fn, one(_shape, "normal", _layout), FLOATS_F16 if is_max else FLOATS,
         why="" if is_max else "avg_pool2d: the window is summed in another order",
         exact=is_max and "after_relu" not in _name)


# -- activations ------------------------------------------------------------------------------

# Lowered in the order of operations of eager's CPU kernels: hardtanh and
# relu6 are clamps, hardswish and hardsigmoid divide by 6 as eager's CPU
# code does (its CUDA code multiplies by 1/6: an ulp apart); elu, softplus
# and mish differ by the math functions' ulps (elu's expm1 is Kahan's
# form from exp and log, eager's is SLEEF's or the C library's).
ACTIVATIONS = [
    # name, fn, value kind, scale, dtypes
    ("hardtanh", F.hardtanh, "normal", 2, NUMERIC),
    ("relu6", F.relu6, "normal", 5, NUMERIC),
    ("hardsigmoid", F.hardsigmoid, "normal", 4, FLOATS_F16),
    ("hardswish", F.hardswish, "normal", 4, FLOATS_F16),
    ("leaky_relu", F.leaky_relu, "normal", 2, FLOATS),
    ("elu", F.elu, "normal", 3, FLOATS),
    ("softplus", F.softplus, "normal", 8, FLOATS),
    ("mish", F.mish, "normal", 4, FLOATS),
]
# Each op's arguments, on one shape.
ACTIVATION_ARGS = [
    # Integer tensors truncate the limits (to -2 and 0), as eager's hardtanh does.
    ("hardtanh_limits", lambda x: F.hardtanh(x, -2.5, 0.75), "normal", 2, NUMERIC),
    ("hardtanh_int_limits", lambda x: F.hardtanh(x, -1, 3), "normal", 3, NUMERIC),
    ("leaky_relu_slope", lambda x: F.leaky_relu(x, 0.2), "normal", 2, FLOATS),
    ("leaky_relu_negative_slope", lambda x: F.leaky_relu(x, -1.5), "normal", 2, FLOATS),
    ("elu_alpha", lambda x: F.elu(x, alpha=0.5), "normal", 3, FLOATS),
    ("elu_scale_input_scale", lambda x: torch.ops.aten.elu(x, 1.5, 2.0, 0.5), "normal", 3, FLOATS),
    ("elu_near_zero", F.elu, "normal", 1e-3, FLOATS),  # expm1 near 0: no cancellation
    ("selu", F.selu, "normal", 3, FLOATS),
    ("celu", lambda x: F.celu(x, alpha=2.0), "normal", 3, FLOATS),
    ("softplus_beta_threshold", lambda x: F.softplus(x, beta=2, threshold=3), "normal", 4, FLOATS),
    ("softplus_fractional_beta", lambda x: F.softplus(x, beta=0.5, threshold=1.5), "normal", 4, FLOATS),
]
for _name, _fn, _kind, _scale, _dtypes in ACTIVATIONS:
    for _variant, _shape, _layout in UNARY_SHAPES:
        case(f"{_name}[{_variant}]", _fn, one(_shape, _kind, _layout, _scale), _dtypes)
for _name, _fn, _kind, _scale, _dtypes in ACTIVATION_ARGS:
    case(f"{_name}[transposed]", _fn, one(ODD, _kind, "transposed", _scale), _dtypes)
for _name, _fn, _kind, _scale, _dtypes in ACTIVATIONS + ACTIVATION_ARGS:
    case(f"{_name}[special_values]", _fn, _special((1,)), tuple(d for d in _dtypes if d.is_floating_point))


def _write_slice_of_product(x):
    y = x * 2
    F.hardswish(y[1:, ::2], inplace=True)
    return y


# In-place forms (the capture records the functional op), in MobileNet's
# patterns: an in-place ReLU6 module, hardswish after a product, and an
# activation written into a slice of an intermediate.
INPLACE_ACTIVATIONS = [
    ("relu6", lambda x: F.relu6(x * 3, inplace=True), NUMERIC),
    ("relu6_module", lambda x: torch.nn.ReLU6(inplace=True)(x + 1), NUMERIC),
    ("hardtanh", lambda x: F.hardtanh(x - 1, -0.5, 2.0, inplace=True), FLOATS),
    ("hardswish", lambda x: F.hardswish(x * 2, inplace=True), FLOATS),
    ("hardsigmoid", lambda x: F.hardsigmoid(x * 2, inplace=True) * x, FLOATS),
    ("leaky_relu", lambda x: F.leaky_relu(x - 0.5, 0.1, inplace=True), FLOATS),
    ("elu", lambda x: F.elu(x + 0.5, inplace=True), FLOATS),
    ("mish", lambda x: F.mish(x * 1.5, inplace=True), FLOATS),
    ("hardswish_into_a_slice", _write_slice_of_product, FLOATS),
]
for _name, _fn, _dtypes in INPLACE_ACTIVATIONS:
    case(f"inplace[{_name}]", _fn, one(ODD, "normal", "sliced", 3), _dtypes)
case("activation[mobilenet_chain]", lambda x, s: F.hardswish(x * F.hardsigmoid(s) + 1) + F.relu6(x),
     lambda inp: (inp.tensor((2, 6, 5, 7), scale=3), inp.tensor((2, 6, 1, 1), scale=3)), FLOATS)

# -- masked_fill ---------------------------------------------------------------------------------

# Exact: a selection. A number is stored as eager converts it to the
# tensor's dtype (truncated for ints, rounded for bf16), also where a fused
# op reads it; a 0-dim tensor value is converted like eager's item().


def _masked(shape, mask_shape, layout="contiguous", mask_layout="contiguous", value=None):
    def build(inp):
        args = (inp.tensor(shape, "normal", layout), inp.tensor(mask_shape, "bool", mask_layout, dtype=B8))
        return args if value is None else args + (inp.scalar_tensor(value[0], value[1] or inp.dtype),)
    return build


MASKED_FILL = [
    # name, fn, build, dtypes, exact
    ("same_shape", lambda x, m: x.masked_fill(m, -1.5), _masked(ODD, ODD), ALL, True),
    ("row_mask", lambda x, m: x.masked_fill(m, 2.0), _masked(ODD, (1, 129)), ALL, True),
    ("broadcast_self", lambda x, m: x.masked_fill(m, 3.0), _masked((37, 1), ODD), NUMERIC, True),
    ("strided", lambda x, m: x.masked_fill(m, 0.0), _masked(ODD, ODD, "transposed", "sliced"), ALL, True),
    ("expanded", lambda x, m: torch.masked_fill(x, m, -4.0), _masked(SMALL3, SMALL3, "sliced", "expanded"), ALL, True),
    ("fractional_value", lambda x, m: x.masked_fill(m, 2.7), _masked(ODD, ODD), NUMERIC, True),
    ("rounded_value_then_pointwise", lambda x, m: x.masked_fill(m, 0.1) * 3, _masked(ODD, (37, 1)), FLOATS, True),
    ("tensor_value", lambda x, m, v: x.masked_fill(m, v), _masked(ODD, (1, 129), value=(1.25, None)), ALL, True),
    ("f32_tensor_value", lambda x, m, v: x.masked_fill(m, v), _masked(SMALL3, SMALL3, "sliced", value=(-2.75, F32)),
     NUMERIC, True),
    ("inplace", lambda x, m: (x * 2).masked_fill_(m, 5.0), _masked(ODD, ODD, "transposed"), NUMERIC, False),
    ("attention_mask", lambda x, m: torch.softmax(x.masked_fill(~m, float("-inf")), -1), _masked(ODD, (1, 129)),
     FLOATS, False),
]
for _name, _fn, _build, _dtypes, _exact in MASKED_FILL:
    _softmax = _name == "attention_mask"
    case(f"masked_fill[{_name}]", _fn, _build, _dtypes, exact=_exact, tolerance={F32: (1e-5, 2e-6)} if _softmax else {},
         why="a softmax: exp of shifted values, summed in a different order" if _softmax else "")

# -- flip, roll, repeat, stack -------------------------------------------------------------------

# Index remapping: exact in every dtype, as is stack (cat of unsqueezed
# inputs, each read under its own mask).
REMAPS = [
    ("flip[dim0]", lambda x: x.flip(0), one(ODD)),
    ("flip[neg_dims_transposed]", lambda x: x.flip(-1, -2), one(ODD, layout="transposed")),
    ("flip[rank3_sliced]", lambda x: torch.flip(x, (1, 2)), one(SMALL3, layout="sliced")),
    ("flip[expanded]", lambda x: x.flip(0, 1), one(ODD, layout="expanded")),
    ("roll[flat]", lambda x: x.roll(5), one(ODD)),
    ("roll[flat_negative_transposed]", lambda x: torch.roll(x, -40), one(ODD, layout="transposed")),
    ("roll[dims]", lambda x: x.roll((1, -2), (0, 1)), one(ODD)),
    ("roll[neg_dim_past_size_sliced]", lambda x: x.roll(17, -1), one(SMALL3, layout="sliced")),
    ("roll[same_dim_twice]", lambda x: x.roll((2, 3), (1, 1)), one(SMALL3)),
    ("roll[expanded]", lambda x: x.roll(-1, 0), one(ODD, layout="expanded")),
    ("repeat[2d]", lambda x: x.repeat(2, 3), one((5, 7))),
    ("repeat[new_dims_sliced]", lambda x: x.repeat(2, 1, 3, 1), one(SMALL3, layout="sliced")),
    ("repeat[transposed]", lambda x: x.repeat(1, 2), one(ODD, layout="transposed")),
    ("repeat[expanded]", lambda x: x.repeat(3, 1), one((4, 9), layout="expanded")),
    ("stack[dim0]", lambda a, b: torch.stack([a, b]), two(ODD, ODD)),
    ("stack[last_dim_strided]", lambda a, b: torch.stack((a, b), -1), two(ODD, ODD, layout_a="transposed", layout_b="sliced")),
    ("stack[middle_three]", lambda a, b, c: torch.stack([a, b, c], 1),
     lambda inp: (inp.tensor(SMALL3), inp.tensor(SMALL3, layout="sliced"), inp.tensor(SMALL3, layout="expanded"))),
    ("stack[promote]", lambda a, b: torch.stack([a, b], 2), two((3, 4), (3, 4), dtype_b=I32)),
    ("stack[single]", lambda a: torch.stack([a], 2), one(SMALL3)),
    ("tril[odd]", lambda x: x.tril(), one(ODD)),
    ("triu[diagonal_1_transposed]", lambda x: torch.triu(x, 1), one(ODD, layout="transposed")),
    ("tril[negative_diagonal_batched_sliced]", lambda x: x.tril(-2), one(SMALL3, layout="sliced")),
    ("triu[past_the_columns_expanded]", lambda x: x.triu(200), one(ODD, layout="expanded")),
    # as_strided of a contiguous tensor: overlapping windows (Longformer's chunks)
    ("unfold[windows_last_dim]", lambda x: x.unfold(-1, 8, 4) * 2, one(ODD)),
    ("unfold[overlapping_dim0_transposed]", lambda x: x.unfold(0, 5, 3) * 2, one(ODD, layout="transposed")),
    ("unfold[step_past_size_sliced]", lambda x: x.unfold(1, 2, 3) * 2, one(SMALL3, layout="sliced")),
    ("as_strided[overlapping_rows]", lambda x: (x * 2).as_strided((8, 2, 8), (8, 8, 1)), one((9, 8))),
    ("as_strided[of_an_argument]", lambda x: x.as_strided((6, 3), (5, 1)) * 2, one(ODD)),
    ("as_strided[of_a_slice]", lambda x: x[2:].as_strided((4, 3), (7, 2), 5) * 2, one(ODD)),
]
for _name, _fn, _build in REMAPS:
    case(_name, _fn, _build, ALL, exact=True)
# A transposed tensor's storage is not in the order of its elements: ATen's view.
case("as_strided[of_a_transposed_argument]", lambda x: x.as_strided((5, 5), (1, 5)) + 1, one(ODD, layout="transposed"),
     ALL, exact=True, allowed_fallbacks=frozenset({"aten::as_strided.default"}))
# Read by other kernels' work: computed inputs are inlined at the remapped points.
REMAPS_COMPOSED = [
    ("flip[of_pointwise_then_sum]", lambda x: (x * 2 + 1).flip(1).sum(0), one(ODD)),
    ("roll[then_pointwise]", lambda x: torch.roll(x - 1, 3, 0) * x, one(ODD, layout="transposed")),
    ("repeat[of_pointwise]", lambda x: (x + 1).repeat(2, 2) * 3, one(SMALL3[1:])),
    ("stack[of_pointwise]", lambda a, b: torch.stack([a.relu(), b * 2, a - b], 1) + 1, two((6, 7), (6, 7))),
    ("tril[of_pointwise]", lambda x: (x * 3).tril(4) + x, one(ODD)),
    ("as_strided[windows_of_pointwise_then_sum]", lambda x: (x + 1).as_strided((36, 2, 129), (129, 129, 1)).sum(1),
     one(ODD)),
]
for _name, _fn, _build in REMAPS_COMPOSED:
    case(_name, _fn, _build, NUMERIC, tolerance={F32: (1e-5, 2e-6)}, why=_WHY_SUM)

# -- upsampling, adaptive pooling ------------------------------------------------------------------

# upsample_nearest2d: the source indices are eager's (floorf(o * scale),
# with CPU's copy and halving shortcuts) written as index expressions:
# exact. A scale that disagrees with the sizes makes eager's CPU and CUDA
# kernels differ: that one runs through ATen.
UPSAMPLE_NEAREST = [
    ("scale2", lambda x: F.interpolate(x, scale_factor=2), "contiguous"),
    ("size_mixed", lambda x: F.interpolate(x, size=(7, 40)), "sliced"),
    ("module_scale", lambda x: torch.nn.Upsample(scale_factor=1.7)(x), "transposed"),
    ("scale_pair", lambda x: F.interpolate(x, scale_factor=(0.5, 3)), "contiguous"),
    ("scale_recomputed", lambda x: F.interpolate(x, scale_factor=2.3, recompute_scale_factor=True), "contiguous"),
    ("same_size", lambda x: F.interpolate(x, size=(17, 15)), "expanded"),
    ("scale3_odd", lambda x: F.interpolate(x, scale_factor=3), "sliced"),
    ("size_down", lambda x: F.interpolate(x, size=(5, 4)), "contiguous"),
]
for _name, _fn, _layout in UPSAMPLE_NEAREST:
    case(f"upsample_nearest2d[{_name}]", _fn, one(NCHW, "normal", _layout), FLOATS_F16, exact=True)
case("upsample_nearest2d[then_pointwise]", lambda x: F.interpolate(torch.relu(x), scale_factor=2) + x.mean(),
     one(NCHW), FLOATS, tolerance={F32: (1e-5, 2e-6)}, why=_WHY_SUM)
case("upsample_nearest2d[scale_disagrees_with_size]", lambda x: F.interpolate(x, scale_factor=1.05), one(NCHW),
     FLOATS, exact=True, min_kernels=0, allowed_fallbacks=frozenset({"aten::upsample_nearest2d.default"}))

# upsample_bilinear2d: eager's source positions and weights, in float. The
# neighbours' indices are index expressions with the scale as an exact
# fraction; they differ from eager's float ones only where a position
# rounds across an integer, where the weight is within rounding of 0 or 1.
# Eager may contract the multiply-adds (FMA): a few ulps.
_BILINEAR_TOL = {F32: (1e-5, 2e-6)}
UPSAMPLE_BILINEAR = [
    ("scale2", dict(scale_factor=2), "contiguous"),
    ("scale2_align_corners", dict(scale_factor=2, align_corners=True), "sliced"),
    ("size_align_corners", dict(size=(33, 29), align_corners=True), "contiguous"),
    ("size_down", dict(size=(7, 5)), "transposed"),
    ("size_down_align_corners", dict(size=(7, 5), align_corners=True), "contiguous"),
    ("scale_factor_kept", dict(scale_factor=1.7), "contiguous"),
    ("scale_pair", dict(scale_factor=(0.6, 2.5)), "expanded"),
    ("scale_recomputed", dict(scale_factor=1.7, recompute_scale_factor=True), "contiguous"),
    ("same_size", dict(size=(17, 15)), "contiguous"),
    ("single_row_align_corners", dict(size=(1, 8), align_corners=True), "contiguous"),
    ("single_output_row", dict(size=(1, 8)), "sliced"),
]
for _name, _kw, _layout in UPSAMPLE_BILINEAR:
    case(f"upsample_bilinear2d[{_name}]", lambda x, kw=_kw: F.interpolate(x, mode="bilinear", **kw),
         one(NCHW, "normal", _layout), FLOATS, tolerance=_BILINEAR_TOL, why="multiply-adds contracted or not")
UPSAMPLE_LINEAR = [
    ("size_up", dict(size=40), "contiguous"),
    ("size_down_align_corners", dict(size=9, align_corners=True), "transposed"),
    ("scale_factor", dict(scale_factor=1.7), "sliced"),
    ("same_size", dict(size=15), "contiguous"),
]
for _name, _kw, _layout in UPSAMPLE_LINEAR:
    case(f"upsample_linear1d[{_name}]", lambda x, kw=_kw: F.interpolate(x, mode="linear", **kw),
         one((2, 3, 15), "normal", _layout), FLOATS, tolerance=_BILINEAR_TOL, why="multiply-adds contracted or not")
case("upsample_bilinear2d[single_input_row]", lambda x: F.interpolate(x, size=(4, 20), mode="bilinear"),
     one((2, 3, 1, 15)), FLOATS, tolerance=_BILINEAR_TOL, why="multiply-adds contracted or not")
case("upsample_bilinear2d[unet_decoder]",
     lambda x, skip: torch.cat([F.interpolate(torch.relu(x), scale_factor=2, mode="bilinear", align_corners=True),
                                skip], 1) * 0.5,
     lambda inp: (inp.tensor((2, 4, 8, 6)), inp.tensor((2, 3, 16, 12), layout="sliced")), FLOATS,
     tolerance=_BILINEAR_TOL, why="multiply-adds contracted or not")

# adaptive_avg_pool2d: eager's windows [floor(o n / m), ceil((o + 1) n / m)),
# unequal ones masked; the window is summed in another order than eager's.
ADAPTIVE = [
    ("not_dividing", (3, 4), NCHW, "contiguous"),
    ("five", (5, 5), NCHW, "sliced"),
    ("identity", (17, 15), NCHW, "transposed"),
    ("row", (1, 7), NCHW, "contiguous"),
    ("larger_than_input", (34, 30), NCHW, "expanded"),
    ("keep_height", (None, 4), NCHW, "contiguous"),
    ("dividing_3d", (17, 5), (3, 17, 15), "contiguous"),
    ("3d", (4, 6), (3, 17, 15), "sliced"),
]
for _name, _size, _shape, _layout in ADAPTIVE:
    case(f"adaptive_avg_pool2d[{_name}]", lambda x, s=_size: F.adaptive_avg_pool2d(x, s), one(_shape, "normal", _layout),
         FLOATS, tolerance={F32: (1e-5, 2e-6)}, why="the window is summed in another order")
case("adaptive_avg_pool2d[module_then_pointwise]", lambda x: torch.nn.AdaptiveAvgPool2d((7, 7))(x * 2) + 1,
     one((2, 3, 10, 9)), FLOATS)

# -- group norm -----------------------------------------------------------------------------------

# Layer norm's two-pass statistics over each (batch, group), then eager's
# per-channel affine x * scale + bias. Eager computes the moments by Welford.


def _group_norm_inputs(shape, layout, weight=True, bias=True):
    def build(inp):
        args = [inp.tensor(shape, "normal", layout, scale=2, shift=0.5)]
        if weight:
            args.append(inp.tensor((shape[1],), "normal"))
        if bias:
            args.append(inp.tensor((shape[1],), "normal"))
        return tuple(args)
    return build


GROUP_NORM = [
    # name, groups, shape, layout, weight, bias
    ("affine", 3, (2, 6, 5, 7), "contiguous", True, True),
    ("one_group_sliced", 1, (2, 6, 5, 7), "sliced", True, True),
    ("group_per_channel_transposed", 6, (2, 6, 5, 7), "transposed", True, True),
    ("no_affine_3d", 4, (3, 8, 9), "contiguous", False, False),
    ("weight_only_2d", 2, (5, 6), "contiguous", True, False),
    ("5d", 2, (2, 4, 3, 3, 5), "contiguous", True, True),
    ("expanded", 2, (3, 4, 5, 7), "expanded", True, True),
]
for _name, _groups, _shape, _layout, _w, _b in GROUP_NORM:
    case(f"group_norm[{_name}]", lambda x, *p, g=_groups: F.group_norm(x, g, *p),
         _group_norm_inputs(_shape, _layout, _w, _b), FLOATS_F16, tolerance=_LN_TOL, why=_WHY_LN)
# float32 parameters on a bf16 input (a float32 module run on bf16 activations): eager's mixed-type group norm.
case("group_norm[eps_float32_params]", lambda x, w, b: F.group_norm(x, 2, w, b, eps=0.1),
     lambda inp: (inp.tensor((2, 4, 6, 5), "normal"), inp.tensor((4,), dtype=F32), inp.tensor((4,), dtype=F32)),
     FLOATS, tolerance=_LN_TOL, why=_WHY_LN,
     skips={("cuda", BF16): "eager CUDA refuses float32 parameters on a bf16 input (so does the capture run)"})
case("group_norm[stats]", lambda x, w, b: torch.ops.aten.native_group_norm(x, w, b, 2, 6, 35, 3, 1e-5),
     _group_norm_inputs((2, 6, 5, 7), "contiguous"), FLOATS, tolerance=_LN_TOL, why=_WHY_LN)
case("group_norm[then_silu]", lambda x, w, b: F.silu(F.group_norm(x, 2, w, b)) + x,
     _group_norm_inputs((2, 4, 9, 9), "contiguous"), FLOATS, tolerance=_LN_TOL, why=_WHY_LN)

# Batch norm by the batch's own statistics, no running statistics (NFNet's
# weight standardization): mean and variance over every dim but the channels.
case("batch_norm[batch_statistics]", lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True, eps=1e-4),
     _group_norm_inputs((2, 6, 5, 7), "sliced"), FLOATS, tolerance=_LN_TOL, why=_WHY_LN)
case("batch_norm[weight_standardization]",
     lambda x, g: F.batch_norm(x.reshape(1, 8, -1), None, None, weight=g, training=True, momentum=0.0).reshape_as(x),
     lambda inp: (inp.tensor((8, 3, 3, 3), "normal"), inp.tensor((8,), "normal")), FLOATS, tolerance=_LN_TOL, why=_WHY_LN)
case("batch_norm[batch_statistics_saved]",
     lambda x: torch.ops.aten.native_batch_norm(x, None, None, None, None, True, 0.1, 1e-5),
     one((3, 4, 9), layout="transposed"), FLOATS, tolerance=_LN_TOL, why=_WHY_LN)

# -- argmax / argmin, max.dim / min.dim --------------------------------------------------------------

# Two reductions: the extremum, then the first index holding it (NaN the
# extremum of all, its first index). Exact. "small_int" values tie often.
ARG_EXTREMA = [
    ("argmax[dim1_ties]", lambda x: x.argmax(1), one(ODD, "small_int")),
    ("argmax[dim0_keepdim_transposed]", lambda x: torch.argmax(x, 0, keepdim=True), one(ODD, "small_int", "transposed")),
    ("argmax[all]", lambda x: x.argmax(), one(SMALL3, "normal", "sliced")),
    ("argmax[all_keepdim_ties]", lambda x: torch.argmax(x, keepdim=True), one(SMALL3, "small_int")),
    ("argmax[neg_dim_rank3]", lambda x: x.argmax(-2), one(SMALL3, "small_int", "sliced")),
    ("argmax[expanded]", lambda x: x.argmax(0), one(ODD, "normal", "expanded")),
    ("argmax[zero_dim]", lambda x: x[2, 3].argmax(), one(ODD)),
    ("argmin[dim1_ties]", lambda x: x.argmin(1), one(ODD, "small_int", "transposed")),
    ("argmin[all]", lambda x: torch.argmin(x), one(ODD, "small_int")),
    ("argmin[neg_dim_keepdim]", lambda x: x.argmin(-1, keepdim=True), one(SMALL3, "normal", "sliced")),
    ("max_dim[ties]", lambda x: tuple(torch.max(x, 1)), one(ODD, "small_int")),
    ("max_dim[keepdim_transposed]", lambda x: tuple(x.max(0, keepdim=True)), one(ODD, "normal", "transposed")),
    ("min_dim[neg_dim_sliced]", lambda x: tuple(torch.min(x, -1)), one(SMALL3, "small_int", "sliced")),
]
for _name, _fn, _build in ARG_EXTREMA:
    case(_name, _fn, _build, NUMERIC, exact=True)
# bf16 left out: eager rounds x * 2 - 1 to bf16 first (new ties), deepvisor keeps it in float32.
case("argmax[of_pointwise]", lambda x: (x * 2 - 1).argmax(-1), one(ODD), (F32,) + INTS, exact=True)
# NaN is the extremum of all: its first index.
_WITH_NAN = lambda x: torch.where(x < -1.0, float("nan"), x)  # noqa: E731
for _name, _fn in (("argmax", lambda x: _WITH_NAN(x).argmax(1)), ("argmin", lambda x: _WITH_NAN(x).argmin(0)),
                   ("max_dim", lambda x: tuple(_WITH_NAN(x).max(1))), ("min_dim", lambda x: tuple(_WITH_NAN(x).min(1)))):
    case(f"{_name}[nan]", _fn, one(ODD), FLOATS, exact=True)
case("argmax[special_values]", lambda x, y: (x + y).argmax(1), _special((1, 1)), (F32,), exact=True)


def params(device, filter_dtype=None):
    """(case, dtype) pairs for pytest.mark.parametrize, with readable ids."""
    import pytest

    kind = torch.device(device).type
    out = []
    for c in CASES:
        for dt in c.dtypes:
            if filter_dtype is None or filter_dtype(dt):
                skip = c.skips.get((kind, dt))
                marks = [pytest.mark.skip(reason=skip)] if skip else []
                out.append(pytest.param(c, dt, id=f"{c.name}-{SHORT[dt]}", marks=marks))
    return out


# ---------------------------------------------------------------------------
# Comparison


def assert_binary_op_bit_exact(name, a, b, calls=2):
    """torch.<name>(a, b) compiled gives eager's dtype and bits."""
    fn = getattr(torch, name)
    g = deepvisor.compile(lambda u, v: fn(u, v))
    want = fn(a, b)
    for _ in range(calls):
        got = g(a, b)
    assert got.dtype == want.dtype
    assert torch.equal(got, want), (got, want)


# Binary ops with a Python number that is not a bf16/f16 value (1.573 is
# 1.5703125 in bf16): eager reads it rounded to the tensor's dtype or in
# float, by op and device (lowering.cpp, number_as_read); the plan must give
# eager's bits either way.
NUMBER_OPERAND_CASES = {
    "add": lambda x: x + 1.573, "radd": lambda x: 1.573 + x, "sub": lambda x: x - -1.573, "rsub": lambda x: 1.573 - x,
    "add_alpha": lambda x: torch.add(x, x, alpha=0.3), "sub_number_alpha": lambda x: torch.sub(x, 1.573, alpha=2.0),
    "add_": lambda x: x.clone().add_(1.573), "mul": lambda x: x * 1.573, "div": lambda x: x / 1.573,
    "remainder": lambda x: torch.remainder(x, 1.573), "pow_exponent": lambda x: x.abs().pow(1.573),
    "pow_base": lambda x: torch.pow(1.573, x), "eq": lambda x: x == 0.573, "ne": lambda x: x != 0.573,
    "lt": lambda x: x < 0.573, "ge": lambda x: x >= 0.573, "floor_after_sub": lambda x: torch.floor((x - -1.573) * 3),
}


def assert_number_operand_bit_exact(name, dtype, device):
    """NUMBER_OPERAND_CASES[name] compiled gives eager's bits on random values
    and on values equal to the number rounded to `dtype`."""
    fn = NUMBER_OPERAND_CASES[name]
    g = deepvisor.compile(fn)
    gen = torch.Generator().manual_seed(0)
    rounded = torch.tensor([0.573, 1.573, -1.573], dtype=dtype)
    for _ in range(3):
        x = torch.cat([torch.randn(61, generator=gen).to(dtype) * 4, rounded]).to(device)
        want, got = fn(x), g(x)
        assert got.dtype == want.dtype
        assert torch.equal(got, want), (x[got != want][:4], got[got != want][:4], want[got != want][:4])


def assert_matches(actual, expected, tolerances, what="output"):
    """Same structure, and tensors of the same dtype, shape and values (NaN
    at the same places). tolerances: dtype -> (rtol, atol)."""
    if isinstance(expected, torch.Tensor):
        rtol, atol = tolerances(expected.dtype)
        assert isinstance(actual, torch.Tensor), f"{what}: expected a tensor, got {type(actual).__name__}"
        assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
        assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
        assert actual.device == expected.device, f"{what}: device {actual.device} != {expected.device}"
        if expected.dtype.is_floating_point:
            nan_a, nan_e = torch.isnan(actual), torch.isnan(expected)
            if not torch.equal(nan_a, nan_e):
                where = (nan_a != nan_e).nonzero()[:5].tolist()
                raise AssertionError(f"{what}: NaN positions differ, e.g. at {where}")
        torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, equal_nan=True, check_stride=False,
                                   msg=lambda m: f"{what}: {m}")
    elif isinstance(expected, (tuple, list)):
        assert type(actual) is type(expected) and len(actual) == len(expected), f"{what}: {actual!r}"
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_matches(a, e, tolerances, f"{what}[{i}]")
    elif isinstance(expected, dict):
        assert isinstance(actual, dict) and actual.keys() == expected.keys(), f"{what}: keys differ"
        for k in expected:
            assert_matches(actual[k], expected[k], tolerances, f"{what}[{k!r}]")
    else:
        assert actual == expected or (isinstance(expected, float) and math.isnan(expected) and math.isnan(actual)), \
            f"{what}: {actual!r} != {expected!r}"


# -- the check both suites run ---------------------------------------------------------------


def aliased_arguments(result, args):
    """For each tensor of `result`, the argument whose storage it shares (or None)."""
    storages = {a.untyped_storage().data_ptr(): i for i, a in enumerate(args)
                if isinstance(a, torch.Tensor) and a.numel() > 0}
    leaves = torch.utils._pytree.tree_flatten(result)[0]
    return [storages.get(t.untyped_storage().data_ptr()) if t.numel() > 0 else None
            for t in leaves if isinstance(t, torch.Tensor)]


def check_compiled(case, dtype, device):

    def tolerances(out_dtype):
        return case.tolerances(out_dtype, device)

    args = case.args(device, dtype)
    expected = case.fn(*args)
    g = deepvisor.compile(case.fn)
    captured = g(*args)
    assert_matches(captured, expected, tolerances, "capture run")
    replayed = g(*args)
    assert_matches(replayed, expected, tolerances, "replay")
    assert aliased_arguments(replayed, args) == aliased_arguments(expected, args), \
        "outputs alias the arguments differently from eager"

    stats = deepvisor.stats(g)
    assert stats["eager_calls"] == 0, stats["eager_reasons"]
    assert stats["captures"] == 1 and stats["cache_hits"] == 1, stats
    unexpected = set(stats["fallback_ops"]) - case.allowed_fallbacks
    assert not unexpected, f"ops fell back to ATen: {unexpected}"
    assert stats["kernels"] >= case.min_kernels, stats

    # New values, same shapes: the replay must read them, not the capture's.
    fresh = case.args(device, dtype, seed=1)
    assert_matches(g(*fresh), case.fn(*fresh), tolerances, "replay on new inputs")
    stats = deepvisor.stats(g)
    assert stats["captures"] == 1 and stats["cache_hits"] == 2, stats
