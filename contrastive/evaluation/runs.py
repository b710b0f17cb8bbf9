"""``contrastive-eval results``: every training run of an output folder with its evaluations.

One row per run (``summary.json``): method, dataset, backbone, epochs, trained and
random-init kNN, the linear / fine-tune / kNN evaluations of its checkpoints, and the
overrides whose values differ between the listed runs (so the jobs of a sweep can be
told apart). Runs are grouped by their headline metric (``summary.json``'s ``headline``: kNN
top-1 for self-supervised runs, the test error for supervised ones), one table per metric, best
first, so runs judged by different numbers are never ranked on one column. Written as terminal
tables, ``runs.csv`` (one table, with a ``headline`` column), ``runs.md`` (a table per metric)
and ``runs.png``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

#: (key, header, format): the fixed columns; the differing overrides follow them.
RUN_COLUMNS: Tuple[Tuple[str, str, str], ...] = (
    ("run", "run", "{}"), ("method", "method", "{}"), ("dataset", "dataset", "{}"), ("backbone", "backbone", "{}"),
    ("epochs", "epochs", "{}"), ("knn_top1", "kNN %", "{:.2f}"), ("knn_top1_random_init", "kNN random %", "{:.2f}"),
    ("linear_top1", "linear %", "{:.2f}"), ("finetune_top1", "finetune %", "{:.2f}"), ("eval_knn_top1", "eval kNN %", "{:.2f}"),
    ("headline", "headline", "{}"), ("headline_final", "headline final", "{:.2f}"), ("headline_best", "headline best", "{:.2f}"),
    ("headline_best_epoch", "best epoch", "{}"),
)
#: The headline of a ``summary.json`` written before runs recorded one: the kNN monitor.
KNN_HEADLINE = {"metric": "knn_top1", "label": "kNN top-1 %", "mode": "max"}
IGNORED_OVERRIDE_KEYS = ("output_dir", "hydra.", "trainer.progress_bar")


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def _evaluations(run_dir: Path) -> Dict[str, float]:
    """Full-label evaluations on the run's own dataset, newest checkpoint name first (last, best)."""
    found: Dict[str, float] = {}
    for path in sorted((run_dir / "checkpoints").glob("*.eval/*.json"), key=lambda p: p.parent.name != "last.eval"):
        try:
            row = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(row, dict) and "mode" in row and row.get("label_fraction") == 1.0 and "top1" in row:
            key = {"linear": "linear_top1", "finetune": "finetune_top1", "knn": "eval_knn_top1"}.get(row["mode"])
            if key and key not in found:
                found[key] = float(row["top1"])
    return found


def _override_map(overrides: Sequence[str]) -> Dict[str, str]:
    pairs = {}
    for text in overrides or []:
        key, _, value = str(text).partition("=")
        key = key.lstrip("+~")
        if not key.startswith(IGNORED_OVERRIDE_KEYS):
            pairs[key] = value
    return pairs


def collect_runs(output_dir: Path) -> List[Dict[str, Any]]:
    """Every ``summary.json`` under ``output_dir``, joined with its config, overrides and evaluations."""
    rows = []
    for summary_path in sorted(output_dir.glob("**/summary.json")):
        run_dir = summary_path.parent
        try:
            summary = json.loads(summary_path.read_text())
        except (OSError, ValueError):
            continue
        config = _read_yaml(run_dir / "config.yaml") or {}
        overrides = summary.get("overrides")
        if overrides is None:
            overrides = _read_yaml(run_dir / "overrides.yaml") or []
        row = {
            "run": str(run_dir.relative_to(output_dir)), "method": summary.get("method"),
            "dataset": (config.get("dataset") or {}).get("name"), "backbone": (config.get("backbone") or {}).get("name"),
            "epochs": summary.get("epochs"), "knn_top1": summary.get("knn_top1"),
            "knn_top1_random_init": summary.get("knn_top1_random_init"), "overrides": _override_map(overrides),
        }
        row.update(_headline_cells(summary))
        row.update(_evaluations(run_dir))
        rows.append(row)
    return rows


def _headline_cells(summary: Dict[str, Any]) -> Dict[str, Any]:
    """The ``headline*`` cells of one run (older summaries: the kNN monitor's final value)."""
    head = summary.get("headline")
    if not isinstance(head, dict):
        head = {**KNN_HEADLINE, "final": summary.get("knn_top1"), "best": None, "best_epoch": None}
    return {"headline": head.get("metric"), "headline_label": head.get("label"), "headline_mode": head.get("mode"),
            "headline_final": head.get("final"), "headline_best": head.get("best"), "headline_best_epoch": head.get("best_epoch")}


def group_by_headline(rows: Sequence[Dict[str, Any]]) -> List[Tuple[str, List[Dict[str, Any]]]]:
    """``[(title, rows), ...]``: one group per headline metric (in order of first appearance),
    each sorted best first by its final value (runs without one last)."""
    groups: Dict[str, List[Dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(str(r.get("headline")), []).append(r)
    out = []
    for metric, members in groups.items():
        mode = members[0].get("headline_mode")
        sign = -1.0 if mode == "max" else 1.0
        members = sorted(members, key=lambda r: (r.get("headline_final") is None, sign * float(r.get("headline_final") or 0.0)))
        better = "lower" if mode == "min" else "higher"
        out.append((f"{members[0].get('headline_label') or metric} ({metric}, {better} is better)", members))
    return out


def differing_keys(rows: Sequence[Dict[str, Any]]) -> List[str]:
    """Override keys whose value is not the same in every listed run."""
    keys = sorted({k for r in rows for k in r["overrides"]})
    return [k for k in keys if len({r["overrides"].get(k, "(default)") for r in rows}) > 1]


def table_cells(rows: Sequence[Dict[str, Any]]) -> Tuple[List[str], List[List[str]]]:
    """Header and formatted cells of the runs table (missing values print as ``-``)."""
    extra = differing_keys(rows)
    header = [h for _, h, _ in RUN_COLUMNS] + extra
    body = []
    for r in rows:
        cells = [fmt.format(r[k]) if r.get(k) is not None else "-" for k, _, fmt in RUN_COLUMNS]
        body.append(cells + [r["overrides"].get(k, "(default)") for k in extra])
    return header, body


def format_runs(rows: Sequence[Dict[str, Any]]) -> str:
    """Terminal tables: one per headline metric, each under a title line."""
    return "\n\n".join(f"{title}:\n" + _format_table(members) for title, members in group_by_headline(rows))


def _format_table(rows: Sequence[Dict[str, Any]]) -> str:
    header, body = table_cells(rows)
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths)).rstrip(), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in body]
    return "\n".join(lines)


def write_runs(rows: Sequence[Dict[str, Any]], output_dir: Path) -> List[Path]:
    """``runs.csv`` (every run, grouped by headline metric), ``runs.md`` (a table per headline
    metric) and ``runs.png`` in ``output_dir``."""
    groups = group_by_headline(rows)
    header, body = table_cells([r for _, members in groups for r in members])
    csv_path, md_path = output_dir / "runs.csv", output_dir / "runs.md"
    with csv_path.open("w", newline="") as f:
        csv.writer(f).writerows([header, *body])
    md: List[str] = []
    for title, members in groups:
        header, body = table_cells(members)
        md += [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        md += ["| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in body] + [""]
    md_path.write_text("\n".join(md))
    png = plot_runs(rows, output_dir / "runs.png")
    return [csv_path, md_path] + ([png] if png else [])


def _label(row: Dict[str, Any], keys: Sequence[str]) -> str:
    parts = [str(row["method"])] + [f"{k.split('.')[-1]}={row['overrides'].get(k, '-')}" for k in keys]
    return "\n".join(parts)


def plot_runs(rows: Sequence[Dict[str, Any]], path: Path) -> Optional[Path]:
    """Grouped bars per run: random-init kNN, trained kNN, linear and fine-tune top-1."""
    series = [("knn_top1_random_init", "kNN, random init"), ("knn_top1", "kNN, trained"),
              ("linear_top1", "linear probe"), ("finetune_top1", "fine-tune")]
    series = [(k, name) for k, name in series if any(r.get(k) is not None for r in rows)]
    if not rows or not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = differing_keys(rows)
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(rows) + 2), 4), dpi=120)
    for i, (key, name) in enumerate(series):
        xs = [n + (i - (len(series) - 1) / 2) * width for n in range(len(rows))]
        ax.bar(xs, [r.get(key) or 0.0 for r in rows], width, label=name)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([_label(r, keys) for r in rows], fontsize=7)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"{len(rows)} runs")
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
