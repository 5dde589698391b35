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
  // A small block comes from the pool of small blocks, not from this segment.
  const std::int64_t large_block = block > kAllocatorSmallSize ? rounded(block) : 0;
  // A block of 10 MiB or more alone gets a segment of its size anyway.
  if (others == 0 && large_block >= kAllocatorMinLargeAlloc) return 0;
  const std::int64_t room = others + large_block;
  return room == 0 ? 0 : std::max(room, kAllocatorMinLargeAlloc);
}

BesideBlockProbe::BesideBlockProbe() : outer_(recording) { recording = this; }

BesideBlockProbe::~BesideBlockProbe() { recording = outer_; }

BesideBlockProbe* BesideBlockProbe::recording_on_this_thread() { return recording; }

void BesideBlockProbe::allocated(std::uintptr_t address, std::int64_t bytes) {
  const std::int64_t held = room_for(bytes);
  if (held == 0) return;
  live_requests_.emplace_back(address, held);
  requests_.emplace_back(step_, held);
  live_ += held;
  peak_ = std::max(peak_, live_);
}

void BesideBlockProbe::freed(std::uintptr_t address) {
  for (auto it = live_requests_.begin(); it != live_requests_.end(); ++it) {
    if (it->first != address) continue;
    live_ -= it->second;
    live_requests_.erase(it);
    return;
  }
}

std::int64_t BesideBlockProbe::peak_bytes() const { return peak_; }

std::vector<std::pair<int, std::int64_t>> BesideBlockProbe::largest_requests(std::size_t n) const {
  std::vector<std::pair<int, std::int64_t>> out = requests_;
  std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  if (out.size() > n) out.resize(n);
  return out;
}

}  // namespace dv::runtime
