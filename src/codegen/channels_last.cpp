#include "codegen/channels_last.h"

#include <algorithm>
#include <string>

namespace dv::codegen {

namespace {

const std::vector<int> kChannelsLastOrder{0, 2, 3, 1};  // N, H, W, C: channels innermost

using ir::Arg;
using ir::Graph;
using ir::Node;
using ir::TensorMeta;

bool is_convolution(const std::string& op) {
  return op.rfind("aten::convolution.", 0) == 0 || op.rfind("aten::_convolution.", 0) == 0 ||
         op.rfind("aten::cudnn_convolution.", 0) == 0;
}

// Ops whose result depends on where their input's elements lie, not only on
// their values: views (their strides were computed from the capture's
// layout; view.dtype needs a unit last stride) and as_strided, which
// reinterprets memory.
bool reads_the_layout(const std::string& op) {
  return is_view_op(op) || op.rfind("aten::as_strided", 0) == 0 || op.rfind("aten::view", 0) == 0 ||
         op.rfind("aten::unfold", 0) == 0;
}

bool is_half(ir::DType t) { return t == ir::DType::Float16 || t == ir::DType::BFloat16; }

// Strides equal where the size is not 1 (where it is, any stride addresses the same elements).
bool same_layout(const TensorMeta& m, const std::vector<std::int64_t>& strides) {
  for (std::size_t d = 0; d < m.sizes.size(); ++d)
    if (m.sizes[d] != 1 && m.strides[d] != strides[d]) return false;
  return true;
}

// A 4-d tensor for which channels-last is another layout than row-major.
bool has_two_layouts(const TensorMeta& m) {
  return m.sizes.size() == 4 && m.numel() > 0 && m.sizes[1] > 1 && m.sizes[2] * m.sizes[3] > 1;
}

class Chooser {
 public:
  Chooser(const Graph& g, ChannelsLast mode, bool copy_inputs)
      : g_(g), mode_(mode), copy_inputs_(copy_inputs), uses_(ir::value_uses(g)), chosen_(g.values.size()) {
    is_input_.assign(g.values.size(), false);
    for (int v : g.inputs) is_input_[v] = true;
    producer_.assign(g.values.size(), -1);
    for (std::size_t n = 0; n < g.nodes.size(); ++n)
      for (int v : g.nodes[n].outputs)
        if (v >= 0) producer_[v] = static_cast<int>(n);
  }

  Graph run() {
    for (const Node& n : g_.nodes) {
      if (is_convolution(n.op)) {
        if (!converts(n)) continue;
        choose(n.outputs.at(0));
        // Its input too, where the plan makes it (autocast's cast of the
        // model's input): cuDNN would otherwise get a channels-last copy,
        // made beside the plan's memory on every call.
        const int in = n.args[0].tensor;
        if (producer_[in] >= 0 && !reads_the_layout(g_.nodes[producer_[in]].op)) choose(in);
        if (n.args.at(1).kind == Arg::Kind::Tensor && only_convolutions_weigh_with(n.args[1].tensor))
          choose(n.args[1].tensor, /*input_ok=*/copy_inputs_);
      } else if (!reads_the_layout(n.op) && reads_chosen(n)) {
        for (int v : n.outputs) choose(v);
      }
    }
    Graph out = g_;
    for (std::size_t v = 0; v < chosen_.size(); ++v)
      if (chosen_[v]) out.values[v].strides = channels_last_strides(out.values[v].sizes);
    return out;
  }

 private:
  // A 2-d convolution (4-d input and weight) this mode lays out channels-last.
  bool converts(const Node& n) const {
    if (n.outputs.empty() || n.outputs[0] < 0 || n.args.size() < 2) return false;
    if (n.args[0].kind != Arg::Kind::Tensor || n.args[1].kind != Arg::Kind::Tensor) return false;
    const TensorMeta& out = g_.meta(n.outputs[0]);
    if (out.sizes.size() != 4 || g_.meta(n.args[1].tensor).sizes.size() != 4) return false;
    if (mode_ == ChannelsLast::Always) return true;
    return mode_ == ChannelsLast::Auto && out.device != "cpu" && is_half(out.dtype);
  }

  // Read only as the weight of convolutions that go channels-last.
  bool only_convolutions_weigh_with(int v) const {
    if (uses_.readers[v].empty()) return false;
    for (int r : uses_.readers[v]) {
      const Node& n = g_.nodes[r];
      if (!is_convolution(n.op) || !converts(n)) return false;
      for (std::size_t a = 0; a < n.args.size(); ++a)
        if (a != 1 && n.args[a].kind == Arg::Kind::Tensor && n.args[a].tensor == v) return false;
    }
    return true;
  }

  // Whether `n` reads a chosen 4-d value (its outputs are then chosen where they qualify).
  bool reads_chosen(const Node& n) const {
    for (const Arg& a : n.args) {
      if (a.kind == Arg::Kind::Tensor && chosen_[a.tensor]) return true;
      if (a.kind == Arg::Kind::TensorList)
        for (auto v : a.ints)
          if (v >= 0 && chosen_[v]) return true;
    }
    return false;
  }

  // Lays `v` out channels-last where nothing outside the plan sees its
  // layout and no op that reads the layout reads it. An input (a weight: `input_ok`) is then copied
  // into that layout by the plan, once where it is a constant (a parameter;
  // runtime/executor.h, prepared inputs).
  void choose(int v, bool input_ok = false) {
    if (v < 0 || (is_input_[v] && !input_ok) || uses_.escapes[v]) return;
    const TensorMeta& m = g_.meta(v);
    if (!has_two_layouts(m) || !m.is_contiguous()) return;
    for (int r : uses_.readers[v])
      if (reads_the_layout(g_.nodes[r].op)) return;
    chosen_[v] = true;
  }

  const Graph& g_;
  const ChannelsLast mode_;
  const bool copy_inputs_;
  const ir::ValueUses uses_;
  std::vector<bool> chosen_;
  std::vector<bool> is_input_;
  std::vector<int> producer_;  // by value: the node whose output it is, or -1
};

// A reduction whose kept dims are the space of `reader` (a pooling window's
// maximum and the pooled tensor) counts its points in the reader's order, so
// that the two stay one kernel; its reduced dims (size 1) go innermost.
void order_reduction_like(const TensorDef& reader, TensorDef& r) {
  if (r.kind != TensorDef::Kind::Reduction || !r.order.empty()) return;
  std::vector<int> kept_dims, reduced_dims;
  std::vector<std::int64_t> kept_sizes;
  for (std::size_t i = 0; i < r.reduced.size(); ++i) {
    (r.reduced[i] ? reduced_dims : kept_dims).push_back(static_cast<int>(i));
    if (!r.reduced[i]) kept_sizes.push_back(r.input_sizes[i]);
  }
  if (kept_sizes != reader.sizes) return;
  for (int d : reader.order) r.order.push_back(kept_dims[d]);
  r.order.insert(r.order.end(), reduced_dims.begin(), reduced_dims.end());
}

}  // namespace

std::vector<std::int64_t> channels_last_strides(const std::vector<std::int64_t>& sizes) {
  return ir::ordered_strides(sizes, kChannelsLastOrder);
}

Graph channels_last_activations(const Graph& graph, ChannelsLast mode, bool copy_inputs) {
  if (mode == ChannelsLast::Never) return graph;
  const bool any = std::any_of(graph.nodes.begin(), graph.nodes.end(), [](const Node& n) { return is_convolution(n.op); });
  return any ? Chooser(graph, mode, copy_inputs).run() : graph;
}

void store_in_value_layout(const Graph& graph, LoweredGraph& lowered) {
  // Per def: 1 while every value it holds is channels-last, 0 once one is not.
  std::vector<int> all(lowered.defs.size(), -1);
  for (std::size_t v = 0; v < lowered.value_def.size() && v < graph.values.size(); ++v) {
    const int d = lowered.value_def[v];
    if (d < 0) continue;
    const TensorMeta& m = graph.values[v];
    const bool cl = has_two_layouts(m) && m.sizes == lowered.defs[d].sizes &&
                    same_layout(m, channels_last_strides(m.sizes)) && !m.is_contiguous();
    all[d] = (all[d] != 0 && cl) ? 1 : 0;
  }
  for (std::size_t d = 0; d < lowered.defs.size(); ++d) {
    TensorDef& td = lowered.defs[d];
    if (all[d] != 1 || td.kind != TensorDef::Kind::Pointwise) continue;
    td.order = kChannelsLastOrder;
    for (int dep : td.deps) order_reduction_like(td, lowered.defs[dep]);
  }
}

}  // namespace dv::codegen
