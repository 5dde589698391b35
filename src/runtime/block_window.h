// The block of a call's intermediates as a CUDA graph's capture allocates it
// when the plan gives it a window (codegen/arena_plan.h): two allocations
// side by side in the segment made before the capture (runtime/pool_room.h),
// the window (the block's first bytes) and the rest. Before a step that
// allocates memory of its own and frees it before it ends (cuDNN's
// workspace), the window's allocation is freed, and the allocator hands its
// bytes to that step's requests, where nothing of the block is alive then;
// after the step it is allocated again, at the same address. So those
// requests need no room beside the block.
//
// That the window comes back where it was is what the caching allocator
// does in a graph's private pool (the smallest free block that fits, split
// from its start, neighbours merged when freed), not what it promises: the
// block checks the addresses. Where the window does not come back in place,
// the capture is abandoned and the next call captures without a window;
// where the two allocations do not lie side by side, the block holds
// nothing and the caller uses a block without a window.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace dv::runtime {

class WindowedBlock {
 public:
  // `bytes` in all, of which the first `window`; allocated on `device` (in a
  // capture: from the graph's pool).
  WindowedBlock(std::int64_t window, std::int64_t bytes, const at::Device& device);
  // The two allocations lie side by side: block() is usable.
  bool ok() const { return block_.defined(); }
  // Over both allocations (held by this object).
  const at::Tensor& block() const { return block_; }
  // Frees the window's allocation, for the step about to run.
  void lend_window();
  // Allocates the window again; false where it landed elsewhere (the block
  // is then unusable: its window's bytes are another allocation's).
  bool take_window_back();

  // What the allocator must hold for a block of `bytes` with a window of
  // `window`: the rest is at least a large block (a small one would come
  // from another segment).
  static std::int64_t held_bytes(std::int64_t window, std::int64_t bytes);

 private:
  at::Tensor allocate(std::int64_t bytes) const;

  at::Device device_;
  std::int64_t window_bytes_;
  void* window_address_ = nullptr;
  at::Tensor window_, rest_, block_;
};

}  // namespace dv::runtime
