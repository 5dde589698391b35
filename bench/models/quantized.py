"""Quantized ResNet-18: ResNet-18 (basic blocks 2-2-2-2, BatchNorm, ReLU) whose
convolutions and linear layer fake-quantize their weight and their input
activation, per tensor, to int8 ranges, with the explicit pattern

    q = clamp(round(x / scale) + zero_point, qmin, qmax);  x_dq = (q - zero_point) * scale

Weights are quantized symmetrically (zero point 0, scale max|w| / 127);
activations asymmetrically over [-128, 127] from the range seen in one
calibration call (post-training static quantization, min/max observers).
Scales and zero points are buffers. The batch norms stay separate modules
after the quantized convolutions.

Full: widths 64..512, input 224x224, 1000 classes. Small: one block per stage,
widths 8..64, input 32x32, 10 classes.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

QMIN, QMAX = -128, 127


def fake_quant(x, scale, zero_point):
    q = torch.clamp(torch.round(x / scale) + zero_point, QMIN, QMAX)
    return (q - zero_point) * scale


class Quantized:
    """Mixed into Conv2d and Linear: scales and zero points, and calibration."""

    def init_quant(self):
        w_scale = self.weight.detach().abs().max().clamp_min(1e-8) / QMAX
        self.register_buffer("w_scale", w_scale)
        self.register_buffer("w_zero", torch.zeros(()))
        self.register_buffer("a_scale", torch.ones(()))
        self.register_buffer("a_zero", torch.zeros(()))
        self.calibrating = False

    def quantized(self, x):
        """The fake-quantized input and weight (the input only observed while calibrating)."""
        if self.calibrating:
            self.lo, self.hi = min(self.lo, x.min().item()), max(self.hi, x.max().item())
            return x, self.weight
        return fake_quant(x, self.a_scale, self.a_zero), fake_quant(self.weight, self.w_scale, self.w_zero)

    def set_range(self, lo, hi):
        lo, hi = min(lo, 0.0), max(hi, 0.0)  # zero stays exactly representable
        scale = max(hi - lo, 1e-8) / (QMAX - QMIN)
        self.a_scale.fill_(scale)
        self.a_zero.fill_(min(max(round(QMIN - lo / scale), QMIN), QMAX))


class QConv2d(nn.Conv2d, Quantized):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.init_quant()

    def forward(self, x):
        x, w = self.quantized(x)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class QLinear(nn.Linear, Quantized):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.init_quant()

    def forward(self, x):
        x, w = self.quantized(x)
        return F.linear(x, w, self.bias)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = QConv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = QConv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(QConv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class QuantizedResNet18(nn.Module):
    def __init__(self, blocks=(2, 2, 2, 2), widths=(64, 128, 256, 512), classes=1000):
        super().__init__()
        self.conv1 = QConv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages, cin = [], widths[0]
        for i, (n, width) in enumerate(zip(blocks, widths)):
            stages.append(nn.Sequential(*[BasicBlock(cin if j == 0 else width, width, 2 if i and not j else 1)
                                          for j in range(n)]))
            cin = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = QLinear(cin, classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))

    @torch.no_grad()
    def calibrate(self, x):
        """Sets every activation's scale and zero point from its range in a float call on x."""
        layers = [m for m in self.modules() if isinstance(m, Quantized)]
        for m in layers:
            m.calibrating, m.lo, m.hi = True, float("inf"), float("-inf")
        self(x)
        for m in layers:
            m.calibrating = False
            m.set_range(m.lo, m.hi)


def quantized_resnet18(size="full", batch=1, device="cpu"):
    """Called as model(image); calibrated on a random batch of the example's shape."""
    if size == "full":
        model, side = QuantizedResNet18(), 224
    else:
        model, side = QuantizedResNet18(blocks=(1, 1, 1, 1), widths=(8, 16, 32, 64), classes=10), 32
    model = model.eval().to(device)
    model.calibrate(torch.randn(batch, 3, side, side, device=device))
    return model, (torch.randn(batch, 3, side, side, device=device),)
