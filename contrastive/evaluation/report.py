"""Results: the printed table, the JSON files beside the checkpoint, the summary over
all runs of an output folder, and the 2-D embedding plot."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

#: (key, header, format) of the printed tables.
COLUMNS: Tuple[Tuple[str, str, str], ...] = (
    ("mode", "mode", "{}"),
    ("dataset", "dataset", "{}"),
    ("label_fraction", "labels", "{:g}"),
    ("top1", "top-1 %", "{:.2f}"),
    ("top5", "top-5 %", "{:.2f}"),
    ("feature_dim", "dim", "{}"),
    ("seconds", "time s", "{:.1f}"),
)
SUMMARY_COLUMNS = (("run", "run", "{}"), ("method", "method", "{}"), ("backbone", "backbone", "{}")) + COLUMNS


def format_table(rows: Sequence[Dict[str, Any]], columns: Sequence[Tuple[str, str, str]] = COLUMNS) -> str:
    """A plain-text table with one row per result (missing values print as ``-``)."""
    cells = [[h for _, h, _ in columns]]
    for row in rows:
        cells.append([fmt.format(row[k]) if row.get(k) is not None else "-" for k, _, fmt in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    numeric = {i for i, (k, _, _) in enumerate(columns) if k in ("label_fraction", "top1", "top5", "feature_dim", "seconds")}
    lines = []
    for n, r in enumerate(cells):
        lines.append("  ".join(c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def result_name(mode: str, dataset: str, label_fraction: float) -> str:
    """File name of one result: ``<mode>-<dataset>-labels<fraction>.json``."""
    return f"{mode}-{dataset}-labels{label_fraction:g}.json"


def write_result(row: Dict[str, Any], folder: Path) -> Path:
    """Write one result as JSON (atomically) into ``folder``; returns the path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / result_name(row["mode"], row["dataset"], row["label_fraction"])
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(row, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


def collect_results(output_dir: Path) -> List[Dict[str, Any]]:
    """Every result JSON under ``output_dir`` (``**/*.eval/*.json``), with a ``run`` column:
    the checkpoint's path relative to ``output_dir`` (or ``random-<backbone>/...``)."""
    rows = []
    for path in sorted(output_dir.glob("**/*.eval/*.json")):
        try:
            row = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(row, dict) or "mode" not in row or "top1" not in row:
            continue  # e.g. backbone.json of an export
        source = path.parent.with_name(path.parent.name[: -len(".eval")])
        try:
            row["run"] = str(source.relative_to(output_dir))
        except ValueError:
            row["run"] = str(source)
        rows.append(row)
    return sorted(rows, key=lambda r: (r["run"], r["dataset"], r["label_fraction"], r["mode"]))


def plot_embedding(features: torch.Tensor, labels: torch.Tensor, classes: Sequence[str], path: Path,
                   samples: int = 1000, seed: int = 0, title: Optional[str] = None) -> Path:
    """t-SNE of a class-balanced sample of features, coloured by class, saved as PNG.

    Args:
        features: float ``[M, D]``.
        labels: int64 ``[M]``.
        classes: Class names (legend, up to 20 classes).
        path: Where to write the PNG.
        samples: About how many points (``samples / C`` per class).
        seed: Sample and t-SNE seed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    from contrastive.data import class_balanced_subset

    index = class_balanced_subset(labels, min(1.0, samples / max(1, len(labels))), seed=seed)
    x = torch.nn.functional.normalize(features[index].float(), dim=1).numpy()  # [n, D]
    y = labels[index].numpy()
    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)  # [n, 2]
    fig, ax = plt.subplots(figsize=(6, 6), dpi=120)
    cmap = plt.get_cmap("tab20" if len(classes) > 10 else "tab10")
    for c in sorted(set(y.tolist())):
        pts = xy[y == c]
        name = classes[c] if c < len(classes) else str(c)
        ax.scatter(pts[:, 0], pts[:, 1], s=6, color=cmap(c % cmap.N), label=name if len(classes) <= 20 else None)
    if len(classes) <= 20:
        ax.legend(markerscale=2, fontsize=7, loc="best", frameon=False)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or f"t-SNE of {len(x)} test features")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
