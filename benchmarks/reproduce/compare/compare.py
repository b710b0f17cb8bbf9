"""Every self-supervised method at one budget: kNN and linear top-1, images/s and peak memory, 3 seeds.

    OMP_NUM_THREADS=2 python benchmarks/reproduce/compare/compare.py                 # CPU: every method x 3 seeds
    python benchmarks/reproduce/compare/compare.py --rows byol,mocov2 --seeds 0     # some rows
    python benchmarks/reproduce/compare/compare.py --table-only                     # the table of the saved records
    python benchmarks/reproduce/compare/compare.py --list                           # the rows it knows
    # GPU, comparable with solo-learn's and lightly's CIFAR-10 tables (ResNet-18, 200 epochs):
    python benchmarks/reproduce/compare/compare.py --preset cifar10 --epochs 200 \\
        --dataset-args dataset.root=/data --out results/compare-cifar10-gpu.jsonl

Rows are the registered methods that learn without labels (every :class:`Method` that is not a
:class:`ClassifierMethod`), plus ``random``: the same encoder untrained, through the same evaluator.
Each method trains with its own YAML recipe (``method=<name>``: its optimizer, lr, schedule and
augmentation as the framework ships them) on the shared budget: the embedded ``synthetic`` dataset
(5,000 train / 1,000 val images at 32 px), the default ``small_cnn`` backbone, ``--epochs`` epochs, each
method's own batch size (its YAML's; the table names it; ``--batch-size`` sets one for all).
``--preset cifar10`` instead uses ``experiment=<name>_cifar10`` (ResNet-18,
small stem, the paper's CIFAR-10 recipe) for the methods that have one.

The evaluator is the same for every row: the frozen encoder's features (``model.embed``) of the
un-augmented train and val images; weighted kNN (k=200, T=0.1, bank = the train features) and the linear
probe of ``configs/eval.yaml`` (``eval.linear``: SGD on cached features), both scored on val. Images/s
counts training images over ``fit``'s seconds (augmentation and kNN monitor included); peak memory is the
run's peak resident set (CPU) or ``torch.cuda.max_memory_allocated`` (GPU). Every (row, seed) runs in a
fresh process (so the peak is its own), seeds outermost (load changes hit all rows alike), and is
appended to ``--out`` (JSON lines) as it finishes.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import sys
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[3]  # the repository root
sys.path.insert(0, str(ROOT))

from benchmarks.harness import Row, read_records, run_one, select_rows, summary_table  # noqa: E402

#: The shared budget (the embedded default data and backbone); --epochs and --batch-size are added.
BUDGET = ["dataset=synthetic", "knn.random_init_baseline=false", "trainer.progress_bar=false", "logger=[csv]"]
COLUMNS = [("kNN top-1 (%)", "knn_top1", 1), ("linear top-1 (%)", "linear_top1", 1), ("img/s", "images_per_second", 0),
           ("peak MiB", "peak_mib", 0), ("train s", "train_seconds", 0)]


def self_supervised_methods() -> List[str]:
    """Registered built-in methods that train without labels, in name order."""
    from contrastive.config.plugins import load_builtin_methods
    from contrastive.core.registry import METHODS
    from contrastive.engine.supervised import ClassifierMethod

    load_builtin_methods()
    names = [n for n in METHODS.names() if (ROOT / "configs" / "method" / f"{n}.yaml").is_file()]
    return sorted(n for n in names if not issubclass(METHODS.get(n), ClassifierMethod) and not METHODS.get(n).supervised)


def rows_for(preset: str) -> Dict[str, Row]:
    """``name -> Row``: ``method=<name>`` (or ``experiment=<name>_<preset>``) and the untrained encoder."""
    rows = {}
    for name in self_supervised_methods():
        if preset == "default":
            rows[name] = Row(name, [f"method={name}"], name)
        elif (ROOT / "configs" / "experiment" / f"{name}_{preset}.yaml").is_file():
            rows[name] = Row(name, [f"experiment={name}_{preset}"], f"{name} ({name}_{preset})")
    first = next(iter(rows.values()))
    rows["random"] = Row("random", first.overrides, "random-init encoder (no training)", train=False)
    return rows


def _features(model, split, batch: int = 500):
    import torch

    with torch.no_grad():
        model.eval()
        device = next(model.parameters()).device
        parts = [model.embed(model.eval_transform(split.images[i : i + batch].to(device))).float().cpu()
                 for i in range(0, len(split), batch)]
    return torch.cat(parts), split.labels.cpu()


def evaluate(run, summary: dict) -> dict:
    """kNN and linear top-1 of the frozen encoder on val; images/s of ``fit``; the run's peak memory."""
    import torch
    from omegaconf import OmegaConf

    from contrastive.evaluation.probe import evaluate_head, train_linear_probe
    from contrastive.metrics.knn import knn_accuracy

    model, splits = run.model, run.splits
    train_x, train_y = _features(model, splits.train)
    test_x, test_y = _features(model, splits.val)
    knn1, _ = knn_accuracy(train_x, train_y, test_x, test_y, splits.num_classes, k=200, temperature=0.1)
    probe_cfg = OmegaConf.load(ROOT / "configs" / "eval.yaml").eval.linear
    head = train_linear_probe(train_x, train_y, splits.num_classes, probe_cfg, torch.device("cpu"), seed=0, progress=False)
    linear1, _ = evaluate_head(head, test_x, test_y)
    seconds = summary.get("train_seconds") or 0.0
    images = len(splits.train) * int(summary.get("epochs") or 0)
    if torch.cuda.is_available():
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"knn_top1": float(knn1), "linear_top1": float(linear1), "peak_mib": round(peak, 1),
            "batch_size": int(run.model.cfg.batch_size),
            "images_per_second": round(images / seconds, 1) if seconds else None, "epochs": summary.get("epochs")}


def _one(args) -> dict:
    """One (row, seed) in this (fresh) process."""
    row, seed, base, output_dir = args
    import logging

    logging.getLogger().setLevel(logging.WARNING)
    return run_one(row, seed, base, evaluate, output_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="", help="comma-separated (default: all; see --list)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=None,
                        help="one batch size for every row (default: each method's own, from its YAML)")
    parser.add_argument("--preset", default="default", help="default (method=<name>) | cifar10 | imagenet (experiment=<name>_<preset>)")
    parser.add_argument("--dataset-args", nargs="*", default=[], help="overrides added to every run (e.g. dataset.root=/data)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/reproduce/compare/results/compare-cpu-synthetic32.jsonl"))
    parser.add_argument("--output-dir", default="/tmp/compare/runs")
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args()
    rows = rows_for(args.preset)
    if args.list:
        print("\n".join(f"{k}: {' '.join(r.overrides) if r.train else 'untrained'}" for k, r in rows.items()))
        return
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    keys = [] if args.table_only else (select_rows(args.rows, list(rows)) if args.rows else list(rows))
    base = ([*BUDGET] if args.preset == "default" else [o for o in BUDGET if not o.startswith("dataset=")])
    base += [f"trainer.max_epochs={args.epochs}", f"knn.every_n_epochs={args.epochs}", *args.dataset_args]
    base += [f"batch_size={args.batch_size}", "global_batch_size=null"] if args.batch_size else []  # per process, presets too
    seeds = [int(s) for s in args.seeds.split(",")] if keys else []
    context = multiprocessing.get_context("spawn")
    for seed in seeds:  # seeds outermost, as benchmarks/harness.py runs them
        for key in keys:
            with context.Pool(1, maxtasksperchild=1) as pool:  # a fresh process: its peak memory is this run's
                record = pool.apply(_one, ((rows[key], seed, base, args.output_dir),))
            with out.open("a") as f:
                import json

                f.write(json.dumps(record) + "\n")
            print(f"{key} seed {seed}: kNN {record['knn_top1']:.1f}%  linear {record['linear_top1']:.1f}%  "
                  f"{record['images_per_second'] or 0:.0f} img/s  peak {record['peak_mib']:.0f} MiB  "
                  f"({record['train_seconds'] or 0:.0f} s)", flush=True)
    records = read_records(out)
    if records:
        order = sorted({r["key"] for r in records}, key=lambda k: -max(r["knn_top1"] for r in records if r["key"] == k))
        labels = {r["key"]: f"{r['label']} (batch {r['batch_size']})" for r in records  # a trained row names its batch
                  if r.get("batch_size") and r["key"] != "random"}
        print(summary_table(records, COLUMNS, order=order, labels=labels, seeds="count"))


if __name__ == "__main__":
    main()
