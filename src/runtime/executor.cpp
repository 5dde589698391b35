#include "runtime/executor.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_strided.h>
#include <ATen/Context.h>
#include <ATen/ScalarOps.h>
#include <ATen/ops/fill.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/util/StringUtil.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <iterator>
#include <limits>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>
#include <unordered_map>

#include "codegen/cuda_emitter.h"
#include "codegen/kernel_configs.h"
#include "codegen/slot_lifetimes.h"
#include "runtime/autotune.h"
#include "runtime/block_window.h"
#include "runtime/cuda_driver.h"
#include "runtime/cuda_graph.h"
#include "runtime/host_kernels.h"
#include "runtime/interpreter.h"
#include "runtime/kernel_compiler.h"
#include "runtime/library_into.h"
#include "runtime/log.h"
#include "runtime/pool_room.h"
#include "runtime/scalar_type.h"

namespace dv::runtime {

using codegen::Slot;
using codegen::Step;

struct Executor::CudaKernels {
  int device = -1;
  std::vector<codegen::CudaKernel> emitted;
  std::vector<CUfunction> functions;
  std::vector<std::vector<std::uint8_t>> size_tables;  // per kernel: its size arguments' bytes (may be empty)
  std::vector<std::optional<c10::OperatorHandle>> fallback_ops;  // per step
};

struct Executor::HostKernels {
  std::vector<HostKernel> kernels;  // per Program::kernels
};

namespace {

// Counts what KernelCompiler and the Autotuner did between construction and add_to.
class CompileCounter {
 public:
  CompileCounter() : before_(KernelCompiler::global().stats()), tune_before_(Autotuner::global().stats()) {}
  void add_to(ExecutorStats& s) const {
    auto after = KernelCompiler::global().stats();
    s.nvrtc_compiles += after.nvrtc_compiles - before_.nvrtc_compiles;
    s.disk_cache_hits += after.disk_cache_hits - before_.disk_cache_hits;
    auto tuned = Autotuner::global().stats();
    s.kernels_autotuned += tuned.kernels_tuned - tune_before_.kernels_tuned;
    s.autotune_seconds += tuned.seconds - tune_before_.seconds;
    s.autotune_cache_hits += tuned.cache_hits - tune_before_.cache_hits;
  }

 private:
  KernelCompiler::CompileStats before_;
  Autotuner::Stats tune_before_;
};

// Wall seconds between marks, for DEEPVISOR_LOG=compile: "emitted 0.01 s, compiled 0.52 s".
class PhaseTimes {
 public:
  void mark(const char* phase) {
    const auto now = std::chrono::steady_clock::now();
    char buffer[64];
    std::snprintf(buffer, sizeof buffer, "%s%s %.3f s", text_.empty() ? "" : ", ", phase,
                  std::chrono::duration<double>(now - last_).count());
    text_ += buffer;
    last_ = now;
  }
  const std::string& text() const { return text_; }

 private:
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
  std::string text_;
};

// Adds the wall time of its scope (making a plan's kernels ready: compiles,
// loads, autotuning) to the executor's stats, however the scope ends.
class ReadyClock {
 public:
  explicit ReadyClock(ExecutorStats& s) : stats_(s), start_(std::chrono::steady_clock::now()) {}
  ~ReadyClock() {
    stats_.kernels_ready_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  ExecutorStats& stats_;
  std::chrono::steady_clock::time_point start_;
};

// DEEPVISOR_ROW_LOOPED_CHUNKS=N (experiments, bench/NOTES.md): every row
// kernel takes the looped form, N chunks a thread a step, as dvdump
// --row-looped --row-chunks N writes it (and nothing is autotuned). Kernels
// are cached by their source, so the variants never mix.
bool row_experiment(codegen::KernelTuning& tuning) {
  const char* v = std::getenv("DEEPVISOR_ROW_LOOPED_CHUNKS");
  if (v == nullptr || v[0] == '\0') return false;
  const int chunks = std::atoi(v);
  if (chunks < 1 || chunks > 16) throw std::invalid_argument("DEEPVISOR_ROW_LOOPED_CHUNKS must be 1 to 16");
  tuning.row_force_looped = true;
  tuning.row_chunks_per_thread = chunks;
  return true;
}

// DEEPVISOR_SIZE_ARGS=1: kernels read their sizes from a table passed at
// launch (codegen::DeviceSpec::size_arguments), so a new shape reuses the
// compiled kernels of an earlier one wherever the emitter made the same
// choices. Off by default until measured on a GPU (issue 11).
bool size_arguments_enabled() {
  const char* v = std::getenv("DEEPVISOR_SIZE_ARGS");
  return v != nullptr && std::string(v) == "1";
}

codegen::DeviceSpec spec_for(const CudaDriver::DeviceInfo& info, bool size_arguments,
                             const std::vector<std::int64_t>& constant_sizes) {
  codegen::DeviceSpec spec;
  spec.arch = info.arch;
  spec.sm_count = info.sm_count;
  spec.max_threads_per_block = info.max_threads_per_block;
  spec.size_arguments = size_arguments;
  spec.constant_sizes = constant_sizes;
  return spec;
}

codegen::DeviceSpec default_spec(int arch, bool size_arguments, const std::vector<std::int64_t>& constant_sizes) {
  codegen::DeviceSpec spec;
  spec.arch = arch;
  spec.size_arguments = size_arguments;
  spec.constant_sizes = constant_sizes;
  return spec;
}

// A kernel's size table as the bytes of its by-value argument.
std::vector<std::uint8_t> size_table_bytes(const codegen::CudaKernel& k) {
  std::vector<std::uint8_t> bytes;
  for (std::int64_t v : k.size_args) {
    std::uint8_t raw[8];
    std::size_t n = 8;
    if (k.size_args_64) {
      std::memcpy(raw, &v, 8);
    } else {
      const auto narrow = static_cast<std::int32_t>(v);
      std::memcpy(raw, &narrow, 4);
      n = 4;
    }
    bytes.insert(bytes.end(), raw, raw + n);
  }
  return bytes;
}

// What a schema type holds of tensors: one (Tensor, Tensor?), a list
// (Tensor[], Tensor?[]) or none.
enum class TensorPositions { None, One, List };

bool is_tensor_or_optional_tensor(const c10::TypePtr& t) {
  if (t->kind() == c10::TypeKind::TensorType) return true;
  if (auto o = t->cast<c10::OptionalType>()) return o->getElementType()->kind() == c10::TypeKind::TensorType;
  return false;
}

TensorPositions tensor_positions(const c10::TypePtr& t) {
  if (is_tensor_or_optional_tensor(t)) return TensorPositions::One;
  if (auto l = t->cast<c10::ListType>())
    if (is_tensor_or_optional_tensor(l->getElementType())) return TensorPositions::List;
  return TensorPositions::None;
}

bool is_written(const c10::Argument& a) { return a.alias_info() != nullptr && a.alias_info()->isWrite(); }

// A Python number where the schema takes a Tensor (x + 1 dispatches
// add.Tensor with other=1): a wrapped-number tensor, as Python's argument
// parser makes, so that type promotion treats it as a scalar.
at::Tensor wrapped_number(const c10::Scalar& s) {
  at::Tensor t = c10::scalar_to_tensor(s);
  t.unsafeGetTensorImpl()->set_wrapped_number(true);
  return t;
}

c10::IValue to_ivalue(const ir::Arg& a, const c10::Argument& schema_arg, const std::vector<at::Tensor>& tensors,
                      std::size_t& next_tensor) {
  using K = ir::Arg::Kind;
  if (a.is_number() || a.kind == K::Complex) {
    const c10::TypePtr& t = schema_arg.type();
    if (t->kind() == c10::TypeKind::TensorType || (t->cast<c10::OptionalType>() && is_tensor_or_optional_tensor(t))) {
      switch (a.kind) {
        case K::Int: return wrapped_number(a.i);
        case K::Double: return wrapped_number(a.d);
        case K::Bool: return wrapped_number(static_cast<bool>(a.i));
        default: return wrapped_number(c10::complex<double>(a.d, a.imag));
      }
    }
  }
  switch (a.kind) {
    case K::None: return {};
    case K::Tensor: return tensors.at(next_tensor++);
    case K::Int: return a.i;
    case K::Double: return a.d;
    case K::Complex: return c10::complex<double>(a.d, a.imag);
    case K::Bool: return static_cast<bool>(a.i);
    case K::IntList: return a.ints;
    case K::DoubleList: return a.doubles;
    case K::BoolList: {
      c10::List<bool> list;
      for (auto b : a.ints) list.push_back(b != 0);
      return list;
    }
    case K::String: return a.s;
    case K::ScalarType: return static_cast<std::int64_t>(to_scalar_type(a.dtype));
    case K::Device: return c10::Device(a.s);
    case K::Layout:
    case K::MemoryFormat: return a.i;
    case K::TensorList: {
      auto list_type = schema_arg.type()->cast<c10::ListType>();
      if (list_type && list_type->getElementType()->kind() == c10::TypeKind::OptionalType) {
        c10::List<std::optional<at::Tensor>> list;
        for (auto v : a.ints) {
          if (v < 0) list.push_back(std::nullopt);
          else list.push_back(tensors.at(next_tensor++));
        }
        return list;
      }
      c10::List<at::Tensor> list;
      for (auto v : a.ints) {
        if (v < 0) throw std::runtime_error("a None in a tensor list of type " + schema_arg.type()->str());
        list.push_back(tensors.at(next_tensor++));
      }
      return list;
    }
  }
  throw std::logic_error("to_ivalue: unknown argument kind");
}

// A copy with the same sizes and strides, for an op to write into.
at::Tensor copy_for_writing(const at::Tensor& t) {
  if (!t.defined()) return t;
  return at::empty_strided(t.sizes(), t.strides(), t.options()).copy_(t);
}

c10::IValue copies_for_writing(const c10::IValue& v) {
  if (v.isTensor()) return copy_for_writing(v.toTensor());
  if (v.isTensorList()) {
    c10::List<at::Tensor> out;
    for (const auto& t : v.toTensorList()) out.push_back(copy_for_writing(t));
    return out;
  }
  if (v.isList()) {
    c10::List<std::optional<at::Tensor>> out;
    for (const auto& e : v.toListRef())
      out.push_back(e.isTensor() ? std::optional<at::Tensor>(copy_for_writing(e.toTensor())) : std::nullopt);
    return out;
  }
  return v;  // None
}

// The tensors in `v` for a position that holds `positions` of them; an
// undefined tensor or None is nullopt.
void collect_tensors(const c10::IValue& v, TensorPositions positions, std::vector<std::optional<at::Tensor>>& out) {
  auto one = [&](const c10::IValue& e) {
    if (e.isTensor() && e.toTensor().defined()) out.push_back(e.toTensor());
    else out.push_back(std::nullopt);
  };
  if (positions == TensorPositions::One) one(v);
  else if (positions == TensorPositions::List)
    for (const auto& e : v.toListRef()) one(e);
}

// A copy of `t` with the sizes and strides the capture saw. Dims that were
// broadcast there (stride 0) hold one value along them: one slice is copied
// and expanded, since no copy can write memory that several elements share.
at::Tensor in_layout(const at::Tensor& t, const ir::TensorMeta& meta) {
  std::vector<std::int64_t> sizes = meta.sizes;
  at::Tensor src = t;
  bool broadcast = false;
  for (std::size_t d = 0; d < sizes.size(); ++d) {
    if (meta.strides[d] != 0 || sizes[d] <= 1) continue;
    sizes[d] = 1;
    src = src.narrow(static_cast<std::int64_t>(d), 0, 1);
    broadcast = true;
  }
  at::Tensor out = at::empty_strided(sizes, meta.strides, t.options()).copy_(src);
  return broadcast ? out.expand(meta.sizes) : out;
}

// True when `t` lays its elements out as the capture saw: the same strides
// wherever a dimension has more than one element. Guards check this for a
// plan's arguments; a value handed from an earlier segment of the same
// program (a view the kernels wrote contiguous) may differ.
bool has_layout(const at::Tensor& t, const ir::TensorMeta& meta) {
  // Per call and per input (parameters included): raw arrays, no dim checks.
  const auto sizes = t.sizes(), strides = t.strides();
  if (sizes.size() != meta.sizes.size()) return false;
  for (std::size_t d = 0; d < sizes.size(); ++d)
    if (sizes[d] > 1 && strides[d] != meta.strides[d]) return false;
  return true;
}

// Ops whose meaning depends on the strides and storage offset of their input
// (not only its values): they must see the layout the capture saw.
bool layout_sensitive(const std::string& op) { return op.rfind("aten::as_strided", 0) == 0; }

std::pair<std::string, std::string> split_op_name(const std::string& op) {
  auto dot = op.rfind('.');
  if (dot == std::string::npos) return {op, ""};
  std::string overload = op.substr(dot + 1);
  return {op.substr(0, dot), overload == "default" ? "" : overload};
}

// A fallback's output must have the layout the kernels were compiled for.
at::Tensor with_layout(const at::Tensor& t, const Slot& slot, const std::string& op) {
  if (t.sizes().vec() == slot.sizes && t.strides().vec() == slot.strides &&
      t.scalar_type() == to_scalar_type(slot.dtype))
    return t;
  if (t.sizes().vec() != slot.sizes)
    throw DataDependentSize(c10::str("the output size of ", op, " depends on the data: ", t.sizes(),
                                     " where the capture saw ", at::IntArrayRef(slot.sizes)));
  ir::TensorMeta meta;
  meta.sizes = slot.sizes;
  meta.strides = slot.strides;
  return in_layout(t.to(to_scalar_type(slot.dtype)), meta);
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
at::Device program_device(const ir::Graph& graph) { return at::Device(ir::graph_device(graph)); }
}  // namespace

Executor::Executor(codegen::Program program, CpuKernels cpu_kernels)
    : program_(std::move(program)),
      device_(program_device(program_.graph)),
      cuda_(std::make_unique<CudaKernels>()),
      cpu_kernels_(cpu_kernels),
      size_arguments_(size_arguments_enabled()) {
  stats_.kernels = static_cast<std::int64_t>(program_.kernels.size());
  for (const auto& op : program_.fallback_ops) stats_.fallback_ops[op]++;
  cuda_->fallback_ops.resize(program_.steps.size());
  into_ = codegen::library_steps_into(program_);
  for (std::size_t i = 0; i < program_.steps.size(); ++i) {
    const Step& step = program_.steps[i];
    if (step.kind == Step::Kind::Kernel) continue;
    auto [name, overload] = split_op_name(program_.graph.nodes[step.node].op);
    cuda_->fallback_ops[i] = c10::Dispatcher::singleton().findSchemaOrThrow(name.c_str(), overload.c_str());
  }
}

Executor::~Executor() = default;


std::vector<std::string> Executor::cuda_sources(int arch) const {
  std::vector<std::string> out;
  for (const auto& k : emit_kernels(default_spec(arch, size_arguments_, constant_sizes_))) out.push_back(k.source);
  return out;
}

std::vector<codegen::CudaKernel> Executor::emit_kernels(const codegen::DeviceSpec& spec) const {
  std::vector<codegen::CudaKernel> out;
  for (std::size_t i = 0; i < program_.kernels.size(); ++i) out.push_back(emit_kernel(i, spec));
  return out;
}

// Kernel i; with a reference lowering (use_reference), its sizes' origins
// first (codegen::emit_with_origins).
codegen::CudaKernel Executor::emit_kernel(std::size_t i, codegen::DeviceSpec spec,
                                          const codegen::KernelTuning& tuning) const {
  const bool paired = reference_ != nullptr && reference_->kernels.size() == program_.kernels.size();
  return codegen::emit_with_origins(program_.kernels[i], paired ? &reference_->kernels[i] : nullptr, std::move(spec),
                                    [&](const ir::Kernel& k, const codegen::DeviceSpec& s) {
                                      return codegen::emit_cuda(k, s, tuning);
                                    });
}

namespace {

// The cubins of these kernels, from the caches or compiled (several to an
// NVRTC program, on a few threads); identical sources are compiled once.
std::vector<std::string> compile_in_parallel(const std::vector<codegen::CudaKernel>& kernels, int arch) {
  std::vector<KernelCompiler::Request> requests;
  requests.reserve(kernels.size());
  for (const codegen::CudaKernel& k : kernels) requests.push_back({&k.source, &k.name});
  return KernelCompiler::global().get_cubins(requests, arch);
}

}  // namespace

void Executor::autotune(int device_index, const codegen::DeviceSpec& spec, std::vector<codegen::CudaKernel>& emitted) {
  PhaseTimes times;
  CudaDriver& driver = CudaDriver::instance();
  const CudaDriver::DeviceInfo info = driver.device_info(device_index);
  AutotuneDevice device;
  device.name = info.name;
  device.sm_count = info.sm_count;
  device.arch = info.arch;
  device.driver_version = driver.driver_version();
  const auto nv = Nvrtc::instance().version();
  device.nvrtc_version = std::to_string(nv.first) + "." + std::to_string(nv.second);
  Autotuner& tuner = Autotuner::global();

  // DEEPVISOR_AUTOTUNE_FORCE=i (tests: every candidate checked on a GPU):
  // candidate i (the last where there are fewer), nothing timed or remembered.
  std::optional<std::size_t> force;
  if (const char* v = std::getenv("DEEPVISOR_AUTOTUNE_FORCE"); v != nullptr && v[0] != '\0')
    force = static_cast<std::size_t>(std::max(0, std::atoi(v)));

  // One decision per distinct default source (a repeated layer's kernels
  // share it; with size arguments, kernels of other sizes may too, so each
  // kernel is emitted for itself with the tuning chosen for the first).
  struct Pending {
    std::size_t kernel;  // index into emitted
    std::vector<codegen::KernelCandidate> candidates;
    std::string key;
  };
  std::unordered_map<std::string, codegen::KernelTuning> tuning_of;  // default source -> the tuning chosen
  std::vector<std::size_t> repeats;  // kernels whose default source an earlier kernel has
  std::vector<Pending> pending;
  std::vector<codegen::CudaKernel> to_compile;
  for (std::size_t i = 0; i < emitted.size(); ++i) {
    if (program_.kernels[i].xnumel == 0) continue;
    const std::string& source = emitted[i].source;
    if (tuning_of.count(source) != 0) {
      repeats.push_back(i);
      continue;
    }
    tuning_of[source] = codegen::KernelTuning{};
    auto emit = [&](const codegen::KernelTuning& t) { return emit_kernel(i, spec, t); };
    const std::string key = Autotuner::key(device, source);
    if (!force) {
      // A warm start: the remembered choice, one kernel emitted, nothing timed.
      if (auto chosen = tuner.lookup(key, emit)) {
        tuning_of[source] = chosen->tuning;
        emitted[i] = std::move(chosen->kernel);
        continue;
      }
    }
    std::vector<codegen::KernelCandidate> candidates = codegen::candidates(program_.kernels[i], emit);
    if (force) {
      codegen::KernelCandidate& c = candidates[std::min(*force, candidates.size() - 1)];
      tuning_of[source] = c.tuning;
      emitted[i] = std::move(c.kernel);
      continue;
    }
    if (candidates.size() <= 1) {
      tuner.select(key, candidates, nullptr, 0);  // remembered, so that a warm start lists no candidates
      continue;
    }
    for (const auto& c : candidates) to_compile.push_back(c.kernel);
    pending.push_back({i, std::move(candidates), key});
  }
  if (!pending.empty()) {
    // Every candidate of every kernel compiled at once, in parallel (and disk-cached).
    times.mark("candidates emitted");
    const auto before = KernelCompiler::global().stats().nvrtc_compiles;
    const std::vector<std::string> cubins = compile_in_parallel(to_compile, spec.arch);
    stats_.autotune_compiles += KernelCompiler::global().stats().nvrtc_compiles - before;
    times.mark("compiled");
    void* stream = c10::cuda::getCurrentCUDAStream(device_index).stream();
    const double budget = Autotuner::budget_ms();
    const AutotuneTurn turn;  // compiled beside other processes; timed alone where they share the lock
    std::size_t next_cubin = 0;
    for (Pending& q : pending) {
      const std::size_t first = next_cubin;
      next_cubin += q.candidates.size();
      // Made at the first timing, so that a failure to allocate it (out of
      // memory) is a timing failure: the heuristic's default is kept.
      std::optional<TimingScratch> scratch;
      std::vector<CUfunction> loaded(q.candidates.size(), nullptr);  // each module loaded once
      auto time = [&](std::size_t c) {
        const codegen::CudaKernel& k = q.candidates[c].kernel;
        if (!scratch) {
          const ir::Kernel& kernel = program_.kernels[q.kernel];
          const auto l2 = static_cast<std::size_t>(info.l2_bytes);
          scratch.emplace(kernel, Autotuner::cold_l2(TimingScratch::bytes_of(kernel), l2) ? 2 * l2 : 0);
        }
        if (loaded[c] == nullptr) loaded[c] = driver.load_function(cubins[first + c], k.name);
        return scratch->time(loaded[c], k, size_table_bytes(k), stream);
      };
      const std::size_t chosen = tuner.select(q.key, q.candidates, time, budget);
      tuning_of[emitted[q.kernel].source] = q.candidates[chosen].tuning;
      emitted[q.kernel] = std::move(q.candidates[chosen].kernel);
    }
    times.mark("loaded and timed");
    log_event("compile", "autotuning: " + std::to_string(to_compile.size()) + " candidates of " +
                             std::to_string(pending.size()) + " kernels: " + times.text());
  }
  for (std::size_t i : repeats) {
    const codegen::KernelTuning& t = tuning_of.at(emitted[i].source);
    if (!(t == codegen::KernelTuning{})) emitted[i] = emit_kernel(i, spec, t);
  }
}

void Executor::validate_cuda(int arch) {
  CompileCounter counter;
  const codegen::DeviceSpec spec = default_spec(arch, size_arguments_, constant_sizes_);
  std::vector<codegen::CudaKernel> emitted = emit_kernels(spec);
  // DEEPVISOR_VALIDATE_CUDA=all: every autotuning candidate too.
  if (const char* v = std::getenv("DEEPVISOR_VALIDATE_CUDA"); v != nullptr && std::string(v) == "all") {
    for (std::size_t i = 0; i < program_.kernels.size(); ++i) {
      auto candidates = codegen::candidates(program_.kernels[i],
                                            [&](const codegen::KernelTuning& t) { return emit_kernel(i, spec, t); });
      for (std::size_t c = 1; c < candidates.size(); ++c) emitted.push_back(std::move(candidates[c].kernel));
    }
  }
  compile_in_parallel(emitted, arch);
  counter.add_to(stats_);
}

void Executor::prepare_cuda(int device_index) {
  CudaDriver& driver = CudaDriver::instance();
  if (ready_device_.load(std::memory_order_acquire) == device_index) {
    driver.ensure_context(device_index);  // cheap when current; the calling thread may be new
    return;
  }
  std::lock_guard<std::mutex> lock(prepare_mutex_);
  if (cuda_->device == device_index) {
    driver.ensure_context(device_index);
    ready_device_.store(device_index, std::memory_order_release);
    return;
  }
  if (!driver.available()) throw std::runtime_error("CUDA driver unavailable: " + driver.unavailable_reason());
  driver.ensure_context(device_index);
  auto spec = spec_for(driver.device_info(device_index), size_arguments_, constant_sizes_);
  const ReadyClock clock(stats_);
  CompileCounter counter;
  codegen::KernelTuning experiment;
  std::vector<codegen::CudaKernel> emitted;
  PhaseTimes times;
  if (row_experiment(experiment)) {
    for (std::size_t i = 0; i < program_.kernels.size(); ++i) emitted.push_back(emit_kernel(i, spec, experiment));
  } else {
    emitted = emit_kernels(spec);
    times.mark("emitted");
    // Kernels load on a plan's first call, which runs step by step: never
    // inside a CUDA graph capture (then the heuristic's choice stands).
    if (Autotuner::enabled() && c10::cuda::currentStreamCaptureStatusMayInitCtx() == c10::cuda::CaptureStatus::None)
      autotune(device_index, spec, emitted);
    times.mark("autotuned");
  }
  std::vector<std::string> cubins = compile_in_parallel(emitted, spec.arch);
  times.mark("compiled");
  // Kernels are named by their content: a repeated layer's kernels share one
  // source, one compile and one loaded module.
  std::unordered_map<std::string, CUfunction> loaded;
  std::vector<CUfunction> functions;
  for (std::size_t i = 0; i < emitted.size(); ++i) {
    auto [it, fresh] = loaded.try_emplace(emitted[i].source, nullptr);
    if (fresh) it->second = driver.load_function(cubins[i], emitted[i].name);
    functions.push_back(it->second);
  }
  times.mark("loaded");
  log_event("compile", std::to_string(emitted.size()) + " kernels ready: " + times.text());
  counter.add_to(stats_);
  cuda_->size_tables.clear();
  for (const auto& k : emitted) cuda_->size_tables.push_back(size_table_bytes(k));
  cuda_->emitted = std::move(emitted);
  cuda_->functions = std::move(functions);
  cuda_->device = device_index;
  ready_device_.store(device_index, std::memory_order_release);
}

// How the host kernels take their sizes: as a dynamic-shape plan's instance
// shares them (use_size_arguments), or written into their sources.
HostSizeArguments Executor::host_size_arguments() const {
  HostSizeArguments sizes;
  sizes.enabled = size_arguments_;
  sizes.constant_sizes = constant_sizes_;
  sizes.reference = reference_ != nullptr ? &reference_->kernels : nullptr;
  return sizes;
}

std::vector<std::string> Executor::cpp_sources() const {
  std::vector<std::string> out;
  for (const auto& r : emit_host_kernels(program_.kernels, host_size_arguments()))
    out.push_back(r.kernel ? r.kernel->source : "");
  return out;
}

// The generated C++ of the kernels, compiled (or loaded) on the first run.
void Executor::prepare_host() {
  if (host_ready_.load(std::memory_order_acquire)) return;
  std::lock_guard<std::mutex> lock(prepare_mutex_);
  if (host_) return;
  const ReadyClock clock(stats_);
  const HostCompiler::Stats before = HostCompiler::global().stats();
  auto host = std::make_unique<HostKernels>();
  host->kernels = prepare_host_kernels(program_.kernels, host_size_arguments());
  const HostCompiler::Stats after = HostCompiler::global().stats();
  stats_.host_compiles += after.compiles - before.compiles;
  stats_.host_cache_hits += after.disk_cache_hits - before.disk_cache_hits;
  for (std::size_t i = 0; i < host->kernels.size(); ++i) {
    const HostKernel& h = host->kernels[i];
    if (h.fn != nullptr) {
      ++stats_.cpu_compiled_kernels;
    } else {
      ++stats_.cpu_interpreted_kernels;
      stats_.cpu_interpreted_reasons.push_back(program_.kernels[i].name + ": " + h.why_not);
    }
  }
  host_ = std::move(host);
  host_ready_.store(true, std::memory_order_release);
}

std::vector<at::Tensor> Executor::run(const std::vector<at::Tensor>& inputs) {
  refresh_constants(inputs);
  order_after_prepared_inputs();
  if (graph_) {
    auto out = graph_->run(inputs, [this](const std::vector<at::Tensor>& in, std::int64_t& launches) {
      return run_steps(in, launches);
    });
    if (out) return std::move(*out);
    release_outside_pool_unless_graphed();
  }
  std::int64_t launches = 0;
  return run_steps(inputs, launches);
}

at::Tensor Executor::relaid_input(int graph_input, const at::Tensor& t, const ir::TensorMeta& meta) {
  const bool constant = graph_input < static_cast<int>(constant_inputs_.size()) && constant_inputs_[graph_input];
  if (!constant) return in_layout(t, meta);
  std::lock_guard<std::mutex> lock(prepared_mutex_);
  PreparedInput& p = prepared_[graph_input];
  const std::uint64_t accesses = data_accesses();  // a write through .data moves no version (constant_steps.h)
  if (p.tensor.defined() && p.data == t.data_ptr() && p.version == static_cast<std::int64_t>(t._version()) &&
      p.data_accesses == accesses)
    return p.tensor;
  // Inside a capture the copy would be the graph's, redone on each replay
  // and held in its pool: it is made there, not kept.
  if (t.is_cuda() && c10::cuda::currentStreamCaptureStatusMayInitCtx() != c10::cuda::CaptureStatus::None)
    return in_layout(t, meta);
  p = {t.data_ptr(), static_cast<std::int64_t>(t._version()), accesses, in_layout(t, meta), {}};
  p.written.record(device_);
  ++inputs_prepared_;
  return p.tensor;
}

void Executor::order_after_prepared_inputs() {
  if (!device_.is_cuda()) return;
  std::lock_guard<std::mutex> lock(prepared_mutex_);
  for (auto& [input, prepared] : prepared_) prepared.written.order_reader(device_);
}

namespace {

// Whether an ATen step of `p` may call cuBLAS: any op but those known to run
// without it (convolutions through cuDNN, pooling, attention's fused
// kernels...). Kernels never do.
bool may_call_blas(const codegen::Program& p) {
  static const char* const kWithoutBlas[] = {
      "aten::max_pool", "aten::avg_pool", "aten::adaptive_avg_pool", "aten::adaptive_max_pool", "aten::upsample_",
      "aten::_scaled_dot_product_flash_attention", "aten::_scaled_dot_product_efficient_attention",
      "aten::embedding", "aten::index", "aten::gather", "aten::scatter", "aten::cat"};
  const bool cudnn = at::globalContext().userEnabledCuDNN();  // else convolutions may be cuBLAS GEMMs
  for (const Step& step : p.steps) {
    if (step.kind != Step::Kind::Fallback && step.kind != Step::Kind::Aten) continue;
    const std::string& op = p.graph.nodes[step.node].op;
    const auto is = [&](const char* prefix) { return op.rfind(prefix, 0) == 0; };
    if (cudnn && is("aten::convolution")) continue;
    if (std::none_of(std::begin(kWithoutBlas), std::end(kWithoutBlas), is)) return true;
  }
  return false;
}

// Whether the first run of `p` may benchmark cuDNN's algorithms
// (torch.backends.cudnn.benchmark): its trials allocate workspaces that the
// runs after it do not.
bool benchmarks_convolutions(const codegen::Program& p) {
  if (!at::globalContext().benchmarkCuDNN()) return false;
  return std::any_of(p.steps.begin(), p.steps.end(), [&](const Step& step) {
    return step.kind != Step::Kind::Kernel && step.kind != Step::Kind::View &&
           p.graph.nodes[step.node].op.rfind("aten::convolution", 0) == 0;
  });
}

// The bytes of the inputs marked in `produced`: an earlier segment's
// results, which the graph copies into buffers of its own that last between
// calls (cuda_graph.h).
std::int64_t produced_input_bytes(const codegen::Program& p, const std::vector<bool>& produced) {
  std::int64_t bytes = 0;
  for (const Slot& slot : p.slots) {
    const auto gi = static_cast<std::size_t>(slot.graph_input);
    if (slot.origin == Slot::Origin::GraphInput && gi < produced.size() && produced[gi])
      bytes += codegen::slot_bytes(slot);
  }
  return bytes;
}

}  // namespace

void Executor::enable_cuda_graph(std::vector<bool> constant_inputs, std::shared_ptr<GraphPool> pool,
                                 std::vector<bool> produced_inputs, std::int64_t held_elsewhere) {
  constant_inputs_ = constant_inputs;  // also where no graph is made: prepared inputs (relaid_input)
  produced_inputs_ = produced_inputs;  // also where no graph is made: the bases of returned views
  const char* env = std::getenv("DEEPVISOR_CUDA_GRAPHS");
  const bool graphs = device_.is_cuda() && (env == nullptr || std::string(env) != "0");
  const std::string not_graphable = graphs ? why_not_graphable() : "";
  // A graph's pool holds the intermediates in the allocator's segments (runtime/pool_room.h).
  codegen::PoolReservation reservation{0, 0, 0, held_elsewhere};  // (no pool: what is alive)
  if (graphs && not_graphable.empty()) {
    reservation = {kAllocatorSmallSize, kAllocatorMinLargeAlloc, kAllocatorSmallBuffer,
                   held_elsewhere + produced_input_bytes(program_, produced_inputs)};
    // (A pool shared with other graphs is not this plan's alone.)
    if (pool == nullptr) estimated_pool_bytes_ = reservation.own(codegen::live_peak_bytes(program_));
  }
  const char* copies = std::getenv("DEEPVISOR_WEIGHT_COPIES");
  if (copies == nullptr || std::string(copies) != "0") {
    const bool all = copies != nullptr && std::string(copies) == "all";
    auto constants = std::make_unique<ConstantSteps>(program_, constant_inputs_, /*within_eager_memory=*/!all, reservation);
    if (!constants->empty()) constants_ = std::move(constants);
  }
  if (!graphs) return;
  const char* windows = std::getenv("DEEPVISOR_BLOCK_WINDOW");
  windows_allowed_ = pool == nullptr && (windows == nullptr || std::string(windows) != "0");
  if (windows != nullptr && std::string(windows) == "each") forced_windows_ = ForcedWindows::each;
  if (windows != nullptr && std::string(windows) == "packed") forced_windows_ = ForcedWindows::packed;
  const char* outside = std::getenv("DEEPVISOR_OUTSIDE_POOL");
  private_pool_ = pool == nullptr && (outside == nullptr || std::string(outside) != "0");
  graph_ = std::make_unique<CudaGraphReplay>(std::move(constant_inputs), not_graphable, std::move(pool),
                                             std::move(produced_inputs), may_call_blas(program_),
                                             benchmarks_convolutions(program_) ? 2 : 1);
}

namespace {

// Whether running `p` does any work on the device: a kernel over a non-empty
// space, or an ATen op that is not a view.
bool launches_work(const codegen::Program& p) {
  for (const Step& step : p.steps) {
    if (step.kind == Step::Kind::Kernel ? p.kernels[step.kernel].xnumel > 0 : step.kind != Step::Kind::View)
      return true;
  }
  return false;
}

}  // namespace

// Plans a CUDA graph could not replay faithfully: the graph would not redo
// CPU work, and writes into the caller's tensors would land in its copies.
std::string Executor::why_not_graphable() const {
  const auto& g = program_.graph;
  if (!g.mutations.empty()) return "it writes its inputs in place";
  // A plan of views alone (or of none: its outputs are its inputs, or views
  // of them rebuilt outside) has nothing to replay; its capture would record
  // an empty graph.
  if (!launches_work(program_)) return "it launches no GPU work";
  if (!g.restrides.empty()) return "it changes an input's strides";
  if (!g.output_views.empty()) return "it returns views of its results";
  if (!g.sized_by_data.empty()) return "the host reads the size of a result that depends on the data";
  std::vector<bool> is_input(g.values.size(), false);
  for (int v : g.inputs) is_input[v] = true;
  // Kernels compute on the plan's device, whatever device the capture saw
  // (a CPU scalar copied for kernels to read); ATen steps compute where it was.
  std::vector<bool> by_aten(g.values.size(), false);
  for (const Step& step : program_.steps)
    if (step.kind != Step::Kind::Kernel)
      for (int v : g.nodes[step.node].outputs)
        if (v >= 0) by_aten[v] = true;  // (-1: an undefined output, flash attention's cum_seq_q...)
  const ir::ValueUses uses = ir::value_uses(g);
  for (std::size_t v = 0; v < g.values.size(); ++v) {
    const auto& m = g.values[v];
    // CPU scalars may be inputs (copied to the device); CPU results nothing
    // reads (attention's philox seed and offset) are left behind.
    const int id = static_cast<int>(v);
    if (m.device != "cpu" || (is_input[v] && m.sizes.empty())) continue;
    if (!is_input[v] && (!uses.used(id) || !by_aten[v])) continue;
    return "part of it computes on the CPU (%" + std::to_string(v) + ")";
  }
  return "";
}

ExecutorStats Executor::stats() const {
  ExecutorStats s = stats_;
  if (graph_) s.cuda_graph = graph_->status();
  {
    std::lock_guard<std::mutex> lock(prepared_mutex_);
    s.inputs_prepared = inputs_prepared_;
  }
  if (constants_) {
    std::lock_guard<std::mutex> lock(constants_->mutex());  // the first call chooses what is kept
    s.constant_kernels = static_cast<std::int64_t>(constants_->steps());
    s.constant_kernels_not_kept = static_cast<std::int64_t>(constants_->not_kept());
  }
  s.constant_kernel_runs = constant_kernel_runs_.load();
  s.library_results_in_block = library_results_in_block_.load();
  s.library_results_beside_block = library_results_beside_block_.load();
  s.graph_pool_room_bytes = pool_room_bytes_.load();
  s.graph_block_window_bytes = window_bytes_.load();
  s.block_bytes = block_bytes_.load();
  s.graph_outside_pool_bytes = outside_pool_bytes_.load();
  {
    std::lock_guard<std::mutex> lock(beside_mutex_);
    s.graph_beside_block_bytes = beside_.all;
  }
  return s;
}

// Inputs in another layout than the capture's are read by the steps in the
// capture's: the originals stay for writes back, restrides and outputs.
std::vector<std::pair<std::size_t, at::Tensor>> Executor::bind_inputs(const std::vector<at::Tensor>& inputs,
                                                                      std::vector<at::Tensor>& slots,
                                                                      bool constants_only) {
  std::vector<std::pair<std::size_t, at::Tensor>> relaid;
  for (std::size_t i = 0; i < program_.slots.size(); ++i) {
    const Slot& s = program_.slots[i];
    if (s.origin != Slot::Origin::GraphInput) continue;
    const auto gi = static_cast<std::size_t>(s.graph_input);
    if (constants_only && !(gi < constant_inputs_.size() && constant_inputs_[gi])) continue;
    slots[i] = inputs.at(s.graph_input);
    const ir::TensorMeta& meta = program_.graph.meta(program_.graph.inputs.at(s.graph_input));
    if (slots[i].defined() && !has_layout(slots[i], meta)) {
      relaid.emplace_back(i, slots[i]);
      slots[i] = relaid_input(s.graph_input, slots[i], meta);
    }
  }
  return relaid;
}

void Executor::prepare_kernels() {
  if (device_.is_cuda()) prepare_cuda(device_.index());
  else if (cpu_kernels_ == CpuKernels::Compiled && !program_.kernels.empty()) prepare_host();
}

void Executor::refresh_constants(const std::vector<at::Tensor>& inputs) {
  if (!constants_) return;
  std::lock_guard<std::mutex> lock(constants_->mutex());
  constants_->choose(inputs);
  auto adopted = [&] {  // another instance's
    return shared_constants_ != nullptr && constants_->adopt_from(*shared_constants_);
  };
  if (constants_->stale(inputs) && !adopted()) compute_kept_results(inputs);
  constants_->order_reader(device_);  // computed on another stream (another call's, or another instance's)
}

// Runs the constant steps into the kept results (the same memory as before,
// where there were any) and offers them to the other instances. Called with
// the constants' mutex held.
void Executor::compute_kept_results(const std::vector<at::Tensor>& inputs) {
  std::vector<at::Tensor> slots(program_.slots.size());
  bind_inputs(inputs, slots, /*constants_only=*/true);  // all the constant steps read
  const std::vector<int>& kept_slots = constants_->slots();
  std::vector<at::Tensor>& kept = constants_->kept();
  for (std::size_t k = 0; k < kept_slots.size(); ++k) slots[kept_slots[k]] = kept[k];  // the same memory again
  if (!kept.empty() && !kept.front().defined()) pack_kept_results(slots);
  std::optional<c10::cuda::CUDAGuard> guard;
  if (device_.is_cuda()) guard.emplace(device_.index());
  prepare_kernels();
  std::int64_t launches = 0;
  try {
    for (std::size_t i = 0; i < program_.steps.size(); ++i)
      if (constants_->is_constant(i)) run_kernel(program_.steps[i], slots, device_, launches);
  } catch (...) {
    constants_->forget();  // half computed: the next call computes them again
    throw;
  }
  for (std::size_t k = 0; k < kept_slots.size(); ++k) kept[k] = slots[kept_slots[k]];
  constant_kernel_runs_ += static_cast<std::int64_t>(constants_->steps());
  constants_->written_on_current_stream(device_);
  if (shared_constants_ != nullptr) constants_->offer_to(*shared_constants_);
}

// Slots whose storage stays out of the arena besides the outputs: the kept
// constants (made outside it, kept between calls), and the inputs of an ATen
// op that may return a view of them (the view would outlive the storage's
// planned lifetime).
std::vector<bool> Executor::outside_arena() const {
  std::vector<bool> out(program_.slots.size(), false);
  if (constants_)
    for (int s : constants_->slots()) out[s] = true;
  for (std::size_t i = 0; i < program_.steps.size(); ++i) {
    const Step& step = program_.steps[i];
    if (step.kind == Step::Kind::Kernel || step.kind == Step::Kind::View) continue;  // views: storage_timeline
    const auto& returns = cuda_->fallback_ops[i]->schema().returns();
    if (std::none_of(returns.begin(), returns.end(), [](const c10::Argument& r) { return r.alias_info() != nullptr; }))
      continue;
    for (int v = 0; v < step.num_fallback_inputs; ++v) out[step.value_slots[v]] = true;
  }
  return out;
}

const codegen::ArenaPlan& Executor::arena_plan() {
  std::call_once(arena_once_, [this] {
    const char* env = std::getenv("DEEPVISOR_ARENA");
    if (env != nullptr && std::string(env) == "0") return;
    arena_ = codegen::plan_arena(program_, outside_arena(), into_);
    block_bytes_.store(arena_.bytes);
    log_event("decisions", "arena: " + std::to_string(arena_.bytes) + " bytes for intermediates whose peak is " +
                               std::to_string(arena_.live_peak_bytes) + " (" + std::to_string(arena_.results_over_inputs()) +
                               " results written over an input that dies at them), beside " +
                               std::to_string(arena_.others_peak_bytes) + " of other storage at its peak; " +
                               std::to_string(arena_.together_peak_bytes) + " together");
  });
  return arena_;
}

namespace {

// Slot `slot`'s tensor at `offset` bytes into `block`.
at::Tensor in_block(const at::Tensor& block, std::int64_t offset, const Slot& slot) {
  at::Tensor t = at::empty({0}, block.options().dtype(to_scalar_type(slot.dtype)));
  t.set_(block.storage(), offset / static_cast<std::int64_t>(t.element_size()), slot.sizes, slot.strides);
  return t;
}

}  // namespace

// One allocation for all the kept results, each at an offset aligned as the
// caching allocator aligns its blocks: allocated one by one, a result of
// just over 1 MiB took a 2 MiB block (the allocator splits no free block
// where less than 1 MiB would remain), 21 MB of BERT-base's 180 MB of bf16
// casts under autocast.
void Executor::pack_kept_results(std::vector<at::Tensor>& slots) {
  const std::vector<int>& kept_slots = constants_->slots();
  std::vector<std::int64_t> offsets;
  std::int64_t bytes = 0;
  for (int s : kept_slots) {
    offsets.push_back(bytes);
    bytes += codegen::slot_bytes(program_.slots[s]);  // (a multiple of 512)
  }
  if (bytes == 0) return;
  const at::Tensor storage = at::empty({bytes}, at::TensorOptions().dtype(at::kByte).device(device_));
  for (std::size_t k = 0; k < kept_slots.size(); ++k)
    slots[kept_slots[k]] = in_block(storage, offsets[k], program_.slots[kept_slots[k]]);
}

std::vector<at::Tensor> Executor::run_steps(const std::vector<at::Tensor>& inputs, std::int64_t& launches) {
  std::vector<at::Tensor> slots(program_.slots.size());
  std::vector<std::pair<std::size_t, at::Tensor>> relaid = bind_inputs(inputs, slots);
  if (constants_) {
    const std::vector<at::Tensor> kept = constants_->kept_copy();
    for (std::size_t k = 0; k < kept.size(); ++k) slots[constants_->slots()[k]] = kept[k];
  }
  const at::Device device = device_;
  std::optional<c10::cuda::CUDAGuard> guard;
  if (device.is_cuda()) guard.emplace(device.index());
  prepare_kernels();
  const codegen::ArenaPlan& arena = arena_plan();
  // (Only a plan with a graph is ever captured: the others skip the query.)
  const bool capturing =
      graph_ && c10::cuda::currentStreamCaptureStatusMayInitCtx() != c10::cuda::CaptureStatus::None;
  CallBlock block;
  std::optional<WindowedBlock> windowed;
  if (capturing) {
    const codegen::ArenaPlan& planned = plan_capture(device);
    if (planned.window_bytes > 0) {
      windowed.emplace(window_block_edges(planned), device);
      if (windowed->ok()) {
        block = {&windowed->block(), &planned};
      } else {
        windowed.reset();
        window_bytes_ = 0;
        log_event("fallbacks", "graph pool: the block's window and the rest were not allocated side by side; "
                               "the block has no window in this capture");
      }
    }
  }
  at::Tensor own_block;
  std::unique_lock<std::mutex> outside;
  std::vector<at::Tensor> taken;  // the outside outputs this capture took (finish_outside_pool)
  if (capturing) {
    outside = std::unique_lock<std::mutex>(outside_mutex_);
    if (block.tensor == nullptr && outside_block_.defined()) block = {&outside_block_, &arena};
  }
  if (block.tensor == nullptr && arena.bytes > 0) {
    // In a capture, from the segment made before it (runtime/pool_room.h).
    const std::int64_t bytes = capturing ? block_request_bytes(arena.bytes, pool_room_bytes_.load()) : arena.bytes;
    own_block = at::empty({bytes}, at::TensorOptions().dtype(at::kByte).device(device));
    block = {&own_block, &arena};
  }
  if (capturing && !outside_outputs_.empty()) {
    block.outside_outputs = &outside_outputs_;
    block.taken = &taken;
  }
  // The runs of a plan that will be graphed, before its capture (one, or two
  // where the first benchmarks cuDNN: enable_cuda_graph), measure what the
  // capture will allocate beside the block (runtime/pool_room.h); the last
  // one counts.
  std::optional<BesideBlockProbe> probe;
  if (graph_ && !capturing && probed_runs_.fetch_add(1) < 2) {
    report_allocations_to_probes();
    probe.emplace();
  }
  for (std::size_t i = 0; i < program_.steps.size(); ++i) {
    const Step& step = program_.steps[i];
    const bool kept = constants_ && constants_->is_constant(i);  // its results are kept (refresh_constants)
    if (probe) probe->now_at(static_cast<int>(i));
    const bool window = windowed && !kept && block.plan->window_at[i];  // the step's own memory goes there
    const auto [window_begin, window_end] = window ? block.plan->window_of(static_cast<int>(i))
                                                      : std::pair<std::int64_t, std::int64_t>{0, 0};
    if (window) windowed->lend_window(window_begin, window_end);
    if (!kept && step.kind == Step::Kind::Kernel) run_kernel(step, slots, device, launches, block);
    else if (!kept) run_fallback(step, slots, block);
    for (int f : step.frees) slots[f].reset();  // (what the step made for itself is freed with them)
    if (window && !windowed->take_window_back(window_begin, window_end)) {
      windows_allowed_ = false;
      throw CaptureAgain("the window of the block of intermediates came back at another address after step " +
                         std::to_string(i) + "; no window from now on");
    }
  }
  if (probe) note_beside_block(*probe);
  for (auto& [slot, original] : relaid) slots[slot] = std::move(original);
  for (auto [in, value] : program_.mutation_slots) slots[in].copy_(slots[value]);
  const auto& graph = program_.graph;
  for (std::size_t i = 0; i < graph.restrides.size(); ++i) {
    const ir::Restride& r = graph.restrides[i];
    at::Tensor& t = slots[program_.restride_slots[i]];
    t.as_strided_(r.sizes, r.strides, t.storage_offset() + r.offset);
  }
  // The bases of returned views take the layout the capture saw (kernels
  // write contiguous buffers) so that the views select the same elements;
  // so does an earlier segment's result, which comes as its kernel wrote it.
  // The user's inputs stay as they are: their views alias them, as in eager.
  for (const auto& v : graph.output_views) {
    int s = program_.output_slots.at(v.output);
    at::Tensor& base = slots[s];
    const ir::TensorMeta& meta = graph.meta(graph.outputs[v.output]);
    if (!users_input(program_.slots[s]) && (base.strides().vec() != meta.strides || base.storage_offset() != 0))
      base = in_layout(base, meta);
  }
  std::vector<at::Tensor> outputs;
  outputs.reserve(program_.output_slots.size());
  for (int s : program_.output_slots) outputs.push_back(slots[s]);
  for (const auto& v : graph.output_views) {
    at::Tensor& out = outputs.at(v.output);
    out = out.as_strided(v.sizes, v.strides, out.storage_offset() + v.offset);
  }
  if (capturing) finish_outside_pool(block, taken, outputs);
  return outputs;
}

void Executor::run_kernel(const Step& step, std::vector<at::Tensor>& slots, const at::Device& device,
                          std::int64_t& launches, const CallBlock& block) {
  const ir::Kernel& k = program_.kernels[step.kernel];
  std::vector<void*> pointers;
  pointers.reserve(step.buffer_slots.size());
  for (std::size_t b = 0; b < step.buffer_slots.size(); ++b) {
    int s = step.buffer_slots[b];
    at::Tensor& t = slots[s];
    const Slot& slot = program_.slots[s];
    if (!t.defined()) {
      const std::int64_t offset = block.offset(s);
      if (offset >= 0) t = in_block(*block.tensor, offset, slot);
      else t = block.take_outside_output(s);
      if (!t.defined())
        t = at::empty_strided(slot.sizes, slot.strides, at::TensorOptions().dtype(to_scalar_type(slot.dtype)).device(device));
      const bool over_an_input = offset >= 0 && block.plan->takes_over[s] >= 0;  // still holds what the kernel reads
      if (poison_outputs() && !over_an_input) poison(t);
    } else if (device.is_cuda() && !t.is_cuda() && t.dim() == 0) {
      // A CPU scalar in a GPU program (ATen lets 0-d CPU tensors into CUDA
      // ops; torch.compile passes Python floats so): the kernel reads a copy
      // on the device.
      t = t.to(device, /*non_blocking=*/true);
    } else if (k.buffers[b].aligned16 && !aligned16(t)) {
      // Only a fallback's output can be misaligned; give the kernel an aligned copy.
      t = at::empty_strided(slot.sizes, slot.strides, t.options()).copy_(t);
    }
    if (device.is_cuda() && !t.is_cuda())
      throw std::runtime_error("kernel " + k.name + " would read a " + t.device().str() + " tensor on the GPU");
    pointers.push_back(t.data_ptr());
  }
  if (k.xnumel == 0) return;
  if (!device.is_cuda()) {
    const HostKernel* host = host_ ? &host_->kernels[step.kernel] : nullptr;
    if (host != nullptr && host->fn != nullptr) run_host_kernel(*host, k, pointers);
    else interpret(k, pointers);
    return;
  }
  const auto& emitted = cuda_->emitted[step.kernel];
  const auto& launch = emitted.launch;
  std::vector<void*> args;
  args.reserve(pointers.size() + 1);
  for (auto& p : pointers) args.push_back(&p);
  if (!emitted.size_args.empty()) args.push_back(const_cast<std::uint8_t*>(cuda_->size_tables[step.kernel].data()));
  void* stream = c10::cuda::getCurrentCUDAStream(device.index()).stream();
  CudaDriver::instance().launch(cuda_->functions[step.kernel], launch.grid[0], launch.grid[1], launch.grid[2],
                                launch.block[0], launch.block[1], launch.block[2], launch.shared_bytes, stream,
                                args.data());
  ++launches;
}

void Executor::note_beside_block(const BesideBlockProbe& probe) {
  BesideBlock measured = probe.measured(static_cast<int>(program_.steps.size()));
  const std::int64_t all = measured.all, lasting = measured.lasting;
  {
    std::lock_guard<std::mutex> lock(beside_mutex_);
    beside_ = std::move(measured);
  }
  prepare_outside_pool(all);
  if (all == 0) return;
  std::string largest;
  for (const auto& [step, bytes] : probe.largest_requests(3)) {
    if (step < 0) continue;
    const Step& s = program_.steps.at(step);
    const std::string what = s.kind == Step::Kind::Kernel ? program_.kernels[s.kernel].name : program_.graph.nodes[s.node].op;
    largest += (largest.empty() ? "" : ", ") + what + " (step " + std::to_string(step) + ") " + std::to_string(bytes);
  }
  log_event("decisions", "graph pool: at most " + std::to_string(all) +
                             " bytes of requests beside the block at once, " + std::to_string(lasting) +
                             " of them outliving their step; the largest: " + largest);
}

at::Tensor CallBlock::take_outside_output(int slot) const {
  if (outside_outputs == nullptr) return {};
  auto it = outside_outputs->find(slot);
  if (it == outside_outputs->end()) return {};
  at::Tensor t = std::move(it->second);
  outside_outputs->erase(it);
  if (taken != nullptr) taken->push_back(t);
  return t;
}

// The outputs a capture may take from memory made before it
// (prepare_outside_pool): those of 1 MiB or less (a larger one is measured
// beside the block, and the room holds it) that a kernel writes, or a
// library call that can write into given memory (library_into.h).
std::vector<int> Executor::outputs_made_outside_pool() {
  const codegen::ArenaPlan& arena = arena_plan();
  std::vector<bool> into(program_.slots.size(), false);
  for (std::size_t i = 0; i < program_.steps.size(); ++i) {
    const Step& step = program_.steps[i];
    if (step.kind != Step::Kind::Kernel && into_[i] != codegen::LibraryInto::None && !step.value_slots.empty() &&
        step.value_slots.back() >= 0)
      into[step.value_slots.back()] = true;
  }
  std::vector<int> out;
  for (int s : program_.output_slots) {
    const Slot& slot = program_.slots[s];
    const bool written = slot.origin == Slot::Origin::Kernel || (slot.origin == Slot::Origin::Fallback && into[s]);
    const bool planned_in_block = !arena.offset.empty() && arena.offset[s] >= 0;
    if (!written || planned_in_block || room_for(codegen::slot_bytes(slot)) > 0) continue;
    if (std::find(out.begin(), out.end(), s) == out.end()) out.push_back(s);
  }
  return out;
}

void Executor::prepare_outside_pool(std::int64_t beside_all) {
  if (!private_pool_) return;
  const codegen::ArenaPlan& arena = arena_plan();
  const at::TensorOptions options = at::TensorOptions().device(device_);
  const std::vector<int> outputs = outputs_made_outside_pool();
  std::lock_guard<std::mutex> lock(outside_mutex_);
  if (beside_all == 0 && arena.bytes > 0) {
    if (!outside_block_.defined() || outside_block_.numel() != arena.bytes)
      outside_block_ = at::empty({arena.bytes}, options.dtype(at::kByte));
  } else {
    outside_block_ = at::Tensor();
  }
  outside_outputs_.clear();
  for (int s : outputs) {
    const Slot& slot = program_.slots[s];
    outside_outputs_.emplace(s, at::empty_strided(slot.sizes, slot.strides, options.dtype(to_scalar_type(slot.dtype))));
  }
}

// After a capture (the caller holds outside_mutex_): what it took from
// memory made outside the pool, kept for stats and logged. The outputs it
// did not take are freed (a capture after it allocates them in the pool).
// The graph writes the ones it took on every replay, while only a graph's
// own pool keeps memory that a capture freed from being handed out again:
// one that the capture dropped (an output view's base laid out anew after
// the kernel wrote it) is held by the executor from now on; the ones
// returned are the graph's alone (the output lender counts their holders).
void Executor::finish_outside_pool(const CallBlock& block, std::vector<at::Tensor>& taken,
                                   const std::vector<at::Tensor>& outputs) {
  const bool block_outside = outside_block_.defined() && block.tensor == &outside_block_;
  std::int64_t bytes = block_outside ? outside_block_.numel() : 0;
  for (at::Tensor& t : taken) {
    bytes += static_cast<std::int64_t>(t.storage().nbytes());
    const bool returned = std::any_of(outputs.begin(), outputs.end(), [&](const at::Tensor& o) {
      return o.defined() && o.storage().unsafeGetStorageImpl() == t.storage().unsafeGetStorageImpl();
    });
    if (!returned) outside_held_.push_back(std::move(t));
  }
  outside_outputs_.clear();
  if (outside_pool_bytes_.exchange(bytes) != bytes && bytes > 0)
    log_event("decisions", "graph pool: the capture took " + std::to_string(bytes) + " bytes made outside the pool (" +
                               (block_outside ? "the block of intermediates, nothing being measured beside it, and "
                                              : std::string()) +
                               std::to_string(taken.size()) + " outputs of 1 MiB or less)");
  taken.clear();
}

// A plan that will never be replayed as a graph (its capture failed, or a
// lent output's view made the graph give its buffers up) needs no block kept
// for one.
void Executor::release_outside_pool_unless_graphed() {
  if (!graph_->given_up()) return;
  std::lock_guard<std::mutex> lock(outside_mutex_);
  outside_block_ = at::Tensor();
  outside_outputs_.clear();
}

namespace {

// For the decisions log: where the steps' own memory goes in the block.
std::string windows_described(const codegen::ArenaPlan& plan) {
  const std::string steps = std::to_string(std::count(plan.window_at.begin(), plan.window_at.end(), true)) + " steps";
  if (plan.step_windows.empty())
    return std::to_string(plan.window_bytes) + " of them at " + std::to_string(plan.window_offset) +
           " a window for the own memory of " + steps;
  return "a window for the own memory of each of " + steps + ", of at most " + std::to_string(plan.window_bytes) +
         " bytes, on a grid of " + std::to_string(plan.window_grid) +
         (plan.windows_packed ? ", packed with the block" : ", placed after the packing");
}

}  // namespace

const codegen::ArenaPlan& Executor::plan_capture(const at::Device& device) {
  const codegen::ArenaPlan& plain = arena_plan();
  BesideBlock beside;
  {
    std::lock_guard<std::mutex> lock(beside_mutex_);
    beside = beside_;
  }
  bool block_outside = false;
  {
    std::lock_guard<std::mutex> lock(outside_mutex_);
    block_outside = outside_block_.defined();
  }
  const codegen::ArenaPlan* planned = &plain;
  std::int64_t room = pool_room_bytes(block_outside ? 0 : plain.bytes, beside.all);
  std::int64_t beside_bytes = beside.all;  // what the room holds beside the block
  if (windows_allowed_ && !block_outside && plain.bytes > 0) {
    const std::vector<std::vector<std::int64_t>> choices = window_step_choices(beside.transient);
    std::vector<codegen::ArenaPlan> plans;
    if (forced_windows_ == ForcedWindows::none)
      plans = codegen::plan_arena_windows(program_, outside_arena(), into_, choices, least_window_offset());
    if (!choices.empty()) {  // (beside windows for every step with transient bytes: the lasting requests)
      const std::int64_t grid = step_window_grid(beside.lasting);
      if (forced_windows_ != ForcedWindows::packed)
        plans.push_back(codegen::plan_arena_step_windows(program_, outside_arena(), into_, beside.transient, grid));
      if (forced_windows_ != ForcedWindows::each)
        plans.push_back(codegen::plan_arena_packed_windows(program_, outside_arena(), into_, beside.transient, grid));
    }
    const std::int64_t to_beat =
        forced_windows_ == ForcedWindows::none ? pool_bytes(plain.bytes, room) : std::numeric_limits<std::int64_t>::max();
    std::string considered = "plain " + std::to_string(pool_bytes(plain.bytes, room));
    for (const codegen::ArenaPlan& plan : plans)
      considered += ", " + windows_described(plan) + ": " + std::to_string(windowed_pool_bytes(plan, beside));
    if (!plans.empty()) {
      const LeastPool least = least_pool(plain.live_at, beside);
      const std::int64_t alive = least.step >= 0 ? plain.live_at[least.step] : 0;
      log_event("decisions", "graph pool: the pools of the blocks with windows considered: " + considered +
                                 "; no layout of the plain block's storage could hold less than " +
                                 std::to_string(least.bytes) + " (step " + std::to_string(least.step) + ": " +
                                 std::to_string(alive) + " alive in the block and the requests beside it)");
    }
    std::optional<WindowChoice> windowed = choose_window(to_beat, beside, std::move(plans));
    if (windowed) {
      capture_arena_ = std::move(windowed->plan);
      planned = &capture_arena_;
      room = windowed->room;
      beside_bytes = windowed->beside;
    }
  }
  make_pool_room(room, device.index());
  const std::int64_t window = planned->window_bytes;
  window_bytes_ = window;
  if (pool_room_bytes_.exchange(room) != room)
    log_event("decisions", "graph pool: a segment of " + std::to_string(room) + " bytes made before the capture, for " +
                               std::to_string(planned->bytes) + " bytes of intermediates" +
                               (window > 0 ? " (" + windows_described(*planned) + ")" : std::string()) +
                               " and at most " + std::to_string(beside_bytes) +
                               " of requests beside them (measured before the capture)");
  return *planned;
}

void Executor::run_fallback(const Step& step, std::vector<at::Tensor>& slots, const CallBlock& block) {
  const ir::Node& node = program_.graph.nodes[step.node];
  std::size_t step_index = &step - program_.steps.data();
  auto& handle = cuda_->fallback_ops[step_index];  // resolved in the constructor (replays may run in parallel)
  const c10::FunctionSchema& schema = handle->schema();
  if (node.args.size() != schema.arguments().size())
    throw std::runtime_error("fallback " + node.op + " has " + std::to_string(node.args.size()) +
                             " arguments, its schema " + std::to_string(schema.arguments().size()));
  std::vector<at::Tensor> inputs;
  // A view op gives the capture's layout only from the capture's strides of
  // its input; as_strided, whose storage offset is absolute, only from an
  // input at the start of its storage. (Other views take offsets relative
  // to their input's: one in the block of intermediates, at its offset
  // there, needs no copy.)
  const bool absolute_offset = layout_sensitive(node.op);
  const bool fix_layout = step.kind == Step::Kind::View || absolute_offset;
  for (int i = 0; i < step.num_fallback_inputs; ++i) {
    int s = step.value_slots[i];
    const at::Tensor& t = slots[s];
    const ir::TensorMeta& meta = program_.graph.meta(step.fallback_values[i]);
    if (fix_layout && !users_input(program_.slots[s]) &&
        (t.strides().vec() != meta.strides || (absolute_offset && t.storage_offset() != 0))) {
      inputs.push_back(in_layout(t, meta));
    } else {
      inputs.push_back(t);
    }
  }
  torch::jit::Stack stack;
  std::size_t next_tensor = 0;
  for (std::size_t i = 0; i < node.args.size(); ++i)
    stack.push_back(to_ivalue(node.args[i], schema.arguments()[i], inputs, next_tensor));
  if (into_[step_index] != codegen::LibraryInto::None) {
    const int s = step.value_slots.back();
    const bool in_block_planned = s >= 0 && block.offset(s) >= 0;
    at::Tensor out = in_block_planned ? in_block(*block.tensor, block.offset(s), program_.slots[s])
                                      : (s >= 0 ? block.take_outside_output(s) : at::Tensor());
    if (out.defined()) {
      if (poison_outputs()) poison(out);
      if (call_into(into_[step_index], stack, out)) {
        slots[s] = std::move(out);
        if (in_block_planned) ++library_results_in_block_;
        return;
      }
      if (in_block_planned) ++library_results_beside_block_;
    }
  }
  // An op that writes arguments in place writes into copies: the node's
  // outputs are their new contents, and the graph stays functional.
  std::vector<c10::IValue> written;
  for (std::size_t i = 0; i < schema.arguments().size(); ++i) {
    if (!is_written(schema.arguments()[i])) continue;
    stack[i] = copies_for_writing(stack[i]);
    written.push_back(stack[i]);
  }
  handle->callBoxed(&stack);
  std::vector<std::optional<at::Tensor>> outputs;
  for (std::size_t r = 0; r < schema.returns().size() && r < stack.size(); ++r) {
    const c10::Argument& ret = schema.returns()[r];
    if (!is_written(ret)) collect_tensors(stack[r], tensor_positions(ret.type()), outputs);
  }
  std::size_t w = 0;
  for (const auto& arg : schema.arguments())
    if (is_written(arg)) collect_tensors(written[w++], tensor_positions(arg.type()), outputs);
  std::size_t expected = step.value_slots.size() - step.num_fallback_inputs;
  if (outputs.size() != expected)
    throw std::runtime_error("fallback " + node.op + " returned " + std::to_string(outputs.size()) + " tensors, expected " +
                             std::to_string(expected));
  for (std::size_t j = 0; j < outputs.size(); ++j) {
    int s = step.value_slots[step.num_fallback_inputs + j];
    if (s < 0) continue;  // undefined at capture: nothing reads it
    if (!outputs[j])
      throw std::runtime_error("fallback " + node.op + " returned no tensor at output " + std::to_string(j) +
                               ", where the capture saw one");
    const at::Tensor& out = *outputs[j];
    // A result sized by the data leaves the plan as the op made it: the host
    // reads its size to choose what runs next (ir::Graph::sized_by_data).
    const bool as_made = out.sizes().vec() != program_.slots[s].sizes && sized_by_data(program_.slots[s].value);
    slots[s] = as_made ? out : with_layout(out, program_.slots[s], node.op);
  }
}

bool Executor::users_input(const Slot& slot) const {
  const auto gi = static_cast<std::size_t>(slot.graph_input);
  return slot.origin == Slot::Origin::GraphInput && !(gi < produced_inputs_.size() && produced_inputs_[gi]);
}

bool Executor::sized_by_data(int value) const {
  const auto& marked = program_.graph.sized_by_data;
  return value >= 0 && std::find(marked.begin(), marked.end(), value) != marked.end();
}

}  // namespace dv::runtime
