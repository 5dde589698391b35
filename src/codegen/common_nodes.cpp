#include "codegen/common_nodes.h"

#include <array>
#include <numeric>
#include <string>
#include <string_view>
#include <unordered_map>

namespace dv::codegen {

namespace {

using ir::Arg;
using ir::Graph;
using ir::Node;

// Ops whose result is not a function of their operands: random draws and
// uninitialized memory (empty, empty_like, new_empty, empty_strided...).
bool is_fresh_every_time(const std::string& op) {
  static constexpr std::array<std::string_view, 15> kWords = {
      "rand",    "dropout", "bernoulli", "normal", "uniform", "exponential", "geometric", "cauchy",
      "multinomial", "poisson", "standard_gamma", "dirichlet", "binomial", "rrelu", "empty"};
  for (std::string_view w : kWords)
    if (op.find(w) != std::string::npos) return true;
  return false;
}

bool mergeable(const Node& n, const ir::ValueUses& uses) {
  bool any_output = false;
  for (int v : n.outputs) {
    if (v < 0) continue;
    if (uses.escapes[v]) return false;
    any_output = true;
  }
  return any_output && !is_fresh_every_time(n.op);
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

std::string key_of(const Node& n) {
  std::string key = n.op;
  for (const Arg& a : n.args) key += '|' + std::to_string(static_cast<int>(a.kind)) + ':' + ir::to_string(a);
  return key;
}

bool same_results(const Graph& g, const Node& a, const Node& b) {
  if (a.outputs.size() != b.outputs.size()) return false;
  for (std::size_t i = 0; i < a.outputs.size(); ++i) {
    if ((a.outputs[i] < 0) != (b.outputs[i] < 0)) return false;
    if (a.outputs[i] >= 0 && !(g.meta(a.outputs[i]) == g.meta(b.outputs[i]))) return false;
  }
  return true;
}

}  // namespace

Graph merge_identical_nodes(const Graph& graph) {
  const ir::ValueUses uses = ir::value_uses(graph);
  std::vector<int> same(graph.values.size());
  std::iota(same.begin(), same.end(), 0);
  Graph g = graph;
  g.nodes.clear();
  std::unordered_map<std::string, std::vector<std::size_t>> kept;  // key -> positions in g.nodes
  for (const Node& original : graph.nodes) {
    Node n = with_replaced_operands(original, same);
    if (mergeable(n, uses)) {
      std::vector<std::size_t>& candidates = kept[key_of(n)];
      const Node* earlier = nullptr;
      for (std::size_t c : candidates)
        if (g.nodes[c].op == n.op && g.nodes[c].args == n.args && same_results(graph, g.nodes[c], n)) {
          earlier = &g.nodes[c];
          break;
        }
      if (earlier != nullptr) {
        for (std::size_t i = 0; i < n.outputs.size(); ++i)
          if (n.outputs[i] >= 0) same[n.outputs[i]] = earlier->outputs[i];
        continue;
      }
      candidates.push_back(g.nodes.size());
    }
    g.nodes.push_back(std::move(n));
  }
  return g;
}

}  // namespace dv::codegen
