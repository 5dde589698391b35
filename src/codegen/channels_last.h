// Channels-last activations around 2-d convolutions.
//
// cuDNN's f16/bf16 convolutions on Hopper run in NHWC: given NCHW tensors
// they transpose the input (and weight) in and the result out, around every
// convolution. On the H200 that was 155 of ResNet-50's 683 us of GPU time
// under bf16 autocast at batch 1 (bench/NOTES.md, thirteenth session), and
// torch.compile avoids it by laying out conv-heavy graphs channels-last.
//
// channels_last_activations gives the graph's 4-d activations around such
// convolutions channels-last strides: the convolutions' results and weights
// (made in the plan, as autocast's casts, or graph inputs, which the plan
// then copies, once for parameters: runtime/executor.h), and what the nodes
// reading them compute (batch norm, activations, residual adds, pooling,
// concatenation), so a chain of convolutions and the kernels between them
// never transposes; also a convolution's input that the plan makes (a cast
// of the model's input), not one it receives. Other graph inputs, outputs
// (and the bases of output views) and values read by ops whose result
// depends on the layout (views, as_strided) keep the capture's layout. Otherwise a layout is only where a
// value lies in memory: every step reads values by their strides, so the
// choice changes speed, never results.
//
// store_in_value_layout then makes the kernels honour it: a pointwise def
// whose every value is channels-last (chosen here, or by eager itself, as
// with a channels_last model) is stored, and iterated, in that order.
//
// Pure C++: no CUDA, LibTorch or Python header.
#pragma once

#include <cstdint>
#include <vector>

#include "codegen/tensor_def.h"
#include "ir/op_graph.h"

namespace dv::codegen {

enum class ChannelsLast : std::uint8_t {
  Auto,    // plans on a GPU whose convolutions compute in f16 or bf16
  Always,  // any device and dtype (tests; measuring f32)
  Never,
};

// `copy_inputs`: weights that are graph inputs go channels-last too (the
// plan holds a channels-last copy of each parameter); else cuDNN converts
// them on every call, holding nothing.
ir::Graph channels_last_activations(const ir::Graph& graph, ChannelsLast mode, bool copy_inputs = true);

// Storage order {0, 2, 3, 1} for each pointwise def whose graph values are
// all dense channels-last 4-d tensors (not also row-major: 1x1 or C == 1).
void store_in_value_layout(const ir::Graph& graph, LoweredGraph& lowered);

// ATen's channels-last strides of 4-d `sizes` (N, C, H, W): C innermost.
std::vector<std::int64_t> channels_last_strides(const std::vector<std::int64_t>& sizes);

}  // namespace dv::codegen
