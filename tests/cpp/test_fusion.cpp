// Fusion decisions of the scheduler, on hand-built op graphs.
#include <cmath>

#include "catch.h"
#include "codegen/common_nodes.h"
#include "codegen/program.h"
#include "graph_builder.h"

using namespace dv;
using namespace dv::test;
using ir::DType;
using ir::PrimOp;

namespace {

int count_ops(const ir::Kernel& k, PrimOp op) {
  int n = 0;
  for (const auto& i : k.body) n += i.op == op;
  return n;
}

int count_kernel_steps(const codegen::Program& p) {
  int n = 0;
  for (const auto& s : p.steps) n += s.kind == codegen::Step::Kind::Kernel;
  return n;
}

}  // namespace

TEST_CASE("a pointwise chain is one kernel reading its input once", "[fusion]") {
  GraphBuilder b;
  std::vector<std::int64_t> s{37, 129};
  int x = b.input(DType::Float32, s);
  int a = b.op("aten::mul.Tensor", {T(x), F(1.5)}, DType::Float32, s);
  int c = b.op("aten::add.Tensor", {T(a), F(0.3), I(1)}, DType::Float32, s);
  int g = b.op("aten::gelu.default", {T(c), ir::Arg::of_string("none")}, DType::Float32, s);
  int sg = b.op("aten::sigmoid.default", {T(x)}, DType::Float32, s);
  int y = b.op("aten::mul.Tensor", {T(g), T(sg)}, DType::Float32, s);
  b.output(y);
  auto p = codegen::compile_graph(b.g);
  REQUIRE(p.kernels.size() == 1);
  const auto& k = p.kernels[0];
  REQUIRE(k.rnumel == 1);
  REQUIRE(k.xnumel == 37 * 129);
  REQUIRE(count_ops(k, PrimOp::Load) == 1);
  REQUIRE(count_ops(k, PrimOp::Store) == 1);
  for (const auto& i : k.body)
    if (i.op == PrimOp::Load || i.op == PrimOp::Store) REQUIRE(i.index.str() == "x");
}

TEST_CASE("broadcast operands index by the flat position", "[fusion]") {
  GraphBuilder b;
  int x = b.input(DType::Float32, {5, 7});
  int bias = b.input(DType::Float32, {7});
  int y = b.op("aten::add.Tensor", {T(x), T(bias), I(1)}, DType::Float32, {5, 7});
  b.output(y);
  auto p = codegen::compile_graph(b.g);
  REQUIRE(p.kernels.size() == 1);
  bool saw_bias = false;
  for (const auto& i : p.kernels[0].body) {
    if (i.op == PrimOp::Load && i.index.str() != "x") {
      saw_bias = true;
      REQUIRE(i.index == ir::mod(p.kernels[0].x_var(), 7));
    }
  }
  REQUIRE(saw_bias);
}

TEST_CASE("softmax is one kernel with two reductions", "[fusion]") {
  GraphBuilder b;
  int x = b.input(DType::Float32, {6, 33});
  int y = b.op("aten::_softmax.default", {T(x), I(-1), B(false)}, DType::Float32, {6, 33});
  b.output(y);
  auto p = codegen::compile_graph(b.g);
  REQUIRE(p.kernels.size() == 1);
  const auto& k = p.kernels[0];
  REQUIRE(k.xnumel == 6);
  REQUIRE(k.rnumel == 33);
  REQUIRE(count_ops(k, PrimOp::Reduce) == 2);
  REQUIRE(count_ops(k, PrimOp::Load) == 1);
  REQUIRE(count_ops(k, PrimOp::Store) == 1);
}

TEST_CASE("a softmax written out of primitive ops fuses the same way", "[fusion]") {
  GraphBuilder b;
  std::vector<std::int64_t> s{3, 4, 50}, r{3, 4, 1};
  int x = b.input(DType::Float32, s);
  int m = b.op("aten::amax.default", {T(x), L({-1}), B(true)}, DType::Float32, r);
  int d = b.op("aten::sub.Tensor", {T(x), T(m), I(1)}, DType::Float32, s);
  int e = b.op("aten::exp.default", {T(d)}, DType::Float32, s);
  int sum = b.op("aten::sum.dim_IntList", {T(e), L({-1}), B(true), ir::Arg::none()}, DType::Float32, r);
  int y = b.op("aten::div.Tensor", {T(e), T(sum)}, DType::Float32, s);
  b.output(y);
  auto p = codegen::compile_graph(b.g);
  REQUIRE(p.kernels.size() == 1);
  REQUIRE(p.kernels[0].rnumel == 50);
  REQUIRE(count_ops(p.kernels[0], PrimOp::Reduce) == 2);
}

TEST_CASE("layer_norm is one kernel, statistics included", "[fusion]") {
  GraphBuilder b;
  int x = b.input(DType::BFloat16, {9, 4, 96});
  int w = b.input(DType::BFloat16, {4, 96});
  int bias = b.input(DType::BFloat16, {4, 96});
  auto outs = b.op_multi("aten::native_layer_norm.default", {T(x), L({4, 96}), T(w), T(bias), F(1e-5)},
                         {meta(DType::BFloat16, {9, 4, 96}), meta(DType::BFloat16, {9, 1, 1}), meta(DType::BFloat16, {9, 1, 1})});
  for (int o : outs) b.output(o);
  auto p = codegen::compile_graph(b.g);
  REQUIRE(p.kernels.size() == 1);
  const auto& k = p.kernels[0];
  REQUIRE(k.xnumel == 9);
  REQUIRE(k.rnumel == 4 * 96);
  REQUIRE(count_ops(k, PrimOp::Store) == 3);
  REQUIRE(count_ops(k, PrimOp::Reduce) == 2);
}

TEST_CASE("a reduction over a leading dim fuses with its broadcast consumer", "[fusion]") {
  GraphBuilder b;
  int x = b.input(DType::Float32, {10, 3});
  int s = b.op("aten::sum.dim_IntList", {T(x), L({0}), B(true), ir::Arg::none()}, DType::Float32, {1, 3});
  int y = b.op("aten::sub.Tensor", {T(x), T(s), I(1)}, DType::Float32, {10, 3});
  b.output(y);
  auto p = codegen::compile_graph(b.g);
  REQUIRE(p.kernels.size() == 1);
  REQUIRE(p.kernels[0].xnumel == 3);
  REQUIRE(p.kernels[0].rnumel == 10);
}

TEST_CASE("a realized value read transposed starts a new kernel", "[fusion]") {
  GraphBuilder b;
  int x = b.input(DType::Float32, {8, 16});
  int y = b.op("aten::mul.Tensor", {T(x), F(2.0)}, DType::Float32, {8, 16});
  int t = b.op("aten::t.default", {T(y)}, DType::Float32, {16, 8});
  int z = b.op("aten::add.Tensor", {T(t), F(1.0), I(1)}, DType::Float32, {16, 8});
  b.output(y);
  b.output(z);
  auto p = codegen::compile_graph(b.g);
  REQUIRE(p.kernels.size() == 2);
  // The second kernel loads the first one's output.
  REQUIRE(count_ops(p.kernels[1], PrimOp::Load) == 1);
}

TEST_CASE("pointwise producers fuse into the reduction that reads them", "[fusion]") {
  GraphBuilder b;
  int x = b.input(DType::Float32, {12, 40});
  int y = b.op("aten::mul.Tensor", {T(x), T(x)}, DType::Float32, {12, 40});
  int s = b.op("aten::sum.dim_IntList", {T(y), L({1}), B(false), ir::Arg::none()}, DType::Float32, {12});
  b.output(y);  // y is an output too, so it is realized
  b.output(s);
  auto p = codegen::compile_graph(b.g);
  REQUIRE(p.kernels.size() == 1);
  REQUIRE(p.kernels[0].rnumel == 40);
  REQUIRE(count_ops(p.kernels[0], PrimOp::Store) == 2);
}

TEST_CASE("without fusion every realized value is its own kernel", "[fusion]") {
  GraphBuilder b;
  int x = b.input(DType::Float32, {6, 33});
  int y = b.op("aten::_softmax.default", {T(x), I(-1), B(false)}, DType::Float32, {6, 33});
  b.output(y);
  codegen::CompileOptions o;
  o.fuse = false;
  auto p = codegen::compile_graph(b.g, o);
  REQUIRE(p.kernels.size() == 3);
}

TEST_CASE("an op without a lowering becomes a fallback step with realized inputs", "[fusion]") {
  GraphBuilder b;
  int x = b.input(DType::Float32, {4, 4});
  int y = b.op("aten::exp.default", {T(x)}, DType::Float32, {4, 4});
  int z = b.op("aten::mystery_op.default", {T(y), I(3)}, DType::Float32, {4, 4});
  int w = b.op("aten::neg.default", {T(z)}, DType::Float32, {4, 4});
  b.output(w);
  auto p = codegen::compile_graph(b.g);
  REQUIRE(p.steps.size() == 3);
  REQUIRE(p.steps[1].kind == codegen::Step::Kind::Fallback);
  REQUIRE(p.fallback_ops == std::vector<std::string>{"aten::mystery_op.default"});
  REQUIRE(count_kernel_steps(p) == 2);
}

TEST_CASE("an index list on another device makes its op a fallback (a kernel cannot read it)", "[fusion][device]") {
  GraphBuilder b;
  int x = b.input(DType::Float32, {4, 5});
  int idx = b.input(DType::Int64, {3});
  for (int v : {x, idx}) b.g.values[v].device = v == x ? "cuda:0" : "cpu";
  int y = b.op("aten::mul.Tensor", {T(x), F(2.0)}, DType::Float32, {4, 5});
  int z = b.op("aten::index.Tensor", {T(y), ir::Arg::of_tensors({idx})}, DType::Float32, {3, 5});
  for (int v : {y, z}) b.g.values[v].device = "cuda:0";
  b.output(z);
  auto p = codegen::compile_graph(b.g);
  REQUIRE(p.fallback_ops == std::vector<std::string>{"aten::index.Tensor"});
}

TEST_CASE("views are index remapping, not copies", "[fusion]") {
  GraphBuilder b;
  int x = b.input(DType::Float32, {4, 6, 5});
  int p1 = b.op("aten::permute.default", {T(x), L({2, 0, 1})}, DType::Float32, {5, 4, 6});
  int v = b.op("aten::view.default", {T(p1), L({5, 24})}, DType::Float32, {5, 24});
  int sl = b.op("aten::slice.Tensor", {T(v), I(1), I(2), I(20), I(3)}, DType::Float32, {5, 6});
  int y = b.op("aten::neg.default", {T(sl)}, DType::Float32, {5, 6});
  b.output(y);
  auto p = codegen::compile_graph(b.g);
  REQUIRE(p.kernels.size() == 1);
  const auto& k = p.kernels[0];
  REQUIRE(count_ops(k, PrimOp::Load) == 1);
  // Check the load index against a direct computation for every output element.
  for (const auto& i : k.body) {
    if (i.op != PrimOp::Load) continue;
    for (std::int64_t xi = 0; xi < 30; ++xi) {
      std::int64_t row = xi / 6, col = xi % 6;      // y[row, col]
      std::int64_t f = 2 + col * 3;                   // v[row, f]
      std::int64_t a = f / 6, bb = f % 6;             // p1[row, a, bb] = x[a, bb, row]
      std::int64_t expected = a * 30 + bb * 5 + row;
      REQUIRE(i.index.eval([&](const std::string&) { return xi; }) == expected);
    }
  }
}

TEST_CASE("an op on a dtype the loop IR cannot compute is a fallback, never a kernel", "[fusion][dtype]") {
  GraphBuilder b;
  int x = b.input(DType::UInt8, {4, 4});
  int y = b.op("aten::add.Tensor", {T(x), I(1), I(1)}, DType::UInt8, {4, 4});       // u8 in and out
  int z = b.op("aten::_to_copy.default", {T(y)}, DType::Float32, {4, 4});            // u8 in, f32 out
  int w = b.op("aten::neg.default", {T(z)}, DType::Float32, {4, 4});                 // lowered
  int c = b.op("aten::_to_copy.default", {T(w)}, DType::Complex64, {4, 4});          // c64 out
  b.output(w);
  b.output(c);
  auto p = codegen::compile_graph(b.g);
  REQUIRE(p.fallback_ops ==
          std::vector<std::string>{"aten::add.Tensor", "aten::_to_copy.default", "aten::_to_copy.default"});
  REQUIRE(p.kernels.size() == 1);
  for (const auto& k : p.kernels)
    for (const auto& buf : k.buffers) REQUIRE(ir::is_kernel_dtype(buf.dtype));
  REQUIRE(p.notes[0].find("dtype u8 has no loop-IR support") != std::string::npos);
  ir::KernelBuilder kb("k", 4, 1);
  REQUIRE_THROWS(kb.buffer("b", DType::UInt8, 4));
}

TEST_CASE("an undefined output makes a node a fallback whose step skips it", "[fusion]") {
  GraphBuilder b;
  int x = b.input(DType::Float32, {3});
  auto outs = b.op_multi("aten::native_layer_norm.default", {T(x), L({3}), ir::Arg::none(), ir::Arg::none(), F(1e-5)},
                         {meta(DType::Float32, {3}), meta(DType::Float32, {1})});
  b.g.nodes.back().outputs.push_back(-1);
  b.output(outs[0]);
  auto p = codegen::compile_graph(b.g);
  REQUIRE(p.fallback_ops == std::vector<std::string>{"aten::native_layer_norm.default"});
  const auto& step = p.steps.at(0);
  REQUIRE(step.value_slots.size() == 4);
  REQUIRE(step.value_slots.back() == -1);
}

TEST_CASE("select_scatter and slice_scatter are kernels reading their source in bounds", "[fusion]") {
  GraphBuilder b;
  int x = b.input(DType::Float32, {5, 7});
  int col = b.input(DType::Float32, {5});
  int part = b.input(DType::Float32, {5, 2});
  int y = b.op("aten::select_scatter.default", {T(x), T(col), I(1), I(-1)}, DType::Float32, {5, 7});
  int z = b.op("aten::slice_scatter.default", {T(y), T(part), I(1), I(2), I(6), I(3)}, DType::Float32, {5, 7});
  b.output(z);
  auto p = codegen::compile_graph(b.g);
  REQUIRE(p.fallback_ops.empty());
  REQUIRE(p.kernels.size() == 1);
  for (const auto& i : p.kernels[0].body) {
    if (i.op != PrimOp::Load) continue;
    const auto& buf = p.kernels[0].buffers[i.buffer];
    for (std::int64_t xi = 0; xi < 35; ++xi) {
      std::int64_t at = i.index.eval([&](const std::string&) { return xi; });
      REQUIRE(at >= 0);
      REQUIRE(at < buf.numel);
    }
  }
}

namespace {

// x[m,k] @ w[k,n] + bias[n], as F.linear records it: addmm(bias, x, t(w')).
struct Linear {
  GraphBuilder b;
  int x, w, bias, out;
  Linear(double beta = 1, double alpha = 1) {
    x = b.input(DType::Float32, {5, 12});
    w = b.input(DType::Float32, {12, 7});
    bias = b.input(DType::Float32, {7});
    out = b.op("aten::addmm.default", {T(bias), T(x), T(w), F(beta), F(alpha)}, DType::Float32, {5, 7});
  }
};

std::vector<std::string> library_calls(const codegen::Program& p) { return p.fallback_ops; }

}  // namespace

TEST_CASE("a matmul's bias moves into the kernel that reads the product", "[fusion][matmul_bias]") {
  Linear l(0.5);
  int v = l.b.op("aten::view.default", {T(l.out), L({35})}, DType::Float32, {35});
  int g = l.b.op("aten::gelu.default", {T(v), ir::Arg::of_string("none")}, DType::Float32, {35});
  l.b.output(g);
  auto p = codegen::compile_graph(l.b.g);
  REQUIRE(library_calls(p) == std::vector<std::string>{"aten::mm.default"});
  REQUIRE(count_kernel_steps(p) == 1);
  // The product's value is new; the graph's outputs and inputs are the captured ones.
  REQUIRE(p.graph.values.size() == l.b.g.values.size() + 1);
  REQUIRE(p.graph.outputs == l.b.g.outputs);
  REQUIRE(p.graph.inputs == l.b.g.inputs);
  REQUIRE(p.graph.nodes[1].op == "aten::add.Tensor");
  REQUIRE(p.graph.nodes[1].args[2].number() == 0.5);  // beta scales the bias
}

TEST_CASE("a matmul whose product leaves the graph or feeds a library call keeps its bias", "[fusion][matmul_bias]") {
  SECTION("returned") {
    Linear l;
    l.b.output(l.out);
    REQUIRE(library_calls(codegen::compile_graph(l.b.g)) == std::vector<std::string>{"aten::addmm.default"});
  }
  SECTION("read through a view by a library call") {
    Linear l;
    int v = l.b.op("aten::view.default", {T(l.out), L({1, 5, 7})}, DType::Float32, {1, 5, 7});
    int y = l.b.op("aten::bmm.default", {T(v), T(v)}, DType::Float32, {1, 5, 5});  // shapes only matter to ATen
    l.b.output(y);
    auto p = codegen::compile_graph(l.b.g);
    REQUIRE(p.fallback_ops.front() == "aten::addmm.default");
  }
  SECTION("read by a kernel and returned") {
    Linear l;
    int r = l.b.op("aten::relu.default", {T(l.out)}, DType::Float32, {5, 7});
    l.b.output(r);
    l.b.output(l.out);
    REQUIRE(library_calls(codegen::compile_graph(l.b.g)) == std::vector<std::string>{"aten::addmm.default"});
  }
  SECTION("alpha other than 1") {
    Linear l(1, 2);
    int r = l.b.op("aten::relu.default", {T(l.out)}, DType::Float32, {5, 7});
    l.b.output(r);
    REQUIRE(library_calls(codegen::compile_graph(l.b.g)) == std::vector<std::string>{"aten::addmm.default"});
  }
}

// --- masked and indirect loads ---------------------------------------------------------------

namespace {

std::vector<const ir::Instr*> loads_of(const ir::Kernel& k) {
  std::vector<const ir::Instr*> out;
  for (const auto& i : k.body)
    if (i.op == PrimOp::Load) out.push_back(&i);
  return out;
}

}  // namespace

TEST_CASE("an embedding reads its table through an indirect load; a computed table is realized first",
          "[fusion][loads]") {
  GraphBuilder b;
  int w = b.input(DType::Float32, {10, 4});
  int idx = b.input(DType::Int64, {3, 5});
  int w2 = b.op("aten::mul.Tensor", {T(w), F(2.0)}, DType::Float32, {10, 4});
  int e = b.op("aten::embedding.default", {T(w), T(idx), I(-1), B(false), B(false)}, DType::Float32, {3, 5, 4});
  int e2 = b.op("aten::embedding.default", {T(w2), T(idx), I(-1), B(false), B(false)}, DType::Float32, {3, 5, 4});
  b.output(e);
  b.output(e2);
  auto p = codegen::compile_graph(b.g);
  REQUIRE(p.fallback_ops.empty());
  int indirect = 0;
  for (const auto& k : p.kernels)
    for (const ir::Instr* l : loads_of(k)) {
      if (!l->indirect) continue;
      ++indirect;
      CHECK(l->offset_extent == 10);
      CHECK(l->offset_stride == 4);
      CHECK(k.body[l->offset_arg()].dtype == DType::Int64);
    }
  CHECK(indirect == 2);
  // w * 2 is read at data-dependent rows: it is computed into memory by an
  // earlier kernel; the two lookups share the second.
  REQUIRE(count_kernel_steps(p) == 2);
  CHECK(count_ops(p.kernels[0], PrimOp::Store) == 1);
  CHECK(count_ops(p.kernels[0], PrimOp::Mul) == 1);
  CHECK(count_ops(p.kernels[1], PrimOp::Mul) == 0);
}

TEST_CASE("gather from a value computed in the same group starts a new kernel", "[fusion][loads]") {
  GraphBuilder b;
  int x = b.input(DType::Float32, {6, 8});
  int idx = b.input(DType::Int64, {6, 8});
  int ex = b.op("aten::exp.default", {T(x)}, DType::Float32, {6, 8});
  int g = b.op("aten::gather.default", {T(ex), I(1), T(idx), B(false)}, DType::Float32, {6, 8});
  b.output(ex);
  b.output(g);
  auto p = codegen::compile_graph(b.g);
  REQUIRE(p.fallback_ops.empty());
  REQUIRE(count_kernel_steps(p) == 2);  // same shape as exp, but its points are data-dependent
}

TEST_CASE("cat reads every input under its own mask, producers inlined under it", "[fusion][loads]") {
  GraphBuilder b;
  int x = b.input(DType::Float32, {3, 2});
  int y = b.input(DType::Float32, {3, 5});
  int r = b.op("aten::relu.default", {T(y)}, DType::Float32, {3, 5});
  int c = b.op("aten::cat.default", {ir::Arg::of_tensors({x, r}), I(-1)}, DType::Float32, {3, 7});
  b.output(c);
  auto p = codegen::compile_graph(b.g);
  REQUIRE(p.fallback_ops.empty());
  REQUIRE(p.kernels.size() == 1);
  const auto& k = p.kernels[0];
  const auto loads = loads_of(k);
  REQUIRE(loads.size() == 2);
  for (const ir::Instr* l : loads) {
    CHECK(l->masked);
    // Where its mask holds, each load's index is inside its buffer.
    const auto& buf = k.buffers[l->buffer];
    for (std::int64_t xi = 0; xi < 21; ++xi) {
      const std::int64_t j = xi % 7;
      const bool first = buf.numel == 6;
      if (first != (j < 2)) continue;  // masked off
      const std::int64_t at = l->index.eval([&](const std::string&) { return xi; });
      CHECK(at >= 0);
      CHECK(at < buf.numel);
    }
  }
  CHECK(count_ops(k, PrimOp::Maximum) == 1);  // relu, inlined
}

TEST_CASE("a cat that extends an earlier cat reads it, realized, as one part", "[fusion][loads]") {
  // DenseNet's blocks: cat(x, f1, ..., fk) after cat(x, f1, ..., fk-1). Read
  // directly, the k-th cat would load k+1 parts under masks an element.
  GraphBuilder b;
  std::vector<std::int64_t> parts{b.input(DType::Float32, {2, 3, 5})};
  std::vector<int> relus;
  std::int64_t channels = 3;
  for (int k = 0; k < 5; ++k) {
    parts.push_back(b.input(DType::Float32, {2, 2, 5}));
    channels += 2;
    const int c = b.op("aten::cat.default", {ir::Arg::of_tensors(parts), I(1)}, DType::Float32, {2, channels, 5});
    relus.push_back(b.op("aten::relu.default", {T(c)}, DType::Float32, {2, channels, 5}));
  }
  for (int r : relus) b.output(r);
  const auto plan = codegen::compile_graph(b.g);
  REQUIRE(plan.fallback_ops.empty());
  std::size_t most_loads = 0;
  for (const auto& k : plan.kernels) most_loads = std::max(most_loads, loads_of(k).size());
  CHECK(most_loads == 3);  // the cat of three parts; each later cat reads the one before and its new part
}

TEST_CASE("max_pool2d with unread indices is one reduction; a program reading them runs it through ATen",
          "[fusion][loads]") {
  auto graph = [](bool read_indices) {
    GraphBuilder b;
    int x = b.input(DType::Float32, {2, 3, 9, 9});
    auto outs = b.op_multi("aten::max_pool2d_with_indices.default",
                           {T(x), L({3, 3}), L({2, 2}), L({1, 1}), L({1, 1}), B(false)},
                           {meta(DType::Float32, {2, 3, 5, 5}), meta(DType::Int64, {2, 3, 5, 5})});
    b.output(outs[0]);
    if (read_indices) b.output(outs[1]);
    return codegen::compile_graph(b.g);
  };
  auto p = graph(false);
  REQUIRE(p.fallback_ops.empty());
  REQUIRE(p.kernels.size() == 1);
  CHECK(p.kernels[0].xnumel == 2 * 3 * 5 * 5);
  CHECK(p.kernels[0].rnumel == 9);
  CHECK(count_ops(p.kernels[0], PrimOp::Reduce) == 1);
  REQUIRE(loads_of(p.kernels[0]).size() == 1);
  CHECK(loads_of(p.kernels[0])[0]->masked);
  CHECK(loads_of(p.kernels[0])[0]->fvalue == -INFINITY);
  CHECK(graph(true).fallback_ops == std::vector<std::string>{"aten::max_pool2d_with_indices.default"});
}

// x[:, i] = 3 on CUDA: lift_fresh of torch.tensor(3) (a CPU scalar), read
// by a kernel; the copy is also an output when `returned`.
codegen::Program cpu_scalar_copy_in_cuda_plan(bool returned) {
  GraphBuilder b;
  int x = b.input(DType::Float32, {4, 5});
  int three = b.input(DType::Int64, {});
  int fresh = b.op("aten::lift_fresh.default", {T(three)}, DType::Int64, {});
  int y = b.op("aten::mul.Tensor", {T(x), T(fresh)}, DType::Float32, {4, 5});
  for (int v : {x, y}) b.g.values[v].device = "cuda:0";
  for (int v : {three, fresh}) b.g.values[v].device = "cpu";
  b.output(y);
  if (returned) b.output(fresh);
  return codegen::compile_graph(b.g);
}

TEST_CASE("a CPU scalar copied for the kernels of a CUDA plan is one of their scalars", "[fusion][device]") {
  auto p = cpu_scalar_copy_in_cuda_plan(false);
  REQUIRE(p.fallback_ops.empty());
  REQUIRE(count_kernel_steps(p) == 1);
}

TEST_CASE("a CPU scalar copy the caller gets keeps its device: ATen makes it", "[fusion][device]") {
  auto p = cpu_scalar_copy_in_cuda_plan(true);
  REQUIRE(p.fallback_ops == std::vector<std::string>{"aten::lift_fresh.default"});
}

TEST_CASE("an edge pad reads its input through mirrored indices: the input inlines, one read an element", "[fusion]") {
  // exp(x) padded by reflection: the mirrored coordinate is index
  // arithmetic (absolute values), so the exp inlines into the pad's one
  // kernel, evaluated once an output element (no region of its own).
  GraphBuilder b;
  const std::vector<std::int64_t> s{2, 3, 7, 6}, padded{2, 3, 9, 8};
  const int x = b.input(DType::Float32, s);
  const int e = b.op("aten::exp.default", {T(x)}, DType::Float32, s);
  const int p = b.op("aten::reflection_pad2d.default", {T(e), L({1, 1, 1, 1})}, DType::Float32, padded);
  b.output(p);
  const auto plan = codegen::compile_graph(b.g);
  REQUIRE(count_kernel_steps(plan) == 1);
  int exps = 0, loads = 0;
  for (const auto& k : plan.kernels) {
    exps += count_ops(k, PrimOp::Exp);
    loads += count_ops(k, PrimOp::Load);
  }
  CHECK(exps == 1);
  CHECK(loads == 1);
}

TEST_CASE("a float32 cat of bf16 values that only kernels read is stored in bf16", "[fusion][dtype]") {
  // Autocast upsamples in float32: bf16 activations cast up, joined by cat,
  // then padded by reflection and gathered from, which reads the cat from memory. Its values
  // are bf16's, so it is stored in bf16; where a library call reads it (an
  // output here), it stays float32.
  for (const bool returned : {false, true}) {
    GraphBuilder b;
    const int x = b.input(DType::BFloat16, {2, 3, 5, 4}), skip = b.input(DType::BFloat16, {2, 2, 5, 4});
    const int xf = b.op("aten::_to_copy.default", {T(x)}, DType::Float32, {2, 3, 5, 4});
    const int sf = b.op("aten::_to_copy.default", {T(skip)}, DType::Float32, {2, 2, 5, 4});
    const int c = b.op("aten::cat.default", {ir::Arg::of_tensors({xf, sf}), I(1)}, DType::Float32, {2, 5, 5, 4});
    const int p = b.op("aten::reflection_pad2d.default", {T(c), L({1, 1, 1, 1})}, DType::Float32, {2, 5, 7, 6});
    b.output(b.op("aten::_to_copy.default", {T(p)}, DType::BFloat16, {2, 5, 7, 6}));
    // A gather from it keeps the cat in memory (a pad alone now inlines it).
    const int idx = b.input(DType::Int64, {3});
    b.output(b.op("aten::index_select.default", {T(c), I(1), T(idx)}, DType::Float32, {2, 3, 5, 4}));
    if (returned) b.output(c);
    const auto plan = codegen::compile_graph(b.g);
    REQUIRE(plan.fallback_ops.empty());
    int cat_slots = 0;
    for (const auto& s : plan.slots) {
      if (s.origin != codegen::Slot::Origin::Kernel || s.sizes != std::vector<std::int64_t>{2, 5, 5, 4}) continue;
      ++cat_slots;
      CHECK(s.dtype == (returned ? DType::Float32 : DType::BFloat16));
    }
    CHECK(cat_slots == 1);
  }
}

TEST_CASE("transcendental work that a larger kernel would repeat is computed once", "[fusion]") {
  // MonoDepth's decoder: ELU, nearest upsampling, cat. Inlined, the ELU
  // (exp, log, a division) runs for each element of the cat: 4 times per
  // element through the upsampling, and again where the cat takes the skip.
  for (const std::int64_t side : {64, 8}) {  // 8: too small for a kernel of its own to pay
    GraphBuilder b;
    const std::vector<std::int64_t> s{1, 16, side, side}, up{1, 16, 2 * side, 2 * side};
    const int x = b.input(DType::Float32, s), skip = b.input(DType::Float32, {1, 8, 2 * side, 2 * side});
    const int e = b.op("aten::elu.default", {T(x), F(1.0), F(1.0), F(1.0)}, DType::Float32, s);
    const int u = b.op("aten::upsample_nearest2d.default", {T(e), L({2 * side, 2 * side}), F(2.0), F(2.0)},
                       DType::Float32, up);
    b.output(b.op("aten::cat.default", {ir::Arg::of_tensors({u, skip}), I(1)}, DType::Float32,
                  {1, 24, 2 * side, 2 * side}));
    const auto plan = codegen::compile_graph(b.g);
    REQUIRE(plan.fallback_ops.empty());
    int exps = 0;
    for (const auto& k : plan.kernels) exps += count_ops(k, PrimOp::Exp);
    CHECK(exps == 1);
    if (side == 64) {
      REQUIRE(plan.kernels.size() == 2);
      CHECK(plan.kernels[0].xnumel == 16 * 64 * 64);  // the ELU, once an element
      CHECK(count_ops(plan.kernels[1], PrimOp::Exp) == 0);
    } else {
      CHECK(plan.kernels.size() == 1);
    }
  }
}

TEST_CASE("a GPU plan divides by a CPU scalar or a number as ATen's CUDA kernel does: times its reciprocal", "[fusion][device]") {
  // div_true_kernel_cuda computes a * (1 / b) with the reciprocal in the
  // compute type where b is a CPU scalar; a / b can differ by an ulp. A
  // Python number's reciprocal is taken in double when the plan is made. The
  // CPU kernel divides.
  for (const bool gpu : {true, false}) {
    for (const bool number : {true, false}) {
      GraphBuilder b;
      const int x = b.input(DType::BFloat16, {4, 5});
      int y = -1;
      if (number) {
        y = b.op("aten::div.Tensor", {T(x), F(3.0)}, DType::BFloat16, {4, 5});
      } else {
        const int s = b.input(DType::Float32, {});
        y = b.op("aten::div.Tensor", {T(x), T(s)}, DType::BFloat16, {4, 5});
        b.g.values[s].device = "cpu";
      }
      if (gpu) b.g.values[x].device = b.g.values[y].device = "cuda:0";
      b.output(y);
      const auto plan = codegen::compile_graph(b.g);
      REQUIRE(plan.fallback_ops.empty());
      int divs = 0, muls = 0;
      for (const auto& k : plan.kernels) {
        divs += count_ops(k, PrimOp::Div);
        muls += count_ops(k, PrimOp::Mul);
      }
      INFO("gpu " << gpu << ", number " << number);
      CHECK(divs == (gpu && number ? 0 : 1));
      CHECK(muls == (gpu ? 1 : 0));
    }
  }
}

TEST_CASE("a node repeating an earlier one is merged into it", "[fusion][cse]") {
  GraphBuilder b;
  const int x = b.input(DType::Float32, {4, 8});
  const int w = b.input(DType::Float32, {8, 8});
  const int m1 = b.op("aten::mm.default", {T(x), T(w)}, DType::Float32, {4, 8});
  const int m2 = b.op("aten::mm.default", {T(x), T(w)}, DType::Float32, {4, 8});  // the same product
  const int e1 = b.op("aten::exp.default", {T(m1)}, DType::Float32, {4, 8});
  const int e2 = b.op("aten::exp.default", {T(m2)}, DType::Float32, {4, 8});  // the same once m2 is m1
  const int r1 = b.op("aten::rand_like.default", {T(x)}, DType::Float32, {4, 8});
  const int r2 = b.op("aten::rand_like.default", {T(x)}, DType::Float32, {4, 8});  // a new draw
  const int s = b.op("aten::add.Tensor", {T(e1), T(e2), I(1)}, DType::Float32, {4, 8});
  const int s2 = b.op("aten::add.Tensor", {T(r1), T(r2), I(1)}, DType::Float32, {4, 8});
  const int out1 = b.op("aten::neg.default", {T(s)}, DType::Float32, {4, 8});
  const int out2 = b.op("aten::neg.default", {T(s)}, DType::Float32, {4, 8});  // returned: stays
  b.output(out1);
  b.output(out2);
  b.output(s2);
  const ir::Graph merged = codegen::merge_identical_nodes(b.g);
  auto count = [&](const std::string& op) {
    int n = 0;
    for (const auto& node : merged.nodes) n += node.op == op;
    return n;
  };
  CHECK(count("aten::mm.default") == 1);
  CHECK(count("aten::exp.default") == 1);
  CHECK(count("aten::rand_like.default") == 2);
  CHECK(count("aten::neg.default") == 2);
  const auto& add = merged.nodes[4];  // mm, exp, two draws, then the sum
  REQUIRE(add.op == "aten::add.Tensor");
  CHECK(add.args[0].tensor == e1);
  CHECK(add.args[1].tensor == e1);
  CHECK(merged.outputs == std::vector<int>{out1, out2, s2});
}
