// The shared head of every generated host C++ kernel (cpp_emitter.h).
//
// It defines, without any #include (a kernel compiles in a fraction of a
// second), the integer types, the C math functions the loop IR uses and the
// helpers for the semantics that C++ operators do not give directly
// (docs/loop-ir-semantics.md): wrapping integer division and powers, Python
// remainder, NaN-propagating max/min, saturating float -> int casts and the
// exact f16/bf16 conversions of the interpreter (runtime/interpreter.cpp).
//
// Pure C++: no CUDA, LibTorch or Python header.
#pragma once

#include <string>

namespace dv::codegen {

// vector_math: declare the float and double math functions with
// __attribute__((simd)), so that g++ vectorizes loops that call them through
// glibc's libmvec (a few ulps from the scalar libm results the interpreter
// uses; the semantics allow that for float math). Without it every call is
// the scalar libm function, as in the interpreter.
std::string cpp_prelude(bool vector_math);

}  // namespace dv::codegen
