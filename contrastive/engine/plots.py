"""Pictures of a run: training curves from Lightning's ``metrics.csv``."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402

from contrastive.engine.headline import Headline, epoch_values  # noqa: E402


def read_metrics(metrics_csv: Path) -> Dict[str, List[Tuple[float, float]]]:
    """``metrics.csv`` -> {metric: [(step, value), ...]} for every non-empty cell."""
    series: Dict[str, List[Tuple[float, float]]] = defaultdict(list)
    with open(metrics_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            step = float(row.get("step") or 0)
            for key, value in row.items():
                if key not in ("step", "epoch") and value not in (None, ""):
                    series[key].append((step, float(value)))
    return dict(series)


def plot_training_curves(metrics_csv: Path, out_png: Path, knn_random_init: Optional[float] = None,
                         headline: Optional[Headline] = None) -> Path:
    """Loss per step, learning rate, and the headline metric per epoch (default: kNN top-1, with
    the random-init encoder's kNN as a dashed line when given), in one figure. A headline other
    than kNN (the classifiers' test error) gets its own panel; kNN per step stays beside it.

    Args:
        metrics_csv: The CSV logger's file.
        out_png: Where to write the figure.
        knn_random_init: The random-init encoder's kNN top-1, drawn as a dashed line.
        headline: The method's headline metric (``None``: kNN top-1).
    """
    headline = headline or Headline(key="knn_top1", label="kNN top-1 %")
    series = read_metrics(metrics_csv)
    per_epoch = epoch_values(metrics_csv, headline.key, epochs=1 << 30)
    panels = [("train loss", [k for k in series if k == "train_loss_step" or k.startswith("train/")]),
              ("learning rate", [k for k in series if k.startswith("lr-")]),
              ("kNN top-1 (%)", [k for k in series if k == "knn_top1" and headline.key != "knn_top1"])]
    panels = [(title, keys) for title, keys in panels if keys]
    count = len(panels) + bool(per_epoch)
    fig, axes = plt.subplots(1, max(1, count), figsize=(4.2 * max(1, count), 3.2))
    axes = list(axes) if count > 1 else [axes]
    for ax, (title, keys) in zip(axes, panels):
        for key in keys:
            steps, values = zip(*series[key])
            ax.plot(steps, values, marker="o" if len(values) < 30 else None, label=key.replace("train/", ""))
        if title.startswith("kNN") and knn_random_init is not None:
            ax.axhline(knn_random_init, linestyle="--", color="gray", label="random init")
            ax.legend(fontsize=7)
        ax.set_title(title)
        ax.set_xlabel("step")
        if len(keys) > 1:
            ax.legend(fontsize=7)
    if per_epoch:
        _plot_headline(axes[len(panels)], headline, per_epoch, knn_random_init)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def _plot_headline(ax: Any, headline: Headline, per_epoch: List[Tuple[int, float]], knn_random_init: Optional[float]) -> None:
    """The headline metric against epochs trained."""
    epochs, values = zip(*per_epoch)
    ax.plot(epochs, values, marker="o" if len(values) < 30 else None, label=headline.key)
    if headline.key == "knn_top1" and knn_random_init is not None:
        ax.axhline(knn_random_init, linestyle="--", color="gray", label="random init")
        ax.legend(fontsize=7)
    ax.set_title(f"{headline.label} ({'lower' if headline.mode == 'min' else 'higher'} is better)")
    ax.set_xlabel("epoch")
