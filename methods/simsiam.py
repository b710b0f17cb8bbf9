"""SimSiam: Exploring Simple Siamese Representation Learning (Chen & He, CVPR 2021,
https://arxiv.org/abs/2011.10566).

Two views, one shared encoder (backbone + projection MLP), a prediction MLP on one side and a
stop-gradient on the other; no negatives, no momentum encoder. Loss (Eq. 2):
``L = D(p1, sg(z2)) / 2 + D(p2, sg(z1)) / 2`` with ``D`` the negative cosine similarity.
Recipe (configs/method/simsiam.yaml): SGD momentum 0.9, lr 0.05 x batch/256, cosine decay,
projection 3 layers of 2048 with BN, predictor 2048 -> 512 -> 2048 (its Sec. 4 defaults).
"""

from __future__ import annotations

from typing import Dict, List

import torch
from lightly.models.modules import SimSiamPredictionHead, SimSiamProjectionHead

from contrastive.core.registry import METHODS
from contrastive.engine.method import DataInfo, Method, check_batch_size
from contrastive.losses.self_supervised import negative_cosine


@METHODS.register("simsiam")
class SimSiam(Method):
    """SimSiam with lightly's heads."""

    def __init__(self, cfg, data: DataInfo) -> None:
        super().__init__(cfg, data)
        m = cfg.method
        out = int(m.projection.output_dim)
        self.projection_head = SimSiamProjectionHead(self.backbone.feature_dim, int(m.projection.hidden_dim), out)
        self.prediction_head = SimSiamPredictionHead(out, int(m.predictor.hidden_dim), out)

    @classmethod
    def validate_config(cls, cfg, data: DataInfo) -> None:
        check_batch_size(cfg, 2, "BatchNorm in the projector and predictor")

    def training_losses(self, views: List[torch.Tensor], labels, indices) -> Dict[str, torch.Tensor]:
        z = [self.projection_head(self.backbone(v)) for v in views[:2]]  # 2 x [B, d]
        p = [self.prediction_head(zi) for zi in z]  # 2 x [B, d]
        loss = 0.5 * negative_cosine(p[0], z[1].detach()) + 0.5 * negative_cosine(p[1], z[0].detach())
        return {"loss": loss}
