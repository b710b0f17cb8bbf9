"""Barlow Twins as lightly's benchmark recipe builds it, with our values.

Follows lightly-ai/lightly ``benchmarks/imagenet/resnet50/barlowtwins.py`` (``BarlowTwinsProjectionHead``,
``BarlowTwinsLoss``, ``BYOLTransform``, weight decay off for biases and norms, the biases' and norms' own lr)
and ``docs/source/getting_started/benchmarks/cifar10_benchmark.py`` (``BarlowTwinsModel``).
From :class:`Settings`: the projector's hidden and output widths (``method.projection``), lambda
(``method.lambda_offdiag``), the augmentation (crop scale, colour jitter, grayscale, blur, solarisation;
per view when ``augment.per_view`` is set, as BYOL's two views) and the biases' lr ratio
(``optimizer.bias_norm_lr_ratio``; lightly's 0.0048 / 0.2).
Where it differs from lightly's files by design:
- the projector is lightly's 3-layer ``BarlowTwinsProjectionHead`` (the ImageNet file's, the paper's),
  not the CIFAR-10 file's 2-layer head: the head is a shared value;
- each view passes the backbone alone, as in the CIFAR-10 file (the ImageNet file concatenates the two
  views into one batch, so its BatchNorm statistics span both);
- no online linear classifier (``parity.py`` evaluates the frozen backbone afterwards);
- optimizer, lr and schedule come from ``parity.py`` and :class:`Settings`, not the files' LARS 0.2
  (ImageNet) or SGD 0.06 (CIFAR-10).
"""

from __future__ import annotations

from typing import Any, Callable, List

import torch
from lightly.loss import BarlowTwinsLoss
from lightly.models.modules import BarlowTwinsProjectionHead
from torch import nn

from benchmarks.reproduce.parity.references import register
from benchmarks.reproduce.parity.references._lightly_common import LightlyReference, byol_transform
from benchmarks.reproduce.parity.references.base import Settings


@register("barlowtwins")
class BarlowTwinsReference(LightlyReference):
    """Backbone -> ``BarlowTwinsProjectionHead`` -> ``BarlowTwinsLoss`` on the two views."""

    RECIPE = "lightly-ai/lightly benchmarks/imagenet/resnet50/barlowtwins.py"

    def __init__(self, backbone: nn.Module, settings: Settings) -> None:
        super().__init__(backbone, settings)
        m = settings.method
        self.projection_head = BarlowTwinsProjectionHead(settings.feature_dim, int(m["projection"]["hidden_dim"]),
                                                         int(m["projection"]["output_dim"]))
        self.criterion = BarlowTwinsLoss(lambda_param=float(m["lambda_offdiag"]))

    def transform(self) -> Callable[[Any], List[torch.Tensor]]:
        return byol_transform(self.settings)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> the projector's output ``[B, output_dim]``."""
        return self.projection_head(self.backbone(images).flatten(start_dim=1))

    def training_loss(self, views: List[torch.Tensor], step: int) -> torch.Tensor:
        return self.criterion(self.embed(views[0]), self.embed(views[1]))
