// Tests of the CUDA C emitter: lane analysis, structure of the generated
// source, and NVRTC compilation (sm_90) of a catalog of kernels covering
// pointwise chains in every dtype, broadcasts, transposes, tails, row
// reductions of every op and size, softmax and layer_norm.
//
// emitter_test_kernels() is also the input of the GPU differential check
// (compare with the CPU interpreter on random data), so every kernel here must
// be valid IR with in-range indices.
#include <cmath>
#include <algorithm>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "catch.h"
#include "codegen/cuda_emitter.h"
#include "ir/loop_ir.h"
#include "runtime/nvrtc.h"

namespace emitter_test {

using dv::codegen::CudaKernel;
using dv::codegen::DeviceSpec;
using dv::codegen::emit_cuda;
using dv::codegen::KernelTuning;
using dv::codegen::LaneAccess;
using dv::ir::DType;
using dv::ir::IndexExpr;
using dv::ir::Kernel;
using dv::ir::KernelBuilder;
using dv::ir::PrimOp;
using dv::ir::ReduceOp;
using dv::ir::ValueId;

struct TestKernel {
  Kernel kernel;
  double lo = -2, hi = 2;  // range of random float inputs for the GPU check
  bool gpu = true;         // small enough to check against the interpreter on a GPU
};

inline ValueId f32c(KernelBuilder& b, double v) { return b.constant(v, DType::Float32); }

// gelu(1.5x + 0.3) * sigmoid(x), the pointwise benchmark; in/out of dtype dt.
inline Kernel gelu_chain(const std::string& name, DType dt, std::int64_t n) {
  KernelBuilder b(name, n, 1);
  const int in = b.buffer("in", dt, n), out = b.buffer("out", dt, n);
  const ValueId x = b.load(in, b.x());
  const ValueId y = b.binary(PrimOp::Add, b.binary(PrimOp::Mul, x, f32c(b, 1.5)), f32c(b, 0.3));
  const ValueId erf = b.unary(PrimOp::Erf, b.binary(PrimOp::Mul, y, f32c(b, 0.7071067811865476)));
  const ValueId gelu = b.binary(PrimOp::Mul, b.binary(PrimOp::Mul, y, f32c(b, 0.5)),
                                b.binary(PrimOp::Add, f32c(b, 1), erf));
  const ValueId one = f32c(b, 1);
  const ValueId sig = b.binary(PrimOp::Div, one, b.binary(PrimOp::Add, one, b.unary(PrimOp::Exp, b.unary(PrimOp::Neg, x))));
  b.store(out, b.x(), b.binary(PrimOp::Mul, gelu, sig));
  return std::move(b).finish();
}

// out[i, j] = in[i, j] * scale[i] + bias[j] over rows x cols (bias broadcast
// along rows: contiguous; scale along columns: uniform within a vector).
inline Kernel bias_broadcast(const std::string& name, std::int64_t rows, std::int64_t cols) {
  KernelBuilder b(name, rows * cols, 1);
  const int in = b.buffer("in", DType::Float32, rows * cols), bias = b.buffer("bias", DType::Float32, cols),
            scale = b.buffer("scale", DType::Float32, rows), out = b.buffer("out", DType::Float32, rows * cols);
  const IndexExpr x = b.x();
  const ValueId v = b.binary(PrimOp::Mul, b.load(in, x), b.load(scale, dv::ir::floordiv(x, cols)));
  b.store(out, x, b.binary(PrimOp::Add, v, b.load(bias, dv::ir::mod(x, cols))));
  return std::move(b).finish();
}

// out = in^T + 1: in is [m, n], out is [n, m]; the load is strided.
inline Kernel transpose_add(const std::string& name, std::int64_t m, std::int64_t n) {
  KernelBuilder b(name, m * n, 1);
  const int in = b.buffer("in", DType::Float32, m * n), out = b.buffer("out", DType::Float32, m * n);
  const IndexExpr x = b.x();  // x = i*m + j over out[i, j], i < n, j < m
  const IndexExpr src = dv::ir::mod(x, m) * n + dv::ir::floordiv(x, m);
  b.store(out, x, b.binary(PrimOp::Add, b.load(in, src), f32c(b, 1)));
  return std::move(b).finish();
}

// A half-precision chain: out = round_to(dt)(tanh(a * 2 + b)).
inline Kernel half_chain(const std::string& name, DType dt, std::int64_t n) {
  KernelBuilder b(name, n, 1);
  const int a = b.buffer("a", dt, n), c = b.buffer("b", dt, n), out = b.buffer("out", dt, n);
  const ValueId v = b.binary(PrimOp::Add, b.binary(PrimOp::Mul, b.load(a, b.x()), f32c(b, 2)), b.load(c, b.x()));
  b.store(out, b.x(), b.unary(PrimOp::Tanh, v));
  return std::move(b).finish();
}

// Mixed storage types: f16 and f32 in, bf16 and f32 out.
inline Kernel mixed_types(const std::string& name, std::int64_t n) {
  KernelBuilder b(name, n, 1);
  const int h = b.buffer("h", DType::Float16, n), f = b.buffer("f", DType::Float32, n),
            ob = b.buffer("out_bf16", DType::BFloat16, n), of = b.buffer("out_f32", DType::Float32, n);
  const ValueId s = b.binary(PrimOp::Sub, b.load(h, b.x()), b.load(f, b.x()));
  b.store(ob, b.x(), s);
  b.store(of, b.x(), b.binary(PrimOp::Maximum, s, f32c(b, 0)));
  return std::move(b).finish();
}

// Integer arithmetic in dt (Int32 or Int64): division, modulo, powers, wrap-around.
inline Kernel int_chain(const std::string& name, DType dt, std::int64_t n) {
  KernelBuilder b(name, n, 1);
  const int a = b.buffer("a", dt, n), c = b.buffer("b", dt, n);
  const int q = b.buffer("quot", dt, n), r = b.buffer("rem", dt, n), p = b.buffer("misc", dt, n);
  const ValueId x = b.load(a, b.x()), y = b.load(c, b.x());
  b.store(q, b.x(), b.binary(PrimOp::Add, b.binary(PrimOp::FloorDiv, x, y), b.binary(PrimOp::Div, x, y)));
  b.store(r, b.x(), b.binary(PrimOp::Mod, x, y));
  const ValueId pw = b.binary(PrimOp::Pow, x, b.binary(PrimOp::Mod, y, b.int_constant(4, dt)));
  const ValueId mx = b.binary(PrimOp::Maximum, b.unary(PrimOp::Abs, x), b.unary(PrimOp::Neg, y));
  const ValueId big = b.binary(PrimOp::Mul, x, b.int_constant(dt == DType::Int32 ? 1000003 : 4000000000007LL, dt));
  b.store(p, b.x(), b.binary(PrimOp::Sub, b.binary(PrimOp::Add, pw, mx), b.binary(PrimOp::Minimum, big, y)));
  return std::move(b).finish();
}

// iota: out_i64[x] = x*3 - 7, out_f32[x] = float((x*3 - 7) % 5).
inline Kernel iota(const std::string& name, std::int64_t n) {
  KernelBuilder b(name, n, 1);
  const int oi = b.buffer("out_i64", DType::Int64, n), of = b.buffer("out_f32", DType::Float32, n);
  const ValueId i = b.binary(PrimOp::Sub, b.binary(PrimOp::Mul, b.index_value(b.x()), b.int_constant(3, DType::Int64)),
                             b.int_constant(7, DType::Int64));
  b.store(oi, b.x(), i);
  b.store(of, b.x(), b.cast(b.binary(PrimOp::Mod, i, b.int_constant(5, DType::Int64)), DType::Float32));
  return std::move(b).finish();
}

// Booleans: mask loads, logic, where, bool stores.
inline Kernel bool_chain(const std::string& name, std::int64_t n) {
  KernelBuilder b(name, n, 1);
  const int a = b.buffer("a", DType::Float32, n), m = b.buffer("mask", DType::Bool, n),
            ob = b.buffer("out_mask", DType::Bool, n), of = b.buffer("out", DType::Float32, n);
  const ValueId x = b.load(a, b.x()), mask = b.load(m, b.x());
  const ValueId pos = b.binary(PrimOp::Gt, x, f32c(b, 0));
  const ValueId keep = b.binary(PrimOp::LogicalXor, b.binary(PrimOp::LogicalAnd, pos, mask),
                                b.unary(PrimOp::IsNan, x));
  b.store(ob, b.x(), b.binary(PrimOp::LogicalOr, keep, b.unary(PrimOp::LogicalNot, mask)));
  b.store(of, b.x(), b.where(keep, x, b.unary(PrimOp::Neg, x)));
  return std::move(b).finish();
}

// Doubles: exp and rounding in f64, stored as f64, f32, f16 and bf16.
inline Kernel f64_chain(const std::string& name, std::int64_t n) {
  KernelBuilder b(name, n, 1);
  const int a = b.buffer("a", DType::Float64, n), o = b.buffer("out", DType::Float64, n),
            o32 = b.buffer("out_f32", DType::Float32, n), oh = b.buffer("out_f16", DType::Float16, n),
            ob = b.buffer("out_bf16", DType::BFloat16, n);
  const ValueId x = b.load(a, b.x());
  const ValueId e = b.binary(PrimOp::Add, b.unary(PrimOp::Exp, x), b.unary(PrimOp::Round, b.binary(PrimOp::Mul, x, b.constant(3.3, DType::Float64))));
  b.store(o, b.x(), e);
  b.store(o32, b.x(), e);
  b.store(oh, b.x(), e);
  b.store(ob, b.x(), e);
  return std::move(b).finish();
}

// Conversions on store: f32 -> i32 (truncation), i64 -> i32 (wrap), f32 -> b8.
inline Kernel cast_store(const std::string& name, std::int64_t n) {
  KernelBuilder b(name, n, 1);
  const int a = b.buffer("a", DType::Float32, n), oi = b.buffer("out_i32", DType::Int32, n),
            ow = b.buffer("out_wrap", DType::Int32, n), ob = b.buffer("out_b8", DType::Bool, n);
  const ValueId x = b.binary(PrimOp::Mul, b.load(a, b.x()), f32c(b, 100));
  b.store(oi, b.x(), x);
  b.store(ow, b.x(), b.binary(PrimOp::Mul, b.cast(x, DType::Int64), b.int_constant(100000000, DType::Int64)));
  b.store(ob, b.x(), b.unary(PrimOp::Trunc, b.binary(PrimOp::Div, x, f32c(b, 100))));
  return std::move(b).finish();
}

// out[x] = in[x + shift] * s[0]: misaligned (scalar) loads and a one-element broadcast.
inline Kernel shifted(const std::string& name, std::int64_t n, std::int64_t shift, bool aligned) {
  KernelBuilder b(name, n, 1);
  const int in = b.buffer("in", DType::Float32, n + shift, aligned), s = b.buffer("s", DType::Float32, 1),
            out = b.buffer("out", DType::Float32, n, aligned);
  b.store(out, b.x(), b.binary(PrimOp::Mul, b.load(in, b.x() + shift), b.load(s, IndexExpr(0))));
  return std::move(b).finish();
}

// out[x] = reduce_r in[x*R + r] (in dt; result stored in dt).
inline Kernel row_reduce(const std::string& name, ReduceOp op, DType dt, std::int64_t rows, std::int64_t r) {
  KernelBuilder b(name, rows, r);
  const int in = b.buffer("in", dt, rows * r), out = b.buffer("out", dt, rows);
  b.store(out, b.x(), b.reduce(op, b.load(in, b.x() * r + b.r())));
  return std::move(b).finish();
}

// A row sum over a padded row: out[x] = sum over r of (lo <= r < hi ? in[x, r - lo] : -0.5),
// the pad's edges even (so pairs of lanes take the load or skip it together).
inline Kernel padded_row_sum(const std::string& name, std::int64_t rows, std::int64_t r, std::int64_t lo, std::int64_t hi) {
  KernelBuilder b(name, rows, r);
  const int in = b.buffer("in", DType::Float32, rows * (hi - lo)), out = b.buffer("out", DType::Float32, rows);
  const ValueId rv = b.index_value(b.r());
  dv::ir::LoadOptions inside;
  inside.mask = b.binary(PrimOp::LogicalAnd, b.binary(PrimOp::Ge, rv, b.int_constant(lo, DType::Int64)),
                         b.binary(PrimOp::Lt, rv, b.int_constant(hi, DType::Int64)));
  inside.other = -0.5;
  b.store(out, b.x(), b.reduce(ReduceOp::Sum, b.load(in, b.x() * (hi - lo) + b.r() - lo, inside)));
  return std::move(b).finish();
}

// Softmax over rows: max, exp, sum, divide.
inline Kernel softmax(const std::string& name, DType dt, std::int64_t rows, std::int64_t r) {
  KernelBuilder b(name, rows, r);
  const int in = b.buffer("in", dt, rows * r), out = b.buffer("out", dt, rows * r);
  const IndexExpr i = b.x() * r + b.r();
  const ValueId v = b.load(in, i);
  const ValueId m = b.reduce(ReduceOp::Max, v);
  const ValueId e = b.unary(PrimOp::Exp, b.binary(PrimOp::Sub, v, m));
  const ValueId s = b.reduce(ReduceOp::Sum, e);
  b.store(out, i, b.binary(PrimOp::Div, e, s));
  return std::move(b).finish();
}

// native_layer_norm: y = (x - mean) * rstd * w[r] + b[r], plus mean[x] and rstd[x].
// How x - mean is formed (Center): eager's sum / N; p + sum(x - p) / N with p
// the row's first element (session 22's lowering); or (x - p) - sum(x - p) / N
// (the lowering's form now, codegen/lowering.cpp RowCenter).
enum class Center { Plain, PivotedMean, Pivoted };
inline Kernel layer_norm(const std::string& name, DType dt, std::int64_t rows, std::int64_t r,
                         Center center = Center::Plain) {
  KernelBuilder b(name, rows, r);
  const int in = b.buffer("in", dt, rows * r), w = b.buffer("weight", dt, r), bias = b.buffer("bias", dt, r),
            out = b.buffer("out", dt, rows * r), om = b.buffer("mean", DType::Float32, rows),
            orstd = b.buffer("rstd", DType::Float32, rows);
  const IndexExpr i = b.x() * r + b.r();
  const ValueId v = b.load(in, i);
  const ValueId n = f32c(b, static_cast<double>(r));
  ValueId mean = b.binary(PrimOp::Div, b.reduce(ReduceOp::Sum, v), n);
  ValueId d = b.binary(PrimOp::Sub, v, mean);
  if (center != Center::Plain) {
    const ValueId p = b.load(in, b.x() * r);
    const ValueId shifted = b.binary(PrimOp::Sub, v, p);
    const ValueId shift = b.binary(PrimOp::Div, b.reduce(ReduceOp::Sum, shifted), n);
    mean = b.binary(PrimOp::Add, p, shift);
    d = center == Center::Pivoted ? b.binary(PrimOp::Sub, shifted, shift) : b.binary(PrimOp::Sub, v, mean);
  }
  const ValueId var = b.binary(PrimOp::Div, b.reduce(ReduceOp::Sum, b.binary(PrimOp::Mul, d, d)), n);
  const ValueId rstd = b.unary(PrimOp::Rsqrt, b.binary(PrimOp::Add, var, f32c(b, 1e-5)));
  const ValueId y = b.binary(PrimOp::Add, b.binary(PrimOp::Mul, b.binary(PrimOp::Mul, d, rstd), b.load(w, b.r())),
                             b.load(bias, b.r()));
  b.store(out, i, y);
  b.store(om, b.x(), mean);
  b.store(orstd, b.x(), rstd);
  return std::move(b).finish();
}

// Two independent reductions in one pass (sum and sum of squares), a per-row
// scale loaded at x level, an r-level store of the centered row and x-level stores.
inline Kernel moments(const std::string& name, std::int64_t rows, std::int64_t r) {
  KernelBuilder b(name, rows, r);
  const int in = b.buffer("in", DType::Float32, rows * r), sc = b.buffer("scale", DType::Float32, rows),
            ovar = b.buffer("var", DType::Float32, rows), oc = b.buffer("centered", DType::Float32, rows * r);
  const IndexExpr i = b.x() * r + b.r();
  const ValueId v = b.binary(PrimOp::Mul, b.load(in, i), b.load(sc, b.x()));
  const ValueId n = f32c(b, static_cast<double>(r));
  const ValueId mean = b.binary(PrimOp::Div, b.reduce(ReduceOp::Sum, v), n);
  const ValueId msq = b.binary(PrimOp::Div, b.reduce(ReduceOp::Sum, b.binary(PrimOp::Mul, v, v)), n);
  b.store(ovar, b.x(), b.binary(PrimOp::Sub, msq, b.binary(PrimOp::Mul, mean, mean)));
  b.store(oc, i, b.binary(PrimOp::Sub, v, mean));
  return std::move(b).finish();
}

// out[x] = sum_r in[r*X + x]: a reduction over the outer dimension.
inline Kernel column_sum(const std::string& name, std::int64_t cols, std::int64_t r) {
  KernelBuilder b(name, cols, r);
  const int in = b.buffer("in", DType::Float32, cols * r), out = b.buffer("out", DType::Float32, cols);
  b.store(out, b.x(), b.reduce(ReduceOp::Sum, b.load(in, b.r() * cols + b.x())));
  return std::move(b).finish();
}

// A 2-D pointwise kernel written over (x, r) with no reduction: out = in * w[r].
inline Kernel scale_rows(const std::string& name, std::int64_t rows, std::int64_t r) {
  KernelBuilder b(name, rows, r);
  const int in = b.buffer("in", DType::Float32, rows * r), w = b.buffer("w", DType::Float32, r),
            out = b.buffer("out", DType::Float32, rows * r);
  const IndexExpr i = b.x() * r + b.r();
  b.store(out, i, b.binary(PrimOp::Mul, b.load(in, i), b.load(w, b.r())));
  return std::move(b).finish();
}

// Reductions of booleans and of an iota: any(in > 0), all(in > 0), max over r of (r * 7) % 5.
inline Kernel bool_reduce(const std::string& name, std::int64_t rows, std::int64_t r) {
  KernelBuilder b(name, rows, r);
  const int in = b.buffer("in", DType::Float32, rows * r), oany = b.buffer("any", DType::Bool, rows),
            oall = b.buffer("all", DType::Bool, rows), oi = b.buffer("imax", DType::Int64, rows);
  const ValueId pos = b.binary(PrimOp::Gt, b.load(in, b.x() * r + b.r()), f32c(b, 0));
  b.store(oany, b.x(), b.reduce(ReduceOp::Max, pos));
  b.store(oall, b.x(), b.reduce(ReduceOp::Min, pos));
  b.store(oi, b.x(), b.reduce(ReduceOp::Max, b.index_value(dv::ir::mod(b.r() * 7 + b.x(), 5))));
  return std::move(b).finish();
}

// rnumel 0 or 1: out[x] = reduce(in[x*R + r]) + bias[x]; R == 0 gives the identity.
inline Kernel degenerate_reduce(const std::string& name, ReduceOp op, std::int64_t rows, std::int64_t r) {
  KernelBuilder b(name, rows, r);
  const int in = b.buffer("in", DType::Float32, rows * r), bias = b.buffer("bias", DType::Float32, rows),
            out = b.buffer("out", DType::Float32, rows);
  const ValueId red = b.reduce(op, b.load(in, b.x() * r + b.r()));
  b.store(out, b.x(), b.binary(PrimOp::Add, red, b.load(bias, b.x())));
  return std::move(b).finish();
}

// --- masked and indirect loads ---

// out[i, k] = table[idx[i], k]: an embedding of `rows` x `cols`, idx in dt (Int32 or Int64).
inline Kernel embedding(const std::string& name, DType dt, DType table_dt, std::int64_t n, std::int64_t rows,
                        std::int64_t cols) {
  KernelBuilder b(name, n * cols, 1);
  const int idx = b.buffer("idx", dt, n), table = b.buffer("table", table_dt, rows * cols),
            out = b.buffer("out", table_dt, n * cols);
  const ValueId row = b.load(idx, dv::ir::floordiv(b.x(), cols));
  b.store(out, b.x(), b.load(table, dv::ir::mod(b.x(), cols), dv::ir::LoadOptions{row, cols, rows}));
  return std::move(b).finish();
}

// Constant padding of a rows x cols f32 matrix by `pad` on each side of its
// last dim: out[i, j] = in[i, j - pad] inside, `value` outside.
inline Kernel pad_cols(const std::string& name, std::int64_t rows, std::int64_t cols, std::int64_t pad, double value) {
  const std::int64_t wide = cols + 2 * pad;
  KernelBuilder b(name, rows * wide, 1);
  const int in = b.buffer("in", DType::Float32, rows * cols), out = b.buffer("out", DType::Float32, rows * wide);
  const IndexExpr j = dv::ir::mod(b.x(), wide);
  const ValueId jv = b.index_value(j);
  const ValueId inside = b.binary(PrimOp::LogicalAnd, b.binary(PrimOp::Ge, jv, b.int_constant(pad, DType::Int64)),
                                  b.binary(PrimOp::Lt, jv, b.int_constant(pad + cols, DType::Int64)));
  dv::ir::LoadOptions masked;
  masked.mask = inside;
  masked.other = value;
  b.store(out, b.x(), b.load(in, dv::ir::floordiv(b.x(), wide) * cols + j - pad, masked));
  return std::move(b).finish();
}

// A cat of two parts along the innermost dim (channels-last activations):
// out[p, j] = j < a ? first[p, j] : second[p, j - a], C = a + b channels,
// each part a masked load.
inline Kernel cat_channels(const std::string& name, DType dt, std::int64_t pixels, std::int64_t a, std::int64_t c2) {
  const std::int64_t c = a + c2;
  KernelBuilder b(name, pixels * c, 1);
  const int first = b.buffer("first", dt, pixels * a), second = b.buffer("second", dt, pixels * c2),
            out = b.buffer("out", dt, pixels * c);
  const IndexExpr j = dv::ir::mod(b.x(), c), p = dv::ir::floordiv(b.x(), c);
  const ValueId jv = b.index_value(j);
  const ValueId in_first = b.binary(PrimOp::Lt, jv, b.int_constant(a, DType::Int64));
  dv::ir::LoadOptions from_first, from_second;
  from_first.mask = in_first;
  from_second.mask = b.binary(PrimOp::Ge, jv, b.int_constant(a, DType::Int64));
  const ValueId x1 = b.load(first, p * a + j, from_first);
  const ValueId x2 = b.load(second, p * c2 + j - a, from_second);
  b.store(out, b.x(), b.where(in_first, x1, x2));
  return std::move(b).finish();
}

// A 3x3 max pool, stride 2, padding 1, over planes of h x w (f32 or bf16):
// a row kernel over the 9 window points, padding masked to -inf.
inline Kernel max_pool(const std::string& name, DType dt, std::int64_t planes, std::int64_t h, std::int64_t w) {
  const std::int64_t oh = (h + 1) / 2, ow = (w + 1) / 2;
  KernelBuilder b(name, planes * oh * ow, 9);
  const int in = b.buffer("in", dt, planes * h * w), out = b.buffer("out", dt, planes * oh * ow);
  const IndexExpr x = b.x(), r = b.r();
  const IndexExpr ih = dv::ir::mod(dv::ir::floordiv(x, ow), oh) * 2 - 1 + dv::ir::floordiv(r, 3);
  const IndexExpr iw = dv::ir::mod(x, ow) * 2 - 1 + dv::ir::mod(r, 3);
  auto inside = [&](const IndexExpr& e, std::int64_t n) {
    const ValueId v = b.index_value(e);
    return b.binary(PrimOp::LogicalAnd, b.binary(PrimOp::Ge, v, b.int_constant(0, DType::Int64)),
                    b.binary(PrimOp::Lt, v, b.int_constant(n, DType::Int64)));
  };
  dv::ir::LoadOptions masked;
  masked.mask = b.binary(PrimOp::LogicalAnd, inside(ih, h), inside(iw, w));
  masked.other = -INFINITY;
  const ValueId v = b.load(in, dv::ir::floordiv(x, oh * ow) * (h * w) + ih * w + iw, masked);
  b.store(out, x, b.reduce(ReduceOp::Max, v));
  return std::move(b).finish();
}

// out[x] = sum over r of table[idx[x, r]] where idx >= 0: an r-level offset under an r-level mask.
inline Kernel bag_sum(const std::string& name, std::int64_t bags, std::int64_t per_bag, std::int64_t rows) {
  KernelBuilder b(name, bags, per_bag);
  const int idx = b.buffer("idx", DType::Int32, bags * per_bag), table = b.buffer("table", DType::Float32, rows),
            out = b.buffer("out", DType::Float32, bags);
  const ValueId o = b.load(idx, b.x() * per_bag + b.r());
  const ValueId valid = b.binary(PrimOp::Ge, o, b.int_constant(0, DType::Int32));
  b.store(out, b.x(), b.reduce(ReduceOp::Sum, b.load(table, IndexExpr(0), dv::ir::LoadOptions{o, 1, rows, valid, 0})));
  return std::move(b).finish();
}

// out[x, r] = in[x, r] * scale[pick[x]]: an x-level (scalar) indirect load in a row kernel.
inline Kernel picked_scale(const std::string& name, std::int64_t rows, std::int64_t r, std::int64_t scales) {
  KernelBuilder b(name, rows, r);
  const int in = b.buffer("in", DType::Float32, rows * r), pick = b.buffer("pick", DType::Int64, rows),
            scale = b.buffer("scale", DType::Float32, scales), out = b.buffer("out", DType::Float32, rows * r);
  const ValueId s = b.load(scale, IndexExpr(0), dv::ir::LoadOptions{b.load(pick, b.x()), 1, scales});
  const IndexExpr i = b.x() * r + b.r();
  b.store(out, i, b.binary(PrimOp::Mul, b.load(in, i), s));
  return std::move(b).finish();
}

// out[idx[x / cols], x % cols] = in[x] (or +=): rows written where their
// indices say (index_copy, index_add), into out's n_out rows.
inline Kernel scatter_rows(const std::string& name, DType idx_dt, DType dt, std::int64_t n, std::int64_t n_out,
                           std::int64_t cols, bool accumulate) {
  KernelBuilder b(name, n * cols, 1);
  const int idx = b.buffer("idx", idx_dt, n), in = b.buffer("in", dt, n * cols), out = b.buffer("out", dt, n_out * cols);
  const ValueId row = b.load(idx, dv::ir::floordiv(b.x(), cols));
  dv::ir::StoreOptions options{row, cols, n_out, accumulate};
  b.store(out, dv::ir::mod(b.x(), cols), b.load(in, b.x()), options);
  return std::move(b).finish();
}

// out[idx[0]] += in[0] at every x of [0, n): one point (nothing varies with
// x), added n times, as a scatter_add of an expanded index and value does
// (n = 1: a scatter of one point, the fuzzer's seed 21 on the H200).
inline Kernel scatter_one_point(const std::string& name, DType dt, std::int64_t n, std::int64_t n_out) {
  KernelBuilder b(name, n, 1);
  const int idx = b.buffer("idx", DType::Int64, 1), in = b.buffer("in", dt, 1), out = b.buffer("out", dt, n_out);
  const ValueId row = b.load(idx, IndexExpr(0));
  b.store(out, IndexExpr(0), b.load(in, IndexExpr(0)), dv::ir::StoreOptions{row, 1, n_out, true});
  return std::move(b).finish();
}

inline std::vector<TestKernel> emitter_test_kernels() {
  std::vector<TestKernel> ks;
  auto add = [&](Kernel k, double lo = -2, double hi = 2, bool gpu = true) {
    ks.push_back(TestKernel{std::move(k), lo, hi, gpu});
  };
  // Pointwise.
  add(gelu_chain("pw_gelu_f32", DType::Float32, 1 << 20));
  add(gelu_chain("pw_gelu_f32_tail", DType::Float32, 1000003));
  add(gelu_chain("pw_gelu_f32_tiny", DType::Float32, 7));
  add(gelu_chain("pw_gelu_bf16", DType::BFloat16, (1 << 20) + 8));
  add(bias_broadcast("pw_bias_broadcast", 1000, 768));
  add(bias_broadcast("pw_bias_broadcast_odd", 333, 77));
  add(transpose_add("pw_transpose", 96, 80));
  add(transpose_add("pw_transpose_odd", 37, 53));
  add(half_chain("pw_bf16_chain", DType::BFloat16, 100003));
  add(half_chain("pw_f16_chain", DType::Float16, 65536));
  add(mixed_types("pw_mixed_types", 50001));
  add(int_chain("pw_i32_chain", DType::Int32, 40000), -50, 50);
  add(int_chain("pw_i64_chain", DType::Int64, 40001), -50, 50);
  add(iota("pw_iota", 12345));
  add(bool_chain("pw_bool", 70001));
  add(f64_chain("pw_f64", 30001), -3, 3);
  add(cast_store("pw_cast_store", 20000), -30, 30);
  add(shifted("pw_shifted", 100000, 3, true));
  add(shifted("pw_unaligned", 4099, 0, false));
  // Row reductions of each op and size.
  const std::pair<std::int64_t, std::int64_t> shapes[] = {{1000, 7}, {300, 1000}, {64, 8192}, {8, 65536}};
  for (auto [rows, r] : shapes) {
    for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Prod, ReduceOp::Max, ReduceOp::Min}) {
      const std::string name = "red_" + std::string(dv::ir::reduce_op_name(op)) + "_f32_" + std::to_string(r);
      // Products of many factors need factors near 1 to stay finite.
      const double lo = op == ReduceOp::Prod ? 1.0 - 2.0 / static_cast<double>(r) : op == ReduceOp::Sum ? 0 : -2;
      const double hi = op == ReduceOp::Prod ? 1.0 + 2.0 / static_cast<double>(r) : 2;
      add(row_reduce(name, op, DType::Float32, rows, r), lo, hi);
    }
  }
  add(row_reduce("red_sum_i32_1000", ReduceOp::Sum, DType::Int32, 300, 1000), -1000, 1000);
  add(row_reduce("red_max_i32_1000", ReduceOp::Max, DType::Int32, 300, 1000), -1000, 1000);
  add(row_reduce("red_min_i64_333", ReduceOp::Min, DType::Int64, 301, 333), -1000, 1000);
  add(row_reduce("red_prod_i64_9", ReduceOp::Prod, DType::Int64, 301, 9), -5, 5);
  add(row_reduce("red_sum_f64_8192", ReduceOp::Sum, DType::Float64, 33, 8192), 0, 1);
  add(row_reduce("red_max_bf16_4096", ReduceOp::Max, DType::BFloat16, 100, 4096));
  add(row_reduce("red_sum_bf16_4096", ReduceOp::Sum, DType::BFloat16, 100, 4096), 0, 1);
  add(bool_reduce("red_bool_1000", 200, 1000));
  add(bool_reduce("red_bool_5", 200, 5));
  // Normalizations.
  add(softmax("softmax_f32_8192", DType::Float32, 8192, 8192), -4, 4);
  add(softmax("softmax_f32_1000", DType::Float32, 333, 1000), -4, 4);
  add(softmax("softmax_f32_7", DType::Float32, 1001, 7), -4, 4);
  add(softmax("softmax_f32_65536", DType::Float32, 8, 65536), -4, 4);
  add(softmax("softmax_bf16_4096", DType::BFloat16, 512, 4096), -4, 4);
  add(layer_norm("layer_norm_f32_4096", DType::Float32, 16384, 4096));
  add(layer_norm("layer_norm_bf16_4096", DType::BFloat16, 16384, 4096));
  add(layer_norm("layer_norm_f32_768", DType::Float32, 100, 768));
  add(layer_norm("layer_norm_f32_100000", DType::Float32, 3, 100000));
  add(moments("moments_512", 129, 512));
  add(moments("moments_20000", 5, 20000));
  add(column_sum("column_sum", 1000, 512), 0, 1);
  add(column_sum("column_sum_small", 40, 5000), 0, 1);
  add(column_sum("column_sum_wide", 5000, 64), 0, 1);
  add(scale_rows("scale_rows_1000", 37, 1000));
  add(degenerate_reduce("reduce_r1", ReduceOp::Sum, 1000, 1));
  add(degenerate_reduce("reduce_r0", ReduceOp::Max, 1000, 0));
  add(row_reduce("empty_x", ReduceOp::Sum, DType::Float32, 0, 100));
  // Masked and indirect loads. Random inputs for the GPU check are drawn from
  // [lo, hi] for every buffer: these ranges keep the offsets in range.
  add(embedding("gather_embedding_i64", DType::Int64, DType::Float32, 1000, 50, 64), 0, 49);
  add(embedding("gather_embedding_i32_bf16_odd", DType::Int32, DType::BFloat16, 333, 17, 7), 0, 16);
  add(pad_cols("masked_pad", 100, 37, 3, 1.5));
  add(cat_channels("masked_cat_vector", DType::BFloat16, 50, 32, 64));
  add(cat_channels("masked_cat_lanes", DType::BFloat16, 50, 12, 20));
  add(max_pool("masked_max_pool_f32", DType::Float32, 64, 17, 16));
  add(max_pool("masked_max_pool_bf16", DType::BFloat16, 64, 32, 32));
  add(bag_sum("gather_bag_sum", 1000, 40, 64), -1, 63);
  add(picked_scale("gather_row_scale", 300, 1000, 16), 0, 15);
  // Indirect and accumulating stores. Random indices repeat: an accumulating
  // store sums them all (in any order); a replacing one keeps one of them,
  // which differs between the GPU and the interpreter (not run in the check).
  add(scatter_rows("scatter_add_f32_i64", DType::Int64, DType::Float32, 1000, 50, 64, true), 0, 49);
  add(scatter_rows("scatter_add_i64_i32_odd", DType::Int32, DType::Int64, 333, 17, 7, true), 0, 16);
  add(scatter_rows("scatter_add_i32", DType::Int64, DType::Int32, 300, 9, 5, true), 0, 8);
  add(scatter_rows("scatter_add_f64", DType::Int64, DType::Float64, 300, 9, 5, true), 0, 8);
  add(scatter_rows("scatter_add_bf16_odd", DType::Int64, DType::BFloat16, 301, 31, 3, true), 0, 30);
  add(scatter_rows("scatter_add_f16", DType::Int32, DType::Float16, 256, 64, 8, true), 0, 63);
  add(scatter_one_point("scatter_add_one_point", DType::Float32, 1, 3), 0, 2);
  add(scatter_one_point("scatter_add_one_point_bf16_x4099", DType::BFloat16, 4099, 5), 0, 4);
  add(scatter_rows("scatter_copy_f32", DType::Int64, DType::Float32, 1000, 50, 64, false), 0, 49, false);
  add(scatter_rows("scatter_copy_bf16_odd", DType::Int32, DType::BFloat16, 333, 17, 7, false), 0, 16, false);
  // 64-bit indexing (emitted and compiled, too large to run in the check).
  add(gelu_chain("pw_gelu_64bit", DType::Float32, (std::int64_t{1} << 31) + 16), -2, 2, false);
  add(row_reduce("red_sum_64bit", ReduceOp::Sum, DType::Float32, 70000, 40000), 0, 1, false);
  return ks;
}

}  // namespace emitter_test

#ifndef DV_EMITTER_CATALOG_ONLY

using namespace emitter_test;

namespace {

const DeviceSpec kH100{};

CudaKernel emit(const Kernel& k) { return emit_cuda(k, kH100); }

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

std::size_t count(const std::string& s, const std::string& part) {
  std::size_t n = 0;
  for (std::size_t at = s.find(part); at != std::string::npos; at = s.find(part, at + 1)) ++n;
  return n;
}

// The source from the entry point on (the header comment repeats the IR).
std::string body_of(const CudaKernel& k) { return k.source.substr(k.source.find("extern \"C\"")); }

// The lines of the entry's body that contain `part` outside every loop and
// branch (code that every thread of every block runs).
std::vector<std::string> top_level_lines_with(const CudaKernel& k, const std::string& part) {
  std::vector<std::string> out;
  int depth = 0;
  const std::string body = body_of(k);
  for (std::size_t start = 0; start < body.size();) {
    std::size_t end = body.find('\n', start);
    if (end == std::string::npos) end = body.size();
    const std::string line = body.substr(start, end - start);
    if (depth == 1 && contains(line, part)) out.push_back(line);
    depth += static_cast<int>(count(line, "{")) - static_cast<int>(count(line, "}"));
    start = end + 1;
  }
  return out;
}

}  // namespace

TEST_CASE("lane access classification", "[cuda_emitter]") {
  using dv::codegen::classify_lane_access;
  const IndexExpr x = IndexExpr::var("x", 1 << 20);
  const IndexExpr r = IndexExpr::var("r", 8192);
  CHECK(classify_lane_access(x, "x", 4) == LaneAccess::Contiguous);
  CHECK(classify_lane_access(dv::ir::mod(x, 1024), "x", 4) == LaneAccess::Contiguous);
  CHECK(classify_lane_access(dv::ir::floordiv(x, 1024) * 7, "x", 4) == LaneAccess::Uniform);
  CHECK(classify_lane_access(x * 2, "x", 4) == LaneAccess::Other);
  CHECK(classify_lane_access(x + 3, "x", 4) == LaneAccess::Other);
  CHECK(classify_lane_access(x + 4, "x", 4) == LaneAccess::Contiguous);
  CHECK(classify_lane_access(dv::ir::mod(x, 77), "x", 4) == LaneAccess::Other);
  CHECK(classify_lane_access(dv::ir::floordiv(x, 77), "x", 4) == LaneAccess::Other);
  CHECK(classify_lane_access(dv::ir::floordiv(x, 2), "x", 4) == LaneAccess::Other);
  CHECK(classify_lane_access(dv::ir::floordiv(x, 2), "x", 2) == LaneAccess::Uniform);
  CHECK(classify_lane_access(dv::ir::floordiv(x, 4), "x", 4) == LaneAccess::Uniform);
  CHECK(classify_lane_access(dv::ir::floordiv(x * 8, 2), "x", 4) == LaneAccess::Other);
  CHECK(classify_lane_access(dv::ir::floordiv(x * 8, 8), "x", 4) == LaneAccess::Contiguous);
  // Row kernels: r is the lane variable, x is fixed.
  CHECK(classify_lane_access(x * 8192 + r, "r", 4) == LaneAccess::Contiguous);
  CHECK(classify_lane_access(x * 1000 + r, "r", 8) == LaneAccess::Contiguous);
  CHECK(classify_lane_access(x * 1001 + r, "r", 4) == LaneAccess::Other);
  CHECK(classify_lane_access(x * 7, "r", 4) == LaneAccess::Uniform);
  CHECK(classify_lane_access(r * 1000 + x, "r", 4) == LaneAccess::Other);
  // (r // 64) * (C*64) + x*64 + r % 64: an NCHW channel reduction.
  const IndexExpr nchw = dv::ir::floordiv(r, 64) * (32 * 64) + x * 64 + dv::ir::mod(r, 64);
  CHECK(classify_lane_access(nchw, "r", 4) == LaneAccess::Contiguous);
  CHECK(classify_lane_access(IndexExpr(5), "x", 4) == LaneAccess::Uniform);
  CHECK(classify_lane_access(x * 3, "x", 1) == LaneAccess::Other);  // only stride 1 is contiguous
}

TEST_CASE("emitted sources are deterministic and well formed", "[cuda_emitter]") {
  std::set<std::string> names;
  for (const TestKernel& t : emitter_test_kernels()) {
    INFO("kernel " << t.kernel.name);
    const CudaKernel a = emit(t.kernel);
    const CudaKernel b = emit(t.kernel);
    CHECK(a.source == b.source);
    CHECK(a.name == t.kernel.name);
    CHECK(names.insert(a.name).second);
    CHECK(contains(a.source, "extern \"C\" __global__ void __launch_bounds__(" + std::to_string(a.launch.block[0]) +
                                 ") " + a.name + "("));
    CHECK(!contains(a.source, "#include"));
    CHECK(a.launch.grid[0] >= 1);
    CHECK(a.launch.block[0] >= 32);
    CHECK(a.launch.block[0] <= 1024);
    CHECK(a.launch.block[0] % 32 == 0);
    CHECK(a.launch.shared_bytes == 0);
  }
}

TEST_CASE("pointwise kernels use 16-byte accesses where the index allows", "[cuda_emitter]") {
  SECTION("contiguous f32: float4 loads and stores, one chunk a thread, 128 threads, no tail") {
    const CudaKernel k = emit(gelu_chain("g", DType::Float32, 64 << 20));
    const std::string body = body_of(k);
    CHECK(count(body, "reinterpret_cast<const dv_vec<float, 4>*>") == 1);
    CHECK(count(body, "reinterpret_cast<dv_vec<float, 4>*>") == 1);
    CHECK(contains(body, "for (int c = 0; c < 1; ++c)"));
    CHECK(!contains(body, "kFullTiles)"));  // no tail branch
    CHECK(contains(k.source, "typedef int idx_t;"));
    CHECK(k.launch.block[0] == 128);
    CHECK(k.launch.grid[0] == (64u << 20) / (128 * 4));
  }
  SECTION("a tail runs one element per thread in the last block") {
    const CudaKernel k = emit(gelu_chain("g", DType::Float32, 1000003));
    CHECK(contains(body_of(k), "if ((idx_t)blockIdx.x < kFullTiles)"));
    CHECK(contains(body_of(k), "x < kXnumel; x += kThreads"));
  }
  SECTION("bf16 only: 8 lanes of 16 bytes, computed in float, stored as 4 converted pairs") {
    const std::string body = body_of(emit(gelu_chain("g", DType::BFloat16, 1 << 22)));
    CHECK(contains(body, "reinterpret_cast<const dv_vec<unsigned short, 8>*>"));
    CHECK(contains(body, "unsigned short v0[8];  // as stored; converted where used"));
    CHECK(contains(body, "dv_bf16_to_f32(v0[k])"));
    CHECK(contains(body, "w.e[v] = dv_f32x2_to_bf16x2("));
    CHECK(contains(body, "reinterpret_cast<dv_vec<unsigned, 4>*>"));
    CHECK(!contains(body, "dv_f32_to_bf16("));
  }
  SECTION("mixed f16/f32: 4 lanes, f16 through 8-byte vectors") {
    const std::string body = body_of(emit(mixed_types("m", 1 << 20)));
    CHECK(contains(body, "dv_vec<unsigned short, 4>"));
    CHECK(contains(body, "dv_vec<float, 4>"));
  }
  SECTION("broadcast: bias[x % C] is a vector load, scale[x // C] one scalar load per chunk") {
    const std::string body = body_of(emit(bias_broadcast("b", 1000, 768)));
    CHECK(contains(body, "reinterpret_cast<const dv_vec<float, 4>*>(b1_bias + (l0 % 768))"));
    CHECK(contains(body, "const float u = b2_scale[(l0 / 768)];"));
  }
  SECTION("odd broadcast period and transposes fall back to per-lane loads") {
    const std::string odd = body_of(emit(bias_broadcast("b", 333, 77)));
    CHECK(contains(odd, "b1_bias[((l0 + v) % 77)]"));
    const std::string tr = body_of(emit(transpose_add("t", 96, 80)));
    CHECK(count(tr, "reinterpret_cast<const dv_vec") == 0);
    CHECK(count(tr, "reinterpret_cast<dv_vec<float, 4>*>") == 1);  // the store stays contiguous
  }
  SECTION("misaligned or unaligned buffers use scalar accesses") {
    CHECK(count(body_of(emit(shifted("s", 100000, 3, true))), "reinterpret_cast<const dv_vec") == 0);
    CHECK(count(body_of(emit(shifted("s", 4096, 0, false))), "dv_vec<") == 0);
  }
  SECTION("wide types: 2 lanes of doubles") {
    CHECK(contains(body_of(emit(f64_chain("d", 1 << 20))), "dv_vec<double, 2>"));
  }
  SECTION("64-bit indexing past 2^31 elements") {
    const CudaKernel k = emit(gelu_chain("g", DType::Float32, (std::int64_t{1} << 31) + 16));
    CHECK(contains(k.source, "typedef long long idx_t;"));
  }
}

TEST_CASE("row kernels: layout, persistence and reductions", "[cuda_emitter]") {
  SECTION("softmax 8192 f32: persistent, a block per row, one barrier per reduction") {
    const CudaKernel k = emit(softmax("s", DType::Float32, 8192, 8192));
    const std::string body = body_of(k);
    CHECK(contains(k.source, "persistent"));
    CHECK(k.launch.grid[0] == 8192);
    CHECK(k.launch.block[0] == 512);
    CHECK(count(body, "__syncthreads()") == 2);
    CHECK(count(body, "reinterpret_cast<const dv_vec<float, 4>*>") == 1);  // loaded once
    CHECK(count(body, "reinterpret_cast<dv_vec<float, 4>*>") == 1);
    CHECK(contains(body, "const float o = dv_shfl_xor(a, 16); a = dv_max(a, o);"));
    CHECK(!contains(body, "kRnumel"));  // no masks: 8192 = 512 threads x 4 chunks x 4
  }
  SECTION("layer_norm bf16: 8 lanes, weight and bias vector loads, x-level stores by thread 0") {
    const std::string body = body_of(emit(layer_norm("ln", DType::BFloat16, 16384, 4096)));
    CHECK(count(body, "reinterpret_cast<const dv_vec<unsigned short, 8>*>") == 3);
    CHECK(count(body, "reinterpret_cast<dv_vec<unsigned, 4>*>") == 1);  // the output, as bf16 pairs
    CHECK(contains(body, "if (t == 0) b4_mean["));
  }
  SECTION("layer_norm f32 4096: one looped step, the variance computed with the mean, one barrier in all") {
    const CudaKernel k = emit(layer_norm("ln", DType::Float32, 16384, 4096));
    const std::string body = body_of(k);
    CHECK(k.launch.block[0] == 512);
    CHECK(contains(k.source, "looped; 512 threads per row"));
    CHECK(contains(k.source, "2 chunks x 4 lanes per iteration, 1 iterations per pass, 2 passes"));
    CHECK(count(body, "dv_load_keep(") == 1);  // the moments' read; the normalised write re-reads it
    CHECK(count(body, "dv_load_last(") == 1);
    CHECK(count(body, "__syncthreads()") == 1);
    CHECK(contains(body, "in one pass"));
    CHECK(contains(body, "const float p0 = b0_in[(x * 4096)];"));  // the pivot: the row's first element
    CHECK(count(body, "_pivoted[") == 5);  // declared, written, read back three times
    CHECK(contains(body, "q = (q + e * e / 8.0f)"));                 // 8 elements a thread
    // In registers (the choice before; dvdump --no-one-step-looped), the same one-pass variance.
    KernelTuning in_registers;
    in_registers.row_one_step_looped = false;
    const CudaKernel p = emit_cuda(layer_norm("ln", DType::Float32, 16384, 4096), kH100, in_registers);
    CHECK(contains(p.source, "persistent"));
    CHECK(count(body_of(p), "__syncthreads()") == 1);
    CHECK(contains(body_of(p), "q = (q + e * e / 8.0f)"));
  }
  SECTION("one looped step: only rows of f32 lanes of more than 1 and at most 2 chunks a thread that write rows") {
    CHECK(contains(emit(layer_norm("ln", DType::Float32, 16384, 3072)).source, "looped; 512 threads per row"));
    CHECK(contains(emit(softmax("s", DType::Float32, 16384, 4096)).source, "looped; 512 threads per row"));
    CHECK(contains(emit(layer_norm("ln", DType::BFloat16, 16384, 4096)).source, "persistent"));
    CHECK(contains(emit(layer_norm("ln", DType::Float32, 16384, 2048)).source, "persistent"));  // 1 chunk a thread
    CHECK(contains(emit(softmax("s", DType::Float32, 8192, 8192)).source, "persistent"));      // two steps
    CHECK(contains(emit(row_reduce("r", ReduceOp::Sum, DType::Float32, 16384, 4096)).source, "persistent"));
  }
  SECTION("rows within a warp: one-pass variance with shuffles only") {
    const std::string body = body_of(emit(layer_norm("ln", DType::Float32, 1000, 64)));
    CHECK(count(body, "__syncthreads()") == 0);
    CHECK(contains(body, "in one pass"));
    CHECK(!contains(body, "_pivoted"));
  }
  SECTION("pivoted rows (the lowering's forms): one pass, with the sum's own thread parts and no second pivot") {
    auto check_pivoted = [](const CudaKernel& k) {
      const std::string body = body_of(k);
      CHECK(contains(body, "in one pass"));
      CHECK(!contains(body, "pivot = "));
      CHECK(!contains(body, "pivot_"));
      CHECK(count(body, "dv_shfl_xor(b,") == 0);  // b is a: one butterfly for both
    };
    for (const Center center : {Center::Pivoted, Center::PivotedMean}) {
      const CudaKernel persistent = emit(layer_norm("ln", DType::BFloat16, 16384, 4096, center));
      CHECK(contains(persistent.source, "persistent"));
      CHECK(contains(body_of(persistent), "float b = a;"));
      check_pivoted(persistent);
      const CudaKernel looped = emit(layer_norm("ln", DType::Float32, 16384, 4096, center));
      CHECK(contains(looped.source, "looped; 512 threads per row"));
      check_pivoted(looped);
      check_pivoted(emit(layer_norm("ln", DType::Float32, 1000, 64, center)));  // rows within a warp
    }
    // (x - p) - shift: x itself is not read after x - p (a row in registers holds one copy)
    const std::string centered = body_of(emit(layer_norm("ln", DType::Float32, 32768, 768, Center::Pivoted)));
    CHECK(contains(centered, "in one pass"));
    CHECK(count(centered, "float v0[12];") == 1);  // the row as loaded
    CHECK(count(centered, "v0[") == 3);            // declared, loaded, read once: x - p
  }
  SECTION("masked chunks (threads hold different counts): the two-pass form stays") {
    const std::string body = body_of(emit(layer_norm("ln", DType::Float32, 300, 1000)));
    CHECK(!contains(body, "in one pass"));
    CHECK(count(body, "__syncthreads()") == 2);
  }
  SECTION("chunks that divide evenly among fewer threads: equal shares, no masks, one pass") {
    const CudaKernel f32 = emit(layer_norm("ln", DType::Float32, 32768, 768));  // 192 chunks
    CHECK(contains(f32.source, "64 threads per row, 4 rows per block of 256 threads; each thread holds 3 chunks"));
    CHECK(contains(body_of(f32), "in one pass"));
    CHECK(!contains(body_of(f32), "kRnumel"));
    const CudaKernel bf16 = emit(layer_norm("ln", DType::BFloat16, 32768, 768));  // 96 chunks
    CHECK(contains(bf16.source, "32 threads per row, 8 rows per block of 256 threads; each thread holds 3 chunks"));
    CHECK(count(body_of(bf16), "__syncthreads()") == 0);  // a warp a row
    KernelTuning in_registers;  // 3072 f32 otherwise takes one looped step
    in_registers.row_one_step_looped = false;
    const CudaKernel wide = emit_cuda(layer_norm("ln", DType::Float32, 16384, 3072), kH100, in_registers);  // 768 chunks
    CHECK(wide.launch.block[0] == 256);
    CHECK(contains(body_of(wide), "in one pass"));
  }
  SECTION("a sum of squares that is not around the mean is not a variance") {
    CHECK(!contains(body_of(emit(moments("m", 4096, 4096))), "in one pass"));
  }
  SECTION("independent reductions share one barrier") {
    const std::string body = body_of(emit(moments("m", 4096, 4096)));
    CHECK(count(body, "__syncthreads()") == 1);
  }
  SECTION("small rows: a warp or less per row, shuffles only, row mask on the last block") {
    const CudaKernel k = emit(softmax("s", DType::Float32, 1001, 7));
    const std::string body = body_of(k);
    CHECK(count(body, "__syncthreads()") == 0);
    CHECK(contains(body, "row_ok"));
    CHECK(k.launch.block[0] % 32 == 0);
    const CudaKernel k1000 = emit(row_reduce("r", ReduceOp::Sum, DType::Float32, 300, 1000));
    CHECK(contains(body_of(k1000), "l0 < kRnumel"));  // the last chunk is partial
  }
  SECTION("very long rows with few of them: looped passes") {
    const CudaKernel k = emit(softmax("s", DType::Float32, 8, 65536));
    CHECK(contains(k.source, "looped"));
    CHECK(count(body_of(k), "// ---- pass") == 3);
    CHECK(k.launch.block[0] == 1024);
  }
  SECTION("looped rows: passes that a later pass follows keep the row in cache, the last lets it go") {
    const Kernel sm = softmax("s", DType::Float32, 8, 65536);
    const std::string body = body_of(emit(sm));
    CHECK(count(body, "dv_load_keep(") == 2);  // the max and the sum of exponentials
    CHECK(count(body, "dv_load_last(") == 1);  // the normalised write
    KernelTuning plain;
    plain.row_loop_hints = 0;
    const std::string unhinted = body_of(emit_cuda(sm, kH100, plain));
    CHECK(!contains(unhinted, "dv_load_keep("));
    CHECK(!contains(unhinted, "dv_load_last("));
    // One pass over the row: nothing to keep; it only skips L1.
    const CudaKernel row_sum = emit(row_reduce("r", ReduceOp::Sum, DType::Float32, 8, 65536));
    CHECK(contains(row_sum.source, "looped"));
    const std::string sum = body_of(row_sum);
    CHECK(!contains(sum, "dv_load_keep("));
    CHECK(contains(sum, "dv_load_once("));
  }
  SECTION("looped rows: the variance goes with its mean only in one unmasked step") {
    const CudaKernel two_steps = emit(layer_norm("ln", DType::Float32, 8, 65536));
    CHECK(contains(two_steps.source, "2 iterations per pass, 3 passes"));
    CHECK(!contains(body_of(two_steps), "mq_"));
    CHECK(count(body_of(two_steps), "dv_load_keep(") == 2);
    KernelTuning one_step;  // 8 chunks x 4 lanes x 1024 threads = 32768
    one_step.row_force_looped = true;
    one_step.row_chunks_per_thread = 8;
    const CudaKernel k = emit_cuda(layer_norm("ln", DType::Float32, 8, 32768), kH100, one_step);
    CHECK(contains(k.source, "1 iterations per pass, 2 passes"));
    CHECK(count(body_of(k), "// ---- pass") == 2);  // the moments, then the normalised write
    CHECK(contains(body_of(k), "mq_"));
    // 1000 columns in one step of 2 chunks x 4 lanes x 128 threads: masked, so the two-pass form stays.
    one_step.row_chunks_per_thread = 2;
    const CudaKernel masked = emit_cuda(layer_norm("ln", DType::Float32, 8, 1000), kH100, one_step);
    CHECK(contains(masked.source, "1 iterations per pass, 3 passes"));
    CHECK(!contains(body_of(masked), "mq_"));
  }
  SECTION("reductions over an outer dimension: column-major threads, shared memory, no shuffles") {
    const CudaKernel k = emit(column_sum("c", 1000, 512));
    const std::string body = body_of(k);
    CHECK(contains(k.source, "column-major"));
    CHECK(contains(body, "const int row = tid % kRpb;"));
    CHECK(contains(body, "b0_in[(l0 * 1000 + x)]"));
    CHECK(!contains(body, "shfl"));
    CHECK(count(body, "__syncthreads()") == 1);
  }
  SECTION("wide outer-dimension reductions: 64 columns a block once every SM gets one") {
    const CudaKernel narrow = emit(column_sum("c", 1000, 512));
    CHECK(contains(narrow.source, "32 rows per block"));
    const CudaKernel wide = emit(column_sum("c", 9000, 300));  // 9000 columns >= 64 x 132
    CHECK(contains(wide.source, "64 rows per block"));
    CHECK(contains(body_of(wide), "row_ok"));  // 9000 = 140 x 64 + 40
  }
  SECTION("loads skip L1 only where the kernel writes no row") {
    CHECK(contains(body_of(emit(row_reduce("r", ReduceOp::Sum, DType::Float32, 300, 4096))), "dv_load_once("));
    CHECK(!contains(body_of(emit(softmax("s", DType::Float32, 300, 4096))), "dv_load_once("));
    CHECK(!contains(body_of(emit(layer_norm("ln", DType::Float32, 300, 4096))), "dv_load_once("));
  }
  SECTION("reduce identities and NaN-propagating max") {
    CHECK(contains(body_of(emit(row_reduce("r", ReduceOp::Max, DType::Float32, 64, 1000))), "(-__int_as_float(0x7f800000))"));
    CHECK(contains(body_of(emit(row_reduce("r", ReduceOp::Min, DType::Int32, 64, 1000))), "2147483647"));
    CHECK(contains(body_of(emit(row_reduce("r", ReduceOp::Prod, DType::Float32, 64, 1000))), "acc[v] = 1.0f"));
  }
  SECTION("every lane executes every shuffle, also for bool any/all") {
    const std::string body = body_of(emit(bool_reduce("b", 200, 1000)));
    CHECK(contains(body, "const bool o = dv_shfl_xor(a, 16); a = ((a | o) != 0);"));
    CHECK(contains(body, "const bool o = dv_shfl_xor(a, 16); a = ((a & o) != 0);"));
    CHECK(!contains(body, "|| dv_shfl_xor"));
    CHECK(!contains(body, "&& dv_shfl_xor"));
  }
  SECTION("degenerate rnumel") {
    const std::string r1 = body_of(emit(degenerate_reduce("r", ReduceOp::Sum, 100, 1)));
    CHECK(!contains(r1, "shfl"));
    const std::string r0 = body_of(emit(degenerate_reduce("r", ReduceOp::Max, 100, 0)));
    CHECK(contains(r0, "(-__int_as_float(0x7f800000))"));
    CHECK(!contains(r0, "b0_in["));
  }
}

TEST_CASE("masked and indirect loads: per-lane reads, checked offsets, nothing read where masked", "[cuda_emitter][loads]") {
  SECTION("an indirect load reads lane by lane at index + checked offset * stride, never as a vector") {
    const CudaKernel k = emit(embedding("e", DType::Int64, DType::Float32, 1000, 50, 64));
    const std::string body = body_of(k);
    CHECK(contains(k.source, "__device__ __forceinline__ long long dv_checked(long long o, long long n) {"));
    CHECK(contains(k.source, "if ((unsigned long long)o >= (unsigned long long)n) __trap();"));
    CHECK(contains(body, "v1[c * 2 + v] = b1_table[((l0 + v) % 64) + dv_checked((long long)v0[c * 2 + v], 50LL) * 64LL];"));
    CHECK(count(body, "reinterpret_cast<const dv_vec<float") == 0);  // the table: no vector loads
    CHECK(count(body, "reinterpret_cast<dv_vec<float, 2>*>(b2_out") == 1);  // the output stays contiguous
  }
  SECTION("int32 offsets into a bf16 table: widened, checked, converted") {
    const std::string body = body_of(emit(embedding("e", DType::Int32, DType::BFloat16, 333, 17, 7)));
    CHECK(contains(body, "dv_bf16_to_f32(b1_table["));
    CHECK(contains(body, "dv_checked((long long)v0["));
    CHECK(contains(body, ", 17LL) * 7LL]"));
  }
  SECTION("a masked load decides before it forms an address: m ? p[...] : other") {
    const std::string body = body_of(emit(pad_cols("p", 100, 37, 3, 1.5)));
    CHECK(contains(body, "v6[c * 4 + v] = (v5[c * 4 + v] ? b0_in[(((l0 + v) / 43) * 37 + ((l0 + v) % 43) - 3)] : 1.5f);"));
    CHECK(count(body, "reinterpret_cast<const dv_vec") == 0);
    CHECK(!contains(body, "dv_checked("));
  }
  SECTION("a masked load all of a chunk's lanes take or none does is one vector load under the first lane's mask") {
    // channels-last cat: parts of 32 and 64 bf16 channels, 8 lanes a chunk, no tail
    const std::string body = body_of(emit(cat_channels("c", DType::BFloat16, 64, 32, 64)));
    CHECK(count(body, "// one vector where the chunk's lanes take it") == 2);
    CHECK(!contains(body, "gathered lane by lane"));
    CHECK(contains(body, "if (v2[c * 8]) {"));
    // a part of 12 channels: a chunk may straddle the boundary, so lane by lane
    const std::string lanes = body_of(emit(cat_channels("d", DType::BFloat16, 64, 12, 20)));
    CHECK(count(lanes, "gathered lane by lane") == 2);
    CHECK(!contains(lanes, "one vector where"));
  }
  SECTION("a vector load's mask holds in chunks known to lie in the row too (fuzzer seed 2308)") {
    // With size arguments, rows of 6 take 2 threads of 2 chunks of 2 lanes,
    // the first chunk in the row: "c < 1 || l0 < kRnumel", a disjunction
    // that the load's mask must not join (it let the pad's lanes load).
    DeviceSpec sizes;
    sizes.size_arguments = true;
    sizes.origins.known = true;
    sizes.origins.xnumel_symbolic = true;  // the row count; rows keep their length
    const std::string body = body_of(emit_cuda(padded_row_sum("p", 40, 6, 2, 4), sizes));
    REQUIRE(contains(body, "for (int c = 0; c < 2; ++c) {"));
    CHECK(contains(body, "if ((c < 1 || l0 < kRnumel) && v5[c * 2]) {"));
    CHECK(!contains(body, "|| l0 < kRnumel && "));
  }
  SECTION("a max pool's window: an r-level masked load with -inf outside, in a row kernel") {
    const CudaKernel k = emit(max_pool("m", DType::Float32, 64, 17, 16));
    CHECK(contains(k.source, "strategy: row kernel"));
    CHECK(contains(body_of(k), " : (-__int_as_float(0x7f800000)));"));
  }
  SECTION("a masked indirect load: the mask is tested first, then the offset") {
    const std::string body = body_of(emit(bag_sum("b", 1000, 40, 64)));
    CHECK(contains(body, "(v2[c * 4 + v] ? b1_table[0 + dv_checked((long long)v0[c * 4 + v], 64LL) * 1LL] : 0.0f)"));
  }
  SECTION("an x-level indirect load in a row kernel is one scalar read per row") {
    const std::string body = body_of(emit(picked_scale("s", 300, 1000, 16)));
    CHECK(contains(body, "const long long v0 = b1_pick[x];"));
    CHECK(contains(body, "const float v1 = b2_scale[0 + dv_checked((long long)v0, 16LL) * 1LL];"));
  }
  SECTION("a gather is not taken for the one-pass variance's pivot") {
    // sum((x - mean)^2) over x = table[idx[r]]: the pivot would read the table at r = 0 without its offset.
    KernelBuilder b("v", 64, 256);
    const int idx = b.buffer("idx", DType::Int64, 256), table = b.buffer("table", DType::Float32, 100),
              out = b.buffer("out", DType::Float32, 64);
    const ValueId v = b.load(table, b.x(), dv::ir::LoadOptions{b.load(idx, b.r()), 1, 36});
    const ValueId n = f32c(b, 256);
    const ValueId mean = b.binary(PrimOp::Div, b.reduce(ReduceOp::Sum, v), n);
    const ValueId d = b.binary(PrimOp::Sub, v, mean);
    b.store(out, b.x(), b.reduce(ReduceOp::Sum, b.binary(PrimOp::Mul, d, d)));
    CHECK(!contains(body_of(emit(std::move(b).finish())), "in one pass"));
  }
}

TEST_CASE("indirect and accumulating stores: per-lane writes at checked offsets, atomic adds", "[cuda_emitter][stores]") {
  SECTION("a replacing indirect store writes lane by lane at index + checked offset * stride") {
    const CudaKernel k = emit(scatter_rows("s", DType::Int64, DType::Float32, 1000, 50, 64, false));
    const std::string body = body_of(k);
    CHECK(contains(body, "b2_out[((l0 + v) % 64) + dv_checked((long long)v0[c * 2 + v], 50LL) * 64LL] = v1[c * 2 + v];"));
    CHECK(count(body, "reinterpret_cast<dv_vec<float") == 0);  // no vector stores
    CHECK(count(body, "reinterpret_cast<const dv_vec<float, 2>*>(b1_in") == 1);  // the source stays contiguous
    CHECK(!contains(body, "atomic"));
  }
  SECTION("an accumulating store adds atomically, through the helper of its storage type") {
    CHECK(contains(body_of(emit(scatter_rows("s", DType::Int64, DType::Float32, 100, 5, 4, true))),
                   "dv_atomic_add(&b2_out["));
    CHECK(contains(body_of(emit(scatter_rows("s", DType::Int32, DType::Int64, 100, 5, 4, true))),
                   "dv_atomic_add(&b2_out["));
    const std::string bf16 = body_of(emit(scatter_rows("s", DType::Int64, DType::BFloat16, 100, 5, 4, true)));
    CHECK(contains(bf16, "dv_atomic_add_bf16(&b2_out["));
    CHECK(contains(bf16, ", 5LL) * 4LL], v1["));  // the float value, converted by the helper
    CHECK(contains(body_of(emit(scatter_rows("s", DType::Int64, DType::Float16, 100, 5, 4, true))),
                   "dv_atomic_add_f16(&b2_out["));
  }
  SECTION("an accumulating store without an offset still adds atomically") {
    KernelBuilder b("a", 64, 1);
    const int in = b.buffer("in", DType::Float32, 64), out = b.buffer("out", DType::Float32, 8);
    dv::ir::StoreOptions add;
    add.accumulate = true;
    b.store(out, dv::ir::mod(b.x(), 8), b.load(in, b.x()), add);
    const std::string body = body_of(emit(std::move(b).finish()));
    CHECK(contains(body, "dv_atomic_add(&b1_out[((l0 + v) % 8)], v0[c * 1 + v]);"));
    CHECK(!contains(body, "dv_checked("));
  }
}

TEST_CASE("an accumulating store that does not vary with x adds once per x, inside the loop over x",
          "[cuda_emitter][stores]") {
  // Values that do not vary with x are written once before the tile code and
  // run in every thread of every block: an atomic add there counted each point
  // 64 or 128 times (the fuzzer's seed 21 on the H200).
  for (std::int64_t n : {1, 5, 4099}) {
    for (DType dt : {DType::Float32, DType::BFloat16}) {
      INFO("xnumel " << n << ", " << dv::ir::dtype_name(dt));
      const CudaKernel k = emit(scatter_one_point("p", dt, n, 3));
      CHECK(count(body_of(k), "dv_atomic_add") >= 1);
      CHECK(top_level_lines_with(k, "dv_atomic_add").empty());
      CHECK(top_level_lines_with(k, "b0_idx[0]").size() == 1);  // the index is still loaded once, as a scalar
    }
  }
  SECTION("a plain store of one value stays scalar code (every thread writes the same value)") {
    KernelBuilder b("c", 5, 1);
    const int in = b.buffer("in", DType::Float32, 1), out = b.buffer("out", DType::Float32, 1);
    b.store(out, IndexExpr(0), b.load(in, IndexExpr(0)));
    CHECK(top_level_lines_with(emit(std::move(b).finish()), "b1_out[0] = ").size() == 1);
  }
}

TEST_CASE("every catalog kernel compiles with NVRTC for sm_90", "[cuda_emitter][nvrtc]") {
  auto& nvrtc = dv::runtime::Nvrtc::instance();
  if (!nvrtc.available()) {
    WARN("NVRTC unavailable, compile checks skipped: " << nvrtc.unavailable_reason());
    return;
  }
  for (const TestKernel& t : emitter_test_kernels()) {
    INFO("kernel " << t.kernel.name);
    const CudaKernel k = emit(t.kernel);
    std::string cubin;
    try {
      cubin = nvrtc.compile_cubin(k.source, k.name, 90);
    } catch (const dv::runtime::CompileError& e) {
      FAIL(e.what() << "\n" << e.log());
    }
    CHECK(cubin.size() > 0);
  }
}

TEST_CASE("size arguments: kernels that differ only in sizes share one source", "[cuda_emitter][sizes]") {
  DeviceSpec spec;
  spec.size_arguments = true;
  SECTION("rows of a layer norm, and a broadcast pointwise kernel, at several row counts") {
    // Launch layouts are chosen for a row count that fills the device.
    const CudaKernel a = emit_cuda(layer_norm("a", DType::Float32, 2100, 768), spec);
    const CudaKernel b = emit_cuda(layer_norm("b", DType::Float32, 4096, 768), spec);
    CHECK(a.source == b.source);
    CHECK(a.name == b.name);
    CHECK(a.size_args != b.size_args);
    const CudaKernel p = emit_cuda(bias_broadcast("p", 1000, 768), spec);
    const CudaKernel q = emit_cuda(bias_broadcast("q", 3000, 768), spec);
    CHECK(p.source == q.source);
    CHECK(std::find(q.size_args.begin(), q.size_args.end(), 3000 * 768) != q.size_args.end());
  }
  SECTION("no size is written into the source, and the entry takes the table") {
    const CudaKernel k = emit_cuda(bias_broadcast("p", 1000, 768), spec);
    CHECK(!contains(k.source, "768000"));
    CHECK(!contains(k.source, "//"));
    CHECK(contains(k.source, "const DvSizes dv_n)"));
    CHECK(contains(k.source, "#define kXnumel ((idx_t)dv_n.v["));
  }
  SECTION("a symbolic row length: one looped source for every length and row count") {
    // A tail or none: one text (the tail loop runs zero times).
    CHECK(emit_cuda(bias_broadcast("p", 1001, 768), spec).source == emit_cuda(bias_broadcast("p", 1000, 768), spec).source);
    const std::string ln = emit_cuda(layer_norm("a", DType::Float32, 4096, 768), spec).source;
    CHECK(contains(ln, "it < (kRnumel + "));  // iterations counted at run time
    CHECK(emit_cuda(layer_norm("w", DType::Float32, 4096, 4096), spec).source == ln);
    CHECK(emit_cuda(layer_norm("w", DType::Float32, 64, 13), spec).source == ln);
  }
  SECTION("a static row length (a constant size): its own layout; row counts still share it") {
    DeviceSpec fixed = spec;
    fixed.constant_sizes = {768, 4096};
    const std::string ln = emit_cuda(layer_norm("a", DType::Float32, 2048, 768), fixed).source;
    CHECK(!contains(ln, "it < (kRnumel + "));
    CHECK(emit_cuda(layer_norm("w", DType::Float32, 64, 768), fixed).source == ln);
    CHECK(emit_cuda(layer_norm("w", DType::Float32, 2048, 4096), fixed).source != ln);
  }
  SECTION("sizes known by origin: symbolic where the origins say, whatever the values") {
    DeviceSpec known = spec;
    known.constant_sizes = {768};  // (ignored once the origins are known)
    known.origins.known = true;
    known.origins.xnumel_symbolic = true;
    known.origins.rnumel_symbolic = true;
    CHECK(contains(emit_cuda(layer_norm("a", DType::Float32, 2048, 768), known).source, "it < (kRnumel + "));
    known.origins.rnumel_symbolic = false;
    const CudaKernel all_table = emit_cuda(layer_norm("a", DType::Float32, 2048, 768), known);
    CHECK(!contains(all_table.source, "it < (kRnumel + "));
    // Every use static but the iteration space's: literals, and a table of kXnumel and kRnumel only.
    known.origins.static_uses.assign(all_table.size_args.size(), true);
    const CudaKernel literal = emit_cuda(layer_norm("a", DType::Float32, 2048, 768), known);
    CHECK(literal.size_args.size() == 2);
    CHECK(literal.source != all_table.source);
    CHECK(emit_cuda(layer_norm("b", DType::Float32, 64, 768), known).source == literal.source);
  }
  SECTION("every catalog kernel compiles with its sizes as arguments") {
    auto& nvrtc = dv::runtime::Nvrtc::instance();
    if (!nvrtc.available()) return;
    for (const TestKernel& t : emitter_test_kernels()) {
      INFO("kernel " << t.kernel.name);
      const CudaKernel k = emit_cuda(t.kernel, spec);
      try {
        CHECK(nvrtc.compile_cubin(k.source, k.name, 90).size() > 0);
      } catch (const dv::runtime::CompileError& e) {
        FAIL(e.what() << "\n" << e.log());
      }
    }
  }
}

#endif  // DV_EMITTER_CATALOG_ONLY
