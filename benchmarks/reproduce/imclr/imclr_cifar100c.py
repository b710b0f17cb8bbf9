"""ImCLR Table 4: test error on CIFAR-100-C per corruption (mean over 5 severities) and overall.

    # train the two VGG16-CIFAR100 models (GPU; see benchmarks/reproduce/imclr/RESULTS.md), then:
    python benchmarks/reproduce/imclr/imclr_cifar100c.py --root <folder holding CIFAR-100-C> \\
        --model base=<base run>/checkpoints/last.ckpt --model ImCLR=<imclr run>/checkpoints/last.ckpt \\
        --out benchmarks/reproduce/imclr/results/imclr_cifar100c.md

Each checkpoint's classifier is evaluated with its method's test-time input (ImCLR: the image on
top of itself) on the 19 corruptions x 5 severities of the archive (``<corruption>.npy``,
``labels.npy``; contrastive/data/sources/cifar_c.py). Paper, VGG16-CIFAR100: ImCLR improves the mean
CIFAR-100-C error by 0.72 points (abstract).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[3]  # the repository root
sys.path.insert(0, str(ROOT))

from contrastive.data.sources.cifar_c import corruption_errors, error_table  # noqa: E402


def load_predictor(path: str, device: torch.device):
    """uint8 images -> class scores of a trained ImCLR / Π-model checkpoint, on ``device``."""
    from omegaconf import OmegaConf

    from contrastive.engine.checkpoint import load_checkpoint
    from contrastive.config.plugins import load_builtin_methods
    from contrastive.evaluation.loading import build_model

    load_builtin_methods()
    ckpt = load_checkpoint(path)
    cfg = OmegaConf.create(ckpt["contrastive"]["config"])
    model = build_model(ckpt, cfg, path, int(cfg.seed)).to(device).eval()

    @torch.no_grad()
    def predict(images: torch.Tensor) -> torch.Tensor:
        return model.predict(model.eval_transform(images.to(device)))  # [B, C]

    return predict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="the CIFAR-100-C folder (or the folder holding it)")
    parser.add_argument("--model", nargs="+", action="extend", required=True, help="name=<checkpoint> (repeatable)")
    parser.add_argument("--corruptions", nargs="*", default=None, help="default: every .npy of the folder")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    columns = {}
    for item in args.model:
        name, path = item.split("=", 1)
        columns[name] = corruption_errors(load_predictor(path, device), args.root, args.corruptions, args.batch_size)
    table = error_table(columns)
    print(table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(f"# CIFAR-100-C test error (ImCLR Table 4)\n\nCommand: `python {' '.join(sys.argv)}`\n\n{table}\n")


if __name__ == "__main__":
    main()
