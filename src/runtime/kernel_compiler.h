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
    std::int64_t nvrtc_compiles = 0;  // kernels NVRTC compiled
    std::int64_t nvrtc_programs = 0;  // NVRTC programs that compiled them (several kernels to one)
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

  // The cubins of many kernels, in order, as get_cubin gives each: those
  // missing from both caches are compiled by compile_threads() threads,
  // several to an NVRTC program (nvrtc_batch.h; a program that fails is
  // compiled again kernel by kernel, so errors name their kernel). A kernel's
  // cubin may then hold other kernels' entry points too; on disk the
  // program's cubin is one entry and each kernel's entry refers to it.
  // Throws the first failure once every kernel is done.
  struct Request {
    const std::string* source;
    const std::string* name;
  };
  std::vector<std::string> get_cubins(const std::vector<Request>& requests, int arch);

  // DEEPVISOR_COMPILE_THREADS, else up to 4 (one a core): NVRTC compiles did
  // not run faster beyond 2 threads on the H100 machine (bench/NOTES.md).
  static std::size_t compile_threads();

  // The content key of a compile: source, target, NVRTC version and options.
  std::string cache_key(const std::string& source, int arch) const;

  // Options passed to NVRTC after Nvrtc::default_options(arch).
  const std::vector<std::string>& extra_options() const { return extra_options_; }

  CompileStats stats() const;

 private:
  std::string compile_or_load(const std::string& key, const std::string& source,
                              const std::string& kernel_name, int arch);
  struct Claim;  // a kernel of get_cubins that this call compiles or loads
  void load_or_compile_claims(std::vector<Claim>& claims, int arch);
  // A kernel's cubin from disk, following a reference to its program's entry
  // (programs: those read so far).
  std::optional<std::string> load_entry(const std::string& key,
                                        std::unordered_map<std::string, std::string>& programs) const;
  void store_compiled(const std::vector<Claim*>& compiled) const;
  void compile_batch(std::vector<Claim*>& members, int arch);
  void count_compiled(std::int64_t kernels);

  const Nvrtc& nvrtc_;
  std::optional<DiskCache> disk_;
  std::vector<std::string> extra_options_;

  mutable std::mutex mu_;  // guards memory_ and stats_
  // A shared_future per key: the first caller compiles, later ones wait on it.
  std::unordered_map<std::string, std::shared_future<std::string>> memory_;
  CompileStats stats_;
};

}  // namespace dv::runtime
