// CUDA C emission for loop-IR kernels: Triton-style block programs written as
// CUDA C.
//
// Kernel strategies
// -----------------
// Every SSA value is either a *scalar* (one value per thread: constants, and in
// row kernels the x-level values of the thread's row) or a *lane array*
// `T vN[N]` holding the thread's share of the lane variable (x in pointwise
// kernels, r in row kernels). Lane arrays are laid out as `chunks` of W
// contiguous lane values: element k = c*W + v stands for lane value
// l0(c) + v, where l0(c) is a multiple of W. Every instruction becomes a fully
// unrolled loop over its array (compile-time indices only, so arrays stay in
// registers), in instruction order: all loads of a segment are issued before
// their first use.
//
// Loads and Stores are classified per index with classify_lane_access (lane 0
// of a chunk is a multiple of W): Contiguous -> one W-wide vector access
// (16 bytes for the widest type, through an aligned struct), Uniform -> one
// scalar access broadcast to the W lanes, Other -> W scalar accesses.
// A Load with an indirect offset or a mask (a gather) is never classified:
// its address depends on a value, so every lane reads alone, as
// `m ? p[index + dv_checked(o, extent) * stride] : other` -- a masked lane
// touches no memory, and an offset out of range traps instead of reading
// another element: a sticky error of the CUDA context, as eager's device-side
// assert is (it shows at the next synchronization). A Store with an indirect
// offset or accumulation (a scatter) is never classified either: every lane
// writes alone, `p[index + dv_checked(o, extent) * stride] = value`, or
// `dv_atomic_add(&p[...], value)` when it accumulates.
//
// Pointwise kernels (rnumel <= 1). W = 16 bytes / widest accessed element,
// one chunk per thread (G = 1), blocks of 128 threads (64 when the grid would
// be small); a block covers TILE = threads*W*G consecutive x. Full
// tiles run without masks; when xnumel is not a multiple of TILE, the last
// block runs the same body one element per thread (W = 1) in a strided loop.
// Chunk c of thread t in block b starts at x = b*TILE + (c*threads + t)*W, so
// each chunk is a fully coalesced 16-byte-per-thread access across the block.
//
// Row kernels (rnumel > 1). TPR threads (a power of two) share a row, RPB rows
// per block; thread t of a row covers r = (j*TPR + t)*W + v. W = 16 bytes /
// widest r-level element, halved until it divides rnumel (so only whole chunks
// are ever masked). TPR is chosen for 2 chunks per thread, up to 512 threads
// (longer rows give each thread more chunks), then raised while the grid would
// hold fewer threads than the GPU; a persistent row whose chunks would not
// divide evenly takes a half or a quarter as many threads when they do.
//   - Persistent ("row in registers"), when the thread's share fits the
//     register budget (except rows of f32 lanes that write rows and take
//     more than 1, at most 2 chunks a thread at 512 threads: one looped step
//     of 2 chunks, see prefers_one_looped_step): straight-line code, each r-level value computed once
//     for the whole row, instructions ordered by pass (below) so that the
//     reductions of one pass share one barrier.
//   - Looped otherwise: the body is split into passes at Reduce boundaries (an
//     r-level instruction belongs to the pass after the last Reduce it depends
//     on); each pass loops over the row U chunks at a time and recomputes
//     (reloads) the r-level values it needs. A row that a later pass reads
//     again is loaded evict_last (L1 and L2), and evict_first by its last pass.
//   - In persistent rows whose threads hold equal shares, and in looped rows
//     of one unmasked step, a variance (a sum of squared deviations from the
//     row's mean) is computed in the same pass as the mean (see "one-pass
//     variance" below): one barrier (and for looped rows one pass) fewer.
//   - Column-major threads when the r-level accesses are contiguous along x
//     and none along r (a reduction over an outer dimension): a warp covers 32
//     consecutive rows (coalesced), up to 32 threads split each row's r range
//     (W = 1) and combine through shared memory (no shuffles).
//     A block takes 64 rows (256 bytes of f32 along x) when every SM gets such
//     a block, else 32.
//   - A row kernel that stores no r-level value (a plain reduction) loads its
//     rows' 16-byte chunks with L1::no_allocate (dv_load_once).
// Rows past xnumel (last block) are clamped to the last row for loads and
// compute, and never store; every thread reaches every barrier and shuffle.
// Chunks past rnumel load nothing, contribute the identity to reductions and
// do not store.
// A Reduce: per-lane partial accumulators over the thread's chunks, combined
// in the thread, then across the row's lanes with __shfl_xor_sync (the
// butterfly leaves the result in every lane; every lane executes every
// shuffle), then, when a row spans several warps, through a per-Reduce
// __shared__ array (one slot per warp): lane 0 of each warp writes, and the
// first use of the value runs one __syncthreads() and has every thread
// combine its row's slots. Reductions pending at the
// same time share one barrier; each Reduce owns its slots, so no barrier is
// needed against reuse. x-level Stores are done by thread 0 of the row.
//
// Index arithmetic is 32-bit when every index (and sub-expression) and every
// size stays below 2^31 with a margin, else 64-bit. Floor division and modulo
// of possibly negative index values use helpers with floor semantics.
//
// Numerics follow docs/loop-ir-semantics.md: f16/bf16 are computed in f32
// (loaded lane arrays stay 16-bit until used; widened by cvt for f16, by a
// shift for bf16; rounded to nearest even by cvt, in pairs for vector stores,
// NaN stays NaN), integer arithmetic wraps (done in unsigned), integer
// division by zero gives 0, Max/Min propagate NaN.
#include "codegen/cuda_emitter.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace dv::codegen {

using ir::DType;
using ir::IndexExpr;
using ir::Instr;
using ir::Kernel;
using ir::PrimOp;
using ir::ReduceOp;
using ir::ValueId;

namespace {

// Size arguments (DeviceSpec::size_arguments): where the size table's type
// and the entry's name go once the text is complete.
constexpr const char* kSizeTablePlaceholder = "@@dv_size_table@@";
constexpr const char* kEntryPlaceholder = "dv_entry_placeholder";

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

std::uint64_t fnv1a64(const std::string& text) {
  std::uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : text) h = (h ^ c) * 1099511628211ULL;
  return h;
}

std::string hex64(std::uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}


// ---------------------------------------------------------------------------
// Small utilities

template <typename... A>
std::string cat(const A&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  return os.str();
}

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

// Indented source text.
class Writer {
 public:
  void line(const std::string& s) {
    if (s.empty()) {
      out_ << '\n';
      return;
    }
    out_ << std::string(static_cast<std::size_t>(indent_) * 2, ' ') << s << '\n';
  }
  void open(const std::string& s) {  // "s {" (or a bare "{") and indent
    line(s.empty() ? "{" : s + " {");
    ++indent_;
  }
  void otherwise() {  // "} else {"
    --indent_;
    line("} else {");
    ++indent_;
  }
  void close(const std::string& tail = "") {
    --indent_;
    line("}" + tail);
  }
  // A fully unrolled counted loop: "#pragma unroll" + "for (int var = from; var < to; ++var) {".
  void open_unrolled(const std::string& var, std::int64_t from, std::int64_t to) {
    line("#pragma unroll");
    open(cat("for (int ", var, " = ", from, "; ", var, " < ", to, "; ++", var, ")"));
  }
  std::string str() const { return out_.str(); }

 private:
  std::ostringstream out_;
  int indent_ = 0;
};

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

struct LaneForm {
  std::int64_t stride = 0;
  std::int64_t div = 0;
};

struct LaneContext {
  std::string lane;  // the lane variable
  std::int64_t width = 1;
};

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

using VarMap = std::function<std::string(const std::string& name)>;
// How an index's integer constants are written: literals, or (size
// arguments) references to the kernel's size table.
using ConstMap = std::function<std::string(std::int64_t value)>;

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
  }
  fail("unknown index expression kind");
}

// Visits e and all of its sub-expressions.
void for_each_subexpr(const IndexExpr& e, const std::function<void(const IndexExpr&)>& f) {
  f(e);
  using K = IndexExpr::Kind;
  if (e.kind() == K::Add || e.kind() == K::Mul || e.kind() == K::FloorDiv || e.kind() == K::Mod)
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

// ---------------------------------------------------------------------------
// A segment: the code region over which lane arrays are defined.

struct Segment {
  enum class Mask { None, LastChunk, Every };
  int nchunk = 1;                 // chunks in each lane array
  int width = 1;                  // W: lanes per chunk
  std::string base;               // C variable: the lane variable at chunk 0, lane 0
  std::int64_t chunk_stride = 0;  // lane-variable distance between consecutive chunks
  Mask mask = Mask::None;         // which chunks may lie past `limit`
  std::string limit;              // lanes >= limit are outside the iteration space
  std::string store_guard;        // extra condition for stores (e.g. "row_ok"), or ""
  std::string lane_var;           // "x" (pointwise) or "r" (row kernels)
  int size() const { return nchunk * width; }
};

// ---------------------------------------------------------------------------
// The emitter

struct RowLayout;  // how a row kernel's threads cover its rows (see emit_rows)

class Emitter {
 public:
  Emitter(const Kernel& k, const DeviceSpec& d) : k_(k), dev_(d) {}
  CudaKernel run();

 private:
  // Analysis.
  void validate() const;
  void analyze();
  bool needs_64bit() const;
  int max_lane_access_bytes() const;
  bool has_lane_values(int bytes) const;
  std::vector<int> pass_of_values(int* num_passes, int* max_carried) const;

  // Emission of values.
  std::string name(ValueId id) const;
  std::string ref(ValueId id, const std::string& k) const;  // operand reference at array element k
  DType arg_type(const Instr& in, int i) const { return k_.body[in.args[i]].dtype; }
  std::string op_expr(const Instr& in, const std::vector<std::string>& a) const;
  bool is_constant_one(ValueId v) const;
  std::string cast_expr(DType from, DType to, const std::string& a) const;
  std::string load_conv(DType storage, const std::string& e) const;
  std::string gather_expr(const Instr& in, const std::string& index, const std::string& k) const;
  std::string store_conv(DType value, DType storage, const std::string& e) const;
  std::string scatter_store(const Instr& in, const std::string& index, const std::string& k) const;
  std::string buf(int b) const { return cat("b", b, "_", c_identifier(k_.buffers[b].name)); }
  std::string scalar_index(const IndexExpr& e) const;
  std::int64_t layout_xnumel() const;
  ConstMap size_text() const;
  std::string size_ll(std::int64_t value) const;
  std::string checked_address(const Instr& in, const std::string& index, const std::string& k) const;
  void emit_size_constant(const std::string& name, std::int64_t value);
  CudaKernel with_size_arguments(CudaKernel k) const;
  std::string lane_index(const IndexExpr& e, const Segment& s, const std::string& lane_value) const;
  LaneAccess access_kind(const Instr& in, const Segment& s) const;
  std::string chunk_valid(const Segment& s) const;
  void begin_chunk_loop(const Segment& s, bool need_l0 = true);

  void use_operands(const Instr& in);  // flushes pending reductions the instruction reads
  void emit_scalar(ValueId id, const std::string& store_guard);
  void emit_lanes(ValueId id, const Segment& s);
  void emit_lane_list(const std::vector<ValueId>& ids, const Segment& s);
  std::string row_load_call(ValueId id, const Segment& s, const std::string& ptr) const;
  void emit_elementwise_run(const std::vector<ValueId>& ids, const Segment& s);
  void emit_lane_load(ValueId id, const Segment& s);
  void emit_lane_gather(ValueId id, const Segment& s);
  void emit_lane_store(ValueId id, const Segment& s);
  void emit_lane_scatter(ValueId id, const Segment& s);
  bool packs_halves(DType value, DType storage, int width) const;
  void emit_packed_half_store(const Instr& in, const Segment& s);
  void emit_lane_index(ValueId id, const Segment& s);
  void emit_reduce_init(ValueId id, const std::string& acc, int width);
  void emit_reduce_accumulate(ValueId id, const Segment& s, const std::string& acc);
  void emit_reduce_finish(ValueId id, const std::string& acc, int width);
  void emit_fold_lanes(ReduceOp op, DType t, const std::string& acc, int width);
  void emit_butterfly(ReduceOp op, DType t, const std::vector<std::string>& vars, int group);
  void emit_slot_combine(ReduceOp op, DType t, const std::string& var, bool declare, const std::string& array, int parts,
                         const std::function<std::string(const std::string&)>& slot);
  void flush_reductions();
  ValueId resolve(ValueId id) const;
  ValueId squared_deviation_source(ValueId sq_sum) const;
  void find_moment_pairs(const Segment& s, bool persistent, std::int64_t steps);
  void emit_moments(ValueId sum, ValueId sq_sum, const Segment& s);
  void emit_thread_moments(ValueId x, const std::string& pivot, const Segment& s);
  void emit_moments_combine(ValueId sum, ValueId sq_sum);
  void emit_looped_moments_start(ValueId sum);
  void emit_looped_moments_step(ValueId sum, const Segment& s);
  void emit_looped_moments_finish(ValueId sum, int width);
  void emit_moments_flush(ValueId sq_sum, int parts, const std::function<std::string(const std::string&)>& slot);
  bool has_row_start_value(ValueId id, int budget) const;
  std::string row_start_value(ValueId id);

  // Kernels.
  void emit_prelude_and_constants(const std::string& strategy);
  std::string signature(int threads) const;
  void emit_empty();
  void emit_pointwise();
  void emit_rows();
  bool prefers_col_major() const;
  bool writes_rows() const;  // some live r-level Store
  bool prefers_one_looped_step(std::int64_t chunks, int vec, std::int64_t widest_tpr) const;
  void emit_rows_kernel(const RowLayout& L, Segment s, const std::vector<int>& pass, int num_passes);
  void emit_rows_persistent(const Segment& s, const std::vector<int>& pass);
  void emit_rows_looped(Segment s, std::int64_t outer, const std::vector<int>& pass,
                        const std::vector<std::vector<char>>& needs);
  std::vector<char> lanes_needed_by_pass(const std::vector<int>& pass, int p) const;
  void set_row_load_hints(const std::vector<std::vector<char>>& needs, int p);

  const Kernel& k_;
  const DeviceSpec& dev_;
  Writer w_;
  std::string entry_;
  // Size arguments (DeviceSpec::size_arguments): the table's values, and the
  // entry of each value.
  mutable std::vector<std::int64_t> size_args_;
  mutable std::map<std::int64_t, int> size_slot_;
  LaunchConfig launch_;
  bool idx64_ = false;

  std::vector<char> live_;   // contributes to a Store
  std::vector<char> lanes_;  // a lane array (else a scalar)
  std::vector<ValueId> alias_;  // a value that is another one (Reduce with rnumel == 1), or -1
  // Lane arrays of f16/bf16 loads kept as loaded (two to a register) and
  // converted where used: bf16 layer_norm needed 64 registers a thread with
  // its row, weight and bias converted on load, 48 this way.
  std::vector<char> raw_half_;
  bool rows_ = false;           // row kernel (rnumel > 1)

  // Row-kernel layout.
  int tpr_ = 1, rpb_ = 1, threads_ = 32;
  bool col_major_ = false;
  bool loads_once_ = false;  // a row kernel that writes no row: its rows' 16-byte loads skip L1
  // Looped rows: per Load, the cache hint of its 16-byte row loads in the pass being written.
  enum class RowLoadHint { None, Keep, Last };
  std::vector<RowLoadHint> row_load_hint_;
  std::vector<ValueId> pending_;  // reductions written to shared memory, not yet read back
  // One-pass variance (persistent rows, looped rows of one step): for a sum R1, the R2 =
  // sum((x - R1/N)^2) computed with it, or -1; for such an R2, its R1, or -1.
  std::vector<ValueId> sq_sum_of_, sum_of_sq_;
  int moments_per_thread_ = 0;  // K: elements each thread holds (all valid)
  std::vector<std::string> row_start_;  // row_start_value's memo: emitted scalar names
};

// ---- analysis --------------------------------------------------------------

void Emitter::validate() const {
  if (k_.xnumel < 0 || k_.rnumel < 0) fail("negative iteration space");
  for (std::size_t i = 0; i < k_.body.size(); ++i) {
    const Instr& in = k_.body[i];
    for (ValueId a : in.args)
      if (a < 0 || static_cast<std::size_t>(a) >= i) fail(cat("instruction %", i, " uses %", a, " before it is defined"));
    if (static_cast<int>(in.args.size()) != in.operand_count())
      fail(cat("instruction %", i, " has ", in.args.size(), " operands"));
    if (in.indirect && k_.body[in.offset_arg()].dtype != DType::Int32 && k_.body[in.offset_arg()].dtype != DType::Int64)
      fail(cat("instruction %", i, ": the offset is not an integer"));
    if (in.masked && k_.body[in.mask_arg()].dtype != DType::Bool) fail(cat("instruction %", i, ": the mask is not Bool"));
    if ((in.op == PrimOp::Load || in.op == PrimOp::Store) &&
        (in.buffer < 0 || static_cast<std::size_t>(in.buffer) >= k_.buffers.size()))
      fail(cat("instruction %", i, " names buffer ", in.buffer));
    if (in.op != PrimOp::Store) ctype(in.dtype);  // throws for storage-only dtypes
    if (in.accumulate && (k_.buffers[in.buffer].dtype == DType::Bool || in.dtype != ir::compute_dtype(k_.buffers[in.buffer].dtype)))
      fail(cat("instruction %", i, ": an accumulating store of ", ir::dtype_name(in.dtype), " into ",
               ir::dtype_name(k_.buffers[in.buffer].dtype)));
  }
}

void Emitter::analyze() {
  const std::size_t n = k_.body.size();
  rows_ = k_.rnumel > 1;
  alias_.assign(n, -1);
  raw_half_.assign(n, 0);
  live_.assign(n, 0);
  lanes_.assign(n, 0);
  // Liveness: backwards from the Stores. With rnumel == 0 a Reduce is its
  // identity and does not need its operand.
  for (std::size_t i = n; i-- > 0;) {
    const Instr& in = k_.body[i];
    if (in.op == PrimOp::Store) live_[i] = 1;
    if (!live_[i]) continue;
    if (in.op == PrimOp::Reduce && k_.rnumel == 0) continue;
    for (ValueId a : in.args) live_[a] = 1;
  }
  // Lane arrays: values that vary with the lane variable.
  const std::string lane = rows_ ? "r" : "x";
  for (std::size_t i = 0; i < n; ++i) {
    const Instr& in = k_.body[i];
    if (in.op == PrimOp::Reduce) {
      if (!rows_ && k_.rnumel == 1) {
        alias_[i] = in.args[0];  // a reduction over one element is that element
        lanes_[i] = lanes_[in.args[0]];
      }
      continue;  // a row reduction is x-level; with rnumel == 0 it is a constant
    }
    bool varies = (in.op == PrimOp::Index || in.op == PrimOp::Load || in.op == PrimOp::Store) && in.index.uses_var(lane);
    for (ValueId a : in.args) varies = varies || lanes_[a];
    lanes_[i] = varies;
  }
}

bool Emitter::needs_64bit() const {
  // A margin for the lanes of masked chunks and rows, which compute (but never
  // use) indices a little past the iteration space.
  constexpr std::int64_t kLimit = (std::int64_t{1} << 31) - (std::int64_t{1} << 22);
  const std::int64_t r = std::max<std::int64_t>(1, k_.rnumel);
  if (k_.xnumel >= kLimit || r >= kLimit || k_.xnumel * r >= kLimit) return true;
  for (const auto& b : k_.buffers)
    if (b.numel >= kLimit) return true;
  bool big = false;
  for (std::size_t i = 0; i < k_.body.size(); ++i) {
    const Instr& in = k_.body[i];
    if (!live_[i] || !(in.op == PrimOp::Index || in.op == PrimOp::Load || in.op == PrimOp::Store)) continue;
    for_each_subexpr(in.index, [&](const IndexExpr& e) {
      if (e.max_value() >= kLimit || e.min_value() <= -kLimit) big = true;
    });
  }
  return big;
}

// The widest storage element among the buffers accessed by lane-varying Loads and Stores.
int Emitter::max_lane_access_bytes() const {
  int bytes = 0;
  for (std::size_t i = 0; i < k_.body.size(); ++i) {
    const Instr& in = k_.body[i];
    if (!live_[i] || !lanes_[i] || !(in.op == PrimOp::Load || in.op == PrimOp::Store)) continue;
    bytes = std::max(bytes, ir::dtype_size(k_.buffers[in.buffer].dtype));
  }
  return bytes;
}

bool Emitter::has_lane_values(int bytes) const {
  for (std::size_t i = 0; i < k_.body.size(); ++i)
    if (live_[i] && lanes_[i] && k_.body[i].op != PrimOp::Store && compute_size(k_.body[i].dtype) == bytes) return true;
  return false;
}

// Pass numbers for row kernels. For a lane value: the pass that computes it;
// for a scalar: the pass from whose start on it is available (a Reduce of a
// value computed in pass p is available from pass p+1). Also counts the most
// lane arrays that live across one pass boundary.
std::vector<int> Emitter::pass_of_values(int* num_passes, int* max_carried) const {
  const std::size_t n = k_.body.size();
  std::vector<int> pass(n, 0), last_use(n, -1);
  int passes = 1;
  for (std::size_t i = 0; i < n; ++i) {
    if (!live_[i]) continue;
    const Instr& in = k_.body[i];
    int p = 0;
    for (ValueId a : in.args) p = std::max(p, pass[a]);
    if (in.op == PrimOp::Reduce) {
      passes = std::max(passes, p + 1);
      pass[i] = p + 1;
    } else {
      pass[i] = p;
      if (lanes_[i]) passes = std::max(passes, p + 1);
    }
    if (lanes_[i] || in.op == PrimOp::Reduce)
      for (ValueId a : in.args)
        if (lanes_[a]) last_use[a] = std::max(last_use[a], pass[i] - (in.op == PrimOp::Reduce ? 1 : 0));
  }
  int carried = 0;
  for (int b = 0; b + 1 < passes; ++b) {
    int c = 0;
    for (std::size_t i = 0; i < n; ++i)
      if (live_[i] && lanes_[i] && pass[i] <= b && last_use[i] > b) ++c;
    carried = std::max(carried, c);
  }
  *num_passes = passes;
  *max_carried = carried;
  return pass;
}

// ---- values ------------------------------------------------------------------

// The value an alias stands for (itself if none).
ValueId Emitter::resolve(ValueId id) const {
  while (alias_[id] >= 0) id = alias_[id];
  return id;
}

std::string Emitter::name(ValueId id) const { return cat("v", resolve(id)); }

std::string Emitter::ref(ValueId id, const std::string& k) const {
  id = resolve(id);
  if (!lanes_[id]) return cat("v", id);
  if (raw_half_[id]) return load_conv(k_.buffers[k_.body[id].buffer].dtype, cat("v", id, "[", k, "]"));
  return cat("v", id, "[", k, "]");
}

std::string Emitter::cast_expr(DType from, DType to, const std::string& a) const {
  if (from == to) return a;
  if (to == DType::Bool) return cat("(", a, " != ", zero_of(from), ")");
  return cat("((", ctype(to), ")", a, ")");
}

std::string Emitter::load_conv(DType storage, const std::string& e) const {
  if (storage == DType::Float16) return "dv_f16_to_f32(" + e + ")";
  if (storage == DType::BFloat16) return "dv_bf16_to_f32(" + e + ")";
  return e;
}

std::string Emitter::store_conv(DType value, DType storage, const std::string& e) const {
  if (is_half(storage)) {
    const std::string to = storage == DType::Float16 ? "f16" : "bf16";
    if (value == DType::Float64) return cat("dv_f64_to_", to, "(", e, ")");
    return cat("dv_f32_to_", to, "(", cast_expr(value, DType::Float32, e), ")");
  }
  return cast_expr(value, storage, e);
}

bool Emitter::is_constant_one(ValueId v) const {
  const Instr& c = k_.body[v];
  return c.op == PrimOp::Constant && is_float(c.dtype) && c.fvalue == 1.0;
}

std::string Emitter::op_expr(const Instr& in, const std::vector<std::string>& a) const {
  const DType t = in.args.empty() ? in.dtype : arg_type(in, in.op == PrimOp::Where ? 1 : 0);
  const bool f = is_float(t), f32 = t == DType::Float32, b = t == DType::Bool;
  auto fn = [&](const char* name32, const char* name64) -> std::string {
    if (!f) fail(cat(ir::prim_op_name(in.op), " on ", ir::dtype_name(t)));
    return cat(f32 ? name32 : name64, "(", a[0], ")");
  };
  auto bin = [&](const char* c_op) { return cat("(", a[0], " ", c_op, " ", a[1], ")"); };
  switch (in.op) {
    case PrimOp::Neg: return f ? "(-" + a[0] + ")" : b ? a[0] : "dv_neg(" + a[0] + ")";
    case PrimOp::Abs: return f ? fn("fabsf", "fabs") : b ? a[0] : "dv_abs(" + a[0] + ")";
    case PrimOp::Exp: return fn("expf", "exp");
    case PrimOp::Exp2: return fn("exp2f", "exp2");
    case PrimOp::Log: return fn("logf", "log");
    case PrimOp::Log1p: return fn("log1pf", "log1p");
    case PrimOp::Sqrt: return fn("sqrtf", "sqrt");
    case PrimOp::Rsqrt: return cat(f32 ? "__frcp_rn(" : "__drcp_rn(", fn("sqrtf", "sqrt"), ")");
    case PrimOp::Sin: return fn("sinf", "sin");
    case PrimOp::Cos: return fn("cosf", "cos");
    case PrimOp::Tanh: return fn("tanhf", "tanh");
    case PrimOp::Erf: return fn("erff", "erf");
    case PrimOp::Floor: return f ? fn("floorf", "floor") : a[0];
    case PrimOp::Ceil: return f ? fn("ceilf", "ceil") : a[0];
    case PrimOp::Round: return f ? fn("rintf", "rint") : a[0];
    case PrimOp::Trunc: return f ? fn("truncf", "trunc") : a[0];
    case PrimOp::LogicalNot: return b ? "(!" + a[0] + ")" : cat("(", a[0], " == ", zero_of(t), ")");
    case PrimOp::IsNan: return f ? cat("(", a[0], " != ", a[0], ")") : "false";
    case PrimOp::Cast: return cast_expr(t, in.dtype, a[0]);
    case PrimOp::Add:
      if (b) return bin("||");
      return f ? bin("+") : cat("dv_add(", a[0], ", ", a[1], ")");
    case PrimOp::Sub:
      if (b) return bin("!=");
      return f ? bin("-") : cat("dv_sub(", a[0], ", ", a[1], ")");
    case PrimOp::Mul:
      if (b) return bin("&&");
      return f ? bin("*") : cat("dv_mul(", a[0], ", ", a[1], ")");
    case PrimOp::Div:
      if (b) fail("div on b8");
      // 1/x as a correctly rounded reciprocal: the same value as IEEE division,
      // in fewer instructions (sigmoid, reciprocal).
      if (f && is_constant_one(in.args[0])) return cat(f32 ? "__frcp_rn(" : "__drcp_rn(", a[1], ")");
      return f ? bin("/") : cat("dv_div(", a[0], ", ", a[1], ")");
    case PrimOp::FloorDiv:
      if (b) fail("floordiv on b8");
      return f ? cat(f32 ? "floorf(" : "floor(", a[0], " / ", a[1], ")") : cat("dv_floordiv(", a[0], ", ", a[1], ")");
    case PrimOp::Mod:
      if (b) fail("mod on b8");
      return f ? cat("dv_fmod(", a[0], ", ", a[1], ")") : cat("dv_mod(", a[0], ", ", a[1], ")");
    case PrimOp::Pow:
      if (b) fail("pow on b8");
      return f ? cat(f32 ? "powf(" : "pow(", a[0], ", ", a[1], ")") : cat("dv_ipow(", a[0], ", ", a[1], ")");
    case PrimOp::Maximum: return b ? bin("||") : cat("dv_max(", a[0], ", ", a[1], ")");
    case PrimOp::Minimum: return b ? bin("&&") : cat("dv_min(", a[0], ", ", a[1], ")");
    case PrimOp::Eq: return bin("==");
    case PrimOp::Ne: return bin("!=");
    case PrimOp::Lt: return bin("<");
    case PrimOp::Le: return bin("<=");
    case PrimOp::Gt: return bin(">");
    case PrimOp::Ge: return bin(">=");
    case PrimOp::LogicalAnd:
    case PrimOp::LogicalOr:
    case PrimOp::LogicalXor: {
      const std::string x = cast_expr(t, DType::Bool, a[0]), y = cast_expr(t, DType::Bool, a[1]);
      const char* c_op = in.op == PrimOp::LogicalAnd ? " && " : in.op == PrimOp::LogicalOr ? " || " : " != ";
      return cat("(", x, c_op, y, ")");
    }
    case PrimOp::Where: return cat("(", a[0], " ? ", a[1], " : ", a[2], ")");
    default: break;
  }
  fail(cat("op_expr: unexpected ", ir::prim_op_name(in.op)));
}

// ---- indices -------------------------------------------------------------------

// An index where every variable is a thread-uniform scalar (x is the variable
// "x"; r only occurs in row kernels' lane code).
std::string Emitter::scalar_index(const IndexExpr& e) const {
  return index_c(e, [](const std::string& v) { return v; }, size_text());
}

// An index in lane code: the lane variable is `lane_value`, x (in row kernels) is "x".
std::string Emitter::lane_index(const IndexExpr& e, const Segment& s, const std::string& lane_value) const {
  return index_c(e, [&](const std::string& v) { return v == s.lane_var ? lane_value : v; }, size_text());
}

LaneAccess Emitter::access_kind(const Instr& in, const Segment& s) const {
  const auto& b = k_.buffers[in.buffer];
  const int bytes = ir::dtype_size(b.dtype) * s.width;
  const LaneAccess a = classify(in.index, LaneContext{s.lane_var, s.width});
  if (s.width == 1) return LaneAccess::Uniform;  // one lane: a plain scalar access
  // Vector accesses need an aligned buffer and a power-of-two width of at most 16 bytes.
  if (a == LaneAccess::Contiguous && !(b.aligned16 && bytes <= 16 && (bytes & (bytes - 1)) == 0))
    return LaneAccess::Other;
  if (a == LaneAccess::Uniform && in.op == PrimOp::Store) return LaneAccess::Other;  // keep lane order
  return a;
}

std::string Emitter::chunk_valid(const Segment& s) const {
  switch (s.mask) {
    case Segment::Mask::None: return "";
    case Segment::Mask::LastChunk: return cat("c < ", s.nchunk - 1, " || l0 < ", s.limit);
    case Segment::Mask::Every: return "l0 < " + s.limit;
  }
  return "";
}

void Emitter::begin_chunk_loop(const Segment& s, bool need_l0) {
  w_.open_unrolled("c", 0, s.nchunk);
  if (!need_l0) return;
  if (s.nchunk == 1) {
    w_.line("const idx_t l0 = " + s.base + ";");
  } else {
    w_.line(cat("const idx_t l0 = ", s.base, " + c * ", idx_literal(s.chunk_stride), ";"));
  }
}

// ---- instructions --------------------------------------------------------------

void Emitter::use_operands(const Instr& in) {
  for (ValueId a : in.args)
    if (std::find(pending_.begin(), pending_.end(), a) != pending_.end()) {
      flush_reductions();
      return;
    }
}

void Emitter::emit_scalar(ValueId id, const std::string& store_guard) {
  const Instr& in = k_.body[id];
  use_operands(in);
  const std::string v = name(id);
  const std::string T = in.op == PrimOp::Store ? "" : ctype(in.dtype);
  switch (in.op) {
    case PrimOp::Constant:
      w_.line(cat("const ", T, " ", v, " = ",
                  is_float(in.dtype) ? float_literal(in.fvalue, in.dtype) : int_literal(in.ivalue, in.dtype), ";"));
      return;
    case PrimOp::Index:
      w_.line(cat("const ", T, " ", v, " = (", T, ")", scalar_index(in.index), ";"));
      return;
    case PrimOp::Load: {
      const auto& b = k_.buffers[in.buffer];
      if (in.indirect || in.masked) {
        w_.line(cat("const ", T, " ", v, " = ", gather_expr(in, scalar_index(in.index), "0"), ";"));
        return;
      }
      if (b.numel == 0) {  // nothing to read (only in empty iteration spaces)
        w_.line(cat("const ", T, " ", v, " = ", zero_of(in.dtype), ";"));
        return;
      }
      w_.line(cat("const ", T, " ", v, " = ", load_conv(b.dtype, buf(in.buffer) + "[" + scalar_index(in.index) + "]"),
                  ";"));
      return;
    }
    case PrimOp::Store: {
      const auto& b = k_.buffers[in.buffer];
      const std::string st = in.indirect || in.accumulate
                                 ? scatter_store(in, scalar_index(in.index), "0")
                                 : cat(buf(in.buffer), "[", scalar_index(in.index), "] = ",
                                       store_conv(in.dtype, b.dtype, ref(in.args[0], "0")), ";");
      w_.line(store_guard.empty() ? st : cat("if (", store_guard, ") ", st));
      return;
    }
    case PrimOp::Reduce:
      if (alias_[id] >= 0) return;
      // rnumel == 0: the reduction of no elements.
      w_.line(cat("const ", T, " ", v, " = ", reduce_identity(in.reduce, in.dtype), ";"));
      return;
    default: {
      std::vector<std::string> a;
      for (ValueId x : in.args) a.push_back(ref(x, "0"));
      w_.line(cat("const ", T, " ", v, " = ", op_expr(in, a), ";"));
      return;
    }
  }
}

bool is_elementwise(PrimOp op) {
  return op != PrimOp::Load && op != PrimOp::Store && op != PrimOp::Index && op != PrimOp::Reduce;
}

void Emitter::emit_lanes(ValueId id, const Segment& s) {
  const Instr& in = k_.body[id];
  use_operands(in);
  switch (in.op) {
    case PrimOp::Load: emit_lane_load(id, s); return;
    case PrimOp::Store: emit_lane_store(id, s); return;
    case PrimOp::Index: emit_lane_index(id, s); return;
    case PrimOp::Reduce: return;  // an alias (rnumel == 1)
    default: emit_elementwise_run({id}, s); return;
  }
}

// Lane instructions in order; consecutive elementwise ones share one loop.
void Emitter::emit_lane_list(const std::vector<ValueId>& ids, const Segment& s) {
  std::vector<ValueId> run;
  for (ValueId id : ids) {
    if (is_elementwise(k_.body[id].op)) {
      run.push_back(id);
      continue;
    }
    if (!run.empty()) emit_elementwise_run(run, s);
    run.clear();
    emit_lanes(id, s);
  }
  if (!run.empty()) emit_elementwise_run(run, s);
}

void Emitter::emit_elementwise_run(const std::vector<ValueId>& ids, const Segment& s) {
  for (ValueId id : ids) use_operands(k_.body[id]);
  // Declarations, one line per dtype.
  for (DType t : {DType::Bool, DType::Int32, DType::Int64, DType::Float32, DType::Float64}) {
    std::string decl;
    for (ValueId id : ids)
      if (k_.body[id].dtype == t) decl += cat(decl.empty() ? "" : ", ", name(id), "[", s.size(), "]");
    if (!decl.empty()) w_.line(ctype(t) + " " + decl + ";");
  }
  w_.open_unrolled("k", 0, s.size());
  for (ValueId id : ids) {
    const Instr& in = k_.body[id];
    std::vector<std::string> a;
    for (ValueId x : in.args) a.push_back(ref(x, "k"));
    w_.line(cat(name(id), "[k] = ", op_expr(in, a), ";"));
  }
  w_.close();
}

// A contiguous lane load through ptr, with the cache policy its row reads call for.
std::string Emitter::row_load_call(ValueId id, const Segment& s, const std::string& ptr) const {
  const Instr& in = k_.body[id];
  const bool row_chunk = in.index.uses_var("x") && ir::dtype_size(k_.buffers[in.buffer].dtype) * s.width == 16;
  if (!row_chunk) return "*" + ptr;
  const RowLoadHint hint = row_load_hint_.empty() ? RowLoadHint::None : row_load_hint_[id];
  if (hint != RowLoadHint::None) {
    const char* suffix = dev_.row_loop_hints == 2 ? "_l2" : dev_.row_loop_hints == 1 ? "_l1" : "";
    return cat(hint == RowLoadHint::Keep ? "dv_load_keep" : "dv_load_last", suffix, "(", ptr, ")");
  }
  if (loads_once_) return "dv_load_once(" + ptr + ")";
  return "*" + ptr;
}

// The element an indirect access reaches at lane element k: `index` plus its
// offset, checked against the offset's extent first; a direct access, `index`.
std::string Emitter::checked_address(const Instr& in, const std::string& index, const std::string& k) const {
  if (!in.indirect) return index;
  return cat(index, " + dv_checked((long long)", ref(in.offset_arg(), k), ", ", size_ll(in.offset_extent), ") * ",
             size_ll(in.offset_stride));
}

// A gather's value at lane element k, its symbolic index written as `index`:
// the mask decides (C's ?: evaluates one side only) before any address is
// formed, then the offset is checked.
std::string Emitter::gather_expr(const Instr& in, const std::string& index, const std::string& k) const {
  const auto& b = k_.buffers[in.buffer];
  const std::string address = checked_address(in, index, k);
  const std::string read = load_conv(b.dtype, cat(buf(in.buffer), "[", address, "]"));
  if (!in.masked) return read;
  const std::string other = is_float(in.dtype) ? float_literal(in.fvalue, in.dtype) : int_literal(in.ivalue, in.dtype);
  return cat("(", ref(in.mask_arg(), k), " ? ", read, " : ", other, ")");
}

// Per-lane scalar reads: a gather's address depends on values, so it is
// never a vector access nor one broadcast read.
void Emitter::emit_lane_gather(ValueId id, const Segment& s) {
  const Instr& in = k_.body[id];
  const std::string v = name(id);
  const std::string valid = chunk_valid(s);
  raw_half_[id] = 0;
  w_.line(cat(ctype(in.dtype), " ", v, "[", s.size(), "];  // gathered lane by lane"));
  begin_chunk_loop(s);
  if (!valid.empty()) w_.open("if (" + valid + ")");
  w_.open_unrolled("v", 0, s.width);
  const std::string k = cat("c * ", s.width, " + v");
  w_.line(cat(v, "[", k, "] = ", gather_expr(in, lane_index(in.index, s, "(l0 + v)"), k), ";"));
  w_.close();
  if (!valid.empty()) {
    w_.otherwise();
    w_.line("// past the end of the row: defined but never used");
    w_.open_unrolled("v", 0, s.width);
    w_.line(cat(v, "[", k, "] = ", zero_of(in.dtype), ";"));
    w_.close();
    w_.close();
  }
  w_.close();
}

void Emitter::emit_lane_load(ValueId id, const Segment& s) {
  const Instr& in = k_.body[id];
  if (in.indirect || in.masked) return emit_lane_gather(id, s);
  const auto& b = k_.buffers[in.buffer];
  const std::string v = name(id), T = ctype(in.dtype), ST = stype(b.dtype), p = buf(in.buffer);
  const LaneAccess kind = access_kind(in, s);
  const std::string valid = chunk_valid(s);
  const bool raw = kind == LaneAccess::Contiguous && is_half(b.dtype) && in.dtype == DType::Float32;
  raw_half_[id] = raw;
  w_.line(cat(raw ? ST : T, " ", v, "[", s.size(), "];", raw ? "  // as stored; converted where used" : ""));
  begin_chunk_loop(s);
  if (!valid.empty()) w_.open("if (" + valid + ")");
  switch (kind) {
    case LaneAccess::Contiguous: {
      const std::string vec = cat("dv_vec<", ST, ", ", s.width, ">");
      const std::string ptr = cat("reinterpret_cast<const ", vec, "*>(", p, " + ", lane_index(in.index, s, "l0"), ")");
      w_.line(cat("const ", vec, " w = ", row_load_call(id, s, ptr), ";"));
      w_.open_unrolled("v", 0, s.width);
      w_.line(cat(v, "[c * ", s.width, " + v] = ", raw ? "w.e[v]" : load_conv(b.dtype, "w.e[v]"), ";"));
      w_.close();
      break;
    }
    case LaneAccess::Uniform:
      if (s.width == 1) {
        w_.line(cat(v, "[c] = ", load_conv(b.dtype, p + "[" + lane_index(in.index, s, "l0") + "]"), ";"));
        break;
      }
      w_.line(cat("const ", T, " u = ", load_conv(b.dtype, p + "[" + lane_index(in.index, s, "l0") + "]"), ";"));
      w_.open_unrolled("v", 0, s.width);
      w_.line(cat(v, "[c * ", s.width, " + v] = u;"));
      w_.close();
      break;
    case LaneAccess::Other:
      w_.open_unrolled("v", 0, s.width);
      w_.line(cat(v, "[c * ", s.width, " + v] = ",
                  load_conv(b.dtype, p + "[" + lane_index(in.index, s, "(l0 + v)") + "]"), ";"));
      w_.close();
      break;
  }
  if (!valid.empty()) {
    w_.otherwise();
    w_.line("// past the end of the row: defined but never used");
    w_.open_unrolled("v", 0, s.width);
    w_.line(cat(v, "[c * ", s.width, " + v] = ", raw ? "0" : zero_of(in.dtype), ";"));
    w_.close();
    w_.close();
  }
  w_.close();
}

// A scatter's write at lane element k, its symbolic index written as
// `index`: the offset is checked (as a gather's) before the address is formed;
// an accumulating store adds atomically.
std::string Emitter::scatter_store(const Instr& in, const std::string& index, const std::string& k) const {
  const auto& b = k_.buffers[in.buffer];
  const std::string address = checked_address(in, index, k);
  const std::string element = cat(buf(in.buffer), "[", address, "]");
  if (!in.accumulate) return cat(element, " = ", store_conv(in.dtype, b.dtype, ref(in.args[0], k)), ";");
  const std::string add = b.dtype == DType::Float16 ? "dv_atomic_add_f16" : b.dtype == DType::BFloat16 ? "dv_atomic_add_bf16" : "dv_atomic_add";
  return cat(add, "(&", element, ", ", ref(in.args[0], k), ");");
}

// Per-lane scalar writes: a scatter's address depends on values (or its
// update must be atomic), so it is never a vector access.
void Emitter::emit_lane_scatter(ValueId id, const Segment& s) {
  const Instr& in = k_.body[id];
  std::string guard = chunk_valid(s);
  if (!s.store_guard.empty()) guard = guard.empty() ? s.store_guard : s.store_guard + " && (" + guard + ")";
  begin_chunk_loop(s);
  if (!guard.empty()) w_.open("if (" + guard + ")");
  w_.open_unrolled("v", 0, s.width);
  w_.line(scatter_store(in, lane_index(in.index, s, "(l0 + v)"), cat("c * ", s.width, " + v")));
  w_.close();
  if (!guard.empty()) w_.close();
  w_.close();
}

void Emitter::emit_lane_store(ValueId id, const Segment& s) {
  const Instr& in = k_.body[id];
  if (in.indirect || in.accumulate) return emit_lane_scatter(id, s);
  const auto& b = k_.buffers[in.buffer];
  const std::string ST = stype(b.dtype), p = buf(in.buffer);
  const LaneAccess kind = access_kind(in, s);
  std::string guard = chunk_valid(s);
  if (!s.store_guard.empty()) guard = guard.empty() ? s.store_guard : s.store_guard + " && (" + guard + ")";
  auto value = [&](const std::string& k) { return store_conv(in.dtype, b.dtype, ref(in.args[0], k)); };
  begin_chunk_loop(s);
  if (!guard.empty()) w_.open("if (" + guard + ")");
  const std::string k = cat("c * ", s.width, " + v");
  switch (kind) {
    case LaneAccess::Contiguous:
      if (packs_halves(in.dtype, b.dtype, s.width)) {
        emit_packed_half_store(in, s);
        break;
      }
      w_.line(cat("dv_vec<", ST, ", ", s.width, "> w;"));
      w_.open_unrolled("v", 0, s.width);
      w_.line(cat("w.e[v] = ", value(k), ";"));
      w_.close();
      w_.line(cat("*reinterpret_cast<dv_vec<", ST, ", ", s.width, ">*>(", p, " + ", lane_index(in.index, s, "l0"),
                  ") = w;"));
      break;
    case LaneAccess::Uniform:  // width 1 only (see access_kind)
      w_.line(cat(p, "[", lane_index(in.index, s, "l0"), "] = ", value("c"), ";"));
      break;
    case LaneAccess::Other:
      w_.open_unrolled("v", 0, s.width);
      w_.line(cat(p, "[", lane_index(in.index, s, "(l0 + v)"), "] = ", value(k), ";"));
      w_.close();
      break;
  }
  if (!guard.empty()) w_.close();
  w_.close();
}

// A vector store of f32 values into f16/bf16 storage converts them in pairs.
bool Emitter::packs_halves(DType value, DType storage, int width) const {
  return is_half(storage) && value != DType::Float64 && width % 2 == 0;
}

void Emitter::emit_packed_half_store(const Instr& in, const Segment& s) {
  const std::string p = buf(in.buffer);
  const std::string pack = k_.buffers[in.buffer].dtype == DType::Float16 ? "dv_f32x2_to_f16x2" : "dv_f32x2_to_bf16x2";
  auto f32 = [&](const std::string& k) { return cast_expr(in.dtype, DType::Float32, ref(in.args[0], k)); };
  const int pairs = s.width / 2;
  w_.line(cat("dv_vec<unsigned, ", pairs, "> w;"));
  w_.open_unrolled("v", 0, pairs);
  w_.line(cat("w.e[v] = ", pack, "(", f32(cat("c * ", s.width, " + 2 * v")), ", ", f32(cat("c * ", s.width, " + 2 * v + 1")),
              ");"));
  w_.close();
  w_.line(cat("*reinterpret_cast<dv_vec<unsigned, ", pairs, ">*>(", p, " + ", lane_index(in.index, s, "l0"), ") = w;"));
}

void Emitter::emit_lane_index(ValueId id, const Segment& s) {
  const Instr& in = k_.body[id];
  const std::string v = name(id), T = ctype(in.dtype);
  w_.line(cat(T, " ", v, "[", s.size(), "];"));
  begin_chunk_loop(s);
  w_.open_unrolled("v", 0, s.width);
  w_.line(cat(v, "[c * ", s.width, " + v] = (", T, ")", lane_index(in.index, s, "(l0 + v)"), ";"));
  w_.close();
  w_.close();
}

// ---- reductions ----------------------------------------------------------------

void Emitter::emit_reduce_init(ValueId id, const std::string& acc, int width) {
  const Instr& in = k_.body[id];
  w_.line(cat(ctype(in.dtype), " ", acc, "[", width, "];"));
  w_.open_unrolled("v", 0, width);
  w_.line(cat(acc, "[v] = ", reduce_identity(in.reduce, in.dtype), ";"));
  w_.close();
}

// Folds the segment's elements of the operand into per-lane accumulators;
// chunks outside the row contribute nothing.
void Emitter::emit_reduce_accumulate(ValueId id, const Segment& s, const std::string& acc) {
  const Instr& in = k_.body[id];
  const std::string valid = chunk_valid(s);
  begin_chunk_loop(s, !valid.empty());
  if (!valid.empty()) w_.open("if (" + valid + ")");
  w_.open_unrolled("v", 0, s.width);
  w_.line(cat(acc, "[v] = ", reduce_combine(in.reduce, in.dtype, acc + "[v]", ref(in.args[0], cat("c * ", s.width, " + v"))),
              ";"));
  w_.close();
  if (!valid.empty()) w_.close();
  w_.close();
}

// Combines the thread's accumulators, then the row's threads. Leaves the
// result in vN, or (rows spanning several warps) in shared memory, pending.
void Emitter::emit_reduce_finish(ValueId id, const std::string& acc, int width) {
  const Instr& in = k_.body[id];
  const std::string v = name(id);
  emit_fold_lanes(in.reduce, in.dtype, acc, width);
  if (col_major_) {  // a row's threads are in different warps: shared memory only
    if (tpr_ > 1) {
      w_.line(cat("red_", v, "[t * ", rpb_, " + row] = a;"));
      pending_.push_back(id);
    } else {
      w_.line(v + " = a;");
    }
    return;
  }
  emit_butterfly(in.reduce, in.dtype, {"a"}, std::min(tpr_, 32));
  if (tpr_ > 32) {
    w_.line(cat("if (lane == 0) red_", v, "[row * ", tpr_ / 32, " + warp] = a;"));
    pending_.push_back(id);
  } else {
    w_.line(v + " = a;");
  }
}

// `T a` = the thread's per-lane accumulators acc[0..width) combined.
void Emitter::emit_fold_lanes(ReduceOp op, DType t, const std::string& acc, int width) {
  w_.line(cat(ctype(t), " a = ", acc, "[0];"));
  if (width > 1) {
    w_.open_unrolled("v", 1, width);
    w_.line("a = " + reduce_combine(op, t, "a", acc + "[v]") + ";");
    w_.close();
  }
}

// Combines each of `vars` across the `group` lanes of a row (a power of two,
// at most 32), leaving the result in every lane; the variables' exchanges are
// interleaved offset by offset. Every lane must execute every shuffle:
// exchange into a temporary first, then combine (a combine must never decide
// whether a shuffle runs).
void Emitter::emit_butterfly(ReduceOp op, DType t, const std::vector<std::string>& vars, int group) {
  for (int off = group / 2; off >= 1; off /= 2)
    for (const std::string& a : vars)
      w_.line(cat("{ const ", ctype(t), " o = dv_shfl_xor(", a, ", ", off, "); ", a, " = ", reduce_combine(op, t, a, "o"),
                  "; }"));
}

// `var` (declared here if `declare`) = the combination of array[slot(0)] ..
// array[slot(parts - 1)].
void Emitter::emit_slot_combine(ReduceOp op, DType t, const std::string& var, bool declare, const std::string& array,
                                int parts, const std::function<std::string(const std::string&)>& slot) {
  w_.line(cat(declare ? ctype(t) + " " : "", var, " = ", array, "[", slot("0"), "];"));
  w_.open_unrolled("i", 1, parts);
  w_.line(cat(var, " = ", reduce_combine(op, t, var, cat(array, "[", slot("i"), "]")), ";"));
  w_.close();
}

// One barrier, then every thread combines its row's per-warp partial results
// of each pending reduction.
void Emitter::flush_reductions() {
  if (pending_.empty()) return;
  // Row major: slot row*wpr + warp; column major: slot t*rpb + row.
  const int parts = col_major_ ? tpr_ : tpr_ / 32;
  auto slot = [&](const std::string& i) {
    return col_major_ ? cat(i == "0" ? "" : i + " * " + std::to_string(rpb_) + " + ", "row")
                      : cat("row * ", parts, i == "0" ? "" : " + " + i);
  };
  w_.line("__syncthreads();  // the partial results of the reductions above are in shared memory");
  for (ValueId id : pending_) {
    const Instr& in = k_.body[id];
    emit_slot_combine(in.reduce, in.dtype, name(id), false, "red_" + name(id), parts, slot);
    if (!col_major_ && sum_of_sq_[id] >= 0) emit_moments_flush(id, parts, slot);
  }
  pending_.clear();
}

// ---- one-pass variance ------------------------------------------------------------
//
// Lowering writes a variance as two sums over the row: R1 = sum(x), then
// R2 = sum((x - R1/N)^2) with N = rnumel, a second reduction (and barrier)
// after the first. When every thread of a persistent row (or of a looped row
// of one step) holds the same number K of the row's elements, R2 is computed
// alongside R1, from partial
// results of equal-sized groups: a group of P parts with sums s_i and
// squared-deviation sums q_i (each around its own mean, n elements a part) has
//   sum((x - mean)^2) = sum_i q_i + sum_i (s_i - S/P)^2 / n,   S = sum_i s_i.
// Applied within the thread (its K elements), across the lanes of a warp (a
// butterfly for S, then one for the q) and across the row's warps (after the
// barrier R1 needs anyway). The partial sums are taken of x - pivot, with the
// pivot the row's first element, so that they do not cancel when the mean is
// large against the spread. On the H100 with rows of mean 1000 (tests/gpu),
// the variance stays within 5e-7 of float64, where the two-pass form inherits
// the float32 mean's error (~1e-5, like eager's Welford); unpivoted partial
// sums would give ~2e-6. R1 itself is computed exactly as before.

// R1 if `sq_sum` is reduce.sum((x - R1 / N) * (x - R1 / N)) with R1 = reduce.sum(x)
// and N = rnumel, all in one float type; else -1.
ValueId Emitter::squared_deviation_source(ValueId sq_sum) const {
  const Instr& q = k_.body[sq_sum];
  if (q.op != PrimOp::Reduce || q.reduce != ReduceOp::Sum || !is_float(q.dtype)) return -1;
  const Instr& square = k_.body[resolve(q.args[0])];
  if (square.op != PrimOp::Mul || square.dtype != q.dtype || resolve(square.args[0]) != resolve(square.args[1])) return -1;
  const Instr& dev = k_.body[resolve(square.args[0])];
  if (dev.op != PrimOp::Sub || dev.dtype != q.dtype) return -1;
  const ValueId x = resolve(dev.args[0]);
  const Instr& mean = k_.body[resolve(dev.args[1])];
  if (!lanes_[x] || k_.body[x].dtype != q.dtype || mean.op != PrimOp::Div || mean.dtype != q.dtype) return -1;
  const Instr& count = k_.body[resolve(mean.args[1])];
  if (count.op != PrimOp::Constant || count.fvalue != static_cast<double>(k_.rnumel)) return -1;
  const ValueId sum = resolve(mean.args[0]);
  const Instr& s = k_.body[sum];
  if (s.op != PrimOp::Reduce || s.reduce != ReduceOp::Sum || s.dtype != q.dtype || resolve(s.args[0]) != x) return -1;
  return sum;
}

// Pairs each eligible R2 with its R1: only for row-major rows whose threads
// all hold (persistent, or looped in one step) K valid elements (no masked
// chunks), and where x at
// the row's first element can be written as a short scalar expression.
void Emitter::find_moment_pairs(const Segment& s, bool persistent, std::int64_t steps) {
  sq_sum_of_.assign(k_.body.size(), -1);
  sum_of_sq_.assign(k_.body.size(), -1);
  row_start_.assign(k_.body.size(), "");
  moments_per_thread_ = s.size();
  // Looped rows pair them only in one step: with several, the moments'
  // arithmetic between a thread's loads cost more than the pass it saves
  // (layer_norm 2048x32768 f32: 224.2 us paired, 218.8 not; bench/NOTES.md).
  if (col_major_ || s.mask != Segment::Mask::None) return;
  if (!persistent && (!dev_.row_loop_moments || steps != 1)) return;
  for (std::size_t i = 0; i < k_.body.size(); ++i) {
    if (!live_[i]) continue;
    const ValueId sum = squared_deviation_source(static_cast<ValueId>(i));
    if (sum < 0 || !live_[sum] || sq_sum_of_[sum] >= 0 || !has_row_start_value(k_.body[sum].args[0], 16)) continue;
    sq_sum_of_[sum] = static_cast<ValueId>(i);
    sum_of_sq_[i] = sum;
  }
}

// True when lane value `id` at r = 0 can be computed as scalars (loads,
// index values and element-wise operations) in at most `budget` steps deep.
bool Emitter::has_row_start_value(ValueId id, int budget) const {
  id = resolve(id);
  if (!lanes_[id]) return true;
  const Instr& in = k_.body[id];
  if (budget <= 0 || in.op == PrimOp::Store || in.op == PrimOp::Reduce) return false;
  if (in.op == PrimOp::Load && (in.indirect || in.masked)) return false;  // (row_start_value reads plain loads only)
  for (ValueId a : in.args)
    if (!has_row_start_value(a, budget - 1)) return false;
  return true;
}

// A scalar holding lane value `id` at r = 0, emitted (once) where it is first
// asked for; has_row_start_value(id) must hold.
std::string Emitter::row_start_value(ValueId id) {
  id = resolve(id);
  if (!lanes_[id]) return name(id);
  if (!row_start_[id].empty()) return row_start_[id];
  const Instr& in = k_.body[id];
  auto at_row_start = [](const IndexExpr& e) {
    return e.substitute([](const IndexExpr& v) { return v.name() == "r" ? IndexExpr(0) : v; });
  };
  const std::string T = ctype(in.dtype), p = cat("p", id);
  if (in.op == PrimOp::Load) {
    const auto& b = k_.buffers[in.buffer];
    w_.line(cat("const ", T, " ", p, " = ",
                load_conv(b.dtype, cat(buf(in.buffer), "[", scalar_index(at_row_start(in.index)), "]")), ";"));
  } else if (in.op == PrimOp::Index) {
    w_.line(cat("const ", T, " ", p, " = (", T, ")", scalar_index(at_row_start(in.index)), ";"));
  } else {
    std::vector<std::string> a;
    for (ValueId x : in.args) a.push_back(row_start_value(x));
    w_.line(cat("const ", T, " ", p, " = ", op_expr(in, a), ";"));
  }
  return row_start_[id] = p;
}

void Emitter::emit_moments(ValueId sum, ValueId sq_sum, const Segment& s) {
  const Instr& in = k_.body[sum];
  const DType t = in.dtype;
  const std::string T = ctype(t), v1 = name(sum), v2 = name(sq_sum);
  const ValueId x = resolve(in.args[0]);
  w_.line(cat("// %", sum, " = reduce.sum %", in.args[0], ", and with it %", sq_sum, " = sum((%", in.args[0], " - %", sum,
              "/", k_.rnumel, ")^2) in one pass"));
  w_.line(cat(T, " ", v1, ", ", v2, ";"));
  w_.open("");
  emit_reduce_init(sum, "acc", s.width);
  emit_reduce_accumulate(sum, s, "acc");
  emit_fold_lanes(ReduceOp::Sum, t, "acc", s.width);
  w_.line(cat("const ", T, " pivot = ", row_start_value(x), ";  // x at the row's first element"));
  emit_thread_moments(x, "pivot", s);
  emit_moments_combine(sum, sq_sum);
  w_.close();
  // The row-start scalars were declared inside that scope: a later pair
  // (a second layer norm in the kernel) declares its own.
  std::fill(row_start_.begin(), row_start_.end(), std::string());
}

// `T b` (the thread's sum of x - pivot), `own` (the same, kept) and `q` (its
// squared deviations around its own mean) over the thread's K lane values.
void Emitter::emit_thread_moments(ValueId x, const std::string& pivot, const Segment& s) {
  const DType t = k_.body[x].dtype;
  const std::string T = ctype(t), K = float_literal(moments_per_thread_, t);
  auto add = [&](const std::string& a, const std::string& b) { return reduce_combine(ReduceOp::Sum, t, a, b); };
  w_.line(cat(T, " b = ", zero_of(t), ";  // the thread's sum of x - pivot"));
  w_.open_unrolled("k", 0, s.size());
  w_.line("b = " + add("b", cat("(", ref(x, "k"), " - ", pivot, ")")) + ";");
  w_.close();
  w_.line(cat("const ", T, " own = b, own_mean = b / ", K, ";"));
  w_.line(cat(T, " q = ", zero_of(t), ";"));
  w_.open_unrolled("k", 0, s.size());
  w_.line(cat("const ", T, " d = (", ref(x, "k"), " - ", pivot, ") - own_mean;"));
  w_.line("q = " + add("q", "d * d") + ";");
  w_.close();
}

// With the thread's `a` (its sum of x), `b` and `own` (its sum of x - pivot)
// and `q` (its squared deviations around its own mean) in scope: combines the
// row's threads into R1 and R2 (or their warps' parts in shared memory).
void Emitter::emit_moments_combine(ValueId sum, ValueId sq_sum) {
  const DType t = k_.body[sum].dtype;
  const std::string T = ctype(t), v1 = name(sum), v2 = name(sq_sum);
  const int group = std::min(tpr_, 32);  // lanes of a row that shuffle together
  const std::string K = float_literal(moments_per_thread_, t);
  auto add = [&](const std::string& a, const std::string& b) { return reduce_combine(ReduceOp::Sum, t, a, b); };
  emit_butterfly(ReduceOp::Sum, t, {"a", "b"}, group);
  w_.line(cat("{ const ", T, " e = own - b * ", float_literal(1.0 / group, t), "; q = ", add("q", cat("e * e / ", K)), "; }"));
  emit_butterfly(ReduceOp::Sum, t, {"q"}, group);
  if (tpr_ > 32) {
    const std::string slot = cat("[row * ", tpr_ / 32, " + warp]");
    w_.line(cat("if (lane == 0) { red_", v1, slot, " = a; red_", v2, slot, " = q; red_", v2, "_pivoted", slot, " = b; }"));
    pending_.push_back(sum);
    pending_.push_back(sq_sum);
  } else {
    w_.line(cat(v1, " = a;"));
    w_.line(cat(v2, " = q;"));
  }
}

// Looped rows of one step (the only ones paired): the thread's moments are
// taken inside the step, where its lane values live, and combined after it
// as in persistent rows.
void Emitter::emit_looped_moments_start(ValueId sum) {
  const ValueId sq = sq_sum_of_[sum];
  const std::string T = ctype(k_.body[sum].dtype), v2 = name(sq), zero = zero_of(k_.body[sum].dtype);
  w_.line(cat(T, " ", v2, ";  // reduce.sum of squared deviations from %", sum, "'s mean, with it in one pass"));
  w_.line(cat("const ", T, " pivot_", v2, " = ", row_start_value(resolve(k_.body[sum].args[0])),
              ";  // x at the row's first element"));
  w_.line(cat(T, " mb_", v2, " = ", zero, ", mq_", v2, " = ", zero, ";  // the thread's sum of x - pivot; its squared deviations"));
}

void Emitter::emit_looped_moments_step(ValueId sum, const Segment& s) {
  const std::string v2 = name(sq_sum_of_[sum]);
  w_.open("");
  emit_thread_moments(resolve(k_.body[sum].args[0]), "pivot_" + v2, s);
  w_.line(cat("mb_", v2, " = b;"));
  w_.line(cat("mq_", v2, " = q;"));
  w_.close();
}

void Emitter::emit_looped_moments_finish(ValueId sum, int width) {
  const DType t = k_.body[sum].dtype;
  const std::string T = ctype(t), v2 = name(sq_sum_of_[sum]);
  emit_fold_lanes(ReduceOp::Sum, t, "acc_" + name(sum), width);
  w_.line(cat(T, " b = mb_", v2, ";"));
  w_.line(cat("const ", T, " own = b;"));
  w_.line(cat(T, " q = mq_", v2, ";"));
  emit_moments_combine(sum, sq_sum_of_[sum]);
}

// After the barrier R2 sums the warps' parts; it gains the spread of the
// warps' sums of x - pivot around their mean.
void Emitter::emit_moments_flush(ValueId sq_sum, int parts, const std::function<std::string(const std::string&)>& slot) {
  const DType t = k_.body[sq_sum].dtype;
  const std::string T = ctype(t), v2 = name(sq_sum), pivoted = "red_" + v2 + "_pivoted";
  auto add = [&](const std::string& a, const std::string& b) { return reduce_combine(ReduceOp::Sum, t, a, b); };
  w_.open("");
  emit_slot_combine(ReduceOp::Sum, t, "total", true, pivoted, parts, slot);
  w_.line(cat(T, " spread = ", zero_of(t), ";"));
  w_.open_unrolled("i", 0, parts);
  w_.line(cat("const ", T, " e = ", pivoted, "[", slot("i"), "] - total * ", float_literal(1.0 / parts, t), ";"));
  w_.line("spread = " + add("spread", "e * e") + ";");
  w_.close();
  w_.line(cat(v2, " = ", add(v2, cat("spread / ", float_literal(32.0 * moments_per_thread_, t))), ";"));
  w_.close();
}

// ---- kernels -------------------------------------------------------------------

void Emitter::emit_prelude_and_constants(const std::string& strategy) {
  w_.line("// deepvisor generated kernel " + entry_);
  w_.line(cat("// iteration space: xnumel=", k_.xnumel, ", rnumel=", k_.rnumel));
  std::istringstream st(strategy);
  for (std::string l; std::getline(st, l);) w_.line("// " + l);
  w_.line("//");
  std::istringstream ir_text(ir::to_string(k_));
  for (std::string l; std::getline(ir_text, l);) w_.line("// " + l);
  w_.line("");
  w_.line(kPrelude);
  w_.line(idx64_ ? "typedef long long idx_t;  // 64-bit index arithmetic" : "typedef int idx_t;  // 32-bit index arithmetic (every index < 2^31)");
  if (dev_.size_arguments) w_.line(kSizeTablePlaceholder);
  emit_size_constant("kXnumel", k_.xnumel);
  emit_size_constant("kRnumel", k_.rnumel);
}

// A size of the iteration space: a constant of the source, or (size
// arguments) a name for its entry in the size table.
void Emitter::emit_size_constant(const std::string& name, std::int64_t value) {
  if (dev_.size_arguments) w_.line(cat("#define ", name, " ((idx_t)", size_text()(value), ")"));
  else w_.line(cat("constexpr idx_t ", name, " = ", idx_literal(value), ";"));
}

// How index constants are written: literals, or entries of the size table
// (one entry per distinct value; the table's values travel with the launch).
ConstMap Emitter::size_text() const {
  if (!dev_.size_arguments) return idx_literal;
  return [this](std::int64_t value) {
    auto [it, fresh] = size_slot_.try_emplace(value, static_cast<int>(size_args_.size()));
    if (fresh) size_args_.push_back(value);
    return cat("dv_n.v[", it->second, "]");
  };
}

std::string Emitter::size_ll(std::int64_t value) const {
  return dev_.size_arguments ? cat("(long long)", size_text()(value)) : cat(value, "LL");
}

std::string Emitter::signature(int threads) const {
  std::string s = cat("extern \"C\" __global__ void __launch_bounds__(", threads, ") ", entry_, "(");
  for (std::size_t i = 0; i < k_.buffers.size(); ++i) {
    const auto& b = k_.buffers[i];
    if (i) s += ", ";
    s += cat(b.written ? "" : "const ", stype(b.dtype), "* __restrict__ ", buf(static_cast<int>(i)));
  }
  if (dev_.size_arguments) s += cat(k_.buffers.empty() ? "" : ", ", "const DvSizes dv_n");
  return s + ")";
}

void Emitter::emit_empty() {
  emit_prelude_and_constants("strategy: empty iteration space (nothing to do)");
  w_.line("");
  w_.open(signature(32));
  w_.close();
  launch_.block[0] = 32;
}

void Emitter::emit_pointwise() {
  // Vector width from the widest accessed element; one 16-byte chunk per
  // thread in blocks of 128 threads. Measured on the H100 (bench/NOTES.md,
  // 2026-11-25): fewer, larger tiles (4 chunks a thread, or 256-1024 threads)
  // ran 1-5% slower on a 64M-element chain; the copy floor behaves the same.
  const int bytes = std::max(1, max_lane_access_bytes());
  const int vec = std::max(1, 16 / bytes);
  const int groups = 1;
  int threads = 128;
  auto tile = [&] { return static_cast<std::int64_t>(threads) * vec * groups; };
  const std::int64_t enough_blocks = 2LL * dev_.sm_count;
  while (threads > 64 && ceil_div(layout_xnumel(), tile()) < enough_blocks) threads /= 2;
  const std::int64_t full_tiles = k_.xnumel / tile();
  // Size arguments: one text for every size (full tiles and a tail, either possibly none).
  const bool tail = dev_.size_arguments || k_.xnumel % tile() != 0;
  const std::int64_t blocks = ceil_div(k_.xnumel, tile());
  if (blocks > std::numeric_limits<std::int32_t>::max()) fail("grid too large");

  emit_prelude_and_constants(cat("strategy: pointwise; ", threads, " threads x ", groups, " chunks x ", vec,
                                 " lanes per block (tile ", tile(), ")",
                                 tail ? "; the last block runs the tail one element per thread" : "; no tail"));
  w_.line(cat("constexpr int kThreads = ", threads, ";"));
  w_.line(cat("constexpr idx_t kTile = ", tile(), ";"));
  emit_size_constant("kFullTiles", full_tiles);
  w_.line("");
  w_.open(signature(threads));
  // Scalars (values that do not depend on x) once, before the tile code.
  for (std::size_t i = 0; i < k_.body.size(); ++i)
    if (live_[i] && !lanes_[i]) emit_scalar(static_cast<ValueId>(i), "");

  std::vector<ValueId> lane_ids;
  for (std::size_t i = 0; i < k_.body.size(); ++i)
    if (live_[i] && lanes_[i]) lane_ids.push_back(static_cast<ValueId>(i));
  auto body = [&](const Segment& s) { emit_lane_list(lane_ids, s); };
  Segment fast;
  fast.nchunk = groups;
  fast.width = vec;
  fast.base = "xbase";
  fast.chunk_stride = static_cast<std::int64_t>(threads) * vec;
  fast.lane_var = "x";
  Segment slow;
  slow.base = "x";
  slow.lane_var = "x";

  if (full_tiles > 0 || dev_.size_arguments) {
    if (tail) w_.open("if ((idx_t)blockIdx.x < kFullTiles)");
    else w_.open("");
    w_.line("// a full tile: chunk c of this thread covers x = xbase + c*kThreads*W + [0, W)");
    w_.line(cat("const idx_t xbase = (idx_t)blockIdx.x * kTile + (idx_t)threadIdx.x * ", vec, ";"));
    body(fast);
    if (tail) {
      w_.otherwise();
      w_.line("// the tail: one element per thread");
      w_.open("for (idx_t x = kFullTiles * kTile + (idx_t)threadIdx.x; x < kXnumel; x += kThreads)");
      body(slow);
      w_.close();
    }
    w_.close();
  } else {
    w_.line("// the whole space is one partial tile: one element per thread");
    w_.open("for (idx_t x = (idx_t)threadIdx.x; x < kXnumel; x += kThreads)");
    body(slow);
    w_.close();
  }
  w_.close();
  launch_.grid[0] = static_cast<unsigned>(blocks);
  launch_.block[0] = static_cast<unsigned>(threads);
}

// The row count that launch layouts are chosen for: the kernel's own, or
// (size arguments) the power of two at or above it, so that one source
// serves a class of sizes.
std::int64_t Emitter::layout_xnumel() const {
  return dev_.size_arguments ? next_pow2(k_.xnumel) : k_.xnumel;
}

// Which threads share a row, and how much of it each holds.
struct RowLayout {
  bool col_major = false;  // consecutive threads take consecutive rows (else a row's threads are consecutive)
  int vec = 1;             // W
  std::int64_t tpr = 1, rpb = 1, threads = 32;
  bool persistent = true;
  int nchunk = 1;          // chunks per thread (persistent) or per iteration (looped)
  std::int64_t outer = 1;  // iterations per pass (looped)
};

// True when the r-level accesses are contiguous along x and none along r (a
// reduction over an outer dimension): then threads should follow x.
bool Emitter::prefers_col_major() const {
  bool along_x = false;
  for (std::size_t i = 0; i < k_.body.size(); ++i) {
    const Instr& in = k_.body[i];
    if (!live_[i] || !lanes_[i] || !(in.op == PrimOp::Load || in.op == PrimOp::Store) || in.indirect) continue;
    const auto fr = lane_form(in.index, LaneContext{"r", 1});
    if (fr && fr->stride == 1) return false;
    const auto fx = lane_form(in.index, LaneContext{"x", 1});
    along_x = along_x || (fx && fx->stride == 1);
  }
  return along_x;
}

bool Emitter::writes_rows() const {
  for (std::size_t i = 0; i < k_.body.size(); ++i)
    if (live_[i] && lanes_[i] && k_.body[i].op == PrimOp::Store) return true;
  return false;
}

// Rows of f32 lanes that write rows and take one step of 2 chunks a thread
// at the widest row (more than 1, at most 2 chunks a thread) run faster
// looped than in registers: the looped form needs 30-32 registers against
// 40-62, the re-reads of the row hit L1 or L2 (dv_load_keep), and a variance
// takes no extra pass. Measured on the H100 (bench/NOTES.md, 2026-11-25,
// third session), same card: layer_norm 16384x4096 f32 180.7 us against 182.2
// (torch.compile 181.7), 16384x3072 f32 136.9 against 139.4 (137.2). Rows of
// bf16 (93.7 registers, 94.8 looped), of 768 f32 (72.2 / 81.0) or of two steps
// (softmax 8192 f32, 183.1 / 184.9) stay in registers.
bool Emitter::prefers_one_looped_step(std::int64_t chunks, int vec, std::int64_t widest_tpr) const {
  return dev_.row_one_step_looped && writes_rows() && vec == 4 && max_lane_access_bytes() == 4 &&
         dev_.row_chunks_per_thread == 2 && chunks > widest_tpr && chunks <= 2 * widest_tpr;
}

// When `tpr` threads would hold unequal shares of a row's chunks (the last
// chunk masked), a half or a quarter as many threads that share them equally
// is better: no masks, and the one-pass variance applies. Measured on the
// H100 (bench/NOTES.md, 2026-11-25): layer_norm of 768 bf16, 64 threads x 2
// chunks (one masked) 44.0 us, 32 x 3 40.0 us; f32, 128 x 2 73.1, 64 x 3 72.5.
// `acceptable(t)` says whether t threads still fill the GPU and fit.
template <typename Acceptable>
std::int64_t equal_share_tpr(std::int64_t tpr, std::int64_t chunks, Acceptable acceptable) {
  if (chunks % tpr == 0) return tpr;
  for (std::int64_t t = tpr / 2; t >= 32 && t >= tpr / 4; t /= 2)
    if (chunks % t == 0 && acceptable(t)) return t;
  return tpr;
}

void Emitter::emit_rows() {
  int num_passes = 1, carried = 0;
  const std::vector<int> pass = pass_of_values(&num_passes, &carried);
  const int regs_per_elem = has_lane_values(8) ? 2 : 1;
  const std::int64_t fill_threads = static_cast<std::int64_t>(dev_.sm_count) * 2048;
  const std::int64_t max_block = std::min(1024, dev_.max_threads_per_block);
  // Persistent when the thread's share of the row, times the arrays live
  // across a reduction, fits the register budget with some slack.
  auto fits = [&](std::int64_t nchunk, int vec, std::int64_t threads) {
    const std::int64_t budget = std::min<std::int64_t>(255, 65536 / threads);
    return nchunk <= 16 && nchunk * vec * regs_per_elem * (carried + 2) + 40 <= budget;
  };

  RowLayout L;
  bool one_step = false;  // looped in one step of row_chunks_per_thread chunks (prefers_one_looped_step)
  if (prefers_col_major()) {
    // Warps cover 32 consecutive rows (coalesced along x); up to 32 threads
    // split each row's r range, combined through shared memory.
    L.col_major = true;
    L.vec = 1;
    // 64 rows (256 contiguous bytes of f32 per r) once there are enough for a
    // block an SM: mean(0) of 4096x16384 f32 103.9 -> 101.2 us against 32.
    const std::int64_t wide = std::clamp<std::int64_t>(dev_.col_rows_per_block / 32 * 32, 32, max_block);
    L.rpb = layout_xnumel() >= wide * dev_.sm_count ? wide : 32;
    L.tpr = 1;
    while (L.tpr < 32 && L.tpr < k_.rnumel && L.rpb * L.tpr * 2 <= max_block &&
           (layout_xnumel() * L.tpr < fill_threads || L.rpb * L.tpr < 128))
      L.tpr *= 2;
    L.threads = L.rpb * L.tpr;
    L.persistent = fits(ceil_div(k_.rnumel, L.tpr), 1, L.threads);
  } else {
    // Vector width: 16 bytes of the widest r-level access, dividing rnumel.
    L.vec = std::max(1, 16 / std::max(1, max_lane_access_bytes()));
    while (L.vec > 1 && k_.rnumel % L.vec != 0) L.vec /= 2;
    const std::int64_t chunks = k_.rnumel / L.vec;  // per row
    // Two chunks a thread, with at most 512 threads a row while the row fits
    // that way. Measured on the H100 (bench/NOTES.md, 2026-11-25): layer_norm
    // of 4096 ran fastest with 2 chunks (f32: 512 threads; bf16: 256) against
    // 1, 4 or 8; more chunks raise registers and cut the rows in flight.
    const int target_chunks = std::max(1, dev_.row_chunks_per_thread);
    const std::int64_t preferred_tpr = std::max(32, dev_.row_max_threads);
    const std::int64_t max_tpr = std::min<std::int64_t>(max_block, next_pow2(chunks));
    auto block_threads = [&](std::int64_t tpr) {
      if (tpr >= 256) return tpr;
      return std::max<std::int64_t>(32, std::min<std::int64_t>(256, tpr * next_pow2(layout_xnumel())));
    };
    // About target_chunks chunks per thread, more threads while the grid would not fill the GPU.
    auto choose_tpr = [&] {
      std::int64_t tpr = std::min({max_tpr, preferred_tpr, next_pow2(ceil_div(chunks, target_chunks))});
      while (tpr < max_tpr && layout_xnumel() * tpr < fill_threads) tpr *= 2;
      return tpr;
    };
    L.persistent = false;
    for (L.tpr = choose_tpr(); L.tpr <= max_tpr && !dev_.row_force_looped; L.tpr *= 2)
      if (fits(ceil_div(chunks, L.tpr), L.vec, block_threads(L.tpr))) {
        L.persistent = true;
        break;
      }
    one_step = L.persistent && prefers_one_looped_step(chunks, L.vec, preferred_tpr);
    if (one_step) L.persistent = false;
    if (L.persistent)
      L.tpr = equal_share_tpr(L.tpr, chunks, [&](std::int64_t tpr) {
        return layout_xnumel() * tpr >= fill_threads && fits(chunks / tpr, L.vec, block_threads(tpr));
      });
    else
      L.tpr = choose_tpr();
    L.threads = block_threads(L.tpr);
    L.rpb = L.threads / L.tpr;
  }
  const std::int64_t chunks = k_.rnumel / L.vec;
  Segment s;
  s.width = L.vec;
  s.base = "rbase";
  s.chunk_stride = L.tpr * L.vec;
  s.lane_var = "r";
  s.limit = "kRnumel";
  if (L.persistent) {
    L.nchunk = static_cast<int>(ceil_div(chunks, L.tpr));
    s.mask = chunks % L.tpr != 0 ? Segment::Mask::LastChunk : Segment::Mask::None;
  } else {
    L.nchunk = dev_.row_force_looped || one_step ? std::max(1, dev_.row_chunks_per_thread)
                                                 : std::max(1, std::min(8, 32 / L.vec));
    L.outer = ceil_div(chunks, L.tpr * L.nchunk);
    s.mask = chunks % (L.tpr * L.nchunk) != 0 ? Segment::Mask::Every : Segment::Mask::None;
  }
  s.nchunk = L.nchunk;
  emit_rows_kernel(L, s, pass, num_passes);
}

void Emitter::emit_rows_kernel(const RowLayout& L, Segment s, const std::vector<int>& pass, int num_passes) {
  tpr_ = static_cast<int>(L.tpr);
  rpb_ = static_cast<int>(L.rpb);
  threads_ = static_cast<int>(L.threads);
  col_major_ = L.col_major;
  loads_once_ = !col_major_ && !writes_rows();
  const std::int64_t blocks = ceil_div(k_.xnumel, rpb_);
  if (blocks > std::numeric_limits<std::int32_t>::max()) fail("grid too large");
  const bool row_mask = dev_.size_arguments || k_.xnumel % rpb_ != 0;
  s.store_guard = row_mask ? "row_ok" : "";

  find_moment_pairs(s, L.persistent, L.outer);
  // Looped rows: the lane values each pass needs; the passes that need none are skipped.
  std::vector<std::vector<char>> needs;
  for (int p = 0; p < num_passes && !L.persistent; ++p) needs.push_back(lanes_needed_by_pass(pass, p));
  const auto loops = std::count_if(needs.begin(), needs.end(), [](const std::vector<char>& need) {
    return std::any_of(need.begin(), need.end(), [](char c) { return c != 0; });
  });
  const std::string strategy = cat(
      "strategy: row kernel, ", L.persistent ? "persistent (the row stays in registers)" : "looped", "; ",
      L.col_major ? "column-major threads (a warp covers 32 consecutive rows); " : "", tpr_, " threads per row, ", rpb_,
      " rows per block of ", threads_, " threads; each thread holds ", s.nchunk, " chunks x ", s.width, " lanes",
      L.persistent ? "" : cat(" per iteration, ", L.outer, " iterations per pass, ", loops, " passes"));
  emit_prelude_and_constants(strategy);
  w_.line(cat("constexpr int kTpr = ", tpr_, ";  // threads per row"));
  w_.line(cat("constexpr int kRpb = ", rpb_, ";  // rows per block"));
  w_.line("");
  w_.open(signature(threads_));
  // Shared memory for every reduction: one slot per warp of each row (row
  // major), or one per thread (column major).
  const int slots = col_major_ ? (tpr_ > 1 ? rpb_ * tpr_ : 0) : (tpr_ > 32 ? rpb_ * (tpr_ / 32) : 0);
  std::int64_t shared_bytes = 0;
  for (std::size_t i = 0; i < k_.body.size(); ++i)
    if (live_[i] && k_.body[i].op == PrimOp::Reduce)
      shared_bytes += std::int64_t{slots} * compute_size(k_.body[i].dtype) * (sum_of_sq_[i] >= 0 ? 2 : 1);
  if (shared_bytes > dev_.max_shared_per_block)
    fail(cat("kernel ", entry_, " needs ", shared_bytes, " bytes of shared memory for its reductions"));
  if (slots > 0)
    for (std::size_t i = 0; i < k_.body.size(); ++i)
      if (live_[i] && k_.body[i].op == PrimOp::Reduce) {
        w_.line(cat("__shared__ ", ctype(k_.body[i].dtype), " red_", name(static_cast<ValueId>(i)), "[", slots, "];"));
        if (sum_of_sq_[i] >= 0)  // the warps' sums of x - pivot
          w_.line(cat("__shared__ ", ctype(k_.body[i].dtype), " red_", name(static_cast<ValueId>(i)), "_pivoted[", slots, "];"));
      }
  w_.line("const int tid = threadIdx.x;");
  if (col_major_) {
    w_.line(rpb_ == threads_ ? "const int t = 0;  // thread within its row" : "const int t = tid / kRpb;  // thread within its row");
    w_.line("const int row = tid % kRpb;  // row within the block");
  } else {
    w_.line(rpb_ == 1 ? "const int t = tid;  // thread within its row" : "const int t = tid % kTpr;  // thread within its row");
    w_.line(rpb_ == 1 ? "const int row = 0;  // row within the block" : "const int row = tid / kTpr;  // row within the block");
    if (tpr_ > 32) {
      w_.line("const int lane = tid % 32;");
      w_.line("const int warp = t / 32;  // warp within its row");
    }
  }
  if (row_mask) {
    w_.line("const idx_t xr = (idx_t)blockIdx.x * kRpb + row;");
    w_.line("const bool row_ok = xr < kXnumel;");
    w_.line("const idx_t x = row_ok ? xr : kXnumel - 1;  // rows past the end compute on the last row, never store");
  } else {
    w_.line("const idx_t x = (idx_t)blockIdx.x * kRpb + row;");
  }
  if (L.persistent) {
    w_.line(cat("const idx_t rbase = (idx_t)t * ", s.width, ";  // chunk c covers r = rbase + c*kTpr*W + [0, W)"));
    emit_rows_persistent(s, pass);
  } else {
    emit_rows_looped(s, L.outer, pass, needs);
  }
  flush_reductions();  // (unused values: nothing pending remains in practice)
  w_.close();
  launch_.grid[0] = static_cast<unsigned>(blocks);
  launch_.block[0] = static_cast<unsigned>(threads_);
}

std::string store_guard_x(bool row_mask, int tpr) {
  std::string g = tpr > 1 ? "t == 0" : "";
  if (row_mask) g = g.empty() ? "row_ok" : g + " && row_ok";
  return g;
}

// Straight-line code. Instructions are ordered by pass (stably; a Reduce with
// the pass that accumulates it, a scalar with the pass it is available from),
// which respects dependencies and lets reductions of one pass share a barrier.
void Emitter::emit_rows_persistent(const Segment& s, const std::vector<int>& pass) {
  const std::string xguard = store_guard_x(!s.store_guard.empty(), tpr_);
  std::vector<std::size_t> order;
  for (std::size_t i = 0; i < k_.body.size(); ++i)
    if (live_[i]) order.push_back(i);
  auto key = [&](std::size_t i) { return k_.body[i].op == PrimOp::Reduce ? pass[i] - 1 : pass[i]; };
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return key(a) < key(b); });
  std::vector<ValueId> run;  // consecutive lane instructions
  auto flush_run = [&] {
    emit_lane_list(run, s);
    run.clear();
  };
  for (std::size_t i : order) {
    const auto id = static_cast<ValueId>(i);
    const Instr& in = k_.body[i];
    if (lanes_[i] && in.op != PrimOp::Reduce) {
      run.push_back(id);
      continue;
    }
    flush_run();
    if (in.op == PrimOp::Reduce && sum_of_sq_[i] >= 0) continue;  // emitted with its sum
    if (in.op == PrimOp::Reduce && sq_sum_of_[i] >= 0) {
      use_operands(in);
      emit_moments(id, sq_sum_of_[i], s);
    } else if (in.op == PrimOp::Reduce) {
      use_operands(in);
      w_.line(cat("// %", i, " = reduce.", ir::reduce_op_name(in.reduce), " %", in.args[0]));
      w_.line(cat(ctype(in.dtype), " ", name(id), ";"));
      w_.open("");
      emit_reduce_init(id, "acc", s.width);
      emit_reduce_accumulate(id, s, "acc");
      emit_reduce_finish(id, "acc", s.width);
      w_.close();
    } else {
      emit_scalar(id, xguard);
    }
  }
  flush_run();
}

// The lane values pass p needs: its Stores and the operands of its
// Reductions, with everything they depend on (recomputed from the loads).
std::vector<char> Emitter::lanes_needed_by_pass(const std::vector<int>& pass, int p) const {
  const std::size_t n = k_.body.size();
  std::vector<char> need(n, 0);
  for (std::size_t i = n; i-- > 0;) {
    const Instr& in = k_.body[i];
    if (!live_[i]) continue;
    // (An R2 paired with its R1 is computed in R1's pass, from R1's operand.)
    const bool reduce_root = in.op == PrimOp::Reduce && pass[i] == p + 1 && sum_of_sq_[i] < 0;
    if ((in.op == PrimOp::Store && lanes_[i] && pass[i] == p) || reduce_root) need[i] = 1;
    if (!need[i]) continue;
    for (ValueId a : in.args)
      if (lanes_[a]) need[a] = 1;
  }
  return need;
}

void Emitter::emit_rows_looped(Segment s, std::int64_t outer, const std::vector<int>& pass,
                               const std::vector<std::vector<char>>& needs) {
  const std::string xguard = store_guard_x(!s.store_guard.empty(), tpr_);
  const std::size_t n = k_.body.size();
  const int num_passes = static_cast<int>(needs.size());
  std::vector<char> emitted(n, 0);
  for (int p = 0; p <= num_passes; ++p) {
    // Scalars available from this pass on.
    for (std::size_t i = 0; i < n; ++i) {
      if (!live_[i] || lanes_[i] || emitted[i] || k_.body[i].op == PrimOp::Reduce || pass[i] > p) continue;
      emit_scalar(static_cast<ValueId>(i), xguard);
      emitted[i] = 1;
    }
    if (p == num_passes) break;
    const std::vector<char>& need = needs[p];
    if (std::none_of(need.begin(), need.end(), [](char c) { return c != 0; })) continue;
    std::vector<ValueId> reduces;
    for (std::size_t i = 0; i < n; ++i)
      if (need[i] && k_.body[i].op == PrimOp::Reduce) reduces.push_back(static_cast<ValueId>(i));
    set_row_load_hints(needs, p);
    flush_reductions();
    w_.line(cat("// ---- pass ", p, ": over the row in ", outer, " iterations of ", s.nchunk, " chunks"));
    for (ValueId r : reduces) {
      w_.line(cat(ctype(k_.body[r].dtype), " ", name(r), ";  // reduce.", ir::reduce_op_name(k_.body[r].reduce), " %",
                  k_.body[r].args[0]));
      emit_reduce_init(r, "acc_" + name(r), s.width);
      if (sq_sum_of_[r] >= 0) emit_looped_moments_start(r);
    }
    w_.line("#pragma unroll 1");
    w_.open(cat("for (int it = 0; it < ", outer, "; ++it)"));
    w_.line(cat("const idx_t rbase = (idx_t)it * ", idx_literal(static_cast<std::int64_t>(s.nchunk) * tpr_ * s.width),
                " + (idx_t)t * ", s.width, ";"));
    std::vector<ValueId> lane_ids;
    for (std::size_t i = 0; i < n; ++i)
      if (need[i] && k_.body[i].op != PrimOp::Reduce) lane_ids.push_back(static_cast<ValueId>(i));
    emit_lane_list(lane_ids, s);
    for (ValueId r : reduces) {
      emit_reduce_accumulate(r, s, "acc_" + name(r));
      if (sq_sum_of_[r] >= 0) emit_looped_moments_step(r, s);
    }
    w_.close();
    for (ValueId r : reduces) {
      w_.open("");
      if (sq_sum_of_[r] >= 0)
        emit_looped_moments_finish(r, s.width);
      else
        emit_reduce_finish(r, "acc_" + name(r), s.width);
      w_.close();
    }
  }
  row_load_hint_.clear();
}

// A Load that a later pass loads again is kept in cache (Keep); in the last
// of several passes that load it, it goes first (Last); loaded by one pass
// only, it takes no hint.
void Emitter::set_row_load_hints(const std::vector<std::vector<char>>& needs, int p) {
  row_load_hint_.assign(k_.body.size(), RowLoadHint::None);
  if (dev_.row_loop_hints == 0) return;
  for (std::size_t i = 0; i < k_.body.size(); ++i) {
    if (!needs[p][i] || k_.body[i].op != PrimOp::Load) continue;
    bool before = false, after = false;
    for (int q = 0; q < static_cast<int>(needs.size()); ++q) {
      before = before || (q < p && needs[q][i]);
      after = after || (q > p && needs[q][i]);
    }
    row_load_hint_[i] = after ? RowLoadHint::Keep : before ? RowLoadHint::Last : RowLoadHint::None;
  }
}

CudaKernel Emitter::run() {
  validate();
  entry_ = dev_.size_arguments ? kEntryPlaceholder : c_identifier(k_.name.empty() ? "kernel" : k_.name);
  analyze();
  idx64_ = needs_64bit();
  if (k_.xnumel == 0) {
    emit_empty();
  } else if (rows_) {
    emit_rows();
  } else {
    emit_pointwise();
  }
  CudaKernel out;
  out.name = entry_;
  out.source = w_.str();
  out.launch = launch_;
  return dev_.size_arguments ? with_size_arguments(std::move(out)) : out;
}

// Size arguments: the source without comments (they name sizes), the size
// table's type in place of its placeholder, and the entry named by a hash of
// that text, so kernels that differ only in sizes are one source.
CudaKernel Emitter::with_size_arguments(CudaKernel k) const {
  std::string text = strip_line_comments(k.source);
  text = replace_all(text, kSizeTablePlaceholder, cat("struct DvSizes { idx_t v[", std::max<std::size_t>(1, size_args_.size()), "]; };"));
  k.name = cat("dv_s", hex64(fnv1a64(text)));
  k.source = replace_all(text, kEntryPlaceholder, k.name);
  k.size_args = size_args_.empty() ? std::vector<std::int64_t>{0} : size_args_;  // the entry always takes the table
  k.size_args_64 = idx64_;
  return k;
}

}  // namespace

LaneAccess classify_lane_access(const ir::IndexExpr& index, const std::string& lane_var, int vec) {
  return classify(index, LaneContext{lane_var, std::max(1, vec)});
}

CudaKernel emit_cuda(const ir::Kernel& kernel, const DeviceSpec& device) { return Emitter(kernel, device).run(); }

}  // namespace dv::codegen
