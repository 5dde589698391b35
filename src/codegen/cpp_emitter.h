// Host C++ code generation for loop-IR kernels (the CPU back end).
//
// emit_cpp turns one ir::Kernel into a self-contained C++17 translation unit
// (no #include; the prelude is cpp_prelude.h) with one extern "C" entry:
//
//   int NAME(void* const* buffers, long long x_begin, long long x_end, const long long* sizes)
//
// which runs the rows x_begin <= x < x_end of the kernel's iteration space and
// returns a CppStatus. `sizes` is the size table (CppKernel::size_args; read
// only with size arguments). buffers[i] points to element 0 of kernel.buffers[i] in
// its storage type (as interpret() takes them). The caller splits [0, xnumel)
// across threads (at::parallel_for) when CppKernel::parallel says it may; the
// entry itself runs on the calling thread, vectorized by the compiler.
//
// Kernel forms:
//   - pointwise (rnumel == 1): one loop over x, the whole body straight-line
//     per point, under `omp simd`;
//   - rows (rnumel > 1): per row, the x-level values and one loop over r per
//     "stage" (a stage ends where a Reduce's result is needed: softmax is a max
//     loop, a sum loop and a store loop), each loop under `omp simd` with the
//     reductions as simd reductions. r-level values needed again in a later
//     loop are kept in a row buffer instead of being recomputed (the exp of
//     softmax is computed once).
// Kernels with an indirect or accumulating Store run serially over x, in x
// order (as the interpreter does), with no simd.
//
// Semantics are those of docs/loop-ir-semantics.md and the interpreter:
// integers, comparisons, selects, casts and 16-bit rounding bit for bit; the
// float math functions are libm's (or, with vector_math, libmvec's, a few ulps
// apart), and float sums may combine in another order.
//
// Pure C++: no CUDA, LibTorch or Python header.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "codegen/size_table.h"
#include "ir/loop_ir.h"

namespace dv::codegen {

struct CppOptions {
  bool vector_math = true;  // see cpp_prelude.h
  // A row buffer for values reused across stages is used while the buffers
  // of one row take at most this many bytes (they stay in the L2 cache);
  // longer rows recompute those values.
  std::int64_t max_row_cache_bytes = 256 * 1024;
  // Sizes as arguments (dynamic shapes; codegen/size_table.h): the entry
  // reads its sizes from the table it is passed, except the constant sizes
  // (sorted) or, where the origins are known, the static uses; its name is a
  // hash of its text.
  bool size_arguments = false;
  std::vector<std::int64_t> constant_sizes;
  SizeOrigins origins;
};

struct CppKernel {
  std::string name;      // the extern "C" entry point
  std::string source;    // C++17, compiled without include files
  bool parallel = true;  // disjoint x ranges may run concurrently; else one call over [0, xnumel)
  std::vector<std::int64_t> size_args;  // the size table the entry takes (empty without size arguments)
};

// What the entry returns.
enum class CppStatus : int {
  Ok = 0,
  OffsetOutOfRange = 1,  // an indirect offset left [0, offset_extent) (interpreter: IndexOutOfRange)
  OutsideBuffer = 2,     // an element outside [0, numel) of its buffer (interpreter: std::out_of_range)
  OutOfMemory = 3,       // the row buffer could not be allocated
};

struct CppEmitResult {
  std::optional<CppKernel> kernel;  // absent when the kernel uses something not supported yet
  std::string unsupported;          // then: what
};

// Never throws for a kernel it cannot handle: it says why instead, and the
// caller runs that kernel another way (the interpreter).
CppEmitResult emit_cpp(const ir::Kernel& kernel, const CppOptions& options = {});

}  // namespace dv::codegen
