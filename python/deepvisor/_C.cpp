// deepvisor._C: the bindings between the Python front and the C++ compiler.
#include <torch/csrc/utils/pybind.h>

#include <fstream>
#include <sstream>

#include "capture/graph_cache.h"
#include "codegen/program.h"
#include "codegen/tensor_def.h"
#include "ir/op_graph.h"
#include "runtime/cuda_driver.h"
#include "runtime/executor.h"
#include "runtime/kernel_compiler.h"
#include "runtime/nvrtc.h"

namespace py = pybind11;
using dv::capture::GraphCache;
using dv::runtime::Executor;

namespace {

std::shared_ptr<Executor> compile_graph_text(const std::string& text, bool fuse) {
  dv::codegen::CompileOptions options;
  options.fuse = fuse;
  return std::make_shared<Executor>(dv::codegen::compile_graph(dv::ir::parse_graph(text), options));
}

py::dict executor_stats(const Executor& e) {
  auto s = e.stats();
  py::dict d;
  d["kernels"] = s.kernels;
  d["nvrtc_compiles"] = s.nvrtc_compiles;
  d["disk_cache_hits"] = s.disk_cache_hits;
  py::dict fallbacks;
  for (const auto& [op, n] : s.fallback_ops) fallbacks[py::str(op)] = n;
  d["fallback_ops"] = fallbacks;
  py::list notes;
  for (const auto& n : e.program().notes) notes.append(n);
  d["fallback_reasons"] = notes;
  return d;
}

std::string loop_ir_text(const Executor& e) {
  std::string out;
  for (const auto& k : e.program().kernels) out += dv::ir::to_string(k) + "\n";
  return out;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "deepvisor's C++ core";

  py::class_<Executor, std::shared_ptr<Executor>>(m, "Executor")
      .def("run", &Executor::run, py::call_guard<py::gil_scoped_release>(),
           "Runs the program on the graph inputs; returns the outputs.")
      .def("validate_cuda", &Executor::validate_cuda, py::arg("arch") = 90, py::call_guard<py::gil_scoped_release>(),
           "Compiles every kernel's CUDA C with NVRTC (no GPU needed).")
      .def("cuda_sources", &Executor::cuda_sources, py::arg("arch") = 90)
      .def("stats", &executor_stats)
      .def("describe", [](const Executor& e) { return dv::codegen::describe(e.program()); })
      .def("loop_ir", &loop_ir_text)
      .def("graph_text", [](const Executor& e) { return dv::ir::to_text(e.program().graph); });

  py::class_<GraphCache>(m, "GraphCache")
      .def(py::init<>())
      .def("add", &GraphCache::add, py::arg("executor"), py::arg("arguments"), py::arg("constants"))
      .def("run", &GraphCache::run, py::call_guard<py::gil_scoped_release>(),
           "Runs the first plan whose guards pass, or returns None.")
      .def("explain_miss", &GraphCache::explain_miss)
      .def("__len__", &GraphCache::size)
      .def("executors", [](const GraphCache& c) {
        std::vector<std::shared_ptr<Executor>> out;
        for (const auto& e : c.entries()) out.push_back(e.executor);
        return out;
      });

  m.def("compile_graph_text", &compile_graph_text, py::arg("text"), py::arg("fuse") = true,
        py::call_guard<py::gil_scoped_release>(), "Parses, lowers, fuses and plans a graph in the text format.");
  m.def("has_lowering", &dv::codegen::has_lowering);
  m.def("kernel_compiler_stats", [] {
    auto s = dv::runtime::KernelCompiler::global().stats();
    py::dict d;
    d["nvrtc_compiles"] = s.nvrtc_compiles;
    d["disk_cache_hits"] = s.disk_cache_hits;
    d["memory_cache_hits"] = s.memory_cache_hits;
    return d;
  });
  m.def("nvrtc_available", [] { return dv::runtime::Nvrtc::instance().available(); });
  m.def("cuda_driver_available", [] { return dv::runtime::CudaDriver::instance().available(); });
}
