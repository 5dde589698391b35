#include "runtime/kernel_compiler.h"

#include <cstdlib>
#include <stdexcept>

namespace dv::runtime {
namespace {

// Bumped when the way keys or options are made changes, to orphan old entries.
constexpr const char* kKeySchema = "deepvisor-kernel-v1";

std::string join(const std::vector<std::string>& parts, char separator) {
  std::string out;
  for (const std::string& p : parts) {
    out += p;
    out += separator;
  }
  return out;
}

}  // namespace

KernelCompiler::KernelCompiler(std::optional<std::filesystem::path> cache_dir, const Nvrtc& nvrtc)
    : nvrtc_(nvrtc) {
  if (cache_dir) disk_.emplace(std::move(*cache_dir));
  // Generated code may use __half / __nv_bfloat16, whose headers NVRTC lacks.
  if (!nvrtc_.cuda_include_dir().empty()) {
    extra_options_.push_back("--include-path=" + nvrtc_.cuda_include_dir());
  }
}

KernelCompiler& KernelCompiler::global() {
  static KernelCompiler compiler(
      DiskCache::enabled() ? std::optional<std::filesystem::path>(DiskCache::default_dir())
                           : std::nullopt);
  return compiler;
}

std::string KernelCompiler::cache_key(const std::string& source, int arch) const {
  std::vector<std::string> options = Nvrtc::default_options(arch);
  options.insert(options.end(), extra_options_.begin(), extra_options_.end());
  const auto [major, minor] = nvrtc_.version();
  const std::string target = "sm_" + std::to_string(arch);
  const std::string version = "nvrtc-" + std::to_string(major) + "." + std::to_string(minor);
  const std::string joined = join(options, '\n');
  return content_key({kKeySchema, source, target, version, joined});
}

std::string KernelCompiler::get_cubin(const std::string& source, const std::string& kernel_name,
                                      int arch) {
  if (!nvrtc_.available()) {
    // The key needs NVRTC's version, so not even cached kernels can be found.
    throw std::runtime_error("cannot compile kernel '" + kernel_name +
                             "': " + nvrtc_.unavailable_reason());
  }
  const std::string key = cache_key(source, arch);

  std::promise<std::string> promise;
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (auto it = memory_.find(key); it != memory_.end()) {
      ++stats_.memory_cache_hits;
      std::shared_future<std::string> entry = it->second;
      lock.unlock();
      return entry.get();  // waits if another thread is still compiling it
    }
    memory_.emplace(key, promise.get_future().share());
  }
  // This thread owns the key now; compile outside the lock so other kernels proceed.
  try {
    std::string cubin = compile_or_load(key, source, kernel_name, arch);
    promise.set_value(cubin);
    return cubin;
  } catch (...) {
    {
      // Forget the failure so that a later call tries again.
      std::lock_guard<std::mutex> lock(mu_);
      memory_.erase(key);
    }
    promise.set_exception(std::current_exception());
    throw;
  }
}

std::string KernelCompiler::compile_or_load(const std::string& key, const std::string& source,
                                            const std::string& kernel_name, int arch) {
  if (disk_) {
    if (std::optional<std::string> cubin = disk_->load(key)) {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.disk_cache_hits;
      return std::move(*cubin);
    }
  }
  std::string cubin = nvrtc_.compile_cubin(source, kernel_name, arch, extra_options_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.nvrtc_compiles;
  }
  if (disk_) disk_->store(key, cubin);
  return cubin;
}

KernelCompiler::CompileStats KernelCompiler::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

}  // namespace dv::runtime
