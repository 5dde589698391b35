#include "codegen/common_casts.h"

#include <numeric>

namespace dv::codegen {

namespace {

using ir::Arg;
using ir::Graph;
using ir::Node;

bool is_cast(const Node& n) {
  return (n.op == "aten::_to_copy.default" || n.op == "aten::to.dtype") && n.outputs.size() == 1 && n.outputs[0] >= 0;
}

// `n` reading the values that `same[v]` stands for.
Node with_replaced_operands(Node n, const std::vector<int>& same) {
  for (Arg& a : n.args) {
    if (a.kind == Arg::Kind::Tensor && a.tensor >= 0) a.tensor = same[a.tensor];
    if (a.kind == Arg::Kind::TensorList)
      for (auto& v : a.ints)
        if (v >= 0) v = same[v];
  }
  return n;
}

}  // namespace

Graph merge_identical_casts(const Graph& graph) {
  const ir::ValueUses uses = ir::value_uses(graph);
  std::vector<int> same(graph.values.size());
  std::iota(same.begin(), same.end(), 0);
  Graph g = graph;
  g.nodes.clear();
  std::vector<std::size_t> casts;  // positions in g.nodes of the casts kept
  for (const Node& original : graph.nodes) {
    Node n = with_replaced_operands(original, same);
    if (is_cast(n) && !uses.escapes[n.outputs[0]]) {
      const int out = n.outputs[0];
      bool merged = false;
      for (std::size_t c : casts) {
        const Node& kept = g.nodes[c];
        if (kept.op == n.op && kept.args == n.args && graph.meta(kept.outputs[0]) == graph.meta(out)) {
          same[out] = kept.outputs[0];
          merged = true;
          break;
        }
      }
      if (merged) continue;
      casts.push_back(g.nodes.size());
    }
    g.nodes.push_back(std::move(n));
  }
  return g;
}

}  // namespace dv::codegen
