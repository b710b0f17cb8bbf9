"""The dataset registry: every entry turns a ``dataset`` config into :class:`DatasetSplits`.

Built in: ``synthetic`` (the embedded default, generated in seconds), ``cifar10``,
``cifar100``, ``stl10`` (torchvision), ``tinyimagenet`` (the standard
``tiny-imagenet-200`` folder), ``imagefolder`` (any class-per-folder tree) and, in
:mod:`contrastive.data.sources.imagenet`, ``imagenet`` and ``imagenet100``. The file-based
ones are held in memory or streamed (``dataset.storage``, :func:`file_splits`).
Register your own with ``@DATASETS.register("name")`` on a function
``(cfg) -> DatasetSplits`` and a ``configs/dataset/<name>.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Tuple

import numpy as np
import torch

from contrastive.data.base import DatasetSplits, ImageArray, class_balanced_subset
from contrastive.data.io.folders import decode_files, list_class_folders
from contrastive.core.errors import DatasetError
from contrastive.core.registry import DATASETS


def build_dataset(cfg: Any) -> DatasetSplits:
    """Load the dataset named by ``cfg.name`` and apply ``cfg.label_fraction``."""
    from contrastive.data.stream import STORAGE

    if str(cfg.storage) not in STORAGE:
        raise DatasetError(f"dataset.storage='{cfg.storage}' is not valid; choose one of {', '.join(STORAGE)}")
    splits = DATASETS.create(cfg.name, cfg)
    if str(cfg.storage) == "stream" and not splits.train.streamed:
        raise DatasetError(f"dataset.storage=stream needs image files (imagefolder, imagenet, imagenet100, tinyimagenet); "
                           f"'{cfg.name}' is an in-memory array: use dataset.storage=memory")
    fraction = float(cfg.label_fraction)
    if fraction != 1.0:
        if not 0.0 < fraction <= 1.0:
            raise DatasetError(f"dataset.label_fraction must be in (0, 1], got {fraction}")
        if not bool((splits.train.labels >= 0).all()):
            raise DatasetError(f"dataset.label_fraction needs a fully labeled train split; '{cfg.name}' has unlabeled images")
        keep = class_balanced_subset(splits.train.labels, fraction, seed=int(cfg.subset_seed))
        splits.train = splits.train.subset(keep)
        splits.train_labeled = splits.train
    return splits


def _stats(cfg: Any) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    return tuple(float(m) for m in cfg.mean), tuple(float(s) for s in cfg.std)


def _root(cfg: Any) -> Path:
    return Path(str(cfg.root)).expanduser()


@DATASETS.register("synthetic")
def synthetic(cfg: Any) -> DatasetSplits:
    """Procedural shapes (see :mod:`contrastive.data.sources.synthetic`); no files needed."""
    from contrastive.data.sources.synthetic import CLASS_NAMES, generate_shapes

    size, k, seed = int(cfg.image_size), int(cfg.num_classes), int(cfg.seed)
    train = ImageArray(*generate_shapes(int(cfg.num_train), size, k, seed=seed))
    # A different seed stream for val, so the two splits never share an image.
    val = ImageArray(*generate_shapes(int(cfg.num_val), size, k, seed=seed + 1_000_003))
    mean, std = _stats(cfg)
    return DatasetSplits(train, train, val, list(CLASS_NAMES[:k]), mean, std)


def _missing(name: str, where: Path, how: str) -> DatasetError:
    return DatasetError(f"dataset '{name}' not found at '{where}'; {how}")


def _cifar(cfg: Any, cls_name: str, folder: str) -> DatasetSplits:
    import torchvision

    root = _root(cfg)
    if not (root / folder).is_dir() and not cfg.download:
        raise _missing(cfg.name, root / folder, f"run with dataset.download=true or set dataset.root to the folder holding '{folder}'")
    cls = getattr(torchvision.datasets, cls_name)
    arrays = []
    for train in (True, False):
        ds = cls(str(root), train=train, download=bool(cfg.download))
        images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()  # [N,3,32,32]
        arrays.append(ImageArray(images, torch.as_tensor(ds.targets, dtype=torch.long)))
    mean, std = _stats(cfg)
    return DatasetSplits(arrays[0], arrays[0], arrays[1], list(ds.classes), mean, std)


@DATASETS.register("cifar10")
def cifar10(cfg: Any) -> DatasetSplits:
    return _cifar(cfg, "CIFAR10", "cifar-10-batches-py")


@DATASETS.register("cifar100")
def cifar100(cfg: Any) -> DatasetSplits:
    return _cifar(cfg, "CIFAR100", "cifar-100-python")


@DATASETS.register("stl10")
def stl10(cfg: Any) -> DatasetSplits:
    """STL-10: self-supervised training on train+unlabeled (105k), kNN/probe on train (5k)."""
    import torchvision

    root = _root(cfg)
    if not (root / "stl10_binary").is_dir() and not cfg.download:
        raise _missing("stl10", root / "stl10_binary", "run with dataset.download=true or set dataset.root to the folder holding 'stl10_binary'")

    def load(split: str) -> Tuple[ImageArray, List[str]]:
        ds = torchvision.datasets.STL10(str(root), split=split, download=bool(cfg.download))
        images = torch.from_numpy(ds.data)  # already [N, 3, 96, 96] uint8
        return ImageArray(images, torch.as_tensor(ds.labels, dtype=torch.long)), list(ds.classes)

    train_key = "train+unlabeled" if bool(cfg.use_unlabeled) else "train"
    train, classes = load(train_key)
    labeled, _ = load("train") if train_key != "train" else (train, classes)
    val, _ = load("test")
    mean, std = _stats(cfg)
    return DatasetSplits(train, labeled, val, classes, mean, std)


def cache_dir_of(cfg: Any) -> Optional[Path]:
    """``dataset.cache_dir`` as a path; ``null`` or empty: no cache."""
    return Path(str(cfg.cache_dir)).expanduser() if cfg.cache_dir else None


@dataclass(frozen=True)
class DecodeSettings:
    """The ``dataset`` keys of every encoded-image source (files, shards), checked once."""

    size: int
    resize: int  # shorter side before the evaluation center crop
    decoder: str  # the concrete decoder (dataset.decoder=auto resolved on this machine)
    on_bad_image: str
    num_workers: Optional[int]  # stream: decoding processes per training process (None: cores / local processes)
    crop_ratio: Tuple[float, float]  # stream: aspect-ratio range of the random-resized crop


def decode_settings(cfg: Any) -> DecodeSettings:
    """:class:`DecodeSettings` of a ``dataset`` config; one-line errors name a bad value."""
    from contrastive.data.io.decode import eval_resize, resolve_decoder
    from contrastive.data.io.folders import BAD_IMAGE_POLICIES
    from contrastive.data.stream import check_workers

    size, policy, decoder = int(cfg.image_size), str(cfg.on_bad_image), resolve_decoder(str(cfg.decoder))
    if policy not in BAD_IMAGE_POLICIES:
        raise DatasetError(f"dataset.on_bad_image='{policy}' is not valid; choose one of {BAD_IMAGE_POLICIES}")
    ratio = tuple(float(r) for r in cfg.crop_ratio)
    if len(ratio) != 2 or not 0 < ratio[0] <= ratio[1]:
        raise DatasetError(f"dataset.crop_ratio must be [min, max] with 0 < min <= max, got {list(ratio)}")
    return DecodeSettings(size, eval_resize(size, float(cfg.eval_crop_fraction)), decoder, policy,
                          check_workers(cfg.num_workers), ratio)


def file_splits(cfg: Any, classes: List[str], train_files: List[Tuple[Path, int]], val_files: List[Tuple[Path, int]],
                label: str) -> DatasetSplits:
    """Splits of a file-based dataset, decoded into the memory-mapped cache or streamed
    (``dataset.storage``, see :func:`contrastive.data.stream.choose_storage`)."""
    from contrastive.data.stream import FileImages, choose_storage

    d = decode_settings(cfg)
    size, policy, decoder, resize = d.size, d.on_bad_image, d.decoder, d.resize
    storage = choose_storage(str(cfg.storage), len(train_files) + len(val_files), size, float(cfg.auto_ram_share),
                             str(cfg.name))
    mean, std = _stats(cfg)
    if storage == "stream":

        def lazy(files: List[Tuple[Path, int]]) -> ImageArray:
            images = FileImages([str(p) for p, _ in files], size, resize, decoder, policy, d.num_workers, d.crop_ratio)
            return ImageArray(images, torch.tensor([c for _, c in files], dtype=torch.long))

        train = lazy(train_files)
        return DatasetSplits(train, train, lazy(val_files), classes, mean, std)
    cache, verify = cache_dir_of(cfg), bool(cfg.cache_verify)
    train, skipped = decode_files(train_files, size, policy, cache, f"{label} train", resize, decoder, verify)
    val, skipped_val = decode_files(val_files, size, policy, cache, f"{label} val", resize, decoder, verify)
    return DatasetSplits(train, train, val, classes, mean, std, skipped + skipped_val)


@DATASETS.register("tinyimagenet")
def tinyimagenet(cfg: Any) -> DatasetSplits:
    """Tiny ImageNet-200 in its standard layout, val labels from ``val_annotations.txt``."""
    root = _root(cfg)
    base = root if (root / "wnids.txt").is_file() else root / "tiny-imagenet-200"
    if not (base / "wnids.txt").is_file():
        raise _missing("tinyimagenet", base, "unpack tiny-imagenet-200.zip there (train/, val/, wnids.txt) and set dataset.root")
    wnids = (base / "wnids.txt").read_text().split()
    label_of = {w: i for i, w in enumerate(wnids)}
    train_files = [(p, label_of[w]) for w in wnids for p in sorted((base / "train" / w / "images").glob("*.JPEG"))]
    annotations = base / "val" / "val_annotations.txt"
    if not train_files or not annotations.is_file():
        raise DatasetError(f"'{base}' is incomplete: expected train/<wnid>/images/*.JPEG and val/val_annotations.txt")
    val_files = []
    for line in annotations.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and parts[1] in label_of:
            val_files.append((base / "val" / "images" / parts[0], label_of[parts[1]]))
    return file_splits(cfg, wnids, train_files, val_files, "tinyimagenet")


@DATASETS.register("imagefolder")
def imagefolder(cfg: Any) -> DatasetSplits:
    """Any ``root/{train,val}/<class>/<image>`` tree at any resolution: decoded to
    ``image_size`` squares (memory) or streamed with crops of the full image (stream)."""
    root = _root(cfg)
    classes, train_files = list_class_folders(root / str(cfg.train_dir))
    val_classes, val_files = list_class_folders(root / str(cfg.val_dir))
    if val_classes != classes:
        extra = sorted(set(val_classes) ^ set(classes))
        raise DatasetError(f"class folders of '{root / cfg.val_dir}' and '{root / cfg.train_dir}' differ: {', '.join(extra[:10])}")
    return file_splits(cfg, classes, train_files, val_files, "imagefolder")
