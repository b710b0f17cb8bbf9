"""SimCLR's ablations (Chen et al. 2020) through the framework, rows x seeds: augmentation, colour strength, head, T.

    # real data (the shared budget: 10 Tiny ImageNet classes at 32 px, batch 256, 8 epochs), every row x 3 seeds
    OMP_NUM_THREADS=1 python benchmarks/reproduce/simclr/simclr_ablations.py --real --root /work/data/tin10
    python benchmarks/reproduce/simclr/simclr_ablations.py --real --table-only       # the tables of the saved records
    # the older CPU proxy (synthetic, width 8, 42 steps): the projection-head rows only
    OMP_NUM_THREADS=2 python benchmarks/reproduce/simclr/simclr_ablations.py --rows none,linear,nonlinear

``--real``: every row is ``method=simclr`` with its own YAML (LARS, warm-up + cosine, T 0.2, colour
strength 0.5, 2-layer head) on ``REAL_BUDGET`` plus the row's overrides; the evaluation is
``benchmarks/reproduce/compare/compare.py``'s (frozen encoder ``h`` of the un-augmented train / val
images: weighted kNN k=200 T=0.1, and the linear probe of ``configs/eval.yaml``; images/s of ``fit``).
The rows of one seed run back to back (``benchmarks/harness.py``), one JSON line per (row, seed) in ``--out``.
``baseline`` (the YAML as shipped) is shared by the four tables (``TABLES``).

Without ``--real`` the script is the earlier projection-head proxy (the budget and the evaluation of
``benchmarks/reproduce/spcl/spcl_vs_simclr.py``: synthetic data, TP / FN / TN columns).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Sequence

ROOT = Path(__file__).resolve().parents[3]  # the repository root
sys.path.insert(0, str(ROOT))

from benchmarks.harness import Row, read_records, run_rows, select_rows, summary_table  # noqa: E402

#: The projection-head rows of the synthetic proxy (run by spcl_vs_simclr.main).
PROXY_ROWS = {
    "none": ("SimCLR, no head (num_layers=0, loss on h)", ["method=simclr", "method.projection.num_layers=0"]),
    "linear": ("SimCLR, linear head (num_layers=1)", ["method=simclr", "method.projection.num_layers=1"]),
    "nonlinear": ("SimCLR (NT-Xent, 2-layer head)", ["method=simclr"]),
}

#: The shared real-data budget (dataset.root is added by --root); method=simclr's YAML otherwise.
REAL_BUDGET = ["method=simclr", "dataset=imagefolder", "dataset.image_size=32", "batch_size=256",
               "trainer.max_epochs=8", "knn.enabled=false", "knn.random_init_baseline=false",
               "trainer.progress_bar=false", "logger=[csv]"]

_FULL_IMAGE = ["augment.min_scale=1.0", "augment.max_scale=1.0"]  # area 1: the whole image (flip kept)
#: key -> (label, overrides on top of REAL_BUDGET)
REAL_ROWS: Dict[str, tuple] = {
    "random": ("random-init encoder (no training)", []),  # the seed's untrained encoder, same evaluation
    "baseline": ("crop + colour, s=0.5, T=0.2, 2-layer head (the YAML)", []),
    "crop_only": ("crop (+flip) alone: colour jitter and grayscale off", ["augment.cj_prob=0", "augment.gray_prob=0"]),
    "colour_only": ("colour alone: whole image (+flip), jitter s=0.5 + grayscale", _FULL_IMAGE),
    "s_1_8": ("colour strength s=1/8", ["augment.cj_strength=0.125"]),
    "s_1_4": ("colour strength s=1/4", ["augment.cj_strength=0.25"]),
    "s_1": ("colour strength s=1", ["augment.cj_strength=1.0"]),
    "s_1_blur": ("colour strength s=1 + blur (p=0.5)", ["augment.cj_strength=1.0", "augment.blur_prob=0.5"]),
    "head_none": ("no head (loss on h)", ["method.projection.num_layers=0"]),
    "head_linear": ("linear head", ["method.projection.num_layers=1"]),
    "t_0.05": ("T=0.05", ["method.temperature=0.05"]),
    "t_0.1": ("T=0.1", ["method.temperature=0.1"]),
    "t_0.5": ("T=0.5", ["method.temperature=0.5"]),
    "t_1": ("T=1.0", ["method.temperature=1.0"]),
}

#: title -> [(row key, the name shown in that table)], in the paper's order; each starts with the untrained encoder.
_RANDOM = ("random", "random init (no training)")
TABLES = {
    "Augmentation (Fig. 5)": [_RANDOM, ("crop_only", "crop alone"), ("colour_only", "colour alone"),
                              ("baseline", "crop + colour (baseline)")],
    "Colour-distortion strength (slides' Table 1)": [_RANDOM, ("s_1_8", "1/8"), ("s_1_4", "1/4"),
                                                     ("baseline", "1/2 (baseline)"), ("s_1", "1"),
                                                     ("s_1_blur", "1 (+Blur)")],
    "Projection head (Fig. 8)": [_RANDOM, ("head_none", "none"), ("head_linear", "linear"),
                                 ("baseline", "non-linear (baseline)")],
    "Temperature (Table 5)": [_RANDOM, ("t_0.05", "0.05"), ("t_0.1", "0.1"), ("baseline", "0.2 (baseline)"),
                              ("t_0.5", "0.5"), ("t_1", "1.0")],
}
COLUMNS = [("kNN top-1 (%)", "knn_top1", 1), ("linear top-1 (%)", "linear_top1", 1),
           ("img/s (under load)", "images_per_second", 0), ("train s", "train_seconds", 0)]


def paired_differences(records: Sequence[dict], a: str, b: str, metric: str = "knn_top1") -> Dict[int, float]:
    """``seed -> metric(a) - metric(b)`` over the seeds both rows have (the rows of one seed share data and init)."""
    by = {(r["key"], r["seed"]): r[metric] for r in records if r.get(metric) is not None}
    return {s: by[(a, s)] - by[(b, s)] for (k, s) in sorted(by) if k == a and (b, s) in by}


def _paired(records: Sequence[dict], entries: Sequence[tuple]) -> List[str]:
    """``- <row> - baseline, per seed: kNN +1.2, -0.4; linear ...`` for each row of a table that is not the baseline."""
    lines = []
    for key, name in entries:
        if key in ("baseline", "random"):
            continue
        cells = []
        for metric, short in (("knn_top1", "kNN"), ("linear_top1", "linear")):
            diffs = paired_differences(records, key, "baseline", metric)
            if diffs:
                cells.append(f"{short} " + ", ".join(f"{d:+.1f}" for d in diffs.values()))
        if cells:
            seeds = ",".join(str(s) for s in paired_differences(records, key, "baseline"))
            lines.append(f"- {name} minus baseline, seeds {seeds}: " + "; ".join(cells))
    return lines


def tables(records: Sequence[dict]) -> str:
    """One markdown table per ``TABLES`` entry (mean ± std over seeds; rows without records are left out),
    each followed by its rows' differences from the baseline, paired by seed."""
    parts = []
    for title, entries in TABLES.items():
        mine = [dict(r, label=name) for key, name in entries for r in records if r["key"] == key]
        order = [n for _, n in entries]
        parts += [f"### {title}", "", summary_table(mine, COLUMNS, group="label", order=order, first="row"), ""]
        parts += [*_paired(records, entries), ""]
    return "\n".join(parts)


def main_real(argv: List[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", action="store_true")
    parser.add_argument("--root", default="/work/data/tin10", help="dataset.root: a class-per-folder tree")
    parser.add_argument("--rows", default=",".join(REAL_ROWS), help=f"comma-separated, from: {', '.join(REAL_ROWS)}")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/reproduce/simclr/results/simclr_ablations_tin10.jsonl"))
    parser.add_argument("--output-dir", default="/tmp/simclr_ablations/runs")
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args(argv)
    from benchmarks.reproduce.compare.compare import evaluate  # the evaluator every real-data table shares

    keys = [] if args.table_only else select_rows(args.rows, list(REAL_ROWS))
    rows = [Row(k, REAL_ROWS[k][1], REAL_ROWS[k][0], train=k != "random") for k in keys]

    def report(r: dict) -> None:
        print(f"{r['key']} seed {r['seed']}: kNN {r['knn_top1']:.1f}%  linear {r['linear_top1']:.1f}%  "
              f"({r['train_seconds']:.0f} s)", flush=True)

    seeds = [int(s) for s in args.seeds.split(",")] if keys else []
    run_rows(rows, seeds, [*REAL_BUDGET, f"dataset.root={args.root}"], measure=evaluate, out=args.out,
             output_dir=args.output_dir, on_record=report)
    print(tables(read_records(args.out)))


if __name__ == "__main__":
    if "--real" in sys.argv[1:]:
        main_real(sys.argv[1:])
    else:
        from benchmarks.reproduce.spcl.spcl_vs_simclr import main

        main(PROXY_ROWS, "none,linear,nonlinear", "/tmp/simclr_head_ablation/rows.jsonl")
