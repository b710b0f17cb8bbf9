"""CIFAR-style backbones used in the ImCLR paper (and He et al.'s original CIFAR ResNets).

ImCLR (Chen, Sinha & Kyrillidis, "ImCLR: Implicit Contrastive Learning for Image
Classification", 2020) trains Keras models; Appendix Table 10 gives their trainable parameters,
which these nets reproduce exactly with the method's linear classifier (``benchmarks/reproduce/imclr/imclr_params.py``).
All have a 3x3 stride-1 stem without max-pool (``small_stem=auto`` or ``true``; an explicit
``false`` is an error). ``resnet20``,
``resnet56`` and ``vgg16`` are the Keras nets of :mod:`contrastive.backbones.keras`. Every net
here takes ``head=flatten|global_pool`` (see :class:`~contrastive.backbones.keras.HeadedEncoder`);
the default is what the paper's count implies.

===================  ===============================================  =======  ====================  ============
name                 architecture                                     head     features (32x32 in)   Table 10
===================  ===============================================  =======  ====================  ============
``resnet20``         Keras ResNet v2, n=2 (backbones.keras)           flatten  256                   RN20
``resnet56``         Keras ResNet v2, n=6 (backbones.keras)           flatten  256 (1,024 at 64x64)  RN56
``vgg16``            Keras CIFAR-100 VGG-16 (backbones.keras)         flatten  512 (Dense-512)       VGG16
``preact_resnet18``  He et al. 2016b, conv biases, conv-BN-ReLU stem  global   512                   PRN18
``seresnet18``       Hu et al. 2018, ResNet-18 layout, conv biases    global   512                   SRN18
``wrn_16_8``         Zagoruyko & Komodakis 2016, avg-pool 8, Flatten  flatten  512 (4,608 at 96x96)  WRN-STL10
``wrn_28_2``         Zagoruyko & Komodakis 2016 (Oliver et al. 2018)  global   128                   WRN-SSL
``resnet20_v1``      He et al. 2016a, n=3, option-A shortcuts         global   64 (269,072 params)   -
``resnet56_v1``      He et al. 2016a, n=9, option-A shortcuts         global   64 (852,368 params)   -
===================  ===============================================  =======  ====================  ============

Why biases: Keras convolutions have one by default; with them PRN18 and SRN18 match Table 10
(bias-free PyTorch versions are 4,928 and 4,800 parameters short). PRN18's count also needs a
BatchNorm after the stem conv (conv-BN-ReLU stem, then Kuang Liu's pre-activation blocks, which
pool the last residual sum). WRN-16-8 and WRN-28-2 have no conv biases (their counts match
without). ``resnet20_v1`` / ``resnet56_v1`` are He et al.'s original CIFAR nets (global pooling,
0.27M / 0.85M parameters as published), kept for comparison; they are not the paper's.

References:
    He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition", CVPR 2016 (2016a).
    He, Zhang, Ren & Sun, "Identity Mappings in Deep Residual Networks", ECCV 2016 (2016b).
    Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016.
    Hu, Shen & Sun, "Squeeze-and-Excitation Networks", CVPR 2018.
    Oliver et al., "Realistic Evaluation of Deep Semi-Supervised Learning Algorithms", NeurIPS 2018.
    Kuang Liu, pytorch-cifar, https://github.com/kuangliu/pytorch-cifar (CIFAR layouts).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence, Type

import torch
import torch.nn.functional as F
from torch import nn

from contrastive.backbones.base import Encoder, PooledEncoder
from contrastive.backbones.keras import HeadedEncoder
from contrastive.core.registry import BACKBONES


# ----------------------------------------------------------------------------- building blocks
def _conv(in_planes: int, planes: int, kernel: int = 3, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    """``kernel`` x ``kernel`` conv with "same" padding; ``bias`` as Keras' default (True) or not."""
    return nn.Conv2d(in_planes, planes, kernel, stride=stride, padding=kernel // 2, bias=bias)


class ZeroPadShortcut(nn.Module):
    """Parameter-free "option A" shortcut (He et al. 2016a, Sec. 4.2): subsample by
    ``stride`` and append zero channels."""

    def __init__(self, stride: int, extra_channels: int) -> None:
        super().__init__()
        self.stride, self.extra_channels = stride, extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018): channel gates from pooled features.

    Args:
        channels: Channels of the gated tensor.
        reduction: Bottleneck ratio of the gating MLP.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True)))))
        return x * gate


class BasicBlock(nn.Module):
    """Post-activation residual block (He et al. 2016a): conv-BN-ReLU-conv-BN [-SE], add, ReLU.

    Args:
        in_planes: Input channels.
        planes: Output channels.
        stride: Stride of the first conv (and the shortcut).
        shortcut: When the shape changes: ``"A"`` zero-padded identity (parameter-free,
            He et al.'s CIFAR nets) or ``"B"`` 1x1 conv-BN projection (ResNet-18 layout).
        se_reduction: Squeeze-and-excitation ratio before the addition; 0 for none.
        bias: Conv biases (Keras' default).
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "B", se_reduction: int = 0,
                 bias: bool = False) -> None:
        super().__init__()
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
        self.conv1, self.bn1 = _conv(in_planes, planes, 3, stride, bias), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = _conv(planes, planes, 3, 1, bias), nn.BatchNorm2d(planes)
        self.se = SqueezeExcite(planes, se_reduction) if se_reduction else nn.Identity()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = (
                ZeroPadShortcut(stride, planes - in_planes)
                if shortcut == "A"
                else nn.Sequential(_conv(in_planes, planes, 1, stride, bias), nn.BatchNorm2d(planes))
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.se(self.bn2(self.conv2(out)))
        return F.relu(out + self.shortcut(x), inplace=True)


class PreActBlock(nn.Module):
    """Pre-activation residual block (He et al. 2016b): BN-ReLU-conv-BN-ReLU-[dropout]-conv, add.

    With ``dropout`` this is the wide-dropout block of Wide ResNets. When the shape
    changes, the shortcut is a 1x1 conv of the pre-activated input (as in both
    Kuang Liu's PreActResNet and the reference WRN code).

    Args:
        in_planes: Input channels.
        planes: Output channels.
        stride: Stride of the first conv (and the shortcut).
        dropout: Dropout probability between the two convs.
        bias: Conv biases (Keras' default).
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1, dropout: float = 0.0, bias: bool = False) -> None:
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(in_planes), _conv(in_planes, planes, 3, stride, bias)
        self.bn2, self.conv2 = nn.BatchNorm2d(planes), _conv(planes, planes, 3, 1, bias)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.shortcut = _conv(in_planes, planes, 1, stride, bias) if stride != 1 or in_planes != planes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(self.dropout(F.relu(self.bn2(out), inplace=True)))
        return out + shortcut


def residual_net(
    block: Type[nn.Module],
    widths: Sequence[int],
    depths: Sequence[int],
    stem_width: int,
    post_act_stem: bool,
    final_act: bool,
    stem_bias: bool = False,
    **block_kwargs,
) -> PooledEncoder:
    """A CIFAR residual network: 3x3 stride-1 stem, stages of blocks, optional BN-ReLU, pooling.

    Args:
        block: :class:`BasicBlock` or :class:`PreActBlock`.
        widths: Channels of each stage; every stage after the first starts with stride 2.
        depths: Blocks per stage.
        stem_width: Channels of the stem conv.
        post_act_stem: Follow the stem conv with BN-ReLU (post-activation nets).
        final_act: End with BN-ReLU (pre-activation nets, whose blocks end in a sum).
        stem_bias: A bias on the stem conv.
        **block_kwargs: Passed to every block.
    """
    stem = _conv(3, stem_width, 3, 1, stem_bias)
    layers = [("stem", nn.Sequential(stem, nn.BatchNorm2d(stem_width), nn.ReLU(inplace=True)) if post_act_stem else stem)]
    in_planes = stem_width
    for i, (width, depth) in enumerate(zip(widths, depths)):
        blocks = []
        for j in range(depth):
            blocks.append(block(in_planes, width, stride=2 if i > 0 and j == 0 else 1, **block_kwargs))
            in_planes = width
        layers.append((f"layer{i + 1}", nn.Sequential(*blocks)))
    if final_act:
        layers.append(("final", nn.Sequential(nn.BatchNorm2d(in_planes), nn.ReLU(inplace=True))))
    return PooledEncoder(nn.Sequential(OrderedDict(layers)), in_planes, 2 ** (len(widths) - 1), small_stem=True)


# ----------------------------------------------------------------------------- registered nets
def with_head(model: PooledEncoder, head: str, pool: int) -> HeadedEncoder:
    """The trunk of a :func:`residual_net` (already initialised) with a ``flatten``/``global_pool`` head."""
    halvings = model.min_input_size.bit_length() - 1  # min_input_size = 2 ** (stride-2 stages)
    return HeadedEncoder(model.features, model.feature_dim, halvings, "ceil", head, pool)


@BACKBONES.register("resnet20_v1")
def resnet20_v1(small_stem: bool = True, shortcut: str = "A") -> Encoder:
    """He et al.'s ResNet-20 for CIFAR (2016a, Sec. 4.2): 3 stages of 3 basic blocks, 16/32/64
    channels, option-A (zero-padding) shortcuts, global pooling; 64-d features, 0.27M params.
    Not the ImCLR paper's RN20 (that is ``resnet20``, Keras ResNet v2)."""
    return residual_net(BasicBlock, (16, 32, 64), (3, 3, 3), 16, True, False, shortcut=shortcut)


@BACKBONES.register("resnet56_v1")
def resnet56_v1(small_stem: bool = True, shortcut: str = "A") -> Encoder:
    """He et al.'s ResNet-56 (2016a): as :func:`resnet20_v1` with 9 blocks per stage; 0.85M params."""
    return residual_net(BasicBlock, (16, 32, 64), (9, 9, 9), 16, True, False, shortcut=shortcut)


@BACKBONES.register("preact_resnet18")
def preact_resnet18(small_stem: bool = True, final_act: bool = False, bias: bool = True,
                    head: str = "global_pool", pool: int = 4) -> Encoder:
    """The paper's PRN18 (Table 10: 11,222,244 parameters with a 100-class Dense, equal for ImCLR,
    so a global-pool head): pre-activation ResNet-18 (He et al. 2016b) in Kuang Liu's CIFAR layout,
    4 stages of 2 pre-activation blocks, 64-512 channels, with a conv-BN-ReLU stem and Keras' conv
    biases; 512-d features.

    Args:
        final_act: Add BN-ReLU after the last block, as He et al. 2016b do (not in the paper's count).
        bias: Conv biases (``False``: the bias-free PyTorch layout, with a bias-free plain conv stem).
        head, pool: ``global_pool`` (the paper's) or ``flatten`` after a ``pool`` x ``pool`` average.
    """
    net = residual_net(PreActBlock, (64, 128, 256, 512), (2, 2, 2, 2), 64, bias, final_act, stem_bias=bias, bias=bias)
    return with_head(net, head, pool)


@BACKBONES.register("seresnet18")
def seresnet18(small_stem: bool = True, reduction: int = 16, bias: bool = True,
               head: str = "global_pool", pool: int = 4) -> Encoder:
    """The paper's SRN18 (Table 10: 11,267,842 parameters with a 10-class Dense, equal for ImCLR):
    SE-ResNet-18 (Hu et al. 2018), the CIFAR ResNet-18 layout (3x3 conv-BN-ReLU stem, 4 stages of 2
    basic blocks, 64-512 channels, option-B shortcuts) with a squeeze-and-excitation gate in every
    block and Keras' conv biases; 512-d features."""
    net = residual_net(BasicBlock, (64, 128, 256, 512), (2, 2, 2, 2), 64, True, False, stem_bias=bias,
                       se_reduction=reduction, bias=bias)
    return with_head(net, head, pool)


def wide_resnet(depth: int, width: int, dropout: float = 0.0) -> PooledEncoder:
    """Wide ResNet WRN-``depth``-``width`` (Zagoruyko & Komodakis 2016): 3x3 conv stem with 16
    channels, 3 stages of ``(depth - 4) / 6`` pre-activation blocks with 16k/32k/64k
    channels, final BN-ReLU; ``64 * width`` channels at stride 4."""
    if (depth - 4) % 6:
        raise ValueError(f"Wide ResNet depth must be 6n+4, got {depth}")
    n = (depth - 4) // 6
    return residual_net(PreActBlock, (16 * width, 32 * width, 64 * width), (n, n, n), 16, False, True, dropout=dropout)


@BACKBONES.register("wrn_16_8")
def wrn_16_8(small_stem: bool = True, dropout: float = 0.0, head: str = "flatten", pool: int = 8) -> Encoder:
    """The paper's WRN-STL10 (Table 10: 11,002,330 parameters on 96x96 STL-10 with a 10-class Dense,
    11,048,410 with ImCLR): WRN-16-8, 2 blocks per stage, 128/256/512 channels, then average pooling
    of 8 and Flatten (a 3x3 map of 512 at 96x96: 4,608 features; 6x3 on ImCLR's 192x96)."""
    return with_head(wide_resnet(16, 8, dropout), head, pool)


@BACKBONES.register("wrn_28_2")
def wrn_28_2(small_stem: bool = True, dropout: float = 0.0, head: str = "global_pool", pool: int = 8) -> Encoder:
    """The paper's WRN-CIFAR10-SSL (Table 10: 1,467,610 parameters with a 10-class Dense, equal for
    ImCLR: global pooling): WRN-28-2 as in Oliver et al. 2018, 4 blocks per stage, 32/64/128
    channels; 128-d features."""
    return with_head(wide_resnet(28, 2, dropout), head, pool)
