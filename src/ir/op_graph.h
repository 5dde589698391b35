// The op graph: what one monitored run of a program did, as SSA values.
//
// Every tensor is a Value with its dtype, sizes, strides and device as seen in
// the capture run. Nodes are ATen operator calls ("aten::add.Tensor") with
// their arguments normalized to the schema's positional order (defaults
// filled in). The graph's inputs are tensors that existed before the run (the
// function's arguments, parameters, other reachable tensors), passed in order.
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
  enum class Kind : std::uint8_t { None, Tensor, Int, Double, Bool, IntList, String, ScalarType, Device, Layout, MemoryFormat, TensorList };
  Kind kind = Kind::None;
  std::int64_t i = 0;                 // Int, Bool (0/1), Layout, MemoryFormat
  double d = 0;                       // Double
  std::string s;                      // String, Device
  DType dtype = DType::Float32;       // ScalarType
  std::vector<std::int64_t> ints;     // IntList; TensorList (value ids)
  int tensor = -1;                    // Tensor: value id

  static Arg none() { return {}; }
  static Arg of_tensor(int value);
  static Arg of_int(std::int64_t v);
  static Arg of_double(double v);
  static Arg of_bool(bool v);
  static Arg of_ints(std::vector<std::int64_t> v);
  static Arg of_string(std::string v);
  static Arg of_dtype(DType t);
  bool is_none() const { return kind == Kind::None; }
  bool is_number() const { return kind == Kind::Int || kind == Kind::Double || kind == Kind::Bool; }
  double number() const;  // Int, Double or Bool as double
  bool operator==(const Arg& o) const = default;
};

struct Node {
  std::string op;              // "aten::add.Tensor": name and overload
  std::vector<Arg> args;       // positional, per the schema
  std::vector<int> outputs;    // value ids
  bool operator==(const Node& o) const = default;
};

// A graph input that the program wrote in place: after the run its contents
// must equal `value`.
struct Mutation {
  int input = -1;  // value id of the graph input
  int value = -1;  // value id of its final contents
  bool operator==(const Mutation& o) const = default;
};

struct Graph {
  std::vector<TensorMeta> values;  // indexed by value id
  std::vector<int> inputs;         // value ids, in calling order
  std::vector<Node> nodes;         // in execution order
  std::vector<int> outputs;        // value ids (may repeat, may be inputs)
  std::vector<Mutation> mutations;

  int add_value(TensorMeta meta);
  const TensorMeta& meta(int value) const { return values.at(value); }
  bool operator==(const Graph& o) const = default;
};

std::string to_text(const Graph& g);
// Throws std::runtime_error with the line number on malformed input.
Graph parse_graph(const std::string& text);

std::string to_string(const Arg& a);

}  // namespace dv::ir
