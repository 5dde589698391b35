#include "codegen/library_bias.h"

#include <functional>

#include "codegen/tensor_def.h"

namespace dv::codegen {

namespace {

using ir::Arg;
using ir::Graph;
using ir::Node;

// Whether every use of `value` is a generated kernel: each reader has a
// lowering, and readers that are views pass the value on to such uses only.
bool only_kernels_read(const Graph& g, const ir::ValueUses& r, int value) {
  if (r.escapes[value] || r.readers[value].empty()) return false;
  for (int reader : r.readers[value]) {
    const Node& n = g.nodes[reader];
    if (!has_lowering(n.op)) return false;
    if (!is_view_op(n.op)) continue;
    for (int out : n.outputs)
      if (out < 0 || !only_kernels_read(g, r, out)) return false;
  }
  return true;
}

bool is_one(const Arg& a) { return a.is_number() && a.number() == 1.0; }

// On the CPU ATen adds the bias of a 16-bit float result inside the library
// call (oneDNN, its BLAS) and rounds once; the split would round twice, and a
// sum that cancels after it shows the difference (CPU fuzzer, seed 2105). The
// split's gains are the GPU's, where the rounding is eager's for convolution
// (ATen adds cuDNN's bias in a pass of its own) and within an ulp for addmm.
bool split_changes_rounding(const ir::TensorMeta& out) {
  const bool half = out.dtype == ir::DType::BFloat16 || out.dtype == ir::DType::Float16;
  return half && out.device == "cpu";
}

// addmm(bias, a, b, beta, alpha) with alpha 1 whose product only kernels
// read. With beta 0 addmm ignores the bias (a NaN in it does not show),
// which mm + 0 * bias would not: that addmm stays.
bool should_unfuse_addmm(const Graph& g, const ir::ValueUses& r, const Node& n) {
  if (n.op != "aten::addmm.default" || n.args.size() != 5 || n.outputs.size() != 1) return false;
  if (n.args[0].kind != Arg::Kind::Tensor || !is_one(n.args[4]) || !n.args[3].is_number()) return false;
  if (n.args[3].number() == 0.0) return false;
  const ir::TensorMeta& out = g.meta(n.outputs[0]);
  if (!ir::is_kernel_dtype(out.dtype) || g.meta(n.args[0].tensor).dtype != out.dtype) return false;
  if (split_changes_rounding(out)) return false;
  return only_kernels_read(g, r, n.outputs[0]);
}

// convolution(input, weight, bias, stride, padding, dilation, transposed,
// output_padding, groups) with a bias of the result's dtype, one value per
// output channel, whose result only kernels read.
bool should_unfuse_convolution(const Graph& g, const ir::ValueUses& r, const Node& n) {
  if (n.op != "aten::convolution.default" || n.args.size() != 9 || n.outputs.size() != 1) return false;
  if (n.args[2].kind != Arg::Kind::Tensor) return false;
  const ir::TensorMeta& out = g.meta(n.outputs[0]);
  const ir::TensorMeta& bias = g.meta(n.args[2].tensor);
  if (!ir::is_kernel_dtype(out.dtype) || bias.dtype != out.dtype || out.sizes.size() < 3) return false;
  if (bias.sizes != std::vector<std::int64_t>{out.sizes[1]} || split_changes_rounding(out)) return false;
  return only_kernels_read(g, r, n.outputs[0]);
}

void add_addmm_without_bias(Graph& g, const Node& n) {
  ir::TensorMeta product = g.meta(n.outputs[0]);
  product.strides = {product.sizes[1], 1};
  product.aligned16 = true;
  int p = g.add_value(product);
  g.nodes.push_back(Node{"aten::mm.default", {n.args[1], n.args[2]}, {p}});
  // add.Tensor(self, other, alpha) is self + alpha * other: the product plus beta * bias.
  g.nodes.push_back(Node{"aten::add.Tensor", {Arg::of_tensor(p), n.args[0], n.args[3]}, n.outputs});
}

void add_convolution_without_bias(Graph& g, const Node& n) {
  const ir::TensorMeta out = g.meta(n.outputs[0]);
  const int conv = g.add_value(out);
  Node bare = n;
  bare.args[2] = Arg::none();
  bare.outputs = {conv};
  g.nodes.push_back(bare);
  // The bias as (C, 1, ..., 1): it broadcasts over the batch and the spatial dims.
  const int c = static_cast<int>(out.sizes[1]);
  ir::TensorMeta column = g.meta(n.args[2].tensor);
  column.sizes.assign(out.sizes.size() - 1, 1);
  column.sizes[0] = c;
  column.strides.assign(column.sizes.size(), 1);
  const int b = g.add_value(column);
  g.nodes.push_back(Node{"aten::view.default", {n.args[2], Arg::of_ints(column.sizes)}, {b}});
  g.nodes.push_back(Node{"aten::add.Tensor", {Arg::of_tensor(conv), Arg::of_tensor(b), Arg::of_int(1)}, n.outputs});
}

}  // namespace

Graph unfuse_library_bias(const Graph& graph) {
  const ir::ValueUses readers = ir::value_uses(graph);
  Graph g = graph;
  g.nodes.clear();
  for (const Node& n : graph.nodes) {
    if (should_unfuse_addmm(graph, readers, n)) add_addmm_without_bias(g, n);
    else if (should_unfuse_convolution(graph, readers, n)) add_convolution_without_bias(g, n);
    else g.nodes.push_back(n);
  }
  return g;
}

}  // namespace dv::codegen
