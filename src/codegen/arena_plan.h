// One block of memory for a plan's intermediates, each at an offset planned
// from when it is alive.
//
// Each kernel result used to be its own allocation from the caching
// allocator, freed at its last use. A plan's results grow and shrink in
// ways the allocator cannot foresee (DenseNet's cats, each a few channels
// wider than the last, never fit the hole the one before left), and inside
// a CUDA graph's private pool the holes stay reserved: a pool held up to
// twice eager's activations. With every size and lifetime known when the
// plan is made, the offsets are packed once (largest first, each at the
// lowest offset that no storage alive at the same time holds), and a call
// allocates the block once.
//
// Storage goes into the block where the step that writes it first is a
// kernel, or a library call that writes into storage it is given (the
// caller says which: runtime/library_into.h); other library calls' results
// are the library's allocations. The caller excludes the
// storage that must outlive the call or that another tensor may alias
// (kept constants, inputs of an ATen op that returns a view of them); the
// plan's outputs are never in it.
//
// A pointwise kernel whose input dies at it may write its result over that
// input (ResNet's residual add reads the block's output and the shortcut's,
// both freed there: three results of the largest size alive at once become
// two). Each point reads its element of the input before it writes the same
// element of the result, so nothing is read after it is overwritten
// (`takes_over`).
//
// A window: the steps that allocate memory of their own and free it before
// they end (cuDNN's workspace inside a convolution) can be given bytes of the
// block where nothing is alive at any of those steps, placed after the
// packing (which it never changes; the block grows where no such bytes are
// free); a CUDA graph's capture frees that part of the block for them
// (runtime/block_window.h), so their memory needs no room beside the block.
// One window must be free at every step it serves; where the steps that
// allocate much run while the block is full at some and mostly free at
// others (MonoDepth's decoder and encoder), each step gets a window of its
// own instead, placed after the packing (plan_arena_step_windows) or packed
// with it (plan_arena_packed_windows), as memory alive at its step alone.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "codegen/program.h"

namespace dv::codegen {

struct ArenaPlan {
  std::vector<std::int64_t> offset;  // by slot: byte offset in the block, or -1 (allocated on its own)
  std::int64_t bytes = 0;            // the block's size
  std::int64_t live_peak_bytes = 0;  // the most bytes of its storage alive at one step (bytes >= this)
  // Peaks of the other storage the steps make (library results...), and of
  // all of it, the block's included: the best any packing could do. The
  // block holds its bytes for the whole call beside the other storage, so
  // where library results peak apart from the kernels' (ResNet's
  // convolutions) the two peaks add up; the allocator's holes are not
  // modelled, so these say what the block costs at most, not whether it pays.
  std::int64_t others_peak_bytes = 0;
  std::int64_t together_peak_bytes = 0;
  std::vector<std::int64_t> live_at;  // by step: the bytes of the block's storage alive (its peak: live_peak_bytes)
  // By slot: the slot whose storage it takes over at the step that writes it
  // (an input that dies there), or -1. Such a result is not poisoned: its
  // memory still holds what the step reads.
  std::vector<int> takes_over;
  std::int64_t results_over_inputs() const;  // slots that take over an input's storage
  // The window: `window_bytes` at `window_offset` hold nothing alive at the
  // steps where `window_at` (by step) is set.
  std::int64_t window_offset = 0;
  std::int64_t window_bytes = 0;
  std::vector<bool> window_at;
  // Or a window for each such step (plan_arena_step_windows; one window where
  // empty): step t's in [step_windows[t].first, step_windows[t].second),
  // every edge a multiple of `window_grid`; window_bytes is the largest.
  std::vector<std::pair<std::int64_t, std::int64_t>> step_windows;
  std::int64_t window_grid = 0;
  bool windows_packed = false;  // placed by the packing (plan_arena_packed_windows), not after it
  // The bytes step t's own memory may take, [begin, end).
  std::pair<std::int64_t, std::int64_t> window_of(int t) const;
};

// Library calls whose out= variant runs the same code as the op (ATen's
// generated out= wrappers, as convolution's, call the op and copy):
// mm, addmm and bmm anywhere, a convolution on a GPU (cuDNN's). Whether a
// given call does is decided when it runs (runtime/library_into.h).
enum class LibraryInto : std::uint8_t { None, Mm, Addmm, Bmm, Convolution };
LibraryInto library_into(const std::string& op, bool on_gpu);

// By step: how each ATen step may write into the block (None for the rest).
std::vector<LibraryInto> library_steps_into(const Program& p);

// excluded: by slot, storage that stays out of the block (a view excluded
// excludes its base). writes_into: by step, library_steps_into(p) or none.
// window: by step, the bytes of the step's own memory to hold in a window
// (0: none; empty: no window); the window starts at 0 or at
// `least_window_offset` or above (the bytes before it must make an
// allocation of their own).
ArenaPlan plan_arena(const Program& p, const std::vector<bool>& excluded,
                     const std::vector<LibraryInto>& writes_into = {}, const std::vector<std::int64_t>& window = {},
                     std::int64_t least_window_offset = 0);

// plan_arena with a window of its own for each step t where window[t] > 0:
// window[t] bytes rounded up to `grid`, at the lowest multiple of `grid`
// where nothing alive at step t lies; the block grows where none is free.
// (Each edge on the grid: the capture allocates the block in parts between
// the windows' edges, each at least `grid` bytes: runtime/block_window.h.)
ArenaPlan plan_arena_step_windows(const Program& p, const std::vector<bool>& excluded,
                                  const std::vector<LibraryInto>& writes_into, const std::vector<std::int64_t>& window,
                                  std::int64_t grid);

// The same windows packed with the block's storage, each as storage alive
// at its step alone (largest first, as the rest): where the steps that own
// much memory run while the storage placed after the packing reaches the
// block's end (MonoDepth's decoder), the packing leaves them room lower down.
ArenaPlan plan_arena_packed_windows(const Program& p, const std::vector<bool>& excluded,
                                    const std::vector<LibraryInto>& writes_into,
                                    const std::vector<std::int64_t>& window, std::int64_t grid);

// plan_arena with each of `windows`, the block packed once.
std::vector<ArenaPlan> plan_arena_windows(const Program& p, const std::vector<bool>& excluded,
                                          const std::vector<LibraryInto>& writes_into,
                                          const std::vector<std::vector<std::int64_t>>& windows,
                                          std::int64_t least_window_offset);

}  // namespace dv::codegen
