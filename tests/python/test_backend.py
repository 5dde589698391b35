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
