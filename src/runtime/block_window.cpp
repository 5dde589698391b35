#include "runtime/block_window.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>

#include <cstdint>
#include <utility>

namespace dv::runtime {

WindowedBlock::WindowedBlock(std::vector<std::int64_t> edges, const at::Device& device)
    : device_(device), edges_(std::move(edges)) {
  if (edges_.size() < 2) return;
  for (std::size_t part = 0; part + 1 < edges_.size(); ++part) parts_.push_back(allocate(part));
  start_ = static_cast<char*>(parts_.front().data_ptr());
  for (std::size_t part = 1; part < parts_.size(); ++part) {
    if (static_cast<char*>(parts_[part].data_ptr()) == start_ + edges_[part]) continue;
    parts_.clear();  // not side by side
    return;
  }
  // The parts own the memory; the block only addresses it.
  block_ = at::from_blob(start_, {edges_.back()}, [](void*) {},
                         at::TensorOptions().dtype(at::kByte).device(device));
}

at::Tensor WindowedBlock::allocate(std::size_t part) const {
  return at::empty({edges_[part + 1] - edges_[part]}, at::TensorOptions().dtype(at::kByte).device(device_));
}

void WindowedBlock::lend_window(std::int64_t begin, std::int64_t end) {
  for (std::size_t part = 0; part < parts_.size(); ++part)
    if (edges_[part] >= begin && edges_[part + 1] <= end) parts_[part].reset();
}

bool WindowedBlock::take_window_back(std::int64_t begin, std::int64_t end) {
  bool in_place = true;
  for (std::size_t part = 0; part < parts_.size(); ++part) {
    if (edges_[part] < begin || edges_[part + 1] > end) continue;
    parts_[part] = allocate(part);
    in_place = in_place && static_cast<char*>(parts_[part].data_ptr()) == start_ + edges_[part];
  }
  return in_place;
}

}  // namespace dv::runtime
