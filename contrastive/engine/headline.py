"""The headline metric of a run: what a method is judged by, per epoch, final and best.

Each :class:`~contrastive.engine.method.Method` declares one as its ``HEADLINE`` class
attribute: the kNN monitor's top-1 for self-supervised methods, the classifier's test error for
:class:`~contrastive.engine.supervised.ClassifierMethod`. :func:`headline_summary` reads the
per-epoch values from the CSV logger's ``metrics.csv``; the result goes into ``summary.json``
under ``headline`` and into the run's last printed lines.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple


@dataclass(frozen=True)
class Headline:
    """The metric a method reports first.

    Attributes:
        key: The logged metric (``knn_top1``, ``val_error``).
        label: How it prints (``kNN top-1 %``).
        mode: ``max`` or ``min``: which direction is better.
        summary_keys: ``(logged key, summary.json key)`` pairs copied flat into the summary
            (the classifiers: ``val_error -> test_error``, ``val_top1 -> test_top1``).
    """

    key: str
    label: str
    mode: str = "max"
    summary_keys: Tuple[Tuple[str, str], ...] = ()


def epoch_values(metrics_csv: Path, key: str, epochs: int) -> List[Tuple[int, float]]:
    """``[(epochs trained, value), ...]`` of ``key`` in ``metrics.csv``, one per evaluated epoch.

    A value logged in epoch ``e`` (0-based, Lightning's ``epoch`` column) belongs to ``e + 1``
    epochs trained; rows with ``e >= epochs`` (a validation run after ``fit``) are left out.
    """
    if not metrics_csv.is_file():
        return []
    values: Dict[int, float] = {}
    with open(metrics_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            value, epoch = row.get(key), row.get("epoch")
            if value in (None, "") or epoch in (None, ""):
                continue
            if int(float(epoch)) < epochs:
                values[int(float(epoch)) + 1] = float(value)
    return sorted(values.items())


def headline_summary(headline: Headline, final: Optional[float], metrics_csv: Path, epochs: int) -> Dict[str, Any]:
    """``{metric, label, mode, final, best, best_epoch}`` of one run.

    Args:
        headline: The method's :class:`Headline`.
        final: The value after the last epoch (``None`` when the run never measured it).
        metrics_csv: The CSV logger's file (per-epoch values; may be missing).
        epochs: Epochs trained; ``final`` counts as this epoch's value.
    """
    series = dict(epoch_values(metrics_csv, headline.key, epochs))
    if final is not None:
        series[epochs] = float(final)
    best_epoch: Optional[int] = None
    if series:
        pick = max if headline.mode == "max" else min
        best_epoch = pick(sorted(series), key=lambda e: series[e])
    return {"metric": headline.key, "label": headline.label, "mode": headline.mode,
            "final": None if final is None else float(final),
            "best": None if best_epoch is None else series[best_epoch], "best_epoch": best_epoch}


def format_headline(head: Dict[str, Any]) -> str:
    """One line: ``<label>: final ..., best ... (epoch N)``."""
    if head.get("final") is None:
        return f"{head['label']}: not measured"
    text = f"{head['label']}: {head['final']:6.2f} final"
    if head.get("best") is not None:
        text += f", {head['best']:6.2f} best (epoch {head['best_epoch']})"
    return text
