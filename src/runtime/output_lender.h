// Outputs of a replayed plan handed out as the plan's own buffers, not copies.
//
// A CUDA graph writes its outputs into buffers of its own, the same ones on
// every replay. Copying each output out costs as much as the kernel that
// made it when the output is large, so the lender hands out tensors over the
// buffers themselves (lent tensors) and, before the next replay overwrites
// the buffers, looks at who still holds each one (the reference count of its
// storage, which counts every tensor and storage object over it):
//   - nobody but the graph (a result used and dropped): the replay may go on;
//   - only tensors it lent: each buffer is copied once into new memory and
//     those tensors are pointed there (same objects, same values), then the
//     replay may go on;
//   - anything else (a view of a lent output, a detached alias, a Python
//     storage object): those cannot be moved, so the replay must not happen.
// Moving a tensor changes its storage under its holder, which is safe only
// while the holder is not using it: a tensor lent to another thread (which
// may be reading it right now, its GIL released inside an op) is never
// moved; that replay waits for another call and the caller runs the steps.
// Nothing here is specific to CUDA; tests drive it with CPU tensors.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstddef>
#include <optional>
#include <thread>
#include <vector>

namespace dv::runtime {

// What a reclaim found.
enum class Reclaim {
  kDone,               // the buffers may be overwritten (live lent tensors moved)
  kHeldByOtherThread,  // a tensor lent to another thread is alive: not now
  kHeld,               // a tensor it did not lend holds a buffer: never
};

class OutputLender {
 public:
  // After a capture: which of `buffers` (the graph's outputs; undefined where
  // an output is not the graph's) may be lent. same_as[j] >= 0: output j is
  // the same tensor as output same_as[j]. A buffer over an input's memory,
  // or held by anything but `buffers` now, is never lent. With `enabled`
  // false nothing is.
  void choose(const std::vector<at::Tensor>& buffers, const std::vector<at::Tensor>& inputs,
              const std::vector<int>& same_as, bool enabled);
  // Forgets everything (the graph is dropped: its buffers are the holders' now).
  void clear();

  bool lends(std::size_t j) const { return j < lend_.size() && lend_[j]; }
  // A tensor over buffer j, made in the caller's autograd mode; remembered
  // (with the calling thread) until the next reclaim that returns kDone.
  at::Tensor lend(const std::vector<at::Tensor>& buffers, std::size_t j);
  // Before the buffers are overwritten: moves the tensors lent earlier to
  // this thread that are still alive to new memory (see Reclaim).
  Reclaim reclaim(const std::vector<at::Tensor>& buffers);
  // Buffers copied because lent tensors were kept, over the lender's life.
  std::size_t moved() const { return moved_; }

 private:
  using Impl = c10::intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>;
  using WeakTensor = c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>;
  std::vector<bool> lend_;                      // buffer j is lent
  struct Lent {
    WeakTensor tensor;
    std::thread::id thread;  // the thread it was lent to
  };
  std::vector<std::optional<Lent>> lent_;  // what was lent over buffer j since the last reclaim
  std::size_t moved_ = 0;
};

}  // namespace dv::runtime
