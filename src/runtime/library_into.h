// Library calls that write their result into storage the plan hands them.
//
// A convolution or a matmul allocates its result from the caching
// allocator; inside a CUDA graph's private pool those allocations and the
// plan's block of kernel results (codegen/arena_plan.h) peak side by side:
// ResNet-50's pool at batch 16 in bf16 held 124 MB on the H200 where all of
// its intermediates, packed together, peak at 77 MB. Called
// through its out= variant, the library writes into the block at an offset
// planned like any kernel result's.
//
// Which ops qualify is the plan's (codegen::library_into); whether a call
// does is decided here, at each run.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/stack.h>

#include "codegen/arena_plan.h"

namespace dv::runtime {

// Runs the op whose boxed arguments are `args` into `out` (the result's
// sizes, strides and dtype as the capture saw them). False, having done
// nothing, where this call must allocate its result as the op would: the
// layout or the dtype the library would produce differs from `out`'s, or
// ATen would pick another convolution backend for these tensors.
bool call_into(codegen::LibraryInto call, const torch::jit::Stack& args, at::Tensor& out);

}  // namespace dv::runtime
