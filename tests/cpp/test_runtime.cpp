// Tests of the runtime plumbing: SHA-256, the disk cache, NVRTC, the kernel
// compiler and the CUDA driver loader. NVRTC tests skip (with a warning) where
// libnvrtc is missing; driver tests check both the no-GPU and the GPU case.
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "catch.h"
#include "plan_builder.h"
#include "codegen/arena_plan.h"
#include "runtime/cuda_driver.h"
#include "runtime/disk_cache.h"
#include "runtime/kernel_compiler.h"
#include "runtime/nvrtc.h"
#include "runtime/nvrtc_batch.h"
#include "runtime/pool_room.h"
#include "runtime/sha256.h"

namespace fs = std::filesystem;
using namespace dv::runtime;

namespace {

// A fresh directory under the system temp dir, removed with its contents.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "dv_runtime_test_XXXXXX").string();
    char* made = ::mkdtemp(pattern.data());
    REQUIRE(made != nullptr);
    path_ = made;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_file(const fs::path& p, const std::string& data) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << data;
}

// Bytes 0..255 repeated: exercises NULs and high bytes.
std::string binary_blob(std::size_t n, int salt = 0) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 131 + salt) & 0xff);
  return s;
}

std::size_t count_files(const fs::path& dir) {
  std::size_t n = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    (void)entry;
    ++n;
  }
  return n;
}

bool nvrtc_or_warn() {
  if (Nvrtc::instance().available()) return true;
  WARN("NVRTC unavailable, skipping: " << Nvrtc::instance().unavailable_reason());
  return false;
}

const char* const kAddOne = R"(
extern "C" __global__ void add_one(float* x, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] += 1.0f;
}
)";

}  // namespace

// ---------------------------------------------------------------- SHA-256

TEST_CASE("sha256 matches the FIPS 180-4 vectors", "[runtime][sha256]") {
  CHECK(sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  CHECK(sha256_hex(std::string(1000000, 'a')) ==
        "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST_CASE("sha256 gives the same digest fed in pieces", "[runtime][sha256]") {
  const std::string text = binary_blob(1000);
  for (std::size_t step : {1, 7, 63, 64, 65, 999}) {
    Sha256 h;
    for (std::size_t at = 0; at < text.size(); at += step) {
      h.update(std::string_view(text).substr(at, step));
    }
    const Sha256::Digest d = h.digest();
    CHECK(to_hex(d.data(), d.size()) == sha256_hex(text));
  }
  // Lengths around the padding boundary (55, 56, 64 bytes) differ from each other.
  CHECK(sha256_hex(std::string(55, 'x')) != sha256_hex(std::string(56, 'x')));
}

TEST_CASE("content_key length-prefixes its parts", "[runtime][sha256]") {
  const std::string k = content_key({"ab", "c"});
  CHECK(k.size() == 64);
  CHECK(DiskCache::valid_key(k));
  CHECK(k == content_key({"ab", "c"}));
  CHECK(k != content_key({"a", "bc"}));
  CHECK(k != content_key({"abc"}));
  CHECK(content_key({"a"}) != content_key({"a", ""}));
}

// ---------------------------------------------------------------- DiskCache

TEST_CASE("disk cache round trip", "[runtime][disk_cache]") {
  TempDir tmp;
  DiskCache cache(tmp.path() / "not" / "yet" / "made");
  const std::string key = content_key({"round trip"});
  CHECK_FALSE(cache.load(key).has_value());

  const std::string data = binary_blob(100000);
  cache.store(key, data);
  CHECK(fs::exists(cache.path_for(key)));
  CHECK(cache.path_for(key).filename() == key + ".cubin");
  CHECK(cache.load(key) == std::optional<std::string>(data));

  // Overwrite, and an empty payload.
  cache.store(key, "new");
  CHECK(cache.load(key) == std::optional<std::string>("new"));
  const std::string empty_key = content_key({"empty"});
  cache.store(empty_key, "");
  CHECK(cache.load(empty_key) == std::optional<std::string>(""));

  // Only the two entries remain: no temp files left behind.
  CHECK(count_files(cache.dir()) == 2);
}

TEST_CASE("disk cache refuses keys that are not hex", "[runtime][disk_cache]") {
  TempDir tmp;
  DiskCache cache(tmp.path());
  for (const std::string& bad :
       std::vector<std::string>{"", "../escape", "abc/def", "xyz", std::string(200, 'a')}) {
    cache.store(bad, "data");
    CHECK_FALSE(cache.load(bad).has_value());
  }
  CHECK(count_files(tmp.path()) == 0);
}

TEST_CASE("disk cache detects damaged entries", "[runtime][disk_cache]") {
  TempDir tmp;
  DiskCache cache(tmp.path());
  const std::string key = content_key({"damage"});
  const std::string data = binary_blob(4096);
  const fs::path file = cache.path_for(key);

  auto damaged_then_restored = [&](const std::string& bad_bytes) {
    write_file(file, bad_bytes);
    CHECK_FALSE(cache.load(key).has_value());
    CHECK_FALSE(fs::exists(file));  // the bad entry is deleted
    cache.store(key, data);
    CHECK(cache.load(key) == std::optional<std::string>(data));
  };

  cache.store(key, data);
  const std::string good = read_file(file);
  REQUIRE(good.size() > data.size());

  SECTION("a flipped payload byte") {
    std::string bad = good;
    bad[bad.size() - 100] ^= 0x01;
    damaged_then_restored(bad);
  }
  SECTION("a flipped magic byte") {
    std::string bad = good;
    bad[0] = 'X';
    damaged_then_restored(bad);
  }
  SECTION("a truncated file") { damaged_then_restored(good.substr(0, good.size() - 1)); }
  SECTION("a file cut inside the header") { damaged_then_restored(good.substr(0, 10)); }
  SECTION("an empty file") { damaged_then_restored(""); }
  SECTION("trailing garbage") { damaged_then_restored(good + "junk"); }
  SECTION("the entry of another key under this name") {
    const std::string other = content_key({"other"});
    cache.store(other, data);
    damaged_then_restored(read_file(cache.path_for(other)));
  }
}

TEST_CASE("disk cache under concurrent writers and readers", "[runtime][disk_cache]") {
  TempDir tmp;
  DiskCache cache(tmp.path());
  const std::string key = content_key({"concurrent"});
  const std::string data = binary_blob(256 * 1024, 7);

  std::atomic<bool> stored_once{false};
  std::atomic<int> bad_loads{0}, misses_after_store{0}, hits{0}, writers_left{4};
  std::vector<std::thread> threads;
  for (int w = 0; w < 4; ++w) {
    threads.emplace_back([&] {
      for (int i = 0; i < 50; ++i) {
        cache.store(key, data);
        stored_once = true;
      }
      --writers_left;
    });
  }
  for (int r = 0; r < 4; ++r) {
    threads.emplace_back([&] {
      // Read while the writers run, and at least 20 times after they are
      // done (those must hit), however the threads are scheduled.
      for (int after_writers = 0; after_writers < 20;) {
        if (writers_left.load() == 0) ++after_writers;
        const bool after_store = stored_once.load();
        const std::optional<std::string> got = cache.load(key);
        if (!got) {
          // Once an entry exists, rename() only ever replaces it whole.
          if (after_store) ++misses_after_store;
        } else if (*got != data) {
          ++bad_loads;
        } else {
          ++hits;
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  CHECK(bad_loads == 0);
  CHECK(misses_after_store == 0);
  CHECK(hits > 0);
  CHECK(cache.load(key) == std::optional<std::string>(data));
  CHECK(count_files(tmp.path()) == 1);  // no temp files left
}

TEST_CASE("disk cache works across processes", "[runtime][disk_cache]") {
  TempDir tmp;
  DiskCache cache(tmp.path());
  const std::string key = content_key({"processes"});
  const std::string data = binary_blob(64 * 1024, 3);
  std::vector<pid_t> children;
  for (int c = 0; c < 4; ++c) {
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      // Child: store and load repeatedly; exit status 1 on a wrong payload.
      int status = 0;
      for (int i = 0; i < 50; ++i) {
        cache.store(key, data);
        const std::optional<std::string> got = cache.load(key);
        if (!got || *got != data) status = 1;
      }
      ::_exit(status);
    }
    children.push_back(pid);
  }
  for (const pid_t pid : children) {
    int status = -1;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
  }
  CHECK(cache.load(key) == std::optional<std::string>(data));
  CHECK(count_files(tmp.path()) == 1);
}

TEST_CASE("disk cache default directory follows the environment", "[runtime][disk_cache]") {
  const char* saved = std::getenv("DEEPVISOR_CACHE_DIR");
  const std::optional<std::string> restore =
      saved ? std::optional<std::string>(saved) : std::nullopt;
  ::setenv("DEEPVISOR_CACHE_DIR", "/some/where", 1);
  CHECK(DiskCache::default_dir() == fs::path("/some/where/kernels"));
  ::unsetenv("DEEPVISOR_CACHE_DIR");
  CHECK(DiskCache::default_dir().filename() == "kernels");
  CHECK(DiskCache::default_dir().parent_path().filename() == "deepvisor");
  if (restore) ::setenv("DEEPVISOR_CACHE_DIR", restore->c_str(), 1);
}

// ---------------------------------------------------------------- Nvrtc

TEST_CASE("nvrtc reports a missing library", "[runtime][nvrtc]") {
  Nvrtc missing({"/nonexistent/libnvrtc.so"});
  CHECK_FALSE(missing.available());
  CHECK(missing.unavailable_reason().find("/nonexistent/libnvrtc.so") != std::string::npos);
  CHECK(missing.version() == std::make_pair(0, 0));
  CHECK_THROWS_AS(missing.compile_cubin(kAddOne, "add_one", 90, {}), std::runtime_error);
}

TEST_CASE("nvrtc compiles a kernel to a cubin", "[runtime][nvrtc]") {
  if (!nvrtc_or_warn()) return;
  const Nvrtc& nvrtc = Nvrtc::instance();
  CHECK(nvrtc.version().first >= 12);
  CHECK_FALSE(nvrtc.library_path().empty());
  const std::string cubin = nvrtc.compile_cubin(kAddOne, "add_one", 90, {});
  REQUIRE(cubin.size() > 4);
  CHECK(cubin.substr(0, 4) == std::string("\x7f"
                                          "ELF"));
}

TEST_CASE("nvrtc compiles half and bfloat16 code with the toolkit headers", "[runtime][nvrtc]") {
  if (!nvrtc_or_warn()) return;
  const Nvrtc& nvrtc = Nvrtc::instance();
  if (nvrtc.cuda_include_dir().empty()) {
    WARN("no CUDA include directory with cuda_fp16.h found, skipping");
    return;
  }
  const std::string source = R"(
#include <cuda_fp16.h>
#include <cuda_bf16.h>
extern "C" __global__ void to_half(const float* x, __half* h, __nv_bfloat16* b) {
    h[threadIdx.x] = __float2half(x[threadIdx.x]);
    b[threadIdx.x] = __float2bfloat16(x[threadIdx.x]);
}
)";
  const std::string cubin =
      nvrtc.compile_cubin(source, "to_half", 90, {"--include-path=" + nvrtc.cuda_include_dir()});
  CHECK(cubin.substr(0, 4) == std::string("\x7f"
                                          "ELF"));
}

TEST_CASE("nvrtc reports a syntax error with its log and the source", "[runtime][nvrtc]") {
  if (!nvrtc_or_warn()) return;
  const std::string source =
      "extern \"C\" __global__ void broken(float* x) {\n"
      "    x[0] = undeclared_name;\n"
      "}\n";
  try {
    Nvrtc::instance().compile_cubin(source, "broken_kernel", 90, {});
    FAIL("expected a CompileError");
  } catch (const CompileError& e) {
    const std::string what = e.what();
    CHECK(what.find("broken_kernel") != std::string::npos);
    CHECK(what.find("undeclared_name") != std::string::npos);                     // from the log
    CHECK(what.find("   2 |     x[0] = undeclared_name;") != std::string::npos);  // source
    CHECK(e.log().find("error") != std::string::npos);
  }
}

TEST_CASE("numbered_source_excerpt stops after max_lines", "[runtime][nvrtc]") {
  std::string source;
  for (int i = 1; i <= 50; ++i) source += "line " + std::to_string(i) + "\n";
  const std::string excerpt = numbered_source_excerpt(source, 40);
  CHECK(excerpt.find("  40 | line 40") != std::string::npos);
  CHECK(excerpt.find("line 41") == std::string::npos);
  CHECK(excerpt.find("...") != std::string::npos);
}

// ---------------------------------------------------------------- KernelCompiler

TEST_CASE("kernel compiler: memory, then disk, then nvrtc", "[runtime][kernel_compiler]") {
  if (!nvrtc_or_warn()) return;
  TempDir tmp;
  std::string first;
  {
    KernelCompiler compiler(tmp.path());
    first = compiler.get_cubin(kAddOne, "add_one", 90);
    const std::string second = compiler.get_cubin(kAddOne, "add_one", 90);
    CHECK(first == second);
    const KernelCompiler::CompileStats s = compiler.stats();
    CHECK(s.nvrtc_compiles == 1);
    CHECK(s.disk_cache_hits == 0);
    CHECK(s.memory_cache_hits == 1);
    CHECK(fs::exists(DiskCache(tmp.path()).path_for(compiler.cache_key(kAddOne, 90))));
  }
  {
    KernelCompiler fresh(tmp.path());
    CHECK(fresh.get_cubin(kAddOne, "add_one", 90) == first);
    const KernelCompiler::CompileStats s = fresh.stats();
    CHECK(s.nvrtc_compiles == 0);
    CHECK(s.disk_cache_hits == 1);
    CHECK(s.memory_cache_hits == 0);

    // Another architecture is another key.
    CHECK(fresh.cache_key(kAddOne, 80) != fresh.cache_key(kAddOne, 90));
    fresh.get_cubin(kAddOne, "add_one", 80);
    CHECK(fresh.stats().nvrtc_compiles == 1);
  }
}

TEST_CASE("kernel compiler recompiles a damaged disk entry", "[runtime][kernel_compiler]") {
  if (!nvrtc_or_warn()) return;
  TempDir tmp;
  KernelCompiler writer(tmp.path());
  const std::string cubin = writer.get_cubin(kAddOne, "add_one", 90);
  const fs::path file = DiskCache(tmp.path()).path_for(writer.cache_key(kAddOne, 90));
  std::string bytes = read_file(file);
  bytes[bytes.size() / 2] ^= 0x40;
  write_file(file, bytes);

  KernelCompiler reader(tmp.path());
  CHECK(reader.get_cubin(kAddOne, "add_one", 90) == cubin);
  CHECK(reader.stats().nvrtc_compiles == 1);
  CHECK(reader.stats().disk_cache_hits == 0);
  CHECK(DiskCache(tmp.path()).load(reader.cache_key(kAddOne, 90)) ==
        std::optional<std::string>(cubin));
}

TEST_CASE("kernel compiler does not cache failures", "[runtime][kernel_compiler]") {
  if (!nvrtc_or_warn()) return;
  TempDir tmp;
  KernelCompiler compiler(tmp.path());
  const std::string bad = "extern \"C\" __global__ void k() { nope; }\n";
  CHECK_THROWS_AS(compiler.get_cubin(bad, "k", 90), CompileError);
  CHECK_THROWS_AS(compiler.get_cubin(bad, "k", 90), CompileError);
  CHECK(compiler.stats().nvrtc_compiles == 0);
  CHECK(compiler.stats().memory_cache_hits == 0);
  CHECK(count_files(tmp.path()) == 0);
}

TEST_CASE("kernel compiler compiles a key once under concurrency", "[runtime][kernel_compiler]") {
  if (!nvrtc_or_warn()) return;
  TempDir tmp;
  KernelCompiler compiler(tmp.path());
  constexpr int kThreads = 8;
  std::vector<std::string> results(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] { results[t] = compiler.get_cubin(kAddOne, "add_one", 90); });
  }
  for (std::thread& t : threads) t.join();
  for (const std::string& r : results) CHECK(r == results[0]);
  const KernelCompiler::CompileStats s = compiler.stats();
  CHECK(s.nvrtc_compiles == 1);
  CHECK(s.memory_cache_hits == kThreads - 1);
}

TEST_CASE("kernel compiler without a disk tier", "[runtime][kernel_compiler]") {
  if (!nvrtc_or_warn()) return;
  KernelCompiler compiler(std::nullopt);
  compiler.get_cubin(kAddOne, "add_one", 90);
  compiler.get_cubin(kAddOne, "add_one", 90);
  CHECK(compiler.stats().nvrtc_compiles == 1);
  CHECK(compiler.stats().memory_cache_hits == 1);
}

// ---------------------------------------------------------------- batched compiles

namespace {

// A kernel whose helper, constant and macro have the same names in every
// instance (as the generated prelude's do), with another value each time.
std::string scaled_kernel(const std::string& name, int scale) {
  return "#define DV_SCALE " + std::to_string(scale) + "\n"
         "constexpr int kScale = DV_SCALE;\n"
         "__device__ float dv_helper(float v) { return v * kScale; }\n"
         "extern \"C\" __global__ void " + name + "(float* x) { x[threadIdx.x] = dv_helper(x[threadIdx.x]); }\n";
}

}  // namespace

TEST_CASE("plan_batches: each kernel once, no name twice in a program", "[runtime][nvrtc_batch]") {
  const std::vector<std::string> names = {"a", "a", "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"};
  for (std::size_t groups : {1u, 2u, 4u, 16u}) {
    const auto plan = plan_batches(names, groups, 4);
    std::vector<int> seen(names.size(), 0);
    for (const auto& g : plan) {
      CHECK(g.size() <= 4);
      std::set<std::string> in;
      for (std::size_t i : g) {
        ++seen[i];
        CHECK(in.insert(names[i]).second);
      }
    }
    for (int n : seen) CHECK(n == 1);
    CHECK(plan.size() >= std::min<std::size_t>(groups, names.size()));
  }
  CHECK(plan_batches({}, 4, 8).empty());
}

TEST_CASE("batch_source: kernels with the same helper names compile as one program", "[runtime][nvrtc_batch]") {
  const std::string a = scaled_kernel("kernel_a", 2), b = scaled_kernel("kernel_b", 3);
  CHECK(batchable(a));
  CHECK_FALSE(batchable("#include <cuda_fp16.h>\n" + a));
  const std::string program = batch_source({&a, &b});
  CHECK(program.find("#undef DV_SCALE") != std::string::npos);
  if (!nvrtc_or_warn()) return;
  const std::string cubin = Nvrtc::instance().compile_cubin(program, "batch", 90);
  CHECK(cubin.find("kernel_a") != std::string::npos);
  CHECK(cubin.find("kernel_b") != std::string::npos);
}

TEST_CASE("kernel compiler: many kernels, few programs, each kernel cached", "[runtime][kernel_compiler]") {
  if (!nvrtc_or_warn()) return;
  TempDir tmp;
  std::vector<std::string> sources, names;
  for (int i = 0; i < 10; ++i) {
    names.push_back("scaled_" + std::to_string(i));
    sources.push_back(scaled_kernel(names.back(), i));
  }
  sources.push_back(sources[3]);  // a repeat is compiled once
  names.push_back(names[3]);
  std::vector<KernelCompiler::Request> requests;
  for (std::size_t i = 0; i < sources.size(); ++i) requests.push_back({&sources[i], &names[i]});
  std::vector<std::string> cubins;
  {
    KernelCompiler compiler(tmp.path());
    cubins = compiler.get_cubins(requests, 90);
    REQUIRE(cubins.size() == sources.size());
    for (std::size_t i = 0; i < sources.size(); ++i) CHECK(cubins[i].find(names[i]) != std::string::npos);
    const KernelCompiler::CompileStats s = compiler.stats();
    CHECK(s.nvrtc_compiles == 10);
    CHECK(s.nvrtc_programs < 10);
    CHECK(s.memory_cache_hits == 1);
    // Each kernel alone now comes from memory.
    CHECK(compiler.get_cubin(sources[5], names[5], 90) == cubins[5]);
    CHECK(compiler.stats().nvrtc_compiles == 10);
  }
  KernelCompiler fresh(tmp.path());
  CHECK(fresh.get_cubins(requests, 90) == cubins);
  CHECK(fresh.stats().nvrtc_compiles == 0);
  CHECK(fresh.stats().disk_cache_hits == 10);

  // On disk, a program's cubin once, and a small reference a kernel.
  std::int64_t programs = 0;
  std::int64_t references = 0;
  for (const auto& entry : fs::directory_iterator(tmp.path())) {
    if (fs::file_size(entry.path()) < 512) ++references;
    else ++programs;
  }
  CHECK(references + programs == static_cast<std::int64_t>(count_files(tmp.path())));
  CHECK(programs < 10);
  CHECK(references > 0);

  // A program's entry lost: its kernels are compiled again.
  for (const auto& entry : fs::directory_iterator(tmp.path()))
    if (fs::file_size(entry.path()) >= 512) {
      fs::remove(entry.path());
      break;
    }
  KernelCompiler after_loss(tmp.path());
  CHECK(after_loss.get_cubins(requests, 90).size() == sources.size());
  CHECK(after_loss.stats().nvrtc_compiles > 0);
  for (std::size_t i = 0; i < sources.size(); ++i)
    CHECK(after_loss.get_cubin(sources[i], names[i], 90).find(names[i]) != std::string::npos);
}

TEST_CASE("kernel compiler: a broken kernel in a program fails alone, by name", "[runtime][kernel_compiler]") {
  if (!nvrtc_or_warn()) return;
  TempDir tmp;
  KernelCompiler compiler(tmp.path());
  const std::string good1 = scaled_kernel("good_one", 1), good2 = scaled_kernel("good_two", 2);
  const std::string bad = "extern \"C\" __global__ void broken_one() { undeclared_name; }\n";
  const std::string n1 = "good_one", n2 = "good_two", nb = "broken_one";
  try {
    compiler.get_cubins({{&good1, &n1}, {&bad, &nb}, {&good2, &n2}}, 90);
    FAIL("expected a CompileError");
  } catch (const CompileError& e) {
    CHECK(std::string(e.what()).find("broken_one") != std::string::npos);
  }
  CHECK(compiler.stats().nvrtc_compiles == 2);
  // The good ones were kept; the broken one is tried again next time.
  CHECK(compiler.get_cubin(good2, n2, 90).find("good_two") != std::string::npos);
  CHECK(compiler.stats().nvrtc_compiles == 2);
  CHECK_THROWS_AS(compiler.get_cubin(bad, nb, 90), CompileError);
}

// ---------------------------------------------------------------- CudaDriver

TEST_CASE("cuda driver reports a missing library", "[runtime][cuda_driver]") {
  CudaDriver missing({"/nonexistent/libcuda.so.1"});
  CHECK_FALSE(missing.available());
  CHECK(missing.unavailable_reason().find("/nonexistent/libcuda.so.1") != std::string::npos);
  CHECK_THROWS_AS(missing.ensure_context(0), CudaError);
  CHECK_THROWS_AS(missing.device_info(0), CudaError);
  CHECK_THROWS_AS(missing.load_function("x", "k"), CudaError);
  try {
    missing.ensure_context(0);
  } catch (const CudaError& e) {
    CHECK(std::string(e.what()).find("unavailable") != std::string::npos);
  }
}

TEST_CASE("cuda driver: unavailable with a reason, or a sane device", "[runtime][cuda_driver]") {
  CudaDriver& driver = CudaDriver::instance();
  if (!driver.available()) {
    CHECK_FALSE(driver.unavailable_reason().empty());
    WARN("CUDA driver unavailable (expected without a GPU): " << driver.unavailable_reason());
    CHECK_THROWS_AS(driver.ensure_context(0), CudaError);
    return;
  }
  CHECK(driver.device_count() > 0);
  CHECK(driver.driver_version() > 0);
  CHECK_THROWS_AS(driver.ensure_context(driver.device_count()), CudaError);
  driver.ensure_context(0);
  const CudaDriver::DeviceInfo info = driver.device_info(0);
  CHECK(info.arch >= 50);
  CHECK(info.arch < 200);
  CHECK(info.sm_count > 0);
  CHECK(info.max_threads_per_block >= 512);
  CHECK(info.max_shared_per_block_optin >= 48 * 1024);
  CHECK(info.l2_bytes > 0);
}

TEST_CASE("cuda driver runs a compiled kernel", "[runtime][cuda_driver][gpu]") {
  CudaDriver& driver = CudaDriver::instance();
  if (!driver.available() || !nvrtc_or_warn()) {
    WARN("no GPU: skipping the kernel launch test");
    return;
  }
  driver.ensure_context(0);
  const int arch = driver.device_info(0).arch;
  TempDir tmp;
  KernelCompiler compiler(tmp.path());
  const CUfunction add_one =
      driver.load_function(compiler.get_cubin(kAddOne, "add_one", arch), "add_one");

  constexpr int n = 1000;
  std::vector<float> host(n);
  for (int i = 0; i < n; ++i) host[i] = static_cast<float>(i);
  const std::uint64_t buffer = driver.mem_alloc(n * sizeof(float));
  driver.copy_to_device(buffer, host.data(), n * sizeof(float));
  std::uint64_t ptr = buffer;
  int count = n;
  void* args[] = {&ptr, &count};
  driver.launch(add_one, (n + 255) / 256, 1, 1, 256, 1, 1, 0, nullptr, args);
  driver.synchronize();
  driver.copy_to_host(host.data(), buffer, n * sizeof(float));
  for (int i = 0; i < n; ++i) REQUIRE(host[i] == static_cast<float>(i) + 1.0f);

  SECTION("more than 48 KiB of dynamic shared memory") {
    const std::string source = R"(
extern "C" __global__ void smem_sum(float* out, int n) {
    extern __shared__ float s[];
    for (int i = threadIdx.x; i < n; i += blockDim.x) s[i] = 1.0f;
    __syncthreads();
    if (threadIdx.x == 0) {
        float acc = 0.0f;
        for (int i = 0; i < n; ++i) acc += s[i];
        out[0] = acc;
    }
}
)";
    const CUfunction smem_sum =
        driver.load_function(compiler.get_cubin(source, "smem_sum", arch), "smem_sum");
    const int floats = 64 * 1024 / 4;
    int m = floats;
    void* smem_args[] = {&ptr, &m};
    for (int repeat = 0; repeat < 2; ++repeat) {  // the second reuses the raised limit
      driver.launch(smem_sum, 1, 1, 1, 128, 1, 1, floats * 4, nullptr, smem_args);
    }
    driver.synchronize();
    float result = 0.0f;
    driver.copy_to_host(&result, buffer, sizeof(float));
    CHECK(result == static_cast<float>(floats));
  }
  SECTION("a bad launch names the kernel") {
    try {
      driver.launch(add_one, 1, 1, 1, 4096, 1, 1, 0, nullptr, args);  // too many threads
      FAIL("expected a CudaError");
    } catch (const CudaError& e) {
      const std::string what = e.what();
      CHECK(what.find("cuLaunchKernel") != std::string::npos);
      CHECK(what.find("add_one") != std::string::npos);
      CHECK(what.find("CUDA_ERROR_") != std::string::npos);
    }
  }
  SECTION("a missing kernel name") {
    CHECK_THROWS_AS(driver.load_function(compiler.get_cubin(kAddOne, "add_one", arch), "nope"),
                    CudaError);
  }
  driver.mem_free(buffer);
}

TEST_CASE("a graph pool's room holds what would get 20 MiB segments of its own", "[runtime][pool_room]") {
  constexpr std::int64_t MiB = 1 << 20;
  // Requests of 1 MiB or less come from small blocks: no room.
  CHECK(room_for(MiB) == 0);
  CHECK(room_for(14 * MiB) == 14 * MiB);
  CHECK(room_for(MiB + 1) == MiB + 512);  // rounded as the allocator rounds
  CHECK(room_for(3 * MiB) == 3 * MiB);
  // ResNet-50's block with 3 MiB of workspace beside it: one segment for both.
  CHECK(pool_room_bytes(77 * MiB, 3 * MiB) == 80 * MiB);
  // A large block alone gets its own segment anyway: no room.
  CHECK(pool_room_bytes(50 * MiB, 0) == 0);
  // Small ones: 10 MiB, which the allocator does not round up to 20.
  CHECK(pool_room_bytes(4 * MiB, 0) == 10 * MiB);
  CHECK(pool_room_bytes(512 * 1024, 2 * MiB) == 10 * MiB);
  // A small block beside other requests comes from the room, as a large request.
  CHECK(block_request_bytes(4096, 10 * MiB) == MiB + 512);
  CHECK(block_request_bytes(4096, 0) == 4096);  // alone: a small block
  CHECK(block_request_bytes(3 * MiB + 1, 10 * MiB) == 3 * MiB + 512);
  CHECK(pool_room_bytes(4096, 9 * MiB + MiB / 2) == 10 * MiB + MiB / 2 + 512);
  CHECK(pool_room_bytes(4096, 12 * MiB) == 13 * MiB + 512);
  CHECK(pool_room_bytes(0, 0) == 0);
  CHECK(pool_room_bytes(512 * 1024, 0) == 0);
  // The segments the allocator makes.
  CHECK(segment_bytes(4096) == 2 * MiB);
  CHECK(segment_bytes(3 * MiB) == 20 * MiB);
  CHECK(segment_bytes(10 * MiB) == 10 * MiB);
  CHECK(segment_bytes(12 * MiB + 1) == 14 * MiB);
  CHECK(segment_bytes(0) == 0);
  // ResNet-50 at batch 16: a 55 MiB block, 12.25 MiB of cuDNN workspace beside it, or in a window.
  const std::int64_t room = pool_room_bytes(55 * MiB, 12 * MiB + MiB / 4);
  CHECK(pool_bytes(55 * MiB, room) == 68 * MiB);
  CHECK(windowed_pool_room_bytes(55 * MiB, 0) == 55 * MiB);  // one segment for the window and the rest
  CHECK(pool_bytes(55 * MiB, windowed_pool_room_bytes(55 * MiB, 0)) == 56 * MiB);
  CHECK(windowed_pool_room_bytes(4 * MiB, 0) == 10 * MiB);
  CHECK(pool_bytes(50 * MiB, 0) == 50 * MiB);  // a block alone: its own segment
}

TEST_CASE("the room is the most bytes of roomable requests alive at once", "[runtime][pool_room]") {
  constexpr std::int64_t MiB = 1 << 20;
  BesideBlockProbe probe;
  probe.allocated(0x1000, 3 * MiB);   // a workspace
  probe.freed(0x1000);
  probe.allocated(0x2000, 6 * MiB);   // a result beside the block
  probe.allocated(0x1000, 2 * MiB);   // the next workspace, while the result lives
  probe.allocated(0x7000, 4096);      // a small block: not counted
  probe.freed(0x1000);
  probe.freed(0x2000);
  probe.allocated(0x3000, 5 * MiB);
  probe.freed(0x4000);  // freed but not seen allocated: nothing
  CHECK(probe.peak_bytes() == 8 * MiB);
  probe.now_at(7);
  probe.allocated(0x9000, 14 * MiB);  // with the 5 MiB one
  CHECK(probe.peak_bytes() == 19 * MiB);
  using Request = std::pair<int, std::int64_t>;
  CHECK(probe.largest_requests(2) == std::vector<Request>{{7, 14 * MiB}, {-1, 6 * MiB}});
}

TEST_CASE("requests freed by the step that made them are transient, by step", "[runtime][pool_room]") {
  constexpr std::int64_t MiB = 1 << 20;
  BesideBlockProbe probe;
  probe.now_at(0);
  probe.allocated(0x1000, 3 * MiB);  // step 0: a workspace and a copy at once
  probe.allocated(0x2000, 5 * MiB);
  probe.freed(0x2000);
  probe.freed(0x1000);
  probe.now_at(1);
  probe.allocated(0x3000, 6 * MiB);  // a result beside the block, freed at step 3
  probe.allocated(0x1000, 2 * MiB);  // and a workspace of the same step
  probe.freed(0x1000);
  probe.now_at(2);
  probe.allocated(0x1000, 4 * MiB);
  probe.allocated(0x5000, 4096);     // a small block: not counted
  probe.freed(0x1000);
  probe.now_at(3);
  probe.freed(0x3000);
  probe.allocated(0x4000, 7 * MiB);  // an output: never freed
  CHECK(probe.transient_peaks(5) == std::vector<std::int64_t>{8 * MiB, 0, 4 * MiB, 0, 0});
  // Step 1's workspace is not the window's (its step makes a lasting result): beside, with that result.
  CHECK(probe.lasting_peak_bytes() == 8 * MiB);
  CHECK(probe.peak_bytes() == 10 * MiB);  // the result with step 2's workspace
  CHECK(probe.transient_peaks(2) == std::vector<std::int64_t>{8 * MiB, 0});  // steps beyond are left out
}

TEST_CASE("beside a block whose window serves some steps, the others' transient requests count", "[runtime][pool_room]") {
  constexpr std::int64_t MiB = 1 << 20;
  BesideBlockProbe probe;
  probe.allocated(0x9000, 2 * MiB);  // before the first step: a lasting request
  probe.now_at(0);
  probe.allocated(0x1000, 30 * MiB);  // step 0: a large workspace
  probe.freed(0x1000);
  probe.now_at(1);
  probe.allocated(0x2000, 6 * MiB);  // step 1: a lasting result
  probe.now_at(2);
  probe.allocated(0x1000, 12 * MiB);  // step 2: a smaller workspace beside that result
  probe.freed(0x1000);
  const BesideBlock m = probe.measured(3);
  CHECK(m.all == 32 * MiB);
  CHECK(m.lasting == 8 * MiB);
  CHECK(m.transient == std::vector<std::int64_t>{30 * MiB, 0, 12 * MiB});
  CHECK(m.all_at == std::vector<std::int64_t>{32 * MiB, 8 * MiB, 20 * MiB});
  CHECK(m.lasting_at == std::vector<std::int64_t>{2 * MiB, 8 * MiB, 8 * MiB});
  CHECK(m.between_steps == 2 * MiB);
  CHECK(m.beside_window({true, false, true}) == 8 * MiB);
  CHECK(m.beside_window({true, false, false}) == 20 * MiB);  // step 2's workspace beside the result
  CHECK(m.beside_window({false, false, true}) == 32 * MiB);
  CHECK(m.beside_window({}) == m.all);
}

TEST_CASE("the windows worth planning serve all the steps, the larger or the smaller ones", "[runtime][pool_room]") {
  using Windows = std::vector<std::vector<std::int64_t>>;
  CHECK(window_step_choices({0, 0}).empty());
  CHECK(window_step_choices({0, 5, 0}) == Windows{{0, 5, 0}});
  CHECK(window_step_choices({7, 0, 3, 7}) == Windows{{7, 0, 3, 7}, {0, 0, 3, 0}, {7, 0, 0, 7}});
  // Many sizes: a dozen of them, the largest included, each choice once.
  std::vector<std::int64_t> transient;
  for (std::int64_t b = 1; b <= 100; ++b) transient.push_back(b);
  const Windows choices = window_step_choices(transient);
  CHECK(choices.front() == transient);
  CHECK(choices.size() <= 1 + 2 * 13);
  std::vector<std::int64_t> largest_alone(100, 0);
  largest_alone.back() = 100;
  CHECK(std::find(choices.begin(), choices.end(), largest_alone) != choices.end());
  for (std::size_t i = 0; i < choices.size(); ++i)
    for (std::size_t j = 0; j < i; ++j) CHECK(choices[i] != choices[j]);
}

TEST_CASE("a window serves the steps with a hole for it, the room or windows of their own the others",
          "[runtime][pool_room]") {
  // MonoDepth's shape: a large workspace early, while little of the block is
  // alive; a smaller one late, where all of it is. One window for both lies
  // past the block's end and saves nothing; one for the early step alone
  // leaves the late workspace to a small room; a window for each grows the
  // block by the late one's grid.
  using dv::test::kMB;
  dv::test::PlanBuilder b;
  const int x = b.input(kMB);
  const int a = b.pointwise({x}, kMB);
  const int early = b.library({a}, kMB);  // step 1: 30 MB of its own
  const int c = b.pointwise({early}, 8 * kMB);
  const int d = b.pointwise({c}, 8 * kMB);
  const int late = b.library({d}, 8 * kMB);  // step 4: 5 MB of its own, c, d and its result alive
  const int e = b.pointwise({late, c}, 8 * kMB);
  b.finish(b.kernel({e}, 4096));
  std::vector<dv::codegen::LibraryInto> into(b.p.steps.size(), dv::codegen::LibraryInto::None);
  into[1] = into[4] = dv::codegen::LibraryInto::Convolution;
  BesideBlock beside;
  beside.all = 30 * kMB;
  beside.transient = {0, 30 * kMB, 0, 0, 5 * kMB, 0, 0};
  beside.all_at = beside.transient;
  beside.lasting_at.assign(beside.transient.size(), 0);
  const std::int64_t block = dv::codegen::plan_arena(b.p, {}, into).bytes;
  const std::int64_t plain_pool = pool_bytes(block, pool_room_bytes(block, beside.all));
  auto pool_of = [&](const dv::codegen::ArenaPlan& plan) {
    const std::int64_t held = window_block_edges(plan).back();
    return pool_bytes(held, windowed_pool_room_bytes(held, beside.beside_window(plan.window_at)));
  };
  std::vector<dv::codegen::ArenaPlan> plans = dv::codegen::plan_arena_windows(
      b.p, {}, into, window_step_choices(beside.transient), least_window_offset());
  // Both steps in one window: past the block, no smaller than the block and the room.
  CHECK(plans.front().window_offset >= block);
  CHECK(pool_of(plans.front()) >= plain_pool);
  // The early step alone in one.
  REQUIRE(plans.size() == 3);
  CHECK(plans[1].window_at == std::vector<bool>{false, false, false, false, true, false, false});
  CHECK(plans[2].window_at == std::vector<bool>{false, true, false, false, false, false, false});
  CHECK(plans[2].window_offset < block);  // in the hole the early step leaves
  CHECK(pool_of(plans[2]) < plain_pool);
  const std::int64_t grid = step_window_grid(beside.beside_window({false, true, false, false, true, false, false}));
  CHECK(grid == 12 * kMB);  // larger than the least segment's 10 MiB
  plans.push_back(dv::codegen::plan_arena_step_windows(b.p, {}, into, beside.transient, grid));
  std::int64_t least = plain_pool;
  for (const auto& plan : plans) least = std::min(least, pool_of(plan));
  const std::optional<WindowChoice> chosen = choose_window(plain_pool, beside, plans);
  REQUIRE(chosen.has_value());
  CHECK(pool_of(chosen->plan) == least);
  CHECK(chosen->room == windowed_pool_room_bytes(window_block_edges(chosen->plan).back(), chosen->beside));
  CHECK(chosen->beside == beside.beside_window(chosen->plan.window_at));
  // Nothing measured that a window could take: no window.
  CHECK(window_step_choices(std::vector<std::int64_t>(7, 0)).empty());
  CHECK_FALSE(choose_window(plain_pool, beside, {}).has_value());
}

TEST_CASE("no pool is smaller than the most, at one step, of the block alive and the requests beside it",
          "[runtime][pool_room]") {
  using dv::test::kMB;
  BesideBlock beside;
  beside.all_at = {0, 30 * kMB, 0, 5 * kMB};
  beside.between_steps = 2 * kMB;
  // The block's peak (step 2) and the largest request (step 1) apart: step 3 adds up to more than either.
  LeastPool least = least_pool({kMB, 2 * kMB, 40 * kMB, 28 * kMB}, beside);
  CHECK(least.bytes == 40 * kMB);
  CHECK(least.step == 2);
  least = least_pool({kMB, 2 * kMB, 20 * kMB, 28 * kMB}, beside);
  CHECK(least.bytes == 33 * kMB);
  CHECK(least.step == 3);
  beside.between_steps = 50 * kMB;  // (a library result alive from one step to the next)
  CHECK(least_pool({0, 0, 0, 0}, beside).step == -1);
}

TEST_CASE("a windowed block is allocated in parts between the windows' edges", "[runtime][pool_room]") {
  using dv::test::kMB;
  dv::codegen::ArenaPlan one;  // one window: before it, it, after it (at least a large block)
  one.bytes = 40 * kMB;
  one.window_offset = 2 * kMB;
  one.window_bytes = 30 * kMB;
  CHECK(window_block_edges(one) == std::vector<std::int64_t>{0, 2 * kMB, 32 * kMB, 40 * kMB});
  one.window_offset = 0;
  one.bytes = 30 * kMB + 4096;  // a few bytes after it: a large block of them
  CHECK(window_block_edges(one) == std::vector<std::int64_t>{0, 30 * kMB, 30 * kMB + least_window_offset()});
  dv::codegen::ArenaPlan each;  // a window for each step, edges shared
  each.bytes = 50 * kMB;
  each.window_grid = 12 * kMB;
  each.window_at = {true, false, true, true};
  each.step_windows = {{0, 36 * kMB}, {0, 0}, {48 * kMB, 60 * kMB}, {12 * kMB, 36 * kMB}};
  CHECK(window_block_edges(each) == std::vector<std::int64_t>{0, 12 * kMB, 36 * kMB, 48 * kMB, 60 * kMB});
  CHECK(each.window_of(2) == std::pair<std::int64_t, std::int64_t>{48 * kMB, 60 * kMB});
  CHECK(step_window_grid(0) == 12 * kMB);
  CHECK(step_window_grid(15 * kMB) == 16 * kMB);
  CHECK(step_window_grid(16 * kMB) == 18 * kMB);  // each part larger than the room's free bytes
}
