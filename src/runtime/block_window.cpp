#include "runtime/block_window.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>

#include <algorithm>
#include <cstdint>

#include "runtime/pool_room.h"

namespace dv::runtime {

std::int64_t WindowedBlock::held_bytes(std::int64_t window, std::int64_t bytes) {
  return window + std::max(bytes - window, kAllocatorSmallSize + kAllocatorMinBlock);
}

WindowedBlock::WindowedBlock(std::int64_t window, std::int64_t bytes, const at::Device& device)
    : device_(device), window_bytes_(window) {
  const std::int64_t held = held_bytes(window, bytes);
  window_ = allocate(window);
  rest_ = allocate(held - window);
  window_address_ = window_.data_ptr();
  if (static_cast<char*>(window_address_) + window != rest_.data_ptr()) {
    window_.reset();
    rest_.reset();
    return;
  }
  // The allocations own the memory; the block only addresses it.
  block_ = at::from_blob(window_address_, {held}, [](void*) {},
                         at::TensorOptions().dtype(at::kByte).device(device));
}

at::Tensor WindowedBlock::allocate(std::int64_t bytes) const {
  return at::empty({bytes}, at::TensorOptions().dtype(at::kByte).device(device_));
}

void WindowedBlock::lend_window() { window_.reset(); }

bool WindowedBlock::take_window_back() {
  window_ = allocate(window_bytes_);
  return window_.data_ptr() == window_address_;
}

}  // namespace dv::runtime
