// The pointwise form (rnumel <= 1) and the empty iteration space; the
// strategy is described at the top of cuda_emitter.cpp.
#include "codegen/cuda_emitter_impl.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace dv::codegen::cuda {

void Emitter::emit_empty() {
  emit_prelude_and_constants("strategy: empty iteration space (nothing to do)");
  w_.line("");
  w_.open(signature(32));
  w_.close();
  launch_.block[0] = 32;
}

void Emitter::emit_pointwise() {
  // Vector width from the widest accessed element; KernelTuning's chunks a
  // thread (default one 16-byte chunk) in blocks of its threads (default 128).
  // Measured on the H100 (bench/NOTES.md, 2026-11-25): fewer, larger tiles (4
  // chunks a thread, or 256-1024 threads) ran 1-5% slower on a 64M-element
  // chain; the copy floor behaves the same. Other cards: runtime/autotune.
  const int bytes = std::max(1, max_lane_access_bytes());
  const int vec = std::max(1, 16 / bytes);
  int threads = std::clamp(tune_.pointwise_threads / 32 * 32, 64, dev_.max_threads_per_block);
  int groups = 1;
  auto tile = [&] { return static_cast<std::int64_t>(threads) * vec * groups; };
  const std::int64_t enough_blocks = 2LL * dev_.sm_count;
  // Larger tiles only while the grid still has enough blocks (chunks first, then threads).
  groups = std::clamp(tune_.pointwise_chunks, 1, 8);
  while (groups > 1 && ceil_div(layout_xnumel(), tile()) < enough_blocks) groups /= 2;
  while (threads > 64 && ceil_div(layout_xnumel(), tile()) < enough_blocks) threads /= 2;
  const std::int64_t full_tiles = k_.xnumel / tile();
  // Size arguments: one text for every size (full tiles and a tail, either possibly none).
  const bool tail = dev_.size_arguments || k_.xnumel % tile() != 0;
  const std::int64_t blocks = ceil_div(k_.xnumel, tile());
  if (blocks > std::numeric_limits<std::int32_t>::max()) fail("grid too large");

  emit_prelude_and_constants(cat("strategy: pointwise; ", threads, " threads x ", groups, " chunks x ", vec,
                                 " lanes per block (tile ", tile(), ")",
                                 tail ? "; the last block runs the tail one element per thread" : "; no tail"));
  w_.line(cat("constexpr int kThreads = ", threads, ";"));
  w_.line(cat("constexpr idx_t kTile = ", tile(), ";"));
  emit_size_constant("kFullTiles", full_tiles);
  w_.line("");
  w_.open(signature(threads));
  // Scalars (values that do not depend on x), in every thread before the tile code (never an
  // accumulating store: analyze() makes it lane code, one add per x).
  for (std::size_t i = 0; i < k_.body.size(); ++i)
    if (live_[i] && !lanes_[i]) emit_scalar(static_cast<ValueId>(i), "");

  std::vector<ValueId> lane_ids;
  for (std::size_t i = 0; i < k_.body.size(); ++i)
    if (live_[i] && lanes_[i]) lane_ids.push_back(static_cast<ValueId>(i));
  auto body = [&](const Segment& s) { emit_lane_list(lane_ids, s); };
  Segment fast;
  fast.nchunk = groups;
  fast.width = vec;
  fast.base = "xbase";
  fast.chunk_stride = static_cast<std::int64_t>(threads) * vec;
  fast.lane_var = "x";
  Segment slow;
  slow.base = "x";
  slow.lane_var = "x";

  if (full_tiles > 0 || dev_.size_arguments) {
    if (tail) w_.open("if ((idx_t)blockIdx.x < kFullTiles)");
    else w_.open("");
    w_.line("// a full tile: chunk c of this thread covers x = xbase + c*kThreads*W + [0, W)");
    w_.line(cat("const idx_t xbase = (idx_t)blockIdx.x * kTile + (idx_t)threadIdx.x * ", vec, ";"));
    body(fast);
    if (tail) {
      w_.otherwise();
      w_.line("// the tail: one element per thread");
      w_.open("for (idx_t x = kFullTiles * kTile + (idx_t)threadIdx.x; x < kXnumel; x += kThreads)");
      body(slow);
      w_.close();
    }
    w_.close();
  } else {
    w_.line("// the whole space is one partial tile: one element per thread");
    w_.open("for (idx_t x = (idx_t)threadIdx.x; x < kXnumel; x += kThreads)");
    body(slow);
    w_.close();
  }
  w_.close();
  launch_.grid[0] = static_cast<unsigned>(blocks);
  launch_.block[0] = static_cast<unsigned>(threads);
}

}  // namespace dv::codegen::cuda
