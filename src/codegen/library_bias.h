// The bias of a library call (matmul, convolution) whose result only feeds
// generated kernels is added by those kernels instead of by the library.
//
// `addmm(bias, a, b)` becomes `mm(a, b)` and `add(mm, bias)`; the add fuses
// into the kernel that reads the product anyway (a GELU, a residual add and
// layer norm), so the bias costs no pass over memory. The library's choice
// matters more: on the H200 cuBLAS picks split-K kernels with a memset and a
// separate scaling pass for fp32 `addmm` of BERT-base's shapes at batch 1
// (30 us a call) and a faster kernel for the same `mm` (15 us); torch.compile
// makes the same split (bench/NOTES.md, 2026-12-02 third session).
// `convolution(x, w, bias, ...)` becomes the convolution without a bias and
// `add(conv, bias.view(C, 1, ...))`: ATen adds a cuDNN convolution's bias in
// a kernel of its own (a pass over the result, a launch), which the kernel
// reading the result (batch norm, an activation) absorbs.
// A call whose result leaves the graph, or is read by another library call
// (attention after the Q/K/V projections), keeps its bias.
// For f16/bf16 the product is rounded to its dtype before the bias is added
// (two roundings where the library's epilogue makes one): within an ulp.
#pragma once

#include "ir/op_graph.h"

namespace dv::codegen {

ir::Graph unfuse_library_bias(const ir::Graph& graph);

}  // namespace dv::codegen
