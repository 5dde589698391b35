// The loop IR: Triton-style block programs.
//
// A Kernel covers an iteration space of `xnumel` rows times `rnumel` reduction
// elements (rnumel == 1 for a pointwise kernel). Its body is a list of SSA
// instructions evaluated, conceptually, at every point (x, r) of that space:
//
//   - an instruction is *r-level* if it depends on the reduction variable r
//     (through a Load/Index whose index uses r, or through an r-level operand,
//     which includes a Load's offset and mask operands);
//     otherwise it is *x-level*: one value per row.
//   - a Reduce instruction takes one r-level operand and yields an x-level
//     value (the reduction of the operand over r = 0 .. rnumel-1 for the row).
//   - Store writes a value at an index; an x-level store writes once per row.
//
// Instructions are in dependency order. Index expressions use only the two
// variables `x` (extent xnumel) and `r` (extent rnumel). Buffers are flat
// arrays of one storage dtype addressed by element offsets; strides are baked
// into the indices. Values carry compute dtypes only (Bool, Int32, Int64,
// Float32, Float64): a Load from an f16/bf16 buffer yields Float32 and a Store
// rounds to the buffer's dtype.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "ir/dtype.h"
#include "ir/index_expr.h"

namespace dv::ir {

enum class PrimOp : std::uint8_t {
  // Leaves.
  Constant,  // scalar constant of `dtype` (fvalue for floats, ivalue for ints and bools)
  Index,     // the value of `index` as `dtype` (Int64 or Int32): iota, arange
  Load,      // buffers[buffer][index], optionally indirect and masked (see Instr)
  // Unary (args[0]); the result dtype equals the operand's unless noted.
  Neg, Abs, Exp, Exp2, Log, Log1p, Sqrt, Rsqrt, Sin, Cos, Tanh, Erf,
  Floor, Ceil, Round /* half to even */, Trunc,
  // Float32 only: the nearest bfloat16 / float16 value (half to even; NaN
  // stays NaN, overflow gives infinity), still a Float32: what a store into
  // such a buffer and a load back would give, without the memory.
  RoundBf16, RoundF16,
  LogicalNot,  // -> Bool; operand of any dtype (nonzero is true)
  IsNan,       // -> Bool
  Cast,        // to `dtype`; float->int truncates toward zero; x->Bool is x != 0
  // Binary (args[0], args[1]), both operands of the same dtype.
  Add, Sub, Mul,
  Div,        // floats: true division; ints: truncating division (C semantics)
  FloorDiv,   // floor(a / b) for ints and floats (Python //)
  Mod,        // Python remainder: result has the sign of b (torch.remainder)
  Pow,
  Maximum, Minimum,  // NaN-propagating (torch.maximum / torch.minimum)
  Eq, Ne, Lt, Le, Gt, Ge,             // -> Bool
  LogicalAnd, LogicalOr, LogicalXor,  // -> Bool; operands of any (same) dtype
  // Ternary: args = {condition (Bool), if_true, if_false}.
  Where,
  // Reduction of args[0] (r-level) over r; result x-level, dtype = operand's.
  Reduce,
  // Side effect: buffers[buffer][index] = args[0] (rounded to the buffer dtype);
  // optionally at a data-dependent element and/or as an atomic add (see Instr).
  Store,
};

enum class ReduceOp : std::uint8_t { Sum, Prod, Max, Min };  // Max/Min propagate NaN

std::string_view prim_op_name(PrimOp op);
std::string_view reduce_op_name(ReduceOp op);
int prim_op_arity(PrimOp op);  // number of SSA operands (a Load's are optional: see Instr)
bool is_comparison(PrimOp op);

using ValueId = std::int32_t;  // index into Kernel::body

// A Load reads buffers[buffer][index] in its plain form. Two optional value
// operands (in args, in this order) extend it, as Triton's
// tl.load(ptr + offs, mask=m, other=v) does:
//   - an indirect offset (`indirect`): an Int32 or Int64 value o; the load
//     reads element index + o * offset_stride. o must lie in
//     [0, offset_extent): anything else is an error (the interpreter throws,
//     CUDA traps), never a read elsewhere. This is how data selects the
//     element (embedding, gather): o is a coordinate along one dimension.
//   - a mask (`masked`): a Bool value m; where m is false the load touches no
//     memory (its index need not be in range, its offset is not checked) and
//     yields `other`, a constant of the load's dtype held like a Constant's
//     (fvalue for floats, ivalue for ints and bools).
// A Store writes args[0] to buffers[buffer][index]. Its optional parts (a
// scatter: data selects where to write):
//   - an indirect offset (`indirect`, args[1]), as a Load's: the element
//     written is index + o * offset_stride; o outside [0, offset_extent) is
//     an error (the interpreter throws, CUDA traps), nothing is written for
//     that point.
//   - `accumulate`: the element becomes element + args[0] (computed in the
//     buffer's compute dtype, then rounded), one indivisible update per point
//     (atomicAdd in CUDA), so that points that hit one element all count.
//     The value's dtype is the buffer's compute dtype; not for b8 buffers.
//   Points of one plain Store that hit one element leave one of their
//   values there; which one is unspecified.
struct Instr {
  PrimOp op = PrimOp::Constant;
  DType dtype = DType::Float32;  // result (compute) dtype; for Store: the stored value's
  std::vector<ValueId> args;
  double fvalue = 0;       // Constant, float dtypes; a masked Load's `other`
  std::int64_t ivalue = 0;  // Constant, int and bool dtypes; a masked Load's `other`
  int buffer = -1;          // Load, Store
  IndexExpr index;          // Index, Load, Store
  ReduceOp reduce = ReduceOp::Sum;  // Reduce
  bool r_level = false;     // set by KernelBuilder: varies with r
  // Load and Store (see above).
  bool indirect = false;
  std::int64_t offset_stride = 1;
  std::int64_t offset_extent = 0;
  bool masked = false;      // Load only
  bool accumulate = false;  // Store only

  // A Load's or Store's operands (-1 when absent).
  ValueId offset_arg() const { return indirect ? args.at(op == PrimOp::Store ? 1 : 0) : -1; }
  ValueId mask_arg() const { return masked ? args.at(indirect ? 1 : 0) : -1; }
  // The number of SSA operands this instruction must have.
  int operand_count() const;
};

// The optional parts of a Load (KernelBuilder::load).
struct LoadOptions {
  ValueId offset = -1;             // Int32/Int64 value: indirect offset
  std::int64_t offset_stride = 1;  // elements per unit of the offset
  std::int64_t offset_extent = 0;  // the offset must lie in [0, offset_extent)
  ValueId mask = -1;               // Bool value: where false, no read, the value is `other`
  double other = 0;                // converted to the load's compute dtype
};

// The optional parts of a Store (KernelBuilder::store).
struct StoreOptions {
  ValueId offset = -1;             // Int32/Int64 value: indirect offset
  std::int64_t offset_stride = 1;  // elements per unit of the offset
  std::int64_t offset_extent = 0;  // the offset must lie in [0, offset_extent)
  bool accumulate = false;         // add to the element (atomically) instead of replacing it
};

struct KernelBuffer {
  std::string name;   // unique within the kernel, e.g. "in0", "out1"
  DType dtype = DType::Float32;
  bool written = false;   // some Store targets it
  bool read = false;      // some Load (or accumulating Store) reads it
  std::int64_t numel = 0; // elements addressable (max index + 1); for bounds checks
  // The data pointer is 16-byte aligned at run time (the plan guarantees it),
  // so the CUDA emitter may use 16-byte vector accesses when the index allows.
  bool aligned16 = true;
};

struct Kernel {
  std::string name;
  std::int64_t xnumel = 1;
  std::int64_t rnumel = 1;
  std::vector<KernelBuffer> buffers;
  std::vector<Instr> body;

  bool is_reduction() const { return rnumel > 1 || has_reduce(); }
  bool has_reduce() const;
  IndexExpr x_var() const { return IndexExpr::var("x", xnumel); }
  IndexExpr r_var() const { return IndexExpr::var("r", rnumel); }
};

// Readable listing of a kernel, one instruction a line.
std::string to_string(const Kernel& k);

// A name from the kernel's content ("dv_" and 16 hex digits of a hash of its
// listing without the name): identical kernels (the same layer repeated)
// get one name, so their generated source is identical and compiled once.
std::string content_name(const Kernel& k);
// `prefix` and 16 hex digits of a hash of `text` (FNV-1a: stable across
// processes, as names that disk caches key on must be).
std::string hashed_name(const std::string& prefix, const std::string& text);

// Builds kernels in SSA form with value numbering: asking twice for the same
// pure instruction returns the same ValueId. Tracks r-level-ness and buffer
// read/write flags.
class KernelBuilder {
 public:
  KernelBuilder(std::string name, std::int64_t xnumel, std::int64_t rnumel);

  IndexExpr x() const { return kernel_.x_var(); }
  IndexExpr r() const { return kernel_.r_var(); }
  std::int64_t xnumel() const { return kernel_.xnumel; }
  std::int64_t rnumel() const { return kernel_.rnumel; }

  // Declares a buffer (or returns the existing one with that name).
  int buffer(const std::string& name, DType dtype, std::int64_t numel, bool aligned16 = true);

  ValueId constant(double value, DType dtype);
  ValueId int_constant(std::int64_t value, DType dtype);  // also Bool (0/1)
  ValueId index_value(const IndexExpr& index, DType dtype = DType::Int64);
  ValueId load(int buffer, const IndexExpr& index, const LoadOptions& options = {});
  ValueId unary(PrimOp op, ValueId a);
  ValueId cast(ValueId a, DType to);  // no-op if already `to`
  ValueId binary(PrimOp op, ValueId a, ValueId b);  // operands must share a dtype
  ValueId where(ValueId cond, ValueId a, ValueId b);
  ValueId reduce(ReduceOp op, ValueId a);
  void store(int buffer, const IndexExpr& index, ValueId value, const StoreOptions& options = {});

  const Instr& instr(ValueId v) const { return kernel_.body[v]; }
  DType dtype(ValueId v) const { return kernel_.body[v].dtype; }
  bool is_r_level(ValueId v) const { return kernel_.body[v].r_level; }

  const Kernel& kernel() const { return kernel_; }
  Kernel finish() &&;

 private:
  ValueId add(Instr instr);
  Kernel kernel_;
  struct Impl;
  std::shared_ptr<Impl> impl_;  // value-numbering table
};

}  // namespace dv::ir
