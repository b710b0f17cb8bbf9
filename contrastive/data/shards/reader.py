"""``dataset=shards``: WebDataset tar shards streamed to many processes.

The format is WebDataset's (``.tar`` shards of ``<key>.jpg`` + ``<key>.cls``; chosen by
``benchmarks/speed/components/bench_shards.py`` against litdata, see BENCHMARKS.md), written by
:mod:`contrastive.data.shards.writer` (``python -m contrastive.data.shards.writer``)
with the image files' bytes as they were. Next to the shards, the conversion writes
``contrastive_index.npy`` (the byte range and label of every image) and
``contrastive_shards.json`` (classes, and each shard's samples, size and CRC-32).

A sample is one ``os.pread`` of its byte range, so the order is ours:
:class:`ShardShuffleBatchSampler` shuffles the shards with ``(seed, epoch)``, cuts the
shuffled sequence into ``world_size`` equal, disjoint parts (one per rank, each a run of
consecutive shards of that order; a shard on a cut is shared by two ranks), and shuffles
the samples within windows of ``dataset.shuffle_window`` shards. It is a pure function of ``(seed, epoch, rank, world_size)`` and does not depend
on the number of DataLoader workers, so :class:`~contrastive.data.resume.ResumableLoader`
resumes a mid-epoch checkpoint exactly, and the crops are seeded per sample index as on
the file stream (:mod:`contrastive.data.stream`). Random access also lets every method,
SPCL's prototype sampler included, run on shards.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch

from contrastive.data.io.decode import decode_rgb, resolve_decoder
from contrastive.data.shards.format import INDEX, read_manifest, verify_shards
from contrastive.data.stream import LazyImages, read_or_skip
from contrastive.core.errors import DatasetError
from contrastive.core.registry import DATASETS

log = logging.getLogger(__name__)


class ShardShuffleBatchSampler:
    """Seed-fixed, shard-aware shuffled batches; each rank reads a disjoint run of shards.

    Epoch ``e``: the shard order is ``randperm(len(shards))`` of generator ``seed + e``;
    the concatenated samples of that order are cut into ``world_size`` equal parts
    (``num_samples // world_size`` each; rank ``r`` takes part ``r``); inside a part,
    samples are shuffled within consecutive windows of ``window`` shards' worth of
    samples. Every rank yields the same number of batches (DDP steps in lockstep).

    Args:
        shard_sizes: Samples per shard, in storage order (sample ``i`` of the dataset is
            in the shard whose cumulative range holds ``i``).
        batch_size: Per-rank batch size.
        seed, rank, world_size: As :class:`~contrastive.data.base.RandomBatchSampler`.
        window: Shards whose samples are shuffled together (more: a better shuffle,
            more shards open at once).
        drop_last: Drop the incomplete last batch.
    """

    def __init__(self, shard_sizes: List[int], batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 window: int = 8, drop_last: bool = True) -> None:
        if batch_size < 1 or window < 1:
            raise ValueError(f"batch_size and window must be >= 1, got {batch_size}, {window}")
        self.shard_sizes = [int(c) for c in shard_sizes]
        self.starts = torch.tensor([0] + self.shard_sizes[:-1]).cumsum(0).tolist()
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.window, self.drop_last, self.epoch = window, drop_last, 0
        self.part = sum(self.shard_sizes) // world_size  # samples per rank and epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.part // self.batch_size if self.drop_last else -(-self.part // self.batch_size)

    def rank_order(self) -> torch.Tensor:
        """int64 ``[part]``: this rank's sample indices of the epoch, in reading order."""
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        shards = torch.randperm(len(self.shard_sizes), generator=g).tolist()
        order = torch.cat([torch.arange(self.starts[c], self.starts[c] + self.shard_sizes[c]) for c in shards])
        mine = order[self.rank * self.part : (self.rank + 1) * self.part]  # [part], disjoint across ranks
        window = self.window * max(1, sum(self.shard_sizes) // len(self.shard_sizes))
        # All ranks draw the same permutations (same generator), each applied to its own part.
        pieces = [mine[s : s + window] for s in range(0, len(mine), window)]
        return torch.cat([p[torch.randperm(len(p), generator=g)] for p in pieces]) if pieces else mine

    def __iter__(self) -> Iterator[List[int]]:
        order = self.rank_order()
        for b in range(len(self)):
            yield order[b * self.batch_size : (b + 1) * self.batch_size].tolist()


@dataclass
class ShardImages(LazyImages):
    """:class:`~contrastive.data.stream.LazyImages` over one converted split.

    ``rows`` maps this array's index to the entry of the split (``None``: all of them, in
    storage order). The index table is memory-mapped (one copy per node in the page
    cache); every process opens the shard files once and reads with ``os.pread``
    (thread-safe, no shared file offset).
    """

    root: str
    size: int
    shard_files: List[str]
    shard_sizes: List[int]
    resize: Optional[int] = None
    decoder: str = "auto"
    on_bad_image: str = "error"
    num_workers: Optional[int] = 0  # None: a share of the cores per local process, when the loader is built
    crop_ratio: Tuple[float, float] = (3 / 4, 4 / 3)
    shuffle_window: int = 8
    rows: Optional[List[int]] = None
    _open: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.decoder = resolve_decoder(self.decoder)  # here, not in each worker's decode: a bad name is a config error

    def __len__(self) -> int:
        return sum(self.shard_sizes) if self.rows is None else len(self.rows)

    def __getstate__(self) -> dict:  # file handles are per process: not pickled into spawned workers
        return {**self.__dict__, "_open": None}

    def _files(self) -> Tuple[np.ndarray, Dict[int, int]]:
        if self._open is None or self._open[2] != os.getpid():
            table = np.load(Path(self.root) / INDEX, mmap_mode="r")  # int64 [N, 4]
            self._open = (table, {}, os.getpid())
        return self._open[0], self._open[1]

    def raw(self, row: int) -> bytes:
        """The stored bytes of entry ``row`` (the image file as it was)."""
        table, fds = self._files()
        shard, offset, size, _ = (int(v) for v in table[row])
        if shard not in fds:
            fds[shard] = os.open(Path(self.root) / self.shard_files[shard], os.O_RDONLY)
        data = os.pread(fds[shard], size, offset)
        if len(data) != size:
            raise OSError(f"shard {self.shard_files[shard]} ends inside image {row} (truncated?)")
        return data

    def select(self, indices: Any) -> "ShardImages":
        idx = torch.as_tensor(indices, dtype=torch.long).flatten().tolist()
        rows = idx if self.rows is None else [self.rows[i] for i in idx]
        return ShardImages(self.root, self.size, self.shard_files, self.shard_sizes, self.resize, self.decoder,
                           self.on_bad_image, self.num_workers, self.crop_ratio, self.shuffle_window, rows)

    @property
    def whole(self) -> bool:
        """All entries in storage order (the shard-aware sampler applies)."""
        return self.rows is None

    def read(self, i: int, transform) -> Optional[torch.Tensor]:
        row = i if self.rows is None else self.rows[i]
        return read_or_skip(f"{self.root} image {row}", self.on_bad_image, transform,
                            lambda: decode_rgb(self.raw(row), self.decoder))


def _open_split(cfg: Any, folder: Path) -> Tuple[ShardImages, torch.Tensor, List[str]]:
    from contrastive.data.sources.standard import cache_dir_of, decode_settings

    manifest = read_manifest(folder)
    verify_shards(folder, manifest, str(cfg.verify_shards), cache_dir_of(cfg))
    d = decode_settings(cfg)
    window = int(cfg.shuffle_window)
    if window < 1:
        raise DatasetError(f"dataset.shuffle_window must be >= 1 shard, got {window}")
    images = ShardImages(str(folder), d.size, [s["filename"] for s in manifest["shards"]], [s["samples"] for s in manifest["shards"]],
                         d.resize, d.decoder, d.on_bad_image, d.num_workers, d.crop_ratio, window)
    labels = torch.from_numpy(np.array(np.load(folder / INDEX, mmap_mode="r")[:, 3]))  # int64 [N]
    return images, labels, list(manifest["classes"])


@DATASETS.register("shards")
def shards(cfg: Any):
    """``<root>/<train_dir>`` and ``<root>/<val_dir>`` written by ``contrastive.data.shards.writer``."""
    from contrastive.data.base import DatasetSplits, ImageArray

    if str(cfg.storage) == "memory":
        raise DatasetError("dataset=shards streams its images (dataset.storage=stream or auto); to hold a dataset in "
                           "memory, use its image folder (dataset=imagefolder dataset.storage=memory)")
    root = Path(str(cfg.root)).expanduser()
    if "://" in str(cfg.root):
        raise DatasetError(f"dataset.root='{cfg.root}': dataset=shards reads local folders; copy the shards to this "
                           "machine's disk first (e.g. `aws s3 sync` / `gsutil rsync`)")
    train_images, train_labels, classes = _open_split(cfg, root / str(cfg.train_dir))
    val_images, val_labels, val_classes = _open_split(cfg, root / str(cfg.val_dir))
    if val_classes != classes:
        raise DatasetError(f"the classes of '{root / cfg.val_dir}' differ from '{root / cfg.train_dir}': "
                           f"{', '.join(sorted(set(val_classes) ^ set(classes))[:10])}")
    train = ImageArray(train_images, train_labels)
    log.info("dataset=shards: %d train images in %d shards, %d val images, streamed with %s workers per process",
             len(train_images), len(train_images.shard_files), len(val_images),
             "cores / local processes" if train_images.num_workers is None else train_images.num_workers)
    mean, std = tuple(float(m) for m in cfg.mean), tuple(float(s) for s in cfg.std)
    return DatasetSplits(train, train, ImageArray(val_images, val_labels), classes, mean, std)
