#pragma once
// Work spread over a few threads of this process, for the compiles that make a
// plan's kernels ready (NVRTC's, or the host compiler's processes).

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <thread>
#include <vector>

namespace dv::runtime {

// Runs work(i) for each i in [0, n) on up to `threads` threads, this one
// included; each thread takes the next index until none is left.
template <class F>
void run_on_threads(std::size_t n, std::size_t threads, F work) {
  std::atomic<std::size_t> next{0};
  auto loop = [&] {
    for (std::size_t i; (i = next.fetch_add(1)) < n;) work(i);
  };
  std::vector<std::thread> pool;
  for (std::size_t t = 1; t < std::min(n, threads); ++t) pool.emplace_back(loop);
  loop();
  for (auto& t : pool) t.join();
}

}  // namespace dv::runtime
