"""SimCLR: A Simple Framework for Contrastive Learning of Visual Representations.

Chen, Kornblith, Norouzi, Hinton, ICML 2020 (https://arxiv.org/abs/2002.05709).

Two strongly augmented views of every image pass through the backbone and an MLP
projection head; the NT-Xent loss makes the two views of an image agree against
the ``2(N-1)`` other views of the (global, under DDP) batch. The paper's recipe
(configs/method/simclr.yaml): LARS with lr = 0.075 x sqrt(batch) (its Appendix B.1
rule for small batches and short schedules; ``optimizer.lr=0.3
optimizer.lr_scaling=linear`` is the large-batch 0.3 x batch/256), 10 warm-up epochs
then cosine decay, weight decay 1e-6, temperature 0.5 on CIFAR.
"""

from __future__ import annotations

from typing import Dict, List

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead

from contrastive.errors import ConfigError
from contrastive.method import DataInfo, Method, check_batch_size
from contrastive.registry import METHODS


@METHODS.register("simclr")
class SimCLR(Method):
    """SimCLR with lightly's projection head and NT-Xent loss."""

    def __init__(self, cfg, data: DataInfo) -> None:
        super().__init__(cfg, data)
        m = cfg.method
        self.projection_head = SimCLRProjectionHead(
            input_dim=self.backbone.feature_dim,
            hidden_dim=int(m.projection.hidden_dim),
            output_dim=int(m.projection.output_dim),
            num_layers=int(m.projection.num_layers),
        )
        # gather_distributed: negatives come from every process's batch, as in the paper.
        self.criterion = NTXentLoss(temperature=float(m.temperature), gather_distributed=bool(m.gather_distributed))

    @classmethod
    def validate_config(cls, cfg, data: DataInfo) -> None:
        if not cfg.method.temperature > 0:
            raise ConfigError(f"method.temperature must be > 0, got {cfg.method.temperature}")
        if int(cfg.method.projection.num_layers) < 2:
            raise ConfigError(f"method.projection.num_layers must be >= 2, got {cfg.method.projection.num_layers}")
        # With one image per batch there is no negative: NT-Xent is undefined.
        check_batch_size(cfg, 2, "NT-Xent (one positive and at least one negative per view)")

    def project(self, images: torch.Tensor) -> torch.Tensor:
        return self.projection_head(self.backbone(images))  # [B, output_dim]

    def training_losses(self, views: List[torch.Tensor], labels, indices) -> Dict[str, torch.Tensor]:
        z0, z1 = self.project(views[0]), self.project(views[1])  # [B, d] each
        return {"loss": self.criterion(z0, z1)}
