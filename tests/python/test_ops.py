"""Every op in the catalogue (op_cases.py), on CPU tensors: the compiled
replay must match eager in dtype, shape and values, with one capture, cache
hits afterwards, no eager run and no fallback for a lowered op."""

import pytest
import torch

import deepvisor
from op_cases import assert_matches, params


def check_compiled(case, dtype, device):

    def tolerances(out_dtype):
        return case.tolerances(out_dtype, device)

    args = case.args(device, dtype)
    expected = case.fn(*args)
    g = deepvisor.compile(case.fn)
    captured = g(*args)
    assert_matches(captured, expected, tolerances, "capture run")
    replayed = g(*args)
    assert_matches(replayed, expected, tolerances, "replay")

    stats = deepvisor.stats(g)
    assert stats["eager_calls"] == 0, stats["eager_reasons"]
    assert stats["captures"] == 1 and stats["cache_hits"] == 1, stats
    unexpected = set(stats["fallback_ops"]) - case.allowed_fallbacks
    assert not unexpected, f"ops fell back to ATen: {unexpected}"
    assert stats["kernels"] >= case.min_kernels, stats

    # New values, same shapes: the replay must read them, not the capture's.
    fresh = case.args(device, dtype, seed=1)
    assert_matches(g(*fresh), case.fn(*fresh), tolerances, "replay on new inputs")
    stats = deepvisor.stats(g)
    assert stats["captures"] == 1 and stats["cache_hits"] == 2, stats


@pytest.mark.parametrize("case,dtype", params("cpu"))
def test_op(case, dtype):
    check_compiled(case, dtype, "cpu")
