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
  events_.emplace_back(requests_.size(), true);
  requests_.push_back({step_, held});
}

void BesideBlockProbe::freed(std::uintptr_t address) {
  for (auto it = live_requests_.begin(); it != live_requests_.end(); ++it) {
    if (it->first != address) continue;
    Request& r = requests_[it->second];
    r.freed_at = step_;
    events_.emplace_back(it->second, false);
    live_requests_.erase(it);
    return;
  }
}

std::int64_t BesideBlockProbe::peak_of(const std::vector<bool>& counted) const {
  std::int64_t live = 0, peak = 0;
  for (const auto& [index, allocated] : events_) {
    if (!counted[index]) continue;
    live += allocated ? requests_[index].bytes : -requests_[index].bytes;
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
  for (const auto& [index, allocated] : events_) {
    if (!in_window[index]) continue;
    const Request& r = requests_[index];
    live += allocated ? r.bytes : -r.bytes;
    if (r.step < steps) peaks[r.step] = std::max(peaks[r.step], live);
  }
  return peaks;
}

std::int64_t BesideBlockProbe::lasting_peak_bytes() const {
  std::vector<bool> lasting = windowable();
  lasting.flip();
  return peak_of(lasting);
}

}  // namespace dv::runtime
