#include "codegen/slot_lifetimes.h"

#include <algorithm>

#include "ir/dtype.h"

namespace dv::codegen {

std::int64_t slot_bytes(const Slot& slot) {
  std::int64_t elements = 1;
  if (slot.strides.size() == slot.sizes.size()) {
    for (std::size_t d = 0; d < slot.sizes.size(); ++d) {
      if (slot.sizes[d] == 0) return 0;
      elements += (slot.sizes[d] - 1) * slot.strides[d];
    }
  } else {
    for (std::int64_t n : slot.sizes) elements *= n;
  }
  const std::int64_t bytes = elements * ir::dtype_size(slot.dtype);
  return (bytes + 511) / 512 * 512;
}

StorageTimeline storage_timeline(const Program& p) {
  const int steps = static_cast<int>(p.steps.size());
  StorageTimeline tl;
  tl.root.resize(p.slots.size());
  for (std::size_t s = 0; s < p.slots.size(); ++s) tl.root[s] = static_cast<int>(s);
  tl.storage.resize(p.slots.size());
  std::vector<bool> freed(p.slots.size(), false);
  for (int i = 0; i < steps; ++i) {
    const Step& step = p.steps[i];
    const std::vector<int> written = step_slots(p, step, /*written=*/true);
    if (step.kind == Step::Kind::View) {
      const int base = step.value_slots.empty() ? -1 : step.value_slots[0];
      for (int s : written)
        if (base >= 0) tl.root[s] = tl.root[base];
    } else {
      for (int s : written) {
        const int r = tl.root[s];
        if (p.slots[r].origin == Slot::Origin::GraphInput || tl.storage[r].first >= 0) continue;
        tl.storage[r] = {i, i, slot_bytes(p.slots[r])};
      }
    }
    for (int f : step.frees) {
      Storage& st = tl.storage[tl.root[f]];
      st.last = std::max(st.last, i);
      freed[f] = true;
    }
  }
  for (std::size_t s = 0; s < p.slots.size(); ++s) {
    Storage& st = tl.storage[tl.root[s]];
    const bool made_here = p.slots[s].origin != Slot::Origin::GraphInput;
    if (st.first >= 0 && made_here && !freed[s]) st.last = steps - 1;
  }
  return tl;
}

}  // namespace dv::codegen
