"""Backbones: image encoders that map ``[B, 3, H, W]`` images to pooled ``[B, D]`` features.

Every backbone is a factory registered in :data:`contrastive.registry.BACKBONES` and
built with :func:`create_backbone`. A factory is called as ``factory(small_stem=bool,
**kwargs)`` and returns a module whose ``forward`` ends in global average pooling
(so non-square inputs such as ImCLR's 64x32 concatenations work) or, for the ImCLR
paper's flatten heads, has ``configure_input(height, width)``, which sizes the head and
``feature_dim`` for one input size (see :mod:`contrastive.backbones_keras`), and that has two
int attributes:

* ``feature_dim``: the size ``D`` of the output vector;
* ``min_input_size``: the smallest image side it can take, i.e. its total
  downsampling factor, at which the last stage sees a 1x1 map (smaller inputs
  crash in un-padded pooling or leave the last stages looking only at padding).

:func:`create_backbone` adds ``name`` and ``small_stem`` attributes.

This module holds the torchvision ResNets (He et al., "Deep Residual Learning for
Image Recognition", CVPR 2016), ``small_cnn`` (a fast encoder for CPU runs and tests)
and the helpers shared with :mod:`contrastive.backbones_cifar`, which it imports so
that all backbones are registered.
"""

from __future__ import annotations

import inspect
import logging
from collections import OrderedDict
from typing import Any, Union

import torch
import torchvision
from torch import nn

from contrastive.errors import ConfigError
from contrastive.registry import BACKBONES

log = logging.getLogger(__name__)

#: ``small_stem="auto"`` picks the small stem for images up to this size (CIFAR, STL at 64, Tiny-ImageNet).
SMALL_STEM_MAX_SIZE = 64


# ----------------------------------------------------------------------------- public API
def create_backbone(name: str, image_size: int, small_stem: Union[bool, str] = "auto", **kwargs: Any) -> nn.Module:
    """Build a registered backbone.

    Args:
        name: Registered backbone name (see ``BACKBONES.names()``).
        image_size: Side of the (square) training images; only used to resolve
            ``small_stem="auto"``. Inputs of other sizes, including non-square ones,
            work as long as both sides are at least ``min_input_size``.
        small_stem: ``True`` for a 3x3 stride-1 stem without max-pool (for
            CIFAR/Tiny-ImageNet sized images), ``False`` for the ImageNet stem,
            ``"auto"`` for ``image_size <= 64``. The CIFAR nets always have a small
            stem and ignore it.
        **kwargs: Passed to the backbone's factory (e.g. ``zero_init_residual``, ``width``, ``dropout``).

    Returns:
        A module mapping float ``[B, 3, H, W]`` to ``[B, feature_dim]`` with int
        attributes ``feature_dim`` and ``min_input_size`` and attributes ``name``
        and ``small_stem``.

    Raises:
        ConfigError: (a ``ValueError``) for an unknown name (the message lists the
            choices), an invalid ``small_stem`` or a keyword the backbone does not take.
    """
    try:
        factory = BACKBONES.get(name)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    use_small = resolve_small_stem(small_stem, image_size)
    try:  # check the keywords here so a config typo gives a clear message, not a TypeError deep inside
        inspect.signature(factory).bind(small_stem=use_small, **kwargs)
    except TypeError as err:
        params = [p for p in inspect.signature(factory).parameters if p != "small_stem"]
        raise ConfigError(f"backbone '{name}': {err}; it accepts: {', '.join(params) or '(no keywords)'}") from None
    model = factory(small_stem=use_small, **kwargs)
    if hasattr(model, "configure_input"):  # a flatten head is sized for the input (backbones_keras.HeadedEncoder)
        model.configure_input(int(image_size), int(image_size))
    model.name = name
    if not hasattr(model, "small_stem"):
        model.small_stem = use_small
    elif model.small_stem and not use_small and str(small_stem).lower() != "auto":
        log.warning("backbone '%s' always uses a small 3x3 stride-1 stem; small_stem=False is ignored", name)
    model.feature_dim = int(model.feature_dim)
    model.min_input_size = int(getattr(model, "min_input_size", 1))
    return model


def resolve_small_stem(small_stem: Union[bool, str], image_size: int) -> bool:
    """Turn ``True``/``False``/``"auto"`` (or ``"true"``/``"false"`` strings) into a bool."""
    if isinstance(small_stem, bool):
        return small_stem
    value = str(small_stem).strip().lower()
    if value == "auto":
        return int(image_size) <= SMALL_STEM_MAX_SIZE
    if value in ("true", "false"):
        return value == "true"
    raise ConfigError(f"small_stem must be true, false or 'auto', got {small_stem!r}")


def check_input_size(backbone: nn.Module, height: int, width: int) -> None:
    """Raise if ``backbone`` cannot take ``height x width`` images.

    Raises:
        ConfigError: (a ``ValueError``) e.g. "backbone 'resnet50' (small_stem=False)
            needs inputs of at least 32x32, got 16x16".
    """
    need = int(getattr(backbone, "min_input_size", 1))
    if height < need or width < need:
        name = getattr(backbone, "name", type(backbone).__name__)
        raise ConfigError(
            f"backbone '{name}' (small_stem={getattr(backbone, 'small_stem', '?')}) "
            f"needs inputs of at least {need}x{need}, got {height}x{width}"
        )


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (trainable or not) of ``module``."""
    return sum(p.numel() for p in module.parameters())


# ----------------------------------------------------------------------------- shared helpers
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


# ----------------------------------------------------------------------------- torchvision ResNets
def _torchvision_resnet(arch: str, small_stem: bool, zero_init_residual: bool, width: int = 1) -> nn.Module:
    """A torchvision ResNet (random init) with ``fc`` removed and, with ``small_stem``,
    a 3x3 stride-1 ``conv1`` and no max-pool (total stride 8 instead of 32); ``width`` > 1:
    SimCLR's wider ResNet-50 (:mod:`contrastive.backbones_wide`)."""
    if width != 1:
        from contrastive.backbones_wide import wide_resnet50

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


# ----------------------------------------------------------------------------- small CPU encoder
@BACKBONES.register("small_cnn")
def small_cnn(small_stem: bool = True, width: int = 32) -> nn.Module:
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
    return PooledEncoder(nn.Sequential(OrderedDict(stages)), widths[-1], 8 if small_stem else 32)


# The CIFAR family registers itself on import; imported last because it uses the helpers above.
import contrastive.backbones_cifar  # noqa: E402,F401
import contrastive.backbones_timm  # noqa: E402,F401  (timm itself is imported only when backbone=timm)
