// Kernel configurations chosen by measurement (issue 12, item 1).
//
// For a kernel with more than one candidate (codegen/kernel_configs.h), the
// first compile on a GPU times the candidates on scratch buffers (never the
// user's tensors) within a time budget and keeps the fastest. The choice is
// remembered in memory and on disk, keyed by the device (name, SM count,
// architecture), the driver and NVRTC versions and the default candidate's
// source (the kernel's shape class: every size the emitter sees is in it), so
// a warm start measures nothing. DEEPVISOR_AUTOTUNE=0: the heuristic alone.
//
// The selection and the cache take the timing as a function, so they are
// tested without a GPU; time_on_device is the real timer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "codegen/kernel_configs.h"
#include "runtime/disk_cache.h"

typedef struct CUfunc_st* CUfunction;

namespace dv::runtime {

// What a tuning choice is valid for besides the kernel.
struct AutotuneDevice {
  std::string name;  // e.g. "NVIDIA H200"
  int sm_count = 0;
  int arch = 0;
  int driver_version = 0;
  std::string nvrtc_version;  // "13.0"
};

class Autotuner {
 public:
  struct Stats {
    std::int64_t kernels_tuned = 0;  // kernels whose candidates were timed
    double seconds = 0;              // spent timing them (compiles not included)
    std::int64_t cache_hits = 0;     // choices found in memory or on disk
  };
  // Milliseconds a launch of candidate i; may throw (that candidate is then skipped).
  using TimeFn = std::function<double(std::size_t)>;

  // dir: where choices persist; nullopt keeps them in memory only.
  explicit Autotuner(std::optional<std::filesystem::path> dir);

  // Over <cache root>/autotune, next to the kernels (no disk tier when
  // DEEPVISOR_DISK_CACHE=0).
  static Autotuner& global();
  // DEEPVISOR_AUTOTUNE is not "0".
  static bool enabled();
  // Timing budget a kernel: DEEPVISOR_AUTOTUNE_BUDGET_MS, default 150 ms.
  static double budget_ms();
  // Whether a kernel whose buffers hold `kernel_bytes` is timed with a cold
  // L2 (each launch alone after the L2 is overwritten: TimingScratch), on a
  // device of `l2_bytes` of L2. By default, where its buffers exceed half the
  // L2: back-to-back launches of such a kernel re-read what the last launch
  // left in the L2, which favours the candidates that leave the most there
  // (streaming stores) over the ones that are faster from memory, where that
  // data would be in a real run too (bench/NOTES.md, fortieth session: on
  // an H100, layer_norm 32768x768 f32 chose streaming stores warm, 1.4%
  // slower than the default with the L2 flushed). Smaller kernels are timed
  // warm, as a model's kernels find what the kernel before them wrote.
  // DEEPVISOR_AUTOTUNE_COLD_L2=1: always cold; =0: always warm.
  static bool cold_l2(std::size_t kernel_bytes, std::size_t l2_bytes);

  // The key of a kernel's choice on `device`: content_key of both.
  static std::string key(const AutotuneDevice& device, const std::string& default_source);

  // The remembered choice for `key` among `candidates` (memory, then disk), or
  // nullopt; a hit on a measured choice counts in stats. A choice naming no
  // candidate is a miss.
  std::optional<std::size_t> lookup(const std::string& key, const std::vector<codegen::KernelCandidate>& candidates);

  // The same without the candidates (a warm start emits one kernel, not
  // every candidate): the remembered tuning emitted by `emit`, if its source
  // is the one chosen (else nullopt: the emitter changed, measure again).
  std::optional<codegen::KernelCandidate> lookup(const std::string& key, const codegen::EmitFn& emit);

  // Times the candidates in rounds, every candidate once a round (the first
  // candidate's first timing always; the rest while the budget lasts, at most
  // kRounds rounds), and keeps the candidate whose best time is lowest -- if
  // it beats the first candidate's (the heuristic's) by more than kMargin;
  // else the first. Interleaved rounds and the best of each keep a clock or
  // a neighbour that slows one moment from deciding. The choice is
  // remembered under `key`. A candidate whose timing throws is dropped; if
  // all do, 0 (the default), not remembered. One candidate: nothing timed,
  // remembered as unmeasured (so a warm start need not list the candidates
  // again; no stats either way). DEEPVISOR_LOG=autotune (or all) prints each
  // choice to stderr.
  static constexpr int kRounds = 3;
  static constexpr double kMargin = 0.01;
  std::size_t select(const std::string& key, const std::vector<codegen::KernelCandidate>& candidates,
                     const TimeFn& time, double budget_ms);

  Stats stats() const;
  void clear_memory();  // forgets the in-memory choices (tests: a warm start from disk)

 private:
  std::optional<DiskCache> disk_;
  mutable std::mutex mu_;
  struct Choice;
  std::optional<Choice> find(const std::string& key);
  void remember(const std::string& key, const codegen::KernelCandidate& chosen, bool measured);
  void count_hit(const Choice& c);

  std::unordered_map<std::string, std::string> memory_;  // key -> the choice, serialized as on disk
  Stats stats_;
};

// Held while one plan's candidates are timed. DEEPVISOR_AUTOTUNE_LOCK=PATH:
// an exclusive POSIX record lock on that file (created if missing), so that
// processes sharing a GPU (workers warming up together, a parallel benchmark)
// time their candidates one at a time and no measurement sees another
// process's kernels. The lock belongs to the process: a process that already
// holds it (say, from Python with fcntl.lockf) gets it at once instead of
// waiting for itself, and the release here ends that hold too (POSIX locks
// are per process, not per descriptor). Unset, or a file that cannot be
// opened (logged): nothing is held.
class AutotuneTurn {
 public:
  AutotuneTurn();
  ~AutotuneTurn();
  AutotuneTurn(const AutotuneTurn&) = delete;
  AutotuneTurn& operator=(const AutotuneTurn&) = delete;

 private:
  int fd_ = -1;
};

// Zero-filled device buffers, one per kernel.buffers entry (zero indices stay
// in range): what the candidates of one kernel are timed on, freed with it.
// Needs a current context.
class TimingScratch {
 public:
  // flush_bytes > 0: also a buffer of that many bytes, overwritten before
  // each timed launch so that the launch starts with a cold L2 (about twice
  // the L2's size).
  explicit TimingScratch(const ir::Kernel& kernel, std::size_t flush_bytes = 0);
  // The bytes of the buffers made for `kernel`.
  static std::size_t bytes_of(const ir::Kernel& kernel);
  ~TimingScratch();
  TimingScratch(const TimingScratch&) = delete;
  TimingScratch& operator=(const TimingScratch&) = delete;

  // Milliseconds a launch of `f` (launch configuration and size table of
  // `emitted`) over the buffers on `stream` (a CUstream): one warm-up
  // launch, then enough back-to-back launches for about a millisecond (3 to
  // 100), timed with events; with a flush buffer, the median of 10 launches
  // each timed alone after the flush.
  double time(CUfunction f, const codegen::CudaKernel& emitted, const std::vector<std::uint8_t>& size_table,
              void* stream);

 private:
  void release() noexcept;
  double time_cold(const std::function<void()>& launch, void* stream);
  std::vector<std::uint64_t> buffers_;
  std::uint64_t flush_ = 0;
  std::size_t flush_bytes_ = 0;
  std::vector<void*> pointers_;
  void* start_ = nullptr;
  void* stop_ = nullptr;
};

}  // namespace dv::runtime
