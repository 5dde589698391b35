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

TEST_CASE("every dtype has a name that parses back", "[graph][dtype]") {
  for (int i = 0; i < ir::kNumDTypes; ++i) {
    auto t = static_cast<DType>(i);
    auto back = ir::parse_dtype(ir::dtype_name(t));
    REQUIRE(back.has_value());
    REQUIRE(*back == t);
    REQUIRE(ir::dtype_size(t) >= 1);
  }
  REQUIRE(ir::is_kernel_dtype(DType::BFloat16));
  REQUIRE_FALSE(ir::is_kernel_dtype(DType::UInt8));
  REQUIRE_FALSE(ir::is_kernel_dtype(DType::Complex64));
  REQUIRE(ir::is_integral(DType::UInt8));
  REQUIRE(ir::is_floating(DType::Float8_e4m3fn));
  REQUIRE(ir::is_complex(DType::Complex32));
  REQUIRE(ir::cuda_storage_type(DType::Float32) == "float");
  REQUIRE_THROWS(ir::cuda_storage_type(DType::UInt8));
}

TEST_CASE("type promotion follows torch.promote_types", "[graph][dtype]") {
  using ir::promote_types;
  REQUIRE(promote_types(DType::UInt8, DType::Int8) == DType::Int16);
  REQUIRE(promote_types(DType::UInt8, DType::Int32) == DType::Int32);
  REQUIRE(promote_types(DType::Bool, DType::UInt8) == DType::UInt8);
  REQUIRE(promote_types(DType::Int16, DType::Float16) == DType::Float16);
  REQUIRE(promote_types(DType::Float16, DType::BFloat16) == DType::Float32);
  REQUIRE(promote_types(DType::Complex32, DType::BFloat16) == DType::Complex64);
  REQUIRE(promote_types(DType::Complex64, DType::Float64) == DType::Complex128);
  REQUIRE(promote_types(DType::Int64, DType::Complex32) == DType::Complex32);
  REQUIRE(promote_types(DType::UInt16, DType::Float32) == DType::Float32);
  REQUIRE(promote_types(DType::Float8_e5m2, DType::Float8_e5m2) == DType::Float8_e5m2);
  REQUIRE_THROWS(promote_types(DType::UInt16, DType::Int32));
  REQUIRE_THROWS(promote_types(DType::Float8_e5m2, DType::Float32));
  REQUIRE_THROWS(promote_types(DType::QInt8, DType::Int8));
}

TEST_CASE("undefined outputs, optional tensor lists, new argument kinds, restrides and output views round-trip",
          "[graph]") {
  GraphBuilder b;
  int x = b.input(DType::UInt8, {4, 8});
  int i = b.input(DType::Int64, {2});
  auto outs = b.op_multi("aten::two_outputs.default", {T(x)}, {meta(DType::Complex64, {4, 8})});
  b.g.nodes.back().outputs.push_back(-1);  // an undefined second output
  ir::Arg floats;
  floats.kind = ir::Arg::Kind::DoubleList;
  floats.doubles = {0.5, -2.25, 1e-30};
  ir::Arg bools;
  bools.kind = ir::Arg::Kind::BoolList;
  bools.ints = {1, 0, 1};
  ir::Arg complex;
  complex.kind = ir::Arg::Kind::Complex;
  complex.d = 1.5;
  complex.imag = -0.25;
  int y = b.op("aten::index.Tensor", {T(outs[0]), ir::Arg::of_tensors({-1, i}), floats, bools, complex},
               DType::Complex64, {4, 2});
  b.output(y);
  b.output(x);
  b.g.restrides.push_back({x, {8, 4}, {1, 8}, 0});
  b.g.output_views.push_back({0, {2, 2}, {2, 1}, 3});
  b.g.sized_by_data.push_back(y);
  std::string text = ir::to_text(b.g);
  REQUIRE(text.find("-> %2 none") != std::string::npos);
  REQUIRE(text.find("tl:[none,%1]") != std::string::npos);
  ir::Graph back = ir::parse_graph(text);
  REQUIRE(back == b.g);
  REQUIRE(ir::to_text(back) == text);
  REQUIRE_THROWS(ir::parse_graph("deepvisor-graph 1\nvalue %0 f32 sizes=2 strides=1 device=cpu aligned=1\n"
                                 "input %0\noutput %0\noutput_view 3 sizes=1 strides=1 offset=0\n"));
  // Only an output can be sized by the data: the host reads its sizes after the graph.
  REQUIRE_THROWS(ir::parse_graph("deepvisor-graph 1\nvalue %0 f32 sizes=2 strides=1 device=cpu aligned=1\n"
                                 "value %1 f32 sizes=2 strides=1 device=cpu aligned=1\n"
                                 "input %0\noutput %0\nsized_by_data %1\n"));
}
