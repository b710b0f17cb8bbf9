"""SPCL vs SimCLR at the same budget on `synthetic` (CPU), with the paper's Table 2 ablations.

    OMP_NUM_THREADS=1 python benchmarks/spcl_ablation.py                 # the issue's 6 rows (~2-3 min each)
    OMP_NUM_THREADS=1 python benchmarks/spcl_ablation.py --rows simclr,spcl --seeds 0,1
    python benchmarks/spcl_ablation.py --table-only                      # rebuild the table from saved rows

Every row trains with the same budget (``BUDGET`` below: width-8 small CNN, 2,000
training images, 8 epochs, batch 128, LARS, 2 warm-up epochs then cosine) through
the same code path as ``train.py`` (``load_config`` -> ``prepare_run`` -> ``fit``), then
measures the paper's diagnostics on a fixed batch of 500 *held-out* (val) images with
fixed views: TP = mean cosine similarity of an anchor and its positive view, FN = of an
anchor and the in-batch negatives of its class, TN = of the other negatives, all in the
contrastive projection space. Each finished row is appended to
``benchmarks/results/spcl_synthetic.jsonl``; the table goes to
``benchmarks/results/spcl_synthetic.md`` (copied into ``benchmarks/RESULTS_spcl.md``).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"
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
DEFAULT_ROWS = "simclr,spcl,no_contrastive,no_metric,no_prototype,ground_truth"  # the rows (~2-3 min each)


def run_row(key: str, seed: int, output_dir: Path) -> dict:
    from contrastive.config.compose import load_config
    from contrastive.engine.run import fit, prepare_run
    from contrastive.methods.spcl import similarity_diagnostics

    overrides = BUDGET + ROWS[key][1] + [f"seed={seed}", f"output_dir={output_dir}"]
    run = prepare_run(load_config(overrides))
    start = time.perf_counter()
    summary = fit(run)
    tp, fn, tn = similarity_diagnostics(run.model, run.splits.val, size=500, seed=0)
    row = {"key": key, "seed": seed, "knn_top1": summary["knn_top1"], "train_seconds": summary["train_seconds"],
           "wall_seconds": round(time.perf_counter() - start, 1), "tp": tp, "fn": fn, "tn": tn,
           "command": "python train.py " + " ".join(o for o in overrides if not o.startswith("output_dir"))}
    metrics = list(csv.DictReader(open(Path(summary["run_dir"]) / "logs" / "metrics.csv")))
    for name in ("embed_seconds", "cluster_seconds", "empty_clusters", "min_cluster_size", "max_cluster_size", "kept_prototype"):
        values = [float(r[f"spcl/{name}"]) for r in metrics if r.get(f"spcl/{name}")]
        if values:
            row[name] = statistics.mean(values) if name.endswith("seconds") or name == "kept_prototype" else values[-1]
    return row


def _fmt(values, digits=1, scale=1.0):
    values = [v * scale for v in values if v is not None and v == v]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def write_table(rows: list) -> Path:
    lines = [
        "# SPCL vs SimCLR on `synthetic` (CPU)",
        "",
        "Written by `benchmarks/spcl_ablation.py`. Same budget for every row: "
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
    for key, (label, _) in ROWS.items():
        mine = [r for r in rows if r["key"] == key]
        if not mine:
            continue
        get = lambda name: [r.get(name) for r in mine]  # noqa: E731
        lines.append(
            f"| {label} | {','.join(str(r['seed']) for r in mine)} | {_fmt(get('knn_top1'))} | {_fmt(get('tp'), 3)} "
            f"| {_fmt(get('fn'), 3)} | {_fmt(get('tn'), 3)} | {_fmt(get('embed_seconds'), 2)} "
            f"| {_fmt(get('cluster_seconds'), 2)} | {_fmt(get('kept_prototype'), 2)} | {_fmt(get('train_seconds'), 0)} |"
        )
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
        import logging

        import train

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
        train._quiet_third_party()
        for seed in [int(s) for s in args.seeds.split(",")]:
            for key in args.rows.split(","):
                if key not in ROWS:
                    raise SystemExit(f"unknown row '{key}'; choose from {', '.join(ROWS)}")
                row = run_row(key, seed, Path(args.output_dir))
                print(json.dumps(row), flush=True)
                with saved.open("a") as f:
                    f.write(json.dumps(row) + "\n")
    rows = [json.loads(line) for line in saved.read_text().splitlines()] if saved.exists() else []
    print(write_table(rows).read_text())


if __name__ == "__main__":
    main()
