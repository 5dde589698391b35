"""torch.compile(model, backend="deepvisor"): Dynamo's graphs compiled by
deepvisor, checked against eager while Python state changes between calls."""

import weakref

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import deepvisor
from op_cases import assert_matches
import test_capture
from test_capture import (Issue, Outer, Stack, Config, branchy, python_features, Pair, Batch, randn, full, tensor, on,
                          tol, same)


@pytest.fixture(autouse=True, params=["cpu", "cuda"])
def fresh_dynamo(request):
    """Each test on the CPU and, where there is one, on a GPU (the helpers of
    test_capture read its DEVICE)."""
    import torch._dynamo
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("no GPU")
    test_capture.DEVICE = request.param
    torch._dynamo.reset()
    # Dynamo keeps compiled graphs alive in the globals of the modules that
    # held the code (__compiled_fn_*): backend_stats() counts this test's only.
    _EARLIER.clear()
    _EARLIER.update(graph_modules())
    with torch.no_grad():
        yield
    torch._dynamo.reset()
    test_capture.DEVICE = "cpu"


_EARLIER = weakref.WeakSet()  # the backend's compiled functions made before the running test


def graph_modules():
    """The backend's compiled functions (one per Dynamo graph) made by the running test."""
    return [g for g in deepvisor.compiled_functions()
            if type(getattr(g, "graph_module", g.fn)).__name__.endswith("GraphModule") and g not in _EARLIER]


def backend_stats():
    """Summed stats of the functions this backend compiled in the running test."""
    total = {"captures": 0, "cache_hits": 0, "eager_calls": 0}
    for g in graph_modules():
        s = deepvisor.stats(g)
        for k in total:
            total[k] += s[k]
    return total


def test_the_backend_is_found_by_name():
    m = on(Issue())
    c = torch.compile(m, backend="deepvisor")
    x = randn(3, 8)
    before = backend_stats()
    for _ in range(3):
        assert_matches(c(x), m(x), tol)
    after = backend_stats()
    assert after["captures"] > before["captures"] and after["cache_hits"] > before["cache_hits"]
    assert after["eager_calls"] == before["eager_calls"]


def test_changes_of_python_state_through_the_backend():
    m = on(Issue())
    c = torch.compile(m, backend="deepvisor")
    x = randn(3, 8)
    assert_matches(c(x), m(x), tol)
    m.scale = 3.0
    assert_matches(c(x), m(x), tol)
    m.use_relu = False
    assert_matches(c(x), m(x), tol)
    m.lin = on(nn.Linear(8, 8))
    assert_matches(c(x), m(x), tol)


@pytest.mark.parametrize("make", [Outer, Stack])
def test_modules_through_the_backend(make):
    m = on(make())
    c = torch.compile(m, backend="deepvisor")
    x = randn(4, 6) if make is Outer else randn(2, 5)
    for _ in range(2):
        assert_matches(c(x), m(x), tol)
    assert backend_stats()["eager_calls"] == 0


@pytest.mark.parametrize("dynamic", [True, None])
def test_dynamic_shapes_through_the_backend(dynamic):
    """Dynamo passes symbolic sizes as int arguments beside the tensors; the
    backend reads them from the tensors instead, so new sizes run instances
    of one symbolic capture (dims Dynamo made symbolic are symbolic from
    deepvisor's first capture) rather than a capture per size."""
    def fn(x, y):
        return (x * 2).view(x.size(0), -1).softmax(-1).sum(-1) + y
    c = torch.compile(fn, backend="deepvisor", dynamic=dynamic)
    for n in (3, 5, 7, 9, 4, 6):
        x, y = randn(n, 4, 2), randn(n)
        assert_matches(c(x, y), fn(x, y), tol)
    s = backend_stats()
    # dynamic=None: Dynamo's static graph for the first size, then its symbolic one
    assert s["captures"] == (1 if dynamic else 2) and s["eager_calls"] == 0, s
    assert s["cache_hits"] == 6 - s["captures"], s


def test_data_decisions_and_python_features_through_the_backend():
    c = torch.compile(branchy, backend="deepvisor")
    for v in (0.5, -0.5, 0.5):
        x = full((5,), v)
        assert_matches(c(x), branchy(x), tol)
    x, y, a, b = randn(3, 4), randn(3, 4, seed=1), randn(4, seed=2), randn(4, seed=3)
    kwargs = dict(pair=Pair(a, b), batch=Batch(randn(2, 2, seed=4), 0.5), weights=randn(4, seed=5), k=3.0)
    c2 = torch.compile(python_features, backend="deepvisor")
    assert_matches(c2(x, y, **kwargs), python_features(x, y, **kwargs), tol)


def test_exceptions_and_random_ops_through_the_backend():
    class Boom(Exception):
        pass

    def fails(x, flag):
        y = torch.sin(x)
        if flag:
            raise Boom("no")
        return y

    cf = torch.compile(fails, backend="deepvisor")
    with pytest.raises(Boom):
        cf(randn(3), True)
    assert_matches(cf(randn(3), False), torch.sin(randn(3)), tol)

    noisy = torch.compile(lambda x: x + torch.rand_like(x), backend="deepvisor")
    z = torch.zeros(1000, device=test_capture.DEVICE)
    a, b, c2 = noisy(z), noisy(z), noisy(z)
    assert not torch.equal(a, b) and not torch.equal(b, c2)


def test_in_place_updates_of_inputs_through_the_backend():
    def f(x, y):
        x.add_(1)
        y[:, 0] = 0
        return x * y

    c = torch.compile(f, backend="deepvisor")
    for i in range(3):
        x, y = randn(4, 3, seed=i), randn(4, 3, seed=i + 10)
        x2, y2 = x.clone(), y.clone()
        assert_matches(c(x, y), f(x2, y2), tol)
        assert torch.equal(x, x2) and torch.equal(y, y2)


# -- each behaviour of issue 9 through the backend --------------------------------------------
# The tests below mirror test_capture.py's "# -- behaviour N" sections, with
# torch.compile(..., backend="deepvisor") in place of deepvisor.compile.

def assert_compiled():
    """The running test's calls went through deepvisor's plans: captured, never eager."""
    s = backend_stats()
    assert s["captures"] >= 1 and s["eager_calls"] == 0, s


# -- behaviour 1: complete graphs through ordinary Python ------------------------------------

def _python_features_call():
    x, y, a, b = randn(3, 4), randn(3, 4, seed=1), randn(4, seed=2), randn(4, seed=3)
    kwargs = dict(pair=Pair(a, b), batch=Batch(randn(2, 2, seed=4), 0.5), weights=randn(4, seed=5), k=3.0)
    return python_features, (x, y), kwargs


def _containers_call():
    return on(Stack()), (randn(2, 5),), {}


def _autograd_function_and_interpolate_call():
    def f(x):
        return F.interpolate(test_capture.Square.apply(x), scale_factor=2.0, mode="nearest")
    return f, (randn(1, 2, 3, 3),), {}


def _recursion_call():
    return test_capture.fib_like, (randn(4), 4), {}


def _max_of_tensor_and_number_call():
    def f(x):
        return x / max(x.abs().sum(), 1e-8)
    return f, (randn(5),), {}


@pytest.mark.parametrize("make", [
    _python_features_call,                     # classes, closures, nested/recursive functions, *args/**kwargs,
                                               # namedtuple/dataclass/dict/list results, comprehensions, numpy on sizes
    _containers_call,                          # ModuleList/ModuleDict/Sequential/named_children
    _autograd_function_and_interpolate_call,   # autograd.Function under no_grad, interpolate(scale_factor=...)
    _recursion_call,                           # recursion decided by an int
    _max_of_tensor_and_number_call,            # max(tensor, 1e-8)
], ids=["python_features", "module_containers", "autograd_function_interpolate", "recursion", "max_tensor_number"])
def test_behaviour_1_python_programs_match_eager_and_are_not_captured_again(make):
    """Behaviour 1: equal outputs, and the next call with the same shapes captures nothing."""
    fn, args, kwargs = make()
    c = torch.compile(fn, backend="deepvisor")
    out = same(c, fn, *args, **kwargs)
    if fn is python_features:
        assert isinstance(out[0]["pair"], Pair) and isinstance(out[1], list)
    before = backend_stats()
    for _ in range(2):
        same(c, fn, *args, **kwargs)
    after = backend_stats()
    assert after["captures"] == before["captures"] and after["cache_hits"] > before["cache_hits"]
    assert after["eager_calls"] == 0


# -- behaviour 2: guards catch every change that matters -------------------------------------

@pytest.mark.parametrize("change", [
    lambda m: setattr(m, "offset", 1.5),
    lambda m: setattr(m.block, "flag", False),
    lambda m: setattr(m.block, "power", 3),
    lambda m: setattr(m.block.cfg, "mode", "sigmoid"),
    lambda m: setattr(m.block.cfg, "eps", 1e-1),
    lambda m: setattr(m.block.cfg, "depth", 3),
    lambda m: setattr(m.block, "cfg", Config()) or setattr(m.block.cfg, "depth", 1),
    lambda m: setattr(m.block, "norm", on(nn.LayerNorm(6))) or m.block.norm.bias.fill_(1.0),
    lambda m: setattr(m.block.norm, "weight", nn.Parameter(full((6,), 2.0))),
    lambda m: m.block.norm.weight.mul_(3.0),
], ids=["float_attribute", "bool_attribute_of_submodule", "int_attribute_of_submodule", "str_attribute_of_config",
        "float_attribute_of_config", "loop_count_in_config", "config_replaced", "submodule_replaced",
        "parameter_replaced", "parameter_updated_in_place"])
def test_behaviour_2_guards_see_a_change_of_module_state(change):
    """Behaviour 2: after each change of the module's state the result equals eager's."""
    m = on(Outer())
    c = torch.compile(m, backend="deepvisor")
    x = randn(4, 6)
    for _ in range(2):
        same(c, m, x)
    change(m)
    for _ in range(2):
        same(c, m, x)
    assert backend_stats()["eager_calls"] == 0


def test_behaviour_2_guards_see_a_global():
    """Behaviour 2: a global read by the program."""
    c = torch.compile(test_capture.uses_global, backend="deepvisor")
    x = randn(5)
    try:
        same(c, test_capture.uses_global, x)
        test_capture.SCALE = 4.0
        same(c, test_capture.uses_global, x)
    finally:
        test_capture.SCALE = 2.0
    same(c, test_capture.uses_global, x)
    assert_compiled()


def test_behaviour_2_guards_see_a_closure_variable():
    """Behaviour 2: a closure variable read by the program."""
    k = 3.0

    def f(x):
        return x * k

    c = torch.compile(f, backend="deepvisor")
    x = randn(5)
    same(c, f, x)
    k = 5.0  # noqa: F841 (read by f through its cell)
    same(c, f, x)
    assert_compiled()


def test_behaviour_2_guards_see_scalar_arguments_and_list_lengths():
    """Behaviour 2: another int, a float for an int, a longer list."""
    def f(x, n, items):
        for t in items:
            x = x + t * n
        return x

    c = torch.compile(f, backend="deepvisor")
    x, a, b = randn(3), randn(3, seed=1), randn(3, seed=2)
    for n, items in ((2, [a]), (3, [a]), (2.0, [a]), (2.5, [a]), (2, [a, b]), (2, [b, a]), (2, [a])):
        same(c, f, x, n, items)
    assert_compiled()


@pytest.mark.parametrize("other", [
    lambda x: x.double(), lambda x: x.reshape(2, 6), lambda x: x.t().contiguous().t(), lambda x: x[None]],
    ids=["dtype", "shape", "non_contiguous", "rank"])
def test_behaviour_2_guards_see_input_dtype_rank_and_layout(other):
    """Behaviour 2: an input of another dtype, shape, rank or layout."""
    def f(x):
        return torch.sin(x) * 2 + x.stride(0)

    c = torch.compile(f, backend="deepvisor")
    x = randn(3, 4)
    same(c, f, x)
    same(c, f, other(x))
    same(c, f, x)
    assert_compiled()


def test_behaviour_2_guards_see_train_and_eval():
    """Behaviour 2: train() and eval() between calls (dropout on and off)."""
    m = on(nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5)))
    c = torch.compile(m, backend="deepvisor")
    x = randn(8, 4)
    same(c, m, x)
    m.train()
    for seed in (0, 1):
        torch.manual_seed(seed)
        out = c(x)
        torch.manual_seed(seed)
        assert_matches(out, m(x), tol)
    m.eval()
    same(c, m, x)
    assert_compiled()


# -- behaviour 3: no needless recaptures -----------------------------------------------------

def test_behaviour_3_two_hundred_calls_with_new_values_capture_once():
    """Behaviour 3: new tensor values of the same shapes: no capture, no Dynamo recompile."""
    from torch._dynamo.utils import counters
    m = on(Outer())
    c = torch.compile(m, backend="deepvisor")
    same(c, m, randn(4, 6))
    captures, graphs, frames = backend_stats()["captures"], len(graph_modules()), dict(counters["frames"])
    for i in range(200):
        x = randn(4, 6, seed=i + 1)
        out = c(x)
        if i % 50 == 0:
            assert_matches(out, m(x), tol)
    s = backend_stats()
    assert s["captures"] == captures and s["cache_hits"] >= 200 and s["eager_calls"] == 0
    assert len(graph_modules()) == graphs and dict(counters["frames"]) == frames


# -- behaviour 4: decisions on tensor data ---------------------------------------------------

def test_behaviour_4_a_data_decision_takes_both_sides_and_alternating_captures_nothing():
    """Behaviour 4: `if h.sum() > 0:` both ways, then alternating: no new capture."""
    c = torch.compile(branchy, backend="deepvisor")
    pos, neg = full((5,), 0.5), full((5,), -0.5)
    same(c, branchy, pos)
    same(c, branchy, neg)
    captures = backend_stats()["captures"]
    for i in range(10):
        same(c, branchy, (pos if i % 2 else neg) * (1 + i / 10))
    s = backend_stats()
    assert s["captures"] == captures and s["eager_calls"] == 0


@pytest.mark.parametrize("fn, make", [
    (test_capture.scale_by_mean, lambda i: (randn(4, 3, seed=i), randn(5, seed=i + 50))),
    (test_capture.item_plus_one, lambda i: (randn(6, seed=i),)),
], ids=["float_of_mean", "item_plus_one"])
def test_behaviour_4_numbers_read_from_tensors_feed_tensor_ops(fn, make):
    """Behaviour 4: `x * float(y.mean())` and `x.item() + 1` give eager's results for several values."""
    c = torch.compile(fn, backend="deepvisor")
    for i in range(5):
        same(c, fn, *make(i))
    assert_compiled()


# -- behaviour 5: in-place updates and aliasing ----------------------------------------------

def aliasing(outs, inputs):
    """How the results relate to the inputs (identity, _base, shared storage)
    and to each other (shared storage), with their offsets and strides."""
    outs = outs if isinstance(outs, tuple) else (outs,)
    ts = [o for o in outs if isinstance(o, torch.Tensor)]
    storage = lambda t: t.untyped_storage().data_ptr()  # noqa: E731
    return [([o is i for i in inputs], [o._base is i for i in inputs],
             [storage(o) == storage(i) for i in inputs], [storage(o) == storage(p) for p in ts],
             o.storage_offset(), o.stride()) for o in ts]


def in_place_and_return_input(x):
    x.mul_(2)
    return x


def return_views_of_the_input(x):
    return x.view(-1), x[1:], x.t(), x[:, 0]


def return_a_result_and_its_view(x):
    y = x + 1
    return y, y.view(-1), y[0]


def return_input_and_new(x, y):
    return y, x * 2, x


def update_views_and_slices(x):
    x[:, 1:].mul_(2)
    x[0].zero_()
    x.t()[1].add_(1)
    v = x.view(-1)
    v[::2] = 7
    return x.sum(0)


@pytest.mark.parametrize("fn, nargs", [
    (in_place_and_return_input, 1), (return_views_of_the_input, 1), (return_a_result_and_its_view, 1),
    (return_input_and_new, 2), (update_views_and_slices, 1)])
def test_behaviour_5_in_place_updates_and_aliasing_as_in_eager(fn, nargs):
    """Behaviour 5: results, mutated inputs, and identity/view relations equal eager's."""
    c = torch.compile(fn, backend="deepvisor")
    for i in range(3):
        xs = [randn(3, 4, seed=i + 10 * k) for k in range(nargs)]
        ys = [x.clone() for x in xs]
        out, expected = c(*xs), fn(*ys)
        assert_matches(out, expected, tol)
        assert_matches(xs, ys, tol, "inputs after the call")
        assert aliasing(out, xs) == aliasing(expected, ys)
    assert_compiled()


def test_behaviour_5_a_returned_view_shares_memory_with_its_input():
    """Behaviour 5: writing through a returned view changes the input, as in eager."""
    c = torch.compile(return_views_of_the_input, backend="deepvisor")
    for _ in range(2):
        x = randn(3, 4)
        flat, rows, t, col = c(x)
        flat[0] = 100.0
        rows[0, 0] = 200.0
        assert x[0, 0] == 100.0 and x[1, 0] == 200.0 and t[0, 1] == 200.0 and col[1] == 200.0
    assert_compiled()


@pytest.mark.parametrize("compiler", ["backend", "deepvisor.compile"])
def test_behaviour_5_a_view_of_a_result_has_that_result_as_base(compiler):
    """Behaviour 5: `y = x + 1; return y, y.view(-1), y[0]`: the views' _base is
    y, as in eager, on the capture call and on replays; a write through a view
    shows in y."""
    if compiler == "backend":
        c = torch.compile(return_a_result_and_its_view, backend="deepvisor")
    else:
        c = deepvisor.compile(return_a_result_and_its_view)
    for i in range(3):
        x = randn(3, 4, seed=i)
        y, flat, row = c(x)
        assert y._base is None and flat._base is y and row._base is y
        assert torch.equal(y, x + 1) and torch.equal(row, (x + 1)[0])
        flat[1] = 50.0
        assert y[0, 1] == 50.0 and row[1] == 50.0


# -- behaviour 6: Python side effects --------------------------------------------------------

class Recorder:
    pass


def stores_on_an_input_object(x, state):
    state.last = x * 2
    state.count = getattr(state, "count", 0) + 1
    return state.last + 1


def test_behaviour_6_attribute_store_on_self_and_append_to_argument_list():
    """Behaviour 6: `self.last = y` and `log.append(...)` after every call."""
    m = on(test_capture.Counter())
    c = torch.compile(m, backend="deepvisor")
    for i in range(3):
        x, log = randn(3, seed=i), []
        out = c(x, log)
        assert_matches(out, x * 2, tol)
        assert len(log) == 1 and torch.allclose(log[0], (x * 2).sum())
        assert torch.equal(m.last, out)
    assert_compiled()


def test_behaviour_6_attribute_store_on_an_input_object():
    """Behaviour 6: attributes stored on an argument object are visible after each call."""
    c = torch.compile(stores_on_an_input_object, backend="deepvisor")
    state = Recorder()
    for i in range(3):
        x = randn(3, seed=i)
        out = c(x, state)
        assert_matches(out, x * 2 + 1, tol)
        assert_matches(state.last, x * 2, tol)
        assert state.count == i + 1
    assert_compiled()


def test_behaviour_6_a_global_assignment_is_visible():
    """Behaviour 6: `global LAST; LAST = ...` and an append to a global list, after every call."""
    fn = test_capture.assigns_a_global
    c = torch.compile(fn, backend="deepvisor")
    test_capture.RESULTS.clear()
    try:
        for i in range(3):
            x = randn(2, seed=i)
            out = c(x)
            assert_matches(test_capture.LAST, x + 1, tol)
            assert_matches(out, (x + 1) * 2, tol)
            assert len(test_capture.RESULTS) == i + 1
        assert_compiled()
    finally:
        test_capture.RESULTS.clear()
        test_capture.LAST = None


def test_behaviour_6_guard_checks_do_not_touch_pythons_random_state():
    """Behaviour 6: random.getstate() is the same before and after the compiled calls."""
    import random
    m = on(Outer())
    c = torch.compile(m, backend="deepvisor")
    x = randn(4, 6)
    c(x)
    random.seed(5)
    state = random.getstate()
    for i in range(10):
        c(x if i % 2 else x * 2)
    m.offset = 1.0  # a guard miss: recompiled, guards checked again
    same(c, m, x)
    assert random.getstate() == state
    assert_compiled()


# -- behaviour 7: never break the program ----------------------------------------------------

class Boom(Exception):
    pass


class Checked(nn.Module):
    """Raises a user exception when a result is out of range (a decision on data)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.limit = 100.0

    def forward(self, x):
        y = self.lin(x)
        if (y.abs() > self.limit).any():
            raise Boom(f"a value above {self.limit}")
        return torch.relu(y)


def test_behaviour_7_user_exceptions_propagate_unchanged():
    """Behaviour 7: the same exception type and message as eager, and later calls still work."""
    m = on(Checked())
    c = torch.compile(m, backend="deepvisor")
    for scale in (1.0, 1e4, 1.0, 1e4, 2.0):
        x = randn(2, 3) * scale
        if scale < 10:
            same(c, m, x)
            continue
        with pytest.raises(Boom) as eager:
            m(x)
        with pytest.raises(Boom) as compiled:
            c(x)
        assert type(compiled.value) is Boom and compiled.value.args == eager.value.args
    s = backend_stats()
    assert s["captures"] >= 1 and s["cache_hits"] >= 1 and s["eager_calls"] == 0


def test_behaviour_7_errors_inside_the_graph_propagate_unchanged():
    """Behaviour 7: an index out of range inside the compiled graph raises eager's error."""
    def f(x, i):
        return torch.sin(x)[i] * 2

    if test_capture.DEVICE == "cuda":
        pytest.skip("an index out of range is a device-side assert on a GPU")
    c = torch.compile(f, backend="deepvisor")
    x = randn(3, 4)
    for idx in ([0, 2], [1, 7], [2, 0], [-9, 1]):
        i = tensor(idx)
        if max(idx) < 3 and min(idx) >= -3:
            same(c, f, x, i)
            continue
        with pytest.raises(Exception) as eager:
            f(x, i)
        with pytest.raises(Exception) as compiled:
            c(x, i)
        assert type(compiled.value) is type(eager.value) and str(compiled.value) == str(eager.value)
    assert backend_stats()["captures"] >= 1


def test_behaviour_7_an_error_inside_the_graph_leaves_the_plan_compiled():
    """Behaviour 7 (and 3): after a call that raised inside the graph, valid calls replay the plan again."""
    if test_capture.DEVICE == "cuda":
        pytest.skip("an index out of range is a device-side assert on a GPU")

    def f(x, i):
        return torch.sin(x)[i] * 2

    c = torch.compile(f, backend="deepvisor")
    x = randn(3, 4)
    same(c, f, x, tensor([0, 2]))
    with pytest.raises(IndexError):
        c(x, tensor([1, 7]))
    before = backend_stats()
    for idx in ([2, 0], [1, 1]):
        same(c, f, x, tensor(idx))
    after = backend_stats()
    assert after["eager_calls"] == before["eager_calls"] and after["cache_hits"] == before["cache_hits"] + 2


def test_behaviour_7_rng_ops_give_fresh_numbers_on_every_call():
    """Behaviour 7: rand_like, randn and dropout are not frozen into the plan."""
    def f(x):
        return x + torch.rand_like(x) + torch.randn(x.shape, device=x.device) + F.dropout(x + 1, 0.5)

    c = torch.compile(f, backend="deepvisor")
    x = torch.zeros(1000, device=test_capture.DEVICE)
    outs = [c(x) for _ in range(4)]
    for a, b in zip(outs, outs[1:]):
        assert not torch.equal(a, b)
    assert backend_stats()["cache_hits"] >= 3
    assert_compiled()


def test_behaviour_7_threads_get_eager_results():
    """Behaviour 7: 4 threads calling the compiled module at once, on different shapes."""
    m = on(Outer())
    c = torch.compile(m, backend="deepvisor")
    shapes = [(2, 6), (3, 6), (5, 6), (7, 6), (1, 6), (4, 6)]

    def work(seed):
        for i in range(12):
            x = randn(*shapes[(seed + i) % len(shapes)], seed=seed * 100 + i)
            assert_matches(c(x), m(x), tol)

    test_capture.run_in_threads(work)
    assert_compiled()


# -- behaviour 8: the torchvision classifiers through the backend are in test_torchvision.py
# (test_classifier_through_the_backend).
