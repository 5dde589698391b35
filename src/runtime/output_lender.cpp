#include "runtime/output_lender.h"

#include <ATen/ops/empty.h>

#include <algorithm>

namespace dv::runtime {

namespace {

// How many of `buffers` hold `storage` (a tensor listed twice counts once):
// the references the graph itself keeps.
std::size_t own_references(const std::vector<at::Tensor>& buffers, const c10::StorageImpl* storage) {
  std::vector<const c10::TensorImpl*> seen;
  for (const auto& t : buffers) {
    if (!t.defined() || !t.has_storage() || t.storage().unsafeGetStorageImpl() != storage) continue;
    if (std::find(seen.begin(), seen.end(), t.unsafeGetTensorImpl()) == seen.end()) seen.push_back(t.unsafeGetTensorImpl());
  }
  return seen.size();
}

bool over_storage(const at::Tensor& t, const c10::StorageImpl* storage) {
  return t.defined() && t.has_storage() && t.storage().unsafeGetStorageImpl() == storage;
}

}  // namespace

void OutputLender::choose(const std::vector<at::Tensor>& buffers, const std::vector<at::Tensor>& inputs,
                          const std::vector<int>& same_as, bool enabled) {
  lend_.assign(buffers.size(), false);
  lent_.assign(buffers.size(), std::nullopt);
  if (!enabled) return;
  for (std::size_t j = 0; j < buffers.size(); ++j) {
    const at::Tensor& t = buffers[j];
    if (!t.defined() || !t.has_storage() || (j < same_as.size() && same_as[j] >= 0)) continue;
    const c10::StorageImpl* storage = t.storage().unsafeGetStorageImpl();
    const bool an_input = std::any_of(inputs.begin(), inputs.end(), [&](const at::Tensor& in) {
      return over_storage(in, storage);
    });
    lend_[j] = !an_input && t.storage().use_count() == own_references(buffers, storage);
  }
}

void OutputLender::clear() {
  lend_.clear();
  lent_.clear();
}

at::Tensor OutputLender::lend(const std::vector<at::Tensor>& buffers, std::size_t j) {
  const at::Tensor& t = buffers.at(j);
  // at::empty follows the caller's mode: a graph captured under
  // inference_mode hands out ordinary tensors to a caller outside it.
  at::Tensor view = at::empty({0}, t.options()).set_(t.storage(), t.storage_offset(), t.sizes(), t.strides());
  lent_.at(j).emplace(Lent{WeakTensor(view.getIntrusivePtr()), std::this_thread::get_id()});
  return view;
}

Reclaim OutputLender::reclaim(const std::vector<at::Tensor>& buffers) {
  // Decide for every buffer before moving any, so that a refusal leaves all of them as they were.
  struct Move {
    const c10::Storage* storage;
    std::vector<Impl> holders;  // the live tensors lent over it, once each
  };
  std::vector<Move> moves;
  std::vector<const c10::StorageImpl*> done;
  for (std::size_t j = 0; j < lend_.size(); ++j) {
    if (!lend_[j]) continue;
    const c10::Storage& storage = buffers.at(j).storage();
    const c10::StorageImpl* impl = storage.unsafeGetStorageImpl();
    if (std::find(done.begin(), done.end(), impl) != done.end()) continue;
    done.push_back(impl);
    const std::size_t own = own_references(buffers, impl);
    if (storage.use_count() == own) continue;  // nobody else: the usual case
    Move move{&storage, {}};
    bool elsewhere = false;
    for (std::size_t k = 0; k < lend_.size(); ++k) {
      if (!lend_[k] || !lent_[k] || !over_storage(buffers[k], impl)) continue;
      Impl held = lent_[k]->tensor.lock();  // holds the tensor, not its storage: the count stays
      if (!held.defined() || std::find(move.holders.begin(), move.holders.end(), held) != move.holders.end()) continue;
      elsewhere = elsewhere || lent_[k]->thread != std::this_thread::get_id();
      move.holders.push_back(std::move(held));
    }
    if (storage.use_count() != own + move.holders.size()) return Reclaim::kHeld;
    if (std::any_of(move.holders.begin(), move.holders.end(),
                    [](const Impl& h) { return !h->allow_tensor_metadata_change(); }))
      return Reclaim::kHeld;
    if (elsewhere) return Reclaim::kHeldByOtherThread;
    moves.push_back(std::move(move));
  }
  for (const Move& m : moves) {
    // New memory with the buffer's bytes; each lent tensor keeps its offset, sizes and strides.
    const auto nbytes = static_cast<std::int64_t>(m.storage->nbytes());
    const auto bytes = at::TensorOptions().dtype(at::kByte).device(m.storage->device());
    at::Tensor fresh = at::empty({nbytes}, bytes);
    if (nbytes > 0) fresh.copy_(at::empty({0}, bytes).set_(*m.storage, 0, {nbytes}, {1}), /*non_blocking=*/true);
    for (const auto& h : m.holders) h->set_storage_keep_dtype(fresh.storage());
    ++moved_;
  }
  for (auto& l : lent_) l.reset();
  return Reclaim::kDone;
}

}  // namespace dv::runtime
