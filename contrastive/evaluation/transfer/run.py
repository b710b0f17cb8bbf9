"""``run_transfer``: checkpoints x datasets, one score per cell, written as a table.

For each checkpoint and each dataset of ``eval.transfer.datasets``: load the splits
(:mod:`.datasets`), extract or load the cached frozen features of train, val and test
(:mod:`.extract`), choose the hyperparameters on validation, refit on train +
validation and score test once with the dataset's metric (:func:`.linear.linear_transfer`,
or :func:`.finetune.finetune_transfer` for ``eval.transfer.mode=finetune``). The table is
printed and written as ``transfer.{md,csv,json,png}`` in the run folder (:mod:`.report`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence

import torch
from omegaconf import DictConfig, OmegaConf

from contrastive.augment.pipelines import EvalTransform
from contrastive.core.errors import ConfigError
from contrastive.evaluation.features import frozen_encoder, use_amp
from contrastive.evaluation.transfer.datasets import METRICS, TransferData, check_names, load_transfer_dataset
from contrastive.evaluation.transfer.extract import cached_features, extract_split, split_key
from contrastive.evaluation.transfer.linear import REG_GRID, linear_transfer

log = logging.getLogger("contrastive")

MODES = ("linear", "finetune")
GRIDS = {"paper": REG_GRID, "small": tuple(10.0 ** e for e in (-6, -4, -2, 0, 2, 4, 5))}


def validate_transfer_config(t: DictConfig) -> None:
    """Checks of ``eval.transfer`` that need no data (one-line ConfigErrors)."""
    from contrastive.evaluation.transfer.references import REFERENCES

    check_names(list(t.datasets))
    if not list(t.datasets):
        raise ConfigError("eval.transfer.datasets is empty; name at least one, e.g. [pets,caltech101]")
    if str(t.mode) not in MODES:
        raise ConfigError(f"eval.transfer.mode='{t.mode}' is not valid; choose one of {', '.join(MODES)}")
    if t.reference is not None and str(t.reference) not in REFERENCES:
        raise ConfigError(f"eval.transfer.reference='{t.reference}' is not valid; choose null or one of "
                          f"{', '.join(REFERENCES)}")
    if str(t.grid) not in GRIDS:
        raise ConfigError(f"eval.transfer.grid='{t.grid}' is not valid; choose one of {', '.join(GRIDS)}")
    if not 0.0 < float(t.val_fraction) < 1.0:
        raise ConfigError(f"eval.transfer.val_fraction={t.val_fraction} must be in (0, 1), e.g. 0.2")


def checkpoints_of(cfg: DictConfig) -> List[Any]:
    """``checkpoint`` as a list: one path, ``[a.ckpt,b.ckpt]`` (one table row each), or null/random."""
    value = cfg.checkpoint
    if OmegaConf.is_list(value):
        return [str(v) for v in value]
    return [value]


def _load(cfg: DictConfig, checkpoint: Any):
    """(LoadedModel, eval dir) of one checkpoint, as ``linear_eval.py`` loads it."""
    from contrastive.evaluation.loading import LoadedModel, _import_plugins, build_model, eval_dir, resolve_checkpoint
    from contrastive.evaluation.run_config import build_run_config
    from contrastive.evaluation.features import config_sha256

    one = cfg.copy()
    OmegaConf.set_struct(one, False)
    one.checkpoint = checkpoint
    path, ckpt, sha = resolve_checkpoint(one)
    ckpt_config = ckpt["contrastive"]["config"] if ckpt is not None else None
    _import_plugins(one, ckpt_config)
    run_cfg = build_run_config(ckpt_config, [], [], int(cfg.seed))
    if ckpt is None:
        sha = config_sha256({"random": OmegaConf.to_container(run_cfg.backbone), "seed": int(cfg.seed)})
    loaded = LoadedModel(one, run_cfg, build_model(ckpt, run_cfg, path, int(cfg.seed)), path, sha)
    return loaded, eval_dir(loaded)


def _features(loaded, folder: Path, data: TransferData, cfg: DictConfig, device: torch.device) -> Dict[str, Any]:
    t = cfg.eval.transfer
    d = loaded.run_cfg.dataset
    size = int(t.image_size) if t.image_size is not None else int(loaded.model.data.image_size)
    transform = EvalTransform(size, tuple(d.mean), tuple(d.std)).to(device)
    amp = use_amp(cfg, device)
    settings = {"size": size, "mean": list(d.mean), "std": list(d.std), "amp": amp, "root": str(t.root),
                "val_fraction": float(t.val_fraction), "val_seed": int(t.val_seed),
                "caltech": int(t.caltech_train_per_class)}
    model = loaded.model.to(device)
    out = {}
    with frozen_encoder(model):
        for split, dataset in data.splits.items():
            key = split_key(loaded.checkpoint_sha256, data.name, split, settings)
            compute = lambda ds=dataset: extract_split(model.embed, ds, size, transform, int(cfg.eval.batch_size),
                                                      device, amp, int(t.workers))
            out[split], _ = cached_features(folder if t.cache else None, key, f"{data.name}-{split}", compute)
    return {s: (x.clone(), y.clone()) for s, (x, y) in out.items()}  # normal tensors, out of inference mode


def evaluate_dataset(loaded, folder: Path, data: TransferData, cfg: DictConfig, device: torch.device) -> Dict[str, Any]:
    """One cell of the table: the test score (in %) of ``loaded`` on ``data`` with its details."""
    t = cfg.eval.transfer
    start = time.perf_counter()
    metric = METRICS[data.metric]
    if str(t.mode) == "linear":
        splits = _features(loaded, folder, data, cfg, device)
        splits = {s: (x.double(), y.double() if y.is_floating_point() else y) for s, (x, y) in splits.items()}
        res = linear_transfer(splits, data.num_classes, metric, GRIDS[str(t.grid)], int(t.lbfgs_iters),
                              bool(t.warm_start))
        chosen: Dict[str, Any] = {"l2": res.l2}
        val, test = res.val_score, res.test_score
    else:
        from contrastive.evaluation.transfer.finetune import finetune_transfer

        res = finetune_transfer(loaded, data, cfg, device)
        chosen, val, test = res["chosen"], res["val_score"], res["test_score"]
    return {"dataset": data.name, "metric": data.metric, "mode": str(t.mode), "test": 100.0 * test,
            "val": 100.0 * val, "chosen": chosen, "sizes": {s: len(d) for s, d in data.splits.items()},
            "seconds": time.perf_counter() - start}


def run_transfer(cfg: DictConfig, run_dir: Path | str) -> Dict[str, Any]:
    """Evaluate every checkpoint of ``cfg.checkpoint`` on every dataset of ``eval.transfer.datasets``.

    Args:
        cfg: the eval config composed with ``eval=transfer``.
        run_dir: where ``transfer.{md,csv,json,png}`` are written.

    Returns:
        ``{"rows": [...], "cells": [...], "files": [...], "table": str}``.

    Raises:
        ConfigError: a bad ``eval.transfer`` value, a missing dataset folder, a bad checkpoint.
    """
    from contrastive.evaluation.loading import _device
    from contrastive.evaluation.transfer.report import write_report

    t = cfg.eval.transfer
    validate_transfer_config(t)
    datasets: Sequence[TransferData] = [load_transfer_dataset(n, t.root, t) for n in t.datasets]  # all checked first
    device = _device(cfg)
    cells: List[Dict[str, Any]] = []
    for checkpoint in checkpoints_of(cfg):
        loaded, folder = _load(cfg, checkpoint)
        for data in datasets:
            cell = evaluate_dataset(loaded, folder / "transfer", data, cfg, device)
            cell["checkpoint"] = loaded.checkpoint
            log.info("%s on %s: %.2f (%s)", loaded.checkpoint, data.name, cell["test"], data.metric)
            cells.append(cell)
    return write_report(cells, [d.name for d in datasets], str(t.mode), t.reference, Path(run_dir))
