"""A first-in-first-out queue of keys (MoCo's dictionary), shared by MoCo v1/v2 and SwAV.

MoCo (He et al., CVPR 2020, Sec. 3.2): "we maintain the dictionary as a queue of data samples:
the current mini-batch is enqueued to the dictionary, and the oldest mini-batch in the queue is
removed." Under DDP every process enqueues the keys of the *global* batch (gathered from all
processes, in rank order), so the copies stay identical without a broadcast, and each step
writes exactly one block of ``global batch`` rows.

Like :class:`~contrastive.memory.feature_bank.FeatureBank`, the tensors are plain attributes,
not buffers (DDP would broadcast a 65,536 x 128 queue from rank 0 before every forward), yet
they are in ``state_dict()`` (``<prefix>keys``, ``<prefix>pointer``): a resumed run continues
with the exact queue and write position.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from contrastive.core.errors import ConfigError

_KEYS = ("keys", "pointer")


def gather_keys(keys: torch.Tensor) -> torch.Tensor:
    """``[B, D]`` on each of ``W`` processes -> ``[W * B, D]`` in rank order (no gradient); the
    input itself when not distributed."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return keys
    parts = [torch.empty_like(keys) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, keys.contiguous())
    return torch.cat(parts, dim=0)  # [W * B, D]


class KeyQueue(nn.Module):
    """A ``[size, dim]`` ring buffer of keys, initialised with random unit vectors (as MoCo's).

    Args:
        size: Number of keys ``K``; must be a multiple of the global batch.
        dim: Key dimension.
        normalize: Whether the random initial keys are l2-normalised (MoCo, SwAV: yes).
        seed: Seed of the initial keys (identical on every process).
    """

    def __init__(self, size: int, dim: int, normalize: bool = True, seed: int = 0) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ConfigError(f"a key queue needs size >= 1 and dim >= 1, got size={size}, dim={dim}")
        init = torch.randn(size, dim, generator=torch.Generator().manual_seed(seed))  # [K, D]
        self.keys = F.normalize(init, dim=1) if normalize else init
        self._pointer = 0  # the next row to write, on the host: enqueue never waits on the device

    @property
    def pointer(self) -> torch.Tensor:
        """The next row to write (saved in checkpoints as a tensor)."""
        return torch.tensor(self._pointer)

    @property
    def size(self) -> int:
        return int(self.keys.shape[0])

    def _apply(self, fn, recurse: bool = True):
        """``model.to(device)`` moves the queue too (device only, the keys keep their dtype): the first
        step reads it where the model is, and later steps never copy it."""
        self.keys = self.keys.to(fn(torch.empty(0, dtype=self.keys.dtype)).device)
        return super()._apply(fn, recurse)

    def _to(self, device: torch.device) -> None:
        if self.keys.device != device:
            self.keys = self.keys.to(device)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write the global batch's keys (``[B, dim]`` on this process, gathered here) over the oldest.

        Raises:
            ConfigError: The queue size is not a multiple of the global batch.
        """
        self._to(keys.device)
        gathered = gather_keys(keys.detach().to(self.keys.dtype))  # [W * B, D]
        n = gathered.shape[0]
        if self.size % n:
            raise ConfigError(f"queue size {self.size} is not a multiple of the global batch {n}: "
                              "choose a queue size divisible by batch_size x processes")
        self.keys[self._pointer:self._pointer + n] = gathered
        self._pointer = (self._pointer + n) % self.size

    # ---------------------------------------------------------------- checkpointing
    def _save_to_state_dict(self, destination, prefix, keep_vars) -> None:
        destination[prefix + "keys"] = self.keys if keep_vars else self.keys.detach()
        destination[prefix + "pointer"] = torch.tensor(self._pointer)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                              missing_keys, unexpected_keys, error_msgs) -> None:
        missing = [prefix + k for k in _KEYS if prefix + k not in state_dict]
        if missing:
            missing_keys.extend(missing)
            return
        keys = state_dict[prefix + "keys"]
        if tuple(keys.shape) != tuple(self.keys.shape):
            error_msgs.append(f"size mismatch for {prefix}keys: copying a queue of shape {tuple(keys.shape)} "
                              f"from checkpoint, the shape in current model is {tuple(self.keys.shape)}.")
            return
        self.keys = keys.detach().to(device=self.keys.device, dtype=self.keys.dtype).clone()
        self._pointer = int(state_dict[prefix + "pointer"])

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.keys.shape[1]}"
