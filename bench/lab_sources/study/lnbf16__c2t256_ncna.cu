// launch: grid (16384,1,1) block (256,1,1) shared 0
// deepvisor generated kernel k0
// iteration space: xnumel=16384, rnumel=4096
// strategy: row kernel, persistent (the row stays in registers); 256 threads per row, 1 rows per block of 256 threads; each thread holds 2 chunks x 8 lanes
//
// kernel k0 (xnumel=16384, rnumel=4096)
//   buffer d0: bf16[67108864] read
//   buffer d1: bf16[4096] read
//   buffer d2: bf16[4096] read
//   buffer d8: bf16[67108864] written
//   %0 = load d0[x*4096 + r] : f32  (r)
//   %1 = reduce.sum %0 : f32
//   %2 = const 4096 : f32
//   %3 = div %1 %2 : f32
//   %4 = sub %0 %3 : f32  (r)
//   %5 = mul %4 %4 : f32  (r)
//   %6 = reduce.sum %5 : f32
//   %7 = div %6 %2 : f32
//   %8 = const 1e-05 : f32
//   %9 = add %7 %8 : f32
//   %10 = rsqrt %9 : f32
//   %11 = mul %4 %10 : f32  (r)
//   %12 = load d1[r] : f32  (r)
//   %13 = mul %11 %12 : f32  (r)
//   %14 = load d2[r] : f32  (r)
//   %15 = add %13 %14 : f32  (r)
//   store d8[x*4096 + r] = %15 : f32  (r)

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
constexpr idx_t kXnumel = 16384;
constexpr idx_t kRnumel = 4096;
constexpr int kTpr = 256;  // threads per row
constexpr int kRpb = 1;  // rows per block

// A 16-byte load with an L1 policy (lab variant).
template <typename V> __device__ __forceinline__ V dv_ld_hint(const V* p) {
  unsigned u[4];
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(u[0]), "=r"(u[1]), "=r"(u[2]), "=r"(u[3]) : "l"(p));
  V v;
  memcpy(&v, u, 16);
  return v;
}
extern "C" __global__ void __launch_bounds__(256) k0(const unsigned short* __restrict__ b0_d0, const unsigned short* __restrict__ b1_d1, const unsigned short* __restrict__ b2_d2, unsigned short* __restrict__ b3_d8) {
  __shared__ float red_v1[8];
  __shared__ float red_v6[8];
  __shared__ float red_v6_pivoted[8];
  const int tid = threadIdx.x;
  const int t = tid;  // thread within its row
  const int row = 0;  // row within the block
  const int lane = tid % 32;
  const int warp = t / 32;  // warp within its row
  const idx_t x = (idx_t)blockIdx.x * kRpb + row;
  const idx_t rbase = (idx_t)t * 8;  // chunk c covers r = rbase + c*kTpr*W + [0, W)
  unsigned short v0[16];  // as stored; converted where used
  #pragma unroll
  for (int c = 0; c < 2; ++c) {
    const idx_t l0 = rbase + c * 2048;
    const dv_vec<unsigned short, 8> w = dv_ld_hint(reinterpret_cast<const dv_vec<unsigned short, 8>*>(b0_d0 + (l0 + x * 4096)));
    #pragma unroll
    for (int v = 0; v < 8; ++v) {
      v0[c * 8 + v] = w.e[v];
    }
  }
  // %1 = reduce.sum %0, and with it %6 = sum((%0 - %1/4096)^2) in one pass
  float v1, v6;
  {
    float acc[8];
    #pragma unroll
    for (int v = 0; v < 8; ++v) {
      acc[v] = 0.0f;
    }
    #pragma unroll
    for (int c = 0; c < 2; ++c) {
      #pragma unroll
      for (int v = 0; v < 8; ++v) {
        acc[v] = (acc[v] + dv_bf16_to_f32(v0[c * 8 + v]));
      }
    }
    float a = acc[0];
    #pragma unroll
    for (int v = 1; v < 8; ++v) {
      a = (a + acc[v]);
    }
    const float p0 = dv_bf16_to_f32(b0_d0[(x * 4096)]);
    const float pivot = p0;  // x at the row's first element
    float b = 0.0f;  // the thread's sum of x - pivot
    #pragma unroll
    for (int k = 0; k < 16; ++k) {
      b = (b + (dv_bf16_to_f32(v0[k]) - pivot));
    }
    const float own = b, own_mean = b / 16.0f;
    float q = 0.0f;
    #pragma unroll
    for (int k = 0; k < 16; ++k) {
      const float d = (dv_bf16_to_f32(v0[k]) - pivot) - own_mean;
      q = (q + d * d);
    }
    { const float o = dv_shfl_xor(a, 16); a = (a + o); }
    { const float o = dv_shfl_xor(b, 16); b = (b + o); }
    { const float o = dv_shfl_xor(a, 8); a = (a + o); }
    { const float o = dv_shfl_xor(b, 8); b = (b + o); }
    { const float o = dv_shfl_xor(a, 4); a = (a + o); }
    { const float o = dv_shfl_xor(b, 4); b = (b + o); }
    { const float o = dv_shfl_xor(a, 2); a = (a + o); }
    { const float o = dv_shfl_xor(b, 2); b = (b + o); }
    { const float o = dv_shfl_xor(a, 1); a = (a + o); }
    { const float o = dv_shfl_xor(b, 1); b = (b + o); }
    { const float e = own - b * 0.03125f; q = (q + e * e / 16.0f); }
    { const float o = dv_shfl_xor(q, 16); q = (q + o); }
    { const float o = dv_shfl_xor(q, 8); q = (q + o); }
    { const float o = dv_shfl_xor(q, 4); q = (q + o); }
    { const float o = dv_shfl_xor(q, 2); q = (q + o); }
    { const float o = dv_shfl_xor(q, 1); q = (q + o); }
    if (lane == 0) { red_v1[row * 8 + warp] = a; red_v6[row * 8 + warp] = q; red_v6_pivoted[row * 8 + warp] = b; }
  }
  const float v2 = 4096.0f;
  const float v8 = 9.99999975e-06f;
  unsigned short v12[16];  // as stored; converted where used
  #pragma unroll
  for (int c = 0; c < 2; ++c) {
    const idx_t l0 = rbase + c * 2048;
    const dv_vec<unsigned short, 8> w = *reinterpret_cast<const dv_vec<unsigned short, 8>*>(b1_d1 + l0);
    #pragma unroll
    for (int v = 0; v < 8; ++v) {
      v12[c * 8 + v] = w.e[v];
    }
  }
  unsigned short v14[16];  // as stored; converted where used
  #pragma unroll
  for (int c = 0; c < 2; ++c) {
    const idx_t l0 = rbase + c * 2048;
    const dv_vec<unsigned short, 8> w = *reinterpret_cast<const dv_vec<unsigned short, 8>*>(b2_d2 + l0);
    #pragma unroll
    for (int v = 0; v < 8; ++v) {
      v14[c * 8 + v] = w.e[v];
    }
  }
  __syncthreads();  // the partial results of the reductions above are in shared memory
  v1 = red_v1[row * 8];
  #pragma unroll
  for (int i = 1; i < 8; ++i) {
    v1 = (v1 + red_v1[row * 8 + i]);
  }
  v6 = red_v6[row * 8];
  #pragma unroll
  for (int i = 1; i < 8; ++i) {
    v6 = (v6 + red_v6[row * 8 + i]);
  }
  {
    float total = red_v6_pivoted[row * 8];
    #pragma unroll
    for (int i = 1; i < 8; ++i) {
      total = (total + red_v6_pivoted[row * 8 + i]);
    }
    float spread = 0.0f;
    #pragma unroll
    for (int i = 0; i < 8; ++i) {
      const float e = red_v6_pivoted[row * 8 + i] - total * 0.125f;
      spread = (spread + e * e);
    }
    v6 = (v6 + spread / 512.0f);
  }
  const float v3 = (v1 / v2);
  float v4[16], v5[16];
  #pragma unroll
  for (int k = 0; k < 16; ++k) {
    v4[k] = (dv_bf16_to_f32(v0[k]) - v3);
    v5[k] = (v4[k] * v4[k]);
  }
  const float v7 = (v6 / v2);
  const float v9 = (v7 + v8);
  const float v10 = __frcp_rn(sqrtf(v9));
  float v11[16], v13[16], v15[16];
  #pragma unroll
  for (int k = 0; k < 16; ++k) {
    v11[k] = (v4[k] * v10);
    v13[k] = (v11[k] * dv_bf16_to_f32(v12[k]));
    v15[k] = (v13[k] + dv_bf16_to_f32(v14[k]));
  }
  #pragma unroll
  for (int c = 0; c < 2; ++c) {
    const idx_t l0 = rbase + c * 2048;
    dv_vec<unsigned, 4> w;
    #pragma unroll
    for (int v = 0; v < 4; ++v) {
      w.e[v] = dv_f32x2_to_bf16x2(v15[c * 8 + 2 * v], v15[c * 8 + 2 * v + 1]);
    }
    *reinterpret_cast<dv_vec<unsigned, 4>*>(b3_d8 + (l0 + x * 4096)) = w;
  }
}

