// Tests of the loop IR's builder and printer (src/ir/loop_ir.h): masked and
// indirect loads.
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "catch.h"
#include "ir/loop_ir.h"

using dv::ir::DType;
using dv::ir::IndexExpr;
using dv::ir::KernelBuilder;
using dv::ir::LoadOptions;
using dv::ir::PrimOp;
using dv::ir::ValueId;

namespace {

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("loop IR: an indirect load takes its offset as an operand and prints it", "[loop_ir]") {
  KernelBuilder kb("embed", 60, 1);
  const int idx = kb.buffer("idx", DType::Int64, 15), table = kb.buffer("table", DType::Float32, 40),
            out = kb.buffer("out", DType::Float32, 60);
  const ValueId row = kb.load(idx, dv::ir::floordiv(kb.x(), 4));
  const ValueId v = kb.load(table, dv::ir::mod(kb.x(), 4), LoadOptions{row, 4, 10});
  kb.store(out, kb.x(), v);
  const auto& in = kb.instr(v);
  CHECK(in.op == PrimOp::Load);
  CHECK(in.indirect);
  CHECK(!in.masked);
  CHECK(in.offset_arg() == row);
  CHECK(in.mask_arg() == -1);
  CHECK(in.operand_count() == 1);
  CHECK(in.args == std::vector<ValueId>{row});
  const std::string text = dv::ir::to_string(kb.kernel());
  INFO(text);
  CHECK(contains(text, "%1 = load table[x % 4 + %0*4 (%0 < 10)] : f32"));
}

TEST_CASE("loop IR: a masked load takes its mask as an operand, with the value where it is false", "[loop_ir]") {
  KernelBuilder kb("pad", 9, 1);
  const int in = kb.buffer("in", DType::Float32, 5), out = kb.buffer("out", DType::Float32, 9);
  const ValueId i = kb.index_value(kb.x());
  const ValueId inside = kb.binary(PrimOp::LogicalAnd, kb.binary(PrimOp::Ge, i, kb.int_constant(2, DType::Int64)),
                                   kb.binary(PrimOp::Lt, i, kb.int_constant(7, DType::Int64)));
  LoadOptions masked;
  masked.mask = inside;
  masked.other = -INFINITY;
  const ValueId v = kb.load(in, kb.x() - 2, masked);
  kb.store(out, kb.x(), v);
  const auto& load = kb.instr(v);
  CHECK(load.masked);
  CHECK(load.mask_arg() == inside);
  CHECK(load.fvalue == -INFINITY);
  const std::string text = dv::ir::to_string(kb.kernel());
  INFO(text);
  CHECK(contains(text, "load in[x - 2] if %" + std::to_string(inside) + " else -inf : f32"));

  SECTION("value numbering tells masked, unmasked and differently masked loads apart") {
    CHECK(kb.load(in, kb.x() - 2, masked) == v);
    CHECK(kb.load(in, kb.x() - 2) != v);
    LoadOptions zero = masked;
    zero.other = 0;
    CHECK(kb.load(in, kb.x() - 2, zero) != v);
  }
  SECTION("a constant mask folds: true is no mask, false never reads") {
    LoadOptions always = masked;
    always.mask = kb.int_constant(1, DType::Bool);
    CHECK(kb.load(in, kb.x() - 2, always) == kb.load(in, kb.x() - 2));
    LoadOptions never = masked;
    never.mask = kb.int_constant(0, DType::Bool);
    const ValueId c = kb.load(in, kb.x() - 2, never);
    CHECK(kb.instr(c).op == PrimOp::Constant);
    CHECK(kb.instr(c).fvalue == -INFINITY);
  }
}

TEST_CASE("loop IR: a masked indirect load; 'other' in integer and bool loads", "[loop_ir]") {
  KernelBuilder kb("both", 8, 4);
  const int idx = kb.buffer("idx", DType::Int32, 32), table = kb.buffer("table", DType::Int32, 12),
            flags = kb.buffer("flags", DType::Bool, 12), out = kb.buffer("out", DType::Int32, 8);
  const ValueId o = kb.load(idx, kb.x() * 4 + kb.r());  // r-level
  const ValueId m = kb.binary(PrimOp::Ge, o, kb.int_constant(0, DType::Int32));
  const ValueId v = kb.load(table, IndexExpr(0), LoadOptions{o, 1, 12, m, -3.7});
  const ValueId f = kb.load(flags, IndexExpr(0), LoadOptions{o, 1, 12, m, 0.5});
  kb.store(out, kb.x(), kb.reduce(dv::ir::ReduceOp::Max, kb.where(f, v, kb.int_constant(0, DType::Int32))));
  CHECK(kb.is_r_level(v));  // through its operands: its index does not use r
  CHECK(kb.instr(v).args == std::vector<ValueId>{o, m});
  CHECK(kb.instr(v).offset_arg() == o);
  CHECK(kb.instr(v).mask_arg() == m);
  CHECK(kb.instr(v).ivalue == -3);  // truncated toward zero
  CHECK(kb.instr(f).ivalue == 1);   // bool(0.5)
  const std::string text = dv::ir::to_string(kb.kernel());
  INFO(text);
  CHECK(contains(text, "load table[%0 (%0 < 12)] if %2 else -3 : i32  (r)"));
}

TEST_CASE("loop IR: bad load operands are rejected", "[loop_ir]") {
  KernelBuilder kb("bad", 4, 1);
  const int b = kb.buffer("b", DType::Float32, 4);
  const ValueId f = kb.load(b, kb.x());
  CHECK_THROWS_AS(kb.load(b, kb.x(), LoadOptions{f, 1, 4}), std::logic_error);  // a float offset
  LoadOptions float_mask;
  float_mask.mask = f;
  CHECK_THROWS_AS(kb.load(b, kb.x(), float_mask), std::logic_error);
}

TEST_CASE("loop IR: a store may take an indirect offset and accumulate; both print", "[loop_ir]") {
  KernelBuilder kb("scatter", 12, 1);
  const int idx = kb.buffer("idx", DType::Int64, 3), src = kb.buffer("src", DType::Float32, 12),
            out = kb.buffer("out", DType::BFloat16, 20);
  const ValueId row = kb.load(idx, dv::ir::floordiv(kb.x(), 4));
  const ValueId v = kb.load(src, kb.x());
  kb.store(out, dv::ir::mod(kb.x(), 4), v, dv::ir::StoreOptions{row, 4, 5, true});
  const auto& st = kb.kernel().body.back();
  CHECK(st.op == PrimOp::Store);
  CHECK(st.indirect);
  CHECK(st.accumulate);
  CHECK(st.args == std::vector<ValueId>{v, row});
  CHECK(st.offset_arg() == row);
  CHECK(st.operand_count() == 2);
  CHECK(kb.kernel().buffers[out].read);  // an accumulating store reads its element
  const std::string text = dv::ir::to_string(kb.kernel());
  INFO(text);
  CHECK(contains(text, "store out[x % 4 + %0*4 (%0 < 5)] += %1 : f32"));
  kb.store(out, kb.x(), v);
  CHECK(contains(dv::ir::to_string(kb.kernel()), "store out[x] = %1 : f32"));
}

TEST_CASE("loop IR: bad store options are rejected", "[loop_ir]") {
  KernelBuilder kb("bad", 4, 1);
  const int f = kb.buffer("f", DType::Float32, 4), b = kb.buffer("b", DType::Bool, 4), h = kb.buffer("h", DType::Float16, 4);
  const ValueId x = kb.load(f, kb.x());
  CHECK_THROWS_AS(kb.store(f, kb.x(), x, dv::ir::StoreOptions{x, 1, 4}), std::logic_error);  // a float offset
  dv::ir::StoreOptions add;
  add.accumulate = true;
  CHECK_THROWS_AS(kb.store(b, kb.x(), kb.cast(x, DType::Bool), add), std::logic_error);  // no adds into b8
  CHECK_THROWS_AS(kb.store(h, kb.x(), kb.cast(x, DType::Float64), add), std::logic_error);  // f16 adds take f32
  CHECK_NOTHROW(kb.store(h, kb.x(), x, add));
}
