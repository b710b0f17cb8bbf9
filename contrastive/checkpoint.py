"""Checkpoint files: atomic writes, safe loads, and clear errors.

A checkpoint is Lightning's dict (weights, optimizer and scheduler state, loop
progress, epoch) plus ``checkpoint["contrastive"]``: the method name, the resolved
config, the dataset facts and the feature dimension (see ``Method.on_save_checkpoint``).
Everything in it is a tensor or a plain container, so it loads with
``torch.load(..., weights_only=True)``: no pickled code runs.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from contrastive.errors import CheckpointError


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
        finally:
            tmp.unlink(missing_ok=True)

    def load_checkpoint(self, path, map_location: Optional[Any] = None, weights_only: Optional[bool] = None) -> Dict[str, Any]:
        return load_checkpoint(path, map_location=map_location or "cpu")


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
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else err.__class__.__name__
        raise CheckpointError(f"checkpoint '{path}' is corrupt or not a safe checkpoint file ({reason})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "contrastive" not in ckpt:
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
