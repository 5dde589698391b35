// The block of a call's intermediates as a CUDA graph's capture allocates it
// when the plan gives it a window (codegen/arena_plan.h): up to three
// allocations side by side in the segment made before the capture
// (runtime/pool_room.h), the bytes before the window, the window, the bytes
// after it. Before a step that allocates memory of its own and frees it
// before it ends (cuDNN's workspace), the window's allocation is freed, and
// the allocator hands its bytes to that step's requests, where nothing of
// the block is alive then; after the step it is allocated again, at the
// same address. So those requests need no room beside the block.
//
// That the window comes back where it was is what the caching allocator
// does in a graph's private pool (the smallest free block that fits, split
// from its start, neighbours merged when freed, freed blocks reusable at
// once on the capturing stream), not what it promises: the block checks the
// addresses. Where the window does not come back in place, the capture is
// abandoned and the next call captures without a window; where the parts
// do not lie side by side, the block holds nothing and the caller uses a
// block without a window.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace dv::runtime {

class WindowedBlock {
 public:
  // `bytes` in all, with `window` bytes at `offset` (0, or at least
  // least_window_offset(): the bytes before it are an allocation of their
  // own); holding windowed_block_bytes (runtime/pool_room.h);
  // allocated on `device` (in a capture: from the graph's pool).
  WindowedBlock(std::int64_t offset, std::int64_t window, std::int64_t bytes, const at::Device& device);
  // The parts lie side by side: block() is usable.
  bool ok() const { return block_.defined(); }
  // Over all parts (held by this object).
  const at::Tensor& block() const { return block_; }
  // Frees the window's allocation, for the step about to run.
  void lend_window();
  // Allocates the window again; false where it landed elsewhere (the block
  // is then unusable: its window's bytes are another allocation's).
  bool take_window_back();

 private:
  at::Tensor allocate(std::int64_t bytes) const;

  at::Device device_;
  std::int64_t window_bytes_;
  void* window_address_ = nullptr;
  at::Tensor before_, window_, after_, block_;
};

}  // namespace dv::runtime
