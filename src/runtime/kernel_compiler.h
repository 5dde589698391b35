// CUDA C source -> cubin, through three tiers: an in-memory map, the on-disk
// cache (shared by processes) and NVRTC. Thread-safe.
#pragma once

#include <cstdint>
#include <filesystem>
#include <future>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "runtime/disk_cache.h"
#include "runtime/nvrtc.h"

namespace dv::runtime {

class KernelCompiler {
 public:
  struct CompileStats {
    std::int64_t nvrtc_compiles = 0;
    std::int64_t disk_cache_hits = 0;
    std::int64_t memory_cache_hits = 0;
  };

  // cache_dir: where compiled kernels persist; nullopt disables the disk tier.
  // nvrtc: the compiler to use (tests may pass their own).
  explicit KernelCompiler(std::optional<std::filesystem::path> cache_dir,
                          const Nvrtc& nvrtc = Nvrtc::instance());

  // The process-wide compiler over DiskCache::default_dir() (no disk tier when
  // DEEPVISOR_DISK_CACHE=0).
  static KernelCompiler& global();

  // The cubin of `source` for sm_<arch>: from memory, else disk, else NVRTC (and
  // then stored to disk). kernel_name names the program in error messages.
  // Throws CompileError if NVRTC rejects the source, std::runtime_error if NVRTC
  // is unavailable. Concurrent calls for one key compile it once.
  std::string get_cubin(const std::string& source, const std::string& kernel_name, int arch);

  // The content key of a compile: source, target, NVRTC version and options.
  std::string cache_key(const std::string& source, int arch) const;

  // Options passed to NVRTC after Nvrtc::default_options(arch).
  const std::vector<std::string>& extra_options() const { return extra_options_; }

  CompileStats stats() const;

 private:
  std::string compile_or_load(const std::string& key, const std::string& source,
                              const std::string& kernel_name, int arch);

  const Nvrtc& nvrtc_;
  std::optional<DiskCache> disk_;
  std::vector<std::string> extra_options_;

  mutable std::mutex mu_;  // guards memory_ and stats_
  // A shared_future per key: the first caller compiles, later ones wait on it.
  std::unordered_map<std::string, std::shared_future<std::string>> memory_;
  CompileStats stats_;
};

}  // namespace dv::runtime
