"""Parity: each method of ours against an independent reference at the same budget, on any image folder.

    python benchmarks/reproduce/parity/parity.py --root /work/data/tin10-32 --methods simclr,mocov2,byol,simsiam \\
        --image-size 32 --epochs 8 --seeds 0,1,2 [--backbone small_cnn] [--batch-size 256] [--workers 2] \\
        [--out results.jsonl] [--results RESULTS.md]
    python benchmarks/reproduce/parity/parity.py --list                 # the methods that have a reference
    python benchmarks/reproduce/parity/parity.py --table-only --out r.jsonl   # the table of saved records

``--root`` holds ``train/<class>/<image>`` and ``val/<class>/<image>``. For every method and seed (seeds
outermost) two rows run through one loop (:func:`benchmarks.harness.run_rows`):

* ``ours``: ``train.py``'s code path (``load_config`` -> ``prepare_run`` -> ``fit``) with
  ``method=<m> dataset=imagefolder dataset.root=<root> dataset.image_size=<S>`` and the budget
  (``batch_size``, ``trainer.max_epochs``, ``backbone``; the kNN monitor off), each method's own YAML otherwise.
* ``reference``: the method as lightly's published benchmark recipe builds it
  (``references/<m>.py``), trained by :func:`train_reference`'s plain loop: torchvision's ``ImageFolder`` of
  ``<root>/train`` with the reference's lightly transform, a ``DataLoader`` with ``--workers`` processes,
  lightly's ``LARS`` / torch's ``SGD`` / ``AdamW`` and lightly's ``CosineWarmupScheduler``. Every value both
  sides share comes from OUR resolved config of the same run (:class:`Settings`: optimizer, lr as scaled,
  schedule, batch, epochs, head sizes, temperature, momentum, augmentation strengths). The backbone is our
  registry's, built by ``prepare_run`` at the same seed: the very weights ours starts from.

Both are evaluated by :func:`evaluate_embedding`: the frozen backbone's features of the un-augmented train
and val images (our cache of ``<root>``, the same pixels the reference reads), weighted kNN (k=200, T=0.1)
and the linear probe of ``configs/eval.yaml``, scored on val. ``images_per_s`` = training images seen
(optimizer steps x batch) / training seconds, on both sides.

Verdict (:func:`verdict`), per method and metric: ``d = mean(ours) - mean(reference)`` over the seeds,
``tol = max(std(ours), std(reference), 0.5)`` percentage points (sample std; 0 with one seed). ``|d| <= tol``:
"equal within the seeds' spread"; ``d > tol``: "ours better"; ``d < -tol``: "ours worse".

One JSON line per (method, impl, seed) in ``--out`` (appended as each run ends): ``method``, ``impl``
(``ours`` | ``reference``), ``seed``, ``knn_top1``, ``linear_top1``, ``images_per_s``, ``train_seconds``,
``images_seen``, ``lr``, ``command``. The table goes to stdout and into ``--results`` (between the
``<!-- parity table -->`` markers; the rest of that file is kept).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[3]  # the repository root
sys.path.insert(0, str(ROOT))

from benchmarks.harness import Row, mean_std, read_records, run_rows  # noqa: E402

HERE = Path(__file__).resolve().parent
BEGIN, END = "<!-- parity table -->", "<!-- end parity table -->"
EQUAL, BETTER, WORSE = "equal within the seeds' spread", "ours better", "ours worse"
#: The smallest tolerance of the verdict, in percentage points.
MIN_TOLERANCE = 0.5


def verdict(ours: Sequence[float], reference: Sequence[float], floor: float = MIN_TOLERANCE) -> str:
    """The verdict of one metric (see the module docstring); ``-`` when a side has no value."""
    if not ours or not reference:
        return "-"
    std = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0  # noqa: E731
    diff = statistics.mean(ours) - statistics.mean(reference)
    tolerance = max(std(ours), std(reference), floor)
    if abs(diff) <= tolerance:
        return EQUAL
    return BETTER if diff > 0 else WORSE


def _features(embed, eval_transform, split, batch: int = 500):
    import torch

    with torch.no_grad():
        parts = [embed(eval_transform(split.images[i : i + batch])).float() for i in range(0, len(split), batch)]
    return torch.cat(parts), split.labels


def evaluate_embedding(embed, eval_transform, splits) -> Dict[str, float]:
    """kNN (k=200, T=0.1) and linear-probe top-1 (%) on val of ``embed``'s features (``[B,3,S,S] -> [B, D]``)."""
    import torch
    from omegaconf import OmegaConf

    from contrastive.evaluation.probe import evaluate_head, train_linear_probe
    from contrastive.metrics.knn import knn_accuracy

    train_x, train_y = _features(embed, eval_transform, splits.train)
    val_x, val_y = _features(embed, eval_transform, splits.val)
    knn1, _ = knn_accuracy(train_x, train_y, val_x, val_y, splits.num_classes, k=min(200, len(train_x)), temperature=0.1)
    probe_cfg = OmegaConf.load(ROOT / "configs" / "eval.yaml").eval.linear
    head = train_linear_probe(train_x, train_y, splits.num_classes, probe_cfg, torch.device("cpu"), seed=0, progress=False)
    linear1, _ = evaluate_head(head, val_x, val_y)
    return {"knn_top1": round(float(knn1), 2), "linear_top1": round(float(linear1), 2)}


def _scaled_lr(cfg) -> float:
    from contrastive.engine.optim import scaled_lr

    return scaled_lr(float(cfg.optimizer.lr), int(cfg.batch_size), str(cfg.optimizer.lr_scaling))


def measure_ours(method: str):
    """``measure(run, summary)`` of our row: the evaluation and the speed of ``fit``."""

    def measure(run, summary: Dict) -> Dict:
        model = run.model
        model.eval()
        images = int(model.global_step) * int(run.cfg.batch_size)
        # fit's seconds are rounded to 0.1: a run shorter than that (a test's two steps) counts as 0.1 s
        seconds = max(float(summary.get("train_seconds") or 0.0), 0.1)
        record = {"method": method, "impl": "ours", "images_seen": images, "lr": _scaled_lr(run.cfg),
                  "images_per_s": round(images / seconds, 1)}
        record.update(evaluate_embedding(model.embed, model.eval_transform, run.splits))
        return record

    return measure


def settings_of(cfg, num_train: int, image_size: int, mean, std, feature_dim: int):
    """:class:`Settings` from our resolved config and the data and backbone it builds."""
    from omegaconf import OmegaConf

    from benchmarks.reproduce.parity.references.base import Settings

    c = OmegaConf.to_container(cfg, resolve=True)
    batch = int(cfg.batch_size)
    return Settings(batch_size=batch, epochs=int(cfg.trainer.max_epochs), steps_per_epoch=num_train // batch,
                    image_size=int(image_size), feature_dim=int(feature_dim), mean=tuple(mean), std=tuple(std),
                    method=c["method"], optimizer=c["optimizer"], scheduler=c["scheduler"], augment=c["augment"],
                    scaled_lr=_scaled_lr(cfg))


def build_optimizer(reference, s):
    """Lightly's LARS, or torch's SGD / AdamW, over the reference's parameter groups at our scaled lr."""
    import torch
    from lightly.utils.lars import LARS

    o = s.optimizer
    groups = reference.parameter_groups()
    for g in groups:  # our optimizer.bias_norm_lr_ratio: the groups without decay at a share of the lr
        if g.get("weight_decay", None) == 0.0 and "lr" not in g:
            g["lr"] = s.scaled_lr * float(o.get("bias_norm_lr_ratio", 1.0))
    wd = float(o["weight_decay"])
    if o["name"] == "lars":
        return LARS(groups, lr=s.scaled_lr, momentum=float(o["momentum"]), weight_decay=wd,
                    trust_coefficient=float(o["trust_coefficient"]))
    if o["name"] == "sgd":
        return torch.optim.SGD(groups, lr=s.scaled_lr, momentum=float(o["momentum"]), weight_decay=wd,
                               nesterov=bool(o.get("nesterov", False)))
    if o["name"] == "adamw":
        return torch.optim.AdamW(groups, lr=s.scaled_lr, betas=tuple(o["betas"]), weight_decay=wd)
    raise SystemExit(f"error: the reference loop has no optimizer {o['name']!r}; choose from lars, sgd, adamw")


def build_scheduler(optimizer, s):
    """Lightly's ``CosineWarmupScheduler`` (per step) for ``warmup_cosine``; torch's for ``step`` / ``constant``."""
    import torch
    from lightly.utils.scheduler import CosineWarmupScheduler

    from contrastive.engine.optim import warmup_steps

    total = s.epochs * s.steps_per_epoch
    sched = s.scheduler
    if sched["name"] == "warmup_cosine":
        # The warm-up length as ours counts it (the same cut of a warm-up longer than the run).
        warm = warmup_steps(_Attr(sched), s.steps_per_epoch, total)
        return CosineWarmupScheduler(optimizer, warmup_epochs=warm, max_epochs=total,
                                     end_value=float(sched["final_lr_ratio"]))
    if sched["name"] == "step":
        unit = s.steps_per_epoch if sched.get("milestone_unit", "epoch") == "epoch" else 1
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, [int(m) * unit for m in sched["milestones"]],
                                                    gamma=float(sched["gamma"]))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


class _Attr(dict):
    """A dict read as attributes (our schedule helpers read ``cfg.warmup_epochs``)."""

    __getattr__ = dict.__getitem__


def train_reference(method: str, root: Path, workers: int):
    """``runner(overrides, seed)`` of the reference row of ``method`` (see :class:`benchmarks.harness.Row`)."""

    def runner(overrides: List[str], seed: int) -> Dict:
        import torch
        from torchvision.datasets import ImageFolder

        from benchmarks.reproduce.parity.references import load_all
        from contrastive.config.compose import load_config
        from contrastive.engine.run import prepare_run

        run = prepare_run(load_config(overrides))  # seeded: the backbone ours starts from, and our cached splits
        splits = run.splits
        s = settings_of(run.cfg, len(splits.train), splits.image_size, splits.mean, splits.std,
                        run.model.backbone.feature_dim)
        backbone = run.model.backbone
        torch.manual_seed(seed)
        reference = load_all()[method](backbone, s)
        train_dir = root / str(run.cfg.dataset.train_dir)
        data = ImageFolder(str(train_dir), transform=reference.transform())
        loader = torch.utils.data.DataLoader(
            data, batch_size=s.batch_size, shuffle=True, drop_last=True, num_workers=workers,
            persistent_workers=workers > 0, generator=torch.Generator().manual_seed(seed))
        optimizer = build_optimizer(reference, s)
        scheduler = build_scheduler(optimizer, s)
        reference.train()
        step, start = 0, time.perf_counter()
        for _ in range(s.epochs):
            for views, _labels in loader:
                loss = reference.training_loss(views, step)
                if not torch.isfinite(loss):
                    raise SystemExit(f"error: {method} reference: non-finite loss at step {step}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                reference.after_optimizer_step(step)
                step += 1
        seconds = time.perf_counter() - start
        reference.eval()
        images = step * s.batch_size
        record = {"method": method, "impl": "reference", "train_seconds": round(seconds, 1), "images_seen": images,
                  "lr": s.scaled_lr, "images_per_s": round(images / seconds, 1), "recipe": reference.RECIPE}
        record.update(evaluate_embedding(reference.backbone, run.model.eval_transform, run.splits))
        return record

    return runner


def _values(records: Sequence[Dict], method: str, impl: str, key: str) -> List[float]:
    return [r[key] for r in records if r.get("method") == method and r.get("impl") == impl and r.get(key) is not None]


def parity_table(records: Sequence[Dict]) -> str:
    """The markdown table: per method, ours and reference kNN / linear (mean ± std), difference, verdict, images/s."""
    header = ["method", "seeds (ours / ref)", "kNN ours", "kNN ref", "Δ kNN", "verdict kNN", "linear ours",
              "linear ref", "Δ linear", "verdict linear", "img/s ours", "img/s ref", "ratio ours/ref"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([" --- "] * len(header)) + "|"]
    for method in dict.fromkeys(r["method"] for r in records if "method" in r):
        cells = [method, f"{len(_values(records, method, 'ours', 'knn_top1'))} / "
                         f"{len(_values(records, method, 'reference', 'knn_top1'))}"]
        for key in ("knn_top1", "linear_top1"):
            ours, ref = _values(records, method, "ours", key), _values(records, method, "reference", key)
            diff = f"{statistics.mean(ours) - statistics.mean(ref):+.1f}" if ours and ref else "-"
            cells += [mean_std(ours), mean_std(ref), diff, verdict(ours, ref)]
        ours, ref = _values(records, method, "ours", "images_per_s"), _values(records, method, "reference", "images_per_s")
        ratio = f"{statistics.mean(ours) / statistics.mean(ref):.2f}" if ours and ref else "-"
        cells += [mean_std(ours, 0), mean_std(ref, 0), ratio]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(path: Path, table: str) -> None:
    """Puts ``table`` between the markers of ``path`` (appends them when absent; creates the file)."""
    block = f"{BEGIN}\n{table}\n{END}"
    text = path.read_text() if path.exists() else "# Parity against independent references\n\n"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", help="folder with train/<class>/* and val/<class>/*")
    parser.add_argument("--methods", default="", help="comma-separated (default: every method with a reference)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--backbone", default="small_cnn")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader processes of the reference")
    parser.add_argument("--impls", default="ours,reference", help="which sides run (ours, reference or both)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="more overrides for both sides (e.g. backbone.kwargs.width=8)")
    parser.add_argument("--out", default=str(HERE / "results" / "parity.jsonl"))
    parser.add_argument("--results", default=str(HERE / "RESULTS.md"), help="markdown file the table is written into")
    parser.add_argument("--output-dir", default="/tmp/parity/runs", help="our runs' folders")
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument("--list", action="store_true")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> List[Dict]:
    args = parse_args(argv)
    from benchmarks.reproduce.parity.references import load_all

    known = list(load_all())
    if args.list:
        print("\n".join(f"{m}: {cls.RECIPE}" for m, cls in load_all().items()))
        return []
    out = Path(args.out)
    if not args.table_only:
        methods = [m for m in args.methods.split(",") if m] or known
        unknown = [m for m in methods if m not in known]
        if unknown:
            raise SystemExit(f"error: no reference for method(s) {', '.join(unknown)}; choose from {', '.join(known)}")
        if not args.root:
            raise SystemExit("error: --root is required (a folder with train/ and val/)")
        root = Path(args.root).resolve()
        missing = [d for d in ("train", "val") if not (root / d).is_dir()]
        if missing:
            raise SystemExit(f"error: --root {root} has no {' and no '.join(missing)}/ folder (expected train/<class>/*, val/<class>/*)")
        logging.getLogger().setLevel(logging.WARNING)
        base = ["dataset=imagefolder", f"dataset.root={root}", f"dataset.image_size={args.image_size}",
                f"backbone={args.backbone}", f"batch_size={args.batch_size}", f"trainer.max_epochs={args.epochs}",
                "knn.enabled=false", "knn.random_init_baseline=false", "trainer.progress_bar=false", "logger=[csv]",
                *args.set]
        impls = [i for i in args.impls.split(",") if i]
        if not impls or set(impls) - {"ours", "reference"}:
            raise SystemExit(f"error: --impls {args.impls!r}: choose from ours, reference (comma-separated)")
        rows = []
        for m in methods:
            if "ours" in impls:
                rows.append(Row(f"{m}/ours", [f"method={m}"], f"{m} (ours)"))
            if "reference" in impls:
                rows.append(Row(f"{m}/reference", [f"method={m}"], f"{m} (reference)",
                                runner=train_reference(m, root, args.workers)))
        measures = {m: measure_ours(m) for m in methods}

        def measure(run, summary):
            return measures[str(run.cfg.method.name)](run, summary)

        def show(r):
            print(f"{r['key']} seed {r['seed']}: kNN {r['knn_top1']:.1f}%  linear {r['linear_top1']:.1f}%  "
                  f"{r['images_per_s'] or 0:.0f} img/s ({r['train_seconds'] or 0:.0f} s)", flush=True)

        run_rows(rows, [int(s) for s in args.seeds.split(",") if s], base, measure=measure, out=out,
                 output_dir=args.output_dir, on_record=show)
    records = read_records(out)
    table = parity_table(records)
    print(table)
    write_results(Path(args.results), table)
    return records


if __name__ == "__main__":
    main()
