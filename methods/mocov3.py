"""MoCo v3: An Empirical Study of Training Self-Supervised Vision Transformers (Chen, Xie, He,
ICCV 2021, https://arxiv.org/abs/2104.02057).

No queue: each query is contrasted with the momentum keys of the same (global) batch, symmetrised
over the two views, ``ctr(q1, k2) + ctr(q2, k1)`` with ``ctr`` the InfoNCE of Alg. 1 scaled by
``2 tau`` (:func:`contrastive.losses.self_supervised.batch_info_nce`). The query encoder has a
projector and a predictor; the key encoder is the momentum copy of backbone and projector,
momentum from 0.99 to 1 on a cosine. Recipe for ResNet-50 (configs/method/mocov3.yaml):
projector 3 layers of 4096 -> 256, predictor 2 layers, LARS, temperature 1.0.
"""

from __future__ import annotations

from typing import Dict, List

import torch
import torch.distributed as dist
import torch.nn.functional as F
from lightly.models.modules import MoCoProjectionHead

from contrastive.core.errors import ConfigError
from contrastive.core.registry import METHODS
from contrastive.engine.method import DataInfo, check_batch_size
from contrastive.engine.momentum import MomentumMethod
from contrastive.losses.self_supervised import batch_info_nce
from contrastive.memory.queue import gather_keys


@METHODS.register("mocov3")
class MoCoV3(MomentumMethod):
    """MoCo v3 for convolutional backbones (BN in projector and predictor, as its ResNet setting)."""

    def __init__(self, cfg, data: DataInfo) -> None:
        super().__init__(cfg, data)
        m = cfg.method
        out = int(m.projection.output_dim)
        self.projection_head = MoCoProjectionHead(self.backbone.feature_dim, int(m.projection.hidden_dim), out,
                                                  num_layers=3, batch_norm=True)
        self.prediction_head = MoCoProjectionHead(out, int(m.predictor.hidden_dim), out, num_layers=2, batch_norm=True)
        self.init_momentum(self.backbone, self.projection_head)

    @classmethod
    def validate_config(cls, cfg, data: DataInfo) -> None:
        super().validate_config(cfg, data)
        if not float(cfg.method.temperature) > 0:
            raise ConfigError(f"method.temperature must be > 0, got {cfg.method.temperature}")
        check_batch_size(cfg, 2, "in-batch negatives")

    def training_losses(self, views: List[torch.Tensor], labels, indices) -> Dict[str, torch.Tensor]:
        q = [F.normalize(self.prediction_head(self.projection_head(self.backbone(v))), dim=1) for v in views[:2]]
        with torch.no_grad():
            k = [gather_keys(F.normalize(self.momentum[1](self.momentum[0](v)), dim=1)) for v in views[:2]]  # 2 x [M, d]
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        t, offset = float(self.cfg.method.temperature), rank * q[0].shape[0]
        loss = batch_info_nce(q[0], k[1], t, offset) + batch_info_nce(q[1], k[0], t, offset)
        return {"loss": loss}
