#include "codegen/cpp_prelude.h"

namespace dv::codegen {
namespace {

// Types and the C math library. The declarations are written out instead of
// including <math.h>: nothing else is needed and the compile stays short.
constexpr const char* kTypes = R"(// deepvisor host kernel
typedef __UINT8_TYPE__ dv_u8;
typedef __UINT16_TYPE__ dv_u16;
typedef __INT32_TYPE__ dv_i32;
typedef __UINT32_TYPE__ dv_u32;
typedef __INT64_TYPE__ dv_i64;
typedef __UINT64_TYPE__ dv_u64;
)";

// The functions libmvec has vector variants of (glibc >= 2.35 for all of
// them); fmod has none.
constexpr const char* kMath = R"(extern "C" {
DV_VEC float expf(float) noexcept;
DV_VEC double exp(double) noexcept;
DV_VEC float exp2f(float) noexcept;
DV_VEC double exp2(double) noexcept;
DV_VEC float logf(float) noexcept;
DV_VEC double log(double) noexcept;
DV_VEC float log1pf(float) noexcept;
DV_VEC double log1p(double) noexcept;
DV_VEC float sinf(float) noexcept;
DV_VEC double sin(double) noexcept;
DV_VEC float cosf(float) noexcept;
DV_VEC double cos(double) noexcept;
DV_VEC float tanhf(float) noexcept;
DV_VEC double tanh(double) noexcept;
DV_VEC float erff(float) noexcept;
DV_VEC double erf(double) noexcept;
DV_VEC float powf(float, float) noexcept;
DV_VEC double pow(double, double) noexcept;
float fmodf(float, float) noexcept;
double fmod(double, double) noexcept;
}
static inline float dv_fmod_c(float a, float b) { return fmodf(a, b); }
static inline double dv_fmod_c(double a, double b) { return fmod(a, b); }
)";

// Integer semantics: wrapping arithmetic through the unsigned type, C
// division that never traps (b == 0 gives 0, MIN / -1 wraps), Python floor
// division and remainder, powers by squaring.
constexpr const char* kIntegers = R"(template <class T> struct dv_int;
template <> struct dv_int<dv_i32> {
  typedef dv_u32 U;
  static constexpr dv_i32 min = -2147483647 - 1, max = 2147483647;
};
template <> struct dv_int<dv_i64> {
  typedef dv_u64 U;
  static constexpr dv_i64 min = -9223372036854775807LL - 1, max = 9223372036854775807LL;
};
template <class T> static inline T dv_wneg(T a) { typedef typename dv_int<T>::U U; return (T)(U(0) - (U)a); }
template <class T> static inline T dv_wadd(T a, T b) { typedef typename dv_int<T>::U U; return (T)((U)a + (U)b); }
template <class T> static inline T dv_wsub(T a, T b) { typedef typename dv_int<T>::U U; return (T)((U)a - (U)b); }
template <class T> static inline T dv_wmul(T a, T b) { typedef typename dv_int<T>::U U; return (T)((U)a * (U)b); }
template <class T> static inline T dv_wabs(T a) { return a < 0 ? dv_wneg(a) : a; }
template <class T> static inline T dv_idiv(T a, T b) {
  if (b == 0) return 0;
  if (b == -1) return dv_wneg(a);
  return a / b;
}
template <class T> static inline T dv_ifloordiv(T a, T b) {
  if (b == 0) return 0;
  if (b == -1) return dv_wneg(a);
  T q = a / b;
  if (a % b != 0 && ((a < 0) != (b < 0))) --q;
  return q;
}
template <class T> static inline T dv_imod(T a, T b) {
  if (b == 0 || b == -1) return 0;
  T r = a % b;
  if (r != 0 && ((r < 0) != (b < 0))) r += b;
  return r;
}
template <class T> static inline T dv_ipow(T base, T exponent) {
  if (exponent < 0) {
    if (base == 1) return 1;
    if (base == -1) return (exponent & 1) ? T(-1) : T(1);
    return 0;
  }
  typedef typename dv_int<T>::U U;
  U result = 1, b = (U)base;
  for (U e = (U)exponent; e != 0; e >>= 1) {
    if (e & 1) result *= b;
    b *= b;
  }
  return (T)result;
}
template <class T> static inline T dv_imax(T a, T b) { return a > b ? a : b; }
template <class T> static inline T dv_imin(T a, T b) { return a < b ? a : b; }
// Index arithmetic: floor division and remainder by a positive constant.
static inline dv_i64 dv_floordiv_c(dv_i64 a, dv_i64 d) { dv_i64 q = a / d; return (a % d < 0) ? q - 1 : q; }
static inline dv_i64 dv_mod_c(dv_i64 a, dv_i64 d) { dv_i64 r = a % d; return r < 0 ? r + d : r; }
static inline dv_i64 dv_abs_c(dv_i64 a) { return a < 0 ? -a : a; }
)";

// Float semantics: Python remainder, NaN-propagating max/min, and the
// float -> int conversion that saturates and maps NaN to 0 (as the
// interpreter and CUDA's cvt.rzi do).
constexpr const char* kFloats = R"(// The bytes of one vector register of the ISA the compiler targets (row
// loops keep several vectors of partial sums: DV_SUM_LANES lanes of T).
#if defined(__AVX512F__)
#define DV_VEC_BYTES 64
#elif defined(__AVX__)
#define DV_VEC_BYTES 32
#else
#define DV_VEC_BYTES 16
#endif
#define DV_SUM_LANES(T) (4 * DV_VEC_BYTES / (int)sizeof(T))
// a * (1 / b) is a / b within an ulp and a half, with the same special
// values, where 1 / b is a normal number: b normal, not near overflow.
static inline bool dv_recip_ok(float b) { const float m = b < 0 ? -b : b; return m >= 0x1p-126f && m <= 0x1p126f; }
static inline bool dv_recip_ok(double b) { const double m = b < 0 ? -b : b; return m >= 0x1p-1022 && m <= 0x1p1022; }
template <class T> static inline T dv_fmodp(T a, T b) {
  T r = dv_fmod_c(a, b);
  if (r != 0 && ((r < 0) != (b < 0))) r += b;
  return r;
}
template <class T> static inline T dv_fmax(T a, T b) { return (a != a || a > b) ? a : b; }
template <class T> static inline T dv_fmin(T a, T b) { return (a != a || a < b) ? a : b; }
template <class To, class From> static inline To dv_f2i(From v) {
  const From limit = -(From)dv_int<To>::min;
  if (v != v) return 0;
  if (v >= limit) return dv_int<To>::max;
  if (v < -limit) return dv_int<To>::min;
  return (To)v;
}
)";

// Exact 16-bit float conversions: round to nearest even, infinities kept,
// NaN kept a quiet NaN of the same sign (interpreter.cpp explains each step).
constexpr const char* kHalf = R"(static inline float dv_bf16_to_f32(dv_u16 b) { return __builtin_bit_cast(float, (dv_u32)b << 16); }
static inline dv_u16 dv_f32_to_bf16(float v) {
  const dv_u32 bits = __builtin_bit_cast(dv_u32, v);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return (dv_u16)((bits >> 16) | 0x0040u);
  return (dv_u16)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}
static inline dv_u32 dv_round_shift_rne(dv_u32 mantissa, dv_u32 shift) {
  const dv_u32 kept = mantissa >> shift, rest = mantissa & ((1u << shift) - 1u), half = 1u << (shift - 1);
  return (rest > half || (rest == half && (kept & 1u))) ? kept + 1 : kept;
}
static inline dv_u16 dv_f32_to_f16(float value) {
  const dv_u32 bits = __builtin_bit_cast(dv_u32, value);
  const dv_u32 sign = (bits >> 16) & 0x8000u, mag = bits & 0x7fffffffu;
  dv_u32 half;
  if (mag > 0x7f800000u) half = 0x7e00u | ((mag >> 13) & 0x03ffu);
  else if (mag >= 0x477ff000u) half = 0x7c00u;
  else if (mag >= 0x38800000u) half = dv_round_shift_rne(mag - 0x38000000u, 13);
  else if (mag <= 0x33000000u) half = 0;
  else half = dv_round_shift_rne((mag & 0x7fffffu) | 0x800000u, 126 - (mag >> 23));
  return (dv_u16)(sign | half);
}
static inline float dv_f16_to_f32(dv_u16 bits) {
  const dv_u32 sign = ((dv_u32)bits & 0x8000u) << 16, exponent = (bits >> 10) & 0x1fu, mantissa = bits & 0x3ffu;
  if (exponent == 0x1f) return __builtin_bit_cast(float, sign | 0x7f800000u | (mantissa << 13));
  if (exponent != 0) return __builtin_bit_cast(float, sign | ((exponent + 112) << 23) | (mantissa << 13));
  const float magnitude = (float)mantissa * 0x1p-24f;
  return sign ? -magnitude : magnitude;
}
)";

}  // namespace

std::string cpp_prelude(bool vector_math) {
  std::string out = kTypes;
  out += vector_math ? "#define DV_VEC __attribute__((simd(\"notinbranch\")))\n" : "#define DV_VEC\n";
  out += kMath;
  out += kIntegers;
  out += kFloats;
  out += kHalf;
  return out;
}

}  // namespace dv::codegen
