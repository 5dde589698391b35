#include "catch.h"
#include "graph_builder.h"
#include "ir/op_graph.h"

using namespace dv;
using namespace dv::test;
using ir::DType;

TEST_CASE("op graph text round-trips exactly", "[graph]") {
  GraphBuilder b;
  int x = b.input(DType::Float32, {4, 8}, {1, 4});
  int w = b.input(DType::BFloat16, {8});
  int y = b.op("aten::mul.Tensor", {T(x), F(0.1)}, DType::Float32, {4, 8});
  ir::Arg s = ir::Arg::of_string("tan h \"quoted\"");
  int z = b.op("aten::gelu.default", {T(y), s}, DType::Float32, {4, 8});
  ir::Arg list;
  list.kind = ir::Arg::Kind::TensorList;
  list.ints = {x, z};
  ir::Arg dev;
  dev.kind = ir::Arg::Kind::Device;
  dev.s = "cuda:0";
  int c = b.op("aten::cat.default", {list, I(-1), ir::Arg::none(), ir::Arg::of_dtype(DType::Int64), dev, L({1, 2})},
               DType::Float32, {4, 16});
  b.output(c);
  b.output(x);
  b.g.mutations.push_back({w, z});
  b.g.values[w].aligned16 = false;
  std::string text = ir::to_text(b.g);
  ir::Graph back = ir::parse_graph(text);
  REQUIRE(back == b.g);
  REQUIRE(ir::to_text(back) == text);
}

TEST_CASE("op graph parser reports the line of an error", "[graph]") {
  std::string message;
  try {
    ir::parse_graph("deepvisor-graph 1\nvalue %0 f32 sizes=2 strides=1 device=cpu aligned=1\nnode aten::x %7 -> %0\n");
  } catch (const std::exception& e) {
    message = e.what();
  }
  REQUIRE(message.find("line 3") != std::string::npos);
  REQUIRE_THROWS(ir::parse_graph("value %0 f32 sizes=2 strides=1 device=cpu aligned=1\n"));
  REQUIRE_THROWS(ir::parse_graph(""));
}

TEST_CASE("tensor meta helpers", "[graph]") {
  REQUIRE(meta(DType::Float32, {2, 3}).is_contiguous());
  REQUIRE_FALSE(meta(DType::Float32, {2, 3}, {1, 2}).is_contiguous());
  REQUIRE(meta(DType::Float32, {2, 3}, {1, 2}).storage_extent() == 6);
  REQUIRE(meta(DType::Float32, {4, 3}, {0, 1}).storage_extent() == 3);
  REQUIRE(meta(DType::Float32, {0, 3}).storage_extent() == 0);
}
