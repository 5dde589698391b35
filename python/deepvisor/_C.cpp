// deepvisor._C: the bindings between the Python front and the C++ compiler.
#include <torch/csrc/utils/pybind.h>

#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

#include "capture/guard_program.h"
#include "capture/plan_cache.h"
#include "capture/tracer.h"
#include "codegen/cpp_emitter.h"
#include "codegen/program.h"
#include "codegen/tensor_def.h"
#include "ir/op_graph.h"
#include "runtime/cuda_driver.h"
#include "runtime/cuda_graph.h"
#include "runtime/disk_cache.h"
#include "runtime/executor.h"
#include "runtime/host_compiler.h"
#include "runtime/interpreter.h"
#include "runtime/kernel_compiler.h"
#include "runtime/nvrtc.h"
#include "runtime/output_lender.h"

namespace py = pybind11;
using dv::capture::Accessor;
using dv::capture::Expect;
using dv::capture::GuardProgram;
using dv::capture::PlanCache;
using dv::capture::Tracer;
using dv::runtime::Executor;

namespace {

// DEEPVISOR_CPU chooses how plans on CPU tensors run: with pointwise work
// and row reductions compiled to C++ and the rest through ATen ("fused", the
// default: bench/cpu.py measured it at or above eager on every workload, the
// ATen path 0.95-1.05x), node by node through ATen ("aten"), as kernels in
// the loop-IR interpreter ("interpreter"), or as kernels all compiled to C++
// by the host compiler ("compiled"); the two compiled modes are the ATen path
// when there is no host compiler.
// DEEPVISOR_CHANNELS_LAST: "0" never lays activations out channels-last,
// "1" does around every 2-d convolution (any device and dtype), unset the
// default (GPU plans whose convolutions compute in f16/bf16).
dv::codegen::ChannelsLast channels_last_mode() {
  const char* env = std::getenv("DEEPVISOR_CHANNELS_LAST");
  const std::string v = env == nullptr ? "" : env;
  if (v == "0") return dv::codegen::ChannelsLast::Never;
  if (v == "1") return dv::codegen::ChannelsLast::Always;
  return dv::codegen::ChannelsLast::Auto;
}

std::shared_ptr<Executor> compile_graph_text(const std::string& text, bool fuse) {
  dv::codegen::CompileOptions options;
  options.fuse = fuse;
  const char* env = std::getenv("DEEPVISOR_CPU");
  const std::string cpu = env == nullptr || env[0] == '\0' ? "fused" : env;
  const bool compiled = (cpu == "compiled" || cpu == "fused") && dv::runtime::HostCompiler::global().available();
  options.cpu_plans_run_aten = cpu != "interpreter" && !compiled;
  options.cpu_rows_run_aten = compiled && cpu == "fused";
  options.cpu_min_rows = std::max(2, at::get_num_threads());
  options.channels_last = channels_last_mode();
  // DEEPVISOR_WEIGHT_COPIES=0: no channels-last copy of parameters is held
  // (cuDNN converts them on each call: slower, no memory beyond eager's).
  const char* copies = std::getenv("DEEPVISOR_WEIGHT_COPIES");
  options.channels_last_weight_copies = copies == nullptr || std::string(copies) != "0";
  return std::make_shared<Executor>(dv::codegen::compile_graph(dv::ir::parse_graph(text), options),
                                    compiled ? dv::runtime::CpuKernels::Compiled : dv::runtime::CpuKernels::Interpreter);
}

py::dict executor_stats(const Executor& e) {
  auto s = e.stats();
  py::dict d;
  d["kernels"] = s.kernels;
  d["nvrtc_compiles"] = s.nvrtc_compiles;
  d["disk_cache_hits"] = s.disk_cache_hits;
  d["kernels_autotuned"] = s.kernels_autotuned;
  d["autotune_s"] = s.autotune_seconds;
  d["autotune_cache_hits"] = s.autotune_cache_hits;
  d["autotune_compiles"] = s.autotune_compiles;
  d["kernels_ready_s"] = s.kernels_ready_seconds;
  py::dict fallbacks;
  for (const auto& [op, n] : s.fallback_ops) fallbacks[py::str(op)] = n;
  d["fallback_ops"] = fallbacks;
  py::list notes;
  for (const auto& n : e.program().notes) notes.append(n);
  d["fallback_reasons"] = notes;
  d["cuda_graph"] = s.cuda_graph;
  d["inputs_prepared"] = s.inputs_prepared;
  d["constant_kernels"] = s.constant_kernels;
  d["constant_kernel_runs"] = s.constant_kernel_runs;
  d["constant_kernels_not_kept"] = s.constant_kernels_not_kept;
  d["library_results_in_block"] = s.library_results_in_block;
  d["library_results_beside_block"] = s.library_results_beside_block;
  d["graph_pool_room_bytes"] = s.graph_pool_room_bytes;
  d["graph_block_window_bytes"] = s.graph_block_window_bytes;
  d["block_bytes"] = s.block_bytes;
  d["graph_beside_block_bytes"] = s.graph_beside_block_bytes;
  d["graph_outside_pool_bytes"] = s.graph_outside_pool_bytes;
  d["cpu_compiled_kernels"] = s.cpu_compiled_kernels;
  d["cpu_interpreted_kernels"] = s.cpu_interpreted_kernels;
  py::list interpreted;
  for (const auto& r : s.cpu_interpreted_reasons) interpreted.append(r);
  d["cpu_interpreted_reasons"] = interpreted;
  d["host_compiles"] = s.host_compiles;
  d["host_cache_hits"] = s.host_cache_hits;
  return d;
}

std::string loop_ir_text(const Executor& e) {
  std::string out;
  for (const auto& k : e.program().kernels) out += dv::ir::to_string(k) + "\n";
  return out;
}

py::object tensors_or_none(bool ok, std::vector<at::Tensor> inputs) {
  if (!ok) return py::none();
  return py::cast(inputs);
}

// The values of one call of a plan with segments (a version tree): its graph
// inputs, then each segment's outputs as it runs. They stay in C++, so that
// segments hand each other tensors by slot, with no Python list of every
// parameter; Python reads only decision values and the last outputs.
struct CallValues {
  std::vector<at::Tensor> values;

  const at::Tensor& at(std::ptrdiff_t slot) const {
    if (slot < 0) slot += static_cast<std::ptrdiff_t>(values.size());
    if (slot < 0 || slot >= static_cast<std::ptrdiff_t>(values.size())) throw py::index_error("no such value");
    return values[static_cast<std::size_t>(slot)];
  }
  std::vector<at::Tensor> take(const std::vector<std::ptrdiff_t>& slots) const {
    std::vector<at::Tensor> out;
    out.reserve(slots.size());
    for (std::ptrdiff_t s : slots) out.push_back(at(s));
    return out;
  }
};

// Runs `e` on the values at `slots`; its outputs are appended to `v`, or
// (keep false) returned.
std::vector<at::Tensor> run_on_values(Executor& e, CallValues& v, const std::vector<std::ptrdiff_t>& slots, bool keep) {
  std::vector<at::Tensor> in = v.take(slots);
  std::vector<at::Tensor> out;
  {
    py::gil_scoped_release released;
    out = e.run(in);
  }
  if (!keep) return out;
  v.values.insert(v.values.end(), std::make_move_iterator(out.begin()), std::make_move_iterator(out.end()));
  return {};
}

// The disk store for what Python keeps across processes (_table_store.py: the
// tracer's code tables), in folders of the kernels' cache root.
void bind_disk_cache(py::module_& m) {
  using dv::runtime::DiskCache;
  m.def("disk_cache_root", [] { return DiskCache::enabled() ? DiskCache::default_dir().parent_path().string() : ""; },
        "The disk caches' root folder, or '' when DEEPVISOR_DISK_CACHE=0.");
  m.def(
      "disk_cache_load",
      [](const std::string& dir, const std::string& extension, const std::string& key) -> py::object {
        std::optional<std::string> data = DiskCache(dir, extension).load(key);
        if (!data) return py::none();
        return py::bytes(*data);
      },
      py::arg("dir"), py::arg("extension"), py::arg("key"), "The bytes stored under key (hex), or None.");
  m.def(
      "disk_cache_store",
      [](const std::string& dir, const std::string& extension, const std::string& key, const py::bytes& data) {
        DiskCache(dir, extension).store(key, std::string(data));
      },
      py::arg("dir"), py::arg("extension"), py::arg("key"), py::arg("data"),
      "Stores data under key (hex), atomically; a failure is only a later miss.");
}

void bind_capture(py::module_& m) {
  py::class_<CallValues, std::shared_ptr<CallValues>>(m, "CallValues")
      .def("__len__", [](const CallValues& v) { return v.values.size(); })
      .def("__getitem__", &CallValues::at)
      .def("take", &CallValues::take)
      .def("tensors", [](const CallValues& v) { return v.values; })
      .def("extend", [](CallValues& v, const std::vector<at::Tensor>& more) {
        v.values.insert(v.values.end(), more.begin(), more.end());
      });

  py::class_<Tracer>(m, "Tracer")
      .def(py::init([](py::object monitor, py::object null_marker) {
        return std::make_unique<Tracer>(monitor.ptr(), null_marker.ptr());
      }))
      .def("start_monitoring", &Tracer::start_monitoring)
      .def("start", &Tracer::start)
      .def("stop", &Tracer::stop)
      .def("close", &Tracer::close)
      .def("track", [](Tracer& t, py::handle o) { t.track(o.ptr()); })
      .def("is_tracked", [](const Tracer& t, py::handle o) { return t.is_tracked(o.ptr()); })
      .def("call_stepped",
           [](Tracer& t, py::handle fn, py::tuple args, py::dict kwargs) {
             PyObject* r = t.call_stepped(fn.ptr(), args.ptr(), kwargs.ptr());
             if (r == nullptr) throw py::error_already_set();
             return py::reinterpret_steal<py::object>(r);
           })
      .def("error", &Tracer::error)
      .def("reported", &Tracer::instructions_reported);
  m.attr("PYTHON_RAN") = static_cast<int>(dv::capture::kPythonRan);
  m.attr("FAILED") = static_cast<int>(dv::capture::kFailed);
  m.attr("BEFORE") = static_cast<int>(dv::capture::kBefore);

  py::class_<GuardProgram, std::shared_ptr<GuardProgram>>(m, "GuardProgram")
      .def(py::init<>())
      .def("load_arg", &GuardProgram::load_arg)
      .def("load_kwarg", [](GuardProgram& g, py::str name) { return g.load_kwarg(name.ptr()); })
      .def("load_pinned", [](GuardProgram& g, py::object o) { return g.load_pinned(o.ptr()); })
      .def("load_access", [](GuardProgram& g, int from, int accessor, py::object key) {
        return g.load_access(from, static_cast<Accessor>(accessor), key.ptr());
      })
      .def("begin_group", &GuardProgram::begin_group)
      .def("end_group", &GuardProgram::end_group)
      .def("add_check", [](GuardProgram& g, int reg, int accessor, py::object key, int expect, py::object expected,
                           int other, std::string description) {
        g.add_check(reg, static_cast<Accessor>(accessor), key.ptr(), static_cast<Expect>(expect), expected.ptr(), other,
                    std::move(description));
      })
      .def(
          "add_tensor",
          [](GuardProgram& g, int reg, int input, const at::Tensor& t, std::string description,
             std::vector<int> dynamic_sizes, std::vector<int> dynamic_strides) {
            auto guard = dv::capture::TensorGuard::of(t);
            guard.check_requires_grad = at::GradMode::is_enabled();  // the global state guard pins grad mode
            // Symbolic sizes and the strides that follow them: any value here;
            // the plan's shape guards check them.
            for (int d : dynamic_sizes) guard.sizes.at(d) = dv::capture::TensorGuard::kAnyInt;
            for (int d : dynamic_strides) guard.strides.at(d) = dv::capture::TensorGuard::kAnyInt;
            g.add_tensor(reg, input, std::move(guard), std::move(description));
          },
          py::arg("reg"), py::arg("input"), py::arg("t"), py::arg("description"),
          py::arg("dynamic_sizes") = std::vector<int>{}, py::arg("dynamic_strides") = std::vector<int>{})
      .def("add_distinct_inputs", &GuardProgram::add_distinct_inputs)
      .def("set_arguments", &GuardProgram::set_arguments)
      .def("capture_global_state", [](GuardProgram& g) { g.set_global_state(dv::capture::GlobalState::now()); })
      .def("check", [](GuardProgram& g, py::tuple args, py::dict kwargs) {
        std::vector<at::Tensor> inputs;
        bool ok = g.check(args.ptr(), kwargs.ptr(), inputs);
        return tensors_or_none(ok, std::move(inputs));
      })
      .def("time_checks", [](GuardProgram& g, py::tuple args, py::dict kwargs, int n) {
        // Mean seconds of one check, timed in C++ (no Python call in the loop).
        std::vector<at::Tensor> inputs;
        g.check(args.ptr(), kwargs.ptr(), inputs);
        auto t0 = std::chrono::steady_clock::now();
        bool ok = true;
        for (int i = 0; i < n; ++i) ok = g.check(args.ptr(), kwargs.ptr(), inputs) && ok;
        auto t1 = std::chrono::steady_clock::now();
        if (!ok) throw std::runtime_error("the guards failed while timing them");
        return std::chrono::duration<double>(t1 - t0).count() / n;
      }, py::arg("args"), py::arg("kwargs"), py::arg("n"))
      .def("passes", [](GuardProgram& g, py::tuple args, py::dict kwargs) {
        static std::vector<at::Tensor> inputs;  // reused, as the plan cache does
        return g.check(args.ptr(), kwargs.ptr(), inputs);
      }, "Whether the guards pass, without handing the inputs back (for timing).")
      .def("explain_failure", [](GuardProgram& g, py::tuple args, py::dict kwargs) {
        return g.explain_failure(args.ptr(), kwargs.ptr());
      })
      .def("num_checks", &GuardProgram::num_checks)
      .def("num_inputs", &GuardProgram::num_inputs)
      .def("num_groups", &GuardProgram::num_groups)
      .def("hit_profile", [](const GuardProgram& g) {
        auto p = g.hit_profile();
        py::dict d;
        d["pinned_tensors"] = p.pinned_tensors;
        d["watched_groups"] = p.watched_groups;
        d["unwatched_groups"] = p.unwatched_groups;
        d["unversioned_groups"] = p.unversioned_groups;
        d["dirty"] = p.dirty;
        return d;
      });

  py::class_<PlanCache>(m, "PlanCache")
      .def(py::init<>())
      .def("add", &PlanCache::add, "Adds a plan (guards, executor or None); returns its id.")
      .def("remove", &PlanCache::remove)
      .def("make_eager", &PlanCache::make_eager)
      .def("set_dynamic", &PlanCache::set_dynamic)
      .def("add_instance",
           [](PlanCache& c, int id, const CallValues& inputs, std::shared_ptr<Executor> executor) {
             c.add_instance(id, inputs.values, std::move(executor));
           })
      .def("forget_instance", &PlanCache::forget_instance, py::arg("id"), py::arg("layout"),
           "Forgets the instance of plan `id` for a layout, ((sizes, strides) per dynamic input).")
      .def("failed_id", &PlanCache::failed_id)
      .def(
          "run",
          [](PlanCache& c, py::tuple args, py::dict kwargs, std::size_t start) -> py::object {
        auto hit = c.run(args.ptr(), kwargs.ptr(), start);
        if (!hit) return py::none();
        // The inputs go back only to versions that run from Python (trees and
        // eager versions); converting every parameter to a Python object would
        // cost microseconds.
        if (hit->ran) return py::make_tuple(hit->index, hit->id, hit->outputs, py::none());
        auto inputs = std::make_shared<CallValues>();
        inputs->values = std::move(hit->inputs);
        return py::make_tuple(hit->index, hit->id, hit->outputs, inputs);
          },
          py::arg("args"), py::arg("kwargs"), py::arg("start") = 0)
      .def("explain_miss", [](PlanCache& c, py::tuple args, py::dict kwargs) {
        return c.explain_miss(args.ptr(), kwargs.ptr());
      })
      .def("__len__", &PlanCache::size)
      .def("executors", [](const PlanCache& c) {
        std::vector<std::shared_ptr<Executor>> out;
        for (const auto& e : c.entries()) out.push_back(e.executor);
        return out;
      })
      .def("guards", [](const PlanCache& c) {
        std::vector<std::shared_ptr<GuardProgram>> out;
        for (const auto& e : c.entries()) out.push_back(e.guards);
        return out;
      });
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "deepvisor's C++ core";
  // A kernel read an index out of range: the program's own error (an IndexError).
  py::register_exception<dv::runtime::IndexOutOfRange>(m, "IndexOutOfRange", PyExc_IndexError);
  py::register_exception<dv::runtime::DataDependentSize>(m, "DataDependentSize", PyExc_RuntimeError);

  py::class_<dv::runtime::GraphPool, std::shared_ptr<dv::runtime::GraphPool>>(
      m, "GraphPool", "A memory pool the CUDA graphs of a dynamic-shape plan's instances share.")
      .def(py::init<>());
  py::class_<dv::runtime::SharedConstants, std::shared_ptr<dv::runtime::SharedConstants>>(
      m, "SharedConstants", "Kept results of constant steps that a dynamic-shape plan's instances share.")
      .def(py::init<>());

  // What a CUDA graph uses to lend its outputs (runtime/output_lender.h),
  // exposed so that tests drive its bookkeeping with CPU tensors.
  py::class_<dv::runtime::OutputLender>(m, "OutputLender")
      .def(py::init<>())
      .def("choose", &dv::runtime::OutputLender::choose, py::arg("buffers"), py::arg("inputs"), py::arg("same_as"),
           py::arg("enabled") = true)
      .def("lends", &dv::runtime::OutputLender::lends)
      .def("lend", &dv::runtime::OutputLender::lend)
      .def("reclaim",
           [](dv::runtime::OutputLender& l, const std::vector<at::Tensor>& buffers) -> std::string {
             switch (l.reclaim(buffers)) {
               case dv::runtime::Reclaim::kDone: return "done";
               case dv::runtime::Reclaim::kHeldByOtherThread: return "held by another thread";
               case dv::runtime::Reclaim::kHeld: return "held";
             }
             return "?";
           })
      .def("clear", &dv::runtime::OutputLender::clear)
      .def_property_readonly("moved", &dv::runtime::OutputLender::moved);

  py::class_<Executor, std::shared_ptr<Executor>>(m, "Executor")
      .def("run", &Executor::run, py::call_guard<py::gil_scoped_release>(),
           "Runs the program on the graph inputs; returns the outputs.")
      .def("run_into", [](Executor& e, CallValues& v, const std::vector<std::ptrdiff_t>& slots) {
             run_on_values(e, v, slots, true);
           },
           "Runs the program on the call values at these slots and appends its outputs to them.")
      .def("run_on", [](Executor& e, CallValues& v, const std::vector<std::ptrdiff_t>& slots) {
             return run_on_values(e, v, slots, false);
           },
           "Runs the program on the call values at these slots; returns the outputs.")
      .def("validate_cuda", &Executor::validate_cuda, py::arg("arch") = 90, py::call_guard<py::gil_scoped_release>(),
           "Compiles every kernel's CUDA C with NVRTC (no GPU needed).")
      .def("use_reference", &Executor::use_reference, py::arg("reference"))
      .def("share_constants", &Executor::share_constants, py::arg("shared"),
           "Shares the kept results of constant steps with the other executors given `shared` (a dynamic-shape "
           "plan's instances).")
      .def("use_size_arguments", &Executor::use_size_arguments, py::arg("constant_sizes") = std::vector<std::int64_t>{},
           "Kernels take their sizes as launch arguments (a dynamic-shape plan's instances share them), except "
           "the index constants listed.")
      .def("cuda_sources", &Executor::cuda_sources, py::arg("arch") = 90)
      .def("cpp_sources", &Executor::cpp_sources,
           "The host C++ of every kernel (an empty string where the emitter does not support it).")
      .def("enable_cuda_graph", &Executor::enable_cuda_graph, py::arg("constant_inputs"), py::arg("pool") = nullptr,
           py::arg("produced_inputs") = std::vector<bool>{}, py::arg("held_elsewhere") = 0,
           "Lets a GPU plan replay as one CUDA graph; constant_inputs[i]: input i is a constant of the plan; "
           "pool: a GraphPool its graph shares with others (None: its own); produced_inputs[i]: input i is "
           "made anew on every call (an earlier segment's result), never read in place; held_elsewhere: "
           "bytes the pools of earlier segments hold, counted when choosing the weight casts to keep.")
      .def("estimated_pool_bytes", &Executor::estimated_pool_bytes,
           "What the plan's own CUDA graph pool is estimated to hold (0: no graph of its own).")
      .def("stats", &executor_stats)
      .def("describe", [](const Executor& e) { return dv::codegen::describe(e.program()); })
      .def("loop_ir", &loop_ir_text)
      .def("graph_text", [](const Executor& e) { return dv::ir::to_text(e.program().graph); });

  bind_capture(m);
  bind_disk_cache(m);

  m.def("compile_graph_text", &compile_graph_text, py::arg("text"), py::arg("fuse") = true,
        py::call_guard<py::gil_scoped_release>(), "Parses, lowers, fuses and plans a graph in the text format.");
  m.def("has_lowering", &dv::codegen::has_lowering);
  m.def("is_view_op", &dv::codegen::is_view_op);
  m.def("note_data_access", &dv::runtime::note_data_access,
        "Counts an access to a tensor's .data (runtime/constant_steps.h: kept results are computed again).");
  m.def("kernel_compiler_stats", [] {
    auto s = dv::runtime::KernelCompiler::global().stats();
    py::dict d;
    d["nvrtc_compiles"] = s.nvrtc_compiles;
    d["nvrtc_programs"] = s.nvrtc_programs;
    d["disk_cache_hits"] = s.disk_cache_hits;
    d["memory_cache_hits"] = s.memory_cache_hits;
    return d;
  });
  m.def("nvrtc_available", [] { return dv::runtime::Nvrtc::instance().available(); });
  m.def("cuda_driver_available", [] { return dv::runtime::CudaDriver::instance().available(); });
  m.def("host_compiler_available", [] { return dv::runtime::HostCompiler::global().available(); });
}
