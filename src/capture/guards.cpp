#include "capture/guards.h"

#include <cstdint>

namespace dv::capture {

namespace {

bool is_aligned16(const at::Tensor& t) { return reinterpret_cast<std::uintptr_t>(t.data_ptr()) % 16 == 0; }

std::string shape_text(c10::IntArrayRef v) {
  std::string s = "[";
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s + "]";
}

// "" if `t` satisfies `g`, else the first difference.
std::string mismatch(const TensorGuard& g, const at::Tensor& t) {
  if (!t.defined()) return "undefined tensor";
  if (t.scalar_type() != g.dtype) return std::string("dtype ") + c10::toString(t.scalar_type());
  if (t.device() != g.device) return "device " + t.device().str();
  if (t.sizes() != c10::IntArrayRef(g.sizes)) return "sizes " + shape_text(t.sizes()) + " vs " + shape_text(g.sizes);
  if (t.strides() != c10::IntArrayRef(g.strides)) return "strides " + shape_text(t.strides()) + " vs " + shape_text(g.strides);
  if (g.aligned16 && !is_aligned16(t)) return "data pointer not 16-byte aligned";
  if (t.requires_grad() != g.requires_grad) return "requires_grad";
  return "";
}

}  // namespace

GuardSet GuardSet::from_tensors(const std::vector<at::Tensor>& tensors) {
  GuardSet s;
  for (const auto& t : tensors) {
    s.guards_.push_back({t.scalar_type(), t.device(), t.sizes().vec(), t.strides().vec(), is_aligned16(t), t.requires_grad()});
  }
  return s;
}

bool GuardSet::check(const std::vector<at::Tensor>& first, const std::vector<at::Tensor>& second) const {
  if (first.size() + second.size() != guards_.size()) return false;
  for (std::size_t i = 0; i < guards_.size(); ++i) {
    const TensorGuard& g = guards_[i];
    const at::Tensor& t = i < first.size() ? first[i] : second[i - first.size()];
    if (!t.defined() || t.scalar_type() != g.dtype || t.device() != g.device ||
        t.sizes() != c10::IntArrayRef(g.sizes) || t.strides() != c10::IntArrayRef(g.strides) ||
        (g.aligned16 && !is_aligned16(t)) || t.requires_grad() != g.requires_grad)
      return false;
  }
  return true;
}

std::string GuardSet::explain_failure(const std::vector<at::Tensor>& tensors) const {
  if (tensors.size() != guards_.size())
    return "expected " + std::to_string(guards_.size()) + " tensors, got " + std::to_string(tensors.size());
  for (std::size_t i = 0; i < guards_.size(); ++i) {
    std::string m = mismatch(guards_[i], tensors[i]);
    if (!m.empty()) return "tensor " + std::to_string(i) + ": " + m;
  }
  return "";
}

}  // namespace dv::capture
