"""``small_cnn``: a fast four-stage encoder for CPU runs and tests."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from contrastive.backbones.base import PooledEncoder, conv_bn_relu
from contrastive.core.registry import BACKBONES


@BACKBONES.register("small_cnn")
def small_cnn(small_stem: bool = True, width: int = 32) -> PooledEncoder:
    """A 4-layer conv net for CPU runs and tests (0.39M parameters, 15M multiply-adds per
    32x32 image at ``width=32``; ResNet-18 with a small stem needs 0.56G).

    Four conv3x3-BN-ReLU stages of ``width``, 2, 4 and 8 times ``width`` channels,
    stride 2 in stages 2-4, then global average pooling: ``feature_dim = 8 * width``.
    Without ``small_stem`` the first stage has stride 2 and is followed by a 3x3
    stride-2 max-pool, like ResNet's ImageNet stem (total stride 32 instead of 8).

    Args:
        small_stem: Stride-1 first stage (for images up to 64 px).
        width: Channels of the first stage.
    """
    widths = [width, 2 * width, 4 * width, 8 * width]
    stem = [conv_bn_relu(3, widths[0], stride=1 if small_stem else 2)]
    if not small_stem:
        stem.append(nn.MaxPool2d(3, stride=2, padding=1))
    stages = [("stem", nn.Sequential(*stem))]
    stages += [(f"layer{i}", conv_bn_relu(widths[i - 1], widths[i], stride=2)) for i in range(1, 4)]
    return PooledEncoder(nn.Sequential(OrderedDict(stages)), widths[-1], 8 if small_stem else 32, small_stem)
