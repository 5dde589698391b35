#include "runtime/constant_steps.h"

#include <algorithm>
#include <atomic>

namespace dv::runtime {

namespace {
std::atomic<std::uint64_t> g_data_accesses{0};
}  // namespace

void note_data_access() { g_data_accesses.fetch_add(1, std::memory_order_relaxed); }
std::uint64_t data_accesses() { return g_data_accesses.load(std::memory_order_relaxed); }

using codegen::Slot;
using codegen::Step;

namespace {

// Slots the plan hands back or writes elsewhere after its steps: they must
// be computed on each call.
std::vector<bool> slots_used_after_the_steps(const codegen::Program& p) {
  std::vector<bool> used(p.slots.size(), false);
  for (int s : p.output_slots)
    if (s >= 0) used[s] = true;
  for (auto [in, value] : p.mutation_slots) used[in] = used[value] = true;
  for (int s : p.restride_slots) used[s] = true;
  return used;
}

// How many steps write each slot. An ATen step whose output is one of its
// inputs' slots (an in-place op) writes that slot.
std::vector<int> writers_of_slots(const codegen::Program& p) {
  std::vector<int> writers(p.slots.size(), 0);
  for (const Step& step : p.steps) {
    if (step.kind == Step::Kind::Kernel) {
      const ir::Kernel& k = p.kernels[step.kernel];
      for (std::size_t b = 0; b < step.buffer_slots.size(); ++b)
        if (k.buffers[b].written) ++writers[step.buffer_slots[b]];
      continue;
    }
    for (std::size_t v = 0; v < step.value_slots.size(); ++v)
      if (step.value_slots[v] >= 0 && static_cast<int>(v) >= step.num_fallback_inputs) ++writers[step.value_slots[v]];
  }
  return writers;
}

}  // namespace

ConstantSteps::ConstantSteps(const codegen::Program& p, const std::vector<bool>& constant_inputs) {
  const std::vector<bool> used_after = slots_used_after_the_steps(p);
  const std::vector<int> writers = writers_of_slots(p);
  std::vector<bool> constant_slot(p.slots.size(), false);
  for (std::size_t s = 0; s < p.slots.size(); ++s) {
    const Slot& slot = p.slots[s];
    const auto gi = static_cast<std::size_t>(slot.graph_input);
    constant_slot[s] = slot.origin == Slot::Origin::GraphInput && gi < constant_inputs.size() && constant_inputs[gi];
  }
  constant_.assign(p.steps.size(), false);
  std::vector<int> sources;
  for (std::size_t i = 0; i < p.steps.size(); ++i) {  // steps come in dependency order
    const Step& step = p.steps[i];
    if (step.kind != Step::Kind::Kernel) continue;
    const ir::Kernel& k = p.kernels[step.kernel];
    bool qualifies = true;
    for (std::size_t b = 0; b < step.buffer_slots.size() && qualifies; ++b) {
      const int s = step.buffer_slots[b];
      if (k.buffers[b].read && !constant_slot[s]) qualifies = false;
      if (k.buffers[b].written && (used_after[s] || writers[s] != 1 || p.slots[s].origin != Slot::Origin::Kernel))
        qualifies = false;
    }
    if (!qualifies) continue;
    constant_[i] = true;
    ++steps_;
    for (std::size_t b = 0; b < step.buffer_slots.size(); ++b) {
      const int s = step.buffer_slots[b];
      if (k.buffers[b].written) {
        constant_slot[s] = true;
        slots_.push_back(s);
      } else if (p.slots[s].origin == Slot::Origin::GraphInput) {
        sources.push_back(p.slots[s].graph_input);
      }
    }
  }
  std::sort(sources.begin(), sources.end());
  sources.erase(std::unique(sources.begin(), sources.end()), sources.end());
  for (int gi : sources) sources_.push_back({gi});
  kept_.resize(slots_.size());
}

bool ConstantSteps::stale(const std::vector<at::Tensor>& inputs) {
  const std::uint64_t accesses = data_accesses();
  bool changed = !computed_ || accesses != seen_data_accesses_;
  seen_data_accesses_ = accesses;
  for (Seen& seen : sources_) {
    const at::Tensor& t = inputs.at(seen.graph_input);
    // An inference tensor counts no versions: it may have changed unseen.
    if (t.defined() && t.is_inference()) changed = true;
    const void* data = t.defined() ? t.data_ptr() : nullptr;
    const std::int64_t version = t.defined() && !t.is_inference() ? static_cast<std::int64_t>(t._version()) : -1;
    if (data != seen.data || version != seen.version) changed = true;
    seen.data = data;
    seen.version = version;
  }
  computed_ = true;
  return changed;
}

std::vector<at::Tensor> ConstantSteps::kept_copy() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return kept_;
}

}  // namespace dv::runtime
