// When each allocation a plan's steps make is alive, and its size: what the
// kept-constant estimate (codegen/kept_constants.h) and the arena of a plan's
// intermediates (codegen/arena_plan.h) are computed from.
//
// A slot's storage lives from the step that first writes it to the step that
// frees it (the scheduler's `frees`); a view step's result shares its base's
// storage, which then lives as long as the view. A slot never freed (a
// returned value, one written back into an input) lives to the last step.
#pragma once

#include <cstdint>
#include <vector>

#include "codegen/program.h"

namespace dv::codegen {

// Bytes of a slot's storage as the allocator hands it out: its largest
// element offset + 1, times the element size, rounded up to 512.
std::int64_t slot_bytes(const Slot& slot);

// One allocation the steps make (a slot and the views over it): alive from
// `first` to `last`, steps inclusive.
struct Storage {
  int first = -1;  // the step that writes it first; -1: a graph input or an unused slot
  int last = -1;
  std::int64_t bytes = 0;
};

struct StorageTimeline {
  std::vector<int> root;         // by slot: the slot whose storage it is (a view's base)
  std::vector<Storage> storage;  // by root slot
};

StorageTimeline storage_timeline(const Program& p);

}  // namespace dv::codegen
