"""CIFAR-style backbones used in the ImCLR paper.

ImCLR (Chen, Sinha & Kyrillidis, "ImCLR: Implicit Contrastive Learning for Image
Classification", 2020) evaluates these small-image architectures. All have a 3x3
stride-1 stem without max-pool (they ignore ``small_stem`` and report
``small_stem=True``) and end in global average pooling, so non-square inputs such as
ImCLR's 64x32 height-concatenated image pairs work.

===================  ========================================  ===========  ====================
name                 architecture                              feature_dim  parameters (no head)
===================  ========================================  ===========  ====================
``resnet20``         He et al. 2016a, n=3, option-A shortcuts  64           0.269M (269,072)
``resnet56``         He et al. 2016a, n=9, option-A shortcuts  64           0.852M (852,368)
``preact_resnet18``  He et al. 2016b, Kuang Liu's layout       512          11.17M (11,166,016)
``vgg16``            Simonyan & Zisserman 2015, BN, CIFAR      512          14.72M (14,718,912)
``wrn_16_8``         Zagoruyko & Komodakis 2016                512          10.96M (10,956,240)
``wrn_28_2``         Zagoruyko & Komodakis 2016                128          1.466M (1,466,320)
``seresnet18``       Hu et al. 2018, ResNet-18 CIFAR layout    512          11.26M (11,257,912)
===================  ========================================  ===========  ====================

The counts are measured with :func:`contrastive.backbones.count_parameters` and
match the published ones (0.27M, 0.85M, 11.2M, 14.7M, 11.0M, 1.5M) less the
classifier. ``vgg16`` has no conv biases (a BatchNorm follows each conv), which saves
4,224 parameters against Kuang Liu's version.

References:
    He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition", CVPR 2016 (2016a).
    He, Zhang, Ren & Sun, "Identity Mappings in Deep Residual Networks", ECCV 2016 (2016b).
    Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016.
    Hu, Shen & Sun, "Squeeze-and-Excitation Networks", CVPR 2018.
    Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition", ICLR 2015.
    Kuang Liu, pytorch-cifar, https://github.com/kuangliu/pytorch-cifar (CIFAR layouts).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence, Type

import torch
import torch.nn.functional as F
from torch import nn

from contrastive.backbones import PooledEncoder, conv1x1, conv3x3, conv_bn_relu
from contrastive.registry import BACKBONES


# ----------------------------------------------------------------------------- building blocks
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
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "B", se_reduction: int = 0) -> None:
        super().__init__()
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
        self.conv1, self.bn1 = conv3x3(in_planes, planes, stride), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = conv3x3(planes, planes), nn.BatchNorm2d(planes)
        self.se = SqueezeExcite(planes, se_reduction) if se_reduction else nn.Identity()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = (
                ZeroPadShortcut(stride, planes - in_planes)
                if shortcut == "A"
                else nn.Sequential(conv1x1(in_planes, planes, stride), nn.BatchNorm2d(planes))
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
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(in_planes), conv3x3(in_planes, planes, stride)
        self.bn2, self.conv2 = nn.BatchNorm2d(planes), conv3x3(planes, planes)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.shortcut = conv1x1(in_planes, planes, stride) if stride != 1 or in_planes != planes else None

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
        **block_kwargs: Passed to every block.
    """
    layers = [("stem", conv_bn_relu(3, stem_width) if post_act_stem else conv3x3(3, stem_width))]
    in_planes = stem_width
    for i, (width, depth) in enumerate(zip(widths, depths)):
        blocks = []
        for j in range(depth):
            blocks.append(block(in_planes, width, stride=2 if i > 0 and j == 0 else 1, **block_kwargs))
            in_planes = width
        layers.append((f"layer{i + 1}", nn.Sequential(*blocks)))
    if final_act:
        layers.append(("final", nn.Sequential(nn.BatchNorm2d(in_planes), nn.ReLU(inplace=True))))
    model = PooledEncoder(nn.Sequential(OrderedDict(layers)), in_planes, 2 ** (len(widths) - 1))
    model.small_stem = True
    return model


# ----------------------------------------------------------------------------- registered nets
@BACKBONES.register("resnet20")
def resnet20(small_stem: bool = True, shortcut: str = "A") -> nn.Module:
    """ResNet-20 for CIFAR (He et al. 2016a, Sec. 4.2): 3 stages of 3 basic blocks, 16/32/64
    channels, option-A (zero-padding) shortcuts as in the paper; 64-d features, 0.27M params."""
    return residual_net(BasicBlock, (16, 32, 64), (3, 3, 3), 16, True, False, shortcut=shortcut)


@BACKBONES.register("resnet56")
def resnet56(small_stem: bool = True, shortcut: str = "A") -> nn.Module:
    """ResNet-56 for CIFAR (He et al. 2016a): as :func:`resnet20` with 9 blocks per stage; 0.85M params."""
    return residual_net(BasicBlock, (16, 32, 64), (9, 9, 9), 16, True, False, shortcut=shortcut)


@BACKBONES.register("preact_resnet18")
def preact_resnet18(small_stem: bool = True, final_act: bool = False) -> nn.Module:
    """Pre-activation ResNet-18 (He et al. 2016b) in Kuang Liu's CIFAR layout: 3x3 conv stem
    (no BN), 4 stages of 2 pre-activation blocks, 64-512 channels; 512-d features, 11.2M params.

    Args:
        final_act: Add BN-ReLU after the last block, as He et al. 2016b do; Kuang
            Liu's layout (the default) pools the raw residual sum.
    """
    return residual_net(PreActBlock, (64, 128, 256, 512), (2, 2, 2, 2), 64, False, final_act)


@BACKBONES.register("seresnet18")
def seresnet18(small_stem: bool = True, reduction: int = 16) -> nn.Module:
    """SE-ResNet-18 (Hu et al. 2018): the CIFAR ResNet-18 layout (3x3 conv-BN-ReLU stem,
    4 stages of 2 basic blocks, 64-512 channels, option-B shortcuts) with a
    squeeze-and-excitation gate in every block; 512-d features, 11.3M params."""
    return residual_net(BasicBlock, (64, 128, 256, 512), (2, 2, 2, 2), 64, True, False, se_reduction=reduction)


def wide_resnet(depth: int, width: int, dropout: float = 0.0) -> PooledEncoder:
    """Wide ResNet WRN-``depth``-``width`` (Zagoruyko & Komodakis 2016): 3x3 conv stem with 16
    channels, 3 stages of ``(depth - 4) / 6`` pre-activation blocks with 16k/32k/64k
    channels, final BN-ReLU; ``feature_dim = 64 * width``."""
    if (depth - 4) % 6:
        raise ValueError(f"Wide ResNet depth must be 6n+4, got {depth}")
    n = (depth - 4) // 6
    return residual_net(PreActBlock, (16 * width, 32 * width, 64 * width), (n, n, n), 16, False, True, dropout=dropout)


@BACKBONES.register("wrn_16_8")
def wrn_16_8(small_stem: bool = True, dropout: float = 0.0) -> nn.Module:
    """WRN-16-8: 2 blocks per stage, 128/256/512 channels; 512-d features, 11.0M params."""
    return wide_resnet(16, 8, dropout)


@BACKBONES.register("wrn_28_2")
def wrn_28_2(small_stem: bool = True, dropout: float = 0.0) -> nn.Module:
    """WRN-28-2: 4 blocks per stage, 32/64/128 channels; 128-d features, 1.5M params."""
    return wide_resnet(28, 2, dropout)


_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


@BACKBONES.register("vgg16")
def vgg16(small_stem: bool = True) -> nn.Module:
    """VGG-16 with BatchNorm for CIFAR (Simonyan & Zisserman 2015; Kuang Liu's layout):
    13 conv3x3-BN-ReLU layers, five 2x2 max-pools, no classifier; 512-d features,
    14.7M params. The un-padded max-pools need inputs of at least 32x32."""
    layers, in_planes = [], 3
    for v in _VGG16:
        if v == "M":
            layers.append(nn.MaxPool2d(2, stride=2))
        else:
            layers.append(conv_bn_relu(in_planes, v))
            in_planes = v
    model = PooledEncoder(nn.Sequential(*layers), in_planes, 32)
    model.small_stem = True
    return model
