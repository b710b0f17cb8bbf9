"""SimSiam as lightly's benchmark recipe builds it: lightly's SimSiam heads and NegativeCosineSimilarity.

Follows the SimSiam model of lightly-ai/lightly ``docs/source/getting_started/benchmarks/cifar10_benchmark.py``
(lightly has no ``benchmarks/imagenet/resnet50/simsiam.py``): one encoder for both views, the predictor on
each, loss ``0.5 * (NegCos(p0, z1.detach()) + NegCos(p1, z0.detach()))``, SGD with momentum and a cosine
schedule. Differs from that file by design:

* the projection head is lightly's ``SimSiamProjectionHead`` (three layers with BN, the paper's Sec. 4,
  as our ``method.projection`` builds it), not the file's two-layer CIFAR head;
* every value comes from our resolved config (:class:`Settings`): head and predictor sizes, lr (our base x
  our scaling; the file a fixed 0.06), weight decay (ours 1e-5 without decay on biases and norms; the file
  5e-4 on all), warm-up (ours 1 epoch, per step; the file none, per epoch), and the transform (our
  ``augment``: lightly's SimCLR transform at our strengths);
* no kNN monitor during training; our registry's backbone instead of the file's ResNet-18.
"""

from __future__ import annotations

from typing import List

import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import SimSiamPredictionHead, SimSiamProjectionHead
from torch import nn

from benchmarks.reproduce.parity.references import register
from benchmarks.reproduce.parity.references.base import Reference, Settings
from benchmarks.reproduce.parity.references.simclr import simclr_transform


@register("simsiam")
class SimSiamReference(Reference):
    RECIPE = "lightly-ai/lightly docs/source/getting_started/benchmarks/cifar10_benchmark.py (SimSiamModel)"

    def __init__(self, backbone: nn.Module, settings: Settings) -> None:
        super().__init__(backbone, settings)
        m = settings.method
        out = int(m["projection"]["output_dim"])
        self.projection_head = SimSiamProjectionHead(settings.feature_dim, int(m["projection"]["hidden_dim"]), out)
        self.prediction_head = SimSiamPredictionHead(out, int(m["predictor"]["hidden_dim"]), out)
        self.criterion = NegativeCosineSimilarity()

    def transform(self):
        return simclr_transform(self.settings)

    def training_loss(self, views: List[torch.Tensor], step: int) -> torch.Tensor:
        z0, z1 = (self.projection_head(self.backbone(v).flatten(start_dim=1)) for v in views)
        p0, p1 = self.prediction_head(z0), self.prediction_head(z1)
        return 0.5 * (self.criterion(z0.detach(), p1) + self.criterion(z1.detach(), p0))
