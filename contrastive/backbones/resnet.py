"""torchvision's ResNets (He et al., "Deep Residual Learning for Image Recognition",
CVPR 2016) as backbones: ``fc`` removed, optionally with a small stem for small images."""

from __future__ import annotations

from typing import Sequence, Type

from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from contrastive.backbones.base import Encoder, conv3x3
from contrastive.backbones.resnet50_wide import widen_resnet50_
from contrastive.core.errors import ConfigError
from contrastive.core.registry import BACKBONES


class ResNetEncoder(ResNet, Encoder):
    """torchvision's ``ResNet`` (random init) as an :class:`Encoder`: the same class, so the same
    ``state_dict`` keys (``conv1``, ``bn1``, ``layer1``-``layer4``) and weights that load into
    ``torchvision.models.resnet18()`` strictly; ``fc`` is an ``nn.Identity`` (no keys).

    Args:
        block: torchvision's ``BasicBlock`` or ``Bottleneck``.
        layers: Blocks per stage (ResNet-18: 2, 2, 2, 2; ResNet-50: 3, 4, 6, 3).
        small_stem: A 3x3 stride-1 ``conv1`` and no max-pool (total stride 8 instead of 32).
        zero_init_residual: Zero-init the last BatchNorm of every block (as torchvision).
        width: ResNet-50 only: SimCLR's wider ResNet-50, every layer x ``width``
            (:mod:`contrastive.backbones.resnet50_wide`).
    """

    def __init__(self, block: Type[nn.Module], layers: Sequence[int], small_stem: bool,
                 zero_init_residual: bool = False, width: int = 1) -> None:
        super().__init__(block, list(layers), zero_init_residual=zero_init_residual)
        if width != 1:
            widen_resnet50_(self, width, zero_init_residual)
        if small_stem:
            self.conv1 = conv3x3(3, self.conv1.out_channels)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
            self.maxpool = nn.Identity()
        self.feature_dim = self.fc.in_features
        self.fc = nn.Identity()
        self.min_input_size = 8 if small_stem else 32
        self.small_stem = bool(small_stem)


@BACKBONES.register("resnet18")
def resnet18(small_stem: bool = False, zero_init_residual: bool = False) -> ResNetEncoder:
    """ResNet-18 (He et al. 2016), torchvision layout, 512-d features, 11.2M parameters."""
    return ResNetEncoder(BasicBlock, (2, 2, 2, 2), small_stem, zero_init_residual)


@BACKBONES.register("resnet50")
def resnet50(small_stem: bool = False, zero_init_residual: bool = False, width: int = 1) -> ResNetEncoder:
    """ResNet-50 (He et al. 2016), torchvision layout, 2048-d features, 23.5M parameters.

    ``width=2|4``: SimCLR's ResNet-50 (2x) / (4x), every layer widened: 4096 / 8192-d
    features, 93.9M / 375.4M parameters (the paper: 94M / 375M)."""
    if width not in (1, 2, 4):
        raise ConfigError(f"backbone.kwargs.width={width} is not valid for resnet50; choose one of 1, 2, 4 (SimCLR's 1x, 2x, 4x)")
    return ResNetEncoder(Bottleneck, (3, 4, 6, 3), small_stem, zero_init_residual, int(width))
