// Room made in a CUDA graph's memory pool before its capture, so that the
// capture's other large allocations need no segments of their own.
//
// During a capture every allocation comes from the graph's private pool, and
// the caching allocator gives each request of 1 to 10 MiB a 20 MiB segment.
// Besides the block of intermediates (codegen/arena_plan.h), requests land
// there from the library (cuDNN's workspace, allocated and freed inside each
// convolution), from results the block does not hold (a library call that
// allocates its own) and from the plan's outputs (they outlive the call).
// Their segments stay reserved by the pool for the replays, mostly empty:
// ResNet-50's graph held a 20 MiB segment for workspaces of a few MiB, 20 MiB
// above eager's peak.
//
// So the capture first allocates and frees one segment sized to the block
// plus the room those requests need, then allocates the block from it: the
// free tail that the split leaves takes them (the allocator picks the
// smallest free block that fits). Only requests above 1 MiB count (smaller
// ones go to the allocator's pool of small blocks); larger ones count too,
// though each would get a segment of its own size: a transient one (a 14 MiB
// workspace of ResNet-50's) leaves that segment empty between calls. Sizes
// are rounded as the allocator rounds them, and the segment is at least
// 10 MiB (which the allocator does not round up to 20). The room never
// changes what the plan computes: a request it cannot hold gets a segment as
// before.
//
// The requests that a step allocates and frees before it ends may instead
// take a window in the block (runtime/block_window.h), where nothing is
// alive at that step; the room then holds the others.
//
// The room is measured, not predicted: on the runs of a plan step by step
// before its capture, the caching allocator's trace callback reports each
// allocation and free the steps make (BesideBlockProbe), and the room is the
// most bytes of such requests alive at once on the last of them.
//
// One window at one offset must be free at every step it serves, so it does
// not pay where a step with a large transient request runs while the block
// is full. The window may then serve only some of those steps, the room the
// others (window_step_choices), or each step may get a window of its own, at
// its own offset: placed after the packing (codegen::plan_arena_step_windows)
// or packed with the block as memory alive at its step alone
// (codegen::plan_arena_packed_windows). The choice whose pool is smallest is
// taken (choose_window). MonoDepth's decoder (H100, fp32, batch 16) asks
// cuDNN for 330 MiB at a step where the block's storage alive reaches its
// 227 MiB end, so a window placed after the packing lies past it.
#pragma once

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "codegen/arena_plan.h"

namespace dv::runtime {

// The caching allocator's sizes (c10/core/AllocatorConfig.h; checked where
// LibTorch is included).
constexpr std::int64_t kAllocatorMinBlock = 512;            // every size is rounded up to this
constexpr std::int64_t kAllocatorSmallSize = 1 << 20;       // up to this: the pool of small blocks
constexpr std::int64_t kAllocatorMinLargeAlloc = 10 << 20;  // below this: a 20 MiB segment
constexpr std::int64_t kAllocatorSmallBuffer = 2 << 20;     // a segment of small blocks
constexpr std::int64_t kAllocatorRoundLarge = 2 << 20;      // larger segments: a multiple of this

// A request's bytes as the room must hold them: rounded as the allocator
// rounds them, or 0 for a small block (1 MiB or less).
std::int64_t room_for(std::int64_t bytes);

// The segment to make before a capture whose block of intermediates has
// `block` bytes and whose other requests that the room takes hold at most
// `beside` bytes at once; 0 where the allocator does as well without (a
// block of 10 MiB or more and nothing beside it). A block of 1 to 10 MiB
// alone gets a segment of 10 MiB, not 20. A block of 1 MiB or less beside
// such requests is taken from the room too (block_request_bytes), not from
// a 2 MiB segment of small blocks of its own.
std::int64_t pool_room_bytes(std::int64_t block, std::int64_t beside);

// The bytes to allocate for a block of `block` bytes in a capture whose pool
// got a segment of `room` bytes first: a small block beside a room asks for
// just more than the allocator's small size, so that the room holds it.
std::int64_t block_request_bytes(std::int64_t block, std::int64_t room);

// The segment to make before a capture whose block has a window for the
// steps' transient requests (runtime/block_window.h): `held` bytes of block
// (its parts, which must lie side by side in it) and `lasting` bytes of
// requests beside it at once. Never 0: the parts need one segment.
std::int64_t windowed_pool_room_bytes(std::int64_t held, std::int64_t lasting);

// What the runs before a capture measured beside the block of intermediates
// (BesideBlockProbe::measured): the most bytes at once, overall and by step.
struct BesideBlock {
  std::int64_t all = 0;                 // the most bytes at once
  std::int64_t lasting = 0;             // ... of those that outlive their step
  std::vector<std::int64_t> transient;  // by step: the most bytes at once of those a window may take
  // By step: the most bytes at once while it runs, of all the requests and
  // of the lasting ones (where the window takes the step's transient ones).
  std::vector<std::int64_t> all_at, lasting_at;
  std::int64_t between_steps = 0;  // ... while no step runs
  // The most bytes at once beside a block whose window serves the steps
  // `window_at` sets (the room must hold them).
  std::int64_t beside_window(const std::vector<bool>& window_at) const;
};

// The windows worth planning for steps with `transient` bytes each (by
// step, as BesideBlock::transient): by step, the bytes the window holds (0
// where the room does). All of them, and for a few of their sizes s, those
// of s or more and those of s or less.
std::vector<std::vector<std::int64_t>> window_step_choices(const std::vector<std::int64_t>& transient);

// The least offset of a window not at 0: the bytes before it make an
// allocation of their own, which must be a large block.
std::int64_t least_window_offset();

// The edges of the parts a capture allocates a block with windows as
// (runtime/block_window.h), from 0 to the bytes the allocator holds for it
// (one window: the bytes after it, where there are any, at least a large
// block's, since a small one would come from another segment): each window
// is the parts between two of them.
std::vector<std::int64_t> window_block_edges(const codegen::ArenaPlan& plan);

// The grid of windows of each step's own (codegen::plan_arena_step_windows)
// for a block with `beside` bytes of requests beside it: every part is
// larger than any free block that the pool holds beside the block (at most
// the room beside it, or what the least segment leaves), so that the
// allocator, which takes the smallest free block that fits, gives each part
// back where it was.
std::int64_t step_window_grid(std::int64_t beside);

// A block with windows, as a capture takes it: its plan, the bytes the
// allocator holds for it (window_block_edges), the segment to make before
// the capture, and what that room holds beside the block.
struct WindowChoice {
  codegen::ArenaPlan plan;
  std::int64_t held = 0;
  std::int64_t room = 0;
  std::int64_t beside = 0;
};

// The least a graph's pool could hold for a plan whose block has `live_at`
// bytes alive by step (ArenaPlan::live_at) beside what was measured: the
// most, at one step, of the block's bytes alive and the requests beside it
// (eager's peak counts the same bytes, without a layout to fit them in).
struct LeastPool {
  std::int64_t bytes = 0;
  int step = -1;  // where (-1: between steps)
};
LeastPool least_pool(const std::vector<std::int64_t>& live_at, const BesideBlock& beside);

// What a graph's pool holds for a block with the windows of `plan` and the
// room beside it for what the windows do not take.
std::int64_t windowed_pool_bytes(const codegen::ArenaPlan& plan, const BesideBlock& beside);

// Of `windowed` (the block packed with each of window_step_choices's windows
// for what was measured beside it, and with a window for each step), the
// one whose pool is smallest, where it is smaller than `plain_pool` (the
// block without a window, the room beside it).
std::optional<WindowChoice> choose_window(std::int64_t plain_pool, const BesideBlock& beside,
                                          std::vector<codegen::ArenaPlan> windowed);

// What a graph's pool holds for a block of `block` bytes with a segment of
// `room` made before the capture (0: none, the block its own segment).
std::int64_t pool_bytes(std::int64_t block, std::int64_t room);

// The bytes of the segment the allocator makes for a request of `bytes` that
// finds no free block: 2 MiB up to 1 MiB, 20 MiB below 10 MiB, else the
// bytes rounded up to 2 MiB.
std::int64_t segment_bytes(std::int64_t bytes);

// While alive, records the GPU allocations and frees of the thread that made
// it, as the caching allocator's trace callback reports them
// (report_allocations_to_probes). Probes nest: the inner one records.
class BesideBlockProbe {
 public:
  BesideBlockProbe();
  ~BesideBlockProbe();
  static BesideBlockProbe* recording_on_this_thread();
  BesideBlockProbe(const BesideBlockProbe&) = delete;
  BesideBlockProbe& operator=(const BesideBlockProbe&) = delete;

  // The most bytes that the requests it saw which the room takes (room_for)
  // held at once.
  std::int64_t peak_bytes() const;

  // The requests that follow are made by step `step` (for largest_requests).
  void now_at(int step) { step_ = step; }
  // The `n` largest requests it saw, largest first: (step, bytes).
  std::vector<std::pair<int, std::int64_t>> largest_requests(std::size_t n) const;

  // A request freed by the step that made it is transient (a workspace, a
  // copy inside a library call); the others last (results beside the
  // block, outputs). A window in the block (codegen/arena_plan.h) can take
  // the transient ones of a step that makes no lasting request (a lasting
  // one could land in the window too, which the block could then not take
  // back). By step (`steps` of them): the most bytes of those alive at once.
  std::vector<std::int64_t> transient_peaks(int steps) const;
  // The most bytes alive at once of the others: what the room beside a
  // block with a window must hold.
  std::int64_t lasting_peak_bytes() const;
  // All of the above, and the peaks by step, for `steps` steps.
  BesideBlock measured(int steps) const;

  // From the callback: an allocation (`bytes` at `address`) or a free.
  void allocated(std::uintptr_t address, std::int64_t bytes);
  void freed(std::uintptr_t address);

 private:
  struct Request {
    int step;             // that made it
    std::int64_t bytes;   // room_for
    int freed_at = -2;    // the step that freed it (-2: not freed)
    bool transient() const { return step >= 0 && freed_at == step; }
  };
  int step_ = -1;
  std::vector<Request> requests_;
  struct Event {
    std::size_t request;
    bool allocated;  // or freed
    int step;        // running then
  };
  std::vector<Event> events_;  // in order
  std::vector<std::pair<std::uintptr_t, std::size_t>> live_requests_;  // (address, request)
  std::vector<bool> windowable() const;  // by request: transient_peaks counts it
  // The most bytes alive at once of the requests `counted` (by request) holds.
  std::int64_t peak_of(const std::vector<bool>& counted) const;
  BesideBlockProbe* outer_;
};

// LibTorch side (pool_room_cuda.cpp).
// Attaches the trace callback that reports this process's GPU allocations to
// the probe recording on the thread that makes them (once: it cannot be
// detached; without a probe it returns at once).
void report_allocations_to_probes();
// Allocates `bytes` on `device` and frees them at once: in a capture, the
// graph's pool keeps the segment, free, for the requests that follow.
void make_pool_room(std::int64_t bytes, int device);

}  // namespace dv::runtime
