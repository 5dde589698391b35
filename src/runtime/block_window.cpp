#include "runtime/block_window.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>

#include <algorithm>
#include <cstdint>

#include "runtime/pool_room.h"

namespace dv::runtime {

WindowedBlock::WindowedBlock(std::int64_t offset, std::int64_t window, std::int64_t bytes, const at::Device& device)
    : device_(device), window_bytes_(window) {
  const std::int64_t held = windowed_block_bytes(offset, window, bytes);
  if (offset > 0) before_ = allocate(offset);
  window_ = allocate(window);
  if (held > offset + window) after_ = allocate(held - offset - window);
  char* const start = static_cast<char*>(offset > 0 ? before_.data_ptr() : window_.data_ptr());
  window_address_ = window_.data_ptr();
  const bool side_by_side = start + offset == window_address_ &&
                            (!after_.defined() || start + offset + window == after_.data_ptr());
  if (!side_by_side) {
    before_.reset();
    window_.reset();
    after_.reset();
    return;
  }
  // The allocations own the memory; the block only addresses it.
  block_ = at::from_blob(start, {held}, [](void*) {}, at::TensorOptions().dtype(at::kByte).device(device));
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
