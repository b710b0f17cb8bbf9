"""The log format, logging setup and warning filters the command lines share (called by them, not on import)."""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from typing import Iterator

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Third-party warnings that do not apply to this project's runs (silenced inside :func:`quiet_warnings`).
IGNORED_WARNINGS = (
    # Lightning's tips ("consider num_workers...") do not apply to in-memory batches.
    r".*does not have many workers.*",
    r".*The number of training batches.*",
    r".*LeafSpec.*",
    # Method overrides both batch-transfer hooks on purpose (per-step seed, on-device views) and the
    # datamodule defines neither, so Lightning's "overridden ... but passed a LightningDataModule" does not apply.
    r".*You have overridden `on_(before|after)_batch_transfer` in `LightningModule`.*",
)


def setup_logging() -> None:
    """Readable INFO logs, without third-party noise that does not apply to this project."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, datefmt="%H:%M:%S")
    logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)
    logging.getLogger("pytorch_lightning.accelerators.cuda").setLevel(logging.WARNING)
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # "could not load AVX2 ..." is not ours


@contextmanager
def quiet_warnings() -> Iterator[None]:
    """Inside: the :data:`IGNORED_WARNINGS` are not shown; outside, the caller's filters are untouched."""
    with warnings.catch_warnings():
        for message in IGNORED_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        yield
