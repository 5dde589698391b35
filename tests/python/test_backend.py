"""torch.compile(model, backend="deepvisor"): Dynamo's graphs compiled by
deepvisor, checked against eager while Python state changes between calls."""

import pytest
import torch
import torch.nn as nn

import deepvisor
from op_cases import assert_matches
import test_capture
from test_capture import Issue, Outer, Stack, branchy, python_features, Pair, Batch, randn, full, on, tol


@pytest.fixture(autouse=True, params=["cpu", "cuda"])
def fresh_dynamo(request):
    """Each test on the CPU and, where there is one, on a GPU (the helpers of
    test_capture read its DEVICE)."""
    import torch._dynamo
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("no GPU")
    test_capture.DEVICE = request.param
    torch._dynamo.reset()
    with torch.no_grad():
        yield
    torch._dynamo.reset()
    test_capture.DEVICE = "cpu"


def backend_stats():
    """Summed stats of the functions this backend compiled since the last reset."""
    total = {"captures": 0, "cache_hits": 0, "eager_calls": 0}
    for g in deepvisor.compiled_functions():
        if type(g.fn).__name__.endswith("GraphModule"):
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


def test_data_decisions_and_python_features_through_the_backend():
    c = torch.compile(branchy, backend="deepvisor")
    for v in (0.5, -0.5, 0.5):
        x = full((5,), v)
        assert_matches(c(x), branchy(x), tol)
    x, y, a, b = randn(3, 4), randn(3, 4, seed=1), randn(4, seed=2), randn(4, seed=3)
    kwargs = dict(pair=Pair(a, b), batch=Batch(randn(2, 2, seed=4), 0.5), weights=randn(4, seed=5), k=3.0)
    c2 = torch.compile(python_features, backend="deepvisor")
    assert_matches(c2(x, y, **kwargs), python_features(x, y, **kwargs), tol)


def test_side_effects_exceptions_and_random_ops_through_the_backend():
    from test_capture import Counter

    m = on(Counter())
    c = torch.compile(m, backend="deepvisor")
    for i in range(3):
        x, log = randn(3, seed=i), []
        out = c(x, log)
        assert_matches(out, x * 2, tol)
        assert len(log) == 1 and torch.allclose(log[0], (x * 2).sum())
        assert torch.equal(m.last, out)

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
