"""The one layout of a training batch that methods see, whatever the storage.

The loaders deliver uint8 images in one of two shapes: full images ``[B, 3, H, W]`` (in memory,
``dataset=shards``, a user's own ``DataLoader``), which the on-device augmentation crops, or
crops that the DataLoader workers already cut and flipped ``[B, V, 3, S, S]``
(``dataset.storage=stream``, :mod:`contrastive.data.stream`), which only need the photometric
part; with multi-crop the workers also cut the local crops, and the loader delivers the pair
``([B, V, 3, S, S], [B, L, 3, s, s])``. :class:`ViewBatch` is built once per batch (:meth:`ViewBatch.of`, called by the ``Method``
base class) and hides the difference: a method asks it for augmented views of rows of the batch,
naming which of the workers' crops each row takes, and gets float ``[n, 3, S, S]`` either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

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
        local: uint8 ``[B, L, 3, s, s]``, the workers' multi-crop local crops (streamed batches of a
            multi-crop method), else ``None``. They are crops ``V..V+L-1`` of :meth:`augmented`.
    """

    images: Tensor
    labels: Tensor
    indices: Tensor
    precropped: bool = False
    local: Optional[Tensor] = None

    @classmethod
    def of(cls, images: Union[Tensor, Sequence[Tensor]], labels: Tensor, indices: Optional[Tensor] = None) -> "ViewBatch":
        """The batch of a loader's ``(images, labels, indices)``; ``indices`` default to ``0..B-1``.
        ``images`` is a tensor, or the streamed multi-crop pair (global crops, local crops)."""
        local = None
        if isinstance(images, (tuple, list)):
            shapes = [tuple(x.shape) for x in images]
            if len(images) != 2 or images[0].ndim != 5 or images[1].ndim != 5 or images[0].shape[0] != images[1].shape[0]:
                raise ConfigError(f"a streamed multi-crop batch must be the pair (global crops [B, V, 3, S, S], local "
                                  f"crops [B, L, 3, s, s]), got shapes {shapes}")
            images, local = images
        if images.ndim not in (4, 5):
            raise ConfigError(f"a training batch must be uint8 images [B, 3, H, W] or streamed crops [B, V, 3, S, S], "
                              f"got shape {tuple(images.shape)}")
        if indices is None:
            indices = torch.arange(images.shape[0], device=images.device)
        return cls(images, labels, indices, precropped=images.ndim == 5, local=local)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def crops_per_image(self) -> Optional[int]:
        """``V`` (+ ``L`` local crops) for pre-cut crops; ``None`` for full images (any number of fresh crops)."""
        if not self.precropped:
            return None
        return int(self.images.shape[1]) + (0 if self.local is None else int(self.local.shape[1]))

    @property
    def num_local(self) -> int:
        """``L``, the workers' local crops per image (streamed multi-crop batches), else 0."""
        return 0 if self.local is None else int(self.local.shape[1])

    def augmented(self, augment: torch.nn.Module, rows: Optional[Tensor] = None, crop: Union[int, Tensor] = 0,
                  uint8_op: Optional[Uint8Op] = None) -> Tensor:
        """Augmented, normalised views of some rows of the batch.

        Args:
            augment: The method's on-device augmentation (``SimCLRAugment``/``SupervisedAugment``).
            rows: int64 ``[n]``, the images to take (repeats allowed); ``None``: all ``B`` in order.
            crop: Which of the workers' crops each row takes (pre-cut crops only; full images get
                a fresh random crop): an int for every row, or int64 ``[n]``. Crops ``V`` and above are
                the local crops (multi-crop; an int, or a tensor naming only local crops).
            uint8_op: Applied to the uint8 crops before the photometric part (AutoAugment).

        Returns:
            float32 ``[n, 3, S, S]``.
        """
        if not self.precropped:
            picked = self.images if rows is None else self.images.index_select(0, rows)  # uint8 [n, 3, H, W]
            if uint8_op is None:
                return augment(picked)  # crop/flip and photometric in one pass (one set of random draws)
            x = augment(picked, normalise=False)  # float [n, 3, S, S] in [0, 1]
            x = uint8_op(x.mul(255.0).round_().to(torch.uint8))  # uint8 [n, 3, S, S]
            return augment.normalise(x.float().div_(255.0))
        crops = self._precropped(rows, crop)  # uint8 [n, 3, S, S] (or [n, 3, s, s]: a local crop)
        if uint8_op is not None:
            crops = uint8_op(crops)
        return photometric(augment, crops)

    def _precropped(self, rows: Optional[Tensor], crop: Union[int, Tensor]) -> Tensor:
        """uint8 ``[n, 3, S, S]``: crop ``crop`` of each row (global ``0..V-1``, then the local crops)."""
        v = int(self.images.shape[1])
        source, first = self.images, 0
        if self.local is not None:
            local = crop >= v if isinstance(crop, int) else bool((crop >= v).all())  # (a sync only for multi-crop)
            if local:
                source, first = self.local, v
            elif not isinstance(crop, int) and bool((crop >= v).any()):
                raise ConfigError(f"one ViewBatch.augmented call takes either global crops (< {v}) or local crops "
                                  f"(>= {v}) of a streamed multi-crop batch, got crops {sorted(set(crop.tolist()))}")
        if isinstance(crop, int) and not 0 <= crop - first < source.shape[1]:
            raise ConfigError(f"crop={crop} of a streamed batch: valid crops are 0..{self.crops_per_image - 1} "
                              f"({v} global crops, then {self.num_local} local crops)")
        picked = source if rows is None else source.index_select(0, rows)  # uint8 [n, V or L, 3, ., .]
        if isinstance(crop, int):
            return picked[:, crop - first]
        return picked[torch.arange(picked.shape[0], device=picked.device), crop - first]
