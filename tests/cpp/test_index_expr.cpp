// Tests for the symbolic index expressions (src/ir/index_expr.h).
#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "catch.h"
#include "ir/index_expr.h"

using dv::ir::contiguous_strides;
using dv::ir::floordiv;
using dv::ir::IndexExpr;
using dv::ir::IndexExprHash;
using dv::ir::linear_index;
using dv::ir::mod;
using dv::ir::unflatten_index;
using i64 = std::int64_t;

namespace {

// Python semantics computed independently of the implementation (through
// doubles, exact for the small values used here).
i64 py_floordiv(i64 a, i64 b) { return static_cast<i64>(std::floor(static_cast<double>(a) / b)); }
i64 py_mod(i64 a, i64 b) { return a - py_floordiv(a, b) * b; }

i64 product(const std::vector<i64>& v) {
  i64 p = 1;
  for (i64 s : v) p *= s;
  return p;
}

i64 eval1(const IndexExpr& e, const std::string& name, i64 v) {
  return e.eval([&](const std::string& n) -> i64 {
    if (n != name) throw std::runtime_error("unexpected var " + n);
    return v;
  });
}

i64 eval2(const IndexExpr& e, i64 x, i64 y) {
  return e.eval([&](const std::string& n) -> i64 {
    if (n == "x") return x;
    if (n == "y") return y;
    throw std::runtime_error("unexpected var " + n);
  });
}

// Rebuilds e from its operands through the public constructors: a canonical
// expression must be a fixpoint of this.
IndexExpr rebuild(const IndexExpr& e) {
  const auto& ops = e.operands();
  switch (e.kind()) {
    case IndexExpr::Kind::Const:
    case IndexExpr::Kind::Var: return e;
    case IndexExpr::Kind::Add: {
      IndexExpr r = 0;
      for (const auto& op : ops) r = r + rebuild(op);
      return r;
    }
    case IndexExpr::Kind::Mul: {
      IndexExpr r = 1;
      for (const auto& op : ops) r = r * rebuild(op);
      return r;
    }
    case IndexExpr::Kind::FloorDiv: return floordiv(rebuild(ops[0]), ops[1]);
    case IndexExpr::Kind::Mod: return mod(rebuild(ops[0]), ops[1]);
    case IndexExpr::Kind::Abs: return absolute(rebuild(ops[0]));
  }
  return e;
}

// The round trips the fusion pass relies on, for one shape.
void check_roundtrips(const std::vector<i64>& shape) {
  INFO("shape size " << shape.size() << " first " << shape[0]);
  const i64 n = product(shape);
  const IndexExpr x = IndexExpr::var("x", n);
  const auto strides = contiguous_strides(shape);
  const auto coords = unflatten_index(x, shape);
  REQUIRE(coords.size() == shape.size());
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == 1) REQUIRE(coords[i] == IndexExpr(0));
    for (i64 v = 0; v < n; ++v) REQUIRE(eval1(coords[i], "x", v) == (v / strides[i]) % shape[i]);
  }
  INFO("linear = " << linear_index(coords, strides).str());
  REQUIRE(linear_index(coords, strides) == x);
}

// [A, B, C] with rows x over A*B and a reduction var r over C.
void check_row_split(i64 a, i64 b, i64 c) {
  INFO("A=" << a << " B=" << b << " C=" << c);
  const IndexExpr x = IndexExpr::var("x", a * b);
  const IndexExpr r = IndexExpr::var("r", c);
  auto coords = unflatten_index(x, {a, b});
  coords.push_back(r);
  REQUIRE(linear_index(coords, {b * c, c, 1}) == x * c + r);

  // The row check: {coords[0], coords[1], 0} over [A, B, 1].
  const auto rc = unflatten_index(x, {a, b});
  REQUIRE(linear_index({rc[0], rc[1], 0}, contiguous_strides({a, b, 1})) == x);

  // Unflattening x*C + r over the full shape separates rows from reduction.
  const auto full = unflatten_index(x * c + r, {a, b, c});
  REQUIRE(full[2] == (c == 1 ? IndexExpr(0) : r));
  REQUIRE_FALSE(full[0].uses_var("r"));
  REQUIRE_FALSE(full[1].uses_var("r"));
  REQUIRE(linear_index(full, contiguous_strides({a, b, c})) == x * c + r);
}

// A random expression over x (extent ex) and y (extent ey) together with a
// naive reference evaluator.
struct RandomExpr {
  IndexExpr expr;
  std::function<i64(i64, i64)> ref;
};

class Generator {
 public:
  Generator(std::uint32_t seed, i64 ex, i64 ey) : rng_(seed), x_(IndexExpr::var("x", ex)), y_(IndexExpr::var("y", ey)) {}

  RandomExpr make(int depth) {
    if (depth == 0 || pick(0, 9) < 2) return leaf();
    switch (pick(0, 9)) {
      case 0:
      case 1: {
        auto a = make(depth - 1), b = make(depth - 1);
        return {a.expr + b.expr, [=](i64 x, i64 y) { return a.ref(x, y) + b.ref(x, y); }};
      }
      case 2: {
        auto a = make(depth - 1), b = make(depth - 1);
        return {a.expr - b.expr, [=](i64 x, i64 y) { return a.ref(x, y) - b.ref(x, y); }};
      }
      case 3: {
        static const i64 kFactors[] = {-2, -1, 0, 2, 3, 4, 6, 8, 12};
        const i64 k = kFactors[pick(0, 8)];
        auto a = make(depth - 1);
        return {a.expr * k, [=](i64 x, i64 y) { return a.ref(x, y) * k; }};
      }
      case 4: {
        if (pick(0, 3) != 0) return make(depth);  // products of non-constants: rarer
        auto a = make(depth - 1), b = make(depth - 1);
        return {a.expr * b.expr, [=](i64 x, i64 y) { return a.ref(x, y) * b.ref(x, y); }};
      }
      case 5:
      case 6:
      case 7: {
        const i64 c = divisor();
        auto a = make(depth - 1);
        return {floordiv(a.expr, c), [=](i64 x, i64 y) { return py_floordiv(a.ref(x, y), c); }};
      }
      default: {
        const i64 c = divisor();
        auto a = make(depth - 1);
        return {mod(a.expr, c), [=](i64 x, i64 y) { return py_mod(a.ref(x, y), c); }};
      }
    }
  }

 private:
  int pick(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  i64 divisor() {
    static const i64 kDivisors[] = {1, 2, 2, 3, 3, 4, 4, 5, 6, 7, 8, 9, 12, 16};
    return kDivisors[pick(0, 13)];
  }
  RandomExpr leaf() {
    switch (pick(0, 4)) {
      case 0: {
        const i64 k = pick(-4, 12);
        return {IndexExpr(k), [=](i64, i64) { return k; }};
      }
      case 1:
      case 2: return {x_, [](i64 x, i64) { return x; }};
      default: return {y_, [](i64, i64 y) { return y; }};
    }
  }

  std::mt19937 rng_;
  IndexExpr x_, y_;
};

}  // namespace

TEST_CASE("index_expr: constants fold", "[index_expr]") {
  REQUIRE(IndexExpr(3) + IndexExpr(4) == IndexExpr(7));
  REQUIRE((IndexExpr(3) * 4).is_const());
  REQUIRE((IndexExpr(3) * 4).value() == 12);
  REQUIRE(IndexExpr(3) - 5 == IndexExpr(-2));
  REQUIRE(floordiv(7, 2) == IndexExpr(3));
  REQUIRE(floordiv(-7, 2) == IndexExpr(-4));
  REQUIRE(mod(-7, 3) == IndexExpr(2));
  REQUIRE(mod(7, 3) == IndexExpr(1));
  REQUIRE(IndexExpr(1234567) == IndexExpr(1234567));  // outside the small-constant cache
  REQUIRE(IndexExpr().is_const());
  REQUIRE(IndexExpr().value() == 0);
  REQUIRE(IndexExpr(5).min_value() == 5);
  REQUIRE(IndexExpr(5).max_value() == 5);
  // A variable with a single possible value is that value.
  REQUIRE(IndexExpr::var("x", 1) == IndexExpr(0));
  REQUIRE(IndexExpr::var("x", 0) == IndexExpr(0));
  REQUIRE(IndexExpr::var("x", 2).is_var());
}

TEST_CASE("index_expr: canonical ordering and merging", "[index_expr]") {
  const IndexExpr x = IndexExpr::var("x", 10), y = IndexExpr::var("y", 7), z = IndexExpr::var("z", 3);
  REQUIRE(x + y == y + x);
  REQUIRE((x + y) + z == x + (y + z));
  REQUIRE(2 * (x + 1) == 2 * x + 2);
  REQUIRE(x - x == IndexExpr(0));
  REQUIRE(x + x == 2 * x);
  REQUIRE(3 * x - x == x * 2);
  REQUIRE(x * y == y * x);
  REQUIRE(x * (y + 1) == x * y + x);
  REQUIRE((x + 1) * (y + 2) == x * y + 2 * x + y + 2);
  REQUIRE(x * 1 == x);
  REQUIRE(x * 0 == IndexExpr(0));
  REQUIRE(x + 0 == x);
  REQUIRE(x != y);
  REQUIRE(x != IndexExpr::var("x", 11));  // same name, other extent
  REQUIRE(IndexExpr::var("x", 10) == x);
  REQUIRE((x + y).hash() == (y + x).hash());

  // Operand conventions from the header.
  const IndexExpr s = 3 * x + y + 5;
  REQUIRE(s.kind() == IndexExpr::Kind::Add);
  REQUIRE(s.operands().size() == 3);
  REQUIRE(s.operands().back() == IndexExpr(5));
  const IndexExpr t = 3 * x;
  REQUIRE(t.kind() == IndexExpr::Kind::Mul);
  REQUIRE(t.operands()[0] == IndexExpr(3));
  REQUIRE(t.operands()[1] == x);
  const IndexExpr d = floordiv(x, 3);
  REQUIRE(d.kind() == IndexExpr::Kind::FloorDiv);
  REQUIRE(d.operands()[1] == IndexExpr(3));
  REQUIRE(x.name() == "x");
  REQUIRE(x.extent() == 10);
  REQUIRE_THROWS(x.value());
  REQUIRE_THROWS(IndexExpr(3).name());
}

TEST_CASE("index_expr: floordiv and mod basics", "[index_expr]") {
  const IndexExpr x = IndexExpr::var("x", 100), y = IndexExpr::var("y", 8);
  REQUIRE(floordiv(x, 1) == x);
  REQUIRE(mod(x, 1) == IndexExpr(0));
  // Bounds.
  REQUIRE(floordiv(y, 8) == IndexExpr(0));
  REQUIRE(mod(y, 8) == y);
  REQUIRE(floordiv(y, 100) == IndexExpr(0));
  REQUIRE(mod(y, 9) == y);
  REQUIRE(floordiv(y + 8, 8) == IndexExpr(1));
  REQUIRE(mod(y + 8, 8) == y);
  REQUIRE(floordiv(x, 100) == IndexExpr(0));
  REQUIRE(mod(x, 100) == x);
  REQUIRE(floordiv(x, 99) != IndexExpr(0));
  // Pulling out multiples of the divisor.
  REQUIRE(floordiv(8 * x + y, 8) == x);
  REQUIRE(mod(8 * x + y, 8) == y);
  const IndexExpr w = IndexExpr::var("w", 20);
  REQUIRE(floordiv(8 * x + w, 8) == x + floordiv(w, 8));
  REQUIRE(mod(8 * x + w, 8) == mod(w, 8));
  REQUIRE(floordiv(16 * x + w, 8) == 2 * x + floordiv(w, 8));
  REQUIRE(mod(16 * x + w + 3, 8) == mod(w + 3, 8));
  // Common factors: floordiv(g*e, g*c) = floordiv(e, c), also with a small remainder.
  REQUIRE(floordiv(4 * x, 8) == floordiv(x, 2));
  REQUIRE(mod(4 * x, 8) == 4 * mod(x, 2));
  const IndexExpr r = IndexExpr::var("r", 4);
  REQUIRE(floordiv(4 * x + r, 8) == floordiv(x, 2));
  REQUIRE(mod(4 * x + r, 8) == 4 * mod(x, 2) + r);
  REQUIRE(floordiv(6 * x + 3 * w, 9) == floordiv(2 * x + w, 3));
  // Nesting; mod stays outside floordiv.
  REQUIRE(floordiv(floordiv(x, 3), 5) == floordiv(x, 15));
  REQUIRE(mod(mod(x, 12), 4) == mod(x, 4));
  REQUIRE(mod(mod(x, 4), 12) == mod(x, 4));
  REQUIRE(floordiv(mod(x, 12), 4) == mod(floordiv(x, 4), 3));
  REQUIRE(mod(floordiv(x, 4), 3).kind() == IndexExpr::Kind::Mod);
  REQUIRE(mod(floordiv(x, 4), 30) == floordiv(x, 4));  // x // 4 < 25
  // Divisors must be positive constants.
  REQUIRE_THROWS(floordiv(x, 0));
  REQUIRE_THROWS(mod(x, -2));
  REQUIRE_THROWS(floordiv(x, y));
}

TEST_CASE("index_expr: recombination in sums", "[index_expr]") {
  const IndexExpr x = IndexExpr::var("x", 1000);
  REQUIRE(4 * floordiv(x, 4) + mod(x, 4) == x);
  REQUIRE(mod(x, 4) + floordiv(x, 4) * 4 == x);
  REQUIRE(12 * floordiv(x, 4) + 3 * mod(x, 4) == 3 * x);
  REQUIRE(-4 * floordiv(x, 4) - mod(x, 4) == IndexExpr(0) - x);
  REQUIRE(4 * mod(floordiv(x, 4), 3) + mod(x, 4) == mod(x, 12));
  REQUIRE(8 * mod(floordiv(x, 4), 3) + 2 * mod(x, 4) == 2 * mod(x, 12));
  REQUIRE(12 * floordiv(x, 12) + 4 * mod(floordiv(x, 4), 3) + mod(x, 4) == x);
  REQUIRE(x - 4 * floordiv(x, 4) == mod(x, 4));
  // Only the exact pattern folds; other coefficients are left alone.
  REQUIRE(5 * floordiv(x, 4) + mod(x, 4) != x);
  REQUIRE(eval1(5 * floordiv(x, 4) + mod(x, 4), "x", 9) == 11);
  // Compound numerators.
  const IndexExpr y = IndexExpr::var("y", 50);
  const IndexExpr e = x + 3 * y;
  REQUIRE(5 * floordiv(e, 5) + mod(e, 5) == e);
  REQUIRE(5 * floordiv(e + 7, 5) + mod(e + 7, 5) == e + 7);
  REQUIRE(5 * mod(floordiv(e, 5), 7) + mod(e, 5) == mod(e, 35));
  // With other terms around.
  REQUIRE(y + 4 * floordiv(x, 4) + 2 + mod(x, 4) == x + y + 2);
}

TEST_CASE("index_expr: unflatten / linear_index round trips", "[index_expr]") {
  const std::vector<std::vector<i64>> shapes = {
      {1},       {5},       {7, 1, 13}, {3, 5, 7},    {1, 1, 9},    {1, 9, 1},    {9, 1, 1},
      {1, 1, 1}, {2, 3, 4}, {4, 4, 4},  {2, 3, 4, 5}, {1, 3, 1, 5}, {6, 1, 2, 1}, {2, 2, 2, 2, 2},
      {13, 7},   {7, 13},   {32, 128},  {3, 1, 1, 7}, {1, 1, 1, 1, 4}};
  for (const auto& s : shapes) check_roundtrips(s);

  // Random shapes up to rank 5.
  std::mt19937 rng(1234);
  for (int it = 0; it < 200; ++it) {
    const int rank = std::uniform_int_distribution<int>(1, 5)(rng);
    std::vector<i64> shape;
    for (int d = 0; d < rank; ++d) shape.push_back(std::uniform_int_distribution<int>(1, 6)(rng));
    check_roundtrips(shape);
  }
}

TEST_CASE("index_expr: row/reduction split", "[index_expr]") {
  for (i64 a : {1, 2, 3, 7})
    for (i64 b : {1, 2, 5, 13})
      for (i64 c : {1, 3, 4, 11}) check_row_split(a, b, c);
  // The example from the header.
  const IndexExpr x = IndexExpr::var("x", 64), r = IndexExpr::var("r", 8192);
  auto coords = unflatten_index(x, {8, 8});
  coords.push_back(r);
  REQUIRE(linear_index(coords, contiguous_strides({8, 8, 8192})) == x * 8192 + r);
}

TEST_CASE("index_expr: reshaped row/reduction views", "[index_expr]") {
  // Rows x over A*B, reduction r over C1*C2; the flat offset x*C + r viewed as
  // [A, B, C1, C2] separates into row and reduction coordinates and folds back.
  for (i64 a : {1, 2, 3})
    for (i64 b : {1, 4, 5})
      for (i64 c1 : {1, 2, 3})
        for (i64 c2 : {1, 2, 7}) {
          INFO("A=" << a << " B=" << b << " C1=" << c1 << " C2=" << c2);
          const IndexExpr x = IndexExpr::var("x", a * b), r = IndexExpr::var("r", c1 * c2);
          const IndexExpr flat = x * (c1 * c2) + r;
          const auto coords = unflatten_index(flat, {a, b, c1, c2});
          REQUIRE_FALSE(coords[0].uses_var("r"));
          REQUIRE_FALSE(coords[1].uses_var("r"));
          REQUIRE_FALSE(coords[2].uses_var("x"));
          REQUIRE_FALSE(coords[3].uses_var("x"));
          REQUIRE(linear_index(coords, contiguous_strides({a, b, c1, c2})) == flat);
          // Viewed as [A*B*C1, C2] as well.
          REQUIRE(linear_index(unflatten_index(flat, {a * b * c1, c2}), {c2, 1}) == flat);
        }
}

TEST_CASE("index_expr: unflatten coordinates", "[index_expr]") {
  const IndexExpr x = IndexExpr::var("x", 3 * 5 * 7);
  const auto c = unflatten_index(x, {3, 5, 7});
  REQUIRE(c[0] == floordiv(x, 35));  // no "% 3": x // 35 < 3 already
  REQUIRE(c[1] == mod(floordiv(x, 7), 5));
  REQUIRE(c[2] == mod(x, 7));
  REQUIRE(c[1].str() == "(x // 7) % 5");
  // A flat index larger than the shape keeps the outer mod.
  const IndexExpr big = IndexExpr::var("x", 1000);
  REQUIRE(unflatten_index(big, {3, 5, 7})[0] == mod(floordiv(big, 35), 3));
  // Size-1 dims give 0.
  const auto ones = unflatten_index(x, {1, 105, 1});
  REQUIRE(ones[0] == IndexExpr(0));
  REQUIRE(ones[1] == x);
  REQUIRE(ones[2] == IndexExpr(0));
  REQUIRE(contiguous_strides({3, 5, 7}) == std::vector<i64>{35, 7, 1});
  REQUIRE(contiguous_strides({}) == std::vector<i64>{});
  REQUIRE(contiguous_strides({2, 0, 3}) == std::vector<i64>{3, 3, 1});
  REQUIRE_THROWS(linear_index({x}, {1, 2}));
}

TEST_CASE("index_expr: bounds", "[index_expr]") {
  const IndexExpr x = IndexExpr::var("x", 10), y = IndexExpr::var("y", 4);
  REQUIRE(x.min_value() == 0);
  REQUIRE(x.max_value() == 9);
  REQUIRE((3 * x + y + 2).min_value() == 2);
  REQUIRE((3 * x + y + 2).max_value() == 32);
  REQUIRE((x - y).min_value() == -3);
  REQUIRE((x - y).max_value() == 9);
  REQUIRE((x * y).max_value() == 27);
  REQUIRE((IndexExpr(0) - 2 * x).min_value() == -18);
  REQUIRE(floordiv(x, 3).max_value() == 3);
  REQUIRE(mod(x, 4).min_value() == 0);
  REQUIRE(mod(x, 4).max_value() == 3);
  REQUIRE(mod(x - y, 4).max_value() == 3);
  REQUIRE(mod(x * y, 100).max_value() == 27);  // e % c <= e for e >= 0
  REQUIRE(floordiv(x - 5, 3).min_value() == -2);
}

TEST_CASE("index_expr: differential test against brute force", "[index_expr]") {
  std::mt19937 seeds(42);
  std::vector<IndexExpr> pool;
  int checked = 0;
  for (int it = 0; it < 6000; ++it) {
    const i64 ex = 1 + static_cast<i64>(seeds() % 7), ey = 1 + static_cast<i64>(seeds() % 6);
    Generator gen(static_cast<std::uint32_t>(seeds()), ex, ey);
    const RandomExpr a = gen.make(1 + it % 5);
    const RandomExpr b = gen.make(1 + it % 4);
    INFO("expr: " << a.expr.str() << "  (x < " << ex << ", y < " << ey << ")");
    for (i64 x = 0; x < ex; ++x) {
      for (i64 y = 0; y < ey; ++y) {
        const i64 want = a.ref(x, y);
        const i64 got = eval2(a.expr, x, y);
        if (got != want) {
          INFO("x=" << x << " y=" << y);
          REQUIRE(got == want);
        }
        if (want < a.expr.min_value() || want > a.expr.max_value()) {
          INFO("x=" << x << " y=" << y << " bounds [" << a.expr.min_value() << ", " << a.expr.max_value() << "]");
          REQUIRE(false);
        }
        ++checked;
      }
    }
    // Canonical forms are fixpoints, and simple identities hold structurally.
    REQUIRE(rebuild(a.expr) == a.expr);
    REQUIRE(a.expr - a.expr == IndexExpr(0));
    REQUIRE(a.expr + a.expr == 2 * a.expr);
    REQUIRE(a.expr + b.expr == b.expr + a.expr);
    REQUIRE((a.expr + b.expr).hash() == (b.expr + a.expr).hash());
    REQUIRE(a.expr * 3 - a.expr == 2 * a.expr);

    // Substitution re-canonicalizes and keeps the value: x -> (3*z + y) % ex.
    const IndexExpr z = IndexExpr::var("z", 5);
    const IndexExpr sx = mod(3 * z + IndexExpr::var("y", ey), ex);
    const IndexExpr sub = a.expr.substitute([&](const IndexExpr& v) { return v.name() == "x" ? sx : v; });
    REQUIRE_FALSE(sub.uses_var("x"));
    REQUIRE(rebuild(sub) == sub);
    for (i64 zv = 0; zv < 5; ++zv) {
      for (i64 y = 0; y < ey; ++y) {
        const i64 got = sub.eval([&](const std::string& n) { return n == "z" ? zv : y; });
        REQUIRE(got == a.ref(py_mod(3 * zv + y, ex), y));
      }
    }
    if (it % 10 == 0) pool.push_back(a.expr);
  }
  REQUIRE(checked > 10000);

  // operator< is a strict total order consistent with == and hash.
  for (const auto& p : pool) {
    for (const auto& q : pool) {
      const int relations = (p < q) + (q < p) + (p == q);
      REQUIRE(relations == 1);
      if (p == q) REQUIRE(p.hash() == q.hash());
    }
  }
  for (std::size_t i = 0; i + 2 < pool.size(); ++i) {
    const auto &p = pool[i], &q = pool[i + 1], &r = pool[i + 2];
    if (p < q && q < r) REQUIRE(p < r);
  }
  std::set<IndexExpr> ordered(pool.begin(), pool.end());
  std::unordered_set<IndexExpr, IndexExprHash> hashed(pool.begin(), pool.end());
  REQUIRE(ordered.size() == hashed.size());
}

TEST_CASE("index_expr: targeted differential test of division rules", "[index_expr]") {
  // Linear numerators with coefficients sharing factors with the divisor,
  // over wider ranges than the random trees reach.
  std::mt19937 rng(7);
  auto pick = [&](i64 lo, i64 hi) { return std::uniform_int_distribution<i64>(lo, hi)(rng); };
  for (int it = 0; it < 3000; ++it) {
    const i64 ex = pick(1, 24), ey = pick(1, 24);
    const IndexExpr x = IndexExpr::var("x", ex), y = IndexExpr::var("y", ey);
    const i64 a = pick(-12, 24), b = pick(-6, 24), k = pick(-30, 30), c = pick(1, 24), d = pick(1, 8);
    const IndexExpr n = a * x + b * y + k;
    const IndexExpr q = floordiv(n, c), m = mod(n, c);
    const IndexExpr q2 = floordiv(q, d), m2 = mod(q, d), m3 = mod(m, d), q3 = floordiv(m, d);
    const IndexExpr recomb = c * q + m;  // must fold back to n
    INFO("n = " << n.str() << ", c = " << c << ", d = " << d);
    REQUIRE(recomb == n);
    for (i64 xv = 0; xv < ex; ++xv) {
      for (i64 yv = 0; yv < ey; ++yv) {
        const i64 nv = a * xv + b * yv + k;
        REQUIRE(eval2(q, xv, yv) == py_floordiv(nv, c));
        REQUIRE(eval2(m, xv, yv) == py_mod(nv, c));
        REQUIRE(eval2(q2, xv, yv) == py_floordiv(py_floordiv(nv, c), d));
        REQUIRE(eval2(m2, xv, yv) == py_mod(py_floordiv(nv, c), d));
        REQUIRE(eval2(m3, xv, yv) == py_mod(py_mod(nv, c), d));
        REQUIRE(eval2(q3, xv, yv) == py_floordiv(py_mod(nv, c), d));
        for (const auto& e : {q, m, q2, m2, m3, q3}) {
          const i64 v = eval2(e, xv, yv);
          REQUIRE(v >= e.min_value());
          REQUIRE(v <= e.max_value());
        }
      }
    }
  }
}

TEST_CASE("index_expr: substitute", "[index_expr]") {
  const IndexExpr x = IndexExpr::var("x", 64), r = IndexExpr::var("r", 8), y = IndexExpr::var("y", 16);
  const IndexExpr e = 4 * x + r;
  const IndexExpr s = e.substitute([&](const IndexExpr& v) { return v.name() == "x" ? y + 1 : v; });
  REQUIRE(s == 4 * y + r + 4);
  // x -> 8*y + z makes (x % 8) collapse to z.
  const IndexExpr z = IndexExpr::var("z", 8);
  const IndexExpr m = mod(x, 8) + 8 * floordiv(x, 8) * 0 + floordiv(x, 8);
  const IndexExpr t = m.substitute([&](const IndexExpr& v) { return v.name() == "x" ? 8 * y + z : v; });
  REQUIRE(t == z + y);
  // Identity substitution returns an equal expression.
  REQUIRE(e.substitute([](const IndexExpr& v) { return v; }) == e);
  // Substituting a constant folds.
  REQUIRE(mod(x * 3 + r, 5).substitute([](const IndexExpr& v) { return IndexExpr(v.name() == "x" ? 2 : 1); }) ==
          IndexExpr(2));
  REQUIRE(e.uses_var("x"));
  REQUIRE(e.uses_var("r"));
  REQUIRE_FALSE(e.uses_var("y"));
  REQUIRE(mod(floordiv(x, 4), 3).uses_var("x"));
}

TEST_CASE("index_expr: str", "[index_expr]") {
  const IndexExpr x = IndexExpr::var("x", 1 << 20), r = IndexExpr::var("r", 8192), y = IndexExpr::var("y", 100);
  REQUIRE((x * 8192 + r).str() == "x*8192 + r");
  REQUIRE((r + 8192 * x).str() == "x*8192 + r");
  REQUIRE(mod(floordiv(x, 8), 3).str() == "(x // 8) % 3");
  REQUIRE(floordiv(x, 8).str() == "x // 8");
  REQUIRE((x - 1).str() == "x - 1");
  REQUIRE((IndexExpr(0) - x).str() == "-x");
  REQUIRE((IndexExpr(0) - 2 * x).str() == "-x*2");
  REQUIRE((x * y).str() == "x*y");
  REQUIRE((3 * x * y).str() == "x*y*3");
  REQUIRE(floordiv(x + y, 4).str() == "(x + y) // 4");
  REQUIRE((3 * mod(x, 5) + 2).str() == "(x % 5)*3 + 2");
  REQUIRE(IndexExpr(-7).str() == "-7");
  REQUIRE(x.str() == "x");
}

TEST_CASE("index_expr: many expressions stay fast", "[index_expr]") {
  // A compile-path-sized workload: a few thousand 4-d round trips.
  const IndexExpr x = IndexExpr::var("x", 2 * 3 * 5 * 7 * 11);
  int ok = 0;
  for (int i = 0; i < 2000; ++i) {
    const std::vector<i64> shape = {2, 3 * 5, 7, 11};
    ok += linear_index(unflatten_index(x, shape), contiguous_strides(shape)) == x;
  }
  REQUIRE(ok == 2000);
}

TEST_CASE("strides of a dense tensor stored in a dim order", "[index]") {
  using dv::ir::ordered_strides;
  REQUIRE(ordered_strides({2, 8, 9, 11}, {0, 2, 3, 1}) == std::vector<i64>{792, 1, 88, 8});  // channels-last, as ATen
  REQUIRE(ordered_strides({2, 8, 9, 11}, {}) == contiguous_strides({2, 8, 9, 11}));
  REQUIRE(ordered_strides({3, 0, 5}, {2, 0, 1}) == std::vector<i64>{1, 1, 3});  // a size-0 dim counts as 1
}

TEST_CASE("absolute values fold by bounds, are canonical up to sign, and evaluate exactly", "[index]") {
  const IndexExpr x = IndexExpr::var("x", 20);
  CHECK(absolute(x) == x);                  // non-negative: itself
  CHECK(absolute(x - 25) == 25 - x);        // non-positive: negated
  CHECK(absolute(IndexExpr(-7)) == IndexExpr(7));
  const IndexExpr a = absolute(x - 9);
  REQUIRE(a.kind() == IndexExpr::Kind::Abs);
  CHECK(absolute(9 - x) == a);              // |-e| = |e|: one canonical form
  CHECK(rebuild(a) == a);
  CHECK(a.min_value() == 0);
  CHECK(a.max_value() == 10);
  // Reflection at both edges of a dim of 16 padded by 3: n-1 - |n-1 - |k||.
  const IndexExpr o = IndexExpr::var("x", 22);
  const IndexExpr k = o - 3;
  const IndexExpr reflected = 15 - absolute(15 - absolute(k));
  CHECK(reflected.min_value() >= -15);
  for (i64 v = 0; v < 22; ++v) {
    const i64 kk = v - 3;
    const i64 want = kk < 0 ? -kk : (kk > 15 ? 30 - kk : kk);
    CHECK(eval1(reflected, "x", v) == want);
  }
  // Replication: (|k| - |k - (n-1)| + n-1) / 2 clamps k to [0, n-1].
  const IndexExpr clamped = floordiv(absolute(k) - absolute(k - 15) + 15, 2);
  for (i64 v = 0; v < 22; ++v) CHECK(eval1(clamped, "x", v) == std::min<i64>(std::max<i64>(v - 3, 0), 15));
  // Substitution re-canonicalizes: x -> x + 9 makes the operand non-negative.
  CHECK(a.substitute([](const IndexExpr&) { return IndexExpr::var("x", 20) + 9; }) == IndexExpr::var("x", 20));
  CHECK(a.str() == "|x - 9|");
}
