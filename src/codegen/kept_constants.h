// Which results of a plan's constant steps (kernels that read only
// parameters and buffers: autocast's bf16 weight casts) to keep between
// calls, so that keeping them never lifts the plan's peak memory above
// eager's.
//
// A kept result costs its bytes at all times. Eager holds the same tensor
// for less: autocast's cache holds the cast of a parameter that requires
// grad from its first use to the end of the region, anything else only while
// an op reads it. So eager's peak often comes late in the call, when most
// casts exist but early activations are gone, while a plan that keeps every
// cast adds all of them to its own largest set of live activations, early.
// A result not kept is computed on each call just before its first reader,
// into memory that activations dead by then free, and dropped after its last
// reader.
//
// The estimate runs over the plan's steps in order: each slot's storage
// lives from the step that first writes it to the step that frees it (the
// scheduler's `frees`; a view's base lives as long as the view). The same
// timeline stands in for eager's activations: a plan's fused kernels make
// fewer intermediates than eager's ops, so the estimate of eager is low
// and the choice errs toward less memory. Library workspaces are not seen;
// the rounding of a CUDA graph's pool is (PoolReservation), and so are the
// pools of the plan's earlier segments, which hold their memory through the
// whole call.
#pragma once

#include <cstdint>
#include <vector>

#include "codegen/program.h"
#include "codegen/slot_lifetimes.h"

namespace dv::codegen {

// How a CUDA graph's memory pool holds the plan's intermediates
// (runtime/pool_room.h): one segment of at least `least_large` bytes where
// more than `small_limit` are alive at once, beside a segment of small blocks
// of `small_segment` bytes, for the whole call. All zero: no pool (the
// intermediates cost what is alive). `held_elsewhere`: the bytes that the
// pools of the segments before this plan hold (a plan cut by a decision: each
// segment's graph has a pool) and the graph's copies of their results,
// which eager does not spend.
struct PoolReservation {
  std::int64_t small_limit = 0;
  std::int64_t least_large = 0;
  std::int64_t small_segment = 0;
  std::int64_t held_elsewhere = 0;
  // What this plan's pool holds for intermediates whose peak is `live_peak`
  // bytes.
  std::int64_t own(std::int64_t live_peak) const;
  // The same, with what the earlier segments' pools hold.
  std::int64_t reserved(std::int64_t live_peak) const { return own(live_peak) + held_elsewhere; }
};

// The bytes of storage that `p`'s steps make alive at once, at most (its
// outputs included; its inputs not).
std::int64_t live_peak_bytes(const Program& p);

struct KeptConstants {
  std::vector<bool> kept;               // by step: a constant step whose results are kept
  std::int64_t peak_bytes = 0;          // estimated peak of the plan with these kept
  std::int64_t peak_bytes_all_kept = 0; // ... had every constant step's results been kept
  std::int64_t eager_peak_bytes = 0;    // estimated peak of eager
};

// constant_step: by step, a kernel that reads only constants and whose
// results may be kept (runtime/constant_steps.h). eager_holds_to_end: by
// step, eager holds that step's result from its first use to the end of the
// call (see above). Keeps every constant step unless the estimated peak is
// above eager's; then, one at a time, drops the result whose drop lowers the
// peak most for its bytes (a step whose result another kept step reads stays
// kept), until the peak is at most eager's or no drop lowers it. `pool`:
// where the plan runs as a CUDA graph, its intermediates cost what the pool
// holds for them (at batch 1, a 10 MiB segment for a few MiB alive).
KeptConstants keep_within_eager_memory(const Program& p, const std::vector<bool>& constant_step,
                                       const std::vector<bool>& eager_holds_to_end, const PoolReservation& pool = {});

}  // namespace dv::codegen
