"""SimCLIC perturbations and collapse ablations on `synthetic` (CPU), one budget for every row.

    OMP_NUM_THREADS=1 python benchmarks/reproduce/simclic/simclic_ablation.py                       # the six main rows
    OMP_NUM_THREADS=1 python benchmarks/reproduce/simclic/simclic_ablation.py --rows history,none --seed 1
    OMP_NUM_THREADS=1 python benchmarks/reproduce/simclic/simclic_ablation.py --rows history --extra optimizer.lr=0.2
    OMP_NUM_THREADS=1 python benchmarks/reproduce/simclic/simclic_ablation.py --real --seeds 0,1,2 \
        --out benchmarks/reproduce/simclic/results/simclic_tin10_real.jsonl   # REAL_BUDGET, method=simclic defaults

``--real``: the real-data budget shared by the real-data tables (``REAL_BUDGET``: 10 Tiny ImageNet classes at
32 px, default small_cnn, batch 256, 8 epochs, ``method=simclic``'s own defaults otherwise, no kNN monitor), evaluated
after training by the shared evaluator (``benchmarks/reproduce/compare/compare.py``: kNN k=200 T=0.1 and the
linear probe of ``configs/eval.yaml`` on the frozen encoder's features of the un-augmented images).

Every row trains through the same code path as ``train.py`` (``load_config`` ->
``prepare_run`` -> ``fit``, run by ``benchmarks/harness.py``) with the recipe of the paper presets
(``experiment=simclic_cifar10``: batch 128, SGD momentum 0.9, lr 0.05 x batch/256, cosine, weight decay 5e-4,
SimCLR's CIFAR colour jitter; pinned in ``BUDGET``, not the default run's lr 0.5 and stronger jitter) on a budget
small enough for a shared 2-core CPU (``BUDGET``: width-8 small CNN, 2,000 training and
500 val images, 8 epochs, heads shrunk to 256/256/64 for the 64-d features of that CNN).
For each row it reports the kNN top-1 on the val split after the last epoch and the
collapse monitor ``train/output_std`` (std of the L2-normalised projections; healthy
~1/sqrt(d) = 0.0625 for d = 256, collapse -> 0) of the first and last epoch, read from the
run's ``logs/metrics.csv``. The random-init kNN (same seed = same initial encoder for all
rows) is measured once, in the first row. Rows are appended to ``--out`` (JSON lines) and
the Markdown table of all rows in that file is printed.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]  # the repository root
sys.path.insert(0, str(ROOT))

from benchmarks.harness import Row, read_records, run_rows, select_rows, summary_table  # noqa: E402

BUDGET = [
    "method=simclic", "dataset=synthetic", "backbone.kwargs.width=8", "dataset.num_train=2000",
    "dataset.num_val=500", "trainer.max_epochs=8", "knn.every_n_epochs=8", "trainer.progress_bar=false",
    "method.projection.hidden_dim=256", "method.projection.output_dim=256", "method.predictor_hidden_dim=64",
    "optimizer.lr=0.05", "augment.cj_strength=0.5", "augment.cj_prob=0.8", "augment.gray_prob=0.2",
]
REAL_BUDGET = [
    "method=simclic", "dataset=imagefolder", "dataset.root=/work/data/tin10", "dataset.image_size=32",
    "trainer.max_epochs=8", "batch_size=256", "knn.enabled=false", "knn.random_init_baseline=false",
    "trainer.progress_bar=false",
]
ROWS = {
    "none": ("none (two-view SimSiam baseline)", ["method.perturbation=none"]),
    "history": ("history (m=0)", ["method.perturbation=history"]),
    "dropout": ("dropout (p=0.2)", ["method.perturbation=dropout"]),
    "noise": ("noise (sigma=0.5 x RMS)", ["method.perturbation=noise"]),
    "no_predictor": ("history, predictor=none", ["method.perturbation=history", "method.predictor=none"]),
    "no_stopgrad": ("history, stop_gradient=false", ["method.perturbation=history", "method.stop_gradient=false"]),
    "linear_predictor": ("history, predictor=linear", ["method.perturbation=history", "method.predictor=linear"]),
    "fixed_random": ("history, predictor=fixed_random (Table 4)", ["method.perturbation=history", "method.predictor=fixed_random"]),
    "cross_entropy": ("history, loss=cross_entropy", ["method.perturbation=history", "method.loss=cross_entropy"]),
    "history_1view": ("history, num_views=1", ["method.perturbation=history", "method.num_views=1"]),
    "dropout_1view": ("dropout, num_views=1", ["method.perturbation=dropout", "method.num_views=1"]),
}
MAIN = "none,history,dropout,noise,no_predictor,no_stopgrad"


def output_std_per_epoch(run_dir: str) -> list:
    """``train/output_std`` of every epoch, from the run's CSV log."""
    with open(Path(run_dir) / "logs" / "metrics.csv") as f:
        return [float(r["train/output_std"]) for r in csv.DictReader(f) if r.get("train/output_std")]


def measure(run, summary: dict) -> dict:
    """Final kNN top-1, the random-init kNN (first row only) and ``train/output_std`` per epoch."""
    return {"knn_top1": summary["knn_top1"], "knn_top1_random_init": summary.get("knn_top1_random_init"),
            "output_std": output_std_per_epoch(summary["run_dir"])}


def measure_real(run, summary: dict) -> dict:
    """The shared evaluator's kNN / linear top-1 and images/s, and ``train/output_std`` per epoch."""
    from benchmarks.reproduce.compare.compare import evaluate

    return {**evaluate(run, summary), "output_std": output_std_per_epoch(summary["run_dir"])}


def harness_rows(keys: list, extra: list, baseline: bool = True) -> list:
    """The rows with ``extra`` added to each; the random-init baseline is measured in the first only (if ``baseline``)."""
    return [Row(key, ROWS[key][1] + extra + [f"knn.random_init_baseline={str(baseline and i == 0).lower()}"], ROWS[key][0])
            for i, key in enumerate(keys)]


def table(rows: list) -> str:
    lines = ["| row | extra overrides | seed | kNN top-1 (%) | output_std epoch 1 -> last (min) | train s |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("knn_top1_random_init") is not None:
            lines.append(f"| random-init encoder | | {r['seed']} | {r['knn_top1_random_init']:.1f} | | |")
        s = r["output_std"]
        lines.append(f"| {r['label']} | {' '.join(r['extra'])} | {r['seed']} | {r['knn_top1']:.1f} | "
                     f"{s[0]:.4f} -> {s[-1]:.4f} ({min(s):.4f}) | {r['train_seconds']:.0f} |")
    return "\n".join(lines)


REAL_COLUMNS = [("kNN top-1 (%)", "knn_top1", 1), ("linear top-1 (%)", "linear_top1", 1),
                ("output_std last epoch", "output_std_last", 4), ("img/s (under load)", "images_per_second", 0),
                ("train s", "train_seconds", 0)]


def real_table(rows: list) -> str:
    """Mean ± std over seeds per row (the ``--real`` records)."""
    return summary_table([{**r, "output_std_last": r["output_std"][-1]} for r in rows], REAL_COLUMNS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default=MAIN, help=f"comma-separated, from: {', '.join(ROWS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--extra", nargs="*", default=[], help="overrides added to every row (e.g. optimizer.lr=0.2)")
    parser.add_argument("--output-dir", default="/tmp/simclic_ablation", help="where the runs are written")
    parser.add_argument("--out", default="/tmp/simclic_ablation/rows.jsonl", help="JSON lines, appended to")
    parser.add_argument("--table-only", action="store_true", help="print the table of --out and exit")
    parser.add_argument("--real", action="store_true", help="REAL_BUDGET (Tiny ImageNet, 10 classes) and the shared evaluator")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (seeds outermost); replaces --seed")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [args.seed]
    budget, measured = (REAL_BUDGET, measure_real) if args.real else (BUDGET, measure)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    keys = [] if args.table_only else select_rows(args.rows, ROWS)

    def report(row: dict) -> None:
        print(f"{row['key']}: kNN {row['knn_top1']:.1f}%  output_std {row['output_std'][0]:.4f} -> "
              f"{row['output_std'][-1]:.4f}  ({row['train_seconds']:.0f} s)", flush=True)

    run_rows(harness_rows(keys, args.extra, baseline=not args.real), seeds, budget, out=out, output_dir=Path(args.output_dir),
             measure=lambda run, summary: {"extra": args.extra, **measured(run, summary)}, on_record=report)
    if out.exists():
        print(table(read_records(out)))
        if args.real:
            print(real_table(read_records(out)))


if __name__ == "__main__":
    main()
