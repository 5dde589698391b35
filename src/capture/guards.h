// Guards: the conditions on input tensors under which a compiled plan is valid.
//
// Checked in C++ on every call, so they are kept flat: one record per input
// tensor, compared field by field.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace dv::capture {

struct TensorGuard {
  c10::ScalarType dtype;
  c10::Device device;
  std::vector<std::int64_t> sizes;
  std::vector<std::int64_t> strides;
  bool aligned16;      // the plan assumes a 16-byte aligned data pointer
  bool requires_grad;
};

class GuardSet {
 public:
  static GuardSet from_tensors(const std::vector<at::Tensor>& tensors);
  bool check(const std::vector<at::Tensor>& tensors) const { return check(tensors, {}); }
  // The guards over `first` followed by `second`, without joining them.
  bool check(const std::vector<at::Tensor>& first, const std::vector<at::Tensor>& second) const;
  // Why check() fails for these tensors, or "" if it passes.
  std::string explain_failure(const std::vector<at::Tensor>& tensors) const;
  std::size_t size() const { return guards_.size(); }

 private:
  std::vector<TensorGuard> guards_;
};

}  // namespace dv::capture
