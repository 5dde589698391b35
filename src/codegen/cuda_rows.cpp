// The row form (rnumel > 1): launch layouts, persistent and looped rows,
// column-major rows, the one-pass variance and load hints; the strategy is
// described at the top of cuda_emitter.cpp.
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
// The variance family's lowering now pivots the row itself (its mean is
// p + R1/N with R1 = sum(x - p), exact for a row of equal values): its lane
// values x - p need no second pivot, and b is R1's own thread part.

// R1 if `sq_sum` is reduce.sum(d * d) with d = x - mean, all in one float
// type, and either mean = R1 / N with R1 = reduce.sum(x), or (the variance
// family's pivoted mean) mean = p + R1 / N with R1 = reduce.sum(x - p) and p
// one value a row; N = rnumel. Else -1. In the second form the pair's lane
// values are x - p, whose squared deviations are x's.
ValueId Emitter::squared_deviation_source(ValueId sq_sum) const {
  const Instr& q = k_.body[sq_sum];
  if (q.op != PrimOp::Reduce || q.reduce != ReduceOp::Sum || !is_float(q.dtype)) return -1;
  const Instr& square = k_.body[resolve(q.args[0])];
  if (square.op != PrimOp::Mul || square.dtype != q.dtype || resolve(square.args[0]) != resolve(square.args[1])) return -1;
  const Instr& dev = k_.body[resolve(square.args[0])];
  if (dev.op != PrimOp::Sub || dev.dtype != q.dtype) return -1;
  const ValueId x = resolve(dev.args[0]);
  if (!lanes_[x] || k_.body[x].dtype != q.dtype) return -1;
  ValueId mean = resolve(dev.args[1]), pivot = -1;
  if (const Instr& m = k_.body[mean]; m.op == PrimOp::Add && m.dtype == q.dtype && !lanes_[resolve(m.args[0])]) {
    pivot = resolve(m.args[0]);
    mean = resolve(m.args[1]);
  }
  const Instr& m = k_.body[mean];
  if (m.op != PrimOp::Div || m.dtype != q.dtype) return -1;
  const Instr& count = k_.body[resolve(m.args[1])];
  if (count.op != PrimOp::Constant || count.fvalue != static_cast<double>(k_.rnumel)) return -1;
  const ValueId sum = resolve(m.args[0]);
  const Instr& s = k_.body[sum];
  if (s.op != PrimOp::Reduce || s.reduce != ReduceOp::Sum || s.dtype != q.dtype) return -1;
  const ValueId summed = resolve(s.args[0]);
  if (pivot < 0) return summed == x ? sum : -1;
  const Instr& shifted = k_.body[summed];
  const bool pivoted = shifted.op == PrimOp::Sub && resolve(shifted.args[0]) == x && resolve(shifted.args[1]) == pivot;
  return pivoted ? sum : -1;
}

// True when R1's lane values are x - p with p one value a row (the pivoted
// mean's form): they need no pivot of their own, and the thread's sum of them
// is R1's thread part.
bool Emitter::sums_pivoted(ValueId sum) const {
  const Instr& summed = k_.body[resolve(k_.body[sum].args[0])];
  return summed.op == PrimOp::Sub && !lanes_[resolve(summed.args[1])];
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
  if (!persistent && (!tune_.row_loop_moments || steps != 1)) return;
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
  const bool pivoted = sums_pivoted(sum);
  if (pivoted) {
    emit_thread_moments(x, "", s, "a");
  } else {
    w_.line(cat("const ", T, " pivot = ", row_start_value(x), ";  // x at the row's first element"));
    emit_thread_moments(x, "pivot", s, "");
  }
  emit_moments_combine(sum, sq_sum, pivoted);
  w_.close();
  // The row-start scalars were declared inside that scope: a later pair
  // (a second layer norm in the kernel) declares its own.
  std::fill(row_start_.begin(), row_start_.end(), std::string());
}

// `T b` (the thread's sum of x - pivot), `own` (the same, kept) and `q` (its
// squared deviations around its own mean) over the thread's K lane values.
// An empty `pivot` takes x as it is; a `thread_sum` names b's value where the
// thread has it already.
void Emitter::emit_thread_moments(ValueId x, const std::string& pivot, const Segment& s, const std::string& thread_sum) {
  const DType t = k_.body[x].dtype;
  const std::string T = ctype(t), K = float_literal(moments_per_thread_, t);
  auto add = [&](const std::string& a, const std::string& b) { return reduce_combine(ReduceOp::Sum, t, a, b); };
  const std::string shifted = pivot.empty() ? ref(x, "k") : cat("(", ref(x, "k"), " - ", pivot, ")");
  if (thread_sum.empty()) {
    w_.line(cat(T, " b = ", zero_of(t), ";  // the thread's sum of x - pivot"));
    w_.open_unrolled("k", 0, s.size());
    w_.line("b = " + add("b", shifted) + ";");
    w_.close();
  } else {
    w_.line(cat(T, " b = ", thread_sum, ";  // the thread's sum of x - pivot"));
  }
  w_.line(cat("const ", T, " own = b, own_mean = b / ", K, ";"));
  w_.line(cat(T, " q = ", zero_of(t), ";"));
  w_.open_unrolled("k", 0, s.size());
  w_.line(cat("const ", T, " d = ", shifted, " - own_mean;"));
  w_.line("q = " + add("q", "d * d") + ";");
  w_.close();
}

// With the thread's `a` (its sum of x), `b` and `own` (its sum of x - pivot)
// and `q` (its squared deviations around its own mean) in scope: combines the
// row's threads into R1 and R2 (or their warps' parts in shared memory).
// Where R1 sums pivoted values (`b_is_a`), b is a: one butterfly for both.
void Emitter::emit_moments_combine(ValueId sum, ValueId sq_sum, bool b_is_a) {
  const DType t = k_.body[sum].dtype;
  const std::string T = ctype(t), v1 = name(sum), v2 = name(sq_sum);
  const int group = std::min(tpr_, 32);  // lanes of a row that shuffle together
  const std::string K = float_literal(moments_per_thread_, t);
  auto add = [&](const std::string& a, const std::string& b) { return reduce_combine(ReduceOp::Sum, t, a, b); };
  if (b_is_a) {
    emit_butterfly(ReduceOp::Sum, t, {"a"}, group);
    w_.line("b = a;");
  } else {
    emit_butterfly(ReduceOp::Sum, t, {"a", "b"}, group);
  }
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
  if (!sums_pivoted(sum))
    w_.line(cat("const ", T, " pivot_", v2, " = ", row_start_value(resolve(k_.body[sum].args[0])),
                ";  // x at the row's first element"));
  w_.line(cat(T, " mb_", v2, " = ", zero, ", mq_", v2, " = ", zero, ";  // the thread's sum of x - pivot; its squared deviations"));
}

void Emitter::emit_looped_moments_step(ValueId sum, const Segment& s) {
  const std::string v2 = name(sq_sum_of_[sum]);
  w_.open("");
  emit_thread_moments(resolve(k_.body[sum].args[0]), sums_pivoted(sum) ? "" : "pivot_" + v2, s, "");
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
  emit_moments_combine(sum, sq_sum_of_[sum], sums_pivoted(sum));
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


// Which threads share a row, and how much of it each holds.
struct RowLayout {
  bool col_major = false;  // consecutive threads take consecutive rows (else a row's threads are consecutive)
  int vec = 1;             // W
  std::int64_t tpr = 1, rpb = 1, threads = 32;
  bool persistent = true;
  int nchunk = 1;          // chunks per thread (persistent) or per iteration (looped)
  std::int64_t outer = 1;  // iterations per pass (looped; 0: counted at run time)
};

// The iterations of a looped pass: a literal, or (a symbolic row length,
// L.outer == 0) the count from kRnumel at run time.
std::string outer_text(const RowLayout& L) {
  if (L.outer > 0) return cat(L.outer);
  return cat("(kRnumel + ", L.tpr * L.nchunk * L.vec - 1, ") / ", L.tpr * L.nchunk * L.vec);
}

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
  return tune_.row_one_step_looped && writes_rows() && vec == 4 && max_lane_access_bytes() == 4 &&
         tune_.row_chunks_per_thread == 2 && chunks > widest_tpr && chunks <= 2 * widest_tpr;
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

// The tuning's whole-warp layout (KernelTuning::row_whole_warps): threads a
// row that hold exactly `target_chunks` of its `chunks` each, in whole warps,
// or 0 where the row does not split so. Not a power of two in general: the
// warps' partial results combine through shared memory slot by slot.
std::int64_t Emitter::whole_warps_threads(std::int64_t chunks, int target_chunks, std::int64_t max_block) const {
  if (!tune_.row_whole_warps || tune_.row_force_looped || chunks % target_chunks != 0) return 0;
  const std::int64_t tpr = chunks / target_chunks;
  return tpr % 32 == 0 && tpr <= max_block ? tpr : 0;
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
  // A symbolic row length (size arguments): the looped form, scalar lanes,
  // a run-time count of iterations and every chunk masked, so the source
  // does not depend on the length.
  const bool symbolic_r = rnumel_symbolic();
  if (prefers_col_major()) {
    // Warps cover 32 consecutive rows (coalesced along x); up to 32 threads
    // split each row's r range, combined through shared memory.
    L.col_major = true;
    L.vec = 1;
    // 64 rows (256 contiguous bytes of f32 per r) once there are enough for a
    // block an SM: mean(0) of 4096x16384 f32 103.9 -> 101.2 us against 32.
    const std::int64_t wide = std::clamp<std::int64_t>(tune_.col_rows_per_block / 32 * 32, 32, max_block);
    L.rpb = layout_xnumel() >= wide * dev_.sm_count ? wide : 32;
    L.tpr = 1;
    while (L.tpr < 32 && (symbolic_r || L.tpr < k_.rnumel) && L.rpb * L.tpr * 2 <= max_block &&
           (layout_xnumel() * L.tpr < fill_threads || L.rpb * L.tpr < 128))
      L.tpr *= 2;
    L.threads = L.rpb * L.tpr;
    L.persistent = !symbolic_r && fits(ceil_div(k_.rnumel, L.tpr), 1, L.threads);
  } else if (symbolic_r) {
    // A warp a row, more while the rows would not fill the device.
    L.vec = 1;
    L.persistent = false;
    L.tpr = 32;
    while (L.tpr < max_block && layout_xnumel() * L.tpr < fill_threads) L.tpr *= 2;
    L.threads = std::max<std::int64_t>(L.tpr, 128);
    L.rpb = L.threads / L.tpr;
  } else {
    // Vector width: 16 bytes of the widest r-level access, dividing rnumel.
    L.vec = std::max(1, 16 / std::max(1, max_lane_access_bytes()));
    while (L.vec > 1 && k_.rnumel % L.vec != 0) L.vec /= 2;
    const std::int64_t chunks = k_.rnumel / L.vec;  // per row
    // Two chunks a thread, with at most 512 threads a row while the row fits
    // that way. Measured on the H100 (bench/NOTES.md, 2026-11-25): layer_norm
    // of 4096 ran fastest with 2 chunks (f32: 512 threads; bf16: 256) against
    // 1, 4 or 8; more chunks raise registers and cut the rows in flight.
    const int target_chunks = std::max(1, tune_.row_chunks_per_thread);
    const std::int64_t preferred_tpr = std::max(32, tune_.row_max_threads);
    const std::int64_t max_tpr = std::min<std::int64_t>(max_block, next_pow2(chunks));
    const std::int64_t shared_block = std::clamp<std::int64_t>(next_pow2(tune_.row_block_threads), 32, max_block);
    // Rows of fewer threads than a shared block share one: as many whole rows as fit.
    auto block_threads = [&](std::int64_t tpr) {
      if (tpr >= shared_block) return tpr;
      return std::max<std::int64_t>(32, tpr * std::min(shared_block / tpr, next_pow2(layout_xnumel())));
    };
    // About target_chunks chunks per thread, more threads while the grid would not fill the GPU.
    auto choose_tpr = [&] {
      std::int64_t tpr = std::min({max_tpr, preferred_tpr, next_pow2(ceil_div(chunks, target_chunks))});
      while (tpr < max_tpr && layout_xnumel() * tpr < fill_threads) tpr *= 2;
      return tpr;
    };
    const std::int64_t whole_warps_tpr = whole_warps_threads(chunks, target_chunks, max_block);
    const bool whole_warps = whole_warps_tpr > 0 && fits(target_chunks, L.vec, block_threads(whole_warps_tpr));
    L.persistent = whole_warps;
    L.tpr = whole_warps_tpr;
    for (std::int64_t tpr = choose_tpr(); !whole_warps && tpr <= max_tpr && !tune_.row_force_looped; tpr *= 2)
      if (fits(ceil_div(chunks, tpr), L.vec, block_threads(tpr))) {
        L.tpr = tpr;
        L.persistent = true;
        break;
      }
    one_step = L.persistent && !whole_warps && prefers_one_looped_step(chunks, L.vec, preferred_tpr);
    if (one_step) L.persistent = false;
    if (L.persistent && !whole_warps)
      L.tpr = equal_share_tpr(L.tpr, chunks, [&](std::int64_t tpr) {
        return layout_xnumel() * tpr >= fill_threads && fits(chunks / tpr, L.vec, block_threads(tpr));
      });
    else if (!L.persistent)
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
    L.nchunk = tune_.row_force_looped || one_step ? std::max(1, tune_.row_chunks_per_thread)
                                                 : std::max(1, std::min(8, 32 / L.vec));
    L.outer = symbolic_r ? 0 : ceil_div(chunks, L.tpr * L.nchunk);
    s.mask = symbolic_r || chunks % (L.tpr * L.nchunk) != 0 ? Segment::Mask::Every : Segment::Mask::None;
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
      L.persistent ? "" : cat(" per iteration, ", outer_text(L), " iterations per pass, ", loops, " passes"));
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
    emit_rows_looped(s, outer_text(L), pass, needs);
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

void Emitter::emit_rows_looped(Segment s, const std::string& outer, const std::vector<int>& pass,
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
  if (tune_.row_loop_hints == 0) return;
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

}  // namespace dv::codegen::cuda
