// A compiled plan replayed as one CUDA graph.
//
// The executor runs a plan's steps one by one on its first call (kernels are
// loaded, library handles made; with cuDNN benchmarking and convolutions in
// the plan, on its first two). On the next call the steps are captured
// into a CUDA graph (at::cuda::CUDAGraph, with its own memory pool for the
// intermediates) and from then on a call is: copy the arguments into the
// graph's input buffers, launch the graph, hand out its outputs.
//
// Outputs are lent, not copied (a copy of a large output costs as much as
// the kernel that made it): the caller gets tensors over the graph's own
// output buffers, and the next replay, which overwrites those buffers, first
// looks at who still holds them. Nobody (the usual case: a result used and
// dropped): it replays. Only the tensors it lent: it copies each buffer once
// into new memory and points those tensors there (same tensor objects, same
// values), then replays. Anything else (a view of a lent output, another
// tensor over its memory): it cannot move those, so it leaves the buffers to
// them, drops the graph, runs that call step by step and hands out copies
// from then on (logged). Graphs that share a pool with others (a dynamic-
// shape plan's instances) always copy: another graph's replay may write
// where their outputs lie. DEEPVISOR_GRAPH_OUTPUTS=copy: always copy.
// One difference from eager stays: the next replay's stream orders the
// copy and the overwrite, so work that reads a lent output on another
// stream must be finished (synchronized) before the plan is called again,
// as with torch.compile's reduce-overhead graphs; tensor.record_stream()
// does not hold a graph's buffer the way it holds the allocator's memory.
//
// The graph reads an input where it lies when its address is stable: a
// constant of the plan (a parameter, a buffer, a tensor the program made from
// Python data), or an argument found at the same address on the two calls
// before the capture (torch.compile's graphs take parameters as arguments).
// Such an input found at another address on a later call drops the graph and
// it is captured again, the argument then copied into a buffer the graph
// owns, as every other argument is on every call.
//
// A plan the graph cannot replay (an op that synchronizes with the host or
// reads CPU memory makes the capture fail; plans that write their inputs or
// restride them are not tried) keeps running step by step, and status() says
// why. So does a plan whose capture recorded fewer nodes than the kernels it
// launched, or none at all: work that went to another stream, or was never
// launched, would be missing from every replay (which then hands out stale
// or uninitialized buffers), so such a graph is never replayed. Calls that
// find the graph busy (another thread replays it) run step by step too.
#pragma once

#include <ATen/core/Tensor.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "runtime/output_lender.h"

namespace at::cuda {
struct CUDAGraph;
}

namespace dv::runtime {

// One memory pool for the CUDA graphs of a dynamic-shape plan's instances
// (a graph per shape): their intermediates take the memory of the largest
// instance instead of the sum over the shapes seen. Sharing is safe here
// because a replay reads nothing in the pool that it did not write itself
// (arguments are copied into buffers outside the pool, outputs are copied
// out right after the graph), so the one rule is that replays of graphs of
// one pool never overlap: a replay holds the pool from its copies in to its
// copies out, and one on another stream than the last waits for the work
// enqueued on that stream so far (an event recorded only at such a switch,
// none on the replays themselves).
class GraphPool {
 public:
  GraphPool();
  ~GraphPool();

 private:
  friend class CudaGraphReplay;
  struct LastStream;  // a c10::cuda::CUDAStream
  std::mutex mutex_;
  std::optional<std::pair<unsigned long long, unsigned long long>> id_;  // the allocator's pool, from the first capture
  std::unique_ptr<LastStream> last_;  // the stream of the last replay (null before the first)
};

// Thrown by a plan's steps in a capture that cannot finish as planned but
// can on the next call (runtime/block_window.h): that call captures again.
struct CaptureAgain : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class CudaGraphReplay {
 public:
  // Runs the plan on given inputs; adds to `kernel_launches` the kernels it
  // launched (each one node of a graph that captures them).
  using Steps = std::function<std::vector<at::Tensor>(const std::vector<at::Tensor>&, std::int64_t& kernel_launches)>;

  // constant[i]: graph input i is a constant of the plan. `unsupported`: why
  // the plan cannot be graphed at all ("" if it may be). `pool`: shared with
  // other graphs (null: a private pool). produced[i] (empty: all false):
  // input i is made anew on each call (an earlier segment's result), so it is
  // always copied in: its address on two calls says nothing of the next.
  // blas: the plan may call cuBLAS, so the capture first makes the caller's
  // stream's cuBLAS workspaces (32 MiB on Hopper, which a plan of
  // convolutions alone need not hold). warmup_runs: the calls that run step
  // by step before the capture (the first loads kernels and makes library
  // handles; a second where the first one benchmarks cuDNN's algorithms, so
  // that the run just before the capture allocates what the capture will:
  // runtime/pool_room.h).
  CudaGraphReplay(std::vector<bool> constant, std::string unsupported, std::shared_ptr<GraphPool> pool = nullptr,
                  std::vector<bool> produced = {}, bool blas = true, int warmup_runs = 1);
  ~CudaGraphReplay();

  // This call's outputs through the graph; nullopt when the caller must run
  // the steps itself (first call, not graphable, busy). `steps` runs the plan
  // on given inputs (used once, to capture).
  std::optional<std::vector<at::Tensor>> run(const std::vector<at::Tensor>& inputs, const Steps& steps);

  // "graphed", "warming up", or "not graphed: <why>".
  std::string status() const;
  // Whether it gave up graphing for good (status() "not graphed"); never
  // waits for a replay in another thread.
  bool given_up() const { return given_up_.load(std::memory_order_relaxed); }

 private:
  bool capture(const std::vector<at::Tensor>& inputs, const Steps& steps);
  bool inputs_in_place(const std::vector<at::Tensor>& inputs);
  std::optional<std::vector<at::Tensor>> replay(const std::vector<at::Tensor>& inputs);
  std::optional<std::vector<at::Tensor>> replay_in_pool(const std::vector<at::Tensor>& inputs);
  void disable(std::string why);
  void drop_graph();

  std::vector<bool> constant_;
  std::shared_ptr<GraphPool> pool_;
  mutable std::mutex mutex_;
  int calls_ = 0;
  int warmup_runs_ = 1;
  int captures_ = 0;
  std::string disabled_;  // why it is not graphed ("" while it may be)
  std::atomic<bool> given_up_{false};  // disabled_ is set
  std::unique_ptr<at::cuda::CUDAGraph> graph_;
  std::vector<const void*> last_ptrs_;  // each input's address on the last call
  std::vector<bool> moved_;             // an argument read in place was once found elsewhere (or is produced)
  bool blas_ = true;                    // the plan may call cuBLAS: workspaces made before a capture
  std::vector<const void*> in_place_;   // the address the graph reads input i at (null: a copy)
  std::vector<at::Tensor> copies_;      // the buffers arguments are copied into (undefined: read in place)
  std::vector<at::Tensor> static_outputs_;  // what the graph writes
  std::vector<int> output_input_;  // output j is input i as is (-1: no)
  std::vector<int> output_same_;   // output j is the same tensor as an earlier output k (-1: no)
  bool lending_ = true;   // outputs may be lent (see above)
  bool told_held_elsewhere_ = false;  // the log line of Reclaim::kHeldByOtherThread was written
  OutputLender lender_;  // which outputs are lent, and what was
  struct StreamRef;  // a c10::cuda::CUDAStream
  std::unique_ptr<StreamRef> workspace_stream_;  // whose cuBLAS workspaces the graph uses
};

}  // namespace dv::runtime
