"""``dataset.storage=stream``: image files decoded in DataLoader workers, crops of the full image.

The split DALI and FFCV use: the *geometric* part of the training augmentation
(random-resized crop with the configured scale and ratio, on the full-resolution
image, and the horizontal flip) runs per image in the worker processes, which collate
uint8 crops at the training size into ``[B, V, 3, S, S]`` (``V`` views per image). The
*photometric* part (colour jitter, grayscale, blur, solarize, normalisation) stays
batch-wise on the training device (:mod:`contrastive.augment.photometric`), as on the in-memory path.
The crops themselves (:class:`CropBatches`, and multi-crop's local crops ``[B, L, 3, s, s]``)
are cut in :mod:`contrastive.data.stream_crops`.

The crop of view ``v`` of sample ``i`` in epoch ``e`` is drawn from a generator seeded
with ``(seed, e, i, v)``: crops depend neither on the number of workers nor on where an
interrupted epoch resumed, so mid-epoch resume is exact (with
:mod:`contrastive.data.resume`, which skips the batches already trained on).

Evaluation splits are :class:`LazyImages` (:class:`FileImages`, or the sharded
:class:`contrastive.data.shards.reader.ShardImages`): a lazy ``[N, 3, S, S]`` uint8 "array"
whose slices decode the files with the evaluation protocol (resize the shorter side,
center crop), the same function as the in-memory cache (bit-identical tensors). SPCL's
clustering pass, ``linear_eval.py`` feature extraction and fine-tuning index it like a
tensor.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import Dataset

from contrastive.core.errors import ConfigError
from contrastive.data.io.decode import decode_rgb, resize_center_crop, resolve_decoder
from contrastive.data.stream_crops import (  # noqa: F401 (the training crops: public here too)
    CropBatches, Geometric, LocalCrops, crop_seed, fill_skipped, geometric_of, local_crops_of)

log = logging.getLogger(__name__)

STORAGE = ("memory", "stream", "auto")


def check_workers(configured: Optional[int]) -> Optional[int]:
    """``dataset.num_workers`` as given (``null`` stays None: decided by :func:`default_workers` per process)."""
    if configured is not None and int(configured) < 0:
        raise ConfigError(f"dataset.num_workers must be >= 0 or null, got {configured}")
    return None if configured is None else int(configured)


def default_workers(configured: Optional[int], local_processes: int) -> int:
    """``dataset.num_workers``; ``null``: the cores of this machine shared by its ``local_processes``
    training processes (Lightning's count, ``Trainer.num_devices``: Lightning's launcher and ``srun``
    set no ``LOCAL_WORLD_SIZE``)."""
    if check_workers(configured) is not None:
        return int(configured)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, int(local_processes)))


class LazyImages:
    """A lazy uint8 ``[N, 3, size, size]`` array (evaluation protocol) over encoded images.

    Indexing with an int, a slice, a list or a LongTensor decodes those images (threads)
    and returns a real uint8 tensor; ``to()`` returns the lazy array itself, so code
    written for tensors (``images.to(device)[a:b]``) works unchanged. Subclasses give
    ``__len__``, :meth:`read` (one full-resolution image through a transform) and
    ``select``, and the fields ``size``, ``resize``, ``num_workers``, ``crop_ratio``.
    """

    dtype = torch.uint8
    ndim = 4
    device = torch.device("cpu")
    is_cuda = False
    size: int
    resize: Optional[int]

    def __len__(self) -> int:
        raise NotImplementedError

    def read(self, i: int, transform) -> Optional[torch.Tensor]:
        """``transform(uint8 [3, H, W] image i)``; ``None`` when unreadable and ``on_bad_image=skip``."""
        raise NotImplementedError

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), 3, self.size, self.size))

    def numel(self) -> int:
        return len(self) * 3 * self.size * self.size

    def to(self, *args: Any, **kwargs: Any) -> "LazyImages":
        return self

    def _indices(self, key: Any) -> List[int]:
        if isinstance(key, slice):
            return list(range(len(self)))[key]
        if isinstance(key, int):
            return [key]
        return torch.as_tensor(key, dtype=torch.long).flatten().tolist()

    def decode(self, i: int) -> Optional[torch.Tensor]:
        """uint8 ``[3, S, S]`` of image ``i`` (resize the shorter side, center crop)."""
        return self.read(i, lambda image: resize_center_crop(image, self.size, self.resize))

    def decode_batch(self, indices: Sequence[int], threads: int = 1) -> torch.Tensor:
        """uint8 ``[b, 3, S, S]``; an unreadable image (``skip``) is replaced by its batch neighbour."""
        if threads > 1 and len(indices) > 1:
            with ThreadPoolExecutor(max_workers=threads) as pool:
                images = list(pool.map(self.decode, indices))
        else:
            images = [self.decode(i) for i in indices]
        return torch.stack(fill_skipped(images))

    def __getitem__(self, key: Any) -> torch.Tensor:
        idx = self._indices(key)
        out = self.decode_batch(idx, threads=min(8, os.cpu_count() or 1))  # [b, 3, S, S]
        return out[0] if isinstance(key, int) else out


@dataclass
class FileImages(LazyImages):
    """:class:`LazyImages` over image files."""

    paths: List[str]
    size: int
    resize: Optional[int] = None
    decoder: str = "auto"
    on_bad_image: str = "error"
    num_workers: Optional[int] = 0  # None: a share of the cores per local process, when the loader is built
    crop_ratio: Tuple[float, float] = (3 / 4, 4 / 3)

    def __post_init__(self) -> None:
        self.decoder = resolve_decoder(self.decoder)  # here, not in each worker's decode: a bad name is a config error

    def __len__(self) -> int:
        return len(self.paths)

    def select(self, indices: Any) -> "FileImages":
        """A lazy subset (``ImageArray.subset``)."""
        return replace(self, paths=[self.paths[i] for i in torch.as_tensor(indices, dtype=torch.long).flatten().tolist()])

    def read(self, i: int, transform) -> Optional[torch.Tensor]:
        return read_or_skip(self.paths[i], self.on_bad_image, transform, lambda: decode_rgb(self.paths[i], self.decoder))


_reported: set = set()


def read_or_skip(name: str, policy: str, transform, load) -> Optional[torch.Tensor]:
    """``transform(load())``, applying ``dataset.on_bad_image`` to an unreadable image
    ``name`` (a file, or a shard entry; each skipped one is named once per process)."""
    try:
        return transform(load())
    except (RuntimeError, ValueError, OSError) as err:
        if policy == "error":
            from contrastive.data.io.folders import bad_image_error

            raise bad_image_error(name, err) from None
        if name not in _reported:
            _reported.add(name)
            log.warning("skipped unreadable image %s (%d so far in this process)", name, len(_reported))
        return None


class EvalBatches(Dataset):
    """Evaluation batches: ``ds[[i, j, ...]] -> (uint8 [B, 3, S, S], labels [B], indices [B])``."""

    def __init__(self, files: LazyImages, labels: torch.Tensor) -> None:
        self.files, self.labels = files, labels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, indices: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        return self.files.decode_batch(list(indices)), self.labels[idx], idx


class EpochTagged:
    """Wraps a batch sampler so that every batch carries its epoch: ``(epoch, indices)``
    (the workers then seed the crops of the epoch without knowing the trainer)."""

    def __init__(self, sampler: Any) -> None:
        self.sampler, self.epoch = sampler, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if callable(getattr(self.sampler, "set_epoch", None)):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        for batch in self.sampler:
            yield self.epoch, list(batch)

    def __getattr__(self, name: str) -> Any:
        inner = self.__dict__.get("sampler")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)


def worker_init(_: int) -> None:
    torch.set_num_threads(1)  # one decode + resize per worker; the workers are the parallelism


def choose_storage(storage: str, num_images: int, size: int, ram_share: float, name: str) -> str:
    """``dataset.storage`` -> ``"memory"`` or ``"stream"``; ``auto`` decides by the decoded size.

    ``auto`` is memory when ``num_images * 3 * size**2`` bytes fit ``ram_share`` of the
    machine's total RAM (total, not free, so every rank of a node decides alike; the
    memory-mapped cache is one copy per node whatever the number of ranks).
    """
    if storage not in STORAGE:
        raise ConfigError(f"dataset.storage='{storage}' is not valid; choose one of {', '.join(STORAGE)}")
    if storage != "auto":
        return storage
    if not 0.0 < float(ram_share) <= 1.0:
        raise ConfigError(f"dataset.auto_ram_share must be in (0, 1], got {ram_share}")
    needed = num_images * 3 * size * size
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    choice = "memory" if needed <= float(ram_share) * total else "stream"
    log.info("dataset.storage=auto -> %s for '%s': %d images at %d px decode to %.1f GiB, %s %.0f%% of RAM (%.1f GiB)",
             choice, name, num_images, size, needed / 2**30, "within" if choice == "memory" else "more than",
             100 * float(ram_share), total / 2**30)
    return choice
