// Symbolic index expressions: node representation, canonicalizing
// constructors and the simplifier. See index_expr.h for the contract.
//
// Canonical form
// --------------
// Every IndexExpr handed out is canonical. The node kinds:
//   Const(v)
//   Var(name, extent)                 ranges over [0, extent), extent >= 2 (var() folds
//                                     extents 0 and 1 to the constant 0)
//   Mul(factors)                      either
//                                       * a "term":    {Const c, f1, ..., fn}, c not in {0, 1}, or
//                                       * a "product": {f1, ..., fn}, n >= 2,
//                                     where the fi are Var, FloorDiv or Mod (never Const,
//                                     Add or Mul), sorted by the structural order.
//   Add(terms..., [Const k])          >= 2 operands; terms are atoms or c*atom (Mul terms);
//                                     atoms distinct and sorted; k != 0 and last if present.
//   FloorDiv(n, Const c), Mod(n, Const c)   c >= 2, n canonical and not simplifiable further.
//   Abs(n)                            n takes both signs (bounds lo < 0 < hi) and its
//                                     first term's coefficient is positive.
// An "atom" is a Var, FloorDiv, Mod, Abs or a product. A product of non-constant
// expressions is fully distributed over sums (polynomial normal form), so
// x*(y + 1) == x*y + x; products are rare in index math.
//
// The structural order (operator<) sorts by kind (Const < Var < Add < Mul <
// FloorDiv < Mod < Abs), then constants by value, vars by (name, extent), and
// composite nodes lexicographically by operands.
//
// Division rules, floordiv(n, c) with c >= 2 (mod(n, c) alongside):
//   1. constant folding; c == 1.
//   2. bounds: if floor(lo/c) == floor(hi/c) == q then floordiv = q, mod = n - q*c.
//   3. coefficient reduction: each coefficient k (and the constant) is split as
//      k = c*floor(k/c) + (k mod c); the multiples are pulled out of floordiv and
//      dropped from mod, so afterwards all coefficients lie in [1, c) and the
//      constant in [0, c). In mod, an atom mod(e, a) with c | coef*a is replaced
//      by e (mod(mod(e, a), b) = mod(e, b) when b | a).
//   4. common factor: for g | c, 1 < g < c, write n = g*E + R where E holds the
//      terms whose coefficient g divides and 0 <= R < g (by bounds); then
//      floordiv(n, c) = floordiv(E, c/g) and mod(n, c) = g*mod(E, c/g) + R.
//      The largest such g wins. (R = 0 gives floordiv(g*e, g*c') = floordiv(e, c').)
//   5. nesting: floordiv(floordiv(e, a) + k, c) = floordiv(e + a*k, a*c);
//      floordiv(mod(e, a*c), c) = mod(floordiv(e, c), a).
//      DIRECTION: mod is kept OUTSIDE floordiv: the canonical form of
//      "(e % (a*c)) // c" is "(e // c) % a" -- the shape unflatten_index builds.
// All of these hold for every integer value of the sub-expressions under floor
// semantics (given correct bounds), so the rules are sound even when negative
// coefficients occur.
//
// Sum rules (applied to a fixpoint whenever a sum is built), q any integer:
//   (i)   q*c*floordiv(e, c) + q*mod(e, c)            = q*e
//   (ii)  q*c*mod(floordiv(e, c), b) + q*mod(e, c)     = q*mod(e, b*c)
//   (iii) q*e - q*c*floordiv(e, c)                     = q*mod(e, c)
// floordiv(e, c) is matched by building its canonical form, so (i) also fires
// for e.g. floordiv(floordiv(x, 4), 3) written as floordiv(x, 12). Each rule
// strictly shrinks the expression, so the fixpoint loop terminates; a pass cap
// guards against surprises.
#include "ir/index_expr.h"

#include <algorithm>
#include <climits>
#include <numeric>
#include <optional>
#include <stdexcept>
#include <utility>

namespace dv::ir {

using i64 = std::int64_t;
using Kind = IndexExpr::Kind;

struct IndexExpr::Node {
  Kind kind = Kind::Const;
  i64 value = 0;  // Const: the value; Var: the extent
  std::string name;  // Var
  std::vector<IndexExpr> ops;
  i64 lo = 0, hi = 0;  // inclusive bounds
  std::size_t hash = 0;

  // Nested classes may use IndexExpr's private members; the helpers below go
  // through these two.
  static IndexExpr wrap(std::shared_ptr<const Node> n) { return IndexExpr(std::move(n)); }
  static const Node& of(const IndexExpr& e) { return *e.node_; }
};

namespace {

using Node = IndexExpr::Node;

// ---------------------------------------------------------------- arithmetic

i64 floor_div(i64 a, i64 b) {  // b > 0
  i64 q = a / b;
  if (a % b != 0 && a < 0) --q;
  return q;
}
i64 floor_mod(i64 a, i64 b) { return a - floor_div(a, b) * b; }

// Saturating arithmetic for bounds: huge intervals just become uninformative.
i64 sat_add(i64 a, i64 b) {
  i64 r;
  if (__builtin_add_overflow(a, b, &r)) return a > 0 ? LLONG_MAX : LLONG_MIN;
  return r;
}
i64 sat_mul(i64 a, i64 b) {
  i64 r;
  if (__builtin_mul_overflow(a, b, &r)) return (a < 0) != (b < 0) ? LLONG_MIN : LLONG_MAX;
  return r;
}
bool mul_ok(i64 a, i64 b, i64* out) { return !__builtin_mul_overflow(a, b, out); }

std::pair<i64, i64> interval_mul(i64 a_lo, i64 a_hi, i64 b_lo, i64 b_hi) {
  const i64 p[4] = {sat_mul(a_lo, b_lo), sat_mul(a_lo, b_hi), sat_mul(a_hi, b_lo),
                    sat_mul(a_hi, b_hi)};
  return {*std::min_element(p, p + 4), *std::max_element(p, p + 4)};
}

std::size_t mix(std::size_t h, std::size_t v) {
  return h ^ (v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2));
}

// ---------------------------------------------------------------- nodes

void compute_bounds(Node& n) {
  switch (n.kind) {
    case Kind::Const: n.lo = n.hi = n.value; return;
    case Kind::Var: n.lo = 0; n.hi = n.value - 1; return;  // extent >= 2
    case Kind::Add:
      n.lo = n.hi = 0;
      for (const auto& op : n.ops) {
        n.lo = sat_add(n.lo, op.min_value());
        n.hi = sat_add(n.hi, op.max_value());
      }
      return;
    case Kind::Mul:
      n.lo = n.hi = 1;
      for (const auto& op : n.ops)
        std::tie(n.lo, n.hi) = interval_mul(n.lo, n.hi, op.min_value(), op.max_value());
      return;
    case Kind::FloorDiv: {
      const i64 c = n.ops[1].value();
      n.lo = floor_div(n.ops[0].min_value(), c);
      n.hi = floor_div(n.ops[0].max_value(), c);
      return;
    }
    case Kind::Mod: {
      // A non-negative e has e % c <= e; otherwise only [0, c) is known.
      const i64 c = n.ops[1].value();
      n.lo = 0;
      n.hi = n.ops[0].min_value() >= 0 ? std::min(n.ops[0].max_value(), c - 1) : c - 1;
      return;
    }
    case Kind::Abs: {  // the operand takes both signs (see absolute())
      const i64 lo = n.ops[0].min_value(), hi = n.ops[0].max_value();
      n.lo = 0;
      n.hi = std::max<i64>(hi, lo == LLONG_MIN ? LLONG_MAX : -lo);
      return;
    }
  }
}

IndexExpr make_node(Kind kind, std::vector<IndexExpr> ops) {
  auto n = std::make_shared<Node>();
  n->kind = kind;
  n->ops = std::move(ops);
  std::size_t h = mix(0x5bd1e995, static_cast<std::size_t>(kind));
  for (const auto& op : n->ops) h = mix(h, op.hash());
  n->hash = h;
  compute_bounds(*n);
  return Node::wrap(std::move(n));
}

std::shared_ptr<const Node> new_const(i64 v) {
  auto n = std::make_shared<Node>();
  n->kind = Kind::Const;
  n->value = v;
  n->hash = mix(0x27d4eb2f, static_cast<std::size_t>(v));
  compute_bounds(*n);
  return n;
}

// Small constants are shared: IndexExpr() and IndexExpr(1) are built constantly.
constexpr i64 kCacheLo = -16, kCacheHi = 256;
const std::vector<std::shared_ptr<const Node>>& const_cache() {
  static const auto cache = [] {
    std::vector<std::shared_ptr<const Node>> c;
    for (i64 v = kCacheLo; v <= kCacheHi; ++v) c.push_back(new_const(v));
    return c;
  }();
  return cache;
}

int three_way(i64 a, i64 b) { return a < b ? -1 : (a > b ? 1 : 0); }

// The structural total order.
int compare(const IndexExpr& a, const IndexExpr& b) {
  const Node& x = Node::of(a);
  const Node& y = Node::of(b);
  if (&x == &y) return 0;
  if (x.kind != y.kind) return x.kind < y.kind ? -1 : 1;
  switch (x.kind) {
    case Kind::Const: return three_way(x.value, y.value);
    case Kind::Var:
      if (int c = x.name.compare(y.name)) return c < 0 ? -1 : 1;
      return three_way(x.value, y.value);
    default: {
      const std::size_t n = std::min(x.ops.size(), y.ops.size());
      for (std::size_t i = 0; i < n; ++i)
        if (int c = compare(x.ops[i], y.ops[i])) return c;
      return three_way(static_cast<i64>(x.ops.size()), static_cast<i64>(y.ops.size()));
    }
  }
}

bool same(const IndexExpr& a, const IndexExpr& b) {
  return a.hash() == b.hash() && compare(a, b) == 0;
}

i64 divisor_of(const IndexExpr& b) {
  if (!b.is_const() || b.value() <= 0)
    throw std::invalid_argument("IndexExpr: floordiv/mod divisor must be a positive constant, got " +
                                b.str());
  return b.value();
}

// ---------------------------------------------------------------- linear forms

// A sum as sum(coef_i * atom_i) + constant: the working form of the simplifier.
struct Term {
  IndexExpr atom;
  i64 coef;
};
struct Linear {
  std::vector<Term> terms;
  i64 constant = 0;
};

IndexExpr product_atom(std::vector<IndexExpr> factors) {
  if (factors.size() == 1) return factors[0];
  std::sort(factors.begin(), factors.end(),
            [](const IndexExpr& a, const IndexExpr& b) { return compare(a, b) < 0; });
  return make_node(Kind::Mul, std::move(factors));
}

// Appends scale * e to l (unnormalized).
void accumulate(Linear& l, const IndexExpr& e, i64 scale) {
  if (scale == 0) return;
  const Node& n = Node::of(e);
  switch (n.kind) {
    case Kind::Const: l.constant += scale * n.value; return;
    case Kind::Add:
      for (const auto& op : n.ops) accumulate(l, op, scale);
      return;
    case Kind::Mul:
      if (n.ops[0].is_const()) {
        const i64 c = n.ops[0].value() * scale;
        if (n.ops.size() == 2) {
          l.terms.push_back({n.ops[1], c});
        } else {
          l.terms.push_back({product_atom(std::vector<IndexExpr>(n.ops.begin() + 1, n.ops.end())), c});
        }
        return;
      }
      break;
    default: break;
  }
  l.terms.push_back({e, scale});
}

Linear linear_of(const IndexExpr& e) {
  Linear l;
  accumulate(l, e, 1);
  return l;
}

// Sorts terms by atom, merges equal atoms, drops zero terms.
void normalize(Linear& l) {
  auto& t = l.terms;
  std::sort(t.begin(), t.end(),
            [](const Term& a, const Term& b) { return compare(a.atom, b.atom) < 0; });
  std::size_t out = 0;
  for (std::size_t i = 0; i < t.size();) {
    std::size_t j = i;
    i64 c = 0;
    while (j < t.size() && same(t[j].atom, t[i].atom)) c += t[j++].coef;
    if (c != 0) {
      Term merged{t[i].atom, c};
      t[out++] = std::move(merged);
    }
    i = j;
  }
  t.resize(out);
}

std::pair<i64, i64> linear_bounds(const Linear& l) {
  i64 lo = l.constant, hi = l.constant;
  for (const auto& t : l.terms) {
    auto [a, b] = interval_mul(t.coef, t.coef, t.atom.min_value(), t.atom.max_value());
    lo = sat_add(lo, a);
    hi = sat_add(hi, b);
  }
  return {lo, hi};
}

IndexExpr term_expr(const IndexExpr& atom, i64 coef) {
  if (coef == 1) return atom;
  std::vector<IndexExpr> ops{IndexExpr(coef)};
  if (atom.kind() == Kind::Mul) {
    ops.insert(ops.end(), atom.operands().begin(), atom.operands().end());
  } else {
    ops.push_back(atom);
  }
  return make_node(Kind::Mul, std::move(ops));
}

// Builds the node of a normalized linear form (no further rewriting).
IndexExpr from_linear(const Linear& l) {
  if (l.terms.empty()) return IndexExpr(l.constant);
  if (l.terms.size() == 1 && l.constant == 0) return term_expr(l.terms[0].atom, l.terms[0].coef);
  std::vector<IndexExpr> ops;
  ops.reserve(l.terms.size() + 1);
  for (const auto& t : l.terms) ops.push_back(term_expr(t.atom, t.coef));
  if (l.constant != 0) ops.push_back(IndexExpr(l.constant));
  return make_node(Kind::Add, std::move(ops));
}

IndexExpr build_sum(Linear l);
IndexExpr simplify_floordiv(const IndexExpr& n, i64 c);
IndexExpr simplify_mod(const IndexExpr& n, i64 c);

// ---------------------------------------------------------------- sum rules

// Index of the term with this atom in a normalized form, or -1.
long find_term(const Linear& l, const IndexExpr& atom) {
  auto it = std::lower_bound(l.terms.begin(), l.terms.end(), atom,
                             [](const Term& t, const IndexExpr& a) { return compare(t.atom, a) < 0; });
  if (it == l.terms.end() || !same(it->atom, atom)) return -1;
  return it - l.terms.begin();
}

// Finds every term of `scale * pattern` in l with exactly that coefficient.
// Returns their indices, or nullopt if one is missing (or is term `exclude`).
std::optional<std::vector<std::size_t>> find_scaled(const Linear& l, const Linear& pattern, i64 scale,
                                                    std::size_t exclude) {
  std::vector<std::size_t> hits;
  for (const auto& t : pattern.terms) {
    i64 want;
    if (!mul_ok(t.coef, scale, &want)) return std::nullopt;
    const long idx = find_term(l, t.atom);
    if (idx < 0 || static_cast<std::size_t>(idx) == exclude || l.terms[idx].coef != want)
      return std::nullopt;
    hits.push_back(static_cast<std::size_t>(idx));
  }
  return hits;
}

void remove_terms(Linear& l, std::vector<std::size_t> idx) {
  std::sort(idx.begin(), idx.end());
  std::vector<Term> kept;
  kept.reserve(l.terms.size());
  for (std::size_t i = 0, k = 0; i < l.terms.size(); ++i) {
    if (k < idx.size() && idx[k] == i) {
      ++k;
      continue;
    }
    kept.push_back(std::move(l.terms[i]));
  }
  l.terms = std::move(kept);
}

// Rules (i) and (ii) for the term i = q*mod(e, c).
bool fold_mod_term(Linear& l, std::size_t i) {
  const IndexExpr e = l.terms[i].atom.operands()[0];
  const i64 c = l.terms[i].atom.operands()[1].value();
  const i64 q = l.terms[i].coef;
  i64 qc;
  if (!mul_ok(q, c, &qc)) return false;
  const IndexExpr quotient = simplify_floordiv(e, c);

  // (i) q*c*floordiv(e, c) + q*mod(e, c) = q*e
  const Linear f = linear_of(quotient);
  if (!f.terms.empty()) {
    if (auto hits = find_scaled(l, f, qc, i)) {
      hits->push_back(i);
      remove_terms(l, std::move(*hits));
      l.constant -= qc * f.constant;
      accumulate(l, e, q);
      return true;
    }
  }
  // (ii) q*c*mod(floordiv(e, c), b) + q*mod(e, c) = q*mod(e, b*c)
  for (std::size_t j = 0; j < l.terms.size(); ++j) {
    const IndexExpr& a = l.terms[j].atom;
    if (j == i || l.terms[j].coef != qc || a.kind() != Kind::Mod) continue;
    if (!same(a.operands()[0], quotient)) continue;
    i64 bc;
    if (!mul_ok(a.operands()[1].value(), c, &bc)) continue;
    remove_terms(l, {i, j});
    accumulate(l, simplify_mod(e, bc), q);
    return true;
  }
  return false;
}

// Rule (iii) for the term j = p*floordiv(e, c) with p = -q*c.
bool fold_floordiv_term(Linear& l, std::size_t j) {
  const IndexExpr e = l.terms[j].atom.operands()[0];
  const i64 c = l.terms[j].atom.operands()[1].value();
  const i64 p = l.terms[j].coef;
  if (p % c != 0) return false;
  const i64 q = -(p / c);
  const Linear le = linear_of(e);
  if (le.terms.empty()) return false;
  auto hits = find_scaled(l, le, q, j);
  if (!hits) return false;
  hits->push_back(j);
  remove_terms(l, std::move(*hits));
  l.constant -= q * le.constant;
  accumulate(l, simplify_mod(e, c), q);
  return true;
}

bool has_div_or_mod(const Linear& l) {
  for (const auto& t : l.terms) {
    const Kind k = t.atom.kind();
    if (k == Kind::FloorDiv || k == Kind::Mod) return true;
  }
  return false;
}

// Applies the sum rules to a normalized form until none fires.
void recombine(Linear& l) {
  constexpr int kMaxPasses = 256;
  for (int pass = 0; pass < kMaxPasses; ++pass) {
    if (l.terms.size() < 2 || !has_div_or_mod(l)) return;
    bool changed = false;
    for (std::size_t i = 0; i < l.terms.size() && !changed; ++i) {
      const Kind k = l.terms[i].atom.kind();
      if (k == Kind::Mod) changed = fold_mod_term(l, i);
      else if (k == Kind::FloorDiv) changed = fold_floordiv_term(l, i);
    }
    if (!changed) return;
    normalize(l);
  }
}

IndexExpr build_sum(Linear l) {
  normalize(l);
  recombine(l);
  return from_linear(l);
}

// k * e for a constant k. Scaling keeps a canonical sum sorted and keeps every
// sum rule's coefficient ratios, so no re-normalization is needed.
IndexExpr scale(const IndexExpr& e, i64 k) {
  if (k == 0) return IndexExpr(0);
  if (k == 1) return e;
  if (e.is_const()) return IndexExpr(e.value() * k);
  Linear l = linear_of(e);
  for (auto& t : l.terms) t.coef *= k;
  l.constant *= k;
  return from_linear(l);
}

std::vector<IndexExpr> factors_of(const IndexExpr& atom) {
  if (atom.kind() == Kind::Mul) return atom.operands();  // a product: no constant factor
  return {atom};
}

// Product of two non-constant expressions, distributed over their sums.
IndexExpr multiply(const IndexExpr& a, const IndexExpr& b) {
  const Linear la = linear_of(a), lb = linear_of(b);
  Linear out;
  for (const auto& ta : la.terms) {
    for (const auto& tb : lb.terms) {
      std::vector<IndexExpr> f = factors_of(ta.atom);
      const auto fb = factors_of(tb.atom);
      f.insert(f.end(), fb.begin(), fb.end());
      out.terms.push_back({product_atom(std::move(f)), ta.coef * tb.coef});
    }
    out.terms.push_back({ta.atom, ta.coef * lb.constant});
  }
  for (const auto& tb : lb.terms) out.terms.push_back({tb.atom, tb.coef * la.constant});
  out.constant = la.constant * lb.constant;
  return build_sum(std::move(out));
}

// ---------------------------------------------------------------- division rules

// n = g*multiple + rest with 0 <= rest < g, for the largest g | c (1 < g < c)
// for which the bounds allow it. `l` has coefficients in [1, c), constant in [0, c).
struct Split {
  i64 g = 1;
  Linear multiple, rest;
};

std::optional<Split> common_factor_split(const Linear& l, i64 c) {
  std::vector<i64> cands;
  for (const auto& t : l.terms) {
    const i64 g = std::gcd(c, t.coef);
    if (g > 1 && g < c) cands.push_back(g);
  }
  if (cands.empty()) return std::nullopt;
  // Close under gcd so that a factor shared by several terms is a candidate.
  for (bool grew = true; grew;) {
    grew = false;
    const std::size_t n = cands.size();
    for (std::size_t i = 0; i < n; ++i)
      for (std::size_t j = i + 1; j < n; ++j) {
        const i64 g = std::gcd(cands[i], cands[j]);
        if (g > 1 && std::find(cands.begin(), cands.end(), g) == cands.end()) {
          cands.push_back(g);
          grew = true;
        }
      }
  }
  std::sort(cands.begin(), cands.end(), std::greater<>());
  cands.erase(std::unique(cands.begin(), cands.end()), cands.end());
  for (const i64 g : cands) {
    Split s;
    s.g = g;
    for (const auto& t : l.terms) {
      if (t.coef % g == 0) s.multiple.terms.push_back({t.atom, t.coef / g});
      else s.rest.terms.push_back(t);
    }
    s.multiple.constant = l.constant / g;  // constant >= 0 here
    s.rest.constant = l.constant % g;
    const auto [lo, hi] = linear_bounds(s.rest);
    if (lo >= 0 && hi < g) return s;
  }
  return std::nullopt;
}

IndexExpr simplify_floordiv(const IndexExpr& n, i64 c) {
  if (c == 1) return n;
  if (n.is_const()) return IndexExpr(floor_div(n.value(), c));
  const i64 q_lo = floor_div(n.min_value(), c);
  if (q_lo == floor_div(n.max_value(), c)) return IndexExpr(q_lo);

  const Linear l = linear_of(n);
  // Pull out the multiples of c: floordiv(c*K + b, c) = K + floordiv(b, c).
  Linear pulled, rest;
  for (const auto& t : l.terms) {
    const i64 q = floor_div(t.coef, c), r = t.coef - q * c;
    if (q != 0) pulled.terms.push_back({t.atom, q});
    if (r != 0) rest.terms.push_back({t.atom, r});
  }
  pulled.constant = floor_div(l.constant, c);
  rest.constant = floor_mod(l.constant, c);
  if (!pulled.terms.empty() || pulled.constant != 0) {
    accumulate(pulled, simplify_floordiv(build_sum(std::move(rest)), c), 1);
    return build_sum(std::move(pulled));
  }

  if (auto s = common_factor_split(l, c))
    return simplify_floordiv(build_sum(std::move(s->multiple)), c / s->g);

  if (l.terms.size() == 1 && l.terms[0].coef == 1) {
    const IndexExpr& atom = l.terms[0].atom;
    const IndexExpr& e = atom.operands().empty() ? atom : atom.operands()[0];
    const i64 k = l.constant;
    if (atom.kind() == Kind::FloorDiv) {
      // floordiv(floordiv(e, a) + k, c) = floordiv(e + a*k, a*c)
      const i64 a = atom.operands()[1].value();
      i64 ac, ak;
      if (mul_ok(a, c, &ac) && mul_ok(a, k, &ak)) return simplify_floordiv(e + IndexExpr(ak), ac);
    } else if (atom.kind() == Kind::Mod && k == 0) {
      // floordiv(mod(e, a*c), c) = mod(floordiv(e, c), a)   (mod outermost)
      const i64 m = atom.operands()[1].value();
      if (m % c == 0) return simplify_mod(simplify_floordiv(e, c), m / c);
    }
  }
  return make_node(Kind::FloorDiv, {n, IndexExpr(c)});
}

IndexExpr simplify_mod(const IndexExpr& n, i64 c) {
  if (c == 1) return IndexExpr(0);
  if (n.is_const()) return IndexExpr(floor_mod(n.value(), c));
  const i64 q_lo = floor_div(n.min_value(), c);
  if (q_lo == floor_div(n.max_value(), c)) return n - IndexExpr(q_lo * c);

  const Linear l = linear_of(n);
  // Reduce coefficients modulo c; mod(e, a) with c | coef*a contributes like e.
  Linear red;
  bool changed = false;
  for (const auto& t : l.terms) {
    const i64 r = floor_mod(t.coef, c);
    changed |= r != t.coef;
    if (r == 0) continue;
    i64 ra;
    if (t.atom.kind() == Kind::Mod && mul_ok(r, t.atom.operands()[1].value(), &ra) && ra % c == 0) {
      accumulate(red, t.atom.operands()[0], r);
      changed = true;
    } else {
      red.terms.push_back({t.atom, r});
    }
  }
  const i64 k = floor_mod(l.constant, c);
  changed |= k != l.constant;
  red.constant += k;  // on top of constants brought in by replaced mod atoms
  if (changed) return simplify_mod(build_sum(std::move(red)), c);

  if (auto s = common_factor_split(l, c)) {
    Linear out = std::move(s->rest);
    accumulate(out, simplify_mod(build_sum(std::move(s->multiple)), c / s->g), s->g);
    return build_sum(std::move(out));
  }
  return make_node(Kind::Mod, {n, IndexExpr(c)});
}

// ---------------------------------------------------------------- printing

std::string to_str(const IndexExpr& e);

std::string abs_str(i64 v) {
  const auto u = v < 0 ? 0 - static_cast<std::uint64_t>(v) : static_cast<std::uint64_t>(v);
  return std::to_string(u);
}

// Operands of *, //, % are parenthesized unless they are a var or a non-negative constant.
std::string operand_str(const IndexExpr& e) {
  if (e.is_var() || (e.is_const() && e.value() >= 0)) return to_str(e);
  return "(" + to_str(e) + ")";
}

// "atom*|coef|", e.g. "x*8192", "(x // 8)*3", "x*y".
std::string term_body(const IndexExpr& atom, i64 coef) {
  std::string s;
  for (const auto& f : factors_of(atom)) s += (s.empty() ? "" : "*") + operand_str(f);
  if (coef != 1 && coef != -1) s += "*" + abs_str(coef);
  return s;
}

std::string add_str(const IndexExpr& e) {
  Linear l = linear_of(e);
  // Largest coefficients first reads best ("x*8192 + r"); ties keep canonical order.
  std::stable_sort(l.terms.begin(), l.terms.end(), [](const Term& a, const Term& b) {
    return (a.coef < 0 ? -a.coef : a.coef) > (b.coef < 0 ? -b.coef : b.coef);
  });
  std::string s;
  for (const auto& t : l.terms) {
    if (s.empty()) s = t.coef < 0 ? "-" : "";
    else s += t.coef < 0 ? " - " : " + ";
    s += term_body(t.atom, t.coef);
  }
  if (l.constant != 0) s += (l.constant < 0 ? " - " : " + ") + abs_str(l.constant);
  return s;
}

std::string to_str(const IndexExpr& e) {
  const auto& ops = e.operands();
  switch (e.kind()) {
    case Kind::Const: return std::to_string(e.value());
    case Kind::Var: return e.name();
    case Kind::Add: return add_str(e);
    case Kind::Mul:
      if (ops[0].is_const()) {
        const Linear l = linear_of(e);
        return (l.terms[0].coef < 0 ? "-" : "") + term_body(l.terms[0].atom, l.terms[0].coef);
      }
      return term_body(e, 1);
    case Kind::FloorDiv: return operand_str(ops[0]) + " // " + to_str(ops[1]);
    case Kind::Mod: return operand_str(ops[0]) + " % " + to_str(ops[1]);
    case Kind::Abs: return "|" + to_str(ops[0]) + "|";
  }
  return "?";
}

// ---------------------------------------------------------------- traversal

i64 eval_node(const IndexExpr& e, const std::function<i64(const std::string&)>& var_value) {
  const auto& ops = e.operands();
  switch (e.kind()) {
    case Kind::Const: return e.value();
    case Kind::Var: return var_value(e.name());
    case Kind::Add: {
      i64 s = 0;
      for (const auto& op : ops) s += eval_node(op, var_value);
      return s;
    }
    case Kind::Mul: {
      i64 p = 1;
      for (const auto& op : ops) p *= eval_node(op, var_value);
      return p;
    }
    case Kind::FloorDiv: return floor_div(eval_node(ops[0], var_value), ops[1].value());
    case Kind::Mod: return floor_mod(eval_node(ops[0], var_value), ops[1].value());
    case Kind::Abs: {
      const i64 v = eval_node(ops[0], var_value);
      return v < 0 ? -v : v;
    }
  }
  return 0;
}

IndexExpr substitute_node(const IndexExpr& e, const std::function<IndexExpr(const IndexExpr&)>& f) {
  const auto& ops = e.operands();
  switch (e.kind()) {
    case Kind::Const: return e;
    case Kind::Var: return f(e);
    case Kind::FloorDiv:
    case Kind::Mod: {
      const IndexExpr n = substitute_node(ops[0], f);
      if (&Node::of(n) == &Node::of(ops[0])) return e;
      const i64 c = ops[1].value();
      return e.kind() == Kind::FloorDiv ? simplify_floordiv(n, c) : simplify_mod(n, c);
    }
    case Kind::Abs: {
      const IndexExpr n = substitute_node(ops[0], f);
      return &Node::of(n) == &Node::of(ops[0]) ? e : absolute(n);
    }
    case Kind::Add:
    case Kind::Mul: {
      std::vector<IndexExpr> subs;
      bool changed = false;
      for (const auto& op : ops) {
        subs.push_back(substitute_node(op, f));
        changed |= &Node::of(subs.back()) != &Node::of(op);
      }
      if (!changed) return e;
      if (e.kind() == Kind::Add) {  // one normalization for the whole sum
        Linear l;
        for (const auto& s : subs) accumulate(l, s, 1);
        return build_sum(std::move(l));
      }
      IndexExpr r = subs[0];
      for (std::size_t i = 1; i < subs.size(); ++i) r = r * subs[i];
      return r;
    }
  }
  return e;
}

}  // namespace

// ---------------------------------------------------------------- public API

IndexExpr::IndexExpr(std::int64_t constant) {
  if (constant >= kCacheLo && constant <= kCacheHi) {
    node_ = const_cache()[static_cast<std::size_t>(constant - kCacheLo)];
  } else {
    node_ = new_const(constant);
  }
}

IndexExpr::IndexExpr(std::shared_ptr<const Node> node) : node_(std::move(node)) {}

IndexExpr IndexExpr::var(const std::string& name, std::int64_t extent) {
  if (extent < 0) throw std::invalid_argument("IndexExpr::var: negative extent for " + name);
  // A variable over [0, 1) can only be 0. Folding it keeps == exact: e.g. the
  // flat index of a 1-element tensor unflattens to all-zero coordinates, whose
  // linear index (the constant 0) must equal the flat index again.
  if (extent <= 1) return IndexExpr(0);
  auto n = std::make_shared<Node>();
  n->kind = Kind::Var;
  n->name = name;
  n->value = extent;
  n->hash = mix(std::hash<std::string>{}(name), static_cast<std::size_t>(extent));
  compute_bounds(*n);
  return IndexExpr(std::shared_ptr<const Node>(std::move(n)));
}

IndexExpr::Kind IndexExpr::kind() const { return node_->kind; }

std::int64_t IndexExpr::value() const {
  if (!is_const()) throw std::logic_error("IndexExpr::value: not a constant: " + str());
  return node_->value;
}
const std::string& IndexExpr::name() const {
  if (!is_var()) throw std::logic_error("IndexExpr::name: not a variable: " + str());
  return node_->name;
}
std::int64_t IndexExpr::extent() const {
  if (!is_var()) throw std::logic_error("IndexExpr::extent: not a variable: " + str());
  return node_->value;
}
const std::vector<IndexExpr>& IndexExpr::operands() const { return node_->ops; }

IndexExpr operator+(const IndexExpr& a, const IndexExpr& b) {
  if (a.is_const() && b.is_const()) return IndexExpr(a.value() + b.value());
  if (b.is_const() && b.value() == 0) return a;
  if (a.is_const() && a.value() == 0) return b;
  Linear l;
  accumulate(l, a, 1);
  accumulate(l, b, 1);
  return build_sum(std::move(l));
}

IndexExpr operator-(const IndexExpr& a, const IndexExpr& b) {
  if (a.is_const() && b.is_const()) return IndexExpr(a.value() - b.value());
  if (b.is_const() && b.value() == 0) return a;
  Linear l;
  accumulate(l, a, 1);
  accumulate(l, b, -1);
  return build_sum(std::move(l));
}

IndexExpr operator*(const IndexExpr& a, const IndexExpr& b) {
  if (a.is_const()) return scale(b, a.value());
  if (b.is_const()) return scale(a, b.value());
  return multiply(a, b);
}

IndexExpr floordiv(const IndexExpr& a, const IndexExpr& b) { return simplify_floordiv(a, divisor_of(b)); }
IndexExpr mod(const IndexExpr& a, const IndexExpr& b) { return simplify_mod(a, divisor_of(b)); }

IndexExpr absolute(const IndexExpr& a) {
  if (a.min_value() >= 0) return a;
  if (a.max_value() <= 0) return scale(a, -1);
  const Linear l = linear_of(a);
  const bool negative_lead = !l.terms.empty() && l.terms[0].coef < 0;
  return make_node(Kind::Abs, {negative_lead ? scale(a, -1) : a});
}

bool IndexExpr::operator==(const IndexExpr& other) const {
  return node_ == other.node_ || same(*this, other);
}
bool IndexExpr::operator<(const IndexExpr& other) const { return compare(*this, other) < 0; }
std::size_t IndexExpr::hash() const { return node_->hash; }

std::int64_t IndexExpr::min_value() const { return node_->lo; }
std::int64_t IndexExpr::max_value() const { return node_->hi; }

std::int64_t IndexExpr::eval(const std::function<std::int64_t(const std::string&)>& var_value) const {
  return eval_node(*this, var_value);
}

IndexExpr IndexExpr::substitute(const std::function<IndexExpr(const IndexExpr& var)>& replace) const {
  return substitute_node(*this, replace);
}

bool IndexExpr::uses_var(const std::string& name) const {
  if (is_var()) return node_->name == name;
  for (const auto& op : node_->ops)
    if (op.uses_var(name)) return true;
  return false;
}

std::string IndexExpr::str() const { return to_str(*this); }

IndexExpr linear_index(const std::vector<IndexExpr>& coords, const std::vector<std::int64_t>& strides) {
  if (coords.size() != strides.size())
    throw std::invalid_argument("linear_index: coords and strides differ in length");
  Linear l;
  for (std::size_t i = 0; i < coords.size(); ++i) accumulate(l, coords[i], strides[i]);
  return build_sum(std::move(l));
}

std::vector<IndexExpr> unflatten_index(const IndexExpr& flat, const std::vector<std::int64_t>& sizes) {
  const auto strides = contiguous_strides(sizes);
  std::vector<IndexExpr> coords;
  coords.reserve(sizes.size());
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    // A size-1 (or empty) dim has the single coordinate 0.
    if (sizes[i] <= 1) coords.emplace_back(0);
    else coords.push_back(simplify_mod(simplify_floordiv(flat, strides[i]), sizes[i]));
  }
  return coords;
}

std::vector<std::int64_t> contiguous_strides(const std::vector<std::int64_t>& sizes) {
  // Like torch: a size-0 dim counts as 1 for the strides of the dims before it.
  std::vector<std::int64_t> strides(sizes.size(), 1);
  std::int64_t s = 1;
  for (std::size_t i = sizes.size(); i-- > 0;) {
    strides[i] = s;
    s *= std::max<std::int64_t>(sizes[i], 1);
  }
  return strides;
}

std::vector<std::int64_t> ordered_strides(const std::vector<std::int64_t>& sizes, const std::vector<int>& order) {
  if (order.empty()) return contiguous_strides(sizes);
  std::vector<std::int64_t> strides(sizes.size());
  std::int64_t stride = 1;
  for (std::size_t i = order.size(); i-- > 0;) {
    strides[order[i]] = stride;
    stride *= std::max<std::int64_t>(sizes[order[i]], 1);  // as contiguous_strides: a size-0 dim counts as 1
  }
  return strides;
}

}  // namespace dv::ir
