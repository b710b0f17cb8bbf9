"""Dimensional collapse of trained encoders on the embedded default data.

For each checkpoint of a run on ``dataset=synthetic`` (the default), embeds the generated train and
val sets with the frozen backbone (eval mode, the evaluation transform) and prints the kNN top-1
(k 200, T 0.1, cosine, as the kNN monitor), the effective rank of the centred train features
(``exp`` of the entropy of the normalised squared singular values; Roy & Vetterli 2007) and the share
of variance in the top directions. A negative-free method that settles on a few nuisance directions
shows a low effective rank next to a kNN near random init.

    python benchmarks/diagnostics/feature_rank.py outputs/byol-*/*/checkpoints/last.ckpt [--random simclr]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from contrastive.config.compose import load_config
from contrastive.config.plugins import load_builtin_methods
from contrastive.core.registry import METHODS
from contrastive.data.sources.synthetic import generate_shapes
from contrastive.engine.method import DataInfo


def knn_top1(train: torch.Tensor, train_labels: torch.Tensor, val: torch.Tensor, val_labels: torch.Tensor,
             num_classes: int, k: int = 200, temperature: float = 0.1) -> float:
    """Weighted kNN vote (Wu et al. 2018) of l2-normalised features, top-1 in %."""
    sim = F.normalize(val, dim=1) @ F.normalize(train, dim=1).t()  # [Nv, Nt]
    weights, idx = sim.topk(k, dim=1)  # [Nv, k]
    votes = torch.zeros(len(val), num_classes).scatter_add_(1, train_labels[idx], (weights / temperature).exp())
    return float((votes.argmax(1) == val_labels).float().mean()) * 100


def effective_rank(features: torch.Tensor) -> tuple[float, list]:
    """``exp(H(p))`` with ``p`` the normalised squared singular values of the centred features."""
    s = torch.linalg.svdvals(features - features.mean(0))
    p = s.pow(2) / s.pow(2).sum()
    return float(torch.exp(-(p * p.clamp_min(1e-12).log()).sum())), [round(float(x), 3) for x in p[:3]]


def describe(name: str, model, ds: dict) -> None:
    model.eval()
    with torch.no_grad():
        train, val = (model.backbone(model.eval_transform(ds[s][0])) for s in ("train", "val"))
    rank, top = effective_rank(train)
    knn = knn_top1(train, ds["train"][1], val, ds["val"][1], ds["num_classes"])
    print(f"{name}: kNN top-1 {knn:.1f}%  effective rank {rank:.1f} of {train.shape[1]}  top variance shares {top}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="*")
    parser.add_argument("--random", default=None, help="also describe this method's encoder at random init (seed 0)")
    args = parser.parse_args()
    load_builtin_methods()
    cfg0 = load_config(["method=" + (args.random or "simclr")])
    d = cfg0.dataset
    ds = {"train": generate_shapes(int(d.num_train), int(d.image_size), int(d.num_classes), seed=int(d.seed)),
          "val": generate_shapes(int(d.num_val), int(d.image_size), int(d.num_classes), seed=int(d.seed) + 1_000_003),
          "num_classes": int(d.num_classes)}
    data = DataInfo(num_classes=int(d.num_classes), image_size=int(d.image_size), mean=tuple(d.mean), std=tuple(d.std),
                    num_train=int(d.num_train))
    if args.random:
        torch.manual_seed(0)
        describe(f"{args.random} (random init)", METHODS.get(args.random)(cfg0, data), ds)
    for path in args.checkpoints:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        cfg = OmegaConf.create(ckpt["contrastive"]["config"])
        model = METHODS.get(cfg.method.name)(cfg, data)
        model.load_state_dict(ckpt["state_dict"], strict=False)
        describe(f"{cfg.method.name} ({path})", model, ds)


if __name__ == "__main__":
    main()
