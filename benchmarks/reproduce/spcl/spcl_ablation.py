"""SPCL vs SimCLR at the same budget on `synthetic` (CPU), with the paper's Table 2 ablations.

    OMP_NUM_THREADS=1 python benchmarks/reproduce/spcl/spcl_ablation.py                 # the 6 main rows (~2-3 min each)
    OMP_NUM_THREADS=1 python benchmarks/reproduce/spcl/spcl_ablation.py --rows simclr,spcl --seeds 0,1
    python benchmarks/reproduce/spcl/spcl_ablation.py --table-only                      # rebuild the table from saved rows

Every row trains with the same budget (``BUDGET`` below: width-8 small CNN, 2,000
training images, 8 epochs, batch 128, LARS, 2 warm-up epochs then cosine) through
the same code path as ``train.py`` (``load_config`` -> ``prepare_run`` -> ``fit``, run by
``benchmarks/harness.py``), then
measures the paper's diagnostics on a fixed batch of 500 *held-out* (val) images with
fixed views: TP = mean cosine similarity of an anchor and its positive view, FN = of an
anchor and the in-batch negatives of its class, TN = of the other negatives, all in the
contrastive projection space. Each finished row is appended to
``benchmarks/reproduce/spcl/results/spcl_synthetic.jsonl``; the table goes to
``benchmarks/reproduce/spcl/results/spcl_synthetic.md`` (copied into ``benchmarks/reproduce/spcl/RESULTS.md``).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]  # the repository root
sys.path.insert(0, str(ROOT))

from benchmarks.harness import Row, read_records, run_rows, select_rows, summary_table  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
BUDGET = [
    "dataset=synthetic", "backbone.kwargs.width=8", "dataset.num_train=2000", "dataset.num_val=500",
    "trainer.max_epochs=8", "scheduler.warmup_epochs=2", "batch_size=128", "knn.every_n_epochs=8",
    "knn.random_init_baseline=false", "trainer.progress_bar=false",
]
ROWS = {
    "simclr": ("SimCLR", ["method=simclr"]),
    "spcl": ("SPCL (all three losses, K=10, prototype batches)", ["method=spcl"]),
    "no_contrastive": ("SPCL, weights.contrastive=0", ["method=spcl", "method.weights.contrastive=0"]),
    "no_metric": ("SPCL, weights.metric=0", ["method=spcl", "method.weights.metric=0"]),
    "no_prototype": ("SPCL, weights.prototype=0", ["method=spcl", "method.weights.prototype=0"]),
    "ground_truth": ("SPCL, prototypes=ground_truth (upper bound)", ["method=spcl", "method.prototypes=ground_truth"]),
    "random_batches": ("SPCL, sampler=random", ["method=spcl", "method.sampler=random"]),
    "symmetric_ce": ("SPCL, symmetric_ce=true", ["method=spcl", "method.symmetric_ce=true"]),
}
COLUMNS = [("kNN top-1 (%)", "knn_top1", 1), ("TP", "tp", 3), ("FN", "fn", 3), ("TN", "tn", 3),
           ("embed s/epoch", "embed_seconds", 2), ("k-means s/epoch", "cluster_seconds", 2),
           ("kept", "kept_prototype", 2), ("train s", "train_seconds", 0)]
DEFAULT_ROWS = "simclr,spcl,no_contrastive,no_metric,no_prototype,ground_truth"  # the paper's Table 2 rows (~2-3 min each)


def measure(run, summary: dict) -> dict:
    """The similarity diagnostics on the val split and the clustering statistics of the run's CSV log."""
    from contrastive.methods.spcl import similarity_diagnostics

    tp, fn, tn = similarity_diagnostics(run.model, run.splits.val, size=500, seed=0)
    row = {"knn_top1": summary["knn_top1"], "tp": tp, "fn": fn, "tn": tn}
    metrics = list(csv.DictReader(open(Path(summary["run_dir"]) / "logs" / "metrics.csv")))
    for name in ("embed_seconds", "cluster_seconds", "empty_clusters", "min_cluster_size", "max_cluster_size", "kept_prototype"):
        values = [float(r[f"spcl/{name}"]) for r in metrics if r.get(f"spcl/{name}")]
        if values:
            row[name] = statistics.mean(values) if name.endswith("seconds") or name == "kept_prototype" else values[-1]
    return row


def write_table(rows: list) -> Path:
    lines = [
        "# SPCL vs SimCLR on `synthetic` (CPU)",
        "",
        "Written by `benchmarks/reproduce/spcl/spcl_ablation.py`. Same budget for every row: "
        f"`{' '.join(BUDGET)}`, `OMP_NUM_THREADS=1` on a shared 2-core CPU. kNN top-1 (k=200) on the 500 val "
        "images. TP / FN / TN: mean cosine similarity in the projection space of an anchor and its positive "
        "view / its in-batch negatives of the same class / of other classes, on a fixed batch of the 500 val images "
        "(a higher FN similarity means same-class images are pushed apart less, which is what SPCL aims for; "
        "FN - TN measures how well classes separate). "
        "Clustering columns: mean per epoch (embedding the 2,000 training images, then faiss k-means); "
        "kept = fraction of samples whose prototype survived a re-clustering (after id matching).",
        "",
        "| row | seeds | kNN top-1 (%) | TP | FN | TN | embed s/epoch | k-means s/epoch | kept | train s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    table = summary_table(rows, COLUMNS, labels={key: label for key, (label, _) in ROWS.items()}, order=list(ROWS))
    lines += table.splitlines()[2:]
    lines += ["", "Commands (one per row and seed):", ""]
    lines += [f"- `{r['command']}`" for r in rows]
    path = RESULTS / "spcl_synthetic.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=DEFAULT_ROWS, help=f"comma-separated subset of {', '.join(ROWS)}")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--output-dir", default="/tmp/spcl_ablation")
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    saved = RESULTS / "spcl_synthetic.jsonl"
    if not args.table_only:
        from contrastive.core.logs import setup_logging

        setup_logging()
        keys = select_rows(args.rows, ROWS)
        run_rows([Row(k, ROWS[k][1], ROWS[k][0]) for k in keys], [int(s) for s in args.seeds.split(",")], BUDGET,
                 measure=measure, out=saved, output_dir=Path(args.output_dir),
                 on_record=lambda row: print(json.dumps(row), flush=True))
    print(write_table(read_records(saved)).read_text())


if __name__ == "__main__":
    main()
