"""The torchvision classifiers on CPU: each one graph, equal to eager, with
readable guards; through deepvisor.compile and through torch.compile's
backend. Small images keep the suite quick (every model's architecture is
unchanged)."""

import pytest
import torch

import deepvisor
from op_cases import assert_matches

tvm = pytest.importorskip("torchvision.models")

CLASSIFIERS = {
    "resnet18": (lambda: tvm.resnet18(), 32),
    "densenet121": (lambda: tvm.densenet121(), 32),
    "mobilenet_v2": (lambda: tvm.mobilenet_v2(), 32),
    "mobilenet_v3_small": (lambda: tvm.mobilenet_v3_small(), 32),
    "efficientnet_b0": (lambda: tvm.efficientnet_b0(), 32),
    "vgg11_bn": (lambda: tvm.vgg11_bn(), 32),
    "regnet_x_400mf": (lambda: tvm.regnet_x_400mf(), 32),
    "googlenet": (lambda: tvm.googlenet(init_weights=False), 64),
    "inception_v3": (lambda: tvm.inception_v3(init_weights=False, aux_logits=False), 80),
    "mnasnet0_5": (lambda: tvm.mnasnet0_5(), 32),
    "shufflenet_v2_x0_5": (lambda: tvm.shufflenet_v2_x0_5(), 32),
    "squeezenet1_0": (lambda: tvm.squeezenet1_0(), 64),
    "convnext_tiny": (lambda: tvm.convnext_tiny(), 32),
    "alexnet": (lambda: tvm.alexnet(), 64),
    "vit_b_16": (lambda: tvm.vit_b_16(image_size=32), 32),
    "swin_t": (lambda: tvm.swin_t(), 64),
}


import test_capture
from test_capture import device  # noqa: F401  (autouse: every test on the CPU and, where there is one, a GPU)


@pytest.fixture(autouse=True)
def exact_float32():
    """cuDNN convolutions default to TF32, which turns any last-bit difference
    upstream (a fused batch norm's rounding) into 1e-3 relative ones: compare
    in full float32."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def tolerance(dtype):
    return (1e-4, 1e-5) if test_capture.DEVICE == "cpu" else (1e-3, 1e-4)


def build(name):
    make, side = CLASSIFIERS[name]
    torch.manual_seed(0)
    model = make().eval()
    if name == "vit_b_16":  # its head starts at zero: give the output something to compare
        torch.nn.init.normal_(model.heads.head.weight, std=0.02)
    return model.to(test_capture.DEVICE), torch.randn(1, 3, side, side).to(test_capture.DEVICE)


@pytest.mark.parametrize("name", list(CLASSIFIERS))
def test_classifier_is_one_graph(name):
    model, x = build(name)
    with torch.no_grad():
        expected = model(x)
        g = deepvisor.compile(model)
        assert_matches(g(x), expected, tolerance)
        assert_matches(g(x * 1.0), expected, tolerance)
    s = deepvisor.stats(g)
    assert s["captures"] == 1 and s["graphs"] == 1 and s["cache_hits"] == 1, s
    assert s["eager_calls"] == 0, s["eager_reasons"]
    text = deepvisor.explain(g)
    assert "training is False" in text and f"x: torch.float32 (1, 3, {x.shape[2]}, {x.shape[3]})" in text
    assert f"on {x.device}" in text


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "squeezenet1_0", "shufflenet_v2_x0_5", "vit_b_16",
                                  "convnext_tiny"])
def test_classifier_through_the_backend(name):
    """Issue 9, behaviour 8: torch.compile(model, backend="deepvisor") equals eager, and replays."""
    import torch._dynamo
    torch._dynamo.reset()
    model, x = build(name)
    with torch.no_grad():
        expected = model(x)
        compiled = torch.compile(model, backend="deepvisor")
        for _ in range(2):
            assert_matches(compiled(x), expected, tolerance)
    ours = [g for g in deepvisor.compiled_functions() if type(g.fn).__name__.endswith("GraphModule")]
    assert ours and all(deepvisor.stats(g)["eager_calls"] == 0 for g in ours)
    assert sum(deepvisor.stats(g)["cache_hits"] for g in ours) >= 1
    torch._dynamo.reset()
