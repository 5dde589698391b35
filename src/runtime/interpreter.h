// The CPU interpreter of the loop IR.
//
// It gives every instruction the meaning written in docs/loop-ir-semantics.md,
// the same document the CUDA emitter follows, so that one differential test
// against PyTorch eager covers both back ends. The body is evaluated over
// blocks of points at once (Eigen arrays), one dispatch per instruction and
// block. No LibTorch, CUDA or Python here.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <vector>

#include "ir/loop_ir.h"

namespace dv::runtime {

// Thrown when an indirect load's or store's offset leaves [0, offset_extent):
// the program indexed out of range on these inputs (its own error, which
// eager raises too), not a malformed kernel.
struct IndexOutOfRange : std::out_of_range {
  using std::out_of_range::out_of_range;
};

// Runs `kernel` over its whole iteration space. buffers[i] points to element 0
// of kernel.buffers[i] in its storage dtype (b8 = 1 byte 0/1, i32, i64, f16 and
// bf16 as uint16 bit patterns, f32, f64). A pointer may be null if the kernel
// never touches an element of that buffer (empty tensors).
//
// Throws std::invalid_argument for a malformed kernel (wrong buffer count, an
// operand defined later, an op on a dtype it is not defined for, a null
// pointer that is dereferenced), std::out_of_range when an index leaves
// [0, numel) of its buffer and IndexOutOfRange (a std::out_of_range) when an
// indirect offset leaves its extent; buffers may then be partly written. Indices whose
// static bounds (IndexExpr::min_value/max_value) lie inside the buffer are not
// checked point by point.
//
// Semantics that docs/loop-ir-semantics.md leaves open, fixed here:
//   - Cast float -> int of NaN gives 0 and out-of-range values saturate (as
//     CUDA's cvt.rzi does);
//   - with rnumel == 0, a Load or Store on a buffer of numel 0 counts as
//     r-level (it runs at no point): IndexExpr::var folds an extent-0 r to
//     the constant 0, so the index alone no longer says that it depends on r.
//
// Thread-safe: no state outlives the call.
void interpret(const ir::Kernel& kernel, const std::vector<void*>& buffers);

// Exact conversions between float32 and the 16-bit storage types.
// f32 -> f16 / bf16 round to nearest even, keep infinities and keep NaN a
// (quiet) NaN of the same sign; f16 -> f32 and bf16 -> f32 are exact.
std::uint16_t f32_to_f16_bits(float value);
float f16_bits_to_f32(std::uint16_t bits);
std::uint16_t f32_to_bf16_bits(float value);
float bf16_bits_to_f32(std::uint16_t bits);

}  // namespace dv::runtime
