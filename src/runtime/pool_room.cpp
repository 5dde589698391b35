#include "runtime/pool_room.h"

#include <algorithm>
#include <utility>

namespace dv::runtime {

namespace {

thread_local BesideBlockProbe* recording = nullptr;

std::int64_t rounded(std::int64_t bytes) {
  return (bytes + kAllocatorMinBlock - 1) / kAllocatorMinBlock * kAllocatorMinBlock;
}

}  // namespace

std::int64_t room_for(std::int64_t bytes) {
  if (bytes <= kAllocatorSmallSize) return 0;
  return rounded(bytes);
}

std::int64_t pool_room_bytes(std::int64_t block, std::int64_t beside) {
  const std::int64_t others = rounded(beside);
  // Alone, a small block comes from the pool of small blocks (a 2 MiB
  // segment, not 10); beside other requests, from this segment.
  const std::int64_t large_block = room_for(block_request_bytes(block, others));
  // A block of 10 MiB or more alone gets a segment of its size anyway.
  if (others == 0 && large_block >= kAllocatorMinLargeAlloc) return 0;
  const std::int64_t room = others + large_block;
  return room == 0 ? 0 : std::max(room, kAllocatorMinLargeAlloc);
}

std::int64_t block_request_bytes(std::int64_t block, std::int64_t room) {
  if (room > 0 && block > 0 && block <= kAllocatorSmallSize) return kAllocatorSmallSize + kAllocatorMinBlock;
  return rounded(block);
}

std::int64_t windowed_pool_room_bytes(std::int64_t held, std::int64_t lasting) {
  return std::max(pool_room_bytes(held, lasting), held);
}

std::int64_t least_window_offset() { return kAllocatorSmallSize + kAllocatorMinBlock; }

namespace {

// What the allocator must hold for a block of `bytes` with one window of
// `window` bytes at `offset`: the bytes after the window, where there are
// any, at least a large block's (a small one would come from another
// segment).
std::int64_t windowed_block_bytes(std::int64_t offset, std::int64_t window, std::int64_t bytes) {
  const std::int64_t after = bytes - offset - window;
  return offset + window + (after > 0 ? std::max(after, least_window_offset()) : 0);
}

// A block with the windows of `plan` (its plan left out) and the room
// beside it for what they do not take.
WindowChoice windowed_pool(const codegen::ArenaPlan& plan, const BesideBlock& beside) {
  WindowChoice c;
  c.held = window_block_edges(plan).back();
  c.beside = beside.beside_window(plan.window_at);
  c.room = windowed_pool_room_bytes(c.held, c.beside);
  return c;
}

}  // namespace

std::vector<std::int64_t> window_block_edges(const codegen::ArenaPlan& plan) {
  std::vector<std::int64_t> edges{0};
  if (plan.step_windows.empty()) {
    const std::int64_t at = plan.window_offset, bytes = plan.window_bytes;
    edges.insert(edges.end(), {at, at + bytes, windowed_block_bytes(at, bytes, plan.bytes)});
  } else {
    const std::int64_t grid = plan.window_grid;
    edges.push_back((plan.bytes + grid - 1) / grid * grid);
    for (std::size_t t = 0; t < plan.step_windows.size(); ++t) {
      if (!plan.window_at[t]) continue;
      edges.push_back(plan.step_windows[t].first);
      edges.push_back(plan.step_windows[t].second);
    }
  }
  std::sort(edges.begin(), edges.end());
  edges.erase(std::unique(edges.begin(), edges.end()), edges.end());
  return edges;
}

std::int64_t step_window_grid(std::int64_t beside) {
  const std::int64_t free_beside = std::max(rounded(beside), kAllocatorMinLargeAlloc);
  const std::int64_t part = free_beside + kAllocatorMinBlock;
  return (part + kAllocatorRoundLarge - 1) / kAllocatorRoundLarge * kAllocatorRoundLarge;
}

LeastPool least_pool(const std::vector<std::int64_t>& live_at, const BesideBlock& beside) {
  LeastPool least{beside.between_steps, -1};
  for (std::size_t t = 0; t < live_at.size(); ++t) {
    const std::int64_t bytes = live_at[t] + (t < beside.all_at.size() ? beside.all_at[t] : 0);
    if (bytes > least.bytes) least = {bytes, static_cast<int>(t)};
  }
  return least;
}

std::int64_t windowed_pool_bytes(const codegen::ArenaPlan& plan, const BesideBlock& beside) {
  const WindowChoice c = windowed_pool(plan, beside);
  return pool_bytes(c.held, c.room);
}

std::optional<WindowChoice> choose_window(std::int64_t plain_pool, const BesideBlock& beside,
                                          std::vector<codegen::ArenaPlan> windowed) {
  std::optional<WindowChoice> best;
  std::int64_t least = plain_pool;
  for (codegen::ArenaPlan& plan : windowed) {
    if (plan.window_bytes <= 0) continue;
    WindowChoice c = windowed_pool(plan, beside);
    if (pool_bytes(c.held, c.room) >= least) continue;
    least = pool_bytes(c.held, c.room);
    c.plan = std::move(plan);
    best = std::move(c);
  }
  return best;
}

std::int64_t pool_bytes(std::int64_t block, std::int64_t room) { return segment_bytes(room > 0 ? room : block); }

std::int64_t segment_bytes(std::int64_t bytes) {
  if (bytes <= 0) return 0;
  if (bytes <= kAllocatorSmallSize) return kAllocatorSmallBuffer;
  if (bytes < kAllocatorMinLargeAlloc) return 2 * kAllocatorMinLargeAlloc;
  return (bytes + kAllocatorRoundLarge - 1) / kAllocatorRoundLarge * kAllocatorRoundLarge;
}

BesideBlockProbe::BesideBlockProbe() : outer_(recording) { recording = this; }

BesideBlockProbe::~BesideBlockProbe() { recording = outer_; }

BesideBlockProbe* BesideBlockProbe::recording_on_this_thread() { return recording; }

void BesideBlockProbe::allocated(std::uintptr_t address, std::int64_t bytes) {
  const std::int64_t held = room_for(bytes);
  if (held == 0) return;
  live_requests_.emplace_back(address, requests_.size());
  events_.push_back({requests_.size(), true, step_});
  requests_.push_back({step_, held});
}

void BesideBlockProbe::freed(std::uintptr_t address) {
  for (auto it = live_requests_.begin(); it != live_requests_.end(); ++it) {
    if (it->first != address) continue;
    Request& r = requests_[it->second];
    r.freed_at = step_;
    events_.push_back({it->second, false, step_});
    live_requests_.erase(it);
    return;
  }
}

std::int64_t BesideBlockProbe::peak_of(const std::vector<bool>& counted) const {
  std::int64_t live = 0, peak = 0;
  for (const Event& e : events_) {
    if (!counted[e.request]) continue;
    live += e.allocated ? requests_[e.request].bytes : -requests_[e.request].bytes;
    peak = std::max(peak, live);
  }
  return peak;
}

std::int64_t BesideBlockProbe::peak_bytes() const { return peak_of(std::vector<bool>(requests_.size(), true)); }

std::vector<std::pair<int, std::int64_t>> BesideBlockProbe::largest_requests(std::size_t n) const {
  std::vector<std::pair<int, std::int64_t>> out;
  for (const Request& r : requests_) out.emplace_back(r.step, r.bytes);
  std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  if (out.size() > n) out.resize(n);
  return out;
}

std::vector<bool> BesideBlockProbe::windowable() const {
  std::vector<bool> made_lasting;  // by step
  for (const Request& r : requests_) {
    if (r.step < 0 || r.transient()) continue;
    if (made_lasting.size() <= static_cast<std::size_t>(r.step)) made_lasting.resize(r.step + 1, false);
    made_lasting[r.step] = true;
  }
  std::vector<bool> out(requests_.size(), false);
  for (std::size_t i = 0; i < requests_.size(); ++i) {
    const Request& r = requests_[i];
    out[i] = r.transient() && !(static_cast<std::size_t>(r.step) < made_lasting.size() && made_lasting[r.step]);
  }
  return out;
}

std::vector<std::int64_t> BesideBlockProbe::transient_peaks(int steps) const {
  std::vector<std::int64_t> peaks(static_cast<std::size_t>(std::max(steps, 0)), 0);
  const std::vector<bool> in_window = windowable();
  std::int64_t live = 0;  // bytes alive of one step's windowable requests
  for (const Event& e : events_) {
    if (!in_window[e.request]) continue;
    const Request& r = requests_[e.request];
    live += e.allocated ? r.bytes : -r.bytes;
    if (r.step < steps) peaks[r.step] = std::max(peaks[r.step], live);
  }
  return peaks;
}

std::int64_t BesideBlockProbe::lasting_peak_bytes() const {
  std::vector<bool> lasting = windowable();
  lasting.flip();
  return peak_of(lasting);
}

BesideBlock BesideBlockProbe::measured(int steps) const {
  BesideBlock m;
  m.all = peak_bytes();
  m.lasting = lasting_peak_bytes();
  m.transient = transient_peaks(steps);
  m.all_at.assign(m.transient.size(), 0);
  m.lasting_at.assign(m.transient.size(), 0);
  const std::vector<bool> in_window = windowable();
  std::int64_t all = 0, lasting = 0;  // alive
  for (const Event& e : events_) {
    const std::int64_t bytes = e.allocated ? requests_[e.request].bytes : -requests_[e.request].bytes;
    all += bytes;
    if (!in_window[e.request]) lasting += bytes;
    if (e.step < 0 || e.step >= steps) {
      m.between_steps = std::max(m.between_steps, all);
      continue;
    }
    m.all_at[e.step] = std::max(m.all_at[e.step], all);
    m.lasting_at[e.step] = std::max(m.lasting_at[e.step], lasting);
  }
  return m;
}

// A step's window-takeable requests are alive only while it runs, so where
// the window serves it, only the lasting ones are beside the block then.
std::int64_t BesideBlock::beside_window(const std::vector<bool>& window_at) const {
  std::int64_t peak = between_steps;
  for (std::size_t t = 0; t < all_at.size(); ++t)
    peak = std::max(peak, t < window_at.size() && window_at[t] ? lasting_at[t] : all_at[t]);
  return peak;
}

std::vector<std::vector<std::int64_t>> window_step_choices(const std::vector<std::int64_t>& transient) {
  std::vector<std::int64_t> sizes;
  for (std::int64_t b : transient)
    if (b > 0) sizes.push_back(b);
  std::sort(sizes.begin(), sizes.end());
  sizes.erase(std::unique(sizes.begin(), sizes.end()), sizes.end());
  std::vector<std::vector<std::int64_t>> choices;
  if (sizes.empty()) return choices;
  choices.push_back(transient);
  auto add = [&](auto keeps) {
    std::vector<std::int64_t> window(transient.size(), 0);
    for (std::size_t t = 0; t < transient.size(); ++t)
      if (transient[t] > 0 && keeps(transient[t])) window[t] = transient[t];
    if (std::find(choices.begin(), choices.end(), window) == choices.end()) choices.push_back(std::move(window));
  };
  // A dozen sizes at most: each choice is a plan of the block.
  constexpr std::size_t kMostSizes = 12;
  const std::size_t stride = (sizes.size() + kMostSizes - 1) / kMostSizes;
  for (std::size_t i = 0; i < sizes.size(); i += stride) {
    // (The largest size is always one of them.)
    const std::int64_t s = i + stride < sizes.size() ? sizes[i] : sizes.back();
    add([s](std::int64_t b) { return b >= s; });
    add([s](std::int64_t b) { return b <= s; });
  }
  return choices;
}

}  // namespace dv::runtime
