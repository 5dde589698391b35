// Tensor definitions: what lowering turns each graph value into.
//
// A TensorDef says how to compute a tensor's element at given coordinates
// (define-by-run, as a body that emits loop-IR instructions), without saying
// where or whether it is materialized. The scheduler decides that: a
// pointwise def is inlined into whatever reads it unless it must be realized;
// reductions are always realized, as members of a fusion group's kernel.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "ir/loop_ir.h"
#include "ir/op_graph.h"

namespace dv::codegen {

using Coords = std::vector<ir::IndexExpr>;

// What a def's body may do while it is being emitted into a kernel.
class BodyContext {
 public:
  virtual ~BodyContext() = default;
  virtual ir::KernelBuilder& kb() = 0;
  // The element of def `def` at `coords`, as a value of its compute dtype.
  virtual ir::ValueId read(int def, const Coords& coords) = 0;
  // The same where `mask` (a Bool value) is true; elsewhere `other` (in the
  // def's compute dtype), reading nothing: `coords` need not be in range
  // there. Everything the read computes from memory is loaded under the mask.
  virtual ir::ValueId read_masked(int def, const Coords& coords, ir::ValueId mask, double other) = 0;
  // The element of def `def` at `coords` with coordinate `dim` replaced by
  // the value `index` (Int32 or Int64), which must lie in [0, sizes[dim]):
  // another value is an error at run time, never a read elsewhere. The def
  // is read from memory: it must be listed in TensorDef::gathered of the
  // reading def, so that the scheduler realizes it.
  virtual ir::ValueId read_indirect(int def, const Coords& coords, int dim, ir::ValueId index) = 0;
  // The same with several coordinates given by values: (dim, index) pairs.
  virtual ir::ValueId read_indirect(int def, const Coords& coords,
                                    const std::vector<std::pair<int, ir::ValueId>>& indices) = 0;
};

using Body = std::function<ir::ValueId(BodyContext&, const Coords&)>;

// What a scatter writes at one point of its update space: `value` (in the
// def's compute dtype) into the element at `at`, except that the
// coordinates of the dims listed in `indexed` are values (Int32 or Int64)
// that must lie in [0, sizes[dim]): another value is an error at run time,
// never a write elsewhere.
struct ScatterPoint {
  Coords at;
  std::vector<std::pair<int, ir::ValueId>> indexed;
  ir::ValueId value = -1;
};
using ScatterBody = std::function<ScatterPoint(BodyContext&, const Coords&)>;

struct TensorDef {
  enum class Kind : std::uint8_t {
    Buffer,     // a tensor that exists in memory: graph input or fallback output
    Pointwise,  // element at coords = body(coords)
    Reduction,  // element = reduce over the reduced dims of body(input coords)
    // deps[0] (its base: a pointwise def that only this one reads), then,
    // at every point of update_sizes, scatter(point) written into it (added
    // if `accumulate`). The scheduler realizes the base in this def's memory
    // and runs the updates as a kernel of their own after it: nothing fuses
    // into that kernel, and readers load the result once it is complete.
    Scatter,
  };
  Kind kind = Kind::Pointwise;
  ir::DType dtype = ir::DType::Float32;  // storage dtype of the tensor
  std::vector<std::int64_t> sizes;       // Reduction: keepdim sizes (1 at reduced dims)
  std::vector<std::int64_t> strides;     // Buffer only
  // Pointwise and Reduction: the dims from outermost to innermost in memory
  // where it is realized, the order in which its kernel also counts its
  // points (empty: row-major). {0, 2, 3, 1} stores an NCHW tensor
  // channels-last (codegen/channels_last.h).
  std::vector<int> order;
  std::vector<int> deps;                 // defs the body reads
  std::vector<int> gathered;             // those of deps it reads with read_indirect (realized)
  Body body;                             // Pointwise, Reduction
  // Pointwise only: readers must see the value rounded to its 16-bit float
  // storage dtype, as eager does (an explicit cast, or an intermediate that
  // eager rounds). Fused chains otherwise stay in float32; a reader in the
  // same kernel rounds it in registers (PrimOp::RoundBf16 / RoundF16).
  bool rounded = false;
  // Pointwise float32 defs only: a 16-bit float dtype that holds each of its
  // values as eager computes them (an upcast of a bf16 tensor, moved by
  // views or joined by cat: autocast runs upsampling in float32 on bf16
  // activations). Where only kernels read it, the scheduler stores it in
  // that dtype: half the bytes, the same values.
  std::optional<ir::DType> held_by;

  // Reduction only. The body yields values in compute_dtype(dtype); the
  // reduction runs in that type.
  ir::ReduceOp reduce_op = ir::ReduceOp::Sum;
  std::vector<std::int64_t> input_sizes;
  std::vector<bool> reduced;  // per input dim

  // Scatter only.
  std::vector<std::int64_t> update_sizes;
  ScatterBody scatter;
  bool accumulate = false;

  // Provenance.
  int value = -1;          // Buffer: the graph value it holds
  int graph_input = -1;    // Buffer: position in Graph::inputs
  int fallback_node = -1;  // Buffer: the node whose fallback call produces it
  int node = -1;           // the graph node this def was lowered from
  std::string label;       // readable, e.g. "sum(%3)"

  std::int64_t numel() const {
    std::int64_t n = 1;
    for (auto s : sizes) n *= s;
    return n;
  }
};

struct LoweredGraph {
  std::vector<TensorDef> defs;   // in dependency order
  std::vector<int> value_def;    // graph value id -> def id (-1: never produced)
  std::vector<int> fallback_nodes;  // graph nodes run through the ATen dispatcher
  std::vector<int> view_nodes;      // those of them that are views read only by library calls
  std::vector<int> aten_nodes;      // those of them that have a lowering but run through ATen by choice
  std::vector<std::string> notes;   // one per fallback: op and reason
};

// Lowers every node; a node without a lowering (or whose lowering rejects its
// arguments) becomes a fallback node whose outputs are Buffer defs.
LoweredGraph lower_graph(const ir::Graph& graph);
// The same, except that every node a lowering would turn into kernels runs
// through ATen instead (listed in aten_nodes): a CPU plan, where the loop
// IR's only backend is the interpreter (codegen/program.h, CompileOptions).
LoweredGraph lower_graph_to_aten(const ir::Graph& graph);
// The same for the nodes whose lowering scatters (index_put), reduces other
// than over the trailing dims into at least `min_rows` rows (sums over dim 0,
// a whole tensor's sum), and for batch norm: they run through ATen, whose CPU
// kernels for them are faster than generated ones, while row reductions
// (softmax, layer_norm, sums over the last dim), other pointwise work and
// views fuse into kernels (a CPU plan whose kernels are compiled to C++:
// DEEPVISOR_CPU=fused).
LoweredGraph lower_graph_rows_to_aten(const ir::Graph& graph, std::int64_t min_rows = 2);

// True if `op` ("aten::name.overload") has a lowering.
bool has_lowering(const std::string& op);
// True if `op` is an ATen view op that a step may run on a tensor in memory
// (the result aliases its input, nothing is copied).
bool is_view_op(const std::string& op);

}  // namespace dv::codegen
