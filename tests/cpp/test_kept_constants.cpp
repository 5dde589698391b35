// Which constant results a plan keeps between calls so that its peak memory
// stays at most eager's (codegen/kept_constants.h), on plans built by hand.
#include <cstdint>
#include <vector>

#include "catch.h"
#include "codegen/kept_constants.h"
#include "plan_builder.h"

using namespace dv;
using dv::test::kMB;
using dv::test::PlanBuilder;
using codegen::Program;
using codegen::Slot;
using codegen::Step;
using ir::DType;

namespace {

// x -> a (1 MB) -> b (1 MB) -> small -> out, a small cast w1 read with x
// early, a 1 MB cast w2 read at the end, when the activations are gone.
struct LateWeight {
  PlanBuilder b;
  int w1_step = 0, w2_step = 4;

  LateWeight() {
    const int x = b.input(4096), w1 = b.input(kMB / 4), w2 = b.input(2 * kMB);
    const int w1c = b.kernel({w1}, kMB / 8, true);
    const int a = b.kernel({x, w1c}, kMB);
    const int act = b.kernel({a}, kMB);
    const int small = b.kernel({act}, 4096);
    const int w2c = b.kernel({w2}, kMB, true);
    b.finish(b.kernel({small, w2c}, 4096));
  }
};

}  // namespace

TEST_CASE("a slot's bytes are its largest offset + 1 elements, rounded to 512", "[kept_constants]") {
  Slot s;
  s.dtype = DType::BFloat16;
  s.sizes = {3, 5};
  s.strides = {1, 3};  // column-major
  CHECK(codegen::slot_bytes(s) == 512);
  s.sizes = {1000, 3};
  s.strides = {1, 1000};
  CHECK(codegen::slot_bytes(s) == 6144);  // 6000 bytes
  s.sizes = {0, 3};
  CHECK(codegen::slot_bytes(s) == 0);
}

TEST_CASE("a late weight's cast runs on each call where keeping it would pass eager's peak", "[kept_constants]") {
  LateWeight lw;
  // Eager holds both casts from their first use on (autocast's cache): its
  // peak is the two activations and w1's cast, 2.125 MB; keeping both casts
  // would add 1.125 MB to the plan's 2 MB of activations.
  const std::vector<bool> to_end(lw.b.p.steps.size(), true);
  const codegen::KeptConstants k = codegen::keep_within_eager_memory(lw.b.p, lw.b.constant, to_end);
  CHECK(k.eager_peak_bytes == 2 * kMB + kMB / 8);  // (graph inputs are not the plan's)
  CHECK(k.peak_bytes_all_kept == 3 * kMB + kMB / 8);
  CHECK(k.kept[lw.w1_step]);
  CHECK_FALSE(k.kept[lw.w2_step]);
  CHECK(k.peak_bytes <= k.eager_peak_bytes);
}

TEST_CASE("casts eager drops after their use are not kept where they lift the peak", "[kept_constants]") {
  LateWeight lw;
  // No cache (parameters that do not require grad): eager's peak is the two
  // activations; both casts are computed on each call to stay at it.
  const std::vector<bool> to_end(lw.b.p.steps.size(), false);
  const codegen::KeptConstants k = codegen::keep_within_eager_memory(lw.b.p, lw.b.constant, to_end);
  CHECK(k.eager_peak_bytes == 2 * kMB);
  CHECK_FALSE(k.kept[lw.w1_step]);
  CHECK_FALSE(k.kept[lw.w2_step]);
  CHECK(k.peak_bytes <= k.eager_peak_bytes);
}

TEST_CASE("everything is kept where the peak stays at eager's", "[kept_constants]") {
  PlanBuilder b;
  const int x = b.input(kMB), w = b.input(kMB);
  const int wc = b.kernel({w}, kMB / 2, true);
  const int y = b.kernel({x, wc}, kMB / 4);
  b.finish(b.kernel({y}, kMB / 4));
  const std::vector<bool> to_end(b.p.steps.size(), true);
  const codegen::KeptConstants k = codegen::keep_within_eager_memory(b.p, b.constant, to_end);
  CHECK(k.kept[0]);
  CHECK(k.peak_bytes == k.peak_bytes_all_kept);
}

TEST_CASE("a constant result that a kept constant step reads stays kept", "[kept_constants]") {
  // w -> cast (constant) -> relayout (constant) -> read at the end, after a
  // 4 MB activation; then a second chain. Dropping the relayout alone is not
  // enough: the cast goes after it, never before it.
  PlanBuilder b;
  const int x = b.input(4096), w = b.input(4 * kMB);
  const int act = b.kernel({x}, 4 * kMB);
  const int small = b.kernel({act}, 4096);
  const int cast = b.kernel({w}, 2 * kMB, true);
  const int relaid = b.kernel({cast}, 2 * kMB, true);
  b.finish(b.kernel({small, relaid}, 4096));
  const std::vector<bool> none(b.p.steps.size(), false);
  const codegen::KeptConstants k = codegen::keep_within_eager_memory(b.p, b.constant, none);
  CHECK_FALSE(k.kept[3]);
  CHECK_FALSE(k.kept[2]);
  CHECK(k.peak_bytes <= k.eager_peak_bytes);
}

TEST_CASE("a CUDA graph's pool counts at what it holds, not at what is alive", "[kept_constants]") {
  // LateWeight keeps w1's cast where only its activations count. A pool
  // that holds at least 4 MB for them (the allocator's 10 MiB at batch 1)
  // leaves no room under eager's 2.125 MB: both casts run on each call.
  LateWeight lw;
  const std::vector<bool> to_end(lw.b.p.steps.size(), true);
  const codegen::PoolReservation pool{kMB / 2, 4 * kMB, kMB / 4};
  CHECK(pool.reserved(kMB / 4) == kMB / 2);  // a small block: only its segment
  CHECK(pool.reserved(2 * kMB) == 4 * kMB + kMB / 4);
  CHECK(pool.reserved(8 * kMB) == 8 * kMB + kMB / 4);
  const codegen::KeptConstants k = codegen::keep_within_eager_memory(lw.b.p, lw.b.constant, to_end, pool);
  CHECK(k.peak_bytes_all_kept == kMB + kMB / 8 + 4 * kMB + kMB / 4);
  CHECK_FALSE(k.kept[lw.w1_step]);
  CHECK_FALSE(k.kept[lw.w2_step]);
  CHECK(k.peak_bytes == 4 * kMB + kMB / 4);
}

TEST_CASE("the pools of a plan's earlier segments count beside its own", "[kept_constants]") {
  // LateWeight keeps w1's cast within eager's 2.125 MB. An earlier segment's
  // pool holding 1/8 MB through the call leaves no room for it.
  LateWeight lw;
  const std::vector<bool> to_end(lw.b.p.steps.size(), true);
  codegen::PoolReservation elsewhere;
  elsewhere.held_elsewhere = kMB / 8;
  CHECK(elsewhere.own(2 * kMB) == 2 * kMB);
  CHECK(elsewhere.reserved(2 * kMB) == 2 * kMB + kMB / 8);
  const codegen::KeptConstants k = codegen::keep_within_eager_memory(lw.b.p, lw.b.constant, to_end, elsewhere);
  CHECK(k.peak_bytes_all_kept == 3 * kMB + kMB / 4);
  CHECK_FALSE(k.kept[lw.w1_step]);
  CHECK_FALSE(k.kept[lw.w2_step]);
  CHECK(k.peak_bytes == 2 * kMB + kMB / 8);
  CHECK(codegen::live_peak_bytes(lw.b.p) == 2 * kMB);  // the two activations; w1's cast is dead by then
}
