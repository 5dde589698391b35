// The configuration space of each kernel form: a few KernelTunings worth
// timing for one kernel (runtime/autotune measures them on a GPU).
//
// Pure C++: no CUDA, LibTorch or Python header.
#pragma once

#include <cstddef>
#include <functional>
#include <vector>

#include "codegen/cuda_emitter.h"
#include "ir/loop_ir.h"

namespace dv::codegen {

struct KernelCandidate {
  KernelTuning tuning;
  CudaKernel kernel;  // emitted with `tuning`
};

// At most this many candidates a kernel.
inline constexpr std::size_t kMaxCandidates = 12;

// The tunings worth trying for `kernel`'s form, `base` (the heuristic
// default) first: pointwise kernels vary threads a block, chunks a thread and
// streaming hints; reductions vary the row tile (chunks a thread, threads a
// row, threads a block of short rows), registers vs looped rows, the looped
// rows' cache hints, streaming hints, and the column form's rows a block.
// Not yet deduplicated: knobs a form ignores give identical sources.
std::vector<KernelTuning> tuning_space(const ir::Kernel& kernel, const KernelTuning& base = {});

// The distinct candidates of `kernel`: each tuning of tuning_space emitted by
// `emit`, those whose source repeats an earlier one's dropped, at most
// kMaxCandidates, base first. A form without knobs (or a kernel too small for
// them to matter) gives one candidate. A tuning the emitter rejects (throws)
// is skipped, except the base, whose error propagates.
using EmitFn = std::function<CudaKernel(const KernelTuning&)>;
std::vector<KernelCandidate> candidates(const ir::Kernel& kernel, const EmitFn& emit, const KernelTuning& base = {});
// The same with emit_cuda(kernel, device, tuning).
std::vector<KernelCandidate> candidates(const ir::Kernel& kernel, const DeviceSpec& device,
                                        const KernelTuning& base = {});

}  // namespace dv::codegen
