// Results that deepvisor writes on one CUDA stream and reads later on
// whatever stream is current then, such as a plan's kept constants (runtime/
// constant_steps.h), which every call reads and which instances of a
// dynamic-shape plan share. The user cannot order a stream after them (they
// are deepvisor's tensors, not the user's), so a reader on another stream
// waits for the writes here: once a stream after each write.
#pragma once

#include <c10/core/Device.h>
#include <c10/core/Stream.h>

#include <memory>
#include <vector>

namespace c10::cuda {
struct CUDAEvent;
}

namespace dv::runtime {

class WrittenOnStream {
 public:
  // The writes just enqueued on the current stream of `device`. Nothing on a
  // CPU device, or while that stream is being captured into a CUDA graph (a
  // graph's work is ordered by its launch).
  void record(const c10::Device& device);
  // Orders the current stream of `device` after the recorded writes, if it
  // is another stream that has not waited for them yet.
  void order_reader(const c10::Device& device);

 private:
  std::shared_ptr<c10::cuda::CUDAEvent> done_;  // shared by copies (instances adopting the results)
  std::vector<c10::StreamId> ordered_;  // the stream that wrote, and those that waited for done_
};

}  // namespace dv::runtime
