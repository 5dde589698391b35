// dvdump: prints the stages of compiling a dumped graph.
//
//   dvdump FILE [--stage graph|plan|loop|groups|cuda|candidates|all] [--arch N] [--no-fuse] [--channels-last auto|always|never]
//          [--row-chunks N] [--row-threads N] [--row-looped] [--no-loop-hints] [--loop-hints 0-3] [--no-loop-moments] [--no-one-step-looped] [--col-rows N] [--pw-threads N] [--pw-chunks N]
//
// FILE is a graph in deepvisor's text format, as written by
// deepvisor.compile(fn, dump_dir=DIR) or DEEPVISOR_DUMP_DIR.
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include "codegen/cuda_emitter.h"
#include "codegen/kernel_configs.h"
#include "codegen/program.h"
#include "ir/op_graph.h"

namespace {

int usage(const char* why) {
  std::cerr << "dvdump: " << why << "\n"
            << "usage: dvdump FILE [--stage graph|plan|loop|groups|cuda|candidates|all] [--arch N] [--no-fuse] [--channels-last auto|always|never]\n"
            << "              [--row-chunks N] [--row-threads N] [--row-looped] [--no-loop-hints] [--loop-hints 0-3] [--no-loop-moments] [--no-one-step-looped] [--col-rows N] [--pw-threads N] [--pw-chunks N]   (row-kernel tiles, for experiments)\n";
  return 2;
}

void section(const std::string& title) { std::cout << "==== " << title << " ====\n"; }

// The line of an emitted kernel's header that names its strategy.
std::string strategy_line(const std::string& source) {
  const std::string tag = "// strategy: ";
  const auto at = source.find(tag);
  if (at == std::string::npos) return "";
  const auto begin = at + tag.size();
  return source.substr(begin, source.find('\n', begin) - begin);
}

// What autotuning would time for each kernel (codegen/kernel_configs.h):
// the candidates in order, the first being the heuristic's.
void print_candidates(const dv::codegen::Program& p, const dv::codegen::DeviceSpec& spec,
                      const dv::codegen::KernelTuning& base) {
  for (const auto& k : p.kernels) {
    std::cout << k.name << " (xnumel=" << k.xnumel << ", rnumel=" << k.rnumel << "):\n";
    const auto candidates = dv::codegen::candidates(k, spec, base);
    for (std::size_t i = 0; i < candidates.size(); ++i) {
      const auto& c = candidates[i];
      std::cout << "  #" << i << " " << dv::codegen::to_string(c.tuning) << ": grid " << c.kernel.launch.grid[0]
                << " block " << c.kernel.launch.block[0] << "; " << strategy_line(c.kernel.source) << "\n";
    }
  }
}

void print_groups(const dv::codegen::Program& p) {
  for (const auto& g : p.groups) {
    const auto& k = p.kernels[g.kernel];
    std::cout << k.name << " (xnumel=" << k.xnumel << ", rnumel=" << k.rnumel << "):\n";
    for (const auto& m : g.members) std::cout << "  " << m << "\n";
  }
  for (const auto& n : p.notes) std::cout << "fallback: " << n << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  std::string file, stage = "all";
  dv::codegen::DeviceSpec spec;
  dv::codegen::KernelTuning tuning;
  bool fuse = true;
  auto channels_last = dv::codegen::ChannelsLast::Auto;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--stage" && i + 1 < argc) stage = argv[++i];
    else if (a == "--arch" && i + 1 < argc) spec.arch = std::stoi(argv[++i]);
    else if (a == "--row-chunks" && i + 1 < argc) tuning.row_chunks_per_thread = std::stoi(argv[++i]);
    else if (a == "--row-threads" && i + 1 < argc) tuning.row_max_threads = std::stoi(argv[++i]);
    else if (a == "--row-looped") tuning.row_force_looped = true;
    else if (a == "--no-loop-hints") tuning.row_loop_hints = 0;
    else if (a == "--no-loop-moments") tuning.row_loop_moments = false;
    else if (a == "--no-one-step-looped") tuning.row_one_step_looped = false;
    else if (a == "--loop-hints" && i + 1 < argc) tuning.row_loop_hints = std::stoi(argv[++i]);
    else if (a == "--col-rows" && i + 1 < argc) tuning.col_rows_per_block = std::stoi(argv[++i]);
    else if (a == "--pw-threads" && i + 1 < argc) tuning.pointwise_threads = std::stoi(argv[++i]);
    else if (a == "--pw-chunks" && i + 1 < argc) tuning.pointwise_chunks = std::stoi(argv[++i]);
    else if (a == "--no-fuse") fuse = false;
    else if (a == "--channels-last" && i + 1 < argc) {
      const std::string m = argv[++i];
      if (m != "auto" && m != "always" && m != "never") return usage(("unknown --channels-last " + m).c_str());
      channels_last = m == "always" ? dv::codegen::ChannelsLast::Always
                      : m == "never" ? dv::codegen::ChannelsLast::Never : dv::codegen::ChannelsLast::Auto;
    }
    else if (a == "-h" || a == "--help") return usage("prints the op graph, plan, loop IR, fusion groups and CUDA C");
    else if (!a.empty() && a[0] == '-') return usage(("unknown option " + a).c_str());
    else file = a;
  }
  if (file.empty()) return usage("no graph file given");
  const bool all = stage == "all";
  if (!all && stage != "graph" && stage != "plan" && stage != "loop" && stage != "groups" && stage != "cuda" &&
      stage != "candidates")
    return usage(("unknown stage " + stage).c_str());
  std::ifstream in(file);
  if (!in) return usage(("cannot read " + file).c_str());
  std::stringstream text;
  text << in.rdbuf();
  try {
    auto graph = dv::ir::parse_graph(text.str());
    if (all || stage == "graph") {
      section("op graph");
      std::cout << dv::ir::to_text(graph);
    }
    dv::codegen::CompileOptions options;
    options.fuse = fuse;
    options.channels_last = channels_last;
    auto program = dv::codegen::compile_graph(graph, options);
    if (all || stage == "plan") {
      section("plan");
      std::cout << dv::codegen::describe(program);
    }
    if (all || stage == "groups") {
      section("fusion groups");
      print_groups(program);
    }
    if (all || stage == "loop") {
      section("loop IR");
      for (const auto& k : program.kernels) std::cout << dv::ir::to_string(k) << "\n";
    }
    if (all || stage == "cuda") {
      section("CUDA C (sm_" + std::to_string(spec.arch) + ")");
      for (const auto& k : program.kernels) {
        auto c = dv::codegen::emit_cuda(k, spec, tuning);
        std::cout << "// launch: grid (" << c.launch.grid[0] << "," << c.launch.grid[1] << "," << c.launch.grid[2]
                  << ") block (" << c.launch.block[0] << "," << c.launch.block[1] << "," << c.launch.block[2]
                  << ") shared " << c.launch.shared_bytes << "\n"
                  << c.source << "\n";
      }
    }
    if (stage == "candidates") {
      section("autotune candidates (sm_" + std::to_string(spec.arch) + ")");
      print_candidates(program, spec, tuning);
    }
  } catch (const std::exception& e) {
    std::cerr << "dvdump: " << file << ": " << e.what() << "\n";
    return 1;
  }
  return 0;
}
