"""Embedding a whole split with a method's network, shared out over the processes of a run.

Used where a method needs every training sample's embedding at once, e.g. SPCL's k-means
over the training set at every epoch (Mo, Sun & Li 2022, https://arxiv.org/abs/2208.08819).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F

from contrastive.core.errors import ConfigError
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
    (faiss k-means over the gathered features: the prototype methods). The other processes wait
    for the result in a gloo group created for this wait, whose timeout is ``cluster_wait_minutes``
    (configs/train.yaml), not in the run's process group (30 minutes: DDPStrategy's default_pg_timeout),
    and PCL v2's ImageNet clustering on faiss-cpu takes ~25 core-hours per epoch (BENCHMARKS.md,
    "k-means at ImageNet size"). Why rank 0 alone rather than every rank computing the same
    k-means: ranks of one machine share its cores, so eight copies of a CPU k-means would each get
    an eighth of them and finish eight times later; on GPUs (faiss with GPU support) rank 0's GPU
    does it alone in the time eight copies would take, as in PCL's released code, while the others
    wait (PCL's 5.8e15 flops per epoch: minutes at tens of TFLOP/s, an estimate: not measured on a GPU).

    Args:
        method: The method being trained (attached to a trainer); ``cfg.cluster_wait_minutes``.
        compute: ``() -> payload``, picklable (tensors on the CPU).

    Returns:
        Rank 0's payload, on every process.
    """
    trainer = method.trainer
    if trainer.world_size == 1:
        return compute()
    minutes = float(method.cfg.cluster_wait_minutes)
    if not minutes > 0:
        raise ConfigError(f"cluster_wait_minutes must be > 0, got {minutes}")
    # Every process creates the group before rank 0 starts: creating it is itself a rendezvous.
    group = dist.new_group(backend="gloo", timeout=timedelta(minutes=minutes))
    try:
        box = [compute() if trainer.is_global_zero else None]
        dist.broadcast_object_list(box, src=0, group=group)
    finally:
        dist.destroy_process_group(group)
    return box[0]


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
