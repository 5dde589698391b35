// Text shared by every kernel form of the CUDA emitter: literals, reduction
// identities and combiners, the lane analysis of index expressions, index
// expressions as C, the helpers every source starts with (kPrelude), and
// what sizes-as-arguments does to a finished text. See cuda_text.h.
#include "codegen/cuda_text.h"

#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>
#include <stdexcept>

namespace dv::codegen::cuda {

// Size arguments (DeviceSpec::size_arguments): where the size table's type
// and the entry's name go once the text is complete.
const char* const kSizeTablePlaceholder = "@@dv_size_table@@";
const char* const kEntryPlaceholder = "dv_entry_placeholder";

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
  for (std::size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size()))
    text.replace(at, from.size(), to);
  return text;
}

// The text without `//` comments (the generated source has no string
// literal holding "//"); a macro line keeps its continuation backslash.
std::string strip_line_comments(const std::string& text) {
  std::istringstream in(text);
  std::string out;
  for (std::string line; std::getline(in, line);) {
    const std::size_t at = line.find("//");
    if (at != std::string::npos) {
      const bool continued = !line.empty() && line.back() == '\\';
      line.erase(at);
      while (!line.empty() && line.back() == ' ') line.pop_back();
      if (continued) line += " \\";
    }
    if (!line.empty()) out += line + "\n";
  }
  return out;
}


// ---------------------------------------------------------------------------
// Small utilities


std::int64_t gcd64(std::int64_t a, std::int64_t b) {
  if (a < 0) a = -a;
  if (b < 0) b = -b;
  while (b != 0) {
    const std::int64_t t = a % b;
    a = b;
    b = t;
  }
  return a;
}

std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

// Smallest power of two >= v (v >= 1), capped at 2^30.
std::int64_t next_pow2(std::int64_t v) {
  std::int64_t p = 1;
  while (p < v && p < (std::int64_t{1} << 30)) p *= 2;
  return p;
}

[[noreturn]] void fail(const std::string& what) { throw std::invalid_argument("emit_cuda: " + what); }

// A C identifier made of `s` (letters, digits, underscores).
std::string c_identifier(const std::string& s) {
  std::string out;
  for (char ch : s) {
    const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_';
    out += ok ? ch : '_';
  }
  if (out.empty() || (out[0] >= '0' && out[0] <= '9')) out = "k_" + out;
  return out;
}


// ---------------------------------------------------------------------------
// Types and literals

bool is_float(DType t) { return t == DType::Float32 || t == DType::Float64; }
bool is_half(DType t) { return t == DType::Float16 || t == DType::BFloat16; }
int compute_size(DType t) { return (t == DType::Int64 || t == DType::Float64) ? 8 : 4; }

// C type of a compute dtype.
std::string ctype(DType t) {
  switch (t) {
    case DType::Bool: return "bool";
    case DType::Int32: return "int";
    case DType::Int64: return "long long";
    case DType::Float32: return "float";
    case DType::Float64: return "double";
    default: fail(cat("not a compute dtype: ", ir::dtype_name(t)));
  }
}

std::string stype(DType t) { return std::string(ir::cuda_storage_type(t)); }

std::string float_literal(double v, DType t) {
  const bool f32 = t == DType::Float32;
  if (std::isnan(v)) return f32 ? "__int_as_float(0x7fc00000)" : "__longlong_as_double(0x7ff8000000000000LL)";
  if (std::isinf(v)) {
    const std::string inf = f32 ? "__int_as_float(0x7f800000)" : "__longlong_as_double(0x7ff0000000000000LL)";
    return v < 0 ? "(-" + inf + ")" : inf;
  }
  char buf[64];
  if (f32) {
    std::snprintf(buf, sizeof buf, "%.9g", static_cast<double>(static_cast<float>(v)));
  } else {
    std::snprintf(buf, sizeof buf, "%.17g", v);
  }
  std::string s = buf;
  if (s.find_first_of(".e") == std::string::npos) s += ".0";
  if (f32) s += "f";
  return s[0] == '-' ? "(" + s + ")" : s;
}

std::string int_literal(std::int64_t v, DType t) {
  if (t == DType::Bool) return v != 0 ? "true" : "false";
  if (t == DType::Int32) {
    const auto i = static_cast<std::int32_t>(v);
    if (i == std::numeric_limits<std::int32_t>::min()) return "(-2147483647 - 1)";
    return i < 0 ? cat("(", i, ")") : cat(i);
  }
  if (v == std::numeric_limits<std::int64_t>::min()) return "(-9223372036854775807LL - 1)";
  return v < 0 ? cat("(", v, "LL)") : cat(v, "LL");
}

std::string zero_of(DType t) { return is_float(t) ? float_literal(0, t) : int_literal(0, t); }

// ---------------------------------------------------------------------------
// Reductions

std::string reduce_identity(ReduceOp op, DType t) {
  if (t == DType::Bool) return (op == ReduceOp::Sum || op == ReduceOp::Max) ? "false" : "true";
  switch (op) {
    case ReduceOp::Sum: return zero_of(t);
    case ReduceOp::Prod: return is_float(t) ? float_literal(1, t) : int_literal(1, t);
    case ReduceOp::Max:
      if (is_float(t)) return float_literal(-INFINITY, t);
      return int_literal(t == DType::Int32 ? std::numeric_limits<std::int32_t>::min()
                                           : std::numeric_limits<std::int64_t>::min(),
                         t);
    case ReduceOp::Min:
      if (is_float(t)) return float_literal(INFINITY, t);
      return int_literal(t == DType::Int32 ? std::numeric_limits<std::int32_t>::max()
                                           : std::numeric_limits<std::int64_t>::max(),
                         t);
  }
  fail("unknown reduce op");
}

std::string reduce_combine(ReduceOp op, DType t, const std::string& a, const std::string& b) {
  if (t == DType::Bool) {  // any / all, without short-circuit evaluation
    const bool any = op == ReduceOp::Sum || op == ReduceOp::Max;
    return cat("((", a, any ? " | " : " & ", b, ") != 0)");
  }
  switch (op) {
    case ReduceOp::Sum: return is_float(t) ? cat("(", a, " + ", b, ")") : cat("dv_add(", a, ", ", b, ")");
    case ReduceOp::Prod: return is_float(t) ? cat("(", a, " * ", b, ")") : cat("dv_mul(", a, ", ", b, ")");
    case ReduceOp::Max: return cat("dv_max(", a, ", ", b, ")");
    case ReduceOp::Min: return cat("dv_min(", a, ", ", b, ")");
  }
  fail("unknown reduce op");
}

// ---------------------------------------------------------------------------
// Lane analysis of index expressions.
//
// With the lane variable L = L0 + v (L0 a multiple of W, 0 <= v < W) and the
// other variables fixed, an expression e that has a LaneForm satisfies
//   e(L0 + v) = e(L0) + stride*v   for every 0 <= v < W, and
//   e(L0) is a multiple of div     (div 0: e(L0) is always 0).
// The rules hold for floor division and modulo of any sign.


constexpr std::int64_t kFormLimit = std::int64_t{1} << 40;  // beyond this, drop divisibility facts

std::int64_t mul_div(std::int64_t a, std::int64_t b) {
  // Divisibility of a product: a*b, saturated to "unknown" (1) on overflow.
  if (a == 0 || b == 0) return 0;
  if (std::abs(a) > kFormLimit / std::max<std::int64_t>(1, std::abs(b))) return 1;
  return std::abs(a * b);
}

std::optional<LaneForm> lane_form(const IndexExpr& e, const LaneContext& ctx) {
  using K = IndexExpr::Kind;
  switch (e.kind()) {
    case K::Const: return LaneForm{0, std::abs(e.value())};
    case K::Var:
      if (e.name() == ctx.lane) return LaneForm{1, ctx.width};
      return LaneForm{0, 1};
    case K::Add: {
      LaneForm f{0, 0};
      for (const IndexExpr& op : e.operands()) {
        const auto g = lane_form(op, ctx);
        if (!g) return std::nullopt;
        f.stride += g->stride;
        f.div = gcd64(f.div, g->div);
        if (std::abs(f.stride) > kFormLimit) return std::nullopt;
      }
      return f;
    }
    case K::Mul: {
      std::int64_t c = 1;
      std::vector<LaneForm> parts;
      for (const IndexExpr& op : e.operands()) {
        if (op.is_const()) {
          c *= op.value();
          continue;
        }
        const auto g = lane_form(op, ctx);
        if (!g) return std::nullopt;
        parts.push_back(*g);
      }
      if (std::abs(c) > kFormLimit) return std::nullopt;
      if (parts.empty()) return LaneForm{0, std::abs(c)};
      if (parts.size() == 1) {
        if (std::abs(parts[0].stride) > kFormLimit / std::max<std::int64_t>(1, std::abs(c))) return std::nullopt;
        return LaneForm{c * parts[0].stride, mul_div(c, parts[0].div)};
      }
      // A product of several non-constant factors: only lane-uniform ones.
      std::int64_t d = std::abs(c);
      for (const LaneForm& p : parts) {
        if (p.stride != 0) return std::nullopt;
        d = mul_div(d, p.div);
      }
      return LaneForm{0, d};
    }
    case K::FloorDiv: {
      const auto f = lane_form(e.operands()[0], ctx);
      const std::int64_t c = e.operands()[1].value();
      if (!f || c <= 0) return std::nullopt;
      const std::int64_t g = f->div == 0 ? c : gcd64(f->div, c);
      const std::int64_t div = f->div % c == 0 ? f->div / c : 1;
      // e(L0) mod c is a multiple of g, at most c - g: lanes stay in one bucket
      // of c when stride*(W-1) < g.
      if (f->stride == 0 || (f->stride > 0 && f->stride * (ctx.width - 1) < g)) return LaneForm{0, div};
      if (f->stride % c == 0) return LaneForm{f->stride / c, div};
      return std::nullopt;
    }
    case K::Mod: {
      const auto f = lane_form(e.operands()[0], ctx);
      const std::int64_t c = e.operands()[1].value();
      if (!f || c <= 0) return std::nullopt;
      const std::int64_t g = f->div == 0 ? c : gcd64(f->div, c);
      const std::int64_t div = f->div == 0 ? 0 : g;
      if (f->stride % c == 0) return LaneForm{0, div};
      if (f->stride > 0 && f->stride * (ctx.width - 1) < g) return LaneForm{f->stride, div};
      return std::nullopt;
    }
    case K::Abs: {  // the same on every lane where its operand is; |e| has e's divisors
      const auto f = lane_form(e.operands()[0], ctx);
      if (!f || f->stride != 0) return std::nullopt;
      return LaneForm{0, f->div};
    }
  }
  return std::nullopt;
}

LaneAccess classify(const IndexExpr& e, const LaneContext& ctx) {
  const auto f = lane_form(e, ctx);
  if (!f) return LaneAccess::Other;
  if (f->stride == 0) return LaneAccess::Uniform;
  if (f->stride == 1 && f->div % ctx.width == 0) return LaneAccess::Contiguous;
  return LaneAccess::Other;
}

// ---------------------------------------------------------------------------
// Index expressions as C


std::string idx_literal(std::int64_t v) {
  const bool big = v > std::numeric_limits<std::int32_t>::max() || v < std::numeric_limits<std::int32_t>::min();
  const std::string s = big ? cat(v, "LL") : cat(v);
  return v < 0 ? "(" + s + ")" : s;
}

std::string index_c(const IndexExpr& e, const VarMap& vars, const ConstMap& consts);

// A product; its constant factor (first operand, if any) multiplied by `sign`.
std::string product_c(const IndexExpr& e, std::int64_t sign, const VarMap& vars, const ConstMap& consts) {
  std::string s;
  std::int64_t c = sign;
  for (const IndexExpr& op : e.operands()) {
    if (op.is_const()) {
      c *= op.value();
      continue;
    }
    if (!s.empty()) s += " * ";
    s += index_c(op, vars, consts);
  }
  if (c != 1) s += " * " + consts(c);
  return s;
}

std::string index_c(const IndexExpr& e, const VarMap& vars, const ConstMap& consts) {
  using K = IndexExpr::Kind;
  switch (e.kind()) {
    case K::Const: return consts(e.value());
    case K::Var: return vars(e.name());
    case K::Mul: return "(" + product_c(e, 1, vars, consts) + ")";
    case K::Add: {
      std::string s;
      for (const IndexExpr& op : e.operands()) {
        bool negative = false;
        std::string term;
        if (op.is_const()) {
          negative = op.value() < 0;
          term = consts(negative ? -op.value() : op.value());
        } else if (op.kind() == K::Mul && op.operands()[0].is_const() && op.operands()[0].value() < 0) {
          negative = true;
          term = product_c(op, -1, vars, consts);
        } else if (op.kind() == K::Mul) {
          term = product_c(op, 1, vars, consts);
        } else {
          term = index_c(op, vars, consts);
        }
        if (s.empty()) {
          s = negative ? "-" + term : term;
        } else {
          s += (negative ? " - " : " + ") + term;
        }
      }
      return "(" + s + ")";
    }
    case K::FloorDiv:
    case K::Mod: {
      const IndexExpr& n = e.operands()[0];
      const std::int64_t c = e.operands()[1].value();
      const bool div = e.kind() == K::FloorDiv;
      if (n.min_value() >= 0) return cat("(", index_c(n, vars, consts), div ? " / " : " % ", consts(c), ")");
      return cat(div ? "dv_floordiv(" : "dv_mod(", index_c(n, vars, consts), ", (idx_t)", consts(c), ")");
    }
    case K::Abs: return cat("dv_abs((idx_t)", index_c(e.operands()[0], vars, consts), ")");
  }
  fail("unknown index expression kind");
}

// Visits e and all of its sub-expressions.
void for_each_subexpr(const IndexExpr& e, const std::function<void(const IndexExpr&)>& f) {
  f(e);
  using K = IndexExpr::Kind;
  if (e.kind() != K::Const && e.kind() != K::Var)
    for (const IndexExpr& op : e.operands()) for_each_subexpr(op, f);
}

// ---------------------------------------------------------------------------
// The helper functions every generated source starts with.

const char* const kPrelude = R"(// ---- helpers (no include files: NVRTC compiles this source as is) ----
#pragma nv_diag_suppress 177  // unused shape constants are fine
template <typename T, int N> struct alignas(sizeof(T) * N) dv_vec { T e[N]; };
// A 16-byte load of data only a reduction reads (no row is written): kept out
// of L1. Measured on the H100 (bench/NOTES.md, 2026-11-25): a row sum of
// 16384x4096 f32 97.1 -> 94.7 us; the same hint on kernels that also write
// their rows (softmax, layer_norm, pointwise) cost 1-3 us, so they keep plain loads.
#define DV_L1_LOAD(fn, qualifiers)                                                       \
  template <typename V> __device__ __forceinline__ V fn(const V* p) {                  \
    static_assert(sizeof(V) == 16, "16-byte vectors only");                             \
    unsigned u[4];                                                                      \
    asm("ld.global" qualifiers ".v4.u32 {%0, %1, %2, %3}, [%4];"                        \
        : "=r"(u[0]), "=r"(u[1]), "=r"(u[2]), "=r"(u[3]) : "l"(p));                      \
    V v;                                                                                \
    memcpy(&v, u, 16);                                                                  \
    return v;                                                                           \
  }
DV_L1_LOAD(dv_load_once, ".L1::no_allocate")
// Data touched once (KernelTuning::stream_hints): streaming, evict first.
DV_L1_LOAD(dv_load_stream, ".cs")
template <typename V> __device__ __forceinline__ void dv_store_stream(V* p, const V& v) {
  static_assert(sizeof(V) == 16, "16-byte vectors only");
  unsigned u[4];
  memcpy(u, &v, 16);
  asm volatile("st.global.cs.v4.u32 [%0], {%1, %2, %3, %4};" :: "l"(p), "r"(u[0]), "r"(u[1]), "r"(u[2]), "r"(u[3])
               : "memory");
}

// Looped rows read a row once per pass. A pass that a later pass follows
// over the same row loads it with evict_last (L1 and L2), so that the re-read
// hits; the last pass loads it with evict_first. Measured on the H100
// (bench/NOTES.md, 2026-11-25, third session): softmax 2048x32768 f32 (three
// looped passes over 128 KB rows) 301.8 -> 202.0 us (torch.compile 240).
#define DV_HINTED_LOAD(fn, l2_policy, qualifiers)                                      \
  template <typename V> __device__ __forceinline__ V fn(const V* p) {                  \
    static_assert(sizeof(V) == 16, "16-byte vectors only");                             \
    unsigned long long policy;                                                          \
    asm("createpolicy.fractional." l2_policy ".b64 %0, 1.0;" : "=l"(policy));          \
    unsigned u[4];                                                                      \
    asm("ld.global" qualifiers ".L2::cache_hint.v4.u32 {%0, %1, %2, %3}, [%4], %5;"     \
        : "=r"(u[0]), "=r"(u[1]), "=r"(u[2]), "=r"(u[3]) : "l"(p), "l"(policy));         \
    V v;                                                                                \
    memcpy(&v, u, 16);                                                                  \
    return v;                                                                           \
  }
DV_HINTED_LOAD(dv_load_keep, "L2::evict_last", ".L1::evict_last")
DV_HINTED_LOAD(dv_load_last, "L2::evict_first", ".L1::evict_first")
DV_HINTED_LOAD(dv_load_keep_l2, "L2::evict_last", "")
DV_HINTED_LOAD(dv_load_last_l2, "L2::evict_first", "")
#undef DV_HINTED_LOAD
// The L1 part alone (experiments: DeviceSpec::row_loop_hints = 1).
DV_L1_LOAD(dv_load_keep_l1, ".L1::evict_last")
DV_L1_LOAD(dv_load_last_l1, ".L1::evict_first")
#undef DV_L1_LOAD

// Full-range division within 2 ulps (KernelTuning::fast_math).
__device__ __forceinline__ float dv_div_full(float a, float b) {
  float d; asm("div.full.f32 %0, %1, %2;" : "=f"(d) : "f"(a), "f"(b)); return d;
}

// f16 / bf16 are stored as unsigned short and computed in float.
__device__ __forceinline__ float dv_f16_to_f32(unsigned short h) {
  float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f;
}
__device__ __forceinline__ unsigned short dv_f32_to_f16(float f) {
  unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h;
}
__device__ __forceinline__ unsigned short dv_f64_to_f16(double d) {
  unsigned short h; asm("cvt.rn.f16.f64 %0, %1;" : "=h"(h) : "d"(d)); return h;
}
__device__ __forceinline__ float dv_bf16_to_f32(unsigned short b) { return __uint_as_float(((unsigned)b) << 16); }
__device__ __forceinline__ unsigned short dv_bits_to_bf16(unsigned u) {
  if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);  // NaN: stays (quiet) NaN
  u += 0x7fffu + ((u >> 16) & 1u);                                                  // round to nearest even
  return (unsigned short)(u >> 16);
}
__device__ __forceinline__ unsigned short dv_f32_to_bf16(float f) {
#if __CUDA_ARCH__ >= 800
  unsigned short h; asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h;
#else
  return dv_bits_to_bf16(__float_as_uint(f));
#endif
}
// Two floats to a packed f16 / bf16 pair (lo at the lower address), one
// instruction on sm_80+: a 16-byte store of 8 halves takes 4 conversions.
__device__ __forceinline__ unsigned dv_f32x2_to_bf16x2(float lo, float hi) {
#if __CUDA_ARCH__ >= 800
  unsigned r; asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo)); return r;
#else
  return (unsigned)dv_f32_to_bf16(lo) | ((unsigned)dv_f32_to_bf16(hi) << 16);
#endif
}
__device__ __forceinline__ unsigned dv_f32x2_to_f16x2(float lo, float hi) {
#if __CUDA_ARCH__ >= 800
  unsigned r; asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo)); return r;
#else
  return (unsigned)dv_f32_to_f16(lo) | ((unsigned)dv_f32_to_f16(hi) << 16);
#endif
}
__device__ __forceinline__ unsigned short dv_f64_to_bf16(double d) {
  // Round to odd into float, then to nearest even: one correct rounding.
  float f; asm("cvt.rz.f32.f64 %0, %1;" : "=f"(f) : "d"(d));
  unsigned u = __float_as_uint(f);
  if ((double)f != d && d == d) u |= 1u;
  return dv_bits_to_bf16(u);
}

// Integer arithmetic wraps around (two's complement); division by zero gives 0.
__device__ __forceinline__ int dv_neg(int a) { return (int)(0u - (unsigned)a); }
__device__ __forceinline__ long long dv_neg(long long a) { return (long long)(0ull - (unsigned long long)a); }
__device__ __forceinline__ int dv_add(int a, int b) { return (int)((unsigned)a + (unsigned)b); }
__device__ __forceinline__ long long dv_add(long long a, long long b) { return (long long)((unsigned long long)a + (unsigned long long)b); }
__device__ __forceinline__ int dv_sub(int a, int b) { return (int)((unsigned)a - (unsigned)b); }
__device__ __forceinline__ long long dv_sub(long long a, long long b) { return (long long)((unsigned long long)a - (unsigned long long)b); }
__device__ __forceinline__ int dv_mul(int a, int b) { return (int)((unsigned)a * (unsigned)b); }
__device__ __forceinline__ long long dv_mul(long long a, long long b) { return (long long)((unsigned long long)a * (unsigned long long)b); }
template <typename T> __device__ __forceinline__ T dv_abs(T a) { return a < 0 ? dv_neg(a) : a; }
template <typename T> __device__ __forceinline__ T dv_div(T a, T b) {
  if (b == 0) return 0;
  if (b == -1) return dv_neg(a);
  return a / b;
}
template <typename T> __device__ __forceinline__ T dv_floordiv(T a, T b) {
  if (b == 0) return 0;
  if (b == -1) return dv_neg(a);
  T q = a / b;
  if (a % b != 0 && ((a < 0) != (b < 0))) --q;
  return q;
}
template <typename T> __device__ __forceinline__ T dv_mod(T a, T b) {
  if (b == 0 || b == -1) return 0;
  T r = a % b;
  if (r != 0 && ((r < 0) != (b < 0))) r += b;
  return r;
}
template <typename T> __device__ __forceinline__ T dv_ipow(T a, T b) {
  if (b < 0) return a == 1 ? (T)1 : a == -1 ? ((b & 1) ? (T)-1 : (T)1) : (T)0;
  T r = 1;
  while (b != 0) {
    if (b & 1) r = dv_mul(r, a);
    b >>= 1;
    if (b != 0) a = dv_mul(a, a);
  }
  return r;
}

// Python remainder for floats: the result takes the sign of b.
__device__ __forceinline__ float dv_fmod(float a, float b) {
  float r = fmodf(a, b);
  if (r != 0.0f && ((r < 0.0f) != (b < 0.0f))) r += b;
  return r;
}
__device__ __forceinline__ double dv_fmod(double a, double b) {
  double r = fmod(a, b);
  if (r != 0.0 && ((r < 0.0) != (b < 0.0))) r += b;
  return r;
}

// Maximum / minimum; NaN wins for floats.
__device__ __forceinline__ float dv_max(float a, float b) { return (a > b || a != a) ? a : b; }
__device__ __forceinline__ float dv_min(float a, float b) { return (a < b || a != a) ? a : b; }
__device__ __forceinline__ double dv_max(double a, double b) { return (a > b || a != a) ? a : b; }
__device__ __forceinline__ double dv_min(double a, double b) { return (a < b || a != a) ? a : b; }
__device__ __forceinline__ int dv_max(int a, int b) { return a > b ? a : b; }
__device__ __forceinline__ int dv_min(int a, int b) { return a < b ? a : b; }
__device__ __forceinline__ long long dv_max(long long a, long long b) { return a > b ? a : b; }
__device__ __forceinline__ long long dv_min(long long a, long long b) { return a < b ? a : b; }

// An indirect load's offset o, checked against its extent n: out of range
// stops the kernel (the launch reports an error) rather than read elsewhere.
__device__ __forceinline__ long long dv_checked(long long o, long long n) {
  if ((unsigned long long)o >= (unsigned long long)n) __trap();
  return o;
}

// An accumulating store: one atomic read-modify-write (integers wrap: the
// 64-bit add runs in unsigned). f16 / bf16 have no atomicAdd of their own
// before sm_90's vector forms: a compare-and-swap loop on the aligned 32-bit
// word that holds the element adds in float and rounds, as the interpreter does.
__device__ __forceinline__ void dv_atomic_add(float* p, float v) { atomicAdd(p, v); }
__device__ __forceinline__ void dv_atomic_add(double* p, double v) { atomicAdd(p, v); }
__device__ __forceinline__ void dv_atomic_add(int* p, int v) { atomicAdd(p, v); }
__device__ __forceinline__ void dv_atomic_add(long long* p, long long v) {
  atomicAdd(reinterpret_cast<unsigned long long*>(p), (unsigned long long)v);
}
template <bool kBf16> __device__ __forceinline__ void dv_atomic_add_half(unsigned short* p, float v) {
  const unsigned long long at = reinterpret_cast<unsigned long long>(p);
  unsigned* word = reinterpret_cast<unsigned*>(at & ~3ull);
  const unsigned shift = (at & 2ull) ? 16u : 0u;
  unsigned old = *word, assumed;
  do {
    assumed = old;
    const unsigned short h = (unsigned short)(assumed >> shift);
    const float sum = (kBf16 ? dv_bf16_to_f32(h) : dv_f16_to_f32(h)) + v;
    const unsigned short r = kBf16 ? dv_f32_to_bf16(sum) : dv_f32_to_f16(sum);
    old = atomicCAS(word, assumed, (assumed & ~(0xffffu << shift)) | ((unsigned)r << shift));
  } while (old != assumed);
}
__device__ __forceinline__ void dv_atomic_add_f16(unsigned short* p, float v) { dv_atomic_add_half<false>(p, v); }
__device__ __forceinline__ void dv_atomic_add_bf16(unsigned short* p, float v) { dv_atomic_add_half<true>(p, v); }

// Butterfly exchange within a warp (all 32 lanes take part).
__device__ __forceinline__ float dv_shfl_xor(float v, int m) { return __shfl_xor_sync(0xffffffffu, v, m); }
__device__ __forceinline__ double dv_shfl_xor(double v, int m) { return __shfl_xor_sync(0xffffffffu, v, m); }
__device__ __forceinline__ int dv_shfl_xor(int v, int m) { return __shfl_xor_sync(0xffffffffu, v, m); }
__device__ __forceinline__ long long dv_shfl_xor(long long v, int m) { return __shfl_xor_sync(0xffffffffu, v, m); }
__device__ __forceinline__ bool dv_shfl_xor(bool v, int m) { return __shfl_xor_sync(0xffffffffu, (int)v, m) != 0; }
)";

}  // namespace dv::codegen::cuda
