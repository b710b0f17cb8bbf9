"""The training crops of ``dataset.storage=stream``, cut per image in the DataLoader workers.

The *geometric* part of the training augmentation (:class:`Geometric`: random-resized crop of
the full-resolution image with the configured scale and ratio, or the CIFAR-style padded shift,
then the horizontal flip) runs here; :mod:`contrastive.data.stream` holds the loaders around it.

Multi-crop (``augment.multicrop``, SwAV, DINO, DeepCluster v2): :class:`LocalCrops` cuts the
``num_local`` low-resolution crops as well, each a random-resized crop of the full-resolution
image with the local scale range ``(min_scale, max_scale)``, resized to ``multicrop.size`` and
flipped, so a batch carries uint8 global crops ``[B, V, 3, S, S]`` and local crops
``[B, L, 3, s, s]``. Not stated in the papers we hold: our choice because it is what the
in-memory path does to the decoded image and what the authors' loaders do to the original
image (every crop is an independent random-resized crop of the whole image).

Crop ``v`` of sample ``i`` in epoch ``e`` (global crops ``0..V-1``, then local crops
``V..V+L-1``) comes from a generator seeded with ``(seed, e, i, v)``: crops depend neither on
the number of workers nor on where an interrupted epoch resumed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import Dataset

from contrastive.core.errors import ConfigError, DatasetError
from contrastive.data.io.decode import crop_resize, pad_shift_crop, resize_center_crop, sample_crop_box


@dataclass
class Geometric:
    """The per-image geometric part of a training augmentation."""

    kind: str  # "rrc": random-resized crop of the full image | "pad": resize+center crop, padded shift
    scale: Tuple[float, float] = (0.08, 1.0)
    ratio: Tuple[float, float] = (3 / 4, 4 / 3)
    hflip_prob: float = 0.5
    padding: int = 0


def geometric_of(augment: torch.nn.Module, ratio: Tuple[float, float]) -> Geometric:
    """The geometric part of :class:`~contrastive.augment.pipelines.SimCLRAugment` or
    :class:`~contrastive.augment.pipelines.SupervisedAugment` (the built-in augmentations), or of
    the global views of a :class:`~contrastive.augment.views.ViewAugments` (which must agree)."""
    from contrastive.augment.pipelines import SimCLRAugment, SupervisedAugment
    from contrastive.augment.views import ViewAugments

    if isinstance(augment, ViewAugments):
        return _agreed([geometric_of(augment.view(v), ratio) for v in range(augment.num_global)], "global views (augment.per_view)")
    if isinstance(augment, SimCLRAugment):
        return Geometric("rrc", tuple(augment.scale), tuple(ratio), float(augment.hflip_prob))
    if isinstance(augment, SupervisedAugment):
        if augment.random_resized_crop:
            return Geometric("rrc", (float(augment.min_scale), 1.0), tuple(ratio), float(augment.hflip_prob))
        if getattr(augment, "shift_range", None) is not None or getattr(augment, "shift_fill", "zero") != "zero":
            raise ConfigError(f"dataset.storage=stream shifts by augment.padding pixels with zero fill; augment.shift_range="
                              f"{augment.shift_range} / augment.shift_fill={augment.shift_fill} (Keras shifts) need "
                              "dataset.storage=memory")
        return Geometric("pad", hflip_prob=float(augment.hflip_prob), padding=int(augment.padding))
    raise ConfigError(f"dataset.storage=stream supports the built-in augmentations (simclr, supervised), "
                      f"not {augment.__class__.__name__}")


def _agreed(geometrics: List[Geometric], what: str) -> Geometric:
    if any(g != geometrics[0] for g in geometrics[1:]):
        raise ConfigError(f"dataset.storage=stream cuts all {what} with one crop/flip setting, got {geometrics}; "
                          "give them the same crop/flip keys or set dataset.storage=memory")
    return geometrics[0]


def crop_seed(seed: int, epoch: int, index: int, view: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch) * 7_919_009 + int(index) * 104_729 + int(view) * 15_485_863) % (2**63)


@dataclass
class LocalCrops:
    """The multi-crop local crops of every image: ``num`` random-resized crops of ``size`` pixels."""

    num: int
    size: int
    geometric: Geometric

    def cut(self, image: torch.Tensor, seed: int, epoch: int, index: int, first_view: int) -> torch.Tensor:
        """uint8 ``[3, H, W]`` full image -> ``[num, 3, size, size]``; crop ``j`` is seeded as view ``first_view + j``."""
        g, (h, w), out = self.geometric, image.shape[-2:], []
        for j in range(self.num):
            gen = torch.Generator().manual_seed(crop_seed(seed, epoch, index, first_view + j))
            box = sample_crop_box(h, w, g.scale, g.ratio, gen)
            out.append(crop_resize(image, box, self.size, bool(torch.rand(1, generator=gen).item() < g.hflip_prob)))
        return torch.stack(out)  # [L, 3, s, s]


def local_crops_of(augment: torch.nn.Module, ratio: Tuple[float, float]) -> Optional[LocalCrops]:
    """The local crops of a multi-crop :class:`~contrastive.augment.views.ViewAugments`; ``None`` without."""
    from contrastive.augment.views import ViewAugments

    if not isinstance(augment, ViewAugments) or augment.num_local == 0:
        return None
    views = range(augment.num_global, len(augment))
    geometric = _agreed([geometric_of(augment.view(v), ratio) for v in views], "local crops (augment.multicrop)")
    if geometric.kind != "rrc":
        raise ConfigError(f"dataset.storage=stream cuts augment.multicrop local crops as random-resized crops; "
                          f"{augment.view(augment.num_global).__class__.__name__} with random_resized_crop=false "
                          "needs dataset.storage=memory")
    return LocalCrops(augment.num_local, int(augment.view(augment.num_global).image_size), geometric)


def fill_skipped(images: List[Optional[Any]]) -> List[Any]:
    """Each ``None`` (an unreadable image, ``on_bad_image=skip``) replaced by its batch neighbour."""
    good = [x for x in images if x is not None]
    if not good:
        raise DatasetError(f"none of the {len(images)} images of a batch could be decoded")
    last, out = good[0], []
    for x in images:
        last = x if x is not None else last
        out.append(last)
    return out


class CropBatches(Dataset):
    """Training batches of crops: ``ds[(epoch, [i, j, ...])] -> (uint8 [B, V, 3, S, S], labels [B], indices [B])``.

    With ``local`` (multi-crop) the images are a pair ``(uint8 [B, V, 3, S, S], uint8 [B, L, 3, s, s])``.
    ``files`` is a :class:`~contrastive.data.stream.LazyImages` (``read``, ``size``).
    """

    def __init__(self, files: Any, labels: torch.Tensor, geometric: Geometric, views: int, seed: int,
                 local: Optional[LocalCrops] = None) -> None:
        self.files, self.labels, self.geometric = files, labels, geometric
        self.views, self.seed, self.local = int(views), int(seed), local

    def __len__(self) -> int:
        return len(self.files)

    def crops(self, image: torch.Tensor, epoch: int, index: int) -> torch.Tensor:
        """uint8 ``[3, H, W]`` full image -> ``[V, 3, S, S]`` independent crops."""
        g, size, out = self.geometric, self.files.size, []
        if g.kind == "pad":
            image = resize_center_crop(image, size)
        h, w = image.shape[-2:]
        for v in range(self.views):
            gen = torch.Generator().manual_seed(crop_seed(self.seed, epoch, index, v))
            if g.kind == "rrc":
                box = sample_crop_box(h, w, g.scale, g.ratio, gen)
                flip = bool(torch.rand(1, generator=gen).item() < g.hflip_prob)
                out.append(crop_resize(image, box, size, flip))
            else:
                flip = bool(torch.rand(1, generator=gen).item() < g.hflip_prob)
                out.append(pad_shift_crop(image, size, g.padding, gen, flip))
        return torch.stack(out)  # [V, 3, S, S]

    def all_crops(self, image: torch.Tensor, epoch: int, index: int) -> Any:
        """The global crops ``[V, 3, S, S]``, and with ``local`` the pair (global, local ``[L, 3, s, s]``)."""
        crops = self.crops(image, epoch, index)
        if self.local is None:
            return crops
        return crops, self.local.cut(image, self.seed, epoch, index, first_view=self.views)

    def __getitem__(self, item: Tuple[int, Sequence[int]]) -> Tuple[Any, torch.Tensor, torch.Tensor]:
        epoch, indices = item
        crops = fill_skipped([self.files.read(i, lambda im, i=i: self.all_crops(im, epoch, i)) for i in indices])
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        if self.local is None:
            return torch.stack(crops), self.labels[idx], idx  # [B, V, 3, S, S]
        images = (torch.stack([c[0] for c in crops]), torch.stack([c[1] for c in crops]))  # [B, V, 3, S, S], [B, L, 3, s, s]
        return images, self.labels[idx], idx
