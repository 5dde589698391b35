#include "runtime/autotune.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <sstream>
#include <stdexcept>

#include "ir/dtype.h"
#include "runtime/cuda_driver.h"

namespace dv::runtime {

namespace {

bool disk_enabled() {
  const char* v = std::getenv("DEEPVISOR_DISK_CACHE");
  return v == nullptr || std::string(v) != "0";
}

std::string source_key(const std::string& source) { return content_key({"source", source}); }
std::string source_key(const codegen::KernelCandidate& c) { return source_key(c.kernel.source); }

// "v2 <source key> <measured> <the tuning's fields>"
std::string serialize(const std::string& source, const codegen::KernelTuning& t, bool measured) {
  std::ostringstream out;
  out << "v2 " << source << ' ' << measured << ' ' << t.pointwise_threads << ' ' << t.pointwise_chunks << ' '
      << t.row_chunks_per_thread << ' ' << t.row_max_threads << ' ' << t.row_force_looped << ' ' << t.row_loop_hints
      << ' ' << t.row_loop_moments << ' ' << t.row_one_step_looped << ' ' << t.col_rows_per_block << ' '
      << t.row_block_threads << ' ' << t.stream_hints;
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
      t.col_rows_per_block >> t.row_block_threads >> t.stream_hints;
  if (!in || version != "v2") return std::nullopt;  // another format: measure again
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
  static Autotuner tuner(disk_enabled()
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

std::string Autotuner::key(const AutotuneDevice& d, const std::string& default_source) {
  return content_key({"autotune-v1", d.name, std::to_string(d.sm_count), std::to_string(d.arch),
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
  std::optional<std::size_t> best;
  double best_ms = std::numeric_limits<double>::infinity();
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    if (i > 0 && elapsed_ms() > budget_ms) break;
    double ms = 0;
    try {
      ms = time(i);
    } catch (const std::exception&) {
      continue;
    }
    if (!std::isfinite(ms)) continue;
    // Ties keep the earlier candidate (the heuristic's, when it is among them).
    if (ms < best_ms) best = i, best_ms = ms;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.seconds += elapsed_ms() / 1000.0;
    if (!best) return 0;
    ++stats_.kernels_tuned;
  }
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

double time_on_device(CUfunction f, const ir::Kernel& kernel, const codegen::CudaKernel& emitted,
                      const std::vector<std::uint8_t>& size_table, void* stream) {
  CudaDriver& driver = CudaDriver::instance();
  struct Scratch {
    CudaDriver& driver;
    std::vector<std::uint64_t> buffers;
    std::vector<void*> events;
    ~Scratch() {
      for (void* e : events) driver.event_destroy(e);
      for (std::uint64_t p : buffers) driver.mem_free(p);
    }
  } scratch{driver, {}, {}};
  std::vector<void*> pointers;
  for (const ir::KernelBuffer& b : kernel.buffers) {
    const std::size_t bytes =
        (static_cast<std::size_t>(std::max<std::int64_t>(1, b.numel)) * ir::dtype_size(b.dtype) + 15) / 16 * 16;
    scratch.buffers.push_back(driver.mem_alloc(bytes));
    driver.memset_zero(scratch.buffers.back(), bytes);  // zero indices stay in range
    pointers.push_back(reinterpret_cast<void*>(scratch.buffers.back()));
  }
  std::vector<void*> args;
  for (auto& p : pointers) args.push_back(&p);
  if (!emitted.size_args.empty()) args.push_back(const_cast<std::uint8_t*>(size_table.data()));
  const auto& l = emitted.launch;
  auto launch = [&] {
    driver.launch(f, l.grid[0], l.grid[1], l.grid[2], l.block[0], l.block[1], l.block[2], l.shared_bytes, stream,
                  args.data());
  };
  void* a = driver.event_create();
  scratch.events.push_back(a);
  void* b = driver.event_create();
  scratch.events.push_back(b);
  // Warm-up (module load, caches), then one timed launch to size the run.
  launch();
  driver.event_record(a, stream);
  launch();
  driver.event_record(b, stream);
  const double once = std::max(1e-3, static_cast<double>(driver.elapsed_ms(a, b)));
  const int reps = static_cast<int>(std::clamp(std::ceil(1.0 / once), 3.0, 100.0));
  driver.event_record(a, stream);
  for (int i = 0; i < reps; ++i) launch();
  driver.event_record(b, stream);
  return driver.elapsed_ms(a, b) / reps;
}

}  // namespace dv::runtime
