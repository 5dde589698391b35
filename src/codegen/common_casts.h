// A dtype cast of one value computed once, however many times the program
// cast it.
//
// Under autocast every use of a float32 parameter casts it again unless
// autocast's cache is on, and the capture turns that cache off so as to
// record the casts (python/deepvisor/_capture.py, casts_recorded).
// TridentNet's three branches share their convolution weights, so its
// graph casts each weight three times: three kernels and three bf16 copies
// where eager's cache made one. Casts with the same operand and arguments
// and the same result become the first of them; a cast whose result leaves
// the graph stays (eager returns distinct tensors).
#pragma once

#include "ir/op_graph.h"

namespace dv::codegen {

ir::Graph merge_identical_casts(const ir::Graph& graph);

}  // namespace dv::codegen
