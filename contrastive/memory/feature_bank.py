"""Per-sample memory banks: state indexed by dataset sample index.

:class:`FeatureBank` keeps one feature vector per training image (SimCLIC's history
representation; reusable for any method that needs "what this sample looked like
earlier").

Under DDP every process calls :meth:`FeatureBank.update` with the *gathered* indices
and features of the global batch (``LightningModule.all_gather``), so all copies of the
bank stay identical and :meth:`FeatureBank.lookup` is local. For that reason the bank
is deliberately *not* a registered buffer: DDP broadcasts every buffer from rank 0
before each forward (``broadcast_buffers=True``, Lightning's default), which for a
bank of ``num_train x D`` floats (100,000 x 512 x 4 B = 205 MB on Tiny ImageNet) would
cost a redundant broadcast every step. It is still part of ``state_dict()`` (keys
``<prefix>features`` and ``<prefix>filled``), so checkpoints hold it and a resumed run
continues with the exact bank; it follows the device of the tensors it is given.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

from contrastive.core.plain_state import load_plain_tensor

_KEYS = ("features", "filled")


class FeatureBank(nn.Module):
    """A ``[size, dim]`` float32 bank of features plus a ``filled [size]`` bool mask.

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
        self.features = torch.zeros(size, dim)  # [N, D] float32, plain attribute (see module doc)
        self.filled = torch.zeros(size, dtype=torch.bool)  # [N]

    @property
    def size(self) -> int:
        return int(self.features.shape[0])

    def _to(self, device: torch.device) -> None:
        """Follow the device of the training tensors (``model.to`` does not move the bank)."""
        if self.features.device != device:
            self.features, self.filled = self.features.to(device), self.filled.to(device)

    def _index(self, indices: torch.Tensor) -> torch.Tensor:
        idx = torch.as_tensor(indices, device=self.features.device).long().flatten()
        message = f"FeatureBank indices must be in [0, {self.size})"
        try:  # checked on the device (a GPU reports it when the step runs): no host sync; the CPU checks at once
            torch._assert_async(((idx >= 0) & (idx < self.size)).all(), message)
        except RuntimeError:
            raise IndexError(message) from None
        return idx

    @torch.no_grad()
    def update(self, indices: torch.Tensor, features: torch.Tensor) -> None:
        """Store ``features [B, dim]`` (detached, cast to float32) for sample ``indices [B]``.

        Indices should be unique within one call (with duplicates, one of the rows wins).
        """
        self._to(features.device)
        idx = self._index(indices)
        new = features.detach().to(self.features.dtype).reshape(len(idx), -1)  # [B, D]
        if self.momentum > 0:
            seen = self.filled[idx].unsqueeze(1)  # [B, 1]
            new = torch.where(seen, self.momentum * self.features[idx] + (1.0 - self.momentum) * new, new)
        self.features.index_copy_(0, idx, new)
        self.filled[idx] = True

    def lookup(self, indices: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(features [B, dim], filled [B] bool)`` for sample ``indices [B]``, on the device of
        ``indices``; rows of samples never stored are zeros and ``filled`` is False for them
        (the caller picks a fallback)."""
        if isinstance(indices, torch.Tensor):
            self._to(indices.device)
        idx = self._index(indices)
        return self.features[idx], self.filled[idx]

    # ---------------------------------------------------------------- checkpointing
    # state_dict() hooks of nn.Module, overridden because the tensors are not buffers.
    def _save_to_state_dict(self, destination, prefix, keep_vars) -> None:
        for key in _KEYS:
            value = getattr(self, key)
            destination[prefix + key] = value if keep_vars else value.detach()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                              missing_keys, unexpected_keys, error_msgs) -> None:
        for key in _KEYS:
            value = load_plain_tensor(state_dict, prefix + key, getattr(self, key), missing_keys, error_msgs)
            if value is not None:
                setattr(self, key, value)

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.features.shape[1]}, momentum={self.momentum}"
