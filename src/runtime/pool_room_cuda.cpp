// The LibTorch side of runtime/pool_room.h: the allocator's trace callback
// that feeds the probes, and the segment made before a capture.
#include <ATen/ops/empty.h>
#include <c10/core/AllocatorConfig.h>
#include <c10/cuda/CUDACachingAllocator.h>

#include <mutex>

#include "runtime/pool_room.h"

namespace dv::runtime {

static_assert(kAllocatorMinBlock == c10::CachingAllocator::kMinBlockSize);
static_assert(kAllocatorSmallSize == c10::CachingAllocator::kSmallSize);
static_assert(kAllocatorMinLargeAlloc == c10::CachingAllocator::kMinLargeAlloc);
static_assert(kAllocatorSmallBuffer == c10::CachingAllocator::kSmallBuffer);
static_assert(kAllocatorRoundLarge == c10::CachingAllocator::kRoundLarge);

// The callback runs under the allocator's lock, on the thread that
// allocates or frees: it only appends to that thread's probe, if any.
void report_allocations_to_probes() {
  static std::once_flag once;
  std::call_once(once, [] {
    using Entry = c10::CachingDeviceAllocator::TraceEntry;
    c10::cuda::CUDACachingAllocator::attachAllocatorTraceTracker([](const Entry& e) {
      BesideBlockProbe* probe = BesideBlockProbe::recording_on_this_thread();
      if (probe == nullptr) return;
      if (e.action_ == Entry::ALLOC) probe->allocated(e.addr_, static_cast<std::int64_t>(e.size_));
      else if (e.action_ == Entry::FREE_REQUESTED) probe->freed(e.addr_);
    });
  });
}

void make_pool_room(std::int64_t bytes, int device) {
  if (bytes <= 0) return;
  at::empty({bytes}, at::TensorOptions().dtype(at::kByte).device(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(device))));
}

}  // namespace dv::runtime
