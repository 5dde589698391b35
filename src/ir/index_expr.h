// Symbolic integer index expressions with a simplifier.
//
// An IndexExpr is an immutable value (a shared pointer to a node). Every
// constructor returns the *canonical* form of what it builds, so two
// expressions that the rules below can prove equal compare equal with ==.
// That exact comparison is what fusion legality rests on.
//
// Domain: every variable ranges over [0, extent) and every divisor and modulus
// is a positive constant, so all sub-expressions built from variables, positive
// constants, +, *, floordiv and mod are non-negative. Subtraction is allowed
// (coefficients may be negative) but the rules that need non-negativity check
// it through bounds().
//
// Canonical form (a sketch; index_expr.cpp documents it fully):
//   - Add is n-ary: a list of terms c_i * atom_i plus one constant, atoms sorted
//     by a total structural order, equal atoms merged, zero terms dropped.
//   - Mul of a constant and an expression distributes over Add; a product of
//     two non-constant expressions is an atom (rare: not simplified further).
//   - floordiv(e, c) / mod(e, c) with constant c > 0 apply, among others:
//       floordiv(e, 1) = e;  mod(e, 1) = 0;  constant folding;
//       0 <= e < c           =>  floordiv(e, c) = 0,  mod(e, c) = e;
//       floordiv(c*k*a + b, c) = k*a + floordiv(b, c);  mod(c*k*a + b, c) = mod(b, c)
//       floordiv(floordiv(e, a), b) = floordiv(e, a*b);
//       mod(mod(e, a), b) = mod(e, b)  when a % b == 0;
//     and in sums:  c*floordiv(e, c) + mod(e, c) = e,
//                   c*mod(floordiv(e, c), b) + mod(e, c) = mod(e, b*c)
//     (both also with a common factor q on the two terms).
//   - absolute(e) is e where bounds() show e >= 0, -e where e <= 0, else an
//     atom Abs(e) with e's leading coefficient positive (|-e| = |e|). It lets
//     an index mirror at an edge (reflection padding: n-1 - |n-1 - |k||)
//     without a select over computed values.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace dv::ir {

class IndexExpr {
 public:
  enum class Kind : std::uint8_t { Const, Var, Add, Mul, FloorDiv, Mod, Abs };

  IndexExpr(std::int64_t constant = 0);  // NOLINT: implicit from integers on purpose
  // A variable ranging over [0, extent). Two vars are the same iff name and extent match.
  // With extent <= 1 the only possible value is 0, so this returns the constant 0.
  static IndexExpr var(const std::string& name, std::int64_t extent);

  Kind kind() const;
  bool is_const() const { return kind() == Kind::Const; }
  bool is_var() const { return kind() == Kind::Var; }
  std::int64_t value() const;          // Const only
  const std::string& name() const;     // Var only
  std::int64_t extent() const;         // Var only
  // Add: the terms (each either an atom or constant*atom as a Mul); the
  //      constant term, if non-zero, is the last operand.
  // Mul: the factors, a constant factor (if any) first.
  // FloorDiv, Mod: {numerator, divisor}; the divisor is a positive Const.
  // Abs: {operand}, which takes both signs.
  const std::vector<IndexExpr>& operands() const;

  friend IndexExpr operator+(const IndexExpr& a, const IndexExpr& b);
  friend IndexExpr operator-(const IndexExpr& a, const IndexExpr& b);
  friend IndexExpr operator*(const IndexExpr& a, const IndexExpr& b);
  friend IndexExpr floordiv(const IndexExpr& a, const IndexExpr& b);  // b: positive constant
  friend IndexExpr mod(const IndexExpr& a, const IndexExpr& b);       // b: positive constant
  friend IndexExpr absolute(const IndexExpr& a);

  // Structural equality of canonical forms.
  bool operator==(const IndexExpr& other) const;
  bool operator!=(const IndexExpr& other) const { return !(*this == other); }
  // A strict total order on structures, consistent with ==.
  bool operator<(const IndexExpr& other) const;
  std::size_t hash() const;

  // Inclusive bounds [lo, hi] implied by the variables' extents.
  std::int64_t min_value() const;
  std::int64_t max_value() const;

  // Evaluates with the given value for each variable (looked up by name).
  std::int64_t eval(const std::function<std::int64_t(const std::string&)>& var_value) const;
  // Replaces variables (by name) with expressions, re-canonicalizing.
  IndexExpr substitute(const std::function<IndexExpr(const IndexExpr& var)>& replace) const;
  // True if the variable `name` occurs in the expression.
  bool uses_var(const std::string& name) const;

  // Readable form, e.g. "x*8192 + r", "(x // 8) % 3".
  std::string str() const;

  struct Node;  // defined in index_expr.cpp

 private:
  explicit IndexExpr(std::shared_ptr<const Node> node);
  std::shared_ptr<const Node> node_;
};

// Namespace-scope declarations of the friends above, so that qualified calls
// (dv::ir::floordiv(a, 8)) and calls with no IndexExpr argument
// (floordiv(7, 2)) find them; in-class friends are only found by ADL.
IndexExpr floordiv(const IndexExpr& a, const IndexExpr& b);
IndexExpr mod(const IndexExpr& a, const IndexExpr& b);
IndexExpr absolute(const IndexExpr& a);

struct IndexExprHash {
  std::size_t operator()(const IndexExpr& e) const { return e.hash(); }
};

// Flat row-major offset of `coords` in a tensor with the given strides:
// sum(coords[i] * strides[i]).
IndexExpr linear_index(const std::vector<IndexExpr>& coords, const std::vector<std::int64_t>& strides);

// The row-major coordinates of a flat index over `sizes`:
// coord[i] = (flat // prod(sizes[i+1:])) % sizes[i], simplified.
std::vector<IndexExpr> unflatten_index(const IndexExpr& flat, const std::vector<std::int64_t>& sizes);

// Row-major (contiguous) strides of `sizes`.
std::vector<std::int64_t> contiguous_strides(const std::vector<std::int64_t>& sizes);
// Dense strides of `sizes` stored with its dims in `order`, outermost first
// ({0, 2, 3, 1}: NCHW stored channels-last); an empty order is row-major.
std::vector<std::int64_t> ordered_strides(const std::vector<std::int64_t>& sizes, const std::vector<int>& order);

}  // namespace dv::ir
