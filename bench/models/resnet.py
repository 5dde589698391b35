"""ResNet-50 and ResNet-101: torchvision's when installed, else the same
architecture here (bottleneck blocks 3-4-6-3 or 3-4-23-3, BatchNorm, ReLU, max
pool, global average pool)."""

import torch
import torch.nn as nn


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, width, stride, downsample):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self, blocks=(3, 4, 6, 3), widths=(64, 128, 256, 512), classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        layers, cin = [], 64
        for i, (n, width) in enumerate(zip(blocks, widths)):
            stride = 1 if i == 0 else 2
            downsample = nn.Sequential(nn.Conv2d(cin, width * 4, 1, stride, bias=False), nn.BatchNorm2d(width * 4))
            stage = [Bottleneck(cin, width, stride, downsample)]
            cin = width * 4
            stage += [Bottleneck(cin, width, 1, None) for _ in range(n - 1)]
            layers.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _resnet(name, full_blocks, small_blocks, small_side, size, batch, device):
    """torchvision's `name` at full size where installed (else this file's
    ResNet with `full_blocks`); small: narrow blocks `small_blocks`."""
    model = None
    if size == "full":
        try:
            import torchvision
            model = getattr(torchvision.models, name)(weights=None)
        except ImportError:
            model = ResNet(blocks=full_blocks)
    else:
        model = ResNet(blocks=small_blocks, widths=(8, 16, 32, 64), classes=10)
    model = model.eval().to(device)
    side = 224 if size == "full" else small_side
    return model, (torch.randn(batch, 3, side, side, device=device),)


def resnet50(size="full", batch=1, device="cpu"):
    return _resnet("resnet50", (3, 4, 6, 3), (1, 1, 1, 1), 32, size, batch, device)


def resnet101(size="full", batch=1, device="cpu"):
    """Small: bottleneck blocks 1-1-3-1 of narrow widths on 64x64 inputs."""
    return _resnet("resnet101", (3, 4, 23, 3), (1, 1, 3, 1), 64, size, batch, device)
