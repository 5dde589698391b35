#include "codegen/kept_constants.h"

#include <algorithm>
#include <cstddef>

#include "ir/dtype.h"

namespace dv::codegen {

namespace {

// A constant step's results: their bytes and where the steps use them.
struct ConstantResult {
  int step = -1;
  std::int64_t bytes = 0;
  int first = 0;
  int last = 0;
  std::vector<int> reads;  // the constant steps whose results this step reads
};

std::int64_t max_of(const std::vector<std::int64_t>& v) {
  return v.empty() ? 0 : *std::max_element(v.begin(), v.end());
}

void add_over(std::vector<std::int64_t>& at, int first, int last, std::int64_t bytes) {
  for (int t = first; t <= last; ++t) at[t] += bytes;
}

}  // namespace

std::int64_t PoolReservation::own(std::int64_t live_peak) const {
  const std::int64_t large = live_peak > small_limit ? std::max(live_peak, least_large) : live_peak;
  return large + small_segment;
}

std::int64_t live_peak_bytes(const Program& p) {
  const StorageTimeline tl = storage_timeline(p);
  std::vector<std::int64_t> live(p.steps.size(), 0);
  for (const Storage& st : tl.storage)
    if (st.first >= 0) add_over(live, st.first, st.last, st.bytes);
  return max_of(live);
}

KeptConstants keep_within_eager_memory(const Program& p, const std::vector<bool>& constant_step,
                                       const std::vector<bool>& eager_holds_to_end, const PoolReservation& pool) {
  const int steps = static_cast<int>(p.steps.size());
  const StorageTimeline tl = storage_timeline(p);
  std::vector<int> result_of_step(steps, -1);
  std::vector<ConstantResult> results;
  std::vector<std::int64_t> live(steps, 0);  // bytes of storage alive at each step, constant results left out
  for (std::size_t r = 0; r < tl.storage.size(); ++r) {
    const Storage& st = tl.storage[r];
    if (st.first < 0) continue;
    if (!constant_step[st.first]) {
      add_over(live, st.first, st.last, st.bytes);
      continue;
    }
    int& index = result_of_step[st.first];
    if (index < 0) {
      index = static_cast<int>(results.size());
      results.push_back({st.first, 0, st.first, st.last, {}});
    }
    ConstantResult& c = results[index];
    c.bytes += st.bytes;
    c.first = std::min(c.first, st.first);
    c.last = std::max(c.last, st.last);
  }
  for (ConstantResult& c : results)
    for (int s : step_slots(p, p.steps[c.step], /*written=*/false)) {
      const int writer = tl.storage[tl.root[s]].first;
      if (writer >= 0 && constant_step[writer] && writer != c.step) c.reads.push_back(result_of_step[writer]);
    }

  KeptConstants out;
  out.kept.assign(steps, false);
  std::int64_t kept_bytes = 0;
  for (const ConstantResult& c : results) {
    out.kept[c.step] = true;
    kept_bytes += c.bytes;
  }
  std::vector<std::int64_t> eager = live;
  for (std::size_t i = 0; i < results.size(); ++i) {
    const ConstantResult& c = results[i];
    const bool to_end = static_cast<std::size_t>(c.step) < eager_holds_to_end.size() && eager_holds_to_end[c.step];
    add_over(eager, c.first, to_end ? steps - 1 : c.last, c.bytes);
  }
  out.eager_peak_bytes = max_of(eager);
  out.peak_bytes_all_kept = kept_bytes + pool.reserved(max_of(live));
  out.peak_bytes = out.peak_bytes_all_kept;

  // Kept readers of each result: a result another kept step reads stays kept.
  std::vector<int> kept_readers(results.size(), 0);
  for (const ConstantResult& c : results)
    for (int r : c.reads) ++kept_readers[r];
  std::vector<std::int64_t> before(steps), after(steps);  // running maxima of `live` up to / from each step
  while (out.peak_bytes > out.eager_peak_bytes) {
    for (int t = 0; t < steps; ++t) before[t] = std::max(live[t], t > 0 ? before[t - 1] : 0);
    for (int t = steps - 1; t >= 0; --t) after[t] = std::max(live[t], t + 1 < steps ? after[t + 1] : 0);
    int best = -1;
    std::int64_t best_peak = 0;
    for (std::size_t i = 0; i < results.size(); ++i) {
      const ConstantResult& c = results[i];
      if (!out.kept[c.step] || kept_readers[i] > 0 || c.bytes == 0) continue;
      std::int64_t inside = 0;
      for (int t = c.first; t <= c.last; ++t) inside = std::max(inside, live[t] + c.bytes);
      const std::int64_t outside = std::max(c.first > 0 ? before[c.first - 1] : 0,
                                            c.last + 1 < steps ? after[c.last + 1] : 0);
      const std::int64_t peak = kept_bytes - c.bytes + pool.reserved(std::max(inside, outside));
      if (peak >= out.peak_bytes) continue;
      // Enough alone: the fewest bytes computed on each call. Else the
      // largest fall of the peak for the bytes.
      const auto better = [&](int other, std::int64_t other_peak) {
        const ConstantResult& o = results[other];
        const bool enough = peak <= out.eager_peak_bytes, other_enough = other_peak <= out.eager_peak_bytes;
        if (enough != other_enough) return enough;
        if (enough) return c.bytes < o.bytes;
        const double gain = static_cast<double>(out.peak_bytes - peak) / static_cast<double>(c.bytes);
        const double other_gain = static_cast<double>(out.peak_bytes - other_peak) / static_cast<double>(o.bytes);
        return gain > other_gain || (gain == other_gain && peak < other_peak);
      };
      if (best < 0 || better(best, best_peak)) {
        best = static_cast<int>(i);
        best_peak = peak;
      }
    }
    if (best < 0) break;
    const ConstantResult& c = results[best];
    out.kept[c.step] = false;
    kept_bytes -= c.bytes;
    add_over(live, c.first, c.last, c.bytes);
    for (int r : c.reads) --kept_readers[r];
    out.peak_bytes = best_peak;
  }
  return out;
}

}  // namespace dv::codegen
