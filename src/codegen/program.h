// The compiled form of an op graph: kernels and the steps that run them.
//
// A Program is device-independent: the runtime runs each kernel either through
// the CPU interpreter or as CUDA C compiled by NVRTC. Tensors live in slots:
// graph inputs, and buffers the steps produce.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "codegen/channels_last.h"
#include "ir/loop_ir.h"
#include "ir/op_graph.h"

namespace dv::codegen {

struct Slot {
  enum class Origin : std::uint8_t { GraphInput, Kernel, Fallback };
  Origin origin = Origin::Kernel;
  int graph_input = -1;  // GraphInput: position in Graph::inputs
  int value = -1;        // graph value id it holds, or -1 for an internal buffer
  ir::DType dtype = ir::DType::Float32;
  std::vector<std::int64_t> sizes;
  std::vector<std::int64_t> strides;
};

struct Step {
  // Fallback: an ATen op through the dispatcher (a library call or an op
  // without a lowering). View: an ATen view op on a tensor in memory, for
  // library calls to read through (no copy). Aten: an op that lowers but
  // runs through ATen by choice (CPU plans, CompileOptions::cpu_plans_run_aten).
  enum class Kind : std::uint8_t { Kernel, Fallback, View, Aten };
  Kind kind = Kind::Kernel;
  int kernel = -1;                // Kernel: index into Program::kernels
  std::vector<int> buffer_slots;  // Kernel: slot of each kernel buffer, in order
  int node = -1;                  // Fallback, View: index into Graph::nodes
  std::vector<int> value_slots;   // Fallback: slot of each graph value the node reads
                                  //   (indexed like `fallback_values`), then its outputs
                                  //   (-1 for an undefined output)
  std::vector<int> fallback_values;  // Fallback: graph value ids, inputs then outputs (-1: undefined)
  int num_fallback_inputs = 0;
  std::vector<int> frees;         // slots whose last use is this step
};

// One fusion group: which graph nodes' work ended up in which kernel.
struct FusionGroup {
  int kernel = -1;
  std::vector<std::string> members;  // readable: "sum(%3)", "mul(%1, %2)"
};

struct Program {
  ir::Graph graph;
  std::vector<ir::Kernel> kernels;
  std::vector<Step> steps;
  std::vector<Slot> slots;
  std::vector<int> output_slots;      // one per Graph::outputs
  std::vector<std::pair<int, int>> mutation_slots;  // (input slot, final value slot)
  std::vector<int> restride_slots;    // input slot of each Graph::restrides entry
  std::vector<FusionGroup> groups;
  std::vector<std::string> fallback_ops;  // op name of each fallback step
  std::vector<std::string> notes;         // why things fell back, etc.
};

// The slots a step writes (`written`: a kernel's written buffers, an ATen
// step's outputs) or reads (a kernel's read buffers, an ATen step's inputs).
// An in-place ATen step's output is one of its inputs' slots.
inline std::vector<int> step_slots(const Program& p, const Step& step, bool written) {
  std::vector<int> out;
  if (step.kind == Step::Kind::Kernel) {
    const ir::Kernel& k = p.kernels[step.kernel];
    for (std::size_t b = 0; b < step.buffer_slots.size(); ++b)
      if (written ? k.buffers[b].written : k.buffers[b].read) out.push_back(step.buffer_slots[b]);
    return out;
  }
  for (std::size_t v = 0; v < step.value_slots.size(); ++v)
    if (step.value_slots[v] >= 0 && (static_cast<int>(v) >= step.num_fallback_inputs) == written)
      out.push_back(step.value_slots[v]);
  return out;
}

struct CompileOptions {
  // Fuse pointwise work into reductions and reductions with their consumers.
  bool fuse = true;
  // addmm and convolution whose result only kernels read: the library call
  // without its bias, the bias added by those kernels (codegen/library_bias.h).
  bool unfuse_library_bias = true;
  // A plan on CPU tensors runs each node through ATen, as eager does, instead
  // of interpreting the loop IR (a reference, several times slower than ATen's
  // vectorized kernels): DEEPVISOR_CPU=interpreter turns it off.
  bool cpu_plans_run_aten = false;
  // A CPU plan whose kernels are compiled to C++ (DEEPVISOR_CPU=fused): nodes
  // that scatter, or reduce other than as rows (lower_graph_rows_to_aten), run
  // through ATen; row reductions and pointwise work fuse into kernels.
  bool cpu_rows_run_aten = false;
  // Fewer rows than this (the threads that will run the plan) and a row
  // reduction runs through ATen too: the generated kernel splits rows only.
  std::int64_t cpu_min_rows = 2;
  // 4-d activations around 2-d convolutions laid out channels-last
  // (codegen/channels_last.h): by default on a GPU in f16/bf16.
  ChannelsLast channels_last = ChannelsLast::Auto;
  bool channels_last_weight_copies = true;  // parameters read channels-last: a copy held (else cuDNN converts per call)
};

// Lowers, schedules and fuses a graph. Throws std::runtime_error only for a
// malformed graph; unsupported ops become fallback steps.
Program compile_graph(const ir::Graph& graph, const CompileOptions& options = {});

std::string describe(const Program& p);  // slots, steps, groups: for dumps

}  // namespace dv::codegen
