"""The device half of ``dataset.storage=stream``: the photometric part of the augmentation.

Streamed batches arrive as uint8 crops already at the training size (the geometric part
ran per image in the DataLoader workers, :mod:`contrastive.data.stream`); colour jitter,
grayscale, blur, solarize and normalisation run here, batch-wise on the training device,
with the same random draws as the in-memory path.
"""

from __future__ import annotations

from typing import List, Optional

import torch


def photometric(augment: torch.nn.Module, images: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """The photometric part of ``augment`` on crops that are already at the training size.

    Args:
        augment: A :class:`~contrastive.augment.pipelines.SimCLRAugment` or ``SupervisedAugment``.
        images: uint8 ``[B, 3, S, S]`` streamed crops.

    Returns:
        float32 ``[B, 3, S, S]``, normalised.
    """
    from contrastive.augment.ops import to_float
    from contrastive.augment.pipelines import SimCLRAugment

    if isinstance(augment, SimCLRAugment):
        b, _, h, w = images.shape
        params = augment.sample_params(b, h, w, images.device, generator)  # same RNG draws as the memory path
        # The crop and flip of params are not used: the workers already cropped and flipped (no identity resample).
        return augment.photometric(to_float(images), params)
    return augment.normalise(to_float(images))


def stream_views(augment: torch.nn.Module, images: torch.Tensor) -> List[torch.Tensor]:
    """uint8 ``[B, V, 3, S, S]`` -> ``V`` float views ``[B, 3, S, S]`` (photometric part only)."""
    return [photometric(augment, images[:, v]) for v in range(images.shape[1])]
