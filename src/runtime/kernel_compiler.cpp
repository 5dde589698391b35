#include "runtime/kernel_compiler.h"

#include <algorithm>
#include <cstdlib>
#include <exception>
#include <stdexcept>
#include <string_view>
#include <thread>
#include <unordered_set>

#include "runtime/nvrtc_batch.h"
#include "runtime/parallel_for.h"

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
    ++stats_.nvrtc_programs;
  }
  if (disk_) disk_->store(key, cubin);
  return cubin;
}

std::size_t KernelCompiler::compile_threads() {
  if (const char* v = std::getenv("DEEPVISOR_COMPILE_THREADS"); v != nullptr && std::atoi(v) > 0)
    return static_cast<std::size_t>(std::atoi(v));
  constexpr std::size_t kDefaultMax = 4;
  return std::min<std::size_t>(kDefaultMax, std::max(1u, std::thread::hardware_concurrency()));
}

struct KernelCompiler::Claim {
  const Request* request;
  std::string key;
  std::promise<std::string> promise;
  std::string cubin;
  std::string program_key;  // compiled with other kernels: the key of the program's disk entry
  std::exception_ptr failure;
};

namespace {

// A kernel's disk entry when its cubin is a program's of several kernels:
// this prefix and the key of the program's one entry, which holds the cubin.
constexpr std::string_view kProgramReference = "dv-program:";

std::string program_reference(const std::string& program_key) {
  return std::string(kProgramReference) + program_key;
}

// Kernels to an NVRTC program at most: past about 8, a bigger program saved
// nothing more (bench/NOTES.md, session 32) and leaves threads idle.
constexpr std::size_t kMaxBatch = 8;

}  // namespace

void KernelCompiler::count_compiled(std::int64_t kernels) {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.nvrtc_compiles += kernels;
  ++stats_.nvrtc_programs;
}

void KernelCompiler::compile_batch(std::vector<Claim*>& members, int arch) {
  if (members.size() > 1) {
    std::vector<const std::string*> sources;
    for (const Claim* c : members) sources.push_back(c->request->source);
    try {
      const std::string cubin = nvrtc_.compile_cubin(
          batch_source(sources), "batch of " + std::to_string(members.size()) + " kernels", arch, extra_options_);
      count_compiled(static_cast<std::int64_t>(members.size()));
      const std::string program_key = content_key({"program", cubin});
      for (Claim* c : members) {
        c->cubin = cubin;
        c->program_key = program_key;
      }
      return;
    } catch (const CompileError&) {
      // Compiled again one by one below, so that the error names its kernel.
    }
  }
  for (Claim* c : members) {
    try {
      c->cubin = nvrtc_.compile_cubin(*c->request->source, *c->request->name, arch, extra_options_);
      count_compiled(1);
    } catch (...) {
      c->failure = std::current_exception();
    }
  }
}

std::optional<std::string> KernelCompiler::load_entry(const std::string& key,
                                                      std::unordered_map<std::string, std::string>& programs) const {
  std::optional<std::string> entry = disk_ ? disk_->load(key) : std::nullopt;
  if (!entry || entry->compare(0, kProgramReference.size(), kProgramReference) != 0) return entry;
  const std::string program_key = entry->substr(kProgramReference.size());
  if (auto it = programs.find(program_key); it != programs.end()) return it->second;
  std::optional<std::string> cubin = DiskCache::valid_key(program_key) ? disk_->load(program_key) : std::nullopt;
  if (cubin) programs.emplace(program_key, *cubin);
  return cubin;  // a lost program entry: the kernel is compiled again
}

void KernelCompiler::load_or_compile_claims(std::vector<Claim>& claims, int arch) {
  std::vector<Claim*> to_compile;
  std::unordered_map<std::string, std::string> programs_read;  // program key -> cubin, read once here
  for (Claim& c : claims) {
    std::optional<std::string> cubin = load_entry(c.key, programs_read);
    if (!cubin) {
      to_compile.push_back(&c);
      continue;
    }
    c.cubin = std::move(*cubin);
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.disk_cache_hits;
  }
  std::vector<std::string> names;
  std::vector<Claim*> batchable_claims, alone;
  for (Claim* c : to_compile) {
    if (!batchable(*c->request->source)) {
      alone.push_back(c);
      continue;
    }
    names.push_back(*c->request->name);
    batchable_claims.push_back(c);
  }
  const std::size_t threads = compile_threads();
  std::vector<std::vector<Claim*>> programs;
  for (const auto& group : plan_batches(names, threads, kMaxBatch)) {
    programs.emplace_back();
    for (std::size_t i : group) programs.back().push_back(batchable_claims[i]);
  }
  for (Claim* c : alone) programs.push_back({c});
  run_on_threads(programs.size(), threads, [&](std::size_t p) { compile_batch(programs[p], arch); });
  if (disk_) store_compiled(to_compile);
}

void KernelCompiler::store_compiled(const std::vector<Claim*>& compiled) const {
  // A program's cubin is stored once, before the references to it.
  std::unordered_set<std::string> programs_stored;
  for (const Claim* c : compiled) {
    if (c->failure) continue;
    if (c->program_key.empty()) {
      disk_->store(c->key, c->cubin);
      continue;
    }
    if (programs_stored.insert(c->program_key).second) disk_->store(c->program_key, c->cubin);
    disk_->store(c->key, program_reference(c->program_key));
  }
}

std::vector<std::string> KernelCompiler::get_cubins(const std::vector<Request>& requests, int arch) {
  if (!nvrtc_.available() && !requests.empty()) {
    throw std::runtime_error("cannot compile kernel '" + *requests[0].name + "': " + nvrtc_.unavailable_reason());
  }
  // Each key is claimed by this call (compiled or loaded here), or was
  // claimed before (another call's result, waited for), or repeats a key of
  // this call (copied).
  std::vector<Claim> claims;
  claims.reserve(requests.size());
  std::vector<std::pair<std::size_t, std::shared_future<std::string>>> earlier;
  std::vector<std::pair<std::size_t, std::size_t>> repeats;  // (request, first request of its key)
  std::vector<std::size_t> claim_of(requests.size(), requests.size());
  std::vector<std::string> keys;
  keys.reserve(requests.size());
  for (const Request& r : requests) keys.push_back(cache_key(*r.source, arch));
  {
    std::unordered_map<std::string, std::size_t> first_with_key;
    std::lock_guard<std::mutex> lock(mu_);
    for (std::size_t i = 0; i < requests.size(); ++i) {
      const std::string& key = keys[i];
      if (auto it = first_with_key.find(key); it != first_with_key.end()) {
        ++stats_.memory_cache_hits;
        repeats.emplace_back(i, it->second);
        continue;
      }
      first_with_key.emplace(key, i);
      if (auto it = memory_.find(key); it != memory_.end()) {
        ++stats_.memory_cache_hits;
        earlier.emplace_back(i, it->second);
        continue;
      }
      claim_of[i] = claims.size();
      claims.push_back(Claim{&requests[i], key, {}, {}, {}, {}});
      memory_.emplace(key, claims.back().promise.get_future().share());
    }
  }
  try {
    load_or_compile_claims(claims, arch);
  } catch (...) {
    for (Claim& c : claims)
      if (c.cubin.empty() && !c.failure) c.failure = std::current_exception();
  }
  std::vector<std::string> out(requests.size());
  std::exception_ptr first_failure;
  for (Claim& c : claims) {
    if (c.failure) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        memory_.erase(c.key);  // a later call tries again
      }
      c.promise.set_exception(c.failure);
      if (!first_failure) first_failure = c.failure;
    } else {
      c.promise.set_value(c.cubin);
    }
  }
  for (std::size_t i = 0; i < requests.size(); ++i)
    if (claim_of[i] < claims.size()) out[i] = std::move(claims[claim_of[i]].cubin);
  for (auto& [i, future] : earlier) {
    try {
      out[i] = future.get();
    } catch (...) {
      if (!first_failure) first_failure = std::current_exception();
    }
  }
  for (auto [i, first] : repeats) out[i] = out[first];
  if (first_failure) std::rethrow_exception(first_failure);
  return out;
}

KernelCompiler::CompileStats KernelCompiler::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

}  // namespace dv::runtime
