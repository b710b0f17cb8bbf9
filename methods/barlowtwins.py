"""Barlow Twins: Self-Supervised Learning via Redundancy Reduction (Zbontar, Jing, Misra, LeCun,
Deny, ICML 2021, https://arxiv.org/abs/2103.03230).

The cross-correlation matrix of the two views' batch-normalised embeddings is pushed to the
identity: ``L = sum_i (1 - C_ii)^2 + lambda sum_i sum_{j != i} C_ij^2`` (Eq. 1), lightly's
``BarlowTwinsLoss``. Recipe (configs/method/barlowtwins.yaml): a 3-layer projector (8192 units
in the paper), lambda 5e-3, LARS.
"""

from __future__ import annotations

from typing import Dict, List

import torch
from lightly.loss import BarlowTwinsLoss
from lightly.models.modules import BarlowTwinsProjectionHead

from contrastive.core.errors import ConfigError
from contrastive.core.registry import METHODS
from contrastive.engine.method import DataInfo, Method, check_batch_size
from contrastive.losses.precision import float32


@METHODS.register("barlowtwins")
class BarlowTwins(Method):
    """Barlow Twins with lightly's projector and loss (gathered over processes under DDP)."""

    def __init__(self, cfg, data: DataInfo) -> None:
        super().__init__(cfg, data)
        m = cfg.method
        self.projection_head = BarlowTwinsProjectionHead(self.backbone.feature_dim, int(m.projection.hidden_dim),
                                                         int(m.projection.output_dim))
        self.criterion = BarlowTwinsLoss(lambda_param=float(m.lambda_offdiag), gather_distributed=True)

    @classmethod
    def validate_config(cls, cfg, data: DataInfo) -> None:
        if not float(cfg.method.lambda_offdiag) >= 0:
            raise ConfigError(f"method.lambda_offdiag must be >= 0, got {cfg.method.lambda_offdiag}")
        check_batch_size(cfg, 2, "the batch normalisation of the embeddings")

    def training_losses(self, views: List[torch.Tensor], labels, indices) -> Dict[str, torch.Tensor]:
        z0, z1 = (self.projection_head(self.backbone(v)).float() for v in views[:2])  # [B, d] each
        return {"loss": float32(self.criterion)(z0, z1)}  # the cross-correlation in float32 under autocast
