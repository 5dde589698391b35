// Runs a compiled Program on real tensors.
//
// Kernels run as CUDA C compiled by NVRTC (CUDA tensors), or on CPU tensors
// through the loop-IR interpreter or as generated C++ (host_kernels.h, where
// the emitter supports the kernel; the interpreter runs the others); fallback steps call the ATen op through the
// dispatcher. Intermediates come from PyTorch's allocator and are released
// after their last use.
#pragma once

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cstdint>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <stdexcept>
#include <vector>

#include "codegen/arena_plan.h"
#include "codegen/cuda_emitter.h"
#include "codegen/program.h"
#include "runtime/constant_steps.h"
#include "runtime/host_kernels.h"
#include "runtime/pool_room.h"
#include "runtime/stream_order.h"

namespace dv::runtime {

// Thrown when a library call (a fallback: nonzero, unique, boolean-mask
// indexing) returns an output whose size depends on the data and differs
// from the capture's: the plan was compiled for the capture's sizes, so this
// call runs eagerly (a limit of the plan, not a malformed one).
struct DataDependentSize : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct ExecutorStats {
  std::int64_t kernels = 0;          // kernels in the program
  std::int64_t nvrtc_compiles = 0;   // kernels this executor compiled with NVRTC
  std::int64_t disk_cache_hits = 0;  // kernels it loaded from the disk cache
  std::int64_t kernels_autotuned = 0;    // kernels whose configurations it timed on the GPU (runtime/autotune)
  double autotune_seconds = 0;           // spent timing them (their compiles count as nvrtc_compiles)
  std::int64_t autotune_cache_hits = 0;  // kernels whose configuration it found chosen already (memory or disk)
  std::int64_t autotune_compiles = 0;    // of nvrtc_compiles, those of candidates compiled to be timed
  double kernels_ready_seconds = 0;      // wall time making its kernels ready: compiles, loads, autotuning
  std::map<std::string, std::int64_t> fallback_ops;  // op -> fallback steps in the program
  std::string cuda_graph;  // "" (CPU, or not asked for), "graphed", "warming up", "not graphed: <why>"
  // CPU plans with CpuKernels::Compiled, once prepared (after the first run):
  std::int64_t cpu_compiled_kernels = 0;     // kernels that run as generated C++
  std::int64_t cpu_interpreted_kernels = 0;  // kernels the interpreter runs instead
  std::vector<std::string> cpu_interpreted_reasons;  // "<kernel>: <why>", one per such kernel
  std::int64_t host_compiles = 0;            // host compiler runs this executor caused
  std::int64_t host_cache_hits = 0;          // libraries it loaded from the disk cache
  // Constant inputs it converted to the layout its steps read (conv weights
  // channels-last), once each while the same tensor comes at the same version.
  std::int64_t inputs_prepared = 0;
  // Kernels that read only constants (constant_steps.h), run outside the
  // calls, and how many times they ran.
  std::int64_t constant_kernels = 0;
  std::int64_t constant_kernel_runs = 0;
  // Kernels that read only constants but run on every call, their results
  // not kept, to hold the plan's peak memory at eager's (kept_constants.h).
  std::int64_t constant_kernels_not_kept = 0;
  // Library calls (convolution, matmul) that wrote their result into the
  // call's block of intermediates (library_into.h), and those planned there
  // that allocated it instead (another convolution backend, another layout):
  // their bytes in the block went unused.
  std::int64_t library_results_in_block = 0;
  std::int64_t library_results_beside_block = 0;
  // The segment made in the CUDA graph's pool before its last capture, for
  // the block and what the steps allocate beside it: the library's
  // workspaces, results not in the block, the outputs (runtime/pool_room.h);
  // 0: none.
  std::int64_t graph_pool_room_bytes = 0;
  // The window in the block of intermediates at the last capture
  // (runtime/block_window.h): the bytes given to the steps that allocate and
  // free memory of their own; 0: none.
  std::int64_t graph_block_window_bytes = 0;
  // The block of intermediates a call allocates (codegen/arena_plan.h; 0
  // before the first run or without one), and, on a GPU, the most bytes the
  // steps allocated beside it at once on the runs before the graph's capture
  // (library workspaces, results outside the block, outputs), which the
  // pool's room holds unless a window in the block takes them.
  std::int64_t block_bytes = 0;
  std::int64_t graph_beside_block_bytes = 0;
  // The bytes the last capture took from memory made outside the graph's
  // pool before it (Executor::prepare_outside_pool): the block, where
  // nothing was measured beside it, and the small outputs; 0: none.
  std::int64_t graph_outside_pool_bytes = 0;
};

// How the kernels of a plan on CPU tensors run.
enum class CpuKernels { Interpreter, Compiled };

// A call's block for the intermediates and the plan of its offsets.
struct CallBlock {
  const at::Tensor* tensor = nullptr;  // null: each result its own allocation
  const codegen::ArenaPlan* plan = nullptr;
  // In a capture: outputs made before it outside the graph's pool, by slot;
  // a step that writes one takes it (null: none).
  std::map<int, at::Tensor>* outside_outputs = nullptr;
  std::vector<at::Tensor>* taken = nullptr;  // where take_outside_output notes what it hands over
  std::int64_t offset(int slot) const { return tensor != nullptr ? plan->offset[slot] : -1; }
  // Slot `slot`'s output made outside the pool, handed over (undefined: none).
  at::Tensor take_outside_output(int slot) const;
};

class CudaGraphReplay;
class GraphPool;

class Executor {
 public:
  explicit Executor(codegen::Program program, CpuKernels cpu_kernels = CpuKernels::Interpreter);
  ~Executor();

  // inputs: the graph inputs, in order. Returns the graph outputs.
  std::vector<at::Tensor> run(const std::vector<at::Tensor>& inputs);

  // Says which graph inputs are constants of the plan (parameters, buffers:
  // the same tensor at the same address on every call) and so lets a plan on
  // the GPU replay as one CUDA graph (cuda_graph.h), unless
  // DEEPVISOR_CUDA_GRAPHS=0. `pool`: a memory pool shared with other plans'
  // graphs (cuda_graph.h; a dynamic-shape plan's instances), else its own.
  // `produced_inputs[i]`: input i is made anew on every call (an earlier
  // segment's result), so the graph never reads it in place (empty: none).
  // Also chooses the kernels that read only constants, whose results are
  // kept between calls (constant_steps.h; not with DEEPVISOR_WEIGHT_COPIES=0).
  // `held_elsewhere`: the bytes the pools of the plan's earlier segments hold
  // (their estimated_pool_bytes), which that choice counts beside its own,
  // as it counts the graph's copies of the produced inputs.
  void enable_cuda_graph(std::vector<bool> constant_inputs, std::shared_ptr<GraphPool> pool = nullptr,
                         std::vector<bool> produced_inputs = {}, std::int64_t held_elsewhere = 0);

  // The kept results of constant steps (enable_cuda_graph) are shared with
  // the other executors given `shared` (a dynamic-shape plan's instances of
  // one segment; constant_steps.h). Call before the first run.
  void share_constants(std::shared_ptr<SharedConstants> shared) { shared_constants_ = std::move(shared); }

  // What the graph's pool is estimated to hold through the call
  // (codegen::PoolReservation; 0 without a graph of its own).
  std::int64_t estimated_pool_bytes() const { return estimated_pool_bytes_; }

  // Kernels take their sizes as launch arguments (codegen::DeviceSpec::
  // size_arguments), so that an instance of a dynamic-shape plan for a new
  // shape reuses the kernels compiled for another. Call before the first run.
  // constant_sizes: the index constants that stay literals (see
  // codegen::DeviceSpec::constant_sizes).
  void use_size_arguments(std::vector<std::int64_t> constant_sizes = {}) {
    size_arguments_ = true;
    constant_sizes_ = std::move(constant_sizes);
    std::sort(constant_sizes_.begin(), constant_sizes_.end());
  }

  // With size arguments: `reference` is the same graph lowered at other
  // values of its symbols (each doubled), so that each kernel's sizes that
  // depend on the symbols are known by origin, not guessed by value
  // (codegen::DeviceSpec::SizeOrigins). Kernels whose two lowerings differ
  // in form keep the guess.
  void use_reference(const Executor& reference) {
    reference_ = std::make_shared<const codegen::Program>(reference.program_);
  }

  // Emits every kernel as CUDA C and compiles it with NVRTC for sm_<arch>,
  // without a GPU. Throws on the first kernel NVRTC rejects. With
  // DEEPVISOR_VALIDATE_CUDA=all, every autotuning candidate of each kernel too.
  void validate_cuda(int arch);

  // The CUDA C of every kernel (for dumps), for the given architecture.
  std::vector<std::string> cuda_sources(int arch) const;
  // The host C++ of every kernel (for dumps; empty where the C++ emitter
  // does not support it), as the CPU runs it.
  std::vector<std::string> cpp_sources() const;

  const codegen::Program& program() const { return program_; }
  ExecutorStats stats() const;

 private:
  struct CudaKernels;
  struct HostKernels;
  // Adds 1 to `launches` when it launches a CUDA kernel.
  void run_kernel(const codegen::Step& step, std::vector<at::Tensor>& slots, const at::Device& device,
                  std::int64_t& launches, const CallBlock& block = {});
  // Offsets of the intermediates in one block a call allocates
  // (codegen/arena_plan.h), planned at the first call, once the kept
  // constants are chosen. DEEPVISOR_ARENA=0: none.
  const codegen::ArenaPlan& arena_plan();
  std::vector<bool> outside_arena() const;
  // A library call that can write into the block does (runtime/library_into.h).
  void run_fallback(const codegen::Step& step, std::vector<at::Tensor>& slots, const CallBlock& block = {});
  bool sized_by_data(int value) const;  // a graph value marked sized_by_data
  // A graph input the caller passed (guarded: the capture's layout), not an
  // earlier segment's result (in the layout its kernel wrote).
  bool users_input(const codegen::Slot& slot) const;
  // In a capture: the plan of the block (with a window where that makes the
  // graph's pool smaller: runtime/block_window.h), after the room in the
  // pool for it and what the steps allocate beside it is made.
  const codegen::ArenaPlan& plan_capture(const at::Device& device);
  // What the probe of a run before the capture saw beside the block: kept, and logged (decisions).
  void note_beside_block(const BesideBlockProbe& probe);
  // Before a capture in a pool of the plan's own: the block (where nothing
  // is measured beside it: `beside_all` 0) and the small outputs made
  // outside the pool; after it, what it took (see outside_block_).
  std::vector<int> outputs_made_outside_pool();
  void prepare_outside_pool(std::int64_t beside_all);
  void finish_outside_pool(const CallBlock& block, std::vector<at::Tensor>& taken,
                           const std::vector<at::Tensor>& outputs);
  void release_outside_pool_unless_graphed();
  void prepare_cuda(int device_index);
  void prepare_host();
  // `launches`: the CUDA kernels it launched are added to it.
  std::vector<at::Tensor> run_steps(const std::vector<at::Tensor>& inputs, std::int64_t& launches);
  // Outside any CUDA-graph capture, before the steps: the constant steps'
  // results computed where they are missing or their constants changed, and
  // the current stream ordered after them.
  void refresh_constants(const std::vector<at::Tensor>& inputs);
  void compute_kept_results(const std::vector<at::Tensor>& inputs);
  // Before a call reads the prepared inputs (a graph's replay reads them
  // too): the current stream ordered after their copies.
  void order_after_prepared_inputs();
  // Before the first computation of the kept results: their slots in `slots`
  // made views of one allocation.
  void pack_kept_results(std::vector<at::Tensor>& slots);
  // Graph input slots bound to `inputs` (only the constant ones with
  // `constants_only`), those read in another layout relaid (returned: the
  // slot and the caller's tensor, restored after the steps).
  std::vector<std::pair<std::size_t, at::Tensor>> bind_inputs(const std::vector<at::Tensor>& inputs,
                                                              std::vector<at::Tensor>& slots,
                                                              bool constants_only = false);
  // Loads (CUDA) or compiles (CPU) the kernels on their first run; on a GPU
  // call with the device current.
  void prepare_kernels();
  std::string why_not_graphable() const;
  // Input `graph_input` (tensor `t`) in the layout the plan reads it in.
  at::Tensor relaid_input(int graph_input, const at::Tensor& t, const ir::TensorMeta& meta);
  std::vector<codegen::CudaKernel> emit_kernels(const codegen::DeviceSpec& spec) const;
  HostSizeArguments host_size_arguments() const;
  codegen::CudaKernel emit_kernel(std::size_t i, codegen::DeviceSpec spec, const codegen::KernelTuning& tuning = {}) const;
  // On a GPU, outside a stream capture: each kernel's configuration chosen by
  // measurement (runtime/autotune), replacing emitted[i] where another won.
  void autotune(int device_index, const codegen::DeviceSpec& spec, std::vector<codegen::CudaKernel>& emitted);

  codegen::Program program_;
  at::Device device_;
  // Several threads may replay one plan at once: the kernels are loaded once,
  // under the mutex; `ready_device_` is the device they were loaded for.
  std::mutex prepare_mutex_;
  std::atomic<int> ready_device_{-1};
  std::unique_ptr<CudaKernels> cuda_;
  std::unique_ptr<CudaGraphReplay> graph_;
  CpuKernels cpu_kernels_;
  bool size_arguments_;
  std::vector<std::int64_t> constant_sizes_;
  std::shared_ptr<const codegen::Program> reference_;  // use_reference
  std::shared_ptr<SharedConstants> shared_constants_;   // share_constants
  std::atomic<bool> host_ready_{false};
  std::unique_ptr<HostKernels> host_;
  ExecutorStats stats_;
  // Constant inputs (parameters: enable_cuda_graph's constant_inputs) the
  // plan reads in another layout than the caller's, as conv weights laid out
  // channels-last: converted once, outside any CUDA-graph capture, and kept
  // while the same tensor comes at the same version (which guards tie the
  // plan to anyway), by graph input.
  struct PreparedInput {
    const void* data = nullptr;
    std::int64_t version = -1;
    std::uint64_t data_accesses = 0;  // runtime::data_accesses() when made
    at::Tensor tensor;
    WrittenOnStream written;  // the copy's stream
  };
  std::vector<bool> constant_inputs_;
  std::vector<bool> produced_inputs_;  // graph inputs an earlier segment made (enable_cuda_graph)
  mutable std::mutex prepared_mutex_;
  std::map<int, PreparedInput> prepared_;
  std::int64_t inputs_prepared_ = 0;
  std::unique_ptr<ConstantSteps> constants_;  // null until enable_cuda_graph, or none kept
  std::vector<codegen::LibraryInto> into_;  // by step: how an ATen step may write into the block
  std::once_flag arena_once_;
  codegen::ArenaPlan arena_;
  std::atomic<std::int64_t> block_bytes_{0};  // arena_.bytes, once planned (for stats)
  std::atomic<std::int64_t> constant_kernel_runs_{0};
  std::atomic<std::int64_t> library_results_in_block_{0};
  std::atomic<std::int64_t> library_results_beside_block_{0};
  // The most bytes of the requests beside the block that the room in a
  // graph's pool would hold (runtime/pool_room.h), measured on the first two
  // runs step by step (those before the capture); and the room made at the
  // last capture.
  std::atomic<int> probed_runs_{0};
  mutable std::mutex beside_mutex_;
  BesideBlock beside_;
  std::atomic<std::int64_t> pool_room_bytes_{0};
  std::int64_t estimated_pool_bytes_ = 0;
  // The plan of the block with a window, where the last capture took one
  // (plan_capture), and that window's bytes.
  codegen::ArenaPlan capture_arena_;
  std::atomic<std::int64_t> window_bytes_{0};
  // Windows only in a pool of the plan's own (another graph's free memory
  // in a shared one could take the window's place).
  std::atomic<bool> windows_allowed_{false};
  // DEEPVISOR_BLOCK_WINDOW=each or =packed (for tests): windows of each
  // step's own, placed after the packing or packed with the block, whatever
  // the pool.
  enum class ForcedWindows { none, each, packed };
  ForcedWindows forced_windows_ = ForcedWindows::none;
  // What the next capture takes from memory made outside the graph's pool
  // (prepare_outside_pool): in a pool of the plan's own, the allocator's
  // segments hold at least 2 MiB for outputs of 1 MiB or less and at least
  // 10 MiB for a block of more, while memory allocated before the capture
  // holds their bytes, and what is left of its segment stays the process's.
  // So the small outputs are made outside the pool, and so is the block
  // where nothing else is allocated beside it (the room is then not
  // needed). An output is handed over to the capture that writes it (the
  // graph then holds it alone, so that the output lender may lend it); the
  // block is kept (the graph reads and writes it on every replay).
  bool private_pool_ = false;
  std::mutex outside_mutex_;
  at::Tensor outside_block_;
  std::map<int, at::Tensor> outside_outputs_;
  std::vector<at::Tensor> outside_held_;    // taken by a capture that did not return them (the graph writes them)
  std::atomic<std::int64_t> outside_pool_bytes_{0};
};

}  // namespace dv::runtime
