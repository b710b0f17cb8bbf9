"""MoCo v1: Momentum Contrast for Unsupervised Visual Representation Learning (He, Fan, Wu,
Xie, Girshick, CVPR 2020, https://arxiv.org/abs/1911.05722).

The same momentum encoder and key queue as :mod:`methods.mocov2` with MoCo v1's choices
(configs/method/mocov1.yaml): a linear 128-d head ("the output of the fc ... is 128-D"),
temperature 0.07, momentum 0.999, a 65,536-key queue, SGD lr 0.03 with weight decay 1e-4, and
its augmentation (random resized crop, colour jitter, grayscale, flip; no blur).
"""

from __future__ import annotations

from contrastive.core.registry import METHODS
from .mocov2 import MoCoV2


@METHODS.register("mocov1")
class MoCoV1(MoCoV2):
    """MoCo v1: :class:`MoCoV2` with a linear head (the difference is all in the YAML)."""
