"""What ``auto`` chose for a run, and the machine facts that decided it.

``trainer.precision``, ``trainer.channels_last``, ``dataset.decoder``, ``dataset.storage``
and ``trainer.data_on_device`` can be ``auto``; ``global_batch_size`` (a paper's batch over all
processes) is shared out among the processes when the run starts. The run's ``config.yaml`` keeps what was
asked (but ``batch_size``: the per-process value the run trained with); its first log lines and ``env.json`` (``"auto"``) say what was chosen, with the
CPU or GPU features the rules read (:mod:`contrastive.core.hardware`). ``data_on_device``
is decided when the data is set up on the training device, so it is logged and recorded
when training starts (:class:`RecordDataPlacement`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict

import pytorch_lightning as pl
from omegaconf import DictConfig

from contrastive.config.batch import describe_batch
from contrastive.core.hardware import facts, training_device
from contrastive.data import DatasetSplits
from contrastive.data.io.decode import resolve_decoder
from contrastive.engine.tracking import update_run_record
from contrastive.engine.trainer import precision

log = logging.getLogger("contrastive")


def auto_choices(cfg: DictConfig, channels_last: bool, splits: DatasetSplits, processes: int = 1) -> Dict[str, Any]:
    """``{key: {"requested": ..., "chosen": ...}}`` for every setting that may be ``auto``, plus the device facts,
    and, when a preset states ``global_batch_size``, the per-process batch it gave for ``processes`` processes.

    Raises:
        ConfigError: ``dataset.decoder`` names a decoder this machine cannot use.
    """
    device = training_device(cfg.trainer.accelerator)

    def choice(requested: Any, chosen: Any) -> Dict[str, Any]:
        return {"requested": requested, "chosen": chosen}

    return {
        "trainer.precision": choice(cfg.trainer.precision, precision(cfg)),
        "trainer.channels_last": choice(cfg.trainer.channels_last, bool(channels_last)),
        "dataset.decoder": choice(cfg.dataset.decoder, resolve_decoder(cfg.dataset.decoder)),
        "dataset.storage": choice(cfg.dataset.storage, "stream" if splits.train.streamed else "memory"),
        "trainer.data_on_device": choice(cfg.trainer.data_on_device, None),  # set when the data is set up
        "global_batch_size": choice(cfg.global_batch_size, None if cfg.global_batch_size is None  # skipped when unset
                                    else describe_batch(int(cfg.batch_size), processes)),
        "device": device,
        "facts": facts(device),
    }


def describe_choices(choices: Dict[str, Any]) -> str:
    """One log line: ``trainer.precision=auto -> 32-true, ... (cpu: x86_64, AVX2, no native bf16)``."""
    parts = [f"{key}={c['requested']} -> {_text(c['chosen'])}" for key, c in choices.items()
             if isinstance(c, dict) and "requested" in c and c["chosen"] is not None]
    f = choices["facts"]
    if "gpu" in f:
        why = f"cuda: {f['gpu']}, compute capability {f['compute_capability']}, bf16 {'yes' if f['gpu_bf16'] else 'no'}"
    else:
        bf16 = ", ".join(f["cpu_bf16_flags"]) or "no AVX-512 BF16/AMX"
        why = f"cpu: {f['machine']}, {f['cpu_capability']}, {bf16}, native bf16 {'yes' if f['cpu_native_bf16'] else 'no'}"
    return f"auto settings: {', '.join(parts)} ({why})"


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


class RecordDataPlacement(pl.Callback):
    """At the start of training (the data is set up): log and record where ``data_on_device`` put the arrays."""

    def __init__(self, choices: Dict[str, Any], run_dir: Path, splits: DatasetSplits) -> None:
        self.choices, self.run_dir, self.splits = choices, run_dir, splits

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        train = self.splits.train  # streamed images are decoded on the host, never kept on the device
        entry = self.choices["trainer.data_on_device"]
        entry["chosen"] = not train.streamed and train.images.device.type == "cuda"
        if trainer.is_global_zero:
            log.info("trainer.data_on_device=%s -> %s (training on %s)", entry["requested"], _text(entry["chosen"]),
                     trainer.strategy.root_device.type)
            update_run_record(self.run_dir, {"auto": self.choices})
