"""BYOL: Bootstrap Your Own Latent (Grill et al., NeurIPS 2020, https://arxiv.org/abs/2006.07733).

An online network (backbone, projector, predictor) predicts the projection of the other view
made by a target network, the exponential moving average of the online backbone and
projector; no negatives. Loss (Eq. 2), symmetrised over the two views:
``2 - 2 cos(q_theta(z_theta), sg(z'_xi))``. Recipe (configs/method/byol.yaml): projector and
predictor MLPs 4096 -> 256, LARS, base lr 0.2 x batch/256, weight decay 1.5e-6, target momentum
from 0.996 to 1 on BYOL's cosine schedule (:func:`contrastive.engine.momentum.cosine_momentum`),
the asymmetric augmentation of its Table 6 (configs/augment/byol.yaml).
"""

from __future__ import annotations

from typing import Dict, List

import torch
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead

from contrastive.core.registry import METHODS
from contrastive.engine.method import DataInfo, check_batch_size
from contrastive.engine.momentum import MomentumMethod
from contrastive.losses.self_supervised import normalized_mse


@METHODS.register("byol")
class BYOL(MomentumMethod):
    """BYOL with lightly's projection and prediction heads and the shared momentum copy."""

    def __init__(self, cfg, data: DataInfo) -> None:
        super().__init__(cfg, data)
        m = cfg.method
        out = int(m.projection.output_dim)
        self.projection_head = BYOLProjectionHead(self.backbone.feature_dim, int(m.projection.hidden_dim), out)
        self.prediction_head = BYOLPredictionHead(out, int(m.predictor.hidden_dim), out)
        self.init_momentum(self.backbone, self.projection_head)

    @classmethod
    def validate_config(cls, cfg, data: DataInfo) -> None:
        super().validate_config(cfg, data)
        check_batch_size(cfg, 2, "BatchNorm in the projector and predictor")

    def training_losses(self, views: List[torch.Tensor], labels, indices) -> Dict[str, torch.Tensor]:
        q = [self.prediction_head(self.projection_head(self.backbone(v))) for v in views[:2]]  # 2 x [B, d]
        with torch.no_grad():
            target_backbone, target_projector = self.momentum[0], self.momentum[1]
            z = [target_projector(target_backbone(v)) for v in views[:2]]  # 2 x [B, d]
        # L + L~ of Eq. 2: each view's prediction regresses the other view's target projection.
        loss = normalized_mse(q[0], z[1]) + normalized_mse(q[1], z[0])
        return {"loss": loss}
