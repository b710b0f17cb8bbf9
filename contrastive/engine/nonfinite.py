"""The non-finite loss check without a host-device sync at every step.

``bool(torch.isfinite(loss))`` at every step makes the CPU wait for the GPU to finish
the step before it can queue the next one; on a GPU that idles it once per step.
:class:`NonFiniteGuard` instead keeps the (detached, on-device) loss terms of the steps
since the last check and looks at all of them at once - one sync - at the logging
interval (``trainer.log_every_n_steps``, where Lightning syncs anyway to log), at the
end of every training epoch, before validation, and before any checkpoint is written.
So a non-finite loss still stops the run naming its first bad step and its terms, and
no checkpoint with the bad weights is ever saved; the run only trains up to
``log_every_n_steps - 1`` more (wasted) steps before it stops.

The check is a Lightning callback, :class:`NonFiniteCallback`, that the ``Method`` base class
attaches through ``configure_callbacks``: it reads every step's loss from the training step's
output and checks at its own hooks, so a method that overrides ``training_step``,
``on_train_epoch_end``, ``on_validation_epoch_start`` or ``on_save_checkpoint`` without calling
``super()`` cannot switch it off.

``trainer.on_nonfinite=skip`` has to decide before the optimizer step, so it still
checks (and syncs) at every step, in ``Method.training_step``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple

import pytorch_lightning as pl
import torch


class NonFiniteLossError(RuntimeError):
    """Raised when a loss is NaN/inf and ``trainer.on_nonfinite=error``."""


def format_terms(losses: Dict[str, torch.Tensor]) -> str:
    """``loss=nan, contrastive=1.23`` (syncs: only called on the way to an error or a skip)."""
    return ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in losses.items())


def error_message(epoch: int, step: int, terms: str) -> str:
    """The one-line error of a non-finite loss (``train.py`` prints it without a traceback)."""
    return (f"non-finite loss at epoch {epoch}, step {step}: {terms}; "
            "the last good checkpoint is kept (set trainer.on_nonfinite=skip to skip such steps)")


class NonFiniteGuard:
    """Deferred ``trainer.on_nonfinite=error`` check: :meth:`record` every step (no sync),
    :meth:`check` at intervals (one sync for all recorded steps)."""

    def __init__(self) -> None:
        self._pending: List[Tuple[int, int, Dict[str, torch.Tensor]]] = []  # (epoch, step, detached terms)

    def record(self, epoch: int, step: int, losses: Dict[str, torch.Tensor]) -> None:
        self._pending.append((epoch, step, {k: v.detach() for k, v in losses.items()}))

    def due(self, step: int, every: int) -> bool:
        """Whether ``step`` (0-based global step) ends a logging interval of ``every`` steps."""
        return (step + 1) % max(1, every) == 0

    def check(self, trainer: Optional[Any] = None) -> None:
        """Raise :class:`NonFiniteLossError` naming the first recorded non-finite step.

        Under DDP every process calls this at the same steps; the decision is reduced so
        that all processes raise together (a process whose own losses were finite names
        the checked step and says another process saw it)."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        bad = torch.stack([~torch.isfinite(terms["loss"]).all() for _, _, terms in pending])  # bool [n], on device
        local = bool(bad.any())  # the one sync of the interval
        world = trainer.world_size if trainer is not None else 1
        anywhere = bool(trainer.strategy.reduce_boolean_decision(local, all=False)) if world > 1 else local
        if not anywhere:
            return
        if local:
            epoch, step, terms = pending[int(bad.nonzero()[0, 0])]
            raise NonFiniteLossError(error_message(epoch, step, format_terms(terms)))
        epoch, step, _ = pending[-1]
        raise NonFiniteLossError(error_message(epoch, step, "on another process"))

    def clear(self) -> None:
        self._pending = []


#: Key of the training step's output that carries the detached loss terms (``Method.training_step``).
TERMS_KEY = "loss_terms"


def step_terms(outputs: Any) -> Optional[Dict[str, torch.Tensor]]:
    """The loss terms of a training step from Lightning's ``outputs`` (``None``: a skipped step).

    ``outputs`` is what ``training_step`` returned, as Lightning passes it on: a tensor, or a
    mapping with ``"loss"`` and, from ``Method.training_step``, every term under :data:`TERMS_KEY`."""
    if isinstance(outputs, torch.Tensor):
        return {"loss": outputs.detach()}
    if not isinstance(outputs, Mapping) or outputs.get("loss") is None:
        return None
    terms = outputs.get(TERMS_KEY)
    return dict(terms) if isinstance(terms, Mapping) and "loss" in terms else {"loss": outputs["loss"].detach()}


class NonFiniteCallback(pl.Callback):
    """``trainer.on_nonfinite=error``: stop with :class:`NonFiniteLossError` naming the first
    non-finite step, without a host-device sync per step (:class:`NonFiniteGuard`).

    Records every step's terms at ``on_train_batch_end`` and checks at the logging interval,
    at the end of every training epoch (callbacks run before the module's hook and the
    checkpoint callbacks), before validation (the kNN monitor at an epoch's end runs before
    ``on_train_epoch_end``) and before any checkpoint is written."""

    def __init__(self) -> None:
        self.guard = NonFiniteGuard()
        self._step = 0  # the global step of the batch in flight (Lightning advances it after the optimizer step)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        self._step = int(trainer.global_step)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        terms = step_terms(outputs)
        if terms is None:
            return
        self.guard.record(int(trainer.current_epoch), self._step, terms)
        if self.guard.due(self._step, int(trainer.log_every_n_steps)):
            self.guard.check(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.guard.check(trainer)

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.guard.check(trainer)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: Dict[str, Any]) -> None:
        self.guard.check(trainer)  # never save weights a non-finite step has touched
