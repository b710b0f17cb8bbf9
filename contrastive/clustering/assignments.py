"""Per-epoch clustering state (every sample's cluster, the prototypes) kept out of DDP's buffer broadcast.

The prototype methods (SPCL, DeepCluster v2, PCL v2) recompute their cluster assignments, an int64
``[num_clusterings, num_train]`` table, once per epoch, identically on every process (rank 0 clusters
and broadcasts the result once). As a registered buffer that table would be broadcast from rank 0
before every forward by DDP (``broadcast_buffers=True``, Lightning's default): 3 x 1.28M int64 =
31 MB per step on ImageNet, for state that has not changed since the epoch started and is already
the same everywhere. PCL v2's prototypes are worse: (25,000 + 50,000 + 100,000) x 128 float32 =
90 MB per step with its ImageNet cluster counts.

:class:`EpochStateMixin` gives a module tensors that behave like buffers for checkpoints and devices
and unlike them for DDP, as :class:`~contrastive.memory.feature_bank.FeatureBank` does for its bank:

* they are plain attributes, so ``named_buffers()`` (what DDP broadcasts) does not list them;
* ``state_dict()`` holds them under ``<prefix><name>``, the key a buffer of that name had, so
  checkpoints written while they were buffers load unchanged, and a resumed run continues with the
  exact assignments;
* ``module.to(device)`` / ``.cuda()`` / ``.half()`` move or cast them as they would a buffer.

Because DDP no longer re-syncs them, every process must write the same values (the methods write them
only with results broadcast from rank 0, the labels of the dataset, or a loaded checkpoint).
"""

from __future__ import annotations

from typing import List

import torch

from contrastive.core.plain_state import load_plain_tensor


class EpochStateMixin:
    """Mixin for an ``nn.Module``: tensors registered with :meth:`register_epoch_state` are checkpointed
    and moved like buffers but are not buffers, so DDP does not broadcast them every step.

    Put it before the ``nn.Module`` base (``class SPCL(EpochStateMixin, Method)``) and register after
    ``super().__init__()``. The attribute is an ordinary tensor: read it, index it, ``copy_`` into it.
    """

    @property
    def epoch_state_names(self) -> List[str]:
        """Names registered with :meth:`register_epoch_state`, in registration order."""
        return self.__dict__.setdefault("_epoch_state_names", [])

    def register_epoch_state(self, name: str, tensor: torch.Tensor) -> None:
        """Store ``tensor`` as the plain attribute ``name`` (state_dict key ``<prefix><name>``).

        Args:
            name: Attribute name, and the state_dict key under the module's prefix.
            tensor: Initial value; its shape and dtype are what a checkpoint must match to load.

        Raises:
            ValueError: ``name`` is already a parameter, buffer or submodule.
        """
        if name in self._parameters or name in self._buffers or name in self._modules:
            raise ValueError(f"'{name}' is already a parameter, buffer or submodule; pick another epoch-state name")
        if name not in self.epoch_state_names:
            self.epoch_state_names.append(name)
        object.__setattr__(self, name, tensor)

    def _apply(self, fn, recurse=True):
        """``to`` / ``cuda`` / ``half`` ... reach the epoch state as they reach buffers."""
        module = super()._apply(fn, recurse)
        for name in self.epoch_state_names:
            object.__setattr__(self, name, fn(getattr(self, name)))
        return module

    # ---------------------------------------------------------------- checkpointing
    def _save_to_state_dict(self, destination, prefix, keep_vars) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        for name in self.epoch_state_names:
            value = getattr(self, name)
            destination[prefix + name] = value if keep_vars else value.detach()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                              missing_keys, unexpected_keys, error_msgs) -> None:
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        ours = {prefix + name: name for name in self.epoch_state_names}
        unexpected_keys[:] = [k for k in unexpected_keys if k not in ours]  # nn.Module does not know them
        for key, name in ours.items():
            value = load_plain_tensor(state_dict, key, getattr(self, name), missing_keys, error_msgs)
            if value is not None:
                object.__setattr__(self, name, value)


def unassigned(num_clusterings: int, num_samples: int) -> torch.Tensor:
    """The assignments before the first clustering: int64 ``[num_clusterings, num_samples]`` of ``-1``."""
    return torch.full((num_clusterings, num_samples), -1, dtype=torch.long)


class Coverage:
    """Whether every sample has a cluster (``assignments >= 0``), read on the host once per change.

    Assignments are all -1 (before the first clustering) or all set (k-means): which of the two is
    read once each time the table changes (its identity and in-place version: a new clustering, a
    loaded checkpoint, a device move), not every training step. A table with gaps (dataset labels
    with unlabelled images) is checked per batch.

    Example:
        >>> covered = Coverage()
        >>> table = unassigned(1, 4)
        >>> covered(table, table[:, :2]), covered(table.fill_(1), table[:, :2])
        (False, True)
    """

    def __init__(self) -> None:
        self.key, self.value = (-1, -1), ""

    def __call__(self, assignments: torch.Tensor, targets: torch.Tensor) -> bool:
        """Whether this batch's ``targets`` (int64, a selection of ``assignments``' columns) are all assigned."""
        key = (id(assignments), assignments._version)
        if self.key != key:
            assigned = assignments >= 0
            self.key, self.value = key, "all" if bool(assigned.all()) else "none" if not bool(assigned.any()) else "some"
        if self.value == "some":
            return bool((targets >= 0).all())
        return self.value == "all"
