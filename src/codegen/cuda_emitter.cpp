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
// `dv_atomic_add(&p[...], value)` when it accumulates. An accumulating store
// in a pointwise kernel is always lane code, even where nothing in it varies
// with x: values that do not vary run in every thread (below), and an add must
// happen once per point.
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
#include "codegen/cuda_emitter_impl.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <vector>

namespace dv::codegen::cuda {

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
    // A pointwise kernel's scalars run in every thread of every block, before
    // the tile code: harmless for a plain store (each thread writes the same
    // value), but an accumulating store must add once per point x (a scatter
    // of one point into a one-element index: an atomic add per thread gave
    // 64 or 128 times the value). It is a lane value, written once per x.
    // (Row kernels write x-level stores once per row already.)
    if (!rows_ && in.op == PrimOp::Store && in.accumulate) varies = true;
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

// KernelTuning::fast_math, where it applies: every buffer the kernel writes is f16 or bf16.
bool Emitter::fast_math() const {
  if (!tune_.fast_math) return false;
  bool any = false;
  for (const auto& b : k_.buffers) {
    if (!b.written) continue;
    if (!is_half(b.dtype)) return false;
    any = true;
  }
  return any;
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
    case PrimOp::Exp: return f32 && fast_math() ? fn("__expf", "") : fn("expf", "exp");
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
    case PrimOp::RoundBf16: return cat("dv_bf16_to_f32(dv_f32_to_bf16(", a[0], "))");
    case PrimOp::RoundF16: return cat("dv_f16_to_f32(dv_f32_to_f16(", a[0], "))");
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
      if (f32 && fast_math()) return cat("dv_div_full(", a[0], ", ", a[1], ")");
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
      w_.line(cat("const ", T, " ", v, " = ", constant_text(in), ";"));
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
    const char* suffix = tune_.row_loop_hints == 2 ? "_l2" : tune_.row_loop_hints == 1 ? "_l1" : "";
    return cat(hint == RowLoadHint::Keep ? "dv_load_keep" : "dv_load_last", suffix, "(", ptr, ")");
  }
  if (loads_once_) return "dv_load_once(" + ptr + ")";
  if (tune_.stream_hints) return "dv_load_stream(" + ptr + ")";
  return "*" + ptr;
}

// A vector `value` of `bytes` stored through ptr: streaming under stream_hints when 16 bytes.
std::string Emitter::vector_store(const std::string& ptr, const std::string& value, int bytes) const {
  if (tune_.stream_hints && bytes == 16) return cat("dv_store_stream(", ptr, ", ", value, ");");
  return cat("*", ptr, " = ", value, ";");
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

// Whether value `id` is the same on every lane of a chunk (lanes l0 + v,
// l0 a multiple of the width): a constant, an index the lanes share, a
// comparison the lanes cannot straddle, or logic over such values.
bool Emitter::lane_uniform(ValueId id, const Segment& s) const {
  const Instr& in = k_.body[resolve(id)];
  switch (in.op) {
    case PrimOp::Constant: return true;
    case PrimOp::Index: return classify(in.index, LaneContext{s.lane_var, s.width}) == LaneAccess::Uniform;
    case PrimOp::Lt: case PrimOp::Le: case PrimOp::Gt: case PrimOp::Ge: return uniform_comparison(in, s);
    case PrimOp::LogicalNot: return lane_uniform(in.args[0], s);
    case PrimOp::LogicalAnd: case PrimOp::LogicalOr: case PrimOp::LogicalXor:
      return lane_uniform(in.args[0], s) && lane_uniform(in.args[1], s);
    default: return false;
  }
}

// An ordering of two lane-uniform values, or of an index running
// contiguously over the lanes from a multiple of the width (a cat's channel
// x % C, channels innermost) against a constant bound at such a multiple:
// the W lanes lie on one side of it. (e < c and e >= c split at c; e <= c
// and e > c at c + 1.)
bool Emitter::uniform_comparison(const Instr& in, const Segment& s) const {
  if (lane_uniform(in.args[0], s) && lane_uniform(in.args[1], s)) return true;
  const Instr& a = k_.body[resolve(in.args[0])];
  const Instr& b = k_.body[resolve(in.args[1])];
  const bool index_left = a.op == PrimOp::Index && b.op == PrimOp::Constant;
  if (!index_left && !(b.op == PrimOp::Index && a.op == PrimOp::Constant)) return false;
  const Instr& index = index_left ? a : b;
  if (classify(index.index, LaneContext{s.lane_var, s.width}) != LaneAccess::Contiguous) return false;
  // With the index on the left: Lt and Ge split at c, Le and Gt at c + 1 (mirrored on the right).
  const bool at_c = (in.op == PrimOp::Lt || in.op == PrimOp::Ge) == index_left;
  const std::int64_t split = (index_left ? b : a).ivalue + (at_c ? 0 : 1);
  return split % s.width == 0;
}

// A masked load that every lane of a chunk takes or none does, at lanes that
// run contiguously: one vector load under the mask of the chunk's first
// lane (a cat's part, where the part's channels are a multiple of the
// width), instead of a read a lane.
void Emitter::emit_lane_masked_vector(ValueId id, const Segment& s) {
  const Instr& in = k_.body[id];
  const auto& b = k_.buffers[in.buffer];
  const std::string v = name(id), ST = stype(b.dtype), p = buf(in.buffer);
  const std::string valid = chunk_valid(s);
  const std::string other = is_float(in.dtype) ? float_literal(in.fvalue, in.dtype) : int_literal(in.ivalue, in.dtype);
  raw_half_[id] = 0;
  w_.line(cat(ctype(in.dtype), " ", v, "[", s.size(), "];  // one vector where the chunk's lanes take it"));
  begin_chunk_loop(s);
  const std::string taken = ref(in.mask_arg(), cat("c * ", s.width));
  // (valid may be a disjunction: "c < N || l0 < L")
  w_.open("if (" + (valid.empty() ? taken : "(" + valid + ") && " + taken) + ")");
  const std::string vec = cat("dv_vec<", ST, ", ", s.width, ">");
  const std::string ptr = cat("reinterpret_cast<const ", vec, "*>(", p, " + ", lane_index(in.index, s, "l0"), ")");
  w_.line(cat("const ", vec, " w = ", row_load_call(id, s, ptr), ";"));
  w_.open_unrolled("v", 0, s.width);
  w_.line(cat(v, "[c * ", s.width, " + v] = ", load_conv(b.dtype, "w.e[v]"), ";"));
  w_.close();
  w_.otherwise();
  w_.open_unrolled("v", 0, s.width);
  w_.line(cat(v, "[c * ", s.width, " + v] = ", other, ";"));
  w_.close();
  w_.close();
  w_.close();
}

void Emitter::emit_lane_load(ValueId id, const Segment& s) {
  const Instr& in = k_.body[id];
  if (!in.indirect && in.masked && access_kind(in, s) == LaneAccess::Contiguous && lane_uniform(in.mask_arg(), s))
    return emit_lane_masked_vector(id, s);
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
      w_.line(vector_store(cat("reinterpret_cast<dv_vec<", ST, ", ", s.width, ">*>(", p, " + ",
                               lane_index(in.index, s, "l0"), ")"),
                           "w", ir::dtype_size(b.dtype) * s.width));
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
  w_.line(vector_store(cat("reinterpret_cast<dv_vec<unsigned, ", pairs, ">*>(", p, " + ", lane_index(in.index, s, "l0"), ")"),
                       "w", 4 * pairs));
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
// arguments) a name for its entry in the size table, always: the iteration
// space is where symbolic sizes show, and a static size equal to one of them
// in another instance would make the two sources differ.
void Emitter::emit_size_constant(const std::string& name, std::int64_t value) {
  if (dev_.size_arguments) {
    w_.line(cat("#define ", name, " ((idx_t)", table_.entry(value), ")"));
    return;
  }
  w_.line(cat("constexpr idx_t ", name, " = ", idx_literal(value), ";"));
}

// How index constants are written: literals, or entries of the size table
// (the table's values travel with the launch), except the values of
// DeviceSpec::constant_sizes.
ConstMap Emitter::size_text() const {
  if (!dev_.size_arguments) return idx_literal;
  return [this](std::int64_t value) { return size_use(value, idx_literal(value)); };
}

// One use of a size (SizeTable::use).
std::string Emitter::size_use(std::int64_t value, const std::string& literal) const {
  return table_.use(value, literal);
}

std::string Emitter::table_entry_name(std::size_t i) { return cat("dv_n.v[", i, "]"); }

// A constant's value: a literal, or (size arguments) a whole number that may
// be a symbolic size (SizeTable::float_use, int_use).
std::string Emitter::constant_text(const Instr& in) const {
  if (!is_float(in.dtype)) return table_.int_use(in.ivalue, int_literal(in.ivalue, in.dtype), ctype(in.dtype));
  return table_.float_use(in.fvalue, float_literal(in.fvalue, in.dtype), ctype(in.dtype));
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


// With size arguments, a size that is not one of DeviceSpec::constant_sizes:
// it may take another value in the next instance, so no choice of the
// source may depend on it.
bool Emitter::symbolic_size(std::int64_t value) const { return table_.symbolic(value); }

// Whether the row count / row length may differ in another instance.
bool Emitter::xnumel_symbolic() const { return table_.xnumel_symbolic(k_.xnumel); }

bool Emitter::rnumel_symbolic() const { return table_.rnumel_symbolic(k_.rnumel); }

// The row count that launch layouts are chosen for: the kernel's own, or for
// a symbolic count a fixed stand-in, as many as the device's resident
// threads, so that one source serves every value (no compile per size class;
// the layouts are those of a count that fills the device).
std::int64_t Emitter::layout_xnumel() const {
  if (!xnumel_symbolic()) return k_.xnumel;
  return std::max<std::int64_t>(1, std::int64_t{dev_.sm_count} * 2048);
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
  // (Kernel parameters are limited to 4 KiB before sm_70 and CUDA 12.1.)
  const std::vector<std::int64_t>& size_args = table_.values();
  if (size_args.size() * (idx64_ ? 8 : 4) + k_.buffers.size() * 8 > 4096) fail("size table too large");
  std::string text = strip_line_comments(k.source);
  text = replace_all(text, kSizeTablePlaceholder, cat("struct DvSizes { idx_t v[", std::max<std::size_t>(1, size_args.size()), "]; };"));
  k.name = ir::hashed_name("dv_s", text);
  k.source = replace_all(text, kEntryPlaceholder, k.name);
  k.size_args = size_args.empty() ? std::vector<std::int64_t>{0} : size_args;  // the entry always takes the table
  k.size_args_64 = idx64_;
  return k;
}

}  // namespace dv::codegen::cuda

namespace dv::codegen {

LaneAccess classify_lane_access(const ir::IndexExpr& index, const std::string& lane_var, int vec) {
  return cuda::classify(index, cuda::LaneContext{lane_var, std::max(1, vec)});
}

CudaKernel emit_cuda(const ir::Kernel& kernel, const DeviceSpec& device, const KernelTuning& tuning) {
  return cuda::Emitter(kernel, device, tuning).run();
}

std::string to_string(const KernelTuning& t) {
  const KernelTuning d;
  std::string s;
  auto field = [&](bool differs, const std::string& text) {
    if (differs) s += (s.empty() ? "" : " ") + text;
  };
  field(t.pointwise_threads != d.pointwise_threads, "pw_threads=" + std::to_string(t.pointwise_threads));
  field(t.pointwise_chunks != d.pointwise_chunks, "pw_chunks=" + std::to_string(t.pointwise_chunks));
  field(t.row_chunks_per_thread != d.row_chunks_per_thread, "row_chunks=" + std::to_string(t.row_chunks_per_thread));
  field(t.row_max_threads != d.row_max_threads, "row_threads=" + std::to_string(t.row_max_threads));
  field(t.row_whole_warps != d.row_whole_warps, "row_whole_warps");
  field(t.row_force_looped != d.row_force_looped, t.row_force_looped ? "row_looped" : "row_not_looped");
  field(t.row_loop_hints != d.row_loop_hints, "loop_hints=" + std::to_string(t.row_loop_hints));
  field(t.row_loop_moments != d.row_loop_moments, t.row_loop_moments ? "loop_moments" : "no_loop_moments");
  field(t.row_one_step_looped != d.row_one_step_looped, t.row_one_step_looped ? "one_step_looped" : "no_one_step_looped");
  field(t.col_rows_per_block != d.col_rows_per_block, "col_rows=" + std::to_string(t.col_rows_per_block));
  field(t.row_block_threads != d.row_block_threads, "row_block=" + std::to_string(t.row_block_threads));
  field(t.stream_hints != d.stream_hints, t.stream_hints ? "stream" : "no_stream");
  field(t.fast_math != d.fast_math, t.fast_math ? "fast_math" : "no_fast_math");
  return s.empty() ? "default" : s;
}

}  // namespace dv::codegen
