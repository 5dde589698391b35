// Offsets of a plan's intermediates in one block (codegen/arena_plan.h), on
// plans built by hand.
#include <cstdint>
#include <vector>

#include "catch.h"
#include "codegen/arena_plan.h"
#include "codegen/slot_lifetimes.h"
#include "plan_builder.h"

using namespace dv;
using dv::test::kMB;
using dv::test::PlanBuilder;

namespace {

// No two storages alive at one step share a byte, and each lies in the block.
void check_disjoint(const codegen::Program& p, const codegen::ArenaPlan& plan) {
  const codegen::StorageTimeline tl = codegen::storage_timeline(p);
  for (std::size_t a = 0; a < p.slots.size(); ++a) {
    if (plan.offset[a] < 0) continue;
    const codegen::Storage& x = tl.storage[a];
    CHECK(plan.offset[a] % 512 == 0);
    CHECK(plan.offset[a] + x.bytes <= plan.bytes);
    for (std::size_t b = a + 1; b < p.slots.size(); ++b) {
      if (plan.offset[b] < 0) continue;
      const codegen::Storage& y = tl.storage[b];
      const bool together = x.first <= y.last && y.first <= x.last;
      const bool apart = plan.offset[a] + x.bytes <= plan.offset[b] || plan.offset[b] + y.bytes <= plan.offset[a];
      CHECK((!together || apart));
    }
  }
}

}  // namespace

TEST_CASE("a chain of growing results packs into its live peak", "[arena]") {
  // DenseNet's cats: each a little larger than the one it reads, which is
  // freed once read. One allocation each would leave every hole too small
  // for the next.
  PlanBuilder b;
  int prev = b.input(kMB);
  for (int k = 0; k < 8; ++k) prev = b.kernel({prev}, kMB + k * kMB / 4);
  const int out = b.kernel({prev}, 4096);
  b.finish(out);
  const codegen::ArenaPlan plan = codegen::plan_arena(b.p, {});
  check_disjoint(b.p, plan);
  CHECK(plan.live_peak_bytes == (kMB + 7 * kMB / 4) + (kMB + 6 * kMB / 4));
  CHECK(plan.bytes == plan.live_peak_bytes);
  CHECK(plan.offset[out] < 0);  // returned: outlives the call
  CHECK(plan.others_peak_bytes == 4096);  // the output, beside the last of the chain
  CHECK(plan.together_peak_bytes == plan.live_peak_bytes);
  CHECK(plan.offset[0] < 0);    // a graph input
}

TEST_CASE("excluded storage and its views stay out of the block", "[arena]") {
  PlanBuilder b;
  const int x = b.input(kMB);
  const int a = b.kernel({x}, kMB);
  const int c = b.kernel({a}, kMB);
  const int v = b.view(c);
  const int d = b.kernel({v}, kMB);
  b.finish(b.kernel({d}, 4096));
  std::vector<bool> excluded(b.p.slots.size(), false);
  excluded[v] = true;  // an ATen op may return a view of it: its base stays out
  const codegen::ArenaPlan plan = codegen::plan_arena(b.p, excluded);
  check_disjoint(b.p, plan);
  CHECK(plan.offset[c] < 0);
  CHECK(plan.offset[v] < 0);
  CHECK(plan.offset[a] >= 0);
  CHECK(plan.offset[d] >= 0);
}

TEST_CASE("a view keeps its base's bytes from reuse while it is read", "[arena]") {
  PlanBuilder b;
  const int x = b.input(kMB);
  const int a = b.kernel({x}, kMB);
  const int v = b.view(a);               // a is not read again, its view is
  const int c = b.kernel({x}, kMB);      // alive with the view: must not take a's bytes
  const int d = b.kernel({v, c}, kMB);
  b.finish(b.kernel({d}, 4096));
  const codegen::ArenaPlan plan = codegen::plan_arena(b.p, {});
  check_disjoint(b.p, plan);
  REQUIRE(plan.offset[a] >= 0);
  REQUIRE(plan.offset[c] >= 0);
  CHECK(plan.offset[a] != plan.offset[c]);
}
