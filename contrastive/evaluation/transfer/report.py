"""The transfer table: one row per checkpoint, one column per dataset, as
``transfer.md``, ``transfer.csv``, ``transfer.json`` and ``transfer.png`` in the run folder.

Scores are percentages: accuracy (top-1 or mean per-class, as each dataset's metric) and
11-point mAP for VOC2007. Published rows (``eval.transfer.reference``) follow ours, with
their source line.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from contrastive.evaluation.transfer.references import reference_rows

METRIC_NAMES = {"top1": "top-1", "mean_per_class": "mean per-class", "map11": "11-point mAP"}


def table_rows(cells: Sequence[Dict[str, Any]], datasets: Sequence[str]) -> List[Dict[str, Any]]:
    """``[{"checkpoint": ..., <dataset>: score}]`` in first-seen checkpoint order."""
    rows: Dict[str, Dict[str, Any]] = {}
    for cell in cells:
        row = rows.setdefault(cell["checkpoint"], {"checkpoint": cell["checkpoint"], **{d: None for d in datasets}})
        row[cell["dataset"]] = round(float(cell["test"]), 2)
    return list(rows.values())


def format_markdown(rows: Sequence[Dict[str, Any]], datasets: Sequence[str], metrics: Dict[str, str]) -> str:
    """A Markdown table; the header names each dataset's metric; missing cells are ``-``."""
    head = ["checkpoint"] + [f"{d} ({METRIC_NAMES[metrics[d]]})" if d in metrics else d for d in datasets]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        vals = [str(row["checkpoint"])] + ["-" if row[d] is None else f"{row[d]:.2f}" for d in datasets]
        lines.append("| " + " | ".join(vals) + " |")
    return "\n".join(lines)


def _plot(rows: Sequence[Dict[str, Any]], datasets: Sequence[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(datasets)), 3.5))
    width = 0.8 / max(1, len(rows))
    for i, row in enumerate(rows):
        xs = [j + i * width for j in range(len(datasets))]
        ax.bar(xs, [row[d] or 0.0 for d in datasets], width=width, label=Path(str(row["checkpoint"])).name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(datasets))], list(datasets), rotation=30)
    ax.set_ylabel("test score (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(cells: Sequence[Dict[str, Any]], datasets: Sequence[str], mode: str, reference: Optional[str],
                 run_dir: Path) -> Dict[str, Any]:
    """Print the table and write ``transfer.{md,csv,json,png}`` into ``run_dir``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics = {c["dataset"]: c["metric"] for c in cells}
    rows = table_rows(cells, datasets)
    table = format_markdown(rows, datasets, metrics)
    refs: List[Dict[str, Any]] = []
    source = ""
    if reference is not None:
        refs, source = reference_rows(str(reference), mode, list(datasets))
        if refs:
            table += "\n" + "\n".join(format_markdown(refs, datasets, metrics).splitlines()[2:])
        table += f"\n\nreference: {source}"
    files = {"md": run_dir / "transfer.md", "csv": run_dir / "transfer.csv", "json": run_dir / "transfer.json",
             "png": run_dir / "transfer.png"}
    files["md"].write_text(f"# Transfer ({mode})\n\n{table}\n")
    with open(files["csv"], "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["checkpoint", *datasets, "source"])
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "source": "ours"})
        for row in refs:
            writer.writerow({**row, "source": source})
    summary = {"mode": mode, "datasets": list(datasets), "rows": rows, "cells": list(cells),
               "reference": {"name": reference, "source": source, "rows": refs}}
    files["json"].write_text(json.dumps(summary, indent=2, default=str))
    _plot(rows, datasets, files["png"])
    print(f"\ntransfer ({mode}):\n{table}\n\nwritten: {run_dir}/ (transfer.md, transfer.csv, transfer.json, transfer.png)")
    return {**summary, "table": table, "files": [str(p) for p in files.values()]}
