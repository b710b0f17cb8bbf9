"""NNCLR as lightly's benchmark recipe builds it, with our values.

Follows lightly-ai/lightly ``docs/source/getting_started/benchmarks/cifar10_benchmark.py`` (``NNCLRModel``:
projector, predictor, the detached projections swapped for their nearest neighbours in
``NNMemoryBankModule`` - the first view's without, the second view's with an update of the bank - and
``0.5 * (NTXentLoss(nn0, p1) + NTXentLoss(nn1, p0))``) and ``examples/pytorch/nnclr.py`` (the same with
lightly's ``NNCLRProjectionHead``, ``NNCLRPredictionHead`` and ``SimCLRTransform``); lightly has no
ImageNet NNCLR benchmark. From :class:`Settings`: the projector's hidden and output widths
(``method.projection``), the predictor's hidden width (``method.predictor.hidden_dim``), the temperature,
the support set's size (``method.support_size``: the memory bank's rows) and the augmentation (crop scale,
colour jitter, grayscale, blur).
Where it differs from lightly's files by design:
- with ``augment.per_view`` set (BYOL's per-view blur and solarisation, the paper's augmentation,
  experiment=nnclr_*) the views come from lightly's ``BYOLTransform`` (``SimCLRTransform`` has one
  setting for both views and no solarisation);
- the projector is lightly's 3-layer ``NNCLRProjectionHead`` (the paper's and ours; the CIFAR-10 file
  uses 2 layers): a shared value;
- no online linear classifier; optimizer, lr and schedule come from ``parity.py`` and :class:`Settings`
  (the CIFAR-10 file's SGD 0.06 and weight decay 5e-4 are not used).
Left as lightly has it (and unlike ours): ``NTXentLoss`` makes the neighbours and the predictions both
anchors with ``2n - 1`` logits each, and the bank is filled from the second view's projections.
"""

from __future__ import annotations

from typing import Any, Callable, List, Tuple

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import NNCLRPredictionHead, NNCLRProjectionHead, NNMemoryBankModule
from lightly.transforms import SimCLRTransform
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


@register("nnclr")
class NNCLRReference(LightlyReference):
    """Backbone -> projector ``z`` -> predictor ``p``; nearest neighbours of ``z`` in a memory bank; NT-Xent."""

    RECIPE = "lightly-ai/lightly docs/source/getting_started/benchmarks/cifar10_benchmark.py (NNCLRModel)"

    def __init__(self, backbone: nn.Module, settings: Settings) -> None:
        super().__init__(backbone, settings)
        m = settings.method
        out = int(m["projection"]["output_dim"])
        self.projection_head = NNCLRProjectionHead(settings.feature_dim, int(m["projection"]["hidden_dim"]), out)
        self.prediction_head = NNCLRPredictionHead(out, int(m["predictor"]["hidden_dim"]), out)
        self.memory_bank = NNMemoryBankModule(size=(int(m["support_size"]), out))
        self.criterion = NTXentLoss(temperature=float(m["temperature"]))

    def transform(self) -> Callable[[Any], List[torch.Tensor]]:
        s = self.settings
        if per_view(s) is not None:
            return byol_transform(s)
        require(s, "SimCLRTransform", max_scale=1.0, solarize_prob=0.0)
        return SimCLRTransform(input_size=s.image_size, min_scale=float(s.augment["min_scale"]),
                               gaussian_blur=float(s.augment["blur_prob"]), **view_kwargs(s))

    def embed(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``[B, 3, H, W]`` -> (detached projections ``z`` ``[B, d]``, predictions ``p`` ``[B, d]``)."""
        z = self.projection_head(self.backbone(images).flatten(start_dim=1))
        return z.detach(), self.prediction_head(z)

    def training_loss(self, views: List[torch.Tensor], step: int) -> torch.Tensor:
        z0, p0 = self.embed(views[0])
        z1, p1 = self.embed(views[1])
        nn0 = self.memory_bank(z0, update=False)
        nn1 = self.memory_bank(z1, update=True)
        return 0.5 * (self.criterion(nn0, p1) + self.criterion(nn1, p0))
