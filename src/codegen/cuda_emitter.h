// CUDA C code generation for loop-IR kernels.
//
// emit_cuda turns one ir::Kernel into a self-contained CUDA C translation unit
// (no #include: NVRTC compiles it as is) with one extern "C" entry point, plus
// the launch configuration it was written for. Shapes are compile-time
// constants of the source, or (DeviceSpec::size_arguments) read from a table
// passed at launch; the same Kernel and DeviceSpec always give the same text,
// so the source can serve as a cache key. The strategies are described
// at the top of cuda_emitter.cpp.
//
// Pure C++: no CUDA, LibTorch or Python header.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "codegen/size_table.h"

#include "ir/loop_ir.h"

namespace dv::codegen {

// How a kernel form is configured: the knobs the emitter exposes (tiles,
// threads, chunks a thread, rows in registers or looped, cache hints). Not a
// fact of the device: the defaults are the cold-start heuristic (what measured
// fastest on the H100, bench/NOTES.md), and on a GPU runtime/autotune times a
// few alternatives (codegen/kernel_configs.h) and keeps the fastest. dvdump
// can override them to write variants for kernel studies.
struct KernelTuning {
  // Pointwise: at most this many threads a block (halved while the grid would
  // leave an SM without two blocks), this many 16-byte chunks a thread.
  int pointwise_threads = 128;
  int pointwise_chunks = 1;
  // Row-kernel tile: about this many 16-byte chunks a thread, at most this
  // many threads a row (while the row fits that way).
  int row_chunks_per_thread = 2;
  int row_max_threads = 512;
  bool row_force_looped = false;  // never hold the row in registers (row_chunks_per_thread a step)
  // Rows in registers whose chunks split into whole warps of exactly
  // row_chunks_per_thread chunks a thread: that many threads a row, though
  // not a power of two (768 f32 = 192 chunks: 6 warps of one chunk).
  bool row_whole_warps = false;
  // Looped rows: evict_last loads in passes that a later pass re-reads,
  // evict_first in the last; in L1 and L2 (3), L2 only (2), L1 only (1) or not (0).
  int row_loop_hints = 3;
  bool row_loop_moments = true;  // looped rows of one step: a variance computed with its mean (one pass fewer)
  bool row_one_step_looped = true;  // f32 rows of (1, 2] x row_max_threads chunks that write rows: looped, one step
  int col_rows_per_block = 64;    // reductions over an outer dimension: rows (x) a block, when that leaves a block an SM
  int row_block_threads = 256;    // rows of fewer threads than this share blocks of at most this many threads
  // Streaming (.cs, evict-first) 16-byte loads and stores where the data is
  // touched once: a pointwise kernel's loads and stores, a row kernel's stores
  // and its loads that carry no other hint.
  bool stream_hints = false;
  // Kernels whose every output is f16/bf16: exp and float division by fast
  // approximations (ex2.approx after a scale, div.full: a few f32 ulps,
  // far below a half's rounding), as Triton's exp and division are.
  bool fast_math = false;

  bool operator==(const KernelTuning&) const = default;
};

// A short readable form: "default", or the fields that differ from it ("row_chunks=4 row_looped").
std::string to_string(const KernelTuning& t);

// What the emitter needs to know about the target GPU (facts, not tuning).
struct DeviceSpec {
  int arch = 90;  // compute capability major*10 + minor
  int sm_count = 132;
  int max_threads_per_block = 1024;
  int max_shared_per_block = 48 * 1024;  // bytes of static shared memory
  // Sizes as arguments (dynamic shapes): the index constants and the
  // iteration space's sizes are read from a table passed at launch instead of
  // being written into the source, so kernels that differ only in sizes have
  // one source (one compile). Every choice the emitter makes from a size
  // still shows in the text (vector widths, tails, tiles): two sizes share a
  // source only where every such choice agrees, and each launch passes its
  // own sizes, so sharing never changes a result.
  bool size_arguments = false;
  // With size arguments: index constants that stay literals of the source
  // (sorted): sizes every instance of a dynamic-shape plan shares (a static
  // dimension, its strides), so that divisions by them keep compiling to
  // multiplications. Any value may be listed: a kernel whose constants differ
  // has another source, never another result.
  std::vector<std::int64_t> constant_sizes;
  // With size arguments, which of the kernel's sizes depend on the symbols,
  // when known (codegen::SizeOrigins).
  using SizeOrigins = codegen::SizeOrigins;
  SizeOrigins origins;
};

struct LaunchConfig {
  unsigned grid[3] = {1, 1, 1};
  unsigned block[3] = {1, 1, 1};
  unsigned shared_bytes = 0;  // dynamic shared memory (the emitter uses static shared memory only)
};

struct CudaKernel {
  std::string name;    // the extern "C" entry point
  std::string source;  // CUDA C, compiled without include files
  LaunchConfig launch;
  // Size arguments: the table's values, passed by value after the buffers as
  // `struct { idx_t v[n]; }` (idx_t: 64-bit if size_args_64, else 32-bit).
  std::vector<std::int64_t> size_args;
  bool size_args_64 = false;
};

// Parameters of the entry, in order: one pointer per kernel.buffers[i], of its
// storage type (bool, int, long long, unsigned short for f16/bf16, float,
// double), const for buffers the kernel does not write, all __restrict__.
// Throws std::invalid_argument for a kernel it cannot emit (malformed IR, an
// operation on a dtype the semantics do not define).
CudaKernel emit_cuda(const ir::Kernel& kernel, const DeviceSpec& device, const KernelTuning& tuning = {});

// How an index varies over `vec` consecutive values of the variable `lane_var`
// (the first of which is a multiple of `vec`), all other variables fixed:
//   Contiguous: lane i reads lane 0's element + i, and lane 0's element is a
//               multiple of vec (so a vec-wide vector access is aligned);
//   Uniform:    every lane reads the same element;
//   Other:      anything else (per-lane scalar accesses).
// Exposed for tests; emit_cuda uses it for every Load and Store.
enum class LaneAccess { Contiguous, Uniform, Other };
LaneAccess classify_lane_access(const ir::IndexExpr& index, const std::string& lane_var, int vec);

}  // namespace dv::codegen
