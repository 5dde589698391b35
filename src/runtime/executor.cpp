#include "runtime/executor.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_strided.h>
#include <ATen/ops/fill.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdlib>
#include <limits>
#include <optional>
#include <stdexcept>

#include "codegen/cuda_emitter.h"
#include "runtime/cuda_driver.h"
#include "runtime/interpreter.h"
#include "runtime/kernel_compiler.h"
#include "runtime/scalar_type.h"

namespace dv::runtime {

using codegen::Slot;
using codegen::Step;

struct Executor::CudaKernels {
  int device = -1;
  std::vector<codegen::CudaKernel> emitted;
  std::vector<CUfunction> functions;
  std::vector<std::optional<c10::OperatorHandle>> fallback_ops;  // per step
};

namespace {

// Counts what KernelCompiler did between construction and destruction.
class CompileCounter {
 public:
  CompileCounter() : before_(KernelCompiler::global().stats()) {}
  void add_to(ExecutorStats& s) const {
    auto after = KernelCompiler::global().stats();
    s.nvrtc_compiles += after.nvrtc_compiles - before_.nvrtc_compiles;
    s.disk_cache_hits += after.disk_cache_hits - before_.disk_cache_hits;
  }

 private:
  KernelCompiler::CompileStats before_;
};

// DEEPVISOR_ROW_LOOPED_CHUNKS=N (experiments, bench/NOTES.md): every row
// kernel takes the looped form, N chunks a thread a step, as dvdump
// --row-looped --row-chunks N writes it. Kernels are cached by their source,
// so the variants never mix.
void apply_row_experiment(codegen::DeviceSpec& spec) {
  const char* v = std::getenv("DEEPVISOR_ROW_LOOPED_CHUNKS");
  if (v == nullptr || v[0] == '\0') return;
  const int chunks = std::atoi(v);
  if (chunks < 1 || chunks > 16) throw std::invalid_argument("DEEPVISOR_ROW_LOOPED_CHUNKS must be 1 to 16");
  spec.row_force_looped = true;
  spec.row_chunks_per_thread = chunks;
}

codegen::DeviceSpec spec_for(const CudaDriver::DeviceInfo& info) {
  codegen::DeviceSpec spec;
  spec.arch = info.arch;
  spec.sm_count = info.sm_count;
  spec.max_threads_per_block = info.max_threads_per_block;
  apply_row_experiment(spec);
  return spec;
}

codegen::DeviceSpec default_spec(int arch) {
  codegen::DeviceSpec spec;
  spec.arch = arch;
  return spec;
}

c10::IValue to_ivalue(const ir::Arg& a, const std::vector<at::Tensor>& tensors, std::size_t& next_tensor) {
  using K = ir::Arg::Kind;
  switch (a.kind) {
    case K::None: return {};
    case K::Tensor: return tensors.at(next_tensor++);
    case K::Int: return a.i;
    case K::Double: return a.d;
    case K::Bool: return static_cast<bool>(a.i);
    case K::IntList: return a.ints;
    case K::String: return a.s;
    case K::ScalarType: return static_cast<std::int64_t>(to_scalar_type(a.dtype));
    case K::Device: return c10::Device(a.s);
    case K::Layout:
    case K::MemoryFormat: return a.i;
    case K::TensorList: {
      c10::List<at::Tensor> list;
      for (std::size_t i = 0; i < a.ints.size(); ++i) list.push_back(tensors.at(next_tensor++));
      return list;
    }
  }
  throw std::logic_error("to_ivalue: unknown argument kind");
}

std::pair<std::string, std::string> split_op_name(const std::string& op) {
  auto dot = op.rfind('.');
  if (dot == std::string::npos) return {op, ""};
  std::string overload = op.substr(dot + 1);
  return {op.substr(0, dot), overload == "default" ? "" : overload};
}

// A fallback's output must have the layout the kernels were compiled for.
at::Tensor with_layout(const at::Tensor& t, const Slot& slot) {
  if (t.sizes().vec() == slot.sizes && t.strides().vec() == slot.strides &&
      t.scalar_type() == to_scalar_type(slot.dtype))
    return t;
  if (t.sizes().vec() != slot.sizes)
    throw std::runtime_error("fallback output has sizes unlike those seen at capture");
  at::Tensor out = at::empty_strided(slot.sizes, slot.strides, t.options().dtype(to_scalar_type(slot.dtype)));
  out.copy_(t);
  return out;
}

bool aligned16(const at::Tensor& t) { return reinterpret_cast<std::uintptr_t>(t.data_ptr()) % 16 == 0; }

// DEEPVISOR_POISON=1: kernel outputs start as NaN (floats) or a sentinel, so
// an element a kernel forgets to write shows up in tests.
bool poison_outputs() {
  static const bool on = [] {
    const char* v = std::getenv("DEEPVISOR_POISON");
    return v != nullptr && std::string(v) != "" && std::string(v) != "0";
  }();
  return on;
}

void poison(at::Tensor& t) {
  if (at::isFloatingType(t.scalar_type())) t.fill_(std::numeric_limits<double>::quiet_NaN());
  else if (t.scalar_type() == at::kBool) t.fill_(true);
  else t.fill_(-123456789);
}

}  // namespace

namespace {
// The device the program runs on: CUDA if any value lives there, else the CPU.
at::Device program_device(const ir::Graph& graph) {
  for (const auto& v : graph.values)
    if (v.device != "cpu") return at::Device(v.device);
  return at::Device(at::kCPU);
}
}  // namespace

Executor::Executor(codegen::Program program)
    : program_(std::move(program)), device_(program_device(program_.graph)), cuda_(std::make_unique<CudaKernels>()) {
  stats_.kernels = static_cast<std::int64_t>(program_.kernels.size());
  for (const auto& op : program_.fallback_ops) stats_.fallback_ops[op]++;
  cuda_->fallback_ops.resize(program_.steps.size());
}

Executor::~Executor() = default;

ExecutorStats Executor::stats() const { return stats_; }

std::vector<std::string> Executor::cuda_sources(int arch) const {
  std::vector<std::string> out;
  for (const auto& k : program_.kernels) out.push_back(codegen::emit_cuda(k, default_spec(arch)).source);
  return out;
}

void Executor::validate_cuda(int arch) {
  CompileCounter counter;
  for (const auto& k : program_.kernels) {
    auto emitted = codegen::emit_cuda(k, default_spec(arch));
    KernelCompiler::global().get_cubin(emitted.source, emitted.name, arch);
  }
  counter.add_to(stats_);
}

void Executor::prepare_cuda(int device_index) {
  CudaDriver& driver = CudaDriver::instance();
  if (cuda_->device == device_index) {
    driver.ensure_context(device_index);  // cheap when current; the calling thread may be new
    return;
  }
  if (!driver.available()) throw std::runtime_error("CUDA driver unavailable: " + driver.unavailable_reason());
  driver.ensure_context(device_index);
  auto spec = spec_for(driver.device_info(device_index));
  CompileCounter counter;
  std::vector<codegen::CudaKernel> emitted;
  std::vector<CUfunction> functions;
  for (const auto& k : program_.kernels) {
    emitted.push_back(codegen::emit_cuda(k, spec));
    const auto& e = emitted.back();
    std::string cubin = KernelCompiler::global().get_cubin(e.source, e.name, spec.arch);
    functions.push_back(driver.load_function(cubin, e.name));
  }
  counter.add_to(stats_);
  cuda_->emitted = std::move(emitted);
  cuda_->functions = std::move(functions);
  cuda_->device = device_index;
}

std::vector<at::Tensor> Executor::run(const std::vector<at::Tensor>& inputs) {
  std::vector<at::Tensor> slots(program_.slots.size());
  for (std::size_t i = 0; i < program_.slots.size(); ++i) {
    const Slot& s = program_.slots[i];
    if (s.origin == Slot::Origin::GraphInput) slots[i] = inputs.at(s.graph_input);
  }
  const at::Device device = device_;
  std::optional<c10::cuda::CUDAGuard> guard;
  if (device.is_cuda()) {
    guard.emplace(device.index());
    prepare_cuda(device.index());
  }
  for (std::size_t i = 0; i < program_.steps.size(); ++i) {
    const Step& step = program_.steps[i];
    if (step.kind == Step::Kind::Kernel) run_kernel(step, slots, device);
    else run_fallback(step, slots);
    for (int f : step.frees) slots[f].reset();
  }
  for (auto [in, value] : program_.mutation_slots) slots[in].copy_(slots[value]);
  std::vector<at::Tensor> outputs;
  outputs.reserve(program_.output_slots.size());
  for (int s : program_.output_slots) outputs.push_back(slots[s]);
  return outputs;
}

void Executor::run_kernel(const Step& step, std::vector<at::Tensor>& slots, const at::Device& device) {
  const ir::Kernel& k = program_.kernels[step.kernel];
  std::vector<void*> pointers;
  pointers.reserve(step.buffer_slots.size());
  for (std::size_t b = 0; b < step.buffer_slots.size(); ++b) {
    int s = step.buffer_slots[b];
    at::Tensor& t = slots[s];
    const Slot& slot = program_.slots[s];
    if (!t.defined()) {
      t = at::empty(slot.sizes, at::TensorOptions().dtype(to_scalar_type(slot.dtype)).device(device));
      if (poison_outputs()) poison(t);
    } else if (k.buffers[b].aligned16 && !aligned16(t)) {
      // Only a fallback's output can be misaligned; give the kernel an aligned copy.
      t = at::empty_strided(slot.sizes, slot.strides, t.options()).copy_(t);
    }
    pointers.push_back(t.data_ptr());
  }
  if (k.xnumel == 0) return;
  if (!device.is_cuda()) {
    interpret(k, pointers);
    return;
  }
  const auto& launch = cuda_->emitted[step.kernel].launch;
  std::vector<void*> args;
  args.reserve(pointers.size());
  for (auto& p : pointers) args.push_back(&p);
  void* stream = c10::cuda::getCurrentCUDAStream(device.index()).stream();
  CudaDriver::instance().launch(cuda_->functions[step.kernel], launch.grid[0], launch.grid[1], launch.grid[2],
                                launch.block[0], launch.block[1], launch.block[2], launch.shared_bytes, stream,
                                args.data());
}

void Executor::run_fallback(const Step& step, std::vector<at::Tensor>& slots) {
  const ir::Node& node = program_.graph.nodes[step.node];
  std::size_t step_index = &step - program_.steps.data();
  auto& handle = cuda_->fallback_ops[step_index];
  if (!handle) {
    auto [name, overload] = split_op_name(node.op);
    handle = c10::Dispatcher::singleton().findSchemaOrThrow(name.c_str(), overload.c_str());
  }
  std::vector<at::Tensor> inputs;
  for (int i = 0; i < step.num_fallback_inputs; ++i) inputs.push_back(slots[step.value_slots[i]]);
  torch::jit::Stack stack;
  std::size_t next_tensor = 0;
  for (const auto& a : node.args) stack.push_back(to_ivalue(a, inputs, next_tensor));
  handle->callBoxed(&stack);
  std::vector<at::Tensor> outputs;
  for (const auto& v : stack) {
    if (v.isTensor()) outputs.push_back(v.toTensor());
    else if (v.isTensorList())
      for (const auto& t : v.toTensorList()) outputs.push_back(t);
  }
  std::size_t expected = step.value_slots.size() - step.num_fallback_inputs;
  if (outputs.size() != expected)
    throw std::runtime_error("fallback " + node.op + " returned " + std::to_string(outputs.size()) + " tensors, expected " +
                             std::to_string(expected));
  for (std::size_t j = 0; j < outputs.size(); ++j) {
    int s = step.value_slots[step.num_fallback_inputs + j];
    slots[s] = with_layout(outputs[j], program_.slots[s]);
  }
}

}  // namespace dv::runtime
