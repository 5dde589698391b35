#include "runtime/autotune.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <sstream>
#include <stdexcept>

#include "ir/dtype.h"
#include "runtime/cuda_driver.h"
#include "runtime/log.h"

namespace dv::runtime {

namespace {

std::string source_key(const std::string& source) { return content_key({"source", source}); }
std::string source_key(const codegen::KernelCandidate& c) { return source_key(c.kernel.source); }

// "v4 <source key> <measured> <the tuning's fields>"
std::string serialize(const std::string& source, const codegen::KernelTuning& t, bool measured) {
  std::ostringstream out;
  out << "v4 " << source << ' ' << measured << ' ' << t.pointwise_threads << ' ' << t.pointwise_chunks << ' '
      << t.row_chunks_per_thread << ' ' << t.row_max_threads << ' ' << t.row_force_looped << ' ' << t.row_loop_hints
      << ' ' << t.row_loop_moments << ' ' << t.row_one_step_looped << ' ' << t.col_rows_per_block << ' '
      << t.row_block_threads << ' ' << t.stream_hints << ' ' << t.fast_math << ' ' << t.row_whole_warps;
  return out.str();
}

}  // namespace

struct Autotuner::Choice {
  std::string source;  // the chosen source's content key
  bool measured = false;
  codegen::KernelTuning tuning;
};

std::optional<Autotuner::Choice> Autotuner::find(const std::string& key) {
  std::optional<std::string> text;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = memory_.find(key); it != memory_.end()) text = it->second;
  }
  if (!text && disk_) text = disk_->load(key);
  if (!text) return std::nullopt;
  std::istringstream in(*text);
  std::string version;
  Choice c;
  codegen::KernelTuning& t = c.tuning;
  in >> version >> c.source >> c.measured >> t.pointwise_threads >> t.pointwise_chunks >> t.row_chunks_per_thread >>
      t.row_max_threads >> t.row_force_looped >> t.row_loop_hints >> t.row_loop_moments >> t.row_one_step_looped >>
      t.col_rows_per_block >> t.row_block_threads >> t.stream_hints >> t.fast_math >> t.row_whole_warps;
  if (!in || version != "v4") return std::nullopt;  // another format: measure again
  std::lock_guard<std::mutex> lock(mu_);
  memory_[key] = *text;
  return c;
}

void Autotuner::remember(const std::string& key, const codegen::KernelCandidate& chosen, bool measured) {
  const std::string text = serialize(source_key(chosen), chosen.tuning, measured);
  {
    std::lock_guard<std::mutex> lock(mu_);
    memory_[key] = text;
  }
  if (disk_) disk_->store(key, text);
}

void Autotuner::count_hit(const Choice& c) {
  if (!c.measured) return;
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.cache_hits;
}

Autotuner::Autotuner(std::optional<std::filesystem::path> dir) {
  if (dir) disk_.emplace(*dir);
}

Autotuner& Autotuner::global() {
  static Autotuner tuner(DiskCache::enabled()
                             ? std::optional<std::filesystem::path>(DiskCache::default_dir().parent_path() / "autotune")
                             : std::nullopt);
  return tuner;
}

bool Autotuner::enabled() {
  const char* v = std::getenv("DEEPVISOR_AUTOTUNE");
  return v == nullptr || std::string(v) != "0";
}

double Autotuner::budget_ms() {
  const char* v = std::getenv("DEEPVISOR_AUTOTUNE_BUDGET_MS");
  if (v == nullptr || v[0] == '\0') return 150.0;
  const double ms = std::atof(v);
  return ms > 0 ? ms : 150.0;
}

bool Autotuner::cold_l2(std::size_t kernel_bytes, std::size_t l2_bytes) {
  const char* v = std::getenv("DEEPVISOR_AUTOTUNE_COLD_L2");
  if (v != nullptr && std::string(v) == "1") return true;
  if (v != nullptr && std::string(v) == "0") return false;
  return l2_bytes > 0 && kernel_bytes > l2_bytes / 2;
}

std::string Autotuner::key(const AutotuneDevice& d, const std::string& default_source) {
  return content_key({"autotune-v2", d.name, std::to_string(d.sm_count), std::to_string(d.arch),
                      std::to_string(d.driver_version), d.nvrtc_version, default_source});
}

std::optional<std::size_t> Autotuner::lookup(const std::string& key,
                                             const std::vector<codegen::KernelCandidate>& candidates) {
  const std::optional<Choice> c = find(key);
  if (!c) return std::nullopt;
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    if (source_key(candidates[i]) != c->source) continue;
    count_hit(*c);
    return i;
  }
  return std::nullopt;  // the candidates changed since (another emitter): measure again
}

std::optional<codegen::KernelCandidate> Autotuner::lookup(const std::string& key, const codegen::EmitFn& emit) {
  const std::optional<Choice> c = find(key);
  if (!c) return std::nullopt;
  codegen::KernelCandidate k{c->tuning, {}};
  try {
    k.kernel = emit(c->tuning);
  } catch (const std::invalid_argument&) {
    return std::nullopt;
  }
  if (source_key(k.kernel.source) != c->source) return std::nullopt;
  count_hit(*c);
  return k;
}

namespace {

void log_choice(const std::vector<codegen::KernelCandidate>& candidates, const std::vector<double>& best_ms,
                std::size_t chosen, int rounds) {
  if (!log_enabled("autotune")) return;
  std::ostringstream out;
  out << candidates[chosen].kernel.name << ": " << codegen::to_string(candidates[chosen].tuning) << " (" << rounds
      << " rounds, best us:";
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    out << ' ' << codegen::to_string(candidates[i].tuning) << '=';
    if (std::isfinite(best_ms[i])) out << best_ms[i] * 1000.0;
    else out << '-';
  }
  out << ")";
  log_event("autotune", out.str());
}

}  // namespace

std::size_t Autotuner::select(const std::string& key, const std::vector<codegen::KernelCandidate>& candidates,
                              const TimeFn& time, double budget_ms) {
  if (candidates.empty()) return 0;
  if (candidates.size() == 1) {
    remember(key, candidates.front(), false);
    return 0;
  }
  const auto start = std::chrono::steady_clock::now();
  auto elapsed_ms = [&] {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  };
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> best_ms(candidates.size(), inf);
  std::vector<bool> dropped(candidates.size(), false);
  int rounds = 0;
  bool over_budget = false;
  for (int round = 0; round < kRounds && !over_budget; ++round, ++rounds) {
    for (std::size_t i = 0; i < candidates.size(); ++i) {
      if (dropped[i]) continue;
      if ((round > 0 || i > 0) && elapsed_ms() > budget_ms) {
        over_budget = true;
        break;
      }
      double ms = inf;
      try {
        ms = time(i);
      } catch (const std::exception&) {
        dropped[i] = true;
        continue;
      }
      if (std::isfinite(ms)) best_ms[i] = std::min(best_ms[i], ms);
    }
  }
  // The fastest; ties keep the earlier candidate. Another than the first
  // only if it beats the first by the margin.
  std::optional<std::size_t> best;
  for (std::size_t i = 0; i < candidates.size(); ++i)
    if (std::isfinite(best_ms[i]) && (!best || best_ms[i] < best_ms[*best])) best = i;
  if (best && *best != 0 && std::isfinite(best_ms[0]) && best_ms[*best] > best_ms[0] * (1.0 - kMargin)) best = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.seconds += elapsed_ms() / 1000.0;
    if (!best) return 0;
    ++stats_.kernels_tuned;
  }
  log_choice(candidates, best_ms, *best, rounds);
  remember(key, candidates[*best], true);
  return *best;
}

Autotuner::Stats Autotuner::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void Autotuner::clear_memory() {
  std::lock_guard<std::mutex> lock(mu_);
  memory_.clear();
}

namespace {

// F_SETLKW on the whole file; a signal that interrupts the wait waits again.
bool lock_whole_file(int fd, short type) {
  struct flock whole {};
  whole.l_type = type;
  whole.l_whence = SEEK_SET;
  while (fcntl(fd, type == F_UNLCK ? F_SETLK : F_SETLKW, &whole) != 0)
    if (errno != EINTR) return false;
  return true;
}

}  // namespace

AutotuneTurn::AutotuneTurn() {
  const char* path = std::getenv("DEEPVISOR_AUTOTUNE_LOCK");
  if (path == nullptr || path[0] == '\0') return;
  fd_ = ::open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ >= 0 && lock_whole_file(fd_, F_WRLCK)) return;
  log_event("autotune", std::string("DEEPVISOR_AUTOTUNE_LOCK=") + path + ": " + std::strerror(errno) +
                            "; timing without the lock");
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

AutotuneTurn::~AutotuneTurn() {
  if (fd_ < 0) return;
  lock_whole_file(fd_, F_UNLCK);
  ::close(fd_);
}

namespace {

std::size_t scratch_bytes(const ir::KernelBuffer& b) {
  return (static_cast<std::size_t>(std::max<std::int64_t>(1, b.numel)) * ir::dtype_size(b.dtype) + 15) / 16 * 16;
}

}  // namespace

std::size_t TimingScratch::bytes_of(const ir::Kernel& kernel) {
  std::size_t bytes = 0;
  for (const ir::KernelBuffer& b : kernel.buffers) bytes += scratch_bytes(b);
  return bytes;
}

TimingScratch::TimingScratch(const ir::Kernel& kernel, std::size_t flush_bytes) {
  CudaDriver& driver = CudaDriver::instance();
  try {
    if (flush_bytes > 0) {
      flush_ = driver.mem_alloc(flush_bytes);
      flush_bytes_ = flush_bytes;
    }
    for (const ir::KernelBuffer& b : kernel.buffers) {
      const std::size_t bytes = scratch_bytes(b);
      buffers_.push_back(driver.mem_alloc(bytes));
      driver.memset_zero(buffers_.back(), bytes);
      pointers_.push_back(reinterpret_cast<void*>(buffers_.back()));
    }
    start_ = driver.event_create();
    stop_ = driver.event_create();
  } catch (...) {
    release();
    throw;
  }
}

TimingScratch::~TimingScratch() { release(); }

void TimingScratch::release() noexcept {
  // Never throws (it runs in the destructor): after a candidate faulted, the
  // context's sticky error fails every free, and terminate would end the
  // user's process.
  CudaDriver& driver = CudaDriver::instance();
  auto quietly = [](auto&& f) {
    try {
      f();
    } catch (...) {
    }
  };
  if (start_ != nullptr) quietly([&] { driver.event_destroy(start_); });
  if (stop_ != nullptr) quietly([&] { driver.event_destroy(stop_); });
  start_ = stop_ = nullptr;
  for (std::uint64_t p : buffers_) quietly([&] { driver.mem_free(p); });
  buffers_.clear();
  pointers_.clear();
  if (flush_ != 0) quietly([&] { driver.mem_free(flush_); });
  flush_ = 0;
}

double TimingScratch::time_cold(const std::function<void()>& launch, void* stream) {
  CudaDriver& driver = CudaDriver::instance();
  std::vector<double> ms;
  for (int i = 0; i < 10; ++i) {
    driver.memset_zero_async(flush_, flush_bytes_, stream);
    driver.event_record(start_, stream);
    launch();
    driver.event_record(stop_, stream);
    ms.push_back(driver.elapsed_ms(start_, stop_));
  }
  std::nth_element(ms.begin(), ms.begin() + ms.size() / 2, ms.end());
  return ms[ms.size() / 2];
}

double TimingScratch::time(CUfunction f, const codegen::CudaKernel& emitted, const std::vector<std::uint8_t>& size_table,
                           void* stream) {
  CudaDriver& driver = CudaDriver::instance();
  std::vector<void*> pointers = pointers_;
  std::vector<void*> args;
  for (auto& p : pointers) args.push_back(&p);
  if (!emitted.size_args.empty()) args.push_back(const_cast<std::uint8_t*>(size_table.data()));
  const auto& l = emitted.launch;
  auto launch = [&] {
    driver.launch(f, l.grid[0], l.grid[1], l.grid[2], l.block[0], l.block[1], l.block[2], l.shared_bytes, stream,
                  args.data());
  };
  // Warm-up (module load, caches), then one timed launch to size the run.
  launch();
  if (flush_ != 0) return time_cold(launch, stream);
  driver.event_record(start_, stream);
  launch();
  driver.event_record(stop_, stream);
  const double once = std::max(1e-3, static_cast<double>(driver.elapsed_ms(start_, stop_)));
  const int reps = static_cast<int>(std::clamp(std::ceil(1.0 / once), 3.0, 100.0));
  driver.event_record(start_, stream);
  for (int i = 0; i < reps; ++i) launch();
  driver.event_record(stop_, stream);
  return driver.elapsed_ms(start_, stop_) / reps;
}

}  // namespace dv::runtime
