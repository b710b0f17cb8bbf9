"""What a run records about itself: loggers, hyperparameters, ``env.json``, ``train.log``.

``logger=[csv,tensorboard]`` (the default) is a list; ``wandb`` runs offline when there is
no API key (the files sync later with ``wandb sync``), ``mlflow`` writes a local file
store (``<output_dir>/mlruns``) unless ``tracking.mlflow.tracking_uri`` names a server.
Every logger receives the resolved config as hyperparameters.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from omegaconf import DictConfig, OmegaConf

from contrastive.core.errors import ConfigError

log = logging.getLogger("contrastive")

LOGGERS = ("csv", "tensorboard", "wandb", "mlflow")
_EXTRAS = {"wandb": ("wandb", "contrastive[wandb]"), "mlflow": ("mlflow", "contrastive[mlflow]")}


def validate_loggers(cfg: DictConfig) -> None:
    """Known names, and the optional packages they need installed."""
    import importlib.util

    names = list(cfg.logger or [])
    for name in names:
        if name not in LOGGERS:
            raise ConfigError(f"logger '{name}' is not valid; choose any of {', '.join(LOGGERS)} (e.g. logger=[csv,wandb])")
        module, extra = _EXTRAS.get(name, (None, None))
        if module and importlib.util.find_spec(module) is None:
            raise ConfigError(f"logger '{name}' needs the {module} package: pip install '{extra}'")
    mode = str(cfg.tracking.wandb.mode)
    if mode not in ("auto", "online", "offline"):
        raise ConfigError(f"tracking.wandb.mode='{mode}' is not valid; choose one of auto, online, offline")


def _wandb_offline(mode: str) -> bool:
    if mode != "auto":
        return mode == "offline"
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE") == "online":
        return False
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return not (netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore"))


def build_loggers(cfg: DictConfig, run_dir: Path) -> List[Any]:
    """The Lightning loggers ``cfg.logger`` names, all writing inside ``run_dir``."""
    from pytorch_lightning.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger, WandbLogger

    loggers: List[Any] = []
    for name in cfg.logger or []:
        if name == "csv":
            loggers.append(CSVLogger(run_dir, name="", version="logs"))
        elif name == "tensorboard":
            loggers.append(TensorBoardLogger(run_dir, name="", version="tensorboard", default_hp_metric=False))
        elif name == "wandb":
            w = cfg.tracking.wandb
            offline = _wandb_offline(str(w.mode))
            (run_dir / "wandb").mkdir(exist_ok=True)
            loggers.append(WandbLogger(project=str(w.project), entity=w.entity, name=f"{cfg.run_name}/{run_dir.name}",
                                       save_dir=str(run_dir), offline=offline, tags=list(w.tags or [])))
            log.info("wandb: %s (%s)", "offline: sync later with `wandb sync " + str(run_dir / "wandb") + "`"
                     if offline else "online", w.project)
        elif name == "mlflow":
            m = cfg.tracking.mlflow
            uri = m.tracking_uri
            if not uri:  # a local file store (MLflow 3 asks for this opt-in; a server or sqlite:// needs none)
                uri = (Path(str(cfg.output_dir)).resolve() / "mlruns").as_uri()
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            loggers.append(MLFlowLogger(experiment_name=str(m.experiment), run_name=f"{cfg.run_name}/{run_dir.name}",
                                        tracking_uri=str(uri)))
    return loggers


def finish_loggers(loggers: Sequence[Any]) -> None:
    """Close the W&B run (its files, config.yaml included, are written at finish)."""
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger" and getattr(logger, "_experiment", None) is not None:
            logger.experiment.finish()


def hyperparameters(cfg: DictConfig, overrides: Sequence[str]) -> Dict[str, Any]:
    """The resolved config, plus the command-line overrides, for ``log_hyperparams``."""
    params = OmegaConf.to_container(cfg, resolve=True)
    params["overrides"] = " ".join(overrides)
    return params


def _package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    """The commit of the checkout the package runs from (an installed wheel has none)."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def environment() -> Dict[str, Any]:
    """Versions, git commit and device: what ``env.json`` records."""
    import torch

    device = "cpu"
    if torch.cuda.is_available():
        device = f"cuda: {torch.cuda.get_device_name(0)} x {torch.cuda.device_count()}"
    return {
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "packages": {name: _package_version(name) for name in
                     ("contrastive", "torch", "torchvision", "pytorch-lightning", "lightly", "faiss-cpu", "hydra-core")},
        "device": device,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv else [],
    }


def write_run_record(run_dir: Path, overrides: Sequence[str], auto: Optional[Dict[str, Any]] = None) -> None:
    """``env.json`` (with ``auto``: what the ``auto`` settings chose, :mod:`contrastive.engine.auto`)
    and ``overrides.yaml`` (the command-line overrides) in the run folder."""
    record = environment()
    if auto is not None:
        record["auto"] = auto
    (run_dir / "env.json").write_text(json.dumps(record, indent=2) + "\n")
    (run_dir / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(list(overrides))) if overrides else "[]\n")


def update_run_record(run_dir: Path, entries: Dict[str, Any]) -> None:
    """Set top-level ``entries`` of the run folder's ``env.json``."""
    path = run_dir / "env.json"
    record = json.loads(path.read_text()) if path.is_file() else {}
    record.update(entries)
    path.write_text(json.dumps(record, indent=2) + "\n")


def attach_train_log(run_dir: Path) -> logging.Handler:
    """Copy this process's log lines into ``<run_dir>/train.log`` (remove the handler after)."""
    from contrastive.core.logs import LOG_FORMAT

    handler = logging.FileHandler(run_dir / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
    handler.setLevel(logging.INFO)
    logging.getLogger().addHandler(handler)
    ours = logging.getLogger("contrastive")
    if ours.level == logging.NOTSET:  # a run's own INFO lines reach train.log whatever the root level is
        ours.setLevel(logging.INFO)
    return handler


def detach_train_log(handler: logging.Handler) -> None:
    logging.getLogger().removeHandler(handler)
    handler.close()
