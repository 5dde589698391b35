"""The differential fuzzer (fuzz_graphs.py) in CI: a fixed budget of random
programs on CPU tensors, each compiled and compared with eager, and every
saved regression case (fuzz_regressions/: shrunk programs that once failed)."""

import os

import pytest

import fuzz_graphs

CI_GRAPHS = 500
CI_SEED = 20261202
REGRESSIONS = fuzz_graphs.regression_cases()


def test_random_programs_match_eager():
    found = []
    failures = fuzz_graphs.run(CI_GRAPHS, CI_SEED, log=found.append)
    assert not failures, "\n".join(found[:3])


@pytest.mark.parametrize("path", REGRESSIONS, ids=[os.path.basename(p)[5:-3] for p in REGRESSIONS])
def test_regression_case(path):
    why = fuzz_graphs.check(fuzz_graphs.program_from_file(path))
    assert not why, why
