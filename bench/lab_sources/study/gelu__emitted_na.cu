// launch: grid (131072,1,1) block (128,1,1) shared 0
// deepvisor generated kernel k0
// iteration space: xnumel=67108864, rnumel=1
// strategy: pointwise; 128 threads x 1 chunks x 4 lanes per block (tile 512); no tail
//
// kernel k0 (xnumel=67108864, rnumel=1)
//   buffer d0: f32[67108864] read
//   buffer d5: f32[67108864] written
//   %0 = load d0[x] : f32
//   %1 = const 1.5 : f32
//   %2 = mul %0 %1 : f32
//   %3 = const 0.3 : f32
//   %4 = add %2 %3 : f32
//   %5 = const 0.5 : f32
//   %6 = mul %4 %5 : f32
//   %7 = const 0.707106781 : f32
//   %8 = mul %4 %7 : f32
//   %9 = erf %8 : f32
//   %10 = const 1 : f32
//   %11 = add %10 %9 : f32
//   %12 = mul %6 %11 : f32
//   %13 = neg %0 : f32
//   %14 = exp %13 : f32
//   %15 = add %10 %14 : f32
//   %16 = div %10 %15 : f32
//   %17 = mul %12 %16 : f32
//   store d5[x] = %17 : f32

// ---- helpers (no include files: NVRTC compiles this source as is) ----
#pragma nv_diag_suppress 177  // unused shape constants are fine
template <typename T, int N> struct alignas(sizeof(T) * N) dv_vec { T e[N]; };

// f16 / bf16 are stored as unsigned short and computed in float.
__device__ __forceinline__ float dv_f16_to_f32(unsigned short h) {
  float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f;
}
__device__ __forceinline__ unsigned short dv_f32_to_f16(float f) {
  unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h;
}
__device__ __forceinline__ unsigned short dv_f64_to_f16(double d) {
  unsigned short h; asm("cvt.rn.f16.f64 %0, %1;" : "=h"(h) : "d"(d)); return h;
}
__device__ __forceinline__ float dv_bf16_to_f32(unsigned short b) { return __uint_as_float(((unsigned)b) << 16); }
__device__ __forceinline__ unsigned short dv_bits_to_bf16(unsigned u) {
  if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);  // NaN: stays (quiet) NaN
  u += 0x7fffu + ((u >> 16) & 1u);                                                  // round to nearest even
  return (unsigned short)(u >> 16);
}
__device__ __forceinline__ unsigned short dv_f32_to_bf16(float f) {
#if __CUDA_ARCH__ >= 800
  unsigned short h; asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h;
#else
  return dv_bits_to_bf16(__float_as_uint(f));
#endif
}
// Two floats to a packed f16 / bf16 pair (lo at the lower address), one
// instruction on sm_80+: a 16-byte store of 8 halves takes 4 conversions.
__device__ __forceinline__ unsigned dv_f32x2_to_bf16x2(float lo, float hi) {
#if __CUDA_ARCH__ >= 800
  unsigned r; asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo)); return r;
#else
  return (unsigned)dv_f32_to_bf16(lo) | ((unsigned)dv_f32_to_bf16(hi) << 16);
#endif
}
__device__ __forceinline__ unsigned dv_f32x2_to_f16x2(float lo, float hi) {
#if __CUDA_ARCH__ >= 800
  unsigned r; asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo)); return r;
#else
  return (unsigned)dv_f32_to_f16(lo) | ((unsigned)dv_f32_to_f16(hi) << 16);
#endif
}
__device__ __forceinline__ unsigned short dv_f64_to_bf16(double d) {
  // Round to odd into float, then to nearest even: one correct rounding.
  float f; asm("cvt.rz.f32.f64 %0, %1;" : "=f"(f) : "d"(d));
  unsigned u = __float_as_uint(f);
  if ((double)f != d && d == d) u |= 1u;
  return dv_bits_to_bf16(u);
}

// Integer arithmetic wraps around (two's complement); division by zero gives 0.
__device__ __forceinline__ int dv_neg(int a) { return (int)(0u - (unsigned)a); }
__device__ __forceinline__ long long dv_neg(long long a) { return (long long)(0ull - (unsigned long long)a); }
__device__ __forceinline__ int dv_add(int a, int b) { return (int)((unsigned)a + (unsigned)b); }
__device__ __forceinline__ long long dv_add(long long a, long long b) { return (long long)((unsigned long long)a + (unsigned long long)b); }
__device__ __forceinline__ int dv_sub(int a, int b) { return (int)((unsigned)a - (unsigned)b); }
__device__ __forceinline__ long long dv_sub(long long a, long long b) { return (long long)((unsigned long long)a - (unsigned long long)b); }
__device__ __forceinline__ int dv_mul(int a, int b) { return (int)((unsigned)a * (unsigned)b); }
__device__ __forceinline__ long long dv_mul(long long a, long long b) { return (long long)((unsigned long long)a * (unsigned long long)b); }
template <typename T> __device__ __forceinline__ T dv_abs(T a) { return a < 0 ? dv_neg(a) : a; }
template <typename T> __device__ __forceinline__ T dv_div(T a, T b) {
  if (b == 0) return 0;
  if (b == -1) return dv_neg(a);
  return a / b;
}
template <typename T> __device__ __forceinline__ T dv_floordiv(T a, T b) {
  if (b == 0) return 0;
  if (b == -1) return dv_neg(a);
  T q = a / b;
  if (a % b != 0 && ((a < 0) != (b < 0))) --q;
  return q;
}
template <typename T> __device__ __forceinline__ T dv_mod(T a, T b) {
  if (b == 0 || b == -1) return 0;
  T r = a % b;
  if (r != 0 && ((r < 0) != (b < 0))) r += b;
  return r;
}
template <typename T> __device__ __forceinline__ T dv_ipow(T a, T b) {
  if (b < 0) return a == 1 ? (T)1 : a == -1 ? ((b & 1) ? (T)-1 : (T)1) : (T)0;
  T r = 1;
  while (b != 0) {
    if (b & 1) r = dv_mul(r, a);
    b >>= 1;
    if (b != 0) a = dv_mul(a, a);
  }
  return r;
}

// Python remainder for floats: the result takes the sign of b.
__device__ __forceinline__ float dv_fmod(float a, float b) {
  float r = fmodf(a, b);
  if (r != 0.0f && ((r < 0.0f) != (b < 0.0f))) r += b;
  return r;
}
__device__ __forceinline__ double dv_fmod(double a, double b) {
  double r = fmod(a, b);
  if (r != 0.0 && ((r < 0.0) != (b < 0.0))) r += b;
  return r;
}

// Maximum / minimum; NaN wins for floats.
__device__ __forceinline__ float dv_max(float a, float b) { return (a > b || a != a) ? a : b; }
__device__ __forceinline__ float dv_min(float a, float b) { return (a < b || a != a) ? a : b; }
__device__ __forceinline__ double dv_max(double a, double b) { return (a > b || a != a) ? a : b; }
__device__ __forceinline__ double dv_min(double a, double b) { return (a < b || a != a) ? a : b; }
__device__ __forceinline__ int dv_max(int a, int b) { return a > b ? a : b; }
__device__ __forceinline__ int dv_min(int a, int b) { return a < b ? a : b; }
__device__ __forceinline__ long long dv_max(long long a, long long b) { return a > b ? a : b; }
__device__ __forceinline__ long long dv_min(long long a, long long b) { return a < b ? a : b; }

// Butterfly exchange within a warp (all 32 lanes take part).
__device__ __forceinline__ float dv_shfl_xor(float v, int m) { return __shfl_xor_sync(0xffffffffu, v, m); }
__device__ __forceinline__ double dv_shfl_xor(double v, int m) { return __shfl_xor_sync(0xffffffffu, v, m); }
__device__ __forceinline__ int dv_shfl_xor(int v, int m) { return __shfl_xor_sync(0xffffffffu, v, m); }
__device__ __forceinline__ long long dv_shfl_xor(long long v, int m) { return __shfl_xor_sync(0xffffffffu, v, m); }
__device__ __forceinline__ bool dv_shfl_xor(bool v, int m) { return __shfl_xor_sync(0xffffffffu, (int)v, m) != 0; }

typedef int idx_t;  // 32-bit index arithmetic (every index < 2^31)
constexpr idx_t kXnumel = 67108864;
constexpr idx_t kRnumel = 1;
constexpr int kThreads = 128;
constexpr idx_t kTile = 512;
constexpr idx_t kFullTiles = 131072;

// A 16-byte load with an L1 policy (lab variant).
template <typename V> __device__ __forceinline__ V dv_ld_hint(const V* p) {
  unsigned u[4];
  asm("ld.global.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(u[0]), "=r"(u[1]), "=r"(u[2]), "=r"(u[3]) : "l"(p));
  V v;
  memcpy(&v, u, 16);
  return v;
}
extern "C" __global__ void __launch_bounds__(128) k0(const float* __restrict__ b0_d0, float* __restrict__ b1_d5) {
  const float v1 = 1.5f;
  const float v3 = 0.300000012f;
  const float v5 = 0.5f;
  const float v7 = 0.707106769f;
  const float v10 = 1.0f;
  {
    // a full tile: chunk c of this thread covers x = xbase + c*kThreads*W + [0, W)
    const idx_t xbase = (idx_t)blockIdx.x * kTile + (idx_t)threadIdx.x * 4;
    float v0[4];
    #pragma unroll
    for (int c = 0; c < 1; ++c) {
      const idx_t l0 = xbase;
      const dv_vec<float, 4> w = dv_ld_hint(reinterpret_cast<const dv_vec<float, 4>*>(b0_d0 + l0));
      #pragma unroll
      for (int v = 0; v < 4; ++v) {
        v0[c * 4 + v] = w.e[v];
      }
    }
    float v2[4], v4[4], v6[4], v8[4], v9[4], v11[4], v12[4], v13[4], v14[4], v15[4], v16[4], v17[4];
    #pragma unroll
    for (int k = 0; k < 4; ++k) {
      v2[k] = (v0[k] * v1);
      v4[k] = (v2[k] + v3);
      v6[k] = (v4[k] * v5);
      v8[k] = (v4[k] * v7);
      v9[k] = erff(v8[k]);
      v11[k] = (v10 + v9[k]);
      v12[k] = (v6[k] * v11[k]);
      v13[k] = (-v0[k]);
      v14[k] = expf(v13[k]);
      v15[k] = (v10 + v14[k]);
      v16[k] = __frcp_rn(v15[k]);
      v17[k] = (v12[k] * v16[k]);
    }
    #pragma unroll
    for (int c = 0; c < 1; ++c) {
      const idx_t l0 = xbase;
      dv_vec<float, 4> w;
      #pragma unroll
      for (int v = 0; v < 4; ++v) {
        w.e[v] = v17[c * 4 + v];
      }
      *reinterpret_cast<dv_vec<float, 4>*>(b1_d5 + l0) = w;
    }
  }
}

