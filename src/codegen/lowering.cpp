// Lowering of ATen operators into tensor definitions.
//
// Each ATen op's meaning is written here once, as loop-IR instructions; the
// CPU interpreter and the CUDA emitter both consume the result. Type
// promotion follows PyTorch; the result dtype of every node is taken from the
// capture run and checked against what the lowering produces.
#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <numeric>
#include <optional>
#include <set>
#include <stdexcept>
#include <tuple>
#include <unordered_map>

#include "codegen/tensor_def.h"

namespace dv::codegen {

namespace {

using ir::Arg;
using ir::DType;
using ir::IndexExpr;
using ir::KernelBuilder;
using ir::Node;
using ir::PrimOp;
using ir::ReduceOp;
using ir::ValueId;

struct Unsupported : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Coordinates into a tensor of `sizes` broadcast to coordinates `out`
// (numpy rules: align right, size-1 dims read index 0).
Coords broadcast_coords(const std::vector<std::int64_t>& sizes, const Coords& out) {
  if (sizes.size() > out.size()) throw std::logic_error("broadcast: operand has higher rank than the result");
  Coords c(sizes.size());
  std::size_t lead = out.size() - sizes.size();
  for (std::size_t i = 0; i < sizes.size(); ++i) c[i] = sizes[i] == 1 ? IndexExpr(0) : out[lead + i];
  return c;
}

// Coordinates of the same element in a reshaped tensor (row-major order).
Coords reshape_coords(const std::vector<std::int64_t>& in_sizes, const std::vector<std::int64_t>& out_sizes,
                      const Coords& out) {
  IndexExpr flat = ir::linear_index(out, ir::contiguous_strides(out_sizes));
  return ir::unflatten_index(flat, in_sizes);
}

std::int64_t wrap_dim(std::int64_t dim, std::size_t rank) {
  std::int64_t r = static_cast<std::int64_t>(rank == 0 ? 1 : rank);
  if (dim < -r || dim >= r) throw Unsupported("dimension out of range");
  return dim < 0 ? dim + r : dim;
}

// A pointwise operand: a tensor def or a scalar.
struct Operand {
  int def = -1;
  std::vector<std::int64_t> sizes;  // tensor operands
  double value = 0;                 // scalar operands
  bool cpu_scalar = false;          // a 0-d CPU tensor argument of an op on the GPU
  bool is_scalar() const { return def < 0; }
};

ValueId scalar_constant(KernelBuilder& kb, double v, DType compute) {
  if (ir::is_floating(compute)) return kb.constant(v, compute);
  return kb.int_constant(static_cast<std::int64_t>(v), compute);
}

ValueId read_operand(BodyContext& ctx, const Operand& o, const Coords& out, DType compute) {
  if (o.is_scalar()) return scalar_constant(ctx.kb(), o.value, compute);
  return ctx.kb().cast(ctx.read(o.def, broadcast_coords(o.sizes, out)), compute);
}

using Fn1 = std::function<ValueId(KernelBuilder&, ValueId)>;
using FnN = std::function<ValueId(KernelBuilder&, const std::vector<ValueId>&)>;

ValueId bin(KernelBuilder& kb, PrimOp op, ValueId a, ValueId b) { return kb.binary(op, a, b); }
ValueId cst(KernelBuilder& kb, double v, ValueId like) { return scalar_constant(kb, v, kb.dtype(like)); }

bool row_reduction(const TensorDef& def, std::int64_t min_rows);

class Lowerer {
 public:
  // Which nodes that lower run through ATen instead: none, all of them
  // (lower_graph_to_aten) or those that reduce or scatter (lower_graph_rows_to_aten).
  // Rows: scatters, batch norm, and reductions other than row reductions of
  // at least min_rows rows (lower_graph_rows_to_aten).
  enum class AtenPolicy : std::uint8_t { None, All, Rows };
  Lowerer(const ir::Graph& g, AtenPolicy aten, std::int64_t min_rows = 1) : g_(g), aten_(aten), min_rows_(min_rows) {
    out_.value_def.assign(g.values.size(), -1);
  }

  LoweredGraph run();

  // --- access to the node being lowered ---
  const Node& node() const { return *node_; }
  const ir::TensorMeta& out_meta(std::size_t i = 0) const { return g_.meta(node_->outputs.at(i)); }
  // Whether output i of the node is read by a later node or leaves the graph.
  bool output_used(std::size_t i) const {
    int v = node_->outputs.at(i);
    return v >= 0 && value_used(v);
  }
  const Arg& arg(std::size_t i) const {
    static const Arg kNone;
    return i < node_->args.size() ? node_->args[i] : kNone;
  }
  int tensor_def(std::size_t i) const {
    const Arg& a = arg(i);
    if (a.kind != Arg::Kind::Tensor) throw Unsupported("argument " + std::to_string(i) + " is not a tensor");
    int d = out_.value_def.at(a.tensor);
    if (d < 0) throw Unsupported("input value has no definition");
    return d;
  }
  const TensorDef& def(int d) const { return out_.defs.at(d); }
  // The def of graph value v (a TensorList element).
  int value_def(int v) const {
    int d = out_.value_def.at(v);
    if (d < 0) throw Unsupported("input value has no definition");
    return d;
  }
  Operand operand(std::size_t i) const {
    const Arg& a = arg(i);
    if (a.kind == Arg::Kind::Tensor) {
      int d = tensor_def(i);
      const bool cpu_scalar = def(d).sizes.empty() && device_ != "cpu" && g_.meta(a.tensor).device == "cpu";
      return Operand{d, def(d).sizes, 0, cpu_scalar};
    }
    if (a.is_number()) return Operand{-1, {}, a.number()};
    throw Unsupported("argument " + std::to_string(i) + " is neither a tensor nor a number");
  }
  const ir::TensorMeta& arg_meta(std::size_t i) const { return g_.meta(arg(i).tensor); }
  // Scalar arguments of the expected kind; anything else makes the node a
  // fallback instead of being read as 0.
  std::int64_t int_arg(std::size_t i) const {
    const Arg& a = arg(i);
    if (a.kind != Arg::Kind::Int && a.kind != Arg::Kind::Bool)
      throw Unsupported("argument " + std::to_string(i) + " is not an int: " + ir::to_string(a));
    return a.i;
  }
  std::int64_t int_arg_or(std::size_t i, std::int64_t if_none) const { return arg(i).is_none() ? if_none : int_arg(i); }
  double number_arg(std::size_t i) const {
    if (!arg(i).is_number()) throw Unsupported("argument " + std::to_string(i) + " is not a number: " + ir::to_string(arg(i)));
    return arg(i).number();
  }
  double number_arg_or(std::size_t i, double if_none) const { return arg(i).is_none() ? if_none : number_arg(i); }
  bool bool_arg(std::size_t i) const { return int_arg(i) != 0; }
  std::size_t rank_of(std::size_t i) const { return def(tensor_def(i)).sizes.size(); }

  // PyTorch's result_type over the given argument positions (tensors and scalars).
  DType result_type(std::initializer_list<std::size_t> positions) const;

  // --- building defs ---
  int add_def(TensorDef d) {
    d.node = node_index_;
    out_.defs.push_back(std::move(d));
    return static_cast<int>(out_.defs.size()) - 1;
  }
  int pointwise(std::vector<std::int64_t> sizes, DType dtype, std::vector<int> deps, Body body, std::string label);
  // An elementwise op over operands broadcast to the output's sizes.
  // `compute`: the op's common dtype (computed at f16/bf16's compute dtype).
  int elementwise(std::vector<Operand> ops, DType compute, FnN f, DType out_dtype, std::vector<std::int64_t> sizes);
  // Which of an op's operands are rounded to its f16/bf16 common dtype first.
  std::vector<bool> rounded_to_common(const std::vector<Operand>& ops, DType common) const;
  int elementwise(std::vector<Operand> ops, DType compute, FnN f) {
    return elementwise(std::move(ops), compute, std::move(f), out_meta().dtype, out_meta().sizes);
  }
  int unary(Fn1 f) {
    return elementwise({operand(0)}, ir::compute_dtype(out_meta().dtype),
                       [f](KernelBuilder& kb, const std::vector<ValueId>& v) { return f(kb, v[0]); });
  }
  // A reduction over `dims` (sorted, unique) of `input`'s shape, keepdim-shaped.
  // It reduces `element` at each input coordinate (default: `input` itself),
  // in the compute dtype; `extra_deps` are the other defs `element` reads.
  int reduction(int input, const std::vector<std::int64_t>& dims, ReduceOp op, DType dtype, Body element = {},
                std::vector<int> extra_deps = {});
  // Removes the reduced (size-1) dims of a keepdim-shaped def.
  int squeeze_dims(int d, const std::vector<std::int64_t>& dims);
  // A view: the element at out coords is `input` at map(out coords).
  int view(int input, std::vector<std::int64_t> sizes, std::function<Coords(const Coords&)> map);
  // The output's shape in `dtype` (default: the output's): `self` (cast)
  // with `body`'s updates at every point of `update_sizes` written into it
  // (added if `accumulate`); `deps` are the defs `body` reads
  // (TensorDef::Kind::Scatter).
  int scatter(int self, std::vector<std::int64_t> update_sizes, std::vector<int> deps, ScatterBody body,
              bool accumulate, std::optional<DType> dtype = std::nullopt);

  // Def `d` reads the defs `sources` at data-dependent coordinates
  // (BodyContext::read_indirect): they must be in memory.
  void mark_gathered(int d, std::vector<int> sources) { out_.defs.at(d).gathered = std::move(sources); }

  // The cats lowered so far, by dim and parts (lower_cat).
  struct LoweredCat {
    int dim;
    std::vector<int> parts;
    int def;
  };
  std::vector<LoweredCat>& cats() { return cats_; }

  void bind(std::size_t output, int d);
  // The 16-bit float dtype that holds each value of `d` as eager computes
  // it, if any (TensorDef::held_by); `mark_held_by` records one for a
  // float32 def.
  std::optional<DType> held_by(int d) const {
    const TensorDef& td = def(d);
    if (td.dtype == DType::BFloat16 || td.dtype == DType::Float16) return td.dtype;
    return td.held_by;
  }
  void mark_held_by(int d, std::optional<DType> dtype) {
    if (dtype && out_.defs.at(d).dtype == DType::Float32) out_.defs.at(d).held_by = dtype;
  }
  // Readers of `d` see it rounded to its storage dtype if that is f16/bf16
  // (see TensorDef::rounded).
  void mark_rounded(int d) {
    if (out_.defs.at(d).dtype == DType::Float16 || out_.defs.at(d).dtype == DType::BFloat16) out_.defs.at(d).rounded = true;
  }
  const std::string& op_name() const { return node_->op; }
  bool on_gpu() const { return device_ != "cpu"; }
  // Marks the node's f16/bf16 pointwise operands, and those they are made
  // from, rounded: what an op whose result jumps (floor, comparisons, casts
  // to integers) must read to match eager.
  void round_low_precision_operands();

 private:
  void lower_node(int index);
  bool device_scalar_node(int n) const;
  bool runs_through_aten(std::size_t first_def) const;
  bool runs_on_device(int n) const;
  mutable std::vector<signed char> device_scalar_;  // device_scalar_node's memo: -1 unknown, 0, 1
  enum class Why : std::uint8_t { NoLowering, LibraryView, Choice };
  void fallback(int index, const std::string& reason, Why why = Why::NoLowering);
  std::vector<bool> find_library_views() const;
  bool is_unread_allocation(int index) const;

  // A tensor that exists in memory with the layout the capture saw.
  TensorDef buffer_def(int value) const {
    const auto& m = g_.meta(value);
    TensorDef d;
    d.kind = TensorDef::Kind::Buffer;
    d.dtype = m.dtype;
    d.sizes = m.sizes;
    d.strides = m.strides;
    d.value = value;
    return d;
  }

  const ir::Graph& g_;
  const AtenPolicy aten_;
  const std::int64_t min_rows_;
  LoweredGraph out_;
  std::vector<bool> library_view_;  // per node: run as an ATen view (find_library_views)
  std::vector<bool> dead_view_;     // per node: a view nothing reads (forget_dead_views)
  std::vector<std::vector<int>> readers_;  // per value: the nodes that read it
  std::vector<bool> escapes_;              // per value: an output or mutation of the graph
  bool value_used(int v) const { return escapes_[v] || !readers_[v].empty(); }
  void find_readers();
  void forget_dead_views();
  std::string device_;              // where the kernels run: the GPU's if any value lives there
  const Node* node_ = nullptr;
  int node_index_ = -1;
  std::vector<LoweredCat> cats_;
};

using LowerFn = std::function<void(Lowerer&)>;
const std::unordered_map<std::string, LowerFn>& lowerings();

// ---------------------------------------------------------------------------

DType Lowerer::result_type(std::initializer_list<std::size_t> positions) const {
  // Three priority classes, as in PyTorch: tensors with dims, zero-dim tensors,
  // then Python scalars; a lower class only matters if its category is higher.
  std::optional<DType> dim_t, zero_t, scalar_t;
  auto merge = [](std::optional<DType>& acc, DType t) { acc = acc ? ir::promote_types(*acc, t) : t; };
  for (std::size_t p : positions) {
    const Arg& a = arg(p);
    if (a.kind == Arg::Kind::Tensor) {
      const TensorDef& d = def(tensor_def(p));
      merge(d.sizes.empty() ? zero_t : dim_t, d.dtype);
    } else if (a.kind == Arg::Kind::Double) {
      merge(scalar_t, DType::Float32);  // the default dtype
    } else if (a.kind == Arg::Kind::Int) {
      merge(scalar_t, DType::Int64);
    } else if (a.kind == Arg::Kind::Bool) {
      merge(scalar_t, DType::Bool);
    }
  }
  auto category = [](DType t) { return t == DType::Bool ? 0 : ir::is_integral(t) ? 1 : 2; };
  std::optional<DType> result = dim_t;
  for (auto lower : {zero_t, scalar_t}) {
    if (lower && (!result || category(*lower) > category(*result))) result = lower;
  }
  if (!result) throw Unsupported("cannot determine the result type");
  return *result;
}

int Lowerer::pointwise(std::vector<std::int64_t> sizes, DType dtype, std::vector<int> deps, Body body,
                       std::string label) {
  TensorDef d;
  d.kind = TensorDef::Kind::Pointwise;
  d.dtype = dtype;
  d.sizes = std::move(sizes);
  d.deps = std::move(deps);
  d.body = [body = std::move(body), dtype](BodyContext& ctx, const Coords& c) {
    return ctx.kb().cast(body(ctx, c), dtype);
  };
  d.label = std::move(label);
  return add_def(std::move(d));
}

int Lowerer::elementwise(std::vector<Operand> ops, DType compute, FnN f, DType out_dtype,
                         std::vector<std::int64_t> sizes) {
  const std::vector<bool> rounded = rounded_to_common(ops, compute);
  const PrimOp round = compute == DType::BFloat16 ? PrimOp::RoundBf16 : PrimOp::RoundF16;
  compute = ir::compute_dtype(compute);
  std::vector<int> deps;
  for (const auto& o : ops)
    if (!o.is_scalar()) deps.push_back(o.def);
  Body body = [ops, compute, f, rounded, round](BodyContext& ctx, const Coords& c) {
    std::vector<ValueId> vals;
    for (std::size_t i = 0; i < ops.size(); ++i) {
      const ValueId v = read_operand(ctx, ops[i], c, compute);
      vals.push_back(rounded[i] ? ctx.kb().unary(round, v) : v);
    }
    return f(ctx.kb(), vals);
  };
  return pointwise(std::move(sizes), out_dtype, std::move(deps), std::move(body), op_name());
}

// A CUDA kernel of ATen reads a CPU scalar operand as the type its functor
// takes: the compute type (float) for add, sub and mul, and for a divisor
// (div multiplies by its reciprocal); the tensor dtype, so rounded, for every
// other op (comparisons, remainder, atan2, a dividend...). Probed on an H200
// (tests/gpu/test_ops_gpu.py).
bool reads_cpu_scalar_unrounded(const std::string& op, std::size_t position) {
  auto named = [&op](const char* name) { return op.rfind(name, 0) == 0; };
  if (named("aten::add.") || named("aten::sub.") || named("aten::rsub.") || named("aten::mul.")) return true;
  return named("aten::div.") && position == 1;
}

// ATen casts the tensor operands of an op to its common dtype before
// computing (TensorIterator): where that is f16 or bf16, a float32 0-d tensor
// or an integer tensor among them is rounded to it first. Not rounded,
// because ATen reads them at compute precision: on the CPU, the 0-d second
// operand of mul and div (their scalar fast path for reduced floating
// types); on the GPU, a CPU scalar that the op's kernel takes as its compute
// type (reads_cpu_scalar_unrounded). Python numbers: number_as_read.
std::vector<bool> Lowerer::rounded_to_common(const std::vector<Operand>& ops, DType common) const {
  std::vector<bool> rounded(ops.size(), false);
  if ((common != DType::BFloat16 && common != DType::Float16) || ops.size() < 2) return rounded;
  const bool cpu = device_ == "cpu";
  const std::string& op = op_name();
  const bool scalar_fast_path = cpu && (op.rfind("aten::mul", 0) == 0 || op.rfind("aten::div", 0) == 0);
  for (std::size_t i = 0; i < ops.size(); ++i) {
    if (ops[i].is_scalar() || def(ops[i].def).dtype == common) continue;
    const bool zero_dim = def(ops[i].def).sizes.empty();
    rounded[i] = !(ops[i].cpu_scalar && reads_cpu_scalar_unrounded(op, i)) && !(zero_dim && scalar_fast_path && i == 1);
  }
  return rounded;
}

// The value a reduction over no elements yields.
double reduce_identity(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return 0.0;
    case ReduceOp::Prod: return 1.0;
    case ReduceOp::Max: return -INFINITY;
    case ReduceOp::Min: return INFINITY;
  }
  return 0.0;
}

int Lowerer::reduction(int input, const std::vector<std::int64_t>& dims, ReduceOp op, DType dtype, Body element,
                       std::vector<int> extra_deps) {
  const TensorDef& in = def(input);
  std::int64_t count = 1;
  for (auto dim : dims) count *= in.sizes[dim];
  if (count == 0) {  // nothing to reduce: every element is the identity (no kernel has rnumel 0)
    auto sizes = in.sizes;
    for (auto dim : dims) sizes[dim] = 1;
    DType compute = ir::compute_dtype(dtype);
    double identity = reduce_identity(op);
    return pointwise(sizes, dtype, {}, [identity, compute](BodyContext& ctx, const Coords&) {
      return scalar_constant(ctx.kb(), identity, compute);
    }, op_name());
  }
  TensorDef d;
  d.kind = TensorDef::Kind::Reduction;
  d.dtype = dtype;
  d.reduce_op = op;
  d.input_sizes = in.sizes;
  d.reduced.assign(in.sizes.size(), false);
  for (auto dim : dims) d.reduced[dim] = true;
  d.sizes = in.sizes;
  for (auto dim : dims) d.sizes[dim] = 1;
  d.deps = {input};
  d.deps.insert(d.deps.end(), extra_deps.begin(), extra_deps.end());
  DType compute = ir::compute_dtype(dtype);
  if (!element) element = [input](BodyContext& ctx, const Coords& c) { return ctx.read(input, c); };
  d.body = [element = std::move(element), compute](BodyContext& ctx, const Coords& c) {
    return ctx.kb().cast(element(ctx, c), compute);
  };
  d.label = op_name();
  return add_def(std::move(d));
}

int Lowerer::squeeze_dims(int d, const std::vector<std::int64_t>& dims) {
  std::vector<std::int64_t> sizes;
  const auto& in = def(d).sizes;
  for (std::size_t i = 0; i < in.size(); ++i)
    if (std::find(dims.begin(), dims.end(), static_cast<std::int64_t>(i)) == dims.end()) sizes.push_back(in[i]);
  auto in_sizes = in;
  return view(d, sizes, [in_sizes, sizes](const Coords& c) { return reshape_coords(in_sizes, sizes, c); });
}

int Lowerer::view(int input, std::vector<std::int64_t> sizes, std::function<Coords(const Coords&)> map) {
  Body body = [input, map](BodyContext& ctx, const Coords& c) { return ctx.read(input, map(c)); };
  const int d = pointwise(std::move(sizes), def(input).dtype, {input}, std::move(body), op_name());
  mark_held_by(d, def(input).held_by);
  return d;
}

int Lowerer::scatter(int self, std::vector<std::int64_t> update_sizes, std::vector<int> deps, ScatterBody body,
                     bool accumulate, std::optional<DType> dtype) {
  const DType out = dtype.value_or(out_meta().dtype);
  if (accumulate && out == DType::Bool) throw Unsupported(op_name() + " adding into a bool tensor");
  if (def(self).sizes != out_meta().sizes) throw Unsupported(op_name() + " of a self shaped unlike its result");
  const int base = elementwise({Operand{self, def(self).sizes, 0}}, out,
                               [](KernelBuilder&, const std::vector<ValueId>& v) { return v[0]; }, out, out_meta().sizes);
  std::int64_t updates = 1;
  for (auto n : update_sizes) updates *= n;
  if (updates == 0) return base;  // nothing to write: self
  TensorDef d;
  d.kind = TensorDef::Kind::Scatter;
  d.dtype = out;
  d.sizes = out_meta().sizes;
  d.deps = {base};
  d.deps.insert(d.deps.end(), deps.begin(), deps.end());
  d.update_sizes = std::move(update_sizes);
  d.scatter = std::move(body);
  d.accumulate = accumulate;
  d.label = op_name();
  return add_def(std::move(d));
}

void Lowerer::bind(std::size_t output, int d) {
  const auto& m = out_meta(output);
  const TensorDef& td = def(d);
  if (td.dtype != m.dtype || td.sizes != m.sizes) {
    throw Unsupported("lowering produced " + std::string(ir::dtype_name(td.dtype)) + " of rank " +
                      std::to_string(td.sizes.size()) + " but the op returned " + std::string(ir::dtype_name(m.dtype)) +
                      " of rank " + std::to_string(m.sizes.size()));
  }
  out_.value_def[node_->outputs.at(output)] = d;
}

void Lowerer::fallback(int index, const std::string& reason, Why why) {
  const Node& n = g_.nodes[index];
  const bool library_view = why == Why::LibraryView;
  out_.fallback_nodes.push_back(index);
  if (library_view) out_.view_nodes.push_back(index);
  else if (why == Why::Choice) out_.aten_nodes.push_back(index);
  else out_.notes.push_back(n.op + ": " + reason);
  for (int v : n.outputs) {
    if (v < 0) continue;  // an undefined output: nothing to define
    TensorDef d = buffer_def(v);
    d.fallback_node = index;
    d.label = n.op + (library_view ? " (view)" : " (fallback)");
    out_.value_def[v] = add_def(std::move(d));
  }
}

namespace {

// Ops that only allocate: one whose result nothing reads need not run.
bool is_allocation(const std::string& op) {
  static const std::set<std::string> ops = {"aten::empty.memory_format", "aten::empty_strided.default",
                                            "aten::empty_like.default", "aten::new_empty.default",
                                            "aten::new_empty_strided.default"};
  return ops.count(op) > 0;
}

}  // namespace


// Ops whose result jumps where the operand crosses a value (an integer, the
// other operand): floor(x * 3) of a bf16 x is floor of the product rounded to
// bf16 in eager, and computing the product in float32 instead would move it
// across the jump (a whole unit of difference, not an ulp).
bool is_discontinuous(const std::string& op) {
  // argmax/argmin/max.dim/min.dim pick an index (ties that rounding makes
  // decide it); all/any test against zero (rounding can underflow to it).
  static const std::set<std::string> names = {"floor", "ceil", "round", "trunc", "frac", "eq", "ne", "lt", "le",
                                              "gt", "ge", "remainder", "fmod", "floor_divide", "sign", "argmax",
                                              "argmin", "max", "min", "all", "any"};
  if (op.rfind("aten::", 0) != 0) return false;
  const std::string base = op.substr(6, op.find('.') - 6);  // "aten::floor.default" -> "floor"
  return names.count(base) > 0;
}

// Operands that are f16/bf16 results of fused pointwise work are read as
// eager stores them: rounded to their dtype (TensorDef::rounded), and so are
// the f16/bf16 pointwise results they are computed from (eager rounded each
// of them, and one ulp anywhere upstream can move the operand across the
// jump). A reader rounds a rounded def in registers (PrimOp::RoundBf16 / RoundF16).
void Lowerer::round_low_precision_operands() {
  std::vector<int> stack;
  for (const auto& a : node_->args)
    if (a.kind == Arg::Kind::Tensor && out_.value_def.at(a.tensor) >= 0) stack.push_back(out_.value_def.at(a.tensor));
  while (!stack.empty()) {
    const int d = stack.back();
    stack.pop_back();
    const TensorDef& td = def(d);
    const bool low = td.dtype == DType::Float16 || td.dtype == DType::BFloat16;
    if (td.kind != TensorDef::Kind::Pointwise || !low || td.rounded) continue;
    mark_rounded(d);
    stack.insert(stack.end(), td.deps.begin(), td.deps.end());
  }
}

bool Lowerer::is_unread_allocation(int index) const {
  const Node& n = g_.nodes[index];
  if (!is_allocation(n.op)) return false;
  for (int v : n.outputs)
    if (v >= 0 && value_used(v)) return false;
  return true;
}

void Lowerer::find_readers() {
  ir::ValueUses uses = ir::value_uses(g_);
  readers_ = std::move(uses.readers);
  escapes_ = std::move(uses.escapes);
  forget_dead_views();
}

// A view whose results nothing reads is not run, and reads nothing: an
// output that only it read is unused (F.max_pool1d squeezes the indices of
// max_pool2d_with_indices and drops them; read, they would keep the op on ATen).
void Lowerer::forget_dead_views() {
  dead_view_.assign(g_.nodes.size(), false);
  for (std::size_t i = g_.nodes.size(); i-- > 0;) {
    const Node& node = g_.nodes[i];
    if (!is_view_op(node.op) || node.outputs.empty()) continue;
    const bool dead = std::none_of(node.outputs.begin(), node.outputs.end(),
                                   [this](int v) { return v >= 0 && value_used(v); });
    if (!dead) continue;
    dead_view_[i] = true;
    for (const Arg& a : node.args) {
      if (a.kind != Arg::Kind::Tensor) continue;
      auto& r = readers_[static_cast<std::size_t>(a.tensor)];
      r.erase(std::remove(r.begin(), r.end(), static_cast<int>(i)), r.end());
    }
  }
}

// Views whose every reader is a library call (a node without a lowering: a
// matmul, a convolution, attention, a fallback) or another such view, and
// which leave the graph by no other way (outputs, mutations). They run as
// ATen views on the tensor in memory, so that a library call reads a
// transposed weight or a reshaped activation through its layout instead of
// a copy a kernel made (and a producer read by several library calls through
// views is written once).
std::vector<bool> Lowerer::find_library_views() const {
  const std::size_t n = g_.nodes.size();
  std::vector<bool> library(n, false);
  const auto& table = lowerings();
  for (std::size_t i = n; i-- > 0;) {
    const Node& node = g_.nodes[i];
    if (!is_view_op(node.op) || node.args.empty() || node.args[0].kind != Arg::Kind::Tensor) continue;
    bool all = !node.outputs.empty();
    for (int v : node.outputs) {
      if (v < 0 || escapes_[v] || readers_[v].empty()) {
        all = false;
        break;
      }
      for (int r : readers_[v])
        all = all && (library[r] || !table.count(g_.nodes[r].op));
    }
    library[i] = all;
  }
  return library;
}

void Lowerer::lower_node(int index) {
  node_ = &g_.nodes[index];
  node_index_ = index;
  if (dead_view_[index]) return;  // nothing reads it
  if (library_view_[index]) {
    fallback(index, "", Why::LibraryView);
    return;
  }
  if (is_unread_allocation(index)) return;  // ATen's scratch (batch norm's empty reserve): nothing to run
  const auto& table = lowerings();
  auto it = table.find(node_->op);
  if (it == table.end()) {
    fallback(index, "no lowering");
    return;
  }
  for (int v : node_->outputs) {
    if (v < 0) {
      fallback(index, "an output is undefined (None)");
      return;
    }
    if (std::find(g_.sized_by_data.begin(), g_.sized_by_data.end(), v) != g_.sized_by_data.end()) {
      fallback(index, "its result's size depends on the data");
      return;
    }
  }
  // The loop IR computes with kernel dtypes only: an op that reads or writes
  // any other dtype (uint8, complex, float8...) runs through ATen.
  auto kernel_dtype = [&](std::int64_t v) { return v < 0 || ir::is_kernel_dtype(g_.meta(static_cast<int>(v)).dtype); };
  for (const auto& a : node_->args) {
    std::vector<std::int64_t> tensors = a.kind == Arg::Kind::TensorList ? a.ints : std::vector<std::int64_t>{};
    if (a.kind == Arg::Kind::Tensor) tensors.push_back(a.tensor);
    for (auto v : tensors) {
      if (!kernel_dtype(v)) {
        fallback(index, "dtype " + std::string(ir::dtype_name(g_.meta(static_cast<int>(v)).dtype)) + " has no loop-IR support");
        return;
      }
    }
  }
  for (int v : node_->outputs) {
    if (value_used(v) && !kernel_dtype(v)) {  // an output nothing reads is never computed
      fallback(index, "dtype " + std::string(ir::dtype_name(g_.meta(v).dtype)) + " has no loop-IR support");
      return;
    }
  }
  // Kernels run on the plan's device and read its memory: a CPU tensor (not
  // a 0-d scalar) read by work on the GPU (x_cuda[idx_cpu]) runs through ATen.
  for (const auto& a : node_->args) {
    std::vector<std::int64_t> read;  // a tensor, or a list's (x[idx_cpu] passes [idx_cpu])
    if (a.kind == Arg::Kind::Tensor) read.push_back(a.tensor);
    if (a.kind == Arg::Kind::TensorList) read = a.ints;
    for (std::int64_t v : read) {
      if (v < 0) continue;
      const ir::TensorMeta& m = g_.meta(static_cast<int>(v));
      if (m.device != device_ && !m.sizes.empty()) {
        fallback(index, "reads a tensor on " + m.device + ", the plan's kernels run on " + device_);
        return;
      }
    }
  }
  // Kernels run on the plan's device: work on another one (a CUDA program
  // that computes on a copy it moved to the CPU) runs through ATen.
  for (int v : node_->outputs) {
    if (g_.meta(v).device != device_ && !device_scalar_node(index)) {
      fallback(index, "computes on " + g_.meta(v).device + ", the plan's kernels on " + device_);
      return;
    }
  }
  if (is_discontinuous(node_->op)) round_low_precision_operands();
  std::size_t defs_before = out_.defs.size();
  try {
    it->second(*this);
    for (int v : node_->outputs)
      if (out_.value_def[v] < 0) throw Unsupported("lowering left an output undefined");
  } catch (const Unsupported& e) {
    out_.defs.resize(defs_before);
    for (int v : node_->outputs) out_.value_def[v] = -1;
    fallback(index, e.what());
    return;
  }
  if (runs_through_aten(defs_before)) {  // it lowers, but runs through ATen
    out_.defs.resize(defs_before);
    for (int v : node_->outputs) out_.value_def[v] = -1;
    fallback(index, "", Why::Choice);
  }
}

// Whether the node just lowered (its defs from `first_def` on) runs through
// ATen instead, by the policy.
bool Lowerer::runs_through_aten(std::size_t first_def) const {
  if (aten_ == AtenPolicy::All) return true;
  if (aten_ == AtenPolicy::None) return false;
  // Inference batch norm is pointwise, but a per-channel map over NCHW: ATen's
  // CPU kernel runs it a channel at a time, vectorized, where a generated
  // kernel divides every index (ResNet-50 fused: 0.90x eager with it compiled,
  // 1.08x through ATen; bench/NOTES.md). Group norm's rows compile well, but
  // its normalization is the same per-channel map (8x64x32x32, 32 groups:
  // 0.68 ms compiled against ATen's 0.17).
  static const std::set<std::string> per_channel = {"aten::native_batch_norm.default",
                                                    "aten::_native_batch_norm_legit_no_training.default",
                                                    "aten::native_group_norm.default"};
  if (per_channel.count(node_->op) > 0) return true;
  for (std::size_t d = first_def; d < out_.defs.size(); ++d) {
    const TensorDef& def = out_.defs[d];
    if (def.kind == TensorDef::Kind::Scatter) return true;
    if (def.kind == TensorDef::Kind::Reduction && !row_reduction(def, min_rows_)) return true;
  }
  return false;
}

// A reduction over the trailing dims of its input (dims of size 1 aside),
// into at least `min_rows` results: the generated row kernel reads each row
// contiguously (for an input in row-major order) and the executor splits the
// rows across threads, as ATen would. A reduction over leading or middle dims
// (strided rows) or into fewer rows than threads (ATen splits the reduction
// itself) runs through ATen.
bool row_reduction(const TensorDef& def, std::int64_t min_rows) {
  bool reducing = false;
  std::int64_t rows = 1, length = 1;
  for (std::size_t i = 0; i < def.input_sizes.size(); ++i) {
    const std::int64_t n = def.input_sizes[i];
    if (n == 1) continue;
    if (def.reduced[i]) {
      reducing = true;
      length *= n;
    } else {
      if (reducing) return false;  // a kept dim after a reduced one
      rows *= n;
    }
  }
  return length > 1 && rows >= std::max<std::int64_t>(min_rows, 2);
}

// Scalar work on the CPU inside a CUDA program (x[:, i] = 3 copies
// torch.tensor(3); DeBERTa scales by sqrt(torch.tensor(d) * 3)) whose results
// only work on the device reads: the results are scalars of the kernels that
// read them, computed on the device (the executor hands CPU scalar inputs to
// kernels there). A result the caller gets, a decision reads between
// segments (a segment's output) or an op on the CPU reads keeps its device:
// that node runs through ATen.
bool Lowerer::device_scalar_node(int n) const {
  if (device_scalar_.empty()) device_scalar_.assign(g_.nodes.size(), -1);
  if (device_scalar_[n] >= 0) return device_scalar_[n] == 1;
  const ir::Node& node = g_.nodes[n];
  bool ok = true;
  for (const auto& a : node.args) {
    if (a.kind == Arg::Kind::Tensor) ok = ok && g_.meta(a.tensor).sizes.empty();
    if (a.kind == Arg::Kind::TensorList)
      for (std::int64_t v : a.ints) ok = ok && (v < 0 || g_.meta(static_cast<int>(v)).sizes.empty());
  }
  for (std::size_t i = 0; ok && i < node.outputs.size(); ++i) {
    const int v = node.outputs[i];
    if (v < 0) continue;  // an undefined output
    ok = g_.meta(v).sizes.empty() && !escapes_[v];
    for (std::size_t j = 0; ok && j < readers_[v].size(); ++j) ok = runs_on_device(readers_[v][j]);
  }
  device_scalar_[n] = ok ? 1 : 0;
  return ok;
}

// Node `n` computes on the plan's device: its results live there, or they
// are CPU scalars it may compute there.
bool Lowerer::runs_on_device(int n) const {
  for (int v : g_.nodes[n].outputs)
    if (v >= 0 && g_.meta(v).device != device_) return device_scalar_node(n);
  return true;
}

LoweredGraph Lowerer::run() {
  for (std::size_t i = 0; i < g_.inputs.size(); ++i) {
    int v = g_.inputs[i];
    TensorDef d = buffer_def(v);
    d.graph_input = static_cast<int>(i);
    d.label = "input" + std::to_string(i);
    out_.defs.push_back(std::move(d));
    out_.value_def[v] = static_cast<int>(out_.defs.size()) - 1;
  }
  device_ = ir::graph_device(g_);
  find_readers();
  library_view_ = find_library_views();
  for (std::size_t i = 0; i < g_.nodes.size(); ++i) lower_node(static_cast<int>(i));
  return std::move(out_);
}

// --- op families ------------------------------------------------------------

// Reduction dims from an optional int-list argument (None or [] = all dims).
std::vector<std::int64_t> reduction_dims(const Arg& a, std::size_t rank) {
  std::vector<std::int64_t> dims;
  if (a.kind == Arg::Kind::Int) dims.push_back(wrap_dim(a.i, rank));
  else if (a.kind == Arg::Kind::IntList)
    for (auto d : a.ints) dims.push_back(wrap_dim(d, rank));
  if (dims.empty())
    for (std::size_t i = 0; i < rank; ++i) dims.push_back(static_cast<std::int64_t>(i));
  std::sort(dims.begin(), dims.end());
  dims.erase(std::unique(dims.begin(), dims.end()), dims.end());
  return dims;
}

std::int64_t reduced_count(const std::vector<std::int64_t>& sizes, const std::vector<std::int64_t>& dims) {
  std::int64_t n = 1;
  for (auto d : dims) n *= sizes[d];
  return n;
}

// Binds the result of a keepdim-shaped def to output `out`, squeezing if needed.
void bind_reduced(Lowerer& L, std::size_t out, int keep, const std::vector<std::int64_t>& dims, bool keepdim) {
  L.bind(out, keepdim ? keep : L.squeeze_dims(keep, dims));
}

// sum / prod / amax / amin.
void lower_reduce(Lowerer& L, ReduceOp op, const Arg& dim_arg, bool keepdim) {
  int in = L.tensor_def(0);
  auto dims = reduction_dims(dim_arg, L.def(in).sizes.size());
  DType dtype = L.out_meta().dtype;
  int r = L.reduction(in, dims, op, dtype);
  bind_reduced(L, 0, r, dims, keepdim);
}

// all / any: the min / max of (x != 0) as int32 over the dims, then bool.
void lower_all_any(Lowerer& L, ReduceOp op, const Arg& dim_arg, bool keepdim) {
  int in = L.tensor_def(0);
  auto dims = dim_arg.kind == Arg::Kind::Int ? std::vector<std::int64_t>{wrap_dim(dim_arg.i, L.def(in).sizes.size())}
                                              : reduction_dims(dim_arg, L.def(in).sizes.size());
  if (reduced_count(L.def(in).sizes, dims) == 0) throw Unsupported("all/any over no elements");
  int r = L.reduction(in, dims, op, DType::Int32, [in](BodyContext& ctx, const Coords& c) {
    return ctx.kb().cast(ctx.kb().cast(ctx.read(in, c), DType::Bool), DType::Int32);
  });
  int b = L.elementwise({Operand{r, L.def(r).sizes, 0}}, DType::Int32,
                        [](KernelBuilder& kb, const std::vector<ValueId>& v) { return kb.cast(v[0], DType::Bool); },
                        DType::Bool, L.def(r).sizes);
  bind_reduced(L, 0, b, dims, keepdim);
}

// mean's steps, eager's: a sum, then a pointwise divide.
int mean_def(Lowerer& L, int in, const std::vector<std::int64_t>& dims, DType dtype) {
  double count = static_cast<double>(reduced_count(L.def(in).sizes, dims));
  // The sum keeps its accumulator's dtype (float32 for f16/bf16): eager
  // divides the unrounded sum and rounds the mean once; a sum stored in bf16
  // before the division would round on a grid as coarse as the sum.
  int s = L.reduction(in, dims, ReduceOp::Sum, ir::compute_dtype(dtype));
  return L.elementwise({Operand{s, L.def(s).sizes, 0}}, ir::compute_dtype(dtype),
                       [count](KernelBuilder& kb, const std::vector<ValueId>& v) {
                         return bin(kb, PrimOp::Div, v[0], cst(kb, count, v[0]));
                       },
                       dtype, L.def(s).sizes);
}

// The center that the variance family (var, std, layer and group norm)
// measures from: the row's first element (the pivot) and the mean's shift
// from it, sum(x - pivot) / n, so that mean = pivot + shift. Eager's Welford
// moments were exact on the fuzzer's rows of equal values; a plain sum / n
// is off by an ulp of the value there, and layer norm's rsqrt(0 + eps) turns
// that ulp into an error of ~4e-5 of the value (bench/NOTES.md, fuzzer seed
// 2105). The shifted sum also does not cancel when the mean is large
// against the spread.
struct RowCenter {
  int in = -1;
  DType compute = DType::Float32;
  std::vector<std::int64_t> row_sizes;  // the input's sizes with the reduced dims 1
  int shift = -1;                       // keepdim-shaped sum(x - pivot) / n; -1 for empty rows
  int mean = -1;                        // keepdim-shaped pivot + shift (empty rows: eager's sum / n)

  // x at the row's first element; the same expression in every body, so
  // that a kernel reads one pivot a row.
  ValueId pivot(BodyContext& ctx, const Coords& c) const {
    return ctx.kb().cast(ctx.read(in, broadcast_coords(row_sizes, c)), compute);
  }
  ValueId x(BodyContext& ctx, const Coords& c) const { return ctx.kb().cast(ctx.read(in, c), compute); }
  // x - pivot: what the shift sums.
  ValueId shifted(BodyContext& ctx, const Coords& c) const {
    return ctx.kb().binary(PrimOp::Sub, x(ctx, c), pivot(ctx, c));
  }
  // x - mean, as (x - pivot) - shift: the lanes' x - pivot is the sum's own
  // value (one subtract, x itself dead after it, which a row kernel that
  // holds its row in registers needs), and the mean is never rounded at the
  // magnitude of the values.
  ValueId centered(BodyContext& ctx, const Coords& c) const {
    const Coords row = broadcast_coords(row_sizes, c);
    if (shift < 0) return ctx.kb().binary(PrimOp::Sub, x(ctx, c), ctx.read(mean, row));
    return ctx.kb().binary(PrimOp::Sub, shifted(ctx, c), ctx.read(shift, row));
  }
  std::vector<int> centered_deps() const { return {shift >= 0 ? shift : mean}; }
};

RowCenter row_center(Lowerer& L, int in, const std::vector<std::int64_t>& dims, DType dtype) {
  RowCenter center;
  center.in = in;
  center.compute = ir::compute_dtype(dtype);
  center.row_sizes = L.def(in).sizes;
  for (auto d : dims) center.row_sizes[static_cast<std::size_t>(d)] = 1;
  const double count = static_cast<double>(reduced_count(L.def(in).sizes, dims));
  if (count == 0) {  // empty rows have no first element (and a NaN mean)
    center.mean = mean_def(L, in, dims, dtype);
    return center;
  }
  const DType compute = center.compute;
  int s = L.reduction(in, dims, ReduceOp::Sum, compute,
                      [center](BodyContext& ctx, const Coords& c) { return center.shifted(ctx, c); });
  center.shift = L.elementwise({Operand{s, L.def(s).sizes, 0}}, compute,
                               [count](KernelBuilder& kb, const std::vector<ValueId>& v) {
                                 return bin(kb, PrimOp::Div, v[0], cst(kb, count, v[0]));
                               },
                               compute, L.def(s).sizes);
  Body mean = [center](BodyContext& ctx, const Coords& c) {
    return ctx.kb().binary(PrimOp::Add, center.pivot(ctx, c), ctx.read(center.shift, c));
  };
  center.mean = L.pointwise(L.def(s).sizes, dtype, {in, center.shift}, std::move(mean), L.op_name());
  return center;
}

// Two-pass variance: sum((x - mean)^2) / (n - correction), keepdim-shaped.
int variance_def(Lowerer& L, const RowCenter& center, const std::vector<std::int64_t>& dims, double correction,
                 DType dtype) {
  const int in = center.in;
  DType compute = ir::compute_dtype(dtype);
  double count = static_cast<double>(reduced_count(L.def(in).sizes, dims));
  Body squared_deviation = [center](BodyContext& ctx, const Coords& c) {
    const ValueId diff = center.centered(ctx, c);
    return ctx.kb().binary(PrimOp::Mul, diff, diff);
  };
  int sq = L.reduction(in, dims, ReduceOp::Sum, compute, std::move(squared_deviation), center.centered_deps());
  double denom = std::max(0.0, count - correction);
  return L.elementwise({Operand{sq, L.def(sq).sizes, 0}}, compute,
                       [denom](KernelBuilder& kb, const std::vector<ValueId>& v) {
                         return bin(kb, PrimOp::Div, v[0], cst(kb, denom, v[0]));
                       },
                       dtype, L.def(sq).sizes);
}

double correction_arg(const Lowerer& L, std::size_t i) { return L.arg(i).is_none() ? 1.0 : L.number_arg(i); }

void lower_var_std(Lowerer& L, bool take_sqrt) {
  int in = L.tensor_def(0);
  auto dims = reduction_dims(L.arg(1), L.def(in).sizes.size());
  DType dtype = L.out_meta().dtype;
  int var = variance_def(L, row_center(L, in, dims, dtype), dims, correction_arg(L, 2), dtype);
  if (take_sqrt) {
    var = L.elementwise({Operand{var, L.def(var).sizes, 0}}, dtype,
                        [](KernelBuilder& kb, const std::vector<ValueId>& v) { return kb.unary(PrimOp::Sqrt, v[0]); },
                        dtype, L.def(var).sizes);
  }
  bind_reduced(L, 0, var, dims, !L.arg(3).is_none() && L.bool_arg(3));
}

// softmax and log_softmax: max, exp(x - max), sum, then divide (or subtract the log).
// `safe` (_safe_softmax, scaled_dot_product_attention's with a mask): 0
// where the whole row is -inf (every key masked), where softmax gives NaN.
void lower_softmax(Lowerer& L, bool log, bool safe = false) {
  int in = L.tensor_def(0);
  const auto sizes = L.def(in).sizes;
  std::vector<std::int64_t> dims{wrap_dim(L.int_arg(1), sizes.size())};
  if (sizes.empty()) dims.clear();
  DType out = L.out_meta().dtype;
  DType acc = ir::compute_dtype(out) == DType::Float64 ? DType::Float64 : DType::Float32;
  int mx = L.reduction(in, dims, ReduceOp::Max, acc);
  auto red_sizes = L.def(mx).sizes;
  auto shifted = [in, mx, red_sizes, acc](BodyContext& ctx, const Coords& c) {
    auto& kb = ctx.kb();
    ValueId x = kb.cast(ctx.read(in, c), acc);
    ValueId m = ctx.read(mx, broadcast_coords(red_sizes, c));
    return kb.binary(PrimOp::Sub, x, m);
  };
  int sum = L.reduction(in, dims, ReduceOp::Sum, acc, [shifted](BodyContext& ctx, const Coords& c) {
    return ctx.kb().unary(PrimOp::Exp, shifted(ctx, c));
  }, {mx});
  Body body = [shifted, sum, mx, red_sizes, log, safe, acc](BodyContext& ctx, const Coords& c) {
    auto& kb = ctx.kb();
    ValueId z = shifted(ctx, c);
    ValueId s = ctx.read(sum, broadcast_coords(red_sizes, c));
    if (log) return kb.binary(PrimOp::Sub, z, kb.unary(PrimOp::Log, s));
    const ValueId p = kb.binary(PrimOp::Div, kb.unary(PrimOp::Exp, z), s);
    if (!safe) return p;
    const ValueId all_masked = kb.binary(PrimOp::Eq, ctx.read(mx, broadcast_coords(red_sizes, c)), kb.constant(-INFINITY, acc));
    return kb.where(all_masked, kb.constant(0, acc), p);
  };
  L.bind(0, L.pointwise(sizes, out, {in, mx, sum}, std::move(body), L.op_name()));
}

// Batch norm in inference, per channel (dim 1), in ATen's form:
//   x * alpha + beta, alpha = weight / sqrt(running_var + eps),
//   beta = bias - running_mean * alpha.
// Argument positions differ by op: weight, bias, running mean and variance,
// the training flag (-1: none, the op is for inference) and eps. The other
// outputs (saved statistics, cuDNN's reserve) are empty in inference; a
// program that reads them runs the op through ATen.
void lower_batch_norm_inference(Lowerer& L, std::size_t weight, std::size_t bias, std::size_t mean, std::size_t var,
                                int training, std::size_t eps_pos) {
  if (training >= 0 && L.bool_arg(static_cast<std::size_t>(training))) throw Unsupported("batch norm in training");
  if (L.arg(mean).is_none() || L.arg(var).is_none()) throw Unsupported("batch norm without running statistics");
  int in = L.tensor_def(0);
  const auto sizes = L.def(in).sizes;
  if (sizes.size() < 2) throw Unsupported("batch norm of an input without a channel dimension");
  const double eps = L.number_arg(eps_pos);
  auto optional_def = [&L](std::size_t pos) { return L.arg(pos).is_none() ? -1 : L.tensor_def(pos); };
  const int w = optional_def(weight), b = optional_def(bias), m = L.tensor_def(mean), v = L.tensor_def(var);
  const DType out = L.out_meta(0).dtype;
  const DType acc = ir::compute_dtype(out) == DType::Float64 ? DType::Float64 : DType::Float32;
  Body body = [in, w, b, m, v, eps, acc](BodyContext& ctx, const Coords& c) {
    auto& kb = ctx.kb();
    const Coords channel{c[1]};
    auto param = [&](int d) { return kb.cast(ctx.read(d, channel), acc); };
    ValueId std = kb.unary(PrimOp::Sqrt, kb.binary(PrimOp::Add, param(v), scalar_constant(kb, eps, acc)));
    ValueId alpha = kb.binary(PrimOp::Div, w >= 0 ? param(w) : scalar_constant(kb, 1.0, acc), std);
    ValueId beta = kb.binary(PrimOp::Mul, param(m), alpha);
    beta = b >= 0 ? kb.binary(PrimOp::Sub, param(b), beta) : kb.unary(PrimOp::Neg, beta);
    return kb.binary(PrimOp::Add, kb.binary(PrimOp::Mul, kb.cast(ctx.read(in, c), acc), alpha), beta);
  };
  std::vector<int> deps{in, m, v};
  for (int d : {w, b})
    if (d >= 0) deps.push_back(d);
  int d = L.pointwise(sizes, out, deps, std::move(body), L.op_name());
  L.mark_rounded(d);
  L.bind(0, d);
  for (std::size_t i = 1; i < L.node().outputs.size(); ++i) {
    if (L.output_used(i)) throw Unsupported("a program that reads batch norm's saved statistics");
    const auto& meta = L.out_meta(i);
    L.bind(i, L.pointwise(meta.sizes, meta.dtype, {}, [](BodyContext& ctx, const Coords&) {
      return ctx.kb().constant(0.0, DType::Float32);
    }, L.op_name()));
  }
}

// native_layer_norm(input, normalized_shape, weight?, bias?, eps) -> (out, mean, rstd).
void lower_layer_norm(Lowerer& L) {
  int in = L.tensor_def(0);
  const auto sizes = L.def(in).sizes;
  std::size_t norm_rank = L.arg(1).ints.size();
  if (norm_rank > sizes.size()) throw Unsupported("normalized_shape longer than the input");
  std::vector<std::int64_t> dims;
  for (std::size_t i = sizes.size() - norm_rank; i < sizes.size(); ++i) dims.push_back(static_cast<std::int64_t>(i));
  DType out = L.out_meta(0).dtype;
  DType stat = L.out_meta(1).dtype;
  DType acc = ir::compute_dtype(out) == DType::Float64 ? DType::Float64 : DType::Float32;
  double eps = L.number_arg(4);
  const RowCenter center = row_center(L, in, dims, acc);
  const int mean = center.mean;
  int var = variance_def(L, center, dims, 0.0, acc);
  auto red_sizes = L.def(var).sizes;
  int rstd = L.elementwise({Operand{var, red_sizes, 0}}, acc,
                           [eps](KernelBuilder& kb, const std::vector<ValueId>& v) {
                             return kb.unary(PrimOp::Rsqrt, bin(kb, PrimOp::Add, v[0], cst(kb, eps, v[0])));
                           },
                           acc, red_sizes);
  std::optional<Operand> weight, bias;
  if (!L.arg(2).is_none()) weight = L.operand(2);
  if (!L.arg(3).is_none()) bias = L.operand(3);
  std::vector<int> deps{in, rstd};
  for (int d : center.centered_deps()) deps.push_back(d);
  if (weight) deps.push_back(weight->def);
  if (bias) deps.push_back(bias->def);
  Body body = [center, rstd, red_sizes, weight, bias, acc](BodyContext& ctx, const Coords& c) {
    auto& kb = ctx.kb();
    ValueId y = kb.binary(PrimOp::Mul, center.centered(ctx, c), ctx.read(rstd, broadcast_coords(red_sizes, c)));
    if (weight) y = kb.binary(PrimOp::Mul, y, read_operand(ctx, *weight, c, acc));
    if (bias) y = kb.binary(PrimOp::Add, y, read_operand(ctx, *bias, c, acc));
    return y;
  };
  L.bind(0, L.pointwise(sizes, out, deps, std::move(body), L.op_name()));
  // mean and rstd outputs: keepdim-shaped with the statistics' dtype.
  auto as_stat = [&](int d) {
    return L.elementwise({Operand{d, red_sizes, 0}}, acc,
                         [](KernelBuilder&, const std::vector<ValueId>& v) { return v[0]; }, stat, red_sizes);
  };
  L.bind(1, as_stat(mean));
  L.bind(2, as_stat(rstd));
}

// 1 / sqrt(var + eps), in `acc`.
int rstd_def(Lowerer& L, int var, double eps, DType acc) {
  return L.elementwise({Operand{var, L.def(var).sizes, 0}}, acc,
                       [eps](KernelBuilder& kb, const std::vector<ValueId>& v) {
                         return kb.unary(PrimOp::Rsqrt, bin(kb, PrimOp::Add, v[0], cst(kb, eps, v[0])));
                       },
                       acc, L.def(var).sizes);
}

// Group and batch norm's output, in ATen's form: x * scale + shift per
// channel (dim 1), scale = weight * rstd and shift = bias - mean * scale,
// the statistics read at stat_at(c). Weight and bias are arguments 1 and 2.
int normalized_def(Lowerer& L, int in, int mean, int rstd, DType acc, std::function<Coords(const Coords&)> stat_at) {
  auto optional_def = [&L](std::size_t pos) { return L.arg(pos).is_none() ? -1 : L.tensor_def(pos); };
  const int w = optional_def(1), b = optional_def(2);
  std::vector<int> deps{in, mean, rstd};
  for (int d : {w, b})
    if (d >= 0) deps.push_back(d);
  Body body = [in, mean, rstd, w, b, acc, stat_at](BodyContext& ctx, const Coords& c) {
    auto& kb = ctx.kb();
    const Coords at = stat_at(c), channel{c[1]};
    ValueId scale = ctx.read(rstd, at);
    if (w >= 0) scale = kb.binary(PrimOp::Mul, scale, kb.cast(ctx.read(w, channel), acc));
    ValueId shift = kb.binary(PrimOp::Mul, kb.unary(PrimOp::Neg, scale), ctx.read(mean, at));
    if (b >= 0) shift = kb.binary(PrimOp::Add, shift, kb.cast(ctx.read(b, channel), acc));
    return kb.binary(PrimOp::Add, kb.binary(PrimOp::Mul, kb.cast(ctx.read(in, c), acc), scale), shift);
  };
  return L.pointwise(L.def(in).sizes, L.out_meta(0).dtype, deps, std::move(body), L.op_name());
}

// A keepdim-shaped statistic of a norm as its saved output: in the output's
// dtype, the reduced dims dropped.
int statistic_output(Lowerer& L, int d, const std::vector<std::int64_t>& dims, DType acc) {
  const auto sizes = L.def(d).sizes;
  const int cast = L.elementwise({Operand{d, sizes, 0}}, acc,
                                 [](KernelBuilder&, const std::vector<ValueId>& v) { return v[0]; }, L.out_meta(1).dtype,
                                 sizes);
  return L.squeeze_dims(cast, dims);
}

// native_group_norm(input, weight?, bias?, N, C, HxW, group, eps) ->
// (out, mean, rstd) in inference. The statistics are layer norm's over a
// (N, group, C / group * HxW) view of the input; the affine is eager's
// per-channel form: y = x * scale + bias with scale = rstd * weight[c] and
// bias = -scale * mean + bias[c]. mean and rstd, shaped (N, group), are
// computed only where something reads them.
void lower_group_norm(Lowerer& L) {
  const int in = L.tensor_def(0);
  const auto sizes = L.def(in).sizes;
  const std::int64_t n = L.int_arg(3), channels = L.int_arg(4), hxw = L.int_arg(5), groups = L.int_arg(6);
  if (sizes.size() < 2 || sizes[0] != n || sizes[1] != channels || groups <= 0 || channels % groups != 0 ||
      L.def(in).numel() != n * channels * hxw || L.def(in).numel() == 0)
    throw Unsupported("group norm arguments that do not describe the input");
  const double eps = L.number_arg(7);
  const std::int64_t per_group = channels / groups;
  const DType out = L.out_meta(0).dtype;
  const DType acc = ir::compute_dtype(out) == DType::Float64 ? DType::Float64 : DType::Float32;
  const std::vector<std::int64_t> grouped_sizes{n, groups, per_group * hxw};
  const int grouped = L.view(in, grouped_sizes, [sizes, grouped_sizes](const Coords& c) {
    return reshape_coords(sizes, grouped_sizes, c);
  });
  const std::vector<std::int64_t> dims{2};
  const RowCenter center = row_center(L, grouped, dims, acc);
  const int mean = center.mean;
  const int var = variance_def(L, center, dims, 0.0, acc);
  const auto stat_sizes = L.def(var).sizes;  // (N, group, 1)
  const int rstd = rstd_def(L, var, eps, acc);
  L.bind(0, normalized_def(L, in, mean, rstd, acc, [per_group](const Coords& c) {
    return Coords{c[0], ir::floordiv(c[1], per_group), 0};
  }));
  L.bind(1, statistic_output(L, mean, dims, acc));  // (N, group)
  L.bind(2, statistic_output(L, rstd, dims, acc));
}

// native_batch_norm(input, weight?, bias?, None, None, training=True,
// momentum, eps): normalized by the batch's own statistics, with no running
// statistics to update (NFNet's weight standardization of its convolution
// weights): per channel (dim 1) the mean and biased variance over every
// other dim, x * scale + shift with scale = weight * rstd, as group norm;
// the saved mean and rstd are outputs 1 and 2.
void lower_batch_norm_batch_statistics(Lowerer& L) {
  if (!L.arg(3).is_none() || !L.arg(4).is_none()) throw Unsupported("batch norm in training that updates running statistics");
  const int in = L.tensor_def(0);
  const auto sizes = L.def(in).sizes;
  if (sizes.size() < 2 || L.def(in).numel() == 0) throw Unsupported("batch norm of an empty input or one without channels");
  std::vector<std::int64_t> dims;
  for (std::int64_t d = 0; d < static_cast<std::int64_t>(sizes.size()); ++d)
    if (d != 1) dims.push_back(d);
  const double eps = L.number_arg(7);
  const DType out = L.out_meta(0).dtype;
  const DType acc = ir::compute_dtype(out) == DType::Float64 ? DType::Float64 : DType::Float32;
  const RowCenter center = row_center(L, in, dims, acc);
  const int mean = center.mean;
  const int var = variance_def(L, center, dims, 0.0, acc);
  const auto stat_sizes = L.def(var).sizes;  // (1, C, 1, ...)
  const int rstd = rstd_def(L, var, eps, acc);
  L.bind(0, normalized_def(L, in, mean, rstd, acc, [stat_sizes](const Coords& c) { return broadcast_coords(stat_sizes, c); }));
  L.bind(1, statistic_output(L, mean, dims, acc));  // (C)
  L.bind(2, statistic_output(L, rstd, dims, acc));
}

// argmax / argmin (self, dim?, keepdim) and the indices of max.dim / min.dim:
// the first index of the extremum, a NaN counting as the extremum of all
// (eager's GreaterOrNan / LessOrNan: the first NaN wins). Two reductions:
// the extremum m (Max / Min propagate NaN), then the smallest index where
// the element equals m, or is NaN where m is. The index is the coordinate
// along a single dim, the row-major offset when all dims are reduced.
// Returns the keepdim-shaped (extremum, index) defs.
std::pair<int, int> arg_extremum(Lowerer& L, ReduceOp op, const std::vector<std::int64_t>& dims) {
  const int in = L.tensor_def(0);
  const DType dtype = L.def(in).dtype;
  const auto sizes = L.def(in).sizes;
  if (dtype == DType::Bool) throw Unsupported("argmax/argmin of bools");
  const std::int64_t count = reduced_count(sizes, dims);
  if (count == 0) throw Unsupported("argmax/argmin over no elements");
  const bool floating = ir::is_floating(dtype);
  const int extremum = L.reduction(in, dims, op, dtype);  // a selection: exact in any dtype
  const auto red_sizes = L.def(extremum).sizes;
  // Row-major strides of the reduced sub-space.
  std::vector<std::int64_t> strides(sizes.size(), 0);
  std::int64_t stride = 1;
  for (auto d = dims.rbegin(); d != dims.rend(); ++d) strides[*d] = stride, stride *= sizes[*d];
  Body position = [in, extremum, red_sizes, strides, count, floating](BodyContext& ctx, const Coords& c) {
    auto& kb = ctx.kb();
    const ValueId x = ctx.read(in, c), m = ctx.read(extremum, broadcast_coords(red_sizes, c));
    ValueId hit = kb.binary(PrimOp::Eq, x, m);
    if (floating) hit = kb.binary(PrimOp::LogicalOr, hit, kb.binary(PrimOp::LogicalAnd, kb.unary(PrimOp::IsNan, x), kb.unary(PrimOp::IsNan, m)));
    const ValueId index = kb.index_value(ir::linear_index(c, strides), DType::Int64);
    return kb.where(hit, index, kb.int_constant(count, DType::Int64));
  };
  const int index = L.reduction(in, dims, ReduceOp::Min, DType::Int64, std::move(position), {extremum});
  return {extremum, index};
}

void lower_argmax_argmin(Lowerer& L, ReduceOp op) {
  const std::size_t rank = L.rank_of(0);
  const bool keepdim = !L.arg(2).is_none() && L.bool_arg(2);
  if (rank == 0) {  // the only element: index 0
    L.bind(0, L.pointwise({}, DType::Int64, {}, [](BodyContext& ctx, const Coords&) {
      return ctx.kb().int_constant(0, DType::Int64);
    }, L.op_name()));
    return;
  }
  const auto dims = L.arg(1).is_none() ? reduction_dims(Arg::none(), rank)
                                       : std::vector<std::int64_t>{wrap_dim(L.int_arg(1), rank)};
  bind_reduced(L, 0, arg_extremum(L, op, dims).second, dims, keepdim);
}

// max.dim / min.dim (self, dim, keepdim) -> (values, indices).
void lower_extremum_dim(Lowerer& L, ReduceOp op) {
  const std::size_t rank = L.rank_of(0);
  if (rank == 0) throw Unsupported("max/min along a dim of a zero-dim tensor");
  const std::vector<std::int64_t> dims{wrap_dim(L.int_arg(1), rank)};
  const bool keepdim = L.bool_arg(2);
  const auto [values, indices] = arg_extremum(L, op, dims);
  bind_reduced(L, 0, values, dims, keepdim);
  bind_reduced(L, 1, indices, dims, keepdim);
}

// --- pointwise op helpers ---------------------------------------------------

ValueId sigmoid(KernelBuilder& kb, ValueId x) {
  ValueId one = cst(kb, 1.0, x);
  return bin(kb, PrimOp::Div, one, bin(kb, PrimOp::Add, one, kb.unary(PrimOp::Exp, kb.unary(PrimOp::Neg, x))));
}

ValueId gelu(KernelBuilder& kb, ValueId x, bool tanh_approx) {
  ValueId half_x = bin(kb, PrimOp::Mul, x, cst(kb, 0.5, x));
  ValueId inner;
  if (tanh_approx) {
    ValueId x3 = bin(kb, PrimOp::Mul, bin(kb, PrimOp::Mul, x, x), x);
    ValueId poly = bin(kb, PrimOp::Add, x, bin(kb, PrimOp::Mul, x3, cst(kb, 0.044715, x)));
    inner = kb.unary(PrimOp::Tanh, bin(kb, PrimOp::Mul, poly, cst(kb, std::sqrt(2.0 / M_PI), x)));
  } else {
    inner = kb.unary(PrimOp::Erf, bin(kb, PrimOp::Mul, x, cst(kb, M_SQRT1_2, x)));
  }
  return bin(kb, PrimOp::Mul, half_x, bin(kb, PrimOp::Add, cst(kb, 1.0, x), inner));
}

ValueId sign(KernelBuilder& kb, ValueId x) {
  ValueId zero = cst(kb, 0, x);
  ValueId pos = kb.cast(bin(kb, PrimOp::Gt, x, zero), kb.dtype(x));
  ValueId neg = kb.cast(bin(kb, PrimOp::Lt, x, zero), kb.dtype(x));
  return bin(kb, PrimOp::Sub, pos, neg);
}

// x + alpha * y (add, sub and rsub with alpha).
FnN add_with_alpha(PrimOp op, double alpha, bool reversed) {
  return [op, alpha, reversed](KernelBuilder& kb, const std::vector<ValueId>& v) {
    ValueId a = reversed ? v[1] : v[0];
    ValueId b = reversed ? v[0] : v[1];
    if (alpha != 1.0) b = bin(kb, PrimOp::Mul, b, cst(kb, alpha, b));
    return bin(kb, op, a, b);
  };
}

FnN binary_fn(PrimOp op) {
  return [op](KernelBuilder& kb, const std::vector<ValueId>& v) { return bin(kb, op, v[0], v[1]); };
}

// a * (1 / b), the reciprocal in the compute type: how ATen's CUDA kernel
// divides by a CPU scalar or a Python number (div_true_kernel_cuda), which
// can differ from a / b by an ulp. The GPU plan follows it to the bit.
ValueId times_reciprocal(KernelBuilder& kb, const std::vector<ValueId>& v) {
  return bin(kb, PrimOp::Mul, v[0], bin(kb, PrimOp::Div, cst(kb, 1.0, v[1]), v[1]));
}

// The loop IR has no arithmetic on Bool: bools add and multiply as integers
// (torch: add is or, mul is and), and the result is cast back (x != 0).
DType arithmetic_dtype(DType t) { return t == DType::Bool ? DType::Int32 : t; }

// Python's a // b. For floats as eager computes it (c10::div_floor_floating):
// from fmod(a, b), so that 1.0 // 0.1 == 9 although 1.0 / 0.1 rounds to 10.
ValueId floor_divide(KernelBuilder& kb, ValueId a, ValueId b) {
  if (!ir::is_floating(kb.dtype(a))) return bin(kb, PrimOp::FloorDiv, a, b);
  ValueId zero = cst(kb, 0, a), one = cst(kb, 1, a);
  // fmod(a, b) = sign(a) * remainder(|a|, |b|), exactly.
  ValueId abs_mod = bin(kb, PrimOp::Mod, kb.unary(PrimOp::Abs, a), kb.unary(PrimOp::Abs, b));
  ValueId mod = kb.where(bin(kb, PrimOp::Lt, a, zero), kb.unary(PrimOp::Neg, abs_mod), abs_mod);
  ValueId div = bin(kb, PrimOp::Div, bin(kb, PrimOp::Sub, a, mod), b);
  ValueId signs_differ = bin(kb, PrimOp::LogicalXor, bin(kb, PrimOp::Lt, b, zero), bin(kb, PrimOp::Lt, mod, zero));
  ValueId adjust = bin(kb, PrimOp::LogicalAnd, bin(kb, PrimOp::Ne, mod, zero), signs_differ);
  div = kb.where(adjust, bin(kb, PrimOp::Sub, div, one), div);
  ValueId floored = kb.unary(PrimOp::Floor, div);
  ValueId round_up = bin(kb, PrimOp::Gt, bin(kb, PrimOp::Sub, div, floored), cst(kb, 0.5, a));
  floored = kb.where(round_up, bin(kb, PrimOp::Add, floored, one), floored);
  ValueId quotient = bin(kb, PrimOp::Div, a, b);
  ValueId signed_zero = bin(kb, PrimOp::Mul, quotient, zero);  // copysign(0, a / b)
  ValueId result = kb.where(bin(kb, PrimOp::Eq, div, zero), signed_zero, floored);
  return kb.where(bin(kb, PrimOp::Eq, b, zero), quotient, result);
}

// pow with a constant exponent becomes multiplications where that is exact enough.
ValueId pow_scalar_exponent(KernelBuilder& kb, ValueId x, double e) {
  if (e == 1.0) return x;
  if (e == 2.0) return bin(kb, PrimOp::Mul, x, x);
  if (e == 3.0) return bin(kb, PrimOp::Mul, bin(kb, PrimOp::Mul, x, x), x);
  if (ir::is_floating(kb.dtype(x))) {
    if (e == 0.5) return kb.unary(PrimOp::Sqrt, x);
    if (e == -0.5) return kb.unary(PrimOp::Rsqrt, x);
    if (e == -1.0) return bin(kb, PrimOp::Div, cst(kb, 1.0, x), x);
  }
  return bin(kb, PrimOp::Pow, x, cst(kb, e, x));
}

void lower_where(Lowerer& L) {
  Operand cond = L.operand(0);
  DType compute = ir::compute_dtype(L.out_meta().dtype);
  std::vector<Operand> ops{L.operand(1), L.operand(2)};
  std::vector<int> deps;
  for (const auto& o : {cond, ops[0], ops[1]})
    if (!o.is_scalar()) deps.push_back(o.def);
  Body body = [cond, ops, compute](BodyContext& ctx, const Coords& c) {
    ValueId cv = read_operand(ctx, cond, c, DType::Bool);
    return ctx.kb().where(cv, read_operand(ctx, ops[0], c, compute), read_operand(ctx, ops[1], c, compute));
  };
  L.bind(0, L.pointwise(L.out_meta().sizes, L.out_meta().dtype, deps, std::move(body), L.op_name()));
}

// addcmul(self, t1, t2, value) = self + value * t1 * t2 and addcdiv(...) =
// self + value * t1 / t2, in ATen's order (ResMLP's affine layers).
void lower_addc(Lowerer& L, PrimOp op) {
  const double value = L.number_arg_or(3, 1);
  L.bind(0, L.elementwise({L.operand(0), L.operand(1), L.operand(2)}, L.out_meta().dtype,
                          [op, value](KernelBuilder& kb, const std::vector<ValueId>& v) {
                            const ValueId scaled = bin(kb, PrimOp::Mul, cst(kb, value, v[1]), v[1]);
                            return bin(kb, PrimOp::Add, v[0], bin(kb, op, scaled, v[2]));
                          }));
}

void lower_clamp(Lowerer& L) {
  std::vector<Operand> ops{L.operand(0)};
  bool has_min = !L.arg(1).is_none(), has_max = !L.arg(2).is_none();
  if (has_min) ops.push_back(L.operand(1));
  if (has_max) ops.push_back(L.operand(2));
  L.bind(0, L.elementwise(ops, L.out_meta().dtype, [has_min, has_max](KernelBuilder& kb, const std::vector<ValueId>& v) {
    ValueId y = v[0];
    std::size_t i = 1;
    if (has_min) y = bin(kb, PrimOp::Maximum, y, v[i++]);
    if (has_max) y = bin(kb, PrimOp::Minimum, y, v[i++]);
    return y;
  }));
}

// --- activations --------------------------------------------------------------
//
// As eager's CPU kernels (ATen's Activation.cpp) write them, operation for
// operation, so that float32 agrees to the rounding of the math functions;
// f16/bf16 compute in float32 as eager does.

// hardtanh(self, min_val, max_val) (and relu6, ReLU6): a clamp; on integer
// tensors the limits are truncated first, as eager's toLong().
void lower_hardtanh(Lowerer& L) {
  const DType out = L.out_meta().dtype;
  if (out == DType::Bool) throw Unsupported("hardtanh of bools");
  double lo = L.number_arg_or(1, -1.0), hi = L.number_arg_or(2, 1.0);
  if (!ir::is_floating(out)) lo = std::trunc(lo), hi = std::trunc(hi);
  L.bind(0, L.unary([lo, hi](KernelBuilder& kb, ValueId x) {
    return bin(kb, PrimOp::Minimum, bin(kb, PrimOp::Maximum, x, cst(kb, lo, x)), cst(kb, hi, x));
  }));
}

// min(max(x + 3, 0), 6): hardsigmoid divides it by 6, hardswish multiplies x by it first.
ValueId relu6_of_x_plus_3(KernelBuilder& kb, ValueId x) {
  ValueId shifted = bin(kb, PrimOp::Add, x, cst(kb, 3, x));
  return bin(kb, PrimOp::Minimum, bin(kb, PrimOp::Maximum, shifted, cst(kb, 0, x)), cst(kb, 6, x));
}

ValueId hardsigmoid(KernelBuilder& kb, ValueId x) { return bin(kb, PrimOp::Div, relu6_of_x_plus_3(kb, x), cst(kb, 6, x)); }

ValueId hardswish(KernelBuilder& kb, ValueId x) {
  return bin(kb, PrimOp::Div, bin(kb, PrimOp::Mul, x, relu6_of_x_plus_3(kb, x)), cst(kb, 6, x));
}

// exp(y) - 1 without the cancellation near 0 (eager's vectorized elu calls
// expm1): Kahan's form (u - 1) * y / log(u), u = exp(y), exact where u
// rounds to 1 and -1 where it underflows to 0.
ValueId expm1(KernelBuilder& kb, ValueId y) {
  ValueId u = kb.unary(PrimOp::Exp, y);
  ValueId one = cst(kb, 1, y), u_minus_1 = bin(kb, PrimOp::Sub, u, one);
  ValueId general = bin(kb, PrimOp::Div, bin(kb, PrimOp::Mul, u_minus_1, y), kb.unary(PrimOp::Log, u));
  ValueId saturated = kb.where(bin(kb, PrimOp::Eq, u_minus_1, cst(kb, -1, y)), cst(kb, -1, y), general);
  return kb.where(bin(kb, PrimOp::Eq, u, one), y, saturated);
}

// elu(self, alpha, scale, input_scale) (selu and celu too):
// x <= 0 ? expm1(x * input_scale) * (alpha * scale) : x * scale, the
// coefficient alpha * scale multiplied in the compute type as eager does.
// NaN takes the positive branch (x * scale), as eager's scalar code; its
// vector code gives NaN as well.
ValueId elu(KernelBuilder& kb, ValueId x, double alpha, double scale, double input_scale) {
  ValueId negcoef = bin(kb, PrimOp::Mul, cst(kb, alpha, x), cst(kb, scale, x));
  ValueId negative = bin(kb, PrimOp::Mul, expm1(kb, bin(kb, PrimOp::Mul, x, cst(kb, input_scale, x))), negcoef);
  return kb.where(bin(kb, PrimOp::Le, x, cst(kb, 0, x)), negative, bin(kb, PrimOp::Mul, x, cst(kb, scale, x)));
}

// softplus(self, beta, threshold): x * beta > threshold ? x : log1p(exp(x * beta)) / beta.
ValueId softplus(KernelBuilder& kb, ValueId x, double beta, double threshold) {
  ValueId scaled = bin(kb, PrimOp::Mul, x, cst(kb, beta, x));
  ValueId soft = bin(kb, PrimOp::Div, kb.unary(PrimOp::Log1p, kb.unary(PrimOp::Exp, scaled)), cst(kb, beta, x));
  return kb.where(bin(kb, PrimOp::Gt, scaled, cst(kb, threshold, x)), x, soft);
}

// mish(x) = x * tanh(log1p(exp(x))) (no threshold, as eager).
ValueId mish(KernelBuilder& kb, ValueId x) {
  return bin(kb, PrimOp::Mul, x, kb.unary(PrimOp::Tanh, kb.unary(PrimOp::Log1p, kb.unary(PrimOp::Exp, x))));
}

// The activations above are defined on floating tensors only (eager has no
// integer kernel for them).
void lower_float_activation(Lowerer& L, Fn1 f) {
  if (!ir::is_floating(L.out_meta().dtype)) throw Unsupported(L.op_name() + " of a non-floating tensor");
  L.bind(0, L.unary(std::move(f)));
}

// A number as eager stores it into a tensor of dtype t: through float and
// rounded to nearest even for f16/bf16 (c10 converts double -> float ->
// half type), nonzero-ness for bools; others unchanged (integer constants
// truncate, float32 constants round, when they are built).
double stored_scalar(double v, DType t) {
  if (t == DType::Bool) return v != 0 ? 1.0 : 0.0;
  if (t != DType::BFloat16 && t != DType::Float16) return v;
  const double f = static_cast<float>(v);
  if (!std::isfinite(f) || f == 0) return f;
  const bool bf16 = t == DType::BFloat16;
  const int mantissa_bits = bf16 ? 7 : 10, min_exponent = bf16 ? -126 : -14;
  const double max_finite = bf16 ? 0x1.fep127 : 65504.0;
  const double quantum = std::ldexp(1.0, std::max(std::ilogb(f), min_exponent) - mantissa_bits);
  const double r = std::nearbyint(f / quantum) * quantum;  // division by a power of two: exact
  return std::abs(r) > max_finite ? std::copysign(INFINITY, r) : r;
}

// A number operand (or alpha) of a binary op as eager's kernel reads it:
// converted to the op's common dtype `t` first where that is f16/bf16. ATen
// wraps a Python number as a 0-d CPU tensor, so the rules are those of
// rounded_to_common for a CPU scalar: on the CPU, add, sub, rsub (alpha too)
// and remainder round it (x + 1.573 adds bf16(1.573) = 1.5703125), and so
// does pow (its exponent or base), while mul and div read it in float; on
// the GPU, comparisons, remainder and pow round it (their functors take the
// common dtype; pow checked bit-exact on an H200), while add, sub, mul and
// div read it in float.
double number_as_read(double v, DType t) {
  return t == DType::BFloat16 || t == DType::Float16 ? stored_scalar(v, t) : v;
}
Operand number_as_read(Operand o, DType t) {
  if (o.is_scalar()) o.value = number_as_read(o.value, t);
  return o;
}

// tril(self, diagonal) / triu: self where column - row <= diagonal (tril)
// or >= diagonal (triu) over the last two dims, else 0.
void lower_triangle(Lowerer& L, bool upper) {
  const DType out = L.out_meta().dtype, compute = ir::compute_dtype(out);
  const int in = L.tensor_def(0);
  const auto sizes = L.out_meta().sizes;
  const std::size_t rank = sizes.size();
  if (rank < 2) throw Unsupported("tril/triu of a tensor of fewer than 2 dims");
  const std::int64_t diagonal = L.int_arg_or(1, 0);
  Body body = [in, rank, diagonal, upper, compute](BodyContext& ctx, const Coords& c) {
    auto& kb = ctx.kb();
    const ValueId offset = kb.index_value(c[rank - 1] - c[rank - 2]);
    const ValueId keep = kb.binary(upper ? PrimOp::Ge : PrimOp::Le, offset, kb.int_constant(diagonal, DType::Int64));
    return kb.where(keep, kb.cast(ctx.read(in, c), compute), scalar_constant(kb, 0, compute));
  };
  L.bind(0, L.pointwise(sizes, out, {in}, std::move(body), L.op_name()));
}

// masked_fill.Scalar / .Tensor (self, mask, value): value where the bool
// mask holds, else self, broadcast to the output. A number value is stored
// as eager converts it to self's dtype, so that fused readers see what
// eager's tensor holds; a 0-dim tensor value is cast like eager's item().
void lower_masked_fill(Lowerer& L) {
  const DType out = L.out_meta().dtype, compute = ir::compute_dtype(out);
  const Operand self = L.operand(0), mask = L.operand(1);
  Operand value = L.operand(2);
  if (mask.is_scalar() || L.def(mask.def).dtype != DType::Bool) throw Unsupported("masked_fill with a mask that is not bool");
  if (value.is_scalar()) {
    value.value = stored_scalar(value.value, out);
  } else if (L.rank_of(2) != 0 || L.arg_meta(2).device != L.out_meta().device) {
    throw Unsupported("masked_fill with a value that is not a 0-dim tensor on the output's device");
  }
  std::vector<int> deps{self.def, mask.def};
  if (!value.is_scalar()) deps.push_back(value.def);
  Body body = [self, mask, value, compute](BodyContext& ctx, const Coords& c) {
    const ValueId m = read_operand(ctx, mask, c, DType::Bool);
    return ctx.kb().where(m, read_operand(ctx, value, c, compute), read_operand(ctx, self, c, compute));
  };
  L.bind(0, L.pointwise(L.out_meta().sizes, out, deps, std::move(body), L.op_name()));
}

// The output holds argument `src` (broadcast to the output's sizes), cast to
// the output's dtype: clone, _to_copy, and copy(self, src) (copy_ functionalized).
void lower_copy_from(Lowerer& L, std::size_t src) {
  // (A 0-d source is a scalar of the kernel on any device.)
  if (L.out_meta().device != L.arg_meta(src).device && !L.arg_meta(src).sizes.empty())
    throw Unsupported("copy to another device");
  int d = L.elementwise({L.operand(src)}, L.out_meta().dtype,
                        [](KernelBuilder&, const std::vector<ValueId>& v) { return v[0]; });
  DType from = L.arg_meta(src).dtype;
  if (from != L.out_meta().dtype && from != DType::Bool) L.mark_rounded(d);  // an explicit cast to f16/bf16 rounds
  // A cast of an f16/bf16 result to an integer truncates the value eager
  // stored, and one to a wider float (`h.float()` before a norm) shows it:
  // both read it rounded, as eager computed it.
  const bool low = from == DType::Float16 || from == DType::BFloat16;
  if (low && L.out_meta().dtype != from) L.round_low_precision_operands();
  if (low) L.mark_held_by(d, from);  // an upcast (read rounded, above)
  L.bind(0, d);
}

void lower_copy_like(Lowerer& L) { lower_copy_from(L, 0); }

// select_scatter(self, src, dim, index): self with self.select(dim, index) replaced by src.
void lower_select_scatter(Lowerer& L) {
  int self = L.tensor_def(0), src = L.tensor_def(1);
  const auto sizes = L.out_meta().sizes;
  std::int64_t dim = wrap_dim(L.int_arg(2), sizes.size());
  if (sizes.empty()) throw Unsupported("select_scatter of a zero-dim tensor");
  std::int64_t index = L.int_arg(3);
  if (index < 0) index += sizes[dim];
  if (index < 0 || index >= sizes[dim]) throw Unsupported("select_scatter index out of range");
  const auto src_sizes = L.def(src).sizes;
  DType out = L.out_meta().dtype, compute = ir::compute_dtype(out);
  Body body = [self, src, src_sizes, dim, index, compute](BodyContext& ctx, const Coords& c) {
    auto& kb = ctx.kb();
    Coords sc = c;
    sc.erase(sc.begin() + dim);
    ValueId from_src = kb.cast(ctx.read(src, broadcast_coords(src_sizes, sc)), compute);
    ValueId from_self = kb.cast(ctx.read(self, c), compute);
    ValueId at = kb.binary(PrimOp::Eq, kb.index_value(c[dim]), kb.int_constant(index, DType::Int64));
    return kb.where(at, from_src, from_self);
  };
  L.bind(0, L.pointwise(sizes, out, {self, src}, std::move(body), L.op_name()));
}

// slice_scatter(self, src, dim, start, end, step): self with
// self[start:end:step] along dim replaced by src.
void lower_slice_scatter(Lowerer& L) {
  int self = L.tensor_def(0), src = L.tensor_def(1);
  const auto sizes = L.out_meta().sizes;
  if (sizes.empty()) throw Unsupported("slice_scatter of a zero-dim tensor");
  std::int64_t dim = wrap_dim(L.int_arg(2), sizes.size());
  const auto src_sizes = L.def(src).sizes;
  if (src_sizes.size() != sizes.size()) throw Unsupported("slice_scatter source of another rank");
  std::int64_t size = sizes[dim], n = src_sizes[dim];
  std::int64_t start = L.int_arg_or(3, 0);
  if (start < 0) start += size;
  start = std::clamp<std::int64_t>(start, 0, size);
  std::int64_t step = L.int_arg_or(5, 1);
  if (step <= 0) throw Unsupported("slice step must be positive");
  DType out = L.out_meta().dtype, compute = ir::compute_dtype(out);
  if (n == 0) {  // an empty slice: self unchanged
    L.bind(0, L.elementwise({L.operand(0)}, out, [](KernelBuilder&, const std::vector<ValueId>& v) { return v[0]; }));
    return;
  }
  // The source index (c - start) / step, made non-negative by adding a
  // multiple of step * n that is at least `start`, then taken modulo n: it
  // is exact inside the slice and in bounds everywhere (both sides of the
  // `where` are read).
  std::int64_t period = step * n;
  std::int64_t lift = period * ((start + period - 1) / period) - start;
  Body body = [self, src, dim, start, step, n, lift, compute](BodyContext& ctx, const Coords& c) {
    auto& kb = ctx.kb();
    IndexExpr shifted = c[dim] + IndexExpr(lift);
    Coords sc = c;
    sc[dim] = ir::mod(ir::floordiv(shifted, step), n);
    ValueId from_src = kb.cast(ctx.read(src, sc), compute);
    ValueId from_self = kb.cast(ctx.read(self, c), compute);
    ValueId i = kb.index_value(c[dim]);
    ValueId inside = kb.binary(PrimOp::LogicalAnd, kb.binary(PrimOp::Ge, i, kb.int_constant(start, DType::Int64)),
                               kb.binary(PrimOp::Lt, i, kb.int_constant(start + n * step, DType::Int64)));
    if (step > 1) {
      ValueId on_step = kb.binary(PrimOp::Eq, kb.index_value(ir::mod(shifted, step)), kb.int_constant(0, DType::Int64));
      inside = kb.binary(PrimOp::LogicalAnd, inside, on_step);
    }
    return kb.where(inside, from_src, from_self);
  };
  L.bind(0, L.pointwise(sizes, out, {self, src}, std::move(body), L.op_name()));
}

// A tensor filled with one value; sizes and dtype come from the capture.
void lower_fill(Lowerer& L, double value) {
  DType dtype = L.out_meta().dtype;
  DType compute = ir::compute_dtype(dtype);
  Body body = [value, compute](BodyContext& ctx, const Coords&) { return scalar_constant(ctx.kb(), value, compute); };
  L.bind(0, L.pointwise(L.out_meta().sizes, dtype, {}, std::move(body), L.op_name()));
}

void lower_arange(Lowerer& L, double start, double step) {
  DType dtype = L.out_meta().dtype;
  DType compute = ir::compute_dtype(dtype);
  Body body = [start, step, compute](BodyContext& ctx, const Coords& c) {
    auto& kb = ctx.kb();
    ValueId i = kb.cast(kb.index_value(c.at(0)), compute);
    return bin(kb, PrimOp::Add, cst(kb, start, i), bin(kb, PrimOp::Mul, i, cst(kb, step, i)));
  };
  L.bind(0, L.pointwise(L.out_meta().sizes, dtype, {}, std::move(body), L.op_name()));
}

// --- indexing, concatenation, padding and pooling ----------------------------
//
// These ops read an input where data says (embedding, index_select, gather:
// BodyContext::read_indirect) or only where an output coordinate falls in
// the input's range (cat, constant_pad_nd, pooling windows over padding:
// BodyContext::read_masked). A masked read touches no memory outside its
// mask, so no input is read out of its range.

bool is_bool_constant(KernelBuilder& kb, ValueId v, bool value) {
  const ir::Instr& i = kb.instr(v);
  return i.op == PrimOp::Constant && kb.dtype(v) == DType::Bool && (i.ivalue != 0) == value;
}

// a && b for Bool values, folding constants (-1 stands for "no condition").
ValueId and_mask(KernelBuilder& kb, ValueId a, ValueId b) {
  if (a < 0 || is_bool_constant(kb, a, true) || is_bool_constant(kb, b, false)) return b;
  if (b < 0 || is_bool_constant(kb, b, true) || is_bool_constant(kb, a, false)) return a;
  return kb.binary(PrimOp::LogicalAnd, a, b);
}

// lo <= coord < hi as a Bool value; a constant where the static bounds of
// coord decide it, so that reads that are always in range carry no mask.
ValueId in_range(KernelBuilder& kb, const IndexExpr& coord, std::int64_t lo, std::int64_t hi) {
  const std::int64_t min = coord.min_value(), max = coord.max_value();
  if (hi <= lo || max < lo || min >= hi) return kb.int_constant(0, DType::Bool);
  ValueId mask = kb.int_constant(1, DType::Bool);
  if (min >= lo && max < hi) return mask;
  const ValueId i = kb.index_value(coord);
  if (min < lo) mask = and_mask(kb, mask, kb.binary(PrimOp::Ge, i, kb.int_constant(lo, DType::Int64)));
  if (max >= hi) mask = and_mask(kb, mask, kb.binary(PrimOp::Lt, i, kb.int_constant(hi, DType::Int64)));
  return mask;
}

// Def `d` (of storage dtype `dtype`) at c where `mask` holds, else `other`.
ValueId masked_read(BodyContext& ctx, int d, DType dtype, const Coords& c, ValueId mask, double other) {
  if (is_bool_constant(ctx.kb(), mask, true)) return ctx.read(d, c);
  if (is_bool_constant(ctx.kb(), mask, false)) return ctx.kb().constant(other, ir::compute_dtype(dtype));
  return ctx.read_masked(d, c, mask, other);
}

DType index_dtype(const Lowerer& L, int d) {
  const DType t = L.def(d).dtype;
  if (t != DType::Int32 && t != DType::Int64) throw Unsupported("indices of dtype " + std::string(ir::dtype_name(t)));
  return t;
}

// A pointwise def that reads `table` where the values of `indices` say.
int gather_def(Lowerer& L, int table, int indices, Body body) {
  index_dtype(L, indices);
  int d = L.pointwise(L.out_meta().sizes, L.out_meta().dtype, {table, indices}, std::move(body), L.op_name());
  L.mark_gathered(d, {table});
  return d;
}

// embedding(weight, indices, padding_idx, scale_grad_by_freq, sparse):
// out[..., k] = weight[indices[...], k]. padding_idx only affects gradients.
void lower_embedding(Lowerer& L) {
  const int weight = L.tensor_def(0), indices = L.tensor_def(1);
  if (L.def(weight).sizes.size() != 2) throw Unsupported("embedding of a weight that is not 2-d");
  const std::size_t rank = L.def(indices).sizes.size();
  L.bind(0, gather_def(L, weight, indices, [weight, indices, rank](BodyContext& ctx, const Coords& c) {
    const ValueId row = ctx.read(indices, Coords(c.begin(), c.begin() + static_cast<std::ptrdiff_t>(rank)));
    return ctx.read_indirect(weight, {IndexExpr(0), c[rank]}, 0, row);
  }));
}

// index_select(self, dim, index): out = self with coordinate dim taken from index[c[dim]].
void lower_index_select(Lowerer& L) {
  const int self = L.tensor_def(0), index = L.tensor_def(2);
  const std::size_t rank = L.def(self).sizes.size();
  if (rank == 0) throw Unsupported("index_select of a zero-dim tensor");
  const int dim = static_cast<int>(wrap_dim(L.int_arg(1), rank));
  const bool vector = !L.def(index).sizes.empty();
  L.bind(0, gather_def(L, self, index, [self, index, dim, vector](BodyContext& ctx, const Coords& c) {
    const ValueId i = ctx.read(index, vector ? Coords{c[dim]} : Coords{});
    return ctx.read_indirect(self, c, dim, i);
  }));
}

// gather(self, dim, index, sparse_grad): out[c] = self[c with c[dim] = index[c]].
void lower_gather(Lowerer& L) {
  const int self = L.tensor_def(0), index = L.tensor_def(2);
  const std::size_t rank = L.def(self).sizes.size();
  if (rank == 0 || L.def(index).sizes.size() != rank) throw Unsupported("gather of zero-dim tensors");
  const int dim = static_cast<int>(wrap_dim(L.int_arg(1), rank));
  L.bind(0, gather_def(L, self, index, [self, index, dim](BodyContext& ctx, const Coords& c) {
    return ctx.read_indirect(self, c, dim, ctx.read(index, c));
  }));
}

// An index that counts from the end when negative (advanced indexing,
// index_fill): i + size where i < 0.
ValueId wrapped_index(KernelBuilder& kb, ValueId i, std::int64_t size) {
  const DType t = kb.dtype(i);
  const ValueId negative = kb.binary(PrimOp::Lt, i, kb.int_constant(0, t));
  return kb.where(negative, kb.binary(PrimOp::Add, i, kb.int_constant(size, t)), i);
}

// --- scatters -------------------------------------------------------------------
//
// index_put, scatter, index_add, index_copy and index_fill: self with
// elements replaced (or added to) where data says. Each is a Scatter def
// (tensor_def.h): a copy of self, then a kernel over the updates that writes
// into it. Negative indices count from the end where eager lets them
// (index_put, index_fill); elsewhere they are out of range: an error, as in
// eager. Where several updates hit one element, an accumulating form adds
// them all and a replacing form leaves one of them (eager leaves that order
// unspecified too).

// Sizes broadcast together (numpy rules).
std::vector<std::int64_t> broadcast_sizes(const std::vector<std::vector<std::int64_t>>& all) {
  std::size_t rank = 0;
  for (const auto& s : all) rank = std::max(rank, s.size());
  std::vector<std::int64_t> out(rank, 1);
  for (const auto& s : all) {
    for (std::size_t i = 0; i < s.size(); ++i) {
      std::int64_t& o = out[rank - s.size() + i];
      if (s[i] != 1 && o != 1 && s[i] != o) throw Unsupported("index tensors that do not broadcast together");
      if (s[i] != 1) o = s[i];
    }
  }
  return out;
}

// Whether `sizes` broadcast to `to` (a values operand of index_put).
bool broadcasts_to(const std::vector<std::int64_t>& sizes, const std::vector<std::int64_t>& to) {
  if (sizes.size() > to.size()) return false;
  for (std::size_t i = 0; i < sizes.size(); ++i)
    if (sizes[i] != 1 && sizes[i] != to[to.size() - sizes.size() + i]) return false;
  return true;
}

// Advanced indexing by integer tensors (x[i, :, j]): the indexed dims of
// self and their index tensors; the result's dims are the index tensors'
// broadcast shape, in place of the indexed dims when those are adjacent,
// else in front, then self's other dims in order.
struct AdvancedIndex {
  std::vector<int> dims, defs;
  std::vector<std::vector<std::int64_t>> index_sizes;  // of each index tensor
  std::vector<std::int64_t> shape;  // the index tensors broadcast
  std::size_t first = 0;            // where `shape` starts in the result
  std::vector<std::int64_t> result_sizes;
};

AdvancedIndex advanced_index(const Lowerer& L, const std::vector<std::int64_t>& self_sizes, const Arg& list) {
  AdvancedIndex a;
  for (std::size_t k = 0; k < list.ints.size(); ++k) {
    if (list.ints[k] < 0) continue;
    if (k >= self_sizes.size()) throw Unsupported("more indices than dims");
    a.dims.push_back(static_cast<int>(k));
    a.defs.push_back(L.value_def(static_cast<int>(list.ints[k])));
    index_dtype(L, a.defs.back());
    a.index_sizes.push_back(L.def(a.defs.back()).sizes);
  }
  if (a.dims.empty()) throw Unsupported("no index tensor");
  a.shape = broadcast_sizes(a.index_sizes);
  const bool adjacent = a.dims.back() - a.dims.front() + 1 == static_cast<int>(a.dims.size());
  a.first = adjacent ? static_cast<std::size_t>(a.dims.front()) : 0;
  std::vector<std::int64_t> rest;
  for (std::size_t d = 0; d < self_sizes.size(); ++d)
    if (std::find(a.dims.begin(), a.dims.end(), static_cast<int>(d)) == a.dims.end()) rest.push_back(self_sizes[d]);
  a.result_sizes.assign(rest.begin(), rest.begin() + static_cast<std::ptrdiff_t>(a.first));
  a.result_sizes.insert(a.result_sizes.end(), a.shape.begin(), a.shape.end());
  a.result_sizes.insert(a.result_sizes.end(), rest.begin() + static_cast<std::ptrdiff_t>(a.first), rest.end());
  return a;
}

// The element of self that point u of the indexing result stands for: its
// non-indexed coordinates from u, the indexed ones from the index tensors
// (negative ones counted from the end).
ScatterPoint advanced_index_point(BodyContext& ctx, const AdvancedIndex& a, const std::vector<std::int64_t>& self_sizes,
                                  const Coords& u) {
  auto& kb = ctx.kb();
  const auto part = u.begin() + static_cast<std::ptrdiff_t>(a.first);
  const Coords at_index(part, part + static_cast<std::ptrdiff_t>(a.shape.size()));
  Coords rest(u.begin(), part);
  rest.insert(rest.end(), part + static_cast<std::ptrdiff_t>(a.shape.size()), u.end());
  ScatterPoint p;
  std::size_t next = 0;
  for (std::size_t d = 0; d < self_sizes.size(); ++d) {
    const auto k = std::find(a.dims.begin(), a.dims.end(), static_cast<int>(d)) - a.dims.begin();
    if (k == static_cast<std::ptrdiff_t>(a.dims.size())) {
      p.at.push_back(rest.at(next++));
      continue;
    }
    p.at.push_back(0);
    const ValueId i = ctx.read(a.defs[k], broadcast_coords(a.index_sizes[k], at_index));
    p.indexed.emplace_back(static_cast<int>(d), wrapped_index(kb, i, self_sizes[d]));
  }
  return p;
}

// index.Tensor(self, indices): x[:, idx], or several index tensors
// (x[rows, cols]: a padded batch's last positions), broadcast together; the
// result's dims as AdvancedIndex lays them out. Negative indices count from
// the end, as ATen's advanced indexing does.
void lower_index_tensor(Lowerer& L) {
  const int self = L.tensor_def(0);
  const Arg& list = L.arg(1);
  if (list.kind != Arg::Kind::TensorList) throw Unsupported("indices that are not a tensor list");
  const auto self_sizes = L.def(self).sizes;
  const AdvancedIndex a = advanced_index(L, self_sizes, list);
  if (a.result_sizes != L.out_meta().sizes) throw Unsupported("advanced indexing of an unexpected result shape");
  std::vector<int> deps{self};
  deps.insert(deps.end(), a.defs.begin(), a.defs.end());
  Body body = [self, a, self_sizes](BodyContext& ctx, const Coords& c) {
    const ScatterPoint p = advanced_index_point(ctx, a, self_sizes, c);
    return ctx.read_indirect(self, p.at, p.indexed);
  };
  const int d = L.pointwise(L.out_meta().sizes, L.out_meta().dtype, deps, std::move(body), L.op_name());
  L.mark_gathered(d, {self});
  L.bind(0, d);
}

// index_put(self, indices, values, accumulate) with a bool mask and one
// value (x[x < 0] = 0): a where, no scatter. Other masks select a
// data-dependent number of elements.
void lower_masked_index_put(Lowerer& L, int self, int mask, std::size_t position, const Operand& values, bool accumulate) {
  const auto sizes = L.out_meta().sizes;
  const auto mask_sizes = L.def(mask).sizes;
  if (position + mask_sizes.size() > sizes.size() ||
      !std::equal(mask_sizes.begin(), mask_sizes.end(), sizes.begin() + static_cast<std::ptrdiff_t>(position)))
    throw Unsupported("a bool index shaped unlike the dims it selects");
  if (L.def(values.def).numel() != 1) throw Unsupported("a bool index with several values (their places depend on data)");
  if (accumulate && L.out_meta().dtype == DType::Bool) throw Unsupported("index_put adding into a bool tensor");
  const DType out = L.out_meta().dtype, compute = ir::compute_dtype(out);
  const std::size_t values_rank = values.sizes.size();
  Body body = [self, mask, position, values, values_rank, compute, accumulate, m = mask_sizes.size()](BodyContext& ctx,
                                                                                                     const Coords& c) {
    auto& kb = ctx.kb();
    const auto first = c.begin() + static_cast<std::ptrdiff_t>(position);
    const ValueId selected = ctx.read(mask, Coords(first, first + static_cast<std::ptrdiff_t>(m)));
    const ValueId old = kb.cast(ctx.read(self, c), compute);
    ValueId v = kb.cast(ctx.read(values.def, Coords(values_rank, IndexExpr(0))), compute);
    if (accumulate) v = kb.binary(PrimOp::Add, old, v);
    return kb.where(selected, v, old);
  };
  L.bind(0, L.pointwise(sizes, out, {self, mask, values.def}, std::move(body), L.op_name()));
}

// index_put(self, indices, values, accumulate): self[indices] = values (or
// += values), values broadcast to the indexing result.
void lower_index_put(Lowerer& L) {
  const int self = L.tensor_def(0);
  const Arg& list = L.arg(1);
  if (list.kind != Arg::Kind::TensorList) throw Unsupported("indices that are not a tensor list");
  const Operand values = L.operand(2);
  if (values.is_scalar()) throw Unsupported("index_put with a number for values");
  const bool accumulate = L.bool_arg(3);
  const auto self_sizes = L.def(self).sizes;
  for (std::size_t k = 0; k < list.ints.size(); ++k) {
    if (list.ints[k] < 0 || L.def(L.value_def(static_cast<int>(list.ints[k]))).dtype != DType::Bool) continue;
    for (std::size_t j = 0; j < list.ints.size(); ++j)
      if (j != k && list.ints[j] >= 0) throw Unsupported("a bool index with other index tensors");
    return lower_masked_index_put(L, self, L.value_def(static_cast<int>(list.ints[k])), k, values, accumulate);
  }
  const AdvancedIndex a = advanced_index(L, self_sizes, list);
  if (!broadcasts_to(values.sizes, a.result_sizes)) throw Unsupported("values that do not broadcast to the indexed shape");
  const DType compute = ir::compute_dtype(L.out_meta().dtype);
  std::vector<int> deps = a.defs;
  deps.push_back(values.def);
  ScatterBody body = [a, self_sizes, values, compute](BodyContext& ctx, const Coords& u) {
    ScatterPoint p = advanced_index_point(ctx, a, self_sizes, u);
    p.value = ctx.kb().cast(ctx.read(values.def, broadcast_coords(values.sizes, u)), compute);
    return p;
  };
  L.bind(0, L.scatter(self, a.result_sizes, deps, std::move(body), accumulate));
}

// Index sizes of scatter and gather: at most self's (and src's) in every
// dim but `dim`, at most src's in `dim` too.
void check_scatter_sizes(const std::vector<std::int64_t>& index, const std::vector<std::int64_t>& self,
                         const std::vector<std::int64_t>* src, int dim) {
  for (std::size_t d = 0; d < index.size(); ++d) {
    if (static_cast<int>(d) != dim && index[d] > self[d]) throw Unsupported("an index larger than self");
    if (src && index[d] > (*src)[d]) throw Unsupported("an index larger than src");
  }
}

// scatter.src / scatter.value / scatter_add / scatter_reduce.two(sum,
// include_self) (self, dim, index, src or value): the element of self at u
// with u[dim] replaced by index[u] takes (or adds) src[u] or the value.
void lower_scatter(Lowerer& L, bool accumulate) {
  const int self = L.tensor_def(0), index = L.tensor_def(2);
  const auto sizes = L.out_meta().sizes;
  const auto index_sizes = L.def(index).sizes;
  if (sizes.empty() || index_sizes.size() != sizes.size()) throw Unsupported(L.op_name() + " of zero-dim tensors");
  const int dim = static_cast<int>(wrap_dim(L.int_arg(1), sizes.size()));
  index_dtype(L, index);
  const DType out = L.out_meta().dtype, compute = ir::compute_dtype(out);
  Operand src = L.operand(3);
  std::vector<int> deps{index};
  if (src.is_scalar()) {
    src.value = stored_scalar(src.value, out);
  } else {
    if (src.sizes.size() != sizes.size()) throw Unsupported(L.op_name() + " with a src of another rank");
    deps.push_back(src.def);
  }
  check_scatter_sizes(index_sizes, sizes, src.is_scalar() ? nullptr : &src.sizes, dim);
  ScatterBody body = [index, src, dim, compute](BodyContext& ctx, const Coords& u) {
    ScatterPoint p;
    p.at = u;
    p.indexed = {{dim, ctx.read(index, u)}};
    p.value = src.is_scalar() ? scalar_constant(ctx.kb(), src.value, compute) : ctx.kb().cast(ctx.read(src.def, u), compute);
    return p;
  };
  // Eager (on CPU) sums f16/bf16 scatters in float32 and rounds once:
  // the sums are accumulated in a float32 tensor, then cast.
  const bool widen = accumulate && (out == DType::Float16 || out == DType::BFloat16);
  const int d = L.scatter(self, index_sizes, deps, std::move(body), accumulate, widen ? DType::Float32 : out);
  if (!widen) return L.bind(0, d);
  L.bind(0, L.elementwise({Operand{d, sizes, 0}}, out, [](KernelBuilder&, const std::vector<ValueId>& v) { return v[0]; },
                          out, sizes));
}

// scatter_reduce.two (self, dim, index, src, reduce, include_self): the
// sum that includes self is scatter_add; scatter.reduce / .value_reduce
// (self, dim, index, src or value, reduce): "add" is scatter_add. Other
// reductions (products, extrema, means) need atomics the loop IR lacks.
void lower_scatter_reduce(Lowerer& L, const std::string& sum, bool include_self) {
  const Arg& reduce = L.arg(4);
  if (reduce.kind != Arg::Kind::String || reduce.s != sum || !include_self)
    throw Unsupported(L.op_name() + " other than a sum that includes self");
  lower_scatter(L, /*accumulate=*/true);
}

// index_add(self, dim, index, source, alpha) / index_copy(self, dim, index,
// source): the slice index[k] of self along dim takes (or adds alpha times)
// the slice k of source.
void lower_index_add_copy(Lowerer& L, bool accumulate) {
  const int self = L.tensor_def(0), index = L.tensor_def(2), source = L.tensor_def(3);
  const auto sizes = L.out_meta().sizes;
  const auto source_sizes = L.def(source).sizes;
  if (sizes.empty() || source_sizes.size() != sizes.size()) throw Unsupported(L.op_name() + " of zero-dim tensors");
  const int dim = static_cast<int>(wrap_dim(L.int_arg(1), sizes.size()));
  index_dtype(L, index);
  const bool vector = !L.def(index).sizes.empty();
  if (L.def(index).sizes.size() > 1 || L.def(index).numel() != source_sizes[dim])
    throw Unsupported(L.op_name() + " with an index that does not match its source");
  for (std::size_t d = 0; d < sizes.size(); ++d)
    if (static_cast<int>(d) != dim && source_sizes[d] != sizes[d]) throw Unsupported(L.op_name() + " with a source shaped unlike self");
  const double alpha = accumulate ? L.number_arg_or(4, 1) : 1;
  const DType compute = ir::compute_dtype(L.out_meta().dtype);
  ScatterBody body = [index, source, dim, vector, alpha, compute](BodyContext& ctx, const Coords& u) {
    auto& kb = ctx.kb();
    ScatterPoint p;
    p.at = u;
    p.indexed = {{dim, ctx.read(index, vector ? Coords{u[dim]} : Coords{})}};
    p.value = kb.cast(ctx.read(source, u), compute);
    if (alpha != 1) p.value = kb.binary(PrimOp::Mul, p.value, scalar_constant(kb, alpha, compute));
    return p;
  };
  L.bind(0, L.scatter(self, source_sizes, {index, source}, std::move(body), accumulate));
}

// index_fill.int_Scalar / .int_Tensor (self, dim, index, value): the slices
// index[k] of self along dim (negative ones counted from the end) take the
// value (a number, or a 0-dim tensor).
void lower_index_fill(Lowerer& L) {
  const int self = L.tensor_def(0), index = L.tensor_def(2);
  const auto sizes = L.out_meta().sizes;
  if (sizes.empty()) throw Unsupported("index_fill of a zero-dim tensor");
  const int dim = static_cast<int>(wrap_dim(L.int_arg(1), sizes.size()));
  index_dtype(L, index);
  if (L.def(index).sizes.size() > 1) throw Unsupported("index_fill with an index of rank > 1");
  const bool vector = !L.def(index).sizes.empty();
  const DType out = L.out_meta().dtype, compute = ir::compute_dtype(out);
  Operand value = L.operand(3);
  std::vector<int> deps{index};
  if (value.is_scalar()) value.value = stored_scalar(value.value, out);
  else if (!value.sizes.empty()) throw Unsupported("index_fill with a value that is not a 0-dim tensor");
  else deps.push_back(value.def);
  auto update_sizes = sizes;
  update_sizes[dim] = L.def(index).numel();
  const std::int64_t size = sizes[dim];
  ScatterBody body = [index, value, dim, vector, size, compute](BodyContext& ctx, const Coords& u) {
    auto& kb = ctx.kb();
    ScatterPoint p;
    p.at = u;
    p.indexed = {{dim, wrapped_index(kb, ctx.read(index, vector ? Coords{u[dim]} : Coords{}), size)}};
    p.value = value.is_scalar() ? scalar_constant(kb, value.value, compute) : kb.cast(ctx.read(value.def, {}), compute);
    return p;
  };
  L.bind(0, L.scatter(self, update_sizes, deps, std::move(body), /*accumulate=*/false));
}

// One input of cat or stack: its def and the range [offset, offset + size)
// of the output along the joined dim that it fills.
struct JoinedPart {
  int def;
  DType dtype;
  std::int64_t offset, size;
};

// The def of cat's or stack's output: each element reads the one part whose
// range along `dim` holds it, every part under its own mask (a masked read
// touches no memory outside it). A part of cat is read at the coordinate
// shifted by its offset; a part of stack at the coordinates without `dim`.
int join_parts(Lowerer& L, const std::vector<JoinedPart>& parts, int dim, bool stacked) {
  const auto sizes = L.out_meta().sizes;
  const DType out = L.out_meta().dtype, compute = ir::compute_dtype(out);
  std::vector<int> deps;
  for (const auto& p : parts) deps.push_back(p.def);
  // From the last part to the first: where(in part i, part i, what follows).
  // The last part's masked read is 0 outside it, and never selected there.
  Body body = [parts, dim, stacked, compute](BodyContext& ctx, const Coords& c) {
    auto& kb = ctx.kb();
    ValueId value = -1;
    for (auto p = parts.rbegin(); p != parts.rend(); ++p) {
      const ValueId mask = in_range(kb, c[dim], p->offset, p->offset + p->size);
      if (is_bool_constant(kb, mask, false)) continue;
      Coords at = c;
      if (stacked) at.erase(at.begin() + dim);
      else at[dim] = c[dim] - p->offset;
      const ValueId v = kb.cast(masked_read(ctx, p->def, p->dtype, at, mask, 0), compute);
      value = value < 0 || is_bool_constant(kb, mask, true) ? v : kb.where(mask, v, value);
    }
    return value < 0 ? kb.constant(0, compute) : value;
  };
  const int joined = L.pointwise(sizes, out, deps, std::move(body), L.op_name());
  const std::optional<DType> held = parts.empty() ? std::nullopt : L.held_by(parts[0].def);
  if (std::all_of(parts.begin(), parts.end(), [&](const JoinedPart& p) { return L.held_by(p.def) == held; }))
    L.mark_held_by(joined, held);
  return joined;
}

// The defs of a tensor-list argument.
std::vector<int> list_defs(const Lowerer& L, std::size_t i) {
  const Arg& list = L.arg(i);
  if (list.kind != Arg::Kind::TensorList) throw Unsupported("argument " + std::to_string(i) + " is not a tensor list");
  std::vector<int> defs;
  for (auto v : list.ints) {
    if (v < 0) throw Unsupported("an undefined tensor in a tensor list");
    defs.push_back(L.value_def(static_cast<int>(v)));
  }
  return defs;
}

// The longest cat lowered before, along `dim` and into `dtype`, whose parts
// are a prefix of `parts` at least two long (-1: none), and that prefix's length.
std::pair<int, std::size_t> earlier_cat_prefix(Lowerer& L, int dim, DType dtype, const std::vector<int>& parts) {
  std::pair<int, std::size_t> best{-1, 1};
  for (const auto& cat : L.cats()) {
    const std::size_t n = cat.parts.size();
    if (cat.dim != dim || L.def(cat.def).dtype != dtype || n <= best.second || n >= parts.size()) continue;
    if (std::equal(cat.parts.begin(), cat.parts.end(), parts.begin())) best = {cat.def, n};
  }
  return best;
}

// cat(tensors, dim). Inputs with no elements (size 0 along dim, or the
// legacy 1-d empty tensor torch skips) contribute nothing. Each element
// evaluates one masked read a part: over many parts that is compute-bound.
// A cat that extends an earlier one (DenseNet's blocks: cat(x, f1, ..., fk)
// after cat(x, f1, ..., fk-1)) reads that one, realized, as its first part
// instead, so every cat of the chain reads two parts.
void lower_cat(Lowerer& L) {
  constexpr std::size_t kPartsReadDirectly = 3;
  const auto sizes = L.out_meta().sizes;
  if (sizes.empty()) throw Unsupported("cat into a zero-dim tensor");
  const int dim = static_cast<int>(wrap_dim(L.int_arg(1), sizes.size()));
  std::vector<int> defs;
  for (int d : list_defs(L, 0)) {
    const TensorDef& td = L.def(d);
    if (td.numel() == 0) continue;
    if (td.sizes.size() != sizes.size()) throw Unsupported("cat of tensors of another rank");
    defs.push_back(d);
  }
  if (L.out_meta().numel() == 0) return lower_fill(L, 0);  // an empty output
  const DType out = L.out_meta().dtype;
  auto [earlier, reused] = defs.size() > kPartsReadDirectly ? earlier_cat_prefix(L, dim, out, defs)
                                                            : std::pair<int, std::size_t>{-1, 0};
  std::vector<int> read = defs;  // the earlier cat in place of the inputs it joined
  if (earlier >= 0) {
    read.erase(read.begin(), read.begin() + static_cast<std::ptrdiff_t>(reused));
    read.insert(read.begin(), earlier);
  }
  std::vector<JoinedPart> parts;
  std::int64_t offset = 0;
  for (int d : read) {
    parts.push_back({d, L.def(d).dtype, offset, L.def(d).sizes[dim]});
    offset += L.def(d).sizes[dim];
  }
  if (offset != sizes[dim]) throw Unsupported("cat's inputs do not add up to its output");
  const int joined = join_parts(L, parts, dim, /*stacked=*/false);
  if (earlier >= 0) L.mark_gathered(joined, {earlier});  // read from memory
  L.cats().push_back({dim, defs, joined});
  L.bind(0, joined);
}

// stack(tensors, dim): cat of the inputs unsqueezed at dim; input k fills
// index k along the new dim.
void lower_stack(Lowerer& L) {
  const auto sizes = L.out_meta().sizes;
  const int dim = static_cast<int>(wrap_dim(L.int_arg(1), sizes.size()));
  const auto defs = list_defs(L, 0);
  if (L.out_meta().numel() == 0) return lower_fill(L, 0);
  std::vector<JoinedPart> parts;
  for (std::size_t k = 0; k < defs.size(); ++k) {
    const TensorDef& td = L.def(defs[k]);
    if (td.sizes.size() + 1 != sizes.size()) throw Unsupported("stack of tensors of another rank");
    parts.push_back({defs[k], td.dtype, static_cast<std::int64_t>(k), 1});
  }
  if (static_cast<std::int64_t>(parts.size()) != sizes[dim]) throw Unsupported("stack's inputs do not match its output");
  L.bind(0, join_parts(L, parts, dim, /*stacked=*/true));
}

// constant_pad_nd(self, pad, value): pad holds (before, after) pairs from
// the last dim backwards; negative amounts crop.
void lower_constant_pad(Lowerer& L) {
  const int in = L.tensor_def(0);
  const auto in_sizes = L.def(in).sizes;
  const DType dtype = L.def(in).dtype;
  const auto& pad = L.arg(1).ints;
  if (L.arg(1).kind != Arg::Kind::IntList || pad.size() % 2 != 0 || pad.size() / 2 > in_sizes.size())
    throw Unsupported("bad padding");
  // The fill value as the padded tensor stores it (bf16(0.1), not 0.1).
  const double value = stored_scalar(L.arg(2).is_none() ? 0.0 : L.number_arg(2), L.out_meta().dtype);
  const std::size_t rank = in_sizes.size();
  Body body = [in, in_sizes, dtype, pad, value, rank](BodyContext& ctx, const Coords& c) {
    Coords at = c;
    ValueId mask = ctx.kb().int_constant(1, DType::Bool);
    for (std::size_t j = 0; j < pad.size() / 2; ++j) {
      const std::size_t d = rank - 1 - j;
      at[d] = c[d] - pad[2 * j];
      mask = and_mask(ctx.kb(), mask, in_range(ctx.kb(), c[d], pad[2 * j], pad[2 * j] + in_sizes[d]));
    }
    return masked_read(ctx, in, dtype, at, mask, value);
  };
  L.bind(0, L.pointwise(L.out_meta().sizes, L.out_meta().dtype, {in}, std::move(body), L.op_name()));
}

// div(a, b) without a rounding mode. On the GPU, by a CPU scalar or a Python
// number, as ATen's kernel computes it: times the reciprocal
// (times_reciprocal). A Python number's reciprocal is taken in double, then
// rounded to the compute type (measured on the H200: x / 3.1 in float32 is
// x * float(1 / 3.1), not x * (1 / float(3.1)), which differ by an ulp for
// most x). Integer division of integers truncates (C's /).
void lower_true_division(Lowerer& L) {
  Operand divisor = L.operand(1);
  const bool by_reciprocal =
      L.on_gpu() && (divisor.is_scalar() || divisor.cpu_scalar) && ir::is_floating(L.out_meta().dtype);
  FnN quotient = by_reciprocal ? FnN(times_reciprocal) : binary_fn(PrimOp::Div);
  if (by_reciprocal && divisor.is_scalar()) {
    divisor.value = 1.0 / divisor.value;
    quotient = binary_fn(PrimOp::Mul);
  }
  L.bind(0, L.elementwise({L.operand(0), divisor}, L.out_meta().dtype, quotient));
}

// reflection_pad{1,2,3}d and replication_pad{1,2,3}d(self, padding): padding
// holds (before, after) pairs from the last dim backwards. Along a padded dim
// of size n, output o reads input k = o - before where 0 <= k < n; before the
// input it reads the mirror image (-k, reflection) or the first element
// (replication), after it 2(n-1) - k or the last. Both are index arithmetic
// with absolute values: reflection n-1 - |n-1 - |k||, replication
// (|k| - |k - (n-1)| + n-1) / 2. One read an element, whose index is the
// same across the lanes of a thread wherever the padded dims are not the
// innermost (channels-last activations): the lanes load one vector. (The
// mirrored coordinate computed as a value made a gather with 64-bit
// divisions for every lane: a third of memory speed on MonoDepth's pads.)
void lower_edge_pad(Lowerer& L, bool reflect) {
  const int in = L.tensor_def(0);
  const auto in_sizes = L.def(in).sizes;
  const auto& pad = L.arg(1).ints;
  const std::size_t rank = in_sizes.size(), dims = pad.size() / 2;
  if (L.arg(1).kind != Arg::Kind::IntList || pad.size() % 2 != 0 || dims > rank) throw Unsupported("bad padding");
  for (std::size_t j = 0; j < dims; ++j)
    if (pad[2 * j] < 0 || pad[2 * j + 1] < 0 || (reflect && (pad[2 * j] >= in_sizes[rank - 1 - j] ||
                                                            pad[2 * j + 1] >= in_sizes[rank - 1 - j])))
      throw Unsupported("padding that ATen rejects or crops");
  Body body = [in, in_sizes, pad, rank, dims, reflect](BodyContext& ctx, const Coords& c) {
    Coords at = c;
    for (std::size_t j = 0; j < dims; ++j) {
      const std::size_t d = rank - 1 - j;
      const IndexExpr k = c[d] - IndexExpr(pad[2 * j]);
      const std::int64_t last = in_sizes[d] - 1;
      at[d] = reflect ? last - absolute(last - absolute(k))
                      : floordiv(absolute(k) - absolute(k - last) + last, 2);
    }
    return ctx.read(in, at);
  };
  const int d = L.pointwise(L.out_meta().sizes, L.out_meta().dtype, {in}, std::move(body), L.op_name());
  L.bind(0, d);
}

// cumsum(self, dim, dtype): out[..., i, ...] is the sum of the input over
// positions j <= i along dim, as a reduction over a new last dim j of reads
// masked by j <= i. Quadratic in the dim's size: longer scans run in ATen.
void lower_cumsum(Lowerer& L) {
  const int in = L.tensor_def(0);
  const auto in_sizes = L.def(in).sizes;
  if (in_sizes.empty()) throw Unsupported("cumsum of a 0-d tensor");
  const std::int64_t dim = wrap_dim(L.int_arg(1), in_sizes.size());
  const std::int64_t n = in_sizes[dim];
  constexpr std::int64_t kLongestScan = 2048;
  if (n > kLongestScan || n == 0) throw Unsupported("a scan of " + std::to_string(n) + " elements");
  const DType in_dtype = L.def(in).dtype, out = L.out_meta().dtype;
  auto sizes = in_sizes;
  sizes.push_back(n);
  const std::size_t rank = in_sizes.size();
  Body terms = [in, in_dtype, dim, rank](BodyContext& ctx, const Coords& c) {
    auto& kb = ctx.kb();
    Coords at(c.begin(), c.begin() + static_cast<std::ptrdiff_t>(rank));
    at[dim] = c[rank];
    const ValueId mask = kb.binary(PrimOp::Le, kb.index_value(c[rank]), kb.index_value(c[dim]));
    return masked_read(ctx, in, in_dtype, at, mask, 0.0);
  };
  const int w = L.pointwise(sizes, in_dtype, {in}, std::move(terms), L.op_name());
  const std::vector<std::int64_t> reduced{static_cast<std::int64_t>(rank)};
  L.bind(0, L.squeeze_dims(L.reduction(w, reduced, ReduceOp::Sum, out), reduced));
}

// linalg_vector_norm(self, ord, dim, keepdim, dtype) for ord 2, 1, inf and
// -inf: sqrt(sum(x^2)), sum|x|, max|x|, min|x|.
void lower_vector_norm(Lowerer& L) {
  const int in = L.tensor_def(0);
  const DType out = L.out_meta().dtype;
  if (!ir::is_floating(out) || !ir::is_floating(L.def(in).dtype)) throw Unsupported("a norm of integers");
  const double ord = L.number_arg(1);
  const auto dims = reduction_dims(L.arg(2), L.def(in).sizes.size());
  const bool keepdim = L.bool_arg(3);
  const DType acc = ir::compute_dtype(out);
  const bool squares = ord == 2.0;
  ReduceOp op = ReduceOp::Sum;
  if (std::isinf(ord)) op = ord > 0 ? ReduceOp::Max : ReduceOp::Min;
  else if (ord != 1.0 && ord != 2.0) throw Unsupported("a vector norm of order " + std::to_string(ord));
  Body element = [in, squares, acc](BodyContext& ctx, const Coords& c) {
    auto& kb = ctx.kb();
    const ValueId x = kb.cast(ctx.read(in, c), acc);
    return squares ? kb.binary(PrimOp::Mul, x, x) : kb.unary(PrimOp::Abs, x);
  };
  int r = L.reduction(in, dims, op, acc, std::move(element));
  if (squares)
    r = L.elementwise({Operand{r, L.def(r).sizes, 0}}, acc,
                      [](KernelBuilder& kb, const std::vector<ValueId>& v) { return kb.unary(PrimOp::Sqrt, v[0]); },
                      acc, L.def(r).sizes);
  if (acc != out)
    r = L.elementwise({Operand{r, L.def(r).sizes, 0}}, acc,
                      [](KernelBuilder&, const std::vector<ValueId>& v) { return v[0]; }, out, L.def(r).sizes);
  bind_reduced(L, 0, r, dims, keepdim);
}

// _weight_norm_interface(v, g, dim): (v * (g / norm), norm), where norm is
// the 2-norm of v over every dim but `dim`, keepdim-shaped as g is, and in
// float for f16/bf16 weights as eager's kernel keeps it (nn.utils' weight
// norm: wav2vec2's positional convolution, vocoders).
void lower_weight_norm(Lowerer& L) {
  const int v = L.tensor_def(0);
  const auto sizes = L.def(v).sizes;
  const std::int64_t rank = static_cast<std::int64_t>(sizes.size()), dim = L.int_arg(2);
  if (dim < 0 || dim >= rank) throw Unsupported("weight norm over every dim");
  std::vector<std::int64_t> dims;
  for (std::int64_t d = 0; d < rank; ++d)
    if (d != dim) dims.push_back(d);
  const DType acc = ir::compute_dtype(L.out_meta(0).dtype);
  const int squares = L.reduction(v, dims, ReduceOp::Sum, acc, [v, acc](BodyContext& ctx, const Coords& c) {
    auto& kb = ctx.kb();
    const ValueId x = kb.cast(ctx.read(v, c), acc);
    return kb.binary(PrimOp::Mul, x, x);
  });
  const auto kept = L.def(squares).sizes;
  if (L.def(L.tensor_def(1)).sizes != kept) throw Unsupported("weight norm with g not shaped as the norm");
  const int norm = L.elementwise({Operand{squares, kept, 0}}, acc,
                                 [](KernelBuilder& kb, const std::vector<ValueId>& x) { return kb.unary(PrimOp::Sqrt, x[0]); },
                                 L.out_meta(1).dtype, kept);
  const int w = L.elementwise({L.operand(0), L.operand(1), Operand{norm, kept, 0}}, acc,
                              [](KernelBuilder& kb, const std::vector<ValueId>& x) {
                                return kb.binary(PrimOp::Mul, x[0], kb.binary(PrimOp::Div, x[1], x[2]));
                              },
                              L.out_meta(0).dtype, sizes);
  L.bind(0, w);
  L.bind(1, norm);
}

// The window of a 2-d pooling op: kernel, stride, padding and dilation along
// H and W (an int list of one element stands for both).
struct Pool2d {
  std::int64_t kernel[2], stride[2], padding[2], dilation[2] = {1, 1};
};

void pool_pair(const Arg& a, std::int64_t out[2], std::int64_t if_empty) {
  if (a.kind == Arg::Kind::Int) {
    out[0] = out[1] = a.i;
  } else if (a.kind == Arg::Kind::IntList && a.ints.size() <= 2) {
    if (a.ints.empty()) out[0] = out[1] = if_empty;
    else out[0] = a.ints.front(), out[1] = a.ints.back();
  } else {
    throw Unsupported("a pooling argument that is not one or two ints: " + ir::to_string(a));
  }
}

Pool2d pool_window(const Lowerer& L, bool dilation) {
  Pool2d p;
  pool_pair(L.arg(1), p.kernel, -1);
  pool_pair(L.arg(2), p.stride, 0);
  if (p.stride[0] == 0) p.stride[0] = p.kernel[0], p.stride[1] = p.kernel[1];  // stride=[]: the kernel size
  pool_pair(L.arg(3), p.padding, 0);
  if (dilation) pool_pair(L.arg(4), p.dilation, 1);
  for (int i = 0; i < 2; ++i)
    if (p.kernel[i] <= 0 || p.stride[i] <= 0 || p.padding[i] < 0 || p.dilation[i] <= 0) throw Unsupported("bad pooling window");
  return p;
}

// Every window of a pooling op as a def of the output's sizes plus (kh, kw):
// the input element under window point (i, j), `other` where that falls in
// the padding or past the end (ceil_mode). Inlined into the reduction over
// its last two dims.
int pool_windows(Lowerer& L, int in, const Pool2d& p, double other) {
  const auto in_sizes = L.def(in).sizes;
  const std::size_t rank = in_sizes.size();
  if (rank != 3 && rank != 4) throw Unsupported("pooling of a tensor that is not 3-d or 4-d");
  const DType dtype = L.def(in).dtype;
  auto sizes = L.out_meta(0).sizes;
  for (int a = 0; a < 2; ++a) {
    // Window points j with j * dilation >= size + padding lie past the input
    // for every window (a window starts at -padding or later): the window is
    // cut there, so that a kernel larger than the input (ALIGN's 2560x2560
    // average pool over 2x2 maps) does not loop over millions of masked points.
    const std::int64_t n = in_sizes[rank - 2 + a];
    sizes.push_back(std::min(p.kernel[a], (n + p.padding[a] + p.dilation[a] - 1) / p.dilation[a]));
  }
  Body body = [in, in_sizes, rank, dtype, p, other](BodyContext& ctx, const Coords& c) {
    auto& kb = ctx.kb();
    Coords at(c.begin(), c.begin() + static_cast<std::ptrdiff_t>(rank));
    ValueId mask = kb.int_constant(1, DType::Bool);
    for (int a = 0; a < 2; ++a) {  // H, then W
      const std::size_t d = rank - 2 + a;
      at[d] = c[d] * p.stride[a] - p.padding[a] + c[rank + a] * p.dilation[a];
      mask = and_mask(kb, mask, in_range(kb, at[d], 0, in_sizes[d]));
    }
    return masked_read(ctx, in, dtype, at, mask, other);
  };
  return L.pointwise(sizes, dtype, {in}, std::move(body), L.op_name());
}

// im2col(self, kernel_size, dilation, padding, stride) (nn.Unfold; ConvBERT's
// span convolution): out[n, (c*kh + i)*kw + j, y*ow + x] = self[n, c,
// y*sh - ph + i*dh, x*sw - pw + j*dw], 0 in the padding.
void lower_im2col(Lowerer& L) {
  const int in = L.tensor_def(0);
  const auto in_sizes = L.def(in).sizes;
  const std::size_t rank = in_sizes.size();
  if (rank != 3 && rank != 4) throw Unsupported("im2col of a tensor that is not 3-d or 4-d");
  Pool2d p;
  pool_pair(L.arg(1), p.kernel, -1);
  pool_pair(L.arg(2), p.dilation, 1);
  pool_pair(L.arg(3), p.padding, 0);
  pool_pair(L.arg(4), p.stride, 1);
  std::int64_t out_w = 0;
  for (int a = 0; a < 2; ++a) {
    if (p.kernel[a] <= 0 || p.stride[a] <= 0 || p.padding[a] < 0 || p.dilation[a] <= 0) throw Unsupported("bad im2col window");
    const std::int64_t n = (in_sizes[rank - 2 + a] + 2 * p.padding[a] - p.dilation[a] * (p.kernel[a] - 1) - 1) / p.stride[a] + 1;
    if (n <= 0) throw Unsupported("im2col with no window");
    out_w = n;  // (the last: W)
  }
  const DType dtype = L.def(in).dtype;
  Body body = [in, in_sizes, rank, dtype, p, out_w](BodyContext& ctx, const Coords& c) {
    auto& kb = ctx.kb();
    const std::size_t lead = rank - 3;  // 1 with a batch dim
    const IndexExpr& row = c[lead];
    const IndexExpr& col = c[lead + 1];
    const IndexExpr window[2] = {ir::mod(ir::floordiv(row, p.kernel[1]), p.kernel[0]), ir::mod(row, p.kernel[1])};
    const IndexExpr place[2] = {ir::floordiv(col, out_w), ir::mod(col, out_w)};
    Coords at(rank);
    if (lead) at[0] = c[0];
    at[lead] = ir::floordiv(row, p.kernel[0] * p.kernel[1]);
    ValueId mask = kb.int_constant(1, DType::Bool);
    for (int a = 0; a < 2; ++a) {  // H, then W
      const std::size_t d = rank - 2 + a;
      at[d] = place[a] * p.stride[a] - p.padding[a] + window[a] * p.dilation[a];
      mask = and_mask(kb, mask, in_range(kb, at[d], 0, in_sizes[d]));
    }
    return masked_read(ctx, in, dtype, at, mask, 0);
  };
  L.bind(0, L.pointwise(L.out_meta().sizes, dtype, {in}, std::move(body), L.op_name()));
}

std::vector<std::int64_t> window_dims(const Lowerer& L) {
  const auto rank = static_cast<std::int64_t>(L.out_meta(0).sizes.size());
  return {rank, rank + 1};
}

// max_pool2d(self, kernel_size, stride, padding, dilation, ceil_mode) and
// max_pool2d_with_indices (its indices output only when nothing reads it:
// a program that reads the indices runs the op through ATen). Padding is
// -inf and the maximum propagates NaN, as ATen's.
void lower_max_pool2d(Lowerer& L) {
  const int in = L.tensor_def(0);
  if (!ir::is_floating(L.def(in).dtype)) throw Unsupported("max_pool2d of integers");
  const int windows = pool_windows(L, in, pool_window(L, /*dilation=*/true), -INFINITY);
  const auto dims = window_dims(L);
  L.bind(0, L.squeeze_dims(L.reduction(windows, dims, ReduceOp::Max, L.out_meta(0).dtype), dims));
  if (L.node().outputs.size() < 2) return;
  if (L.output_used(1)) throw Unsupported("a program that reads max_pool2d's indices");
  const auto& meta = L.out_meta(1);
  L.bind(1, L.pointwise(meta.sizes, meta.dtype, {}, [](BodyContext& ctx, const Coords&) {
    return ctx.kb().int_constant(0, DType::Int64);  // never computed: nothing reads it
  }, L.op_name()));
}

// The divisor of avg_pool2d's window at output coordinate o along one axis
// of input size n, as ATen computes it: the window clipped to the padded
// input (pool extent), then to the input itself (the count of real elements).
struct AxisCount {
  ValueId padded, real;
};

AxisCount pool_axis_count(KernelBuilder& kb, const IndexExpr& o, const Pool2d& p, int a, std::int64_t n) {
  auto i64 = [&](std::int64_t v) { return kb.int_constant(v, DType::Int64); };
  const ValueId start = kb.index_value(o * p.stride[a] - p.padding[a]);
  const ValueId end = kb.binary(PrimOp::Minimum, kb.binary(PrimOp::Add, start, i64(p.kernel[a])), i64(n + p.padding[a]));
  const ValueId padded = kb.binary(PrimOp::Sub, end, start);
  const ValueId real = kb.binary(PrimOp::Sub, kb.binary(PrimOp::Minimum, end, i64(n)), kb.binary(PrimOp::Maximum, start, i64(0)));
  return {padded, real};
}

// avg_pool2d(self, kernel_size, stride, padding, ceil_mode, count_include_pad,
// divisor_override): the window's sum (padding adds 0) divided as ATen does.
void lower_avg_pool2d(Lowerer& L) {
  const int in = L.tensor_def(0);
  const DType out = L.out_meta(0).dtype;
  if (!ir::is_floating(out)) throw Unsupported("avg_pool2d of integers");
  const Pool2d p = pool_window(L, /*dilation=*/false);
  const bool include_pad = L.arg(5).is_none() || L.bool_arg(5);
  const std::int64_t divisor_override = L.int_arg_or(6, 0);
  const DType acc = ir::compute_dtype(out) == DType::Float64 ? DType::Float64 : DType::Float32;
  const int windows = pool_windows(L, in, p, 0.0);
  const auto dims = window_dims(L);
  const int sum = L.reduction(windows, dims, ReduceOp::Sum, acc);
  const auto in_sizes = L.def(in).sizes;
  const std::size_t rank = in_sizes.size();
  Body body = [sum, p, in_sizes, rank, include_pad, divisor_override, acc](BodyContext& ctx, const Coords& c) {
    auto& kb = ctx.kb();
    Coords at = c;
    at.push_back(0);
    at.push_back(0);
    const ValueId total = kb.cast(ctx.read(sum, at), acc);
    ValueId divisor;
    if (divisor_override != 0) {
      divisor = kb.int_constant(divisor_override, DType::Int64);
    } else {
      const AxisCount h = pool_axis_count(kb, c[rank - 2], p, 0, in_sizes[rank - 2]);
      const AxisCount w = pool_axis_count(kb, c[rank - 1], p, 1, in_sizes[rank - 1]);
      divisor = include_pad ? kb.binary(PrimOp::Mul, h.padded, w.padded) : kb.binary(PrimOp::Mul, h.real, w.real);
    }
    return kb.binary(PrimOp::Div, total, kb.cast(divisor, acc));
  };
  L.bind(0, L.pointwise(L.out_meta(0).sizes, out, {sum}, std::move(body), L.op_name()));
}

// --- index remapping: flip, roll, repeat, upsampling; adaptive pooling ----------
//
// Each output element reads its source through an index expression (a view
// def: nothing is copied unless a reader needs it in memory). stack is with
// cat above.

// A Python-style remainder in [0, n) for n > 0.
std::int64_t positive_mod(std::int64_t a, std::int64_t n) { return ((a % n) + n) % n; }

// An int-list argument (an int stands for a list of one; None for none).
std::vector<std::int64_t> int_list_arg(const Lowerer& L, std::size_t i) {
  const Arg& a = L.arg(i);
  if (a.kind == Arg::Kind::IntList) return a.ints;
  if (a.is_none()) return {};
  return {L.int_arg(i)};
}

// flip(self, dims): coordinate d read backwards along each flipped dim.
void lower_flip(Lowerer& L) {
  const int in = L.tensor_def(0);
  const auto sizes = L.def(in).sizes;
  std::vector<bool> flipped(sizes.size(), false);
  for (auto d : int_list_arg(L, 1)) {
    const auto dim = wrap_dim(d, sizes.size());
    if (!sizes.empty()) flipped[dim] = true;
  }
  L.bind(0, L.view(in, sizes, [sizes, flipped](const Coords& c) {
    Coords r = c;
    for (std::size_t i = 0; i < c.size(); ++i)
      if (flipped[i]) r[i] = IndexExpr(sizes[i] - 1) - c[i];
    return r;
  }));
}

// as_strided(self, size, stride, storage_offset): the elements of self's
// memory at storage_offset + sum(c_i * stride_i) (Longformer's overlapping
// chunks). The recorder applies it to a value whose memory starts at its
// first element, the offset made explicit (_root_as_strided). Lowered where
// self's layout at the capture was contiguous, so that a position is a flat
// index into self, and every position read lies within self's elements: a
// view def that reads self at that flat index (nothing copied).
void lower_as_strided(Lowerer& L) {
  const int in = L.tensor_def(0);
  const ir::TensorMeta& self = L.arg_meta(0);
  if (!self.is_contiguous()) throw Unsupported("as_strided of a tensor whose layout is not contiguous");
  const auto sizes = int_list_arg(L, 1), strides = int_list_arg(L, 2);
  if (sizes.size() != strides.size() || sizes != L.out_meta().sizes) throw Unsupported("as_strided: sizes and strides disagree");
  const std::int64_t offset = L.int_arg_or(3, 0);
  if (offset < 0) throw Unsupported("as_strided with a negative storage offset");
  std::int64_t last = offset;  // the farthest position read
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    if (strides[i] < 0) throw Unsupported("as_strided with a negative stride");
    if (sizes[i] == 0) return lower_fill(L, 0);  // nothing to read
    last += (sizes[i] - 1) * strides[i];
  }
  if (last >= self.numel()) throw Unsupported("as_strided reads past the tensor's elements");
  const auto in_sizes = L.def(in).sizes;
  L.bind(0, L.view(in, sizes, [in_sizes, strides, offset](const Coords& c) {
    return ir::unflatten_index(ir::linear_index(c, strides) + offset, in_sizes);
  }));
}

// unfold(self, dim, size, step) (Tensor.unfold: sliding windows, PatchTST's
// patches): dim holds the window starts, a new last dim the size elements of
// each window: out[..., i, ..., j] = self[..., i * step + j, ...].
void lower_unfold(Lowerer& L) {
  const int in = L.tensor_def(0);
  const auto in_sizes = L.def(in).sizes;
  const std::size_t rank = in_sizes.size();
  const auto sizes = L.out_meta().sizes;
  const std::int64_t size = L.int_arg(2), step = L.int_arg(3);
  if (rank == 0 || sizes.size() != rank + 1 || sizes[rank] != size || step <= 0) throw Unsupported("unfold of a 0-d tensor");
  const std::size_t dim = static_cast<std::size_t>(wrap_dim(L.int_arg(1), rank));
  if (L.out_meta().numel() == 0) return lower_fill(L, 0);
  L.bind(0, L.view(in, sizes, [dim, step, rank](const Coords& c) {
    Coords r(c.begin(), c.begin() + static_cast<std::ptrdiff_t>(rank));
    r[dim] = c[dim] * step + c[rank];
    return r;
  }));
}

// roll(self, shifts, dims): out[i] = in[(i - shift) mod size] along each
// dim; with no dims, the same over the flattened tensor.
void lower_roll(Lowerer& L) {
  const int in = L.tensor_def(0);
  const auto sizes = L.def(in).sizes;
  const auto shifts = int_list_arg(L, 1), dims = int_list_arg(L, 2);
  if (L.def(in).numel() == 0) return lower_fill(L, 0);  // nothing to move
  if (dims.empty()) {
    if (shifts.size() != 1) throw Unsupported("roll without dims takes one shift");
    const std::int64_t n = L.def(in).numel(), lift = positive_mod(-shifts[0], n);
    L.bind(0, L.view(in, sizes, [sizes, n, lift](const Coords& c) {
      const IndexExpr flat = ir::linear_index(c, ir::contiguous_strides(sizes));
      return ir::unflatten_index(ir::mod(flat + lift, n), sizes);
    }));
    return;
  }
  if (shifts.size() != dims.size()) throw Unsupported("roll with as many shifts as dims");
  std::vector<std::int64_t> lift(sizes.size(), 0);  // per dim: what to add before the modulo
  for (std::size_t k = 0; k < dims.size(); ++k) {
    const auto d = wrap_dim(dims[k], sizes.size());
    lift[d] = positive_mod(lift[d] - shifts[k], sizes[d]);  // a dim listed twice rolls twice
  }
  L.bind(0, L.view(in, sizes, [sizes, lift](const Coords& c) {
    Coords r = c;
    for (std::size_t i = 0; i < c.size(); ++i)
      if (lift[i] != 0) r[i] = ir::mod(c[i] + lift[i], sizes[i]);
    return r;
  }));
}

// repeat(self, repeats): the input tiled; leading repeats add dims.
void lower_repeat(Lowerer& L) {
  const int in = L.tensor_def(0);
  const auto in_sizes = L.def(in).sizes;
  const auto sizes = L.out_meta().sizes;
  if (sizes.size() < in_sizes.size()) throw Unsupported("repeat with fewer repeats than dims");
  if (L.out_meta().numel() == 0) return lower_fill(L, 0);  // nothing to read (an input dim may be 0)
  const std::size_t lead = sizes.size() - in_sizes.size();
  L.bind(0, L.view(in, sizes, [in_sizes, lead](const Coords& c) {
    Coords r;
    for (std::size_t i = 0; i < in_sizes.size(); ++i) r.push_back(ir::mod(c[lead + i], in_sizes[i]));
    return r;
  }));
}

// --- upsampling ---
//
// Eager derives each output position's source along an axis with float
// arithmetic (ATen's UpSample.h). Here the source indices are index
// expressions floor((a * o + c) / b) with integer a, b, c, so that the op
// stays a view-like def that fuses with its neighbours.

// The scale of an axis as eager's compute_scales_value: 1 / scale where one
// is given (> 0), else in / out, in the type T (float for nearest).
template <typename T>
T scale_value(std::int64_t in, std::int64_t out, std::optional<double> scale) {
  if (scale && *scale > 0) return static_cast<T>(1.0 / *scale);
  return static_cast<T>(in) / static_cast<T>(out);
}

// A positive float (or double) s as the exact fraction a / 2^k, if
// a * limit stays far from overflow.
std::optional<std::pair<std::int64_t, std::int64_t>> dyadic_fraction(double s, std::int64_t limit) {
  if (!(s > 0) || !std::isfinite(s)) return std::nullopt;
  int e = 0;
  const double m = std::frexp(s, &e);  // s = m * 2^e, m in [0.5, 1)
  std::int64_t a = static_cast<std::int64_t>(std::ldexp(m, 53)), k = 53 - e;
  while (k > 0 && a % 2 == 0) a /= 2, --k;
  if (k < 0 || k > 40 || a > (std::int64_t{1} << 60) / std::max<std::int64_t>(limit, 1)) return std::nullopt;
  return std::pair{a, std::int64_t{1} << k};
}

// The scale factors of upsample_*2d: .default passes scales_h and scales_w
// at `pos` and `pos + 1`; .vec a list scale_factors at `pos` (or None).
std::array<std::optional<double>, 2> upsample_scales(const Lowerer& L, std::size_t pos, bool vec) {
  std::array<std::optional<double>, 2> s;
  if (vec) {
    const Arg& a = L.arg(pos);
    if (a.kind == Arg::Kind::DoubleList && a.doubles.size() == 2) s = {a.doubles[0], a.doubles[1]};
    else if (!a.is_none()) throw Unsupported("scale_factors that are not two numbers");
  } else {
    for (std::size_t i = 0; i < 2; ++i)
      if (!L.arg(pos + i).is_none()) s[i] = L.number_arg(pos + i);
  }
  return s;
}

// upsample_nearest2d along one axis: source = floor(o * a / b). Eager on CPU
// (nearest_idx) copies where out == in, halves where out == 2 * in, and
// otherwise, like eager on CUDA everywhere, takes
// min(floorf(o * scale), in - 1) with a float scale. Where the two differ
// (a scale factor that disagrees with the sizes) or no fraction reproduces
// every source index, the op runs through ATen.
std::optional<std::pair<std::int64_t, std::int64_t>> nearest_fraction(std::int64_t in, std::int64_t out,
                                                                       std::optional<double> scale) {
  const float s = scale_value<float>(in, out, scale);
  std::vector<std::int64_t> source(out);
  for (std::int64_t o = 0; o < out; ++o) {
    const auto general = std::min(static_cast<std::int64_t>(std::floor(static_cast<float>(o) * s)), in - 1);
    const auto cpu = out == in ? o : out == 2 * in ? o >> 1 : general;
    if (cpu != general) return std::nullopt;
    source[o] = general;
  }
  const std::int64_t g = std::gcd(in, out);
  std::vector<std::pair<std::int64_t, std::int64_t>> candidates{{in / g, out / g}};
  if (auto f = dyadic_fraction(s, out)) candidates.push_back(*f);
  for (const auto& [a, b] : candidates) {
    bool all = true;
    for (std::int64_t o = 0; o < out && all; ++o) all = (o * a) / b == source[o];
    if (all) return std::pair{a, b};
  }
  return std::nullopt;
}

// upsample_nearest2d.default (input, output_size, scales_h?, scales_w?) and
// .vec (input, output_size?, scale_factors?): a view.
void lower_upsample_nearest2d(Lowerer& L, bool vec) {
  const int in = L.tensor_def(0);
  const auto in_sizes = L.def(in).sizes;
  const auto sizes = L.out_meta().sizes;
  if (in_sizes.size() != 4 || sizes.size() != 4 || L.out_meta().numel() == 0) throw Unsupported("upsampling that is not 4-d");
  const auto scales = upsample_scales(L, 2, vec);
  std::array<std::pair<std::int64_t, std::int64_t>, 2> fraction;
  for (int a = 0; a < 2; ++a) {
    auto f = nearest_fraction(in_sizes[2 + a], sizes[2 + a], scales[a]);
    if (!f) throw Unsupported("nearest source indices that no index expression reproduces");
    fraction[a] = *f;
  }
  L.bind(0, L.view(in, sizes, [fraction](const Coords& c) {
    Coords r = c;
    for (int a = 0; a < 2; ++a) r[2 + a] = ir::floordiv(c[2 + a] * fraction[a].first, fraction[a].second);
    return r;
  }));
}

// One axis of upsample_bilinear2d, as eager's compute_source_index_and_lambda
// (UpSample.h) computes it in the accumulation type (float; double for
// double tensors):
//   real = align_corners ? scale * o : max(scale * (o + 0.5) - 0.5, 0)
//   i0 = min(floor(real), in - 1), i1 = i0 + (i0 < in - 1),
//   l1 = min(max(real - i0, 0), 1), l0 = 1 - l1,
// except that on CPU, where out == in, i0 = i1 = o and (l0, l1) = (1, 0).
// The indices here are index expressions with the scale as an exact
// fraction a / b; they equal eager's except where the float `real` rounds
// across an integer, and there l1 (computed in float as eager does, against
// this i0, then clamped) is within rounding of 0 or 1, so the interpolated
// value agrees to rounding.
struct LinearAxis {
  std::int64_t in = 1, out = 1;
  bool align_corners = false;
  bool copy = false;          // out == in
  double scale = 0;           // eager's, in the accumulation type
  std::int64_t a = 0, b = 1;  // the scale as a fraction
  // align_corners = false: g = floor(real) + 1 = (2a * o + a + b) // 2b >= 0,
  // and i0 = g - 1, clamped at 0 where g == 0 (only in a first stretch of
  // o when upsampling): i0 = g - (g + g_max - 1) // g_max.
  bool clamp_low = false;
  std::int64_t g_max = 1;
  bool clamp_high = false;  // i1 = h - h // in, h = i0 + 1 (h reaches in at the last outputs)

  IndexExpr i0(const IndexExpr& o) const {
    if (copy) return o;
    if (align_corners) return out > 1 ? ir::floordiv(o * a, b) : IndexExpr(0);
    const IndexExpr g = ir::floordiv(o * (2 * a) + (a + b), 2 * b);
    return clamp_low ? g - ir::floordiv(g + (g_max - 1), g_max) : g - 1;
  }
  IndexExpr i1(const IndexExpr& o) const {
    if (copy) return o;
    const IndexExpr h = i0(o) + 1;
    return clamp_high ? h - ir::floordiv(h, in) : h;
  }
  // (l0, l1) at o, in `acc`.
  std::pair<ValueId, ValueId> weights(KernelBuilder& kb, const IndexExpr& o, DType acc) const {
    const ValueId zero = kb.constant(0, acc), one = kb.constant(1, acc);
    if (copy) return {one, zero};
    const ValueId of = kb.cast(kb.index_value(o), acc), s = kb.constant(scale, acc);
    ValueId real;
    if (align_corners) {
      real = kb.binary(PrimOp::Mul, s, of);
    } else {
      const ValueId half = kb.constant(0.5, acc);
      real = kb.binary(PrimOp::Sub, kb.binary(PrimOp::Mul, s, kb.binary(PrimOp::Add, of, half)), half);
      real = kb.binary(PrimOp::Maximum, real, zero);
    }
    const ValueId fraction = kb.binary(PrimOp::Sub, real, kb.cast(kb.index_value(i0(o)), acc));
    const ValueId l1 = kb.binary(PrimOp::Minimum, kb.binary(PrimOp::Maximum, fraction, zero), one);
    return {kb.binary(PrimOp::Sub, one, l1), l1};
  }
};

// Rounds like a value of the accumulation type.
double in_acc(double v, DType acc) { return acc == DType::Float64 ? v : static_cast<float>(v); }

LinearAxis linear_axis(std::int64_t in, std::int64_t out, bool align_corners, std::optional<double> scale, DType acc) {
  LinearAxis x;
  x.in = in, x.out = out, x.align_corners = align_corners;
  if (align_corners) {
    x.scale = out > 1 ? in_acc(in_acc(in - 1, acc) / in_acc(out - 1, acc), acc) : 0;
    x.a = in - 1, x.b = std::max<std::int64_t>(out - 1, 1);
  } else {
    const double sizes_ratio = in_acc(in_acc(in, acc) / in_acc(out, acc), acc);
    x.scale = scale && *scale > 0 ? in_acc(1.0 / *scale, acc) : sizes_ratio;
    if (x.scale == sizes_ratio) {
      const std::int64_t g = std::gcd(in, out);
      x.a = in / g, x.b = out / g;
    } else if (auto f = dyadic_fraction(x.scale, 2 * out + 1)) {
      std::tie(x.a, x.b) = *f;
    } else {
      throw Unsupported("a bilinear scale that is no usable fraction");
    }
  }
  if (out == in) {
    // CPU copies; CUDA computes real = o exactly when the scale is 1 (and
    // reads index 0 alone where in == 1).
    if (x.scale != 1.0 && in != 1) throw Unsupported("bilinear scale other than 1 between equal sizes (eager's CPU and CUDA differ)");
    x.copy = true;
    return x;
  }
  if (!align_corners) {
    auto g = [&](std::int64_t o) { return (2 * x.a * o + x.a + x.b) / (2 * x.b); };
    if (g(out - 1) - 1 > in - 1) throw Unsupported("a bilinear source position past the input");
    x.g_max = std::max<std::int64_t>(g(out - 1), 1);
    x.clamp_low = g(0) == 0;
  }
  x.clamp_high = x.i0(IndexExpr(out - 1)).value() + 1 >= in;
  return x;
}

// Linear upsampling of a `rank`-d floating input to a non-empty output:
// its accumulation dtype (float; double for double tensors).
DType linear_upsampling_acc(const Lowerer& L, std::size_t rank) {
  if (L.arg_meta(0).sizes.size() != rank || L.out_meta().sizes.size() != rank || L.out_meta().numel() == 0)
    throw Unsupported("upsampling that is not " + std::to_string(rank) + "-d");
  if (!ir::is_floating(L.out_meta().dtype)) throw Unsupported("linear upsampling of integers");
  return ir::compute_dtype(L.out_meta().dtype) == DType::Float64 ? DType::Float64 : DType::Float32;
}

// upsample_bilinear2d.default (input, output_size, align_corners, scales_h?,
// scales_w?) and .vec (input, output_size?, align_corners, scale_factors?):
// (x[i0, j0] * m0 + x[i0, j1] * m1) * l0 + (x[i1, j0] * m0 + x[i1, j1] * m1) * l1
// with (l0, l1) the row weights and (m0, m1) the column weights, in eager's order.
void lower_upsample_bilinear2d(Lowerer& L, bool vec) {
  const int in = L.tensor_def(0);
  const auto in_sizes = L.def(in).sizes;
  const auto sizes = L.out_meta().sizes;
  const DType out = L.out_meta().dtype, acc = linear_upsampling_acc(L, 4);
  const bool align_corners = L.bool_arg(2);
  const auto scales = upsample_scales(L, 3, vec);
  const LinearAxis rows = linear_axis(in_sizes[2], sizes[2], align_corners, scales[0], acc);
  const LinearAxis cols = linear_axis(in_sizes[3], sizes[3], align_corners, scales[1], acc);
  Body body = [in, rows, cols, acc](BodyContext& ctx, const Coords& c) {
    auto& kb = ctx.kb();
    auto x = [&](const IndexExpr& i, const IndexExpr& j) { return kb.cast(ctx.read(in, {c[0], c[1], i, j}), acc); };
    const auto [l0, l1] = rows.weights(kb, c[2], acc);
    const auto [m0, m1] = cols.weights(kb, c[3], acc);
    const IndexExpr i0 = rows.i0(c[2]), i1 = rows.i1(c[2]), j0 = cols.i0(c[3]), j1 = cols.i1(c[3]);
    auto row = [&](const IndexExpr& i) {
      return kb.binary(PrimOp::Add, kb.binary(PrimOp::Mul, x(i, j0), m0), kb.binary(PrimOp::Mul, x(i, j1), m1));
    };
    return kb.binary(PrimOp::Add, kb.binary(PrimOp::Mul, row(i0), l0), kb.binary(PrimOp::Mul, row(i1), l1));
  };
  L.bind(0, L.pointwise(sizes, out, {in}, std::move(body), L.op_name()));
}

// upsample_linear1d(self, output_size, align_corners, scales) and .vec:
// bilinear's interpolation along the one axis of a 3-d input (SAM resizes
// its relative position tables so).
void lower_upsample_linear1d(Lowerer& L, bool vec) {
  const int in = L.tensor_def(0);
  const auto in_sizes = L.def(in).sizes;
  const auto sizes = L.out_meta().sizes;
  const DType out = L.out_meta().dtype, acc = linear_upsampling_acc(L, 3);
  std::optional<double> scale;
  const Arg& scales = L.arg(3);
  if (vec && scales.kind == Arg::Kind::DoubleList && scales.doubles.size() == 1) scale = scales.doubles[0];
  else if (vec && !scales.is_none()) throw Unsupported("scale_factors that are not one number");
  else if (!vec && !scales.is_none()) scale = L.number_arg(3);
  const LinearAxis cols = linear_axis(in_sizes[2], sizes[2], L.bool_arg(2), scale, acc);
  Body body = [in, cols, acc](BodyContext& ctx, const Coords& c) {
    auto& kb = ctx.kb();
    auto x = [&](const IndexExpr& j) { return kb.cast(ctx.read(in, {c[0], c[1], j}), acc); };
    const auto [m0, m1] = cols.weights(kb, c[2], acc);
    return kb.binary(PrimOp::Add, kb.binary(PrimOp::Mul, x(cols.i0(c[2])), m0), kb.binary(PrimOp::Mul, x(cols.i1(c[2])), m1));
  };
  L.bind(0, L.pointwise(sizes, out, {in}, std::move(body), L.op_name()));
}

// _adaptive_avg_pool2d(self, output_size): output o along an axis of input
// size n and output size m averages the input over
// [floor(o * n / m), ceil((o + 1) * n / m)), eager's start and end indices.
// Every window as a def of the output's sizes plus (kh, kw), the largest
// window's; where windows differ in size, points past a window's end are
// masked to 0. The sum is divided by the window's height, then its width,
// as eager does.
struct AdaptiveAxis {
  std::int64_t in, out, kernel = 0;
  bool uniform = true;  // every window has `kernel` elements
  IndexExpr start(const IndexExpr& o) const { return ir::floordiv(o * in, out); }
  IndexExpr end(const IndexExpr& o) const { return ir::floordiv(o * in + (in + out - 1), out); }
};

AdaptiveAxis adaptive_axis(std::int64_t in, std::int64_t out) {
  AdaptiveAxis a{in, out};
  for (std::int64_t o = 0; o < out; ++o) {
    const std::int64_t size = ((o + 1) * in + out - 1) / out - o * in / out;
    if (o > 0 && size != a.kernel) a.uniform = false;
    a.kernel = std::max(a.kernel, size);
  }
  return a;
}

void lower_adaptive_avg_pool2d(Lowerer& L) {
  const int in = L.tensor_def(0);
  const auto in_sizes = L.def(in).sizes;
  const auto sizes = L.out_meta().sizes;
  const std::size_t rank = in_sizes.size();
  const DType out = L.out_meta().dtype, dtype = L.def(in).dtype;
  if ((rank != 3 && rank != 4) || sizes.size() != rank || L.out_meta().numel() == 0 || L.def(in).numel() == 0)
    throw Unsupported("adaptive pooling of a tensor that is not 3-d or 4-d, or empty");
  if (!ir::is_floating(out)) throw Unsupported("adaptive pooling of integers");
  const std::array<AdaptiveAxis, 2> axes{adaptive_axis(in_sizes[rank - 2], sizes[rank - 2]),
                                         adaptive_axis(in_sizes[rank - 1], sizes[rank - 1])};
  auto window_sizes = sizes;
  for (const auto& a : axes) window_sizes.push_back(a.kernel);
  Body window = [in, dtype, axes, rank](BodyContext& ctx, const Coords& c) {
    auto& kb = ctx.kb();
    Coords at(c.begin(), c.begin() + static_cast<std::ptrdiff_t>(rank));
    ValueId mask = kb.int_constant(1, DType::Bool);
    for (int a = 0; a < 2; ++a) {
      const IndexExpr o = c[rank - 2 + a];
      at[rank - 2 + a] = axes[a].start(o) + c[rank + a];
      if (!axes[a].uniform)
        mask = and_mask(kb, mask, kb.binary(PrimOp::Lt, kb.index_value(at[rank - 2 + a]), kb.index_value(axes[a].end(o))));
    }
    return masked_read(ctx, in, dtype, at, mask, 0);
  };
  const int windows = L.pointwise(window_sizes, dtype, {in}, std::move(window), L.op_name());
  const DType acc = ir::compute_dtype(out) == DType::Float64 ? DType::Float64 : DType::Float32;
  const std::vector<std::int64_t> dims{static_cast<std::int64_t>(rank), static_cast<std::int64_t>(rank + 1)};
  const int sum = L.reduction(windows, dims, ReduceOp::Sum, acc);
  Body body = [sum, axes, rank, acc](BodyContext& ctx, const Coords& c) {
    auto& kb = ctx.kb();
    Coords at = c;
    at.push_back(0);
    at.push_back(0);
    ValueId v = ctx.read(sum, at);
    for (int a = 0; a < 2; ++a) {
      const IndexExpr o = c[rank - 2 + a];
      v = kb.binary(PrimOp::Div, v, kb.cast(kb.index_value(axes[a].end(o) - axes[a].start(o)), acc));
    }
    return v;
  };
  L.bind(0, L.pointwise(sizes, out, {sum}, std::move(body), L.op_name()));
}

// --- the table -------------------------------------------------------------

void add_unary(std::unordered_map<std::string, LowerFn>& t, const std::string& name, Fn1 f) {
  t["aten::" + name + ".default"] = [f](Lowerer& L) { L.bind(0, L.unary(f)); };
}

void add_unary_prim(std::unordered_map<std::string, LowerFn>& t, const std::string& name, PrimOp op) {
  add_unary(t, name, [op](KernelBuilder& kb, ValueId x) { return kb.unary(op, x); });
}

// `numbers_rounded`: a number operand is read in the common dtype
// (number_as_read), on every device.
void add_binary(std::unordered_map<std::string, LowerFn>& t, const std::string& name, PrimOp op,
                bool numbers_rounded = false) {
  for (const char* ov : {".Tensor", ".Scalar", ".default"}) {
    t["aten::" + name + ov] = [op, numbers_rounded](Lowerer& L) {
      const DType out = L.out_meta().dtype;
      Operand a = L.operand(0), b = L.operand(1);
      if (numbers_rounded) a = number_as_read(a, out), b = number_as_read(b, out);
      L.bind(0, L.elementwise({a, b}, arithmetic_dtype(out), binary_fn(op)));
    };
  }
}

void add_comparison(std::unordered_map<std::string, LowerFn>& t, const std::string& name, PrimOp op) {
  for (const char* ov : {".Tensor", ".Scalar", ".default"}) {
    t["aten::" + name + ov] = [op](Lowerer& L) {
      DType compute = L.result_type({0, 1});
      L.bind(0, L.elementwise({number_as_read(L.operand(0), compute), number_as_read(L.operand(1), compute)}, compute,
                              binary_fn(op)));
    };
  }
}

// bitwise_and/or/xor of bools are the logical ops (a mask combined with `&`);
// of integers they have no lowering yet.
void add_bool_bitwise(std::unordered_map<std::string, LowerFn>& t, const std::string& name, PrimOp op) {
  for (const char* ov : {".Tensor", ".Scalar"}) {
    t["aten::bitwise_" + name + ov] = [op, name](Lowerer& L) {
      if (L.out_meta().dtype != DType::Bool) throw Unsupported("bitwise_" + name + " of integers");
      L.bind(0, L.elementwise({number_as_read(L.operand(0), DType::Bool), number_as_read(L.operand(1), DType::Bool)},
                              DType::Bool, binary_fn(op)));
    };
  }
}

std::unordered_map<std::string, LowerFn> make_lowerings() {
  std::unordered_map<std::string, LowerFn> t;
  // Unary math.
  add_unary_prim(t, "neg", PrimOp::Neg);
  add_unary_prim(t, "abs", PrimOp::Abs);
  add_unary_prim(t, "exp", PrimOp::Exp);
  add_unary_prim(t, "exp2", PrimOp::Exp2);
  add_unary_prim(t, "log", PrimOp::Log);
  add_unary_prim(t, "log1p", PrimOp::Log1p);
  add_unary_prim(t, "sqrt", PrimOp::Sqrt);
  add_unary_prim(t, "rsqrt", PrimOp::Rsqrt);
  add_unary_prim(t, "sin", PrimOp::Sin);
  add_unary_prim(t, "cos", PrimOp::Cos);
  add_unary_prim(t, "tanh", PrimOp::Tanh);
  add_unary_prim(t, "erf", PrimOp::Erf);
  add_unary_prim(t, "floor", PrimOp::Floor);
  add_unary_prim(t, "ceil", PrimOp::Ceil);
  add_unary_prim(t, "round", PrimOp::Round);
  add_unary_prim(t, "trunc", PrimOp::Trunc);
  add_unary(t, "reciprocal", [](KernelBuilder& kb, ValueId x) { return bin(kb, PrimOp::Div, cst(kb, 1, x), x); });
  add_unary(t, "sigmoid", sigmoid);
  add_unary(t, "silu", [](KernelBuilder& kb, ValueId x) { return bin(kb, PrimOp::Mul, x, sigmoid(kb, x)); });
  add_unary(t, "relu", [](KernelBuilder& kb, ValueId x) { return bin(kb, PrimOp::Maximum, x, cst(kb, 0, x)); });
  add_unary(t, "sign", sign);
  t["aten::gelu.default"] = [](Lowerer& L) {
    bool tanh_approx = L.arg(1).kind == Arg::Kind::String && L.arg(1).s == "tanh";
    L.bind(0, L.unary([tanh_approx](KernelBuilder& kb, ValueId x) { return gelu(kb, x, tanh_approx); }));
  };
  // Activations (the in-place forms are recorded functionalized).
  t["aten::hardtanh.default"] = lower_hardtanh;
  t["aten::hardsigmoid.default"] = [](Lowerer& L) { lower_float_activation(L, hardsigmoid); };
  t["aten::hardswish.default"] = [](Lowerer& L) { lower_float_activation(L, hardswish); };
  t["aten::mish.default"] = [](Lowerer& L) { lower_float_activation(L, mish); };
  t["aten::leaky_relu.default"] = [](Lowerer& L) {
    const double slope = L.number_arg_or(1, 0.01);
    lower_float_activation(L, [slope](KernelBuilder& kb, ValueId x) {
      return kb.where(bin(kb, PrimOp::Gt, x, cst(kb, 0, x)), x, bin(kb, PrimOp::Mul, x, cst(kb, slope, x)));
    });
  };
  t["aten::elu.default"] = [](Lowerer& L) {
    const double alpha = L.number_arg_or(1, 1.0), scale = L.number_arg_or(2, 1.0), input_scale = L.number_arg_or(3, 1.0);
    lower_float_activation(L, [=](KernelBuilder& kb, ValueId x) { return elu(kb, x, alpha, scale, input_scale); });
  };
  t["aten::celu.default"] = [](Lowerer& L) {  // eager: elu(x, alpha, 1, 1 / alpha)
    const double alpha = L.number_arg_or(1, 1.0);
    if (alpha == 0) throw Unsupported("celu with alpha 0");
    lower_float_activation(L, [alpha](KernelBuilder& kb, ValueId x) { return elu(kb, x, alpha, 1.0, 1.0 / alpha); });
  };
  t["aten::softplus.default"] = [](Lowerer& L) {
    const double beta = L.number_arg_or(1, 1.0), threshold = L.number_arg_or(2, 20.0);
    lower_float_activation(L, [=](KernelBuilder& kb, ValueId x) { return softplus(kb, x, beta, threshold); });
  };
  t["aten::round.decimals"] = [](Lowerer& L) {
    // As eager: round(x * 10^d) / 10^d, and for d < 0 round(x / 10^-d) * 10^-d
    // (multiplying by 0.1 instead of dividing by 10 rounds differently).
    std::int64_t decimals = L.int_arg(1);
    double scale = std::pow(10.0, static_cast<double>(decimals < 0 ? -decimals : decimals));
    PrimOp scale_in = decimals < 0 ? PrimOp::Div : PrimOp::Mul, scale_out = decimals < 0 ? PrimOp::Mul : PrimOp::Div;
    L.bind(0, L.unary([scale, scale_in, scale_out](KernelBuilder& kb, ValueId x) {
      ValueId s = cst(kb, scale, x);
      return bin(kb, scale_out, kb.unary(PrimOp::Round, bin(kb, scale_in, x, s)), s);
    }));
  };
  for (const char* name : {"aten::logical_not.default", "aten::bitwise_not.default"}) {
    t[name] = [name = std::string(name)](Lowerer& L) {
      int in = L.tensor_def(0);
      if (name == "aten::bitwise_not.default" && L.def(in).dtype != DType::Bool) throw Unsupported("bitwise_not on integers");
      L.bind(0, L.elementwise({L.operand(0)}, L.def(in).dtype, [](KernelBuilder& kb, const std::vector<ValueId>& v) {
        return kb.unary(PrimOp::LogicalNot, v[0]);
      }));
    };
  }
  t["aten::isnan.default"] = [](Lowerer& L) {
    L.bind(0, L.elementwise({L.operand(0)}, L.def(L.tensor_def(0)).dtype,
                            [](KernelBuilder& kb, const std::vector<ValueId>& v) { return kb.unary(PrimOp::IsNan, v[0]); }));
  };

  // Binary arithmetic.
  for (const char* ov : {".Tensor", ".Scalar"}) {
    for (auto [name, op, rev] : {std::tuple{"add", PrimOp::Add, false}, std::tuple{"sub", PrimOp::Sub, false},
                                 std::tuple{"rsub", PrimOp::Sub, true}}) {
      t[std::string("aten::") + name + ov] = [op, rev](Lowerer& L) {
        const DType out = L.out_meta().dtype;
        double alpha = L.arg(2).is_none() ? 1.0 : L.number_arg(2);
        Operand a = L.operand(0), b = L.operand(1);
        if (!L.on_gpu()) {  // (alpha too: x + 0.3 * y multiplies by bf16(0.3))
          a = number_as_read(a, out), b = number_as_read(b, out);
          alpha = number_as_read(alpha, out);
        }
        L.bind(0, L.elementwise({a, b}, arithmetic_dtype(out), add_with_alpha(op, alpha, rev)));
      };
    }
  }
  add_binary(t, "mul", PrimOp::Mul);
  add_binary(t, "maximum", PrimOp::Maximum);
  add_binary(t, "minimum", PrimOp::Minimum);
  add_binary(t, "remainder", PrimOp::Mod, /*numbers_rounded=*/true);
  for (const char* ov : {".Tensor", ".Scalar"}) {
    t[std::string("aten::div") + ov] = [](Lowerer& L) { lower_true_division(L); };
    t[std::string("aten::div") + ov + "_mode"] = [](Lowerer& L) {
      const Arg& mode = L.arg(2);
      DType out = L.out_meta().dtype;
      if (mode.kind == Arg::Kind::String && mode.s == "floor") {
        L.bind(0, L.elementwise({L.operand(0), L.operand(1)}, out, [](KernelBuilder& kb, const std::vector<ValueId>& v) {
          return floor_divide(kb, v[0], v[1]);
        }));
      } else if (mode.kind == Arg::Kind::String && mode.s == "trunc" && ir::is_floating(out)) {
        // Eager truncates the quotient after rounding it to the tensor's
        // dtype: for f16/bf16, 9.99 rounds to 10 first.
        int quotient = L.elementwise({L.operand(0), L.operand(1)}, out, binary_fn(PrimOp::Div));
        L.mark_rounded(quotient);
        L.bind(0, L.elementwise({Operand{quotient, L.out_meta().sizes, 0}}, out,
                                [](KernelBuilder& kb, const std::vector<ValueId>& v) { return kb.unary(PrimOp::Trunc, v[0]); }));
      } else if (mode.kind == Arg::Kind::None) {
        lower_true_division(L);
      } else if (mode.kind == Arg::Kind::String) {
        L.bind(0, L.elementwise({L.operand(0), L.operand(1)}, out, binary_fn(PrimOp::Div)));  // ints: truncating
      } else {
        throw Unsupported("unknown rounding mode");
      }
    };
  }
  t["aten::floor_divide.default"] = [](Lowerer& L) {
    L.bind(0, L.elementwise({L.operand(0), L.operand(1)}, L.out_meta().dtype, [](KernelBuilder& kb, const std::vector<ValueId>& v) {
      return floor_divide(kb, v[0], v[1]);
    }));
  };
  t["aten::pow.Tensor_Scalar"] = [](Lowerer& L) {
    double e = L.number_arg(1);
    e = number_as_read(e, L.out_meta().dtype);
    L.bind(0, L.unary([e](KernelBuilder& kb, ValueId x) { return pow_scalar_exponent(kb, x, e); }));
  };
  t["aten::pow.Tensor_Tensor"] = [](Lowerer& L) {
    const DType out = L.out_meta().dtype;
    Operand base = L.operand(0);
    base = number_as_read(base, out);  // (pow.Scalar: a number's power)
    L.bind(0, L.elementwise({base, L.operand(1)}, out, binary_fn(PrimOp::Pow)));
  };
  t["aten::pow.Scalar"] = t["aten::pow.Tensor_Tensor"];

  // Comparisons and logic.
  add_comparison(t, "eq", PrimOp::Eq);
  add_comparison(t, "ne", PrimOp::Ne);
  add_comparison(t, "lt", PrimOp::Lt);
  add_comparison(t, "le", PrimOp::Le);
  add_comparison(t, "gt", PrimOp::Gt);
  add_comparison(t, "ge", PrimOp::Ge);
  add_comparison(t, "logical_and", PrimOp::LogicalAnd);
  add_comparison(t, "logical_or", PrimOp::LogicalOr);
  add_comparison(t, "logical_xor", PrimOp::LogicalXor);
  add_bool_bitwise(t, "and", PrimOp::LogicalAnd);
  add_bool_bitwise(t, "or", PrimOp::LogicalOr);
  add_bool_bitwise(t, "xor", PrimOp::LogicalXor);
  for (const char* ov : {"self", "ScalarSelf", "ScalarOther", "Scalar"}) t[std::string("aten::where.") + ov] = lower_where;
  for (const char* name : {"aten::clamp.default", "aten::clamp.Tensor"}) t[name] = lower_clamp;
  for (const char* ov : {".Scalar", ".Tensor"}) t[std::string("aten::masked_fill") + ov] = lower_masked_fill;
  for (const char* ov : {".default", ".Tensor"}) {
    t[std::string("aten::clamp_min") + ov] = [](Lowerer& L) {
      L.bind(0, L.elementwise({L.operand(0), L.operand(1)}, L.out_meta().dtype, binary_fn(PrimOp::Maximum)));
    };
    t[std::string("aten::clamp_max") + ov] = [](Lowerer& L) {
      L.bind(0, L.elementwise({L.operand(0), L.operand(1)}, L.out_meta().dtype, binary_fn(PrimOp::Minimum)));
    };
  }

  // Copies and casts.
  for (const char* name : {"aten::clone.default", "aten::_to_copy.default", "aten::alias.default",
                           "aten::detach.default", "aten::lift_fresh.default", "aten::lift_fresh_copy.default",
                           "aten::_unsafe_view_copy.default", "aten::contiguous.default"}) {
    t[name] = lower_copy_like;
  }

  // copy_, fill_, zero_ and writes into views, functionalized (see python/deepvisor/_capture.py).
  t["aten::copy.default"] = [](Lowerer& L) { lower_copy_from(L, 1); };
  t["aten::fill.Scalar"] = [](Lowerer& L) { lower_fill(L, L.number_arg(1)); };
  t["aten::fill.Tensor"] = [](Lowerer& L) {
    if (L.rank_of(1) != 0) throw Unsupported("fill with a tensor of dims");
    lower_copy_from(L, 1);
  };
  t["aten::zero.default"] = [](Lowerer& L) { lower_fill(L, 0); };
  t["aten::select_scatter.default"] = lower_select_scatter;
  t["aten::slice_scatter.default"] = lower_slice_scatter;

  // Indexing by data, concatenation, padding, pooling.
  t["aten::embedding.default"] = lower_embedding;
  t["aten::index_select.default"] = lower_index_select;
  t["aten::gather.default"] = lower_gather;
  t["aten::index.Tensor"] = lower_index_tensor;
  t["aten::index_put.default"] = lower_index_put;
  t["aten::scatter.src"] = [](Lowerer& L) { lower_scatter(L, false); };
  t["aten::scatter.value"] = [](Lowerer& L) { lower_scatter(L, false); };
  t["aten::scatter_add.default"] = [](Lowerer& L) { lower_scatter(L, true); };
  t["aten::scatter_reduce.two"] = [](Lowerer& L) { lower_scatter_reduce(L, "sum", L.bool_arg(5)); };
  t["aten::scatter.reduce"] = [](Lowerer& L) { lower_scatter_reduce(L, "add", true); };
  t["aten::scatter.value_reduce"] = [](Lowerer& L) { lower_scatter_reduce(L, "add", true); };
  t["aten::index_add.default"] = [](Lowerer& L) { lower_index_add_copy(L, true); };
  t["aten::index_copy.default"] = [](Lowerer& L) { lower_index_add_copy(L, false); };
  t["aten::index_fill.int_Scalar"] = lower_index_fill;
  t["aten::index_fill.int_Tensor"] = lower_index_fill;
  t["aten::cat.default"] = lower_cat;
  t["aten::stack.default"] = lower_stack;
  t["aten::constant_pad_nd.default"] = lower_constant_pad;
  for (const char* kind : {"reflection", "replication"})
    for (const char* n : {"1d", "2d", "3d"}) {
      const bool reflect = std::string(kind) == "reflection";
      t[std::string("aten::") + kind + "_pad" + n + ".default"] = [reflect](Lowerer& L) { lower_edge_pad(L, reflect); };
    }
  t["aten::cumsum.default"] = lower_cumsum;
  t["aten::linalg_vector_norm.default"] = lower_vector_norm;
  t["aten::_weight_norm_interface.default"] = lower_weight_norm;
  t["aten::max_pool2d.default"] = lower_max_pool2d;
  t["aten::max_pool2d_with_indices.default"] = lower_max_pool2d;
  t["aten::avg_pool2d.default"] = lower_avg_pool2d;
  t["aten::im2col.default"] = lower_im2col;
  t["aten::_adaptive_avg_pool2d.default"] = lower_adaptive_avg_pool2d;
  t["aten::adaptive_avg_pool2d.default"] = lower_adaptive_avg_pool2d;

  // Index remapping: flips, rolls, tiles, upsampling (view-like defs).
  t["aten::flip.default"] = lower_flip;
  t["aten::roll.default"] = lower_roll;
  t["aten::unfold.default"] = lower_unfold;
  t["aten::as_strided.default"] = lower_as_strided;
  t["aten::tril.default"] = [](Lowerer& L) { lower_triangle(L, false); };
  t["aten::triu.default"] = [](Lowerer& L) { lower_triangle(L, true); };
  t["aten::repeat.default"] = lower_repeat;
  t["aten::upsample_nearest2d.default"] = [](Lowerer& L) { lower_upsample_nearest2d(L, false); };
  t["aten::upsample_nearest2d.vec"] = [](Lowerer& L) { lower_upsample_nearest2d(L, true); };
  t["aten::upsample_bilinear2d.default"] = [](Lowerer& L) { lower_upsample_bilinear2d(L, false); };
  t["aten::upsample_bilinear2d.vec"] = [](Lowerer& L) { lower_upsample_bilinear2d(L, true); };
  t["aten::upsample_linear1d.default"] = [](Lowerer& L) { lower_upsample_linear1d(L, false); };
  t["aten::upsample_linear1d.vec"] = [](Lowerer& L) { lower_upsample_linear1d(L, true); };

  // Factories.
  t["aten::full.default"] = [](Lowerer& L) { lower_fill(L, L.number_arg(1)); };
  t["aten::full_like.default"] = [](Lowerer& L) { lower_fill(L, L.number_arg(1)); };
  t["aten::scalar_tensor.default"] = [](Lowerer& L) { lower_fill(L, L.number_arg(0)); };
  for (const char* name : {"aten::zeros.default", "aten::zeros_like.default"}) t[name] = [](Lowerer& L) { lower_fill(L, 0); };
  for (const char* name : {"aten::ones.default", "aten::ones_like.default"}) t[name] = [](Lowerer& L) { lower_fill(L, 1); };
  t["aten::new_zeros.default"] = [](Lowerer& L) { lower_fill(L, 0); };
  t["aten::new_ones.default"] = [](Lowerer& L) { lower_fill(L, 1); };
  t["aten::new_full.default"] = [](Lowerer& L) { lower_fill(L, L.number_arg(2)); };
  t["aten::arange.default"] = [](Lowerer& L) { lower_arange(L, 0, 1); };
  t["aten::arange.start"] = [](Lowerer& L) { lower_arange(L, L.number_arg(0), 1); };
  t["aten::arange.start_step"] = [](Lowerer& L) { lower_arange(L, L.number_arg(0), L.number_arg(2)); };

  // Reductions.
  t["aten::sum.dim_IntList"] = [](Lowerer& L) { lower_reduce(L, ReduceOp::Sum, L.arg(1), L.bool_arg(2)); };
  t["aten::sum.default"] = [](Lowerer& L) { lower_reduce(L, ReduceOp::Sum, Arg::none(), false); };
  t["aten::prod.dim_int"] = [](Lowerer& L) { lower_reduce(L, ReduceOp::Prod, L.arg(1), L.bool_arg(2)); };
  t["aten::prod.default"] = [](Lowerer& L) { lower_reduce(L, ReduceOp::Prod, Arg::none(), false); };
  t["aten::amax.default"] = [](Lowerer& L) { lower_reduce(L, ReduceOp::Max, L.arg(1), L.bool_arg(2)); };
  t["aten::amin.default"] = [](Lowerer& L) { lower_reduce(L, ReduceOp::Min, L.arg(1), L.bool_arg(2)); };
  t["aten::max.default"] = [](Lowerer& L) { lower_reduce(L, ReduceOp::Max, Arg::none(), false); };
  for (auto [name, op] : {std::pair{"all", ReduceOp::Min}, std::pair{"any", ReduceOp::Max}}) {
    std::string n = std::string("aten::") + name;
    t[n + ".default"] = [op](Lowerer& L) { lower_all_any(L, op, Arg::none(), false); };
    t[n + ".dim"] = [op](Lowerer& L) { lower_all_any(L, op, L.arg(1), L.bool_arg(2)); };
    t[n + ".dims"] = [op](Lowerer& L) { lower_all_any(L, op, L.arg(1), L.bool_arg(2)); };
  }
  t["aten::min.default"] = [](Lowerer& L) { lower_reduce(L, ReduceOp::Min, Arg::none(), false); };
  t["aten::argmax.default"] = [](Lowerer& L) { lower_argmax_argmin(L, ReduceOp::Max); };
  t["aten::argmin.default"] = [](Lowerer& L) { lower_argmax_argmin(L, ReduceOp::Min); };
  t["aten::max.dim"] = [](Lowerer& L) { lower_extremum_dim(L, ReduceOp::Max); };
  t["aten::min.dim"] = [](Lowerer& L) { lower_extremum_dim(L, ReduceOp::Min); };
  auto mean = [](Lowerer& L, const Arg& dim_arg, bool keepdim) {
    int in = L.tensor_def(0);
    auto dims = reduction_dims(dim_arg, L.def(in).sizes.size());
    bind_reduced(L, 0, mean_def(L, in, dims, L.out_meta().dtype), dims, keepdim);
  };
  t["aten::mean.dim"] = [mean](Lowerer& L) { mean(L, L.arg(1), L.bool_arg(2)); };
  t["aten::mean.default"] = [mean](Lowerer& L) { mean(L, Arg::none(), false); };
  t["aten::var.correction"] = [](Lowerer& L) { lower_var_std(L, false); };
  t["aten::std.correction"] = [](Lowerer& L) { lower_var_std(L, true); };
  t["aten::_softmax.default"] = [](Lowerer& L) { lower_softmax(L, false); };
  t["aten::_log_softmax.default"] = [](Lowerer& L) { lower_softmax(L, true); };
  t["aten::addcmul.default"] = [](Lowerer& L) { lower_addc(L, PrimOp::Mul); };
  t["aten::addcdiv.default"] = [](Lowerer& L) { lower_addc(L, PrimOp::Div); };
  t["aten::_safe_softmax.default"] = [](Lowerer& L) { lower_softmax(L, false, /*safe=*/true); };
  t["aten::native_layer_norm.default"] = lower_layer_norm;
  t["aten::native_group_norm.default"] = lower_group_norm;
  // (input, weight?, bias?, running_mean?, running_var?, training, momentum, eps)
  t["aten::native_batch_norm.default"] = [](Lowerer& L) {
    if (L.bool_arg(5)) return lower_batch_norm_batch_statistics(L);
    lower_batch_norm_inference(L, 1, 2, 3, 4, 5, 7);
  };
  // (input, weight?, bias?, running_mean, running_var, momentum, eps)
  t["aten::_native_batch_norm_legit_no_training.default"] = [](Lowerer& L) {
    lower_batch_norm_inference(L, 1, 2, 3, 4, -1, 6);
  };
  // (input, weight, bias?, running_mean?, running_var?, training, exponential_average_factor, epsilon)
  t["aten::cudnn_batch_norm.default"] = [](Lowerer& L) { lower_batch_norm_inference(L, 1, 2, 3, 4, 5, 7); };

  // Views: index remapping, no copy.
  auto reshape_like = [](Lowerer& L) {
    int in = L.tensor_def(0);
    auto in_sizes = L.def(in).sizes;
    auto out_sizes = L.out_meta().sizes;
    L.bind(0, L.view(in, out_sizes, [in_sizes, out_sizes](const Coords& c) {
      return reshape_coords(in_sizes, out_sizes, c);
    }));
  };
  for (const char* name : {"aten::view.default", "aten::_unsafe_view.default", "aten::reshape.default",
                           "aten::unsqueeze.default", "aten::squeeze.dim", "aten::squeeze.dims", "aten::squeeze.default",
                           "aten::flatten.using_ints", "aten::view_copy.default"}) {
    t[name] = reshape_like;
  }
  auto permute = [](Lowerer& L, std::vector<std::int64_t> perm) {
    int in = L.tensor_def(0);
    L.bind(0, L.view(in, L.out_meta().sizes, [perm](const Coords& c) {
      Coords r(perm.size());
      for (std::size_t i = 0; i < perm.size(); ++i) r[perm[i]] = c[i];
      return r;
    }));
  };
  t["aten::permute.default"] = [permute](Lowerer& L) {
    std::size_t rank = L.rank_of(0);
    std::vector<std::int64_t> perm;
    for (auto d : L.arg(1).ints) perm.push_back(wrap_dim(d, rank));
    permute(L, perm);
  };
  t["aten::transpose.int"] = [permute](Lowerer& L) {
    std::size_t rank = L.rank_of(0);
    std::vector<std::int64_t> perm(rank);
    std::iota(perm.begin(), perm.end(), 0);
    if (rank > 0) std::swap(perm[wrap_dim(L.int_arg(1), rank)], perm[wrap_dim(L.int_arg(2), rank)]);
    permute(L, perm);
  };
  t["aten::t.default"] = [permute](Lowerer& L) {
    std::size_t rank = L.rank_of(0);
    permute(L, rank == 2 ? std::vector<std::int64_t>{1, 0} : std::vector<std::int64_t>{0});
  };
  t["aten::expand.default"] = [](Lowerer& L) {
    int in = L.tensor_def(0);
    auto in_sizes = L.def(in).sizes;
    L.bind(0, L.view(in, L.out_meta().sizes, [in_sizes](const Coords& c) { return broadcast_coords(in_sizes, c); }));
  };
  t["aten::slice.Tensor"] = [](Lowerer& L) {
    int in = L.tensor_def(0);
    auto in_sizes = L.def(in).sizes;
    std::int64_t dim = wrap_dim(L.int_arg(1), in_sizes.size());
    std::int64_t size = in_sizes[dim];
    std::int64_t start = L.int_arg_or(2, 0);
    if (start < 0) start += size;
    start = std::clamp<std::int64_t>(start, 0, size);
    std::int64_t step = L.int_arg_or(4, 1);
    if (step <= 0) throw Unsupported("slice step must be positive");
    L.bind(0, L.view(in, L.out_meta().sizes, [dim, start, step](const Coords& c) {
      Coords r = c;
      r[dim] = start + c[dim] * step;
      return r;
    }));
  };
  t["aten::select.int"] = [](Lowerer& L) {
    int in = L.tensor_def(0);
    auto in_sizes = L.def(in).sizes;
    std::int64_t dim = wrap_dim(L.int_arg(1), in_sizes.size());
    std::int64_t index = L.int_arg(2);
    if (index < 0) index += in_sizes[dim];
    L.bind(0, L.view(in, L.out_meta().sizes, [dim, index](const Coords& c) {
      Coords r = c;
      r.insert(r.begin() + dim, IndexExpr(index));
      return r;
    }));
  };
  // split, split_with_sizes, chunk, narrow: consecutive slices along `dim`,
  // one per output, their extents read from the outputs' sizes.
  auto consecutive_slices = [](Lowerer& L) {
    int in = L.tensor_def(0);
    std::int64_t dim = wrap_dim(L.int_arg(L.op_name() == "aten::narrow.default" ? 1 : 2), L.def(in).sizes.size());
    std::int64_t start = L.op_name() == "aten::narrow.default" ? L.int_arg(2) : 0;
    if (start < 0) start += L.def(in).sizes[dim];
    for (std::size_t i = 0; i < L.node().outputs.size(); ++i) {
      L.bind(i, L.view(in, L.out_meta(i).sizes, [dim, start](const Coords& c) {
        Coords r = c;
        r[dim] = r[dim] + start;
        return r;
      }));
      start += L.out_meta(i).sizes[dim];
    }
  };
  for (const char* name : {"aten::split.Tensor", "aten::split_with_sizes.default", "aten::chunk.default",
                           "aten::narrow.default"})
    t[name] = consecutive_slices;
  t["aten::unbind.int"] = [](Lowerer& L) {
    int in = L.tensor_def(0);
    std::int64_t dim = wrap_dim(L.int_arg(1), L.def(in).sizes.size());
    for (std::size_t i = 0; i < L.node().outputs.size(); ++i) {
      L.bind(i, L.view(in, L.out_meta(i).sizes, [dim, i](const Coords& c) {
        Coords r = c;
        r.insert(r.begin() + dim, IndexExpr(static_cast<std::int64_t>(i)));
        return r;
      }));
    }
  };
  return t;
}

const std::unordered_map<std::string, LowerFn>& lowerings() {
  static const auto table = make_lowerings();
  return table;
}

}  // namespace

LoweredGraph lower_graph(const ir::Graph& graph) { return Lowerer(graph, Lowerer::AtenPolicy::None).run(); }

LoweredGraph lower_graph_to_aten(const ir::Graph& graph) { return Lowerer(graph, Lowerer::AtenPolicy::All).run(); }

LoweredGraph lower_graph_rows_to_aten(const ir::Graph& graph, std::int64_t min_rows) {
  return Lowerer(graph, Lowerer::AtenPolicy::Rows, min_rows).run();
}

bool has_lowering(const std::string& op) { return lowerings().count(op) > 0; }

bool is_view_op(const std::string& op) {
  static const std::set<std::string> ops = {
      "aten::view.default", "aten::_unsafe_view.default", "aten::_reshape_alias.default", "aten::t.default",
      "aten::transpose.int", "aten::permute.default", "aten::expand.default", "aten::slice.Tensor",
      "aten::select.int", "aten::unsqueeze.default", "aten::squeeze.dim", "aten::squeeze.dims",
      "aten::squeeze.default", "aten::alias.default", "aten::detach.default", "aten::split.Tensor",
      "aten::split_with_sizes.default", "aten::chunk.default", "aten::narrow.default", "aten::unbind.int"};
  return ops.count(op) > 0;
}

}  // namespace dv::codegen
