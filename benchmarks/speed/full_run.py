"""Whole training runs, ``train.py`` vs a lightly reference (``bench_speed.py --full-run``).

* **ours**: ``fit(prepare_run(cfg))``, exactly what ``python train.py <overrides>`` runs:
  the kNN monitor (random-init baseline, every ``knn.every_n_epochs`` and at the end),
  ``last.ckpt`` + ``best.ckpt``, CSV + TensorBoard logs, the curves plot.
* **reference**: the lightly tutorial way with the same encoder, head, loss, optimizer,
  schedule, batch, epochs and images: ``SimCLRTransform`` on PIL images in a
  ``DataLoader`` with one worker per core, a Lightning module with lightly's
  ``SimCLRProjectionHead`` + ``NTXentLoss`` + ``LARS`` + ``CosineWarmupScheduler``,
  Lightning's default checkpoint and CSV logger, and a kNN monitor at the same epochs
  whose eval images also go through a ``DataLoader`` (PIL -> ToTensor -> Normalize).

Each run is its own process (``--one``), so peak RSS is the run's own; the parent runs
the repetitions alternating ours / reference so both see the same machine noise, and
reports medians. images/s = epochs x train images / whole-run wall time (data set
building excluded for both: it is the same call).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]  # the repository root
sys.path.insert(0, str(ROOT))


def _rss_mb() -> dict:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # largest child process (DataLoader worker)
    return {"peak_rss_mb": round(own), "peak_worker_rss_mb": round(workers)}


def run_ours(overrides: list, out: Path) -> dict:
    from contrastive.config.compose import load_config
    from contrastive.engine.run import fit, prepare_run
    from contrastive.core.hardware import resolve_channels_last, resolve_precision

    cfg = load_config(overrides + [f"output_dir={out}", "trainer.progress_bar=false"])
    run = prepare_run(cfg)
    start = time.perf_counter()
    summary = fit(run)
    wall = time.perf_counter() - start
    result = {"wall_s": round(wall, 1), "train_seconds": summary["train_seconds"], "knn_top1": summary["knn_top1"],
              "knn_top1_random_init": summary.get("knn_top1_random_init"),
              "precision": resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator),
              "channels_last": resolve_channels_last(cfg.trainer.channels_last, cfg.trainer.accelerator),
              "images_per_s": round(int(cfg.trainer.max_epochs) * len(run.splits.train) / wall, 1)}
    if os.environ.get("FULL_RUN_LINEAR"):
        result["linear_top1"] = linear_top1(run.model, run.splits, cfg)
    return result


def linear_top1(model, splits, cfg) -> float:
    """Linear probe top-1 (configs/eval.yaml recipe, SGD 100 epochs) on the trained encoder."""
    from omegaconf import OmegaConf

    from contrastive.evaluation.features import extract, frozen_encoder
    from contrastive.evaluation.probe import evaluate_head, train_linear_probe
    from contrastive.core.hardware import resolve_eval_amp

    device = torch.device("cpu")
    amp = resolve_eval_amp("auto" if str(cfg.trainer.precision) == "auto" else False, device)
    eval_cfg = OmegaConf.load(ROOT / "configs" / "eval.yaml").eval.linear
    model = model.to(device)
    with frozen_encoder(model):
        train = extract(model.embed, splits.train_labeled, model.eval_transform, 512, device, amp, False)
        test = extract(model.embed, splits.val, model.eval_transform, 512, device, amp, False)
    head = train_linear_probe(train, splits.train_labeled.labels, splits.num_classes, eval_cfg, device, seed=0, progress=False)
    return round(evaluate_head(head, test, splits.val.labels)[0], 2)


def run_reference(overrides: list, out: Path, workers: int) -> dict:
    """The lightly way, same model/optimizer/schedule/data as ``overrides`` (SimCLR only)."""
    import pytorch_lightning as pl

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from reference_simclr import KnnMonitor, LightlySimCLR, pil_loader
    from contrastive.config.compose import load_config
    from contrastive.data import build_dataset

    cfg = load_config(overrides)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    splits = build_dataset(cfg.dataset)
    model = LightlySimCLR(cfg, splits)
    loader = pil_loader(splits.train, cfg, splits, workers, train=True)
    monitor = KnnMonitor(cfg, splits, workers)
    # fp32 on CPU (the lightly default); on a GPU bf16 autocast, as a lightly user would set it
    on_gpu = str(cfg.trainer.accelerator) in ("gpu", "cuda") and torch.cuda.is_available()
    trainer = pl.Trainer(max_epochs=int(cfg.trainer.max_epochs), accelerator="gpu" if on_gpu else "cpu", devices=1,
                         precision="bf16-mixed" if on_gpu else "32-true",
                         default_root_dir=out, logger=pl.loggers.CSVLogger(out), callbacks=[monitor],
                         log_every_n_steps=int(cfg.trainer.log_every_n_steps), enable_progress_bar=False,
                         enable_model_summary=False)
    start = time.perf_counter()
    if cfg.knn.random_init_baseline:
        monitor.measure(model.to("cuda" if on_gpu else "cpu"))
    trainer.fit(model, train_dataloaders=loader)
    wall = time.perf_counter() - start
    return {"wall_s": round(wall, 1), "knn_top1": monitor.last, "knn_top1_random_init": monitor.first,
            "images_per_s": round(int(cfg.trainer.max_epochs) * len(splits.train) / wall, 1)}


def one(args) -> None:
    overrides = json.loads(args.overrides)
    with tempfile.TemporaryDirectory(prefix="full-run-") as tmp:
        if args.one == "ours":
            result = run_ours(overrides, Path(tmp))
        else:
            result = run_reference(overrides, Path(tmp), args.workers)
    result.update(_rss_mb())
    print("RESULT " + json.dumps(result), flush=True)


def child(which: str, overrides: list, workers: int, env: dict | None = None) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", which, "--overrides", json.dumps(overrides),
           "--workers", str(workers)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, **(env or {})})
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{which} run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def compare(overrides: list, repeats: int, workers: int, seeds: list | None = None) -> dict:
    """Alternating ours / reference runs (seed = ``seeds[i]``); medians and means."""
    import statistics

    seeds = seeds or list(range(repeats))
    runs = {"ours": [], "reference": []}
    for i in range(repeats):
        order = ("ours", "reference") if i % 2 == 0 else ("reference", "ours")
        for which in order:
            runs[which].append(child(which, overrides + [f"seed={seeds[i]}"], workers))
            print(which, json.dumps(runs[which][-1]), flush=True)
    out = {"overrides": overrides, "repeats": repeats, "load_before": os.getloadavg()}
    for which, rs in runs.items():
        knn = [r["knn_top1"] for r in rs]
        out[which] = {"runs": rs, "median_wall_s": statistics.median(r["wall_s"] for r in rs),
                      "median_images_per_s": statistics.median(r["images_per_s"] for r in rs),
                      "knn_top1_mean": round(statistics.mean(knn), 2),
                      "knn_top1_std": round(statistics.stdev(knn), 2) if len(knn) > 1 else None,
                      "max_peak_rss_mb": max(r["peak_rss_mb"] + r["peak_worker_rss_mb"] for r in rs)}
    out["speedup"] = round(out["ours"]["median_images_per_s"] / out["reference"]["median_images_per_s"], 2)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--one", choices=["ours", "reference"], help="(internal) one run in this process")
    p.add_argument("--overrides", default="[]", help="JSON list of train.py overrides")
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default="")
    args, extra = p.parse_known_args(argv)
    if args.one:
        return one(args)
    result = compare(json.loads(args.overrides) + extra, args.repeats, args.workers)
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
