"""From a config to a trained, checkpointed encoder (PyTorch Lightning).

:func:`prepare_run` does everything that can fail on bad input (config checks,
plugins, resume target, dataset, model, output folder) before anything is written;
:func:`fit` trains. ``train.py`` is a thin wrapper around the two.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.utilities.exceptions import SIGTERMException

from contrastive.backbones.factory import check_input_size
from contrastive.engine.checkpoint import (SIGTERM_EXIT_CODE, AtomicCheckpointIO, SaveOnSigterm, check_checkpoint_fits,
                                    find_latest_checkpoint, load_checkpoint, remove_stale_temp_files)
from contrastive.config.compose import to_yaml
from contrastive.config.plugins import import_plugins, load_builtin_methods
from contrastive.data import DatasetSplits, build_dataset
from contrastive.data.module import ArrayDataModule
from contrastive.data.resume import RestoreBatchPosition
from contrastive.core.errors import ConfigError
from contrastive.core.hardware import resolve_precision
from contrastive.engine.method import DataInfo, Method
from contrastive.engine.optim import validate_optim_config
from contrastive.engine.plots import plot_training_curves
from contrastive.core.registry import BACKBONES, DATASETS, METHODS
from contrastive.engine.tracking import (attach_train_log, build_loggers, detach_train_log, finish_loggers, hyperparameters,
                                  validate_loggers, write_run_record)

log = logging.getLogger("contrastive")


def _ignore_hook_warnings() -> None:
    """Method overrides both batch-transfer hooks on purpose (per-step seed, on-device views)
    and the datamodule defines neither, so Lightning's "overridden ... but passed a
    LightningDataModule" warnings do not apply. Also called per trainer: pytest and other
    ``warnings.catch_warnings`` users drop filters added inside them."""
    warnings.filterwarnings("ignore", message=r".*You have overridden `on_(before|after)_batch_transfer` in `LightningModule`.*")


_ignore_hook_warnings()

NONFINITE_POLICIES = ("error", "skip", "off")


@dataclass
class Run:
    """Everything :func:`fit` needs, built and checked by :func:`prepare_run`."""

    cfg: DictConfig
    model: Method
    splits: DatasetSplits
    run_dir: Path
    resume_from: Optional[Path]
    overrides: Sequence[str] = ()  # the command line's overrides (recorded in the run folder)


def validate_config(cfg: DictConfig) -> None:
    """Checks that need no data: registered names and impossible values."""
    METHODS.get(cfg.method.name)
    BACKBONES.get(cfg.backbone.name)
    DATASETS.get(cfg.dataset.name)
    if int(cfg.batch_size) < 1:
        raise ConfigError(f"batch_size must be >= 1, got {cfg.batch_size}")
    max_steps = int(cfg.trainer.get("max_steps", -1) or -1)
    if int(cfg.trainer.max_epochs) < 1 and not (int(cfg.trainer.max_epochs) == -1 and max_steps > 0):
        raise ConfigError(f"trainer.max_epochs must be >= 1 (or -1 with trainer.max_steps > 0), got {cfg.trainer.max_epochs}")
    if cfg.trainer.on_nonfinite not in NONFINITE_POLICIES:
        raise ConfigError(f"trainer.on_nonfinite='{cfg.trainer.on_nonfinite}' is not valid; choose one of {', '.join(NONFINITE_POLICIES)}")
    if cfg.knn.enabled and (int(cfg.knn.k) < 1 or float(cfg.knn.temperature) <= 0 or int(cfg.knn.every_n_epochs) < 1):
        raise ConfigError(f"knn needs k >= 1, temperature > 0 and every_n_epochs >= 1, got k={cfg.knn.k}, "
                          f"temperature={cfg.knn.temperature}, every_n_epochs={cfg.knn.every_n_epochs}")
    # PyTorch's SyncBatchNorm has no CPU kernel: without this check the run would crash
    # at its first step instead of here.
    if bool(cfg.trainer.sync_batchnorm) and (str(cfg.trainer.accelerator) == "cpu" or not torch.cuda.is_available()):
        raise ConfigError("trainer.sync_batchnorm=true needs GPUs (PyTorch's SyncBatchNorm has no CPU kernel); "
                          "set trainer.sync_batchnorm=false on CPU")
    validate_optim_config(cfg.optimizer, cfg.scheduler, int(cfg.trainer.max_epochs))
    validate_loggers(cfg)
    check_trainer_options(cfg)


def trainer_options(cfg: DictConfig) -> Dict[str, Any]:
    """``trainer.*`` keys that are ``pytorch_lightning.Trainer`` arguments, as given."""
    from contrastive.config.overrides import trainer_parameters

    params = set(trainer_parameters())
    return {str(k): OmegaConf.to_object(v) if OmegaConf.is_config(v) else v
            for k, v in cfg.trainer.items() if k in params and k not in ("precision", "logger", "callbacks", "plugins")}


def check_trainer_options(cfg: DictConfig) -> None:
    """Let Lightning judge the Trainer arguments now (one line), not after the data is built."""
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    options = {k: v for k, v in trainer_options(cfg).items()
               if k not in ("accelerator", "devices", "num_nodes", "strategy", "sync_batchnorm")}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pl.Trainer(**options, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                       enable_progress_bar=False, enable_model_summary=False)
    except (MisconfigurationException, ValueError, TypeError) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else err.__class__.__name__
        raise ConfigError(f"invalid trainer option: {message}") from None


def resolve_resume(cfg: DictConfig, run_dir: Optional[Path] = None, own_folder_only: bool = False) -> Optional[Path]:
    """``resume`` -> the checkpoint to continue from (checked), or None for a new run.

    ``resume=auto`` takes ``<run_dir>/checkpoints/last.ckpt`` when the run folder (a fixed
    ``hydra.run.dir``, or a sweep job's folder) has one, else, unless ``own_folder_only``
    (sweep jobs), the newest ``last.ckpt`` of ``<output_dir>/<run_name>``.
    """
    if cfg.resume in (None, "", "none", False):
        return None
    if cfg.resume == "auto":
        own = run_dir / "checkpoints" / "last.ckpt" if run_dir is not None else None
        if own is not None and own.is_file():
            path = own
        else:
            path = None if own_folder_only else find_latest_checkpoint(Path(cfg.output_dir) / cfg.run_name)
        if path is None:
            log.info("resume=auto: no earlier run of '%s' under %s; starting a new run", cfg.run_name, cfg.output_dir)
            return None
    else:
        path = Path(str(cfg.resume)).expanduser()
    load_checkpoint(path, expected_method=str(cfg.method.name))
    return path


def _make_run_dir(cfg: DictConfig, resume_from: Optional[Path], run_dir: Optional[Path] = None) -> Path:
    if resume_from is not None and resume_from.parent.name == "checkpoints":
        run_dir = resume_from.parent.parent
    elif run_dir is not None:
        pass  # the Hydra app's run folder (hydra.run.dir, or the sweep job's folder)
    elif os.environ.get("CONTRASTIVE_RUN_DIR") and os.environ.get("LOCAL_RANK", "0") != "0":
        run_dir = Path(os.environ["CONTRASTIVE_RUN_DIR"])  # a DDP process Lightning started: rank 0's folder
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        run_dir = Path(cfg.output_dir) / str(cfg.run_name) / stamp
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"output folder '{run_dir}' cannot be written ({err.strerror}); set output_dir=<a writable folder>") from None
    return run_dir


def prepare_run(cfg: DictConfig, run_dir: Optional[Path] = None, overrides: Sequence[str] = (),
                own_folder_only: bool = False) -> Run:
    """Validate everything and build data, model and output folder; nothing is trained.

    Args:
        cfg: A config from :func:`contrastive.config.compose.load_config` (or the Hydra app).
        run_dir: The run folder; default ``<output_dir>/<run_name>/<timestamp>``.
        overrides: The command line's overrides, recorded in the run folder.
        own_folder_only: ``resume=auto`` looks only in ``run_dir`` (sweep jobs).

    Raises:
        ContrastiveError: On any bad input, with a one-line message.
    """
    # Installed entry points load only when the run names them (method, backbone or dataset).
    import_plugins(cfg.plugins, names=(cfg.method.name, cfg.backbone.name, cfg.dataset.name))
    load_builtin_methods()
    validate_config(cfg)
    resume_from = resolve_resume(cfg, run_dir, own_folder_only)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    splits = build_dataset(cfg.dataset)
    method_cls = METHODS.get(cfg.method.name)
    data = DataInfo(
        num_classes=splits.num_classes, image_size=splits.image_size, mean=splits.mean, std=splits.std,
        num_train=len(splits.train), train_fully_labeled=bool((splits.train.labels >= 0).all()),
    )
    if method_cls.supervised and not data.train_fully_labeled:
        raise ConfigError(f"method '{cfg.method.name}' is supervised but dataset '{cfg.dataset.name}' has unlabeled training images")
    if int(cfg.batch_size) > len(splits.train):
        raise ConfigError(f"batch_size={cfg.batch_size} is larger than the training set ({len(splits.train)} images)")
    method_cls.validate_config(cfg, data)
    model = method_cls(cfg, data)
    check_input_size(model.backbone, *model.input_size())
    if resume_from is not None:  # another backbone/width: one error line now, not a size-mismatch traceback later
        check_checkpoint_fits(load_checkpoint(resume_from), model, resume_from)
    run_dir = _make_run_dir(cfg, resume_from, run_dir)
    if resume_from is not None:
        for name in remove_stale_temp_files(run_dir / "checkpoints"):
            log.info("removed %s, left by a run killed while saving", name)
    return Run(cfg, model, splits, run_dir, resume_from, tuple(overrides))


def _precision(cfg: DictConfig) -> str:
    """``trainer.precision``; ``auto`` is chosen by :func:`contrastive.core.hardware.resolve_precision`."""
    return resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)


def build_trainer(cfg: DictConfig, run_dir: Path, **overrides: Any) -> pl.Trainer:
    """The Lightning trainer of a run: loggers, checkpoints (last + best kNN), progress bar."""
    _ignore_hook_warnings()
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
        callbacks.append(TQDMProgressBar(refresh_rate=max(1, int(t.log_every_n_steps))))
    kwargs: Dict[str, Any] = dict(
        check_val_every_n_epoch=int(cfg.knn.every_n_epochs), limit_val_batches=1.0 if cfg.knn.enabled else 0,
        enable_model_summary=False,
    )
    kwargs.update(trainer_options(cfg))  # every Trainer argument of the config (trainer.gradient_clip_val, ...)
    kwargs.update(
        precision=_precision(cfg), logger=False if "logger" in overrides else build_loggers(cfg, run_dir), callbacks=callbacks,
        plugins=[AtomicCheckpointIO()], default_root_dir=run_dir, enable_progress_bar=bool(t.progress_bar),
        use_distributed_sampler=False,
    )
    kwargs.update(overrides)
    return pl.Trainer(**kwargs)


def _knn(trainer: pl.Trainer, model: Method, datamodule: ArrayDataModule) -> Optional[float]:
    results = trainer.validate(model, datamodule=datamodule, verbose=False)
    return float(results[0]["knn_top1"]) if results and "knn_top1" in results[0] else None


def fit(run: Run) -> Dict[str, Any]:
    """Train, checkpoint, and return a summary (also written to ``summary.json``)."""
    cfg, model = run.cfg, run.model
    from pytorch_lightning.utilities.rank_zero import rank_zero_only  # rank from RANK/LOCAL_RANK/SLURM_PROCID

    rank_zero = int(getattr(rank_zero_only, "rank", 0) or 0) == 0
    log_handler = attach_train_log(run.run_dir) if rank_zero else None
    try:
        return _fit(run, rank_zero)
    finally:
        if log_handler is not None:
            detach_train_log(log_handler)


def _fit(run: Run, rank_zero: bool) -> Dict[str, Any]:
    cfg, model = run.cfg, run.model
    if rank_zero:
        (run.run_dir / "config.yaml").write_text(to_yaml(cfg))
        write_run_record(run.run_dir, run.overrides)
    datamodule = ArrayDataModule(run.splits, int(cfg.batch_size), int(cfg.seed), batch_sampler_factory=model.batch_sampler_factory(),
                                 data_on_device=str(cfg.trainer.get("data_on_device", "auto")))
    summary: Dict[str, Any] = {"run_dir": str(run.run_dir), "method": cfg.method.name, "overrides": list(run.overrides)}
    trainer = build_trainer(cfg, run.run_dir)
    for logger in trainer.loggers:  # the resolved config, visible in TensorBoard/W&B/MLflow/hparams.yaml
        logger.log_hyperparams(hyperparameters(cfg, run.overrides))
    os.environ["CONTRASTIVE_RUN_DIR"] = str(run.run_dir)  # inherited by the DDP processes Lightning starts
    if cfg.knn.enabled and cfg.knn.random_init_baseline and run.resume_from is None:
        probe = build_trainer(cfg, run.run_dir, logger=False, callbacks=[], enable_progress_bar=False)
        summary["knn_top1_random_init"] = _knn(probe, model, datamodule)
        if trainer.is_global_zero:
            log.info("kNN top-1 at random initialisation: %.2f%%", summary["knn_top1_random_init"])
    start = time.perf_counter()
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=str(run.resume_from) if run.resume_from else None)
    except SIGTERMException:
        log.warning("stopped by SIGTERM; checkpoint %s", run.run_dir / "checkpoints" / "last.ckpt")
        raise SystemExit(SIGTERM_EXIT_CODE) from None
    finally:
        os.environ.pop("CONTRASTIVE_RUN_DIR", None)
    summary["train_seconds"] = round(time.perf_counter() - start, 1)
    summary["epochs"] = int(trainer.current_epoch)
    if cfg.knn.enabled:
        if "knn_top1" not in trainer.callback_metrics or int(cfg.trainer.max_epochs) % int(cfg.knn.every_n_epochs):
            summary["knn_top1"] = _knn(trainer, model, datamodule)
        else:
            summary["knn_top1"] = float(trainer.callback_metrics["knn_top1"])
    summary["last_checkpoint"] = str(run.run_dir / "checkpoints" / "last.ckpt")
    if trainer.is_global_zero:
        metrics_csv = run.run_dir / "logs" / "metrics.csv"
        if metrics_csv.is_file():  # loss, learning rate and kNN curves: one look says whether it learned
            summary["curves_png"] = str(plot_training_curves(metrics_csv, run.run_dir / "curves.png",
                                                                   summary.get("knn_top1_random_init")))
        (run.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    finish_loggers(trainer.loggers)
    return summary
