"""BYOL: Bootstrap Your Own Latent (Grill et al., NeurIPS 2020, https://arxiv.org/abs/2006.07733).

An online network (backbone, projector, predictor) predicts the projection of the other view
made by a target network, the exponential moving average of the online backbone and
projector; no negatives. Loss (Eq. 2), symmetrised over the two views:
``2 - 2 cos(q_theta(z_theta), sg(z'_xi))``. The paper's recipe (experiment=byol_imagenet): projector
and predictor MLPs 4096 -> 256, LARS, base lr 0.2 x batch/256, weight decay 1.5e-6, target momentum
from 0.996 to 1 on BYOL's cosine schedule (:func:`contrastive.engine.momentum.cosine_momentum`), the
asymmetric augmentation of its Table 6 (configs/augment/byol.yaml).

The paper's projector ends in a linear layer: "Contrary to SimCLR, the output of this MLP is not
batch normalized". ``method.projection.output_batch_norm=true`` adds a parameter-free BatchNorm after
it (online and target alike), as at the end of SimSiam's projector. The default run on the embedded
32-px data uses it, with lr 2.0 and stronger colour jitter; configs/method/byol.yaml says why.
"""

from __future__ import annotations

from typing import Dict, List

import torch
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
from torch import nn

from contrastive.core.registry import METHODS
from contrastive.engine.method import DataInfo, check_batch_size
from contrastive.engine.momentum import MomentumMethod
from contrastive.losses.self_supervised import normalized_mse


def byol_projector(in_dim: int, hidden_dim: int, out_dim: int, output_batch_norm: bool) -> nn.Module:
    """BYOL's projector ``[B, in_dim] -> [B, out_dim]`` (Linear-BN-ReLU-Linear, lightly's head), optionally
    followed by a BatchNorm without affine parameters (``output_batch_norm``): each output dimension is
    centred and scaled over the batch, as at the end of SimSiam's projector."""
    head = BYOLProjectionHead(in_dim, hidden_dim, out_dim)
    return nn.Sequential(head, nn.BatchNorm1d(out_dim, affine=False)) if output_batch_norm else head


@METHODS.register("byol")
class BYOL(MomentumMethod):
    """BYOL with lightly's projection and prediction heads and the shared momentum copy."""

    def __init__(self, cfg, data: DataInfo) -> None:
        super().__init__(cfg, data)
        m = cfg.method
        out = int(m.projection.output_dim)
        self.projection_head = byol_projector(self.backbone.feature_dim, int(m.projection.hidden_dim), out,
                                              bool(m.projection.output_batch_norm))
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
