#include "codegen/arena_plan.h"

#include <algorithm>

#include "codegen/slot_lifetimes.h"

namespace dv::codegen {

namespace {

struct Placed {
  std::int64_t offset, bytes;
  int first, last;
};

bool overlap_in_time(const Storage& s, const Placed& p) { return s.first <= p.last && p.first <= s.last; }

// The lowest offset where `s` fits beside every placed storage alive with it.
std::int64_t lowest_free_offset(const Storage& s, const std::vector<Placed>& placed) {
  std::vector<std::pair<std::int64_t, std::int64_t>> taken;  // [begin, end) of those alive with s
  for (const Placed& p : placed)
    if (overlap_in_time(s, p)) taken.emplace_back(p.offset, p.offset + p.bytes);
  std::sort(taken.begin(), taken.end());
  std::int64_t at = 0;
  for (const auto& [begin, end] : taken) {
    if (begin >= at + s.bytes) break;
    at = std::max(at, end);
  }
  return at;
}

// Whether the step that first writes root slot `r` can write into the block.
bool written_into_block(const Program& p, int r, int first, const std::vector<LibraryInto>& writes_into) {
  const Slot::Origin origin = p.slots[r].origin;
  if (p.steps[first].kind == Step::Kind::Kernel) return origin == Slot::Origin::Kernel;
  return origin == Slot::Origin::Fallback && static_cast<std::size_t>(first) < writes_into.size() &&
         writes_into[first] != LibraryInto::None;
}

}  // namespace

LibraryInto library_into(const std::string& op, bool gpu) {
  const auto is = [&](const char* name) { return op == name || op == std::string(name) + ".default"; };
  if (is("aten::mm")) return LibraryInto::Mm;
  if (is("aten::addmm")) return LibraryInto::Addmm;
  if (is("aten::bmm")) return LibraryInto::Bmm;
  if (is("aten::convolution") && gpu) return LibraryInto::Convolution;
  return LibraryInto::None;
}

std::vector<LibraryInto> library_steps_into(const Program& p) {
  const bool gpu = ir::graph_device(p.graph) != "cpu";
  std::vector<LibraryInto> out(p.steps.size(), LibraryInto::None);
  for (std::size_t i = 0; i < p.steps.size(); ++i) {
    const Step& step = p.steps[i];
    const bool one_result = step.value_slots.size() == static_cast<std::size_t>(step.num_fallback_inputs) + 1;
    if ((step.kind == Step::Kind::Fallback || step.kind == Step::Kind::Aten) && one_result)
      out[i] = library_into(p.graph.nodes[step.node].op, gpu);
  }
  return out;
}

ArenaPlan plan_arena(const Program& p, const std::vector<bool>& excluded, const std::vector<LibraryInto>& writes_into) {
  const StorageTimeline tl = storage_timeline(p);
  std::vector<bool> out(p.slots.size(), false);  // by root: stays out of the block
  for (std::size_t s = 0; s < p.slots.size(); ++s)
    if (s < excluded.size() && excluded[s]) out[tl.root[s]] = true;
  for (int s : p.output_slots) out[tl.root[s]] = true;  // they outlive the call
  std::vector<int> roots;
  for (std::size_t r = 0; r < p.slots.size(); ++r) {
    const Storage& st = tl.storage[r];
    if (out[r] || tl.root[r] != static_cast<int>(r) || st.first < 0 || st.bytes == 0) continue;
    if (!written_into_block(p, static_cast<int>(r), st.first, writes_into)) continue;
    roots.push_back(static_cast<int>(r));
  }
  // Largest first, then earliest: the big ones set the block's shape.
  std::sort(roots.begin(), roots.end(), [&](int a, int b) {
    const Storage &x = tl.storage[a], &y = tl.storage[b];
    return x.bytes != y.bytes ? x.bytes > y.bytes : x.first < y.first;
  });
  ArenaPlan plan;
  plan.offset.assign(p.slots.size(), -1);
  std::vector<Placed> placed;
  for (int r : roots) {
    const Storage& st = tl.storage[r];
    const std::int64_t at = lowest_free_offset(st, placed);
    placed.push_back({at, st.bytes, st.first, st.last});
    plan.offset[r] = at;
    plan.bytes = std::max(plan.bytes, at + st.bytes);
  }
  std::vector<std::int64_t> in_block(p.steps.size(), 0), others(p.steps.size(), 0);
  for (std::size_t r = 0; r < p.slots.size(); ++r) {
    const Storage& st = tl.storage[r];
    if (tl.root[r] != static_cast<int>(r) || st.first < 0) continue;
    auto& live = plan.offset[r] >= 0 ? in_block : others;
    for (int t = st.first; t <= st.last; ++t) live[t] += st.bytes;
  }
  for (std::size_t t = 0; t < p.steps.size(); ++t) {
    plan.live_peak_bytes = std::max(plan.live_peak_bytes, in_block[t]);
    plan.others_peak_bytes = std::max(plan.others_peak_bytes, others[t]);
    plan.together_peak_bytes = std::max(plan.together_peak_bytes, in_block[t] + others[t]);
  }
  return plan;
}

}  // namespace dv::codegen
