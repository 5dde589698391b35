#include "codegen/arena_plan.h"

#include <algorithm>
#include <numeric>

#include "codegen/slot_lifetimes.h"
#include "ir/dtype.h"

namespace dv::codegen {

namespace {

struct Placed {
  std::int64_t offset, bytes;
  int first, last;
};

bool overlap_in_time(const Storage& s, const Placed& p) { return s.first <= p.last && p.first <= s.last; }

// The lowest offset where `bytes` fit beside the ranges `taken` ([begin,
// end)), of those that `allowed` gives (the least allowed offset at or above
// a given one).
template <typename Allowed>
std::int64_t lowest_gap(std::vector<std::pair<std::int64_t, std::int64_t>> taken, std::int64_t bytes,
                        const Allowed& allowed) {
  std::sort(taken.begin(), taken.end());
  std::int64_t at = allowed(0);
  for (const auto& [begin, end] : taken) {
    if (begin >= at + bytes) break;
    at = allowed(std::max(at, end));
  }
  return at;
}

std::int64_t round_up(std::int64_t bytes, std::int64_t grid) { return (bytes + grid - 1) / grid * grid; }

// The lowest multiple of `grid` where `s` fits beside every placed storage
// alive with it.
std::int64_t lowest_free_offset(const Storage& s, const std::vector<Placed>& placed, std::int64_t grid = 1) {
  std::vector<std::pair<std::int64_t, std::int64_t>> taken;  // [begin, end) of those alive with s
  for (const Placed& p : placed)
    if (overlap_in_time(s, p)) taken.emplace_back(p.offset, p.offset + p.bytes);
  return lowest_gap(std::move(taken), s.bytes, [&](std::int64_t x) { return round_up(x, grid); });
}

// Whether the step that first writes root slot `r` can write into the block.
bool written_into_block(const Program& p, int r, int first, const std::vector<LibraryInto>& writes_into) {
  const Slot::Origin origin = p.slots[r].origin;
  if (p.steps[first].kind == Step::Kind::Kernel) return origin == Slot::Origin::Kernel;
  return origin == Slot::Origin::Fallback && static_cast<std::size_t>(first) < writes_into.size() &&
         writes_into[first] != LibraryInto::None;
}

// Whether kernel `k` may write buffer `out` over buffer `in`'s memory: a
// pointwise kernel whose one store writes element x of `out`, and whose every
// read of `in` is of element x, of the same width. A point's stored value
// depends on the loads that feed it, so each point reads in[x] before it
// writes out[x] (a load that feeds nothing is dead), and no point reads an
// element that another point writes.
bool may_write_over(const ir::Kernel& k, int in, int out) {
  const ir::KernelBuffer &i = k.buffers[in], &o = k.buffers[out];
  if (k.is_reduction() || i.written || o.read || ir::dtype_size(i.dtype) != ir::dtype_size(o.dtype)) return false;
  const ir::IndexExpr x = k.x_var();
  int stores = 0;
  for (const ir::Instr& instr : k.body) {
    if (instr.op == ir::PrimOp::Store) {
      if (instr.buffer != out || instr.indirect || instr.accumulate || instr.index != x) return false;
      ++stores;
    } else if (instr.op == ir::PrimOp::Load && instr.buffer == in &&
               (instr.indirect || instr.masked || instr.index != x)) {
      return false;
    }
  }
  return stores == 1;
}

// The storage (a root slot) whose memory kernel step `t` may write its
// result `out` over, or -1: a root in the block that the step frees, read
// through one buffer of the kernel only, as may_write_over allows.
int storage_to_take_over(const Program& p, const StorageTimeline& tl, const std::vector<bool>& in_block, int t,
                         int out_buffer) {
  const Step& step = p.steps[t];
  const ir::Kernel& k = p.kernels[step.kernel];
  for (std::size_t b = 0; b < step.buffer_slots.size(); ++b) {
    const int in = step.buffer_slots[b];
    if (!k.buffers[b].read || tl.root[in] != in || !in_block[in] || tl.storage[in].last != t) continue;
    const bool freed_here = std::any_of(step.frees.begin(), step.frees.end(), [&](int f) { return tl.root[f] == in; });
    const auto on_it = std::count_if(step.buffer_slots.begin(), step.buffer_slots.end(),
                                     [&](int s) { return tl.root[s] == in; });
    if (freed_here && on_it == 1 && may_write_over(k, static_cast<int>(b), out_buffer)) return in;
  }
  return -1;
}

}  // namespace

std::int64_t ArenaPlan::results_over_inputs() const {
  return std::count_if(takes_over.begin(), takes_over.end(), [](int s) { return s >= 0; });
}

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

namespace {

// By root slot: storage that goes into the block.
std::vector<bool> block_storage(const Program& p, const StorageTimeline& tl, const std::vector<bool>& excluded,
                                const std::vector<LibraryInto>& writes_into) {
  std::vector<bool> out(p.slots.size(), false);  // by root: stays out of the block
  for (std::size_t s = 0; s < p.slots.size(); ++s)
    if (s < excluded.size() && excluded[s]) out[tl.root[s]] = true;
  for (int s : p.output_slots) out[tl.root[s]] = true;  // they outlive the call
  std::vector<bool> in_block(p.slots.size(), false);
  for (std::size_t r = 0; r < p.slots.size(); ++r) {
    const Storage& st = tl.storage[r];
    if (out[r] || tl.root[r] != static_cast<int>(r) || st.first < 0 || st.bytes == 0) continue;
    in_block[r] = written_into_block(p, static_cast<int>(r), st.first, writes_into);
  }
  return in_block;
}

// By slot: the storage each kernel result in the block may take over (see
// ArenaPlan::takes_over), or -1.
std::vector<int> storage_handed_over(const Program& p, const StorageTimeline& tl, const std::vector<bool>& in_block) {
  std::vector<int> takes_over(p.slots.size(), -1);
  for (std::size_t t = 0; t < p.steps.size(); ++t) {
    const Step& step = p.steps[t];
    if (step.kind != Step::Kind::Kernel) continue;
    for (std::size_t b = 0; b < step.buffer_slots.size(); ++b) {
      const int o = step.buffer_slots[b];
      if (p.kernels[step.kernel].buffers[b].written && in_block[o] && tl.root[o] == o &&
          tl.storage[o].first == static_cast<int>(t))
        takes_over[o] = storage_to_take_over(p, tl, in_block, static_cast<int>(t), static_cast<int>(b));
    }
  }
  return takes_over;
}

// For windows packed with the block: step t's window as storage chain[n + t]
// (n: chain's size before), alive at t alone, its bytes rounded up to the
// grid, and a head where it has bytes; the plan's windows empty.
void add_window_storage(const Program& p, const std::vector<std::int64_t>& window, std::int64_t grid,
                        std::vector<Storage>& chain, std::vector<int>& heads, ArenaPlan& plan) {
  plan.window_at.assign(p.steps.size(), false);
  plan.step_windows.assign(p.steps.size(), {0, 0});
  plan.window_grid = grid;
  plan.windows_packed = true;
  const int n = static_cast<int>(chain.size());
  for (int t = 0; t < static_cast<int>(p.steps.size()); ++t) {
    const std::int64_t bytes = t < static_cast<int>(window.size()) ? window[t] : 0;
    chain.push_back(bytes > 0 ? Storage{t, t, round_up(bytes, grid)} : Storage{});
    if (bytes > 0) heads.push_back(n + t);
  }
}

// Offsets for the storage in the block, where each result that takes over an
// input's storage shares its offset: a chain of such storage is packed as one,
// from its first step to its last, as large as its largest. With `grid`, each
// step's window (window[t] bytes) is packed with them (add_window_storage),
// on the grid.
ArenaPlan pack(const Program& p, const StorageTimeline& tl, const std::vector<bool>& in_block,
               const std::vector<int>& takes_over, const std::vector<std::int64_t>& window = {},
               std::int64_t grid = 0) {
  std::vector<int> head(p.slots.size());  // by root in the block: the first of its chain
  std::iota(head.begin(), head.end(), 0);
  std::vector<Storage> chain = tl.storage;  // by head
  ArenaPlan plan;
  plan.takes_over.assign(p.slots.size(), -1);
  for (std::size_t t = 0; t < p.steps.size(); ++t) {
    for (int o : step_slots(p, p.steps[t], /*written=*/true)) {
      const int in = takes_over[o];
      if (in < 0 || tl.storage[o].bytes > chain[head[in]].bytes) continue;
      head[o] = head[in];
      chain[head[o]].last = std::max(chain[head[o]].last, tl.storage[o].last);
      plan.takes_over[o] = in;
    }
  }
  std::vector<int> heads;
  for (std::size_t r = 0; r < p.slots.size(); ++r)
    if (in_block[r] && head[r] == static_cast<int>(r)) heads.push_back(static_cast<int>(r));
  const int storages = static_cast<int>(chain.size());
  if (grid > 0) add_window_storage(p, window, grid, chain, heads, plan);
  // Largest first, then earliest: the big ones set the block's shape.
  std::sort(heads.begin(), heads.end(), [&](int a, int b) {
    const Storage &x = chain[a], &y = chain[b];
    return x.bytes != y.bytes ? x.bytes > y.bytes : x.first < y.first;
  });
  plan.offset.assign(p.slots.size(), -1);
  std::vector<Placed> placed;
  for (int h : heads) {
    const Storage& st = chain[h];
    const bool is_window = h >= storages;
    const std::int64_t at = lowest_free_offset(st, placed, is_window ? grid : 1);
    placed.push_back({at, st.bytes, st.first, st.last});
    plan.bytes = std::max(plan.bytes, at + st.bytes);
    if (!is_window) {
      plan.offset[h] = at;
      continue;
    }
    plan.window_at[st.first] = true;
    plan.step_windows[st.first] = {at, at + st.bytes};
    plan.window_bytes = std::max(plan.window_bytes, st.bytes);
  }
  for (std::size_t r = 0; r < p.slots.size(); ++r)
    if (in_block[r]) plan.offset[r] = plan.offset[head[r]];
  std::vector<std::int64_t> block_live(p.steps.size(), 0), others(p.steps.size(), 0);
  for (std::size_t r = 0; r < p.slots.size(); ++r) {
    if (tl.root[r] != static_cast<int>(r) || tl.storage[r].first < 0) continue;
    if (in_block[r] && head[r] != static_cast<int>(r)) continue;  // counted with its chain
    const Storage& st = in_block[r] ? chain[r] : tl.storage[r];
    auto& live = in_block[r] ? block_live : others;
    for (int t = st.first; t <= st.last; ++t) live[t] += st.bytes;
  }
  for (std::size_t t = 0; t < p.steps.size(); ++t) {
    plan.live_peak_bytes = std::max(plan.live_peak_bytes, block_live[t]);
    plan.others_peak_bytes = std::max(plan.others_peak_bytes, others[t]);
    plan.together_peak_bytes = std::max(plan.together_peak_bytes, block_live[t] + others[t]);
  }
  plan.live_at = std::move(block_live);
  return plan;
}

// The window (ArenaPlan::window_*) in `plan`: `window[t]` bytes at step t, in
// the lowest bytes of the block where nothing alive at any such step lies,
// at 0 or at `least_offset` or above; the block grows where no such bytes
// are free.
void place_window(const Program& p, const StorageTimeline& tl, const std::vector<std::int64_t>& window,
                  std::int64_t least_offset, ArenaPlan& plan) {
  plan.window_at.assign(p.steps.size(), false);
  for (std::size_t t = 0; t < window.size() && t < p.steps.size(); ++t) {
    plan.window_at[t] = window[t] > 0;
    plan.window_bytes = std::max(plan.window_bytes, window[t]);
  }
  if (plan.window_bytes <= 0) return;
  std::vector<std::pair<std::int64_t, std::int64_t>> taken;  // [begin, end) alive at a window step
  for (std::size_t r = 0; r < p.slots.size(); ++r) {
    if (plan.offset[r] < 0 || tl.root[r] != static_cast<int>(r)) continue;
    const Storage& st = tl.storage[r];
    for (int t = st.first; t <= st.last; ++t)
      if (plan.window_at[t]) {
        taken.emplace_back(plan.offset[r], plan.offset[r] + st.bytes);
        break;
      }
  }
  const std::int64_t at = lowest_gap(std::move(taken), plan.window_bytes, [&](std::int64_t x) {
    return x > 0 && x < least_offset ? least_offset : x;
  });
  plan.window_offset = at;
  plan.bytes = std::max(plan.bytes, at + plan.window_bytes);
}

// The windows of plan_arena_step_windows in `plan`.
void place_step_windows(const Program& p, const StorageTimeline& tl, const std::vector<std::int64_t>& window,
                        std::int64_t grid, ArenaPlan& plan) {
  const std::size_t steps = p.steps.size();
  plan.window_at.assign(steps, false);
  plan.step_windows.assign(steps, {0, 0});
  plan.window_grid = grid;
  auto has_window = [&](int t) { return static_cast<std::size_t>(t) < window.size() && window[t] > 0; };
  std::vector<std::vector<std::pair<std::int64_t, std::int64_t>>> taken(steps);  // by step: [begin, end) alive
  for (std::size_t r = 0; r < p.slots.size(); ++r) {
    if (plan.offset[r] < 0 || tl.root[r] != static_cast<int>(r)) continue;
    const Storage& st = tl.storage[r];
    for (int t = st.first; t <= st.last; ++t)
      if (has_window(t)) taken[t].emplace_back(plan.offset[r], plan.offset[r] + st.bytes);
  }
  for (std::size_t t = 0; t < steps; ++t) {
    if (!has_window(static_cast<int>(t))) continue;
    const std::int64_t bytes = round_up(window[t], grid);
    const std::int64_t at = lowest_gap(std::move(taken[t]), bytes, [&](std::int64_t x) { return round_up(x, grid); });
    plan.window_at[t] = true;
    plan.step_windows[t] = {at, at + bytes};
    plan.window_bytes = std::max(plan.window_bytes, bytes);
    plan.bytes = std::max(plan.bytes, at + bytes);
  }
}

// The smaller of the packings with storage handed over and without (see
// plan_arena), each with its windows placed by `place`.
template <typename Place>
ArenaPlan smaller_packing(const ArenaPlan& handed, const ArenaPlan& apart, const Place& place) {
  ArenaPlan h = handed, a = apart;
  place(h);
  place(a);
  return h.bytes <= a.bytes ? h : a;
}

struct Packings {
  StorageTimeline tl;
  ArenaPlan handed, apart;
};

// (With `grid`, each step's window packed with the storage: see pack.)
Packings packings(const Program& p, const std::vector<bool>& excluded, const std::vector<LibraryInto>& writes_into,
                  const std::vector<std::int64_t>& window = {}, std::int64_t grid = 0) {
  Packings k{storage_timeline(p), {}, {}};
  const std::vector<bool> in_block = block_storage(p, k.tl, excluded, writes_into);
  // Handing storage over shortens the live peak, but a chain holds its
  // offset for longer than its parts would, and the greedy packing may then
  // do worse (DenseNet's cats): the smaller block wins.
  k.handed = pack(p, k.tl, in_block, storage_handed_over(p, k.tl, in_block), window, grid);
  k.apart = pack(p, k.tl, in_block, std::vector<int>(p.slots.size(), -1), window, grid);
  return k;
}

}  // namespace

std::pair<std::int64_t, std::int64_t> ArenaPlan::window_of(int t) const {
  if (!step_windows.empty()) return step_windows[t];
  return {window_offset, window_offset + window_bytes};
}

ArenaPlan plan_arena_step_windows(const Program& p, const std::vector<bool>& excluded,
                                  const std::vector<LibraryInto>& writes_into, const std::vector<std::int64_t>& window,
                                  std::int64_t grid) {
  const Packings k = packings(p, excluded, writes_into);
  return smaller_packing(k.handed, k.apart, [&](ArenaPlan& plan) { place_step_windows(p, k.tl, window, grid, plan); });
}

ArenaPlan plan_arena_packed_windows(const Program& p, const std::vector<bool>& excluded,
                                    const std::vector<LibraryInto>& writes_into,
                                    const std::vector<std::int64_t>& window, std::int64_t grid) {
  const Packings k = packings(p, excluded, writes_into, window, grid);
  return k.handed.bytes <= k.apart.bytes ? k.handed : k.apart;
}

std::vector<ArenaPlan> plan_arena_windows(const Program& p, const std::vector<bool>& excluded,
                                          const std::vector<LibraryInto>& writes_into,
                                          const std::vector<std::vector<std::int64_t>>& windows,
                                          std::int64_t least_window_offset) {
  const Packings k = packings(p, excluded, writes_into);
  std::vector<ArenaPlan> plans;
  for (const std::vector<std::int64_t>& window : windows)
    plans.push_back(smaller_packing(k.handed, k.apart, [&](ArenaPlan& plan) {
      place_window(p, k.tl, window, least_window_offset, plan);
    }));
  return plans;
}

ArenaPlan plan_arena(const Program& p, const std::vector<bool>& excluded, const std::vector<LibraryInto>& writes_into,
                     const std::vector<std::int64_t>& window, std::int64_t least_window_offset) {
  return plan_arena_windows(p, excluded, writes_into, {window}, least_window_offset).front();
}

}  // namespace dv::codegen
