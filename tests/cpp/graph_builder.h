// Small helpers for building op graphs by hand in tests.
#pragma once

#include <string>
#include <vector>

#include "ir/index_expr.h"
#include "ir/op_graph.h"

namespace dv::test {

inline ir::TensorMeta meta(ir::DType t, std::vector<std::int64_t> sizes, std::vector<std::int64_t> strides = {}) {
  ir::TensorMeta m;
  m.dtype = t;
  m.sizes = sizes;
  m.strides = strides.empty() ? ir::contiguous_strides(sizes) : strides;
  return m;
}

struct GraphBuilder {
  ir::Graph g;
  int input(ir::DType t, std::vector<std::int64_t> sizes, std::vector<std::int64_t> strides = {}) {
    int v = g.add_value(meta(t, sizes, strides));
    g.inputs.push_back(v);
    return v;
  }
  // Adds a node with one output of the given type; returns the output.
  int op(const std::string& name, std::vector<ir::Arg> args, ir::DType t, std::vector<std::int64_t> sizes) {
    int v = g.add_value(meta(t, sizes));
    g.nodes.push_back({name, std::move(args), {v}});
    return v;
  }
  std::vector<int> op_multi(const std::string& name, std::vector<ir::Arg> args, std::vector<ir::TensorMeta> outs) {
    std::vector<int> vs;
    for (auto& m : outs) vs.push_back(g.add_value(m));
    g.nodes.push_back({name, std::move(args), vs});
    return vs;
  }
  void output(int v) { g.outputs.push_back(v); }
};

inline ir::Arg T(int v) { return ir::Arg::of_tensor(v); }
inline ir::Arg I(std::int64_t v) { return ir::Arg::of_int(v); }
inline ir::Arg F(double v) { return ir::Arg::of_double(v); }
inline ir::Arg B(bool v) { return ir::Arg::of_bool(v); }
inline ir::Arg L(std::vector<std::int64_t> v) { return ir::Arg::of_ints(std::move(v)); }

}  // namespace dv::test
