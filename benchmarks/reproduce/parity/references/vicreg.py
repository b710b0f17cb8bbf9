"""VICReg as lightly's benchmark recipe builds it, with our values.

Follows lightly-ai/lightly ``benchmarks/imagenet/resnet50/vicreg.py`` (``VICRegProjectionHead``,
``VICRegLoss``, ``VICRegTransform``, weight decay off for biases and norms); lightly's CIFAR-10 benchmark
has no VICReg. From :class:`Settings`: the expander's hidden and output widths (``method.projection``),
lambda, mu and nu (``method.invariance_weight``, ``variance_weight``, ``covariance_weight``) and the
augmentation (crop scale, colour jitter, grayscale, blur, solarisation).
Where it differs from lightly's file by design:
- the expander has 3 layers (``VICRegProjectionHead(num_layers=3)``, the paper's and ours), not the
  file's ``num_layers=2``: the head is a shared value;
- with ``augment.per_view`` set (BYOL's per-view blur and solarisation, experiment=vicreg_imagenet) the
  views come from lightly's ``BYOLTransform`` (``VICRegTransform`` has one setting for both views);
- each view passes the backbone alone (the file concatenates the two views into one batch, so its
  BatchNorm statistics span both);
- no online linear classifier; optimizer, lr and schedule come from ``parity.py`` and :class:`Settings`
  (the file's LARS with base lr 0.5 at batch 256 and a final lr of 0.01 x peak are not used).
"""

from __future__ import annotations

from typing import Any, Callable, List

import torch
from lightly.loss import VICRegLoss
from lightly.models.modules.heads import VICRegProjectionHead
from lightly.transforms import VICRegTransform
from torch import nn

from benchmarks.reproduce.parity.references import register
from benchmarks.reproduce.parity.references._lightly_common import (
    LightlyReference,
    byol_transform,
    per_view,
    require,
    view_kwargs,
)
from benchmarks.reproduce.parity.references.base import Settings


@register("vicreg")
class VICRegReference(LightlyReference):
    """Backbone -> 3-layer ``VICRegProjectionHead`` -> ``VICRegLoss`` on the two views."""

    RECIPE = "lightly-ai/lightly benchmarks/imagenet/resnet50/vicreg.py"

    def __init__(self, backbone: nn.Module, settings: Settings) -> None:
        super().__init__(backbone, settings)
        m = settings.method
        self.projection_head = VICRegProjectionHead(settings.feature_dim, int(m["projection"]["hidden_dim"]),
                                                    int(m["projection"]["output_dim"]), num_layers=3)
        self.criterion = VICRegLoss(lambda_param=float(m["invariance_weight"]), mu_param=float(m["variance_weight"]),
                                    nu_param=float(m["covariance_weight"]))

    def transform(self) -> Callable[[Any], List[torch.Tensor]]:
        s = self.settings
        if per_view(s) is not None:
            return byol_transform(s)
        require(s, "VICRegTransform", max_scale=1.0)
        return VICRegTransform(input_size=s.image_size, min_scale=float(s.augment["min_scale"]),
                               gaussian_blur=float(s.augment["blur_prob"]),
                               solarize_prob=float(s.augment["solarize_prob"]), **view_kwargs(s))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> the expander's output ``[B, output_dim]``."""
        return self.projection_head(self.backbone(images).flatten(start_dim=1))

    def training_loss(self, views: List[torch.Tensor], step: int) -> torch.Tensor:
        return self.criterion(self.embed(views[0]), self.embed(views[1]))
