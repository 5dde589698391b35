// The block of a call's intermediates as a CUDA graph's capture allocates it
// when the plan gives it windows (codegen/arena_plan.h): allocations side by
// side in the segment made before the capture (runtime/pool_room.h), one
// for each part between the windows' edges (window_block_edges). Before a
// step that allocates memory of its own and frees it before it ends
// (cuDNN's workspace), the parts of its window are freed, and the allocator
// hands their bytes (merged into one free block) to that step's requests,
// where nothing of the block is alive then; after the step they are
// allocated again, in order, each at its address. So those requests need
// no room beside the block.
//
// That the parts come back where they were is what the caching allocator
// does in a graph's private pool (the smallest free block that fits, split
// from its start, neighbours merged when freed, freed blocks reusable at
// once on the capturing stream), where no other free block could hold a
// part (step_window_grid), not what it promises: the block checks the
// addresses. Where a part does not come back in place, the capture is
// abandoned and the next call captures without windows; where the parts do
// not lie side by side, the block holds nothing and the caller uses a
// block without windows.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace dv::runtime {

class WindowedBlock {
 public:
  // The parts between `edges` (from 0 to the block's bytes), allocated on
  // `device` (in a capture: from the graph's pool) in order.
  WindowedBlock(std::vector<std::int64_t> edges, const at::Device& device);
  // The parts lie side by side: block() is usable.
  bool ok() const { return block_.defined(); }
  // Over all parts (held by this object).
  const at::Tensor& block() const { return block_; }
  // Frees the parts in [begin, end) (edges), for the step about to run.
  void lend_window(std::int64_t begin, std::int64_t end);
  // Allocates them again; false where one landed elsewhere (the block is
  // then unusable: its bytes are another allocation's).
  bool take_window_back(std::int64_t begin, std::int64_t end);

 private:
  at::Tensor allocate(std::size_t part) const;

  at::Device device_;
  std::vector<std::int64_t> edges_;
  char* start_ = nullptr;
  std::vector<at::Tensor> parts_;  // by part
  at::Tensor block_;
};

}  // namespace dv::runtime
