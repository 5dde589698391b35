#include "runtime/nvrtc.h"

#include <dlfcn.h>
#include <nvrtc.h>  // for the types and signatures only; the library is dlopen'ed

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sstream>

namespace dv::runtime {

// The NVRTC entry points we use, typed from <nvrtc.h>.
struct Nvrtc::Api {
  decltype(&::nvrtcCreateProgram) create_program = nullptr;
  decltype(&::nvrtcCompileProgram) compile_program = nullptr;
  decltype(&::nvrtcGetCUBINSize) get_cubin_size = nullptr;
  decltype(&::nvrtcGetCUBIN) get_cubin = nullptr;
  decltype(&::nvrtcGetProgramLogSize) get_log_size = nullptr;
  decltype(&::nvrtcGetProgramLog) get_log = nullptr;
  decltype(&::nvrtcDestroyProgram) destroy_program = nullptr;
  decltype(&::nvrtcVersion) version = nullptr;
  decltype(&::nvrtcGetErrorString) error_string = nullptr;
};

namespace {

template <typename Fn>
bool bind(void* handle, const char* name, Fn& out) {
  out = reinterpret_cast<Fn>(::dlsym(handle, name));
  return out != nullptr;
}

// Looks up every symbol of Api in `handle`; returns the first missing name, or "".
std::string bind_symbols(void* handle, Nvrtc::Api& api) {
  if (!bind(handle, "nvrtcCreateProgram", api.create_program)) return "nvrtcCreateProgram";
  if (!bind(handle, "nvrtcCompileProgram", api.compile_program)) return "nvrtcCompileProgram";
  if (!bind(handle, "nvrtcGetCUBINSize", api.get_cubin_size)) return "nvrtcGetCUBINSize";
  if (!bind(handle, "nvrtcGetCUBIN", api.get_cubin)) return "nvrtcGetCUBIN";
  if (!bind(handle, "nvrtcGetProgramLogSize", api.get_log_size)) return "nvrtcGetProgramLogSize";
  if (!bind(handle, "nvrtcGetProgramLog", api.get_log)) return "nvrtcGetProgramLog";
  if (!bind(handle, "nvrtcDestroyProgram", api.destroy_program)) return "nvrtcDestroyProgram";
  if (!bind(handle, "nvrtcVersion", api.version)) return "nvrtcVersion";
  if (!bind(handle, "nvrtcGetErrorString", api.error_string)) return "nvrtcGetErrorString";
  return "";
}

std::string env_or_empty(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? std::string() : std::string(v);
}

// The loaded file behind `symbol`, as the dynamic loader resolved it.
std::string resolved_path(void* symbol, const std::string& fallback) {
  Dl_info info{};
  if (::dladdr(symbol, &info) != 0 && info.dli_fname != nullptr && info.dli_fname[0] != '\0') {
    return info.dli_fname;
  }
  return fallback;
}

std::string find_include_dir(const std::string& library_path) {
  namespace fs = std::filesystem;
  std::vector<fs::path> candidates;
  if (!library_path.empty()) {
    std::error_code ec;
    const fs::path lib = fs::weakly_canonical(library_path, ec);
    candidates.push_back((ec ? fs::path(library_path) : lib).parent_path().parent_path() /
                         "include");
  }
  if (std::string home = env_or_empty("CUDA_HOME"); !home.empty())
    candidates.push_back(fs::path(home) / "include");
  candidates.push_back("/usr/local/cuda/include");
  for (const fs::path& dir : candidates) {
    std::error_code ec;
    if (fs::exists(dir / "cuda_fp16.h", ec) && fs::exists(dir / "cuda_bf16.h", ec))
      return dir.string();
  }
  return "";
}

// Destroys an nvrtcProgram when a compile returns or throws.
class ProgramGuard {
 public:
  ProgramGuard(const Nvrtc::Api& api, nvrtcProgram program) : api_(api), program_(program) {}
  ~ProgramGuard() { api_.destroy_program(&program_); }
  ProgramGuard(const ProgramGuard&) = delete;
  ProgramGuard& operator=(const ProgramGuard&) = delete;

 private:
  const Nvrtc::Api& api_;
  nvrtcProgram program_;
};

}  // namespace

Nvrtc& Nvrtc::instance() {
  // Function-local static: C++ guarantees one thread loads, the others wait.
  static Nvrtc nvrtc(default_candidates());
  return nvrtc;
}

std::vector<std::string> Nvrtc::default_candidates() {
  std::vector<std::string> out;
  if (std::string p = env_or_empty("DEEPVISOR_NVRTC_LIBRARY"); !p.empty()) out.push_back(p);
  out.push_back("libnvrtc.so.13");
  out.push_back("libnvrtc.so");
  if (std::string home = env_or_empty("CUDA_HOME"); !home.empty()) {
    out.push_back(home + "/lib64/libnvrtc.so");
  }
  out.push_back("/usr/local/cuda/lib64/libnvrtc.so");
  return out;
}

Nvrtc::Nvrtc(const std::vector<std::string>& candidates) {
  std::ostringstream tried;
  for (const std::string& candidate : candidates) {
    void* handle = ::dlopen(candidate.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      const char* err = ::dlerror();
      tried << "\n  " << candidate << ": " << (err != nullptr ? err : "dlopen failed");
      continue;
    }
    auto* api = new Api;
    if (const std::string missing = bind_symbols(handle, *api); !missing.empty()) {
      tried << "\n  " << candidate << ": missing symbol " << missing;
      delete api;
      ::dlclose(handle);
      continue;
    }
    int major = 0, minor = 0;
    if (api->version(&major, &minor) != NVRTC_SUCCESS) {
      tried << "\n  " << candidate << ": nvrtcVersion failed";
      delete api;
      ::dlclose(handle);
      continue;
    }
    api_ = api;
    path_ = resolved_path(reinterpret_cast<void*>(api->version), candidate);
    version_ = {major, minor};
    include_dir_ = find_include_dir(path_);
    return;
  }
  reason_ = "NVRTC not found; tried:" + tried.str() +
            "\n(set DEEPVISOR_NVRTC_LIBRARY to the path of libnvrtc.so)";
}

Nvrtc::~Nvrtc() {
  // The library stays loaded (no dlclose) and the Api stays allocated: a static
  // destructor elsewhere may still hold pointers into it at exit.
}

std::vector<std::string> Nvrtc::default_options(int arch) {
  return {"--gpu-architecture=sm_" + std::to_string(arch), "-std=c++17"};
}

std::string numbered_source_excerpt(const std::string& source, int max_lines) {
  std::istringstream in(source);
  std::ostringstream out;
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    if (++number > max_lines) {
      out << "  ... (" << source.size() << " bytes in all)\n";
      break;
    }
    char prefix[16];
    std::snprintf(prefix, sizeof prefix, "%4d | ", number);
    out << prefix << line << '\n';
  }
  return out.str();
}

std::string Nvrtc::compile_cubin(const std::string& source, const std::string& program_name,
                                 int arch, const std::vector<std::string>& extra_options) const {
  if (!available()) throw std::runtime_error("cannot compile '" + program_name + "': " + reason_);
  const Api& api = *api_;

  const std::string file_name = program_name + ".cu";
  nvrtcProgram program = nullptr;
  if (nvrtcResult r =
          api.create_program(&program, source.c_str(), file_name.c_str(), 0, nullptr, nullptr);
      r != NVRTC_SUCCESS) {
    throw std::runtime_error("nvrtcCreateProgram failed for kernel '" + program_name +
                             "': " + api.error_string(r));
  }
  ProgramGuard guard(api, program);

  std::vector<std::string> options = default_options(arch);
  options.insert(options.end(), extra_options.begin(), extra_options.end());
  std::vector<const char*> option_ptrs;
  for (const std::string& o : options) option_ptrs.push_back(o.c_str());

  const nvrtcResult compiled =
      api.compile_program(program, static_cast<int>(option_ptrs.size()), option_ptrs.data());
  if (compiled != NVRTC_SUCCESS) {
    std::string log;
    std::size_t log_size = 0;
    if (api.get_log_size(program, &log_size) == NVRTC_SUCCESS && log_size > 1) {
      log.resize(log_size);
      if (api.get_log(program, log.data()) != NVRTC_SUCCESS) log.clear();
      while (!log.empty() && (log.back() == '\0' || log.back() == '\n')) log.pop_back();
    }
    std::ostringstream msg;
    msg << "NVRTC failed to compile kernel '" << program_name << "' for sm_" << arch << " ("
        << api.error_string(compiled) << ")\n--- NVRTC log ---\n"
        << (log.empty() ? "(empty)" : log) << "\n--- options ---\n";
    for (const std::string& o : options) msg << "  " << o << '\n';
    msg << "--- source ---\n" << numbered_source_excerpt(source, 40);
    throw CompileError(msg.str(), log);
  }

  std::size_t size = 0;
  if (nvrtcResult r = api.get_cubin_size(program, &size); r != NVRTC_SUCCESS || size == 0) {
    throw std::runtime_error("nvrtcGetCUBINSize failed for kernel '" + program_name +
                             "': " + (r != NVRTC_SUCCESS ? api.error_string(r) : "empty cubin"));
  }
  std::string cubin(size, '\0');
  if (nvrtcResult r = api.get_cubin(program, cubin.data()); r != NVRTC_SUCCESS) {
    throw std::runtime_error("nvrtcGetCUBIN failed for kernel '" + program_name +
                             "': " + api.error_string(r));
  }
  return cubin;
}

}  // namespace dv::runtime
