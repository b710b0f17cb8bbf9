"""The one layout of a training batch that methods see, whatever the storage.

The loaders deliver uint8 images in one of two shapes: full images ``[B, 3, H, W]`` (in memory,
``dataset=shards``, a user's own ``DataLoader``), which the on-device augmentation crops, or
crops that the DataLoader workers already cut and flipped ``[B, V, 3, S, S]``
(``dataset.storage=stream``, :mod:`contrastive.data.stream`), which only need the photometric
part. :class:`ViewBatch` is built once per batch (:meth:`ViewBatch.of`, called by the ``Method``
base class) and hides the difference: a method asks it for augmented views of rows of the batch,
naming which of the workers' crops each row takes, and gets float ``[n, 3, S, S]`` either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch
from torch import Tensor

from contrastive.augment.photometric import photometric
from contrastive.core.errors import ConfigError

#: A uint8 ``[n, 3, S, S]`` -> uint8 ``[n, 3, S, S]`` step between the geometric and the
#: photometric part of the augmentation (ImCLR's AutoAugment).
Uint8Op = Callable[[Tensor], Tensor]


@dataclass
class ViewBatch:
    """A training batch: uint8 images, labels and sample indices.

    Attributes:
        images: uint8, either full images ``[B, 3, H, W]`` or pre-cut crops ``[B, V, 3, S, S]``.
        labels: int64 ``[B]`` (``-1`` = unlabelled).
        indices: int64 ``[B]``, the samples' positions in the training set.
        precropped: Whether ``images`` are the workers' crops (``V`` per image) rather than full
            images. Set by :meth:`of` from the shape; methods never need to read it.
    """

    images: Tensor
    labels: Tensor
    indices: Tensor
    precropped: bool = False

    @classmethod
    def of(cls, images: Tensor, labels: Tensor, indices: Optional[Tensor] = None) -> "ViewBatch":
        """The batch of a loader's ``(images, labels, indices)``; ``indices`` default to ``0..B-1``."""
        if images.ndim not in (4, 5):
            raise ConfigError(f"a training batch must be uint8 images [B, 3, H, W] or streamed crops [B, V, 3, S, S], "
                              f"got shape {tuple(images.shape)}")
        if indices is None:
            indices = torch.arange(images.shape[0], device=images.device)
        return cls(images, labels, indices, precropped=images.ndim == 5)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def crops_per_image(self) -> Optional[int]:
        """``V`` for pre-cut crops; ``None`` for full images (any number of fresh crops)."""
        return int(self.images.shape[1]) if self.precropped else None

    def augmented(self, augment: torch.nn.Module, rows: Optional[Tensor] = None, crop: Union[int, Tensor] = 0,
                  uint8_op: Optional[Uint8Op] = None) -> Tensor:
        """Augmented, normalised views of some rows of the batch.

        Args:
            augment: The method's on-device augmentation (``SimCLRAugment``/``SupervisedAugment``).
            rows: int64 ``[n]``, the images to take (repeats allowed); ``None``: all ``B`` in order.
            crop: Which of the workers' crops each row takes (pre-cut crops only; full images get
                a fresh random crop): an int for every row, or int64 ``[n]``.
            uint8_op: Applied to the uint8 crops before the photometric part (AutoAugment).

        Returns:
            float32 ``[n, 3, S, S]``.
        """
        picked = self.images if rows is None else self.images.index_select(0, rows)  # uint8 [n, 3, H, W] / [n, V, 3, S, S]
        if not self.precropped:
            if uint8_op is None:
                return augment(picked)  # crop/flip and photometric in one pass (one set of random draws)
            x = augment(picked, normalise=False)  # float [n, 3, S, S] in [0, 1]
            x = uint8_op(x.mul(255.0).round_().to(torch.uint8))  # uint8 [n, 3, S, S]
            return augment.normalise(x.float().div_(255.0))
        if isinstance(crop, int):
            crops = picked[:, crop]  # uint8 [n, 3, S, S]
        else:
            crops = picked[torch.arange(picked.shape[0], device=picked.device), crop]  # uint8 [n, 3, S, S]
        if uint8_op is not None:
            crops = uint8_op(crops)
        return photometric(augment, crops)
