"""Run the evaluation protocols of a prepared setup and write their results.

``linear`` and ``knn`` share one set of cached frozen features; ``finetune`` trains
a copy of the encoder on images. Each result is a row (mode, dataset, label
fraction, top-1, top-5, feature dim, time, checkpoint hash, ...) written as JSON to
``<ckpt>.eval/`` and printed as one table.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any, Dict, List

from contrastive.evaluation.features import FeatureSet, assert_unchanged, features_for, snapshot_state, use_amp
from contrastive.evaluation.finetune import finetune
from contrastive.evaluation.loading import EvalSetup
from contrastive.evaluation.probe import evaluate_head, probe_or_load, save_head
from contrastive.evaluation.probe_augmented import train_augmented_probe
from contrastive.evaluation.report import plot_embedding, result_name, write_result
from contrastive.metrics.knn import knn_accuracy

log = logging.getLogger("contrastive")


def _modes(mode: str) -> List[str]:
    return ["linear", "knn", "finetune"] if mode == "all" else [mode]


def _row(setup: EvalSetup, mode: str, top1: float, top5: float, seconds: float, **extra: Any) -> Dict[str, Any]:
    cfg, run = setup.cfg, setup.run_cfg
    return {
        "mode": mode, "dataset": str(run.dataset.name), "label_fraction": float(cfg.eval.label_fraction),
        "top1": round(float(top1), 4), "top5": round(float(top5), 4), "feature_dim": setup.feature_dim,
        "seconds": round(seconds, 2), "checkpoint": setup.checkpoint, "checkpoint_sha256": setup.checkpoint_sha256,
        "method": str(run.method.name) if setup.checkpoint != "random" else "random-init",
        "backbone": str(run.backbone.name), "num_train": len(setup.train_index), "num_test": len(setup.splits.val),
        "num_classes": setup.splits.num_classes, "device": setup.device.type, "seed": int(cfg.seed),
        "date": datetime.now().isoformat(timespec="seconds"), **extra,
    }


def _linear(setup: EvalSetup, feats: FeatureSet, progress: bool) -> Dict[str, Any]:
    cfg = setup.cfg.eval.linear
    start = time.perf_counter()
    idx = setup.train_index
    if cfg.augment and setup.head is None:  # SimCLR Appendix B.6: crops and flips, frozen encoder
        head = train_augmented_probe(setup.model, setup.splits.train_labeled.subset(idx), setup.splits.num_classes,
                                     setup.transform, cfg, setup.device, use_amp(setup.cfg, setup.device), int(setup.cfg.seed), progress)
    else:
        head = probe_or_load(feats.train[idx], feats.train_labels[idx], setup.splits.num_classes, cfg, setup.device,
                             setup.head, int(setup.cfg.seed), progress)
    top1, top5 = evaluate_head(head, feats.test, feats.test_labels)
    name = result_name("linear_head", str(setup.run_cfg.dataset.name), float(setup.cfg.eval.label_fraction))
    head_path = save_head(head, setup.eval_dir / name.replace(".json", ".pt"))
    recipe = {k: cfg[k] for k in ("epochs", "batch_size", "lr", "momentum", "nesterov", "weight_decay", "feature_norm")}
    recipe["optimizer"] = str(cfg.optimizer)
    recipe["augment"] = bool(cfg.augment)
    return _row(setup, "linear", top1, top5, time.perf_counter() - start, feature_seconds=round(feats.seconds, 2),
                features_cached=feats.cached, head=str(head_path), reused_head=setup.head is not None, recipe=recipe)


def _knn(setup: EvalSetup, feats: FeatureSet) -> Dict[str, Any]:
    knn = setup.cfg.eval.knn
    k, t, backend = int(knn.k), float(knn.temperature), str(knn.backend)
    start = time.perf_counter()
    idx = setup.train_index
    device = setup.device
    top1, top5 = knn_accuracy(feats.train[idx].to(device), feats.train_labels[idx].to(device), feats.test.to(device),
                              feats.test_labels.to(device), setup.splits.num_classes, k=k, temperature=t, backend=backend)
    return _row(setup, "knn", top1, top5, time.perf_counter() - start, feature_seconds=round(feats.seconds, 2),
                features_cached=feats.cached, recipe={"k": k, "temperature": t, "backend": backend})


def _finetune(setup: EvalSetup, progress: bool) -> Dict[str, Any]:
    cfg = setup.cfg
    start = time.perf_counter()
    train = setup.splits.train_labeled.subset(setup.train_index)
    top1, top5 = finetune(setup.model, train, setup.splits.val, setup.splits.num_classes, setup.transform, cfg.eval.finetune,
                          setup.device, use_amp(cfg, setup.device), int(cfg.seed), progress, int(cfg.eval.batch_size))
    recipe = {k: v for k, v in cfg.eval.finetune.items() if k != "augment"}
    return _row(setup, "finetune", top1, top5, time.perf_counter() - start, recipe=recipe)


def evaluate(setup: EvalSetup) -> Dict[str, Any]:
    """Run ``eval.mode`` on ``setup``; write JSON per result (and the plot).

    Returns:
        ``{"checkpoint", "eval_dir", "results": [row, ...], "files": [...]}``.
    """
    cfg = setup.cfg
    progress = bool(cfg.eval.progress_bar)
    loaded = snapshot_state(setup.model)  # the evaluated encoder must leave exactly as it came
    modes = _modes(str(cfg.eval.mode))
    feats = features_for(setup, progress) if {"linear", "knn"} & set(modes) or cfg.eval.plot else None
    rows, files = [], []
    for mode in modes:
        if mode == "linear":
            row = _linear(setup, feats, progress)
        elif mode == "knn":
            row = _knn(setup, feats)
        else:
            row = _finetune(setup, progress)
        rows.append(row)
        files.append(str(write_result(row, setup.eval_dir)))
        log.info("%s: top-1 %.2f%%, top-5 %.2f%% (%.1f s)", mode, row["top1"], row["top5"], row["seconds"])
    if cfg.eval.plot:
        name = f"tsne-{setup.run_cfg.dataset.name}.png"
        files.append(str(plot_embedding(feats.test, feats.test_labels, setup.splits.classes, setup.eval_dir / name,
                                        int(cfg.eval.plot_samples), int(cfg.seed))))
    assert_unchanged(setup.model, loaded)
    return {"checkpoint": setup.checkpoint, "checkpoint_sha256": setup.checkpoint_sha256, "eval_dir": str(setup.eval_dir),
            "results": rows, "files": files}
