"""Scatters on the GPU that the CPU suite checks only as CUDA C: a scatter of
one point (an index and a value of one element, or one element repeated)
adds once per point, on the first call (step by step) and on every replay of
the plan's CUDA graph, with new inputs each call. The fuzzer found four such
programs (seed 21 on the H200, fuzz_regressions/case_*_of_one_*): every
thread of the kernel's block did the atomic add, 64 adds for one point.
And a plan that launches no GPU work is not captured as an (empty) CUDA
graph. Skipped without a GPU."""

import os

import pytest
import torch

import deepvisor
import fuzz_graphs
from op_cases import assert_matches
from test_scatter import one_point_scatters

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CALLS = 6  # the first runs step by step, the second captures the graph, the rest replay it
CASES = fuzz_graphs.regression_cases("case_*_of_one_*.py")


def tolerances(dtype):
    return (1.6e-2, 1e-2) if dtype == torch.bfloat16 else (1e-4, 1e-5)


@torch.no_grad()
@pytest.mark.parametrize("case", range(4), ids=["scatter_add_bf16", "index_add_softmax", "scatter_add_into_sum",
                                                 "repeated_point"])
def test_a_scatter_of_one_point_matches_eager_on_every_call(case):
    fn, make_args = one_point_scatters("cuda")[case]
    g = deepvisor.compile(fn)
    outs, refs = [], []
    for seed in range(CALLS):
        args = make_args(seed)
        refs.append(fn(*args))
        outs.append(g(*args))
    for seed, (out, ref) in enumerate(zip(outs, refs)):  # later replays overwrite no earlier result
        assert_matches(out, ref, tolerances, f"call {seed}")
    s = deepvisor.stats(g)
    assert s["cuda_graphs"] == 1 and s["captures"] == 1, s


@torch.no_grad()
@pytest.mark.parametrize("path", CASES, ids=[os.path.basename(p)[5:-3] for p in CASES])
def test_fuzz_case_of_one_point_on_the_gpu(path):
    """The fuzzer's own check (capture, replay, new inputs), then more calls
    with new inputs, each judged as the fuzzer does (against float64)."""
    program = fuzz_graphs.program_from_file(path)
    why = fuzz_graphs.check(program, "cuda")
    assert not why, why
    fn, reference = program.make("cuda"), program.make_reference("cuda")
    g = deepvisor.compile(fn)
    low_precision = any(dt in (torch.bfloat16, torch.float16) for _, dt, _ in program.inputs) or \
        "bfloat16" in program.source()
    for seed in range(CALLS):
        args = program.example_inputs("cuda", seed)
        want, got = fn(*args), g(*args)
        refs = reference(*[a.double() if a.is_floating_point() else a for a in args])
        for i, (x, y, r) in enumerate(zip(got, want, refs)):
            why = fuzz_graphs._close(x, y, r, low_precision)
            assert not why, f"call {seed}, output {i}: {why}"


@torch.no_grad()
def test_a_plan_without_gpu_work_is_not_captured_as_an_empty_graph(capfd):
    """x.view(-1) of an expanded x: the plan holds a view and nothing else to
    run (the output is rebuilt as a view of the argument). Captured, it made
    an empty CUDA graph (torch warns "The CUDA Graph is empty"); it is not
    graphed at all now."""
    def fn(x):
        return x.view(-1)

    g = deepvisor.compile(fn)
    for seed in range(4):
        x = torch.randn(1, generator=torch.Generator().manual_seed(seed)).cuda().expand(8)
        assert torch.equal(g(x), fn(x))
    torch.cuda.synchronize()
    assert "CUDA Graph is empty" not in capfd.readouterr().err
    for executor in g.executors():
        assert executor.stats()["cuda_graph"] == "not graphed: it launches no GPU work", executor.stats()
