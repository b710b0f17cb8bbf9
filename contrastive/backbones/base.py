"""Pieces every backbone family shares: conv helpers, weight init and the pooled encoder."""

from __future__ import annotations

import torch
from torch import nn


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (trainable or not) of ``module``."""
    return sum(p.numel() for p in module.parameters())


def conv3x3(in_planes: int, planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (a BatchNorm follows)."""
    return nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution without bias (projection shortcuts)."""
    return nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)


def conv_bn_relu(in_planes: int, planes: int, stride: int = 1) -> nn.Sequential:
    """conv3x3 -> BatchNorm -> ReLU."""
    return nn.Sequential(conv3x3(in_planes, planes, stride), nn.BatchNorm2d(planes), nn.ReLU(inplace=True))


def init_weights(module: nn.Module) -> None:
    """He-normal (fan-out) convolutions, BatchNorm to identity, zero biases (as torchvision does)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class PooledEncoder(nn.Module):
    """``features`` followed by global average pooling and flattening.

    Args:
        features: Convolutional trunk (a ``Sequential`` with named stages).
        feature_dim: Channels of the trunk's output.
        min_input_size: Total downsampling factor of the trunk.
    """

    def __init__(self, features: nn.Module, feature_dim: int, min_input_size: int) -> None:
        super().__init__()
        self.features = features
        self.feature_dim = int(feature_dim)
        self.min_input_size = int(min_input_size)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))  # [B, C, h, w] -> [B, C]
