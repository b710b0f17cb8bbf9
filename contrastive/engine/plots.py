"""Pictures of a run: training curves from Lightning's ``metrics.csv``."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402


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


def plot_training_curves(metrics_csv: Path, out_png: Path, knn_random_init: Optional[float] = None) -> Path:
    """Loss per step, learning rate, and kNN top-1 per evaluation (with the random-init
    encoder's kNN as a dashed line when given), in one figure."""
    series = read_metrics(metrics_csv)
    panels = [("train loss", [k for k in series if k == "train_loss_step" or k.startswith("train/")]),
              ("learning rate", [k for k in series if k.startswith("lr-")]),
              ("kNN top-1 (%)", [k for k in series if k == "knn_top1"])]
    panels = [(title, keys) for title, keys in panels if keys]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(4.2 * max(1, len(panels)), 3.2))
    axes = axes if hasattr(axes, "__len__") else [axes]
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
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
