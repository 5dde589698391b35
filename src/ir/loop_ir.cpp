#include "ir/loop_ir.h"

#include <array>
#include <cstdio>
#include <cstring>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <unordered_map>

namespace dv::ir {

namespace {

struct PrimOpInfo {
  PrimOp op;
  std::string_view name;
  int arity;
};

constexpr std::array kPrimOps{
    PrimOpInfo{PrimOp::Constant, "const", 0},     PrimOpInfo{PrimOp::Index, "index", 0},
    PrimOpInfo{PrimOp::Load, "load", 0},          PrimOpInfo{PrimOp::Neg, "neg", 1},
    PrimOpInfo{PrimOp::Abs, "abs", 1},            PrimOpInfo{PrimOp::Exp, "exp", 1},
    PrimOpInfo{PrimOp::Exp2, "exp2", 1},          PrimOpInfo{PrimOp::Log, "log", 1},
    PrimOpInfo{PrimOp::Log1p, "log1p", 1},        PrimOpInfo{PrimOp::Sqrt, "sqrt", 1},
    PrimOpInfo{PrimOp::Rsqrt, "rsqrt", 1},        PrimOpInfo{PrimOp::Sin, "sin", 1},
    PrimOpInfo{PrimOp::Cos, "cos", 1},            PrimOpInfo{PrimOp::Tanh, "tanh", 1},
    PrimOpInfo{PrimOp::Erf, "erf", 1},            PrimOpInfo{PrimOp::Floor, "floor", 1},
    PrimOpInfo{PrimOp::Ceil, "ceil", 1},          PrimOpInfo{PrimOp::Round, "round", 1},
    PrimOpInfo{PrimOp::Trunc, "trunc", 1},        PrimOpInfo{PrimOp::RoundBf16, "round_bf16", 1},
    PrimOpInfo{PrimOp::RoundF16, "round_f16", 1}, PrimOpInfo{PrimOp::LogicalNot, "not", 1},
    PrimOpInfo{PrimOp::IsNan, "isnan", 1},        PrimOpInfo{PrimOp::Cast, "cast", 1},
    PrimOpInfo{PrimOp::Add, "add", 2},            PrimOpInfo{PrimOp::Sub, "sub", 2},
    PrimOpInfo{PrimOp::Mul, "mul", 2},            PrimOpInfo{PrimOp::Div, "div", 2},
    PrimOpInfo{PrimOp::FloorDiv, "floordiv", 2},  PrimOpInfo{PrimOp::Mod, "mod", 2},
    PrimOpInfo{PrimOp::Pow, "pow", 2},            PrimOpInfo{PrimOp::Maximum, "max", 2},
    PrimOpInfo{PrimOp::Minimum, "min", 2},        PrimOpInfo{PrimOp::Eq, "eq", 2},
    PrimOpInfo{PrimOp::Ne, "ne", 2},              PrimOpInfo{PrimOp::Lt, "lt", 2},
    PrimOpInfo{PrimOp::Le, "le", 2},              PrimOpInfo{PrimOp::Gt, "gt", 2},
    PrimOpInfo{PrimOp::Ge, "ge", 2},              PrimOpInfo{PrimOp::LogicalAnd, "and", 2},
    PrimOpInfo{PrimOp::LogicalOr, "or", 2},       PrimOpInfo{PrimOp::LogicalXor, "xor", 2},
    PrimOpInfo{PrimOp::Where, "where", 3},        PrimOpInfo{PrimOp::Reduce, "reduce", 1},
    PrimOpInfo{PrimOp::Store, "store", 1},
};

const PrimOpInfo& info(PrimOp op) {
  const auto& i = kPrimOps[static_cast<int>(op)];
  if (i.op != op) throw std::logic_error("kPrimOps is out of order with PrimOp");
  return i;
}

bool is_bool_result(PrimOp op) {
  return is_comparison(op) || op == PrimOp::LogicalNot || op == PrimOp::IsNan ||
         op == PrimOp::LogicalAnd || op == PrimOp::LogicalOr || op == PrimOp::LogicalXor;
}

bool is_pure(PrimOp op) { return op != PrimOp::Store; }

// Key for value numbering of pure instructions.
struct InstrKey {
  PrimOp op;
  DType dtype;
  std::vector<ValueId> args;
  std::uint64_t fbits;
  std::int64_t ivalue;
  int buffer;
  IndexExpr index;
  ReduceOp reduce;  // else reduce(Sum, v) and reduce(Max, v) would be numbered alike
  bool indirect, masked;  // a Load's operands: which is which
  std::int64_t offset_stride, offset_extent;
  bool operator==(const InstrKey& o) const {
    return op == o.op && dtype == o.dtype && args == o.args && fbits == o.fbits &&
           ivalue == o.ivalue && buffer == o.buffer && index == o.index && reduce == o.reduce &&
           indirect == o.indirect && masked == o.masked && offset_stride == o.offset_stride &&
           offset_extent == o.offset_extent;
  }
};

struct InstrKeyHash {
  std::size_t operator()(const InstrKey& k) const {
    std::size_t h = static_cast<std::size_t>(k.op) * 131 + static_cast<std::size_t>(k.dtype);
    for (ValueId a : k.args) h = h * 1000003u ^ static_cast<std::size_t>(a);
    h = h * 1000003u ^ std::hash<std::uint64_t>()(k.fbits);
    h = h * 1000003u ^ std::hash<std::int64_t>()(k.ivalue);
    h = h * 1000003u ^ static_cast<std::size_t>(k.buffer + 1);
    h = h * 1000003u ^ static_cast<std::size_t>(k.reduce);
    h = h * 1000003u ^ (static_cast<std::size_t>(k.indirect) * 2 + static_cast<std::size_t>(k.masked));
    h = h * 1000003u ^ std::hash<std::int64_t>()(k.offset_stride * 31 + k.offset_extent);
    return h * 1000003u ^ k.index.hash();
  }
};

std::string format_double(double v) {
  std::ostringstream os;
  os.precision(9);
  os << v;
  return os.str();
}

// A constant of `dtype` as the printer writes it (floats from fvalue, others from ivalue).
std::string format_constant(const Instr& i) {
  return is_floating(i.dtype) ? format_double(i.fvalue) : std::to_string(i.ivalue);
}

// "buf[index]", "buf[index + %o*stride (%o < extent)]": a Load's or Store's element.
std::string format_access(const Kernel& k, const Instr& i) {
  std::ostringstream os;
  const bool plain_offset = i.indirect && i.index == IndexExpr(0);  // "[%o]", not "[0 + %o]"
  os << k.buffers[i.buffer].name << "[" << (plain_offset ? "" : i.index.str());
  if (i.indirect) {
    os << (plain_offset ? "%" : " + %") << i.offset_arg();
    if (i.offset_stride != 1) os << "*" << i.offset_stride;
    os << " (%" << i.offset_arg() << " < " << i.offset_extent << ")";
  }
  os << "]";
  return os.str();
}

// "load buf[...]", "load buf[...] if %m else 0".
std::string format_load(const Kernel& k, const Instr& i) {
  std::string s = "load " + format_access(k, i);
  if (i.masked) s += " if %" + std::to_string(i.mask_arg()) + " else " + format_constant(i);
  return s;
}

// A double as an int64: truncated, saturated, NaN as 0 (a mask's `other`).
std::int64_t saturating_int(double v) {
  if (v != v) return 0;
  if (v >= 9.2233720368547758e18) return std::numeric_limits<std::int64_t>::max();
  if (v <= -9.2233720368547758e18) return std::numeric_limits<std::int64_t>::min();
  return static_cast<std::int64_t>(v);
}

}  // namespace

int Instr::operand_count() const {
  if (op == PrimOp::Load) return (indirect ? 1 : 0) + (masked ? 1 : 0);
  if (op == PrimOp::Store) return 1 + (indirect ? 1 : 0);
  return prim_op_arity(op);
}

std::string_view prim_op_name(PrimOp op) { return info(op).name; }
int prim_op_arity(PrimOp op) { return info(op).arity; }

std::string_view reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return "sum";
    case ReduceOp::Prod: return "prod";
    case ReduceOp::Max: return "max";
    case ReduceOp::Min: return "min";
  }
  return "?";
}

bool is_comparison(PrimOp op) {
  return op == PrimOp::Eq || op == PrimOp::Ne || op == PrimOp::Lt || op == PrimOp::Le ||
         op == PrimOp::Gt || op == PrimOp::Ge;
}

bool Kernel::has_reduce() const {
  for (const auto& i : body)
    if (i.op == PrimOp::Reduce) return true;
  return false;
}

std::string content_name(const Kernel& k) {
  Kernel unnamed = k;
  unnamed.name.clear();
  return hashed_name("dv_", to_string(unnamed));
}

std::string hashed_name(const std::string& prefix, const std::string& text) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : text) h = (h ^ c) * 1099511628211ull;
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return prefix + hex;
}

std::string to_string(const Kernel& k) {
  std::ostringstream os;
  os << "kernel " << k.name << " (xnumel=" << k.xnumel << ", rnumel=" << k.rnumel << ")\n";
  for (const auto& b : k.buffers) {
    os << "  buffer " << b.name << ": " << dtype_name(b.dtype) << "[" << b.numel << "]"
       << (b.read ? " read" : "") << (b.written ? " written" : "") << (b.aligned16 ? "" : " unaligned")
       << "\n";
  }
  for (std::size_t v = 0; v < k.body.size(); ++v) {
    const Instr& i = k.body[v];
    os << "  ";
    if (i.op != PrimOp::Store) os << "%" << v << " = ";
    switch (i.op) {
      case PrimOp::Constant: os << "const " << format_constant(i); break;
      case PrimOp::Index: os << "index " << i.index.str(); break;
      case PrimOp::Load: os << format_load(k, i); break;
      case PrimOp::Store:
        os << "store " << format_access(k, i) << (i.accumulate ? " += %" : " = %") << i.args[0];
        break;
      case PrimOp::Reduce: os << "reduce." << reduce_op_name(i.reduce) << " %" << i.args[0]; break;
      default:
        os << prim_op_name(i.op);
        for (ValueId a : i.args) os << " %" << a;
    }
    os << " : " << dtype_name(i.dtype) << (i.r_level ? "  (r)" : "") << "\n";
  }
  return os.str();
}

struct KernelBuilder::Impl {
  std::unordered_map<InstrKey, ValueId, InstrKeyHash> numbering;
};

KernelBuilder::KernelBuilder(std::string name, std::int64_t xnumel, std::int64_t rnumel)
    : impl_(std::make_shared<Impl>()) {
  kernel_.name = std::move(name);
  kernel_.xnumel = xnumel;
  kernel_.rnumel = rnumel;
}

int KernelBuilder::buffer(const std::string& name, DType dtype, std::int64_t numel, bool aligned16) {
  for (std::size_t i = 0; i < kernel_.buffers.size(); ++i) {
    if (kernel_.buffers[i].name == name) return static_cast<int>(i);
  }
  if (!is_kernel_dtype(dtype))  // lowering makes such ops fallbacks; a kernel never sees them
    throw std::logic_error("KernelBuilder::buffer: " + std::string(dtype_name(dtype)) + " is not a kernel dtype");
  KernelBuffer b;
  b.name = name;
  b.dtype = dtype;
  b.numel = numel;
  b.aligned16 = aligned16;
  kernel_.buffers.push_back(b);
  return static_cast<int>(kernel_.buffers.size()) - 1;
}

ValueId KernelBuilder::add(Instr instr) {
  bool r_level = instr.index.uses_var("r") && kernel_.rnumel > 1;
  for (ValueId a : instr.args) r_level = r_level || kernel_.body.at(a).r_level;
  if (instr.op == PrimOp::Reduce) r_level = false;
  instr.r_level = r_level;

  if (is_pure(instr.op)) {
    std::uint64_t fbits = 0;
    std::memcpy(&fbits, &instr.fvalue, sizeof fbits);
    InstrKey key{instr.op,     instr.dtype,    instr.args,     fbits,
                 instr.ivalue, instr.buffer,   instr.index,    instr.reduce,
                 instr.indirect, instr.masked, instr.offset_stride, instr.offset_extent};
    auto [it, inserted] = impl_->numbering.try_emplace(key, static_cast<ValueId>(kernel_.body.size()));
    if (!inserted) return it->second;
  }
  if (instr.op == PrimOp::Load || instr.accumulate) kernel_.buffers.at(instr.buffer).read = true;
  if (instr.op == PrimOp::Store) kernel_.buffers.at(instr.buffer).written = true;
  kernel_.body.push_back(std::move(instr));
  return static_cast<ValueId>(kernel_.body.size()) - 1;
}

ValueId KernelBuilder::constant(double value, DType dtype) {
  dtype = compute_dtype(dtype);
  if (dtype == DType::Bool) return int_constant(value != 0, dtype);  // as bool(value): 0.5 is true
  if (!is_floating(dtype)) return int_constant(saturating_int(value), dtype);
  Instr i;
  i.op = PrimOp::Constant;
  i.dtype = dtype;
  i.fvalue = value;
  return add(std::move(i));
}

ValueId KernelBuilder::int_constant(std::int64_t value, DType dtype) {
  dtype = compute_dtype(dtype);
  if (is_floating(dtype)) return constant(static_cast<double>(value), dtype);
  Instr i;
  i.op = PrimOp::Constant;
  i.dtype = dtype;
  i.ivalue = dtype == DType::Bool ? (value != 0) : value;
  return add(std::move(i));
}

ValueId KernelBuilder::index_value(const IndexExpr& index, DType dtype) {
  Instr i;
  i.op = PrimOp::Index;
  i.dtype = dtype;
  i.index = index;
  return add(std::move(i));
}

ValueId KernelBuilder::load(int buffer, const IndexExpr& index, const LoadOptions& options) {
  Instr i;
  i.op = PrimOp::Load;
  i.dtype = compute_dtype(kernel_.buffers.at(buffer).dtype);
  i.buffer = buffer;
  i.index = index;
  if (options.offset >= 0) {
    const DType t = dtype(options.offset);
    if (t != DType::Int32 && t != DType::Int64) throw std::logic_error("KernelBuilder::load: the offset must be Int32 or Int64");
    if (options.offset_extent < 0) throw std::logic_error("KernelBuilder::load: negative offset extent");
    i.indirect = true;
    i.offset_stride = options.offset_stride;
    i.offset_extent = options.offset_extent;
    i.args.push_back(options.offset);
  }
  if (options.mask >= 0) {
    if (dtype(options.mask) != DType::Bool) throw std::logic_error("KernelBuilder::load: the mask must be Bool");
    const Instr& m = instr(options.mask);
    if (m.op == PrimOp::Constant && m.ivalue == 0) return constant(options.other, i.dtype);  // never reads
    if (m.op != PrimOp::Constant) {  // (a constant true mask is no mask)
      i.masked = true;
      if (is_floating(i.dtype)) i.fvalue = options.other;
      else i.ivalue = i.dtype == DType::Bool ? options.other != 0 : saturating_int(options.other);
      i.args.push_back(options.mask);
    }
  }
  return add(std::move(i));
}

ValueId KernelBuilder::unary(PrimOp op, ValueId a) {
  if (prim_op_arity(op) != 1 || op == PrimOp::Reduce || op == PrimOp::Store || op == PrimOp::Cast)
    throw std::logic_error("KernelBuilder::unary: not a unary op: " + std::string(prim_op_name(op)));
  if ((op == PrimOp::RoundBf16 || op == PrimOp::RoundF16) && dtype(a) != DType::Float32)
    throw std::logic_error("KernelBuilder::unary: " + std::string(prim_op_name(op)) + " of a " +
                           std::string(dtype_name(dtype(a))) + " value (Float32 only)");
  Instr i;
  i.op = op;
  i.dtype = is_bool_result(op) ? DType::Bool : dtype(a);
  i.args = {a};
  return add(std::move(i));
}

ValueId KernelBuilder::cast(ValueId a, DType to) {
  to = compute_dtype(to);
  if (dtype(a) == to) return a;
  const Instr& src = instr(a);
  if (src.op == PrimOp::Constant) {  // fold casts of constants
    if (is_floating(to)) return constant(is_floating(src.dtype) ? src.fvalue : double(src.ivalue), to);
    if (to == DType::Bool) return int_constant(is_floating(src.dtype) ? src.fvalue != 0 : src.ivalue != 0, to);
    return int_constant(is_floating(src.dtype) ? static_cast<std::int64_t>(src.fvalue) : src.ivalue, to);
  }
  Instr i;
  i.op = PrimOp::Cast;
  i.dtype = to;
  i.args = {a};
  return add(std::move(i));
}

ValueId KernelBuilder::binary(PrimOp op, ValueId a, ValueId b) {
  if (prim_op_arity(op) != 2)
    throw std::logic_error("KernelBuilder::binary: not a binary op: " + std::string(prim_op_name(op)));
  if (dtype(a) != dtype(b))
    throw std::logic_error("KernelBuilder::binary: operand dtypes differ for " + std::string(prim_op_name(op)) +
                           ": " + std::string(dtype_name(dtype(a))) + " vs " + std::string(dtype_name(dtype(b))));
  Instr i;
  i.op = op;
  i.dtype = is_bool_result(op) ? DType::Bool : dtype(a);
  i.args = {a, b};
  return add(std::move(i));
}

ValueId KernelBuilder::where(ValueId cond, ValueId a, ValueId b) {
  if (dtype(cond) != DType::Bool) throw std::logic_error("KernelBuilder::where: condition must be Bool");
  if (dtype(a) != dtype(b)) throw std::logic_error("KernelBuilder::where: branch dtypes differ");
  if (a == b) return a;
  Instr i;
  i.op = PrimOp::Where;
  i.dtype = dtype(a);
  i.args = {cond, a, b};
  return add(std::move(i));
}

ValueId KernelBuilder::reduce(ReduceOp op, ValueId a) {
  Instr i;
  i.op = PrimOp::Reduce;
  i.dtype = dtype(a);
  i.args = {a};
  i.reduce = op;
  return add(std::move(i));
}

void KernelBuilder::store(int buffer, const IndexExpr& index, ValueId value, const StoreOptions& options) {
  Instr i;
  i.op = PrimOp::Store;
  i.dtype = dtype(value);
  i.args = {value};
  i.buffer = buffer;
  i.index = index;
  if (options.offset >= 0) {
    const DType t = dtype(options.offset);
    if (t != DType::Int32 && t != DType::Int64) throw std::logic_error("KernelBuilder::store: the offset must be Int32 or Int64");
    if (options.offset_extent < 0) throw std::logic_error("KernelBuilder::store: negative offset extent");
    i.indirect = true;
    i.offset_stride = options.offset_stride;
    i.offset_extent = options.offset_extent;
    i.args.push_back(options.offset);
  }
  if (options.accumulate) {
    const DType storage = kernel_.buffers.at(buffer).dtype;
    if (storage == DType::Bool) throw std::logic_error("KernelBuilder::store: no accumulating store into b8");
    if (dtype(value) != compute_dtype(storage))
      throw std::logic_error("KernelBuilder::store: an accumulated value must have the buffer's compute dtype");
    i.accumulate = true;
  }
  add(std::move(i));
}

Kernel KernelBuilder::finish() && { return std::move(kernel_); }

}  // namespace dv::ir
