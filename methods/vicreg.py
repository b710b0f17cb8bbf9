"""VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised Learning (Bardes,
Ponce, LeCun, ICLR 2022, https://arxiv.org/abs/2105.04906).

``l(Z, Z') = lambda s(Z, Z') + mu [v(Z) + v(Z')] + nu [c(Z) + c(Z')]`` (Eq. 6): invariance (mean
squared distance), variance (hinge on each dimension's standard deviation, target 1) and
covariance (squared off-diagonal covariances): :func:`contrastive.losses.redundancy.vicreg_loss`, lightly's
``VICRegLoss`` values with an elementwise off-diagonal mask (the loss 6x faster under bf16 at the default run's
256 x 2048; BENCHMARKS.md). Recipe
(configs/method/vicreg.yaml): lambda = mu = 25, nu = 1, a 3-layer 8192-unit expander, LARS.
"""

from __future__ import annotations

from typing import Dict, List

import torch
from lightly.models.modules import BarlowTwinsProjectionHead

from contrastive.core.errors import ConfigError
from contrastive.core.registry import METHODS
from contrastive.engine.method import DataInfo, Method, check_batch_size
from contrastive.losses.redundancy import vicreg_loss


@METHODS.register("vicreg")
class VICReg(Method):
    """VICReg; the expander is the Linear-BN-ReLU x2 + Linear MLP VICReg describes
    (lightly's Barlow Twins head has exactly that shape)."""

    def __init__(self, cfg, data: DataInfo) -> None:
        super().__init__(cfg, data)
        m = cfg.method
        self.projection_head = BarlowTwinsProjectionHead(self.backbone.feature_dim, int(m.projection.hidden_dim),
                                                         int(m.projection.output_dim))

    @classmethod
    def validate_config(cls, cfg, data: DataInfo) -> None:
        m = cfg.method
        for key in ("invariance_weight", "variance_weight", "covariance_weight"):
            if not float(m[key]) >= 0:
                raise ConfigError(f"method.{key} must be >= 0, got {m[key]}")
        check_batch_size(cfg, 2, "the variance and covariance terms")

    def training_losses(self, views: List[torch.Tensor], labels, indices) -> Dict[str, torch.Tensor]:
        z0, z1 = (self.projection_head(self.backbone(v)).float() for v in views[:2])  # [B, d] each
        m = self.cfg.method
        return {"loss": vicreg_loss(z0, z1, float(m.invariance_weight), float(m.variance_weight), float(m.covariance_weight))}
