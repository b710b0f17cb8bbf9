"""In-memory image arrays and the batch samplers that feed them.

Every dataset is decoded once into a uint8 tensor ``[N, 3, H, W]``. A batch is then
a single ``index_select`` instead of ``batch_size`` Python ``__getitem__`` calls and
PIL transforms; augmentation happens afterwards, batch-wise, on the training device
(see :mod:`contrastive.augment.pipelines`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import Dataset


@dataclass
class ImageArray:
    """A split held in memory.

    Attributes:
        images: uint8 ``[N, 3, H, W]``.
        labels: int64 ``[N]``; ``-1`` marks an unlabeled image (STL-10 unlabeled).
    """

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"images must be uint8 [N, 3, H, W], got {self.images.dtype} {tuple(self.images.shape)}")
        if len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: torch.Tensor) -> "ImageArray":
        if self.streamed:  # files decoded on access (stream.LazyImages): the subset stays lazy
            return ImageArray(self.images.select(indices), self.labels[indices])
        return ImageArray(self.images[indices], self.labels[indices])

    @property
    def streamed(self) -> bool:
        """Whether the images are files decoded on access (``dataset.storage=stream``)."""
        return not isinstance(self.images, torch.Tensor)

    @property
    def has_labels(self) -> bool:
        return bool((self.labels >= 0).any())


@dataclass
class DatasetSplits:
    """The splits a run needs.

    Attributes:
        train: Images the method trains on (for STL-10: train + unlabeled).
        train_labeled: Labeled training images: the kNN bank and the probe's train set.
        val: The evaluation split (the test set where a dataset has no val split).
        classes: Class names, ``len(classes)`` is the number of classes.
        mean, std: Per-channel normalisation statistics in [0, 1] units.
    """

    train: ImageArray
    train_labeled: ImageArray
    val: ImageArray
    classes: List[str]
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    skipped_files: List[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        return int(self.train.images.shape[-1])


class IndexedBatches(Dataset):
    """Map-style dataset whose items are whole batches: ``ds[[i, j, ...]]`` or ``ds[index tensor]``
    (an index tensor on the images' device is used as it is: no copy).

    Used with ``DataLoader(batch_size=None, sampler=<a batch sampler>)`` so that one
    batch costs one tensor gather. Yields ``(images uint8 [B,3,H,W], labels [B],
    indices [B])``; the sample indices let methods keep per-sample state (SimCLIC's
    history bank, SPCL's prototype assignments).
    """

    def __init__(self, array: ImageArray) -> None:
        self.array = array

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, indices: Sequence[int] | torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long, device=self.array.images.device)
        return self.array.images[idx], self.array.labels[idx], idx


class RandomBatchSampler:
    """Shuffled batches of indices, sharded across processes, reproducible per epoch.

    Every process draws the same permutation from ``seed + epoch`` and takes every
    ``world_size``-th batch starting at ``rank``, so the global batch of one step is
    ``world_size`` disjoint local batches, and the order does not depend on how many
    workers there are.

    Args:
        num_samples: Dataset size.
        batch_size: Per-process batch size.
        seed: Base seed; the permutation of epoch ``e`` uses ``seed + e``.
        rank, world_size: This process and the number of processes.
        shuffle: Shuffle (training) or keep order (evaluation).
        drop_last: Drop the incomplete last global batch (training; keeps BN and the
            contrastive loss on full batches).
        device: ``None``: batches are lists of ints, slices of the epoch's permutation made a list once
            per epoch (no tensor operation per step). A device: the epoch's permutation is
            moved there once per epoch and batches are int64 slices of it, so that a batch
            of images held on the GPU is gathered without a host-to-device copy (which
            waits for the device) every step.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        drop_last: bool = True,
        device: Optional[torch.device | str] = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.num_samples, self.batch_size = num_samples, batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.shuffle, self.drop_last = shuffle, drop_last
        self.device = None if device is None else torch.device(device)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch."""
        self.epoch = epoch

    def _order(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.num_samples)
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(self.num_samples, generator=g)

    def _global_batches(self) -> int:
        global_batch = self.batch_size * self.world_size
        if self.drop_last:
            return self.num_samples // global_batch
        return -(-self.num_samples // global_batch)

    def __len__(self) -> int:
        return self._global_batches()

    def __iter__(self) -> Iterator[List[int] | torch.Tensor]:
        order = self._order().tolist() if self.device is None else self._order().to(self.device)  # once per epoch
        global_batch = self.batch_size * self.world_size
        for b in range(self._global_batches()):
            chunk = order[b * global_batch : (b + 1) * global_batch]
            local = chunk[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
            if len(local):
                yield local


def shard_indices(num_samples: int, rank: int, world_size: int) -> torch.Tensor:
    """Contiguous, non-overlapping shard of ``range(num_samples)`` for evaluation."""
    per_rank = -(-num_samples // world_size)
    return torch.arange(rank * per_rank, min(num_samples, (rank + 1) * per_rank))


def class_balanced_subset(labels: torch.Tensor, fraction: float, seed: int = 0) -> torch.Tensor:
    """Indices of a class-balanced, seed-fixed subset holding ``fraction`` of each class.

    Used for the semi-supervised protocol (SimCLR Table 7) and ImCLR's Table 3. Every
    class keeps ``max(1, round(fraction * n_c))`` images.

    Args:
        labels: int64 ``[N]``; negative labels (unlabeled) are never selected.
        fraction: In (0, 1].
        seed: The subset depends only on the seed and the labels.

    Returns:
        Sorted int64 indices.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    g = torch.Generator().manual_seed(seed)
    chosen = []
    for c in torch.unique(labels[labels >= 0]).tolist():
        members = torch.nonzero(labels == c).flatten()
        keep = max(1, round(fraction * len(members)))
        chosen.append(members[torch.randperm(len(members), generator=g)[:keep]])
    return torch.sort(torch.cat(chosen)).values
