// Offsets of a plan's intermediates in one block (codegen/arena_plan.h), on
// plans built by hand.
#include <cstdint>
#include <random>
#include <vector>

#include "catch.h"
#include "codegen/arena_plan.h"
#include "codegen/slot_lifetimes.h"
#include "plan_builder.h"

using namespace dv;
using dv::test::kMB;
using dv::test::PlanBuilder;

namespace {

// No two storages alive at one step share a byte, and each lies in the block
// (but where one hands its bytes over to the other).
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
      // A result that takes over an input's storage shares it at the step that hands it over.
      const bool handed_over = plan.takes_over[b] == static_cast<int>(a) || plan.takes_over[a] == static_cast<int>(b);
      const bool together = !handed_over && x.first <= y.last && y.first <= x.last;
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

TEST_CASE("a library result goes into the block where its step writes into given storage", "[arena]") {
  // The kernels' results peak first, the library's later (a stem of
  // generated kernels, then convolutions). Apart, the block holds the
  // kernels' peak for the whole call beside the library's; together the
  // library's results reuse the kernels' bytes.
  PlanBuilder b;
  const int x = b.input(kMB);
  const int k1 = b.kernel({x}, 4 * kMB);
  const int k2 = b.kernel({k1}, 4 * kMB);
  const int k3 = b.kernel({k2}, 4096);
  const int l1 = b.library({k3}, 4 * kMB);
  const int l2 = b.library({l1}, 4 * kMB);
  b.finish(b.kernel({l2}, 4096));
  const codegen::ArenaPlan apart = codegen::plan_arena(b.p, {});
  CHECK(apart.offset[l1] < 0);
  CHECK(apart.bytes == 8 * kMB);
  CHECK(apart.others_peak_bytes == 8 * kMB);
  std::vector<codegen::LibraryInto> writes_into(b.p.steps.size(), codegen::LibraryInto::None);
  writes_into[3] = writes_into[4] = codegen::LibraryInto::Mm;  // the two library steps
  const codegen::ArenaPlan together = codegen::plan_arena(b.p, {}, writes_into);
  check_disjoint(b.p, together);
  CHECK(together.offset[l1] >= 0);
  CHECK(together.offset[l2] >= 0);
  CHECK(together.offset[k1] >= 0);
  CHECK(together.bytes == 8 * kMB + 4096);  // l1 and l2 where k1 and k2 were; k3 beside l1
  CHECK(together.others_peak_bytes == 4096);  // the output
}

TEST_CASE("the library calls that write into given storage run the op's own code", "[arena]") {
  using codegen::LibraryInto;
  CHECK(codegen::library_into("aten::mm.default", false) == LibraryInto::Mm);
  CHECK(codegen::library_into("aten::addmm", false) == LibraryInto::Addmm);
  CHECK(codegen::library_into("aten::bmm.default", true) == LibraryInto::Bmm);
  // convolution's out= is a generated wrapper that copies; cuDNN's is the kernel itself
  CHECK(codegen::library_into("aten::convolution.default", true) == LibraryInto::Convolution);
  CHECK(codegen::library_into("aten::convolution.default", false) == LibraryInto::None);
  CHECK(codegen::library_into("aten::baddbmm.default", true) == LibraryInto::None);
  CHECK(codegen::library_into("aten::mm.dtype", true) == LibraryInto::None);
}

TEST_CASE("a pointwise result takes over an input that dies at it", "[arena]") {
  // ResNet's residual add: the block's last result and the shortcut's die
  // at the kernel that adds them. Three of the largest size alive at once
  // become two.
  PlanBuilder b;
  const int x = b.input(kMB);
  const int body = b.pointwise({x}, 4 * kMB);
  const int shortcut = b.pointwise({x}, 4 * kMB);
  const int sum = b.pointwise({body, shortcut}, 4 * kMB);
  const int next = b.pointwise({sum}, 4 * kMB);
  b.finish(b.kernel({next}, 4096));
  const codegen::ArenaPlan plan = codegen::plan_arena(b.p, {});
  check_disjoint(b.p, plan);
  CHECK(plan.takes_over[sum] == body);
  CHECK(plan.offset[sum] == plan.offset[body]);
  CHECK(plan.takes_over[next] == sum);  // a chain: next writes over sum in turn
  CHECK(plan.offset[next] == plan.offset[body]);
  CHECK(plan.takes_over[body] == -1);
  CHECK(plan.takes_over[shortcut] == -1);
  CHECK(plan.live_peak_bytes == 8 * kMB);
  CHECK(plan.bytes == 8 * kMB);
}

TEST_CASE("a result does not take over an input read elsewhere than at its own element", "[arena]") {
  PlanBuilder b;
  const int x = b.input(kMB);
  const int a = b.pointwise({x}, 4 * kMB);
  ir::KernelBuilder shape("shape", kMB, 1);  // only for its x
  const ir::IndexExpr reversed = ir::IndexExpr(kMB - 1) - shape.x();
  const int flipped = b.pointwise({a}, 4 * kMB, {reversed});  // point x reads a's element kMB-1-x
  const int c = b.pointwise({x}, 4 * kMB);
  const int broadcast = b.pointwise({c}, 4 * kMB, {ir::mod(shape.x(), 1024)});
  b.finish(b.pointwise({flipped, broadcast}, 4096));
  const codegen::ArenaPlan plan = codegen::plan_arena(b.p, {});
  check_disjoint(b.p, plan);
  CHECK(plan.takes_over[flipped] == -1);
  CHECK(plan.takes_over[broadcast] == -1);
  CHECK(plan.offset[flipped] != plan.offset[a]);
}

TEST_CASE("a result does not take over an input read after it, or of another width", "[arena]") {
  PlanBuilder b;
  const int x = b.input(kMB);
  const int a = b.pointwise({x}, 4 * kMB);
  const int kept = b.pointwise({a}, 4 * kMB);  // a is read again below
  const int later = b.pointwise({a, kept}, 4 * kMB);
  const int wide = b.pointwise({later}, 4 * kMB);
  b.p.kernels[b.p.steps.back().kernel].buffers.back().dtype = ir::DType::Float64;  // elements of 8 bytes over 4
  b.finish(b.kernel({wide}, 4096));
  const codegen::ArenaPlan plan = codegen::plan_arena(b.p, {});
  check_disjoint(b.p, plan);
  CHECK(plan.takes_over[kept] == -1);
  CHECK(plan.takes_over[later] == a);  // a dies here, read at x
  CHECK(plan.takes_over[wide] == -1);
}

TEST_CASE("a result does not take over an input in a reduction or a kernel that stores twice", "[arena]") {
  PlanBuilder b;
  const int x = b.input(kMB);
  const int a = b.pointwise({x}, 4 * kMB);
  const int reduced = b.pointwise({a}, 4 * kMB);
  b.p.kernels.back().rnumel = 2;  // a reduction's rows: a point may read what another wrote
  const int c = b.pointwise({reduced}, 4 * kMB);
  ir::Kernel& twice = b.p.kernels.back();
  twice.body.push_back(twice.body.back());  // a second store to the result
  b.finish(b.kernel({c}, 4096));
  const codegen::ArenaPlan plan = codegen::plan_arena(b.p, {});
  check_disjoint(b.p, plan);
  CHECK(plan.takes_over[reduced] == -1);
  CHECK(plan.takes_over[c] == -1);
}

namespace {

// Nothing alive at a step with the window lies in it.
void check_window_free(const codegen::Program& p, const codegen::ArenaPlan& plan) {
  const codegen::StorageTimeline tl = codegen::storage_timeline(p);
  for (std::size_t r = 0; r < p.slots.size(); ++r) {
    if (plan.offset[r] < 0 || tl.root[r] != static_cast<int>(r)) continue;
    const codegen::Storage& st = tl.storage[r];
    const bool apart = plan.offset[r] + st.bytes <= plan.window_offset ||
                       plan.window_offset + plan.window_bytes <= plan.offset[r];
    for (int t = st.first; t <= st.last; ++t) CHECK((!plan.window_at[t] || apart));
  }
  CHECK(plan.window_offset + plan.window_bytes <= plan.bytes);
}

}  // namespace

TEST_CASE("a window takes bytes of the block that nothing alive at its steps holds", "[arena]") {
  // A convolution's workspace early in the plan, while little is alive: the
  // window lies where the later, larger results go, and the block keeps its size.
  PlanBuilder b;
  const int x = b.input(kMB);
  const int a = b.pointwise({x}, kMB);
  const int conv = b.library({a}, kMB);  // step 1: allocates and frees 3 MB of its own
  const int c = b.pointwise({conv}, 8 * kMB);
  const int d = b.pointwise({c}, 8 * kMB);
  b.finish(b.kernel({d}, 4096));
  std::vector<codegen::LibraryInto> into(b.p.steps.size(), codegen::LibraryInto::None);
  into[1] = codegen::LibraryInto::Convolution;
  const std::vector<std::int64_t> window{0, 3 * kMB, 0, 0, 0};
  const codegen::ArenaPlan without = codegen::plan_arena(b.p, {}, into);
  CHECK(without.window_bytes == 0);
  CHECK(without.bytes == 9 * kMB);  // c and d (one chain) at 0, conv above them
  const codegen::ArenaPlan plan = codegen::plan_arena(b.p, {}, into, window);
  check_disjoint(b.p, plan);
  check_window_free(b.p, plan);
  CHECK(plan.window_bytes == 3 * kMB);
  CHECK(plan.window_at == std::vector<bool>{false, true, false, false, false});
  CHECK(plan.offset == without.offset);  // the packing is the same
  CHECK(plan.window_offset == kMB);      // above a, below conv
  CHECK(plan.bytes == 9 * kMB);
  // Not below a least offset (but at 0): the bytes before the window must be an allocation of their own.
  const codegen::ArenaPlan above = codegen::plan_arena(b.p, {}, into, window, 2 * kMB);
  check_window_free(b.p, above);
  CHECK(above.window_offset == 2 * kMB);
  // No room below conv from 7 MB on: after the block, which grows.
  const codegen::ArenaPlan grown = codegen::plan_arena(b.p, {}, into, window, 7 * kMB);
  check_window_free(b.p, grown);
  CHECK(grown.window_offset == 9 * kMB);
  CHECK(grown.bytes == 12 * kMB);
}

namespace {

// Nothing alive at a step lies in its own window, whose edges are on the grid.
void check_step_windows_free(const codegen::Program& p, const codegen::ArenaPlan& plan) {
  const codegen::StorageTimeline tl = codegen::storage_timeline(p);
  REQUIRE(plan.step_windows.size() == p.steps.size());
  REQUIRE(plan.window_grid > 0);
  for (std::size_t t = 0; t < p.steps.size(); ++t) {
    if (!plan.window_at[t]) continue;
    const auto [begin, end] = plan.window_of(static_cast<int>(t));
    CHECK(begin % plan.window_grid == 0);
    CHECK(end % plan.window_grid == 0);
    CHECK(end <= plan.bytes);
    for (std::size_t r = 0; r < p.slots.size(); ++r) {
      if (plan.offset[r] < 0 || tl.root[r] != static_cast<int>(r)) continue;
      const codegen::Storage& st = tl.storage[r];
      if (st.first > static_cast<int>(t) || static_cast<int>(t) > st.last) continue;
      CHECK((plan.offset[r] + st.bytes <= begin || end <= plan.offset[r]));
    }
  }
}

}  // namespace

TEST_CASE("each step's own window lies where nothing alive at that step does", "[arena]") {
  // A large workspace early, while little is alive, and a smaller one late,
  // while the whole block is: one window for both must lie past the block;
  // a window for each takes the early hole and grows the block less.
  PlanBuilder b;
  const int x = b.input(kMB);
  const int a = b.pointwise({x}, kMB);
  const int early = b.library({a}, kMB);  // step 1: 6 MB of its own
  const int c = b.pointwise({early}, 8 * kMB);
  const int d = b.pointwise({c}, 8 * kMB);
  const int late = b.library({d}, 8 * kMB);  // step 4: 2 MB of its own while c, d and its result live
  const int e = b.pointwise({late, c}, 8 * kMB);
  b.finish(b.kernel({e}, 4096));
  std::vector<codegen::LibraryInto> into(b.p.steps.size(), codegen::LibraryInto::None);
  into[1] = into[4] = codegen::LibraryInto::Convolution;
  const std::vector<std::int64_t> window{0, 6 * kMB, 0, 0, 2 * kMB, 0, 0};
  const codegen::ArenaPlan plain = codegen::plan_arena(b.p, {}, into);
  const codegen::ArenaPlan one = codegen::plan_arena(b.p, {}, into, window);
  check_window_free(b.p, one);
  CHECK(one.window_offset >= plain.bytes);  // the late step leaves no hole
  const codegen::ArenaPlan each = codegen::plan_arena_step_windows(b.p, {}, into, window, kMB);
  check_disjoint(b.p, each);
  check_step_windows_free(b.p, each);
  CHECK(each.offset == plain.offset);  // the packing is the same
  CHECK(each.window_at == std::vector<bool>{false, true, false, false, true, false, false});
  CHECK(each.window_bytes == 6 * kMB);
  CHECK(each.window_of(1).second - each.window_of(1).first == 6 * kMB);
  CHECK(each.window_of(4).second - each.window_of(4).first == 2 * kMB);
  CHECK(each.window_of(1).first < plain.bytes);  // in the early hole
  CHECK(each.window_of(4).first == plain.bytes);  // past the full block
  CHECK(each.bytes == plain.bytes + 2 * kMB);
  CHECK(each.bytes < one.bytes);
  // On a coarser grid every edge is a multiple of it, sizes rounded up.
  const codegen::ArenaPlan coarse = codegen::plan_arena_step_windows(b.p, {}, into, window, 4 * kMB);
  check_step_windows_free(b.p, coarse);
  CHECK(coarse.window_of(4).second - coarse.window_of(4).first == 4 * kMB);
  CHECK(coarse.window_of(1).second - coarse.window_of(1).first == 8 * kMB);
}

TEST_CASE("windows packed with the block take the bytes that what is alive at their step leaves low", "[arena]") {
  // A large value dies before a step with a large workspace, while small
  // ones placed above it live on: placed after the packing, the window finds
  // no hole below them; packed with the block, it takes the large value's
  // bytes and the small ones go above it.
  PlanBuilder b;
  const int x = b.input(kMB);
  const int big = b.pointwise({x}, 8 * kMB);        // step 0
  const int small = b.pointwise({x}, kMB);          // step 1, alive to step 4
  const int m = b.pointwise({big}, kMB);            // step 2: big dies
  const int lib = b.library({m}, kMB);              // step 3: 8 MB of its own
  const int e = b.pointwise({lib, small}, kMB);     // step 4
  b.finish(b.kernel({e}, 4096));
  std::vector<codegen::LibraryInto> into(b.p.steps.size(), codegen::LibraryInto::None);
  into[3] = codegen::LibraryInto::Convolution;
  std::vector<std::int64_t> window(b.p.steps.size(), 0);
  window[3] = 8 * kMB;
  const codegen::ArenaPlan after = codegen::plan_arena_step_windows(b.p, {}, into, window, kMB);
  const codegen::ArenaPlan packed = codegen::plan_arena_packed_windows(b.p, {}, into, window, kMB);
  check_disjoint(b.p, packed);
  check_step_windows_free(b.p, packed);
  CHECK(packed.windows_packed);
  CHECK_FALSE(after.windows_packed);
  CHECK(packed.window_at == after.window_at);
  CHECK(packed.window_of(3) == std::make_pair<std::int64_t, std::int64_t>(0, 8 * kMB));  // over big's bytes
  CHECK(after.window_of(3).first >= 8 * kMB);  // above the small values
  CHECK(packed.bytes < after.bytes);
  CHECK(packed.bytes >= packed.live_peak_bytes);
  // Edges on the grid, sizes rounded up to it.
  const codegen::ArenaPlan coarse = codegen::plan_arena_packed_windows(b.p, {}, into, window, 3 * kMB);
  check_disjoint(b.p, coarse);
  check_step_windows_free(b.p, coarse);
  CHECK(coarse.window_of(3).first % (3 * kMB) == 0);
  CHECK(coarse.window_of(3).second - coarse.window_of(3).first == 9 * kMB);
}

TEST_CASE("windows of each step's own lie where nothing alive at their step does, on random plans", "[arena]") {
  // Random chains and joins of pointwise kernels and library calls (which
  // write into the block), with memory of their own at random library steps;
  // both placements of their windows, on grids of 1 and 3 MB.
  std::mt19937 rng(20261205);
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  for (int trial = 0; trial < 200; ++trial) {
    PlanBuilder b;
    std::vector<int> values{b.input(kMB)};
    std::vector<std::int64_t> window;
    const int steps = 4 + pick(20);
    for (int s = 0; s < steps; ++s) {
      const int a = values[values.size() - 1 - pick(std::min<int>(values.size(), 4))];
      const std::int64_t bytes = (1 + pick(16)) * kMB / 2;
      if (pick(3) == 0) {
        values.push_back(b.library({a}, bytes));
        window.push_back(pick(2) ? (1 + pick(24)) * kMB / 2 : 0);
      } else {
        const int c = values[values.size() - 1 - pick(std::min<int>(values.size(), 6))];
        values.push_back(b.pointwise(a == c ? std::vector<int>{a} : std::vector<int>{a, c}, bytes));
        window.push_back(0);
      }
    }
    b.finish(b.kernel({values.back()}, 4096));
    window.push_back(0);
    std::vector<codegen::LibraryInto> into(b.p.steps.size(), codegen::LibraryInto::None);
    for (std::size_t t = 0; t < b.p.steps.size(); ++t)
      if (b.p.steps[t].kind != codegen::Step::Kind::Kernel) into[t] = codegen::LibraryInto::Convolution;
    for (std::int64_t grid : {kMB, 3 * kMB}) {
      const codegen::ArenaPlan after = codegen::plan_arena_step_windows(b.p, {}, into, window, grid);
      const codegen::ArenaPlan packed = codegen::plan_arena_packed_windows(b.p, {}, into, window, grid);
      for (const codegen::ArenaPlan* plan : {&after, &packed}) {
        check_disjoint(b.p, *plan);
        check_step_windows_free(b.p, *plan);
        for (std::size_t t = 0; t < window.size(); ++t) {
          CHECK(plan->window_at[t] == (window[t] > 0));
          if (window[t] > 0) CHECK(plan->window_of(static_cast<int>(t)).second - plan->window_of(static_cast<int>(t)).first >= window[t]);
        }
      }
    }
  }
}
