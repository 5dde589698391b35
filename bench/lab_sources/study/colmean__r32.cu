// launch: grid (512,1,1) block (1024,1,1) shared 0
// deepvisor generated kernel k0
// iteration space: xnumel=16384, rnumel=4096
// strategy: row kernel, looped; column-major threads (a warp covers 32 consecutive rows); 32 threads per row, 32 rows per block of 1024 threads; each thread holds 8 chunks x 1 lanes per iteration, 16 iterations per pass, 1 passes
//
// kernel k0 (xnumel=16384, rnumel=4096)
//   buffer d0: f32[67108864] read
//   buffer d3: f32[16384] written
//   %0 = load d0[r*16384 + x] : f32  (r)
//   %1 = reduce.sum %0 : f32
//   %2 = const 4096 : f32
//   %3 = div %1 %2 : f32
//   store d3[x] = %3 : f32

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
constexpr int kTpr = 32;  // threads per row
constexpr int kRpb = 32;  // rows per block

extern "C" __global__ void __launch_bounds__(1024) k0(const float* __restrict__ b0_d0, float* __restrict__ b1_d3) {
  __shared__ float red_v1[1024];
  const int tid = threadIdx.x;
  const int t = tid / kRpb;  // thread within its row
  const int row = tid % kRpb;  // row within the block
  const idx_t x = (idx_t)blockIdx.x * kRpb + row;
  const float v2 = 4096.0f;
  // ---- pass 0: over the row in 16 iterations of 8 chunks
  float v1;  // reduce.sum %0
  float acc_v1[1];
  #pragma unroll
  for (int v = 0; v < 1; ++v) {
    acc_v1[v] = 0.0f;
  }
  #pragma unroll 1
  for (int it = 0; it < 16; ++it) {
    const idx_t rbase = (idx_t)it * 256 + (idx_t)t * 1;
    float v0[8];
    #pragma unroll
    for (int c = 0; c < 8; ++c) {
      const idx_t l0 = rbase + c * 32;
      v0[c] = b0_d0[(l0 * 16384 + x)];
    }
    #pragma unroll
    for (int c = 0; c < 8; ++c) {
      #pragma unroll
      for (int v = 0; v < 1; ++v) {
        acc_v1[v] = (acc_v1[v] + v0[c * 1 + v]);
      }
    }
  }
  {
    float a = acc_v1[0];
    red_v1[t * 32 + row] = a;
  }
  __syncthreads();  // the partial results of the reductions above are in shared memory
  v1 = red_v1[row];
  #pragma unroll
  for (int i = 1; i < 32; ++i) {
    v1 = (v1 + red_v1[i * 32 + row]);
  }
  const float v3 = (v1 / v2);
  if (t == 0) b1_d3[x] = v3;
}

