"""Every saved fuzzer case (tests/python/fuzz_regressions/) replayed on the
GPU, as the CPU suite replays them on CPU tensors: the fuzzer's own check
(capture, replay, new inputs, new sizes and row lengths, symbolic captures
and their instances), judged against float64 as the fuzzer judges. A case
found on the CPU can hide a GPU bug: seed 2308's padded rows pass on CPU
tensors, while on the GPU the kernel that takes its sizes as arguments
loaded the pad's lanes. Skipped without a GPU."""

import os

import pytest
import torch

import fuzz_graphs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CASES = fuzz_graphs.regression_cases()


@pytest.mark.parametrize("path", CASES, ids=[os.path.basename(p)[5:-3] for p in CASES])
def test_fuzz_case_on_the_gpu(path):
    why = fuzz_graphs.check(fuzz_graphs.program_from_file(path), "cuda")
    assert not why, why
