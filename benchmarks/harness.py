"""Rows x seeds through the framework: the loop every ``benchmarks/reproduce/`` ablation shares.

A *row* is a name and the config overrides that make it differ from a shared ``base`` list.
:func:`run_rows` trains every (row, seed) through the code path of ``train.py``
(``load_config`` -> ``prepare_run`` -> ``fit``), seeds outermost (the rows of one seed run
back to back, so a change of machine load hits every row alike), calls ``measure(run, summary)``
for the row's own numbers, and appends one JSON line per (row, seed) to a JSONL file.
:func:`summary_table` turns such records into a markdown table of mean ± std over seeds per row.

    from benchmarks.harness import Row, run_rows, summary_table
    records = run_rows([Row("a", ["method=simclr"]), Row("b", ["method=spcl"])], seeds=[0, 1, 2],
                       base=["dataset=synthetic", "trainer.max_epochs=2"], out="/tmp/rows.jsonl")
    print(summary_table(records, [("kNN top-1 (%)", "knn_top1", 1), ("train s", "train_seconds", 0)]))

Every record holds ``key``, ``label``, ``seed``, ``train_seconds`` (``fit``'s), what ``measure``
returned, ``prepare_seconds`` (``load_config`` + ``prepare_run``), ``wall_seconds`` (prepare + fit +
measure) and ``command`` (the ``train.py`` command line of the run, without ``output_dir``).

A row may instead carry a ``runner`` (e.g. ``parity.py``'s independent reference implementation):
``runner(overrides, seed)`` gets the run's full override list (base + row + ``seed=``; the config it
resolves is the one the framework would train) and returns the numbers of that (row, seed); it stays
in the same rows x seeds loop and the same JSONL records; its ``command`` is the ``train.py`` command
whose resolved config the runner reads.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union


@dataclass
class Row:
    """One row of a table: ``overrides`` on top of the shared base.

    ``train=False`` builds the run (same seed, so the same initial model) and skips ``fit``: the
    untrained model goes to ``measure`` with ``summary = {"train_seconds": 0.0}``.
    ``runner``: ``runner(overrides, seed) -> dict`` trains and measures the row another way than
    ``fit`` (``overrides``: base + row + ``seed=<s>`` + ``output_dir=``); ``measure`` is not called.
    """

    key: str
    overrides: List[str] = field(default_factory=list)
    label: str = ""
    train: bool = True
    runner: Optional[Callable[[List[str], int], Dict]] = None


Measure = Callable[..., Dict]  # measure(run, summary) -> numbers of the (row, seed)


def select_rows(spec: str, rows: Sequence[str]) -> List[str]:
    """``--rows a,b`` -> ``["a", "b"]``; an unknown name stops the script with one line naming the choices."""
    keys = [k for k in spec.split(",") if k]
    unknown = [k for k in keys if k not in rows]
    if unknown:
        raise SystemExit(f"error: unknown row(s) {', '.join(unknown)}; choose from {', '.join(rows)}")
    return keys


def run_one(row: Row, seed: int, base: Sequence[str], measure: Optional[Measure] = None,
            output_dir: Optional[Union[str, Path]] = None, extra: Sequence[str] = ()) -> Dict:
    """Trains (unless ``row.train`` is false) and measures one (row, seed); returns its record."""
    from contrastive.config.compose import load_config
    from contrastive.engine.run import fit, prepare_run

    full = [*base, *row.overrides, *extra, f"seed={seed}"] + ([f"output_dir={output_dir}"] if output_dir else [])
    start = time.perf_counter()
    command = "python train.py " + " ".join(o for o in full if not o.startswith("output_dir="))
    if row.runner is not None:
        record = {"key": row.key, "label": row.label or row.key, "seed": seed}
        record.update(row.runner(full, seed))
        record.update(wall_seconds=round(time.perf_counter() - start, 1), command=command)
        return record
    run = prepare_run(load_config(full))
    prepared = time.perf_counter()
    summary = fit(run) if row.train else {"train_seconds": 0.0}
    record = {"key": row.key, "label": row.label or row.key, "seed": seed, "train_seconds": summary.get("train_seconds")}
    record.update(measure(run, summary) if measure is not None else {"knn_top1": summary.get("knn_top1")})
    record.update(prepare_seconds=round(prepared - start, 1), wall_seconds=round(time.perf_counter() - start, 1),
                  command=command)
    return record


def run_rows(rows: Sequence[Row], seeds: Iterable[int], base: Sequence[str], *, measure: Optional[Measure] = None,
             out: Optional[Union[str, Path]] = None, output_dir: Optional[Union[str, Path]] = None,
             run_name: Optional[str] = None, on_record: Optional[Callable[[Dict], None]] = None) -> List[Dict]:
    """Every row x every seed (seeds outermost); each record is appended to ``out`` (JSON lines) as it finishes.

    Args:
        rows: the rows, in the order they run within a seed.
        seeds: ``seed=<s>`` of each run.
        base: overrides shared by every run (the budget).
        measure: ``measure(run, summary) -> dict`` after ``fit`` (default: ``fit``'s ``knn_top1``).
        out: JSONL file appended to (its folder is created); ``None``: nothing written.
        output_dir: ``output_dir=`` of every run (where the run folders go).
        run_name: adds ``run_name=<run_name>-<i>`` (i counts the runs), for distinct run folders.
        on_record: called with each record (e.g. to print a line).
    """
    records: List[Dict] = []
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        for row in rows:
            extra = [f"run_name={run_name}-{len(records)}"] if run_name else []
            record = run_one(row, seed, base, measure, output_dir, extra)
            records.append(record)
            if out is not None:
                with Path(out).open("a") as f:
                    f.write(json.dumps(record) + "\n")
            if on_record is not None:
                on_record(record)
    return records


def read_records(path: Union[str, Path]) -> List[Dict]:
    """The records of a JSONL file (``[]`` when it does not exist)."""
    path = Path(path)
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def mean_std(values: Iterable, digits: int = 1, pm: str = " ± ") -> str:
    """``mean ± std`` of the values that are not None/NaN; one value alone; ``-`` for none."""
    values = [v for v in values if v is not None and v == v]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f}{pm}{statistics.stdev(values):.{digits}f}"


Column = Tuple[str, str, int]  # (header, record key, digits)


def summary_table(records: Sequence[Dict], columns: Sequence[Column], *, group: str = "key",
                  labels: Optional[Dict[str, str]] = None, order: Optional[Sequence[str]] = None,
                  first: str = "row", seeds: str = "list", pm: str = " ± ", compact: bool = False) -> str:
    """Markdown table, one line per group of records (mean ± std over its seeds per column).

    Args:
        group: the record field rows are grouped by (``key``, or ``label`` to merge rows of one name).
        labels: the name shown for a group (default: its first record's ``label``).
        order: the groups shown, in this order (default: all, in order of appearance).
        first: the header of the name column.
        seeds: the seeds column: ``list`` (``0,1,2``), ``count`` (``3``) or ``none`` (no column).
        pm: what separates mean and std; compact: ``|---|`` instead of ``| --- |`` under the header.
    """
    groups: Dict[str, List[Dict]] = {}
    for r in records:
        groups.setdefault(r[group], []).append(r)
    header = [first] + (["seeds"] if seeds != "none" else []) + [c[0] for c in columns]
    rule = "|" + "|".join(["---" if compact else " --- "] * len(header)) + "|"
    lines = ["| " + " | ".join(header) + " |", rule]
    for name in (order if order is not None else list(groups)):
        mine = groups.get(name)
        if not mine:
            continue
        cells = [(labels or {}).get(name, mine[0].get("label", name))]
        if seeds == "list":
            cells.append(",".join(str(r["seed"]) for r in mine))
        elif seeds == "count":
            cells.append(str(len(mine)))
        cells += [mean_std([r.get(key) for r in mine], digits, pm) for _, key, digits in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
