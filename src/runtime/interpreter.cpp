// The CPU interpreter of the loop IR (see interpreter.h and
// docs/loop-ir-semantics.md).
//
// Evaluation model. The x range is cut into blocks of `rows` consecutive rows.
// Within a block every SSA value is one Eigen array:
//   - an x-level value has `rows` elements (element b belongs to row x0 + b);
//   - an r-level value has rows * rnumel elements, row-major: element
//     b * rnumel + r belongs to the point (x0 + b, r).
// Instructions run in body order, each over the whole block, so the op and
// dtype are dispatched once per block, never per element. An x-level operand
// of an r-level instruction is repeated along r (cached once per block). A
// Reduce views its r-level operand as an rnumel x rows column-major matrix and
// reduces each column.
//
// Pointwise kernels (rnumel == 1) are the same thing with one point per row.
//
// Memory. Index expressions are evaluated over the block into int64 arrays,
// and loads and stores gather / scatter through them; an index that is affine
// with unit stride over the block (x + c, or x * rnumel + r + c) is recognized
// before running and copied as one contiguous span instead. Bounds are checked
// per block unless the index's static bounds already lie inside the buffer.
#include "runtime/interpreter.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <functional>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <variant>

#include <Eigen/Core>

namespace dv::runtime {

// ---------------------------------------------------------------------------
// 16-bit float conversions.

std::uint16_t f32_to_bf16_bits(float value) {
  const auto bits = std::bit_cast<std::uint32_t>(value);
  // NaN: truncating could clear every mantissa bit left (turning it into inf),
  // so force the quiet bit.
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((bits >> 16) | 0x0040u);
  // Round to nearest even on the 16 dropped bits. A carry out of the mantissa
  // bumps the exponent, which is exactly right (up to inf at the top).
  const std::uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<std::uint16_t>((bits + rounding) >> 16);
}

float bf16_bits_to_f32(std::uint16_t bits) {
  return std::bit_cast<float>(static_cast<std::uint32_t>(bits) << 16);
}

// Rounds away `shift` low bits of `mantissa` to nearest, ties to even.
static std::uint32_t round_shift_rne(std::uint32_t mantissa, std::uint32_t shift) {
  const std::uint32_t kept = mantissa >> shift;
  const std::uint32_t rest = mantissa & ((1u << shift) - 1u);
  const std::uint32_t half = 1u << (shift - 1);
  return (rest > half || (rest == half && (kept & 1u))) ? kept + 1 : kept;
}

std::uint16_t f32_to_f16_bits(float value) {
  const auto bits = std::bit_cast<std::uint32_t>(value);
  const std::uint32_t sign = (bits >> 16) & 0x8000u;
  const std::uint32_t mag = bits & 0x7fffffffu;
  std::uint32_t half;
  if (mag > 0x7f800000u) {
    half = 0x7e00u | ((mag >> 13) & 0x03ffu);  // NaN: quiet, keeps the top payload bits
  } else if (mag >= 0x477ff000u) {
    half = 0x7c00u;  // >= 65520 (the midpoint of 65504 and 2^16) rounds to inf; inf stays inf
  } else if (mag >= 0x38800000u) {
    // Normal half (>= 2^-14): rebias the exponent (127 -> 15, i.e. subtract
    // 112 << 23) and round 13 mantissa bits away; a carry may bump the exponent.
    half = round_shift_rne(mag - 0x38000000u, 13);
  } else if (mag <= 0x33000000u) {
    half = 0;  // <= 2^-25: rounds to zero (2^-25 itself is a tie and 0 is even)
  } else {
    // Subnormal half, in units of 2^-24. The float is m * 2^(e - 150) with the
    // implicit bit in m, i.e. m * 2^(e - 126) units: shift right by 126 - e.
    const std::uint32_t exponent = mag >> 23;  // 102 .. 112
    const std::uint32_t mantissa = (mag & 0x7fffffu) | 0x800000u;
    half = round_shift_rne(mantissa, 126 - exponent);  // may round up to the smallest normal: correct
  }
  return static_cast<std::uint16_t>(sign | half);
}

float f16_bits_to_f32(std::uint16_t bits) {
  const std::uint32_t sign = (static_cast<std::uint32_t>(bits) & 0x8000u) << 16;
  const std::uint32_t exponent = (bits >> 10) & 0x1fu;
  const std::uint32_t mantissa = bits & 0x3ffu;
  if (exponent == 0x1f) return std::bit_cast<float>(sign | 0x7f800000u | (mantissa << 13));
  if (exponent != 0) return std::bit_cast<float>(sign | ((exponent + 112) << 23) | (mantissa << 13));
  const float magnitude = static_cast<float>(mantissa) * 0x1p-24f;  // zero or subnormal: exact
  return sign ? -magnitude : magnitude;
}

namespace {

using ir::DType;
using ir::IndexExpr;
using ir::Instr;
using ir::Kernel;
using ir::PrimOp;
using ir::ReduceOp;
using ir::ValueId;

template <class T>
using Arr = Eigen::Array<T, Eigen::Dynamic, 1>;
template <class T>
using Mat = Eigen::Array<T, Eigen::Dynamic, Eigen::Dynamic>;  // column-major
using Idx = Arr<std::int64_t>;

// Points per block: big enough to amortize the per-instruction dispatch, small
// enough that a block's values stay in cache.
constexpr std::int64_t kBlockPoints = 4096;

// ---------------------------------------------------------------------------
// Type dispatch.

template <class T>
struct Tag {
  using type = T;
};

// Calls f(Tag<T>{}) with T the C++ type of compute dtype `t`.
template <class F>
decltype(auto) with_compute_type(DType t, F&& f) {
  switch (t) {
    case DType::Bool: return f(Tag<bool>{});
    case DType::Int32: return f(Tag<std::int32_t>{});
    case DType::Int64: return f(Tag<std::int64_t>{});
    case DType::Float32: return f(Tag<float>{});
    case DType::Float64: return f(Tag<double>{});
    default: break;  // f16/bf16 are storage only; other dtypes never reach a kernel
  }
  throw std::invalid_argument("interpret: " + std::string(ir::dtype_name(t)) + " is not a compute dtype");
}

struct F16 {};
struct BF16 {};

// How a storage dtype is held in memory (Raw) and turned into its compute
// dtype and back. `encode` takes a value already in the compute dtype.
template <class S>
struct Storage {  // i32, i64, f32, f64: stored as computed
  using Raw = S;
  using Compute = S;
  static Compute decode(Raw v) { return v; }
  static Raw encode(Compute v) { return v; }
};
template <>
struct Storage<bool> {
  using Raw = std::uint8_t;
  using Compute = bool;
  static bool decode(Raw v) { return v != 0; }
  static Raw encode(bool v) { return v ? 1 : 0; }
};
template <>
struct Storage<F16> {
  using Raw = std::uint16_t;
  using Compute = float;
  static float decode(Raw v) { return f16_bits_to_f32(v); }
  static Raw encode(float v) { return f32_to_f16_bits(v); }
};
template <>
struct Storage<BF16> {
  using Raw = std::uint16_t;
  using Compute = float;
  static float decode(Raw v) { return bf16_bits_to_f32(v); }
  static Raw encode(float v) { return f32_to_bf16_bits(v); }
};

template <class F>
decltype(auto) with_storage_type(DType t, F&& f) {
  switch (t) {
    case DType::Bool: return f(Tag<bool>{});
    case DType::Int32: return f(Tag<std::int32_t>{});
    case DType::Int64: return f(Tag<std::int64_t>{});
    case DType::Float16: return f(Tag<F16>{});
    case DType::BFloat16: return f(Tag<BF16>{});
    case DType::Float32: return f(Tag<float>{});
    case DType::Float64: return f(Tag<double>{});
    default: break;  // lowering makes ops on other dtypes fallbacks
  }
  throw std::invalid_argument("interpret: " + std::string(ir::dtype_name(t)) + " is not a kernel dtype");
}

template <class T>
constexpr bool kIsFloat = std::is_floating_point_v<T>;
template <class T>
constexpr bool kIsInt = std::is_integral_v<T> && !std::is_same_v<T, bool>;

// ---------------------------------------------------------------------------
// Scalar semantics that Eigen has no exact equivalent for.

// Cast (and the conversion part of Store).
template <class To, class From>
To convert(From v) {
  if constexpr (std::is_same_v<To, From>) {
    return v;
  } else if constexpr (std::is_same_v<To, bool>) {
    return v != From(0);  // NaN is true
  } else if constexpr (std::is_same_v<From, bool>) {
    return v ? To(1) : To(0);
  } else if constexpr (kIsInt<To> && kIsFloat<From>) {
    // Truncation toward zero. C leaves NaN and out-of-range values undefined;
    // we saturate and map NaN to 0, as CUDA's cvt.rzi does, so both back ends agree.
    constexpr From limit = -static_cast<From>(std::numeric_limits<To>::min());  // 2^31 or 2^63: exact
    if (v != v) return 0;
    if (v >= limit) return std::numeric_limits<To>::max();
    if (v < -limit) return std::numeric_limits<To>::min();
    return static_cast<To>(v);
  } else {
    return static_cast<To>(v);  // i64 -> i32 keeps the low 32 bits (modular since C++20)
  }
}

template <class T>
using Unsigned = std::make_unsigned_t<T>;

template <class T>
T wrapping_neg(T a) {
  return static_cast<T>(Unsigned<T>(0) - static_cast<Unsigned<T>>(a));
}

// a + b: IEEE for floats, wrapping for ints (an accumulating Store).
template <class T>
T wrapping_add(T a, T b) {
  if constexpr (kIsInt<T>) return static_cast<T>(static_cast<Unsigned<T>>(a) + static_cast<Unsigned<T>>(b));
  else return a + b;
}

// b == -1 is special-cased: MIN / -1 overflows (and traps on x86); its
// wrapped result is MIN, which is -a wrapped.
template <class T>
T int_div(T a, T b) {
  if (b == 0) return 0;
  if (b == -1) return wrapping_neg(a);
  return a / b;
}

template <class T>
T int_floordiv(T a, T b) {
  if (b == 0) return 0;
  if (b == -1) return wrapping_neg(a);
  T q = a / b;
  if (a % b != 0 && ((a < 0) != (b < 0))) --q;
  return q;
}

template <class T>
T int_mod(T a, T b) {
  if (b == 0 || b == -1) return 0;
  T r = a % b;
  if (r != 0 && ((r < 0) != (b < 0))) r += b;
  return r;
}

template <class T>
T float_mod(T a, T b) {
  T r = std::fmod(a, b);
  if (r != 0 && ((r < 0) != (b < 0))) r += b;
  return r;
}

template <class T>
T int_pow(T base, T exponent) {
  if (exponent < 0) {
    if (base == 1) return 1;
    if (base == -1) return (exponent & 1) ? T(-1) : T(1);
    return 0;
  }
  Unsigned<T> result = 1, b = static_cast<Unsigned<T>>(base);
  for (auto e = static_cast<Unsigned<T>>(exponent); e != 0; e >>= 1) {
    if (e & 1) result *= b;
    b *= b;
  }
  return static_cast<T>(result);
}

template <class T>
T floor_div_scalar(T a, T b) {  // b > 0
  T q = a / b;
  return (a % b < 0) ? q - 1 : q;
}

template <class T>
T floor_mod_scalar(T a, T b) {  // b > 0
  T r = a % b;
  return r < 0 ? r + b : r;
}

// ---------------------------------------------------------------------------
// Block-wise operations on Eigen arrays. `out` is sized by the caller or by
// Eigen's assignment.

[[noreturn]] void unsupported(PrimOp op, DType t) {
  throw std::invalid_argument("interpret: " + std::string(ir::prim_op_name(op)) + " is not defined on " +
                              std::string(ir::dtype_name(t)));
}

template <class T>
DType dtype_of() {
  if constexpr (std::is_same_v<T, bool>) return DType::Bool;
  if constexpr (std::is_same_v<T, std::int32_t>) return DType::Int32;
  if constexpr (std::is_same_v<T, std::int64_t>) return DType::Int64;
  if constexpr (std::is_same_v<T, float>) return DType::Float32;
  if constexpr (std::is_same_v<T, double>) return DType::Float64;
}

// The math functions go through the C library (std::exp is expf for float),
// not Eigen's vectorized approximations: the semantics ask for the C results.
template <class T>
void float_unary(PrimOp op, const Arr<T>& a, Arr<T>& out) {
  switch (op) {
    case PrimOp::Neg: out = -a; return;
    case PrimOp::Abs: out = a.abs(); return;
    case PrimOp::Exp: out = a.unaryExpr([](T v) { return std::exp(v); }); return;
    case PrimOp::Exp2: out = a.unaryExpr([](T v) { return std::exp2(v); }); return;
    case PrimOp::Log: out = a.unaryExpr([](T v) { return std::log(v); }); return;
    case PrimOp::Log1p: out = a.unaryExpr([](T v) { return std::log1p(v); }); return;
    case PrimOp::Sqrt: out = a.unaryExpr([](T v) { return std::sqrt(v); }); return;
    case PrimOp::Rsqrt: out = a.unaryExpr([](T v) { return T(1) / std::sqrt(v); }); return;
    case PrimOp::Sin: out = a.unaryExpr([](T v) { return std::sin(v); }); return;
    case PrimOp::Cos: out = a.unaryExpr([](T v) { return std::cos(v); }); return;
    case PrimOp::Tanh: out = a.unaryExpr([](T v) { return std::tanh(v); }); return;
    case PrimOp::Erf: out = a.unaryExpr([](T v) { return std::erf(v); }); return;
    case PrimOp::Floor: out = a.unaryExpr([](T v) { return std::floor(v); }); return;
    case PrimOp::Ceil: out = a.unaryExpr([](T v) { return std::ceil(v); }); return;
    case PrimOp::Round: out = a.unaryExpr([](T v) { return std::nearbyint(v); }); return;  // half to even
    case PrimOp::Trunc: out = a.unaryExpr([](T v) { return std::trunc(v); }); return;
    case PrimOp::RoundBf16:
      if constexpr (std::is_same_v<T, float>) {
        out = a.unaryExpr([](float v) { return Storage<BF16>::decode(Storage<BF16>::encode(v)); });
        return;
      }
      break;
    case PrimOp::RoundF16:
      if constexpr (std::is_same_v<T, float>) {
        out = a.unaryExpr([](float v) { return Storage<F16>::decode(Storage<F16>::encode(v)); });
        return;
      }
      break;
    default: break;
  }
  unsupported(op, dtype_of<T>());
}

template <class T>
void int_unary(PrimOp op, const Arr<T>& a, Arr<T>& out) {
  switch (op) {
    case PrimOp::Neg: out = a.unaryExpr([](T v) { return wrapping_neg(v); }); return;
    case PrimOp::Abs: out = a.unaryExpr([](T v) { return v < 0 ? wrapping_neg(v) : v; }); return;
    case PrimOp::Floor:
    case PrimOp::Ceil:
    case PrimOp::Round:
    case PrimOp::Trunc: out = a; return;
    default: unsupported(op, dtype_of<T>());
  }
}

template <class T>
void arith_unary(PrimOp op, const Arr<T>& a, Arr<T>& out) {
  if constexpr (kIsFloat<T>) {
    float_unary(op, a, out);
  } else if constexpr (kIsInt<T>) {
    int_unary(op, a, out);
  } else {  // Bool: only the rounding ops make sense (identity)
    if (op == PrimOp::Floor || op == PrimOp::Ceil || op == PrimOp::Round || op == PrimOp::Trunc) {
      out = a;
      return;
    }
    unsupported(op, DType::Bool);
  }
}

template <class T>
void float_binary(PrimOp op, const Arr<T>& a, const Arr<T>& b, Arr<T>& out) {
  switch (op) {
    case PrimOp::Add: out = a + b; return;
    case PrimOp::Sub: out = a - b; return;
    case PrimOp::Mul: out = a * b; return;
    case PrimOp::Div: out = a / b; return;
    case PrimOp::FloorDiv: out = (a / b).unaryExpr([](T v) { return std::floor(v); }); return;
    case PrimOp::Mod: out = a.binaryExpr(b, [](T x, T y) { return float_mod(x, y); }); return;
    case PrimOp::Pow: out = a.binaryExpr(b, [](T x, T y) { return std::pow(x, y); }); return;
    // NaN-propagating: pick a when a is NaN or wins, else b (which may be NaN).
    case PrimOp::Maximum: out = (a != a || a > b).select(a, b); return;
    case PrimOp::Minimum: out = (a != a || a < b).select(a, b); return;
    default: unsupported(op, dtype_of<T>());
  }
}

template <class T>
void int_binary(PrimOp op, const Arr<T>& a, const Arr<T>& b, Arr<T>& out) {
  using U = Unsigned<T>;
  // Add/Sub/Mul in the unsigned type: wraps without undefined behaviour.
  switch (op) {
    case PrimOp::Add: out = (a.template cast<U>() + b.template cast<U>()).template cast<T>(); return;
    case PrimOp::Sub: out = (a.template cast<U>() - b.template cast<U>()).template cast<T>(); return;
    case PrimOp::Mul: out = (a.template cast<U>() * b.template cast<U>()).template cast<T>(); return;
    case PrimOp::Div: out = a.binaryExpr(b, [](T x, T y) { return int_div(x, y); }); return;
    case PrimOp::FloorDiv: out = a.binaryExpr(b, [](T x, T y) { return int_floordiv(x, y); }); return;
    case PrimOp::Mod: out = a.binaryExpr(b, [](T x, T y) { return int_mod(x, y); }); return;
    case PrimOp::Pow: out = a.binaryExpr(b, [](T x, T y) { return int_pow(x, y); }); return;
    case PrimOp::Maximum: out = a.max(b); return;
    case PrimOp::Minimum: out = a.min(b); return;
    default: unsupported(op, dtype_of<T>());
  }
}

template <class T>
void arith_binary(PrimOp op, const Arr<T>& a, const Arr<T>& b, Arr<T>& out) {
  if constexpr (kIsFloat<T>) {
    float_binary(op, a, b, out);
  } else if constexpr (kIsInt<T>) {
    int_binary(op, a, b, out);
  } else {  // Bool: max is or, min is and
    if (op == PrimOp::Maximum) {
      out = a || b;
      return;
    }
    if (op == PrimOp::Minimum) {
      out = a && b;
      return;
    }
    unsupported(op, DType::Bool);
  }
}

template <class T>
void compare(PrimOp op, const Arr<T>& a, const Arr<T>& b, Arr<bool>& out) {
  switch (op) {
    case PrimOp::Eq: out = a == b; return;
    case PrimOp::Ne: out = a != b; return;
    case PrimOp::Lt: out = a < b; return;
    case PrimOp::Le: out = a <= b; return;
    case PrimOp::Gt: out = a > b; return;
    case PrimOp::Ge: out = a >= b; return;
    case PrimOp::LogicalAnd: out = a != T(0) && b != T(0); return;
    case PrimOp::LogicalOr: out = a != T(0) || b != T(0); return;
    case PrimOp::LogicalXor: out = (a != T(0)) != (b != T(0)); return;
    default: unsupported(op, dtype_of<T>());
  }
}

template <class T>
T reduce_identity(ReduceOp op) {
  using L = std::numeric_limits<T>;
  switch (op) {
    case ReduceOp::Sum: return T(0);
    case ReduceOp::Prod: return T(1);
    case ReduceOp::Max: return L::has_infinity ? -L::infinity() : L::lowest();
    case ReduceOp::Min: return L::has_infinity ? L::infinity() : L::max();
  }
  return T(0);
}

// The sum (or product) of n values in an order fixed by n alone: eight
// running results by position mod 8, then combined pairwise. Eigen's
// vectorized reduction peels elements up to an aligned address first, so
// equal columns at different addresses (rows in different blocks) could
// round differently, and an argmax over them broke a tie eager does not see.
template <class T, class Op>
T fixed_order(const T* p, Eigen::Index n, T identity, Op op) {
  T lanes[8];
  for (T& lane : lanes) lane = identity;
  Eigen::Index i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) lanes[k] = op(lanes[k], p[i + k]);
  for (int k = 0; i < n; ++i, ++k) lanes[k] = op(lanes[k], p[i]);
  for (int width = 4; width >= 1; width /= 2)
    for (int k = 0; k < width; ++k) lanes[k] = op(lanes[k], lanes[k + width]);
  return lanes[0];
}

template <class T, class Op>
void columns_in_fixed_order(const Eigen::Map<const Mat<T>>& m, Arr<T>& out, T identity, Op op) {
  out.resize(m.cols());
  for (Eigen::Index c = 0; c < m.cols(); ++c) out[c] = fixed_order(m.data() + c * m.rows(), m.rows(), identity, op);
}

// Reduces each column of the r x rows matrix `m` (one column per row of the block).
template <class T>
void reduce_columns(ReduceOp op, const Eigen::Map<const Mat<T>>& m, Arr<T>& out) {
  if (m.rows() == 0) {  // rnumel == 0: the identity
    out.setConstant(m.cols(), reduce_identity<T>(op));
    return;
  }
  if constexpr (std::is_same_v<T, bool>) {
    // Sum and Max of booleans are "any", Prod and Min are "all".
    if (op == ReduceOp::Sum || op == ReduceOp::Max) out = m.colwise().any().transpose();
    else out = m.colwise().all().transpose();
  } else if constexpr (kIsInt<T>) {
    using U = Unsigned<T>;  // wrapping sums and products
    switch (op) {
      case ReduceOp::Sum: out = m.template cast<U>().colwise().sum().transpose().template cast<T>(); return;
      case ReduceOp::Prod: out = m.template cast<U>().colwise().prod().transpose().template cast<T>(); return;
      case ReduceOp::Max: out = m.colwise().maxCoeff().transpose(); return;
      case ReduceOp::Min: out = m.colwise().minCoeff().transpose(); return;
    }
  } else {
    switch (op) {
      case ReduceOp::Sum: columns_in_fixed_order(m, out, T(0), std::plus<T>()); return;
      case ReduceOp::Prod: columns_in_fixed_order(m, out, T(1), std::multiplies<T>()); return;
      case ReduceOp::Max:
      case ReduceOp::Min: {
        // Eigen's maxCoeff/minCoeff leave NaN handling unspecified: patch
        // columns holding a NaN afterwards.
        if (op == ReduceOp::Max) out = m.colwise().maxCoeff().transpose();
        else out = m.colwise().minCoeff().transpose();
        const Arr<bool> has_nan = m.isNaN().colwise().any().transpose();
        out = has_nan.select(std::numeric_limits<T>::quiet_NaN(), out);
        return;
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Index expressions, evaluated over a block.

// A block of index values, or one value for the whole block.
struct IndexValue {
  bool uniform = true;
  std::int64_t scalar = 0;
  Idx values;
};

void add_into(IndexValue& acc, IndexValue term) {
  if (acc.uniform && term.uniform) {
    acc.scalar += term.scalar;
  } else if (acc.uniform) {
    term.values += acc.scalar;
    acc = std::move(term);
  } else if (term.uniform) {
    acc.values += term.scalar;
  } else {
    acc.values += term.values;
  }
}

void mul_into(IndexValue& acc, IndexValue factor) {
  if (acc.uniform && factor.uniform) {
    acc.scalar *= factor.scalar;
  } else if (acc.uniform) {
    factor.values *= acc.scalar;
    acc = std::move(factor);
  } else if (factor.uniform) {
    acc.values *= factor.scalar;
  } else {
    acc.values *= factor.values;
  }
}

// floor(n / d) for 0 <= n < 2^31 and 1 <= d < 2^31 by a multiply and a
// shift instead of a 64-bit division (several times faster). Granlund and
// Montgomery (1994), theorem 4.2 with N = 31: for l = ceil(log2 d) and
// m = floor(2^(31+l) / d) + 1, m*d lies in (2^(31+l), 2^(31+l) + 2^l], so
// (n*m) >> (31+l) is exact; m <= 2^32, so n*m < 2^63 does not overflow.
class SmallDivisor {
 public:
  explicit SmallDivisor(std::int64_t d) {
    int l = 0;
    while ((std::int64_t{1} << l) < d) ++l;
    shift_ = 31 + l;
    magic_ = (std::uint64_t{1} << shift_) / static_cast<std::uint64_t>(d) + 1;
  }
  std::int64_t quotient(std::int64_t n) const {
    return static_cast<std::int64_t>((static_cast<std::uint64_t>(n) * magic_) >> shift_);
  }

 private:
  std::uint64_t magic_ = 0;
  int shift_ = 0;
};

constexpr std::int64_t kSmall = std::int64_t{1} << 31;

// floordiv / mod of block values by a positive constant d, where `lo` and `hi`
// bound the numerator when `bounded` (else nothing is known about it).
void floor_div_mod(Idx& n, std::int64_t d, bool div, bool bounded, std::int64_t lo, std::int64_t hi) {
  if (bounded && lo >= 0 && hi < kSmall && d < kSmall) {
    const SmallDivisor sd(d);
    if (div) n = n.unaryExpr([sd](std::int64_t a) { return sd.quotient(a); });
    else n = n.unaryExpr([sd, d](std::int64_t a) { return a - sd.quotient(a) * d; });
  } else if (bounded && lo >= 0) {  // C division is floor division here
    if (div) n = n.unaryExpr([d](std::int64_t a) { return a / d; });
    else n = n.unaryExpr([d](std::int64_t a) { return a % d; });
  } else if (div) {
    n = n.unaryExpr([d](std::int64_t a) { return floor_div_scalar(a, d); });
  } else {
    n = n.unaryExpr([d](std::int64_t a) { return floor_mod_scalar(a, d); });
  }
}

// Adds scale * e to the affine form ax * x + ar * r + c; false when e is not
// affine in x and r.
struct Affine {
  std::int64_t ax = 0, ar = 0, c = 0;
};

bool accumulate_affine(const IndexExpr& e, std::int64_t scale, Affine& a) {
  using Kind = IndexExpr::Kind;
  switch (e.kind()) {
    case Kind::Const: a.c += scale * e.value(); return true;
    case Kind::Var:
      if (e.name() == "x") a.ax += scale;
      else if (e.name() == "r") a.ar += scale;
      else return false;
      return true;
    case Kind::Add:
      for (const auto& o : e.operands())
        if (!accumulate_affine(o, scale, a)) return false;
      return true;
    case Kind::Mul: {
      const IndexExpr* atom = nullptr;
      for (const auto& o : e.operands()) {
        if (o.is_const()) scale *= o.value();
        else if (atom) return false;  // a product of two non-constants
        else atom = &o;
      }
      if (!atom) {
        a.c += scale;
        return true;
      }
      return accumulate_affine(*atom, scale, a);
    }
    default: return false;
  }
}

// ---------------------------------------------------------------------------
// The evaluator of one kernel run.

using Column = std::variant<Arr<bool>, Arr<std::int32_t>, Arr<std::int64_t>, Arr<float>, Arr<double>>;

// Storage of one SSA value, reused from block to block (Eigen does not
// reallocate when the size stays the same).
struct Slot {
  Column value;
  Column repeated;              // the value repeated along r, for r-level users of an x-level value
  std::int64_t repeated_block = -1;  // block that `repeated` was computed for
  bool block_invariant = false;  // a Constant: same in every block of the same size
  Eigen::Index filled = -1;      // a Constant: size it was last filled for
};

// What is known, before running, about the index of an Index, Load or Store.
struct Access {
  bool affine = false;  // index == form.ax * x + form.ar * r + form.c
  Affine form;
  // The variables are the kernel's own (extent xnumel / rnumel), so the
  // expression's static bounds hold at every point.
  bool bounds_hold = false;
  bool in_bounds = false;  // ... and they lie within the buffer: no check needed
};

// The elements one access instruction touches in the current block.
struct Addresses {
  Eigen::Index size = 0;
  bool contiguous = false;
  std::int64_t start = 0;  // contiguous: offset of the first point
  Idx index;               // otherwise: offset of each point
};

class Evaluator {
 public:
  Evaluator(const Kernel& kernel, const std::vector<void*>& buffers);
  void run();

 private:
  void validate() const;
  void mark_levels();
  void analyze_accesses();
  bool vars_are_kernels(const IndexExpr& e) const;
  void run_block(std::int64_t x0, std::int64_t rows);
  void eval(ValueId v);

  void eval_constant(ValueId v);
  void eval_index(ValueId v);
  void eval_load(ValueId v);
  void eval_gather_load(ValueId v);
  Idx offset_values(ValueId a, bool at_r_level);
  void eval_store(ValueId v);
  void eval_scatter_store(ValueId v);
  Idx scatter_addresses(ValueId v);
  void eval_unary(ValueId v);
  void eval_cast(ValueId v);
  void eval_binary(ValueId v);
  void eval_where(ValueId v);
  void eval_reduce(ValueId v);

  template <class T>
  const Arr<T>& operand(ValueId a, bool at_r_level);
  template <class T>
  Arr<T>& result(ValueId v);

  const Idx& x_values(bool at_r_level);
  IndexValue eval_index_expr(const IndexExpr& e, bool at_r_level, bool bounds_hold);
  Idx index_array(ValueId v);
  Addresses addresses(ValueId v);
  void check_access(const Addresses& where, ValueId v) const;
  std::string where_in_kernel(ValueId v) const;

  Eigen::Index block_size(bool r_level) const { return r_level ? n_r_ : n_x_; }

  const Kernel& kernel_;
  const std::vector<void*>& buffers_;
  const std::int64_t rnumel_;
  std::vector<bool> r_level_;  // recomputed here, not taken from Instr::r_level (see mark_levels)
  std::vector<Access> access_;
  std::vector<Slot> slots_;

  // Per block.
  std::int64_t block_ = -1;
  std::int64_t x0_ = 0;
  Eigen::Index n_x_ = 0, n_r_ = 0;
  Idx x_at_x_, x_at_r_;  // x of each x-level / r-level point, computed on first use in a block
  std::int64_t x_at_x_block_ = -1, x_at_r_block_ = -1;
  // For a full block: iota (x-level) and the row / r of each r-level point.
  Idx iota_, row_of_, r_of_;
};

Evaluator::Evaluator(const Kernel& kernel, const std::vector<void*>& buffers)
    : kernel_(kernel), buffers_(buffers), rnumel_(kernel.rnumel) {
  validate();
  mark_levels();
  analyze_accesses();
  slots_.resize(kernel_.body.size());
  for (std::size_t v = 0; v < kernel_.body.size(); ++v)
    slots_[v].block_invariant = kernel_.body[v].op == PrimOp::Constant;
}

std::string Evaluator::where_in_kernel(ValueId v) const {
  return "interpret: kernel " + kernel_.name + ", %" + std::to_string(v) + " (" +
         std::string(ir::prim_op_name(kernel_.body[v].op)) + ")";
}

// Checks what the evaluation relies on, so that a malformed kernel fails with
// a message instead of a crash.
void Evaluator::validate() const {
  if (kernel_.xnumel < 0 || kernel_.rnumel < 0) throw std::invalid_argument("interpret: negative extent");
  if (buffers_.size() != kernel_.buffers.size())
    throw std::invalid_argument("interpret: kernel " + kernel_.name + " has " +
                                std::to_string(kernel_.buffers.size()) + " buffers, got " +
                                std::to_string(buffers_.size()) + " pointers");
  for (const auto& b : kernel_.buffers)
    if (!ir::is_kernel_dtype(b.dtype))
      throw std::invalid_argument("interpret: buffer " + b.name + " has dtype " + std::string(ir::dtype_name(b.dtype)) +
                                  ", which is not a kernel dtype");
  const auto& body = kernel_.body;
  for (std::size_t i = 0; i < body.size(); ++i) {
    const auto v = static_cast<ValueId>(i);
    const Instr& in = body[i];
    auto fail = [&](const std::string& what) { throw std::invalid_argument(where_in_kernel(v) + ": " + what); };
    if (static_cast<int>(in.args.size()) != in.operand_count()) fail("wrong operand count");
    for (ValueId a : in.args)
      if (a < 0 || a >= v) fail("operand %" + std::to_string(a) + " is not defined before use");
    if (in.op != PrimOp::Store && (!ir::is_kernel_dtype(in.dtype) || in.dtype != ir::compute_dtype(in.dtype)))
      fail("result dtype is not a compute dtype");
    auto arg_dtype = [&](int k) { return body[in.args[k]].dtype; };
    if (in.op == PrimOp::Load || in.op == PrimOp::Store) {
      if (in.buffer < 0 || in.buffer >= static_cast<int>(buffers_.size())) fail("bad buffer number");
    }
    if (in.op == PrimOp::Load && in.dtype != ir::compute_dtype(kernel_.buffers[in.buffer].dtype))
      fail("load dtype differs from the buffer's compute dtype");
    if ((in.op == PrimOp::Load || in.op == PrimOp::Store) && in.indirect) {
      const DType t = body[in.offset_arg()].dtype;
      if (t != DType::Int32 && t != DType::Int64) fail("the offset is not Int32 or Int64");
      if (in.offset_extent < 0) fail("negative offset extent");
    }
    if (in.op == PrimOp::Store && in.accumulate) {
      const DType storage = kernel_.buffers[in.buffer].dtype;
      if (storage == DType::Bool || in.dtype != ir::compute_dtype(storage))
        fail("an accumulating store's value must have its (non-b8) buffer's compute dtype");
    }
    if (in.op == PrimOp::Load && in.masked && body[in.mask_arg()].dtype != DType::Bool) fail("the load's mask is not Bool");
    if (in.op == PrimOp::Store && in.dtype != arg_dtype(0)) fail("store dtype differs from the value's");
    if (in.op == PrimOp::Reduce && in.dtype != arg_dtype(0)) fail("reduce dtype differs from its operand's");
    if (in.op == PrimOp::Where && (arg_dtype(0) != DType::Bool || arg_dtype(1) != in.dtype || arg_dtype(2) != in.dtype))
      fail("where needs a Bool condition and branches of the result dtype");
    if (in.op != PrimOp::Load && in.op != PrimOp::Store && in.args.size() == 2 && arg_dtype(0) != arg_dtype(1))
      fail("operand dtypes differ");
  }
}

// An instruction is r-level when its index uses r or an operand is r-level
// (a Reduce never is). Recomputed here rather than read from Instr::r_level
// because what matters to the interpreter is whether the value can differ
// along r: with rnumel == 1 nothing is r-level (r is 0), and with rnumel == 0
// an r-level value is empty while an x-level one is not.
//
// rnumel == 0 needs one more rule: IndexExpr::var folds a variable of extent
// 0 to the constant 0, so `in[x * rnumel + r]` arrives as `in[0]` and no
// longer names r. An access to a buffer of no elements can only happen at no
// point at all (indices are always in range inside the space), so with
// rnumel == 0 such a Load or Store is taken to be r-level, i.e. empty.
void Evaluator::mark_levels() {
  r_level_.assign(kernel_.body.size(), false);
  if (rnumel_ == 1) return;
  for (std::size_t v = 0; v < kernel_.body.size(); ++v) {
    const Instr& in = kernel_.body[v];
    if (in.op == PrimOp::Reduce) continue;
    const bool access = in.op == PrimOp::Load || in.op == PrimOp::Store;
    bool r = (access || in.op == PrimOp::Index) && in.index.uses_var("r");
    if (rnumel_ == 0 && access && kernel_.buffers[in.buffer].numel == 0) r = true;
    for (ValueId a : in.args) r = r || r_level_[a];
    r_level_[v] = r;
  }
}

bool Evaluator::vars_are_kernels(const IndexExpr& e) const {
  if (e.is_var())
    return (e.name() == "x" && e.extent() == kernel_.xnumel) || (e.name() == "r" && e.extent() == kernel_.rnumel);
  if (e.is_const()) return true;
  for (const auto& o : e.operands())
    if (!vars_are_kernels(o)) return false;
  return true;
}

void Evaluator::analyze_accesses() {
  access_.assign(kernel_.body.size(), Access{});
  for (std::size_t v = 0; v < kernel_.body.size(); ++v) {
    const Instr& in = kernel_.body[v];
    if (in.op != PrimOp::Index && in.op != PrimOp::Load && in.op != PrimOp::Store) continue;
    Access& a = access_[v];
    a.affine = accumulate_affine(in.index, 1, a.form);
    a.bounds_hold = vars_are_kernels(in.index);
    if (in.op != PrimOp::Index)
      a.in_bounds = a.bounds_hold && in.index.min_value() >= 0 && in.index.max_value() < kernel_.buffers[in.buffer].numel;
  }
}

void Evaluator::run() {
  const std::int64_t xnumel = kernel_.xnumel;
  if (xnumel == 0) return;
  const std::int64_t rows = std::min(xnumel, rnumel_ > 0 ? std::max<std::int64_t>(1, kBlockPoints / rnumel_) : kBlockPoints);
  iota_.resize(rows);
  for (std::int64_t i = 0; i < rows; ++i) iota_[i] = i;
  if (rnumel_ != 1) {
    row_of_.resize(rows * rnumel_);
    r_of_.resize(rows * rnumel_);
    for (std::int64_t b = 0, i = 0; b < rows; ++b) {
      for (std::int64_t r = 0; r < rnumel_; ++r, ++i) {
        row_of_[i] = b;
        r_of_[i] = r;
      }
    }
  }
  for (std::int64_t x0 = 0; x0 < xnumel; x0 += rows) run_block(x0, std::min(rows, xnumel - x0));
}

void Evaluator::run_block(std::int64_t x0, std::int64_t rows) {
  ++block_;
  x0_ = x0;
  n_x_ = rows;
  n_r_ = rows * rnumel_;
  for (std::size_t v = 0; v < kernel_.body.size(); ++v) eval(static_cast<ValueId>(v));
}

void Evaluator::eval(ValueId v) {
  const PrimOp op = kernel_.body[v].op;
  switch (op) {
    case PrimOp::Constant: return eval_constant(v);
    case PrimOp::Index: return eval_index(v);
    case PrimOp::Load: return eval_load(v);
    case PrimOp::Store: return eval_store(v);
    case PrimOp::Cast: return eval_cast(v);
    case PrimOp::Where: return eval_where(v);
    case PrimOp::Reduce: return eval_reduce(v);
    default: break;
  }
  if (ir::prim_op_arity(op) == 1) return eval_unary(v);
  return eval_binary(v);
}

template <class T>
Arr<T>& Evaluator::result(ValueId v) {
  Column& c = slots_[v].value;
  if (!std::holds_alternative<Arr<T>>(c)) c = Arr<T>();
  Arr<T>& out = std::get<Arr<T>>(c);
  out.resize(block_size(r_level_[v]));
  return out;
}

// The value of `a` for use by an instruction at the given level: an x-level
// value used at r level is repeated rnumel times per row.
template <class T>
const Arr<T>& Evaluator::operand(ValueId a, bool at_r_level) {
  Slot& s = slots_[a];
  const Arr<T>& value = std::get<Arr<T>>(s.value);
  if (!at_r_level || r_level_[a] || rnumel_ == 1) return value;
  if (!std::holds_alternative<Arr<T>>(s.repeated)) s.repeated = Arr<T>();
  Arr<T>& rep = std::get<Arr<T>>(s.repeated);
  const bool fresh = s.repeated_block == block_ || (s.block_invariant && s.repeated_block >= 0 && rep.size() == n_r_);
  if (!fresh) {
    rep.resize(n_r_);
    // Column b of the rnumel x rows view is row b's r values.
    Eigen::Map<Mat<T>>(rep.data(), rnumel_, n_x_) = value.transpose().replicate(rnumel_, 1);
    s.repeated_block = block_;
  }
  return rep;
}

void Evaluator::eval_constant(ValueId v) {
  const Instr& in = kernel_.body[v];
  with_compute_type(in.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    Arr<T>& out = result<T>(v);
    if (slots_[v].filled == out.size()) return;  // still holds the constant
    if constexpr (kIsFloat<T>) out.setConstant(static_cast<T>(in.fvalue));
    else out.setConstant(convert<T>(in.ivalue));
    slots_[v].filled = out.size();
  });
}

const Idx& Evaluator::x_values(bool at_r_level) {
  if (!at_r_level) {
    if (x_at_x_block_ != block_) x_at_x_ = iota_.head(n_x_) + x0_;
    x_at_x_block_ = block_;
    return x_at_x_;
  }
  if (x_at_r_block_ != block_) x_at_r_ = row_of_.head(n_r_) + x0_;
  x_at_r_block_ = block_;
  return x_at_r_;
}

// `bounds_hold`: the static bounds of every sub-expression hold at every
// point, so floordiv and mod may use them to pick a faster division.
IndexValue Evaluator::eval_index_expr(const IndexExpr& e, bool at_r_level, bool bounds_hold) {
  using Kind = IndexExpr::Kind;
  switch (e.kind()) {
    case Kind::Const: return IndexValue{true, e.value(), {}};
    case Kind::Var:
      if (e.name() == "x") return IndexValue{false, 0, x_values(at_r_level)};
      if (e.name() == "r") {
        // At x level r can only be 0 (rnumel == 1): see mark_levels.
        if (!at_r_level) return IndexValue{true, 0, {}};
        return IndexValue{false, 0, r_of_.head(n_r_)};
      }
      throw std::invalid_argument("interpret: unknown index variable " + e.name());
    case Kind::Add:
    case Kind::Mul: {
      const bool add = e.kind() == Kind::Add;
      IndexValue acc{true, add ? 0 : 1, {}};
      for (const auto& o : e.operands()) {
        if (add) add_into(acc, eval_index_expr(o, at_r_level, bounds_hold));
        else mul_into(acc, eval_index_expr(o, at_r_level, bounds_hold));
      }
      return acc;
    }
    case Kind::FloorDiv:
    case Kind::Mod: {
      const auto& ops = e.operands();
      if (!ops[1].is_const() || ops[1].value() <= 0)
        throw std::invalid_argument("interpret: index divisor must be a positive constant: " + e.str());
      const std::int64_t d = ops[1].value();
      const bool div = e.kind() == Kind::FloorDiv;
      IndexValue n = eval_index_expr(ops[0], at_r_level, bounds_hold);
      if (n.uniform) n.scalar = div ? floor_div_scalar(n.scalar, d) : floor_mod_scalar(n.scalar, d);
      else floor_div_mod(n.values, d, div, bounds_hold, ops[0].min_value(), ops[0].max_value());
      return n;
    }
    case Kind::Abs: {
      IndexValue n = eval_index_expr(e.operands()[0], at_r_level, bounds_hold);
      if (n.uniform) n.scalar = n.scalar < 0 ? -n.scalar : n.scalar;
      else n.values = n.values.abs();
      return n;
    }
  }
  throw std::invalid_argument("interpret: unknown index expression kind");
}

// The index of instruction v at every point of the block.
Idx Evaluator::index_array(ValueId v) {
  const bool at_r = r_level_[v];
  IndexValue iv = eval_index_expr(kernel_.body[v].index, at_r, access_[v].bounds_hold);
  if (iv.uniform) return Idx::Constant(block_size(at_r), iv.scalar);
  return std::move(iv.values);
}

// Consecutive points (row-major over the block) touch consecutive elements
// when the index is x + c at x level, or x * rnumel + r + c at r level (one
// row alone needs only the r coefficient to be 1).
Addresses Evaluator::addresses(ValueId v) {
  const bool at_r = r_level_[v];
  const Access& a = access_[v];
  Addresses where;
  where.size = block_size(at_r);
  if (where.size == 0) return where;
  const bool unit_stride = at_r ? a.form.ar == 1 && (a.form.ax == rnumel_ || n_x_ == 1) : a.form.ax == 1 || n_x_ == 1;
  if (a.affine && unit_stride) {
    where.contiguous = true;
    where.start = a.form.ax * x0_ + a.form.c;
    return where;
  }
  where.index = index_array(v);
  return where;
}

// Rejects a null pointer (only once it would be dereferenced: empty tensors
// may come with null data) and offsets outside the buffer, unless the index's
// static bounds already prove them inside.
void Evaluator::check_access(const Addresses& where, ValueId v) const {
  if (where.size == 0) return;
  const Instr& in = kernel_.body[v];
  const auto& buf = kernel_.buffers[in.buffer];
  if (buffers_[in.buffer] == nullptr)
    throw std::invalid_argument(where_in_kernel(v) + ": null pointer for buffer " + buf.name);
  if (access_[v].in_bounds) return;
  const std::int64_t lo = where.contiguous ? where.start : where.index.minCoeff();
  const std::int64_t hi = where.contiguous ? where.start + where.size - 1 : where.index.maxCoeff();
  if (lo < 0 || hi >= buf.numel)
    throw std::out_of_range(where_in_kernel(v) + ": index " + in.index.str() + " reaches [" + std::to_string(lo) +
                            ", " + std::to_string(hi) + "] outside buffer " + buf.name + " of " +
                            std::to_string(buf.numel) + " elements");
}

void Evaluator::eval_index(ValueId v) {
  const Instr& in = kernel_.body[v];
  const Idx index = index_array(v);
  with_compute_type(in.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    result<T>(v) = index.unaryExpr([](std::int64_t i) { return convert<T>(i); });
  });
}

void Evaluator::eval_load(ValueId v) {
  const Instr& in = kernel_.body[v];
  if (in.indirect || in.masked) return eval_gather_load(v);
  const Addresses where = addresses(v);
  check_access(where, v);
  with_storage_type(kernel_.buffers[in.buffer].dtype, [&](auto tag) {
    using S = Storage<typename decltype(tag)::type>;
    using Raw = typename S::Raw;
    using C = typename S::Compute;
    Arr<C>& out = result<C>(v);
    if (where.size == 0) return;
    const auto* base = static_cast<const Raw*>(buffers_[in.buffer]);
    if (where.contiguous) {
      const Eigen::Map<const Arr<Raw>> src(base + where.start, where.size);
      if constexpr (std::is_same_v<Raw, C>) out = src;
      else out = src.unaryExpr([](Raw r) { return S::decode(r); });
    } else {
      C* dst = out.data();  // raw pointers: no per-element Eigen asserts in debug builds
      const std::int64_t* index = where.index.data();
      for (Eigen::Index i = 0; i < where.size; ++i) dst[i] = S::decode(base[index[i]]);
    }
  });
}

// An indirect offset operand as int64 values at the load's level.
Idx Evaluator::offset_values(ValueId a, bool at_r_level) {
  return with_compute_type(kernel_.body[a].dtype, [&](auto tag) -> Idx {
    using T = typename decltype(tag)::type;
    if constexpr (kIsInt<T>) return operand<T>(a, at_r_level).template cast<std::int64_t>();
    else throw std::invalid_argument(where_in_kernel(a) + ": an offset operand is not an integer");
  });
}

// A Load with an indirect offset and/or a mask, point by point: a masked-off
// point yields `other` and touches nothing (no bounds check either); an
// active point checks its offset against the extent, then its address
// against the buffer, and throws std::out_of_range for either.
void Evaluator::eval_gather_load(ValueId v) {
  const Instr& in = kernel_.body[v];
  const auto& buf = kernel_.buffers[in.buffer];
  const bool at_r = r_level_[v];
  const Eigen::Index n = block_size(at_r);
  const Idx index = index_array(v);
  const Idx offsets = in.indirect ? offset_values(in.offset_arg(), at_r) : Idx();
  const Arr<bool>* mask = in.masked ? &operand<bool>(in.mask_arg(), at_r) : nullptr;
  auto address = [&](Eigen::Index i) {
    std::int64_t e = index[i];
    if (in.indirect) {
      const std::int64_t o = offsets[i];
      if (o < 0 || o >= in.offset_extent)
        throw IndexOutOfRange(where_in_kernel(v) + ": index " + std::to_string(o) + " is out of range [0, " +
                                std::to_string(in.offset_extent) + ") reading buffer " + buf.name);
      e += o * in.offset_stride;
    }
    if (e < 0 || e >= buf.numel)
      throw std::out_of_range(where_in_kernel(v) + ": element " + std::to_string(e) + " is outside buffer " + buf.name +
                              " of " + std::to_string(buf.numel) + " elements");
    if (buffers_[in.buffer] == nullptr)
      throw std::invalid_argument(where_in_kernel(v) + ": null pointer for buffer " + buf.name);
    return e;
  };
  with_storage_type(buf.dtype, [&](auto tag) {
    using S = Storage<typename decltype(tag)::type>;
    using Raw = typename S::Raw;
    using C = typename S::Compute;
    Arr<C>& out = result<C>(v);
    const auto* base = static_cast<const Raw*>(buffers_[in.buffer]);
    C other{};
    if constexpr (kIsFloat<C>) other = static_cast<C>(in.fvalue);
    else other = convert<C>(in.ivalue);
    C* dst = out.data();
    for (Eigen::Index i = 0; i < n; ++i) dst[i] = (mask && !(*mask)[i]) ? other : S::decode(base[address(i)]);
  });
}

// Points are written in order, so where two points of one store hit the same
// element the later one wins.
void Evaluator::eval_store(ValueId v) {
  const Instr& in = kernel_.body[v];
  if (in.indirect || in.accumulate) return eval_scatter_store(v);
  const bool at_r = r_level_[v];
  const Addresses where = addresses(v);
  check_access(where, v);
  if (where.size == 0) return;
  with_compute_type(in.dtype, [&](auto vtag) {
    using T = typename decltype(vtag)::type;
    const Arr<T>& value = operand<T>(in.args[0], at_r);
    with_storage_type(kernel_.buffers[in.buffer].dtype, [&](auto stag) {
      using S = Storage<typename decltype(stag)::type>;
      using Raw = typename S::Raw;
      using C = typename S::Compute;
      auto* base = static_cast<Raw*>(buffers_[in.buffer]);
      if (where.contiguous) {
        Eigen::Map<Arr<Raw>> dst(base + where.start, where.size);
        if constexpr (std::is_same_v<T, Raw> && std::is_same_v<T, C>) dst = value;
        else dst = value.unaryExpr([](T t) { return S::encode(convert<C>(t)); });
      } else {
        const T* src = value.data();
        const std::int64_t* index = where.index.data();
        for (Eigen::Index i = 0; i < where.size; ++i) base[index[i]] = S::encode(convert<C>(src[i]));
      }
    });
  });
}

// The element each point of a Store writes: its index plus the checked
// indirect offset times its stride, within the buffer (std::out_of_range
// otherwise; IndexOutOfRange for an offset outside its extent). All points
// are checked before any is written.
Idx Evaluator::scatter_addresses(ValueId v) {
  const Instr& in = kernel_.body[v];
  const auto& buf = kernel_.buffers[in.buffer];
  const bool at_r = r_level_[v];
  Idx address = index_array(v);
  if (in.indirect) {
    const Idx offsets = offset_values(in.offset_arg(), at_r);
    for (Eigen::Index i = 0; i < address.size(); ++i) {
      const std::int64_t o = offsets[i];
      if (o < 0 || o >= in.offset_extent)
        throw IndexOutOfRange(where_in_kernel(v) + ": index " + std::to_string(o) + " is out of range [0, " +
                              std::to_string(in.offset_extent) + ") writing buffer " + buf.name);
      address[i] += o * in.offset_stride;
    }
  }
  if (address.size() == 0) return address;
  if (buffers_[in.buffer] == nullptr)
    throw std::invalid_argument(where_in_kernel(v) + ": null pointer for buffer " + buf.name);
  if (address.minCoeff() < 0 || address.maxCoeff() >= buf.numel)
    throw std::out_of_range(where_in_kernel(v) + ": a store reaches [" + std::to_string(address.minCoeff()) + ", " +
                            std::to_string(address.maxCoeff()) + "] outside buffer " + buf.name + " of " +
                            std::to_string(buf.numel) + " elements");
  return address;
}

// A Store with an indirect offset and/or accumulation, point by point in
// order: where points hit one element, an accumulating store adds every
// value (rounding after each addition) and a plain one leaves the last.
void Evaluator::eval_scatter_store(ValueId v) {
  const Instr& in = kernel_.body[v];
  const Idx address = scatter_addresses(v);
  if (address.size() == 0) return;
  with_compute_type(in.dtype, [&](auto vtag) {
    using T = typename decltype(vtag)::type;
    const Arr<T>& value = operand<T>(in.args[0], r_level_[v]);
    with_storage_type(kernel_.buffers[in.buffer].dtype, [&](auto stag) {
      using S = Storage<typename decltype(stag)::type>;
      using C = typename S::Compute;
      auto* base = static_cast<typename S::Raw*>(buffers_[in.buffer]);
      for (Eigen::Index i = 0; i < address.size(); ++i) {
        auto& element = base[address[i]];
        if constexpr (std::is_same_v<T, C> && !std::is_same_v<C, bool>) {
          if (in.accumulate) {
            element = S::encode(wrapping_add(S::decode(element), value[i]));
            continue;
          }
        }
        element = S::encode(convert<C>(value[i]));
      }
    });
  });
}

void Evaluator::eval_unary(ValueId v) {
  const Instr& in = kernel_.body[v];
  const bool at_r = r_level_[v];
  with_compute_type(kernel_.body[in.args[0]].dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const Arr<T>& a = operand<T>(in.args[0], at_r);
    switch (in.op) {
      case PrimOp::LogicalNot: result<bool>(v) = a == T(0); return;
      case PrimOp::IsNan:
        if constexpr (kIsFloat<T>) result<bool>(v) = a != a;
        else result<bool>(v).setConstant(false);
        return;
      default:
        if (in.dtype != dtype_of<T>()) throw std::invalid_argument(where_in_kernel(v) + ": result dtype differs from the operand's");
        arith_unary(in.op, a, result<T>(v));
    }
  });
}

void Evaluator::eval_cast(ValueId v) {
  const Instr& in = kernel_.body[v];
  with_compute_type(kernel_.body[in.args[0]].dtype, [&](auto from_tag) {
    using From = typename decltype(from_tag)::type;
    const Arr<From>& a = operand<From>(in.args[0], r_level_[v]);
    with_compute_type(in.dtype, [&](auto to_tag) {
      using To = typename decltype(to_tag)::type;
      if constexpr (std::is_same_v<To, From>) result<To>(v) = a;
      else result<To>(v) = a.unaryExpr([](From x) { return convert<To>(x); });
    });
  });
}

void Evaluator::eval_binary(ValueId v) {
  const Instr& in = kernel_.body[v];
  const bool at_r = r_level_[v];
  with_compute_type(kernel_.body[in.args[0]].dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const Arr<T>& a = operand<T>(in.args[0], at_r);
    const Arr<T>& b = operand<T>(in.args[1], at_r);
    if (in.dtype == DType::Bool && dtype_of<T>() != DType::Bool) return compare(in.op, a, b, result<bool>(v));
    switch (in.op) {
      case PrimOp::Eq: case PrimOp::Ne: case PrimOp::Lt: case PrimOp::Le: case PrimOp::Gt: case PrimOp::Ge:
      case PrimOp::LogicalAnd: case PrimOp::LogicalOr: case PrimOp::LogicalXor:
        return compare(in.op, a, b, result<bool>(v));
      default:
        if (in.dtype != dtype_of<T>()) throw std::invalid_argument(where_in_kernel(v) + ": result dtype differs from the operands'");
        return arith_binary(in.op, a, b, result<T>(v));
    }
  });
}

void Evaluator::eval_where(ValueId v) {
  const Instr& in = kernel_.body[v];
  const bool at_r = r_level_[v];
  const Arr<bool>& cond = operand<bool>(in.args[0], at_r);
  with_compute_type(in.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    result<T>(v) = cond.select(operand<T>(in.args[1], at_r), operand<T>(in.args[2], at_r));
  });
}

void Evaluator::eval_reduce(ValueId v) {
  const Instr& in = kernel_.body[v];
  with_compute_type(in.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    Arr<T>& out = result<T>(v);
    const Arr<T>& a = operand<T>(in.args[0], /*at_r_level=*/true);  // empty when rnumel == 0
    reduce_columns(in.reduce, Eigen::Map<const Mat<T>>(a.data(), rnumel_, n_x_), out);
  });
}

}  // namespace

void interpret(const ir::Kernel& kernel, const std::vector<void*>& buffers) {
  Evaluator evaluator(kernel, buffers);
  evaluator.run();
}

}  // namespace dv::runtime
