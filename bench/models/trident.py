"""TridentNet (Li et al., "Scale-Aware Trident Networks for Object Detection",
2019): a ResNet-50 whose third stage (res4, conv4_x) is made of trident blocks.

At res4 the network splits into three branches that share every weight. In a
trident block each branch runs the same bottleneck (1x1, 3x3, 1x1 convs and
their batch norms), but its 3x3 conv runs at the branch's own dilation, 1, 2
or 3, with padding equal to the dilation: one weight tensor convolved three
times, so the branches have receptive fields for small, medium and large
objects at no parameter cost. The branches stay apart through the stage. As in
the paper's detector, where every branch's features go through the same head,
the stage's three outputs are concatenated along the batch and the shared
res5 stage runs on that 3x batch; here res5 is followed by a global average
pool and a linear classifier (the detection heads are left out), so the model
returns (3 * batch, classes) logits: branch 0 (dilation 1) first.

Full: bottlenecks 3-4-6-3 of widths 64..512, input 224x224, 1000 classes.
Small: bottlenecks 1-1-2-1 of widths 8..64, input 64x64, 10 classes.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from .resnet import ResNet


class TridentBlock(nn.Module):
    """A bottleneck block run on each branch, its 3x3 conv dilated per branch."""

    def __init__(self, block, dilations):
        super().__init__()
        self.block, self.dilations = block, dilations

    def forward(self, branches):
        b, outs = self.block, []
        for x, d in zip(branches, self.dilations):
            identity = x if b.downsample is None else b.downsample(x)
            out = b.relu(b.bn1(b.conv1(x)))
            out = F.conv2d(out, b.conv2.weight, None, b.conv2.stride, padding=d, dilation=d)  # shared weight
            out = b.relu(b.bn2(out))
            out = b.bn3(b.conv3(out))
            outs.append(b.relu(out + identity))
        return outs


class TridentNet(ResNet):
    def __init__(self, blocks=(3, 4, 6, 3), widths=(64, 128, 256, 512), classes=1000, dilations=(1, 2, 3)):
        super().__init__(blocks, widths, classes)
        self.layer3 = nn.ModuleList(TridentBlock(block, dilations) for block in self.layer3)
        self.branches = len(dilations)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        branches = [x] * self.branches
        for block in self.layer3:
            branches = block(branches)
        x = self.layer4(torch.cat(branches, 0))  # the branches as one batch through the shared res5
        return self.fc(torch.flatten(self.avgpool(x), 1))


def tridentnet(size="full", batch=1, device="cpu"):
    """Called as model(image); returns (3 * batch, classes) logits, one batch per branch."""
    if size == "full":
        model, side = TridentNet(), 224
    else:
        model, side = TridentNet(blocks=(1, 1, 2, 1), widths=(8, 16, 32, 64), classes=10), 64
    return model.eval().to(device), (torch.randn(batch, 3, side, side, device=device),)
