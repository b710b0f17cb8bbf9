"""The Lightning ``Trainer`` of a run: its arguments from ``trainer.*``, checked before any data.

Every ``pytorch_lightning.Trainer`` argument in the config is passed on as given, except
the ones the framework sets itself. What Lightning rejects (an accelerator this machine
lacks, ``devices=0``, an unknown strategy or precision) becomes one :class:`ConfigError`
line naming the key and value, here and when the real Trainer is built.
"""

from __future__ import annotations

import difflib
import re
import warnings
from pathlib import Path
from typing import Any, Dict, List

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint, TQDMProgressBar

from contrastive.config.overrides import trainer_parameters
from contrastive.core.errors import ConfigError
from contrastive.core.hardware import resolve_precision
from contrastive.data.resume import RestoreBatchPosition
from contrastive.engine.checkpoint import AtomicCheckpointIO, SaveOnSigterm
from contrastive.engine.tracking import build_loggers

#: Trainer arguments the framework always sets (they are checked or chosen elsewhere).
_FRAMEWORK_ARGS = ("precision", "logger", "callbacks", "plugins")
#: What Lightning raises for a Trainer argument it cannot use.
_REJECTIONS = (ValueError, TypeError, ImportError)


def trainer_options(cfg: DictConfig) -> Dict[str, Any]:
    """``trainer.*`` keys that are ``pytorch_lightning.Trainer`` arguments, as given."""
    params = set(trainer_parameters())
    return {str(k): OmegaConf.to_object(v) if OmegaConf.is_config(v) else v
            for k, v in cfg.trainer.items() if k in params and k not in _FRAMEWORK_ARGS}


def precision(cfg: DictConfig) -> str:
    """``trainer.precision``; ``auto`` is chosen by :func:`contrastive.core.hardware.resolve_precision`."""
    return resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)


def _available_accelerators() -> List[str]:
    """``trainer.accelerator`` values this machine can train on (``gpu`` with CUDA or MPS)."""
    from pytorch_lightning.accelerators import AcceleratorRegistry

    names = sorted(n for n in AcceleratorRegistry.available_accelerators() if AcceleratorRegistry[n]["accelerator"].is_available())
    return ["auto", *names, *(["gpu"] if {"cuda", "mps"} & set(names) else [])]


def check_accelerator(accelerator: Any) -> None:
    """``trainer.accelerator`` names a known accelerator that this machine has."""
    from pytorch_lightning.accelerators import AcceleratorRegistry

    value = str(accelerator).lower()
    available = _available_accelerators()
    if value in available:
        return
    known = ["auto", "gpu", *sorted(AcceleratorRegistry.available_accelerators())]
    use = f"use trainer.accelerator={' or '.join(available[:2]) if len(available) == 2 else ', '.join(available)}"
    if value in ("gpu", "cuda"):
        raise ConfigError(f"trainer.accelerator={accelerator}: no GPU is available on this machine; {use}")
    if value in known:
        raise ConfigError(f"trainer.accelerator={accelerator}: the {value} accelerator is not available on this machine; {use}")
    close = difflib.get_close_matches(value, known, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else ""
    raise ConfigError(f"trainer.accelerator='{accelerator}' is not valid; choose one of {', '.join(known)}{hint}")


def lightning_trainer(kwargs: Dict[str, Any]) -> pl.Trainer:
    """``pl.Trainer(**kwargs)``; what Lightning rejects is one ConfigError naming the ``trainer.`` key."""
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    if "accelerator" in kwargs:
        check_accelerator(kwargs["accelerator"])
    try:
        return pl.Trainer(**kwargs)
    except (MisconfigurationException, *_REJECTIONS) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else err.__class__.__name__
        key = _named_key(message, [k for k in kwargs if isinstance(kwargs[k], (str, int, float, bool, list))])
        where = f" trainer.{key}={kwargs[key]}" if key is not None else ""
        raise ConfigError(f"invalid trainer option{where}: {message}") from None


def _named_key(message: str, keys: List[str]) -> Any:
    """The Trainer argument Lightning's message is about: written as `key` or key=..., else named."""
    for pattern in (r"`{k}`|\b{k}=", r"\b{k}\b"):
        found = [k for k in keys if re.search(pattern.format(k=re.escape(k)), message, re.IGNORECASE)]
        if found:
            return found[0]
    return None


def check_trainer_options(cfg: DictConfig) -> pl.Trainer:
    """Let Lightning judge the Trainer arguments now (one line), not after the data is built.

    Returns:
        The Trainer Lightning builds from them (not for training): its ``world_size`` is the run's
        number of processes, its ``num_devices`` the processes on each machine."""
    options = {**trainer_options(cfg), "precision": precision(cfg)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return lightning_trainer({**options, "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
                                  "enable_model_summary": False})


class LossProgressBar(TQDMProgressBar):
    """The tqdm bar with the step's training loss, read only when the bar refreshes (``prog_bar=True``
    would make Lightning read it to the host every step: a sync on a GPU)."""

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        loss = trainer.callback_metrics.get("train_loss_step")
        if loss is not None:
            metrics["train_loss"] = f"{float(loss):.4g}"
        return metrics


#: Lightning's DDP strategies and their ``find_unused_parameters=True`` twins (pytorch_lightning/strategies/ddp.py).
_FIND_UNUSED = {name: f"{name}_find_unused_parameters_true" for name in ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook")}


def strategy_for_unused_parameters(strategy: Any, processes: int, method: str) -> Any:
    """``trainer.strategy`` for a method whose steps leave parameters without a gradient by design (SPCL before
    its first clustering): DDP's reducer raises at the next step unless it looks for them, so a DDP name becomes
    its ``_find_unused_parameters_true`` twin; ``auto`` on more than one process becomes
    ``ddp_find_unused_parameters_true`` (Lightning's choice there is ``ddp``). Other strategies are kept.

    Raises:
        ConfigError: ``trainer.strategy`` asks DDP not to look for them (``..._find_unused_parameters_false``)."""
    name = str(strategy).lower() if isinstance(strategy, str) else None
    if name is None or name.endswith("_find_unused_parameters_true"):
        return strategy
    if name.endswith("_find_unused_parameters_false"):
        twin = name.replace("_false", "_true")
        raise ConfigError(f"trainer.strategy={strategy}: method '{method}' leaves parameters without a gradient in some "
                          f"steps by design, which DDP then rejects; use trainer.strategy={twin}")
    if name == "auto":
        return _FIND_UNUSED["ddp"] if processes > 1 else strategy
    return _FIND_UNUSED.get(name, strategy)


def build_trainer(cfg: DictConfig, run_dir: Path, unused_parameters: bool = False, processes: int = 1,
                  **overrides: Any) -> pl.Trainer:
    """The Lightning trainer of a run: loggers, checkpoints (last + best kNN), progress bar.

    Args:
        unused_parameters: The method's :meth:`~contrastive.engine.method.Method.has_unused_parameters`: DDP
            looks for parameters without a gradient (:func:`strategy_for_unused_parameters`).
        processes: The run's number of processes (Lightning's ``world_size``).
        overrides: ``pytorch_lightning.Trainer`` arguments that replace the config's.
    """
    t = cfg.trainer
    ckpt_dir = run_dir / "checkpoints"
    callbacks = [
        # last.ckpt after every epoch: what resume=auto continues from.
        ModelCheckpoint(dirpath=ckpt_dir, filename="last", save_on_train_epoch_end=True, enable_version_counter=False),
        SaveOnSigterm(ckpt_dir / "last.ckpt"),  # pre-emption: save mid-epoch, exit with status 143
        RestoreBatchPosition(),  # resume mid-epoch at the next batch (contrastive/data/resume.py)
        LearningRateMonitor(logging_interval="step"),
    ]
    if cfg.knn.enabled:
        callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="knn_top1", mode="max",
                                         save_on_train_epoch_end=False, enable_version_counter=False))
    if t.progress_bar:
        callbacks.append(LossProgressBar(refresh_rate=max(1, int(t.log_every_n_steps))))
    kwargs: Dict[str, Any] = dict(
        check_val_every_n_epoch=int(cfg.knn.every_n_epochs), limit_val_batches=1.0 if cfg.knn.enabled else 0,
        enable_model_summary=False,
    )
    kwargs.update(trainer_options(cfg))  # every Trainer argument of the config (trainer.gradient_clip_val, ...)
    if unused_parameters:
        kwargs["strategy"] = strategy_for_unused_parameters(kwargs["strategy"], processes, str(cfg.method.name))
    kwargs.update(
        precision=precision(cfg), logger=False if "logger" in overrides else build_loggers(cfg, run_dir), callbacks=callbacks,
        plugins=[AtomicCheckpointIO()], default_root_dir=run_dir, enable_progress_bar=bool(t.progress_bar),
        use_distributed_sampler=False,
    )
    kwargs.update(overrides)
    return lightning_trainer(kwargs)
