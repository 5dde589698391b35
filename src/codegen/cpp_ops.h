// C++ expressions for the loop IR's values (used by cpp_emitter.cpp): one
// function per kind of instruction, each giving the expression that computes
// the value from its operands' names. The helpers they call (dv_wadd,
// dv_fmax, dv_f32_to_f16, ...) are defined by the prelude (cpp_prelude.h).
//
// Each throws CppUnsupported for an operation on a dtype the semantics do
// not define (the emitter then reports the kernel unsupported).
#pragma once

#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>

#include "ir/loop_ir.h"

namespace dv::codegen::cpp {

struct CppUnsupported : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string compute_type(ir::DType compute);  // bool, dv_i32, dv_i64, float, double
std::string storage_type(ir::DType storage);  // dv_u8 for b8, dv_u16 for f16 and bf16

std::string constant(const ir::Instr& in);                      // a Constant's value
std::string int_literal(std::int64_t v);                        // a dv_i64 literal
std::string float_literal(double v, ir::DType compute);         // exact, inf and NaN included
std::string cast(ir::DType from, ir::DType to, const std::string& a);
std::string unary(ir::PrimOp op, ir::DType operand, const std::string& a);
std::string binary(ir::PrimOp op, ir::DType operand, ir::DType result, const std::string& a, const std::string& b);

// Whether the value's expression calls a function compiled elsewhere (libm,
// or libmvec's vector variants): float exp, exp2, log, log1p, sin, cos, tanh,
// erf, pow and fmod. Everything else is inline arithmetic or a builtin that
// compiles to instructions.
bool calls_function(ir::PrimOp op, ir::DType operand);

// A storage element (an lvalue or value of storage_type) as its compute dtype, and back.
std::string decode(ir::DType storage, const std::string& raw);
std::string encode(ir::DType storage, ir::DType value, const std::string& v);

// An index expression as a dv_i64 expression of `x` and `r`. `bounds_hold`:
// the variables are the kernel's (x < xnumel, r < rnumel), so the static
// bounds of every sub-expression hold and a floordiv or mod of a numerator
// that is never negative is C's / or %. `consts` writes each constant (a
// literal, or an entry of the size table; codegen/size_table.h).
using ConstText = std::function<std::string(std::int64_t)>;
std::string index(const ir::IndexExpr& e, bool bounds_hold, const ConstText& consts = int_literal);

}  // namespace dv::codegen::cpp
