"""ImCLR's Figure 2 (t-SNE panels of concatenations) and Figures 3-4 (test-error curves) as PNGs.

    # Figures 3-4: per-epoch test error of several runs in one plot (val_error of logs/metrics.csv;
    # train with knn.every_n_epochs=1 to get a point per epoch)
    python benchmarks/reproduce/imclr/imclr_figures.py curves --runs base=<run_dir> ImCLR=<run_dir> --out fig3.png
    # Figure 2: t-SNE panels of a trained ImCLR (k=2) checkpoint on its dataset's val split
    python benchmarks/reproduce/imclr/imclr_figures.py tsne --checkpoint <run_dir>/checkpoints/last.ckpt --out-dir figs/
    # both, from two short CPU runs on the synthetic dataset (a smoke test of the script, not a result)
    python benchmarks/reproduce/imclr/imclr_figures.py demo --out-dir benchmarks/reproduce/imclr/results/imclr_figures

Figure 2 panels (features = ``backbone`` of a ``2S x S`` input, L2-normalised, t-SNE):
  (a) self-concatenations ``[x; x]`` (the test input), coloured by class;
  (b) the top image fixed to one class, the bottom image of any class, coloured by the bottom's class
      (and (b') the same with the roles swapped);
  (c) two classes a and b: pairs a-b against the self pairs a-a and b-b.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Dict, List, Sequence

import torch

ROOT = Path(__file__).resolve().parents[3]  # the repository root
sys.path.insert(0, str(ROOT))

from contrastive.evaluation.report import plot_embedding  # noqa: E402


def read_val_error(run_dir: Path) -> List[tuple]:
    """``[(epoch, val_error %)]`` from ``<run_dir>/logs/metrics.csv``."""
    points = []
    with open(Path(run_dir) / "logs" / "metrics.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get("val_error") not in (None, ""):
                points.append((int(float(row["epoch"])) + 1, float(row["val_error"])))
    return points


def plot_curves(runs: Dict[str, Path], out: Path, title: str = "test error per epoch") -> Path:
    """Figures 3-4: one line per run (epoch on x, test error % on y)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name, run_dir in runs.items():
        points = read_val_error(run_dir)
        if not points:
            raise SystemExit(f"{run_dir}: no val_error in logs/metrics.csv (train with knn.every_n_epochs=1)")
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", ms=3, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test error (%)")
    ax.set_title(title)
    ax.legend(frameon=False)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


@torch.no_grad()
def pair_features(model, top: torch.Tensor, bottom: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Features ``[N, D]`` of the concatenations ``[top_i; bottom_i]`` (normalised ``[N, 3, S, S]`` each)."""
    out = [model.backbone(torch.cat([t, b], dim=2)).float() for t, b in zip(top.split(batch), bottom.split(batch))]
    return torch.cat(out)


def tsne_panels(model, images: torch.Tensor, labels: torch.Tensor, classes: Sequence[str], out_dir: Path,
                per_class: int = 50, seed: int = 0) -> List[Path]:
    """Figure 2's panels for normalised val images ``[N, 3, S, S]`` and labels ``[N]``; returns the PNGs."""
    g = torch.Generator().manual_seed(seed)
    model.eval()
    keep = torch.cat([torch.nonzero(labels == c).flatten()[:per_class] for c in labels.unique()])
    x, y = images[keep], labels[keep]
    paths = [plot_embedding(pair_features(model, x, x), y, classes, out_dir / "fig2a_self_pairs.png", seed=seed,
                            title="(a) self-concatenations [x; x], by class")]
    c0 = int(y.min())
    fixed = x[y == c0][torch.randint(0, int((y == c0).sum()), (len(x),), generator=g)]  # [N, 3, S, S] of class c0
    paths.append(plot_embedding(pair_features(model, fixed, x), y, classes, out_dir / "fig2b_top_fixed.png", seed=seed,
                                title=f"(b) top: class {classes[c0]}, bottom varies (colour = bottom's class)"))
    paths.append(plot_embedding(pair_features(model, x, fixed), y, classes, out_dir / "fig2b_bottom_fixed.png", seed=seed,
                                title=f"(b') bottom: class {classes[c0]}, top varies (colour = top's class)"))
    a, b = sorted(y.unique().tolist())[:2]
    xa, xb = x[y == a], x[y == b]
    n = min(len(xa), len(xb))
    feats = torch.cat([pair_features(model, xa[:n], xa[:n]), pair_features(model, xb[:n], xb[:n]),
                       pair_features(model, xa[:n], xb[:n])])
    groups = torch.arange(3).repeat_interleave(n)
    names = [f"{classes[a]}+{classes[a]}", f"{classes[b]}+{classes[b]}", f"{classes[a]}+{classes[b]}"]
    paths.append(plot_embedding(feats, groups, names, out_dir / "fig2c_ab_vs_self.png", seed=seed,
                                title="(c) a-b pairs against the self pairs a-a and b-b"))
    return paths


def load_for_tsne(checkpoint: str):
    """The checkpoint's model and its dataset's val split (normalised by the model's eval transform)."""
    from omegaconf import OmegaConf

    from contrastive.engine.checkpoint import load_checkpoint
    from contrastive.config.plugins import load_builtin_methods
    from contrastive.data import build_dataset
    from contrastive.evaluation.loading import build_model

    load_builtin_methods()
    ckpt = load_checkpoint(checkpoint, expected_method="imclr")
    cfg = OmegaConf.create(ckpt["contrastive"]["config"])
    model = build_model(ckpt, cfg, checkpoint, int(cfg.seed)).eval()
    splits = build_dataset(cfg.dataset)
    with torch.no_grad():
        images = torch.cat([model.eval_transform(part) for part in splits.val.images.split(512)])
    return model, images, splits.val.labels, splits.classes


def demo(out_dir: Path) -> None:
    """Two short synthetic runs (base, ImCLR k=2), their curves and the t-SNE panels of the ImCLR run."""
    from contrastive.config.compose import load_config
    from contrastive.engine.run import fit, prepare_run

    shared = ["method=imclr", "backbone=small_cnn", "backbone.kwargs.width=8", "dataset.num_train=1000",
              "dataset.num_val=300", "batch_size=64", "trainer.max_epochs=4", "scheduler.milestones=[3]",
              "knn.every_n_epochs=1", "knn.k=20", "knn.random_init_baseline=false", "trainer.progress_bar=false",
              "trainer.accelerator=cpu", f"output_dir={out_dir / 'runs'}"]
    runs = {}
    for name, k in (("base (k=1)", 1), ("ImCLR (k=2)", 2)):
        summary = fit(prepare_run(load_config(shared + [f"method.k={k}", f"run_name=fig-k{k}"])))
        runs[name] = Path(summary["run_dir"])
    print(plot_curves(runs, out_dir / "fig3_test_error.png", "synthetic, small_cnn, 4 epochs (demo)"))
    model, images, labels, classes = load_for_tsne(str(runs["ImCLR (k=2)"] / "checkpoints" / "last.ckpt"))
    for path in tsne_panels(model, images, labels, classes, out_dir, per_class=30):
        print(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    curves = sub.add_parser("curves", help="Figures 3-4")
    curves.add_argument("--runs", nargs="+", required=True, help="name=<run_dir> (a folder with logs/metrics.csv)")
    curves.add_argument("--out", default="imclr_test_error.png")
    curves.add_argument("--title", default="test error per epoch")
    tsne = sub.add_parser("tsne", help="Figure 2")
    tsne.add_argument("--checkpoint", required=True)
    tsne.add_argument("--out-dir", default="imclr_tsne")
    tsne.add_argument("--per-class", type=int, default=50)
    sub.add_parser("demo", help="both, from two short synthetic runs").add_argument("--out-dir", default="/tmp/imclr_figures")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.command == "curves":
        runs = dict(item.split("=", 1) for item in args.runs)
        print(plot_curves({k: Path(v) for k, v in runs.items()}, Path(args.out), args.title))
    elif args.command == "tsne":
        model, images, labels, classes = load_for_tsne(args.checkpoint)
        for path in tsne_panels(model, images, labels, classes, Path(args.out_dir), args.per_class):
            print(path)
    else:
        demo(Path(args.out_dir))


if __name__ == "__main__":
    main()
