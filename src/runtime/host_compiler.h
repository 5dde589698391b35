// Host C++ source -> a loaded function, for the kernels of CPU plans
// (codegen/cpp_emitter.h). Three tiers, as KernelCompiler has for CUDA: an
// in-memory map, the on-disk cache (shared by processes; the shared library
// is the payload) and the host compiler.
//
// The compiler is $CXX if set, else g++ found on PATH, run as
//   CXX -O3 -march=native -mprefer-vector-width=512 -std=c++17
//       -ffp-contract=off -fno-math-errno -fopenmp-simd -fPIC -shared -o out.so src.cpp
// 512-bit vectors where the CPU has them (g++ prefers 256 on recent Xeons:
// measured, softmax 1024x1024 takes half the time with 512, mostly its exp);
// -ffp-contract=off keeps a * b + c two roundings, as in the interpreter;
// -fno-math-errno lets sqrt be an instruction; -fopenmp-simd honours the
// `omp simd` pragmas without linking an OpenMP runtime: threads come from
// ATen (at::parallel_for), so a process never holds two OpenMP pools whose
// spinning threads compete for the cores. The cache key is the source, the
// compiler's version line, the flags and the CPU (-march=native).
//
// Thread-safe; concurrent requests for one source compile it once.
#pragma once

#include <cstdint>
#include <filesystem>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "runtime/disk_cache.h"

namespace dv::runtime {

struct HostCompileError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The entry of a generated kernel (cpp_emitter.h); `sizes`: its size table.
using HostKernelFn = int (*)(void* const* buffers, std::int64_t x_begin, std::int64_t x_end, const std::int64_t* sizes);

class HostCompiler {
 public:
  struct Stats {
    std::int64_t compiles = 0;
    std::int64_t disk_cache_hits = 0;
    std::int64_t memory_cache_hits = 0;
  };

  // cache_dir: nullopt disables the disk tier.
  explicit HostCompiler(std::optional<std::filesystem::path> cache_dir);

  // The process-wide compiler; its disk tier is the "host" folder beside
  // DiskCache::default_dir()'s kernels (none when DEEPVISOR_DISK_CACHE=0).
  static HostCompiler& global();

  // Whether a compiler was found (and why not).
  bool available() const;
  std::string unavailable_reason() const;
  // Whether glibc's libmvec has every vector function the prelude may call.
  bool vector_math_available() const;

  // The function `name` of `source`, compiled or loaded. Throws
  // HostCompileError when the compiler rejects the source or the library
  // does not load, std::runtime_error when there is no compiler.
  HostKernelFn get_function(const std::string& source, const std::string& name);

  std::string cache_key(const std::string& source) const;
  const std::vector<std::string>& flags() const { return flags_; }
  Stats stats() const;

 private:
  struct Toolchain;
  const Toolchain& toolchain() const;
  void* library(const std::string& source);
  void* compile_or_load(const std::string& key, const std::string& source);
  std::string compile(const std::string& source) const;

  std::optional<DiskCache> disk_;
  std::vector<std::string> flags_;
  mutable std::once_flag toolchain_once_;
  mutable std::unique_ptr<Toolchain> toolchain_;

  mutable std::mutex mu_;  // guards memory_ and stats_
  std::unordered_map<std::string, std::shared_future<void*>> memory_;  // key -> dlopen handle
  Stats stats_;
};

}  // namespace dv::runtime
