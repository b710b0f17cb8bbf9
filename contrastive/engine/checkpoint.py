"""Checkpoint files: atomic writes, safe loads, and clear errors.

A checkpoint is Lightning's dict (weights, optimizer and scheduler state, loop
progress, epoch) plus ``checkpoint["contrastive"]``: the method name, the resolved
config, the dataset facts and the feature dimension (see ``Method.on_save_checkpoint``).
Everything in it is a tensor or a plain container, so it loads with
``torch.load(..., weights_only=True)``: no pickled code runs.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any, Dict, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO
from pytorch_lightning.utilities.exceptions import SIGTERMException

from contrastive.core.errors import CheckpointError

log = logging.getLogger(__name__)

#: Exit status of a run stopped by SIGTERM after saving (128 + signal 15, as a shell reports it).
SIGTERM_EXIT_CODE = 143


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes to a temporary file in the same folder, then renames it into place.

    ``os.replace`` is atomic on POSIX, so a crash or SIGKILL mid-save leaves the
    previous checkpoint intact instead of a truncated file.
    """

    def save_checkpoint(self, checkpoint: Dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            torch.save(checkpoint, tmp)
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
            _fsync_dir(path.parent)  # the rename itself survives a power loss
        finally:
            tmp.unlink(missing_ok=True)

    def load_checkpoint(self, path, map_location: Optional[Any] = None, weights_only: Optional[bool] = None) -> Dict[str, Any]:
        return load_checkpoint(path, map_location=map_location or "cpu")


class SaveOnSigterm(pl.Callback):
    """On SIGTERM (a pre-empted or timed-out SLURM job, ``kill``, ``docker stop``) save
    ``last.ckpt`` and let the run exit.

    Lightning's signal connector turns SIGTERM into a flag; after the current training
    batch (optimizer step done) its loops raise ``SIGTERMException`` on every process
    (under DDP rank 0's flag is broadcast). This callback catches that exception in
    ``on_exception`` and writes a checkpoint holding the loop position within the epoch;
    with :class:`~contrastive.data.resume.ResumableLoader` and the per-step augmentation
    seed, ``resume=auto`` then continues from the next batch exactly.

    Args:
        path: Where to write (the run's ``checkpoints/last.ckpt``).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.saved = False

    def on_exception(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or self.saved:
            return
        trainer.save_checkpoint(self.path)  # collective under DDP; rank 0 writes (atomically)
        self.saved = True
        done = trainer.fit_loop.epoch_loop.batch_progress.current.completed
        if trainer.is_global_zero:
            log.warning("SIGTERM: saved %s at epoch %d after %d batch(es) of it (step %d); continue with resume=auto",
                        self.path, trainer.current_epoch, done, trainer.global_step)


def load_checkpoint(path, map_location: Any = "cpu", expected_method: Optional[str] = None) -> Dict[str, Any]:
    """Load and check a checkpoint written by this project.

    Args:
        path: The ``.ckpt`` file.
        map_location: Passed to ``torch.load``.
        expected_method: If given, the checkpoint must come from this method.

    Raises:
        CheckpointError: Missing, unreadable, not a checkpoint of this project, or of
            another method.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise CheckpointError(f"checkpoint '{path}' is a folder, not a .ckpt file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    with open(path, "rb") as handle:
        head = handle.read(4)
    if not head:
        raise CheckpointError(f"checkpoint '{path}' is corrupt or not a checkpoint file (it is empty)")
    if not head.startswith((b"PK\x03\x04", b"\x80")):  # torch.save writes a zip archive; old files are a pickle
        raise CheckpointError(f"checkpoint '{path}' is corrupt or not a checkpoint file (it starts with {head!r}, "
                              "not the zip archive torch.save writes)")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error below says it all, in one line
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # weights_only=True refused it: pickled code or objects other than tensors and containers.
        refused = re.search(r"(Unsupported global: GLOBAL [\w.]+|unsupported GLOBAL [\w.]+|Unsupported operand \d+)", str(err))
        detail = f" ({refused.group(1)})" if refused else ""
        raise CheckpointError(f"'{path}' is not a safe checkpoint file: it holds pickled Python objects{detail}, "
                              "so it was refused without running them (checkpoints load with weights_only=True)") from None
    except Exception as err:  # truncated zip, empty file, text file, unreadable: never a traceback
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else err.__class__.__name__
        raise CheckpointError(f"checkpoint '{path}' is corrupt or not a checkpoint file ({err.__class__.__name__}: {reason})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or not isinstance(ckpt.get("contrastive"), dict):
        raise CheckpointError(f"'{path}' is not a checkpoint written by contrastive's train.py (no state_dict/config inside)")
    method = ckpt["contrastive"].get("method")
    if expected_method is not None and method != expected_method:
        raise CheckpointError(f"checkpoint '{path}' was trained with method '{method}', not '{expected_method}'")
    return ckpt


def find_latest_checkpoint(run_root: Path, name: str = "last.ckpt") -> Optional[Path]:
    """The newest ``<run_root>/<timestamp>/checkpoints/<name>``, or None."""
    if not run_root.is_dir():
        return None
    candidates = sorted(run_root.glob(f"*/checkpoints/{name}"), key=lambda p: p.parent.parent.name)
    return candidates[-1] if candidates else None


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temp_files(ckpt_dir: Path) -> list:
    """Delete ``.<name>.tmp-<pid>`` files a killed run left behind mid-save (never a real checkpoint)."""
    removed = []
    for tmp in Path(ckpt_dir).glob(".*.tmp-*"):
        if tmp.name.endswith(f".tmp-{os.getpid()}"):
            continue
        tmp.unlink(missing_ok=True)
        removed.append(tmp.name)
    return removed


def check_checkpoint_fits(ckpt: Dict[str, Any], model: torch.nn.Module, path) -> None:
    """Raise :class:`CheckpointError` when the weights do not fit ``model`` (another backbone,
    width or head size), naming the first mismatch, instead of a size-mismatch traceback mid-run."""
    saved, own = ckpt["state_dict"], model.state_dict()
    missing = [k for k in own if k not in saved]
    unexpected = [k for k in saved if k not in own]
    shapes = [k for k in own if k in saved and tuple(saved[k].shape) != tuple(own[k].shape)]
    if not (missing or unexpected or shapes):
        return
    if shapes:
        k = shapes[0]
        detail = f"'{k}' is {tuple(saved[k].shape)} in the checkpoint but {tuple(own[k].shape)} in this model"
    elif missing:
        detail = f"{len(missing)} weight(s) of this model are missing, e.g. '{missing[0]}'"
    else:
        detail = f"it holds {len(unexpected)} weight(s) this model does not have, e.g. '{unexpected[0]}'"
    trained = (ckpt.get("contrastive") or {}).get("config") or {}
    backbone = (trained.get("backbone") or {}).get("name")
    hint = f" (it was trained with backbone={backbone})" if backbone else ""
    raise CheckpointError(f"checkpoint '{path}' does not fit this model: {detail}{hint}; "
                          "resume with the settings it was trained with")
