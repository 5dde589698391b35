// The kernels of a CPU plan as generated C++ (DEEPVISOR_CPU=compiled): each
// kernel emitted by codegen/cpp_emitter.h, compiled by the HostCompiler (in
// parallel, one compile a core) and run over ATen's thread pool. A kernel the
// emitter does not support, or whose compile fails, keeps running in the
// interpreter; `why_not` says why.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "codegen/cpp_emitter.h"
#include "ir/loop_ir.h"
#include "runtime/host_compiler.h"

namespace dv::runtime {

struct HostKernel {
  HostKernelFn fn = nullptr;  // null: run it in the interpreter
  bool parallel = true;       // x ranges may run on several threads
  std::vector<std::int64_t> size_args;  // its size table (size arguments)
  std::string why_not;        // when fn is null
};

// Sizes as arguments (codegen/size_table.h): the kernels of a dynamic-shape
// plan's instances share their sources, so a new shape compiles nothing
// where the emitter made the same choices.
struct HostSizeArguments {
  bool enabled = false;
  std::vector<std::int64_t> constant_sizes;  // sorted: index constants that stay literals
  // The same graph lowered at other values of its symbols (null: none), which
  // tells which sizes depend on them (codegen::emit_with_origins).
  const std::vector<ir::Kernel>* reference = nullptr;
};

// The generated C++ of each kernel, in order (an unsupported one says why).
std::vector<codegen::CppEmitResult> emit_host_kernels(const std::vector<ir::Kernel>& kernels,
                                                      const HostSizeArguments& sizes = {});

// One HostKernel per kernel, in order. Identical sources compile once.
// DEEPVISOR_CPU_VECTOR_MATH=0 keeps every math call the scalar libm function.
std::vector<HostKernel> prepare_host_kernels(const std::vector<ir::Kernel>& kernels,
                                             const HostSizeArguments& sizes = {});

// Runs `kernel` through `host` on buffers laid out as interpret() takes them,
// over at::parallel_for with the current torch thread count. Throws
// IndexOutOfRange / std::out_of_range as the interpreter does.
void run_host_kernel(const HostKernel& host, const ir::Kernel& kernel, const std::vector<void*>& buffers);

}  // namespace dv::runtime
