// Which values the channels-last pass lays out channels-last, and the
// scheduler's storage of them (codegen/channels_last.h).
#include "catch.h"
#include "codegen/channels_last.h"
#include "codegen/program.h"
#include "graph_builder.h"

using namespace dv;
using namespace dv::test;
using codegen::ChannelsLast;
using ir::Arg;
using ir::DType;

namespace {

const std::vector<std::int64_t> kAct{2, 8, 9, 11};
const std::vector<std::int64_t> kWeight{8, 8, 3, 3};

int convolution(GraphBuilder& b, int x, int w, DType t) {
  return b.op("aten::convolution.default",
              {T(x), T(w), Arg::none(), L({1, 1}), L({1, 1}), L({1, 1}), B(false), L({0, 0}), I(1)}, t, kAct);
}

// autocast's cast of `v` to `t`.
int cast(GraphBuilder& b, int v, DType t, const std::vector<std::int64_t>& sizes) {
  return b.op("aten::_to_copy.default",
              {T(v), Arg::of_dtype(t), Arg::none(), Arg::none(), Arg::none(), B(false), Arg::none()}, t, sizes);
}

// x -> conv(cast(w_f32)) -> relu -> conv(w2) -> view -> sum, and relu + 1 as an output.
struct ConvGraph {
  GraphBuilder b;
  int x, w_f32, w, c, r, w2, c2, y;

  explicit ConvGraph(DType t, const std::string& device = "cuda:0") {
    x = b.input(t, kAct);
    w_f32 = b.input(DType::Float32, kWeight);
    w = cast(b, w_f32, t, kWeight);
    c = convolution(b, x, w, t);
    r = b.op("aten::relu.default", {T(c)}, t, kAct);
    w2 = b.input(t, kWeight);
    c2 = convolution(b, r, w2, t);
    const int flat = b.op("aten::view.default", {T(c2), L({2, 8 * 9 * 11})}, t, {2, 8 * 9 * 11});
    const int s = b.op("aten::sum.default", {T(flat), Arg::none()}, DType::Float32, {});
    y = b.op("aten::add.Tensor", {T(r), F(1.0), I(1)}, t, kAct);
    b.output(s);
    b.output(y);
    for (auto& m : b.g.values) m.device = device;
  }
};

bool is_channels_last(const ir::Graph& g, int v) {
  return g.meta(v).strides == codegen::channels_last_strides(g.meta(v).sizes);
}

}  // namespace

TEST_CASE("bf16 convolutions on a GPU get channels-last activations and weights", "[channels_last]") {
  ConvGraph cg(DType::BFloat16);
  const ir::Graph g = codegen::channels_last_activations(cg.b.g, ChannelsLast::Auto);
  CHECK(is_channels_last(g, cg.c));
  CHECK(is_channels_last(g, cg.w));   // autocast's cast, written channels-last
  CHECK(is_channels_last(g, cg.r));   // what reads a channels-last value
  CHECK(is_channels_last(g, cg.w2));  // a weight input: the plan copies it
  CHECK_FALSE(is_channels_last(g, cg.c2));  // read by a view
  CHECK_FALSE(is_channels_last(g, cg.y));   // an output: the caller's layout
  CHECK_FALSE(is_channels_last(g, cg.x));   // an input read as activations
  CHECK_FALSE(is_channels_last(g, cg.w_f32));

  const ir::Graph no_copies = codegen::channels_last_activations(cg.b.g, ChannelsLast::Auto, /*copy_inputs=*/false);
  CHECK_FALSE(is_channels_last(no_copies, cg.w2));
  CHECK(is_channels_last(no_copies, cg.c));
}

TEST_CASE("float32, CPU plans and Never keep the capture's layout", "[channels_last]") {
  ConvGraph f32(DType::Float32);
  CHECK(codegen::channels_last_activations(f32.b.g, ChannelsLast::Auto) == f32.b.g);
  CHECK(is_channels_last(codegen::channels_last_activations(f32.b.g, ChannelsLast::Always), f32.c));
  ConvGraph cpu(DType::BFloat16, "cpu");
  CHECK(codegen::channels_last_activations(cpu.b.g, ChannelsLast::Auto) == cpu.b.g);
  ConvGraph bf16(DType::BFloat16);
  CHECK(codegen::channels_last_activations(bf16.b.g, ChannelsLast::Never) == bf16.b.g);
}

TEST_CASE("kernels store channels-last values in that order and count their points in it", "[channels_last]") {
  ConvGraph cg(DType::BFloat16);
  codegen::CompileOptions options;
  const codegen::Program p = codegen::compile_graph(cg.b.g, options);
  const std::vector<std::int64_t> cl = codegen::channels_last_strides(kAct);
  bool relu_slot = false;
  for (const auto& s : p.slots) {
    if (s.value == cg.r) {
      CHECK(s.origin == codegen::Slot::Origin::Kernel);
      CHECK(s.strides == cl);
      relu_slot = true;
    }
    if (s.value == cg.y) CHECK(s.strides == ir::contiguous_strides(kAct));  // the output: row-major
  }
  CHECK(relu_slot);
  // The relu kernel iterates in memory order: it reads and writes element x
  // (channels innermost), never x's NCHW offset.
  bool found = false;
  for (const auto& k : p.kernels) {
    const std::string text = ir::to_string(k);
    if (text.find("max") == std::string::npos || k.xnumel != 2 * 8 * 9 * 11) continue;
    found = true;
    CHECK(text.find("[x]") != std::string::npos);
  }
  CHECK(found);
}

TEST_CASE("a convolution's input that the plan makes goes channels-last, one it receives or views does not",
          "[channels_last]") {
  // autocast's cast of the model's f32 input feeds the first convolution:
  // written channels-last, cuDNN needs no copy of it. A view's result keeps
  // the strides its base gives it.
  GraphBuilder b;
  const int x32 = b.input(DType::Float32, kAct);
  const int x = cast(b, x32, DType::BFloat16, kAct);
  const int w = b.input(DType::BFloat16, kWeight);
  const int c = convolution(b, x, w, DType::BFloat16);
  const int flat = b.op("aten::view.default", {T(x), L({2, 8 * 9 * 11})}, DType::BFloat16, {2, 8 * 9 * 11});
  const int viewed = b.op("aten::view.default", {T(flat), L(kAct)}, DType::BFloat16, kAct);
  const int c2 = convolution(b, viewed, w, DType::BFloat16);
  const int raw = b.input(DType::BFloat16, kAct);
  const int c3 = convolution(b, raw, w, DType::BFloat16);
  for (int v : {c, c2, c3}) b.output(b.op("aten::sum.default", {T(v), Arg::none()}, DType::Float32, {}));
  for (auto& m : b.g.values) m.device = "cuda:0";
  const ir::Graph g = codegen::channels_last_activations(b.g, ChannelsLast::Auto);
  CHECK_FALSE(is_channels_last(g, x));  // also read by a view
  CHECK_FALSE(is_channels_last(g, viewed));
  CHECK_FALSE(is_channels_last(g, raw));
  CHECK(is_channels_last(g, c));

  GraphBuilder alone;
  const int y32 = alone.input(DType::Float32, kAct);
  const int y = cast(alone, y32, DType::BFloat16, kAct);
  const int w2 = alone.input(DType::BFloat16, kWeight);
  alone.output(alone.op("aten::sum.default", {T(convolution(alone, y, w2, DType::BFloat16)), Arg::none()},
                        DType::Float32, {}));
  for (auto& m : alone.g.values) m.device = "cuda:0";
  const ir::Graph g2 = codegen::channels_last_activations(alone.g, ChannelsLast::Auto);
  CHECK(is_channels_last(g2, y));
  CHECK_FALSE(is_channels_last(g2, y32));
}
