"""MoCo v2: Improved Baselines with Momentum Contrastive Learning (Chen, Fan, Girshick, He 2020,
https://arxiv.org/abs/2003.04297), on MoCo (He et al., CVPR 2020, https://arxiv.org/abs/1911.05722).

A query encoder and its momentum copy (the key encoder); each query is contrasted with the key of
its other view against a queue of keys of earlier batches (InfoNCE, MoCo Eq. 1). MoCo v2 adds to
MoCo v1 "an MLP projection head and more data augmentation" and a cosine schedule (configs/
method/mocov2.yaml). The queue is :class:`contrastive.memory.queue.KeyQueue` (DDP: the global
batch's keys, one write per step). MoCo's "shuffling BN" needs several devices per process group:
it is not implemented; each process's BatchNorm sees its own batch (as solo-learn and lightly do).
"""

from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn.functional as F
from lightly.models.modules import MoCoProjectionHead

from contrastive.backbones.heads import linear_projection
from contrastive.core.errors import ConfigError
from contrastive.core.registry import METHODS
from contrastive.engine.method import DataInfo
from contrastive.engine.momentum import MomentumMethod
from contrastive.losses.self_supervised import info_nce_with_queue
from contrastive.memory.queue import KeyQueue


@METHODS.register("mocov2")
class MoCoV2(MomentumMethod):
    """MoCo v2 (``method.projection.num_layers=1``: MoCo v1's linear 128-d head)."""

    def __init__(self, cfg, data: DataInfo) -> None:
        super().__init__(cfg, data)
        m = cfg.method
        p = m.projection
        if int(p.num_layers) == 1:
            self.projection_head = linear_projection(self.backbone.feature_dim, int(p.output_dim), bool(p.batch_norm))  # MoCo v1's fc
        else:
            self.projection_head = MoCoProjectionHead(self.backbone.feature_dim, int(p.hidden_dim), int(p.output_dim),
                                                      num_layers=int(p.num_layers), batch_norm=bool(p.batch_norm))
        self.init_momentum(self.backbone, self.projection_head)
        self.queue = KeyQueue(int(m.queue_size), int(p.output_dim), seed=int(cfg.seed))
        self._pending_keys: torch.Tensor | None = None  # this step's keys, enqueued after backward

    @classmethod
    def validate_config(cls, cfg, data: DataInfo) -> None:
        super().validate_config(cfg, data)
        m = cfg.method
        if not float(m.temperature) > 0:
            raise ConfigError(f"method.temperature must be > 0, got {m.temperature}")
        if int(m.projection.num_layers) < 1:
            raise ConfigError(f"method.projection.num_layers must be >= 1 (1: MoCo v1's linear head, 2: MoCo v2's MLP), "
                              f"got {m.projection.num_layers}")
        queue, batch = int(m.queue_size), int(cfg.batch_size)
        if queue < batch or queue % batch:
            raise ConfigError(f"method.queue_size={queue} must be a positive multiple of the global batch "
                              f"(batch_size={batch} x processes): each step replaces one batch of keys")

    def keys(self, images: torch.Tensor) -> torch.Tensor:
        """l2-normalised keys of the momentum encoder ``[B, d]`` (no gradient)."""
        with torch.no_grad():
            return F.normalize(self.momentum[1](self.momentum[0](images)), dim=1)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """l2-normalised queries of the online encoder ``[B, d]``."""
        return F.normalize(self.projection_head(self.backbone(images)), dim=1)

    def instance_loss(self, q: torch.Tensor, key_images: torch.Tensor) -> torch.Tensor:
        """InfoNCE of queries ``q [B, d]`` against the keys of ``key_images`` and the queue.

        The keys are enqueued after the backward pass (:meth:`on_train_batch_end`): the loss
        reads the queue without copying it, and the enqueue never overwrites a tensor that
        backward still needs."""
        k = self.keys(key_images)  # [B, d]
        negatives = self.queue.keys.to(q.device)  # [K, d], the keys of earlier batches
        loss = info_nce_with_queue(q, k, negatives, float(self.cfg.method.temperature))
        self._pending_keys = k
        return loss

    def training_losses(self, views: List[torch.Tensor], labels, indices) -> Dict[str, torch.Tensor]:
        return {"loss": self.instance_loss(self.query(views[0]), views[1])}

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        super().on_train_batch_end(outputs, batch, batch_idx)  # the momentum update
        if self._pending_keys is not None:
            self.queue.enqueue(self._pending_keys)
            self._pending_keys = None
