"""TMA lab: can Hopper's bulk copy engine beat the LDG/STG floor on rows?

    python3 bench/tma_lab.py [--rounds N]

Every kernel the emitter writes today moves its rows with 16-byte LDG/STG and
runs at the speed of a copy with the same launch shape (bench/NOTES.md). This
lab asks whether that floor is the memory system's or the load path's: it
times, on f32 16384x4096 (layer_norm's shape), a plain LDG copy, a copy done
by `cp.async.bulk` (rows staged through shared memory, several rows in flight
a block, a persistent grid), and layer_norm kernels whose rows arrive the same
way (results stored by STG, or staged back and sent by a bulk store), next to
the emitted layer_norm, deepvisor and torch.compile. Every kernel is checked
against eager first. A lab, not a test: the product never runs this code.
"""

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kernel_lab  # noqa: E402  (compile_kernel, median_us, resident_blocks, layer_norm)

ROWS, COLS = kernel_lab.LN_ROWS, kernel_lab.LN_COLS
EMITTED = Path(__file__).resolve().parent / "lab_sources" / "lnf32__onepass_f653628.cu"

# Shared-memory barrier and bulk-copy primitives (PTX ISA 8.0, sm_90).
PRIMITIVES = r"""
__device__ __forceinline__ unsigned smem_addr(const void* p) { return (unsigned)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void mbar_init(unsigned long long* bar, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" :: "r"(smem_addr(bar)), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_init_fence() {
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}
// Thread 0: the row `src` (bytes) lands in `dst`, completing on `bar`.
__device__ __forceinline__ void bulk_load(void* dst, const void* src, unsigned bytes, unsigned long long* bar) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" :: "r"(smem_addr(bar)), "r"(bytes) : "memory");
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
               :: "r"(smem_addr(dst)), "l"(src), "r"(bytes), "r"(smem_addr(bar)) : "memory");
}
__device__ __forceinline__ void mbar_wait(unsigned long long* bar, unsigned parity) {
  asm volatile("{\n .reg .pred p;\n WAIT_%=:\n"
               " mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
               " @!p bra WAIT_%=;\n}" :: "r"(smem_addr(bar)), "r"(parity) : "memory");
}
__device__ __forceinline__ void bulk_store(void* dst, const void* src, unsigned bytes) {
  asm volatile("cp.async.bulk.global.shared::cta.bulk_group [%0], [%1], %2;" :: "l"(dst), "r"(smem_addr(src)), "r"(bytes) : "memory");
  asm volatile("cp.async.bulk.commit_group;" ::: "memory");
}
template <int N> __device__ __forceinline__ void bulk_wait_read() { asm volatile("cp.async.bulk.wait_group.read %0;" :: "n"(N) : "memory"); }
__device__ __forceinline__ void bulk_wait_all() { asm volatile("cp.async.bulk.wait_group 0;" ::: "memory"); }
__device__ __forceinline__ void fence_async_smem() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }
__device__ __forceinline__ float4 ld_smem4(const float* p) { return *reinterpret_cast<const float4*>(p); }
__device__ __forceinline__ void st_smem4(float* p, float4 v) { *reinterpret_cast<float4*>(p) = v; }
"""


def copy_ldg_source(name, threads):
    chunks = COLS // (threads * 4)
    return f"""
extern "C" __global__ void __launch_bounds__({threads}) {name}(const float* __restrict__ x, float* __restrict__ out, int rows) {{
  const long long base = (long long)blockIdx.x * {COLS} + threadIdx.x * 4;
  float4 v[{chunks}];
  #pragma unroll
  for (int c = 0; c < {chunks}; ++c) v[c] = *reinterpret_cast<const float4*>(x + base + c * {threads * 4});
  #pragma unroll
  for (int c = 0; c < {chunks}; ++c) *reinterpret_cast<float4*>(out + base + c * {threads * 4}) = v[c];
}}
"""


def copy_tma_source(name, stages):
    """One warp a block; lane 0 keeps `stages` rows in flight: bulk load, then bulk store from the same stage."""
    return PRIMITIVES + f"""
extern "C" __global__ void __launch_bounds__(32) {name}(const float* __restrict__ x, float* __restrict__ out, int rows) {{
  extern __shared__ __align__(128) float stage[];
  __shared__ __align__(8) unsigned long long full[{stages}];
  if (threadIdx.x != 0) return;
  for (int s = 0; s < {stages}; ++s) mbar_init(&full[s], 1);
  mbar_init_fence();
  const unsigned bytes = {COLS * 4};
  for (int k = 0; k < {stages}; ++k) {{
    const int row = blockIdx.x + k * gridDim.x;
    if (row < rows) bulk_load(stage + k * {COLS}, x + (long long)row * {COLS}, bytes, &full[k]);
  }}
  int i = 0;
  for (int row = blockIdx.x; row < rows; row += gridDim.x, ++i) {{
    const int s = i % {stages};
    mbar_wait(&full[s], (i / {stages}) & 1);
    bulk_store(out + (long long)row * {COLS}, stage + s * {COLS}, bytes);
    bulk_wait_read<0>();
    const int next = row + {stages} * gridDim.x;
    if (next < rows) bulk_load(stage + s * {COLS}, x + (long long)next * {COLS}, bytes, &full[s]);
  }}
  bulk_wait_all();
}}
"""


def ln_tma_source(name, threads, stages, bulk_out):
    """layer_norm with rows brought in by bulk loads, `stages` rows in flight a
    block (persistent grid). Thread t holds float4 chunks t and t+threads. The
    result goes out by STG, or (bulk_out) back into the stage and out by one
    bulk store, the stage refilled once that store has read it."""
    chunks = COLS // (threads * 4)
    warps = threads // 32
    load_chunks = "\n".join(f"    v[{c}] = ld_smem4(row_in + ({c * threads} + t) * 4);" for c in range(chunks))
    if bulk_out:
        write = "\n".join(f"    st_smem4(row_in + ({c * threads} + t) * 4, y[{c}]);" for c in range(chunks)) + """
    fence_async_smem();
    __syncthreads();
    if (t == 0) {
      bulk_store(out + (long long)row * COLS, row_in, BYTES);
      if (i >= 1) {  // the previous row's store has read its stage: refill it
        bulk_wait_read<1>();
        const int prev_stage = (i - 1) % STAGES;
        const int next = row - gridDim.x + STAGES * gridDim.x;
        if (next < rows) bulk_load(stage + prev_stage * COLS, x + (long long)next * COLS, BYTES, &full[prev_stage]);
      }
    }"""
        refill_after_read = ""
        finish = "  if (t == 0) bulk_wait_all();"
    else:
        write = "\n".join(f"    __stcs(reinterpret_cast<float4*>(out + (long long)row * COLS + ({c * threads} + t) * 4), y[{c}]);"
                          for c in range(chunks))
        refill_after_read = """
    if (t == 0) {  // every thread has its chunks in registers: refill this stage
      const int next = row + STAGES * gridDim.x;
      if (next < rows) bulk_load(row_in, x + (long long)next * COLS, BYTES, &full[s]);
    }"""
        finish = ""
    return PRIMITIVES + f"""
#define COLS {COLS}
#define STAGES {stages}
#define BYTES {COLS * 4}
__device__ __forceinline__ float block_sum(float v, float* red, int t) {{
  #pragma unroll
  for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
  if ((t & 31) == 0) red[t >> 5] = v;
  __syncthreads();
  float s = 0.0f;
  #pragma unroll
  for (int k = 0; k < {warps}; ++k) s += red[k];
  return s;
}}
extern "C" __global__ void __launch_bounds__({threads}) {name}(const float* __restrict__ x, const float* __restrict__ w,
    const float* __restrict__ b, float* __restrict__ out, int rows) {{
  extern __shared__ __align__(128) float stage[];
  __shared__ __align__(8) unsigned long long full[STAGES];
  __shared__ float red[2][{warps}];
  const int t = threadIdx.x;
  if (t == 0) {{
    for (int s = 0; s < STAGES; ++s) mbar_init(&full[s], 1);
    mbar_init_fence();
    for (int k = 0; k < STAGES; ++k) {{
      const int row = blockIdx.x + k * gridDim.x;
      if (row < rows) bulk_load(stage + k * COLS, x + (long long)row * COLS, BYTES, &full[k]);
    }}
  }}
  __syncthreads();
  float4 wv[{chunks}], bv[{chunks}];
  #pragma unroll
  for (int c = 0; c < {chunks}; ++c) {{
    wv[c] = *reinterpret_cast<const float4*>(w + (c * {threads} + t) * 4);
    bv[c] = *reinterpret_cast<const float4*>(b + (c * {threads} + t) * 4);
  }}
  int i = 0;
  for (int row = blockIdx.x; row < rows; row += gridDim.x, ++i) {{
    const int s = i % STAGES;
    float* row_in = stage + s * COLS;
    mbar_wait(&full[s], (i / STAGES) & 1);
    float4 v[{chunks}];
{load_chunks}
    float sum = 0.0f;
    #pragma unroll
    for (int c = 0; c < {chunks}; ++c) sum += (v[c].x + v[c].y) + (v[c].z + v[c].w);
    const float mean = block_sum(sum, red[0], t) * (1.0f / COLS);{refill_after_read}
    float sq = 0.0f;
    #pragma unroll
    for (int c = 0; c < {chunks}; ++c) {{
      v[c].x -= mean; v[c].y -= mean; v[c].z -= mean; v[c].w -= mean;
      sq += (v[c].x * v[c].x + v[c].y * v[c].y) + (v[c].z * v[c].z + v[c].w * v[c].w);
    }}
    const float rstd = rsqrtf(block_sum(sq, red[1], t) * (1.0f / COLS) + 1e-5f);
    float4 y[{chunks}];
    #pragma unroll
    for (int c = 0; c < {chunks}; ++c) {{
      y[c].x = v[c].x * rstd * wv[c].x + bv[c].x; y[c].y = v[c].y * rstd * wv[c].y + bv[c].y;
      y[c].z = v[c].z * rstd * wv[c].z + bv[c].z; y[c].w = v[c].w * rstd * wv[c].w + bv[c].w;
    }}
{write}
  }}
{finish}
}}
"""


def ln_looped_source(name, threads, step_chunks, hint, passes=2):
    """layer_norm as Inductor writes it for f32 rows of 4096: a loop over the
    row for the statistics (sums shifted by the row's first element), then a
    second loop that reads the row again (from L2) and writes it. `hint`: none,
    l2 (an L2 evict_last policy on the first read, evict_first on the second)
    or l1l2 (the same plus the L1 eviction priorities). passes=3: a first
    pass for the mean alone (the shift), as deepvisor's looped form does."""
    step = threads * 4 * step_chunks
    steps = COLS // step
    if hint == "none":
        load = "ldg_plain"
    else:
        load = "ldg_hint"
    l1_last, l1_first = ("L1::evict_last.", "L1::evict_first.") if hint == "l1l2" else ("", "")
    if passes == 2:
        shift = "  const float shift = xr[0];"
    else:
        shift = f"""  float shift = 0.0f;
  #pragma unroll
  for (int k = 0; k < {steps}; ++k) {{
    #pragma unroll
    for (int c = 0; c < {step_chunks}; ++c) {{
      const float4 v = {load}(xr + k * {step} + (c * {threads} + t) * 4, keep, true);
      shift += (v.x + v.y) + (v.z + v.w);
    }}
  }}
  #pragma unroll
  for (int m = 16; m > 0; m >>= 1) shift += __shfl_xor_sync(0xffffffffu, shift, m);
  if ((t & 31) == 0) red[0][t >> 5] = shift;
  __syncthreads();
  shift = 0.0f;
  #pragma unroll
  for (int k = 0; k < {threads // 32}; ++k) shift += red[0][k];
  shift *= 1.0f / COLS;
  __syncthreads();  // red[0] is reused below"""
    return f"""
#define COLS {COLS}
__device__ __forceinline__ float4 ldg_plain(const float* p, unsigned long long, bool) {{ return *reinterpret_cast<const float4*>(p); }}
__device__ __forceinline__ float4 ldg_hint(const float* p, unsigned long long policy, bool last) {{
  float4 v;
  if (last) asm volatile("ld.global.{l1_last}L2::cache_hint.v4.f32 {{%0,%1,%2,%3}}, [%4], %5;"
                         : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w) : "l"(p), "l"(policy));
  else asm volatile("ld.global.{l1_first}L2::cache_hint.v4.f32 {{%0,%1,%2,%3}}, [%4], %5;"
                    : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w) : "l"(p), "l"(policy));
  return v;
}}
extern "C" __global__ void __launch_bounds__({threads}) {name}(const float* __restrict__ x, const float* __restrict__ w,
    const float* __restrict__ b, float* __restrict__ out, int rows) {{
  __shared__ float red[2][{threads // 32}];
  const int t = threadIdx.x;
  const float* xr = x + (long long)blockIdx.x * COLS;
  float* yr = out + (long long)blockIdx.x * COLS;
  unsigned long long keep = 0, drop = 0;
  asm("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;" : "=l"(keep));
  asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(drop));
{shift}
  float s = 0.0f, ss = 0.0f;
  #pragma unroll
  for (int k = 0; k < {steps}; ++k) {{
    float4 v[{step_chunks}];
    #pragma unroll
    for (int c = 0; c < {step_chunks}; ++c) v[c] = {load}(xr + k * {step} + (c * {threads} + t) * 4, keep, true);
    #pragma unroll
    for (int c = 0; c < {step_chunks}; ++c) {{
      const float a = v[c].x - shift, bb = v[c].y - shift, cc = v[c].z - shift, d = v[c].w - shift;
      s += (a + bb) + (cc + d);
      ss += (a * a + bb * bb) + (cc * cc + d * d);
    }}
  }}
  #pragma unroll
  for (int m = 16; m > 0; m >>= 1) {{ s += __shfl_xor_sync(0xffffffffu, s, m); ss += __shfl_xor_sync(0xffffffffu, ss, m); }}
  if ((t & 31) == 0) {{ red[0][t >> 5] = s; red[1][t >> 5] = ss; }}
  __syncthreads();
  s = 0.0f; ss = 0.0f;
  #pragma unroll
  for (int k = 0; k < {threads // 32}; ++k) {{ s += red[0][k]; ss += red[1][k]; }}
  const float dm = s * (1.0f / COLS);
  const float mean = shift + dm;
  const float rstd = rsqrtf(fmaxf(ss * (1.0f / COLS) - dm * dm, 0.0f) + 1e-5f);
  #pragma unroll
  for (int k = 0; k < {steps}; ++k) {{
    float4 v[{step_chunks}];
    #pragma unroll
    for (int c = 0; c < {step_chunks}; ++c) v[c] = {load}(xr + k * {step} + (c * {threads} + t) * 4, drop, false);
    #pragma unroll
    for (int c = 0; c < {step_chunks}; ++c) {{
      const int col = k * {step} + (c * {threads} + t) * 4;
      const float4 wv = *reinterpret_cast<const float4*>(w + col), bv = *reinterpret_cast<const float4*>(b + col);
      float4 y;
      y.x = (v[c].x - mean) * rstd * wv.x + bv.x; y.y = (v[c].y - mean) * rstd * wv.y + bv.y;
      y.z = (v[c].z - mean) * rstd * wv.z + bv.z; y.w = (v[c].w - mean) * rstd * wv.w + bv.w;
      *reinterpret_cast<float4*>(yr + col) = y;
    }}
  }}
}}
"""


def inductor_configs():
    """The configs torch.compile's autotuner kept for the kernels it loaded."""
    import gc
    from torch._inductor.runtime.triton_heuristics import CachingAutotuner
    kept = []
    for obj in gc.get_objects():
        try:
            if isinstance(obj, CachingAutotuner):
                kept.append((obj.fn.__name__, [str(launcher.config) for launcher in obj.launchers]))
        except ReferenceError:  # a dead weak proxy
            pass
    return kept


def build(name, source, smem):
    kernel = kernel_lab.compile_kernel(source, name)
    kernel.set_shared_memory_config(smem)
    return kernel


def variants(x, w, b, sms):
    """name -> (launch, output, reference name)."""
    found = {}
    out = torch.full_like(x, float("nan"))
    k = kernel_lab.compile_kernel(copy_ldg_source("copy_ldg512", 512), "copy_ldg512")
    found["copy LDG, 512 thr x 2 float4, a row a block"] = (lambda k=k, o=out: k((ROWS, 1, 1), (512, 1, 1), [x, o, ROWS]), out, "x")
    for stages, per_sm in ((2, 4), (4, 4), (4, 8), (8, 4)):
        name = f"copy_tma_s{stages}"
        smem = stages * COLS * 4
        k = build(name, copy_tma_source(name, stages), smem)
        grid = sms * min(per_sm, kernel_lab.resident_blocks(k, 32, smem))
        out = torch.full_like(x, float("nan"))
        found[f"copy TMA, {stages} rows in flight a block, grid {grid}"] = (
            lambda k=k, o=out, g=grid, smem=smem: k((g, 1, 1), (32, 1, 1), [x, o, ROWS], shared_mem=smem), out, "x")
    for threads, stages, bulk_out in ((512, 2, False), (512, 3, False), (256, 3, False), (512, 3, True), (256, 4, True)):
        name = f"ln_tma_t{threads}_s{stages}_{'bulk' if bulk_out else 'stg'}"
        smem = stages * COLS * 4
        k = build(name, ln_tma_source(name, threads, stages, bulk_out), smem)
        occupancy = kernel_lab.resident_blocks(k, threads, smem)
        for grid in sorted({sms * occupancy, ROWS}):
            out = torch.full_like(x, float("nan"))
            found[f"{name}, grid {grid} ({occupancy} a SM)"] = (
                lambda k=k, o=out, g=grid, t=threads, smem=smem: k((g, 1, 1), (t, 1, 1), [x, w, b, o, ROWS], shared_mem=smem),
                out, "ln")
    for threads, step_chunks in ((128, 2), (256, 1), (256, 2), (512, 1), (1024, 1)):
        for hint in ("none", "l2", "l1l2"):
            name = f"ln_looped_t{threads}_c{step_chunks}_{hint}"
            k = kernel_lab.compile_kernel(ln_looped_source(name, threads, step_chunks, hint), name)
            out = torch.full_like(x, float("nan"))
            found[name] = (lambda k=k, o=out, t=threads: k((ROWS, 1, 1), (t, 1, 1), [x, w, b, o, ROWS]), out, "ln")
    emitted = kernel_lab.compile_kernel(EMITTED.read_text(), "k0")
    out = torch.full_like(x, float("nan"))
    found["emitted layer_norm (512 thr x 2 float4 LDG)"] = (lambda o=out: emitted((ROWS, 1, 1), (512, 1, 1), [x, w, b, o]), out, "ln")
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", default="", help="time only the kernels whose names contain this (plus the references)")
    opts = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench/tma_lab.py needs a CUDA GPU")
    torch.manual_seed(0)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    x = torch.randn(ROWS, COLS, device="cuda")
    w, b = torch.randn(COLS, device="cuda"), torch.randn(COLS, device="cuda")
    want = {"x": x, "ln": kernel_lab.layer_norm(x, w, b)}
    rows = {}
    for name, (launch, out, ref) in variants(x, w, b, sms).items():
        if opts.only not in name and not name.startswith(("emitted", "copy LDG")):
            continue
        launch()
        torch.cuda.synchronize()
        try:
            torch.testing.assert_close(out, want[ref], rtol=1e-4, atol=1e-4)
        except AssertionError as e:
            print(f"WRONG {name}: {str(e).splitlines()[:4]}")
            continue
        rows[name] = launch
    import deepvisor
    dv = deepvisor.compile(kernel_lab.layer_norm)
    tc = torch.compile(kernel_lab.layer_norm)
    for f in (dv, tc):
        torch.testing.assert_close(f(x, w, b), want["ln"], rtol=1e-4, atol=1e-4)
    print("torch.compile kept:", inductor_configs())
    rows["deepvisor layer_norm"] = lambda: dv(x, w, b)
    rows["torch.compile layer_norm"] = lambda: tc(x, w, b)
    copy_out = torch.empty_like(x)
    rows["torch copy_"] = lambda: copy_out.copy_(x)

    times = {name: [] for name in rows}
    names = list(rows)
    for r in range(opts.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name].append(kernel_lab.median_us(rows[name]))
    moved = 2 * x.numel() * 4
    print("\n| kernel (f32 16384x4096, do_bench) | median us | TB/s | rounds |")
    print("| --- | --- | --- | --- |")
    for name in names:
        med = statistics.median(times[name])
        print(f"| {name} | {med:.1f} | {moved / med / 1e6:.2f} | {', '.join(f'{t:.1f}' for t in times[name])} |")


if __name__ == "__main__":
    main()
