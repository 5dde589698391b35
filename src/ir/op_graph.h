// The op graph: what one monitored run of a program did, as SSA values.
//
// Every tensor is a Value with its dtype, sizes, strides and device as seen in
// the capture run. Nodes are ATen operator calls ("aten::add.Tensor") with
// their arguments normalized to the schema's positional order (defaults
// filled in). The graph's inputs are tensors that existed before the run (the
// function's arguments, parameters, other reachable tensors), passed in order.
//
// A node's outputs are, in order, the tensors its schema returns (a Tensor[]
// return flattened, element by element) that are not aliases of a written
// argument, then, for an op that writes arguments in place (add_, out=
// variants, index_put_...), the new contents of each written argument. The
// runtime runs such an op on copies of the written arguments, so every node
// is functional. An undefined tensor (None) in a Tensor or Tensor?[] position
// is the output -1 ("none" in the text), so positions line up with the schema.
//
// The text format (to_text / parse_graph) is what dump files hold and what the
// dump tool reads; it round-trips exactly.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ir/dtype.h"

namespace dv::ir {

struct TensorMeta {
  DType dtype = DType::Float32;
  std::vector<std::int64_t> sizes;
  std::vector<std::int64_t> strides;
  std::string device = "cpu";  // "cpu" or "cuda:N"
  bool aligned16 = true;       // data pointer 16-byte aligned (inputs only; guarded)

  std::int64_t numel() const;
  bool is_contiguous() const;
  // One past the largest element offset reachable through sizes/strides
  // (0 for an empty tensor).
  std::int64_t storage_extent() const;
  bool operator==(const TensorMeta& o) const = default;
};

struct Arg {
  enum class Kind : std::uint8_t {
    None, Tensor, Int, Double, Bool, IntList, String, ScalarType, Device, Layout, MemoryFormat, TensorList,
    DoubleList, BoolList, Complex,
  };
  Kind kind = Kind::None;
  std::int64_t i = 0;                 // Int, Bool (0/1), Layout, MemoryFormat
  double d = 0;                       // Double; Complex: the real part
  double imag = 0;                    // Complex: the imaginary part
  std::string s;                      // String, Device
  DType dtype = DType::Float32;       // ScalarType
  std::vector<std::int64_t> ints;     // IntList, BoolList (0/1); TensorList (value ids, -1 for None)
  std::vector<double> doubles;        // DoubleList
  int tensor = -1;                    // Tensor: value id

  static Arg none() { return {}; }
  static Arg of_tensor(int value);
  static Arg of_int(std::int64_t v);
  static Arg of_double(double v);
  static Arg of_bool(bool v);
  static Arg of_ints(std::vector<std::int64_t> v);
  static Arg of_string(std::string v);
  static Arg of_dtype(DType t);
  static Arg of_tensors(std::vector<std::int64_t> values);  // -1 for None
  bool is_none() const { return kind == Kind::None; }
  bool is_number() const { return kind == Kind::Int || kind == Kind::Double || kind == Kind::Bool; }
  double number() const;  // Int, Double or Bool as double
  bool operator==(const Arg& o) const = default;
};

struct Node {
  std::string op;              // "aten::add.Tensor": name and overload
  std::vector<Arg> args;       // positional, per the schema
  std::vector<int> outputs;    // value ids; -1 for an undefined (None) output
  bool operator==(const Node& o) const = default;
};

// A graph input that the program wrote in place: after the run its contents
// must equal `value`.
struct Mutation {
  int input = -1;  // value id of the graph input
  int value = -1;  // value id of its final contents
  bool operator==(const Mutation& o) const = default;
};

// A graph input whose sizes and strides the program changed in place (t_,
// transpose_, squeeze_...): after the run (and its mutations) the input tensor
// is restrided to these, its storage offset moved by `offset`.
struct Restride {
  int input = -1;  // value id of the graph input
  std::vector<std::int64_t> sizes;
  std::vector<std::int64_t> strides;
  std::int64_t offset = 0;
  bool operator==(const Restride& o) const = default;
};

// Graph output `output` is a view, as in eager: the tensor of the value listed
// at that position (its base) viewed with these sizes and strides, the storage
// offset moved by `offset`. The runtime gives the base the layout the capture
// saw before viewing it, so views of one base alias each other (and the base,
// where it is an output too) as they did in eager.
struct OutputView {
  int output = -1;  // position in Graph::outputs
  std::vector<std::int64_t> sizes;
  std::vector<std::int64_t> strides;
  std::int64_t offset = 0;
  bool operator==(const OutputView& o) const = default;
};

struct Graph {
  std::vector<TensorMeta> values;  // indexed by value id
  std::vector<int> inputs;         // value ids, in calling order
  std::vector<Node> nodes;         // in execution order
  std::vector<int> outputs;        // value ids (may repeat, may be inputs)
  std::vector<Mutation> mutations;
  std::vector<Restride> restrides;
  std::vector<OutputView> output_views;
  // Outputs whose sizes depend on the data (nonzero, boolean-mask indexing,
  // unique): the graph was cut after the op that makes them, and the host
  // reads their sizes to choose what runs next, so a replay hands them on at
  // whatever size the op gives (every other value keeps the capture's).
  std::vector<int> sized_by_data;

  int add_value(TensorMeta meta);
  const TensorMeta& meta(int value) const { return values.at(value); }
  bool operator==(const Graph& o) const = default;
};

// How each value of a graph is used: the nodes that read it (Tensor and
// Tensor[] arguments, in node order) and whether it leaves the graph (an
// output, or the final contents of a mutated input).
struct ValueUses {
  std::vector<std::vector<int>> readers;
  std::vector<bool> escapes;
  bool used(int v) const { return escapes[v] || !readers[v].empty(); }
};
ValueUses value_uses(const Graph& g);

// Where a graph's kernels run: the first non-CPU value's device ("cuda:0"),
// else "cpu" (as the executor picks its device).
std::string graph_device(const Graph& g);

std::string to_text(const Graph& g);
// Throws std::runtime_error with the line number on malformed input.
Graph parse_graph(const std::string& text);

std::string to_string(const Arg& a);

}  // namespace dv::ir
