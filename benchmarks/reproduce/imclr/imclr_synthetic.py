"""CPU evidence for ImCLR: base (k=1) vs ImCLR (k=2) vs the same-image control, one recipe.

    OMP_NUM_THREADS=1 python benchmarks/reproduce/imclr/imclr_synthetic.py                     # defaults below
    OMP_NUM_THREADS=1 python benchmarks/reproduce/imclr/imclr_synthetic.py --seeds 0 1 2 --epochs 15
    # a Tiny ImageNet subset (a folder in the standard layout whose wnids.txt lists the classes to use):
    OMP_NUM_THREADS=1 python benchmarks/reproduce/imclr/imclr_synthetic.py --dataset tinyimagenet \\
        --set dataset.root=/tmp/tin10 dataset.image_size=32 --out benchmarks/reproduce/imclr/results/imclr_tinyimagenet10.md
    # the real-data budget shared by the real-data tables (REAL_BUDGET; labels from the class folders):
    OMP_NUM_THREADS=1 python benchmarks/reproduce/imclr/imclr_synthetic.py --real --seeds 0 1 2 \
        --variants "base (k=1)" "ImCLR (k=2)" --out benchmarks/reproduce/imclr/results/imclr_tin10_real.md
    # the paper's recipe instead of the small CPU one (on a GPU; see benchmarks/reproduce/imclr/RESULTS.md):
    python benchmarks/reproduce/imclr/imclr_synthetic.py --dataset tinyimagenet --epochs 80 \\
        --recipe experiment=imclr_rn56_tinyimagenet --set dataset.root=<folder> --out benchmarks/reproduce/imclr/results/imclr_rn56_tin.md

Every variant is a ``train.py`` run (``prepare_run`` + ``fit``, what ``train.main`` does, run by
``benchmarks/harness.py``) with the
same overrides except ``method.k`` / ``method.control``. After training, the test error (%) of the
classifier on the val split is measured with the method's test-time input (the k-fold
self-concatenation; for k=2 also with ``tta=flip``), next to the final kNN top-1 of the encoder.
With ``--real`` the encoder is also evaluated by the shared evaluator of the real-data tables
(``benchmarks/reproduce/compare/compare.py``: kNN k=200 T=0.1 and the linear probe of ``configs/eval.yaml`` on
the frozen features of the un-augmented images, each given the method's test-time input).
Writes a markdown table (per seed, then mean +- std over seeds) to ``--out`` and one JSON line per
run to ``--jsonl``.

This is a benchmark, not a test: small budgets on a shared CPU say little about the paper's
GPU-scale results; it reports what it measures.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[3]  # the repository root
sys.path.insert(0, str(ROOT))

from benchmarks.harness import Row, run_rows, summary_table  # noqa: E402

VARIANTS = {  # name: overrides on top of the shared recipe
    "base (k=1)": ["method.k=1"],
    "ImCLR (k=2)": ["method.k=2"],
    "same-image control (k=2)": ["method.k=2", "method.control=same_image"],
}

DATASET_DEFAULTS = {"synthetic": ["dataset.num_train=3000", "dataset.num_val=1000"]}

#: ``--real``: 10 Tiny ImageNet classes (5,000 train / 500 val, labels from the class folders) at 32 px, the
#: default small_cnn, batch 256, 8 epochs, ``method=imclr``'s defaults otherwise, except the step schedule:
#: its default milestones (15, 22 of 30 epochs) lie past 8 epochs, so they are put at the same fractions
#: (1/2 and 3/4) of 8 - the paper's RN56-TINYIMAGENET recipe: "trained the model for 80 epochs ...
#: decaying by a factor of 0.1 at 40 and 60 epochs".
REAL_BUDGET = [
    "method=imclr", "dataset=imagefolder", "dataset.root=/work/data/tin10", "dataset.image_size=32",
    "trainer.max_epochs=8", "batch_size=256", "knn.enabled=false", "knn.random_init_baseline=false",
    "trainer.progress_bar=false", "scheduler.milestones=[4,6]",
]

DEFAULTS = [
    "method=imclr", "backbone=small_cnn", "backbone.kwargs.width=16", "batch_size=128",
    "optimizer.lr=0.1", "scheduler.milestones=[8,12]", "scheduler.gamma=0.1",
    "knn.random_init_baseline=false", "knn.k=50", "trainer.progress_bar=false", "trainer.accelerator=cpu",
]


@torch.no_grad()
def test_error(model, images: torch.Tensor, labels: torch.Tensor, tta: str | None = None, batch_size: int = 500) -> float:
    """Classifier test error (%) on uint8 ``images`` ``[N, 3, H, W]`` with the model's test-time
    input, computed on the model's device."""
    model.eval()
    device = next(model.parameters()).device
    wrong = 0
    for start in range(0, len(labels), batch_size):
        x = model.eval_transform(images[start:start + batch_size].to(device))  # [b, 3, S, S]
        predicted = model.predict(x, tta).argmax(1).cpu()  # [b]
        wrong += int((predicted != labels[start:start + batch_size].cpu()).sum())
    return 100.0 * wrong / len(labels)


def measure(prepared, summary: dict) -> dict:
    """Test error of the trained classifier on the val split (and with ``tta=flip`` for k >= 2), final kNN."""
    val = prepared.splits.val
    model = prepared.model.to("cuda" if torch.cuda.is_available() else "cpu")  # Lightning leaves it on the CPU
    result = {"error": test_error(model, val.images, val.labels), "knn": summary.get("knn_top1"),
              "run_dir": summary["run_dir"]}
    if model.k >= 2:
        result["error_flip"] = test_error(model, val.images, val.labels, tta="flip")
    return result


def measure_real(prepared, summary: dict) -> dict:
    """:func:`measure` plus the shared evaluator (kNN k=200 and linear-probe top-1, images/s) and top-1 = 100 - error."""
    from benchmarks.reproduce.compare.compare import evaluate

    result = measure(prepared, summary)
    result.update(evaluate(prepared, summary), top1=100.0 - result["error"])
    result["knn"] = result["knn_top1"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--dataset", default="synthetic", help="dataset config (e.g. tinyimagenet with --set dataset.root=...)")
    parser.add_argument("--set", nargs="*", default=[], help="extra overrides for every variant (key=value)")
    parser.add_argument("--recipe", nargs="*", default=None,
                        help="overrides replacing the small CPU recipe DEFAULTS, e.g. experiment=imclr_rn56_tinyimagenet")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), help="subset of: " + ", ".join(VARIANTS))
    parser.add_argument("--output-dir", default="/tmp/imclr_benchmark")
    parser.add_argument("--out", default="benchmarks/reproduce/imclr/results/imclr_synthetic.md")
    parser.add_argument("--jsonl", default=None, help="one JSON line per run, appended to (default: --out with .jsonl)")
    parser.add_argument("--real", action="store_true", help="REAL_BUDGET (Tiny ImageNet, 10 classes) and the shared evaluator")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if not torch.cuda.is_available():
        torch.set_num_threads(1)  # many small ops on a shared CPU

    recipe = DEFAULTS if args.recipe is None else ["method=imclr", "knn.random_init_baseline=false",
                                                    "trainer.progress_bar=false", *args.recipe]
    shared = recipe + [f"dataset={args.dataset}", *DATASET_DEFAULTS.get(args.dataset, []),
                         f"trainer.max_epochs={args.epochs}", f"knn.every_n_epochs={args.epochs}",
                         f"output_dir={args.output_dir}", *args.set]
    if args.real:
        shared = [*REAL_BUDGET, f"output_dir={args.output_dir}", *args.set]
    rows = []

    def report(r: dict) -> None:
        r["seconds"] = r["wall_seconds"] - r["prepare_seconds"]  # training + evaluation
        flip = f"{r['error_flip']:.2f}" if "error_flip" in r else "-"
        knn = "-" if r["knn"] is None else f"{r['knn']:.2f}"  # knn.enabled=false: no monitor
        rows.append(f"| {r['key']} | {r['seed']} | {r['error']:.2f} | {flip} | {knn} | {r['seconds']:.0f} |")
        print(rows[-1], flush=True)

    records = run_rows([Row(name, VARIANTS[name], name) for name in args.variants], args.seeds, shared,
                       measure=measure_real if args.real else measure,
                       out=args.jsonl or Path(args.out).with_suffix(".jsonl"), run_name="imclr-bench", on_record=report)
    columns = [("test error %", "error", 2), ("test error % (tta=flip)", "error_flip", 2), ("kNN top-1 %", "knn", 2)]
    if args.real:
        columns = [("classifier top-1 %", "top1", 2), *columns, ("linear-probe top-1 %", "linear_top1", 2),
                   ("img/s (under load)", "images_per_second", 0)]
    table = summary_table(records, columns, first="variant", seeds="count", pm=" +- ", compact=True, order=args.variants)
    summary = table.splitlines()[2:]
    command = "OMP_NUM_THREADS=1 python benchmarks/reproduce/imclr/imclr_synthetic.py " + " ".join(sys.argv[1:])
    text = "\n".join([
        "# ImCLR on CPU: base (k=1) vs ImCLR (k=2) vs same-image control", "",
        f"Command: `{command.strip()}`", "",
        "Shared overrides (every variant): `" + " ".join(o for o in shared if not o.startswith("output_dir=")) + "`", "",
        "Test error (%) of the classifier on the val split with the method's test-time input "
        "(k copies of the image; `flip`: the image on top of its flip), and the kNN top-1 (%) of the encoder's "
        "features of the same input. Lower error is better.", "",
        "## Mean over seeds", "",
        *table.splitlines(), "",
        "## Per run", "",
        "| variant | seed | test error % | test error % (tta=flip) | kNN top-1 % | train + eval s |", "|---|---|---|---|---|---|",
        *rows, "",
    ])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print("\n" + "\n".join(summary) + f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
