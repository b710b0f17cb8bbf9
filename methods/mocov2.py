"""MoCo v2: Improved Baselines with Momentum Contrastive Learning (Chen, Fan, Girshick, He 2020,
https://arxiv.org/abs/2003.04297), on MoCo (He et al., CVPR 2020, https://arxiv.org/abs/1911.05722).

A query encoder and its momentum copy (the key encoder); each query is contrasted with the key of
its other view against a queue of keys of earlier batches (InfoNCE, MoCo Eq. 1). MoCo v2 adds to
MoCo v1 "an MLP projection head and more data augmentation" and a cosine schedule (configs/
method/mocov2.yaml). The queue is :class:`contrastive.memory.queue.KeyQueue` (DDP: the global
batch's keys, one write per step). MoCo's shuffling BN (Sec. 3.3, ``method.shuffle_bn``): under
DDP the key encoder runs on a permutation of the global batch, each process's BatchNorm on its own
share, and the keys are shuffled back (:func:`contrastive.engine.shuffle_bn.shuffled_keys`); BN is
per process (``trainer.sync_batchnorm=false``, as MoCo's code). On one process the key encoder's BN
sees the whole key batch: the shuffle changes nothing there (MoCo's code requires DDP).
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
from contrastive.engine.shuffle_bn import shuffled_keys
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
        self.key_permutation: torch.Tensor | None = None  # the last step's shuffle of the global batch (DDP only)

    @classmethod
    def validate_config(cls, cfg, data: DataInfo) -> None:
        super().validate_config(cfg, data)
        m = cfg.method
        if not float(m.temperature) > 0:
            raise ConfigError(f"method.temperature must be > 0, got {m.temperature}")
        if bool(m.shuffle_bn) and bool(cfg.trainer.sync_batchnorm):
            raise ConfigError("method.shuffle_bn=true needs per-process BatchNorm: set trainer.sync_batchnorm=false "
                              "(a synchronised BN shares one set of statistics; nothing to shuffle) or method.shuffle_bn=false")
        if int(m.projection.num_layers) < 1:
            raise ConfigError(f"method.projection.num_layers must be >= 1 (1: MoCo v1's linear head, 2: MoCo v2's MLP), "
                              f"got {m.projection.num_layers}")
        queue, batch = int(m.queue_size), int(cfg.batch_size)
        if queue < batch or queue % batch:
            raise ConfigError(f"method.queue_size={queue} must be a positive multiple of the global batch "
                              f"(batch_size={batch} x processes): each step replaces one batch of keys")

    def keys(self, images: torch.Tensor) -> torch.Tensor:
        """l2-normalised keys of the momentum encoder ``[B, d]`` (no gradient), the global batch
        shuffled across processes for its BatchNorm when ``method.shuffle_bn``."""
        encode = lambda x: self.momentum[1](self.momentum[0](x))  # noqa: E731
        with torch.no_grad():
            if not bool(self.cfg.method.shuffle_bn):
                return F.normalize(encode(images), dim=1)
            # The same draw on every process, a function of (seed, step): a resumed run shuffles as the straight one.
            draw = torch.Generator(device=images.device).manual_seed(int(self.cfg.seed) * 1_000_033 + self.global_step)
            k, self.key_permutation = shuffled_keys(encode, images, draw)
            return F.normalize(k, dim=1)

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
