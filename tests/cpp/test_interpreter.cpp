// Tests of the CPU interpreter of the loop IR (src/runtime/interpreter.h)
// against scalar references written from docs/loop-ir-semantics.md.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "catch.h"
#if __has_include(<catch2/catch_template_test_macros.hpp>)
#include <catch2/catch_template_test_macros.hpp>  // Catch2 v3: TEMPLATE_TEST_CASE
#endif
#include "ir/loop_ir.h"
#include "runtime/interpreter.h"

using dv::ir::DType;
using dv::ir::IndexExpr;
using dv::ir::KernelBuilder;
using dv::ir::PrimOp;
using dv::ir::ReduceOp;
using dv::ir::ValueId;
using dv::runtime::interpret;

namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr double kRtol = 1e-6;

// The storage dtype a test vector of T stands for (b8 is held as uint8_t).
template <class T>
DType dtype_of() {
  if constexpr (std::is_same_v<T, float>) return DType::Float32;
  else if constexpr (std::is_same_v<T, double>) return DType::Float64;
  else if constexpr (std::is_same_v<T, std::int32_t>) return DType::Int32;
  else if constexpr (std::is_same_v<T, std::int64_t>) return DType::Int64;
  else if constexpr (std::is_same_v<T, std::uint8_t>) return DType::Bool;
  else static_assert(sizeof(T) == 0, "no dtype for this type");
}

// Output buffers start out poisoned with a value no test expects, so that an
// element the kernel failed to write fails the comparison.
template <class T>
T poison() {
  if constexpr (std::is_floating_point_v<T>) return T(-12345.678);
  else if constexpr (std::is_same_v<T, std::uint8_t>) return 0x77;
  else return T(0x5a5a5a5a);
}

template <class T>
void* ptr(const std::vector<T>& v) {
  return const_cast<T*>(v.data());
}

bool close(double got, double want, double rtol, double atol) {
  if (std::isnan(want)) return std::isnan(got);
  if (std::isinf(want)) return got == want;
  return std::abs(got - want) <= rtol * std::abs(want) + atol;
}

// Element-wise comparison reporting the first mismatch. NaN matches NaN.
template <class T, class U>
void check_close(const std::vector<T>& got, const std::vector<U>& want, double rtol = kRtol, double atol = 0) {
  REQUIRE(got.size() == want.size());
  std::size_t bad = 0, first = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (!close(static_cast<double>(got[i]), static_cast<double>(want[i]), rtol, atol)) {
      if (bad++ == 0) first = i;
    }
  }
  std::ostringstream os;
  if (bad) os << bad << " mismatches; first at " << first << ": got " << +got[first] << ", want " << +want[first];
  INFO(os.str());
  CHECK(bad == 0);
}

template <class T, class U>
void check_equal(const std::vector<T>& got, const std::vector<U>& want) {
  REQUIRE(got.size() == want.size());
  std::size_t bad = 0, first = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (got[i] != static_cast<T>(want[i])) {
      if (bad++ == 0) first = i;
    }
  }
  std::ostringstream os;
  if (bad) os << bad << " mismatches; first at " << first << ": got " << +got[first] << ", want " << +want[first];
  INFO(os.str());
  CHECK(bad == 0);
}

using Build1 = std::function<ValueId(KernelBuilder&, ValueId)>;
using Build2 = std::function<ValueId(KernelBuilder&, ValueId, ValueId)>;

// out[x] = build(a[x]) over a pointwise kernel of a.size() points.
template <class Out, class In>
std::vector<Out> pointwise(const std::vector<In>& a, const Build1& build) {
  const auto n = static_cast<std::int64_t>(a.size());
  KernelBuilder kb("pointwise1", n, 1);
  const int ia = kb.buffer("a", dtype_of<In>(), n);
  const int io = kb.buffer("out", dtype_of<Out>(), n);
  kb.store(io, kb.x(), build(kb, kb.load(ia, kb.x())));
  std::vector<Out> out(n, poison<Out>());
  interpret(std::move(kb).finish(), {ptr(a), out.data()});
  return out;
}

// out[x] = build(a[x], b[x]).
template <class Out, class In>
std::vector<Out> pointwise(const std::vector<In>& a, const std::vector<In>& b, const Build2& build) {
  const auto n = static_cast<std::int64_t>(a.size());
  KernelBuilder kb("pointwise2", n, 1);
  const int ia = kb.buffer("a", dtype_of<In>(), n);
  const int ib = kb.buffer("b", dtype_of<In>(), n);
  const int io = kb.buffer("out", dtype_of<Out>(), n);
  kb.store(io, kb.x(), build(kb, kb.load(ia, kb.x()), kb.load(ib, kb.x())));
  std::vector<Out> out(n, poison<Out>());
  interpret(std::move(kb).finish(), {ptr(a), ptr(b), out.data()});
  return out;
}

Build1 unary_op(PrimOp op) {
  return [op](KernelBuilder& kb, ValueId a) { return kb.unary(op, a); };
}
Build1 cast_to(DType t) {
  return [t](KernelBuilder& kb, ValueId a) { return kb.cast(a, t); };
}
Build2 binary_op(PrimOp op) {
  return [op](KernelBuilder& kb, ValueId a, ValueId b) { return kb.binary(op, a, b); };
}

// All pairs of `values`: a[i * n + j] = values[i], b[i * n + j] = values[j].
template <class T>
std::pair<std::vector<T>, std::vector<T>> all_pairs(const std::vector<T>& values) {
  std::vector<T> a, b;
  for (T u : values)
    for (T v : values) {
      a.push_back(u);
      b.push_back(v);
    }
  return {a, b};
}

// Runs out[x] = reduce(in[x * rnumel + r]) for an xnumel x rnumel input.
template <class T>
std::vector<T> row_reduce(ReduceOp op, const std::vector<T>& in, std::int64_t xnumel, std::int64_t rnumel) {
  KernelBuilder kb("row_reduce", xnumel, rnumel);
  const int ii = kb.buffer("in", dtype_of<T>(), xnumel * rnumel);
  const int io = kb.buffer("out", dtype_of<T>(), xnumel);
  kb.store(io, kb.x(), kb.reduce(op, kb.load(ii, kb.x() * rnumel + kb.r())));
  std::vector<T> out(xnumel, poison<T>());
  interpret(std::move(kb).finish(), {ptr(in), out.data()});
  return out;
}

// ---------------------------------------------------------------------------
// Scalar references, written from docs/loop-ir-semantics.md.

template <class T>
T ref_float_unary(PrimOp op, T a) {
  switch (op) {
    case PrimOp::Neg: return -a;
    case PrimOp::Abs: return std::fabs(a);
    case PrimOp::Exp: return std::exp(a);
    case PrimOp::Exp2: return std::exp2(a);
    case PrimOp::Log: return std::log(a);
    case PrimOp::Log1p: return std::log1p(a);
    case PrimOp::Sqrt: return std::sqrt(a);
    case PrimOp::Rsqrt: return T(1) / std::sqrt(a);
    case PrimOp::Sin: return std::sin(a);
    case PrimOp::Cos: return std::cos(a);
    case PrimOp::Tanh: return std::tanh(a);
    case PrimOp::Erf: return std::erf(a);
    case PrimOp::Floor: return std::floor(a);
    case PrimOp::Ceil: return std::ceil(a);
    case PrimOp::Round: return std::nearbyint(a);
    case PrimOp::Trunc: return std::trunc(a);
    default: throw std::logic_error("ref_float_unary");
  }
}

// Float binary ops; Bool results as 0/1.
template <class T>
T ref_float_binary(PrimOp op, T a, T b) {
  const T nan = std::numeric_limits<T>::quiet_NaN();
  switch (op) {
    case PrimOp::Add: return a + b;
    case PrimOp::Sub: return a - b;
    case PrimOp::Mul: return a * b;
    case PrimOp::Div: return a / b;
    case PrimOp::FloorDiv: return std::floor(a / b);
    case PrimOp::Mod: {
      T r = std::fmod(a, b);
      if (r != 0 && ((r < 0) != (b < 0))) r += b;
      return r;
    }
    case PrimOp::Pow: return std::pow(a, b);
    case PrimOp::Maximum: return (std::isnan(a) || std::isnan(b)) ? nan : std::max(a, b);
    case PrimOp::Minimum: return (std::isnan(a) || std::isnan(b)) ? nan : std::min(a, b);
    case PrimOp::Eq: return a == b;
    case PrimOp::Ne: return a != b;
    case PrimOp::Lt: return a < b;
    case PrimOp::Le: return a <= b;
    case PrimOp::Gt: return a > b;
    case PrimOp::Ge: return a >= b;
    case PrimOp::LogicalAnd: return (a != 0) && (b != 0);
    case PrimOp::LogicalOr: return (a != 0) || (b != 0);
    case PrimOp::LogicalXor: return (a != 0) != (b != 0);
    default: throw std::logic_error("ref_float_binary");
  }
}

// Integer binary ops, computed exactly in 128 bits and wrapped to T at the
// end (the conversion of __int128 to a narrower unsigned type is modular).
template <class T>
T wrap(__int128 v) {
  return static_cast<T>(static_cast<std::make_unsigned_t<T>>(v));
}

template <class T>
__int128 ref_floor_div(__int128 a, __int128 b) {
  __int128 q = a / b;
  if (q * b != a && ((a < 0) != (b < 0))) --q;
  return q;
}

template <class T>
T ref_int_pow(T base, T exponent) {
  if (exponent < 0) return base == 1 ? T(1) : base == -1 ? (exponent % 2 ? T(-1) : T(1)) : T(0);
  __int128 r = 1;
  for (T i = 0; i < exponent; ++i) r = wrap<T>(r * base);  // naive: exponents in tests are small
  return static_cast<T>(r);
}

template <class T>
std::int64_t ref_int_binary(PrimOp op, T a, T b) {
  const __int128 A = a, B = b;
  switch (op) {
    case PrimOp::Add: return wrap<T>(A + B);
    case PrimOp::Sub: return wrap<T>(A - B);
    case PrimOp::Mul: return wrap<T>(A * B);
    case PrimOp::Div: return B == 0 ? 0 : wrap<T>(A / B);
    case PrimOp::FloorDiv: return B == 0 ? 0 : wrap<T>(ref_floor_div<T>(A, B));
    case PrimOp::Mod: return B == 0 ? 0 : wrap<T>(A - ref_floor_div<T>(A, B) * B);
    case PrimOp::Pow: return ref_int_pow(a, b);
    case PrimOp::Maximum: return std::max(a, b);
    case PrimOp::Minimum: return std::min(a, b);
    case PrimOp::Eq: return a == b;
    case PrimOp::Ne: return a != b;
    case PrimOp::Lt: return a < b;
    case PrimOp::Le: return a <= b;
    case PrimOp::Gt: return a > b;
    case PrimOp::Ge: return a >= b;
    case PrimOp::LogicalAnd: return (a != 0) && (b != 0);
    case PrimOp::LogicalOr: return (a != 0) || (b != 0);
    case PrimOp::LogicalXor: return (a != 0) != (b != 0);
    default: throw std::logic_error("ref_int_binary");
  }
}

bool bool_result(PrimOp op) {
  return op == PrimOp::Eq || op == PrimOp::Ne || op == PrimOp::Lt || op == PrimOp::Le || op == PrimOp::Gt ||
         op == PrimOp::Ge || op == PrimOp::LogicalAnd || op == PrimOp::LogicalOr || op == PrimOp::LogicalXor;
}

const std::vector<PrimOp> kFloatUnary = {PrimOp::Neg,  PrimOp::Abs,  PrimOp::Exp,   PrimOp::Exp2,  PrimOp::Log,
                                         PrimOp::Log1p, PrimOp::Sqrt, PrimOp::Rsqrt, PrimOp::Sin,   PrimOp::Cos,
                                         PrimOp::Tanh, PrimOp::Erf,  PrimOp::Floor, PrimOp::Ceil,  PrimOp::Round,
                                         PrimOp::Trunc};
const std::vector<PrimOp> kBinary = {PrimOp::Add,  PrimOp::Sub,        PrimOp::Mul,       PrimOp::Div,
                                     PrimOp::FloorDiv, PrimOp::Mod,    PrimOp::Pow,       PrimOp::Maximum,
                                     PrimOp::Minimum, PrimOp::Eq,      PrimOp::Ne,        PrimOp::Lt,
                                     PrimOp::Le,   PrimOp::Gt,         PrimOp::Ge,        PrimOp::LogicalAnd,
                                     PrimOp::LogicalOr, PrimOp::LogicalXor};

template <class T>
std::vector<T> float_samples() {
  const T nan = std::numeric_limits<T>::quiet_NaN(), inf = std::numeric_limits<T>::infinity();
  return {T(0),    T(-0.0), T(0.5), T(-0.5), T(1.5), T(-1.5), T(2.5), T(-2.5), T(0.75), T(3.7),
          T(-3.7), T(7.5),  T(-2),  T(100),  T(1e-3), T(-40), inf,    -inf,    nan};
}

template <class T>
std::vector<T> int_samples() {
  using L = std::numeric_limits<T>;
  return {0, 1, -1, 2, -2, 3, -3, 7, -7, 100, -100, L::max(), L::min(), T(L::min() + 1)};
}

}  // namespace

// ---------------------------------------------------------------------------
// Pointwise kernels.

TEST_CASE("interpreter: pointwise exp(in) * 2 + bias[x % 7]", "[interpreter]") {
  const std::int64_t n = 10000;  // several blocks and a tail
  std::vector<float> in(n), bias(7);
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> dist(-3, 3);
  for (auto& v : in) v = dist(rng);
  for (auto& v : bias) v = dist(rng);

  KernelBuilder kb("exp_bias", n, 1);
  const int bi = kb.buffer("in", DType::Float32, n);
  const int bb = kb.buffer("bias", DType::Float32, 7);
  const int bo = kb.buffer("out", DType::Float32, n);
  const ValueId e = kb.unary(PrimOp::Exp, kb.load(bi, kb.x()));
  const ValueId v = kb.binary(PrimOp::Add, kb.binary(PrimOp::Mul, e, kb.constant(2, DType::Float32)),
                              kb.load(bb, mod(kb.x(), 7)));
  kb.store(bo, kb.x(), v);
  std::vector<float> out(n, poison<float>());
  interpret(std::move(kb).finish(), {in.data(), bias.data(), out.data()});

  std::vector<float> want(n);
  for (std::int64_t i = 0; i < n; ++i) want[i] = std::exp(in[i]) * 2.0f + bias[i % 7];
  check_close(out, want);
}

TEST_CASE("interpreter: transposed read in[(x % 5) * 3 + x // 5]", "[interpreter]") {
  const std::int64_t n = 15;
  std::vector<float> in(n);
  for (std::int64_t i = 0; i < n; ++i) in[i] = static_cast<float>(i) * 1.25f;
  KernelBuilder kb("transpose", n, 1);
  const int bi = kb.buffer("in", DType::Float32, n);
  const int bo = kb.buffer("out", DType::Float32, n);
  kb.store(bo, kb.x(), kb.load(bi, mod(kb.x(), 5) * 3 + floordiv(kb.x(), 5)));
  std::vector<float> out(n, poison<float>());
  interpret(std::move(kb).finish(), {in.data(), out.data()});
  std::vector<float> want(n);
  for (std::int64_t i = 0; i < n; ++i) want[i] = in[(i % 5) * 3 + i / 5];
  check_equal(out, want);
}

TEST_CASE("interpreter: Index, Constant and i32 compute", "[interpreter]") {
  const std::int64_t n = 50;
  KernelBuilder kb("iota", n, 1);
  const int o64 = kb.buffer("o64", DType::Int64, n);
  const int o32 = kb.buffer("o32", DType::Int32, n);
  const int of = kb.buffer("of", DType::Float64, n);
  kb.store(o64, kb.x(), kb.index_value(kb.x() * 3 - 70, DType::Int64));
  const ValueId i32 = kb.index_value(kb.x() * 2 + 1, DType::Int32);
  kb.store(o32, kb.x(), kb.binary(PrimOp::Mul, i32, kb.int_constant(-3, DType::Int32)));
  kb.store(of, kb.x(), kb.cast(i32, DType::Float64));
  std::vector<std::int64_t> out64(n, poison<std::int64_t>());
  std::vector<std::int32_t> out32(n, poison<std::int32_t>());
  std::vector<double> outf(n, poison<double>());
  interpret(std::move(kb).finish(), {out64.data(), out32.data(), outf.data()});
  std::vector<std::int64_t> want64(n);
  std::vector<std::int32_t> want32(n);
  std::vector<double> wantf(n);
  for (std::int64_t i = 0; i < n; ++i) {
    want64[i] = i * 3 - 70;
    want32[i] = static_cast<std::int32_t>((i * 2 + 1) * -3);
    wantf[i] = static_cast<double>(i * 2 + 1);
  }
  check_equal(out64, want64);
  check_equal(out32, want32);
  check_equal(outf, wantf);
}

TEST_CASE("interpreter: index floordiv and mod, all numerator ranges", "[interpreter]") {
  // Each index is evaluated over x in [0, n) and compared with exact floor
  // division: non-negative numerators below 2^31 (the multiply-shift path),
  // numerators up to ~2^40, and numerators that go negative.
  const std::int64_t n = 70000;
  struct Case {
    std::int64_t mul, add, d;
  };
  const std::vector<Case> cases = {
      {1, 0, 1},          {1, 0, 3},           {37, 5, 7},          {1, 0, 64},         {3, 11, 1000},
      {1, 0, 65536},      {29, 1, 1048577},    {1, 2147383647, 3},  {1, 2147383647, 2147483647},
      {1, 2147383647, 1073741827},           {15000001, 3, 12345}, {1, -35000, 9},    {-3, 100, 10},
      {1, 0, 2147483648LL}, {7, 2147483000, 65537}};
  for (const Case& c : cases) {
    INFO("index (x * " << c.mul << " + " << c.add << ") // and % " << c.d);
    KernelBuilder kb("divmod", n, 1);
    const int bq = kb.buffer("q", DType::Int64, n), br = kb.buffer("r", DType::Int64, n);
    const IndexExpr num = kb.x() * c.mul + c.add;
    kb.store(bq, kb.x(), kb.index_value(floordiv(num, c.d)));
    kb.store(br, kb.x(), kb.index_value(mod(num, c.d)));
    std::vector<std::int64_t> q(n, poison<std::int64_t>()), r(n, poison<std::int64_t>());
    interpret(std::move(kb).finish(), {q.data(), r.data()});
    std::vector<std::int64_t> want_q(n), want_r(n);
    for (std::int64_t x = 0; x < n; ++x) {
      const std::int64_t v = x * c.mul + c.add;
      want_q[x] = v / c.d - ((v % c.d) < 0 ? 1 : 0);
      want_r[x] = v - want_q[x] * c.d;
    }
    check_equal(q, want_q);
    check_equal(r, want_r);
  }
}

// ---------------------------------------------------------------------------
// Every PrimOp against its scalar reference.

TEMPLATE_TEST_CASE("interpreter: float unary ops", "[interpreter]", float, double) {
  using T = TestType;
  const std::vector<T> a = float_samples<T>();
  for (PrimOp op : kFloatUnary) {
    INFO("op " << dv::ir::prim_op_name(op));
    std::vector<T> want;
    for (T v : a) want.push_back(ref_float_unary(op, v));
    check_close(pointwise<T, T>(a, unary_op(op)), want);
  }
  std::vector<std::uint8_t> want_not, want_nan;
  for (T v : a) {
    want_not.push_back(v == 0);
    want_nan.push_back(v != v);
  }
  check_equal(pointwise<std::uint8_t, T>(a, unary_op(PrimOp::LogicalNot)), want_not);
  check_equal(pointwise<std::uint8_t, T>(a, unary_op(PrimOp::IsNan)), want_nan);
}

TEST_CASE("interpreter: Round is half to even; Floor Ceil Trunc", "[interpreter]") {
  const std::vector<float> a = {0.5f, 1.5f, 2.5f, -0.5f, -1.5f, -2.5f, 3.5f, 2.4f, -2.6f};
  check_equal(pointwise<float, float>(a, unary_op(PrimOp::Round)),
              std::vector<float>{0, 2, 2, -0.0f, -2, -2, 4, 2, -3});
  check_equal(pointwise<float, float>(a, unary_op(PrimOp::Floor)),
              std::vector<float>{0, 1, 2, -1, -2, -3, 3, 2, -3});
  check_equal(pointwise<float, float>(a, unary_op(PrimOp::Ceil)),
              std::vector<float>{1, 2, 3, -0.0f, -1, -2, 4, 3, -2});
  check_equal(pointwise<float, float>(a, unary_op(PrimOp::Trunc)),
              std::vector<float>{0, 1, 2, -0.0f, -1, -2, 3, 2, -2});
  const auto r = pointwise<float, float>({-0.5f}, unary_op(PrimOp::Round));
  CHECK(std::signbit(r[0]));
}

TEMPLATE_TEST_CASE("interpreter: float binary ops", "[interpreter]", float, double) {
  using T = TestType;
  const auto [a, b] = all_pairs(float_samples<T>());
  for (PrimOp op : kBinary) {
    INFO("op " << dv::ir::prim_op_name(op));
    if (bool_result(op)) {
      std::vector<std::uint8_t> want;
      for (std::size_t i = 0; i < a.size(); ++i) want.push_back(ref_float_binary(op, a[i], b[i]) != 0);
      check_equal(pointwise<std::uint8_t, T>(a, b, binary_op(op)), want);
    } else {
      std::vector<T> want;
      for (std::size_t i = 0; i < a.size(); ++i) want.push_back(ref_float_binary(op, a[i], b[i]));
      check_close(pointwise<T, T>(a, b, binary_op(op)), want);
    }
  }
}

TEST_CASE("interpreter: float Mod, FloorDiv, Maximum, Minimum anchors", "[interpreter]") {
  const std::vector<float> a = {-7.5f, 7.5f, -7.5f, 7.5f, 6.0f, -6.0f, 1.0f};
  const std::vector<float> b = {2.0f, -2.0f, -2.0f, 2.0f, -3.0f, 3.0f, kInf};
  check_equal(pointwise<float, float>(a, b, binary_op(PrimOp::Mod)),
              std::vector<float>{0.5f, -0.5f, -1.5f, 1.5f, 0.0f, 0.0f, 1.0f});
  check_equal(pointwise<float, float>(a, b, binary_op(PrimOp::FloorDiv)),
              std::vector<float>{-4, -4, 3, 3, -2, -2, 0});
  const std::vector<float> c = {kNaN, 1.0f, kNaN, -kInf, 2.0f};
  const std::vector<float> d = {1.0f, kNaN, kNaN, kNaN, -3.0f};
  check_close(pointwise<float, float>(c, d, binary_op(PrimOp::Maximum)),
              std::vector<float>{kNaN, kNaN, kNaN, kNaN, 2.0f});
  check_close(pointwise<float, float>(c, d, binary_op(PrimOp::Minimum)),
              std::vector<float>{kNaN, kNaN, kNaN, kNaN, -3.0f});
}

TEMPLATE_TEST_CASE("interpreter: integer binary ops", "[interpreter]", std::int32_t, std::int64_t) {
  using T = TestType;
  const auto [a, b] = all_pairs(int_samples<T>());
  for (PrimOp op : kBinary) {
    if (op == PrimOp::Pow) continue;  // below, with small exponents
    INFO("op " << dv::ir::prim_op_name(op));
    if (bool_result(op)) {
      std::vector<std::uint8_t> want;
      for (std::size_t i = 0; i < a.size(); ++i) want.push_back(ref_int_binary(op, a[i], b[i]) != 0);
      check_equal(pointwise<std::uint8_t, T>(a, b, binary_op(op)), want);
    } else {
      std::vector<T> want;
      for (std::size_t i = 0; i < a.size(); ++i) want.push_back(static_cast<T>(ref_int_binary(op, a[i], b[i])));
      check_equal(pointwise<T, T>(a, b, binary_op(op)), want);
    }
  }
  // Pow: bases from the samples, exponents small enough for the naive reference.
  std::vector<T> base, exponent, want;
  for (T u : int_samples<T>())
    for (T e : {-3, -2, -1, 0, 1, 2, 3, 7, 31, 32, 63, 64, 65}) {
      base.push_back(u);
      exponent.push_back(e);
      want.push_back(ref_int_pow<T>(u, e));
    }
  check_equal(pointwise<T, T>(base, exponent, binary_op(PrimOp::Pow)), want);
}

TEST_CASE("interpreter: integer Div, FloorDiv, Mod with negatives and zero", "[interpreter]") {
  using L = std::numeric_limits<std::int64_t>;
  const std::vector<std::int64_t> a = {-7, 7, -7, 7, 6, -6, 5, L::min(), L::min(), -1};
  const std::vector<std::int64_t> b = {2, -2, -2, 2, -3, 3, 0, -1, 2, 1};
  check_equal(pointwise<std::int64_t, std::int64_t>(a, b, binary_op(PrimOp::Div)),
              std::vector<std::int64_t>{-3, -3, 3, 3, -2, -2, 0, L::min(), L::min() / 2, -1});
  check_equal(pointwise<std::int64_t, std::int64_t>(a, b, binary_op(PrimOp::FloorDiv)),
              std::vector<std::int64_t>{-4, -4, 3, 3, -2, -2, 0, L::min(), L::min() / 2, -1});
  check_equal(pointwise<std::int64_t, std::int64_t>(a, b, binary_op(PrimOp::Mod)),
              std::vector<std::int64_t>{1, -1, -1, 1, 0, 0, 0, 0, 0, 0});
  const std::vector<std::int32_t> p = {2, 2, -2, -2, 1, -1, -1, 3};
  const std::vector<std::int32_t> q = {31, 32, 31, -1, -5, -5, -4, 21};
  check_equal(pointwise<std::int32_t, std::int32_t>(p, q, binary_op(PrimOp::Pow)),
              std::vector<std::int32_t>{std::numeric_limits<std::int32_t>::min(), 0,
                                        std::numeric_limits<std::int32_t>::min(), 0, 1, -1, 1,
                                        static_cast<std::int32_t>(10460353203LL - 2LL * 4294967296LL)});
}

TEMPLATE_TEST_CASE("interpreter: integer unary ops", "[interpreter]", std::int32_t, std::int64_t) {
  using T = TestType;
  const std::vector<T> a = int_samples<T>();
  std::vector<T> neg, abs;
  std::vector<std::uint8_t> lnot, isnan(a.size(), 0);
  for (T v : a) {
    neg.push_back(wrap<T>(-static_cast<__int128>(v)));
    abs.push_back(wrap<T>(v < 0 ? -static_cast<__int128>(v) : static_cast<__int128>(v)));
    lnot.push_back(v == 0);
  }
  check_equal(pointwise<T, T>(a, unary_op(PrimOp::Neg)), neg);
  check_equal(pointwise<T, T>(a, unary_op(PrimOp::Abs)), abs);
  for (PrimOp op : {PrimOp::Floor, PrimOp::Ceil, PrimOp::Round, PrimOp::Trunc})
    check_equal(pointwise<T, T>(a, unary_op(op)), a);
  check_equal(pointwise<std::uint8_t, T>(a, unary_op(PrimOp::LogicalNot)), lnot);
  check_equal(pointwise<std::uint8_t, T>(a, unary_op(PrimOp::IsNan)), isnan);
}

TEST_CASE("interpreter: Bool values and b8 storage", "[interpreter]") {
  const std::vector<std::uint8_t> a = {0, 0, 1, 1}, b = {0, 1, 0, 1};
  check_equal(pointwise<std::uint8_t, std::uint8_t>(a, b, binary_op(PrimOp::LogicalAnd)),
              std::vector<std::uint8_t>{0, 0, 0, 1});
  check_equal(pointwise<std::uint8_t, std::uint8_t>(a, b, binary_op(PrimOp::LogicalOr)),
              std::vector<std::uint8_t>{0, 1, 1, 1});
  check_equal(pointwise<std::uint8_t, std::uint8_t>(a, b, binary_op(PrimOp::LogicalXor)),
              std::vector<std::uint8_t>{0, 1, 1, 0});
  check_equal(pointwise<std::uint8_t, std::uint8_t>(a, b, binary_op(PrimOp::Eq)),
              std::vector<std::uint8_t>{1, 0, 0, 1});
  check_equal(pointwise<std::uint8_t, std::uint8_t>(a, unary_op(PrimOp::LogicalNot)),
              std::vector<std::uint8_t>{1, 1, 0, 0});
  // Floats stored into b8 become 0/1 (x != 0: NaN is true, -0 is false).
  check_equal(pointwise<std::uint8_t, float>({0.0f, -0.0f, 0.5f, -3.0f, kNaN}, cast_to(DType::Bool)),
              std::vector<std::uint8_t>{0, 0, 1, 1, 1});
  check_equal(pointwise<std::uint8_t, float>({0.0f, 2.0f}, [](KernelBuilder&, ValueId v) { return v; }),
              std::vector<std::uint8_t>{0, 1});
  // Bool to numbers is 0/1.
  check_equal(pointwise<float, std::uint8_t>(a, cast_to(DType::Float32)), std::vector<float>{0, 0, 1, 1});
  check_equal(pointwise<std::int64_t, std::uint8_t>(b, cast_to(DType::Int64)), std::vector<std::int64_t>{0, 1, 0, 1});
}

TEST_CASE("interpreter: Where", "[interpreter]") {
  const auto [a, b] = all_pairs(float_samples<float>());
  const auto out = pointwise<float, float>(a, b, [](KernelBuilder& kb, ValueId u, ValueId v) {
    return kb.where(kb.binary(PrimOp::Lt, u, v), u, kb.unary(PrimOp::Neg, v));
  });
  std::vector<float> want;
  for (std::size_t i = 0; i < a.size(); ++i) want.push_back(a[i] < b[i] ? a[i] : -b[i]);
  check_close(out, want);
}

TEST_CASE("interpreter: Cast", "[interpreter]") {
  using I32 = std::numeric_limits<std::int32_t>;
  using I64 = std::numeric_limits<std::int64_t>;
  // float -> int truncates toward zero; NaN and out-of-range saturate (NaN -> 0): our choice, as CUDA.
  check_equal(pointwise<std::int32_t, float>({2.7f, -2.7f, 0.5f, -0.5f, 3e9f, -3e9f, kNaN, kInf, -kInf},
                                             cast_to(DType::Int32)),
              std::vector<std::int32_t>{2, -2, 0, 0, I32::max(), I32::min(), 0, I32::max(), I32::min()});
  check_equal(pointwise<std::int64_t, double>({-1e19, 1e19, 123456789012.9, -9.9}, cast_to(DType::Int64)),
              std::vector<std::int64_t>{I64::min(), I64::max(), 123456789012, -9});
  // i64 -> i32 keeps the low 32 bits.
  check_equal(pointwise<std::int32_t, std::int64_t>({(1LL << 32) + 5, -1, 1LL << 31, -(1LL << 31) - 1},
                                                    cast_to(DType::Int32)),
              std::vector<std::int32_t>{5, -1, I32::min(), I32::max()});
  check_equal(pointwise<std::int64_t, std::int32_t>({-5, I32::min()}, cast_to(DType::Int64)),
              std::vector<std::int64_t>{-5, I32::min()});
  // f64 -> f32 rounds; ints -> floats.
  check_equal(pointwise<float, double>({0.1, 1e40, -1e-50}, cast_to(DType::Float32)),
              std::vector<float>{0.1f, kInf, -0.0f});
  check_equal(pointwise<double, std::int64_t>({I64::max(), -3}, cast_to(DType::Float64)),
              std::vector<double>{9223372036854775808.0, -3.0});
  check_equal(pointwise<std::uint8_t, std::int32_t>({0, -4, 9}, cast_to(DType::Bool)),
              std::vector<std::uint8_t>{0, 1, 1});
}

TEST_CASE("interpreter: Store of i64 into i32 wraps; other store conversions", "[interpreter]") {
  const std::vector<std::int64_t> a = {(1LL << 32) + 5, -1, 1LL << 31, 7};
  check_equal(pointwise<std::int32_t, std::int64_t>(a, [](KernelBuilder&, ValueId v) { return v; }),
              std::vector<std::int32_t>{5, -1, std::numeric_limits<std::int32_t>::min(), 7});
  check_equal(pointwise<double, float>({1.5f, kInf}, [](KernelBuilder&, ValueId v) { return v; }),
              std::vector<double>{1.5, std::numeric_limits<double>::infinity()});
}

// ---------------------------------------------------------------------------
// f16 and bf16.

TEST_CASE("interpreter: f16 conversion, bit level", "[interpreter]") {
  using dv::runtime::f16_bits_to_f32;
  using dv::runtime::f32_to_f16_bits;
  CHECK(f32_to_f16_bits(1.0f) == 0x3c00);
  CHECK(f32_to_f16_bits(-2.0f) == 0xc000);
  CHECK(f32_to_f16_bits(-0.0f) == 0x8000);
  CHECK(f32_to_f16_bits(65504.0f) == 0x7bff);
  CHECK(f32_to_f16_bits(65519.996f) == 0x7bff);
  CHECK(f32_to_f16_bits(65520.0f) == 0x7c00);  // tie with 2^16 rounds to even: overflow
  CHECK(f32_to_f16_bits(kInf) == 0x7c00);
  CHECK(f32_to_f16_bits(-kInf) == 0xfc00);
  CHECK(std::isnan(f16_bits_to_f32(f32_to_f16_bits(kNaN))));
  CHECK(std::isnan(f16_bits_to_f32(f32_to_f16_bits(-kNaN))));
  // NaN with a payload only in the low bits must not turn into inf.
  CHECK(std::isnan(f16_bits_to_f32(f32_to_f16_bits(std::bit_cast<float>(0x7f800001u)))));
  // Ties in the normal range go to even.
  CHECK(f32_to_f16_bits(1.0f + 0x1p-11f) == 0x3c00);
  CHECK(f32_to_f16_bits(1.0f + 3 * 0x1p-11f) == 0x3c02);
  CHECK(f32_to_f16_bits(1.0f + 0x1p-11f + 0x1p-20f) == 0x3c01);
  // Subnormals.
  CHECK(f32_to_f16_bits(0x1p-14f) == 0x0400);
  CHECK(f32_to_f16_bits(0x1p-24f) == 0x0001);
  CHECK(f32_to_f16_bits(0x1p-25f) == 0x0000);      // tie with 0: even
  CHECK(f32_to_f16_bits(0x1.8p-25f) == 0x0001);
  CHECK(f32_to_f16_bits(3 * 0x1p-25f) == 0x0002);  // 1.5 units: tie, even is 2
  CHECK(f32_to_f16_bits(5 * 0x1p-25f) == 0x0002);  // 2.5 units: tie, even is 2
  CHECK(f32_to_f16_bits(0x1p-14f - 0x1p-25f) == 0x0400);  // tie between the largest subnormal and 2^-14
  CHECK(f32_to_f16_bits(-1e-10f) == 0x8000);
  CHECK(f16_bits_to_f32(0x0001) == 0x1p-24f);
  CHECK(f16_bits_to_f32(0x03ff) == 1023 * 0x1p-24f);
  CHECK(f16_bits_to_f32(0x7bff) == 65504.0f);
  CHECK(f16_bits_to_f32(0xfc00) == -kInf);
}

TEST_CASE("interpreter: f16 round trip of every half and nearest rounding", "[interpreter]") {
  using dv::runtime::f16_bits_to_f32;
  using dv::runtime::f32_to_f16_bits;
  int bad = 0;
  for (std::uint32_t h = 0; h < 0x10000; ++h) {
    const float f = f16_bits_to_f32(static_cast<std::uint16_t>(h));
    const bool is_nan = (h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0;
    if (is_nan ? !std::isnan(f) || !std::isnan(f16_bits_to_f32(f32_to_f16_bits(f))) : f32_to_f16_bits(f) != h) ++bad;
  }
  CHECK(bad == 0);
  // Random floats in the half range: the result is a nearest half, ties to even
  // (checked against the two neighbours, independently of the implementation).
  std::mt19937 rng(7);
  std::uniform_int_distribution<std::uint32_t> bits(0x30000000u, 0x47800000u);
  bad = 0;
  for (int i = 0; i < 200000; ++i) {
    const float f = std::bit_cast<float>(bits(rng));
    const std::uint16_t h = f32_to_f16_bits(f);
    if (h == 0x7c00) {  // overflow: right exactly from 65520 up
      if (f < 65520.0f) ++bad;
      continue;
    }
    const double err = std::abs(double(f16_bits_to_f32(h)) - f);
    for (int step : {-1, 1}) {
      const auto n = static_cast<std::uint16_t>(h + step);
      if ((n & 0x7c00) == 0x7c00 || (h == 0 && step < 0)) continue;
      const double nerr = std::abs(double(f16_bits_to_f32(n)) - f);
      if (nerr < err || (nerr == err && (h & 1))) ++bad;
    }
  }
  CHECK(bad == 0);
#if defined(__FLT16_MAX__)
  // And against the compiler's own conversion, where it has one.
  bad = 0;
  std::uniform_int_distribution<std::uint32_t> any(0, 0xffffffffu);
  for (int i = 0; i < 200000; ++i) {
    const float f = std::bit_cast<float>(any(rng));
    if (std::isnan(f)) continue;
    if (f32_to_f16_bits(f) != std::bit_cast<std::uint16_t>(static_cast<_Float16>(f))) ++bad;
  }
  CHECK(bad == 0);
#endif
}

TEST_CASE("interpreter: bf16 conversion", "[interpreter]") {
  using dv::runtime::bf16_bits_to_f32;
  using dv::runtime::f32_to_bf16_bits;
  CHECK(f32_to_bf16_bits(1.0f) == 0x3f80);
  CHECK(f32_to_bf16_bits(1.0f + 0x1p-8f) == 0x3f80);      // tie: even
  CHECK(f32_to_bf16_bits(1.0f + 3 * 0x1p-8f) == 0x3f82);  // tie: even
  CHECK(f32_to_bf16_bits(1.0f + 0x1p-8f + 0x1p-20f) == 0x3f81);
  CHECK(f32_to_bf16_bits(-kInf) == 0xff80);
  CHECK(f32_to_bf16_bits(std::numeric_limits<float>::max()) == 0x7f80);  // rounds to inf
  CHECK(std::isnan(bf16_bits_to_f32(f32_to_bf16_bits(kNaN))));
  CHECK(std::isnan(bf16_bits_to_f32(f32_to_bf16_bits(std::bit_cast<float>(0x7f800001u)))));
  CHECK(std::signbit(bf16_bits_to_f32(f32_to_bf16_bits(-kNaN))));
  int bad = 0;
  for (std::uint32_t h = 0; h < 0x10000; ++h) {
    const float f = bf16_bits_to_f32(static_cast<std::uint16_t>(h));
    if (std::isnan(f) ? !std::isnan(bf16_bits_to_f32(f32_to_bf16_bits(f))) : f32_to_bf16_bits(f) != h) ++bad;
  }
  CHECK(bad == 0);
}

TEST_CASE("interpreter: f16 and bf16 buffers", "[interpreter]") {
  const std::vector<float> in = {1.0f, 1.0f + 0x1p-11f, 1.0f + 3 * 0x1p-11f, 65520.0f, 0x1p-25f, 3 * 0x1p-25f,
                                 kNaN, -kInf, 1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, -0.3f};
  const auto n = static_cast<std::int64_t>(in.size());
  for (DType half : {DType::Float16, DType::BFloat16}) {
    INFO(dv::ir::dtype_name(half));
    // Kernel 1: f32 -> half (rounds). Kernel 2: half -> f32 via x + 0 (exact).
    KernelBuilder k1("to_half", n, 1);
    const int a = k1.buffer("a", DType::Float32, n), h = k1.buffer("h", half, n);
    k1.store(h, k1.x(), k1.load(a, k1.x()));
    std::vector<std::uint16_t> bits(n, 0xdead);
    interpret(std::move(k1).finish(), {ptr(in), bits.data()});

    KernelBuilder k2("from_half", n, 1);
    const int h2 = k2.buffer("h", half, n), o = k2.buffer("o", DType::Float32, n);
    const ValueId v = k2.load(h2, k2.x());
    CHECK(k2.dtype(v) == DType::Float32);
    k2.store(o, k2.x(), k2.binary(PrimOp::Add, v, k2.constant(0, DType::Float32)));
    std::vector<float> out(n, poison<float>());
    interpret(std::move(k2).finish(), {bits.data(), out.data()});

    std::vector<std::uint16_t> want_bits;
    std::vector<float> want;
    for (float f : in) {
      const std::uint16_t b = half == DType::Float16 ? dv::runtime::f32_to_f16_bits(f) : dv::runtime::f32_to_bf16_bits(f);
      want_bits.push_back(b);
      want.push_back(half == DType::Float16 ? dv::runtime::f16_bits_to_f32(b) : dv::runtime::bf16_bits_to_f32(b));
    }
    check_equal(bits, want_bits);
    check_close(out, want);
  }
  // Spot checks of the rounding through the kernel.
  KernelBuilder k("f16", 3, 1);
  const int a = k.buffer("a", DType::Float32, 3), h = k.buffer("h", DType::Float16, 3);
  k.store(h, k.x(), k.load(a, k.x()));
  const std::vector<float> ties = {1.0f + 0x1p-11f, 1.0f + 3 * 0x1p-11f, 65520.0f};
  std::vector<std::uint16_t> bits(3, 0);
  interpret(std::move(k).finish(), {ptr(ties), bits.data()});
  check_equal(bits, std::vector<std::uint16_t>{0x3c00, 0x3c02, 0x7c00});
}

TEST_CASE("interpreter: RoundBf16 / RoundF16 give what a store into a half buffer and a load back give",
          "[interpreter]") {
  const std::vector<float> in = {1.0f, 1.0f + 0x1p-11f, 1.0f + 3 * 0x1p-11f, 65520.0f, 0x1p-25f, 3 * 0x1p-25f,
                                 kNaN, -kInf, 1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, -0.3f, 3.4e38f, -0.0f};
  const auto n = static_cast<std::int64_t>(in.size());
  for (DType half : {DType::Float16, DType::BFloat16}) {
    INFO(dv::ir::dtype_name(half));
    KernelBuilder k("round_in_registers", n, 1);
    const int a = k.buffer("a", DType::Float32, n), o = k.buffer("o", DType::Float32, n);
    const ValueId r = k.unary(half == DType::Float16 ? PrimOp::RoundF16 : PrimOp::RoundBf16, k.load(a, k.x()));
    CHECK(k.dtype(r) == DType::Float32);
    k.store(o, k.x(), r);
    std::vector<float> out(n, poison<float>());
    interpret(std::move(k).finish(), {ptr(in), out.data()});
    for (std::int64_t i = 0; i < n; ++i) {
      const float f = in[i];
      const float want = half == DType::Float16 ? dv::runtime::f16_bits_to_f32(dv::runtime::f32_to_f16_bits(f))
                                                : dv::runtime::bf16_bits_to_f32(dv::runtime::f32_to_bf16_bits(f));
      INFO(f);
      if (std::isnan(want)) CHECK(std::isnan(out[i]));
      else CHECK(std::bit_cast<std::uint32_t>(out[i]) == std::bit_cast<std::uint32_t>(want));
    }
  }
  KernelBuilder bad("f64", 1, 1);
  const ValueId d = bad.constant(1.0, DType::Float64);
  CHECK_THROWS_AS(bad.unary(PrimOp::RoundBf16, d), std::logic_error);
}

// ---------------------------------------------------------------------------
// Reductions.

TEST_CASE("interpreter: row sum, max, min, prod", "[interpreter]") {
  std::mt19937 rng(3);
  for (std::int64_t rnumel : {1, 7, 1000, 5000}) {
    const std::int64_t xnumel = rnumel >= 1000 ? 5 : 13;
    const std::int64_t n = xnumel * rnumel;
    INFO("rnumel " << rnumel);
    // Multiples of 1/8: every partial sum is exact, so any summation order agrees.
    std::vector<float> in(n);
    std::uniform_int_distribution<int> eighths(-16, 16);
    for (auto& v : in) v = static_cast<float>(eighths(rng)) / 8.0f;
    // For the product: +-1 everywhere except a few 2s and 0.5s per row, so that
    // every partial product is an exact power of two.
    std::vector<float> pin(n);
    std::uniform_int_distribution<int> sign(0, 1);
    for (std::int64_t i = 0; i < n; ++i) {
      const std::int64_t r = i % rnumel;
      pin[i] = r < 4 ? 2.0f : (r >= 4 && r < 7) ? 0.5f : (sign(rng) ? 1.0f : -1.0f);
    }
    std::vector<float> sum(xnumel), mx(xnumel), mn(xnumel), prod(xnumel);
    for (std::int64_t x = 0; x < xnumel; ++x) {
      double s = 0, p = 1;
      float hi = -kInf, lo = kInf;
      for (std::int64_t r = 0; r < rnumel; ++r) {
        const float v = in[x * rnumel + r];
        s += v;
        hi = std::max(hi, v);
        lo = std::min(lo, v);
        p *= pin[x * rnumel + r];
      }
      sum[x] = static_cast<float>(s);
      mx[x] = hi;
      mn[x] = lo;
      prod[x] = static_cast<float>(p);
    }
    check_close(row_reduce(ReduceOp::Sum, in, xnumel, rnumel), sum);
    check_close(row_reduce(ReduceOp::Max, in, xnumel, rnumel), mx);
    check_close(row_reduce(ReduceOp::Min, in, xnumel, rnumel), mn);
    check_close(row_reduce(ReduceOp::Prod, pin, xnumel, rnumel), prod);
  }
}

TEST_CASE("interpreter: column reduction (strided r) from bf16, several reduces of one value", "[interpreter]") {
  // out[x] = sum / max over r of in[r * xnumel + x]: a gather along r, from a
  // bf16 buffer; plus a strided r-level store of the loaded values.
  const std::int64_t xnumel = 37, rnumel = 150;
  std::vector<std::uint16_t> in(xnumel * rnumel);
  std::vector<float> vals(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    vals[i] = static_cast<float>(static_cast<int>(i * 7919 % 61) - 30) / 4.0f;  // exact in bf16
    in[i] = dv::runtime::f32_to_bf16_bits(vals[i]);
  }
  KernelBuilder kb("colsum", xnumel, rnumel);
  const int bi = kb.buffer("in", DType::BFloat16, xnumel * rnumel);
  const int bs = kb.buffer("sum", DType::Float32, xnumel);
  const int bm = kb.buffer("max", DType::Float32, xnumel);
  const int bt = kb.buffer("t", DType::Float32, xnumel * rnumel);
  const ValueId v = kb.load(bi, kb.r() * xnumel + kb.x());
  kb.store(bs, kb.x(), kb.reduce(ReduceOp::Sum, v));
  kb.store(bm, kb.x(), kb.reduce(ReduceOp::Max, v));
  kb.store(bt, kb.x() * rnumel + kb.r(), v);  // the transpose, written contiguously
  std::vector<float> sum(xnumel, poison<float>()), mx(xnumel, poison<float>()), t(in.size(), poison<float>());
  interpret(std::move(kb).finish(), {in.data(), sum.data(), mx.data(), t.data()});
  std::vector<float> want_sum(xnumel, 0), want_max(xnumel, -kInf), want_t(in.size());
  for (std::int64_t x = 0; x < xnumel; ++x)
    for (std::int64_t r = 0; r < rnumel; ++r) {
      const float f = vals[r * xnumel + x];
      want_sum[x] += f;
      want_max[x] = std::max(want_max[x], f);
      want_t[x * rnumel + r] = f;
    }
  check_equal(sum, want_sum);
  check_equal(mx, want_max);
  check_equal(t, want_t);
}

TEST_CASE("interpreter: Reduce Max and Min propagate NaN", "[interpreter]") {
  const std::vector<float> in = {1, kNaN, 3, 7,  //
                                 -kInf, -kInf, -kInf, -kInf,  //
                                 kNaN, 2, 9, -1,  //
                                 4, 5, 6, kInf};
  check_close(row_reduce(ReduceOp::Max, in, 4, 4), std::vector<float>{kNaN, -kInf, kNaN, kInf});
  check_close(row_reduce(ReduceOp::Min, in, 4, 4), std::vector<float>{kNaN, -kInf, kNaN, 4});
  check_close(row_reduce(ReduceOp::Sum, in, 4, 4), std::vector<float>{kNaN, -kInf, kNaN, kInf});
}

TEST_CASE("interpreter: integer reductions wrap", "[interpreter]") {
  using L = std::numeric_limits<std::int32_t>;
  const std::vector<std::int32_t> in = {L::max(), 1, 0, 5, 2, -3, 7,  //
                                        -1, -2, -3, -4, -5, -6, -7};
  check_equal(row_reduce(ReduceOp::Sum, in, 2, 7), std::vector<std::int32_t>{L::min() + 11, -28});
  check_equal(row_reduce(ReduceOp::Max, in, 2, 7), std::vector<std::int32_t>{L::max(), -1});
  check_equal(row_reduce(ReduceOp::Min, in, 2, 7), std::vector<std::int32_t>{-3, -7});
  check_equal(row_reduce(ReduceOp::Prod, in, 2, 7), std::vector<std::int32_t>{0, -5040});
  const std::vector<std::int64_t> big = {1LL << 62, 1LL << 62, 3, 1LL << 40, (1LL << 30) + 1, 5};
  check_equal(row_reduce(ReduceOp::Sum, big, 2, 3),
              std::vector<std::int64_t>{std::numeric_limits<std::int64_t>::min() + 3, (1LL << 40) + (1LL << 30) + 6});
  // 2^62 * 2^62 * 3 and 5 * 2^40 * (2^30 + 1) modulo 2^64.
  check_equal(row_reduce(ReduceOp::Prod, big, 2, 3), std::vector<std::int64_t>{0, 5LL << 40});
}

TEST_CASE("interpreter: rnumel == 0 gives the identity; xnumel == 0 does nothing", "[interpreter]") {
  const std::int64_t xnumel = 5;
  KernelBuilder kb("empty_rows", xnumel, 0);
  const int in = kb.buffer("in", DType::Float32, 0);
  const int ii = kb.buffer("ii", DType::Int64, 0);
  const int o = kb.buffer("o", DType::Float32, 4 * xnumel);
  const int oi = kb.buffer("oi", DType::Int64, 2 * xnumel);
  const int copy = kb.buffer("copy", DType::Float32, 1);
  const ValueId v = kb.load(in, kb.x() * 0 + kb.r());
  const ValueId vi = kb.load(ii, kb.r());
  kb.store(o, kb.x() * 4 + 0, kb.reduce(ReduceOp::Sum, v));
  kb.store(o, kb.x() * 4 + 1, kb.reduce(ReduceOp::Prod, v));
  kb.store(o, kb.x() * 4 + 2, kb.reduce(ReduceOp::Max, v));
  kb.store(o, kb.x() * 4 + 3, kb.reduce(ReduceOp::Min, v));
  kb.store(oi, kb.x() * 2 + 0, kb.reduce(ReduceOp::Max, vi));
  kb.store(oi, kb.x() * 2 + 1, kb.reduce(ReduceOp::Sum, kb.int_constant(9, DType::Int64)));
  kb.store(copy, kb.r(), v);  // r-level: never runs
  std::vector<float> out(4 * xnumel, poison<float>()), one(1, poison<float>());
  std::vector<std::int64_t> outi(2 * xnumel, poison<std::int64_t>());
  // Empty tensors may come with null data pointers.
  interpret(std::move(kb).finish(), {nullptr, nullptr, out.data(), outi.data(), one.data()});
  std::vector<float> want;
  std::vector<std::int64_t> wanti;
  for (std::int64_t x = 0; x < xnumel; ++x) {
    want.insert(want.end(), {0.0f, 1.0f, -kInf, kInf});
    wanti.insert(wanti.end(), {std::numeric_limits<std::int64_t>::min(), 0});
  }
  check_close(out, want);
  check_equal(outi, wanti);
  CHECK(one[0] == poison<float>());

  KernelBuilder kz("no_rows", 0, 16);
  const int zi = kz.buffer("in", DType::Float32, 0), zo = kz.buffer("out", DType::Float32, 0);
  kz.store(zo, kz.x(), kz.reduce(ReduceOp::Sum, kz.load(zi, kz.x() * 16 + kz.r())));
  CHECK_NOTHROW(interpret(std::move(kz).finish(), {nullptr, nullptr}));
}

TEST_CASE("interpreter: reduce of an x-level value, and x-level values used along r", "[interpreter]") {
  const std::int64_t xnumel = 3, rnumel = 6;
  std::vector<float> scale = {1.5f, -2.0f, 0.25f}, in(xnumel * rnumel);
  for (std::size_t i = 0; i < in.size(); ++i) in[i] = static_cast<float>(i) - 4.0f;
  KernelBuilder kb("bcast", xnumel, rnumel);
  const int bs = kb.buffer("scale", DType::Float32, xnumel);
  const int bi = kb.buffer("in", DType::Float32, xnumel * rnumel);
  const int o1 = kb.buffer("o1", DType::Float32, xnumel * rnumel);
  const int o2 = kb.buffer("o2", DType::Float32, xnumel);
  const int o3 = kb.buffer("o3", DType::Float32, xnumel * rnumel);
  const int o4 = kb.buffer("o4", DType::Int64, xnumel * rnumel);
  const ValueId s = kb.load(bs, kb.x());
  const IndexExpr flat = kb.x() * rnumel + kb.r();
  kb.store(o1, flat, kb.binary(PrimOp::Mul, kb.load(bi, flat), s));  // x-level operand of an r-level op
  kb.store(o2, kb.x(), kb.reduce(ReduceOp::Sum, s));                  // sum over r of a row constant
  kb.store(o3, flat, s);                                              // r-level store of an x-level value
  kb.store(o4, flat, kb.index_value(kb.r() * 10 + kb.x()));           // r-level Index
  std::vector<float> out1(in.size(), poison<float>()), out2(xnumel, poison<float>()), out3(in.size(), poison<float>());
  std::vector<std::int64_t> out4(in.size(), poison<std::int64_t>());
  interpret(std::move(kb).finish(), {scale.data(), in.data(), out1.data(), out2.data(), out3.data(), out4.data()});
  std::vector<float> w1, w2, w3;
  std::vector<std::int64_t> w4;
  for (std::int64_t x = 0; x < xnumel; ++x) {
    w2.push_back(scale[x] * rnumel);
    for (std::int64_t r = 0; r < rnumel; ++r) {
      w1.push_back(in[x * rnumel + r] * scale[x]);
      w3.push_back(scale[x]);
      w4.push_back(r * 10 + x);
    }
  }
  check_close(out1, w1);
  check_close(out2, w2);
  check_close(out3, w3);
  check_equal(out4, w4);
}

// ---------------------------------------------------------------------------
// Composite kernels as the lowering would produce them.

TEST_CASE("interpreter: softmax", "[interpreter]") {
  std::mt19937 rng(5);
  std::normal_distribution<float> dist(0, 2);
  for (std::int64_t rnumel : {7, 1000}) {
    const std::int64_t xnumel = 9;
    INFO("rnumel " << rnumel);
    std::vector<float> in(xnumel * rnumel);
    for (auto& v : in) v = dist(rng);
    KernelBuilder kb("softmax", xnumel, rnumel);
    const int bi = kb.buffer("in", DType::Float32, xnumel * rnumel);
    const int bo = kb.buffer("out", DType::Float32, xnumel * rnumel);
    const IndexExpr flat = kb.x() * rnumel + kb.r();
    const ValueId v = kb.load(bi, flat);
    const ValueId m = kb.reduce(ReduceOp::Max, v);
    const ValueId e = kb.unary(PrimOp::Exp, kb.binary(PrimOp::Sub, v, m));
    const ValueId s = kb.reduce(ReduceOp::Sum, e);
    kb.store(bo, flat, kb.binary(PrimOp::Div, e, s));
    std::vector<float> out(in.size(), poison<float>());
    interpret(std::move(kb).finish(), {in.data(), out.data()});

    std::vector<double> want(in.size());
    for (std::int64_t x = 0; x < xnumel; ++x) {
      const float* row = &in[x * rnumel];
      const float mx = *std::max_element(row, row + rnumel);
      double sum = 0;
      for (std::int64_t r = 0; r < rnumel; ++r) sum += std::exp(static_cast<double>(row[r]) - mx);
      for (std::int64_t r = 0; r < rnumel; ++r) want[x * rnumel + r] = std::exp(static_cast<double>(row[r]) - mx) / sum;
    }
    // float32 against a float64 reference: a few ulps of rounding in exp and the sum.
    check_close(out, want, 1e-6, 1e-9);
  }
}

TEST_CASE("interpreter: layer norm (two-pass mean and variance)", "[interpreter]") {
  std::mt19937 rng(11);
  std::normal_distribution<float> dist(1, 3);
  for (std::int64_t rnumel : {7, 1000}) {
    const std::int64_t xnumel = 6;
    INFO("rnumel " << rnumel);
    std::vector<float> in(xnumel * rnumel), w(rnumel), b(rnumel);
    for (auto& v : in) v = dist(rng);
    for (auto& v : w) v = dist(rng);
    for (auto& v : b) v = dist(rng);
    const float eps = 1e-5f;
    KernelBuilder kb("layer_norm", xnumel, rnumel);
    const int bi = kb.buffer("in", DType::Float32, xnumel * rnumel);
    const int bw = kb.buffer("w", DType::Float32, rnumel);
    const int bb = kb.buffer("b", DType::Float32, rnumel);
    const int bo = kb.buffer("out", DType::Float32, xnumel * rnumel);
    const int bm = kb.buffer("mean", DType::Float32, xnumel);
    const IndexExpr flat = kb.x() * rnumel + kb.r();
    const ValueId v = kb.load(bi, flat);
    const ValueId n = kb.constant(static_cast<double>(rnumel), DType::Float32);
    const ValueId mean = kb.binary(PrimOp::Div, kb.reduce(ReduceOp::Sum, v), n);
    const ValueId d = kb.binary(PrimOp::Sub, v, mean);
    const ValueId var = kb.binary(PrimOp::Div, kb.reduce(ReduceOp::Sum, kb.binary(PrimOp::Mul, d, d)), n);
    const ValueId inv = kb.unary(PrimOp::Rsqrt, kb.binary(PrimOp::Add, var, kb.constant(eps, DType::Float32)));
    const ValueId y = kb.binary(PrimOp::Add, kb.binary(PrimOp::Mul, kb.binary(PrimOp::Mul, d, inv), kb.load(bw, kb.r())),
                                kb.load(bb, kb.r()));
    kb.store(bo, flat, y);
    kb.store(bm, kb.x(), mean);
    std::vector<float> out(in.size(), poison<float>()), out_mean(xnumel, poison<float>());
    interpret(std::move(kb).finish(), {in.data(), w.data(), b.data(), out.data(), out_mean.data()});

    std::vector<double> want(in.size()), want_mean(xnumel);
    for (std::int64_t x = 0; x < xnumel; ++x) {
      double mu = 0, sq = 0;
      for (std::int64_t r = 0; r < rnumel; ++r) mu += in[x * rnumel + r];
      mu /= rnumel;
      for (std::int64_t r = 0; r < rnumel; ++r) sq += (in[x * rnumel + r] - mu) * (in[x * rnumel + r] - mu);
      const double inv_std = 1.0 / std::sqrt(sq / rnumel + eps);
      want_mean[x] = mu;
      for (std::int64_t r = 0; r < rnumel; ++r)
        want[x * rnumel + r] = (in[x * rnumel + r] - mu) * inv_std * w[r] + b[r];
    }
    // Relative 1e-6 plus an absolute term for outputs that cancel to near zero.
    check_close(out, want, 1e-6, 1e-5);
    check_close(out_mean, want_mean, 1e-6, 1e-6);
  }
}

// ---------------------------------------------------------------------------
// Errors and threads.

TEST_CASE("interpreter: out-of-range index and bad arguments throw", "[interpreter]") {
  KernelBuilder kb("oob", 10, 1);
  const int bi = kb.buffer("in", DType::Float32, 5), bo = kb.buffer("out", DType::Float32, 10);
  kb.store(bo, kb.x(), kb.load(bi, kb.x()));
  const auto k = std::move(kb).finish();
  std::vector<float> in(5, 1.0f), out(10, 0.0f);
  CHECK_THROWS_AS(interpret(k, {in.data(), out.data()}), std::out_of_range);
  CHECK_THROWS_AS(interpret(k, {in.data()}), std::invalid_argument);
  CHECK_THROWS_AS(interpret(k, {nullptr, out.data()}), std::invalid_argument);

  KernelBuilder kc("exp_int", 4, 1);
  const int ci = kc.buffer("in", DType::Int64, 4), co = kc.buffer("out", DType::Int64, 4);
  kc.store(co, kc.x(), kc.unary(PrimOp::Exp, kc.load(ci, kc.x())));
  std::vector<std::int64_t> a(4, 1), b(4, 0);
  CHECK_THROWS_AS(interpret(std::move(kc).finish(), {a.data(), b.data()}), std::invalid_argument);
}

TEST_CASE("interpreter: concurrent runs are independent", "[interpreter]") {
  const std::int64_t xnumel = 64, rnumel = 300;
  KernelBuilder kb("rowsum", xnumel, rnumel);
  const int bi = kb.buffer("in", DType::Float64, xnumel * rnumel), bo = kb.buffer("out", DType::Float64, xnumel);
  kb.store(bo, kb.x(), kb.reduce(ReduceOp::Sum, kb.load(bi, kb.x() * rnumel + kb.r())));
  const auto k = std::move(kb).finish();
  std::vector<std::vector<double>> ins(4, std::vector<double>(xnumel * rnumel)), outs(4, std::vector<double>(xnumel));
  for (int t = 0; t < 4; ++t)
    for (std::int64_t i = 0; i < xnumel * rnumel; ++i) ins[t][i] = static_cast<double>((i * (t + 1)) % 17);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 20; ++rep) interpret(k, {ins[t].data(), outs[t].data()});
    });
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; ++t) {
    std::vector<double> want(xnumel, 0);
    for (std::int64_t i = 0; i < xnumel * rnumel; ++i) want[i / rnumel] += ins[t][i];
    check_equal(outs[t], want);
  }
}

// ---------------------------------------------------------------------------
// Masked and indirect loads (docs/loop-ir-semantics.md, Load).

namespace {

// out[i, k] = table[idx[i], k] for a table of `rows` x `cols` (an embedding).
template <class Offset>
std::vector<float> gather_rows(const std::vector<Offset>& idx, const std::vector<float>& table, std::int64_t cols) {
  const auto n = static_cast<std::int64_t>(idx.size());
  const auto rows = static_cast<std::int64_t>(table.size()) / cols;
  KernelBuilder kb("gather_rows", n * cols, 1);
  const int bi = kb.buffer("idx", dtype_of<Offset>(), n), bt = kb.buffer("table", DType::Float32, rows * cols),
            bo = kb.buffer("out", DType::Float32, n * cols);
  const ValueId row = kb.load(bi, dv::ir::floordiv(kb.x(), cols));
  kb.store(bo, kb.x(), kb.load(bt, dv::ir::mod(kb.x(), cols), dv::ir::LoadOptions{row, cols, rows}));
  std::vector<float> out(n * cols, poison<float>());
  interpret(std::move(kb).finish(), {ptr(idx), ptr(table), out.data()});
  return out;
}

}  // namespace

TEMPLATE_TEST_CASE("interpreter: an indirect load reads the row its offset names", "[interpreter][loads]", std::int32_t,
                   std::int64_t) {
  const std::int64_t rows = 11, cols = 3;
  std::vector<float> table(rows * cols);
  for (std::size_t i = 0; i < table.size(); ++i) table[i] = static_cast<float>(i) * 0.5f - 3;
  const std::vector<TestType> idx{0, 10, 3, 3, 7, 1, 10};
  std::vector<float> want;
  for (auto i : idx)
    for (std::int64_t k = 0; k < cols; ++k) want.push_back(table[i * cols + k]);
  check_equal(gather_rows(idx, table, cols), want);
}

TEST_CASE("interpreter: an indirect offset out of range throws, never reads elsewhere", "[interpreter][loads]") {
  std::vector<float> table(12, 1.0f);  // 4 rows of 3: row 4 would still be inside a wider buffer
  CHECK_THROWS_AS(gather_rows(std::vector<std::int64_t>{0, 4}, table, 3), std::out_of_range);
  CHECK_THROWS_AS(gather_rows(std::vector<std::int64_t>{-1, 0}, table, 3), std::out_of_range);
  CHECK_THROWS_AS(gather_rows(std::vector<std::int32_t>{2, 1, 5}, table, 3), std::out_of_range);
  try {
    gather_rows(std::vector<std::int64_t>{1, 9}, table, 3);
  } catch (const std::out_of_range& e) {
    CHECK(std::string(e.what()).find("index 9 is out of range [0, 4)") != std::string::npos);
  }
}

TEST_CASE("interpreter: a masked load yields 'other' where its mask is false and reads nothing there",
          "[interpreter][loads]") {
  // out[x] = in[x - 2] for 2 <= x < 7, else -inf: the index leaves the buffer where masked.
  KernelBuilder kb("pad", 9, 1);
  const int bi = kb.buffer("in", DType::Float32, 5), bo = kb.buffer("out", DType::Float32, 9);
  const ValueId i = kb.index_value(kb.x());
  const ValueId inside = kb.binary(PrimOp::LogicalAnd, kb.binary(PrimOp::Ge, i, kb.int_constant(2, DType::Int64)),
                                   kb.binary(PrimOp::Lt, i, kb.int_constant(7, DType::Int64)));
  dv::ir::LoadOptions masked;
  masked.mask = inside;
  masked.other = -kInf;
  kb.store(bo, kb.x(), kb.load(bi, kb.x() - 2, masked));
  const auto k = std::move(kb).finish();
  const std::vector<float> in{1, 2, 3, 4, 5};
  std::vector<float> out(9, poison<float>());
  interpret(k, {ptr(in), out.data()});
  check_equal(out, std::vector<float>{-kInf, -kInf, 1, 2, 3, 4, 5, -kInf, -kInf});
}

TEST_CASE("interpreter: a mask from data guards an empty buffer and an out-of-range offset", "[interpreter][loads]") {
  // out[x] = flag[x] ? table[idx[x]] : 7, integers; a point whose flag is false
  // may hold any index, and an empty table (null pointer) is fine when no flag is set.
  auto run = [](const std::vector<std::uint8_t>& flag, const std::vector<std::int64_t>& idx,
                const std::vector<std::int32_t>& table) {
    const auto n = static_cast<std::int64_t>(flag.size());
    const auto rows = static_cast<std::int64_t>(table.size());
    KernelBuilder kb("guarded", n, 1);
    const int bf = kb.buffer("flag", DType::Bool, n), bi = kb.buffer("idx", DType::Int64, n),
              bt = kb.buffer("table", DType::Int32, rows), bo = kb.buffer("out", DType::Int32, n);
    const ValueId f = kb.load(bf, kb.x());
    kb.store(bo, kb.x(), kb.load(bt, IndexExpr(0), dv::ir::LoadOptions{kb.load(bi, kb.x()), 1, rows, f, 7}));
    std::vector<std::int32_t> out(n, poison<std::int32_t>());
    interpret(std::move(kb).finish(), {ptr(flag), ptr(idx), table.empty() ? nullptr : ptr(table), out.data()});
    return out;
  };
  check_equal(run({1, 0, 1, 0}, {2, 99, 0, -5}, {10, 20, 30}), std::vector<std::int32_t>{30, 7, 10, 7});
  check_equal(run({0, 0}, {3, -1}, {}), std::vector<std::int32_t>{7, 7});
  CHECK_THROWS_AS(run({1, 1}, {0, 3}, {10, 20, 30}), std::out_of_range);
  CHECK_THROWS_AS(run({0, 1}, {0, 0}, {}), std::out_of_range);
}

TEST_CASE("interpreter: masked window loads in a row reduction (a 1-d max pool with padding)", "[interpreter][loads]") {
  // out[x] = max over r < 3 of in[2x + r - 1], -inf outside [0, n): windows of
  // 3, stride 2, padding 1, over n = 7 (4 outputs, as ceil_mode gives: the
  // last window ends past the input).
  const std::int64_t n = 7, outs = 4, window = 3;
  KernelBuilder kb("maxpool1d", outs, window);
  const int bi = kb.buffer("in", DType::Float32, n), bo = kb.buffer("out", DType::Float32, outs);
  const IndexExpr at = kb.x() * 2 + kb.r() - 1;
  const ValueId i = kb.index_value(at);
  const ValueId inside = kb.binary(PrimOp::LogicalAnd, kb.binary(PrimOp::Ge, i, kb.int_constant(0, DType::Int64)),
                                   kb.binary(PrimOp::Lt, i, kb.int_constant(n, DType::Int64)));
  dv::ir::LoadOptions masked;
  masked.mask = inside;
  masked.other = -kInf;
  const ValueId v = kb.load(bi, at, masked);
  CHECK(kb.is_r_level(v));
  kb.store(bo, kb.x(), kb.reduce(ReduceOp::Max, v));
  const std::vector<float> in{-5, 3, kNaN, -1, -2, 8, 0};
  std::vector<float> out(outs, poison<float>());
  interpret(std::move(kb).finish(), {ptr(in), out.data()});
  check_close(out, std::vector<float>{3, kNaN, 8, 8});  // windows {pad,-5,3} {3,nan,-1} {-1,-2,8} {8,0,pad}
}

TEST_CASE("interpreter: an r-level indirect offset with a mask (a bag of rows, summed)", "[interpreter][loads]") {
  // out[x, k] = sum over r of table[idx[x, r], k] where idx >= 0 (-1 marks padding).
  const std::int64_t bags = 3, per_bag = 4, rows = 5, cols = 2;
  KernelBuilder kb("bag_sum", bags * cols, per_bag);
  const int bi = kb.buffer("idx", DType::Int32, bags * per_bag), bt = kb.buffer("table", DType::Float64, rows * cols),
            bo = kb.buffer("out", DType::Float64, bags * cols);
  const ValueId o = kb.load(bi, dv::ir::floordiv(kb.x(), cols) * per_bag + kb.r());
  const ValueId valid = kb.binary(PrimOp::Ge, o, kb.int_constant(0, DType::Int32));
  const ValueId v = kb.load(bt, dv::ir::mod(kb.x(), cols), dv::ir::LoadOptions{o, cols, rows, valid, 0});
  kb.store(bo, kb.x(), kb.reduce(ReduceOp::Sum, v));
  const std::vector<std::int32_t> idx{0, 1, -1, -1, 4, 4, 4, 2, -1, -1, -1, -1};
  std::vector<double> table(rows * cols);
  for (std::size_t i = 0; i < table.size(); ++i) table[i] = static_cast<double>(i + 1);
  std::vector<double> out(bags * cols, poison<double>());
  interpret(std::move(kb).finish(), {ptr(idx), ptr(table), out.data()});
  check_equal(out, std::vector<double>{1 + 3, 2 + 4, 9 * 3 + 5, 10 * 3 + 6, 0, 0});
}

namespace {

// out[idx[x / cols], x % cols] = in[x] (or += in[x]) over n rows of cols: a
// scatter of rows (index_copy, index_add) into out's rows.
template <class I, class T>
void scatter_rows(const std::vector<I>& idx, const std::vector<T>& in, std::vector<T>& out, std::int64_t cols,
                  bool accumulate, DType dt = dtype_of<T>()) {
  const auto n = static_cast<std::int64_t>(idx.size()), rows = static_cast<std::int64_t>(out.size()) / cols;
  KernelBuilder kb("scatter_rows", n * cols, 1);
  const int bi = kb.buffer("idx", dtype_of<I>(), n), bs = kb.buffer("in", dt, n * cols),
            bo = kb.buffer("out", dt, rows * cols);
  const ValueId row = kb.load(bi, dv::ir::floordiv(kb.x(), cols));
  kb.store(bo, dv::ir::mod(kb.x(), cols), kb.load(bs, kb.x()), dv::ir::StoreOptions{row, cols, rows, accumulate});
  interpret(std::move(kb).finish(), {ptr(idx), ptr(in), out.data()});
}

}  // namespace

TEMPLATE_TEST_CASE("interpreter: an indirect store writes the rows its offsets name", "[interpreter][stores]",
                   std::int32_t, std::int64_t) {
  const std::vector<TestType> idx{3, 0, 4};
  const std::vector<float> in{1, 2, 3, 4, 5, 6};
  std::vector<float> out(10, -1.0f);  // 5 rows of 2, the untouched ones keep their values
  scatter_rows(idx, in, out, 2, false);
  check_equal(out, std::vector<float>{3, 4, -1, -1, -1, -1, 1, 2, 5, 6});
}

TEST_CASE("interpreter: an accumulating store adds every point, duplicates too", "[interpreter][stores]") {
  SECTION("floats") {
    const std::vector<std::int64_t> idx{1, 1, 0, 1};
    std::vector<double> out{10, 20, 30, 40};
    scatter_rows(idx, std::vector<double>{1, 2, 3, 4, 5, 6, 7, 8}, out, 2, true);
    check_equal(out, std::vector<double>{10 + 5, 20 + 6, 30 + 1 + 3 + 7, 40 + 2 + 4 + 8});
  }
  SECTION("integers wrap around") {
    const std::int32_t max = std::numeric_limits<std::int32_t>::max();
    std::vector<std::int32_t> out{max, 0};
    scatter_rows(std::vector<std::int32_t>{0, 0, 1}, std::vector<std::int32_t>{1, 2, -3}, out, 1, true);
    check_equal(out, std::vector<std::int32_t>{std::numeric_limits<std::int32_t>::min() + 2, -3});
  }
  SECTION("bf16 rounds after each addition, in point order") {
    using dv::runtime::bf16_bits_to_f32;
    using dv::runtime::f32_to_bf16_bits;
    // 1 + 2^-8 is a tie that rounds to 1 each time; 2^-8 + 2^-8 first would not.
    const std::uint16_t one = f32_to_bf16_bits(1.0f), tiny = f32_to_bf16_bits(0x1p-8f);
    std::vector<std::uint16_t> out{one};
    const std::vector<std::uint16_t> in{tiny, tiny};
    const auto n = 2;
    KernelBuilder kb("bf16_add", n, 1);
    const int bs = kb.buffer("in", DType::BFloat16, n), bo = kb.buffer("out", DType::BFloat16, 1);
    dv::ir::StoreOptions add;
    add.accumulate = true;
    kb.store(bo, IndexExpr(0), kb.load(bs, kb.x()), add);
    interpret(std::move(kb).finish(), {ptr(in), out.data()});
    CHECK(bf16_bits_to_f32(out[0]) == 1.0f);
  }
}

TEST_CASE("interpreter: a store offset out of range throws IndexOutOfRange", "[interpreter][stores]") {
  std::vector<float> out(6, 0.0f);  // 3 rows of 2: row 3 would be the next buffer's memory
  const std::vector<float> in{1, 2, 3, 4};
  CHECK_THROWS_AS(scatter_rows(std::vector<std::int64_t>{0, 3}, in, out, 2, false), dv::runtime::IndexOutOfRange);
  CHECK_THROWS_AS(scatter_rows(std::vector<std::int64_t>{-1, 0}, in, out, 2, true), dv::runtime::IndexOutOfRange);
  try {
    scatter_rows(std::vector<std::int32_t>{2, 7}, in, out, 2, false);
    FAIL("no exception");
  } catch (const dv::runtime::IndexOutOfRange& e) {
    CHECK(std::string(e.what()).find("index 7 is out of range [0, 3) writing buffer out") != std::string::npos);
  }
}
