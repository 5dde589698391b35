#include "runtime/host_compiler.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <sstream>

extern char** environ;

namespace dv::runtime {
namespace fs = std::filesystem;

// Bumped when the way keys or flags are made changes, to orphan old entries.
constexpr const char* kKeySchema = "deepvisor-host-kernel-v1";

struct HostCompiler::Toolchain {
  std::string cxx;      // the compiler's path; empty when none was found
  std::string why_not;  // then: why
  std::string version;  // first line of `cxx --version`
  std::string cpu;      // what -march=native depends on
  bool vector_math = false;
};

namespace {

std::string find_on_path(const std::string& name) {
  if (name.find('/') != std::string::npos) return ::access(name.c_str(), X_OK) == 0 ? name : "";
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "/usr/bin:/bin");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    const fs::path candidate = fs::path(dir.empty() ? "." : dir) / name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate.string();
  }
  return "";
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

bool write_file(const fs::path& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  return static_cast<bool>(out);
}

// Runs argv[0] (a path) with stdout and stderr into `log`; the exit status,
// or -1 if it could not run. posix_spawn, unlike system(), is safe to call
// from several threads at once.
int run_process(const std::vector<std::string>& argv, const fs::path& log) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return -1;
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// A fresh private directory for one compile.
fs::path make_work_dir() {
  std::string pattern = (fs::temp_directory_path() / "deepvisor-host-XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) throw HostCompileError("cannot create a temporary directory");
  return pattern;
}

struct RemoveDir {
  fs::path dir;
  ~RemoveDir() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

std::string first_line(const std::string& text) { return text.substr(0, text.find('\n')); }

// The lines of /proc/cpuinfo that -march=native depends on.
std::string cpu_description() {
  std::ifstream in("/proc/cpuinfo");
  std::string model, flags;
  for (std::string line; std::getline(in, line) && (model.empty() || flags.empty());) {
    if (model.empty() && line.rfind("model name", 0) == 0) model = line;
    if (flags.empty() && line.rfind("flags", 0) == 0) flags = line;
  }
  return model + "\n" + flags;
}

// glibc 2.35 added most vector functions (erff, tanhf, log1pf, ...).
bool libmvec_complete() {
  void* h = ::dlopen("libmvec.so.1", RTLD_LAZY | RTLD_LOCAL);
  return h != nullptr && ::dlsym(h, "_ZGVbN4v_erff") != nullptr && ::dlsym(h, "_ZGVeN8v_log1p") != nullptr;
}

// dlopen needs a file: the library is written to a private temporary file,
// opened and unlinked (the mapping outlives the name).
void* load_library(const std::string& bytes) {
  std::string path = (fs::temp_directory_path() / "deepvisor-host-XXXXXX.so").string();
  const int fd = ::mkstemps(path.data(), 3);
  if (fd < 0) throw HostCompileError("cannot create a temporary file for a host kernel");
  ::close(fd);
  const bool written = write_file(path, bytes);
  void* handle = written ? ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL) : nullptr;
  const std::string why = written ? (handle ? "" : std::string(::dlerror())) : "cannot write " + path;
  ::unlink(path.c_str());
  if (handle == nullptr) throw HostCompileError("cannot load a host kernel: " + why);
  return handle;
}

}  // namespace

HostCompiler::HostCompiler(std::optional<fs::path> cache_dir)
    : flags_{"-O3", "-march=native", "-mprefer-vector-width=512", "-std=c++17", "-ffp-contract=off",
             "-fno-math-errno", "-fopenmp-simd", "-fPIC", "-shared", "-w"} {
  if (cache_dir) disk_.emplace(std::move(*cache_dir));
}

HostCompiler& HostCompiler::global() {
  static HostCompiler compiler(DiskCache::enabled()
                                   ? std::optional<fs::path>(DiskCache::default_dir().parent_path() / "host")
                                   : std::nullopt);
  return compiler;
}

const HostCompiler::Toolchain& HostCompiler::toolchain() const {
  std::call_once(toolchain_once_, [this] {
    auto t = std::make_unique<Toolchain>();
    const char* env = std::getenv("CXX");
    const std::string wanted = env != nullptr && env[0] != '\0' ? env : "g++";
    t->cxx = find_on_path(wanted);
    if (t->cxx.empty()) t->why_not = "no host compiler: " + wanted + " is not on PATH";
    if (!t->cxx.empty()) {
      const fs::path dir = make_work_dir();
      RemoveDir cleanup{dir};
      if (run_process({t->cxx, "--version"}, dir / "version") != 0) {
        t->why_not = "no host compiler: " + t->cxx + " --version failed";
        t->cxx.clear();
      } else {
        t->version = first_line(read_file(dir / "version"));
      }
    }
    t->cpu = cpu_description();
    t->vector_math = libmvec_complete();
    toolchain_ = std::move(t);
  });
  return *toolchain_;
}

bool HostCompiler::available() const { return !toolchain().cxx.empty(); }
std::string HostCompiler::unavailable_reason() const { return toolchain().why_not; }
bool HostCompiler::vector_math_available() const { return toolchain().vector_math; }

std::string HostCompiler::cache_key(const std::string& source) const {
  std::string flags;
  for (const auto& f : flags_) flags += f + "\n";
  return content_key({kKeySchema, source, toolchain().version, flags, toolchain().cpu});
}

HostKernelFn HostCompiler::get_function(const std::string& source, const std::string& name) {
  void* handle = library(source);
  void* f = ::dlsym(handle, name.c_str());
  if (f == nullptr) throw HostCompileError("host kernel library has no function " + name);
  return reinterpret_cast<HostKernelFn>(f);
}

void* HostCompiler::library(const std::string& source) {
  if (!available()) throw std::runtime_error(unavailable_reason());
  const std::string key = cache_key(source);
  std::promise<void*> promise;
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (auto it = memory_.find(key); it != memory_.end()) {
      ++stats_.memory_cache_hits;
      std::shared_future<void*> entry = it->second;
      lock.unlock();
      return entry.get();  // waits while another thread compiles it
    }
    memory_.emplace(key, promise.get_future().share());
  }
  try {
    void* handle = compile_or_load(key, source);
    promise.set_value(handle);
    return handle;
  } catch (...) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      memory_.erase(key);  // a later call tries again
    }
    promise.set_exception(std::current_exception());
    throw;
  }
}

void* HostCompiler::compile_or_load(const std::string& key, const std::string& source) {
  if (disk_) {
    if (std::optional<std::string> bytes = disk_->load(key)) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        ++stats_.disk_cache_hits;
      }
      return load_library(*bytes);
    }
  }
  const std::string bytes = compile(source);
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.compiles;
  }
  if (disk_) disk_->store(key, bytes);
  return load_library(bytes);
}

std::string HostCompiler::compile(const std::string& source) const {
  const fs::path dir = make_work_dir();
  RemoveDir cleanup{dir};
  if (!write_file(dir / "kernel.cpp", source)) throw HostCompileError("cannot write " + (dir / "kernel.cpp").string());
  std::vector<std::string> argv{toolchain().cxx};
  argv.insert(argv.end(), flags_.begin(), flags_.end());
  argv.insert(argv.end(), {"-o", (dir / "kernel.so").string(), (dir / "kernel.cpp").string()});
  const int status = run_process(argv, dir / "log");
  if (status != 0) {
    std::string log = read_file(dir / "log");
    if (log.size() > 4000) log = log.substr(0, 4000) + "\n...";
    throw HostCompileError("the host compiler (" + toolchain().cxx + ") failed with status " + std::to_string(status) +
                           ":\n" + log);
  }
  return read_file(dir / "kernel.so");
}

HostCompiler::Stats HostCompiler::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

}  // namespace dv::runtime
