"""Kernel lab: hand-written variants of the issue-3 kernels, timed side by side.

    python3 bench/kernel_lab.py [--only PREFIX] [--ncu]

Each variant is a small change to the CUDA C that deepvisor's emitter writes
(tile shape, math functions, how row statistics are combined, how bf16 is
rounded), compiled with NVRTC through torch and timed in one process with
triton's do_bench, next to torch.compile and a copy kernel of the same launch
shape (the floor for that shape). Every variant is checked against eager
before it is timed. The lab decides what the emitter should write; it is not a
test and the product never runs this code.

--ncu launches each variant once after a warm-up, for `ncu -k regex:lab_`.

    python3 bench/kernel_lab.py --cu FILE.cu... [--rounds N] [--methods flush,loop,graph] [--ncu]

times kernels the emitter wrote (`dvdump FILE --stage cuda` output, entry k0,
launch taken from its `// launch:` line; `dvdump --row-chunks/--row-threads`
writes other row tiles) against deepvisor, torch.compile, a copy and the
lab's own layer_norm variants, in N interleaved rounds, by each timing method
(flush: do_bench; loop: back-to-back calls; graph: a CUDA graph of calls).
The file name says the workload: lnf32__*.cu or lnbf16__*.cu (16384x4096
layer_norm; buffers x, w, b, out), softmax__*.cu (8192x8192 f32; x, out),
ln768f32__ / ln768bf16__ (32768x768 layer_norm), ln3072f32__ (16384x3072), sm512f32__ (16x12x512x512
softmax), rowsum__ (16384x4096 f32 sum over the last dim; x, out), sm32k__ (2048x32768 f32 softmax, rows too long for registers), ln32k__ (2048x32768 f32 layer_norm), colmean__
(4096x16384 f32 mean over the first dim), gelu__ (the 64M gelu chain).
"""

import re

import argparse
import statistics
import sys

import torch

GELU_N = 64 * 2**20
LN_ROWS, LN_COLS = 16384, 4096

HELPERS = r"""
template <typename T, int N> struct alignas(sizeof(T) * N) dv_vec { T e[N]; };
__device__ __forceinline__ float bf16_to_f32(unsigned short b) { return __uint_as_float(((unsigned)b) << 16); }
__device__ __forceinline__ unsigned short f32_to_bf16_manual(float f) {
  unsigned u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (unsigned short)(u >> 16);
}
// Two floats to two bf16 (round to nearest even) in one instruction: lo at the lower address.
__device__ __forceinline__ unsigned f32x2_to_bf16x2(float lo, float hi) {
  unsigned r; asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo)); return r;
}
"""


# ---------------------------------------------------------------- pointwise
def gelu_source(name, threads, chunks, math, persistent):
    """gelu(1.5x+0.3)*sigmoid(x) (or a copy) over float4 chunks: thread t of a
    tile holds chunks c at xbase + c*threads*4."""
    tile = threads * chunks * 4
    if math == "copy":
        body = "y[k] = v[k];"
    else:
        exp = "__expf" if math == "fast" else "expf"
        rcp = "__fdividef(1.0f, {})" if math == "fast" else "__frcp_rn({})"
        body = ("const float a = v[k] * 1.5f + 0.3f;"
                " const float g = (a * 0.5f) * (1.0f + erff(a * 0.707106769f));"
                f" y[k] = g * {rcp.format(f'(1.0f + {exp}(-v[k]))')};")
    loop = ("for (int tile = blockIdx.x; tile < ntiles; tile += gridDim.x)" if persistent
            else "const int tile = blockIdx.x;")
    return HELPERS + f"""
extern "C" __global__ void __launch_bounds__({threads}) {name}(const float* __restrict__ in, float* __restrict__ out, int ntiles) {{
  {loop} {{
    const int xbase = tile * {tile} + threadIdx.x * 4;
    float v[{chunks * 4}], y[{chunks * 4}];
    #pragma unroll
    for (int c = 0; c < {chunks}; ++c) {{
      const dv_vec<float, 4> w = *reinterpret_cast<const dv_vec<float, 4>*>(in + xbase + c * {threads * 4});
      #pragma unroll
      for (int e = 0; e < 4; ++e) v[c * 4 + e] = w.e[e];
    }}
    #pragma unroll
    for (int k = 0; k < {chunks * 4}; ++k) {{ {body} }}
    #pragma unroll
    for (int c = 0; c < {chunks}; ++c) {{
      dv_vec<float, 4> w;
      #pragma unroll
      for (int e = 0; e < 4; ++e) w.e[e] = y[c * 4 + e];
      *reinterpret_cast<dv_vec<float, 4>*>(out + xbase + c * {threads * 4}) = w;
    }}
  }}
}}
"""


def gelu_variants():
    # name: (threads, float4 chunks per thread, math, persistent (grid = SMs x resident blocks))
    return {
        "gelu_t256c4": (256, 4, "precise", 0),  # what the emitter wrote on 2026-11-24
        "gelu_t256c2": (256, 2, "precise", 0),
        "gelu_t128c1": (128, 1, "precise", 0),
        "gelu_t256c1": (256, 1, "precise", 0),
        "gelu_t512c1": (512, 1, "precise", 0),
        "gelu_t1024c1": (1024, 1, "precise", 0),
        "gelu_t128c2": (128, 2, "precise", 0),  # Inductor's shape: XBLOCK 1024, 4 warps
        "gelu_t256c1_fast": (256, 1, "fast", 0),  # __expf and approximate 1/x, as Triton
        "gelu_t256c2_pers": (256, 2, "precise", 1),
        "copyf32_t256c4": (256, 4, "copy", 0),
        "copyf32_t256c1": (256, 1, "copy", 0),
        "copyf32_t128c2": (128, 2, "copy", 0),
    }


# ---------------------------------------------------------------- layer_norm
def ln_source(name, tpr, rpb, stats, cvt, persistent, affine_regs, min_blocks=0, dtype="bf16", streaming=False):
    """layer_norm over rows of 4096 bf16 or f32 held in registers: `tpr`
    threads a row, `rpb` rows a block, 16 bytes (8 bf16, 4 f32) a chunk."""
    n = LN_COLS
    vec = 8 if dtype == "bf16" else 4
    st = "unsigned short" if dtype == "bf16" else "float"
    conv = "bf16_to_f32" if dtype == "bf16" else ""
    per_thread = n // tpr
    chunks = per_thread // vec
    wpr = tpr // 32
    threads = tpr * rpb
    load_affine = f"""
    #pragma unroll
    for (int c = 0; c < {chunks}; ++c) {{
      wq[c] = *reinterpret_cast<const dv_vec<{st}, {vec}>*>(w + rbase + c * {tpr * vec});
      bq[c] = *reinterpret_cast<const dv_vec<{st}, {vec}>*>(b + rbase + c * {tpr * vec});
    }}"""
    if stats == "copy":
        stats_code = "const float mean = 0.0f, rstd = 1.0f;"
        apply = "v[k]"
    elif stats == "twopass":
        stats_code = f"""
    float s = 0.0f;
    #pragma unroll
    for (int k = 0; k < {per_thread}; ++k) s += v[k];
    #pragma unroll
    for (int o = 16; o > 0; o /= 2) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) red[0][row * {wpr} + warp] = s;
    __syncthreads();
    float tot = red[0][row * {wpr}];
    #pragma unroll
    for (int i = 1; i < {wpr}; ++i) tot += red[0][row * {wpr} + i];
    const float mean = tot / {n}.0f;
    float q = 0.0f;
    #pragma unroll
    for (int k = 0; k < {per_thread}; ++k) {{ const float d = v[k] - mean; q += d * d; }}
    #pragma unroll
    for (int o = 16; o > 0; o /= 2) q += __shfl_xor_sync(0xffffffffu, q, o);
    if (lane == 0) red[1][row * {wpr} + warp] = q;
    __syncthreads();
    float qt = red[1][row * {wpr}];
    #pragma unroll
    for (int i = 1; i < {wpr}; ++i) qt += red[1][row * {wpr} + i];
    const float rstd = __frcp_rn(sqrtf(qt / {n}.0f + 1e-5f));"""
        apply = f"(v[k] - mean) * rstd * {conv}(wq[k / {vec}].e[k % {vec}]) + {conv}(bq[k / {vec}].e[k % {vec}])"
    else:  # chan: each thread's exact (mean, M2), merged pairwise with equal counts; one barrier
        stats_code = f"""
    float s = 0.0f;
    #pragma unroll
    for (int k = 0; k < {per_thread}; ++k) s += v[k];
    float m = s * (1.0f / {per_thread}.0f);
    float m2 = 0.0f;
    #pragma unroll
    for (int k = 0; k < {per_thread}; ++k) {{ const float d = v[k] - m; m2 += d * d; }}
    float half_count = {per_thread // 2}.0f;
    #pragma unroll
    for (int o = 16; o > 0; o /= 2) {{
      const float mo = __shfl_xor_sync(0xffffffffu, m, o);
      const float m2o = __shfl_xor_sync(0xffffffffu, m2, o);
      const float d = mo - m;
      m2 = (m2 + m2o) + d * d * half_count;
      m = (m + mo) * 0.5f;
      half_count *= 2.0f;
    }}
    float* slot = red[parity];
    if (lane == 0) {{ slot[2 * (row * {wpr} + warp)] = m; slot[2 * (row * {wpr} + warp) + 1] = m2; }}
    __syncthreads();
    m = slot[2 * row * {wpr}];
    m2 = slot[2 * row * {wpr} + 1];
    #pragma unroll
    for (int i = 1; i < {wpr}; ++i) {{
      const float mo = slot[2 * (row * {wpr} + i)], m2o = slot[2 * (row * {wpr} + i) + 1];
      const float cnt_a = {per_thread * 32}.0f * i;
      const float d = mo - m;
      m2 = (m2 + m2o) + d * d * (cnt_a * {per_thread * 32}.0f / (cnt_a + {per_thread * 32}.0f));
      m = m + d * ({per_thread * 32}.0f / (cnt_a + {per_thread * 32}.0f));
    }}
    parity ^= 1;
    const float mean = m;
    const float rstd = __frcp_rn(sqrtf(m2 / {n}.0f + 1e-5f));"""
        apply = f"(v[k] - mean) * rstd * {conv}(wq[k / {vec}].e[k % {vec}]) + {conv}(bq[k / {vec}].e[k % {vec}])"
    out_ptr = f"y + xr * {n} + rbase + c * {tpr * vec}"
    f32_store = f"*reinterpret_cast<dv_vec<float, 4>*>({out_ptr}) = o;"
    if streaming:  # evict-first (streaming) hints on the row's load and store
        f32_store = (f'asm volatile("st.global.cs.v4.f32 [%0], {{%1, %2, %3, %4}};" :: "l"({out_ptr}), '
                     '"f"(o.e[0]), "f"(o.e[1]), "f"(o.e[2]), "f"(o.e[3]) : "memory");')
    if dtype == "f32":
        store = f"""
    #pragma unroll
    for (int c = 0; c < {chunks}; ++c) {{
      dv_vec<float, 4> o;
      #pragma unroll
      for (int e = 0; e < 4; ++e) {{ const int k = c * 4 + e; o.e[e] = {apply}; }}
      {f32_store}
    }}"""
    elif cvt == "ptx":
        store = f"""
    #pragma unroll
    for (int c = 0; c < {chunks}; ++c) {{
      dv_vec<unsigned, 4> o;
      #pragma unroll
      for (int e = 0; e < 4; ++e) {{
        const int k0 = c * 8 + 2 * e, k1 = k0 + 1;
        float lo, hi;
        {{ const int k = k0; lo = {apply}; }}
        {{ const int k = k1; hi = {apply}; }}
        o.e[e] = f32x2_to_bf16x2(lo, hi);
      }}
      *reinterpret_cast<dv_vec<unsigned, 4>*>(y + xr * {n} + rbase + c * {tpr * vec}) = o;
    }}"""
    else:
        store = f"""
    #pragma unroll
    for (int c = 0; c < {chunks}; ++c) {{
      dv_vec<{st}, {vec}> o;
      #pragma unroll
      for (int e = 0; e < 8; ++e) {{ const int k = c * 8 + e; o.e[e] = f32_to_bf16_manual({apply}); }}
      *reinterpret_cast<dv_vec<{st}, {vec}>*>(y + xr * {n} + rbase + c * {tpr * vec}) = o;
    }}"""
    row_load = f"const dv_vec<{st}, {vec}> q = *reinterpret_cast<const dv_vec<{st}, {vec}>*>(x + xr * {n} + rbase + c * {tpr * vec});"
    if streaming:
        row_load = (f"dv_vec<float, 4> q; asm(\"ld.global.cs.v4.f32 {{%0, %1, %2, %3}}, [%4];\" : \"=f\"(q.e[0]), \"=f\"(q.e[1]), "
                    f"\"=f\"(q.e[2]), \"=f\"(q.e[3]) : \"l\"(x + xr * {n} + rbase + c * {tpr * vec}));")
    red_decl = (f"__shared__ float red[2][{rpb * wpr}];" if stats == "twopass"
                else f"__shared__ float red[2][{2 * rpb * wpr}]; int parity = 0;" if stats == "chan" else "")
    loop = (f"for (int r0 = blockIdx.x * {rpb}; r0 < nrows; r0 += gridDim.x * {rpb})" if persistent
            else f"const int r0 = blockIdx.x * {rpb};")
    affine_outside = load_affine if (affine_regs and stats != "copy") else ""
    affine_inside = load_affine if (not affine_regs and stats != "copy") else ""
    return HELPERS + f"""
extern "C" __global__ void __launch_bounds__({threads}{f", {min_blocks}" if min_blocks else ""}) {name}(const {st}* __restrict__ x, const {st}* __restrict__ w, const {st}* __restrict__ b, {st}* __restrict__ y, int nrows) {{
  {red_decl}
  const int tid = threadIdx.x, t = tid % {tpr}, row = tid / {tpr}, lane = tid % 32, warp = t / 32;
  const int rbase = t * {vec};
  dv_vec<{st}, {vec}> wq[{chunks}], bq[{chunks}];
  {affine_outside}
  {loop} {{
    const int xr = r0 + row;
    float v[{per_thread}];
    #pragma unroll
    for (int c = 0; c < {chunks}; ++c) {{
      {row_load}
      #pragma unroll
      for (int e = 0; e < {vec}; ++e) v[c * {vec} + e] = {conv}(q.e[e]);
    }}
    {affine_inside}
    {stats_code}
    {store}
  }}
}}
"""


def ln_variants():
    # name: (threads a row, rows a block, stats, bf16 rounding, persistent (grid = SMs x
    # resident blocks), w/b loaded once, min blocks per SM for __launch_bounds__)
    return {
        "ln_tpr128_rpb2_twopass": (128, 2, "twopass", "manual", 0, False),  # the emitter on 2026-11-24
        "ln_tpr128_rpb2_twopass_ptx": (128, 2, "twopass", "ptx", 0, False),
        "ln_tpr128_rpb2_chan": (128, 2, "chan", "manual", 0, False),
        "ln_tpr128_rpb2_chan_ptx": (128, 2, "chan", "ptx", 0, False),
        "ln_tpr256_rpb1_twopass": (256, 1, "twopass", "manual", 0, False),
        "ln_tpr256_rpb1_twopass_ptx": (256, 1, "twopass", "ptx", 0, False),
        "ln_tpr256_rpb1_chan": (256, 1, "chan", "manual", 0, False),
        "ln_tpr256_rpb1_chan_ptx": (256, 1, "chan", "ptx", 0, False),
        "ln_tpr256_rpb2_chan_ptx": (256, 2, "chan", "ptx", 0, False),
        "ln_tpr512_rpb1_chan_ptx": (512, 1, "chan", "ptx", 0, False),
        "ln_tpr512_rpb1_twopass_ptx": (512, 1, "twopass", "ptx", 0, False),
        "ln_tpr256_rpb1_chan_ptx_min6": (256, 1, "chan", "ptx", 0, False, 6),
        "ln_tpr256_rpb1_chan_ptx_pers": (256, 1, "chan", "ptx", 1, True),
        "lnf32_tpr128_rpb2_twopass": (128, 2, "twopass", "-", 0, False, 0, "f32"),  # the emitter on 2026-11-24
        "lnf32_tpr512_rpb1_twopass": (512, 1, "twopass", "-", 0, False, 0, "f32"),  # the emitter on 2026-11-25
        "lnf32_tpr512_rpb1_twopass_min4": (512, 1, "twopass", "-", 0, False, 4, "f32"),
        "lnf32_tpr512_rpb1_twopass_cs": (512, 1, "twopass", "-", 0, False, 0, "f32", True),
        "lnf32_tpr512_rpb1_chan": (512, 1, "chan", "-", 0, False, 0, "f32"),
        "lnf32_tpr1024_rpb1_twopass": (1024, 1, "twopass", "-", 0, False, 0, "f32"),
        "lnf32_tpr256_rpb2_twopass": (256, 2, "twopass", "-", 0, False, 0, "f32"),
        "lnf32_copy_tpr512_rpb1": (512, 1, "copy", "-", 0, False, 0, "f32"),
        "lnf32_copy_tpr512_rpb1_cs": (512, 1, "copy", "-", 0, False, 0, "f32", True),
        "copybf16_tpr128_rpb2": (128, 2, "copy", "manual", 0, False),
        "copybf16_tpr256_rpb1": (256, 1, "copy", "manual", 0, False),
        "copybf16_tpr512_rpb1": (512, 1, "copy", "manual", 0, False),
    }


# ---------------------------------------------------------------- running
def median_us(fn):
    from triton.testing import do_bench
    return do_bench(fn, warmup=50, rep=300, return_mode="median") * 1e3


def compile_kernel(source, name):
    return torch.cuda._compile_kernel(source, name)


def resident_blocks(kernel, threads, shared_bytes=0):
    """Blocks of `threads` one SM holds at once (the driver's occupancy calculator),
    each with `shared_bytes` of dynamic shared memory."""
    import ctypes
    libcuda = torch.cuda._utils._get_gpu_runtime_library()
    n = ctypes.c_int(0)
    rc = libcuda.cuOccupancyMaxActiveBlocksPerMultiprocessor(ctypes.byref(n), kernel.func, threads, shared_bytes)
    assert rc == 0, f"cuOccupancyMaxActiveBlocksPerMultiprocessor: {rc}"
    return n.value


def run_gelu(name, spec, sms, x, want):
    threads, chunks, math, persistent = spec
    kernel = compile_kernel(gelu_source(name, *spec), name)
    tile = threads * chunks * 4
    ntiles = GELU_N // tile
    grid = min(ntiles, sms * resident_blocks(kernel, threads)) if persistent else ntiles
    out = torch.full_like(x, float("nan"))
    launch = lambda: kernel((grid, 1, 1), (threads, 1, 1), [x, out, ntiles])
    launch()
    torch.cuda.synchronize()
    ref = x if math == "copy" else want
    err = ((out.double() - ref.double()).norm() / ref.double().norm()).item()
    bad = not torch.isfinite(out).all().item() or err > 1e-6
    return launch, err, bad


def run_ln(name, spec, sms, x, w, b, want):
    tpr, rpb, stats, cvt, persistent, affine_regs = spec[:6]
    kernel = compile_kernel(ln_source(name, *spec), name)
    blocks = LN_ROWS // rpb
    grid = min(blocks, sms * resident_blocks(kernel, tpr * rpb)) if persistent else blocks
    out = torch.full_like(x, float("nan"))
    launch = lambda: kernel((grid, 1, 1), (tpr * rpb, 1, 1), [x, w, b, out, LN_ROWS])
    launch()
    torch.cuda.synchronize()
    ref = x if stats == "copy" else want
    err = ((out.double() - ref.double()).norm() / ref.double().norm()).item()
    mismatched = (out != ref).float().mean().item()
    bad = not torch.isfinite(out).all().item() or err > (1e-2 if x.dtype == torch.bfloat16 else 1e-5)
    return launch, err, bad, mismatched


def gelu_chain(x):
    return torch.nn.functional.gelu(x * 1.5 + 0.3) * torch.sigmoid(x)


def layer_norm(x, w, b):
    return torch.nn.functional.layer_norm(x, x.shape[-1:], w, b)


def softmax(x):
    return torch.softmax(x, -1)


def row_sum(x):
    return x.sum(-1)


def col_mean(x):
    return x.mean(0)


def emitted_workloads():
    """File-name prefix of emitted kernels -> (dtype, eager function, argument
    shapes, the lab's own variants to time beside them)."""
    ln = lambda rows, cols: ((rows, cols), (cols,), (cols,))
    return {
        "lnf32": (torch.float32, layer_norm, ln(LN_ROWS, LN_COLS), ("lnf32_tpr512_rpb1_chan", "lnf32_tpr512_rpb1_twopass")),
        "lnbf16": (torch.bfloat16, layer_norm, ln(LN_ROWS, LN_COLS), ("ln_tpr256_rpb1_chan_ptx", "ln_tpr256_rpb1_twopass_ptx")),
        "softmax": (torch.float32, softmax, ((8192, 8192),), ()),
        "ln768f32": (torch.float32, layer_norm, ln(32768, 768), ()),
        "ln768bf16": (torch.bfloat16, layer_norm, ln(32768, 768), ()),
        "ln3072f32": (torch.float32, layer_norm, ln(16384, 3072), ()),
        "sm512f32": (torch.float32, softmax, ((16, 12, 512, 512),), ()),
        "rowsum": (torch.float32, row_sum, ((16384, 4096),), ()),
        "sm32k": (torch.float32, softmax, ((2048, 32768),), ()),
        "ln32k": (torch.float32, layer_norm, ln(2048, 32768), ()),
        "gelu": (torch.float32, gelu_chain, ((GELU_N,),), ()),
        "colmean": (torch.float32, col_mean, ((4096, 16384),), ()),
    }


def loop_us(fn, calls=20, reps=25):
    """Back-to-back calls between two events, no cache flush: us a call (median over reps)."""
    fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / calls)
    return statistics.median(times)


def graph_timer(fn, calls=20):
    """A CUDA graph of `calls` back-to-back calls (None when fn cannot be captured)."""
    try:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            fn()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(calls):
                fn()
        torch.cuda.synchronize()
    except Exception as e:  # noqa: BLE001 - a lab: report and go on
        print(f"  (no CUDA graph: {type(e).__name__}: {str(e)[:100]})", file=sys.stderr)
        return None
    return lambda: loop_us(graph.replay, calls=1) / calls


METHODS = {
    "flush": "triton do_bench: L2 flushed (256 MB write) before every call, median",
    "loop": "20 calls back to back between two events, no flush, median of 25",
    "graph": "a CUDA graph of 20 calls, replayed between two events, median of 25",
}


def own_code(fn, tag):
    """fn with a code object of its own. Dynamo keeps its compiled frames per
    code object: workloads that share a function at other shapes would make
    it recompile with dynamic shapes (slower kernels), as micro.py once saw."""
    import types
    code = fn.__code__.replace(co_name=f"{fn.__name__}_{tag}")
    return types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__, fn.__closure__)


def run_emitted(paths, rounds, sms, methods, ncu, fresh_outputs):
    """Interleaved rounds over emitted kernels, deepvisor, torch.compile and
    the lab's variants, by each timing method."""
    rows = {}
    for tag, (dtype, fn, shapes, lab_names) in emitted_workloads().items():
        mine = [p for p in paths if p.split("/")[-1].startswith(tag + "__")]
        if not mine:
            continue
        args = [torch.randn(*shape, device="cuda", dtype=dtype) for shape in shapes]
        want = fn(*args)
        moved = sum(t.numel() * t.element_size() for t in (*args, want))
        tol = 1e-2 if dtype == torch.bfloat16 else 1e-4
        for path in mine:
            source = open(path).read()
            grid, block = (int(v) for v in re.search(r"// launch: grid \((\d+),1,1\) block \((\d+),1,1\)", source).groups())
            kernel = compile_kernel(source, "k0")
            out = torch.full_like(want, float("nan"))
            launch = lambda kernel=kernel, grid=grid, block=block, out=out, args=args: kernel((grid, 1, 1), (block, 1, 1), [*args, out])
            launch()
            torch.cuda.synchronize()
            torch.testing.assert_close(out.float(), want.float(), rtol=tol, atol=tol)
            rows[path.split("/")[-1]] = (launch, moved)
            if not fresh_outputs:
                continue
            # The same launch with its output allocated at each call, as a compiled function does.
            fresh = lambda kernel=kernel, grid=grid, block=block, args=args, like=want: kernel(
                (grid, 1, 1), (block, 1, 1), [*args, torch.empty_like(like)])
            rows[path.split("/")[-1] + " (output allocated each call)"] = (fresh, moved)
        try:
            import deepvisor
            dv = deepvisor.compile(fn)
            dv(*args)
            torch.testing.assert_close(dv(*args).float(), want.float(), rtol=tol, atol=tol)
            rows[f"{tag} deepvisor"] = (lambda dv=dv, args=args: dv(*args), moved)
        except ImportError:
            pass
        ind = torch.compile(own_code(fn, tag))
        ind(*args)
        rows[f"{tag} torch.compile"] = (lambda ind=ind, args=args: ind(*args), moved)
        for name in lab_names:
            rows[name] = (run_ln(name, ln_variants()[name], sms, *args, want)[0], moved)
        x = args[0]
        rows[f"{tag} copy"] = (lambda out=torch.empty_like(x), x=x: out.copy_(x), 2 * x.numel() * x.element_size())
    if ncu:  # one launch each inside an NVTX range, for `ncu --nvtx --nvtx-include measure/`
        for name, (launch, _) in rows.items():
            launch()
        torch.cuda.synchronize()
        torch.cuda.nvtx.range_push("measure")
        for i, (name, (launch, _)) in enumerate(rows.items()):
            print(f"ncu launch {i}: {name}", flush=True)
            launch()
        torch.cuda.synchronize()
        torch.cuda.nvtx.range_pop()
        return
    names = list(rows)
    for method in methods:
        timers = {}
        for name in names:
            launch = rows[name][0]
            timers[name] = (lambda launch=launch: median_us(launch)) if method == "flush" else (
                (lambda launch=launch: loop_us(launch)) if method == "loop" else graph_timer(launch))
        times = {name: [] for name in names if timers[name] is not None}
        order = list(times)
        for r in range(rounds):
            for name in order[r % len(order):] + order[:r % len(order)]:
                times[name].append(timers[name]())
        print(f"\n{method}: {METHODS[method]}")
        print("| kernel | median over rounds, us | TB/s | rounds |")
        print("| --- | --- | --- | --- |")
        for name in order:
            med = statistics.median(times[name])
            print(f"| {name} | {med:.1f} | {rows[name][1] / med / 1e6:.2f} | "
                  f"{', '.join(f'{t:.1f}' for t in times[name])} |", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="")
    parser.add_argument("--ncu", action="store_true")
    parser.add_argument("--cu", nargs="+", default=[])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--fresh", action="store_true", help="with --cu: also time each kernel with its output allocated per call")
    parser.add_argument("--methods", default="flush", help="with --cu: comma-separated, of " + ", ".join(METHODS))
    opts = parser.parse_args()
    if opts.cu:
        run_emitted(opts.cu, opts.rounds, torch.cuda.get_device_properties(0).multi_processor_count,
                    opts.methods.split(","), opts.ncu, opts.fresh)
        return
    torch.manual_seed(0)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    rows = []

    x = torch.randn(GELU_N, device="cuda")
    want = gelu_chain(x)
    gelu_bytes = 2 * GELU_N * 4
    for name, spec in gelu_variants().items():
        if not name.startswith(opts.only):
            continue
        launch, err, bad = run_gelu(name, spec, sms, x, want)
        rows.append((name, launch, gelu_bytes, f"rel err {err:.1e}" + (" WRONG" if bad else "")))
    if "gelu".startswith(opts.only) or opts.only == "":
        ind = torch.compile(gelu_chain)
        ind(x)
        rows.append(("gelu_torch.compile", lambda ind=ind, x=x: ind(x), gelu_bytes, ""))
        rows.append(("copyf32_torch", lambda x=x, out=want: out.copy_(x), gelu_bytes, ""))

    x = torch.randn(LN_ROWS, LN_COLS, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(LN_COLS, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(LN_COLS, device="cuda", dtype=torch.bfloat16)
    want = layer_norm(x, w, b)
    ln_bytes = 2 * LN_ROWS * LN_COLS * 2
    x32, w32, b32 = x.float(), w.float(), b.float()
    want32 = layer_norm(x32, w32, b32)
    for name, spec in ln_variants().items():
        if not name.startswith(opts.only):
            continue
        f32 = len(spec) > 7 and spec[7] == "f32"
        args = (x32, w32, b32, want32) if f32 else (x, w, b, want)
        launch, err, bad, mismatched = run_ln(name, spec, sms, *args)
        if f32:
            rows.append((name, launch, 2 * ln_bytes, f"rel err {err:.1e}" + (" WRONG" if bad else "")))
            continue
        rows.append((name, launch, ln_bytes,
                     f"rel err {err:.1e}, {mismatched:.1%} bf16 differ from eager" + (" WRONG" if bad else "")))
    if not opts.only or opts.only.startswith("ln"):
        ind = torch.compile(layer_norm)
        ind(x, w, b)
        rows.append(("ln_torch.compile", lambda ind=ind, x=x, w=w, b=b: ind(x, w, b), ln_bytes, ""))
        rows.append(("copybf16_torch", lambda x=x, out=want: out.copy_(x), ln_bytes, ""))
        ind32 = torch.compile(layer_norm)
        ind32(x32, w32, b32)
        rows.append(("lnf32_torch.compile", lambda ind=ind32, x=x32, w=w32, b=b32: ind(x, w, b), 2 * ln_bytes, ""))

    if opts.ncu:
        for name, launch, _, _ in rows:
            launch()
        torch.cuda.synchronize()
        return
    print("| variant | median us | TB/s | check |")
    print("| --- | --- | --- | --- |")
    for name, launch, nbytes, note in rows:
        times = [median_us(launch) for _ in range(2)]
        us = statistics.median(times)
        print(f"| {name} | {times[0]:.1f}, {times[1]:.1f} | {nbytes / us / 1e6:.2f} | {note} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
