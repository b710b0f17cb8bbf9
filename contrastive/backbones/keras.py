"""The ImCLR paper's Keras networks, rebuilt layer for layer in PyTorch.

ImCLR (Chen, Sinha & Kyrillidis 2020, https://arxiv.org/abs/2011.12618) trains Keras models;
its Appendix Table 10 lists their trainable parameters with one-hot inputs and with ImCLR's
``k*S x S`` inputs. Those counts pin the implementations down (see ``benchmarks/reproduce/imclr/imclr_params.py``,
which reproduces every entry exactly):

* ``resnet20`` / ``resnet56``: the Keras CIFAR-10 example's "ResNet v2" (depth ``9n + 2``, n=2 and
  n=6): a 3x3 conv-BN-ReLU stem with 16 channels, 3 stages of ``n`` pre-activation bottleneck
  blocks (BN-ReLU-conv1x1, BN-ReLU-conv3x3, BN-ReLU-conv1x1) with 16->64, 64->128, 128->256
  channels (the first block of the net skips its pre-activation), 1x1 projection shortcuts on the
  raw block input, final BN-ReLU, ``AveragePooling2D(8)``, ``Flatten``; the classifier (``Dense``)
  is the method's. Every conv has a bias (Keras' default).
* ``vgg16``: the common Keras CIFAR-100 VGG-16 (13 conv3x3 with bias, each followed by ReLU, BN and,
  except before a max-pool, dropout 0.3/0.4; five 2x2 max-pools; dropout 0.5), ``Flatten``,
  ``Dense(512)``-ReLU-BN-dropout 0.5; the method adds the final ``Dense``.

**Heads.** ``head="flatten"`` (these nets' default, as in the paper) average-pools with a fixed
window (Keras ``valid`` pooling: a floor) and flattens, so the feature size grows with the input:
on ImCLR's ``2S x S`` input the map is 2x1 and the top and the bottom image reach *different*
classifier weights; that is why Table 10 has more parameters for ImCLR. ``head="global_pool"``
averages over the whole map instead (features independent of the input size). A flatten head is
sized for one input size: :func:`contrastive.backbones.factory.create_backbone` calls
:meth:`HeadedEncoder.configure_input` with ``image_size x image_size`` and a method with another
input (ImCLR) calls it again with its own. Flattening is in PyTorch's ``(C, H, W)`` order (Keras:
``(H, W, C)``), a fixed permutation of the classifier's weights.

Keras details kept: BatchNorm momentum 0.99 (PyTorch ``momentum=0.01``) and epsilon 1e-3;
``he_normal`` (truncated, fan-in) conv init as the Keras ResNet example, ``glorot_uniform`` (Keras'
default) for the VGG; zero biases. The Keras example's L2 regulariser (1e-4 on the ResNet convs,
5e-4 on the VGG) is the run's ``optimizer.weight_decay`` here (the ImCLR paper does not state it).

References:
    Keras team, "Trains a ResNet on the CIFAR10 dataset" (keras/examples/cifar10_resnet.py, ResNet v2).
    He, Zhang, Ren & Sun, "Identity Mappings in Deep Residual Networks", ECCV 2016 (ResNet v2).
    Y. Geifman, cifar-vgg (Keras VGG-16 for CIFAR-100), https://github.com/geifmany/cifar-vgg.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from contrastive.backbones.base import Encoder
from contrastive.core.errors import ConfigError
from contrastive.core.registry import BACKBONES

HEADS = ("flatten", "global_pool")


def keras_bn(channels: int, dims: int = 2) -> nn.Module:
    """BatchNorm with Keras' defaults (momentum 0.99 of the running mean, epsilon 1e-3)."""
    return (nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d)(channels, eps=1e-3, momentum=0.01)


def keras_conv(in_planes: int, planes: int, kernel: int = 3, stride: int = 1) -> nn.Conv2d:
    """Keras ``Conv2D(padding="same")`` with its default bias. For the odd kernels and the
    stride-2 1x1/3x3 convs used here PyTorch's symmetric padding gives Keras' output size."""
    return nn.Conv2d(in_planes, planes, kernel, stride=stride, padding=kernel // 2, bias=True)


def he_normal_(module: nn.Module) -> None:
    """Keras ``he_normal``: truncated normal (2 std), std sqrt(2 / fan_in) / 0.8796 on every conv/linear."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            std = math.sqrt(2.0 / fan_in) / 0.87962566103423978
            nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def glorot_uniform_(module: nn.Module) -> None:
    """Keras' default ``glorot_uniform`` kernels and zero biases on every conv/linear."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class HeadedEncoder(Encoder):
    """A conv trunk, then a head that turns its ``[B, C, h, w]`` map into ``[B, feature_dim]``.

    Every net built on it here (the Keras nets and :mod:`contrastive.backbones.cifar_resnet`)
    has a 3x3 stride-1 stem without max-pool, so ``small_stem`` is always True.

    Args:
        trunk: The convolutional part.
        channels: ``C``, channels of the trunk's output.
        halvings: Number of stride-2 stages of the trunk.
        rounding: ``"ceil"`` (strided "same" convs) or ``"floor"`` (un-padded 2x2 max-pools):
            how each halving rounds an odd side.
        head: ``"flatten"`` (fixed ``pool`` window, then flatten) or ``"global_pool"``.
        pool: Window of the flatten head's average pooling (1 = flatten the map as it is).
        dense: Width of a ``Linear``-ReLU-BN-dropout block after the head (Keras VGG: 512), or None.
        dense_dropout: Dropout of that block.
    """

    small_stem = True

    def __init__(self, trunk: nn.Module, channels: int, halvings: int, rounding: str = "ceil", head: str = "flatten",
                 pool: int = 8, dense: Optional[int] = None, dense_dropout: float = 0.5) -> None:
        super().__init__()
        if head not in HEADS:
            raise ConfigError(f"backbone head '{head}' is not valid; choose one of {', '.join(HEADS)}")
        if isinstance(pool, bool) or not isinstance(pool, int) or pool < 1:
            raise ConfigError(f"backbone pool must be an integer >= 1, got {pool!r}")
        self.features, self.channels, self.halvings, self.rounding = trunk, int(channels), int(halvings), rounding
        self.head, self.pool = head, int(pool) if head == "flatten" else 1
        self.dense_width, self.dense_dropout = dense, float(dense_dropout)
        self.dense: Optional[nn.Module] = None
        self.min_input_size = 2 ** self.halvings * self.pool
        self.input_hw: Tuple[int, int] = (0, 0)
        self.grid: Tuple[int, int] = (1, 1)
        self.feature_dim = self.channels
        side = max(32, self.min_input_size)
        self.configure_input(side, side)  # create_backbone re-sizes it for the run's images

    def map_size(self, height: int, width: int) -> Tuple[int, int]:
        """Side lengths of the trunk's output map for a ``height x width`` input."""
        def shrink(side: int) -> int:
            for _ in range(self.halvings):
                side = (side + 1) // 2 if self.rounding == "ceil" else side // 2
            return side
        return shrink(int(height)), shrink(int(width))

    def configure_input(self, height: int, width: int) -> None:
        """Size the head for ``height x width`` inputs: sets ``feature_dim`` (and rebuilds the
        dense block when its input size changes). A no-op for ``global_pool`` without ``dense``."""
        h, w = self.map_size(height, width)
        grid = (h // self.pool, w // self.pool) if self.head == "flatten" else (1, 1)
        if min(grid) < 1:
            raise ConfigError(f"backbone (head={self.head}) needs inputs of at least {self.min_input_size}x"
                              f"{self.min_input_size}, got {height}x{width}")
        self.input_hw, self.grid = (int(height), int(width)), grid
        flat = self.channels * grid[0] * grid[1]
        if self.dense_width is None:
            self.feature_dim = flat
            return
        if self.dense is None or self.dense[0].in_features != flat:
            linear = nn.Linear(flat, self.dense_width)
            glorot_uniform_(linear)
            ref = next(self.features.parameters())
            self.dense = nn.Sequential(linear, nn.ReLU(inplace=True), keras_bn(self.dense_width, 1),
                                       nn.Dropout(self.dense_dropout)).to(ref.device).train(self.training)
        self.feature_dim = self.dense_width

    def pooled_map(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> the head's pooled map ``[B, C, gh, gw]`` (``[B, C, 1, 1]`` for global_pool)."""
        f = self.features(x)  # [B, C, h, w]
        if self.head == "global_pool":
            return f.mean(dim=(2, 3), keepdim=True)  # [B, C, 1, 1]
        f = F.avg_pool2d(f, self.pool) if self.pool > 1 else f  # Keras "valid" pooling: floor
        if tuple(f.shape[2:]) != self.grid:
            raise ValueError(f"backbone '{self.name or type(self).__name__}' (head=flatten) is sized for {self.input_hw[0]}x{self.input_hw[1]} inputs "
                             f"(a {self.grid[0]}x{self.grid[1]} pooled map), got {x.shape[2]}x{x.shape[3]}; "
                             "call configure_input(height, width) or use backbone.kwargs.head=global_pool")
        return f  # [B, C, gh, gw]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.pooled_map(x).flatten(1)  # [B, C * gh * gw]
        return self.dense(f) if self.dense is not None else f


# ----------------------------------------------------------------------------- Keras ResNet v2
class BottleneckV2(nn.Module):
    """Keras ResNet v2 block: [BN-ReLU]-conv1x1(stride), BN-ReLU-conv3x3, BN-ReLU-conv1x1, + shortcut.

    Args:
        in_planes: Input channels.
        mid: Bottleneck channels (the stage's ``num_filters_in``).
        planes: Output channels (``num_filters_out``).
        stride: Stride of the first 1x1 conv and of the projection.
        preact: Start with BN-ReLU (False only for the first block of the net, which follows the stem's ReLU).
        project: A 1x1 conv shortcut on the raw input (the first block of every stage).
    """

    def __init__(self, in_planes: int, mid: int, planes: int, stride: int, preact: bool, project: bool) -> None:
        super().__init__()
        self.pre = nn.Sequential(keras_bn(in_planes), nn.ReLU(inplace=False)) if preact else nn.Identity()
        self.conv1 = keras_conv(in_planes, mid, 1, stride)
        self.bn2, self.conv2 = keras_bn(mid), keras_conv(mid, mid, 3)
        self.bn3, self.conv3 = keras_bn(mid), keras_conv(mid, planes, 1)
        self.shortcut = keras_conv(in_planes, planes, 1, stride) if project else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(self.pre(x))
        y = self.conv2(F.relu(self.bn2(y)))
        y = self.conv3(F.relu(self.bn3(y)))
        return (self.shortcut(x) if self.shortcut is not None else x) + y


def keras_resnet_v2(depth: int, head: str = "flatten", pool: int = 8) -> HeadedEncoder:
    """The Keras CIFAR example's ResNet v2 of ``depth = 9n + 2`` (feature map 256 channels, stride 4)."""
    if (depth - 2) % 9:
        raise ConfigError(f"Keras ResNet v2 depth must be 9n+2 (20 is not: use 29, 56, ...), got {depth}")
    n = (depth - 2) // 9
    layers = [("stem", nn.Sequential(keras_conv(3, 16), keras_bn(16), nn.ReLU(inplace=True)))]
    in_planes, mid = 16, 16
    for stage in range(3):
        out = mid * 4 if stage == 0 else mid * 2
        blocks = [BottleneckV2(in_planes if j == 0 else out, mid, out, stride=2 if stage > 0 and j == 0 else 1,
                               preact=not (stage == 0 and j == 0), project=j == 0) for j in range(n)]
        layers.append((f"layer{stage + 1}", nn.Sequential(*blocks)))
        in_planes, mid = out, out
    layers.append(("final", nn.Sequential(keras_bn(in_planes), nn.ReLU(inplace=True))))
    model = HeadedEncoder(nn.Sequential(OrderedDict(layers)), in_planes, 2, "ceil", head, pool)
    he_normal_(model)
    return model


@BACKBONES.register("resnet20")
def resnet20(small_stem: bool = True, head: str = "flatten", pool: int = 8) -> HeadedEncoder:
    """The paper's RN20 (Table 10: 570,602 parameters with a 10-class Dense): Keras ResNet v2, n=2.
    ``head=flatten`` (the paper's): AveragePooling2D(8) + Flatten, 256 features per 32x32 image.
    He et al.'s original ResNet-20 (basic blocks, 16/32/64) is ``resnet20_v1``."""
    return keras_resnet_v2(20, head, pool)


@BACKBONES.register("resnet56")
def resnet56(small_stem: bool = True, head: str = "flatten", pool: int = 8) -> HeadedEncoder:
    """The paper's RN56 (Table 10: 1,865,768 parameters on 64x64 Tiny ImageNet with a 200-class
    Dense): Keras ResNet v2, n=6; flatten head (a 2x2 pooled map at 64x64). He et al.'s: ``resnet56_v1``."""
    return keras_resnet_v2(56, head, pool)


# ----------------------------------------------------------------------------- Keras CIFAR-100 VGG-16
#: (channels or "M" for max-pool, dropout after the conv's ReLU-BN or 0)
_VGG16 = ((64, 0.3), (64, 0), "M", (128, 0.4), (128, 0), "M", (256, 0.4), (256, 0.4), (256, 0), "M",
          (512, 0.4), (512, 0.4), (512, 0), "M", (512, 0.4), (512, 0.4), (512, 0), "M")


@BACKBONES.register("vgg16")
def vgg16(small_stem: bool = True, head: str = "flatten", dropout: bool = True) -> HeadedEncoder:
    """The paper's VGG16 (Table 10: 15,038,116 parameters with a 100-class Dense): Keras CIFAR-100
    VGG-16, conv(bias)-ReLU-BN[-dropout] x13, five max-pools, dropout 0.5, Flatten, Dense(512)-ReLU-
    BN-dropout 0.5; 512-d features. ``head=flatten`` flattens the 1x1 map (2x1 for ImCLR's 64x32
    input, so the Dense(512) doubles its inputs); ``global_pool`` averages it first.

    Args:
        dropout: The Keras net's dropout layers (rates 0.3/0.4/0.5 from geifmany/cifar-vgg; the
            ImCLR paper does not list them); ``False`` removes them (e.g. for fast CPU runs).
    """
    layers, in_planes = [], 3
    for v in _VGG16:
        if v == "M":
            layers.append(nn.MaxPool2d(2, stride=2))
            continue
        planes, p = v
        layers += [keras_conv(in_planes, planes), nn.ReLU(inplace=True), keras_bn(planes)]
        if p and dropout:
            layers.append(nn.Dropout(p))
        in_planes = planes
    if dropout:
        layers.append(nn.Dropout(0.5))
    model = HeadedEncoder(nn.Sequential(*layers), in_planes, 5, "floor", head, 1, dense=512,
                          dense_dropout=0.5 if dropout else 0.0)
    glorot_uniform_(model)
    return model
