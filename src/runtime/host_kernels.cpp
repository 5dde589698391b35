#include "runtime/host_kernels.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <stdexcept>
#include <thread>

#include "codegen/cpp_emitter.h"
#include "runtime/interpreter.h"
#include "runtime/parallel_for.h"

namespace dv::runtime {
namespace {

bool vector_math_wanted() {
  const char* v = std::getenv("DEEPVISOR_CPU_VECTOR_MATH");
  return (v == nullptr || std::string(v) != "0") && HostCompiler::global().vector_math_available();
}

// Points a thread should get at least, as ATen's own kernels use.
constexpr std::int64_t kGrainPoints = 32768;  // at::internal::GRAIN_SIZE (TensorIterator.h)

}  // namespace

std::vector<codegen::CppEmitResult> emit_host_kernels(const std::vector<ir::Kernel>& kernels,
                                                      const HostSizeArguments& sizes) {
  codegen::CppOptions options;
  options.vector_math = vector_math_wanted();
  options.size_arguments = sizes.enabled;
  options.constant_sizes = sizes.constant_sizes;
  const bool paired = sizes.reference != nullptr && sizes.reference->size() == kernels.size();
  std::vector<codegen::CppEmitResult> out(kernels.size());
  for (std::size_t i = 0; i < kernels.size(); ++i) {
    codegen::CppKernel k = codegen::emit_with_origins(kernels[i], paired ? &(*sizes.reference)[i] : nullptr, options,
                                                      [&](const ir::Kernel& kernel, const codegen::CppOptions& o) {
                                                        codegen::CppEmitResult r = codegen::emit_cpp(kernel, o);
                                                        out[i].unsupported = r.unsupported;
                                                        return r.kernel ? std::move(*r.kernel) : codegen::CppKernel{};
                                                      });
    if (!k.source.empty()) out[i].kernel = std::move(k);
  }
  return out;
}

std::vector<HostKernel> prepare_host_kernels(const std::vector<ir::Kernel>& kernels, const HostSizeArguments& sizes) {
  std::vector<HostKernel> out(kernels.size());
  HostCompiler& compiler = HostCompiler::global();
  if (!compiler.available()) {
    for (auto& h : out) h.why_not = compiler.unavailable_reason();
    return out;
  }
  const std::vector<codegen::CppEmitResult> emitted = emit_host_kernels(kernels, sizes);
  for (std::size_t i = 0; i < kernels.size(); ++i)
    if (!emitted[i].kernel) out[i].why_not = "not supported by the C++ emitter: " + emitted[i].unsupported;
  // One thread a core: the compiles are separate processes, the threads only wait on them.
  const std::size_t threads = std::max(1u, std::thread::hardware_concurrency());
  run_on_threads(kernels.size(), threads, [&](std::size_t i) {
    if (!emitted[i].kernel) return;
    const codegen::CppKernel& k = *emitted[i].kernel;
    try {
      out[i].fn = compiler.get_function(k.source, k.name);
      out[i].parallel = k.parallel;
      out[i].size_args = k.size_args;
    } catch (const std::exception& e) {
      out[i].why_not = e.what();
    }
  });
  return out;
}

void run_host_kernel(const HostKernel& host, const ir::Kernel& kernel, const std::vector<void*>& buffers) {
  std::atomic<int> status{0};
  auto run = [&](std::int64_t begin, std::int64_t end) {
    const int s = host.fn(buffers.data(), begin, end, host.size_args.data());
    if (s != 0) status.fetch_or(s == 1 ? 1 : (s == 2 ? 2 : 4));
  };
  if (host.parallel) {
    const std::int64_t grain = std::max<std::int64_t>(1, kGrainPoints / std::max<std::int64_t>(1, kernel.rnumel));
    at::parallel_for(0, kernel.xnumel, grain, run);
  } else {
    run(0, kernel.xnumel);
  }
  const int s = status.load();
  if (s & 1) throw IndexOutOfRange("kernel " + kernel.name + ": an index is out of range (an indirect offset left its extent)");
  if (s & 2) throw std::out_of_range("kernel " + kernel.name + ": an element outside its buffer");
  if (s & 4) throw std::runtime_error("kernel " + kernel.name + ": out of memory for its row buffer");
}

}  // namespace dv::runtime
