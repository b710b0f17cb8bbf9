"""torchvision's ResNets (He et al., "Deep Residual Learning for Image Recognition",
CVPR 2016) as backbones: ``fc`` removed, optionally with a small stem for small images."""

from __future__ import annotations

import torchvision
from torch import nn

from contrastive.backbones.base import conv3x3
from contrastive.core.errors import ConfigError
from contrastive.core.registry import BACKBONES


def _torchvision_resnet(arch: str, small_stem: bool, zero_init_residual: bool, width: int = 1) -> nn.Module:
    """A torchvision ResNet (random init) with ``fc`` removed and, with ``small_stem``,
    a 3x3 stride-1 ``conv1`` and no max-pool (total stride 8 instead of 32); ``width`` > 1:
    SimCLR's wider ResNet-50 (:mod:`contrastive.backbones.resnet50_wide`)."""
    if width != 1:
        from contrastive.backbones.resnet50_wide import wide_resnet50

        model = wide_resnet50(width, zero_init_residual)
    else:
        model = getattr(torchvision.models, arch)(weights=None, zero_init_residual=zero_init_residual)
    if small_stem:
        model.conv1 = conv3x3(3, model.conv1.out_channels)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
        model.maxpool = nn.Identity()
    model.feature_dim = model.fc.in_features
    model.fc = nn.Identity()
    model.min_input_size = 8 if small_stem else 32
    model.small_stem = small_stem
    return model


@BACKBONES.register("resnet18")
def resnet18(small_stem: bool = False, zero_init_residual: bool = False) -> nn.Module:
    """ResNet-18 (He et al. 2016), torchvision layout, 512-d features, 11.2M parameters."""
    return _torchvision_resnet("resnet18", small_stem, zero_init_residual)


@BACKBONES.register("resnet50")
def resnet50(small_stem: bool = False, zero_init_residual: bool = False, width: int = 1) -> nn.Module:
    """ResNet-50 (He et al. 2016), torchvision layout, 2048-d features, 23.5M parameters.

    ``width=2|4``: SimCLR's ResNet-50 (2x) / (4x), every layer widened: 4096 / 8192-d
    features, 93.9M / 375.4M parameters (the paper: 94M / 375M)."""
    if width not in (1, 2, 4):
        raise ConfigError(f"backbone.kwargs.width={width} is not valid for resnet50; choose one of 1, 2, 4 (SimCLR's 1x, 2x, 4x)")
    return _torchvision_resnet("resnet50", small_stem, zero_init_residual, int(width))
