"""Kernels that take their sizes as arguments (DEEPVISOR_SIZE_ARGS=1, issue
11's first step): a new shape reuses the compiled kernels of an earlier one
wherever the emitter made the same choices, so it costs a capture but (mostly)
no NVRTC compile. Checked here through DEEPVISOR_VALIDATE_CUDA=1, which
compiles every kernel for sm_90 without a GPU; results are the interpreter's,
against eager."""

import pytest
import torch

import deepvisor

transformers = pytest.importorskip("transformers")


def bert(layers=2):
    cfg = transformers.BertConfig(num_hidden_layers=layers, hidden_size=64, num_attention_heads=2,
                                  intermediate_size=128, vocab_size=1000)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    return transformers.BertModel(cfg).eval()


def call(g, model, batch, seq):
    ids = torch.randint(0, 1000, (batch, seq))
    mask = torch.ones(batch, seq, dtype=torch.long)
    with torch.no_grad():
        got, want = g(ids, mask).last_hidden_state, model(ids, mask).last_hidden_state
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    return deepvisor.stats(g)["nvrtc_compiles"]


@pytest.fixture
def validated(monkeypatch, tmp_path):
    monkeypatch.setenv("DEEPVISOR_VALIDATE_CUDA", "1")
    monkeypatch.setenv("DEEPVISOR_CACHE_DIR", str(tmp_path))  # every compile counted
    from deepvisor import _C
    if not _C.nvrtc_available():
        pytest.skip("NVRTC is not available")
    return monkeypatch


def test_a_new_sequence_length_of_the_same_size_class_compiles_nothing(validated):
    validated.setenv("DEEPVISOR_SIZE_ARGS", "1")
    model = bert()
    g = deepvisor.compile(model, dynamic=False)  # a capture per shape (test_dynamic_shapes.py: symbolic ones)
    call(g, model, 2, 16)
    before = call(g, model, 2, 24)
    assert call(g, model, 2, 28) == before  # 48 and 56 rows: one class (64)
    assert call(g, model, 3, 20) == before  # 60 rows
    assert deepvisor.stats(g)["captures"] == 4


def test_with_sizes_in_the_source_every_shape_compiles_its_own_kernels(validated):
    model = bert()
    g = deepvisor.compile(model, dynamic=False)
    call(g, model, 2, 16)
    before = call(g, model, 2, 24)
    assert call(g, model, 2, 28) > before
