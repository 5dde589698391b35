#include "ir/op_graph.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <stdexcept>

namespace dv::ir {

std::int64_t TensorMeta::numel() const {
  std::int64_t n = 1;
  for (auto s : sizes) n *= s;
  return n;
}

bool TensorMeta::is_contiguous() const {
  std::int64_t expected = 1;
  for (std::size_t i = sizes.size(); i-- > 0;) {
    if (sizes[i] != 1 && strides[i] != expected) return false;
    expected *= sizes[i];
  }
  return true;
}

std::int64_t TensorMeta::storage_extent() const {
  if (numel() == 0) return 0;
  std::int64_t last = 0;
  for (std::size_t i = 0; i < sizes.size(); ++i) last += (sizes[i] - 1) * strides[i];
  return last + 1;
}

Arg Arg::of_tensor(int value) { Arg a; a.kind = Kind::Tensor; a.tensor = value; return a; }
Arg Arg::of_int(std::int64_t v) { Arg a; a.kind = Kind::Int; a.i = v; return a; }
Arg Arg::of_double(double v) { Arg a; a.kind = Kind::Double; a.d = v; return a; }
Arg Arg::of_bool(bool v) { Arg a; a.kind = Kind::Bool; a.i = v; return a; }
Arg Arg::of_ints(std::vector<std::int64_t> v) { Arg a; a.kind = Kind::IntList; a.ints = std::move(v); return a; }
Arg Arg::of_string(std::string v) { Arg a; a.kind = Kind::String; a.s = std::move(v); return a; }
Arg Arg::of_dtype(DType t) { Arg a; a.kind = Kind::ScalarType; a.dtype = t; return a; }
Arg Arg::of_tensors(std::vector<std::int64_t> values) { Arg a; a.kind = Kind::TensorList; a.ints = std::move(values); return a; }

double Arg::number() const {
  switch (kind) {
    case Kind::Int:
    case Kind::Bool: return static_cast<double>(i);
    case Kind::Double: return d;
    default: throw std::runtime_error("argument is not a number: " + to_string(*this));
  }
}

int Graph::add_value(TensorMeta meta) {
  values.push_back(std::move(meta));
  return static_cast<int>(values.size()) - 1;
}

std::string graph_device(const Graph& g) {
  for (const auto& m : g.values)
    if (m.device != "cpu") return m.device;
  return "cpu";
}

ValueUses value_uses(const Graph& g) {
  ValueUses u{std::vector<std::vector<int>>(g.values.size()), std::vector<bool>(g.values.size(), false)};
  for (std::size_t i = 0; i < g.nodes.size(); ++i)
    for (const Arg& a : g.nodes[i].args) {
      if (a.kind == Arg::Kind::Tensor) u.readers[a.tensor].push_back(static_cast<int>(i));
      if (a.kind == Arg::Kind::TensorList)
        for (auto v : a.ints)
          if (v >= 0) u.readers[v].push_back(static_cast<int>(i));
    }
  for (int v : g.outputs) u.escapes[v] = true;
  for (const auto& m : g.mutations) u.escapes[m.value] = true;
  return u;
}

namespace {

std::string join_ints(const std::vector<std::int64_t>& v) {
  std::string s;
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s;
}

std::string hex_double(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%a", v);
  return buf;
}

std::string quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

std::string value_ref(int v) { return "%" + std::to_string(v); }
std::string value_or_none(int v) { return v < 0 ? "none" : value_ref(v); }

std::string join_doubles(const std::vector<double>& v) {
  std::string s;
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + hex_double(v[i]);
  return s;
}

// Splits a line into tokens at spaces, keeping quoted strings whole.
std::vector<std::string> tokenize(const std::string& line) {
  std::vector<std::string> tokens;
  std::string cur;
  bool in_quotes = false;
  for (std::size_t i = 0; i < line.size(); ++i) {
    char c = line[i];
    if (in_quotes) {
      if (c == '\\' && i + 1 < line.size()) { cur += line[++i]; continue; }
      if (c == '"') in_quotes = false;
      else cur += c;
      continue;
    }
    if (c == '"') { in_quotes = true; cur += '\x01'; continue; }  // marks "was quoted"
    if (c == ' ') {
      if (!cur.empty()) tokens.push_back(cur);
      cur.clear();
      continue;
    }
    cur += c;
  }
  if (in_quotes) throw std::runtime_error("unterminated string");
  if (!cur.empty()) tokens.push_back(cur);
  return tokens;
}

std::vector<std::int64_t> parse_ints(const std::string& s) {
  std::vector<std::int64_t> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (!item.empty()) out.push_back(std::stoll(item));
  }
  return out;
}

int parse_value_ref(const std::string& tok) {
  if (tok.size() < 2 || tok[0] != '%') throw std::runtime_error("expected a value reference, got '" + tok + "'");
  return std::stoi(tok.substr(1));
}

int parse_value_or_none(const std::string& tok) { return tok == "none" ? -1 : parse_value_ref(tok); }

std::vector<double> parse_doubles(const std::string& s) {
  std::vector<double> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (!item.empty()) out.push_back(std::strtod(item.c_str(), nullptr));
  }
  return out;
}

// "[...]" -> "...".
std::string list_body(const std::string& body) {
  if (body.size() < 2 || body.front() != '[' || body.back() != ']') throw std::runtime_error("malformed list '" + body + "'");
  return body.substr(1, body.size() - 2);
}

std::string after_prefix(const std::string& tok, const std::string& prefix) {
  if (tok.rfind(prefix, 0) != 0) throw std::runtime_error("expected '" + prefix + "...', got '" + tok + "'");
  return tok.substr(prefix.size());
}

DType parse_dtype_or_throw(const std::string& name) {
  auto t = parse_dtype(name);
  if (!t) throw std::runtime_error("unknown dtype '" + name + "'");
  return *t;
}

Arg parse_arg(const std::string& tok) {
  if (tok == "none") return Arg::none();
  if (tok[0] == '%') return Arg::of_tensor(parse_value_ref(tok));
  auto colon = tok.find(':');
  if (colon == std::string::npos) throw std::runtime_error("malformed argument '" + tok + "'");
  std::string tag = tok.substr(0, colon), body = tok.substr(colon + 1);
  Arg a;
  if (tag == "i") return Arg::of_int(std::stoll(body));
  if (tag == "f") return Arg::of_double(std::strtod(body.c_str(), nullptr));
  if (tag == "b") return Arg::of_bool(body == "1");
  if (tag == "il") return Arg::of_ints(parse_ints(list_body(body)));
  if (tag == "fl") { a.kind = Arg::Kind::DoubleList; a.doubles = parse_doubles(list_body(body)); return a; }
  if (tag == "bl") { a.kind = Arg::Kind::BoolList; a.ints = parse_ints(list_body(body)); return a; }
  if (tag == "c") {
    auto comma = body.find(',');
    if (comma == std::string::npos) throw std::runtime_error("malformed complex '" + tok + "'");
    a.kind = Arg::Kind::Complex;
    a.d = std::strtod(body.substr(0, comma).c_str(), nullptr);
    a.imag = std::strtod(body.substr(comma + 1).c_str(), nullptr);
    return a;
  }
  if (tag == "s") return Arg::of_string(body.substr(1));  // drop the quote marker
  if (tag == "dt") return Arg::of_dtype(parse_dtype_or_throw(body));
  if (tag == "dev") { a.kind = Arg::Kind::Device; a.s = body.substr(1); return a; }
  if (tag == "layout") { a.kind = Arg::Kind::Layout; a.i = std::stoll(body); return a; }
  if (tag == "mf") { a.kind = Arg::Kind::MemoryFormat; a.i = std::stoll(body); return a; }
  if (tag == "tl") {
    a.kind = Arg::Kind::TensorList;
    std::stringstream ss(list_body(body));
    std::string item;
    while (std::getline(ss, item, ',')) {
      if (!item.empty()) a.ints.push_back(parse_value_or_none(item));
    }
    return a;
  }
  throw std::runtime_error("unknown argument tag '" + tag + "'");
}

}  // namespace

std::string to_string(const Arg& a) {
  switch (a.kind) {
    case Arg::Kind::None: return "none";
    case Arg::Kind::Tensor: return value_ref(a.tensor);
    case Arg::Kind::Int: return "i:" + std::to_string(a.i);
    case Arg::Kind::Double: return "f:" + hex_double(a.d);
    case Arg::Kind::Bool: return std::string("b:") + (a.i ? "1" : "0");
    case Arg::Kind::IntList: return "il:[" + join_ints(a.ints) + "]";
    case Arg::Kind::String: return "s:" + quote(a.s);
    case Arg::Kind::ScalarType: return "dt:" + std::string(dtype_name(a.dtype));
    case Arg::Kind::Device: return "dev:" + quote(a.s);
    case Arg::Kind::Layout: return "layout:" + std::to_string(a.i);
    case Arg::Kind::MemoryFormat: return "mf:" + std::to_string(a.i);
    case Arg::Kind::TensorList: {
      std::string s = "tl:[";
      for (std::size_t i = 0; i < a.ints.size(); ++i) s += (i ? "," : "") + value_or_none(static_cast<int>(a.ints[i]));
      return s + "]";
    }
    case Arg::Kind::DoubleList: return "fl:[" + join_doubles(a.doubles) + "]";
    case Arg::Kind::BoolList: return "bl:[" + join_ints(a.ints) + "]";
    case Arg::Kind::Complex: return "c:" + hex_double(a.d) + "," + hex_double(a.imag);
  }
  return "?";
}

std::string to_text(const Graph& g) {
  std::ostringstream os;
  os << "deepvisor-graph 1\n";
  for (std::size_t v = 0; v < g.values.size(); ++v) {
    const auto& m = g.values[v];
    os << "value " << value_ref(static_cast<int>(v)) << " " << dtype_name(m.dtype) << " sizes=" << join_ints(m.sizes)
       << " strides=" << join_ints(m.strides) << " device=" << m.device << " aligned=" << (m.aligned16 ? 1 : 0)
       << "\n";
  }
  for (int v : g.inputs) os << "input " << value_ref(v) << "\n";
  for (const auto& n : g.nodes) {
    os << "node " << n.op;
    for (const auto& a : n.args) os << " " << to_string(a);
    os << " ->";
    for (int o : n.outputs) os << " " << value_or_none(o);
    os << "\n";
  }
  os << "output";
  for (int v : g.outputs) os << " " << value_ref(v);
  os << "\n";
  for (const auto& m : g.mutations) os << "mutation " << value_ref(m.input) << " " << value_ref(m.value) << "\n";
  for (const auto& r : g.restrides)
    os << "restride " << value_ref(r.input) << " sizes=" << join_ints(r.sizes) << " strides=" << join_ints(r.strides)
       << " offset=" << r.offset << "\n";
  for (const auto& v : g.output_views)
    os << "output_view " << v.output << " sizes=" << join_ints(v.sizes) << " strides=" << join_ints(v.strides)
       << " offset=" << v.offset << "\n";
  for (int v : g.sized_by_data) os << "sized_by_data " << value_ref(v) << "\n";
  return os.str();
}

namespace {

TensorMeta parse_value_line(const std::vector<std::string>& t) {
  if (t.size() != 7) throw std::runtime_error("value line needs 7 fields");
  TensorMeta m;
  m.dtype = parse_dtype_or_throw(t[2]);
  m.sizes = parse_ints(after_prefix(t[3], "sizes="));
  m.strides = parse_ints(after_prefix(t[4], "strides="));
  m.device = after_prefix(t[5], "device=");
  m.aligned16 = after_prefix(t[6], "aligned=") == "1";
  if (m.sizes.size() != m.strides.size()) throw std::runtime_error("sizes and strides differ in rank");
  return m;
}

Node parse_node_line(const std::vector<std::string>& t, std::size_t num_values) {
  if (t.size() < 3) throw std::runtime_error("node line too short");
  Node n;
  n.op = t[1];
  std::size_t i = 2;
  for (; i < t.size() && t[i] != "->"; ++i) n.args.push_back(parse_arg(t[i]));
  if (i == t.size()) throw std::runtime_error("node line lacks '->'");
  for (++i; i < t.size(); ++i) n.outputs.push_back(parse_value_or_none(t[i]));
  auto check = [&](std::int64_t v) {
    if (v < 0 || static_cast<std::size_t>(v) >= num_values) throw std::runtime_error("value %" + std::to_string(v) + " is not declared");
  };
  for (const auto& a : n.args) {
    if (a.kind == Arg::Kind::Tensor) check(a.tensor);
    if (a.kind == Arg::Kind::TensorList)
      for (auto v : a.ints)
        if (v != -1) check(v);
  }
  for (int o : n.outputs)
    if (o != -1) check(o);
  return n;
}

// "sizes=.. strides=.. offset=N" from tokens t[first..first+2].
void parse_layout(const std::vector<std::string>& t, std::size_t first, std::vector<std::int64_t>& sizes,
                  std::vector<std::int64_t>& strides, std::int64_t& offset) {
  if (t.size() != first + 3) throw std::runtime_error("expected sizes=, strides= and offset=");
  sizes = parse_ints(after_prefix(t[first], "sizes="));
  strides = parse_ints(after_prefix(t[first + 1], "strides="));
  offset = std::stoll(after_prefix(t[first + 2], "offset="));
  if (sizes.size() != strides.size()) throw std::runtime_error("sizes and strides differ in rank");
}

}  // namespace

Graph parse_graph(const std::string& text) {
  Graph g;
  std::istringstream is(text);
  std::string line;
  int line_no = 0;
  bool saw_header = false;
  while (std::getline(is, line)) {
    ++line_no;
    if (line.empty() || line[0] == '#') continue;
    try {
      auto t = tokenize(line);
      const std::string& kw = t[0];
      if (kw == "deepvisor-graph") {
        if (t.size() != 2 || t[1] != "1") throw std::runtime_error("unsupported graph format version");
        saw_header = true;
      } else if (!saw_header) {
        throw std::runtime_error("missing 'deepvisor-graph 1' header");
      } else if (kw == "value") {
        if (parse_value_ref(t.at(1)) != static_cast<int>(g.values.size())) throw std::runtime_error("values must be numbered in order");
        g.values.push_back(parse_value_line(t));
      } else if (kw == "input") {
        g.inputs.push_back(parse_value_ref(t.at(1)));
      } else if (kw == "node") {
        g.nodes.push_back(parse_node_line(t, g.values.size()));
      } else if (kw == "output") {
        for (std::size_t i = 1; i < t.size(); ++i) g.outputs.push_back(parse_value_ref(t[i]));
      } else if (kw == "mutation") {
        g.mutations.push_back({parse_value_ref(t.at(1)), parse_value_ref(t.at(2))});
      } else if (kw == "restride") {
        Restride r;
        r.input = parse_value_ref(t.at(1));
        parse_layout(t, 2, r.sizes, r.strides, r.offset);
        g.restrides.push_back(std::move(r));
      } else if (kw == "output_view") {
        OutputView v;
        v.output = std::stoi(t.at(1));
        parse_layout(t, 2, v.sizes, v.strides, v.offset);
        if (v.output < 0 || v.output >= static_cast<int>(g.outputs.size()))
          throw std::runtime_error("output_view of output " + std::to_string(v.output) + ", which does not exist");
        g.output_views.push_back(std::move(v));
      } else if (kw == "sized_by_data") {
        const int v = parse_value_ref(t.at(1));
        if (std::find(g.outputs.begin(), g.outputs.end(), v) == g.outputs.end())
          throw std::runtime_error("sized_by_data of a value that is not an output");
        g.sized_by_data.push_back(v);
      } else {
        throw std::runtime_error("unknown line kind '" + kw + "'");
      }
    } catch (const std::exception& e) {
      throw std::runtime_error("graph text, line " + std::to_string(line_no) + ": " + e.what());
    }
  }
  if (!saw_header) throw std::runtime_error("graph text: empty or missing header");
  return g;
}

}  // namespace dv::ir
