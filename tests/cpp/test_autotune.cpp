// Tests of the configuration space (codegen/kernel_configs.h) and of the
// autotuner's selection and choice cache (runtime/autotune.h) with a fake
// timer: no GPU needed. Every candidate of a set of representative kernels is
// compiled by NVRTC for sm_90.
#define DV_EMITTER_CATALOG_ONLY
#include "test_cuda_emitter.cpp"
#undef DV_EMITTER_CATALOG_ONLY

#include <filesystem>
#include <map>
#include <unistd.h>

#include "codegen/kernel_configs.h"
#include "runtime/autotune.h"
#include "runtime/log.h"
#include "runtime/nvrtc.h"

using namespace emitter_test;
using dv::codegen::KernelCandidate;
using dv::runtime::Autotuner;

namespace {

const DeviceSpec kSpec{};

std::filesystem::path fresh_dir(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() /
             ("dv_autotune_test_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  return dir;
}

}  // namespace

TEST_CASE("candidates: bounded, distinct, the heuristic's first", "[kernel_configs]") {
  for (const TestKernel& t : emitter_test_kernels()) {
    INFO("kernel " << t.kernel.name);
    const auto c = dv::codegen::candidates(t.kernel, kSpec);
    REQUIRE(!c.empty());
    CHECK(c.size() <= dv::codegen::kMaxCandidates);
    CHECK(c.front().tuning == KernelTuning{});
    CHECK(c.front().kernel.source == emit_cuda(t.kernel, kSpec).source);
    std::set<std::string> sources;
    for (const auto& k : c) sources.insert(k.kernel.source);
    CHECK(sources.size() == c.size());
  }
}

TEST_CASE("candidates: each form has alternatives where they matter", "[kernel_configs]") {
  auto n = [](const Kernel& k) { return dv::codegen::candidates(k, kSpec).size(); };
  CHECK(n(gelu_chain("pw", DType::Float32, 1 << 24)) >= 4);
  CHECK(n(softmax("sm", DType::Float32, 8192, 8192)) >= 3);
  CHECK(n(layer_norm("ln", DType::BFloat16, 16384, 4096)) >= 3);
  CHECK(n(column_sum("cs", 1000, 512)) >= 2);
  CHECK(n(gelu_chain("tiny", DType::Float32, 7)) == 1);  // one partial tile: nothing to vary
}

TEST_CASE("candidates: streaming hints and blocks of short rows", "[kernel_configs]") {
  auto find = [](const Kernel& k, auto pred) -> std::string {
    for (const KernelCandidate& c : dv::codegen::candidates(k, kSpec))
      if (pred(c.tuning)) return c.kernel.source;
    return "";
  };
  // A pointwise chain: a streaming candidate loads and stores 16 bytes with .cs; the default does not.
  const Kernel pw = gelu_chain("pw", DType::Float32, 1 << 24);
  const std::string streamed = find(pw, [](const KernelTuning& t) { return t.stream_hints; });
  CHECK(streamed.find("dv_load_stream(reinterpret_cast") != std::string::npos);
  CHECK(streamed.find("dv_store_stream(reinterpret_cast") != std::string::npos);
  const std::string plain = emit_cuda(pw, kSpec).source;
  CHECK(plain.find("dv_load_stream(reinterpret_cast") == std::string::npos);
  CHECK(plain.find("dv_store_stream(reinterpret_cast") == std::string::npos);
  // Many short bf16 rows (attention's softmax over 512): blocks of 128 and 512 threads are candidates.
  const Kernel rows = softmax("sm", DType::BFloat16, 98304, 512);
  CHECK(find(rows, [](const KernelTuning& t) { return t.row_block_threads == 128; })
            .find("__launch_bounds__(128)") != std::string::npos);
  CHECK(find(rows, [](const KernelTuning& t) { return t.row_block_threads == 512; })
            .find("__launch_bounds__(512)") != std::string::npos);
  CHECK(!find(rows, [](const KernelTuning& t) { return t.row_chunks_per_thread == 1; }).empty());
  CHECK(!find(rows, [](const KernelTuning& t) { return t.row_chunks_per_thread == 8; }).empty());
  // Fast exp and division: a candidate where every output is a half, never otherwise.
  const std::string fast = find(rows, [](const KernelTuning& t) { return t.fast_math; });
  CHECK(fast.find("__expf(") != std::string::npos);
  CHECK(fast.find("dv_div_full(") != std::string::npos);
  CHECK(emit_cuda(rows, kSpec).source.find("__expf(") == std::string::npos);
  CHECK(find(softmax("sm32", DType::Float32, 98304, 512), [](const KernelTuning& t) { return t.fast_math; }).empty());
  // Rows of 768 f32 (192 chunks): whole warps that are not a power of two, 6 x 1 chunk and 3 x 2.
  const Kernel ln768 = layer_norm("ln768", DType::Float32, 32768, 768);
  const std::string six = find(ln768, [](const KernelTuning& t) { return t.row_whole_warps && t.row_chunks_per_thread == 1; });
  CHECK(six.find("192 threads per row") != std::string::npos);
  CHECK(six.find("__launch_bounds__(192)") != std::string::npos);
  CHECK(six.find("each thread holds 1 chunks") != std::string::npos);
  const std::string three = find(ln768, [](const KernelTuning& t) { return t.row_whole_warps && t.row_chunks_per_thread == 2; });
  CHECK(three.find("96 threads per row, 2 rows per block of 192 threads") != std::string::npos);
  // A row that does not split into whole warps keeps the default layout.
  const Kernel odd = layer_norm("ln1000", DType::Float32, 4096, 1000);
  CHECK(find(odd, [](const KernelTuning& t) { return t.row_whole_warps && t.row_chunks_per_thread == 1; }).empty());
}

TEST_CASE("every candidate of representative kernels compiles with NVRTC for sm_90", "[kernel_configs][nvrtc]") {
  auto& nvrtc = dv::runtime::Nvrtc::instance();
  if (!nvrtc.available()) {
    WARN("NVRTC unavailable, compile checks skipped: " << nvrtc.unavailable_reason());
    return;
  }
  const Kernel kernels[] = {
      gelu_chain("pw_f32", DType::Float32, (1 << 22) + 8),
      half_chain("pw_bf16_odd", DType::BFloat16, 1000003),
      softmax("softmax_f32", DType::Float32, 8192, 8192),
      softmax("softmax_bf16_odd", DType::BFloat16, 4099, 1000),
      softmax("softmax_bf16_512", DType::BFloat16, 98304, 512),
      layer_norm("ln_f32", DType::Float32, 16384, 4096),
      layer_norm("ln_bf16", DType::BFloat16, 16384, 768),
      layer_norm("ln_f32_768", DType::Float32, 32768, 768),
      layer_norm("ln_f32_long", DType::Float32, 3, 100000),
      column_sum("column_sum", 1000, 512),
  };
  for (const Kernel& k : kernels) {
    for (const KernelCandidate& c : dv::codegen::candidates(k, kSpec)) {
      INFO("kernel " << k.name << " tuning " << dv::codegen::to_string(c.tuning));
      try {
        CHECK(nvrtc.compile_cubin(c.kernel.source, c.kernel.name, 90).size() > 0);
      } catch (const dv::runtime::CompileError& e) {
        FAIL(e.what() << "\n" << e.log());
      }
    }
  }
}

TEST_CASE("autotune: the fastest candidate, remembered in memory and on disk", "[autotune]") {
  const auto dir = fresh_dir("select");
  const Kernel k = gelu_chain("pw", DType::Float32, 1 << 24);
  const auto c = dv::codegen::candidates(k, kSpec);
  REQUIRE(c.size() >= 3);
  dv::runtime::AutotuneDevice device{"Fake GPU", 132, 90, 13000, "13.0"};
  const std::string key = Autotuner::key(device, c.front().kernel.source);
  {
    dv::runtime::AutotuneDevice other = device;
    other.sm_count = 114;
    CHECK(Autotuner::key(other, c.front().kernel.source) != key);
  }
  std::vector<int> timed;
  auto fake = [&](std::size_t i) {
    timed.push_back(static_cast<int>(i));
    if (i == 1) throw std::runtime_error("launch failed");  // skipped
    return i == 2 ? 0.5 : 1.0;
  };
  Autotuner tuner(dir);
  CHECK_FALSE(tuner.lookup(key, c).has_value());
  CHECK(tuner.select(key, c, fake, 1e9) == 2);
  // Every candidate once a round, kRounds rounds; the one that threw only once.
  CHECK(timed.size() == c.size() * Autotuner::kRounds - (Autotuner::kRounds - 1));
  CHECK(std::count(timed.begin(), timed.end(), 1) == 1);
  CHECK(tuner.stats().kernels_tuned == 1);
  CHECK(tuner.lookup(key, c) == std::optional<std::size_t>(2));
  CHECK(tuner.stats().cache_hits == 1);

  // A warm start (another process: a new tuner over the same directory) measures nothing.
  Autotuner warm(dir);
  CHECK(warm.lookup(key, c) == std::optional<std::size_t>(2));
  CHECK(warm.stats().cache_hits == 1);
  CHECK(warm.stats().kernels_tuned == 0);
  warm.clear_memory();
  CHECK(warm.lookup(key, c) == std::optional<std::size_t>(2));

  // Candidates that no longer include the chosen source: a miss, measured again.
  std::vector<KernelCandidate> fewer(c.begin(), c.begin() + 2);
  Autotuner other(dir);
  CHECK_FALSE(other.lookup(key, fewer).has_value());

  // A warm start that emits only the chosen tuning.
  Autotuner emitting(dir);
  auto emit = [&](const KernelTuning& t) { return emit_cuda(k, kSpec, t); };
  auto hit = emitting.lookup(key, emit);
  REQUIRE(hit.has_value());
  CHECK(hit->tuning == c[2].tuning);
  CHECK(hit->kernel.source == c[2].kernel.source);
  CHECK(emitting.stats().cache_hits == 1);
  // An emitter that writes another source for that tuning: a miss.
  CHECK_FALSE(Autotuner(dir).lookup(key, [&](const KernelTuning&) { return c[0].kernel; }).has_value());

  // Without a disk tier nothing persists.
  Autotuner memory_only(std::nullopt);
  CHECK_FALSE(memory_only.lookup(key, c).has_value());
  std::filesystem::remove_all(dir);
}

TEST_CASE("autotune: the budget bounds the timing; ties and failures keep the default", "[autotune]") {
  const Kernel k = gelu_chain("pw", DType::Float32, 1 << 24);
  const auto c = dv::codegen::candidates(k, kSpec);
  REQUIRE(c.size() >= 3);
  Autotuner tuner(std::nullopt);
  int calls = 0;
  // An exhausted budget: the first candidate only.
  CHECK(tuner.select("aa", c, [&](std::size_t i) { ++calls; return i == 0 ? 1.0 : 0.1; }, -1.0) == 0);
  CHECK(calls == 1);
  // Equal times: the earlier (the heuristic's).
  CHECK(tuner.select("bb", c, [](std::size_t) { return 1.0; }, 1e9) == 0);
  // Within the margin of the default: the default; beyond it: the faster.
  const double close = 1.0 - Autotuner::kMargin / 2, far = 1.0 - Autotuner::kMargin * 2;
  CHECK(tuner.select("b1", c, [&](std::size_t i) { return i == 2 ? close : 1.0; }, 1e9) == 0);
  CHECK(tuner.select("b2", c, [&](std::size_t i) { return i == 2 ? far : 1.0; }, 1e9) == 2);
  // Each candidate's best round counts: a slow moment (the first round's
  // default, a later round's candidate 1) decides nothing.
  std::map<std::size_t, int> seen;
  auto noisy = [&](std::size_t i) {
    const int round = seen[i]++;
    if (i == 0) return round == 0 ? 2.0 : 1.0;
    if (i == 1) return round == 0 ? 0.9 : 3.0;
    return 1.5;
  };
  CHECK(tuner.select("b3", c, noisy, 1e9) == 1);
  // Every timing fails: the default, not remembered.
  CHECK(tuner.select("cc", c, [](std::size_t) -> double { throw std::runtime_error("no"); }, 1e9) == 0);
  CHECK_FALSE(tuner.lookup("cc", c).has_value());
  // One candidate: nothing to time; remembered (a warm start need not list
  // the candidates) but not counted as a measured choice.
  const Kernel tiny = gelu_chain("tiny", DType::Float32, 7);
  const auto one = dv::codegen::candidates(tiny, kSpec);
  REQUIRE(one.size() == 1);
  CHECK(tuner.select("dd", one, [](std::size_t) -> double { throw std::logic_error("timed"); }, 1e9) == 0);
  const auto before = tuner.stats();
  auto hit = tuner.lookup("dd", [&](const KernelTuning& t) { return emit_cuda(tiny, kSpec, t); });
  REQUIRE(hit.has_value());
  CHECK(hit->kernel.source == one[0].kernel.source);
  CHECK(tuner.stats().cache_hits == before.cache_hits);
  CHECK(tuner.stats().kernels_tuned == before.kernels_tuned);
}

TEST_CASE("candidates: counts (informative)", "[kernel_configs][.print]") {
  for (const TestKernel& t : emitter_test_kernels()) {
    const auto c = dv::codegen::candidates(t.kernel, kSpec);
    std::string s;
    for (const auto& k : c) s += "\n    " + dv::codegen::to_string(k.tuning);
    WARN(t.kernel.name << ": " << c.size() << s);
  }
}

TEST_CASE("DEEPVISOR_LOG kinds, as the Python side reads them", "[autotune]") {
  const char* saved = std::getenv("DEEPVISOR_LOG");
  const std::string keep = saved != nullptr ? saved : "";
  ::setenv("DEEPVISOR_LOG", " guards , autotune", 1);
  CHECK(dv::runtime::log_enabled("autotune"));
  CHECK(dv::runtime::log_enabled("guards"));
  CHECK_FALSE(dv::runtime::log_enabled("fallbacks"));
  ::setenv("DEEPVISOR_LOG", "all", 1);
  CHECK(dv::runtime::log_enabled("fallbacks"));
  ::unsetenv("DEEPVISOR_LOG");
  CHECK_FALSE(dv::runtime::log_enabled("autotune"));
  if (saved != nullptr) ::setenv("DEEPVISOR_LOG", keep.c_str(), 1);
}

TEST_CASE("Cold-L2 timing: kernels over half the L2 by default, DEEPVISOR_AUTOTUNE_COLD_L2 forces either", "[autotune]") {
  using dv::runtime::Autotuner;
  const char* saved = std::getenv("DEEPVISOR_AUTOTUNE_COLD_L2");
  const std::string keep = saved != nullptr ? saved : "";
  const std::size_t l2 = 50u << 20;
  ::unsetenv("DEEPVISOR_AUTOTUNE_COLD_L2");
  CHECK(Autotuner::cold_l2(64u << 20, l2));  // layer_norm 16384x1024 bf16: 32 MB in, 32 MB out
  CHECK_FALSE(Autotuner::cold_l2(8u << 20, l2));
  CHECK_FALSE(Autotuner::cold_l2(l2 / 2, l2));
  CHECK_FALSE(Autotuner::cold_l2(64u << 20, 0));  // L2 size unknown: warm, as before
  ::setenv("DEEPVISOR_AUTOTUNE_COLD_L2", "1", 1);
  CHECK(Autotuner::cold_l2(8u << 20, l2));
  ::setenv("DEEPVISOR_AUTOTUNE_COLD_L2", "0", 1);
  CHECK_FALSE(Autotuner::cold_l2(64u << 20, l2));
  ::unsetenv("DEEPVISOR_AUTOTUNE_COLD_L2");
  if (saved != nullptr) ::setenv("DEEPVISOR_AUTOTUNE_COLD_L2", keep.c_str(), 1);
}
