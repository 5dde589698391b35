#include "runtime/stream_order.h"

#include <c10/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

namespace dv::runtime {

namespace {

bool capturing(const c10::cuda::CUDAStream& stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  return cudaStreamIsCapturing(stream.stream(), &status) == cudaSuccess && status != cudaStreamCaptureStatusNone;
}

}  // namespace

void WrittenOnStream::record(const c10::Device& device) {
  if (!device.is_cuda()) return;
  const c10::cuda::CUDAStream stream = c10::cuda::getCurrentCUDAStream(device.index());
  if (capturing(stream)) return;
  done_ = std::make_shared<c10::cuda::CUDAEvent>();
  done_->record(stream);
  ordered_.assign(1, stream.id());
}

void WrittenOnStream::order_reader(const c10::Device& device) {
  if (!done_ || !device.is_cuda()) return;
  const c10::cuda::CUDAStream stream = c10::cuda::getCurrentCUDAStream(device.index());
  if (std::find(ordered_.begin(), ordered_.end(), stream.id()) != ordered_.end()) return;
  if (capturing(stream)) return;
  done_->block(stream);
  ordered_.push_back(stream.id());
}

}  // namespace dv::runtime
