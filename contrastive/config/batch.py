"""Batch semantics: ``batch_size`` is the batch of one process, everywhere.

A paper states the batch of one optimizer step over all its devices ("batch 4096"); a preset
that quotes it says ``global_batch_size: 4096`` and leaves ``batch_size`` null, and every
process trains with ``global_batch_size / processes`` (``trainer.devices x trainer.num_nodes``,
as Lightning counts them when the run starts). The learning-rate scaling rules read the global
batch (``batch_size x processes``), so a preset gives the paper's learning rate on any number of
processes that divides its batch.
"""

from __future__ import annotations

from typing import Any

from contrastive.core.errors import ConfigError


def per_process_batch(batch_size: Any, global_batch_size: Any, processes: int) -> int:
    """The images each process takes per step.

    Args:
        batch_size: ``batch_size`` (per process), or None when ``global_batch_size`` decides.
        global_batch_size: ``global_batch_size`` (over all processes), or None.
        processes: The number of training processes (Lightning's ``Trainer.world_size``).

    Raises:
        ConfigError: Neither is set, the global batch does not divide among the processes, or
            both are set and disagree (one line, naming the values and what to set).
    """
    if global_batch_size is None:
        if batch_size is None:
            raise ConfigError("batch_size is null: set batch_size (images per process) or global_batch_size "
                              "(images per step over all processes)")
        return int(batch_size)
    if isinstance(global_batch_size, bool) or not isinstance(global_batch_size, int) or global_batch_size < 1:
        raise ConfigError(f"global_batch_size must be an integer >= 1 or null, got {global_batch_size!r}")
    if global_batch_size % processes:
        raise ConfigError(f"global_batch_size={global_batch_size} does not divide among {processes} processes "
                          f"(trainer.devices x trainer.num_nodes); use a multiple of {processes}, or "
                          "global_batch_size=null batch_size=<images per process>")
    share = global_batch_size // processes
    if batch_size is not None and int(batch_size) != share:
        raise ConfigError(f"batch_size={batch_size} x {_processes(processes)} = {int(batch_size) * processes} contradicts "
                          f"global_batch_size={global_batch_size}; set batch_size=null (then {share} per process) or "
                          f"global_batch_size=null (then {batch_size} per process)")
    return share


def describe_batch(batch_size: int, processes: int) -> str:
    """``512 per process x 8 processes = 4096 global``: what a log line says of the batch."""
    return f"{batch_size} per process x {_processes(processes)} = {batch_size * processes} global"


def _processes(n: int) -> str:
    return f"{n} process{'es' if n != 1 else ''}"
