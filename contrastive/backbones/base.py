"""The backbone contract (:class:`Encoder`) and the pieces every family shares: conv helpers,
weight init, the pooled encoder and the adapter for a third-party module (:class:`ModuleEncoder`)."""

from __future__ import annotations

from typing import Any, Dict, List

import torch
from torch import nn


class Encoder(nn.Module):
    """Base class of every backbone: float images ``[B, 3, H, W]`` -> features ``[B, feature_dim]``.

    A subclass sets the three facts below in its ``__init__`` (it may also inherit from another
    ``nn.Module`` class, e.g. torchvision's ``ResNet``, whose ``__init__`` runs first:
    :class:`Encoder` defines no ``__init__`` of its own, so it composes in any order);
    :func:`contrastive.backbones.factory.create_backbone` checks them and sets :attr:`name`.

    Attributes:
        feature_dim: ``D``, the width of the output (may change in :meth:`configure_input`).
        min_input_size: The smallest image side it takes: its total downsampling factor, at
            which the last stage sees a 1x1 map (smaller inputs crash in un-padded pooling or
            leave the last stages looking only at padding).
        small_stem: Whether the stem is a 3x3 stride-1 conv without max-pool (CIFAR-sized
            images) rather than the ImageNet stem (7x7 stride 2 and a max-pool).
        name: The registered name it was built under (``""`` until :func:`create_backbone` sets it).
    """

    feature_dim: int = 0
    min_input_size: int = 1
    small_stem: bool = False
    name: str = ""

    def configure_input(self, height: int, width: int) -> None:
        """Size the encoder for ``height x width`` inputs (ImCLR's ``k*S x S``, say).

        Encoders that end in global pooling take any size of at least ``min_input_size`` and
        do nothing here; the flatten heads of :mod:`contrastive.backbones.keras` size their
        head and ``feature_dim``."""

    def label(self) -> str:
        """``'resnet18' (small_stem=True)``: how error messages name this encoder."""
        return f"'{self.name or type(self).__name__}' (small_stem={self.small_stem})"


class ModuleEncoder(Encoder):
    """The documented adapter for a plain ``nn.Module`` (a timm model, a plugin's own net).

    ``module`` must map float ``[B, 3, H, W]`` to ``[B, feature_dim]``. The adapter is
    transparent to checkpoints: its ``state_dict`` has the module's own keys (no ``module.``
    prefix), so weights exported from it load into the bare module and the module's weights
    load into it. A plugin factory returns ``ModuleEncoder(net, feature_dim=...)`` instead of
    ``net`` (:func:`~contrastive.backbones.factory.create_backbone` rejects a plain module).

    Args:
        module: The network.
        feature_dim: Width ``D`` of its output.
        min_input_size: Its total downsampling factor (1 if unknown).
        small_stem: Whether its stem is a 3x3 stride-1 conv without max-pool.
    """

    def __init__(self, module: nn.Module, feature_dim: int, min_input_size: int = 1, small_stem: bool = False) -> None:
        super().__init__()
        self.module = module
        self.feature_dim, self.min_input_size, self.small_stem = int(feature_dim), int(min_input_size), bool(small_stem)
        self.register_state_dict_post_hook(_drop_module_prefix)
        self.register_load_state_dict_pre_hook(_add_module_prefix)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)  # [B, 3, H, W] -> [B, D]


def _drop_module_prefix(module: nn.Module, state_dict: Dict[str, Any], prefix: str, local_metadata: Any) -> None:
    """state_dict post-hook of :class:`ModuleEncoder`: ``<prefix>module.k`` -> ``<prefix>k``."""
    inner = prefix + "module."
    for key in [k for k in state_dict if k.startswith(inner)]:
        state_dict[prefix + key[len(inner):]] = state_dict.pop(key)


def _add_module_prefix(module: nn.Module, state_dict: Dict[str, Any], prefix: str, local_metadata: Any, strict: bool,
                       missing_keys: List[str], unexpected_keys: List[str], error_msgs: List[str]) -> None:
    """load_state_dict pre-hook of :class:`ModuleEncoder`: ``<prefix>k`` -> ``<prefix>module.k``."""
    inner = prefix + "module."
    for key in [k for k in state_dict if k.startswith(prefix) and not k.startswith(inner)]:
        state_dict[inner + key[len(prefix):]] = state_dict.pop(key)


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


class PooledEncoder(Encoder):
    """``features`` followed by global average pooling and flattening.

    Args:
        features: Convolutional trunk (a ``Sequential`` with named stages).
        feature_dim: Channels of the trunk's output.
        min_input_size: Total downsampling factor of the trunk.
        small_stem: Whether the trunk starts with a 3x3 stride-1 stem without max-pool.
    """

    def __init__(self, features: nn.Module, feature_dim: int, min_input_size: int, small_stem: bool) -> None:
        super().__init__()
        self.features = features
        self.feature_dim = int(feature_dim)
        self.min_input_size = int(min_input_size)
        self.small_stem = bool(small_stem)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))  # [B, C, h, w] -> [B, C]
