"""MonoDepth: Monodepth2's depth network (Godard et al., "Digging Into
Self-Supervised Monocular Depth Estimation", 2019) with a ResNet-50 encoder.

The encoder (ResNet-50 without its pool and classifier, this folder's ResNet)
gives five feature maps: the stem at 1/2 of the input and the four stages at
1/4 .. 1/32. The decoder climbs back level by level (i = 4 .. 0): a 3x3 conv
+ ELU, a x2 nearest upsampling, a concatenation with the encoder's feature map
at that resolution (the skip connection; none at full resolution), another
3x3 conv + ELU. At the four finest levels a 3x3 conv and a sigmoid give a
disparity map: the outputs are disparities at scales 1, 1/2, 1/4 and 1/8 of
the input, finest first. Every 3x3 conv pads by reflection, as in the
original. Full: ResNet-50 (bottlenecks 3-4-6-3), decoder widths 16..256, input
256x256. Small: bottlenecks 1-1-1-1 of widths 8..64, decoder widths 4..64,
input 64x64.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from .resnet import ResNet


def conv3x3(cin, cout, elu=True):
    """Reflection pad by 1, 3x3 conv, then ELU (none before a disparity's sigmoid)."""
    layers = [nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, 3)]
    return nn.Sequential(*layers, nn.ELU(inplace=True)) if elu else nn.Sequential(*layers)


class MonoDepth(nn.Module):
    def __init__(self, blocks=(3, 4, 6, 3), widths=(64, 128, 256, 512), dec=(16, 32, 64, 128, 256), scales=4):
        super().__init__()
        self.encoder = ResNet(blocks, widths)
        del self.encoder.avgpool, self.encoder.fc  # the encoder stops at the last stage's features
        enc = [64] + [w * 4 for w in widths]  # channels of the five encoder feature maps
        self.scales = scales
        self.upconv0 = nn.ModuleList()  # upconv0[i]: before the upsampling at level i
        self.upconv1 = nn.ModuleList()  # upconv1[i]: after the concatenation with the skip
        for i in range(5):
            self.upconv0.append(conv3x3(enc[-1] if i == 4 else dec[i + 1], dec[i]))
            self.upconv1.append(conv3x3(dec[i] + (enc[i - 1] if i > 0 else 0), dec[i]))
        self.dispconv = nn.ModuleList(conv3x3(dec[s], 1, elu=False) for s in range(scales))

    def encode(self, x):
        e = self.encoder
        x = (x - 0.45) / 0.225
        f0 = e.relu(e.bn1(e.conv1(x)))
        f1 = e.layer1(e.maxpool(f0))
        f2 = e.layer2(f1)
        f3 = e.layer3(f2)
        return [f0, f1, f2, f3, e.layer4(f3)]

    def forward(self, image):
        feats = self.encode(image)
        x, disps = feats[4], []
        for i in range(4, -1, -1):
            x = F.interpolate(self.upconv0[i](x), scale_factor=2, mode="nearest")
            if i > 0:
                x = torch.cat([x, feats[i - 1]], 1)
            x = self.upconv1[i](x)
            if i < self.scales:
                disps.append(torch.sigmoid(self.dispconv[i](x)))
        return tuple(reversed(disps))  # finest (the input's resolution) first


def monodepth(size="full", batch=1, device="cpu"):
    """Called as model(image); returns 4 disparity maps (batch, 1, H/2^s, W/2^s), s = 0..3."""
    if size == "full":
        model, side = MonoDepth(), 256
    else:
        model, side = MonoDepth(blocks=(1, 1, 1, 1), widths=(8, 16, 32, 64), dec=(4, 8, 16, 32, 64)), 64
    return model.eval().to(device), (torch.rand(batch, 3, side, side, device=device),)
