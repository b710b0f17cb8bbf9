"""Per-sample memory banks: state indexed by dataset sample index.

:class:`FeatureBank` keeps one feature vector per training image (SimCLIC's history
representation; reusable for any method that needs "what this sample looked like
earlier"). Its tensors are registered buffers, so they move with the model to the
training device, are saved in every checkpoint and are restored exactly on resume.

Under DDP every process must call :meth:`FeatureBank.update` with the *gathered*
indices and features of the global batch (``LightningModule.all_gather``), so that all
copies of the bank stay identical; :meth:`FeatureBank.lookup` is then local.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn


class FeatureBank(nn.Module):
    """A ``[size, dim]`` float32 bank of features plus a ``filled`` mask.

    Args:
        size: Number of samples (the training set size); valid indices are ``0..size-1``.
        dim: Feature dimension.
        momentum: Refresh rule for a sample already stored:
            ``bank[i] = momentum * bank[i] + (1 - momentum) * new``; ``0`` replaces the
            stored feature. A sample stored for the first time always gets ``new``
            (blending with the zero initialisation would only shrink it).
    """

    def __init__(self, size: int, dim: int, momentum: float = 0.0) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"FeatureBank needs size >= 1 and dim >= 1, got size={size}, dim={dim}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"FeatureBank momentum must be in [0, 1), got {momentum}")
        self.momentum = float(momentum)
        self.register_buffer("features", torch.zeros(size, dim))
        self.register_buffer("filled", torch.zeros(size, dtype=torch.bool))

    @property
    def size(self) -> int:
        return int(self.features.shape[0])

    def _index(self, indices: torch.Tensor) -> torch.Tensor:
        idx = torch.as_tensor(indices, device=self.features.device).long().flatten()
        if idx.numel():
            low, high = torch.stack([idx.min(), idx.max()]).tolist()  # one device sync
            if low < 0 or high >= self.size:
                raise IndexError(f"FeatureBank indices must be in [0, {self.size}), got values in [{low}, {high}]")
        return idx

    @torch.no_grad()
    def update(self, indices: torch.Tensor, features: torch.Tensor) -> None:
        """Store ``features [B, dim]`` (detached, cast to float32) for sample ``indices [B]``.

        Indices should be unique within one call (with duplicates, one of the rows wins).
        """
        idx = self._index(indices)
        new = features.detach().to(self.features.dtype).reshape(len(idx), -1)
        if self.momentum > 0:
            seen = self.filled[idx].unsqueeze(1)
            new = torch.where(seen, self.momentum * self.features[idx] + (1.0 - self.momentum) * new, new)
        self.features.index_copy_(0, idx, new)
        self.filled[idx] = True

    def lookup(self, indices: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(features [B, dim], filled [B] bool)`` for sample ``indices``; rows of samples
        never stored are zeros and ``filled`` is False for them (the caller picks a fallback)."""
        idx = self._index(indices)
        return self.features[idx], self.filled[idx]

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.features.shape[1]}, momentum={self.momentum}"
