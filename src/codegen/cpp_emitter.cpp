// The host C++ emitter: the structure of the generated code (cpp_emitter.h
// describes the kernel forms). The expression of each value is cpp_ops.cpp's.
//
// Stages. In a row kernel (rnumel > 1) a value's stage is the number of
// reduction loops that must finish before it can be computed: stage(v) is
// the largest stage of its operands, and a Reduce whose operand has stage s
// is accumulated in loop s and available from stage s + 1. An x-level value
// of stage s is computed once per row, after loop s - 1; an r-level value of
// stage s is computed inside each loop t >= s that needs it (a loop needs
// the operands of its reductions and stores, transitively), or, when loop s
// itself computes it and a later loop needs it again, kept in a row buffer.
#include "codegen/cpp_emitter.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <vector>

#include "codegen/cpp_ops.h"
#include "codegen/cpp_prelude.h"

namespace dv::codegen {
namespace {

using cpp::CppUnsupported;
using ir::DType;
using ir::IndexExpr;
using ir::Instr;
using ir::Kernel;
using ir::PrimOp;
using ir::ReduceOp;
using ir::ValueId;

std::string v_name(ValueId v) { return "v" + std::to_string(v); }
// Entry i of the size table, loaded into a local at the entry's start.
std::string size_name(std::size_t i) { return "dv_n" + std::to_string(i); }
std::string buf_name(int b) { return "b" + std::to_string(b); }

bool is_float(DType t) { return t == DType::Float32 || t == DType::Float64; }

// Where the entry's name and the loads of its size table go (size
// arguments: both are known once the body is written).
const char* const kEntryPlaceholder = "@@dv_entry@@";
const char* const kSizeTablePlaceholder = "@@dv_size_table@@";

std::string replace_first(std::string text, const std::string& from, const std::string& to) {
  const std::size_t at = text.find(from);
  return at == std::string::npos ? text : text.replace(at, from.size(), to);
}

// Values worth keeping in a row buffer rather than recomputing: anything but
// a re-read of memory or a constant.
bool worth_caching(PrimOp op) { return op != PrimOp::Load && op != PrimOp::Constant && op != PrimOp::Index; }

class Writer {
 public:
  Writer(const Kernel& k, const CppOptions& options)
      : k_(k), options_(options), table_(options_.size_arguments, options_.constant_sizes, options_.origins, &size_name) {}
  CppKernel write();

 private:
  void check() const;
  void check_instr(ValueId v) const;
  void mark_levels();
  void assign_stages();
  std::vector<bool> needs_of_loop(int loop) const;
  void plan_row_cache();
  void keep_cache_in_outputs();
  bool is_row_of_store(const Instr& store) const;
  std::string cache_element(ValueId v);

  void write_entry();
  void write_pointwise();
  void write_rows();
  void write_x_stage(int stage);
  void write_loop(int loop);
  void write_loop_body(int loop);
  void write_loop_form(int loop, const std::string& clauses, bool partial_sums);
  void write_plain_loop(int loop, const std::string& clauses, const std::string& first);
  void write_prefetch_next_row();
  std::vector<ValueId> row_divisors(int loop) const;
  bool partial_sums_fit(int loop) const;
  bool loop_calls_function(int loop) const;
  bool cheap_to_recompute(ValueId v) const;
  void write_value(ValueId v, bool in_loop);
  void write_load(ValueId v);
  void write_store(ValueId v);
  std::string checked_element(const Instr& in, const std::string& element_var, const std::string& ok_var);
  bool statically_in_bounds(const Instr& in) const;
  bool vars_are_kernels(const IndexExpr& e) const;
  void line(const std::string& text);
  std::string index_text(const IndexExpr& e, bool bounds_hold);
  std::string size_text(std::int64_t value);
  std::string constant_text(const Instr& in);
  std::string row_bytes_text(std::size_t upto) const;
  CppKernel with_size_arguments(CppKernel k) const;

  // Reductions: the accumulator's declaration, update and result.
  std::string acc_name(ValueId v) const { return "acc" + std::to_string(v); }
  std::string acc_init(ValueId v) const;
  std::string acc_update(ValueId v) const;
  std::string acc_result(ValueId v) const;
  std::string acc_clause(ValueId v) const;

  const Kernel& k_;
  CppOptions options_;
  SizeTable table_;  // (after options_, which it reads)
  std::vector<bool> r_level_;
  std::vector<int> stage_;
  int loops_ = 0;
  std::vector<std::vector<bool>> needs_;  // per loop: the values it computes (or reads from the row buffer)
  std::vector<bool> cached_;              // kept in a row buffer by the loop of its stage
  std::vector<ValueId> cache_order_;      // the values in the row buffer, in the order of their offsets
  std::vector<ValueId> cache_store_;      // a cached value kept in the row of this store's output instead (-1: none)
  std::int64_t cache_bytes_ = 0;
  bool serial_ = false;
  int loop_ = -1;  // the loop being written, -1 outside
  std::vector<bool> reciprocal_;  // x-level divisors read as their reciprocal (rcpN) in the loop being written
  std::vector<bool> partial_;     // Sum reductions accumulated in partial sums (accNp[j]) in the loop being written
  std::ostringstream out_;
  int indent_ = 0;
};

void Writer::line(const std::string& text) { out_ << std::string(2 * indent_, ' ') << text << "\n"; }

// Sizes in the text: literals, or with size arguments entries of the size
// table (codegen/size_table.h).
std::string Writer::index_text(const IndexExpr& e, bool bounds_hold) {
  return cpp::index(e, bounds_hold, [this](std::int64_t v) { return size_text(v); });
}

std::string Writer::size_text(std::int64_t value) { return table_.use(value, cpp::int_literal(value)); }

// A Constant's value: a literal, or (size arguments) a whole number that may
// be a symbolic size (SizeTable::float_use, int_use).
std::string Writer::constant_text(const Instr& in) {
  if (!is_float(in.dtype)) return table_.int_use(in.ivalue, cpp::constant(in), cpp::compute_type(in.dtype));
  return table_.float_use(in.fvalue, cpp::constant(in), cpp::compute_type(in.dtype));
}

// The bytes of the row buffer's first `upto` values (cache_order_), each row
// on whole cache lines, as an expression of kRnumel (a size, not a number of
// the source).
std::string Writer::row_bytes_text(std::size_t upto) const {
  std::string sum;
  for (std::size_t i = 0; i < upto; ++i)
    sum += (i ? " + " : "") + std::string("(kRnumel * ") + std::to_string(ir::dtype_size(k_.body[cache_order_[i]].dtype)) +
           " + 63) / 64 * 64";
  return sum.empty() ? "0" : "(" + sum + ")";
}

// What the emitter relies on; anything else is reported unsupported (the
// interpreter, which validates kernels fully, runs it and says what is wrong).
void Writer::check() const {
  if (k_.xnumel < 0 || k_.rnumel < 0) throw CppUnsupported("negative extent");
  if (k_.rnumel == 0) throw CppUnsupported("rnumel == 0");
  for (const auto& b : k_.buffers)
    if (!ir::is_kernel_dtype(b.dtype)) throw CppUnsupported("buffer dtype " + std::string(ir::dtype_name(b.dtype)));
  std::vector<bool> loaded(k_.buffers.size()), stored(k_.buffers.size());
  for (std::size_t v = 0; v < k_.body.size(); ++v) {
    check_instr(static_cast<ValueId>(v));
    const Instr& in = k_.body[v];
    if (in.op == PrimOp::Load) loaded[in.buffer] = true;
    if (in.op == PrimOp::Store) stored[in.buffer] = true;
  }
  // Loops are reordered (stages, simd lanes): a buffer both read and written
  // in one kernel would see writes at other times than the interpreter does.
  for (std::size_t b = 0; b < k_.buffers.size(); ++b)
    if (loaded[b] && stored[b]) throw CppUnsupported("buffer " + k_.buffers[b].name + " is both loaded and stored");
}

void Writer::check_instr(ValueId v) const {
  const Instr& in = k_.body[v];
  if (static_cast<int>(in.args.size()) != in.operand_count()) throw CppUnsupported("wrong operand count");
  for (ValueId a : in.args)
    if (a < 0 || a >= v) throw CppUnsupported("operand defined after use");
  if (in.op != PrimOp::Store && (!ir::is_kernel_dtype(in.dtype) || in.dtype != ir::compute_dtype(in.dtype)))
    throw CppUnsupported("result dtype is not a compute dtype");
  if (in.op == PrimOp::Load || in.op == PrimOp::Store) {
    if (in.buffer < 0 || in.buffer >= static_cast<int>(k_.buffers.size())) throw CppUnsupported("bad buffer");
    const DType storage = k_.buffers[in.buffer].dtype;
    if (in.op == PrimOp::Load && in.dtype != ir::compute_dtype(storage)) throw CppUnsupported("load dtype");
    if (in.op == PrimOp::Store && in.accumulate && (storage == DType::Bool || in.dtype != ir::compute_dtype(storage)))
      throw CppUnsupported("accumulating store dtype");
    if (in.indirect) {
      const DType t = k_.body[in.offset_arg()].dtype;
      if (t != DType::Int32 && t != DType::Int64) throw CppUnsupported("offset dtype");
    }
    if (in.op == PrimOp::Load && in.masked && k_.body[in.mask_arg()].dtype != DType::Bool)
      throw CppUnsupported("mask dtype");
  }
  if (in.op == PrimOp::Where && (k_.body[in.args[0]].dtype != DType::Bool || k_.body[in.args[1]].dtype != in.dtype ||
                                 k_.body[in.args[2]].dtype != in.dtype))
    throw CppUnsupported("where operand dtypes");
  if ((in.op == PrimOp::Reduce || in.op == PrimOp::Store) && k_.body[in.args[0]].dtype != in.dtype)
    throw CppUnsupported("operand dtype");
  if (in.op != PrimOp::Load && in.op != PrimOp::Store && in.args.size() == 2 &&
      k_.body[in.args[0]].dtype != k_.body[in.args[1]].dtype)
    throw CppUnsupported("operand dtypes differ");
}

// As the interpreter's mark_levels (rnumel == 0 is not supported here).
void Writer::mark_levels() {
  r_level_.assign(k_.body.size(), false);
  if (k_.rnumel == 1) return;
  for (std::size_t v = 0; v < k_.body.size(); ++v) {
    const Instr& in = k_.body[v];
    if (in.op == PrimOp::Reduce) continue;
    bool r = (in.op == PrimOp::Load || in.op == PrimOp::Store || in.op == PrimOp::Index) && in.index.uses_var("r");
    for (ValueId a : in.args) r = r || r_level_[a];
    r_level_[v] = r;
  }
}

void Writer::assign_stages() {
  stage_.assign(k_.body.size(), 0);
  loops_ = 0;
  for (std::size_t v = 0; v < k_.body.size(); ++v) {
    const Instr& in = k_.body[v];
    int s = 0;
    for (ValueId a : in.args) s = std::max(s, stage_[a]);
    if (in.op == PrimOp::Reduce) {
      loops_ = std::max(loops_, s + 1);
      ++s;
    } else if (in.op == PrimOp::Store && r_level_[v]) {
      loops_ = std::max(loops_, s + 1);
    }
    stage_[v] = s;
  }
  // Stores into one buffer must keep their body order: an x-level store of
  // stage s runs before loop s, an r-level one inside it.
  std::vector<int> last(k_.buffers.size(), -1);
  for (std::size_t v = 0; v < k_.body.size(); ++v) {
    const Instr& in = k_.body[v];
    if (in.op != PrimOp::Store) continue;
    const int at = 2 * stage_[v] + (r_level_[v] ? 1 : 0);
    if (at < last[in.buffer]) throw CppUnsupported("stores into one buffer in another order than the stages'");
    last[in.buffer] = at;
  }
}

// The r-level values loop `loop` needs: the operands of the reductions it
// accumulates and the r-level stores it runs, transitively, stopping at
// values an earlier loop keeps in the row buffer.
std::vector<bool> Writer::needs_of_loop(int loop) const {
  std::vector<bool> need(k_.body.size(), false);
  for (std::size_t i = k_.body.size(); i-- > 0;) {
    const auto v = static_cast<ValueId>(i);
    const Instr& in = k_.body[v];
    const bool root = (in.op == PrimOp::Reduce && stage_[in.args[0]] == loop) ||
                      (in.op == PrimOp::Store && r_level_[v] && stage_[v] == loop);
    if (!root && !need[v]) continue;
    if (in.op == PrimOp::Reduce) {
      if (r_level_[in.args[0]]) need[in.args[0]] = true;
      continue;
    }
    need[v] = true;
    if (cached_[v] && stage_[v] < loop) continue;  // read from the row buffer
    for (ValueId a : in.args)
      if (r_level_[a]) need[a] = true;
  }
  return need;
}

// Keeps in a row buffer each value that the loop of its stage computes and a
// later loop needs again, while one row of them fits options_.max_row_cache_bytes.
// Users come later in the body than their operands: deciding from the last
// value backwards, a value whose users are all kept is not needed again (the
// softmax's exp is kept, not the difference it is the exp of).
void Writer::plan_row_cache() {
  cached_.assign(k_.body.size(), false);
  cache_order_.clear();
  std::vector<std::vector<bool>> computed(loops_);
  for (int s = 0; s < loops_; ++s) computed[s] = needs_of_loop(s);
  std::int64_t bytes = 0;
  for (std::size_t i = k_.body.size(); i-- > 0;) {
    const auto v = static_cast<ValueId>(i);
    const int s = stage_[v];
    const Instr& in = k_.body[v];
    if (!r_level_[v] || !worth_caching(in.op) || in.op == PrimOp::Store || s >= loops_ || !computed[s][v]) continue;
    if (cheap_to_recompute(v)) continue;
    bool later = false;
    for (int t = s + 1; t < loops_ && !later; ++t) later = needs_of_loop(t)[v];
    if (!later) continue;
    const std::int64_t row = (k_.rnumel * ir::dtype_size(in.dtype) + 63) / 64 * 64;
    if (bytes + row > options_.max_row_cache_bytes) continue;
    cached_[v] = true;
    cache_order_.push_back(v);
    bytes += row;
  }
  cache_bytes_ = bytes;
  needs_.assign(loops_, {});
  for (int s = 0; s < loops_; ++s) needs_[s] = needs_of_loop(s);
  keep_cache_in_outputs();
}

// Whether a store writes element x * rnumel + r (each row its own run of
// rnumel elements, in bounds).
bool Writer::is_row_of_store(const Instr& store) const {
  if (store.indirect || store.masked || store.accumulate || !statically_in_bounds(store)) return false;
  for (std::int64_t x : {std::int64_t{0}, std::int64_t{1}, k_.xnumel - 1})
    for (std::int64_t r : {std::int64_t{0}, std::int64_t{1}, k_.rnumel - 1}) {
      const std::int64_t at = store.index.eval([&](const std::string& n) { return n == "x" ? x : n == "r" ? r : 0; });
      if (at != x * k_.rnumel + r) return false;
    }
  return true;
}

// A cached value that a later loop reads only up to the loop that stores
// the kernel's result row is kept in that row of the output instead of the
// row buffer (as ATen's softmax keeps exp in its output and scales it in
// place): the output's lines are then fetched while the earlier loop
// computes, and the row's data take two rows of cache instead of three
// (softmax 1024x1024, kernel alone: 0.548 -> 0.495 ms). The store must be
// the buffer's only one, of the value's type unconverted, come after the
// value in the body (so the last loop reads each element before it
// overwrites it), and no loop after it may read the value.
void Writer::keep_cache_in_outputs() {
  cache_store_.assign(k_.body.size(), -1);
  if (serial_) return;
  std::vector<int> stores(k_.buffers.size(), 0);
  for (const Instr& in : k_.body)
    if (in.op == PrimOp::Store) ++stores[in.buffer];
  std::vector<bool> taken(k_.buffers.size(), false);
  bool moved = false;
  for (std::size_t i = 0; i < k_.body.size(); ++i) {
    const auto v = static_cast<ValueId>(i);
    if (!cached_[v] || !is_float(k_.body[v].dtype)) continue;
    for (std::size_t j = i + 1; j < k_.body.size(); ++j) {
      const Instr& st = k_.body[j];
      if (st.op != PrimOp::Store || !r_level_[j] || stores[st.buffer] != 1 || taken[st.buffer]) continue;
      if (k_.buffers[st.buffer].dtype != k_.body[v].dtype || stage_[j] <= stage_[v] || !is_row_of_store(st)) continue;
      bool read_after = false;
      for (int t = stage_[j] + 1; t < loops_; ++t) read_after = read_after || needs_[t][v];
      if (read_after) continue;
      cache_store_[v] = static_cast<ValueId>(j);
      taken[st.buffer] = true;
      moved = true;
      break;
    }
  }
  if (!moved) return;
  std::int64_t bytes = 0;  // the row buffer without them
  cache_order_.clear();
  for (std::size_t i = k_.body.size(); i-- > 0;) {
    if (!cached_[i] || cache_store_[i] >= 0) continue;
    cache_order_.push_back(static_cast<ValueId>(i));
    bytes += (k_.rnumel * ir::dtype_size(k_.body[i].dtype) + 63) / 64 * 64;
  }
  cache_bytes_ = bytes;
}

// The element of a cached value for row x, element r.
std::string Writer::cache_element(ValueId v) {
  if (cache_store_[v] < 0) return "c" + std::to_string(v) + "[r]";
  const Instr& st = k_.body[cache_store_[v]];
  return buf_name(st.buffer) + "[" + index_text(st.index, true) + "]";
}

// A value one inline arithmetic operation away from one plain load (its other
// operands x-level): a later loop recomputes it rather than reading it from the
// row buffer, since the load (of a row just read, in cache) replaces the
// buffer's load and the operation the buffer's store (layer_norm's x - mean).
bool Writer::cheap_to_recompute(ValueId v) const {
  const Instr& in = k_.body[v];
  switch (in.op) {
    case PrimOp::Add:
    case PrimOp::Sub:
    case PrimOp::Mul:
    case PrimOp::Neg:
    case PrimOp::Abs:
    case PrimOp::Cast: break;
    default: return false;
  }
  int loads = 0;
  for (ValueId a : in.args) {
    if (!r_level_[a]) continue;
    const Instr& op = k_.body[a];
    if (op.op != PrimOp::Load || op.indirect || op.masked || !statically_in_bounds(op)) return false;
    ++loads;
  }
  return loads == 1;
}

bool Writer::vars_are_kernels(const IndexExpr& e) const {
  if (e.is_var())
    return (e.name() == "x" && e.extent() == k_.xnumel) || (e.name() == "r" && e.extent() == k_.rnumel);
  if (e.is_const()) return true;
  for (const auto& o : e.operands())
    if (!vars_are_kernels(o)) return false;
  return true;
}

// True when every element the access can touch lies in its buffer, by the
// index's static bounds (and, for an indirect access, the offset's extent).
bool Writer::statically_in_bounds(const Instr& in) const {
  if (!vars_are_kernels(in.index)) return false;
  std::int64_t lo = in.index.min_value(), hi = in.index.max_value();
  if (in.indirect) {
    if (in.offset_extent <= 0) return false;
    const std::int64_t span = (in.offset_extent - 1) * in.offset_stride;
    (span >= 0 ? hi : lo) += span;
  }
  return lo >= 0 && hi < k_.buffers[in.buffer].numel;
}

// Declares `element_var` (the element an access touches) and clears `ok_var`
// (declared by the caller) where the access must not happen, recording why in
// `err`. A masked-off point is cleared without an error.
std::string Writer::checked_element(const Instr& in, const std::string& element_var, const std::string& ok_var) {
  const bool bounds_hold = vars_are_kernels(in.index);
  std::string code = "dv_i64 " + element_var + " = " + index_text(in.index, bounds_hold) + ";";
  std::string active;
  if (in.masked) active = v_name(in.mask_arg());
  if (in.indirect) {
    const std::string o = "(dv_i64)" + v_name(in.offset_arg());
    code += " if (" + (active.empty() ? std::string("true") : active) + ") { if ((dv_u64)(" + o + ") >= (dv_u64)" +
            size_text(in.offset_extent) + ") { err |= 1; " + ok_var + " = false; } " + element_var + " += " + o +
            " * " + size_text(in.offset_stride) + "; }";
  }
  if (!statically_in_bounds(in)) {
    code += " if (" + ok_var + (active.empty() ? "" : " && " + active) + " && (dv_u64)" + element_var +
            " >= (dv_u64)" + size_text(k_.buffers[in.buffer].numel) + ") { err |= 2; " + ok_var + " = false; }";
  }
  if (!active.empty()) code += " " + ok_var + " = " + ok_var + " && " + active + ";";
  return code;
}

void Writer::write_load(ValueId v) {
  const Instr& in = k_.body[v];
  const DType storage = k_.buffers[in.buffer].dtype;
  const std::string type = cpp::compute_type(in.dtype), name = v_name(v), buf = buf_name(in.buffer);
  const bool plain = !in.indirect && !in.masked && statically_in_bounds(in);
  if (plain) {
    const std::string element = index_text(in.index, true);
    line("const " + type + " " + name + " = " + cpp::decode(storage, buf + "[" + element + "]") + ";");
    return;
  }
  const std::string other = is_float(in.dtype) ? cpp::float_literal(in.fvalue, in.dtype)
                                                : cpp::cast(DType::Int64, in.dtype, cpp::int_literal(in.ivalue));
  const std::string e = "e" + std::to_string(v), ok = "ok" + std::to_string(v);
  line("bool " + ok + " = true; " + checked_element(in, e, ok));
  line("const " + type + " " + name + " = " + ok + " ? " + cpp::decode(storage, buf + "[" + e + "]") + " : " + other +
       ";");
}

void Writer::write_store(ValueId v) {
  const Instr& in = k_.body[v];
  const DType storage = k_.buffers[in.buffer].dtype;
  const std::string value = v_name(in.args[0]), buf = buf_name(in.buffer);
  const std::string e = "e" + std::to_string(v), ok = "ok" + std::to_string(v);
  std::string element = index_text(in.index, true);
  std::string guard;
  if (in.indirect || !statically_in_bounds(in)) {
    line("bool " + ok + " = true; " + checked_element(in, e, ok));
    element = e;
    guard = "if (" + ok + ") ";
  }
  const std::string target = buf + "[" + element + "]";
  if (in.accumulate) {
    // element + value in the compute dtype (wrapping for ints), then rounded.
    const std::string sum = ir::is_integral(in.dtype) ? "dv_wadd(" + cpp::decode(storage, target) + ", " + value + ")"
                                                      : "(" + cpp::decode(storage, target) + " + " + value + ")";
    line(guard + target + " = " + cpp::encode(storage, in.dtype, sum) + ";");
  } else {
    line(guard + target + " = " + cpp::encode(storage, in.dtype, value) + ";");
  }
}

void Writer::write_value(ValueId v, bool in_loop) {
  const Instr& in = k_.body[v];
  const std::string type = in.op == PrimOp::Store ? "" : cpp::compute_type(in.dtype);
  auto define = [&](const std::string& expr) { line("const " + type + " " + v_name(v) + " = " + expr + ";"); };
  auto arg = [&](int i) { return v_name(in.args[i]); };
  auto arg_dtype = [&](int i) { return k_.body[in.args[i]].dtype; };
  if (in_loop && cached_[v] && stage_[v] < loop_) {
    define(cache_element(v));
    return;
  }
  switch (in.op) {
    case PrimOp::Constant: define(constant_text(in)); break;
    case PrimOp::Index: define(cpp::cast(DType::Int64, in.dtype, index_text(in.index, vars_are_kernels(in.index)))); break;
    case PrimOp::Load: write_load(v); break;
    case PrimOp::Store: write_store(v); break;
    case PrimOp::Cast: define(cpp::cast(arg_dtype(0), in.dtype, arg(0))); break;
    case PrimOp::Where: define("(" + arg(0) + " ? " + arg(1) + " : " + arg(2) + ")"); break;
    case PrimOp::Reduce:
      if (k_.rnumel == 1) define(arg(0));  // one element: the value itself
      else line(acc_update(v));
      break;
    default:
      if (in.op == PrimOp::Div && in_loop && reciprocal_[in.args[1]]) {
        define("(" + arg(0) + " * rcp" + std::to_string(in.args[1]) + ")");
        break;
      }
      if (ir::prim_op_arity(in.op) == 1) define(cpp::unary(in.op, arg_dtype(0), arg(0)));
      else define(cpp::binary(in.op, arg_dtype(0), in.dtype, arg(0), arg(1)));
  }
  if (in_loop && cached_[v]) line(cache_element(v) + " = " + v_name(v) + ";");
}

// Accumulators. Integers add and multiply in the unsigned type (wrapping);
// bools reduce as any (Sum, Max) or all (Prod, Min); float Max and Min
// ignore NaN in the comparison and track it in a flag, so that the simd
// reduction is a plain max and the result still propagates NaN.
std::string Writer::acc_init(ValueId v) const {
  const Instr& in = k_.body[v];
  const std::string a = acc_name(v);
  const DType t = in.dtype;
  const bool max = in.reduce == ReduceOp::Max, sum = in.reduce == ReduceOp::Sum;
  if (t == DType::Bool) return "int " + a + " = " + (sum || max ? "0" : "1") + ";";
  if (ir::is_integral(t)) {
    const std::string type = cpp::compute_type(t);
    if (sum || in.reduce == ReduceOp::Prod)
      return (t == DType::Int32 ? "dv_u32 " : "dv_u64 ") + a + " = " + (sum ? "0" : "1") + ";";
    return type + " " + a + " = dv_int<" + type + ">::" + (max ? "min" : "max") + ";";
  }
  if (sum || in.reduce == ReduceOp::Prod) return cpp::compute_type(t) + " " + a + " = " + cpp::float_literal(sum ? 0 : 1, t) + ";";
  return cpp::compute_type(t) + " " + a + " = " + cpp::float_literal(max ? -INFINITY : INFINITY, t) + "; int " + a +
         "n = 0;";
}

std::string Writer::acc_update(ValueId v) const {
  const Instr& in = k_.body[v];
  const std::string a = acc_name(v), x = v_name(in.args[0]);
  const DType t = in.dtype;
  const bool bool_any = in.reduce == ReduceOp::Sum || in.reduce == ReduceOp::Max;
  if (t == DType::Bool) return a + (bool_any ? " |= " : " &= ") + "(int)" + x + ";";
  const bool max = in.reduce == ReduceOp::Max;
  switch (in.reduce) {
    case ReduceOp::Sum:
      if (!partial_.empty() && partial_[v]) return a + "p[j] += " + x + ";";
      return ir::is_integral(t) ? a + " += (" + (t == DType::Int32 ? "dv_u32" : "dv_u64") + ")" + x + ";"
                                : a + " += " + x + ";";
    case ReduceOp::Prod:
      return ir::is_integral(t) ? a + " *= (" + (t == DType::Int32 ? "dv_u32" : "dv_u64") + ")" + x + ";"
                                : a + " *= " + x + ";";
    case ReduceOp::Max:
    case ReduceOp::Min: {
      const std::string update = a + " = " + x + (max ? " > " : " < ") + a + " ? " + x + " : " + a + ";";
      return is_float(t) ? update + " " + a + "n |= (" + x + " != " + x + ");" : update;
    }
  }
  return "";
}

std::string Writer::acc_result(ValueId v) const {
  const Instr& in = k_.body[v];
  const std::string a = acc_name(v), type = cpp::compute_type(in.dtype);
  if (in.dtype == DType::Bool) return "(" + a + " != 0)";
  if (ir::is_integral(in.dtype)) return "((" + type + ")" + a + ")";
  if (in.reduce == ReduceOp::Max || in.reduce == ReduceOp::Min)
    return "(" + a + "n ? " + cpp::float_literal(NAN, in.dtype) + " : " + a + ")";
  return a;
}

std::string Writer::acc_clause(ValueId v) const {
  const Instr& in = k_.body[v];
  const std::string a = acc_name(v);
  if (in.dtype == DType::Bool)
    return " reduction(" + std::string(in.reduce == ReduceOp::Sum || in.reduce == ReduceOp::Max ? "|" : "&") + ":" + a + ")";
  switch (in.reduce) {
    case ReduceOp::Sum: return " reduction(+:" + a + ")";
    case ReduceOp::Prod: return " reduction(*:" + a + ")";
    case ReduceOp::Max: return " reduction(max:" + a + ")" + (is_float(in.dtype) ? " reduction(|:" + a + "n)" : "");
    case ReduceOp::Min: return " reduction(min:" + a + ")" + (is_float(in.dtype) ? " reduction(|:" + a + "n)" : "");
  }
  return "";
}

void Writer::write_pointwise() {
  if (!serial_) line("#pragma omp simd reduction(|:err)");
  line("for (dv_i64 x = x_begin; x < x_end; ++x) {");
  ++indent_;
  for (std::size_t v = 0; v < k_.body.size(); ++v) write_value(static_cast<ValueId>(v), false);
  --indent_;
  line("}");
}

// The x-level work of stage s: the results of the reductions of loop s - 1,
// then the x-level values (and stores) of stage s.
void Writer::write_x_stage(int stage) {
  for (std::size_t i = 0; i < k_.body.size(); ++i) {
    const auto v = static_cast<ValueId>(i);
    const Instr& in = k_.body[v];
    if (in.op == PrimOp::Reduce && stage_[v] == stage)
      line("const " + cpp::compute_type(in.dtype) + " " + v_name(v) + " = " + acc_result(v) + ";");
  }
  for (std::size_t i = 0; i < k_.body.size(); ++i) {
    const auto v = static_cast<ValueId>(i);
    if (k_.body[v].op != PrimOp::Reduce && !r_level_[v] && stage_[v] == stage) write_value(v, false);
  }
}

// The float divisors of r-level divisions in loop `loop` that are x-level
// values: the loop multiplies by their reciprocal, one division a row
// instead of one an element, where dv_recip_ok says that is as exact.
std::vector<ValueId> Writer::row_divisors(int loop) const {
  std::vector<ValueId> out;
  for (std::size_t i = 0; i < k_.body.size(); ++i) {
    const Instr& in = k_.body[i];
    if (in.op != PrimOp::Div || !needs_[loop][i] || !is_float(in.dtype) || r_level_[in.args[1]]) continue;
    if (cached_[i] && stage_[i] < loop) continue;  // read from the row buffer
    if (std::find(out.begin(), out.end(), in.args[1]) == out.end()) out.push_back(in.args[1]);
  }
  return out;
}

// Float sums accumulate in DV_SUM_LANES partial sums (four vectors): one
// vector accumulator is a chain of dependent adds, one add's latency per
// vector of the row. Only in loops whose reductions are all float sums and
// that call no math function (loop_calls_function: there the chain is not
// what limits the loop, and the blocks cost softmax's exp loop 2-3%).
bool Writer::partial_sums_fit(int loop) const {
  bool any = false;
  for (std::size_t i = 0; i < k_.body.size(); ++i) {
    const Instr& in = k_.body[i];
    if (in.op != PrimOp::Reduce || stage_[in.args[0]] != loop) continue;
    if (in.reduce != ReduceOp::Sum || !is_float(in.dtype)) return false;
    any = true;
  }
  // The blocks' simd loop has no clause (a reduction clause there, even of
  // `err`, keeps the partial sums in memory): its accesses must be unchecked.
  for (std::size_t i = 0; i < k_.body.size() && any; ++i) {
    const Instr& in = k_.body[i];
    if ((in.op == PrimOp::Load || in.op == PrimOp::Store) && needs_[loop][i] &&
        (in.indirect || in.masked || in.accumulate || !statically_in_bounds(in)))
      return false;
  }
  return any && !serial_ && !loop_calls_function(loop);
}

// Whether loop `loop` computes a value by calling a math function (libmvec's
// vector variants): a call clobbers every vector register, so accumulators
// are spilled around it anyway, and its latency, far above an add's, already
// separates the dependent adds. Such a loop is compute bound.
bool Writer::loop_calls_function(int loop) const {
  for (std::size_t i = 0; i < k_.body.size(); ++i) {
    const Instr& in = k_.body[i];
    if (!needs_[loop][i] || (cached_[i] && stage_[i] < loop) || in.args.empty()) continue;
    if (in.op != PrimOp::Load && in.op != PrimOp::Store && in.op != PrimOp::Reduce &&
        cpp::calls_function(in.op, k_.body[in.args[0]].dtype))
      return true;
  }
  return false;
}

void Writer::write_loop_body(int loop) {
  for (std::size_t i = 0; i < k_.body.size(); ++i) {
    const auto v = static_cast<ValueId>(i);
    const Instr& in = k_.body[v];
    if (in.op == PrimOp::Reduce) {
      if (stage_[in.args[0]] == loop) line(acc_update(v));
    } else if (needs_[loop][v]) {
      write_value(v, true);
    }
  }
}

// One loop over r: plain, or in blocks of DV_SUM_LANES with partial sums
// then the rest of the row one accumulator a reduction.
void Writer::write_loop_form(int loop, const std::string& clauses, bool partial_sums) {
  if (!partial_sums) {
    write_plain_loop(loop, clauses, "0");
    return;
  }
  std::vector<ValueId> sums;
  for (std::size_t i = 0; i < k_.body.size(); ++i) {
    const Instr& in = k_.body[i];
    if (in.op == PrimOp::Reduce && stage_[in.args[0]] == loop) sums.push_back(static_cast<ValueId>(i));
  }
  line("{");
  ++indent_;
  for (ValueId v : sums) {
    const std::string type = cpp::compute_type(k_.body[v].dtype);
    line(type + " " + acc_name(v) + "p[DV_SUM_LANES(" + type + ")];");
    line("for (int j = 0; j < DV_SUM_LANES(" + type + "); ++j) " + acc_name(v) + "p[j] = 0;");
  }
  // One block width for the loop: the widest type's lanes are the fewest
  // (a float's partial sums then use the first half of their array).
  std::string width = "DV_SUM_LANES(" + cpp::compute_type(k_.body[sums[0]].dtype) + ")";
  for (ValueId v : sums)
    if (k_.body[v].dtype == DType::Float64) width = "DV_SUM_LANES(double)";
  line("const dv_i64 rblocks = kRnumel / " + width + " * " + width + ";");
  line("for (dv_i64 r0 = 0; r0 < rblocks; r0 += " + width + ") {");
  ++indent_;
  line("#pragma omp simd");
  line("for (dv_i64 j = 0; j < " + width + "; ++j) {");
  ++indent_;
  line("const dv_i64 r = r0 + j;");
  partial_.assign(k_.body.size(), false);
  for (ValueId v : sums) partial_[v] = true;
  write_loop_body(loop);
  partial_.clear();
  --indent_;
  line("}");
  --indent_;
  line("}");
  for (ValueId v : sums) {
    line("#pragma omp simd reduction(+:" + acc_name(v) + ")");
    line("for (int j = 0; j < " + width + "; ++j) " + acc_name(v) + " += " + acc_name(v) + "p[j];");
  }
  write_plain_loop(loop, clauses, "rblocks");
  --indent_;
  line("}");
}

// The loop over r from `first` to the row's end, one element an iteration.
void Writer::write_plain_loop(int loop, const std::string& clauses, const std::string& first) {
  if (!serial_) line("#pragma omp simd" + clauses);
  line("for (dv_i64 r = " + first + "; r < kRnumel; ++r) {");
  ++indent_;
  write_loop_body(loop);
  --indent_;
  line("}");
}

void Writer::write_loop(int loop) {
  loop_ = loop;
  std::string clauses = " reduction(|:err)";
  for (std::size_t i = 0; i < k_.body.size(); ++i) {
    const auto v = static_cast<ValueId>(i);
    const Instr& in = k_.body[v];
    if (in.op != PrimOp::Reduce || stage_[in.args[0]] != loop) continue;
    line(acc_init(v));
    clauses += acc_clause(v);
  }
  const bool partial_sums = partial_sums_fit(loop);
  const std::vector<ValueId> divisors = serial_ ? std::vector<ValueId>{} : row_divisors(loop);
  reciprocal_.assign(k_.body.size(), false);
  if (divisors.empty()) {
    write_loop_form(loop, clauses, partial_sums);
  } else {
    std::string ok;
    for (ValueId d : divisors) {
      const std::string type = cpp::compute_type(k_.body[d].dtype);
      line("const " + type + " rcp" + std::to_string(d) + " = " + cpp::float_literal(1, k_.body[d].dtype) + " / " +
           v_name(d) + ";");
      ok += (ok.empty() ? "" : " && ") + std::string("dv_recip_ok(") + v_name(d) + ")";
    }
    line("if (" + ok + ") {");
    ++indent_;
    for (ValueId d : divisors) reciprocal_[d] = true;
    write_loop_form(loop, clauses, partial_sums);
    reciprocal_.assign(k_.body.size(), false);
    --indent_;
    line("} else {");
    ++indent_;
    write_loop_form(loop, clauses, partial_sums);
    --indent_;
    line("}");
  }
  loop_ = -1;
}

// The plain loads of the next row, prefetched while this one is computed:
// a row's loops run from the cache, and without this the next row's first
// loop would wait for memory (a row is contiguous in r for these loads).
void Writer::write_prefetch_next_row() {
  std::vector<std::string> lines, keys;
  for (std::size_t i = 0; i < k_.body.size(); ++i) {
    const Instr& in = k_.body[i];
    if (in.op != PrimOp::Load || !r_level_[i] || in.indirect || in.masked || !in.index.uses_var("x") ||
        !statically_in_bounds(in))
      continue;
    auto at = [&](std::int64_t x, std::int64_t r) {
      return in.index.eval([&](const std::string& n) { return n == "x" ? x : n == "r" ? r : 0; });
    };
    if (at(0, 1) - at(0, 0) != 1 || at(0, k_.rnumel - 1) - at(0, 0) != k_.rnumel - 1) continue;
    const std::int64_t step = std::max<std::int64_t>(1, 64 / ir::dtype_size(k_.buffers[in.buffer].dtype));
    const std::string loop = "for (dv_i64 r = 0; r < kRnumel; r += " + std::to_string(step) + ") __builtin_prefetch(&" +
                             buf_name(in.buffer) + "[";
    // (One line a row read: compared as literals, before sizes become table entries.)
    const std::string key = loop + cpp::index(in.index, true) + "]);";
    if (std::find(keys.begin(), keys.end(), key) != keys.end()) continue;
    keys.push_back(key);
    lines.push_back(loop + index_text(in.index, true) + "]);");
  }
  if (lines.empty()) return;
  line("if (x + 1 < x_end) {");
  ++indent_;
  line("const dv_i64 next = x + 1;");
  line("const dv_i64 x = next;  // the loads' indices, one row on");
  for (const auto& l : lines) line(l);
  --indent_;
  line("}");
}

void Writer::write_rows() {
  line("for (dv_i64 x = x_begin; x < x_end; ++x) {");
  ++indent_;
  // Only in rows whose loops are memory bound: where a loop calls a math
  // function the row's time is the calls' (softmax: the prefetches cost
  // 2-3% and hid nothing, bench/NOTES.md).
  bool prefetch = !serial_;
  for (int s = 0; s < loops_ && prefetch; ++s) prefetch = !loop_calls_function(s);
  if (prefetch) write_prefetch_next_row();
  for (int s = 0; s <= loops_; ++s) {
    write_x_stage(s);
    if (s < loops_) write_loop(s);
  }
  --indent_;
  line("}");
}

void Writer::write_entry() {
  const std::string name = table_.enabled() ? kEntryPlaceholder : k_.name;
  line("extern \"C\" int " + name + "(void* const* buffers, dv_i64 x_begin, dv_i64 x_end, const dv_i64* dv_n) {");
  ++indent_;
  for (std::size_t b = 0; b < k_.buffers.size(); ++b) {
    const auto& buf = k_.buffers[b];
    const std::string type = cpp::storage_type(buf.dtype) + (buf.written ? "" : " const");
    // (A buffer's name tells its place in the plan: not in a source that instances share.)
    line(type + "* __restrict__ " + buf_name(static_cast<int>(b)) + " = (" + type + "*)buffers[" + std::to_string(b) +
         "];" + (table_.enabled() ? "" : "  // " + buf.name));
  }
  if (table_.enabled()) line(kSizeTablePlaceholder);
  if (k_.rnumel > 1)  // (a literal a constant expression: the compiler sees the number)
    line("const dv_i64 kRnumel = " +
         (table_.rnumel_symbolic(k_.rnumel) ? table_.entry(k_.rnumel) : cpp::int_literal(k_.rnumel)) + ";");
  line("int err = 0;");
  if (cache_bytes_ > 0) {
    // On a cache line (malloc's 16 bytes split every vector access to it in
    // two lines: softmax 1024x1024 0.62-0.67 -> 0.58-0.61 ms, bench/NOTES.md).
    line("char* row_base = (char*)__builtin_malloc(" + row_bytes_text(cache_order_.size()) + " + 64);");
    line("if (row_base == 0) return 3;");
    line("char* row_buffer = (char*)(((dv_u64)row_base + 63) & ~(dv_u64)63);");
    for (std::size_t i = 0; i < cache_order_.size(); ++i) {
      const ValueId v = cache_order_[i];
      const std::string type = cpp::compute_type(k_.body[v].dtype);
      line(type + "* __restrict__ c" + std::to_string(v) + " = (" + type + "*)(row_buffer + " + row_bytes_text(i) + ");");
    }
  }
  if (k_.rnumel == 1) write_pointwise();
  else write_rows();
  if (cache_bytes_ > 0) line("__builtin_free(row_base);");
  line("return err & 1 ? 1 : err;");  // an offset out of range is reported first
  --indent_;
  line("}");
}

CppKernel Writer::write() {
  check();
  for (const Instr& in : k_.body)
    if (in.op == PrimOp::Store && (in.indirect || in.accumulate)) serial_ = true;
  mark_levels();
  assign_stages();
  cached_.assign(k_.body.size(), false);
  cache_store_.assign(k_.body.size(), -1);
  reciprocal_.assign(k_.body.size(), false);
  if (k_.rnumel > 1) plan_row_cache();
  out_ << cpp_prelude(options_.vector_math);
  write_entry();
  CppKernel kernel{k_.name, out_.str(), !serial_, {}};
  return table_.enabled() ? with_size_arguments(std::move(kernel)) : kernel;
}

// Size arguments: the loads of the table in place of its placeholder, and
// the entry named by a hash of the text, so that kernels that differ only in
// sizes are one source (one compile).
CppKernel Writer::with_size_arguments(CppKernel k) const {
  const std::vector<std::int64_t>& values = table_.values();
  std::string loads;
  for (std::size_t i = 0; i < values.size(); ++i)
    loads += (i ? ", " : "const dv_i64 ") + size_name(i) + " = dv_n[" + std::to_string(i) + "]";
  // (the placeholder's line, indent and all, goes where the table is empty)
  k.source = loads.empty() ? replace_first(k.source, std::string("  ") + kSizeTablePlaceholder + "\n", "")
                           : replace_first(k.source, kSizeTablePlaceholder, loads + ";");
  k.name = ir::hashed_name("dv_c", k.source);
  k.source = replace_first(k.source, kEntryPlaceholder, k.name);
  k.size_args = values;
  return k;
}

}  // namespace

CppEmitResult emit_cpp(const ir::Kernel& kernel, const CppOptions& options) {
  CppEmitResult result;
  try {
    result.kernel = Writer(kernel, options).write();
  } catch (const CppUnsupported& e) {
    result.unsupported = e.what();
  }
  return result;
}

}  // namespace dv::codegen
