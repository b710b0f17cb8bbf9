"""Embedding a whole split with a method's network, shared out over the processes of a run.

Used where a method needs every training sample's embedding at once, e.g. SPCL's k-means
over the training set at every epoch (Mo, Sun & Li 2022, https://arxiv.org/abs/2208.08819).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from contrastive.data.base import shard_indices
from contrastive.engine.method import Method, gather_padded


@torch.no_grad()
def embed_split(method: Method, images: torch.Tensor, transform: Callable[[torch.Tensor], torch.Tensor],
                embed: Callable[[torch.Tensor], torch.Tensor], batch_size: int) -> torch.Tensor:
    """L2-normalised ``embed(transform(images))`` of every image, in dataset order, on every process.

    Each process embeds its shard (:func:`~contrastive.data.base.shard_indices`) in eval mode
    (BatchNorm uses, and does not update, its running statistics) under the trainer's precision;
    the shards are then all-gathered.

    Args:
        method: The method being trained (attached to a trainer).
        images: uint8 ``[N, 3, H, W]`` (in memory, on any device).
        transform: uint8 ``[b, 3, H, W]`` -> float ``[b, 3, S, S]`` (the eval transform or an augmentation).
        embed: float ``[b, 3, S, S]`` -> ``[b, D]`` (the backbone, or backbone and projection head).
        batch_size: Images per forward pass.

    Returns:
        float32 ``[N, D]``, rows of unit norm.
    """
    trainer = method.trainer
    shard = shard_indices(len(images), trainer.global_rank, trainer.world_size)
    was_training, parts = method.training, []
    method.eval()
    try:
        with trainer.precision_plugin.forward_context():
            for chunk in shard.split(int(batch_size)):
                x = transform(images[chunk.to(images.device)].to(method.device, non_blocking=True))
                parts.append(F.normalize(embed(method._to_memory_format(x)).float(), dim=1))  # [b, D]
    finally:
        method.train(was_training)
    features = torch.cat(parts)  # [N_rank, D]
    if trainer.world_size > 1:
        index = shard.to(method.device)
        features, _, index = gather_padded(method, features, index, index)
        features = features[index.argsort()]  # [N, D]
    return features


def on_rank_zero(method: Method, compute: Callable[[], Any]) -> Any:
    """``compute()`` on the global rank 0 only, its result broadcast to every process.

    For work that must give every process the same answer and that one process should do
    (faiss k-means over the gathered features: the prototype methods)."""
    trainer = method.trainer
    payload = compute() if trainer.is_global_zero else None
    if trainer.world_size > 1:
        payload = trainer.strategy.broadcast(payload, src=0)
    return payload


class NetworkFilledBank:
    """Mixin for memory-bank methods (InsDis, PIRL) whose bank can start as one pass of the initial network.

    The method holds ``self.bank`` (a :class:`contrastive.memory.feature_bank.FeatureBank`), ``self.project``
    (images -> l2-normalised ``[B, d]``) and ``cfg.method.embed_batch_size``. With ``bank_init=network`` the
    bank is marked unfilled at construction and filled as the first epoch starts; a resumed run has it filled.
    """

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        if not bool(self.bank.filled.all()):
            self.fill_bank()

    @torch.no_grad()
    def fill_bank(self) -> None:
        """One training view of every image through the current network, in dataset order."""
        images = self.trainer.datamodule.splits.train.images
        features = embed_split(self, images, self.augment, self.project, int(self.cfg.method.embed_batch_size))  # [N, d]
        self.bank.update(torch.arange(len(images), device=self.device), features.to(self.device))
