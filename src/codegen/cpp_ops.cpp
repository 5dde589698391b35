#include "codegen/cpp_ops.h"

#include <cmath>
#include <cstdio>

namespace dv::codegen::cpp {

using ir::DType;
using ir::IndexExpr;
using ir::PrimOp;

namespace {

bool is_float(DType t) { return t == DType::Float32 || t == DType::Float64; }
bool is_int(DType t) { return t == DType::Int32 || t == DType::Int64; }

[[noreturn]] void unsupported(PrimOp op, DType t) {
  throw CppUnsupported(std::string(ir::prim_op_name(op)) + " on " + std::string(ir::dtype_name(t)));
}

std::string call(const std::string& f, const std::string& a) { return f + "(" + a + ")"; }
std::string call(const std::string& f, const std::string& a, const std::string& b) {
  return f + "(" + a + ", " + b + ")";
}

// The C math function of `base` (the double name) for the type: expf or exp.
std::string libm(const char* base, DType t) { return t == DType::Float32 ? std::string(base) + "f" : base; }

// A GCC builtin that compiles to an instruction: __builtin_floorf.
std::string builtin(const char* base, DType t) { return "__builtin_" + libm(base, t); }

std::string float_unary(PrimOp op, DType t, const std::string& a) {
  switch (op) {
    case PrimOp::Neg: return "(-" + a + ")";
    case PrimOp::Abs: return call(builtin("fabs", t), a);
    case PrimOp::Exp: return call(libm("exp", t), a);
    case PrimOp::Exp2: return call(libm("exp2", t), a);
    case PrimOp::Log: return call(libm("log", t), a);
    case PrimOp::Log1p: return call(libm("log1p", t), a);
    case PrimOp::Sqrt: return call(builtin("sqrt", t), a);
    case PrimOp::Rsqrt: return "(" + float_literal(1, t) + " / " + call(builtin("sqrt", t), a) + ")";
    case PrimOp::Sin: return call(libm("sin", t), a);
    case PrimOp::Cos: return call(libm("cos", t), a);
    case PrimOp::Tanh: return call(libm("tanh", t), a);
    case PrimOp::Erf: return call(libm("erf", t), a);
    case PrimOp::Floor: return call(builtin("floor", t), a);
    case PrimOp::Ceil: return call(builtin("ceil", t), a);
    case PrimOp::Round: return call(builtin("rint", t), a);  // half to even, as nearbyint
    case PrimOp::Trunc: return call(builtin("trunc", t), a);
    case PrimOp::RoundBf16: return call("dv_bf16_to_f32", call("dv_f32_to_bf16", a));
    case PrimOp::RoundF16: return call("dv_f16_to_f32", call("dv_f32_to_f16", a));
    default: unsupported(op, t);
  }
}

std::string int_unary(PrimOp op, DType t, const std::string& a) {
  switch (op) {
    case PrimOp::Neg: return call("dv_wneg", a);
    case PrimOp::Abs: return call("dv_wabs", a);
    case PrimOp::Floor:
    case PrimOp::Ceil:
    case PrimOp::Round:
    case PrimOp::Trunc: return a;
    default: unsupported(op, t);
  }
}

std::string comparison(PrimOp op, const std::string& a, const std::string& b) {
  switch (op) {
    case PrimOp::Eq: return "(" + a + " == " + b + ")";
    case PrimOp::Ne: return "(" + a + " != " + b + ")";
    case PrimOp::Lt: return "(" + a + " < " + b + ")";
    case PrimOp::Le: return "(" + a + " <= " + b + ")";
    case PrimOp::Gt: return "(" + a + " > " + b + ")";
    case PrimOp::Ge: return "(" + a + " >= " + b + ")";
    case PrimOp::LogicalAnd: return "((" + a + " != 0) && (" + b + " != 0))";
    case PrimOp::LogicalOr: return "((" + a + " != 0) || (" + b + " != 0))";
    case PrimOp::LogicalXor: return "((" + a + " != 0) != (" + b + " != 0))";
    default: return "";
  }
}

std::string float_binary(PrimOp op, DType t, const std::string& a, const std::string& b) {
  switch (op) {
    case PrimOp::Add: return "(" + a + " + " + b + ")";
    case PrimOp::Sub: return "(" + a + " - " + b + ")";
    case PrimOp::Mul: return "(" + a + " * " + b + ")";
    case PrimOp::Div: return "(" + a + " / " + b + ")";
    case PrimOp::FloorDiv: return call(builtin("floor", t), a + " / " + b);
    case PrimOp::Mod: return call("dv_fmodp", a, b);
    case PrimOp::Pow: return call(libm("pow", t), a, b);
    case PrimOp::Maximum: return call("dv_fmax", a, b);
    case PrimOp::Minimum: return call("dv_fmin", a, b);
    default: unsupported(op, t);
  }
}

std::string int_binary(PrimOp op, DType t, const std::string& a, const std::string& b) {
  switch (op) {
    case PrimOp::Add: return call("dv_wadd", a, b);
    case PrimOp::Sub: return call("dv_wsub", a, b);
    case PrimOp::Mul: return call("dv_wmul", a, b);
    case PrimOp::Div: return call("dv_idiv", a, b);
    case PrimOp::FloorDiv: return call("dv_ifloordiv", a, b);
    case PrimOp::Mod: return call("dv_imod", a, b);
    case PrimOp::Pow: return call("dv_ipow", a, b);
    case PrimOp::Maximum: return call("dv_imax", a, b);
    case PrimOp::Minimum: return call("dv_imin", a, b);
    default: unsupported(op, t);
  }
}

}  // namespace

bool calls_function(PrimOp op, DType operand) {
  if (!is_float(operand)) return false;
  switch (op) {
    case PrimOp::Exp:
    case PrimOp::Exp2:
    case PrimOp::Log:
    case PrimOp::Log1p:
    case PrimOp::Sin:
    case PrimOp::Cos:
    case PrimOp::Tanh:
    case PrimOp::Erf:
    case PrimOp::Pow:
    case PrimOp::Mod: return true;
    default: return false;
  }
}

std::string compute_type(DType t) {
  switch (t) {
    case DType::Bool: return "bool";
    case DType::Int32: return "dv_i32";
    case DType::Int64: return "dv_i64";
    case DType::Float32: return "float";
    case DType::Float64: return "double";
    default: throw CppUnsupported(std::string(ir::dtype_name(t)) + " is not a compute dtype");
  }
}

std::string storage_type(DType t) {
  switch (t) {
    case DType::Bool: return "dv_u8";
    case DType::Float16:
    case DType::BFloat16: return "dv_u16";
    default: return compute_type(t);
  }
}

std::string int_literal(std::int64_t v) {
  if (v == INT64_MIN) return "(-9223372036854775807LL - 1)";
  return "(" + std::to_string(v) + "LL)";
}

std::string float_literal(double v, DType t) {
  const std::string type = compute_type(t);
  std::string text;
  if (std::isnan(v)) text = "__builtin_nan(\"\")";
  else if (std::isinf(v)) text = "__builtin_inf()";
  else {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%a", std::fabs(v));  // hex: exact
    text = buf;
  }
  // The double, then converted like the interpreter's static_cast<T>(fvalue).
  return "((" + type + ")(" + std::string(std::signbit(v) ? "-" : "") + text + "))";
}

std::string constant(const ir::Instr& in) {
  if (is_float(in.dtype)) return float_literal(in.fvalue, in.dtype);
  return cast(DType::Int64, in.dtype, int_literal(in.ivalue));
}

std::string cast(DType from, DType to, const std::string& a) {
  if (from == to) return a;
  const std::string type = compute_type(to);
  if (to == DType::Bool) return "(" + a + " != 0)";  // NaN is true
  if (from == DType::Bool) return "((" + type + ")(" + a + " ? 1 : 0))";
  if (is_int(to) && is_float(from)) return "dv_f2i<" + type + ">(" + a + ")";
  return "((" + type + ")(" + a + "))";  // i64 -> i32 keeps the low 32 bits (GCC: modular)
}

std::string unary(PrimOp op, DType t, const std::string& a) {
  if (op == PrimOp::LogicalNot) return "(" + a + " == 0)";
  if (op == PrimOp::IsNan) return is_float(t) ? "(" + a + " != " + a + ")" : "false";
  if (is_float(t)) return float_unary(op, t, a);
  if (is_int(t)) return int_unary(op, t, a);
  if (op == PrimOp::Floor || op == PrimOp::Ceil || op == PrimOp::Round || op == PrimOp::Trunc) return a;  // Bool
  unsupported(op, t);
}

std::string binary(PrimOp op, DType t, DType result, const std::string& a, const std::string& b) {
  const bool logical = ir::is_comparison(op) || op == PrimOp::LogicalAnd || op == PrimOp::LogicalOr ||
                       op == PrimOp::LogicalXor;
  if ((result == DType::Bool && t != DType::Bool) || logical) {
    std::string c = comparison(op, a, b);
    if (c.empty()) unsupported(op, t);
    return c;
  }
  if (result != t) throw CppUnsupported("result dtype differs from the operands'");
  if (is_float(t)) return float_binary(op, t, a, b);
  if (is_int(t)) return int_binary(op, t, a, b);
  if (op == PrimOp::Maximum) return "(" + a + " || " + b + ")";  // Bool
  if (op == PrimOp::Minimum) return "(" + a + " && " + b + ")";
  unsupported(op, t);
}

std::string decode(DType storage, const std::string& raw) {
  switch (storage) {
    case DType::Bool: return "(" + raw + " != 0)";
    case DType::Float16: return call("dv_f16_to_f32", raw);
    case DType::BFloat16: return call("dv_bf16_to_f32", raw);
    default: return raw;
  }
}

std::string encode(DType storage, DType value, const std::string& v) {
  const std::string c = cast(value, ir::compute_dtype(storage), v);
  switch (storage) {
    case DType::Bool: return "((dv_u8)(" + c + " ? 1 : 0))";
    case DType::Float16: return call("dv_f32_to_f16", c);
    case DType::BFloat16: return call("dv_f32_to_bf16", c);
    default: return c;
  }
}

std::string index(const IndexExpr& e, bool bounds_hold, const ConstText& consts) {
  using Kind = IndexExpr::Kind;
  switch (e.kind()) {
    case Kind::Const: return consts(e.value());
    case Kind::Var:
      if (e.name() != "x" && e.name() != "r") throw CppUnsupported("index variable " + e.name());
      return e.name();
    case Kind::Add:
    case Kind::Mul: {
      std::string out = "(";
      const char* op = e.kind() == Kind::Add ? " + " : " * ";
      for (std::size_t i = 0; i < e.operands().size(); ++i) out += (i ? op : "") + index(e.operands()[i], bounds_hold, consts);
      return out + ")";
    }
    case Kind::FloorDiv:
    case Kind::Mod: {
      const IndexExpr& n = e.operands()[0];
      const IndexExpr& d = e.operands()[1];
      if (!d.is_const() || d.value() <= 0) throw CppUnsupported("index divisor " + d.str());
      const bool div = e.kind() == Kind::FloorDiv;
      const std::string a = index(n, bounds_hold, consts), b = consts(d.value());
      if (bounds_hold && n.min_value() >= 0) return "(" + a + (div ? " / " : " % ") + b + ")";
      return call(div ? "dv_floordiv_c" : "dv_mod_c", a, b);
    }
    case Kind::Abs: return "dv_abs_c(" + index(e.operands()[0], bounds_hold, consts) + ")";
  }
  throw CppUnsupported("index expression kind");
}

}  // namespace dv::codegen::cpp
