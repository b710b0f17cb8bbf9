"""The LightningDataModule over uint8 splits, in memory or streamed from files (``dataset.storage``)."""

from __future__ import annotations

from typing import Callable, List, Optional

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from contrastive.data.base import DatasetSplits, IndexedBatches, RandomBatchSampler, shard_indices
from contrastive.data.resume import ResumableLoader, trainer_progress
from contrastive.data.stream import (CropBatches, EpochTagged, EvalBatches, default_workers, geometric_of, local_crops_of,
                                     worker_init)

BatchSamplerFactory = Callable[[int, int, int, int, int], object]


class _ShardBatches:
    """Ordered batches over this process's shard of an eval split (no duplicates, so the
    kNN monitor gives the same number on any number of processes)."""

    def __init__(self, num_samples: int, batch_size: int, rank: int, world_size: int) -> None:
        self.indices = shard_indices(num_samples, rank, world_size)
        self.batch_size = batch_size

    def __len__(self) -> int:
        return -(-len(self.indices) // self.batch_size)

    def __iter__(self):
        for start in range(0, len(self.indices), self.batch_size):
            yield self.indices[start : start + self.batch_size].tolist()


class ArrayDataModule(pl.LightningDataModule):
    """Serves uint8 batches ``(images [B,3,H,W], labels [B], indices [B])``.

    Args:
        splits: The in-memory dataset.
        batch_size: Per-process training batch size.
        seed: Shuffling seed.
        eval_batch_size: Batch size of the kNN/evaluation passes.
        batch_sampler_factory: ``(num_samples, batch_size, seed, rank, world_size) ->
            batch sampler``; methods with their own sampling (SPCL) pass theirs.
    """

    def __init__(
        self,
        splits: DatasetSplits,
        batch_size: int,
        seed: int = 0,
        eval_batch_size: int = 512,
        batch_sampler_factory: Optional[BatchSamplerFactory] = None,
        data_on_device: str = "auto",
    ) -> None:
        super().__init__()
        self.splits, self.batch_size, self.seed = splits, batch_size, seed
        self.eval_batch_size = eval_batch_size
        self.batch_sampler_factory = batch_sampler_factory
        self.data_on_device = data_on_device

    def setup(self, stage: str) -> None:
        """Move the uint8 arrays to the GPU when they fit, so a batch is one on-device
        gather and no host-to-device copy (airbench style)."""
        if self.trainer is None or self.data_on_device == "never" or self.splits.train.streamed:
            return
        device = self.trainer.strategy.root_device
        if device.type != "cuda":
            return
        arrays = {id(a): a for a in (self.splits.train, self.splits.train_labeled, self.splits.val)}
        needed = sum(a.images.numel() + a.labels.numel() * 8 for a in arrays.values())
        free, _ = torch.cuda.mem_get_info(device)
        if self.data_on_device == "always" or needed < 0.25 * free:
            for array in arrays.values():
                array.images = array.images.to(device)
                array.labels = array.labels.to(device)

    def _rank_world(self) -> tuple[int, int]:
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def train_dataloader(self) -> DataLoader:
        rank, world = self._rank_world()
        n = len(self.splits.train)
        images = self.splits.train.images
        if self.batch_sampler_factory is not None:
            sampler = self.batch_sampler_factory(n, self.batch_size, self.seed, rank, world)
        elif getattr(images, "whole", False):  # sharded: each rank reads its own run of shards
            from contrastive.data.shards.reader import ShardShuffleBatchSampler

            sampler = ShardShuffleBatchSampler(images.shard_sizes, self.batch_size, self.seed, rank, world,
                                               images.shuffle_window)
        else:  # in memory: the permutation on the images' device, a batch is a slice of it (no copy per step)
            device = None if self.splits.train.streamed else images.device
            sampler = RandomBatchSampler(n, self.batch_size, self.seed, rank, world, device=device)
        progress = lambda: trainer_progress(self.trainer)  # noqa: E731
        if self.splits.train.streamed:
            return self._stream_train_loader(sampler, progress)
        # Resumable: a checkpoint written mid-epoch (SIGTERM) restarts at the next batch of that epoch.
        return ResumableLoader(IndexedBatches(self.splits.train), sampler, progress, num_workers=0, pin_memory=False)

    def _stream_train_loader(self, sampler, progress) -> DataLoader:
        """Crops of the full images decoded in worker processes (contrastive/data/stream.py): the
        model is a ``contrastive`` ``Method``, whose augmentation gives the geometric part and
        whose ``crops_per_image()`` the crops per image (``[B, V, 3, S, S]`` batches; with multi-crop the
        pair of those and the local crops ``[B, L, 3, s, s]``)."""
        model = self.trainer.lightning_module if self.trainer is not None else None
        if model is None:
            raise RuntimeError("the streamed training loader needs the trainer's model (for its augmentation)")
        files = self.splits.train.images
        local = local_crops_of(model.augment, files.crop_ratio)  # multi-crop: the workers cut the local crops too
        views = model.crops_per_image() - (local.num if local else 0)  # a contrastive Method: one crop per view (ImCLR: per slot)
        dataset = CropBatches(files, self.splits.train.labels, geometric_of(model.augment, files.crop_ratio), views, self.seed,
                              local=local)
        workers = default_workers(files.num_workers, local_processes(self.trainer))
        return ResumableLoader(dataset, EpochTagged(sampler), progress, **_worker_kwargs(workers, persistent=True))

    def eval_loader(self, array, batch_size: Optional[int] = None, rank: int = 0, world: int = 1) -> DataLoader:
        """Ordered ``(uint8 [B,3,S,S], labels, indices)`` batches of this process's shard of
        ``array`` (in memory or streamed): the kNN monitor, and for methods and evaluations
        that need one pass over a split."""
        sampler = _ShardBatches(len(array), batch_size or self.eval_batch_size, rank, world)
        if array.streamed:
            return DataLoader(EvalBatches(array.images, array.labels), batch_size=None, sampler=sampler,
                              **_worker_kwargs(default_workers(array.images.num_workers, local_processes(self.trainer)),
                                               persistent=False))
        return DataLoader(IndexedBatches(array), batch_size=None, sampler=sampler)

    def val_dataloader(self) -> List[DataLoader]:
        """[labeled train split (the kNN bank), val split]."""
        rank, world = self._rank_world()
        return [self.eval_loader(array, None, rank, world) for array in (self.splits.train_labeled, self.splits.val)]


def local_processes(trainer: Optional[pl.Trainer]) -> int:
    """Training processes on this machine, as Lightning counts them (``Trainer.num_devices``: devices per
    node); 1 without a trainer (``linear_eval.py``, scripts)."""
    return 1 if trainer is None else int(trainer.num_devices)


def _worker_kwargs(workers: int, persistent: bool) -> dict:
    if workers <= 0:
        return {"num_workers": 0}
    return {"num_workers": workers, "worker_init_fn": worker_init, "persistent_workers": persistent,
            "prefetch_factor": 2, "pin_memory": torch.cuda.is_available()}
