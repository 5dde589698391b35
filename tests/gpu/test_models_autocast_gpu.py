"""The evaluation models at their small size on the GPU under bf16 autocast:
each compiled model runs (three calls: capture, compile, replay), is one
graph with no fallback op, and is as close to the model computed in float64
as eager is (twice over, plus a bf16 tolerance).

On the H200 (2026-12-04) the full-size BERT-base and GPT-2 aborted under
bf16 autocast in the deepvisor mode ("double free or corruption (out)",
bench/models.py --autocast bf16), where float32 and ResNet-50 ran. Each
model runs in its own process (python -X faulthandler), so that a crash is
a failure that shows the Python stack, not a lost test worker. Skipped
without a GPU."""

import json
import os
import subprocess
import sys

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS = ["bert_base", "gpt2", "resnet50", "densenet121", "monodepth", "quantized_resnet18", "tridentnet", "align",
          "deberta_base"]

SCRIPT = r"""
import copy, json, sys
import torch
sys.path.insert(0, sys.argv[2])
import models as bench_models
import deepvisor


def output_tensor(out):  # as bench/models.py compares: last_hidden_state, or the first tensor
    out = getattr(out, "last_hidden_state", out)
    while isinstance(out, (tuple, list)):
        out = out[0]
    return out


torch.manual_seed(0)
model, args = getattr(bench_models, sys.argv[1])("small", 2, "cuda")
with torch.no_grad():
    m64 = copy.deepcopy(model).double()
    ref = output_tensor(m64(*[a.double() if a.is_floating_point() else a for a in args])).double()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        try:
            want = output_tensor(model(*args)).double()
        except RuntimeError as e:  # a model that does not run under bf16 autocast at all
            print(json.dumps({"eager_fails": str(e)[:200]}))
            sys.exit(0)
        g = deepvisor.compile(model)
        for _ in range(3):
            got = output_tensor(g(*args)).double()
torch.cuda.synchronize()
scale = ref.abs().max().item()
s = deepvisor.stats(g)
print(json.dumps({"eager_err": (want - ref).abs().max().item() / scale, "err": (got - ref).abs().max().item() / scale,
                  "captures": s["captures"], "eager_calls": s["eager_calls"], "fallback_ops": s["fallback_ops"],
                  "graphs": s["graphs"]}))
"""


@pytest.mark.parametrize("name", MODELS)
def test_model_under_bf16_autocast(name):
    pytest.importorskip("torchvision")
    pytest.importorskip("transformers")
    p = subprocess.run([sys.executable, "-X", "faulthandler", "-c", SCRIPT, name, os.path.join(ROOT, "bench")],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, f"{name} exited {p.returncode}:\n{p.stderr[-4000:]}"
    r = json.loads(p.stdout.strip().splitlines()[-1])
    if "eager_fails" in r:
        pytest.skip(f"eager cannot run {name} under bf16 autocast: {r['eager_fails']}")
    assert r["captures"] == 1 and r["eager_calls"] == 0 and r["fallback_ops"] == {}, r
    assert r["err"] <= 2 * r["eager_err"] + 2e-2, r
