"""Kernels that take their sizes as arguments (DEEPVISOR_SIZE_ARGS=1) on a
GPU: the whole operator catalogue against eager, and a transformer over
several shapes whose later shapes run kernels compiled for earlier ones
(each launch passing its own sizes). Skipped without a GPU."""

import pytest
import torch

import deepvisor
from op_cases import check_compiled, params

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def size_arguments(monkeypatch):
    monkeypatch.setenv("DEEPVISOR_SIZE_ARGS", "1")


@pytest.mark.parametrize("case,dtype", params("cuda"))
def test_op_gpu_with_size_arguments(case, dtype):
    check_compiled(case, dtype, "cuda")


def test_a_transformer_over_shapes_reuses_its_kernels(tmp_path, monkeypatch):
    transformers = pytest.importorskip("transformers")
    monkeypatch.setenv("DEEPVISOR_CACHE_DIR", str(tmp_path))  # every compile counted
    cfg = transformers.BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=2,
                                  intermediate_size=128, vocab_size=1000)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = transformers.BertModel(cfg).eval().cuda()
    g = deepvisor.compile(model)
    compiles = []
    with torch.no_grad():
        for batch, seq in [(2, 16), (2, 24), (2, 28), (3, 20), (2, 40), (4, 33)]:
            ids = torch.randint(0, 1000, (batch, seq), device="cuda")
            mask = torch.ones(batch, seq, dtype=torch.long, device="cuda")
            for _ in range(3):  # capture, then replays (a CUDA graph from the third call)
                got = g(ids, mask).last_hidden_state
            torch.testing.assert_close(got, model(ids, mask).last_hidden_state, rtol=1e-4, atol=1e-5)
            compiles.append(deepvisor.stats(g)["nvrtc_compiles"])
    # After the second value of each dimension (seq at (2, 24), batch at (3, 20)) no shape compiles a kernel.
    assert compiles[2] == compiles[1] and compiles[4:] == [compiles[3]] * 2, compiles
