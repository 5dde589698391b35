#include "runtime/cuda_graph.h"

#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_strided.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdlib>
#include <array>
#include <map>
#include <shared_mutex>
#include <tuple>
#include <vector>

#include "runtime/cuda_driver.h"
#include "runtime/log.h"

namespace dv::runtime {

namespace {

// A copy the caller owns, with the same layout where the layout allows one.
at::Tensor own_copy(const at::Tensor& t) {
  if (!t.is_non_overlapping_and_dense()) return t.clone(at::MemoryFormat::Contiguous);
  return at::empty_strided(t.sizes(), t.strides(), t.options()).copy_(t, /*non_blocking=*/true);
}

// DEEPVISOR_GRAPH_OUTPUTS=copy: graphs hand out copies of their outputs, never lend them.
bool outputs_always_copied() {
  const char* v = std::getenv("DEEPVISOR_GRAPH_OUTPUTS");
  return v != nullptr && std::string(v) == "copy";
}

// A capture that fails leaves the device's default random generator in
// capture mode: CUDAGraph::capture_end throws before the epilogue that ends
// it, and every later random op outside a capture (the user's torch.randn)
// throws "Offset increment outside graph capture encountered unexpectedly".
// A capture that succeeds runs the epilogue; one of a single fill does, on
// `stream`, the failed capture's stream (no longer capturing).
void end_generator_capture(c10::cuda::CUDAStream stream) {
  c10::cuda::CUDAStreamGuard on(stream);
  at::Tensor scratch = at::empty({1}, at::TensorOptions().dtype(at::kFloat).device(stream.device()));
  at::cuda::CUDAGraph graph;
  graph.capture_begin({0, 0}, cudaStreamCaptureModeThreadLocal);
  scratch.zero_();
  graph.capture_end();
}

// A DataPtr to memory someone else owns: dropping it frees nothing.
at::DataPtr borrowed(const at::DataPtr& owner) {
  return at::DataPtr(owner.get(), owner.get(), [](void*) {}, owner.device());
}

// The cuBLAS and cuBLASLt workspaces a graph's matmuls use: those of the
// stream the plan is called on, the same memory as the caller's eager
// matmuls on that stream (a workspace is 32 MiB on Hopper: a second one for
// the capture stream would put every compiled model that much above eager).
// Sharing is safe because work on one stream runs in order and a replay on
// another stream is ordered against the workspace's stream (see replay()).
//
// The memory is deepvisor's for the life of the process: a graph keeps its
// workspace's address, while torch keeps the workspace in a map that anyone
// may clear (torch.compile's reduce-overhead mode does, around each of its
// recordings); cleared, the memory would go back to the allocator and a
// user's tensor could get it, which the next replay would overwrite. So
// torch's map holds borrowed pointers, deepvisor the memory; an entry someone
// cleared is put back before the next capture (outside it, so no workspace
// is ever made inside a capture, in a graph's pool), and a workspace torch
// made since is taken over, the earlier one kept for the graphs that use it.
// Called with the caller's stream `user` current, before capturing on `capture`.
void share_blas_workspaces(cudaStream_t user, cudaStream_t capture) {
  using Key = std::tuple<void*, void*>;  // (handle, stream), torch's key
  // Never destroyed (as torch's maps): at exit the allocator may be gone first.
  static auto& owned = *new std::array<std::map<Key, at::DataPtr>, 2>;
  static auto& replaced = *new std::vector<at::DataPtr>;  // taken over, then replaced: still in some graph
  at::cuda::WorkspaceMapWithMutex* maps[2] = {&at::cuda::cublas_handle_stream_to_workspace(),
                                              &at::cuda::cublaslt_handle_stream_to_workspace()};
  const Key keys[2] = {Key(at::cuda::getCurrentCUDABlasHandle(), user),  // (the handles are this thread's)
                       Key(at::cuda::getCurrentCUDABlasLtHandle(), user)};
  for (int m = 0; m < 2; ++m) {
    std::unique_lock<std::shared_mutex> lock(maps[m]->mutex);
    auto ours = owned[m].find(keys[m]);
    if (ours != owned[m].end() && maps[m]->map.count(keys[m]) == 0) maps[m]->map.emplace(keys[m], borrowed(ours->second));
  }
  // Makes what is still missing: the handle's cuBLAS workspace for `user`,
  // and its cuBLASLt one (none where torch gives cuBLASLt the cuBLAS one).
  at::cuda::getCurrentCUDABlasHandle();
  at::cuda::getCUDABlasLtWorkspace();
  for (int m = 0; m < 2; ++m) {
    std::unique_lock<std::shared_mutex> lock(maps[m]->mutex);
    auto entry = maps[m]->map.find(keys[m]);
    if (entry == maps[m]->map.end()) continue;
    auto ours = owned[m].find(keys[m]);
    if (ours == owned[m].end() || ours->second.get() != entry->second.get()) {
      if (ours != owned[m].end()) replaced.push_back(std::move(ours->second));
      at::DataPtr memory = std::move(entry->second);
      entry->second = borrowed(memory);
      owned[m][keys[m]] = std::move(memory);
    }
    const Key on_capture(std::get<0>(keys[m]), capture);
    auto old = maps[m]->map.find(on_capture);
    if (old != maps[m]->map.end() && old->second.get() != entry->second.get()) {
      // Torch's own (the stream is also a pool stream of torch's): never freed, work may still use it.
      replaced.push_back(std::move(old->second));
    }
    maps[m]->map.insert_or_assign(on_capture, borrowed(entry->second));
  }
}

// Every plan captures on one stream per device, one capture at a time.
c10::cuda::CUDAStream capture_stream(c10::DeviceIndex device) {
  static std::mutex mutex;
  static std::map<c10::DeviceIndex, c10::cuda::CUDAStream> streams;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = streams.find(device);
  if (it == streams.end()) it = streams.emplace(device, c10::cuda::getStreamFromPool(false, device)).first;
  return it->second;
}

std::mutex& capture_mutex() {
  static std::mutex m;
  return m;
}

}  // namespace

struct GraphPool::LastStream {
  c10::cuda::CUDAStream stream;
};

struct CudaGraphReplay::StreamRef {
  c10::cuda::CUDAStream stream;
};

GraphPool::GraphPool() = default;
GraphPool::~GraphPool() = default;

CudaGraphReplay::CudaGraphReplay(std::vector<bool> constant, std::string unsupported, std::shared_ptr<GraphPool> pool,
                                 std::vector<bool> produced, bool blas, int warmup_runs)
    : constant_(std::move(constant)), pool_(std::move(pool)), warmup_runs_(warmup_runs),
      moved_(std::move(produced)), blas_(blas) {
  moved_.resize(constant_.size(), false);
  lending_ = pool_ == nullptr && !outputs_always_copied();
  if (!unsupported.empty()) disable(std::move(unsupported));
}

CudaGraphReplay::~CudaGraphReplay() = default;

std::string CudaGraphReplay::status() const {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!disabled_.empty()) return "not graphed: " + disabled_;
  return graph_ ? "graphed" : "warming up";
}

void CudaGraphReplay::disable(std::string why) {
  disabled_ = std::move(why);
  given_up_.store(true, std::memory_order_relaxed);
  drop_graph();
  log_event("fallbacks", "a plan replays step by step, not as a CUDA graph: " + disabled_);
}

void CudaGraphReplay::drop_graph() {
  graph_.reset();
  in_place_.clear();
  copies_.clear();
  static_outputs_.clear();
  lender_.clear();
}

// Captures are bounded: inputs that keep moving make the plan step by step.
constexpr int kMaxCaptures = 8;

std::optional<std::vector<at::Tensor>> CudaGraphReplay::run(const std::vector<at::Tensor>& inputs, const Steps& steps) {
  std::unique_lock<std::mutex> lock(mutex_, std::try_to_lock);
  if (!lock.owns_lock() || !disabled_.empty()) return std::nullopt;
  if (inputs.size() != constant_.size()) {
    disable("the plan's inputs are not described");
    return std::nullopt;
  }
  std::optional<std::vector<at::Tensor>> out;
  // The first call loads kernels and makes library handles, and shows where the inputs lie.
  if (calls_++ >= warmup_runs_ && (graph_ || capture(inputs, steps))) {
    if (inputs_in_place(inputs)) out = pool_ ? replay_in_pool(inputs) : replay(inputs);
  }
  last_ptrs_.resize(inputs.size());
  for (std::size_t i = 0; i < inputs.size(); ++i) last_ptrs_[i] = inputs[i].defined() ? inputs[i].data_ptr() : nullptr;
  return out;
}

// Whether the inputs the graph reads in place are where it reads them; if
// not, the graph is dropped (captured again on the next call).
bool CudaGraphReplay::inputs_in_place(const std::vector<at::Tensor>& inputs) {
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    if (in_place_[i] == nullptr || inputs[i].data_ptr() == in_place_[i]) continue;
    if (!constant_[i]) moved_[i] = true;
    drop_graph();  // capture() stops after kMaxCaptures
    return false;
  }
  return true;
}

bool CudaGraphReplay::capture(const std::vector<at::Tensor>& inputs, const Steps& steps) {
  if (captures_++ >= kMaxCaptures) {
    disable("inputs the graph reads in place keep moving");
    return false;
  }
  std::optional<at::Device> device;
  for (const auto& t : inputs)
    if (t.defined() && t.is_cuda()) device = t.device();
  if (!device) {
    disable("no input on the GPU");
    return false;
  }
  in_place_.assign(inputs.size(), nullptr);
  copies_.assign(inputs.size(), at::Tensor());
  std::vector<at::Tensor> static_inputs(inputs.size());
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const at::Tensor& t = inputs[i];
    if (!t.defined()) continue;
    const bool stable = constant_[i] || (!moved_[i] && i < last_ptrs_.size() && t.data_ptr() == last_ptrs_[i]);
    if (!t.is_cuda() && t.dim() != 0) {
      disable("an input of the plan lives on the CPU");
      return false;
    }
    if (t.is_cuda() && stable) {
      static_inputs[i] = t;
      in_place_[i] = t.data_ptr();
    } else if (t.is_cuda() && !t.is_non_overlapping_and_dense() && t.numel() > 1) {
      disable("an argument's elements overlap or leave gaps (an expanded or sliced view)");
      return false;
    } else {
      // A CPU scalar becomes a scalar on the device: the graph cannot read host memory.
      copies_[i] = at::empty_strided(t.sizes(), t.strides(), t.options().device(*device));
      copies_[i].copy_(t);
      static_inputs[i] = copies_[i];
    }
  }
  c10::cuda::CUDAGuard guard(device->index());
  std::lock_guard<std::mutex> one_capture_at_a_time(capture_mutex());
  auto current = c10::cuda::getCurrentCUDAStream(device->index());
  auto side = capture_stream(device->index());
  if (blas_) share_blas_workspaces(current.stream(), side.stream());
  workspace_stream_ = std::make_unique<StreamRef>(StreamRef{current});
  at::cuda::CUDAEvent ready;
  ready.record(current);
  ready.block(side);
  // keep_graph: the captured graph stays readable until instantiated here,
  // so that its nodes can be counted first.
  graph_ = std::make_unique<at::cuda::CUDAGraph>(/*keep_graph=*/true);
  std::string failure;
  bool again = false;  // CaptureAgain
  std::int64_t launches = 0;
  {
    c10::cuda::CUDAStreamGuard on_side(side);
    // Thread-local: CUDA work of other threads (an eager model, another plan) does not break the capture.
    at::cuda::MempoolId_t pool_id{0, 0};  // {0, 0}: a private pool
    if (pool_) {
      std::lock_guard<std::mutex> pool_lock(pool_->mutex_);
      if (!pool_->id_) pool_->id_ = at::cuda::graph_pool_handle();
      pool_id = *pool_->id_;
    }
    graph_->capture_begin(pool_id, cudaStreamCaptureModeThreadLocal);
    try {
      static_outputs_ = steps(static_inputs, launches);
      graph_->capture_end();
    } catch (const std::exception& e) {
      failure = e.what();
      again = dynamic_cast<const CaptureAgain*>(&e) != nullptr;
      try {
        graph_->capture_end();
      } catch (const std::exception&) {
        CudaDriver::instance().abort_capture(side.stream());
        try {
          end_generator_capture(side);
        } catch (const std::exception& e) {
          log_event("fallbacks", std::string("the random generator stays in capture mode: ") + e.what());
        }
      }
    }
  }
  at::cuda::CUDAEvent done;
  done.record(side);
  done.block(current);
  if (again) {
    log_event("fallbacks", "CUDA graph: capture abandoned, the next call captures again: " + failure);
    drop_graph();
    return false;
  }
  if (!failure.empty()) {
    disable("capturing it failed (a host synchronization or CPU work inside?): " +
            failure.substr(0, failure.find('\n')));
    return false;
  }
  // Every kernel the steps launched on the capture stream is one node (ATen's
  // work adds more). Fewer nodes: work went elsewhere, and replays would
  // leave outputs as the capture found them. None: nothing to replay.
  try {
    const std::size_t nodes = CudaDriver::instance().graph_nodes(graph_->raw_cuda_graph());
    if (nodes == 0 || static_cast<std::int64_t>(nodes) < launches) {
      disable("its capture recorded " + std::to_string(nodes) + " graph nodes for the " + std::to_string(launches) +
              " kernels it launched");
      return false;
    }
    graph_->instantiate();
  } catch (const std::exception& e) {
    const std::string what = e.what();
    disable("instantiating its graph failed: " + what.substr(0, what.find('\n')));
    return false;
  }
  output_input_.assign(static_outputs_.size(), -1);
  output_same_.assign(static_outputs_.size(), -1);
  for (std::size_t j = 0; j < static_outputs_.size(); ++j) {
    const c10::TensorImpl* impl = static_outputs_[j].unsafeGetTensorImpl();
    for (std::size_t i = 0; i < static_inputs.size() && output_input_[j] < 0; ++i)
      if (static_inputs[i].defined() && static_inputs[i].unsafeGetTensorImpl() == impl) output_input_[j] = static_cast<int>(i);
    for (std::size_t k = 0; k < j && output_same_[j] < 0; ++k)
      if (static_outputs_[k].unsafeGetTensorImpl() == impl) output_same_[j] = static_cast<int>(k);
    if (output_input_[j] >= 0) static_outputs_[j] = at::Tensor();  // hold no input alive
  }
  lender_.choose(static_outputs_, static_inputs, output_same_, lending_);
  return true;
}

// A replay of a graph whose pool other graphs share: none of them replays
// meanwhile (a busy pool: the caller runs the steps instead), and the GPU
// runs this one after the last one's copies out.
std::optional<std::vector<at::Tensor>> CudaGraphReplay::replay_in_pool(const std::vector<at::Tensor>& inputs) {
  std::unique_lock<std::mutex> lock(pool_->mutex_, std::try_to_lock);
  if (!lock.owns_lock()) return std::nullopt;
  const c10::cuda::CUDAStream stream = c10::cuda::getCurrentCUDAStream();
  if (pool_->last_ && pool_->last_->stream != stream) {
    // Everything enqueued on the last replay's stream so far: that replay and its copies out.
    at::cuda::CUDAEvent after_last;
    after_last.record(pool_->last_->stream);
    after_last.block(stream);
  }
  auto out = replay(inputs);
  if (!pool_->last_ || pool_->last_->stream != stream) pool_->last_ = std::make_unique<GraphPool::LastStream>(GraphPool::LastStream{stream});
  return out;
}

std::optional<std::vector<at::Tensor>> CudaGraphReplay::replay(const std::vector<at::Tensor>& inputs) {
  const Reclaim reclaimed = lender_.reclaim(static_outputs_);
  if (reclaimed == Reclaim::kHeldByOtherThread) {
    // Another thread holds this replay's last outputs (and may be reading
    // them): this call runs the steps into memory of its own.
    if (!told_held_elsewhere_)
      log_event("fallbacks", "a CUDA graph's call runs step by step while another thread holds its last outputs");
    told_held_elsewhere_ = true;
    return std::nullopt;
  }
  if (reclaimed == Reclaim::kHeld) {
    log_event("fallbacks",
              "a CUDA graph hands out copies of its outputs from now on: the caller keeps another tensor (a "
              "view?) over an output it lent");
    lending_ = false;
    drop_graph();  // the buffers are the caller's now; the next call captures again
    return std::nullopt;
  }
  for (std::size_t i = 0; i < inputs.size(); ++i)
    if (copies_[i].defined() && inputs[i].data_ptr() != copies_[i].data_ptr()) copies_[i].copy_(inputs[i], /*non_blocking=*/true);
  // The graph's matmuls use the workspace of the stream it was captured
  // from: on another stream, the replay runs after the work enqueued there so
  // far, and what is enqueued there later runs after the replay.
  const c10::cuda::CUDAStream stream = c10::cuda::getCurrentCUDAStream();
  const bool elsewhere = workspace_stream_->stream != stream;
  if (elsewhere) {
    at::cuda::CUDAEvent before;
    before.record(workspace_stream_->stream);
    before.block(stream);
  }
  graph_->replay();
  if (elsewhere) {
    at::cuda::CUDAEvent after;
    after.record(stream);
    after.block(workspace_stream_->stream);
  }
  std::vector<at::Tensor> out(static_outputs_.size());
  for (std::size_t j = 0; j < out.size(); ++j) {
    if (output_input_[j] >= 0) out[j] = inputs[output_input_[j]];
    else if (output_same_[j] >= 0) out[j] = out[output_same_[j]];
    else if (lender_.lends(j)) out[j] = lender_.lend(static_outputs_, j);
    else if (static_outputs_[j].defined()) out[j] = own_copy(static_outputs_[j]);
  }
  return out;
}

}  // namespace dv::runtime
