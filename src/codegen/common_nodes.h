// Common subexpressions: a node that computes what an earlier node computed
// (the same op on the same values and arguments) is dropped, and its readers
// read the earlier node's outputs.
//
// Programs repeat work that eager repeats too: TridentNet's first trident
// block runs its 1x1 convolution, batch norm and downsample on the same
// input once per branch, and under autocast every use of a float32
// parameter casts it again (the capture turns autocast's cache off so as to
// record the casts: python/deepvisor/_capture.py, casts_recorded), so its
// shared weights are cast three times. Not merged: ops that draw random
// numbers or leave memory uninitialized, nodes with no output (kept for
// their checks), and nodes whose result leaves the graph (eager returns
// distinct tensors, which the caller may write separately).
#pragma once

#include "ir/op_graph.h"

namespace dv::codegen {

ir::Graph merge_identical_nodes(const ir::Graph& graph);

}  // namespace dv::codegen
