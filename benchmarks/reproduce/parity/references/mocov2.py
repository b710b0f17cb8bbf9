"""MoCo v2 as lightly's benchmark recipe builds it: lightly's MoCoProjectionHead, NTXentLoss with a memory bank.

Follows lightly-ai/lightly ``benchmarks/imagenet/resnet50/mocov2.py``: the query is the second view, the key
the first; the key encoder (a momentum copy of backbone and head) is updated between encoding the queries
and the keys (as facebookresearch/moco ``moco/builder.py``), the keys are encoded under
``batch_shuffle`` / ``batch_unshuffle``, and lightly's ``NTXentLoss(memory_bank_size=(K, d))`` contrasts each
query with its key and the bank (the bank is filled with this batch's keys after the loss); SGD without
decay on biases and norms; cosine schedule per step. Differs from that file by design:

* every value comes from our resolved config (:class:`Settings`) instead of the ImageNet constants:
  temperature (0.2 in both), queue size (ours 1,024 on this budget; the file 65,536), momentum (ours 0.99;
  the file 0.999), head sizes and its BatchNorm (ours on by default), lr (our base x batch/256; the file 0.03
  x batch/256), weight decay, warm-up, and the transform (our ``augment`` section: lightly's SimCLR transform
  at our strengths; the file's MoCoV2Transform differs from it only in its defaults);
* the key head starts as a copy of the query head (as facebookresearch/moco does; the file builds a fresh
  head);
* no online linear classifier; our registry's backbone instead of a ResNet-50.
"""

from __future__ import annotations

import copy
from typing import List

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import MoCoProjectionHead
from lightly.models.utils import batch_shuffle, batch_unshuffle, deactivate_requires_grad, update_momentum
from torch import nn

from benchmarks.reproduce.parity.references import register
from benchmarks.reproduce.parity.references.base import Reference, Settings
from benchmarks.reproduce.parity.references.simclr import simclr_transform


@register("mocov2")
class MoCoV2Reference(Reference):
    RECIPE = "lightly-ai/lightly benchmarks/imagenet/resnet50/mocov2.py"

    def __init__(self, backbone: nn.Module, settings: Settings) -> None:
        super().__init__(backbone, settings)
        m = settings.method
        p = m["projection"]
        if int(p["num_layers"]) < 2:
            raise ValueError("the MoCo v2 reference builds the MLP head (method.projection.num_layers >= 2)")
        self.projection_head = MoCoProjectionHead(settings.feature_dim, int(p["hidden_dim"]), int(p["output_dim"]),
                                                  num_layers=int(p["num_layers"]), batch_norm=bool(p["batch_norm"]))
        self.key_backbone = copy.deepcopy(self.backbone)
        self.key_projection_head = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.key_backbone)
        deactivate_requires_grad(self.key_projection_head)
        self.criterion = NTXentLoss(temperature=float(m["temperature"]),
                                    memory_bank_size=(int(m["queue_size"]), int(p["output_dim"])))
        if m["momentum"]["schedule"] != "constant":
            raise ValueError("the MoCo v2 reference keeps the momentum fixed (method.momentum.schedule=constant)")
        self.momentum = float(m["momentum"]["base"])

    def transform(self):
        return simclr_transform(self.settings)

    @torch.no_grad()
    def keys(self, x: torch.Tensor) -> torch.Tensor:
        """Key projections ``[B, d]`` of the momentum encoder, BN over a shuffled batch."""
        x, shuffle = batch_shuffle(batch=x, distributed=False)
        keys = self.key_projection_head(self.key_backbone(x).flatten(start_dim=1))
        return batch_unshuffle(batch=keys, shuffle=shuffle, distributed=False)

    def training_loss(self, views: List[torch.Tensor], step: int) -> torch.Tensor:
        queries = self.projection_head(self.backbone(views[1]).flatten(start_dim=1))  # [B, d]
        update_momentum(self.backbone, self.key_backbone, m=self.momentum)
        update_momentum(self.projection_head, self.key_projection_head, m=self.momentum)
        return self.criterion(queries, self.keys(views[0]))
