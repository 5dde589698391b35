#include "codegen/kernel_configs.h"

#include <stdexcept>
#include <unordered_set>

namespace dv::codegen {

std::vector<KernelTuning> tuning_space(const ir::Kernel& kernel, const KernelTuning& base) {
  std::vector<KernelTuning> out{base};
  auto add = [&](auto change) {
    KernelTuning t = base;
    change(t);
    out.push_back(t);
  };
  if (kernel.rnumel <= 1) {
    // Pointwise (bench/NOTES.md, H100 2026-11-25: 128 threads x 1 chunk won
    // by 1-5%; other cards may differ). Threads are halved for small grids,
    // so small kernels collapse to fewer distinct sources.
    add([](KernelTuning& t) { t.pointwise_threads = 256; });
    add([](KernelTuning& t) { t.pointwise_threads = 512; });
    add([](KernelTuning& t) { t.pointwise_chunks = 2; });
    add([](KernelTuning& t) { t.pointwise_threads = 256, t.pointwise_chunks = 2; });
    add([](KernelTuning& t) { t.pointwise_chunks = 4; });
    add([](KernelTuning& t) { t.fast_math = true; });  // half outputs only (else the same source)
    // Streaming loads and stores: data a pointwise kernel touches once.
    add([](KernelTuning& t) { t.stream_hints = true; });
    add([](KernelTuning& t) { t.stream_hints = true, t.pointwise_chunks = 2; });
    add([](KernelTuning& t) { t.stream_hints = true, t.pointwise_threads = 256; });
    return out;
  }
  // Reductions: the row form's tile and looped/register choice, then the
  // column form's rows a block (the form the emitter picks ignores the others).
  add([](KernelTuning& t) { t.fast_math = true; });  // half outputs only (else the same source)
  add([](KernelTuning& t) { t.row_max_threads = 1024; });
  add([](KernelTuning& t) { t.row_max_threads = 256; });
  add([](KernelTuning& t) { t.row_chunks_per_thread = 4; });
  add([](KernelTuning& t) { t.row_one_step_looped = false; });
  add([](KernelTuning& t) { t.row_force_looped = true, t.row_chunks_per_thread = 4; });
  add([](KernelTuning& t) { t.row_loop_hints = 0; });
  // Short rows: one or eight chunks a thread (more or fewer threads a row), smaller or larger
  // blocks of rows, streaming row stores.
  add([](KernelTuning& t) { t.row_chunks_per_thread = 1; });
  add([](KernelTuning& t) { t.row_chunks_per_thread = 8; });  // a quarter warp a 512-element bf16 row
  // Rows that split into whole warps of one or two chunks a thread, not a
  // power of two (768 f32: 6 warps x 1 chunk, 3 x 2). On the H100 (bench/NOTES.md,
  // session 36) layer_norm 32768x768 f32 ran within 1.5% of the other layouts
  // this way; another card may differ.
  add([](KernelTuning& t) { t.row_whole_warps = true, t.row_chunks_per_thread = 1; });
  add([](KernelTuning& t) { t.row_whole_warps = true; });
  add([](KernelTuning& t) { t.row_block_threads = 128; });
  add([](KernelTuning& t) { t.row_block_threads = 512; });
  // A warp a row and a block a row, as Inductor lays out rows of 256-1024
  // (one warp, no shared memory): the block size may matter where a block's
  // rows wait for each other to retire.
  add([](KernelTuning& t) { t.row_chunks_per_thread = 8, t.row_block_threads = 32; });
  add([](KernelTuning& t) { t.row_chunks_per_thread = 4, t.row_block_threads = 32; });
  add([](KernelTuning& t) { t.row_block_threads = 64; });
  add([](KernelTuning& t) { t.stream_hints = true; });
  add([](KernelTuning& t) { t.col_rows_per_block = 32; });
  add([](KernelTuning& t) { t.col_rows_per_block = 128; });
  add([](KernelTuning& t) { t.col_rows_per_block = 256; });
  return out;
}

std::vector<KernelCandidate> candidates(const ir::Kernel& kernel, const EmitFn& emit, const KernelTuning& base) {
  std::vector<KernelCandidate> out;
  std::unordered_set<std::string> seen;
  const std::vector<KernelTuning> space = tuning_space(kernel, base);
  for (std::size_t i = 0; i < space.size() && out.size() < kMaxCandidates; ++i) {
    CudaKernel k;
    if (i == 0) {
      k = emit(space[i]);
    } else {
      try {
        k = emit(space[i]);
      } catch (const std::invalid_argument&) {
        continue;  // a configuration this kernel cannot take
      }
    }
    if (!seen.insert(k.source).second) continue;
    out.push_back({space[i], std::move(k)});
  }
  return out;
}

std::vector<KernelCandidate> candidates(const ir::Kernel& kernel, const DeviceSpec& device, const KernelTuning& base) {
  return candidates(kernel, [&](const KernelTuning& t) { return emit_cuda(kernel, device, t); }, base);
}

}  // namespace dv::codegen
