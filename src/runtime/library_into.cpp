#include "runtime/library_into.h"

#include <ATen/Context.h>
#include <ATen/native/ConvUtils.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/cudnn_convolution.h>
#include <ATen/ops/mm.h>
#include <c10/core/MemoryFormat.h>
#include <c10/util/strides.h>

#include <string>
#include <vector>

namespace dv::runtime {

namespace {

// `out` holds exactly the result the op would allocate: these sizes, this
// dtype, contiguous. A wrong size must never reach an out= call: resizing
// `out` would resize the whole block it lives in.
bool holds_contiguous(const at::Tensor& out, at::IntArrayRef sizes, at::ScalarType dtype) {
  return out.sizes() == sizes && out.scalar_type() == dtype && out.is_contiguous();
}

bool matmul_into(codegen::LibraryInto call, const torch::jit::Stack& args, at::Tensor& out) {
  if (call == codegen::LibraryInto::Addmm) {
    const at::Tensor &bias = args[0].toTensor(), &a = args[1].toTensor(), &b = args[2].toTensor();
    if (a.dim() != 2 || b.dim() != 2 || !holds_contiguous(out, {a.size(0), b.size(1)}, a.scalar_type())) return false;
    at::addmm_out(out, bias, a, b, args[3].toScalar(), args[4].toScalar());
    return true;
  }
  const at::Tensor &a = args[0].toTensor(), &b = args[1].toTensor();
  if (call == codegen::LibraryInto::Mm) {
    if (a.dim() != 2 || b.dim() != 2 || !holds_contiguous(out, {a.size(0), b.size(1)}, a.scalar_type())) return false;
    at::mm_out(out, a, b);
    return true;
  }
  if (a.dim() != 3 || b.dim() != 3 || !holds_contiguous(out, {a.size(0), a.size(1), b.size(2)}, a.scalar_type()))
    return false;
  at::bmm_out(out, a, b);
  return true;
}

// aten::convolution(input, weight, bias, stride, padding, dilation,
// transposed, output_padding, groups) as `_convolution` runs it when it
// picks cuDNN: the input made contiguous in the layout cuDNN suggests, and
// the result allocated in that layout.
bool convolution_into(const torch::jit::Stack& args, at::Tensor& out) {
  const at::Tensor &input = args[0].toTensor(), &weight = args[1].toTensor();
  if (!args[2].isNone() || args[6].toBool() || input.dim() != 4 || weight.dim() != 4) return false;
  const std::vector<std::int64_t> stride = args[3].toIntVector(), padding = args[4].toIntVector(),
                                  dilation = args[5].toIntVector(), output_padding = args[7].toIntVector();
  const std::int64_t groups = args[8].toInt();
  if (stride.size() != 2 || padding.size() != 2 || dilation.size() != 2) return false;
  const at::native::ConvBackend backend = at::native::select_conv_backend(
      input, weight, std::nullopt, c10::fromIntArrayRefSlow(stride), c10::fromIntArrayRefSlow(padding),
      c10::fromIntArrayRefSlow(dilation), /*transposed=*/false, c10::fromIntArrayRefSlow(output_padding), groups,
      std::nullopt);
  if (backend != at::native::ConvBackend::Cudnn) return false;
  const at::MemoryFormat format = at::native::_determine_backend_memory_format(input, weight, backend);
  const at::Tensor laid = input.contiguous(format);
  const std::vector<std::int64_t> sizes =
      at::native::conv_output_size(laid.sizes(), weight.sizes(), padding, stride, dilation);
  // The strides `cudnn_convolution` gives its result: cuDNN reads the
  // layout it computes in from them (suggest_memory_format).
  const bool channels_last =
      at::native::cudnn_conv_suggest_memory_format(laid, weight) == at::MemoryFormat::ChannelsLast;
  const std::vector<std::int64_t> last = c10::get_channels_last_strides_2d(sizes);
  const c10::DimVector contiguous = c10::contiguous_strides(sizes);
  const at::IntArrayRef strides = channels_last ? at::IntArrayRef(last) : at::IntArrayRef(contiguous);
  if (out.sizes() != at::IntArrayRef(sizes) || out.strides() != strides ||
      out.scalar_type() != input.scalar_type())
    return false;
  auto& ctx = at::globalContext();
  const bool deterministic = ctx.deterministicCuDNN() || ctx.deterministicAlgorithms();
  at::cudnn_convolution_out(out, laid, weight, padding, stride, dilation, groups, ctx.benchmarkCuDNN(), deterministic,
                            ctx.allowTF32CuDNN(at::Float32Op::CONV));
  return true;
}

}  // namespace

bool call_into(codegen::LibraryInto call, const torch::jit::Stack& args, at::Tensor& out) {
  switch (call) {
    case codegen::LibraryInto::None: return false;
    case codegen::LibraryInto::Convolution: return convolution_into(args, out);
    default: return matmul_into(call, args, out);
  }
}

}  // namespace dv::runtime
