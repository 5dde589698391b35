// Steps of a plan that read nothing but the plan's constants (parameters and
// buffers: the same tensors on every call), such as a float32 weight cast to
// bf16 under autocast and laid out channels-last for cuDNN. Their results do
// not change while those constants keep their address and version, so they
// run once and the results are kept; a constant updated in place (a training
// step, load_state_dict) makes them run again before the next call reads
// them, into the same memory, so that a CUDA graph reading it stays valid.
//
// A step qualifies when it is a kernel, every buffer it reads is a constant
// graph input or a result of another such step, and every slot it writes is
// an intermediate that no other step writes and that the plan neither
// returns, writes back into an input nor restrides. Of those, the results
// kept are the ones that keep the plan's peak memory at most eager's
// (codegen/kept_constants.h), chosen on the first call, when the parameters'
// properties are known; the others run on every call like any other step.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "codegen/kept_constants.h"
#include "codegen/program.h"
#include "runtime/stream_order.h"

namespace dv::runtime {

// A write through `tensor.data` (p.data.mul_(2)) changes a parameter without
// moving its version counter: `.data` is another tensor with a counter of
// its own. Python counts every access to `.data` (deepvisor/_data_watch.py)
// and kept results are computed again after any.
void note_data_access();
std::uint64_t data_accesses();

// Kept results that the instances of one dynamic-shape plan share. Their
// constant steps read the same parameters and, where the steps' kernels and
// the results' layouts are the same (they do not depend on the symbolic
// sizes), compute the same results: the first instance to compute them
// offers them here, and the others adopt them (the same memory) while the
// parameters are as they were, instead of each holding a copy (BERT-base's
// bf16 weights under autocast: ~150 MB an instance). An instance that sees a
// parameter change computes them again into that same memory, as before.
class SharedConstants {
 public:
  using Sources = std::vector<std::pair<const void*, std::int64_t>>;  // (data, version) of each constant read
  // The results offered under `key` computed from constants as `now`, into
  // `kept`; false if there are none.
  // `written`: the stream they were computed on, for readers on others.
  bool adopt(const std::string& key, const Sources& now, std::uint64_t data_accesses, std::vector<at::Tensor>& kept,
             WrittenOnStream& written);
  void offer(const std::string& key, Sources now, std::uint64_t data_accesses, const std::vector<at::Tensor>& kept,
             const WrittenOnStream& written);

 private:
  struct Entry {
    Sources sources;
    std::uint64_t data_accesses = 0;
    std::vector<at::Tensor> kept;
    WrittenOnStream written;
  };
  std::mutex mutex_;
  std::map<std::string, Entry> entries_;
};

class ConstantSteps {
 public:
  ConstantSteps() = default;
  // within_eager_memory false: keep every result (DEEPVISOR_WEIGHT_COPIES=all).
  // `pool`: how a CUDA graph's pool holds the plan's intermediates (none
  // where the plan is not graphed). `program` must outlive this.
  ConstantSteps(const codegen::Program& program, const std::vector<bool>& constant_inputs,
                bool within_eager_memory = true, codegen::PoolReservation pool = {});

  bool empty() const { return slots_.empty(); }
  // Kept steps, and those that qualified but run on every call (choose()).
  std::size_t steps() const { return steps_; }
  std::size_t not_kept() const { return not_kept_; }
  // Once, before the first computation: which results to keep, given the
  // call's inputs (eager's memory depends on whether the parameters require
  // grad). Call with mutex() held.
  void choose(const std::vector<at::Tensor>& inputs);
  bool is_constant(std::size_t step) const { return step < constant_.size() && constant_[step]; }
  // The slots the constant steps write, kept between calls.
  const std::vector<int>& slots() const { return slots_; }

  // Whether the kept results must be computed (again): none yet, a constant
  // they read has another address or version than when they were, or some
  // tensor's `.data` was taken since (note_data_access).
  // Records the constants as they are now. Call with mutex() held.
  bool stale(const std::vector<at::Tensor>& inputs);
  // The kept results are not to be trusted (their computation failed). Call
  // with mutex() held.
  void forget() { computed_ = false; }
  // The kept results, by position in slots() (undefined before the first
  // computation). Call with mutex() held, or take a copy with kept_copy().
  std::vector<at::Tensor>& kept() { return kept_; }
  std::vector<at::Tensor> kept_copy() const;
  std::mutex& mutex() const { return mutex_; }

  // After stale() said the results must be computed: takes them from
  // another instance of the plan instead, where it computed the same steps
  // from the constants as they are now (true). Call with mutex() held.
  bool adopt_from(SharedConstants& shared);
  // After computing them: offers them to the other instances.
  void offer_to(SharedConstants& shared) const;
  // After computing them on `device`: a call on another stream waits for
  // them (order_reader, before each call reads them). Call with mutex() held.
  void written_on_current_stream(const c10::Device& device) { written_.record(device); }
  void order_reader(const c10::Device& device) { written_.order_reader(device); }

 private:
  struct Seen {
    int graph_input;
    const void* data = nullptr;
    std::int64_t version = -1;
  };
  // The kept steps' slots and sources from constant_.
  void adopt();
  // What the kept steps compute, independent of slot numbers: equal for two
  // programs whose kept results are equal given the same constants.
  std::string description() const;
  SharedConstants::Sources sources_now() const;

  const codegen::Program* program_ = nullptr;
  bool within_eager_memory_ = true;
  codegen::PoolReservation pool_;
  bool chosen_ = false;
  std::size_t not_kept_ = 0;
  std::vector<bool> constant_;  // by step: its results are kept
  std::size_t steps_ = 0;
  std::vector<int> slots_;
  std::vector<Seen> sources_;  // the graph inputs the steps read
  std::uint64_t seen_data_accesses_ = 0;
  std::vector<at::Tensor> kept_;
  WrittenOnStream written_;
  bool computed_ = false;
  std::string description_;  // (made at the first adopt_from)
  mutable std::mutex mutex_;
};

}  // namespace dv::runtime
