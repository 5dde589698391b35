"""Plans replayed as CUDA graphs (src/runtime/cuda_graph.h): from the second
replay on, a GPU plan is one graph launch. Checked against eager while its
inputs move, stay in place and change in place, while parameters change,
with random ops, from several threads; and plans that cannot be graphed keep
running step by step. Skipped without a GPU."""

import re

import pytest
import torch
import torch.nn as nn

import deepvisor
from op_cases import assert_matches
from test_capture import run_in_threads
from test_output_lender import held_by_another_thread

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

TOL = lambda dtype: (1e-4, 1e-5)  # noqa: E731


def randn(*shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).cuda()


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(32)
        self.up = nn.Linear(32, 64)
        self.down = nn.Linear(64, 32)

    def forward(self, x):
        return x + self.down(torch.nn.functional.gelu(self.up(self.norm(x))))


def block():
    torch.manual_seed(0)
    return Block().eval().cuda()


@torch.no_grad()
def test_new_inputs_every_call_replay_one_graph_with_fresh_outputs():
    m = block()
    g = deepvisor.compile(m)
    outs, refs = [], []
    for seed in range(6):
        x = randn(3, 7, 32, seed=seed)
        outs.append(g(x))
        refs.append(m(x))
    for out, ref in zip(outs, refs):  # earlier results are not overwritten by later replays
        assert_matches(out, ref, TOL)
    s = deepvisor.stats(g)
    assert s["cuda_graphs"] == 1 and s["captures"] == 1, s


@torch.no_grad()
def test_attention_and_a_decision_graph_every_segment():
    """transformers' pattern: `if mask.all():` skips the mask, then attention.
    Efficient attention returns its philox seed and offset as CPU tensors that
    nothing reads: they do not keep the segment from being graphed."""
    torch.manual_seed(0)
    qkv = nn.Linear(32, 96).eval().cuda()

    def attention(x, mask):
        q, k, v = (t.view(2, 9, 4, 8).transpose(1, 2) for t in qkv(x).split(32, dim=2))
        bias = None if mask.all() else (1 - mask[:, None, None, :].float()) * -1e4
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias)

    g = deepvisor.compile(attention)
    mask = torch.ones(2, 9, device="cuda")
    for seed in range(4):
        x = randn(2, 9, 32, seed=seed)
        assert_matches(g(x, mask), attention(x, mask), TOL)
    s = deepvisor.stats(g)
    assert s["cuda_graphs"] == 2 and s["captures"] == 1, s  # the segments before and after the decision
    assert "not graphed" not in deepvisor.explain(g)


@torch.no_grad()
def test_an_input_changed_in_place_at_the_same_address():
    m = block()
    g = deepvisor.compile(m)
    x = randn(2, 5, 32)
    for step in range(5):
        x.mul_(1.5).add_(0.25)
        assert_matches(g(x), m(x), TOL)
    assert deepvisor.stats(g)["cuda_graphs"] == 1


@torch.no_grad()
def test_parameters_updated_in_place_or_replaced_by_data():
    m = block()
    g = deepvisor.compile(m)
    x = randn(4, 32)
    for _ in range(3):
        assert_matches(g(x), m(x), TOL)
    m.up.weight.mul_(2)  # the graph reads the parameter where it lies
    assert_matches(g(x), m(x), TOL)
    m.down.weight.data = torch.randn_like(m.down.weight)  # a new address: captured again
    for _ in range(3):
        assert_matches(g(x), m(x), TOL)
    assert deepvisor.stats(g)["cuda_graphs"] == 1


@torch.no_grad()
def test_returned_inputs_and_repeated_outputs_keep_their_identity():
    def fn(x, y):
        z = x * 2 + y
        return x, z, z

    g = deepvisor.compile(fn)
    for seed in range(4):
        x, y = randn(6, seed=seed), randn(6, seed=seed + 9)
        a, b, c = g(x, y)
        assert a is x and b is c
        assert_matches(b, x * 2 + y, TOL)


@torch.no_grad()
def test_random_ops_draw_fresh_numbers_on_every_replay():
    g = deepvisor.compile(lambda x: x + torch.rand_like(x))
    z = torch.zeros(4096, device="cuda")
    results = [g(z) for _ in range(5)]
    for a, b in zip(results, results[1:]):
        assert not torch.equal(a, b)
    assert deepvisor.stats(g)["cuda_graphs"] == 1


@torch.no_grad()
def test_threads_replay_one_plan_at_once():
    m = block()
    g = deepvisor.compile(m)
    g(randn(8, 32))

    def work(k):
        for i in range(20):
            x = randn(8, 32, seed=100 * k + i)
            assert_matches(g(x), m(x), TOL)

    run_in_threads(work)


@torch.no_grad()
def test_an_output_another_thread_holds_is_never_moved_or_overwritten():
    """A replay moves a kept output (swaps its storage) before overwriting
    the graph's buffer; under a tensor another thread holds (and may be
    reading inside an op) that would race, so those calls run the steps."""
    m = block()
    g = deepvisor.compile(m)
    for _ in range(3):
        g(randn(8, 32))
    assert deepvisor.stats(g)["cuda_graphs"] == 1
    x = randn(8, 32, seed=7)

    def call_without_grad():  # grad mode is per thread
        with torch.no_grad():
            return g(x)

    with held_by_another_thread(call_without_grad) as y:
        ptr, want = y.data_ptr(), m(x)
        for i in range(4):
            z = randn(8, 32, seed=20 + i)
            assert_matches(g(z), m(z), TOL)
        assert y.data_ptr() == ptr
        assert_matches(y, want, TOL)


@torch.no_grad()
def test_plans_that_cannot_be_graphed_run_step_by_step():
    def to_host(x):
        return (x * 2).cpu() + 1

    g = deepvisor.compile(to_host)
    for seed in range(3):
        x = randn(5, seed=seed)
        assert_matches(g(x), to_host(x), TOL)
    assert deepvisor.stats(g)["cuda_graphs"] == 0
    assert "part of it computes on the CPU" in deepvisor.explain(g)

    def syncs(x):  # histc without limits reads the data's min and max to the host
        return torch.histc(x, bins=8).sum() + x.sum()

    g = deepvisor.compile(syncs)
    x = randn(64)
    for _ in range(4):
        assert_matches(g(x), syncs(x), TOL)
    assert deepvisor.stats(g)["cuda_graphs"] == 0, deepvisor.explain(g)
    assert "capturing it failed" in deepvisor.explain(g)
    # Its capture failed; the device's random generator left capture mode
    # with it (the user's random ops outside a capture still run).
    assert torch.randn(8, device="cuda").shape == (8,)
    assert torch.rand_like(x).shape == x.shape

    def data_sized(x):  # the segment that runs nonzero is not graphed; the one after it is
        return torch.nonzero(x > 0).sum() + x.sum()

    g = deepvisor.compile(data_sized)
    for _ in range(4):
        assert_matches(g(x), data_sized(x), TOL)
    assert deepvisor.stats(g)["cuda_graphs"] == 1, deepvisor.explain(g)
    assert "the host reads the size of a result that depends on the data" in deepvisor.explain(g)


@torch.no_grad()
def test_graphs_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("DEEPVISOR_CUDA_GRAPHS", "0")
    m = block()
    g = deepvisor.compile(m)
    for seed in range(3):
        x = randn(3, 32, seed=seed)
        assert_matches(g(x), m(x), TOL)
    assert deepvisor.stats(g)["cuda_graphs"] == 0


@torch.no_grad()
def test_a_cpu_index_into_a_cuda_tensor():
    """x_cuda[idx_cpu] is legal in eager: that op runs through ATen (a kernel
    cannot read CPU memory), the rest of the plan as kernels."""
    def fn(x, idx):
        return (x * 2)[idx] + 1

    g = deepvisor.compile(fn)
    idx = torch.tensor([2, 0, 1])
    for seed in range(3):
        x = randn(4, 5, seed=seed)
        assert_matches(g(x, idx), fn(x, idx), TOL)
    s = deepvisor.stats(g)
    assert s["captures"] == 1 and s["eager_calls"] == 0, s


def test_captures_share_one_stream_and_its_cublas_workspace():
    """Each plan's CUDA graph is captured on the same stream, whose cuBLAS
    workspaces are made once, outside any capture: new plans (one per shape
    here) add their own buffers, not another workspace of tens of MB each."""
    w = randn(256, 256)

    def fn(x):
        return torch.relu(x @ w) + 1

    g = deepvisor.compile(fn)
    for rows in (8, 16):  # the first plans: the capture stream and its workspaces
        for _ in range(3):
            g(randn(rows, 256))
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    for rows in (24, 32, 40, 48):
        x = randn(rows, 256)
        for _ in range(3):
            assert_matches(g(x), fn(x), TOL)
    torch.cuda.synchronize()
    grown = torch.cuda.memory_allocated() - before
    assert grown < 4 * 2**20, f"{grown / 2**20:.1f} MB more for four small plans"
    assert deepvisor.stats(g)["cuda_graphs"] == 6


def test_a_cleared_cublas_workspace_stays_the_graphs():
    """torch.compile's reduce-overhead mode clears torch's cuBLAS workspaces
    around its recordings (torch._C._cuda_clearCublasWorkspaces). A graph
    that captured a matmul writes its workspace on every replay, so that
    memory must stay deepvisor's: not handed to a tensor of the user's, and
    not replaced by a new workspace inside the next capture."""
    a, b = randn(64, 8192), randn(8192, 64, seed=1)  # long sums: split-K, which uses the workspace

    def fn(x, y):
        return torch.relu(x @ y) + 1

    g = deepvisor.compile(fn)
    for _ in range(3):
        g(a, b)
    torch.cuda.synchronize()
    torch._C._cuda_clearCublasWorkspaces()
    # What the allocator has free, filled with a known value: a workspace
    # that went back to it would be among these.
    fill = [torch.full((8 * 2**20,), 7.0, device="cuda") for _ in range(8)]  # 32 MiB each
    for _ in range(3):
        out = g(a, b)
    assert_matches(out, fn(a, b), TOL)
    torch.cuda.synchronize()
    assert all(bool((t == 7).all()) for t in fill)
    before = torch.cuda.memory_allocated()
    h = deepvisor.compile(lambda x, y: torch.tanh(x @ y))  # a new capture after the clear
    for _ in range(3):
        h(a, b)
    torch.cuda.synchronize()
    grown = torch.cuda.memory_allocated() - before
    assert grown < 4 * 2**20, f"{grown / 2**20:.1f} MB more: a new workspace was made"
    assert deepvisor.stats(g)["cuda_graphs"] == 1 and deepvisor.stats(h)["cuda_graphs"] == 1


def test_a_later_segment_copies_what_an_earlier_one_made():
    """A decision cuts a plan in two segments; the second reads values the
    first made, new tensors each call. Their addresses on two calls say
    nothing of the next (here the caller keeps every other output), so the
    second graph copies them in instead of reading them in place and being
    captured again, with its intermediates, whenever one moves."""
    x = randn(1024, 1024)

    def fn(x):
        y = torch.relu(x * 2 + 1)
        if y.sum() > 0:  # a decision: two segments
            z = torch.sin(y)
            for _ in range(4):
                z = torch.cos(z @ z / 1024) * y
            return z
        return y

    g = deepvisor.compile(fn)
    held = []
    for i in range(6):
        held = [g(x)] + held[:1]
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    for i in range(8):
        out = g(x)
        held = ([out] + held[:1]) if i % 2 else held + [out]
        held = held[-2:]
    torch.cuda.synchronize()
    grown = torch.cuda.max_memory_allocated() - before
    assert grown <= 3 * 4 * 2**20 + 2**20, f"{grown / 2**20:.1f} MB: a graph was captured again"
    assert_matches(out, fn(x), TOL)
    assert deepvisor.stats(g)["cuda_graphs"] == 2


_WORKSPACE_PROBE = """
import torch, deepvisor
a = torch.randn(64, 8192, device="cuda")
b = torch.randn(8192, 64, device="cuda")
side = torch.cuda.Stream()
fn = lambda x, y: torch.relu(x @ y) + 1
with torch.cuda.stream(side):
    for x in (a, b):
        x.record_stream(side)
    ref = fn(a, b)  # torch makes this stream's workspaces
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    g = deepvisor.compile(fn)
    outs = [g(a, b) for _ in range(4)]
    torch.cuda.synchronize()
    grown = torch.cuda.memory_allocated() - before
assert deepvisor.stats(g)["cuda_graphs"] == 1, deepvisor.stats(g)
outs.append(g(a, b))  # replayed on the default stream: ordered against the side stream's matmuls
torch.cuda.synchronize()
assert all(torch.allclose(o, ref, rtol=1e-4, atol=1e-4) for o in outs)
print(grown)
"""


def test_a_graph_uses_its_callers_cublas_workspace():
    """A graph's matmuls use the cuBLAS workspaces of the stream the plan was
    called on, as eager's matmuls there do: a compiled model holds no
    workspace of its own (32 MiB on Hopper). A fresh process, so that no
    earlier test made the capture stream's."""
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-c", _WORKSPACE_PROBE], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    grown = int(done.stdout.split()[-1])
    assert grown < 4 * 2**20, f"{grown / 2**20:.1f} MB more than eager after a graphed matmul"


@torch.no_grad()
def test_a_plan_of_convolutions_makes_no_cublas_workspace():
    """A plan whose ATen steps are cuDNN convolutions calls no cuBLAS: its
    capture makes no workspace for the caller's stream (32 MiB on Hopper that
    eager, running the same convolutions, never holds). A stream of its own,
    which no earlier test gave a workspace."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1)).eval().cuda()
    x = randn(2, 3, 33, 35)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        want = m(x)
        torch.cuda.synchronize()
        g = deepvisor.compile(m)
        before = torch.cuda.memory_allocated()
        for _ in range(3):
            got = g(x)
        torch.cuda.synchronize()
        grown = torch.cuda.memory_allocated() - before
    assert_matches(got, want, TOL)
    assert deepvisor.stats(g)["cuda_graphs"] == 1
    assert grown < 4 * 2**20, f"{grown / 2**20:.1f} MB more after a graphed plan of convolutions"


def _eager_and_compiled(m, x, bf16):
    """Eager's output, four compiled calls' and the stats; float32 with
    TF32 off (a BatchNorm folded into TF32 weights rounds differently
    from eager's TF32 convolution followed by the BatchNorm)."""
    g = deepvisor.compile(m)
    with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=False, allow_tf32=bf16):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            want = m(x)
            outs = [g(x).clone() for _ in range(4)]
    return want, outs, deepvisor.stats(g)


@pytest.mark.parametrize("bf16", [False, True])
@torch.no_grad()
def test_convolutions_write_their_results_into_the_block_of_intermediates(bf16):
    """cuDNN convolutions write into the call's one block at planned offsets
    (runtime/library_into.h), channels-last under autocast; poisoned, a
    wrong offset or layout shows against eager."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False),
                      nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 8, 1), nn.ReLU(),
                      nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=2), nn.Tanh()).eval().cuda()
    x = randn(2, 3, 33, 35)
    want, outs, s = _eager_and_compiled(m, x, bf16)
    assert s["cuda_graphs"] == 1 and s["fallback_ops"] == {}, s
    assert s["library_results_in_block"] >= 4 and s["library_results_beside_block"] == 0, s
    tol = (3e-2, 3e-2) if bf16 else (1e-5, 1e-5)
    for got in outs:
        torch.testing.assert_close(got.float(), want.float(), rtol=tol[0], atol=tol[1])


@pytest.mark.parametrize("bf16", [False, True])
@torch.no_grad()
def test_a_network_of_many_convolution_kinds_matches_eager_with_library_results_in_the_block(bf16):
    """Grouped, depthwise, 1x1 and strided convolutions, a linear head: where
    ATen picks a backend other than cuDNN for one (a depthwise kernel of its
    own), that call allocates its result, and the plan stays right."""
    from test_channels_last import ConvNet, model
    m = model(ConvNet).cuda()
    x = randn(2, 3, 37, 41)
    want, outs, s = _eager_and_compiled(m, x, bf16)
    assert s["cuda_graphs"] == 1 and s["fallback_ops"] == {}, s
    assert s["library_results_in_block"] > 0, s
    tol = (3e-2, 3e-2) if bf16 else (1e-5, 1e-5)
    for got in outs:
        torch.testing.assert_close(got.float(), want.float(), rtol=tol[0], atol=tol[1])


class _Bottleneck(nn.Module):
    def __init__(self, c, width, stride):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU(), nn.Conv2d(width, 4 * width, 1, bias=False), nn.BatchNorm2d(4 * width))
        self.shortcut = nn.Sequential(nn.Conv2d(c, 4 * width, 1, stride, bias=False), nn.BatchNorm2d(4 * width))

    def forward(self, x):
        return torch.relu(self.body(x) + self.shortcut(x))


@pytest.mark.parametrize("bf16", [False, True])
@torch.no_grad()
def test_a_residual_add_writes_over_a_convolution_result_that_dies_at_it(bf16, capfd, monkeypatch):
    """ResNet's bottleneck: the body's and the shortcut's results die at the
    kernel that adds them, which writes its sum over one of them
    (codegen/arena_plan.h). New inputs on every call; poisoned (the GPU
    suite's DEEPVISOR_POISON=1), a result read after it was overwritten
    shows against eager."""
    monkeypatch.setenv("DEEPVISOR_LOG", "decisions")
    torch.manual_seed(0)
    m = nn.Sequential(_Bottleneck(16, 8, 1), _Bottleneck(32, 8, 2), nn.Conv2d(32, 8, 1)).eval().cuda()
    for bn in m.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2)
    g = deepvisor.compile(m)
    tol = (3e-2, 3e-2) if bf16 else (1e-4, 1e-5)
    # TF32 off in float32: the folded BatchNorm rounds differently under it (_eager_and_compiled).
    with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=False, allow_tf32=bf16):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            for i in range(4):
                x = randn(3, 16, 19, 23, seed=i)
                torch.testing.assert_close(g(x).float(), m(x).float(), rtol=tol[0], atol=tol[1])
    s = deepvisor.stats(g)
    assert s["cuda_graphs"] == 1 and s["fallback_ops"] == {}, s
    (line,) = [l for l in capfd.readouterr().err.splitlines() if "arena:" in l]
    assert "(0 results written over" not in line, line


def _pool_of(segment):
    return tuple(segment.get("segment_pool_id") or (0, 0))


def _graph_pools():
    return {_pool_of(seg) for seg in torch.cuda.memory_snapshot()} - {(0, 0)}


def _large_segments_of_pools_since(pools_before):
    """The large segments (not the 2 MiB ones of small blocks) of the CUDA
    graph pools made since `pools_before`: (bytes, allocated bytes)."""
    return [(seg["total_size"], seg["allocated_size"]) for seg in torch.cuda.memory_snapshot()
            if _pool_of(seg) not in pools_before | {(0, 0)} and seg["segment_type"] == "large"]


def _one_segment_of_the_room(pools_before, stats):
    """The graph's pool holds one large segment, the room made before its capture."""
    segments = _large_segments_of_pools_since(pools_before)
    room = stats["graph_pool_room_bytes"]
    assert len(segments) == 1 and segments[0][0] == -(-room // 2**21) * 2**21, (room, segments)
    return room


@torch.no_grad()
def test_an_output_beside_the_block_takes_room_in_its_segment_of_the_graph_pool():
    """A graph's pool holds one large segment for the block of intermediates
    (16 MiB here) and the 8 MiB output (runtime/pool_room.h); the output used
    to get a 20 MiB segment of its own, 12 MiB of it never used."""
    x, w = randn(2048, 1024), randn(1024, 1024, seed=1) / 32

    def f(x, w):
        h = torch.relu(x @ w)
        return (h @ w) * 0.5 + 1

    g = deepvisor.compile(f)
    pools_before = _graph_pools()
    outs = [g(x, w).clone() for _ in range(3)]
    s = deepvisor.stats(g)
    assert s["cuda_graphs"] == 1, s
    assert _one_segment_of_the_room(pools_before, s) >= 24 * 2**20
    for got in outs:
        assert_matches(got, f(x, w), TOL)


def _segments_of_pools_since(pools_before):
    """Every segment of the CUDA graph pools made since `pools_before`:
    (type, bytes, allocated bytes)."""
    return [(seg["segment_type"], seg["total_size"], seg["allocated_size"]) for seg in torch.cuda.memory_snapshot()
            if _pool_of(seg) not in pools_before | {(0, 0)}]


@torch.no_grad()
def test_a_small_block_beside_an_output_takes_no_segment_of_small_blocks():
    """A block of a few KiB (two row statistics) beside a 4 MiB output: the
    block comes from the room made for the output (runtime/pool_room.h,
    block_request_bytes), not from a 2 MiB segment of small blocks of its
    own, which BERT's first segment held beside its room."""
    x = randn(1024, 1024)

    def f(x):
        a = x.sum(1, keepdim=True)
        return x * a / (a.abs().mean() + 1)

    g = deepvisor.compile(f)
    pools_before = _graph_pools()
    outs = [g(x).clone() for _ in range(3)]
    s = deepvisor.stats(g)
    assert s["cuda_graphs"] == 1 and s["fallback_ops"] == {}, s
    segments = _segments_of_pools_since(pools_before)
    assert [kind for kind, _, _ in segments] == ["large"], segments
    for got in outs:
        assert_matches(got, f(x), TOL)


@torch.no_grad()
@pytest.mark.parametrize("outside", ["1", "0"])
def test_a_block_with_nothing_beside_it_and_small_outputs_leave_the_graph_pool_empty(outside, monkeypatch):
    """Row statistics (the block, a few KiB) and a 4 KiB output, nothing else
    allocated in the capture: both are made before it outside the graph's
    pool (Executor::prepare_outside_pool), which then holds no segment; it
    held a 2 MiB segment of small blocks for them (DEEPVISOR_OUTSIDE_POOL=0).
    The outputs stay right while the caller keeps each one across the next
    replays (the lender moves them out of the graph's buffer)."""
    monkeypatch.setenv("DEEPVISOR_OUTSIDE_POOL", outside)

    def f(x):
        return torch.softmax(x, 1).sum(0) * 0.5

    g = deepvisor.compile(f)
    pools_before = _graph_pools()
    xs = [randn(1024, 1000, seed=i) for i in range(4)]
    outs = [g(x) for x in xs]
    for got, x in zip(outs, xs):
        assert_matches(got, f(x), TOL)
    s = deepvisor.stats(g)
    assert s["cuda_graphs"] == 1 and s["fallback_ops"] == {}, s
    segments = _segments_of_pools_since(pools_before)
    if outside == "1":
        assert s["graph_outside_pool_bytes"] >= 4000 + s["block_bytes"] > 4000, s
        assert segments == [], segments
    else:
        assert s["graph_outside_pool_bytes"] == 0, s
        assert [kind for kind, _, _ in segments] == ["small"], segments


@torch.no_grad()
def test_an_output_views_base_laid_out_anew_keeps_the_memory_the_graph_writes():
    """The kernel writes the base of the returned view into an output made
    outside the pool (contiguous); the capture then lays the base out as
    eager had it (transposed), a copy, and drops the kernel's tensor. The
    graph still writes there on every replay, so the executor holds it:
    tensors allocated between calls, which could take freed memory, keep
    their values across the next replays."""
    def f(x):
        return (x.t() * 2)[1:]

    g = deepvisor.compile(f)
    held = []
    for i in range(5):
        x = randn(300, 200, seed=i)
        assert_matches(g(x), f(x), TOL)
        held += [torch.full((200, 300), float(i), device="cuda") for _ in range(4)]
        for j, t in enumerate(held):
            assert bool((t == float(j // 4)).all()), (i, j)
    assert deepvisor.stats(g)["cuda_graphs"] == 1


def _one_graph_in_one_segment_under_bf16(m, x):
    """m compiled and called under bf16 autocast: one graph, no fallback, one
    large segment in its pool (the room), results close to eager's; its stats."""
    pools_before = _graph_pools()
    want, outs, s = _eager_and_compiled(m, x, bf16=True)
    assert s["cuda_graphs"] == 1 and s["fallback_ops"] == {}, s
    _one_segment_of_the_room(pools_before, s)
    for got in outs:
        torch.testing.assert_close(got.float(), want.float(), rtol=3e-2, atol=3e-2)
    return s


@torch.no_grad()
def test_convolution_workspaces_take_the_room_beside_the_block():
    """cuDNN's workspaces, allocated and freed inside each convolution during
    the capture, and the 6 MiB output land in the free tail of the block's
    segment (their sizes measured on the first call): the pool holds one
    large segment, not one more of 20 MiB left empty between calls."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 128, 3, stride=2, padding=1),
                      nn.ReLU(), nn.Conv2d(128, 64, 1), nn.ReLU(), nn.Conv2d(64, 64, 5, padding=2))
    m = m.eval().cuda().to(memory_format=torch.channels_last)
    _one_graph_in_one_segment_under_bf16(m, randn(16, 64, 56, 56).to(memory_format=torch.channels_last))


class _WorkspaceNet(nn.Module):
    """A ResNet stem, a 3x3 convolution over 16x128x56x56 (the two candidates
    for ResNet-50's 12 MiB cuDNN workspace at batch 16), then a residual
    whose two 25.7 MB operands are alive at once: the block's peak comes
    after the convolutions, so their steps leave bytes of it free. The
    output is pooled to a few KiB: a large one would be allocated beside
    the block after the convolutions, in room the workspace can share
    (call AH: no window then)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        self.body = nn.Sequential(nn.Conv2d(64, 128, 1), nn.ReLU(), nn.Conv2d(128, 128, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(128, 256, 1), nn.ReLU())
        self.wide = nn.Conv2d(256, 256, 1)

    def forward(self, x):
        h = self.body(self.stem(x))
        return torch.tanh(self.wide(h) + h).mean((2, 3))


@torch.no_grad()
def test_a_convolution_workspace_takes_a_window_in_the_block(monkeypatch, capfd):
    """cuDNN's workspaces, allocated and freed inside a step while little of
    the block is alive there: the capture frees bytes of the block for them
    (runtime/block_window.h), and the graph's pool is one segment, smaller
    than the block with that room beside it (DEEPVISOR_BLOCK_WINDOW=0).
    Results stay eager's. Where cuDNN allocates no workspace above 1 MiB for
    these convolutions (the decisions log: nothing beside the block but what
    outlives its step), there is nothing to place: skipped."""
    monkeypatch.setenv("DEEPVISOR_LOG", "decisions")
    torch.manual_seed(0)
    m = _WorkspaceNet().eval().cuda()
    x = randn(16, 3, 224, 224)
    stats = {}
    for window in ("1", "0"):
        monkeypatch.setenv("DEEPVISOR_BLOCK_WINDOW", window)
        stats[window] = _one_graph_in_one_segment_under_bf16(m, x)
    beside = [l for l in capfd.readouterr().err.splitlines() if "bytes of requests beside the block at once" in l]
    measured = [re.search(r"at most (\d+) bytes .*, (\d+) of them outliving", l).groups() for l in beside]
    if all(everything == lasting for everything, lasting in measured):
        pytest.skip(f"no workspace that a step frees itself: {beside}")
    assert stats["1"]["graph_block_window_bytes"] > 0, (stats, beside)
    assert stats["0"]["graph_block_window_bytes"] == 0, stats
    assert stats["1"]["graph_pool_room_bytes"] < stats["0"]["graph_pool_room_bytes"], (stats, beside)


@torch.no_grad()
@pytest.mark.parametrize("windows", ["each", "packed"])
def test_each_convolution_workspace_can_take_a_window_of_its_own(monkeypatch, capfd, windows):
    """With a window for each step's own memory, placed after the packing
    (DEEPVISOR_BLOCK_WINDOW=each: codegen::plan_arena_step_windows) or packed
    with the block (=packed: plan_arena_packed_windows), the capture allocates the block in
    parts between the windows' edges, frees a step's parts for its cuDNN
    workspace and takes them back at their addresses: the pool is one
    segment and results stay eager's on every replay (poisoned, a part given
    back elsewhere or a window over live data shows). Skipped where cuDNN
    allocates no workspace above 1 MiB for these convolutions."""
    monkeypatch.setenv("DEEPVISOR_LOG", "decisions,fallbacks")
    monkeypatch.setenv("DEEPVISOR_BLOCK_WINDOW", windows)
    torch.manual_seed(0)
    m = _WorkspaceNet().eval().cuda()
    s = _one_graph_in_one_segment_under_bf16(m, randn(16, 3, 224, 224))
    err = capfd.readouterr().err
    beside = [l for l in err.splitlines() if "bytes of requests beside the block at once" in l]
    measured = [re.search(r"at most (\d+) bytes .*, (\d+) of them outliving", l).groups() for l in beside]
    if all(everything == lasting for everything, lasting in measured):
        pytest.skip(f"no workspace that a step frees itself: {beside}")
    placed = "packed with the block" if windows == "packed" else "placed after the packing"
    assert "a window for the own memory of each of" in err and placed in err, err
    assert s["graph_block_window_bytes"] > 0, (s, beside)
    assert "came back at another address" not in err, err


@torch.no_grad()
def test_with_cudnn_benchmarking_the_room_is_measured_after_the_benchmark():
    """With torch.backends.cudnn.benchmark, a plan's first run may time
    cuDNN's algorithms, whose trial workspaces the capture never allocates:
    a second run step by step measures the room, and the third compiled
    call captures. Results stay eager's throughout."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(32, 48, 3, padding=1), nn.ReLU(), nn.Conv2d(48, 32, 5, stride=2, padding=2))
    m = m.eval().cuda().to(memory_format=torch.channels_last)
    x = randn(8, 32, 61, 59).to(memory_format=torch.channels_last)
    g = deepvisor.compile(m)
    pools_before = _graph_pools()
    with torch.backends.cudnn.flags(enabled=True, benchmark=True, deterministic=False, allow_tf32=False):
        want = m(x)
        graphed = []
        for _ in range(5):
            got = g(x)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
            graphed.append(deepvisor.stats(g)["cuda_graphs"])
    assert graphed == [0, 0, 0, 1, 1], graphed  # the capture run, two runs step by step, then the graph
    _one_segment_of_the_room(pools_before, deepvisor.stats(g))


@torch.no_grad()
def test_deberta_is_one_graph_with_no_fallback():
    """DeBERTa's attention span is CPU scalar arithmetic on torch.tensor(...):
    slice bounds and clamp limits, folded at capture time. The CUDA plan has
    no ATen fallback and no decision (it had 4 fallbacks and 4 decisions a
    layer), and replays as one CUDA graph. With transformers 5.17 (the
    H200's) the span comes from @torch.jit.script helpers, which a capture
    runs as their Python originals (_script.py)."""
    pytest.importorskip("transformers.models.deberta.modeling_deberta")
    from test_eval_models import bench_models
    torch.manual_seed(0)
    model, args = bench_models.deberta_base("small", 2, "cuda")
    g = deepvisor.compile(model)
    for _ in range(3):
        out = g(*args)
    torch.testing.assert_close(out.last_hidden_state, model(*args).last_hidden_state, rtol=1e-4, atol=1e-4)
    s = deepvisor.stats(g)
    assert s["captures"] == 1 and s["eager_calls"] == 0 and s["fallback_ops"] == {}, s
    assert [len(p.path.segments) for p in g.plans()] == [1] and s["cuda_graphs"] == 1, s


def pointwise(x):
    return torch.nn.functional.gelu(x * 1.5 + 0.3) * torch.sigmoid(x)


@torch.no_grad()
def test_an_output_used_and_dropped_is_the_graphs_own_buffer():
    # Lent, not copied (runtime/output_lender.h): the same address on every replay.
    g = deepvisor.compile(pointwise)
    ptrs = []
    for seed in range(6):
        x = randn(1000, 333, seed=seed)
        out = g(x)
        assert_matches(out, pointwise(x), TOL)
        ptrs.append(out.data_ptr())
        del out
    assert len(set(ptrs[2:])) == 1, ptrs  # from the first replay on
    assert deepvisor.stats(g)["cuda_graphs"] == 1


@torch.no_grad()
def test_kept_outputs_and_views_of_them_keep_their_values():
    g = deepvisor.compile(pointwise)
    xs = [randn(257, 129, seed=s) for s in range(8)]
    kept, views = [], []
    for i, x in enumerate(xs):
        out = g(x)
        if i % 2:
            kept.append((x, out))  # the lent tensor itself: moved before the next replay
        else:
            views.append((x, out[1:].t()))  # a view: the graph leaves its buffer to it
        del out
    for x, y in kept:
        assert_matches(y, pointwise(x), TOL)
    for x, v in views:
        assert_matches(v, pointwise(x)[1:].t(), TOL)
    assert_matches(g(xs[0]), pointwise(xs[0]), TOL)


@torch.no_grad()
def test_an_output_fed_back_as_the_next_input():
    m = block()
    g = deepvisor.compile(m)
    x = y = randn(5, 9, 32)
    for _ in range(8):
        x, y = g(x), m(y)
        assert_matches(x, y, TOL)


def test_outputs_of_a_graph_captured_in_inference_mode():
    g = deepvisor.compile(pointwise)
    x = randn(64, 65)
    with torch.inference_mode():
        for _ in range(3):
            g(x)
    with torch.no_grad():
        out = g(x)
    assert not out.is_inference()
    out.add_(1)
    assert_matches(out, pointwise(x) + 1, TOL)


@torch.no_grad()
def test_outputs_always_copied_when_asked(monkeypatch):
    monkeypatch.setenv("DEEPVISOR_GRAPH_OUTPUTS", "copy")
    g = deepvisor.compile(pointwise)
    x = randn(100, 101)
    kept = [g(x) for _ in range(4)]
    assert len({o.data_ptr() for o in kept}) == 4
    for o in kept:
        assert_matches(o, pointwise(x), TOL)
