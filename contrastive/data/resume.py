"""Exact mid-epoch resumption of the training batch order.

Lightning saves the loop progress (how many batches of the current epoch were
trained) in every checkpoint, but restarts a plain ``DataLoader`` from the first
batch of the epoch. :class:`ResumableLoader` implements Lightning's
``state_dict``/``load_state_dict`` protocol for dataloaders: the state is (epoch,
batches done), and after a restart in the middle of epoch ``e`` the sampler skips
the ``k`` batches of epoch ``e`` that were already trained on. Samplers are
deterministic functions of (seed, epoch, rank), so the remaining batches are exactly
those the uninterrupted run would have drawn. Together with the per-batch seeding of
the augmentation (``Method.on_before_batch_transfer``) this makes a run resumed from
a mid-epoch checkpoint (written on SIGTERM) continue exactly.

Lightning stores the loader state in the checkpoint but loads it back only into a
loader built after the restore; ``Method.configure_optimizers`` reads
``trainer.estimated_stepping_batches``, which builds the training loader before the
restore, so Lightning never calls :meth:`ResumableLoader.load_state_dict`.
:class:`RestoreBatchPosition` (a callback, in every run's trainer) hands it the saved
state at ``on_train_start``, after the restore and before the first batch is drawn.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset


class SkippingBatchSampler:
    """Wraps a batch sampler; after :meth:`resume_at` its next pass over that epoch
    leaves out the batches already done. Other attributes are the wrapped sampler's."""

    def __init__(self, sampler: Any) -> None:
        self.sampler = sampler
        self.epoch = 0
        self._resume: Optional[Tuple[int, int]] = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if callable(getattr(self.sampler, "set_epoch", None)):
            self.sampler.set_epoch(epoch)

    def resume_at(self, epoch: int, batches_done: int) -> None:
        self._resume = (int(epoch), int(batches_done))

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[Any]:
        skip = 0
        if self._resume is not None:
            epoch, done = self._resume
            self._resume = None
            # An end-of-epoch checkpoint (done == len) resumes at the next epoch: nothing to skip.
            if epoch == self.epoch and 0 < done < len(self.sampler):
                skip = done
        for i, batch in enumerate(self.sampler):
            if i >= skip:
                yield batch

    def __getattr__(self, name: str) -> Any:
        inner = self.__dict__.get("sampler")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)


def trainer_progress(trainer: Any) -> Tuple[int, int]:
    """(current epoch, training batches completed in it) of a Lightning trainer."""
    if trainer is None:
        return 0, 0
    return int(trainer.current_epoch), int(trainer.fit_loop.epoch_loop.batch_progress.current.completed)


class ResumableLoader(DataLoader):
    """A training ``DataLoader`` over whole batches (``batch_size=None``) whose position
    within an epoch is saved in checkpoints and restored on resume.

    Args:
        dataset: Map-style dataset indexed by a list of indices (``IndexedBatches``).
        batch_sampler: Yields lists of indices; ``set_epoch`` is forwarded to it.
        progress: Returns (epoch, batches completed) when a checkpoint is written.
    """

    def __init__(self, dataset: Dataset, batch_sampler: Any, progress: Callable[[], Tuple[int, int]], **kwargs: Any) -> None:
        super().__init__(dataset, batch_size=None, sampler=SkippingBatchSampler(batch_sampler), **kwargs)
        self._progress = progress

    def state_dict(self) -> Dict[str, int]:
        epoch, done = self._progress()
        return {"epoch": epoch, "batches_done": done}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.sampler.resume_at(int(state.get("epoch", 0)), int(state.get("batches_done", 0)))


class RestoreBatchPosition(pl.Callback):
    """Gives a :class:`ResumableLoader` the position saved in the checkpoint a run resumes
    from (see the module docstring for why Lightning does not)."""

    def __init__(self) -> None:
        self._pending: Optional[list] = None

    def on_load_checkpoint(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", checkpoint: Dict[str, Any]) -> None:
        fit_state = checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {})
        self._pending = fit_state.get("combined_loader") or None

    def on_train_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        states, self._pending = self._pending, None
        loader = trainer.train_dataloader
        if states and isinstance(loader, ResumableLoader):
            loader.load_state_dict(states[0])
