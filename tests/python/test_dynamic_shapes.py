"""Dynamic shapes (issue 11, _shapes.py): a dimension that takes a second
value is captured as a symbol, and later sizes run instances of that capture
without capturing again; the shape guards (shared dimensions, size 1,
strides) send what the capture did not cover to a new capture. Every result
is compared with eager."""

import pytest
import torch
import torch.nn.functional as F

import deepvisor


def _check(g, fn, *args):
    got, want = g(*args), fn(*args)
    for a, b in zip(pytest.importorskip("torch.utils._pytree").tree_leaves(got),
                    pytest.importorskip("torch.utils._pytree").tree_leaves(want)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def _symbolic_plans(g):
    return [p for p in g.plans() if p.symbolic is not None]


@pytest.fixture(autouse=True)
def strict(monkeypatch):
    monkeypatch.setenv("DEEPVISOR_STRICT", "1")


def block(x, w, b):
    """A matmul whose C++ decomposition computes its rows from the sizes, a
    row reduction over the symbolic dimension, a flatten."""
    y = F.gelu(F.linear(x, w, b)) * 2
    return torch.softmax(y.transpose(1, 2), -1).flatten(0, 1)


def test_a_dimension_that_changes_becomes_a_symbol_after_its_second_value():
    torch.manual_seed(0)
    w, b = torch.randn(16, 8), torch.randn(16)
    g = deepvisor.compile(block)
    for n in (5, 7, 3, 12, 7, 33):
        _check(g, block, torch.randn(2, n, 8), w, b)
    s = deepvisor.stats(g)
    assert s["captures"] == 2, s  # the first shape, then the symbolic capture at the second
    assert s["cache_hits"] == 4
    [plan] = _symbolic_plans(g)
    assert len(plan.symbolic.executors()) == 4  # 7 (the capture's own), 3, 12, 33
    assert "dynamic shapes" in deepvisor.explain(g)
    assert s["capture_s"] > 0 and s["compile_s"] > 0


class Decoder(torch.nn.Module):
    """MonoDepth's decoder step: a convolution, nearest upsampling by whole
    factors (scale_factor, as the model writes it), a skip connection."""

    def __init__(self, factor):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.factor = factor

    def forward(self, x, skip):
        return F.interpolate(self.conv(x), scale_factor=self.factor, mode="nearest") + skip


@pytest.mark.parametrize("factor", [2, (2, 3), 2.0])
def test_nearest_upsampling_by_whole_factors_stays_symbolic(factor):
    torch.manual_seed(0)
    m = Decoder(factor).eval()
    fh, fw = (factor, factor) if not isinstance(factor, tuple) else factor
    g = deepvisor.compile(m)
    with torch.no_grad():
        for h, w in ((6, 7), (8, 9), (5, 11), (10, 4)):
            x = torch.randn(1, 3, h, w)
            _check(g, m, x, torch.randn(1, 4, int(h * fh), int(w * fw)))
    s = deepvisor.stats(g)
    assert s["captures"] == 2, s
    assert len(_symbolic_plans(g)) == 1


def test_upsampling_by_other_factors_stays_correct():
    """A factor of 1.5 floors its product: those captures stay static."""
    torch.manual_seed(0)
    m = Decoder(1.5).eval()
    g = deepvisor.compile(m)
    with torch.no_grad():
        for h, w in ((6, 7), (8, 9), (5, 11)):
            _check(g, m, torch.randn(1, 3, h, w), torch.randn(1, 4, int(h * 1.5), int(w * 1.5)))


def test_a_symbolic_capture_imports_neither_inductor_nor_networkx():
    """ShapeEnv looks for a user source location per symbol against a list
    of torch's files that imports Dynamo, Inductor and networkx (0.5-1.5 s of
    a symbolic capture); deepvisor's ShapeEnv skips it."""
    import subprocess
    import sys
    code = ("import sys, torch, deepvisor\n"
            "g = deepvisor.compile(lambda x: (x * 2).sum(-1))\n"
            "for n in (3, 5, 7): g(torch.randn(n, 4))\n"
            "assert deepvisor.stats(g)['captures'] == 2\n"
            "print(sorted(m for m in ('networkx', 'torch._inductor.sizevars', 'torch.export._trace') "
            "if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_dynamic_true_is_symbolic_from_the_first_call():
    g = deepvisor.compile(lambda x: (x.exp() * 3).sum(-1), dynamic=True)
    for shape in ((3, 7), (5, 9), (17, 2), (4, 4)):
        x = torch.randn(shape)
        torch.testing.assert_close(g(x), (x.exp() * 3).sum(-1))
    assert deepvisor.stats(g)["captures"] == 1


def test_dynamic_false_stays_static():
    g = deepvisor.compile(lambda x: x + 1, dynamic=False)
    for n in (3, 4, 5):
        g(torch.randn(n))
    assert deepvisor.stats(g)["captures"] == 3
    assert not _symbolic_plans(g)


def test_mark_dynamic_and_mark_static():
    def fn(x):
        return x.cos().sum(0)
    g = deepvisor.compile(fn)
    x = torch.randn(4, 6)
    deepvisor.mark_dynamic(x, 0)
    _check(g, fn, x)
    for n in (5, 9):
        _check(g, fn, torch.randn(n, 6))
    assert deepvisor.stats(g)["captures"] == 1
    h = deepvisor.compile(fn)
    for n in (4, 5, 6):
        y = torch.randn(n, 3)
        deepvisor.mark_static(y, 0)
        _check(h, fn, y)
    assert deepvisor.stats(h)["captures"] == 3 and not _symbolic_plans(h)


def test_shared_dimensions_are_guarded():
    def add(a, b):
        return (a + b).sum(0)
    g = deepvisor.compile(add)
    for n in (3, 4, 6, 9):
        _check(g, add, torch.randn(n, 4), torch.randn(n, 4))
    assert deepvisor.stats(g)["captures"] == 2
    [plan] = _symbolic_plans(g)
    assert "L['t1'].size()[0] == L['t0'].size()[0]" in plan.symbolic.guard_code
    # A size of 1 broadcasts: the capture assumed equal sizes, so this captures again.
    _check(g, add, torch.randn(5, 4), torch.randn(1, 4))
    assert deepvisor.stats(g)["captures"] == 3
    with pytest.raises(RuntimeError, match="must match"):  # what eager says
        g(torch.randn(5, 4), torch.randn(6, 4))


def test_a_size_of_one_is_not_an_instance():
    def fn(x):
        return x.softmax(0) * x.size(1)
    g = deepvisor.compile(lambda x: x.softmax(0))
    for n in (3, 5, 1, 7):
        x = torch.randn(n, 4)
        torch.testing.assert_close(g(x), x.softmax(0))
    assert deepvisor.stats(g)["captures"] == 3  # 3, 5 (symbolic, n >= 2), 1 (static)


def test_strides_are_guarded():
    def fn(x):
        return (x * 2).sum(-1)
    g = deepvisor.compile(fn)
    for s in (4, 6, 8):
        _check(g, fn, torch.randn(3, s, 5))
    assert deepvisor.stats(g)["captures"] == 2
    # A view with the same sizes as a contiguous tensor but other strides.
    _check(g, fn, torch.randn(3, 20, 5)[:, :7])
    _check(g, fn, torch.randn(3, 9, 5).transpose(0, 1).contiguous().transpose(0, 1))
    assert deepvisor.stats(g)["captures"] >= 3


def test_an_in_place_update_of_an_argument_with_a_symbolic_size():
    def fn(x, y):
        x.mul_(2)
        y[:, 0] = x.sum(1)
        return x + 1
    g = deepvisor.compile(fn)
    for n in (3, 4, 7, 2):
        a, b = torch.randn(n, 5), torch.zeros(n, 3)
        a2, b2 = a.clone(), b.clone()
        out = g(a, b)
        want = fn(a2, b2)
        torch.testing.assert_close(out, want)
        torch.testing.assert_close(a, a2)
        torch.testing.assert_close(b, b2)
    assert deepvisor.stats(g)["captures"] == 2


def test_instances_compile_no_kernel_twice(monkeypatch, tmp_path):
    """With kernels that take their sizes as arguments, a new size of the
    batch compiles nothing (rows keep their length: the same kernels)."""
    monkeypatch.setenv("DEEPVISOR_CPU", "interpreter")
    monkeypatch.setenv("DEEPVISOR_VALIDATE_CUDA", "1")
    monkeypatch.setenv("DEEPVISOR_CACHE_DIR", str(tmp_path))
    torch.manual_seed(0)
    w, b, lw, lb = torch.randn(32, 16), torch.randn(32), torch.randn(32), torch.randn(32)

    def fn(x):
        return F.layer_norm(F.gelu(F.linear(x, w, b)) + 1, (32,), lw, lb).softmax(-1)
    g = deepvisor.compile(fn)
    compiles = []
    for n in (2, 3, 5, 8, 13):
        _check(g, fn, torch.randn(n, 7, 16))
        compiles.append(deepvisor.stats(g)["nvrtc_compiles"])
    assert deepvisor.stats(g)["captures"] == 2
    assert compiles[2:] == [compiles[1]] * 3, compiles


def test_known_instances_run_from_the_cpp_plan_cache(monkeypatch):
    """A plan of one segment hands each instance to the C++ plan cache: a
    layout seen before runs without the Python instance lookup; a layout its
    shape guards rejected goes on to the next plan there too."""
    from deepvisor import _shapes
    lookups = []
    original = _shapes.SymbolicPlan.executors_for
    monkeypatch.setattr(_shapes.SymbolicPlan, "executors_for",
                        lambda self, inputs, **kw: lookups.append(1) or original(self, inputs, **kw))

    def fn(x, y):
        return (x * 2).sum(-1) + y
    g = deepvisor.compile(fn)
    for n in (2, 3, 4, 3, 4, 4):
        _check(g, fn, torch.randn(n, 5), torch.randn(n))
    assert deepvisor.stats(g)["captures"] == 2
    assert len(lookups) == 3, lookups  # the capture's own layout (3), the first call at it, then 4 once
    _check(g, fn, torch.randn(3, 5), torch.randn(1))  # a broadcast y: the shape guards reject it, a new capture
    _check(g, fn, torch.randn(3, 5), torch.randn(1))
    assert deepvisor.stats(g)["captures"] == 3


def test_a_model_over_batch_sizes():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    g = deepvisor.compile(model)
    with torch.no_grad():
        for n in (2, 3, 5, 4):
            x = torch.randn(n, 3, 32, 32)
            torch.testing.assert_close(g(x), model(x), rtol=1e-4, atol=1e-4)
    assert deepvisor.stats(g)["captures"] == 2


def _bert(layers=2):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(num_hidden_layers=layers, hidden_size=64, num_attention_heads=2,
                                  intermediate_size=128, vocab_size=1000)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    return transformers.BertModel(cfg).eval()


def test_sizes_read_in_python_stay_symbolic():
    """x.size() read in Python: arithmetic on it stays symbolic, a view takes
    the expression, a comparison becomes a guard (both sides of it are
    captured once each), a size used where the shadow cannot follow (a list
    index) keeps that dimension static."""
    def fn(x):
        b, n = x.shape
        y = x.view(b, n // 2, 2) if n % 2 == 0 else x.view(b, n, 1)
        if n > 12:
            return y.sum(-1) * n
        return y.amax(-1) + b
    g = deepvisor.compile(fn)
    for n in (4, 6, 10, 8, 14, 20, 16, 7, 9):
        _check(g, fn, torch.randn(3, n))
    s = deepvisor.stats(g)
    # 4 (static), 6 (symbolic: even, <= 12), 14 (even, > 12), 7 (odd): a plan each side of each decision
    assert s["captures"] == 4, s

    def listed(x):
        return x * [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0][x.size(0)]
    h = deepvisor.compile(listed)
    for n in (2, 3, 4, 5):
        _check(h, listed, torch.randn(n))
    assert deepvisor.stats(h)["captures"] == 4  # the index keeps the size static: right for each


def test_min_of_two_sizes_is_a_guard_on_the_symbols():
    """min(a.size(0), b.size(0)) compares two symbols: a guard, each side of
    it captured once; then any sizes run instances."""
    def fn(a, b):
        n = min(a.size(0), b.size(0))
        return a[:n] * 2 + b[:n]
    g = deepvisor.compile(fn)
    for p, q in ((5, 7), (6, 8), (9, 11), (12, 10), (4, 3), (13, 20), (30, 2)):
        _check(g, fn, torch.randn(p, 4), torch.randn(q, 4))
    assert deepvisor.stats(g)["captures"] == 3  # (5, 7) static, then a < b and a > b symbolic


def test_bert_over_batch_and_sequence_length(monkeypatch, tmp_path):
    """Issue 11's CPU check: transformers' BertModel (2 layers) over batch
    1..16 and sequence length 8..256, at most 2 captures per dimension (plus
    batch 1, a static size), equal to eager, with padding in some rows."""
    import random
    monkeypatch.setenv("DEEPVISOR_CACHE_DIR", str(tmp_path))
    model = _bert()
    g = deepvisor.compile(model)
    shapes = [(b, s) for b in (1, 2, 3, 5, 8, 16) for s in (8, 13, 32, 64, 100, 256)]
    random.Random(0).shuffle(shapes)
    with torch.no_grad():
        for b, s in shapes:
            ids = torch.randint(0, 1000, (b, s))
            mask = torch.ones(b, s, dtype=torch.long)
            mask[:, s - 2:] = b % 2 == 0  # padding in odd batches: the other outcome of `mask.all()`
            torch.testing.assert_close(g(ids, mask).last_hidden_state, model(ids, mask).last_hidden_state,
                                       rtol=1e-4, atol=1e-5)
    s = deepvisor.stats(g)
    assert s["captures"] <= 6, s
    assert s["eager_calls"] == 0


def test_bert_compiles_nothing_after_the_second_value_of_each_dimension(monkeypatch, tmp_path):
    """Issue 11's compile check: after the second value of batch and of
    sequence length, no shape compiles a kernel (rows over a symbolic length
    take a form whose source does not depend on it; launch layouts do not
    depend on symbolic row counts). Shapes where a symbolic size equals a
    static one are included (8 x 64 = 512 positions, length 64 = the hidden
    size, 4 x 250 = the vocabulary, length 32 = the head size): a second
    lowering at doubled sizes tells which sizes are symbolic, not their value."""
    monkeypatch.setenv("DEEPVISOR_CPU", "interpreter")
    monkeypatch.setenv("DEEPVISOR_VALIDATE_CUDA", "1")
    monkeypatch.setenv("DEEPVISOR_CACHE_DIR", str(tmp_path))
    model = _bert()
    g = deepvisor.compile(model)
    compiles = []
    with torch.no_grad():
        for b, s in [(2, 8), (3, 13), (5, 32), (16, 256), (8, 64), (2, 200), (4, 250), (11, 17), (16, 8), (7, 100)]:
            ids = torch.randint(0, 1000, (b, s))
            mask = torch.ones(b, s, dtype=torch.long)
            torch.testing.assert_close(g(ids, mask).last_hidden_state, model(ids, mask).last_hidden_state,
                                       rtol=1e-4, atol=1e-5)
            compiles.append(deepvisor.stats(g)["nvrtc_compiles"])
    assert deepvisor.stats(g)["captures"] == 2
    assert compiles[2:] == [compiles[1]] * (len(compiles) - 2), compiles


def _conv_block_over_batch_sizes(compiles_stat):
    """A conv block compiled and called over 5 batch sizes, each result
    against eager: (the compiled block, the stat `compiles_stat` after each
    call)."""
    torch.manual_seed(0)
    block = torch.nn.Sequential(torch.nn.Conv2d(3, 24, 3, padding=1), torch.nn.BatchNorm2d(24), torch.nn.ReLU(),
                                torch.nn.MaxPool2d(2)).eval()
    g = deepvisor.compile(block)
    compiles = []
    with torch.no_grad():
        for n in (2, 3, 5, 4, 7):
            x = torch.randn(n, 3, 10, 10)
            torch.testing.assert_close(g(x), block(x), rtol=1e-4, atol=1e-4)
            compiles.append(deepvisor.stats(g)[compiles_stat])
    return g, compiles


def test_static_sizes_stay_literals_in_the_kernels_of_instances(monkeypatch, tmp_path):
    """A batch sweep of a conv block: the kernels of instances take the batch
    from the size table but keep static sizes (channels, H*W) as literals,
    so their index math divides by constants; instances after the first
    compile nothing."""
    monkeypatch.setenv("DEEPVISOR_CPU", "interpreter")
    monkeypatch.setenv("DEEPVISOR_VALIDATE_CUDA", "1")
    monkeypatch.setenv("DEEPVISOR_CACHE_DIR", str(tmp_path))
    g, compiles = _conv_block_over_batch_sizes("nvrtc_compiles")
    assert deepvisor.stats(g)["captures"] == 2
    assert compiles[2:] == [compiles[1]] * 3, compiles
    [plan] = _symbolic_plans(g)
    sources = "\n".join(source for e in plan.symbolic.executors() for source in e.cuda_sources(90))
    assert "/ 25) % 24)" in sources  # the channel of an element of the pooled 5x5 maps: literal divisors


def _host_compiler(monkeypatch, tmp_path, mode):
    from deepvisor import _C
    if not _C.host_compiler_available():
        pytest.skip("no host C++ compiler")
    monkeypatch.setenv("DEEPVISOR_CPU", mode)
    monkeypatch.setenv("DEEPVISOR_CACHE_DIR", str(tmp_path))  # every compile counted


def test_cpu_instances_compile_no_host_kernel_twice(monkeypatch, tmp_path):
    """On the CPU the generated C++ takes its sizes as arguments too: after
    the second value of the batch and of a row length, an instance compiles
    nothing with the host compiler (its kernels' sources are an earlier
    instance's), and every result is eager's."""
    _host_compiler(monkeypatch, tmp_path, "fused")
    torch.manual_seed(0)
    lw, lb = torch.randn(32), torch.randn(32)

    def fn(x, y):
        h = F.layer_norm(F.gelu(x) * 2 + 1, (32,), lw, lb)
        return h.softmax(-1), torch.softmax(y * 0.5, -1).sum(0)  # rows of y: a symbolic length

    g = deepvisor.compile(fn)
    compiles = []
    for n, m in [(2, 5), (3, 9), (5, 17), (8, 3), (13, 33), (7, 64), (4, 32)]:
        _check(g, fn, torch.randn(n, 7, 32), torch.randn(n, m))
        compiles.append(deepvisor.stats(g)["host_compiles"])
    stats = deepvisor.stats(g)
    assert stats["captures"] == 2 and stats["eager_calls"] == 0, stats
    assert stats["cpu_interpreted_kernels"] == 0, stats["cpu_interpreted_reasons"]
    # (the capture runs eagerly; the third call's instance compiles its kernels on its first run)
    assert compiles[2] > 0 and compiles[3:] == [compiles[2]] * 4, compiles


def test_bert_compiles_no_host_kernel_after_the_second_value_of_each_dimension(monkeypatch, tmp_path):
    """The CPU counterpart of the NVRTC check above, in the default mode
    (fused): shapes where a symbolic size equals a static one included."""
    _host_compiler(monkeypatch, tmp_path, "fused")
    model = _bert()
    g = deepvisor.compile(model)
    compiles = []
    with torch.no_grad():
        for b, s in [(2, 8), (3, 13), (5, 32), (16, 256), (8, 64), (4, 250), (11, 17), (7, 100)]:
            ids = torch.randint(0, 1000, (b, s))
            mask = torch.ones(b, s, dtype=torch.long)
            torch.testing.assert_close(g(ids, mask).last_hidden_state, model(ids, mask).last_hidden_state,
                                       rtol=1e-4, atol=1e-5)
            compiles.append(deepvisor.stats(g)["host_compiles"])
    assert deepvisor.stats(g)["captures"] == 2
    assert compiles[2] > 0 and compiles[3:] == [compiles[2]] * (len(compiles) - 3), compiles


def _growing_cache_step(cache, new, q):
    """One decoding step: the cache grows by `new` along its length (a cat
    whose second part starts at the symbolic length), then attention-like
    work over it."""
    kv = torch.cat([cache, new * 2], dim=2)
    return (q @ kv.transpose(-1, -2)).softmax(-1) @ kv, kv


@pytest.mark.parametrize("stat", ["nvrtc_compiles", "host_compiles"])
def test_a_cat_at_a_symbolic_offset_compiles_nothing_per_length(stat, monkeypatch, tmp_path):
    """Where cat's second part starts (the cache's length) is a constant of
    the kernel's body, compared with the element's position: with size
    arguments it comes from the size table like any size, so that a cache
    growing by one a call compiles no kernel per length (on a GPU each
    length cost an NVRTC compile, about 0.4 s for GPT-2)."""
    if stat == "host_compiles":
        _host_compiler(monkeypatch, tmp_path, "fused")
    else:
        monkeypatch.setenv("DEEPVISOR_CPU", "interpreter")
        monkeypatch.setenv("DEEPVISOR_VALIDATE_CUDA", "1")  # (compiles every kernel with NVRTC, as a GPU would)
        monkeypatch.setenv("DEEPVISOR_CACHE_DIR", str(tmp_path))
    g = deepvisor.compile(_growing_cache_step)
    q = torch.randn(2, 3, 1, 16)
    compiles = []
    for length in range(5, 12):
        _check(g, _growing_cache_step, torch.randn(2, 3, length, 16), torch.randn(2, 3, 1, 16), q)
        compiles.append(deepvisor.stats(g)[stat])
    stats = deepvisor.stats(g)
    assert stats["captures"] == 2 and stats["eager_calls"] == 0, stats
    assert compiles[3:] == [compiles[2]] * (len(compiles) - 3), compiles
    [plan] = _symbolic_plans(g)
    sources = [s for e in plan.symbolic.executors() for s in (e.cpp_sources() if stat == "host_compiles" else
                                                                  e.cuda_sources(90))]
    assert len(set(sources)) == len(sources) // len([i for i in plan.symbolic.instances.values() if i]), \
        "the instances' kernels differ"


def test_static_sizes_stay_literals_in_the_cpp_of_instances(monkeypatch, tmp_path):
    """The host C++ of instances keeps static sizes (channels, H*W) as
    literals (index math divides by constants); instances after the first
    compile nothing."""
    _host_compiler(monkeypatch, tmp_path, "compiled")
    g, compiles = _conv_block_over_batch_sizes("host_compiles")
    assert compiles[2] > 0 and compiles[3:] == [compiles[2]] * 2, compiles
    [plan] = _symbolic_plans(g)
    sources = "\n".join(source for e in plan.symbolic.executors() for source in e.cpp_sources())
    assert "/ (25LL)) % (24LL))" in sources, sources[-3000:]


@pytest.mark.parametrize("segments", [1, 2], ids=["one_segment", "with_a_decision"])
def test_a_stream_of_new_shapes_holds_the_last_instances_only(segments, monkeypatch):
    """Each shape's instance holds executors (on a GPU, graph outputs and
    kept constants): past DEEPVISOR_MAX_INSTANCES the least recently used
    goes, from the C++ plan cache too, and a shape that comes back is
    compiled again; results stay eager's throughout."""
    from deepvisor import _shapes
    monkeypatch.setattr(_shapes.SymbolicPlan, "MAX_INSTANCES", 3)
    w = torch.randn(8, 8)

    def fn(x):
        y = torch.tanh(x @ w) * 2
        if segments == 2 and bool(y.sum() > 1e9):  # a decision: the plan is a tree of two segments
            return y
        return y.softmax(-1)

    g = deepvisor.compile(fn)
    # (2: the static first capture; 3: the symbolic one's own instance; 3
    # comes back after it was dropped)
    for n in [2, 3, 4, 5, 6, 7, 5, 6, 7, 2, 9, 10, 11, 2, 3]:
        _check(g, fn, torch.randn(n, 8))
    stats = deepvisor.stats(g)
    assert stats["captures"] == 2 and stats["eager_calls"] == 0, stats
    assert stats["instances"] == 3 and stats["instances_evicted"] == 6, stats
    for n in (11, 2, 3, 10):  # the ones held: from the caches, nothing dropped
        _check(g, fn, torch.randn(n, 8))
    assert deepvisor.stats(g)["instances_evicted"] == 6


@pytest.mark.parametrize("segments", [1, 2], ids=["one_segment", "with_a_decision"])
def test_layouts_that_outrun_the_instances_held_run_eagerly(segments, monkeypatch):
    """A cycle of shapes longer than DEEPVISOR_MAX_INSTANCES (a generate()
    past that many tokens) misses on every call under LRU, each miss a
    build: once INSTANCE_EVICTIONS of the recent new layouts replaced an
    instance, a new layout runs eagerly instead (counted, with its reason),
    and the instances held keep replaying."""
    from deepvisor import _shapes
    monkeypatch.setattr(_shapes.SymbolicPlan, "MAX_INSTANCES", 3)
    monkeypatch.setattr(_shapes.SymbolicPlan, "INSTANCE_WINDOW", 8)
    monkeypatch.setattr(_shapes.SymbolicPlan, "INSTANCE_EVICTIONS", 2)
    w = torch.randn(8, 8)

    def fn(x):
        y = torch.tanh(x @ w) * 2
        if segments == 2 and bool(y.sum() > 1e9):
            return y
        return y.softmax(-1)

    g = deepvisor.compile(fn)
    for _ in range(4):
        for n in range(2, 9):
            _check(g, fn, torch.randn(n, 8))
    stats = deepvisor.stats(g)
    assert stats["captures"] == 2, stats
    assert stats["instances_declined"] > 0 and stats["eager_calls"] == stats["instances_declined"], stats
    assert any("outrun" in r for r in stats["eager_reasons"]), stats["eager_reasons"]
    # (each turn of the cycle builds no more than the window lets through)
    assert stats["instances_evicted"] < 4 * 7 - 3, stats
    held = [n for n in range(2, 9) if any(key[0][0][0] == n for key, i in
                                         _held_instances(g).items() if i)]
    assert held, "no instance held"
    eager_before = deepvisor.stats(g)["eager_calls"]
    for n in held:  # held ones replay
        _check(g, fn, torch.randn(n, 8))
    assert deepvisor.stats(g)["eager_calls"] == eager_before


def _held_instances(g):
    (plan,) = [p for p in g.plans() if p.symbolic is not None]
    return plan.symbolic.instances


@pytest.mark.parametrize("cpu", ["interpreter", "fused"])
def test_instances_share_the_results_of_constant_steps(cpu, monkeypatch):
    """Constant steps (here w * 2 + 1 and b.exp(), kept by
    DEEPVISOR_WEIGHT_COPIES=all also on the CPU) compute the same results in
    every instance: the first computes them, the others use its results
    (one copy, not one an instance); a parameter updated in place is seen by
    every instance."""
    monkeypatch.setenv("DEEPVISOR_WEIGHT_COPIES", "all")
    monkeypatch.setenv("DEEPVISOR_CPU", cpu)

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w, self.b = torch.nn.Parameter(torch.randn(16, 16)), torch.nn.Parameter(torch.randn(16))

        def forward(self, x):
            return torch.tanh(F.linear(x, self.w * 2 + 1, self.b.exp()))

    m = M()
    g = deepvisor.compile(m)
    with torch.no_grad():
        for n in (2, 3, 4, 5, 6, 7, 3):
            _check(g, m, torch.randn(n, 16))
        stats = deepvisor.stats(g)
        each = stats["constant_kernels"] // 6  # in each of 6 executors: the static plan's, 5 instances'
        assert stats["instances"] == 5 and each > 0 and stats["constant_kernels"] == 6 * each, stats
        assert stats["constant_kernel_runs"] == each, stats  # once, in the symbolic capture's own instance
        m.w.add_(0.5)
        for n in (4, 5, 6, 7, 2, 3):
            _check(g, m, torch.randn(n, 16))
        # once more in the instances, once in the static plan (its first run)
        assert deepvisor.stats(g)["constant_kernel_runs"] == 3 * each


def test_a_constant_view_adds_no_fake_input_to_the_plan():
    """The shadow's fake of a constant that is a view (an index tensor sliced
    from a permutation) is made with no mode on: the fake's as_strided was
    recorded into the real graph, a pinned fake input the guards checked."""
    idx = torch.randperm(9)[:7]

    def fn(x):
        y = x.clone()
        y[:, idx] = -1.5
        return y * 2

    g = deepvisor.compile(fn)
    for n in (3, 5, 6):
        _check(g, fn, torch.randn(n, 9))
    static, symbolic = g.plans()
    assert symbolic.symbolic is not None
    assert len(symbolic.path.descriptions) == len(static.path.descriptions), symbolic.path.descriptions


def _sizes_with_floats():
    def fill(x):
        t = torch.full((3,), x.shape[0] * 1.0)
        return x + 1 if (t > 5).all() else x - 1

    def float_left(x):
        return x + 1 if 5.5 < x.shape[0] else x - 1

    def float_right(x):
        return x + 1 if x.shape[0] > 5.5 else x - 1

    def scaled(x):
        return x * (0.5 * x.shape[0])

    return [fill, float_left, float_right, scaled]


@pytest.mark.parametrize("fn", _sizes_with_floats(), ids=lambda f: f.__name__)
def test_a_size_meeting_a_float_holds_for_that_size_only(fn):
    """float's operators take an int subclass as a plain int (`0.5 * n`,
    `5.5 < n`, `n > 5.5` after int's NotImplemented): no SizeInt method runs,
    so the state monitor specializes the size there (a number baked into
    the plan for every size gave x + 1 at sizes 3 and 5, and the first
    size's scale everywhere)."""
    g = deepvisor.compile(fn)
    for n in (16, 20, 16, 30, 3, 8, 5, 6, 40):
        _check(g, fn, torch.randn(n, 4))


def test_an_arange_of_a_symbolic_size_read_in_python():
    """In a static capture arange(n) is a known value (no decision); in a
    symbolic one it is not: the outcome read from it is a decision, taken
    anew for each size."""
    def f(x):
        if (torch.arange(x.shape[1]) > 17).any():
            return x * 2
        return x * 3

    g = deepvisor.compile(f)
    for n in (16, 20, 16, 30, 12, 18, 17, 40, 3):
        _check(g, f, torch.randn(2, n))
    s = deepvisor.stats(g)
    assert s["captures"] <= 3 and s["eager_calls"] == 0, s


class _KVCache:
    def __init__(self, k, v):
        self.k, self.v = k, v


def _attend_and_grow_attribute(x, cache):
    cache.k = torch.cat([cache.k, x], dim=1)
    cache.v = torch.cat([cache.v, x * 2], dim=1)
    return torch.softmax(x @ cache.k.transpose(1, 2), -1) @ cache.v


def _attend_and_grow_list_item(x, kv):
    kv[0] = torch.cat([kv[0], x], dim=1)
    return torch.softmax(x @ kv[0].transpose(1, 2), -1) @ kv[0]


def _grow_dict_item_and_read_its_length(x, state):
    state["k"] = torch.cat([state["k"], x], dim=1)
    return state["k"].sum(1) * state["k"].shape[1]


def _holders():
    """(function, holder of a (2, n, 8) tensor, its tensors): a decoder's
    growing KV cache, reached through an argument's attribute, a list item,
    a dict item."""
    return [
        (_attend_and_grow_attribute, lambda k: _KVCache(k, k.clone()), lambda c: [c.k, c.v]),
        (_attend_and_grow_list_item, lambda k: [k], list),
        (_grow_dict_item_and_read_its_length, lambda k: {"k": k}, lambda d: [d["k"]]),
    ]


@pytest.mark.parametrize("fn,make,tensors", _holders(), ids=lambda v: getattr(v, "__name__", ""))
def test_a_tensor_reached_from_an_argument_becomes_symbolic_after_its_second_size(fn, make, tensors):
    """A KV cache grows by one position a call: its tensors are reached from
    an argument, not passed directly. The first size is static, the second
    captures the changed dimension as a symbol, and every later length runs
    an instance of that capture (before, a capture per call until the plans
    thrashed and the calls ran eagerly). The cache's new tensors are the
    same as eager's after every call."""
    torch.manual_seed(0)
    g = deepvisor.compile(fn)
    start = torch.randn(2, 5, 8)
    mine, theirs = make(start.clone()), make(start.clone())
    for _ in range(7):
        x = torch.randn(2, 1, 8)
        torch.testing.assert_close(g(x, mine), fn(x, theirs))
        for a, b in zip(tensors(mine), tensors(theirs)):
            torch.testing.assert_close(a, b)
    s = deepvisor.stats(g)
    assert s["captures"] == 2 and s["eager_calls"] == 0 and s["cache_hits"] == 5, s
    [plan] = _symbolic_plans(g)
    assert len(plan.symbolic.executors()) == 6


def _scale_by_a_length(x, box):
    return x * box[0].shape[1]


def _cast_to_a_dtype(x, box):
    return x.to(box[0].dtype) * 2


def _scale_by_a_rank(x, box):
    return x * box[0].dim()


def _add_a_byte_count(x, box):
    return x * box[0].element_size() + box[0].nbytes


@pytest.mark.parametrize("fn,tensors", [
    (_scale_by_a_length, [torch.zeros(2, n) for n in (3, 4, 7, 4, 9)]),
    (_cast_to_a_dtype, [torch.zeros(2, dtype=d) for d in (torch.float32, torch.float64, torch.float16, torch.float64)]),
    (_scale_by_a_rank, [torch.zeros((2,) * n) for n in (1, 2, 3, 2)]),
    (_add_a_byte_count, [torch.zeros(n, dtype=d) for n, d in ((3, torch.float32), (3, torch.float16), (5, torch.float16))]),
], ids=["size", "dtype", "rank", "bytes"])
def test_the_metadata_of_a_tensor_no_op_uses_is_guarded(fn, tensors):
    """A tensor reached from an argument whose size, dtype or rank the
    program reads, but which no op uses: before, no guard checked it, and
    every later call replayed the first call's size (or dtype: a float32
    result where eager gives float64). It is an input now, guarded; its
    size becomes symbolic at the second value."""
    g = deepvisor.compile(fn)
    for t in tensors:
        x = torch.randn(2, 3)
        got, want = g(x, [t]), fn(x, [t])
        assert got.dtype == want.dtype
        torch.testing.assert_close(got, want)
    s = deepvisor.stats(g)
    assert s["eager_calls"] == 0, s
    if fn is _scale_by_a_length:
        assert s["captures"] == 2, s


def _decoder(name):
    """A 2-layer random-weight model of the family (transformers), vocabulary 500."""
    import transformers as T
    common = dict(vocab_size=500, bos_token_id=0, eos_token_id=0, pad_token_id=1)
    small = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
    if name == "gpt2":
        return T.GPT2LMHeadModel(T.GPT2Config(n_layer=2, n_embd=64, n_head=4, **common))
    if name == "llama":  # rotary positions, grouped-query attention
        return T.LlamaForCausalLM(T.LlamaConfig(num_key_value_heads=2, **small, **common))
    if name == "opt":  # learned positions from the mask and the cache length
        return T.OPTForCausalLM(T.OPTConfig(hidden_size=64, ffn_dim=128, num_hidden_layers=2, num_attention_heads=4,
                                            **common))
    if name == "bart":  # an encoder-decoder: the decoder's self-attention cache grows
        return T.BartForConditionalGeneration(T.BartConfig(
            d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
            encoder_ffn_dim=128, decoder_ffn_dim=128, decoder_start_token_id=2, forced_eos_token_id=None, **common))
    if name == "mixtral":  # a mixture of experts: routing, then torch._grouped_mm over the experts
        return T.MixtralForCausalLM(T.MixtralConfig(num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2,
                                                    sliding_window=None, **small, **common))
    raise ValueError(name)


# The ops of a mixture of experts' routing that run through ATen inside the plan.
_ROUTING_FALLBACKS = {"aten::topk.default", "aten::sort.default", "aten::histc.default", "aten::empty_like.default"}


@pytest.mark.parametrize("name", ["gpt2", "llama", "opt", "bart", "mixtral"])
def test_a_decoder_generates_with_its_kv_cache_without_a_capture_per_token(name):
    """generate() calls forward once a token with a DynamicCache whose keys
    and values grow: three captures (the prompt, the first token static,
    the second symbolic), then instances (before: a capture per token). The
    tokens are eager's. (Mixtral: torch._grouped_mm's fake kernel takes
    bf16 only, its CPU kernel float32 too: the shadow follows it through
    _FAKE_RULES; before, a capture per token.)"""
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = _decoder(name).eval()
    ids = torch.randint(2, 500, (2, 6))
    with torch.no_grad():
        want = model.generate(ids, max_new_tokens=12, do_sample=False)
        model.forward = deepvisor.compile(model.forward)
        for _ in range(2):
            torch.testing.assert_close(model.generate(ids, max_new_tokens=12, do_sample=False), want)
    s = deepvisor.stats(model.forward)
    assert s["captures"] == 3 and s["eager_calls"] == 0, s
    assert set(s["fallback_ops"]) <= (_ROUTING_FALLBACKS if name == "mixtral" else set()), s["fallback_ops"]


class _Positions(torch.nn.Module):
    """OPT's learned positions: the module gets the cache length as an int."""

    def __init__(self):
        super().__init__()
        self.table = torch.nn.Embedding(64, 8)

    def forward(self, mask, past):
        return self.table(torch.cumsum(mask, 1)[:, past:])


@pytest.mark.parametrize("op", ["_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention"])
def test_the_placeholder_returns_of_fused_attention_are_undefined_in_the_graph(op):
    """A fused attention kernel's random state, placeholder and debug mask
    hold no result, and its fake (the shape shadow's) lays them out
    otherwise than the CUDA kernel: flash attention's rng_state is uint64
    fake and int64 real, its debug mask a [0] tensor fake and undefined
    real. Recorded as values, the shadow's graph never matched the real
    run's, and bf16 GPT-2 on a GPU captured once a token; both recorders
    write them as undefined. (Fake CUDA tensors: no GPU needed.)"""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from deepvisor._capture import _outputs
    func = getattr(torch.ops.aten, op).default
    with FakeTensorMode():
        q = torch.empty(1, 2, 1, 16, dtype=torch.bfloat16, device="cuda")
        k = torch.empty(1, 2, 9, 16, dtype=torch.bfloat16, device="cuda")
        out = func(q, k, k, None, False) if "efficient" in op else func(q, k, k)
    defined = [t is not None for t in _outputs(func._schema, out)]
    assert defined[:2] == [True, True] and not any(defined[2:]), defined


@pytest.fixture
def cuda_like_flash_attention():
    """flash attention's CUDA op, given a CPU kernel that returns what the
    CUDA one does (int64 random state and placeholder, no debug mask), and
    `dvtest_flash::attn`, a composite op that calls it as
    F.scaled_dot_product_attention does on a GPU in bf16: the shape shadow
    sees only the composite, the recorders the flash op with fake (meta)
    returns in the shadow. Both registrations go at the end."""
    def flash(q, k, v, dropout_p=0.0, is_causal=False, return_debug_mask=False, scale=None):
        out = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal, scale=scale)
        logsumexp = torch.zeros(q.shape[:3], dtype=torch.float32)
        return (out, logsumexp, None, None, q.shape[2], k.shape[2], torch.zeros(2, dtype=torch.int64),
                torch.empty(0, dtype=torch.int64), None)
    aten = torch.library.Library("aten", "IMPL")
    aten.impl("_scaled_dot_product_flash_attention", flash, "CPU")
    ops = torch.library.Library("dvtest_flash", "DEF")
    ops.define("attn(Tensor q, Tensor k, Tensor v) -> Tensor")
    ops.impl("attn", lambda q, k, v: torch.ops.aten._scaled_dot_product_flash_attention(q, k, v)[0],
             "CompositeImplicitAutograd")
    yield torch.ops.dvtest_flash.attn
    ops._destroy()
    aten._destroy()


def test_a_growing_cache_through_flash_attention_is_one_symbolic_capture(cuda_like_flash_attention):
    """bf16 decoding on a GPU (flash attention) with the real op's returns
    emulated on the CPU: before its placeholder returns were left undefined,
    the shadow's graph had a line more (the fake's debug mask) and every
    length was a capture of its own."""
    attn = cuda_like_flash_attention

    def step(cache, new, q):
        kv = torch.cat([cache, new], dim=2)
        return attn(q, kv, kv) * 2, kv

    g = deepvisor.compile(step)
    q = torch.randn(1, 2, 1, 16, dtype=torch.bfloat16)
    for length in range(5, 10):
        _check(g, step, torch.randn(1, 2, length, 16, dtype=torch.bfloat16),
               torch.randn(1, 2, 1, 16, dtype=torch.bfloat16), q)
    stats = deepvisor.stats(g)
    assert stats["captures"] == 2 and stats["instances"] == 4 and stats["eager_calls"] == 0, stats


def test_a_size_passed_to_a_module_call_stays_symbolic():
    """A module's __call__ is Python (its forward gets the size and uses it
    where the shadow sees it): passing a size to it no longer keeps the
    size static (OPT's generate() captured once a token)."""
    positions = _Positions()

    def fn(x, mask):
        return x + positions(mask, mask.shape[1] - 1)

    g = deepvisor.compile(fn)
    with torch.no_grad():
        for n in (5, 6, 9, 7, 12):
            _check(g, fn, torch.randn(2, 1, 8), torch.ones(2, n, dtype=torch.long))
    assert deepvisor.stats(g)["captures"] == 2


def test_a_value_in_a_tensor_of_a_symbolic_size():
    """`v in t` (Tensor.__contains__) compares and reads the outcome inside
    one torch function; the shadow follows its steps, so the capture stays
    symbolic and each outcome is a decision (before: static, a capture per
    size)."""
    def fn(ids, x):
        return x * 2 if 7 in ids else x - 1

    g = deepvisor.compile(fn)
    for n in (5, 6, 9, 7, 12, 8):
        ids = torch.arange(n) + (0 if n % 2 else 10)  # 7 in it for odd n
        _check(g, fn, ids, torch.randn(n))
    s = deepvisor.stats(g)
    assert s["captures"] <= 3 and s["eager_calls"] == 0, s


def test_a_left_padded_batch_generates_as_eager_does():
    """A batch of prompts of other lengths, padded on the left with an
    attention mask: transformers picks each row's positions with two index
    tensors (x[rows, cols]), a kernel now; three captures, eager's tokens."""
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = _decoder("llama").eval()
    ids = torch.randint(2, 500, (3, 8))
    mask = torch.ones_like(ids)
    mask[0, :3] = mask[1, :1] = 0
    ids[mask == 0] = 1
    with torch.no_grad():
        want = model.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=False)
        model.forward = deepvisor.compile(model.forward)
        for _ in range(2):
            got = model.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=False)
            torch.testing.assert_close(got, want)
    s = deepvisor.stats(model.forward)
    assert s["captures"] == 3 and s["eager_calls"] == 0 and not s["fallback_ops"], s


class _KeepsItsLength(torch.nn.Module):
    """Keeps the length it saw (nn.Module.__setattr__ stores it through
    super().__setattr__) and a pair of sizes, then reads them back."""

    def __init__(self):
        super().__init__()
        self.length, self.pair = None, None

    def forward(self, x):
        self.length = x.size(1)
        self.pair = (x.size(0), x.size(1) * 2 + 1)
        return x.sum(1) * self.length


def test_a_size_the_call_stores_in_state_is_this_calls_size():
    """A size read in Python and stored in the program's state (Funnel keeps
    `self.seq_len`) no longer keeps the capture static: the stored value is
    rebuilt from each call's sizes, so the state after a replay is what
    eager leaves (before: a capture per length)."""
    kept, reference = _KeepsItsLength(), _KeepsItsLength()
    g = deepvisor.compile(kept)
    for n in (5, 6, 9, 7, 12, 6, 9, 9, 5):  # (repeated: instances the plan holds)
        x = torch.randn(3, n)
        torch.testing.assert_close(g(x), reference(x))
        assert (kept.length, kept.pair) == (reference.length, reference.pair) == (n, (3, 2 * n + 1))
        assert type(kept.length) is int and all(type(v) is int for v in kept.pair)  # (not the capture's SizeInts)
    s = deepvisor.stats(g)
    assert s["captures"] == 2 and s["eager_calls"] == 0, s


def _halves(x):
    y = x[:, ::2] * 2  # (n + 1) // 2 columns
    return y[:, : x.size(1) // 2] + 1  # all of them for an even n: ATen's indexing hands back an alias


def test_a_slice_that_reaches_the_end_at_one_size_stays_symbolic():
    """At an even length the slice covers every column: the real run
    records an alias, the shadow (whose end, n // 2, is not known to equal
    (n + 1) // 2) a slice; the capture stayed static (SEW in transformers:
    a capture per length). The real line is taken as the slice, which odd
    lengths need. (The plan of the even lengths keeps what its slice
    assumed of the parity: the first odd length is a symbolic capture too.)"""
    g = deepvisor.compile(_halves)
    for n in (6, 8, 7, 10, 9, 12, 11):
        _check(g, _halves, torch.randn(3, n))
    s = deepvisor.stats(g)
    assert s["captures"] == 3 and s["eager_calls"] == 0, s
