"""From a config to a trained, checkpointed encoder (PyTorch Lightning).

:func:`prepare_run` does everything that can fail on bad input (config checks,
plugins, resume target, dataset, model, output folder) before anything is written;
:func:`fit` trains. ``train.py`` is a thin wrapper around the two. The Trainer is built in
:mod:`contrastive.engine.trainer`; what ``auto`` settings chose is :mod:`contrastive.engine.auto`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Sequence

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from pytorch_lightning.utilities.exceptions import SIGTERMException

from contrastive.backbones.factory import check_input_size
from contrastive.config.batch import per_process_batch
from contrastive.config.compose import to_yaml
from contrastive.config.plugins import import_plugins, load_builtin_methods
from contrastive.core.errors import ConfigError
from contrastive.core.logs import quiet_warnings
from contrastive.core.registry import BACKBONES, DATASETS, METHODS
from contrastive.data import DatasetSplits, build_dataset
from contrastive.data.module import ArrayDataModule
from contrastive.engine.auto import RecordDataPlacement, auto_choices, describe_choices
from contrastive.engine.checkpoint import (SIGTERM_EXIT_CODE, check_checkpoint_fits, find_latest_checkpoint, load_checkpoint,
                                           remove_stale_temp_files)
from contrastive.engine.headline import headline_summary
from contrastive.engine.method import DataInfo, Method
from contrastive.engine.optim import validate_optim_config
from contrastive.engine.plots import plot_training_curves
from contrastive.engine.tracking import attach_train_log, detach_train_log, finish_loggers, hyperparameters, validate_loggers, write_run_record
from contrastive.engine.trainer import build_trainer, check_trainer_options, strategy_for_unused_parameters

log = logging.getLogger("contrastive")
RUN_DIR_ENV = "CONTRASTIVE_RUN_DIR"  # see _run_dir_for_ddp_processes


@dataclass
class Run:
    """Everything :func:`fit` needs, built and checked by :func:`prepare_run`."""

    cfg: DictConfig
    model: Method
    splits: DatasetSplits
    run_dir: Path
    resume_from: Optional[Path]
    overrides: Sequence[str] = ()  # the command line's overrides (recorded in the run folder)
    auto: Dict[str, Any] = field(default_factory=dict)  # what the `auto` settings chose (engine/auto.py)
    processes: int = 1  # training processes (Lightning's world_size: devices x nodes)


def validate_config(cfg: DictConfig) -> int:
    """Checks that need no data: registered names and impossible values; sets ``batch_size`` from
    ``global_batch_size`` for the processes the Trainer will start (:func:`resolve_batch_size`).

    Returns:
        The number of training processes (Lightning's ``world_size``: devices x nodes)."""
    METHODS.get(cfg.method.name)
    BACKBONES.get(cfg.backbone.name)
    DATASETS.get(cfg.dataset.name)
    max_steps = int(cfg.trainer.max_steps)
    if int(cfg.trainer.max_epochs) < 1 and not (int(cfg.trainer.max_epochs) == -1 and max_steps > 0):
        raise ConfigError(f"trainer.max_epochs must be >= 1 (or -1 with trainer.max_steps > 0), got {cfg.trainer.max_epochs}")
    if cfg.knn.enabled and (int(cfg.knn.k) < 1 or float(cfg.knn.temperature) <= 0 or int(cfg.knn.every_n_epochs) < 1):
        raise ConfigError(f"knn needs k >= 1, temperature > 0 and every_n_epochs >= 1, got k={cfg.knn.k}, "
                          f"temperature={cfg.knn.temperature}, every_n_epochs={cfg.knn.every_n_epochs}")
    if not float(cfg.cluster_wait_minutes) > 0:
        raise ConfigError(f"cluster_wait_minutes must be > 0 (minutes the other processes wait while rank 0 clusters), "
                          f"got {cfg.cluster_wait_minutes}")
    # PyTorch's SyncBatchNorm has no CPU kernel: without this check the run would crash
    # at its first step instead of here.
    if bool(cfg.trainer.sync_batchnorm) and (str(cfg.trainer.accelerator) == "cpu" or not torch.cuda.is_available()):
        raise ConfigError("trainer.sync_batchnorm=true needs GPUs (PyTorch's SyncBatchNorm has no CPU kernel); "
                          "set trainer.sync_batchnorm=false on CPU")
    validate_optim_config(cfg.optimizer, cfg.scheduler, int(cfg.trainer.max_epochs))
    validate_loggers(cfg)
    processes = check_trainer_options(cfg).world_size
    resolve_batch_size(cfg, processes)
    if int(cfg.batch_size) < 1:
        raise ConfigError(f"batch_size must be >= 1, got {cfg.batch_size}")
    return processes


def resolve_batch_size(cfg: DictConfig, processes: int) -> None:
    """Set ``cfg.batch_size`` (per process) from ``global_batch_size`` when a preset states the paper's
    global batch (:func:`contrastive.config.batch.per_process_batch`); ``processes``: Lightning's world size."""
    cfg.batch_size = per_process_batch(cfg.batch_size, cfg.global_batch_size, processes)


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
    elif os.environ.get(RUN_DIR_ENV) and os.environ.get("LOCAL_RANK", "0") != "0":
        run_dir = Path(os.environ[RUN_DIR_ENV])  # a DDP process Lightning started: rank 0's folder
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
    processes = validate_config(cfg)
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
    if model.has_unused_parameters():  # a strategy that cannot train it: one line now, not DDP's error at step 2
        strategy_for_unused_parameters(cfg.trainer.strategy, processes, str(cfg.method.name))
    if resume_from is not None:  # another backbone/width: one error line now, not a size-mismatch traceback later
        check_checkpoint_fits(load_checkpoint(resume_from), model, resume_from)
    auto = auto_choices(cfg, model.channels_last, splits, processes)
    run_dir = _make_run_dir(cfg, resume_from, run_dir)
    if resume_from is not None:
        for name in remove_stale_temp_files(run_dir / "checkpoints"):
            log.info("removed %s, left by a run killed while saving", name)
    return Run(cfg, model, splits, run_dir, resume_from, tuple(overrides), auto, processes)


def _knn(trainer: pl.Trainer, model: Method, datamodule: ArrayDataModule) -> Optional[float]:
    results = trainer.validate(model, datamodule=datamodule, verbose=False)
    return float(results[0]["knn_top1"]) if results and "knn_top1" in results[0] else None


def is_rank_zero() -> bool:
    """Whether this process is rank 0 (always, without DDP): the one that prints and writes run-level files."""
    from pytorch_lightning.utilities.rank_zero import rank_zero_only  # rank from RANK/LOCAL_RANK/SLURM_PROCID

    return int(getattr(rank_zero_only, "rank", 0) or 0) == 0


def fit(run: Run) -> Dict[str, Any]:
    """Train, checkpoint, and return a summary (also written to ``summary.json``)."""
    rank_zero = is_rank_zero()
    log_handler = attach_train_log(run.run_dir) if rank_zero else None
    try:
        with quiet_warnings():
            return _fit(run, rank_zero)
    finally:
        if log_handler is not None:
            detach_train_log(log_handler)


def _add_headline(summary: Dict[str, Any], trainer: pl.Trainer, model: Method, metrics_csv: Path) -> None:
    """``summary["headline"]`` (final, best, best epoch of ``model.HEADLINE``) and its flat keys."""
    headline = model.HEADLINE
    metrics = trainer.callback_metrics
    for logged, flat in headline.summary_keys:
        summary[flat] = float(metrics[logged]) if logged in metrics else None
    final = summary.get(headline.key) if headline.key in summary else None
    if final is None and headline.key in metrics:
        final = float(metrics[headline.key])
    summary["headline"] = headline_summary(headline, final, metrics_csv, int(summary["epochs"]))


@contextmanager
def _run_dir_for_ddp_processes(run_dir: Path) -> Iterator[None]:
    """While ``trainer.fit`` runs, the DDP processes Lightning starts find this run's folder in
    ``CONTRASTIVE_RUN_DIR`` (read by :func:`_make_run_dir` when ``LOCAL_RANK`` is not 0).

    Why the environment: Lightning's launcher (``lightning_fabric.strategies.launchers.subprocess_script``)
    starts processes 1..N-1 by running this script again with the same ``sys.argv`` and a copy of
    ``os.environ``, nothing else. In the Hydra app (``train.py``) it adds ``hydra.run.dir=<this folder>``,
    which reaches :func:`prepare_run` as ``run_dir``, so the variable is not read there; a library
    script (``prepare_run(load_config(...))``) has no argument naming the folder (it is a new
    timestamp in each process), and the copied environment is the one channel left.
    """
    os.environ[RUN_DIR_ENV] = str(run_dir)
    try:
        yield
    finally:
        os.environ.pop(RUN_DIR_ENV, None)


def _fit(run: Run, rank_zero: bool) -> Dict[str, Any]:
    cfg, model = run.cfg, run.model
    if rank_zero:
        if run.auto:  # config.yaml keeps `auto`; what it chose, and why, is in the first log lines and env.json
            log.info(describe_choices(run.auto))
        (run.run_dir / "config.yaml").write_text(to_yaml(cfg))
        write_run_record(run.run_dir, run.overrides, run.auto or None)
    datamodule = ArrayDataModule(run.splits, int(cfg.batch_size), int(cfg.seed), batch_sampler_factory=model.batch_sampler_factory(),
                                 data_on_device=str(cfg.trainer.data_on_device))
    summary: Dict[str, Any] = {"run_dir": str(run.run_dir), "method": cfg.method.name, "overrides": list(run.overrides)}
    ddp = {"unused_parameters": model.has_unused_parameters(), "processes": run.processes}
    trainer = build_trainer(cfg, run.run_dir, **ddp)
    if run.auto:
        trainer.callbacks.append(RecordDataPlacement(run.auto, run.run_dir, run.splits))
    for logger in trainer.loggers:  # the resolved config, visible in TensorBoard/W&B/MLflow/hparams.yaml
        logger.log_hyperparams(hyperparameters(cfg, run.overrides))
    if cfg.knn.enabled and cfg.knn.random_init_baseline and run.resume_from is None:
        probe = build_trainer(cfg, run.run_dir, **ddp, logger=False, callbacks=[], enable_progress_bar=False)
        summary["knn_top1_random_init"] = _knn(probe, model, datamodule)
        if trainer.is_global_zero:
            log.info("kNN top-1 at random initialisation: %.2f%%", summary["knn_top1_random_init"])
    start = time.perf_counter()
    try:
        with _run_dir_for_ddp_processes(run.run_dir):
            trainer.fit(model, datamodule=datamodule, ckpt_path=str(run.resume_from) if run.resume_from else None)
    except SIGTERMException:
        log.warning("stopped by SIGTERM; checkpoint %s", run.run_dir / "checkpoints" / "last.ckpt")
        raise SystemExit(SIGTERM_EXIT_CODE) from None
    summary["train_seconds"] = round(time.perf_counter() - start, 1)
    summary["epochs"] = int(trainer.current_epoch)
    if cfg.knn.enabled:
        if "knn_top1" not in trainer.callback_metrics or int(cfg.trainer.max_epochs) % int(cfg.knn.every_n_epochs):
            summary["knn_top1"] = _knn(trainer, model, datamodule)
        else:
            summary["knn_top1"] = float(trainer.callback_metrics["knn_top1"])
    summary["last_checkpoint"] = str(run.run_dir / "checkpoints" / "last.ckpt")
    metrics_csv = run.run_dir / "logs" / "metrics.csv"
    _add_headline(summary, trainer, model, metrics_csv)
    if trainer.is_global_zero:  # run-level files: rank 0 only
        if metrics_csv.is_file():  # loss, learning rate and headline curves: one look says whether it learned
            summary["curves_png"] = str(plot_training_curves(metrics_csv, run.run_dir / "curves.png",
                                                                   summary.get("knn_top1_random_init"), model.HEADLINE))
        (run.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    finish_loggers(trainer.loggers)
    return summary
