// Plans built by hand for the memory-planning tests: kernels over 1-d
// float32 slots, sizes in bytes, each intermediate freed after its last use.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "codegen/program.h"

namespace dv::test {

inline constexpr std::int64_t kMB = 1 << 20;

// Builds a plan of kernels over 1-d float32 slots, sizes in bytes.
struct PlanBuilder {
  codegen::Program p;
  std::vector<bool> constant;

  int slot(codegen::Slot::Origin origin, std::int64_t bytes) {
    codegen::Slot s;
    s.origin = origin;
    s.sizes = {bytes / 4};
    s.strides = {1};
    if (origin == codegen::Slot::Origin::GraphInput) s.graph_input = static_cast<int>(p.slots.size());
    p.slots.push_back(s);
    return static_cast<int>(p.slots.size()) - 1;
  }
  int input(std::int64_t bytes) { return slot(codegen::Slot::Origin::GraphInput, bytes); }

  // A kernel reading `reads` and writing a new slot of `bytes`; returns that slot.
  int kernel(const std::vector<int>& reads, std::int64_t bytes, bool is_constant = false) {
    ir::Kernel k;
    codegen::Step step;
    step.kind = codegen::Step::Kind::Kernel;
    step.kernel = static_cast<int>(p.kernels.size());
    for (int r : reads) {
      ir::KernelBuffer b;
      b.read = true;
      k.buffers.push_back(b);
      step.buffer_slots.push_back(r);
    }
    const int out = slot(codegen::Slot::Origin::Kernel, bytes);
    ir::KernelBuffer w;
    w.written = true;
    k.buffers.push_back(w);
    step.buffer_slots.push_back(out);
    p.kernels.push_back(k);
    p.steps.push_back(step);
    constant.push_back(is_constant);
    return out;
  }

  // A pointwise kernel over `bytes / 4` points: loads each slot of `reads`
  // at element x (or at `read_at[i]` where given), stores their sum at x into
  // a new slot of `bytes`; returns that slot.
  int pointwise(const std::vector<int>& reads, std::int64_t bytes, const std::vector<ir::IndexExpr>& read_at = {}) {
    const int out = kernel(reads, bytes);
    ir::KernelBuilder kb("pointwise", bytes / 4, 1);
    ir::ValueId sum = -1;
    for (std::size_t i = 0; i < reads.size(); ++i) {
      const int buffer = kb.buffer("in" + std::to_string(i), ir::DType::Float32, bytes / 4);
      const ir::ValueId v = kb.load(buffer, i < read_at.size() ? read_at[i] : kb.x());
      sum = sum < 0 ? v : kb.binary(ir::PrimOp::Add, sum, v);
    }
    kb.store(kb.buffer("out", ir::DType::Float32, bytes / 4), kb.x(), sum);
    p.kernels.back() = std::move(kb).finish();
    return out;
  }

  // A view step (an ATen view op) over `base`; returns the view's slot.
  int view(int base) {
    codegen::Step step;
    step.kind = codegen::Step::Kind::View;
    const int out = slot(codegen::Slot::Origin::Fallback, 4);
    step.value_slots = {base, out};
    step.num_fallback_inputs = 1;
    p.steps.push_back(step);
    constant.push_back(false);
    return out;
  }

  // A library call (an ATen step) reading `reads` and returning a new slot of
  // `bytes`; returns that slot.
  int library(const std::vector<int>& reads, std::int64_t bytes) {
    codegen::Step step;
    step.kind = codegen::Step::Kind::Fallback;
    const int out = slot(codegen::Slot::Origin::Fallback, bytes);
    step.value_slots = reads;
    step.value_slots.push_back(out);
    step.num_fallback_inputs = static_cast<int>(reads.size());
    p.steps.push_back(step);
    constant.push_back(false);
    return out;
  }

  // Frees each intermediate after its last use, as the scheduler does; `out` is returned.
  void finish(int out) {
    p.output_slots = {out};
    std::vector<int> last_use(p.slots.size(), -1);
    for (std::size_t i = 0; i < p.steps.size(); ++i)
      for (const auto& used : {p.steps[i].buffer_slots, p.steps[i].value_slots})
        for (int s : used) last_use[s] = static_cast<int>(i);
    for (std::size_t s = 0; s < p.slots.size(); ++s)
      if (p.slots[s].origin != codegen::Slot::Origin::GraphInput && static_cast<int>(s) != out && last_use[s] >= 0)
        p.steps[last_use[s]].frees.push_back(static_cast<int>(s));
  }
};

}  // namespace dv::test
