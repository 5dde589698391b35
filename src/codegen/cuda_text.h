// Text shared by every kernel form of the CUDA emitter (cuda_emitter.cpp,
// cuda_pointwise.cpp, cuda_rows.cpp). Internal to codegen; pure C++.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <sstream>
#include <string>

#include "codegen/cuda_emitter.h"
#include "ir/index_expr.h"
#include "ir/loop_ir.h"

namespace dv::codegen::cuda {

using ir::DType;
using ir::IndexExpr;
using ir::Instr;
using ir::Kernel;
using ir::PrimOp;
using ir::ReduceOp;
using ir::ValueId;

// ---- small utilities

template <typename... A>
std::string cat(const A&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  return os.str();
}

std::int64_t gcd64(std::int64_t a, std::int64_t b);
std::int64_t ceil_div(std::int64_t a, std::int64_t b);
std::int64_t next_pow2(std::int64_t v);
[[noreturn]] void fail(const std::string& what);
std::string c_identifier(const std::string& s);

// Indented source text.
class Writer {
 public:
  void line(const std::string& s) {
    if (s.empty()) {
      out_ << '\n';
      return;
    }
    out_ << std::string(static_cast<std::size_t>(indent_) * 2, ' ') << s << '\n';
  }
  void open(const std::string& s) {  // "s {" (or a bare "{") and indent
    line(s.empty() ? "{" : s + " {");
    ++indent_;
  }
  void otherwise() {  // "} else {"
    --indent_;
    line("} else {");
    ++indent_;
  }
  void close(const std::string& tail = "") {
    --indent_;
    line("}" + tail);
  }
  // A fully unrolled counted loop: "#pragma unroll" + "for (int var = from; var < to; ++var) {".
  void open_unrolled(const std::string& var, std::int64_t from, std::int64_t to) {
    line("#pragma unroll");
    open(cat("for (int ", var, " = ", from, "; ", var, " < ", to, "; ++", var, ")"));
  }
  std::string str() const { return out_.str(); }

 private:
  std::ostringstream out_;
  int indent_ = 0;
};

// ---- types and literals

bool is_float(DType t);
bool is_half(DType t);
int compute_size(DType t);
std::string ctype(DType t);
std::string stype(DType t);
std::string float_literal(double v, DType t);
std::string int_literal(std::int64_t v, DType t);
std::string zero_of(DType t);

// ---- reductions

std::string reduce_identity(ReduceOp op, DType t);
std::string reduce_combine(ReduceOp op, DType t, const std::string& a, const std::string& b);

// ---- lane analysis of index expressions (cuda_text.cpp explains the forms)

struct LaneForm {
  std::int64_t stride = 0;
  std::int64_t div = 0;
};

struct LaneContext {
  std::string lane;  // the lane variable
  std::int64_t width = 1;
};

std::int64_t mul_div(std::int64_t a, std::int64_t b);
std::optional<LaneForm> lane_form(const IndexExpr& e, const LaneContext& ctx);
LaneAccess classify(const IndexExpr& e, const LaneContext& ctx);

// ---- index expressions as C

using VarMap = std::function<std::string(const std::string& name)>;
// How an index's integer constants are written: literals, or (size
// arguments) references to the kernel's size table.
using ConstMap = std::function<std::string(std::int64_t value)>;
std::string idx_literal(std::int64_t v);
std::string product_c(const IndexExpr& e, std::int64_t sign, const VarMap& vars, const ConstMap& consts);
std::string index_c(const IndexExpr& e, const VarMap& vars, const ConstMap& consts);
void for_each_subexpr(const IndexExpr& e, const std::function<void(const IndexExpr&)>& f);

// The helper functions every generated source starts with.
extern const char* const kPrelude;

// ---- size arguments (DeviceSpec::size_arguments)

// Where the size table's type and the entry's name go once the text is complete.
extern const char* const kSizeTablePlaceholder;
extern const char* const kEntryPlaceholder;
std::string replace_all(std::string text, const std::string& from, const std::string& to);
std::string strip_line_comments(const std::string& text);

}  // namespace dv::codegen::cuda
