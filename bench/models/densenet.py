"""DenseNet-121 from torchvision (random weights); small: a DenseNet with 4
blocks of 2 layers and growth rate 8. Raises ImportError without torchvision."""

import torch


def densenet121(size="full", batch=1, device="cpu"):
    import torchvision
    if size == "full":
        model, side = torchvision.models.densenet121(weights=None), 224
    else:
        model = torchvision.models.DenseNet(growth_rate=8, block_config=(2, 2, 2, 2), num_init_features=16,
                                            bn_size=2, num_classes=10)
        side = 64
    return model.eval().to(device), (torch.randn(batch, 3, side, side, device=device),)
