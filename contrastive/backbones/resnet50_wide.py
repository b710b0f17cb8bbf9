"""SimCLR's wider ResNet-50s: ResNet-50 (2x) and (4x) (Chen et al. 2020, Sec. 6 and Table 8).

SimCLR widens *every* layer of the ResNet-50 by the width multiplier (the stem's 64
channels and every bottleneck's inner and output channels; the TF ResNet of its code base
multiplies all filter counts), which multiplies the parameter count by about ``width**2``:
the paper gives 24M / 94M / 375M parameters for ResNet-50 (1x) / (2x) / (4x) (its Fig. 1
and Table 8, counted with the 1000-way classifier). torchvision's ``wide_resnet50_2``
widens only the bottleneck's inner 3x3 convolutions (69M) and is a different network.
"""

from __future__ import annotations

import torchvision
from torch import nn
from torchvision.models.resnet import Bottleneck


def wide_resnet50(width: int, zero_init_residual: bool = False) -> torchvision.models.ResNet:
    """A torchvision-layout ResNet-50 (random init, ``fc`` still attached) with all channels x ``width``.

    Args:
        width: Width multiplier >= 1 (1 is torchvision's ResNet-50 exactly).
        zero_init_residual: Zero-init the last BatchNorm of every block (as torchvision).

    Returns:
        The ResNet; ``fc`` maps ``2048 * width`` features to 1000 classes.
    """
    model = torchvision.models.resnet50(weights=None, zero_init_residual=zero_init_residual)
    if width != 1:
        widen_resnet50_(model, width, zero_init_residual)
    return model


def widen_resnet50_(model: torchvision.models.ResNet, width: int, zero_init_residual: bool = False) -> None:
    """Rebuild every layer of a torchvision ResNet-50 ``model`` in place with ``width`` x the channels
    (freshly initialised as torchvision does; ``fc`` maps ``2048 * width`` features to 1000 classes)."""
    base = 64 * width
    model.inplanes = base  # _make_layer reads and advances it, as ResNet.__init__ does
    model.conv1 = nn.Conv2d(3, base, kernel_size=7, stride=2, padding=3, bias=False)
    model.bn1 = nn.BatchNorm2d(base)
    model.layer1 = model._make_layer(Bottleneck, base, 3)
    model.layer2 = model._make_layer(Bottleneck, 2 * base, 4, stride=2)
    model.layer3 = model._make_layer(Bottleneck, 4 * base, 6, stride=2)
    model.layer4 = model._make_layer(Bottleneck, 8 * base, 3, stride=2)
    model.fc = nn.Linear(8 * base * Bottleneck.expansion, 1000)
    for m in model.modules():  # torchvision's initialisation (ResNet.__init__)
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_init_residual:
        for m in model.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)
